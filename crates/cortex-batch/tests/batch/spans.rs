//! The `batch.load` debug span: one per loaded batch, named by the batcher, with the
//! batch size, linked (`follows_from`) to the request that made the batch due.

use std::time::Duration;

use cortex_batch::{Batcher, batch_fn};
use tracing::Instrument;

use cortex_support::test_util::spans::Capture;

#[tokio::test]
async fn a_full_batch_loads_in_a_span_that_follows_from_the_request() {
    let (spans, _guard) = Capture::install();
    let b = Batcher::builder(batch_fn(|keys: Vec<u64>| async move {
        tracing::debug_span!("db.query")
            .in_scope(|| Ok::<_, std::io::Error>(keys.iter().map(|k| k * 10).collect::<Vec<_>>()))
    }))
    .name("users")
    .max_batch_size(3)
    .max_wait(Duration::from_secs(5))
    .build()
    .unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        b.load_many([1, 2, 2])
            .instrument(tracing::info_span!("request")),
    )
    .await
    .expect("load hung");
    assert_eq!(
        got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [10, 20, 20]
    );

    let load = spans.one("batch.load");
    // A batch serves many callers: it is a root linked to the one that filled it.
    assert_eq!(load.parent, None);
    assert_eq!(load.follows, ["request"]);
    assert_eq!(load.field("batch"), Some("users"));
    assert_eq!(load.field("size"), Some("3"));
    assert_eq!(load.field("keys"), Some("2"));
    assert_eq!(spans.one("db.query").parent, Some("batch.load"));
}
