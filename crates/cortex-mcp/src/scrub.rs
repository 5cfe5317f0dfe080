//! reqwest names the URL it failed on in its errors' `Display` and `Debug`, and an
//! endpoint's URL may hold credentials (`user:password@`, `?access_token=`). Errors of
//! the HTTP client are kept as typed sources, with the URL taken out here, before they
//! reach an [`Error`](crate::Error) that a caller may log.

use rmcp::ServiceError;
use rmcp::service::ClientInitializeError;
use rmcp::transport::DynamicTransportError;
use rmcp::transport::streamable_http_client::StreamableHttpError;

use crate::error::BoxError;

/// The transport error with any reqwest error inside it stripped of its URL.
fn transport(mut e: DynamicTransportError) -> DynamicTransportError {
    let error = std::mem::replace(&mut e.error, Box::new(std::fmt::Error));
    e.error = match error.downcast::<StreamableHttpError<reqwest::Error>>() {
        Ok(http) => match *http {
            StreamableHttpError::Client(inner) => Box::new(
                StreamableHttpError::<reqwest::Error>::Client(inner.without_url()),
            ),
            other => Box::new(other),
        },
        Err(other) => other,
    };
    e
}

/// A call's error, fit to keep as a source.
pub(crate) fn service(e: ServiceError) -> ServiceError {
    match e {
        ServiceError::TransportSend(t) => ServiceError::TransportSend(transport(t)),
        other => other,
    }
}

/// A handshake's error, fit to keep as a source.
pub(crate) fn handshake(e: ClientInitializeError) -> BoxError {
    match e {
        ClientInitializeError::TransportError { error, context } => {
            Box::new(ClientInitializeError::TransportError {
                error: transport(error),
                context,
            })
        }
        other => Box::new(other),
    }
}
