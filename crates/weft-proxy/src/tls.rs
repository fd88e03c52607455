//! mTLS between proxies: the mesh port terminates it, the HTTP/2 pool dials it.
//!
//! Every handshake reads the workload's [`Credentials`] from a [`CredentialsCell`]: the
//! certificate a side presents and the trust bundle it verifies the other side with. A rotation
//! (new leaf, new roots) is one `store` into the cell; open connections keep going on what they
//! negotiated, the next handshake uses the new material. No restart.
//!
//! The rustls configs are built once per credentials value ([`Material`]) and reused, so that
//! reconnects to a peer resume their TLS 1.3 session instead of paying a full handshake (the
//! session stores live in the configs). A rotation drops them with the old material: no session
//! negotiated under old credentials or an old trust bundle outlives it.
//!
//! Identity is the SPIFFE ID in the leaf certificate's URI SAN
//! (`spiffe://cluster.local/ns/NS/sa/SA`). Hostnames play no part: the client checks the
//! server's SPIFFE ID against the one the endpoint must present
//! ([`Endpoint::identity`](weft_api::proxy_config::Endpoint::identity)), the server takes the
//! client's as the connection's `source_principal`.
//!
//! Mesh certificates must carry both the `serverAuth` and `clientAuth` extended key usages:
//! each proxy is a server on its mesh port and a client towards its peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod client;
pub mod server;
/// A test CA, for this crate's tests and its benchmarks (`benches/mtls.rs`); not used by the
/// proxy itself.
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

pub use client::{connect, MeshConnector};
pub use server::MeshAcceptor;

/// ALPN protocols spoken on the mesh port: HTTP/2 (what peers send), and the mesh's own id as a
/// distinct marker a future app-port listener can recognise (shared/ARCHITECTURE.md, "PERMISSIVE
/// and STRICT").
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_MESH: &[u8] = b"weft-mesh/1";

/// The `connection_security_policy` label of a request or connection that arrived (or left)
/// over mTLS.
pub const MUTUAL_TLS: &str = "mutual_tls";

/// A workload's certificate, key and trust bundle (filled in by the identity module).
pub struct Credentials {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The roots peers' certificates must chain to.
    pub trust_bundle: Vec<CertificateDer<'static>>,
    /// The SPIFFE ID in the leaf's URI SAN.
    pub spiffe_id: String,
    pub not_after: SystemTime,
}

/// The live credentials: None until the first certificate is issued (the mesh then speaks
/// plaintext, as before identities existed).
pub type CredentialsCell = Arc<ArcSwapOption<Credentials>>;

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            trust_bundle: self.trust_bundle.clone(),
            spiffe_id: self.spiffe_id.clone(),
            not_after: self.not_after,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain", &self.chain.len())
            .field("trust_bundle", &self.trust_bundle.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The crypto provider for every TLS config in the process (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// What a handshake needs, derived once per [`Credentials`] value and reused until the cell
/// holds another one.
pub(crate) struct Material {
    pub creds: Arc<Credentials>,
    pub certified: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// The mesh port's config (its session store makes returning clients resume).
    server: Arc<ServerConfig>,
    /// The trust domain of this workload's SPIFFE ID; peers must share it.
    trust_domain: Arc<str>,
    /// Client configs by the SPIFFE ID the server must present: one session store per
    /// destination identity. Bounded by [`MAX_CLIENT_CONFIGS`].
    clients: Mutex<HashMap<Option<String>, Arc<ClientConfig>>>,
}

/// Distinct destination identities whose client configs (and resumable sessions) are kept per
/// credentials value; past it the cache starts over (handshakes stay correct, only resumption
/// is lost for a while).
const MAX_CLIENT_CONFIGS: usize = 1024;

/// The cell plus a cache of the material derived from what it holds.
pub struct TlsState {
    cell: CredentialsCell,
    cache: Mutex<Option<Arc<Material>>>,
}

impl TlsState {
    pub fn new(cell: CredentialsCell) -> Arc<Self> {
        Arc::new(Self {
            cell,
            cache: Mutex::new(None),
        })
    }

    /// Whether credentials exist now (mTLS) or not yet (plaintext).
    pub fn ready(&self) -> bool {
        self.cell.load().is_some()
    }

    /// This workload's SPIFFE ID, once it has one.
    pub fn spiffe_id(&self) -> Option<String> {
        self.cell.load().as_ref().map(|c| c.spiffe_id.clone())
    }

    /// The mesh port's TLS config for the credentials in the cell now; None before any exist.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.material().map(|m| m.server.clone())
    }

    /// The TLS config for dialing a peer that must present `expected` (any identity the bundle
    /// vouches for, when None), with the credentials in the cell now; None before any exist.
    pub fn client_config(&self, expected: Option<&str>) -> Option<Arc<ClientConfig>> {
        let material = self.material()?;
        let key = expected.map(str::to_string);
        let mut clients = material.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = clients.get(&key) {
            return Some(config.clone());
        }
        if clients.len() >= MAX_CLIENT_CONFIGS {
            clients.clear();
        }
        let config = client::config(
            material.certified.clone(),
            material.roots.clone(),
            material.trust_domain.clone(),
            key.clone(),
        );
        clients.insert(key, config.clone());
        Some(config)
    }

    /// The material for the credentials in the cell now; None before any exist or when they
    /// are unusable (logged).
    pub(crate) fn material(&self) -> Option<Arc<Material>> {
        let creds = self.cell.load_full()?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.as_ref() {
            if Arc::ptr_eq(&m.creds, &creds) {
                return Some(m.clone());
            }
        }
        match Material::build(creds) {
            Ok(m) => {
                let m = Arc::new(m);
                *cache = Some(m.clone());
                Some(m)
            }
            Err(e) => {
                tracing::warn!(error = %e, "credentials unusable for TLS");
                None
            }
        }
    }
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").finish_non_exhaustive()
    }
}

impl Material {
    fn build(creds: Arc<Credentials>) -> Result<Self, rustls::Error> {
        let provider = provider();
        let certified = Arc::new(CertifiedKey::from_der(
            creds.chain.clone(),
            creds.key.clone_key(),
            &provider,
        )?);
        let mut roots = RootCertStore::empty();
        for root in &creds.trust_bundle {
            roots.add(root.clone())?;
        }
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| rustls::Error::General(format!("trust bundle: {e}")))?;
        // Peers must be of this workload's own trust domain, whatever else the bundle vouches for.
        let trust_domain: Arc<str> = spiffe_trust_domain(&creds.spiffe_id).unwrap_or_default().into();
        let server = server::config(certified.clone(), client_verifier, trust_domain.clone());
        Ok(Self {
            creds,
            certified,
            roots,
            server,
            trust_domain,
            clients: Mutex::new(HashMap::new()),
        })
    }
}

/// The SPIFFE ID in a certificate's URI SAN, if it has exactly one.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
        _ => None,
    });
    let id = ids.next()?;
    ids.next().is_none().then_some(id)
}

/// The trust domain of a SPIFFE ID (`cluster.local` in `spiffe://cluster.local/ns/NS/sa/SA`).
pub fn spiffe_trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next()?;
    (!domain.is_empty()).then_some(domain)
}

/// The namespace a SPIFFE ID of the form `spiffe://TD/ns/NS/sa/SA` names.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let path = id.strip_prefix("spiffe://")?;
    let mut parts = path.split('/').skip(1);
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa")) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

/// Handshake signature checks shared by both verifiers: the provider's algorithms, nothing of
/// our own.
mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, Error, SignatureScheme};

    pub(super) fn verify_tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    pub(super) fn verify_tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    pub(super) fn schemes() -> Vec<SignatureScheme> {
        super::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
