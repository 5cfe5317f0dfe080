#![doc = include_str!("../README.md")]

mod breaker;
mod caller;
mod client;
mod config;
mod error;
mod factory;
mod hints;
mod key;
mod scrub;
mod session;
mod stats;

pub use self::breaker::CircuitState;
pub use self::caller::ToolCaller;
pub use self::client::{CallOptions, McpClient, McpClientBuilder};
pub use self::config::{Endpoint, McpClientConfig};
pub use self::error::{BoxError, Error, Result};
pub use self::factory::McpClientFactory;
pub use self::stats::{Health, McpStats};

/// For implementing [`ToolCaller`] without naming another crate.
pub use async_trait::async_trait;
/// The MCP SDK this crate is built on, for its model types (`CallToolResult`,
/// `ContentBlock`, `Tool`, ...).
pub use rmcp;

#[cfg(feature = "test-server")]
pub mod testing;
