//! The `mcp.call` debug span (service, method, tool, attempts, outcome) with one
//! `mcp.attempt` child per attempt, and the `traceparent` a caller gives, carried in
//! the request's `_meta` to the service.

use cortex_mcp::testing::{TRACEPARENT, TestServer};
use cortex_mcp::{CallOptions, Endpoint, Error, McpClient};
use serde_json::json;
use tracing::Instrument;

use crate::capture::Capture;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn client(server: &TestServer) -> McpClient {
    McpClient::builder("spans", Endpoint::http(server.url()))
        .build()
        .await
        .expect("connect to the test server")
}

#[tokio::test]
async fn a_tool_call_is_an_mcp_call_span_under_the_request() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    let (spans, _guard) = Capture::install();
    client
        .call_tool("echo", json!({ "message": "hi" }))
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();

    let call = spans.one("mcp.call");
    assert_eq!(call.parent, Some("request"));
    assert_eq!(call.field("service"), Some("spans"));
    assert_eq!(call.field("method"), Some("tools/call"));
    assert_eq!(call.field("tool"), Some("echo"));
    assert_eq!(call.field("attempts"), Some("1"));
    assert_eq!(call.field("outcome"), Some("ok"));
    let attempt = spans.one("mcp.attempt");
    assert_eq!(attempt.parent, Some("mcp.call"));
    assert_eq!(attempt.field("attempt"), Some("1"));
}

#[tokio::test]
async fn a_given_traceparent_reaches_the_service_in_meta() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    let read = |opts: CallOptions| {
        let client = &client;
        async move {
            let r = client
                .read_resource_with(TRACEPARENT, opts.uncached())
                .await?;
            Ok::<_, Error>(match &r.contents[0] {
                cortex_mcp::rmcp::model::ResourceContents::TextResourceContents {
                    text, ..
                } => text.clone(),
                other => panic!("{other:?}"),
            })
        }
    };
    assert_eq!(read(CallOptions::new().traceparent(TP)).await.unwrap(), TP);
    assert_eq!(read(CallOptions::new()).await.unwrap(), "none");
    // A malformed one fails the call, naming it, and nothing is sent.
    let before = server.calls_of("resources/read");
    let err = read(CallOptions::new().traceparent("00-nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { key: "traceparent", value, .. } if value == "00-nope"),
        "{err:?}"
    );
    assert_eq!(server.calls_of("resources/read"), before);
}
