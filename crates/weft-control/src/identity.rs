//! The mesh's certificate authority and the `weft.identity.v1.Identity` service
//! (shared/ARCHITECTURE.md, "Identity" and "Trust from the first packet").
//!
//! - [`CertificateAuthority::load_or_create`]: a self-signed root (ECDSA P-256, 10 years) kept in
//!   the state directory (`ca-key.pem` mode 0600, `ca-cert.pem`), made on first start, the same
//!   root after every restart. [`CertificateAuthority::from_files`]: a root or intermediate the
//!   user provides; the certificates its file holds after the first are its issuers.
//! - [`CertificateAuthority::sign`]: one workload certificate. Only the CSR's public key is used:
//!   whatever names it asks for, the certificate carries exactly the identity the bootstrap token
//!   grants, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, as its only (critical) SAN.
//! - The trust bundle is a list of roots so a rotation can overlap an old and a new root
//!   ([`CertificateAuthority::add_trusted_root`]); rotation itself is still to come.
//! - [`IdentityService`]: `Identity.Sign` over gRPC, served on the discovery port; a wrong token
//!   is refused with `UNAUTHENTICATED`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use weft_api::identity::{SpiffeId, SpiffeIdError, DEFAULT_TRUST_DOMAIN};
use weft_api::proto::identity::identity_server::{Identity, IdentityServer};
use weft_api::proto::identity::{SignRequest, SignResponse};

use crate::tokens::{Grant, TokenStore};

/// How long a workload certificate lives unless configured otherwise.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a root made by [`CertificateAuthority::load_or_create`] lives.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Clock skew tolerated between the control plane and proxies: certificates start this early.
pub const BACKDATE: Duration = Duration::from_secs(60);

pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// Every root proxies must trust now (PEM; two during a rotation): the out-of-band trust anchor
/// `weft up` hands its sidecars (`--trust-anchor`).
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";

/// Why the CA could not load, or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("{path}: not a usable CA key: {source}")]
    Key { path: String, source: rcgen::Error },
    #[error("{path}: not a usable CA certificate: {reason}")]
    CaCert { path: String, reason: String },
    #[error("{0} exists but {1} does not: refusing to make a new root over a half-present CA")]
    Incomplete(String, String),
    #[error("invalid certificate signing request: {0}")]
    Csr(rcgen::Error),
    #[error("the CSR's key is not ECDSA P-256")]
    CsrAlgorithm,
    #[error("invalid identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("trust bundle: {0}")]
    Bundle(String),
    #[error("cannot generate or sign: {0}")]
    Crypto(rcgen::Error),
}

/// A certificate issued to one workload.
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub spiffe_id: SpiffeId,
    /// The workload's certificate, then the CA's chain. PEM.
    pub cert_chain_pem: String,
    /// The roots a peer's chain may end at. PEM.
    pub trust_bundle_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Issues workload certificates.
pub struct CertificateAuthority {
    /// What signs now (replaced when a rotation's new root takes over).
    signing: RwLock<Arc<Signing>>,
    /// A root rotation in progress (see [`CertificateAuthority::rotate_root`]).
    rotation: Mutex<Option<Rotation>>,
    /// What peers trust: one root, or several while one replaces another.
    roots: RwLock<Vec<CertificateDer<'static>>>,
    trust_domain: String,
    /// Where the root, its key and the trust bundle are kept (rotation writes them there).
    state_dir: Option<PathBuf>,
    /// Whether this CA is the control plane's own root (made by `load_or_create`): only that
    /// one rotates; a user's PKI (`--ca-cert`) is rotated by the user.
    rotatable: bool,
    /// Every certificate issued since start, by identity (the last one): for `weft check`.
    issued: Mutex<BTreeMap<(String, String), IssuedRecord>>,
}

/// The issuer in use and its chain.
pub struct Signing {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate, then its issuers (as given): appended to every issued leaf.
    chain: Vec<CertificateDer<'static>>,
    /// Bumps on every rotation: the control plane's own server certificate is re-issued then.
    pub generation: u64,
}

impl Signing {
    /// The CA certificate that signs (then its issuers), DER.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// A rotation: the new root is trusted at once, signs from `activate_at`; the old root stays
/// trusted until `retire_at`. Monotonic instants, not wall-clock times: the phases are
/// durations from the start, which a clock step must not shorten; tokio's `Instant` also
/// lets the tests run the phases in paused time.
struct Rotation {
    next: Option<(Signing, KeyPair, String)>,
    activate_at: Instant,
    old_roots: Vec<CertificateDer<'static>>,
    retire_at: Instant,
}

/// The last certificate issued to one identity (`/status` `identities`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRecord {
    pub spiffe_id: String,
    /// The proxy instance that asked; empty when it did not say.
    pub instance: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub count: u64,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.trust_bundle().len())
            .finish_non_exhaustive()
    }
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// The root in `state_dir`, made there (key mode 0600) if there is none yet.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let key_path = state_dir.join(CA_KEY_FILE);
        let cert_path = state_dir.join(CA_CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => {
                warn_if_readable_by_others(&key_path);
                Self::from_files(&cert_path, &key_path).map(|mut ca| {
                    ca.rotatable = true;
                    ca
                })
            }
            (false, true) => Err(IdentityError::Incomplete(
                cert_path.display().to_string(),
                key_path.display().to_string(),
            )),
            (key_exists, false) => {
                // A key without its certificate (a crash between the two writes): keep the key.
                let key = if key_exists {
                    warn_if_readable_by_others(&key_path);
                    read_key(&key_path)?
                } else {
                    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IdentityError::Crypto)?
                };
                let params = root_params()?;
                let cert = params.self_signed(&key).map_err(IdentityError::Crypto)?;
                let io = |path: &Path| {
                    let path = path.display().to_string();
                    move |source| IdentityError::Io { path, source }
                };
                std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
                if !key_exists {
                    write_atomically(&key_path, key.serialize_pem().as_bytes(), 0o600)
                        .map_err(io(&key_path))?;
                }
                write_atomically(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
                tracing::info!(cert = %cert_path.display(), "identity: made a new root CA");
                let der = cert.der().clone();
                let mut ca = Self::new(Issuer::new(params, key), vec![der.clone()], vec![der]);
                ca.rotatable = true;
                Ok(ca)
            }
        }
    }

    /// A CA from a certificate file (its certificate first, then its issuers, PEM) and its key
    /// (PKCS#8 PEM). The trust bundle is the file's last certificate: the root when the file
    /// holds the whole chain.
    pub fn from_files(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self, IdentityError> {
        let key = read_key(key_pem_path)?;
        let cert_path = cert_pem_path.display().to_string();
        let pem = std::fs::read(cert_pem_path).map_err(|source| IdentityError::Io {
            path: cert_path.clone(),
            source,
        })?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Pem {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let Some(first) = chain.first() else {
            return Err(IdentityError::Pem {
                path: cert_path,
                reason: "no CERTIFICATE in the file".into(),
            });
        };
        let ca_error = |reason: String| IdentityError::CaCert {
            path: cert_path.clone(),
            reason,
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(first).map_err(|e| ca_error(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(ca_error("its basic constraints do not make it a CA".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(ca_error(format!(
                "its public key does not match the key in {}",
                key_pem_path.display()
            )));
        }
        let issuer = Issuer::from_ca_cert_der(first, key).map_err(|e| ca_error(e.to_string()))?;
        let root = chain.last().cloned().into_iter().collect();
        Ok(Self::new(issuer, chain, root))
    }

    fn new(
        issuer: Issuer<'static, KeyPair>,
        chain: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            signing: RwLock::new(Arc::new(Signing {
                issuer,
                chain,
                generation: 0,
            })),
            rotation: Mutex::new(None),
            roots: RwLock::new(roots),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            state_dir: None,
            rotatable: false,
            issued: Mutex::new(BTreeMap::new()),
        }
    }

    /// Keeps the trust bundle in `state_dir` ([`TRUST_BUNDLE_FILE`], written now and on every
    /// change; roots it lists beyond this CA's, left by a rotation before a restart, stay
    /// trusted) and writes a rotated root there.
    pub fn with_state_dir(mut self, state_dir: &Path) -> Result<Self, IdentityError> {
        let path = state_dir.join(TRUST_BUNDLE_FILE);
        if let Ok(pem) = std::fs::read_to_string(&path) {
            if let Err(e) = self.add_trusted_root(&pem) {
                tracing::warn!(path = %path.display(), error = %e, "identity: ignoring an unreadable trust bundle");
            }
        }
        self.state_dir = Some(state_dir.to_path_buf());
        self.persist_bundle()?;
        Ok(self)
    }

    fn persist_bundle(&self) -> Result<(), IdentityError> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let path = dir.join(TRUST_BUNDLE_FILE);
        std::fs::create_dir_all(dir)
            .and_then(|()| write_atomically(&path, self.trust_bundle_pem().as_bytes(), 0o644))
            .map_err(|source| IdentityError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// The issuer in use now (applying a rotation whose time has come).
    pub fn signing(&self) -> Arc<Signing> {
        self.tick();
        self.signing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts a root rotation: a new root (ECDSA P-256, 10 years) is trusted at once (the trust
    /// bundle and [`TRUST_BUNDLE_FILE`] hold both roots), signs every certificate from
    /// `propagate` on (by then every proxy renewed and trusts it: use the workload certificate
    /// lifetime), and the old root leaves the bundle `overlap` later (when the last certificate
    /// it signed expired: the lifetime again). Returns the new root, PEM.
    pub fn rotate_root(&self, propagate: Duration, overlap: Duration) -> Result<String, IdentityError> {
        if !self.rotatable {
            return Err(IdentityError::Bundle(
                "this CA was given (--ca-cert/--ca-key): rotate it in its own PKI, then restart with the new files".into(),
            ));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IdentityError::Crypto)?;
        let params = root_params()?;
        let cert = params.self_signed(&key).map_err(IdentityError::Crypto)?;
        let pem = cert.pem();
        let key_pem = key.serialize_pem();
        let current = self.signing.read().unwrap_or_else(|p| p.into_inner()).clone();
        let old_root = current
            .chain
            .last()
            .cloned()
            .ok_or_else(|| IdentityError::Bundle("the CA has no certificate".into()))?;
        let next = Signing {
            issuer: Issuer::new(
                params,
                KeyPair::from_pem(&key_pem).map_err(IdentityError::Crypto)?,
            ),
            chain: vec![cert.der().clone()],
            generation: current.generation + 1,
        };
        let now = Instant::now();
        {
            let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
            // One rotation at a time, until its old root has left the bundle: a second one
            // started in the overlap would replace the pending retirement, and the first old
            // root would stay trusted for good.
            match rotation.as_ref() {
                Some(r) if r.next.is_some() => {
                    return Err(IdentityError::Bundle(
                        "a rotation is already in progress (its new root does not sign yet)".into(),
                    ));
                }
                Some(r) => {
                    let left = r.retire_at.saturating_duration_since(now).as_secs();
                    return Err(IdentityError::Bundle(format!(
                        "a rotation is already in progress (its old root leaves the trust bundle in {left} s; rotate again after that)"
                    )));
                }
                None => {}
            }
            *rotation = Some(Rotation {
                next: Some((next, key, pem.clone())),
                activate_at: now + propagate,
                old_roots: vec![old_root],
                retire_at: now + propagate + overlap,
            });
        }
        self.add_trusted_root(&pem)?;
        tracing::info!(
            ?propagate,
            ?overlap,
            "identity: root rotation started; the new root is trusted now"
        );
        self.tick();
        Ok(pem)
    }

    /// Applies the steps of a rotation whose time has come.
    fn tick(&self) {
        let now = Instant::now();
        let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = rotation.as_mut() else { return };
        if r.activate_at <= now {
            if let Some((next, key, pem)) = r.next.take() {
                *self.signing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
                if let Some(dir) = &self.state_dir {
                    let written =
                        write_atomically(&dir.join(CA_KEY_FILE), key.serialize_pem().as_bytes(), 0o600)
                            .and_then(|()| write_atomically(&dir.join(CA_CERT_FILE), pem.as_bytes(), 0o644));
                    if let Err(e) = written {
                        tracing::error!(error = %e, "identity: cannot write the new root");
                    }
                }
                tracing::info!("identity: the new root signs from now on");
            }
        }
        if r.retire_at <= now && r.next.is_none() {
            let old = std::mem::take(&mut r.old_roots);
            *rotation = None;
            drop(rotation);
            self.roots
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|c| !old.contains(c));
            if let Err(e) = self.persist_bundle() {
                tracing::error!(error = %e, "identity: cannot write the trust bundle");
            }
            tracing::info!("identity: root rotation done; the old root is no longer trusted");
        }
    }

    /// Roots trusted beyond the one that signs (the old root of a rotation interrupted by a
    /// restart, found in [`TRUST_BUNDLE_FILE`]) leave the bundle `after` this (the certificate
    /// lifetime: by then nothing they signed is still valid). Not while a rotation runs.
    pub fn retire_other_roots_after(&self, after: Duration) {
        let signing_root = self.signing().chain.last().cloned();
        let others: Vec<_> = self
            .trust_bundle()
            .into_iter()
            .filter(|c| Some(c) != signing_root.as_ref())
            .collect();
        let mut rotation = self.rotation.lock().unwrap_or_else(|p| p.into_inner());
        if others.is_empty() || rotation.is_some() {
            return;
        }
        tracing::info!(
            roots = others.len(),
            ?after,
            "identity: trusting the roots of an earlier rotation a while longer"
        );
        *rotation = Some(Rotation {
            next: None,
            activate_at: Instant::now(),
            old_roots: others,
            retire_at: Instant::now() + after,
        });
    }

    /// Records that `instance` (empty if unknown) got `signed`: [`issued`](Self::issued).
    pub fn record_issued(&self, instance: &str, signed: &SignedCert) {
        let id = signed.spiffe_id.to_string();
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        let record = issued
            .entry((id.clone(), instance.to_string()))
            .or_insert_with(|| IssuedRecord {
                spiffe_id: id,
                instance: instance.to_string(),
                not_before: signed.not_before,
                not_after: signed.not_after,
                count: 0,
            });
        record.not_before = signed.not_before;
        record.not_after = signed.not_after;
        record.count += 1;
    }

    /// The last certificate issued to each proxy instance (and identity) since start.
    pub fn issued(&self) -> Vec<IssuedRecord> {
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Issues identities in `trust_domain` (default `cluster.local`).
    pub fn with_trust_domain(mut self, trust_domain: &str) -> Result<Self, IdentityError> {
        SpiffeId::new(trust_domain, "default", "default")?;
        self.trust_domain = trust_domain.to_string();
        Ok(self)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Also trusts the roots in `pem` (for a rotation: the old and the new root overlap).
    pub fn add_trusted_root(&self, pem: &str) -> Result<(), IdentityError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Bundle(e.to_string()))?;
        if certs.is_empty() {
            return Err(IdentityError::Bundle("no CERTIFICATE in the PEM".into()));
        }
        for c in &certs {
            x509_parser::parse_x509_certificate(c).map_err(|e| IdentityError::Bundle(e.to_string()))?;
        }
        {
            let mut roots = self.roots.write().unwrap_or_else(|p| p.into_inner());
            for c in certs {
                if !roots.contains(&c) {
                    roots.push(c);
                }
            }
        }
        self.persist_bundle()
    }

    /// The roots peers trust, DER.
    pub fn trust_bundle(&self) -> Vec<CertificateDer<'static>> {
        self.tick();
        self.roots.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The roots peers trust, PEM.
    pub fn trust_bundle_pem(&self) -> String {
        self.trust_bundle().iter().map(|c| to_pem(c)).collect()
    }

    /// Signs the key in `csr_pem` for exactly the identity `grant` names, valid from a minute ago
    /// for `ttl`. The CSR's subject, SANs and extensions are ignored.
    pub fn sign(&self, csr_pem: &str, grant: &Grant, ttl: Duration) -> Result<SignedCert, IdentityError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(IdentityError::Csr)?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(IdentityError::CsrAlgorithm);
        }
        let id = SpiffeId::new(&self.trust_domain, &grant.namespace, &grant.service_account)?;
        let now = SystemTime::now();
        let not_before = now - BACKDATE;
        let not_after = now + ttl;
        let mut params = CertificateParams::default();
        // An empty subject: the SPIFFE ID (a critical SAN then) is the whole identity.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            id.to_string().try_into().map_err(IdentityError::Crypto)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let signing = self.signing();
        let cert = params
            .signed_by(&csr.public_key, &signing.issuer)
            .map_err(IdentityError::Crypto)?;
        let mut cert_chain_pem = cert.pem();
        for c in &signing.chain {
            cert_chain_pem.push_str(&to_pem(c));
        }
        Ok(SignedCert {
            spiffe_id: id,
            cert_chain_pem,
            trust_bundle_pem: self.trust_bundle_pem(),
            // Whole seconds, as the certificate says.
            not_before: truncate_to_seconds(not_before),
            not_after: truncate_to_seconds(not_after),
        })
    }
}

impl CertificateAuthority {
    /// The control plane's own server certificate for its discovery port (`--tls`): SPIFFE ID
    /// `spiffe://<td>/ns/weft-system/sa/weft-control`, DNS `localhost` and IP `127.0.0.1` (plus
    /// `extra_ips`), valid for `ttl`, for `key`. Returns the chain (leaf, then the CA's) and the
    /// issuer generation it came from.
    pub fn server_cert(
        &self,
        key: &KeyPair,
        extra_ips: &[std::net::IpAddr],
        ttl: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, u64, SystemTime), IdentityError> {
        let id = SpiffeId::new(&self.trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "weft-control");
        let ia5 = |s: String| s.try_into().map_err(IdentityError::Crypto);
        params.subject_alt_names = vec![
            SanType::URI(ia5(id.to_string())?),
            SanType::DnsName(ia5("localhost".to_string())?),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        for ip in extra_ips {
            if !ip.is_unspecified() && *ip != std::net::IpAddr::from([127, 0, 0, 1]) {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ttl).into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let signing = self.signing();
        let cert = params
            .signed_by(key, &signing.issuer)
            .map_err(IdentityError::Crypto)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(signing.chain.iter().cloned());
        Ok((chain, signing.generation, now + ttl))
    }
}

/// The control plane's own identity (its discovery port's server certificate).
pub const CONTROL_NAMESPACE: &str = "weft-system";
pub const CONTROL_SERVICE_ACCOUNT: &str = "weft-control";

fn root_params() -> Result<CertificateParams, IdentityError> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "weft");
    dn.push(DnType::CommonName, "weft root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_TTL).into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn read_key(path: &Path) -> Result<KeyPair, IdentityError> {
    let p = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: p.clone(),
        source,
    })?;
    KeyPair::from_pem(&pem).map_err(|source| IdentityError::Key { path: p, source })
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "identity: the CA key is readable by others (want mode 0600)");
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// 128 random bits, positive.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    fastrand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn to_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// `weft.identity.v1.Identity`: checks the bootstrap token, then signs.
#[derive(Clone)]
pub struct IdentityService {
    ca: Arc<CertificateAuthority>,
    tokens: TokenStore,
    ttl: Duration,
}

impl IdentityService {
    pub fn new(ca: Arc<CertificateAuthority>, tokens: TokenStore, ttl: Duration) -> Self {
        Self { ca, tokens, ttl }
    }

    /// The tonic service, to serve.
    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let req = request.into_inner();
        let Some(grant) = self.tokens.lookup(&req.token) else {
            tracing::warn!(namespace = %req.namespace, service_account = %req.service_account, "identity: refused a wrong token");
            return Err(Status::unauthenticated("wrong bootstrap token"));
        };
        // The identity is the token's; a request naming another one is refused rather than
        // answered with a certificate the proxy did not expect.
        let sa = if req.service_account.is_empty() {
            "default"
        } else {
            &req.service_account
        };
        if (!req.namespace.is_empty() && req.namespace != grant.namespace) || sa != grant.service_account {
            tracing::warn!(namespace = %req.namespace, service_account = %sa, "identity: refused a request for another identity than its token's");
            return Err(Status::permission_denied(format!(
                "the bootstrap token is bound to namespace {:?}, service account {:?}; the request names {:?}, {sa:?}",
                grant.namespace, grant.service_account, req.namespace
            )));
        }
        let signed = self
            .ca
            .sign(&req.csr_pem, &grant, self.ttl)
            .map_err(|e| match e {
                IdentityError::Csr(_) | IdentityError::CsrAlgorithm | IdentityError::Identity(_) => {
                    Status::invalid_argument(e.to_string())
                }
                e => {
                    tracing::error!(error = %e, "identity: cannot sign");
                    Status::internal("cannot sign")
                }
            })?;
        self.ca.record_issued(&req.instance_id, &signed);
        tracing::info!(id = %signed.spiffe_id, instance = %req.instance_id, "identity: issued a certificate");
        let not_after_unix = signed
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(Response::new(SignResponse {
            cert_chain_pem: signed.cert_chain_pem,
            trust_bundle_pem: signed.trust_bundle_pem,
            not_after_unix,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::UnixTime;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::X509Certificate;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn grant(ns: &str, sa: &str) -> Grant {
        Grant::new("w", ns, sa)
    }

    /// A CSR asking for names the token does not grant.
    fn greedy_csr() -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        params.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .to_string()
                .try_into()
                .expect("ia5"),
        ));
        params.distinguished_name.push(DnType::CommonName, "admin");
        params.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("pem")
    }

    fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
        let san = cert
            .subject_alternative_name()
            .expect("san parses")
            .expect("has a SAN");
        assert!(san.critical, "an empty subject makes the SAN critical");
        san.value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(u) => (*u).to_string(),
                other => panic!("unexpected SAN {other:?}"),
            })
            .collect()
    }

    /// Verifies the chain the way a peer proxy will: WebPKI path building to the bundle.
    fn verify(
        chain: &[CertificateDer<'static>],
        bundle: &[CertificateDer<'static>],
    ) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for r in bundle {
            roots.add(r.clone()).expect("root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn the_root_is_made_once_and_the_same_after_a_reload() {
        let dir = temp_dir("reload");
        let first = CertificateAuthority::load_or_create(&dir).expect("create");
        let again = CertificateAuthority::load_or_create(&dir).expect("load");
        assert_eq!(first.trust_bundle(), again.trust_bundle());
        assert_eq!(first.trust_bundle_pem(), again.trust_bundle_pem());
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(dir.join(f)).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        // The root: a CA, ECDSA P-256, ~10 years.
        let bundle = first.trust_bundle();
        let (_, root) = x509_parser::parse_x509_certificate(&bundle[0]).expect("root parses");
        assert!(root.is_ca());
        assert_eq!(
            root.public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok()),
            Some(x509_parser::oid_registry::OID_EC_P256)
        );
        let years =
            (root.validity().not_after.timestamp() - root.validity().not_before.timestamp()) / (365 * 86_400);
        assert_eq!(years, 10);
        // A certificate signed before the reload verifies against the reloaded bundle.
        let signed = first
            .sign(&greedy_csr(), &grant("shop", "reviews"), DEFAULT_CERT_TTL)
            .expect("sign");
        verify(&chain(&signed.cert_chain_pem), &again.trust_bundle()).expect("verifies after reload");
        // Only the certificate without its key: refused rather than replaced.
        std::fs::remove_file(dir.join(CA_KEY_FILE)).expect("rm");
        assert!(matches!(
            CertificateAuthority::load_or_create(&dir),
            Err(IdentityError::Incomplete(..))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sign_issues_exactly_the_granted_identity_whatever_the_csr_asks() {
        let dir = temp_dir("sign");
        let ca = CertificateAuthority::load_or_create(&dir).expect("ca");
        let signed = ca
            .sign(&greedy_csr(), &grant("shop", "reviews"), DEFAULT_CERT_TTL)
            .expect("sign");
        assert_eq!(
            signed.spiffe_id.to_string(),
            "spiffe://cluster.local/ns/shop/sa/reviews"
        );
        let certs = chain(&signed.cert_chain_pem);
        assert_eq!(certs.len(), 2, "leaf + root");
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).expect("leaf parses");
        assert_eq!(uri_sans(&leaf), ["spiffe://cluster.local/ns/shop/sa/reviews"]);
        assert_eq!(
            leaf.subject().iter_attributes().count(),
            0,
            "the CSR's subject is ignored"
        );
        assert!(!leaf.is_ca());
        let ku = leaf.key_usage().expect("ku").expect("has key usage").value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = leaf.extended_key_usage().expect("eku").expect("has eku").value;
        assert!(eku.server_auth && eku.client_auth);
        // Valid from a minute ago for ~24 h.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let v = leaf.validity();
        assert!((v.not_before.timestamp() - (now - 60)).abs() <= 5);
        assert!((v.not_after.timestamp() - (now + 86_400)).abs() <= 5);
        assert_eq!(
            signed
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("epoch")
                .as_secs() as i64,
            v.not_after.timestamp()
        );
        // Issued by the root, and the chain verifies against the bundle.
        let bundle = chain(&signed.trust_bundle_pem);
        assert_eq!(bundle, ca.trust_bundle());
        let (_, root) = x509_parser::parse_x509_certificate(&bundle[0]).expect("root parses");
        assert_eq!(leaf.issuer(), root.subject());
        leaf.verify_signature(Some(root.public_key()))
            .expect("signed by the root");
        verify(&certs, &bundle).expect("chain verifies");
        // Not against another root.
        let other = CertificateAuthority::load_or_create(&temp_dir("sign-other")).expect("other ca");
        assert!(verify(&certs, &other.trust_bundle()).is_err());
        // The bundle can hold both roots (rotation overlap): then it verifies either way.
        other.add_trusted_root(&ca.trust_bundle_pem()).expect("add root");
        assert_eq!(other.trust_bundle().len(), 2);
        other
            .add_trusted_root(&ca.trust_bundle_pem())
            .expect("idempotent");
        assert_eq!(other.trust_bundle().len(), 2);
        verify(&certs, &other.trust_bundle()).expect("verifies with the overlapping bundle");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(temp_dir("sign-other"));
    }

    #[test]
    fn trust_domain_and_ttl_are_configurable_and_bad_input_is_refused() {
        let dir = temp_dir("td");
        let ca = CertificateAuthority::load_or_create(&dir)
            .expect("ca")
            .with_trust_domain("example.org")
            .expect("td");
        let signed = ca
            .sign(&greedy_csr(), &grant("default", "web"), Duration::from_secs(3600))
            .expect("sign");
        let certs = chain(&signed.cert_chain_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).expect("leaf");
        assert_eq!(uri_sans(&leaf), ["spiffe://example.org/ns/default/sa/web"]);
        let v = leaf.validity();
        assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 3600 + 60);
        assert!(matches!(
            ca.sign("not a csr", &grant("default", "web"), DEFAULT_CERT_TTL),
            Err(IdentityError::Csr(_))
        ));
        assert!(matches!(
            ca.sign(&greedy_csr(), &grant("a/b", "web"), DEFAULT_CERT_TTL),
            Err(IdentityError::Identity(_))
        ));
        assert!(CertificateAuthority::load_or_create(&dir)
            .expect("ca")
            .with_trust_domain("Not Valid")
            .is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_user_provided_intermediate_signs_and_its_chain_reaches_the_root() {
        let dir = temp_dir("files");
        std::fs::create_dir_all(&dir).expect("dir");
        // The user's PKI: a root, an intermediate signed by it.
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut root_params = root_params().expect("params");
        root_params.distinguished_name = DistinguishedName::new();
        root_params
            .distinguished_name
            .push(DnType::CommonName, "corp root");
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut int_params = root_params_for("corp mesh intermediate");
        int_params.use_authority_key_identifier_extension = true;
        let int = int_params
            .signed_by(&int_key, &root_issuer)
            .expect("intermediate");
        std::fs::write(dir.join("int.pem"), format!("{}{}", int.pem(), root.pem())).expect("write");
        std::fs::write(dir.join("int-key.pem"), int_key.serialize_pem()).expect("write");

        let ca =
            CertificateAuthority::from_files(&dir.join("int.pem"), &dir.join("int-key.pem")).expect("loads");
        assert_eq!(
            ca.trust_bundle(),
            vec![root.der().clone()],
            "the bundle is the file's root"
        );
        assert!(
            ca.rotate_root(Duration::ZERO, Duration::ZERO).is_err(),
            "a user's CA is rotated by its user"
        );
        let signed = ca
            .sign(&greedy_csr(), &grant("shop", "ratings"), DEFAULT_CERT_TTL)
            .expect("sign");
        let certs = chain(&signed.cert_chain_pem);
        assert_eq!(certs.len(), 3, "leaf, intermediate, root");
        assert_eq!(certs[1], *int.der());
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).expect("leaf");
        let (_, int_parsed) = x509_parser::parse_x509_certificate(int.der()).expect("int");
        assert_eq!(leaf.issuer(), int_parsed.subject());
        assert_eq!(uri_sans(&leaf), ["spiffe://cluster.local/ns/shop/sa/ratings"]);
        verify(&certs, &[root.der().clone()]).expect("verifies to the user's root");

        // A key that is not the certificate's, or a certificate that is not a CA: refused.
        std::fs::write(dir.join("root-only.pem"), root.pem()).expect("write");
        assert!(matches!(
            CertificateAuthority::from_files(&dir.join("root-only.pem"), &dir.join("int-key.pem")),
            Err(IdentityError::CaCert { .. })
        ));
        std::fs::write(dir.join("leaf.pem"), &signed.cert_chain_pem).expect("write");
        assert!(matches!(
            CertificateAuthority::from_files(&dir.join("leaf.pem"), &dir.join("int-key.pem")),
            Err(IdentityError::CaCert { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_files(&dir.join("missing.pem"), &dir.join("int-key.pem")),
            Err(IdentityError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Paused time: the phases are hours long, as in production, and the test steps through
    // them exactly, just before and just after each boundary.
    #[tokio::test(start_paused = true)]
    async fn a_rotation_trusts_the_new_root_first_signs_with_it_later_and_drops_the_old_root_last() {
        const PROPAGATE: Duration = Duration::from_secs(24 * 3600);
        const OVERLAP: Duration = Duration::from_secs(12 * 3600);
        const JUST: Duration = Duration::from_secs(1);
        let dir = temp_dir("rotate");
        let ca = CertificateAuthority::load_or_create(&dir)
            .and_then(|ca| ca.with_state_dir(&dir))
            .expect("ca");
        let old = ca.trust_bundle();
        let bundle_file = || chain(&std::fs::read_to_string(dir.join(TRUST_BUNDLE_FILE)).expect("bundle"));
        assert_eq!(bundle_file(), old);
        let new = chain(&ca.rotate_root(PROPAGATE, OVERLAP).expect("rotate"));
        assert!(
            ca.rotate_root(Duration::ZERO, Duration::ZERO).is_err(),
            "one rotation at a time"
        );
        // Phase 1: both trusted, the old root still signs.
        assert_eq!(ca.trust_bundle(), [old.clone(), new.clone()].concat());
        assert_eq!(bundle_file(), ca.trust_bundle());
        let signed = ca
            .sign(&greedy_csr(), &grant("a", "b"), DEFAULT_CERT_TTL)
            .expect("sign");
        assert_eq!(chain(&signed.cert_chain_pem).last(), old.last());
        assert_eq!(chain(&signed.trust_bundle_pem).len(), 2);
        verify(&chain(&signed.cert_chain_pem), &old).expect("old root");
        // Still so just before the new root's time.
        tokio::time::advance(PROPAGATE - JUST).await;
        let signed = ca
            .sign(&greedy_csr(), &grant("a", "b"), DEFAULT_CERT_TTL)
            .expect("sign");
        assert_eq!(chain(&signed.cert_chain_pem).last(), old.last());
        assert_eq!(ca.signing().generation, 0);
        // Phase 2: the new root signs; both trusted; the new root is the one on disk.
        tokio::time::advance(JUST).await;
        let signed = ca
            .sign(&greedy_csr(), &grant("a", "b"), DEFAULT_CERT_TTL)
            .expect("sign");
        assert_eq!(chain(&signed.cert_chain_pem).last(), new.last());
        assert_eq!(chain(&signed.trust_bundle_pem).len(), 2);
        verify(&chain(&signed.cert_chain_pem), &new).expect("new root");
        assert_eq!(ca.signing().generation, 1);
        let reloaded = CertificateAuthority::load_or_create(&dir).expect("reload");
        assert_eq!(reloaded.signing().chain(), new.as_slice());
        // The old root is still trusted just before the overlap ends...
        tokio::time::advance(OVERLAP - JUST).await;
        assert_eq!(ca.trust_bundle(), [old.clone(), new.clone()].concat());
        assert_eq!(bundle_file(), ca.trust_bundle());
        // ...and no second rotation may start before it is gone: it would replace the pending
        // retirement and leave the old root trusted for good.
        let refused = ca
            .rotate_root(Duration::ZERO, Duration::ZERO)
            .expect_err("in the overlap");
        assert!(
            refused.to_string().contains("leaves the trust bundle in 1 s"),
            "{refused}"
        );
        assert_eq!(ca.trust_bundle(), [old.clone(), new.clone()].concat());
        // Phase 3: ...and gone from the bundle and the file once it ends.
        tokio::time::advance(JUST).await;
        assert_eq!(ca.trust_bundle(), new);
        assert_eq!(bundle_file(), new);
        // A second rotation may start now.
        ca.rotate_root(Duration::ZERO, Duration::ZERO)
            .expect("rotate again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn the_old_root_of_a_rotation_survives_a_restart_for_a_while() {
        let dir = temp_dir("restart");
        let ca = CertificateAuthority::load_or_create(&dir)
            .and_then(|ca| ca.with_state_dir(&dir))
            .expect("ca");
        let old = ca.trust_bundle();
        ca.rotate_root(Duration::ZERO, Duration::from_secs(3600))
            .expect("rotate");
        assert_eq!(ca.trust_bundle().len(), 2);
        drop(ca);
        // Restarted mid-overlap: the new root signs, the old one is still trusted...
        let again = CertificateAuthority::load_or_create(&dir)
            .and_then(|ca| ca.with_state_dir(&dir))
            .expect("reload");
        assert_eq!(again.trust_bundle().len(), 2);
        assert!(again.trust_bundle().contains(&old[0]));
        assert_ne!(again.signing().chain().last(), old.last());
        // ...until one certificate lifetime later.
        let lifetime = Duration::from_secs(24 * 3600);
        again.retire_other_roots_after(lifetime);
        tokio::time::advance(lifetime - Duration::from_secs(1)).await;
        assert_eq!(again.trust_bundle().len(), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(again.trust_bundle().len(), 1);
        assert!(!again.trust_bundle().contains(&old[0]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn root_params_for(cn: &str) -> CertificateParams {
        let mut p = root_params().expect("params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    }
}
