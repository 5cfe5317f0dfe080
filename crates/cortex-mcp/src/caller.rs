use rmcp::model::{CallToolResult, ReadResourceResult, Tool};
use serde_json::Value;

use crate::{McpClient, Result};

/// Something you call tools on: the real [`McpClient`], or a fake in a test.
///
/// Code that takes `&dyn ToolCaller` (or `impl ToolCaller`) runs against a service in
/// production and against a few lines of fake in a unit test.
///
/// ```
/// use cortex_mcp::{Error, Result, ToolCaller};
/// use cortex_mcp::rmcp::model::{CallToolResult, ContentBlock, ReadResourceResult, Tool};
/// use serde_json::{json, Value};
///
/// struct Fake;
///
/// #[cortex_mcp::async_trait]
/// impl ToolCaller for Fake {
///     async fn call_tool(&self, name: &str, args: Value) -> Result<CallToolResult> {
///         Ok(CallToolResult::success(vec![ContentBlock::text(format!("{name} {args}"))]))
///     }
///     async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
///         Err(Error::Rpc { service: "fake".into(), method: "resources/read", code: -32002, message: uri.into() })
///     }
///     async fn list_tools(&self) -> Result<Vec<Tool>> {
///         Ok(Vec::new())
///     }
/// }
///
/// async fn greet(tools: &dyn ToolCaller) -> Result<String> {
///     let r = tools.call_tool("echo", json!({ "message": "hi" })).await?;
///     Ok(r.content[0].as_text().map(|t| t.text.clone()).unwrap_or_default())
/// }
///
/// # tokio_test_block_on(async {
/// assert_eq!(greet(&Fake).await.unwrap(), r#"echo {"message":"hi"}"#);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[async_trait::async_trait]
pub trait ToolCaller: Send + Sync {
    /// Call tool `name` with `args` (a JSON object, or null for none).
    async fn call_tool(&self, name: &str, args: Value) -> Result<CallToolResult>;

    /// Read the resource at `uri`.
    async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult>;

    /// The tools on offer.
    async fn list_tools(&self) -> Result<Vec<Tool>>;
}

#[async_trait::async_trait]
impl ToolCaller for McpClient {
    async fn call_tool(&self, name: &str, args: Value) -> Result<CallToolResult> {
        McpClient::call_tool(self, name, args).await
    }

    async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
        McpClient::read_resource(self, uri).await
    }

    async fn list_tools(&self) -> Result<Vec<Tool>> {
        McpClient::list_tools(self).await
    }
}
