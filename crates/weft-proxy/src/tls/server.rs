//! The mesh port's side: TLS 1.3, ALPN `h2`, client certificates required and verified against
//! the trust bundle in the cell at the time of each handshake (its config comes with the
//! credentials, see [`super::Material`]).

use std::io;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{provider, spiffe_id, TlsState, ALPN_H2, ALPN_MESH};

/// Terminates mTLS from peers on the mesh port.
#[derive(Clone)]
pub struct MeshAcceptor {
    state: Arc<TlsState>,
}

impl MeshAcceptor {
    pub fn new(state: Arc<TlsState>) -> Self {
        Self { state }
    }

    /// Whether credentials exist now (a ClientHello can be answered).
    pub fn ready(&self) -> bool {
        self.state.ready()
    }

    /// This workload's SPIFFE ID, once it has one.
    pub fn local_identity(&self) -> Option<String> {
        self.state.spiffe_id()
    }

    /// Completes the handshake with the credentials in the cell now; returns the stream and the
    /// peer's SPIFFE ID.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<(TlsStream<IO>, String)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self
            .state
            .server_config()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no mesh certificate yet"))?;
        let tls = TlsAcceptor::from(config).accept(io).await?;
        // The verifier refused any leaf without exactly one SPIFFE ID, so this is there.
        let id = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(spiffe_id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer has no SPIFFE ID"))?;
        Ok((tls, id))
    }
}

/// The mesh port's TLS config: TLS 1.3 only, ALPN `h2` (and `weft-mesh/1`), mandatory client
/// certificates verified by `verifier` and carrying a SPIFFE ID; presents `certified`. Its
/// session store (rustls' default, 256 sessions) lets returning peers resume.
pub(super) fn config(
    certified: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
    trust_domain: Arc<str>,
) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier {
            verifier,
            trust_domain,
        }))
        .with_cert_resolver(Arc::new(AlwaysPresent(certified)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_MESH.to_vec()];
    Arc::new(config)
}

/// Presents the one certificate this config was built with.
#[derive(Debug)]
struct AlwaysPresent(Arc<CertifiedKey>);

impl ResolvesServerCert for AlwaysPresent {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The trust bundle's verifier, plus: the leaf must carry a SPIFFE ID of this trust domain.
#[derive(Debug)]
struct SpiffeClientVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
    trust_domain: Arc<str>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a proxy has one certificate to offer.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.verifier.verify_client_cert(end_entity, intermediates, now)?;
        let Some(id) = spiffe_id(end_entity) else {
            return Err(Error::General("client certificate carries no SPIFFE ID".into()));
        };
        if super::spiffe_trust_domain(&id) != Some(&*self.trust_domain) {
            return Err(Error::General(format!(
                "client {id} is not of trust domain {}",
                self.trust_domain
            )));
        }
        Ok(ClientCertVerified::assertion())
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
