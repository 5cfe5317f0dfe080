//! The `dbtune.analyze` debug span around a live analysis.

use cortex_dbtune::{AnalyzeOptions, Param, analyze_query};
use tracing::Instrument;

use cortex_support::test_util::spans::Capture;

#[tokio::test]
async fn a_live_analysis_is_a_dbtune_analyze_span_under_the_caller() {
    let pool = crate::pool().await;
    let (spans, _guard) = Capture::install();
    let a = analyze_query(
        &pool,
        "SELECT $1::int + 1",
        &[Param::Int(41)],
        &AnalyzeOptions::default(),
    )
    .instrument(tracing::info_span!("request"))
    .await
    .expect("SELECT analyzes");

    let span = spans.one("dbtune.analyze");
    assert_eq!(span.parent, Some("request"));
    assert_eq!(span.field("params"), Some("1"));
    assert_eq!(
        span.field("findings"),
        Some(a.findings.len().to_string().as_str())
    );
}
