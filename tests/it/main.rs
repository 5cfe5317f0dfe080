//! Workspace-level integration tests: one binary, so the workspace links few test executables.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap should fail right there

mod architecture;
mod bad_input;
mod keyspace;
mod operator;
mod prometheus;
mod service;
mod service_cluster;
mod service_openapi;
mod service_pg;
mod service_tour;
mod service_wiring;
mod services;
mod trace;
