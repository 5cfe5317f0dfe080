//! The session slots: connecting, learning the tools' annotations, and rebuilding a
//! broken session in the background.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cortex_support::backoff::Backoff;
use rmcp::ServiceError;

use super::Inner;
use crate::Error;
use crate::error::BoxError;
use crate::session::Session;

impl Inner {
    /// Learn from a `tools/list` on `session` (within `connect_timeout`) which tools are
    /// safe to repeat. True once known; a failure leaves what was known before.
    pub(super) async fn learn_tools_on(&self, session: &Session) -> bool {
        let peer = &session.peer;
        if peer
            .peer_info()
            .is_some_and(|info| info.capabilities.tools.is_none())
        {
            self.hints.learn_none();
            return true;
        }
        match tokio::time::timeout(self.config.connect_timeout, peer.list_all_tools()).await {
            Ok(Ok(tools)) => {
                self.hints.learn(&tools);
                true
            }
            Ok(Err(ServiceError::McpError(e))) => {
                // The service answered: it lists no tools.
                tracing::debug!(service = %self.service, error = %e.message, "tools/list refused");
                self.hints.learn_none();
                true
            }
            Ok(Err(e)) => {
                let error = cortex_support::error_chain(&crate::scrub::service(e));
                tracing::debug!(service = %self.service, %error, "tools/list failed; tool annotations unknown");
                false
            }
            Err(_) => {
                tracing::debug!(service = %self.service, "tools/list timed out; tool annotations unknown");
                false
            }
        }
    }

    /// Learn the tools' annotations in the background, at most one such task at a
    /// time, and at most one try per `retry_delay` while they fail.
    pub(super) fn spawn_learn_tools(self: &Arc<Self>) {
        if self.shutdown.is_cancelled() || !self.hints.start_refresh() {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let session = inner.pool.lease(None).map(|lease| lease.session.clone());
            let learned = match session {
                Some(session) => tokio::select! {
                    () = inner.shutdown.cancelled() => true,
                    learned = inner.learn_tools_on(&session) => learned,
                },
                None => false,
            };
            if !learned {
                tokio::select! {
                    () = inner.shutdown.cancelled() => {}
                    () = tokio::time::sleep(inner.config.retry_delay) => {}
                }
            }
            inner.hints.end_refresh();
        });
    }

    /// One session within `connect_timeout`.
    pub(super) async fn connect_once(&self) -> std::result::Result<Session, BoxError> {
        match tokio::time::timeout(self.config.connect_timeout, self.connector.connect()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Box::new(Error::Timeout {
                service: self.service.clone(),
                after: self.config.connect_timeout,
            })),
        }
    }

    /// Empty the slot and rebuild it in the background.
    pub(super) fn break_session(self: &Arc<Self>, slot: usize, session: &Arc<Session>) {
        if self.pool.evict(slot, session) {
            tracing::warn!(service = %self.service, slot, "MCP session broken; reconnecting");
            let session = session.clone();
            // Closing waits on rmcp's tasks; the caller should not.
            tokio::spawn(async move { session.close(Duration::from_secs(1)).await });
            self.spawn_reconnect(slot);
        }
    }

    /// Refill `slot` in the background: tries at once, then waits `retry_delay`
    /// doubling up to `max_retry_delay`, with jitter, until a session is made or the
    /// client is closed. At most one such task per slot.
    pub(super) fn spawn_reconnect(self: &Arc<Self>, slot: usize) {
        let flag = &self.pool.slots[slot].reconnecting;
        if self.shutdown.is_cancelled() || flag.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let backoff = Backoff::new(
                inner.config.retry_delay.max(Duration::from_millis(1)),
                inner.config.max_retry_delay,
            );
            let mut attempt = 0;
            loop {
                let outcome = tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    outcome = inner.connect_once() => outcome,
                };
                match outcome {
                    Ok(session) => {
                        // The service may have been redeployed with other tools: learn
                        // them before the session takes calls.
                        let closing = tokio::select! {
                            () = inner.shutdown.cancelled() => true,
                            _ = inner.learn_tools_on(&session) => false,
                        };
                        if closing {
                            session.close(Duration::from_millis(100)).await;
                            break;
                        }
                        inner.pool.slots[slot]
                            .session
                            .store(Some(Arc::new(session)));
                        inner.m.reconnects.increment();
                        tracing::info!(service = %inner.service, slot, "MCP session reconnected");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(service = %inner.service, slot, error = %cortex_support::error_chain(&*e), "MCP reconnect failed");
                    }
                }
                tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff.delay(attempt)) => {}
                }
                attempt = attempt.saturating_add(1);
            }
            inner.pool.slots[slot]
                .reconnecting
                .store(false, Ordering::Release);
            if inner.shutdown.is_cancelled() {
                // A session made while closing must not outlive the client.
                if let Some(session) = inner.pool.slots[slot].session.swap(None) {
                    session.close(Duration::from_millis(100)).await;
                }
            }
        });
    }
}
