//! The `mcp.call` debug span (service, method, tool, attempts, outcome) with one
//! `mcp.attempt` child per attempt, and the `traceparent` a caller gives, carried in
//! the request's `_meta` to the service (or, without one, a child of the current
//! `TraceParent::scope`).

use cortex_mcp::testing::{TRACEPARENT, TestServer};
use cortex_mcp::{CallOptions, Endpoint, Error, McpClient};
use serde_json::json;
use tracing::Instrument;

use cortex_support::test_util::spans::Capture;
use cortex_support::trace::TraceParent;

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

/// The `traceparent` the test server saw in the `_meta` of a resource read.
async fn sent_traceparent(client: &McpClient, opts: CallOptions) -> String {
    let r = client
        .read_resource_with(TRACEPARENT, opts.uncached())
        .await
        .expect("read the traceparent echo");
    match &r.contents[0] {
        cortex_mcp::rmcp::model::ResourceContents::TextResourceContents { text, .. } => {
            text.clone()
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_call_inside_a_trace_scope_sends_a_child_of_it() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    let scope = TraceParent::parse(TP).unwrap();
    let sent = scope
        .clone()
        .scope(sent_traceparent(&client, CallOptions::new()))
        .await;
    let sent = TraceParent::parse(&sent).expect("a valid traceparent was sent");
    assert_eq!(sent.trace_id(), scope.trace_id());
    assert_ne!(
        sent.parent_id(),
        scope.parent_id(),
        "a child: a new parent id"
    );
    // One given in the options wins over the scope.
    let given = TraceParent::generate();
    let sent = scope
        .scope(sent_traceparent(
            &client,
            CallOptions::new().traceparent(given.as_str()),
        ))
        .await;
    assert_eq!(sent, given.as_str());
}

#[tokio::test]
async fn a_call_outside_any_trace_scope_sends_none() {
    let server = TestServer::start().await.unwrap();
    let client = client(&server).await;
    assert_eq!(TraceParent::current(), None);
    assert_eq!(sent_traceparent(&client, CallOptions::new()).await, "none");
}
