//! The proxy's workload identity (shared/ARCHITECTURE.md, "Identity"): a key made here that never
//! leaves the process, a certificate for it from the control plane (`weft.identity.v1.Identity`,
//! with the bootstrap token), renewed at about 2/3 of its lifetime.
//!
//! - [`run`] publishes [`Credentials`] in a [`CredentialsCell`]; whoever terminates or originates
//!   mTLS loads the cell on each handshake, so a renewal applies to the next connection.
//! - Each issuance uses a fresh key pair: a renewal also rotates the key.
//! - A failure is retried with the discovery [`Backoff`] (100 ms doubling to 5 s, jittered); the
//!   current certificate keeps serving until it expires (then the cell is emptied: a proxy with
//!   no valid identity is not ready).
//! - The response is checked before it is published: the leaf must certify this proxy's key and
//!   name exactly the namespace and service account asked for.
//! - Metrics: `weft_identity_cert_expiration_timestamp_seconds` (gauge) and
//!   `weft_identity_cert_refresh_total{result="ok|error"}`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use weft_api::identity::SpiffeId;
use weft_api::proto::identity::identity_client::IdentityClient;
use weft_api::proto::identity::{SignRequest, SignResponse};

pub use crate::control_tls::TrustAnchor;
use crate::discovery::Backoff;

// One definition of the credentials, shared with the TLS code that presents them.
pub use crate::tls::{Credentials, CredentialsCell};

/// An empty cell.
pub fn new_cell() -> CredentialsCell {
    Arc::new(ArcSwapOption::empty())
}

/// Who this proxy asks to be: from flags or environment.
#[derive(Debug, Clone, Default)]
pub struct IdentityRequest {
    pub token: String,
    pub namespace: String,
    /// Empty means `default`.
    pub service_account: String,
    /// This proxy's instance id (reported, for `weft check`); may be empty.
    pub instance_id: String,
}

impl IdentityRequest {
    fn service_account(&self) -> &str {
        if self.service_account.is_empty() {
            "default"
        } else {
            &self.service_account
        }
    }
}

/// Where certificates come from: the control plane over gRPC ([`GrpcSigner`]), or a test's CA.
pub trait Signer: Send + Sync + 'static {
    fn sign(&self, request: SignRequest) -> impl Future<Output = anyhow::Result<SignResponse>> + Send;
    /// The roots every issued chain must end at; they are the trust bundle (a root the response
    /// adds is kept only if the anchor holds it). None: the response's bundle is taken as is.
    fn anchor(&self) -> Option<&TrustAnchor> {
        None
    }
}

/// `weft.identity.v1.Identity.Sign` at `endpoint` (e.g. `http://127.0.0.1:15010`), one
/// connection per call (calls are hours apart).
#[derive(Debug, Clone)]
pub struct GrpcSigner {
    pub endpoint: String,
    /// With an anchor: TLS to the control plane, and issued chains checked against it.
    pub anchor: Option<TrustAnchor>,
}

impl Signer for GrpcSigner {
    fn anchor(&self) -> Option<&TrustAnchor> {
        self.anchor.as_ref()
    }

    async fn sign(&self, request: SignRequest) -> anyhow::Result<SignResponse> {
        let call = async {
            let channel = crate::control_tls::connect(&self.endpoint, self.anchor.as_ref(), |e: Endpoint| {
                e.connect_timeout(Duration::from_secs(2))
            })
            .await?;
            anyhow::Ok(IdentityClient::new(channel).sign(request).await?.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .map_err(|_| anyhow::anyhow!("Identity.Sign timed out"))?
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// `weft_identity_cert_expiration_timestamp_seconds`, `weft_identity_cert_refresh_total`.
#[derive(Debug, Clone, Default)]
pub struct IdentityMetrics {
    expiration: Gauge,
    refresh: Family<ResultLabels, Counter>,
}

impl IdentityMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "weft_identity_cert_expiration_timestamp_seconds",
            "When the proxy's current certificate expires (Unix seconds; 0 before the first)",
            m.expiration.clone(),
        );
        registry.register(
            "weft_identity_cert_refresh",
            "Certificate requests to the control plane, by result (ok|error)",
            m.refresh.clone(),
        );
        m
    }

    /// Successful and failed requests so far.
    pub fn refreshes(&self) -> (u64, u64) {
        let get = |result| self.refresh.get_or_create(&ResultLabels { result }).get();
        (get("ok"), get("error"))
    }

    /// The gauge's value.
    pub fn expiration(&self) -> i64 {
        self.expiration.get()
    }
}

/// When to renew a certificate issued at `issued` that expires at `not_after`: at 2/3 of its
/// life, moved by `jitter` (a fraction, clamped to ±10%: proxies issued together do not come
/// back together). Never before `issued`, never after `not_after`.
pub fn renew_at(issued: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let Ok(life) = not_after.duration_since(issued) else {
        return issued;
    };
    let factor = 2.0 / 3.0 * (1.0 + jitter.clamp(-0.1, 0.1));
    issued + life.mul_f64(factor).min(life)
}

/// Gets a certificate from the control plane at `endpoint` with the bootstrap token, publishes
/// it in `cell`, and renews it until `shutdown`.
pub async fn run(
    endpoint: String,
    request: IdentityRequest,
    cell: CredentialsCell,
    metrics: IdentityMetrics,
    shutdown: CancellationToken,
) {
    run_with(
        GrpcSigner {
            endpoint,
            anchor: None,
        },
        request,
        cell,
        metrics,
        shutdown,
    )
    .await;
}

/// [`run`] over TLS verified against `anchor` (when given), which also is the trust bundle and
/// what every issued chain must end at.
pub async fn run_anchored(
    endpoint: String,
    anchor: Option<TrustAnchor>,
    request: IdentityRequest,
    cell: CredentialsCell,
    metrics: IdentityMetrics,
    shutdown: CancellationToken,
) {
    run_with(GrpcSigner { endpoint, anchor }, request, cell, metrics, shutdown).await;
}

/// [`run`] with any [`Signer`].
pub async fn run_with<S: Signer>(
    signer: S,
    request: IdentityRequest,
    cell: CredentialsCell,
    metrics: IdentityMetrics,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut rng = fastrand::Rng::new();
    loop {
        let wait = match obtain(&signer, &request).await {
            Ok(creds) => {
                let issued = SystemTime::now();
                let at = renew_at(issued, creds.not_after, rng.f64() * 0.2 - 0.1);
                tracing::info!(id = %creds.spiffe_id, not_after = %weft_api::human::time(creds.not_after), renew_in = %weft_api::human::duration(at.duration_since(issued).unwrap_or_default()), "identity: certificate issued");
                metrics.expiration.set(unix_secs(creds.not_after));
                metrics
                    .refresh
                    .get_or_create(&ResultLabels { result: "ok" })
                    .inc();
                cell.store(Some(Arc::new(creds)));
                backoff.reset();
                at.duration_since(issued).unwrap_or_default()
            }
            Err(e) => {
                metrics
                    .refresh
                    .get_or_create(&ResultLabels { result: "error" })
                    .inc();
                let delay = backoff.next_delay();
                let current = cell.load_full();
                match current {
                    Some(c) if c.not_after > SystemTime::now() => {
                        tracing::warn!(error = %e, retry_in = %weft_api::human::duration(delay), not_after = %weft_api::human::time(c.not_after), "identity: renewal failed; keeping the current certificate")
                    }
                    Some(_) => {
                        tracing::error!(error = %e, retry_in = %weft_api::human::duration(delay), "identity: renewal failed and the certificate expired");
                        cell.store(None);
                    }
                    None => {
                        tracing::warn!(error = %e, retry_in = %weft_api::human::duration(delay), "identity: cannot get a certificate yet")
                    }
                }
                delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One issuance: a fresh key, its CSR, the signed chain checked against what was asked.
async fn obtain<S: Signer>(signer: &S, request: &IdentityRequest) -> anyhow::Result<Credentials> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // The control plane ignores any names in the CSR: only its key counts.
    let csr = CertificateParams::default().serialize_request(&key)?.pem()?;
    let response = signer
        .sign(SignRequest {
            token: request.token.clone(),
            namespace: request.namespace.clone(),
            service_account: request.service_account().to_string(),
            csr_pem: csr,
            instance_id: request.instance_id.clone(),
        })
        .await?;
    let chain =
        CertificateDer::pem_slice_iter(response.cert_chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let trust_bundle = CertificateDer::pem_slice_iter(response.trust_bundle_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow::anyhow!("the response has no certificate"))?;
    anyhow::ensure!(!trust_bundle.is_empty(), "the response has no trust bundle");
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)?;
    anyhow::ensure!(
        parsed.public_key().subject_public_key.data.as_ref() == key.public_key_raw(),
        "the certificate is not for this proxy's key"
    );
    let uris: Vec<String> = parsed
        .subject_alternative_name()?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [uri] = uris.as_slice() else {
        anyhow::bail!("the certificate has {} URI SANs, want exactly one", uris.len());
    };
    let id = SpiffeId::parse(uri)?;
    anyhow::ensure!(
        id.namespace == request.namespace && id.service_account == request.service_account(),
        "the certificate names {id}, not namespace {} service account {}",
        request.namespace,
        request.service_account()
    );
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0));
    let trust_bundle = match signer.anchor() {
        None => trust_bundle,
        Some(anchor) => anchored_bundle(anchor, &chain, trust_bundle)?,
    };
    Ok(Credentials {
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        chain,
        trust_bundle,
        spiffe_id: id.to_string(),
        not_after,
    })
}

/// With a trust anchor: the chain must verify to it, and the trust bundle is the anchor's roots
/// (a root in the response the anchor does not hold is dropped, and logged).
fn anchored_bundle(
    anchor: &TrustAnchor,
    chain: &[CertificateDer<'static>],
    offered: Vec<CertificateDer<'static>>,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let roots = anchor.load()?;
    let mut store = rustls::RootCertStore::empty();
    for r in &roots {
        store.add(r.clone())?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), crate::tls::provider())
            .build()?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls_pki_types::UnixTime::now())
        .map_err(|e| {
            anyhow::anyhow!(
                "the issued certificate does not chain to the trust anchor {}: {e}",
                anchor.path().display()
            )
        })?;
    let dropped = offered.iter().filter(|c| !roots.contains(c)).count();
    if dropped > 0 {
        tracing::warn!(anchor = %anchor.path().display(), dropped, "identity: ignoring roots the control plane sent that the trust anchor does not hold");
    }
    Ok(roots)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use rcgen::{BasicConstraints, CertificateSigningRequestParams, IsCa, Issuer, SanType};

    use super::*;

    /// A CA in the test: signs what it is asked for `ttl`, or fails while `fail` is set.
    struct TestSigner {
        issuer: Issuer<'static, KeyPair>,
        root_pem: String,
        ttl: Duration,
        fail: AtomicBool,
        calls: AtomicU32,
    }

    impl TestSigner {
        fn new(ttl: Duration) -> Arc<Self> {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let root = params.self_signed(&key).expect("root");
            Arc::new(Self {
                issuer: Issuer::new(params, key),
                root_pem: root.pem(),
                ttl,
                fail: AtomicBool::new(false),
                calls: AtomicU32::new(0),
            })
        }
    }

    impl Signer for Arc<TestSigner> {
        async fn sign(&self, request: SignRequest) -> anyhow::Result<SignResponse> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            anyhow::ensure!(!self.fail.load(Ordering::SeqCst), "control plane unreachable");
            let csr = CertificateSigningRequestParams::from_pem(&request.csr_pem)?;
            let mut params = CertificateParams::default();
            let id = format!(
                "spiffe://cluster.local/ns/{}/sa/{}",
                request.namespace, request.service_account
            );
            params.subject_alt_names = vec![SanType::URI(id.try_into()?)];
            let not_after = SystemTime::now() + self.ttl;
            params.not_after = not_after.into();
            let cert = params.signed_by(&csr.public_key, &self.issuer)?;
            Ok(SignResponse {
                cert_chain_pem: cert.pem() + &self.root_pem,
                trust_bundle_pem: self.root_pem.clone(),
                not_after_unix: unix_secs(not_after),
            })
        }
    }

    fn request() -> IdentityRequest {
        IdentityRequest {
            token: "t".into(),
            namespace: "shop".into(),
            service_account: String::new(),
            instance_id: String::new(),
        }
    }

    #[test]
    fn renewal_is_at_two_thirds_of_the_life_with_at_most_ten_percent_jitter() {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let not_after = issued + Duration::from_secs(86_400);
        let at = |j| {
            renew_at(issued, not_after, j)
                .duration_since(issued)
                .expect("after issue")
        };
        assert_eq!(at(0.0), Duration::from_secs(57_600));
        assert_eq!(at(0.1), Duration::from_secs(63_360));
        assert_eq!(at(-0.1), Duration::from_secs(51_840));
        // Clamped: a wild jitter stays within ±10%, and never past expiry.
        assert_eq!(at(5.0), at(0.1));
        assert_eq!(at(-5.0), at(-0.1));
        // Already expired (or a clock that went back): renew at once.
        assert_eq!(renew_at(not_after, issued, 0.0), not_after);
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_two_thirds_retries_failures_and_keeps_the_old_cert_meanwhile() {
        let signer = TestSigner::new(Duration::from_secs(3000));
        let cell = new_cell();
        let metrics = IdentityMetrics::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_with(
            signer.clone(),
            request(),
            cell.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        while cell.load().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = cell.load_full().expect("issued");
        assert_eq!(first.spiffe_id, "spiffe://cluster.local/ns/shop/sa/default");
        assert_eq!(first.chain.len(), 2);
        assert_eq!(first.trust_bundle.len(), 1);
        assert!(matches!(first.key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(metrics.refreshes(), (1, 0));
        assert_eq!(metrics.expiration(), unix_secs(first.not_after));

        // Nothing before 2/3 of 3000 s minus 10% (1800 s).
        signer.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1790)).await;
        assert_eq!(signer.calls.load(Ordering::SeqCst), 1, "renewed too early");
        // By 2/3 plus 10% (2200 s) it tried, failed, and retries with backoff (<= 5 s apart),
        // serving the first certificate all along.
        tokio::time::sleep(Duration::from_secs(2210 - 1790)).await;
        let calls = signer.calls.load(Ordering::SeqCst);
        assert!(calls >= 2, "no renewal by 2200 s");
        assert!(Arc::ptr_eq(&cell.load_full().expect("kept"), &first));
        tokio::time::sleep(Duration::from_secs(30)).await;
        let retried = signer.calls.load(Ordering::SeqCst);
        assert!(retried >= calls + 6, "retries every <= 5 s: {calls} -> {retried}");
        assert!(Arc::ptr_eq(&cell.load_full().expect("kept"), &first));
        let (ok, errors) = metrics.refreshes();
        assert_eq!((ok, u64::from(retried) - 1), (1, errors));

        // The control plane is back: the next retry replaces the certificate (and the key).
        signer.fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let second = cell.load_full().expect("renewed");
        assert!(!Arc::ptr_eq(&second, &first));
        assert_ne!(second.chain[0], first.chain[0]);
        assert_ne!(second.key.secret_der(), first.key.secret_der());
        assert_eq!(metrics.refreshes().0, 2);
        stop.cancel();
        task.await.expect("run ends on shutdown");
    }

    #[tokio::test]
    async fn a_certificate_for_another_identity_or_key_is_refused() {
        /// Signs for a fixed namespace, whatever is asked.
        struct Liar(Arc<TestSigner>);
        impl Signer for Liar {
            async fn sign(&self, mut request: SignRequest) -> anyhow::Result<SignResponse> {
                request.namespace = "kube-system".into();
                self.0.sign(request).await
            }
        }
        let err = obtain(&Liar(TestSigner::new(Duration::from_secs(60))), &request())
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("kube-system"), "{err}");

        /// Signs a key of its own instead of the CSR's.
        struct Swapper(Arc<TestSigner>);
        impl Signer for Swapper {
            async fn sign(&self, mut request: SignRequest) -> anyhow::Result<SignResponse> {
                let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
                request.csr_pem = CertificateParams::default().serialize_request(&other)?.pem()?;
                self.0.sign(request).await
            }
        }
        let err = obtain(&Swapper(TestSigner::new(Duration::from_secs(60))), &request())
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("key"), "{err}");
    }
}
