//! TLS for a listener, with rustls: a PEM certificate chain and key (`server.tls.cert`,
//! `server.tls.key`) that can be replaced while the node runs.
//!
//! [`TlsFiles`] holds the current server configuration. [`TlsFiles::reload`] reads the files
//! again (the binary calls it on SIGHUP) and [`TlsFiles::watch`] does so when their
//! modification times change; a reload that fails (a half-written file, a key that does not
//! match) keeps the previous certificate and logs why. New connections use the newest
//! certificate; established ones keep theirs.
//!
//! [`accept`] is the whole integration with an accept loop: it turns an accepted TCP stream
//! into a [`MaybeTls`] stream (after a bounded handshake when TLS is on), which any listener
//! can serve.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is missing or malformed.
        what: String,
    },
    /// rustls refused the pair (for example, the key does not match the certificate).
    #[error("certificate {cert} with key {key}: {source}")]
    Rustls {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// The certificate and key files of a listener and the configuration built from them.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
    /// Modification times of (cert, key) at the last load.
    stamp: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Loads the pair named by `cfg`; `None` when TLS is not configured.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Arc<TlsFiles>>, TlsError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let cert = PathBuf::from(&cfg.cert);
        let key = PathBuf::from(&cfg.key);
        let stamp = stamps(&cert, &key);
        let config = load(&cert, &key)?;
        Ok(Some(Arc::new(TlsFiles {
            cert,
            key,
            current: RwLock::new(TlsAcceptor::from(config)),
            stamp: Mutex::new(stamp),
        })))
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads both files again and, when they form a valid pair, serves them from the next
    /// connection on. On error the previous pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamps(&self.cert, &self.key);
        let config = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(config);
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        tracing::info!(cert = %self.cert.display(), "TLS certificate loaded");
        Ok(())
    }

    /// Reloads when either file's modification time changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.cert, &self.key);
        let last = *self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now == last {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Checks the files every `every` until `stop`, reloading on change.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.reload_if_changed() {
                        tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificate");
                    }
                }
            }
        }
    }
}

fn stamps(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(cert), m(key))
}

/// Reads a PEM chain and key into a server configuration (HTTP/1.1 only, as the listener).
pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_name = cert.display().to_string();
    let key_name = key.display().to_string();
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read {
        path: cert_name.clone(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read {
        path: key_name.clone(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_name.clone(),
            what: format!("malformed PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_name,
            what: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_name.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsError::Rustls {
            cert: cert_name,
            key: key_name,
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An accepted connection, encrypted or not.
#[allow(clippy::large_enum_variant)]
pub enum MaybeTls {
    /// Plain TCP, on the node's reactor (see [`crate::reactor`]).
    Polled(crate::reactor::Stream),
    /// Plain TCP, with tokio's driver.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

/// Wraps an accepted stream: the TLS handshake (bounded by `timeout`) when `tls` is set;
/// otherwise the stream moves to `reactor`, when given, for the whole connection (its HTTP
/// request and the session it may become), so tokio's driver never holds it.
pub async fn accept(
    tls: Option<&TlsFiles>,
    stream: TcpStream,
    timeout: Duration,
    reactor: Option<&Arc<crate::reactor::Reactor>>,
) -> io::Result<MaybeTls> {
    let Some(tls) = tls else {
        return Ok(match reactor {
            Some(r) => match r.adopt(stream)? {
                crate::reactor::Adopted::Polled(s) => MaybeTls::Polled(s),
                crate::reactor::Adopted::Tokio(s) => MaybeTls::Plain(s),
            },
            None => MaybeTls::Plain(stream),
        });
    };
    let handshake = tls.acceptor().accept(stream);
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => Ok(MaybeTls::Tls(Box::new(s))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Polled(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Polled(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Polled(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Polled(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Polled(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Polled(s) => s.is_write_vectored(),
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}
