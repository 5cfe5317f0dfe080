#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

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
#[cfg_attr(docsrs, doc(cfg(feature = "test-server")))]
pub mod testing;

#[cfg(test)]
mod readme {
    use cortex_support::FromEnv;

    #[test]
    fn the_readme_lists_every_variable() {
        let vars = [crate::McpClientConfig::VARS, crate::McpClientFactory::VARS].concat();
        cortex_support::env::check_readme(include_str!("../README.md"), &vars).unwrap();
    }
}
