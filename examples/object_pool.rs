//! The generic object pool wrapping database sessions, with `ROLLBACK` as the reset
//! run before reuse: a holder that panics mid-transaction cannot leak its uncommitted
//! work to the next holder. Embedded SQLite, so it runs with no setup.
//!
//! Run: `cargo run --example object_pool`

use std::time::Duration;

use cortex_core::pool::{Manager, Pool};
use sqlx::{Connection, Executor, SqliteConnection};

/// A connection plus whether a transaction is open on it.
struct Session {
    conn: SqliteConnection,
    in_transaction: bool,
}

impl Session {
    async fn begin(&mut self) -> sqlx::Result<()> {
        self.conn.execute("BEGIN").await?;
        self.in_transaction = true;
        Ok(())
    }
}

/// Makes sessions on one shared in-memory database.
struct Sessions {
    url: String,
}

impl Manager for Sessions {
    type Object = Session;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Session, sqlx::Error> {
        let conn = SqliteConnection::connect(&self.url).await?;
        Ok(Session {
            conn,
            in_transaction: false,
        })
    }

    /// The reset: roll back whatever the last holder left open.
    async fn recycle(&self, session: &mut Session) -> Result<(), sqlx::Error> {
        if session.in_transaction {
            session.conn.execute("ROLLBACK").await?;
            session.in_transaction = false;
            println!("  recycle: rolled back an open transaction");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A named shared-cache memory database, so every session sees the same table.
    let url = "sqlite:file:object-pool-demo?mode=memory&cache=shared".to_owned();
    let pool = Pool::builder(Sessions { url })
        .max_size(2)
        .acquire_timeout(Duration::from_secs(5))
        .build()?;

    {
        let mut s = pool.acquire().await?;
        s.conn
            .execute("CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
            .await?;
        s.conn
            .execute("INSERT INTO accounts VALUES ('ada', 100)")
            .await?;
    }

    // A holder begins a transfer and panics halfway: the session goes back to the pool.
    // (A one-line panic report instead of a backtrace: the panic is the demonstration.)
    std::panic::set_hook(Box::new(|info| eprintln!("a holder panicked: {info}")));
    let p = pool.clone();
    let crashed = tokio::spawn(async move {
        let mut s = p.acquire().await.expect("a session");
        s.begin().await.expect("BEGIN");
        s.conn
            .execute("UPDATE accounts SET balance = balance - 90 WHERE name = 'ada'")
            .await
            .expect("UPDATE");
        panic!("crashed mid-transfer");
    })
    .await;
    println!("holder crashed: {}", crashed.is_err());

    // The next holder gets a clean session: the half-done transfer was rolled back.
    let mut s = pool.acquire().await?;
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE name = 'ada'")
        .fetch_one(&mut s.conn)
        .await?;
    println!("ada's balance after the crash: {balance} (expected 100)");
    assert_eq!(balance, 100);
    drop(s);

    let stats = pool.stats();
    println!(
        "pool: size {}, max {}, created {}, reused {}, max used {}, in use {}",
        stats.size, stats.max_size, stats.created, stats.reused, stats.max_used, stats.in_use
    );
    Ok(())
}
