#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "batch")]
#[doc(inline)]
pub use cortex_batch as batch;
#[cfg(feature = "cache")]
#[doc(inline)]
pub use cortex_cache as cache;
#[cfg(feature = "dbtune")]
#[doc(inline)]
pub use cortex_dbtune as dbtune;
#[cfg(feature = "load")]
#[doc(inline)]
pub use cortex_load as load;
#[cfg(feature = "mcp")]
#[doc(inline)]
pub use cortex_mcp as mcp;
#[cfg(feature = "metrics")]
#[doc(inline)]
pub use cortex_metrics as metrics;
#[cfg(feature = "pool")]
#[doc(inline)]
pub use cortex_pool as pool;
#[cfg(feature = "profile")]
#[doc(inline)]
pub use cortex_profile as profile;
#[doc(inline)]
pub use cortex_support as support;
#[cfg(feature = "tasks")]
#[doc(inline)]
pub use cortex_tasks as tasks;

#[cfg(feature = "wiring")]
mod config;
#[cfg(feature = "wiring")]
mod error;
#[cfg(feature = "wiring")]
mod wiring;

#[cfg(feature = "wiring")]
pub use self::config::CortexConfig;
#[cfg(feature = "wiring")]
pub use self::error::{Error, Result};
#[cfg(feature = "wiring")]
pub use self::wiring::{Cortex, CortexBuilder, CortexCache, Database, ShutdownReport};
