//! User lookups batched into one PostgreSQL query: 500 concurrent `load(id)` calls
//! become a handful of `SELECT ... WHERE id = ANY($1)` round trips.
//!
//! Needs PostgreSQL: `eval "$(scripts/services.sh)"` starts one on loopback, then
//! `cargo run --example batch_users`. Batch size and wait come from
//! `USER_LOOKUP_BATCH_SIZE` (50) and `USER_LOOKUP_BATCH_WAIT` (0.1 s).

use std::collections::HashMap;

use cortex_core::batch::{BatchConfig, Batcher, batch_fn};
use cortex_core::pool::{DbConfig, DbPool};
use cortex_core::support::redact::redact_url;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://cortex@127.0.0.1:5432/cortex".to_owned());
    let db = match DbPool::postgres(DbConfig {
        url: url.clone(),
        ..DbConfig::from_env()?
    })
    .await
    {
        Ok(db) => db,
        Err(e) => {
            eprintln!(
                "PostgreSQL at {} is not reachable ({e}); start one with: eval \"$(scripts/services.sh)\"",
                redact_url(&url)
            );
            std::process::exit(2);
        }
    };

    sqlx::query(
        "CREATE TABLE IF NOT EXISTS cortex_example_users (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .execute(db.inner())
    .await?;
    sqlx::query(
        "INSERT INTO cortex_example_users (id, name)
         SELECT i, 'user ' || i FROM generate_series(1, 1000) AS i
         ON CONFLICT (id) DO NOTHING",
    )
    .execute(db.inner())
    .await?;

    // The loader: one query for the whole batch, answered by key.
    let pool = db.clone();
    let users = Batcher::builder(batch_fn(move |ids: Vec<i64>| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, name FROM cortex_example_users WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(pool.inner())
                    .await?;
            Ok::<_, sqlx::Error>(rows.into_iter().collect::<HashMap<_, _>>())
        }
    }))
    .config(BatchConfig::from_env_prefixed("USER_LOOKUP")?)
    .build()?;

    let mut lookups = JoinSet::new();
    for i in 0..500i64 {
        let users = users.clone();
        // Ids repeat: duplicates within a batch are fetched once.
        lookups.spawn(async move { (i, users.load(1 + (i * 7) % 400).await) });
    }
    let mut found = 0;
    while let Some(done) = lookups.join_next().await {
        let (i, user) = done?;
        let name = user?;
        assert_eq!(name, format!("user {}", 1 + (i * 7) % 400));
        found += 1;
    }
    let stats = users.stats();
    println!(
        "{found} lookups in {} queries: average batch {:.1}, efficiency {:.0}%, {} duplicate keys saved",
        stats.batches,
        stats.avg_batch_size,
        stats.efficiency * 100.0,
        stats.duplicates_saved
    );
    // A missing id is an error for that request alone.
    match users.load(1_000_000).await {
        Err(e) => println!("load(1000000): {e}"),
        Ok(name) => println!("load(1000000) unexpectedly found {name}"),
    }
    users.close();
    Ok(())
}
