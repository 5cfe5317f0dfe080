#![doc = include_str!("../README.md")]
//! PostgreSQL advice for Cortex.
//!
//! - [`pgtune`]: settings from machine resources, giving exactly the values of pgtune.
//! - [`system`]: host checks (OS, CPUs, memory, open files, env vars, pool size).
//! - [`plan`]: a typed model of `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` output and a
//!   rule engine producing [`plan::Finding`]s.
//! - [`analyze_query`]: runs `EXPLAIN ANALYZE` of a statement on a live server with its
//!   parameters bound, inside a transaction that is always rolled back.

pub mod error;
mod live;
pub mod pgtune;

pub use error::{Error, Result};
pub use live::{Analysis, AnalyzeOptions, Param, analyze_query};
pub mod plan;
pub mod system;
