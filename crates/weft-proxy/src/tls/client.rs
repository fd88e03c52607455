//! The dialing side: mTLS to a peer's mesh port with the certificate in the cell, checking the
//! server's chain against the trust bundle and its SPIFFE ID against the one the endpoint must
//! present. Hostnames are not checked and no SNI is sent: peers are dialed by IP, and the SPIFFE
//! ID is the name that matters.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{provider, spiffe_id, TlsState, ALPN_H2};

/// Dials mTLS to peers with this workload's credentials.
#[derive(Clone, Debug)]
pub struct MeshConnector {
    state: Arc<TlsState>,
}

impl MeshConnector {
    pub fn new(state: Arc<TlsState>) -> Self {
        Self { state }
    }

    /// Whether credentials exist now: without them, mesh hops stay plaintext.
    pub fn ready(&self) -> bool {
        self.state.ready()
    }

    pub fn state(&self) -> &Arc<TlsState> {
        &self.state
    }
}

/// Runs the client handshake over `io` to the peer at `addr`. `expected` is the SPIFFE ID the
/// peer must present; None accepts any identity the trust bundle vouches for. Returns the
/// stream and the peer's SPIFFE ID. A peer dialed before resumes its session.
pub async fn connect<IO>(
    state: &Arc<TlsState>,
    expected: Option<&str>,
    addr: SocketAddr,
    io: IO,
) -> io::Result<(TlsStream<IO>, String)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let config = state
        .client_config(expected)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no mesh certificate yet"))?;
    let tls = TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), io)
        .await?;
    let id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(spiffe_id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer has no SPIFFE ID"))?;
    Ok((tls, id))
}

/// A client config that presents `certified` and accepts a server only if its chain verifies
/// against `roots` and its SPIFFE ID is `expected` (any, when None). TLS 1.3 only, ALPN `h2`,
/// no SNI; its session store lets a later connection to the same peer resume.
pub(super) fn config(
    certified: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    trust_domain: Arc<str>,
    expected: Option<String>,
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots,
            trust_domain,
            expected,
        }))
        .with_client_cert_resolver(Arc::new(AlwaysPresent(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    Arc::new(config)
}

/// Presents the one certificate this config was built with.
#[derive(Debug)]
struct AlwaysPresent(Arc<CertifiedKey>);

impl ResolvesClientCert for AlwaysPresent {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Chain against the bundle (with the `serverAuth` usage), then SPIFFE ID instead of hostname.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    /// This workload's trust domain: a server of another one is refused even when no
    /// particular identity is expected.
    trust_domain: Arc<str>,
    expected: Option<String>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        let Some(id) = spiffe_id(end_entity) else {
            return Err(Error::General("server certificate carries no SPIFFE ID".into()));
        };
        match &self.expected {
            Some(want) if *want != id => Err(Error::General(format!(
                "server presented {id}, the endpoint must present {want}"
            ))),
            _ if super::spiffe_trust_domain(&id) != Some(&*self.trust_domain) => Err(Error::General(
                format!("server {id} is not of trust domain {}", self.trust_domain),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        super::signatures::verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        super::signatures::verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        super::signatures::schemes()
    }
}
