#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
//! PostgreSQL advice for Cortex.
//!
//! - [`pgtune`]: settings from machine resources, giving exactly the values of pgtune.
//! - [`system`]: host checks (OS, CPUs, memory, open files, env vars, pool size) and
//!   recommended service defaults.
//! - [`plan`]: a typed model of `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` output and a
//!   rule engine producing [`plan::Finding`]s (index and query patterns included), and
//!   lints of the SQL text ([`plan::lint_sql`]).
//! - [`advisor`]: index advice from plans and `pg_stat_statements`, verified with HypoPG.
//! - [`settings`]: the live server's settings and statistics against pgtune, as
//!   `postgresql.conf` text or validated `ALTER SYSTEM` statements.
//! - [`maintenance`]: unused and duplicate indexes, dead tuples, bloat, last vacuum and
//!   analyze, orphaned temporary tables, with quoted SQL.
//! - [`analyze_query`]: runs `EXPLAIN ANALYZE` of a statement on a live server with its
//!   parameters bound, inside a transaction that is always rolled back.
//! - `cli` (feature `cli`, on by default): the `cortex-dbtune` command line.

pub mod advisor;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod error;
mod live;
pub mod maintenance;
pub mod pgtune;

pub use error::{Error, Result};
pub use live::{Analysis, AnalyzeOptions, Param, analyze_query};
pub mod plan;
pub mod settings;
pub mod system;
