//! The Cortex example service: every crate of the workspace wired into one axum
//! service over users, workspaces, conversations and messages.
//!
//! ```text
//! cargo run --example service --features full       # SQLite, memory cache, in-process tasks
//! DATABASE_URL=postgres://... REDIS_URL=redis://... cargo run --example service --features full
//! ```
//!
//! Scaled out (several instances behind a load balancer): `REDIS_CLUSTER_URLS` puts the
//! cache's second tier, its invalidation and the durable queue on a Redis Cluster, and
//! `DB_REPLICA_URLS` adds PostgreSQL read replicas:
//!
//! ```text
//! DATABASE_URL=postgres://app@primary/app DB_REPLICA_URLS=postgres://app@replica/app \
//! REDIS_CLUSTER_URLS=redis://10.0.0.1:7000,redis://10.0.0.2:7000 \
//!     cargo run --example service --features full
//! ```
//!
//! Replica reads follow one rule (details in `repo/mod.rs`): the list endpoints and the
//! uncached single reads may come from a replica, lagging by at most
//! `DB_REPLICA_MAX_LAG`; every write, every read in a request that writes, and every
//! read that fills a cache go to the primary, because a stale replica row written into
//! the cache would be served for the entry's whole TTL. To read its own writes on
//! later requests, a client sends back the `x-cortex-written-lsn` header its last write
//! answered. `/ready` lists the Redis nodes and the replicas; a replica that is down
//! does not make the service unready (its reads go to the primary).
//!
//! Files: `settings.rs` (the service's own variables), `app.rs` (state, router,
//! layers), `handlers.rs` (domain routes), `admin.rs` (admin and metrics routes),
//! `jobs.rs` (background tasks, cache warming), `repo/` (SQL, one file per dialect),
//! `model.rs` (types and checks), `error.rs` (JSON errors), `extract.rs` (extractors).

// A program, not a library: `pub` marks what a module offers the others.
#![allow(unreachable_pub)]

mod admin;
mod app;
mod bare;
mod error;
mod extract;
mod handlers;
mod jobs;
mod model;
mod openapi;
mod repo;
mod settings;

use std::process::ExitCode;
use std::sync::Arc;

use cortex_core::batch::Batcher;
use cortex_core::metrics::MetricsRecorder;
use cortex_core::{Cortex, CortexConfig, Database};
use tracing_subscriber::EnvFilter;

use crate::app::{AppState, UserLoader};
use crate::jobs::{HandlerDeps, Jobs};
use crate::repo::{PostgresRepo, Repo, SqliteRepo};
use crate::settings::Settings;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bad setting: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_json {
        // Span closes carry each span's fields, its busy/idle time and (span list) the
        // spans around it: a log pipeline can rebuild a request's tree from them.
        logs.json()
            .with_span_list(true)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .init();
    } else {
        logs.init();
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = settings.worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [] => runtime.block_on(run(settings)),
        [flag, file] if flag == "--bare" => runtime.block_on(bare::serve(settings.addr, file)),
        _ => {
            eprintln!("usage: service [--bare FILE]");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the service stopped on an error");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> Result<(), BoxError> {
    let mut config = CortexConfig::from_env()?;
    if std::env::var("DATABASE_URL").is_ok_and(|v| !v.trim().is_empty()) {
        // As given.
    } else {
        std::fs::create_dir_all(&settings.data_dir)?;
        let file = settings.data_dir.join("cortex.db");
        config.db.url = format!("sqlite://{}", file.display());
    }
    tracing::info!(%config, "starting");

    let deps = HandlerDeps::default();
    let mut builder = Cortex::builder(config).mcp_services(["memory", "cognition"]);
    if settings.worker {
        builder = builder.durable_worker(jobs::registry(deps.clone()));
    }
    let cortex = builder.build().await?;
    // What the rest of the process records with `metrics::counter!` and the like (this
    // service's own counters, any library instrumented with `metrics`) joins /metrics.
    if let Err(e) = MetricsRecorder::new(cortex.metrics().clone()).install() {
        tracing::warn!(error = %e, "metrics recorded through the `metrics` crate will not be exported");
    }
    let repo: Arc<dyn Repo> = match cortex.database() {
        Database::Sqlite(pool) => Arc::new(SqliteRepo::new(pool).await?),
        Database::Postgres(pool) => {
            let pg = Arc::new(PostgresRepo::new(pool).await?);
            postgres_upkeep(&cortex, pg.clone());
            pg
        }
        _ => return Err("unsupported database".into()),
    };
    let _ = deps.set((repo.clone(), cortex.mcp_client("cognition").cloned()));
    let users = Batcher::builder(UserLoader(repo.clone()))
        .config(cortex.config().batch.clone())
        .name("users")
        .with_metrics(cortex.metrics().clone())
        .build()?;
    let closing = users.clone();
    cortex.on_shutdown("user batcher", move || closing.close());
    let jobs = match cortex.durable() {
        Some(queue) => Jobs::Durable(queue.clone()),
        None => Jobs::InProcess(cortex.tasks().clone(), jobs::Sealer::default()),
    };

    let (admin_token, token_made) = match &settings.admin_token {
        Some(t) => (t.clone(), false),
        None => (app::random_token()?, true),
    };
    let state = Arc::new(AppState {
        cortex: cortex.clone(),
        repo,
        users,
        jobs,
        settings: settings.clone(),
        admin_token: admin_token.clone(),
    });

    jobs::warm(state.clone()).await;
    if !settings.warm_interval.is_zero() {
        let (state, every) = (state.clone(), settings.warm_interval);
        cortex.track_background(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                jobs::warm(state.clone()).await;
            }
        }));
    }

    let listener = tokio::net::TcpListener::bind(settings.addr).await?;
    let addr = listener.local_addr()?;
    println!(
        "Cortex service listening on http://{addr} ({} database)",
        state.repo.backend()
    );
    if token_made {
        println!(
            "admin token (made for this run; set CORTEX_ADMIN_TOKEN to choose one): {admin_token}"
        );
    } else {
        println!("admin token: from CORTEX_ADMIN_TOKEN");
    }
    println!(
        "try: curl -s -X POST http://{addr}/users -H 'content-type: application/json' -d '{{\"name\":\"Ada\",\"email\":\"ada@example.com\"}}'"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = app::router(state.clone());
    let mut server = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    tokio::select! {
        () = app::shutdown_signal() => {}
        served = &mut server => {
            served??;
            return Err("the server stopped by itself".into());
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    let deadline = settings.shutdown_timeout;
    let started = std::time::Instant::now();
    if tokio::time::timeout(deadline, &mut server).await.is_err() {
        tracing::warn!("requests still in flight at the deadline were cut off");
        server.abort();
    }
    drop(state);
    let report = cortex
        .shutdown(deadline.saturating_sub(started.elapsed()))
        .await;
    if report.is_complete() {
        tracing::info!(?report, "stopped cleanly");
    } else {
        tracing::warn!(?report, "stopped; some work did not run");
    }
    println!("stopped");
    Ok(())
}

/// PostgreSQL upkeep as low-priority tasks of the in-process queue: month partitions
/// of `messages` made ahead (hourly), and the user activity view refreshed
/// concurrently (every `CORTEX_ACTIVITY_REFRESH` seconds, default 60).
fn postgres_upkeep(cortex: &Cortex, pg: Arc<PostgresRepo>) {
    use cortex_core::tasks::Priority;
    use std::time::Duration;

    let refresh_every = std::env::var("CORTEX_ACTIVITY_REFRESH")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(60));
    let queue = cortex.tasks().clone();
    cortex.track_background(tokio::spawn(async move {
        let mut refresh = tokio::time::interval(refresh_every);
        let mut partitions = tokio::time::interval(Duration::from_secs(3600));
        loop {
            let job = tokio::select! {
                _ = partitions.tick() => "partitions",
                _ = refresh.tick() => "activity",
            };
            let pg = pg.clone();
            let enqueued = queue
                .enqueue(Priority::Low, job, async move {
                    match job {
                        "partitions" => pg.create_partitions(2).await.map(drop),
                        _ => pg.refresh_activity().await,
                    }
                })
                .await;
            if let Err(e) = enqueued {
                tracing::warn!(job, error = %e, "upkeep not enqueued");
            }
        }
    }));
}
