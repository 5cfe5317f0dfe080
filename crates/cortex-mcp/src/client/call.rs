//! One call: its attempts, retries and hedges, within its deadline, and how their
//! failures become [`Error`]s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cortex_metrics::Operation;
use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ErrorCode, ReadResourceRequestParams,
    ReadResourceResult, Tool,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::retry::{self, Step, backoff};
use super::{CallOptions, Inner};
use crate::error::BoxError;
use crate::session::Lease;
use crate::{Error, Result};

#[derive(Debug)]
pub(super) enum Request {
    Tool(CallToolRequestParams),
    Resource(ReadResourceRequestParams),
    ListTools,
}

impl Request {
    fn method(&self) -> &'static str {
        match self {
            Request::Tool(_) => "tools/call",
            Request::Resource(_) => "resources/read",
            Request::ListTools => "tools/list",
        }
    }
}

#[derive(Debug)]
pub(super) enum Response {
    Tool(CallToolResult),
    Resource(ReadResourceResult),
    Tools(Vec<Tool>),
}

/// Counts a call in flight; wakes `close` when the last one ends.
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Copies of one attempt (two when hedged) that may have reached the service.
#[derive(Debug, Default)]
struct Sent(AtomicUsize);

impl Sent {
    /// A copy is handed to the transport: from now on it may arrive.
    fn start(&self) -> SentCopy<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        SentCopy(self)
    }

    /// Whether any copy may have reached the service.
    fn maybe(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One copy counted in [`Sent`].
struct SentCopy<'a>(&'a Sent);

impl SentCopy<'_> {
    /// The copy provably never left.
    fn undo(self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether the failure proves the request never reached the service: no HTTP
/// connection could be made (refused, unreachable, TLS refused), or the pipe to a
/// stdio child was closed when the request was written, so the child could not read
/// it whole. Anything else, once the request was handed to the transport, may have
/// been delivered.
fn never_delivered(e: &ServiceError) -> bool {
    use rmcp::transport::streamable_http_client::StreamableHttpError;

    let ServiceError::TransportSend(e) = e else {
        return false;
    };
    let error: &(dyn std::error::Error + 'static) = &*e.error;
    // The error of the transport itself: rmcp's HTTP error (which does not name the
    // reqwest error as its source), or the child process's I/O error.
    if let Some(http) = error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return matches!(http, StreamableHttpError::Client(e) if e.is_connect());
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        return io.kind() == std::io::ErrorKind::BrokenPipe;
    }
    false
}

impl Inner {
    /// [`Error::Closed`] once `close` has begun: also for answers the cache holds.
    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                service: self.service.clone(),
            });
        }
        Ok(())
    }

    /// The tool of `request` if it is not safe to repeat: not declared idempotent by
    /// the caller nor annotated so by the service. Reads and listings always are.
    pub(super) fn unrepeatable_tool<'r>(
        &self,
        request: &'r Request,
        opts: &CallOptions,
    ) -> Option<&'r str> {
        match request {
            Request::Tool(params)
                if !opts.declared_idempotent() && !self.hints.repeatable(&params.name) =>
            {
                Some(&params.name)
            }
            _ => None,
        }
    }

    /// Attempts with retries, each admitted by the breaker, all within the call's
    /// deadline. A call not safe to repeat is retried only while it provably never
    /// reached the service; once it may have, a timeout or transport failure ends it
    /// with [`Error::Indeterminate`].
    pub(super) async fn execute(
        self: &Arc<Self>,
        request: Request,
        opts: &CallOptions,
    ) -> Result<Response> {
        let span = tracing::debug_span!(
            "mcp.call",
            service = &*self.service,
            method = request.method(),
            tool = tracing::field::Empty,
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        if let Request::Tool(params) = &request {
            span.record("tool", &*params.name);
        }
        let made = AtomicUsize::new(0);
        let outcome = self
            .attempts(request, opts, &made)
            .instrument(span.clone())
            .await;
        span.record("attempts", made.load(Ordering::Relaxed));
        span.record("outcome", if outcome.is_ok() { "ok" } else { "error" });
        outcome
    }

    /// [`execute`](Self::execute) inside its span; counts the attempts made into
    /// `made`.
    async fn attempts(
        self: &Arc<Self>,
        request: Request,
        opts: &CallOptions,
        made: &AtomicUsize,
    ) -> Result<Response> {
        self.check_open()?;
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(self);
        self.m.requests.increment();
        let call_timeout = opts.timeout.unwrap_or(self.config.call_timeout);
        let deadline = Instant::now() + call_timeout;
        // Only a call that may run twice is ever sent twice at once.
        let hedge =
            self.config.hedge_after.is_some() && self.unrepeatable_tool(&request, opts).is_none();
        let mut retries = 0;
        loop {
            let permit =
                self.breaker
                    .admit()
                    .map_err(|(failures, retry_in)| Error::CircuitOpen {
                        service: self.service.clone(),
                        failures,
                        retry_in,
                    })?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The error names the limit that ran out: the attempt's, or the call's.
            let (budget, limit) = if self.config.request_timeout <= remaining {
                (self.config.request_timeout, self.config.request_timeout)
            } else {
                (remaining, call_timeout)
            };
            let sent = Sent::default();
            made.fetch_add(1, Ordering::Relaxed);
            let attempt = self
                .send(&request, hedge, &sent)
                .instrument(tracing::debug_span!("mcp.attempt", attempt = retries + 1));
            let outcome = match tokio::time::timeout(budget, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Error::Timeout {
                    service: self.service.clone(),
                    after: limit,
                }),
            };
            let error = match outcome {
                Ok(response) => {
                    permit.success();
                    return Ok(response);
                }
                Err(e) if !e.is_retryable() => {
                    // The service answered; it is up.
                    permit.success();
                    return Err(e);
                }
                Err(e @ Error::NoSession { .. }) if permit.is_probe() => {
                    // No session was up to probe the service with (they are being
                    // rebuilt): the probe learned nothing, so it is given back rather
                    // than failed, which would start another whole cooldown; the next
                    // attempt probes as soon as a session is back.
                    drop(permit);
                    e
                }
                Err(e) => {
                    if matches!(e, Error::Timeout { .. }) {
                        self.m.timeouts.increment();
                        // A session that never answers (its server died and came back
                        // without it) fails every call by timing out, which breaks no
                        // session: find it out.
                        self.check_sessions(None);
                    }
                    if permit.failure() {
                        self.m.circuit_opened.increment();
                        tracing::warn!(
                            service = %self.service,
                            failures = self.config.breaker_failures,
                            cooldown = ?self.config.breaker_cooldown,
                            error = %e,
                            "MCP circuit opened"
                        );
                    }
                    e
                }
            };
            // Asked again (hints may have been learned since the call began).
            let unrepeatable = self.unrepeatable_tool(&request, opts);
            let step = retry::next_step(retry::Attempted {
                maybe_sent: sent.maybe(),
                repeatable: unrepeatable.is_none(),
                retries,
                max_retries: self.config.max_retries,
                closed: self.closed.load(Ordering::Acquire),
                delay: backoff(&self.config, retries),
                remaining: deadline.saturating_duration_since(Instant::now()),
            });
            let delay = match step {
                Step::RetryAfter(delay) => delay,
                Step::Fail => return Err(error),
                Step::Indeterminate => {
                    let tool = unrepeatable.unwrap_or_default();
                    tracing::warn!(
                        service = %self.service,
                        tool,
                        error = %cortex_support::error_chain(&error),
                        "MCP call not retried: it may or may not have run, and the tool is not known to be safe to repeat"
                    );
                    return Err(Error::Indeterminate {
                        service: self.service.clone(),
                        tool: tool.to_owned(),
                        source: Box::new(error),
                    });
                }
            };
            tracing::debug!(service = %self.service, retry = retries + 1, ?delay, error = %cortex_support::error_chain(&error), "retrying MCP call");
            tokio::time::sleep(delay).await;
            retries += 1;
            self.m.retries.increment();
        }
    }

    /// One attempt, hedged on a second session when allowed and configured.
    async fn send(
        self: &Arc<Self>,
        request: &Request,
        hedge: bool,
        sent: &Sent,
    ) -> Result<Response> {
        let Some(after) = self.config.hedge_after.filter(|_| hedge) else {
            return self.attempt(request, sent).await;
        };
        let Some(lease) = self.pool.lease(None) else {
            return Err(self.no_session());
        };
        let first_slot = lease.slot;
        let first = self.attempt_on(request, lease, sent);
        tokio::pin!(first);
        tokio::select! {
            outcome = &mut first => return outcome,
            () = tokio::time::sleep(after) => {}
        }
        self.m.hedges.increment();
        let second = async {
            match self.pool.lease(Some(first_slot)) {
                Some(lease) => self.attempt_on(request, lease, sent).await,
                None => Err(self.no_session()),
            }
        };
        tokio::pin!(second);
        // The first success wins; a failure waits for the other copy.
        tokio::select! {
            outcome = &mut first => match outcome {
                Ok(response) => Ok(response),
                Err(_) => second.await,
            },
            outcome = &mut second => match outcome {
                Ok(response) => Ok(response),
                Err(_) => first.await,
            },
        }
    }

    pub(super) fn no_session(&self) -> Error {
        Error::NoSession {
            service: self.service.clone(),
        }
    }

    /// One request on the session the pool offers.
    async fn attempt(self: &Arc<Self>, request: &Request, sent: &Sent) -> Result<Response> {
        match self.pool.lease(None) {
            Some(lease) => self.attempt_on(request, lease, sent).await,
            None => Err(self.no_session()),
        }
    }

    /// One request on a leased session, noted in `sent` from the moment it is handed
    /// to the transport until it is known not to have left.
    async fn attempt_on(
        self: &Arc<Self>,
        request: &Request,
        lease: Lease<'_>,
        sent: &Sent,
    ) -> Result<Response> {
        let (slot, session) = (lease.slot, &lease.session);
        let peer = &session.peer;
        if peer.is_transport_closed() {
            self.break_session(slot, session);
            // Found closed before sending: no lower error to keep.
            return Err(Error::Transport {
                service: self.service.clone(),
                source: None,
            });
        }
        let copy = sent.start();
        let outcome = match request {
            Request::Tool(params) => peer.call_tool(params.clone()).await.map(Response::Tool),
            Request::Resource(params) => peer
                .read_resource(params.clone())
                .await
                .map(Response::Resource),
            Request::ListTools => peer.list_all_tools().await.map(Response::Tools),
        };
        outcome.map_err(|e| {
            if never_delivered(&e) {
                copy.undo();
            }
            let error = self.map_service_error(request, e);
            if matches!(error, Error::Transport { .. }) {
                self.break_session(slot, session);
            }
            error
        })
    }

    pub(super) fn map_service_error(&self, request: &Request, e: ServiceError) -> Error {
        let service = self.service.clone();
        let method = request.method();
        match e {
            ServiceError::McpError(data) => match request {
                Request::Tool(params) if data.code == ErrorCode::INVALID_PARAMS => Error::Tool {
                    service,
                    tool: params.name.to_string(),
                    message: data.message.into_owned(),
                },
                _ => Error::Rpc {
                    service,
                    method,
                    code: data.code.0,
                    message: data.message.into_owned(),
                },
            },
            e @ (ServiceError::TransportSend(_) | ServiceError::TransportClosed) => {
                Error::Transport {
                    service,
                    source: Some(Box::new(crate::scrub::service(e))),
                }
            }
            ServiceError::Timeout { timeout } => Error::Timeout {
                service,
                after: timeout,
            },
            other => Error::Protocol {
                service,
                method,
                source: Some(Box::new(crate::scrub::service(other))),
            },
        }
    }

    pub(super) fn tool_outcome(
        &self,
        tool: &str,
        result: CallToolResult,
    ) -> Result<CallToolResult> {
        if result.is_error != Some(true) {
            return Ok(result);
        }
        let message = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n");
        Err(Error::Tool {
            service: self.service.clone(),
            tool: tool.to_owned(),
            message,
        })
    }

    pub(super) fn finish<T>(
        &self,
        op: &Operation,
        method: &str,
        target: &str,
        started: Instant,
        outcome: &Result<T>,
    ) {
        let elapsed = started.elapsed();
        op.record(elapsed, outcome.is_ok());
        self.m.call.record_duration(elapsed);
        if let Err(e) = outcome {
            if e.is_tool_error() {
                self.m.tool_errors.increment();
            }
            self.m.errors.increment();
        }
        if elapsed >= self.config.slow_call {
            tracing::warn!(
                service = %self.service,
                method,
                target,
                elapsed_ms = elapsed.as_millis() as u64,
                ok = outcome.is_ok(),
                "slow MCP call"
            );
        }
    }

    pub(super) fn unexpected(&self, method: &'static str) -> Error {
        Error::Protocol {
            service: self.service.clone(),
            method,
            source: None,
        }
    }

    pub(super) fn connect_error(&self, source: BoxError) -> Error {
        Error::Connect {
            service: self.service.clone(),
            endpoint: self.endpoint.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::RoleClient;
    use rmcp::transport::{DynamicTransportError, TokioChildProcess};

    fn child_send_error(kind: std::io::ErrorKind) -> ServiceError {
        ServiceError::TransportSend(DynamicTransportError::new::<TokioChildProcess, RoleClient>(
            std::io::Error::from(kind),
        ))
    }

    #[test]
    fn only_a_closed_pipe_proves_a_request_never_left() {
        assert!(never_delivered(&child_send_error(
            std::io::ErrorKind::BrokenPipe
        )));
        // A reset may come after the child read the request.
        assert!(!never_delivered(&child_send_error(
            std::io::ErrorKind::ConnectionReset
        )));
        assert!(!never_delivered(&ServiceError::TransportClosed));
    }

    #[test]
    fn copies_count_until_undone() {
        let sent = Sent::default();
        assert!(!sent.maybe());
        let first = sent.start();
        let second = sent.start();
        first.undo();
        assert!(sent.maybe(), "one copy may still have arrived");
        second.undo();
        assert!(!sent.maybe());
        let _kept = sent.start();
        assert!(sent.maybe(), "a copy not undone may have arrived");
    }

    #[test]
    fn requests_name_their_method() {
        assert_eq!(Request::ListTools.method(), "tools/list");
        let read = Request::Resource(ReadResourceRequestParams::new("demo://x"));
        assert_eq!(read.method(), "resources/read");
        let call = Request::Tool(CallToolRequestParams::new("echo"));
        assert_eq!(call.method(), "tools/call");
    }
}
