//! The session slots: connecting, learning the tools' annotations, and rebuilding a
//! broken session in the background.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cortex_support::backoff::Backoff;
use rmcp::ServiceError;
use rmcp::model::{ClientRequest, PingRequest, ServerResult};
use tokio::time::error::Elapsed;

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

    /// Empty the slot and rebuild it in the background, and check the other sessions:
    /// what broke this one (the server died) may have broken them too.
    pub(super) fn break_session(self: &Arc<Self>, slot: usize, session: &Arc<Session>) {
        if self.pool.evict(slot, session) {
            tracing::warn!(service = %self.service, slot, "MCP session broken; reconnecting");
            let session = session.clone();
            // Closing waits on rmcp's tasks; the caller should not.
            tokio::spawn(async move { session.close(Duration::from_secs(1)).await });
            self.spawn_reconnect(slot);
            self.check_sessions(Some(slot));
        }
    }

    /// Ping the session of every slot but `except` in the background (at most one
    /// check per slot at a time) and break those that do not answer within
    /// `connect_timeout`.
    ///
    /// A session whose server died while it was idle is not found out by any call:
    /// rmcp keeps it open, and a server started again on the same address answers its
    /// unknown session id with an error that names no request (HTTP 400 from the
    /// reference server), which rmcp drops, so every call on that session waits for
    /// its whole timeout, is retried, and never breaks it. Checked, it is rebuilt.
    pub(super) fn check_sessions(self: &Arc<Self>, except: Option<usize>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        for slot in (0..self.pool.slots.len()).filter(|i| Some(*i) != except) {
            let Some(session) = self.pool.slots[slot].start_check() else {
                continue;
            };
            let inner = self.clone();
            tokio::spawn(async move {
                let ping = ClientRequest::PingRequest(PingRequest::default());
                let answer = tokio::select! {
                    () = inner.shutdown.cancelled() => None,
                    answer = tokio::time::timeout(
                        inner.config.connect_timeout,
                        session.peer.send_request(ping),
                    ) => Some(answer),
                };
                inner.pool.slots[slot].end_check();
                if let Some(answer) = answer
                    && !answered(&answer)
                {
                    tracing::debug!(service = %inner.service, slot, "MCP session did not answer a ping");
                    inner.break_session(slot, &session);
                }
            });
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

/// Whether a ping's outcome shows the session alive: any answer, an error answer
/// included (the server knows the session and replied to it). A transport failure or
/// no answer in time shows it dead.
fn answered(outcome: &Result<Result<ServerResult, ServiceError>, Elapsed>) -> bool {
    matches!(outcome, Ok(Ok(_) | Err(ServiceError::McpError(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{EmptyResult, ErrorCode, ErrorData};

    #[tokio::test(start_paused = true)]
    async fn a_session_is_alive_when_its_server_answers_the_ping_even_with_an_error() {
        let ok: Result<Result<ServerResult, ServiceError>, Elapsed> =
            Ok(Ok(ServerResult::EmptyResult(EmptyResult {})));
        assert!(answered(&ok));
        let refused = Ok(Err(ServiceError::McpError(ErrorData::new(
            ErrorCode::METHOD_NOT_FOUND,
            "no ping here",
            None,
        ))));
        assert!(answered(&refused));
        assert!(!answered(&Ok(Err(ServiceError::TransportClosed))));
        let silent = tokio::time::timeout(
            Duration::from_millis(10),
            std::future::pending::<Result<ServerResult, ServiceError>>(),
        )
        .await;
        assert!(!answered(&silent), "no answer in time");
    }
}
