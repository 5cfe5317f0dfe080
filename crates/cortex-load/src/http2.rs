//! HTTP/2 (feature `http2`, part of `tls`): hyper's HTTP/2 client, one connection per
//! user carrying its requests one after the other, as the HTTP/1.1 connections do.
//! Chosen by ALPN (`h2`) on `https://` targets, or forced with
//! [`HttpVersion::Http2`](crate::HttpVersion::Http2), which on `http://` is HTTP/2 with
//! prior knowledge (h2c).

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Prepared;

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Error {
    /// The connection was closed before the request went out (e.g. the server's
    /// GOAWAY after an idle timeout): safe to send again on a new connection.
    NotSent,
    /// The request or its answer failed.
    Http,
}

/// One HTTP/2 connection. hyper runs the connection in tasks of its own on the
/// current runtime (each user thread has one), which also answer the server's
/// pings while the user thinks.
#[derive(Debug)]
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// The HTTP/2 handshake (connection preface and settings) over an established
    /// stream.
    pub(crate) async fn handshake<S>(io: S) -> Result<Self, hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await?;
        // Routes the requests of `sender` to the connection; ends when `sender` is
        // dropped or the connection closes.
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Whether the next request may go on this connection.
    pub(crate) fn is_reusable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Send one request and read the whole answer; returns the status and the body
    /// size.
    pub(crate) async fn exchange(&mut self, p: &Prepared) -> Result<(u16, u64), Error> {
        if self.sender.ready().await.is_err() {
            return Err(Error::NotSent);
        }
        let mut req = Request::new(Full::new(p.body.clone()));
        *req.method_mut() = p.method.clone();
        *req.uri_mut() = p.uri.clone();
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = p.headers.clone();
        let resp = match self.sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => {
                return Err(match e.take_message() {
                    Some(_) => Error::NotSent,
                    None => Error::Http,
                });
            }
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        // Frame by frame, only counting: nothing of the body is kept.
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => bytes += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return Err(Error::Http),
            }
        }
        Ok((status, bytes))
    }
}
