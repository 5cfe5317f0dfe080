//! HTTPS targets: a rustls client over the ring provider, built once per run.
//!
//! The provider is passed to rustls explicitly, never installed process-wide, so a
//! program embedding cortex-load keeps whatever default provider it chose (or none).

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::HttpVersion;
use crate::error::{LoadError, Result};

/// Who the client trusts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trust<'a> {
    /// The Mozilla roots bundled by `webpki-roots`.
    WebPki,
    /// Only the certificates of this PEM file (as `curl --cacert`).
    CaFile(&'a Path),
    /// Anyone: no certificate check (handshake signatures are still verified).
    Insecure,
}

/// A TLS client for one target host: the connector and the name sent as SNI and
/// checked against the certificate.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client for `host` (a DNS name or an IP address, without brackets).
    /// ALPN offers what `version` allows: `h2` and `http/1.1`, or only one of them.
    pub(crate) fn new(
        url: &str,
        host: &str,
        trust: Trust<'_>,
        version: HttpVersion,
    ) -> Result<Self> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| LoadError::BadUrl {
            url: url.to_owned(),
            reason: format!("{host:?} is not a valid TLS server name"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|source| LoadError::Tls { source })?;
        let mut config = match trust {
            Trust::WebPki => builder.with_root_certificates(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            Trust::CaFile(path) => builder.with_root_certificates(read_ca_file(path)?),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateCheck(
                    provider.signature_verification_algorithms,
                ))),
        }
        .with_no_client_auth();
        // The server picks among what is offered; with none offered it would speak
        // HTTP/1.1 anyway.
        config.alpn_protocols = match version {
            HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The TLS handshake on a connected socket.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// The certificates of a PEM file as trust anchors; an error names the file.
fn read_ca_file(path: &Path) -> Result<RootCertStore> {
    let bad = |source: std::io::Error| LoadError::CaFile {
        path: path.to_owned(),
        source,
    };
    let invalid = |e: Box<dyn std::error::Error + Send + Sync>| {
        bad(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    };
    let pem = std::fs::read(path).map_err(bad)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(Box::new(e)))?;
        roots.add(cert).map_err(|e| invalid(Box::new(e)))?;
    }
    if roots.is_empty() {
        return Err(invalid(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        ));
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate for any name. The handshake signatures are
/// still checked, so the session is encrypted with whoever answered; only who that is
/// goes unverified.
#[derive(Debug)]
struct NoCertificateCheck(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A user's connection: plain TCP or TLS over TCP, one type for both HTTP clients.
#[derive(Debug)]
pub(crate) enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://` (boxed: the TLS state is large, and moves once per connection).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The server chose HTTP/2 by ALPN.
    pub(crate) fn negotiated_h2(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
