//! What the suite asks PostgreSQL: the service's role and database, the connection
//! hog, and the task effects counted after the run.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::Fail;

/// One connection, bounded.
pub async fn connect(url: &str) -> Result<PgConnection, Fail> {
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await {
        Ok(r) => r.map_err(Fail::any("connect to postgres")),
        Err(_) => Err(Fail("connecting to postgres took over 5 s".into())),
    }
}

/// The service's database, owned by a role that is not a superuser, so the slots
/// PostgreSQL keeps for superusers stay free for the suite's own checks.
pub async fn setup(admin_url: &str) -> Result<(), Fail> {
    let mut admin = connect(admin_url).await?;
    for statement in ["CREATE ROLE app LOGIN", "CREATE DATABASE faults OWNER app"] {
        sqlx::raw_sql(statement)
            .execute(&mut admin)
            .await
            .map_err(Fail::any(statement))?;
    }
    Ok(())
}

/// Take every connection slot `app` may use, cut the service's own connections, and
/// keep taking slots as they free up until `hold` has passed: for that long the
/// service gets "too many clients" on every new connection. Answers how many
/// connections the service still had at the end (it may win a slot in the race).
pub async fn hog(admin_url: &str, app_url: &str, hold: Duration) -> Result<(usize, usize), Fail> {
    let mut admin = connect(admin_url).await?;
    let mut held: Vec<PgConnection> = Vec::new();
    // Fill the free slots first.
    while let Some(conn) = grab(app_url).await {
        held.push(conn);
    }
    let mut mine = Vec::new();
    for conn in &mut held {
        mine.push(pid_of(conn).await?);
    }
    terminate_others(&mut admin, &mine).await?;
    // The service reconnects at once, so it races the hog for every freed slot: cut
    // whatever it won, every half second, and take the slots back.
    let until = Instant::now() + hold;
    let mut cut = Instant::now();
    while Instant::now() < until {
        if let Some(conn) = grab(app_url).await {
            held.push(conn);
            mine.push(pid_of(held.last_mut().expect("just pushed")).await?);
            continue;
        }
        if cut.elapsed() > Duration::from_millis(500) {
            terminate_others(&mut admin, &mine).await?;
            cut = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let service: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND pid <> ALL($1)",
    )
    .bind(&mine)
    .fetch_one(&mut admin)
    .await
    .map_err(Fail::any("count connections"))?;
    let taken = held.len();
    for conn in held {
        let _ = conn.close().await;
    }
    Ok((taken, usize::try_from(service).unwrap_or(0)))
}

async fn pid_of(conn: &mut PgConnection) -> Result<i32, Fail> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .map_err(Fail::any("pg_backend_pid"))
}

/// Cut every connection of `app` but the hog's.
async fn terminate_others(admin: &mut PgConnection, mine: &[i32]) -> Result<(), Fail> {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'app' AND pid <> ALL($1)",
    )
    .bind(mine)
    .execute(admin)
    .await
    .map(|_| ())
    .map_err(Fail::any("pg_terminate_backend"))
}

/// One more connection, or `None` when PostgreSQL refuses it (or takes over a second).
async fn grab(url: &str) -> Option<PgConnection> {
    tokio::time::timeout(Duration::from_secs(1), PgConnection::connect(url))
        .await
        .ok()?
        .ok()
}

/// The runs of each posted message's summary task (0 when it never ran), from the
/// task's effect row.
pub async fn effects(admin_url: &str) -> Result<HashMap<i64, i64>, Fail> {
    let mut conn = connect(admin_url).await?;
    let rows: Vec<(i64, Option<i32>)> = sqlx::query_as(
        "SELECT m.id, s.runs FROM messages m \
         LEFT JOIN message_summaries s ON s.message_id = m.id",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(Fail::any("read messages and summaries"))?;
    Ok(rows
        .into_iter()
        .map(|(id, runs)| (id, i64::from(runs.unwrap_or(0))))
        .collect())
}
