//! TLS on the discovery port (`weft control --tls`): the control plane presents a server
//! certificate its own CA issued (shared/ARCHITECTURE.md, "Trust from the first packet"); a
//! proxy verifies it against the trust anchor it got out of band (`weft proxy --trust-anchor`).
//!
//! The certificate is re-issued when the CA's signing root changes (a rotation) or when it is
//! past half its life, so it always chains to a root in the current trust bundle.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::identity::CertificateAuthority;

/// How long the control plane's server certificate lives (re-issued at half).
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Hands each handshake a server certificate from the CA, cached until a rotation or half-life.
#[derive(Debug)]
pub struct ServerCertResolver {
    ca: Arc<CertificateAuthority>,
    ips: Vec<IpAddr>,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    renew_at: SystemTime,
    key: Arc<CertifiedKey>,
}

impl ServerCertResolver {
    pub fn new(ca: Arc<CertificateAuthority>, ips: Vec<IpAddr>) -> Self {
        Self {
            ca,
            ips,
            cache: Mutex::new(None),
        }
    }

    /// The certificate to present now.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let generation = self.ca.signing().generation;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.generation == generation && c.renew_at > SystemTime::now() {
                return Some(c.key.clone());
            }
        }
        let issued = (|| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let (chain, generation, _) = self.ca.server_cert(&key, &self.ips, SERVER_CERT_TTL)?;
            let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let certified = CertifiedKey::from_der(chain, der, &provider())?;
            anyhow::Ok((Arc::new(certified), generation))
        })();
        match issued {
            Ok((key, generation)) => {
                *cache = Some(Cached {
                    generation,
                    renew_at: SystemTime::now() + SERVER_CERT_TTL / 2,
                    key: key.clone(),
                });
                Some(key)
            }
            Err(e) => {
                tracing::error!(error = %e, "control TLS: cannot issue the server certificate");
                cache.as_ref().map(|c| c.key.clone())
            }
        }
    }
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The rustls server config of the discovery port.
pub fn server_config(
    ca: Arc<CertificateAuthority>,
    ips: Vec<IpAddr>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let resolver = Arc::new(ServerCertResolver::new(ca, ips));
    anyhow::ensure!(
        resolver.current().is_some(),
        "cannot issue the control plane's server certificate"
    );
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One accepted TLS connection, as tonic's server takes it.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    // The TCP addresses, as over plaintext: discovery takes an instance's address from its
    // connection's peer (`Request::remote_addr`).
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = self.0.get_ref().0;
        tonic::transport::server::TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts on `listener` and completes TLS handshakes (each in its own task, 10 s at most), until
/// `shutdown`: the stream of connections to hand tonic's `serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "control TLS: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "control TLS: handshake failed"),
                    Err(_) => tracing::warn!(%peer, "control TLS: handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
