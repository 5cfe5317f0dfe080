//! Fault tests against in-process rmcp servers.
