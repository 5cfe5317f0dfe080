//! MCP tests.
