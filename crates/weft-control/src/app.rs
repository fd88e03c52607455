//! The control plane, wired top to bottom: store -> translate -> registry -> compile -> push,
//! with an admin endpoint for `weft status`, and the CA (`weft.identity.v1.Identity`) on the
//! discovery port.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use weft_api::discovery::{self, Rendered};
use weft_api::finding::{Finding, Severity};
use weft_api::model::Mesh;
use weft_api::proto::Subscribe;
use weft_api::proxy_config::ProxyConfig;

use crate::admission::AdmitError;
use crate::compile::{compile_services, compile_with, ProxyRef, SharedServices};
use crate::identity::{CertificateAuthority, IdentityService};
use crate::push::{ConfigSource, PushServer};
use crate::registry::{Instance, Registry};
use crate::store::files::FileStore;
use crate::store::last_good::{LastGood, Refusal};
use crate::store::Store;
use crate::tokens::TokenStore;

/// How `weft control` runs.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// Directories (or files) of mesh documents.
    pub config_paths: Vec<PathBuf>,
    /// Directories under them that are not read.
    pub exclude: Vec<PathBuf>,
    /// The discovery gRPC address. Default `127.0.0.1:15010`.
    pub listen: SocketAddr,
    /// The admin HTTP address (`/status`, `/ready`). Default `127.0.0.1:15014`.
    pub admin: SocketAddr,
    /// Where VIPs and tokens are kept (mode 0700); never inside the watched config directory.
    pub state_dir: PathBuf,
    /// How often the store is checked for changes.
    pub poll: Duration,
    /// How long an endpoint stays after its proxy disconnects.
    pub endpoint_grace: Duration,
    /// A CA certificate (then its issuers) and key to issue workload certificates with. Both or
    /// neither; without them the root in `state_dir` is used (made on first start).
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    /// The SPIFFE trust domain. Default `cluster.local`.
    pub trust_domain: String,
    /// How long an issued workload certificate lives. Default 24 h.
    pub cert_ttl: Duration,
    /// Serve discovery and identity over TLS with a server certificate from the CA (proxies
    /// verify it against their `--trust-anchor`). Default off.
    pub tls: bool,
}

impl ControlOptions {
    /// The defaults `weft control` uses, for `config_paths` and `state_dir`.
    pub fn new(config_paths: Vec<PathBuf>, state_dir: PathBuf) -> Self {
        Self {
            config_paths,
            exclude: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 15010)),
            admin: SocketAddr::from(([127, 0, 0, 1], 15014)),
            state_dir,
            poll: Duration::from_millis(200),
            endpoint_grace: Duration::from_secs(10),
            ca_cert: None,
            ca_key: None,
            trust_domain: weft_api::identity::DEFAULT_TRUST_DOMAIN.to_string(),
            cert_ttl: crate::identity::DEFAULT_CERT_TTL,
            tls: false,
        }
    }
}

/// A running control plane.
pub struct Running {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub source: Arc<ControlSource>,
    pub push: PushServer,
    /// The CA behind `weft.identity.v1.Identity` (served on the discovery port).
    pub ca: Arc<CertificateAuthority>,
    shutdown: CancellationToken,
}

/// The live state the configs are compiled from. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct ControlSource {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn Store>,
    state: Mutex<State>,
    /// Each file's last good version (only the reload touches it).
    last_good: Mutex<LastGood>,
    changes: watch::Sender<u64>,
    tokens: TokenStore,
    grace: Duration,
    /// Per instance, how many times it connected: a disconnect removes the endpoint only if no
    /// newer connection came within the grace period.
    sessions: Mutex<HashMap<String, u64>>,
    /// The CA and the workload certificate lifetime (`/status` identities, `/rotate-root`).
    ca: Arc<CertificateAuthority>,
    cert_ttl: Duration,
}

struct State {
    mesh: Mesh,
    findings: Vec<Finding>,
    /// The files whose new version is refused (their last good version serves).
    refused: Vec<Refusal>,
    /// How many new versions were refused since the start.
    refusals_total: u64,
    registry: Registry,
    shared: SharedServices,
    /// `shared` as resources (`MeshService`s and `EndpointSet`s), rendered once per change and
    /// handed to every proxy's push by `Arc`: no proxy holds a copy.
    shared_resources: Arc<Vec<Arc<Rendered>>>,
    fingerprint: u64,
}

/// Starts the control plane: loads the documents, binds discovery and admin, watches the store.
pub async fn start(options: ControlOptions) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&options.state_dir)
        .with_context(|| format!("creating the state directory {}", options.state_dir.display()))?;
    for p in &options.config_paths {
        if options.state_dir.starts_with(p) {
            anyhow::bail!(
                "the state directory must not be inside the watched config directory {}",
                p.display()
            );
        }
    }
    let ca = match (&options.ca_cert, &options.ca_key) {
        (Some(cert), Some(key)) => CertificateAuthority::from_files(cert, key),
        (None, None) => CertificateAuthority::load_or_create(&options.state_dir),
        _ => anyhow::bail!("--ca-cert and --ca-key go together"),
    }
    .and_then(|ca| ca.with_trust_domain(&options.trust_domain))
    .and_then(|ca| ca.with_state_dir(&options.state_dir))
    .context("loading the certificate authority")?;
    // Roots an interrupted rotation left in the bundle stay one certificate lifetime more.
    ca.retire_other_roots_after(options.cert_ttl);
    let ca = Arc::new(ca);
    let mut registry = Registry::load(Some(&options.state_dir.join("registry.json")))?;
    registry.set_trust_domain(&options.trust_domain);
    let source = Arc::new(ControlSource {
        inner: Arc::new(Inner {
            store: Box::new(FileStore::new(options.config_paths.clone()).excluding(options.exclude.clone())),
            last_good: Mutex::default(),
            state: Mutex::new(State {
                mesh: Mesh::default(),
                findings: Vec::new(),
                refused: Vec::new(),
                refusals_total: 0,
                registry,
                shared: SharedServices {
                    services: Vec::new(),
                    errors: Vec::new(),
                },
                shared_resources: Arc::default(),
                fingerprint: 0,
            }),
            changes: watch::channel(0).0,
            tokens: TokenStore::new(&options.state_dir),
            grace: options.endpoint_grace,
            sessions: Mutex::default(),
            ca: ca.clone(),
            cert_ttl: options.cert_ttl,
        }),
    });
    source.reload();

    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding discovery on {}", options.listen))?;
    let listen = listener.local_addr()?;
    let push = PushServer::new(source.clone());
    let identity = IdentityService::new(ca.clone(), TokenStore::new(&options.state_dir), options.cert_ttl);
    let tls = match options.tls {
        true => Some(crate::tls::server_config(ca.clone(), vec![listen.ip()])?),
        false => None,
    };
    tokio::spawn({
        let (push, shutdown) = (push.clone(), shutdown.clone());
        async move {
            let served = match tls {
                Some(tls) => push.serve_tls(Some(identity), listener, tls, shutdown).await,
                None => push.serve_with(Some(identity), listener, shutdown).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "discovery server stopped");
            }
        }
    });
    let admin_listener = TcpListener::bind(options.admin)
        .await
        .with_context(|| format!("binding the control-plane admin on {}", options.admin))?;
    let admin = admin_listener.local_addr()?;
    tokio::spawn(crate::admin::serve(
        admin_listener,
        source.clone(),
        push.clone(),
        shutdown.clone(),
    ));

    tokio::spawn(watch_store(source.clone(), options.poll, shutdown.clone()));
    tokio::spawn(keep_registry(
        source.clone(),
        options.endpoint_grace,
        shutdown.clone(),
    ));
    Ok(Running {
        listen,
        admin,
        source,
        push,
        ca,
        shutdown,
    })
}

async fn watch_store(source: Arc<ControlSource>, poll: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        let current = source.inner.store.fingerprint();
        if current != source.inner.lock().fingerprint {
            source.reload();
        }
    }
}

/// The registry's upkeep: instances restored from the state file whose proxy has not come back
/// within the endpoint grace period after the start are removed, as if their proxy had left at the
/// restart; and instance changes the registry held back (it writes them at most once a second)
/// are written.
async fn keep_registry(source: Arc<ControlSource>, grace: Duration, shutdown: CancellationToken) {
    let expire_at = tokio::time::Instant::now() + grace;
    let mut expired = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(expire_at), if !expired => {
                expired = true;
                let mut state = source.inner.lock();
                let gone = state.registry.expire_restored();
                if !gone.is_empty() {
                    tracing::info!(instances = %gone.join(","), "endpoints restored at start removed: their proxies did not come back");
                    source.inner.recompile(&mut state);
                }
            }
            _ = tick.tick() => {
                if let Err(e) = source.inner.lock().registry.save() {
                    tracing::warn!(error = %e, "cannot save the registry");
                }
            }
        }
    }
}

// === impl Running ===

impl Running {
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

// === impl ControlSource ===

impl ControlSource {
    /// Reads every document again (see [`Inner::reload`]).
    pub fn reload(&self) {
        self.inner.reload();
    }

    /// The findings of the documents as last loaded.
    pub fn findings(&self) -> Vec<Finding> {
        self.inner.lock().findings.clone()
    }

    /// The files whose new version is refused (their last good version serves), and how many
    /// versions were refused since the start.
    pub fn refused(&self) -> (Vec<Refusal>, u64) {
        let state = self.inner.lock();
        (state.refused.clone(), state.refusals_total)
    }

    /// The bootstrap tokens.
    pub fn tokens(&self) -> &TokenStore {
        &self.inner.tokens
    }

    /// The CA, and how long the workload certificates it issues live.
    pub fn ca(&self) -> (&Arc<CertificateAuthority>, Duration) {
        (&self.inner.ca, self.inner.cert_ttl)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every document again. A file whose new version has an error is refused and its
    /// last good version keeps serving ([`LastGood`]); in a file that never had one, a document
    /// with an error is left out (and reported) and the rest serves.
    fn reload(&self) {
        let fingerprint = self.store.fingerprint();
        let loaded = self.store.load();
        let (accepted, refusals_total) = {
            let mut last_good = self.last_good.lock().unwrap_or_else(|p| p.into_inner());
            let accepted = last_good.accept(loaded);
            (accepted, last_good.refusals_total())
        };
        for r in accepted
            .refused
            .iter()
            .filter(|r| accepted.newly_refused.contains(&r.file))
        {
            tracing::warn!(
                "config: refused the new version of {}; serving its last good version (since {})",
                r.file,
                weft_api::human::time(r.serving_since)
            );
            for e in &r.errors {
                tracing::warn!("config: {e}");
            }
        }
        for file in &accepted.no_longer_refused {
            tracing::info!("config: accepted {file} again");
        }
        let refused_files: Vec<&str> = accepted.refused.iter().map(|r| r.file.as_str()).collect();
        for f in accepted.findings.iter().filter(|f| {
            f.severity == Severity::Error
                && !f
                    .file
                    .as_deref()
                    .is_some_and(|file| refused_files.contains(&file))
        }) {
            tracing::warn!("config (left out): {f}");
        }
        let mut state = self.lock();
        state.mesh = accepted.translated.mesh;
        state.findings = accepted.findings;
        state.refused = accepted.refused;
        state.refusals_total = refusals_total;
        state.fingerprint = fingerprint;
        self.recompile(&mut state);
        tracing::info!(
            services = state.mesh.services.len(),
            routes = state.mesh.routes.len(),
            errors = state
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count(),
            refused = state.refused.len(),
            "config loaded"
        );
    }

    fn recompile(&self, state: &mut State) {
        let State { mesh, registry, .. } = &mut *state;
        let shared = compile_services(mesh, registry);
        for e in &shared.errors {
            tracing::warn!("compile: {e}");
        }
        state.shared_resources = Arc::new(render_shared(&shared, &state.shared_resources));
        state.shared = shared;
        if let Err(e) = state.registry.save() {
            tracing::warn!(error = %e, "cannot save the registry");
        }
        self.changes.send_modify(|v| *v += 1);
    }
}

/// Every shared resource, rendered once. A service that does not render is left out (and
/// logged), the rest still serves. A resource equal to one in `previous` (same key and version)
/// is that one: pushes still in flight hold the previous resources, and during a connect storm
/// (a recompilation per connecting proxy) each generation would otherwise stay alive as a whole
/// copy of every service and endpoint set until its last push is sent.
fn render_shared(shared: &SharedServices, previous: &[Arc<Rendered>]) -> Vec<Arc<Rendered>> {
    let reuse = |r: Rendered| match previous.binary_search_by(|p| p.key.cmp(&r.key)) {
        Ok(i) if previous[i].version == r.version => previous[i].clone(),
        _ => Arc::new(r),
    };
    let mut out = Vec::new();
    for s in &shared.services {
        match discovery::service_resources(&s.service, &s.endpoints) {
            Ok(resources) => out.extend(resources.into_iter().map(reuse)),
            Err(e) => {
                tracing::warn!(service = %s.service.fqdn(), error = %e, "cannot render a service; left out")
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

impl ConfigSource for ControlSource {
    /// Renders the proxy's own resources (small) and adds the shared services and endpoint sets
    /// rendered once per change: pushing to N proxies costs N small renders and N diffs, not N
    /// compilations and serializations of every service.
    fn resources_for(&self, instance_id: &str) -> Result<Vec<Arc<Rendered>>, String> {
        let (local, shared) = {
            let state = self.inner.lock();
            let proxy = ProxyRef {
                instance_id: instance_id.into(),
            };
            (
                crate::compile::compile_local(&state.mesh, &state.registry, &proxy).config,
                state.shared_resources.clone(),
            )
        };
        let own = discovery::own_resources(&local).map_err(|e| e.to_string())?;
        let mut out: Vec<Arc<Rendered>> = Vec::with_capacity(own.len() + shared.len());
        // Own types sort before shared ones, and each part is sorted: the whole is sorted.
        out.extend(own.into_iter().map(Arc::new));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.extend(shared.iter().cloned());
        Ok(out)
    }

    fn config_for(&self, instance_id: &str) -> Result<ProxyConfig, String> {
        let state = self.inner.lock();
        let compiled = compile_with(
            &state.mesh,
            &state.registry,
            &state.shared,
            &ProxyRef {
                instance_id: instance_id.into(),
            },
        );
        for e in &compiled.errors {
            tracing::debug!(instance = instance_id, "compile: {e}");
        }
        Ok(compiled.config)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn admit(&self, sub: &Subscribe, peer: Option<IpAddr>) -> Result<Instance, AdmitError> {
        let grant = self.inner.tokens.lookup(&sub.token);
        let state = self.inner.lock();
        crate::admission::admit(&state.mesh, &state.registry, grant, sub, peer)
    }

    fn connected(&self, instance: &Instance) {
        {
            let mut sessions = self.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            *sessions.entry(instance.id.clone()).or_default() += 1;
        }
        let mut state = self.inner.lock();
        if state.registry.upsert(instance.clone()) {
            self.inner.recompile(&mut state);
        }
    }

    fn disconnected(&self, instance_id: &str) {
        let generation = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(instance_id)
            .copied();
        let id = instance_id.to_string();
        let grace = self.inner.grace;
        let this = self.inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let now = this
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .copied();
            if now == generation {
                let mut state = this.lock();
                if state.registry.remove(&id).is_some() {
                    tracing::info!(instance = %id, "endpoint removed after its proxy left");
                    this.recompile(&mut state);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` against a control plane started on a directory holding `docs`.
    fn with_control_plane(name: &str, docs: &str, test: impl FnOnce(&Running)) {
        let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).expect("mkdir");
        std::fs::write(dir.join("config/m.yaml"), docs).expect("write");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let mut options = ControlOptions::new(vec![dir.join("config")], dir.join("state"));
            options.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            options.admin = SocketAddr::from(([127, 0, 0, 1], 0));
            let running = start(options).await.expect("start");
            test(&running);
            running.stop();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Instance `i` of reviews-v1 subscribing from loopback (its own mesh and app ports), with
    /// a token bound to reviews-v1: admitted and connected.
    fn connect_reviews_v1(running: &Running, i: u32) {
        let token = running
            .source
            .tokens()
            .create(&crate::tokens::Grant::new("reviews-v1", "default", ""))
            .expect("token");
        let sub = Subscribe {
            instance_id: format!("reviews-v1-{i}"),
            token,
            mesh_port: 15008 + i,
            app_ports: [(9080, 19080 + i)].into(),
            ..Subscribe::default()
        };
        let instance = running
            .source
            .admit(&sub, Some(IpAddr::from([127, 0, 0, 1])))
            .expect("admitted");
        running.source.connected(&instance);
    }

    /// The resources rendered once per change are exactly those of the proxy's whole config.
    #[test]
    fn shared_rendering_gives_the_resources_of_each_config() {
        let docs = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v1}\nspec: {labels: {app: reviews, version: v1}, ports: [{port: 9080}]}\n";
        with_control_plane("render", docs, |running| {
            connect_reviews_v1(running, 0);
            let rendered = running.source.resources_for("reviews-v1-0").expect("render");
            let config = running.source.config_for("reviews-v1-0").expect("config");
            let whole = discovery::resources_of(&config).expect("resources");
            let rendered: Vec<Rendered> = rendered.iter().map(|r| (**r).clone()).collect();
            assert_eq!(rendered, whole);
            assert!(rendered
                .iter()
                .any(|r| r.key.kind == discovery::ResourceType::MeshService));
            // Assembled by a proxy, they make the config they came from.
            let push = weft_api::proto::DiscoveryResponse {
                version: discovery::state_version(rendered.iter().map(|r| (&r.key, r.version))),
                resources: rendered.iter().map(Rendered::to_proto).collect(),
                full_state: true,
                ..Default::default()
            };
            let (_, assembled) = discovery::assemble(None, &push).expect("assembles");
            assert_eq!(assembled, config);
            assert_eq!(assembled.endpoints[0].endpoints[0].address.port(), 19080);
        });
    }

    /// A recompilation keeps the resources that did not change (the same allocation), so pushes
    /// in flight from earlier changes do not keep whole copies of every service alive.
    #[test]
    fn a_recompilation_reuses_the_unchanged_shared_resources() {
        let docs = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v1}\nspec: {labels: {app: reviews, version: v1}, ports: [{port: 9080}]}\n";
        with_control_plane("reuse", docs, |running| {
            let shared = |running: &Running| {
                let r = running.source.resources_for("reviews-v1-0").expect("render");
                r.into_iter()
                    .filter(|r| {
                        r.key.kind == discovery::ResourceType::MeshService
                            || r.key.kind == discovery::ResourceType::EndpointSet
                    })
                    .collect::<Vec<_>>()
            };
            connect_reviews_v1(running, 0);
            let before = shared(running);
            // A second reviews instance: only the reviews endpoint set changes.
            connect_reviews_v1(running, 1);
            let after = shared(running);
            assert_eq!(before.len(), 4, "{before:?}");
            assert_eq!(after.len(), before.len());
            for (b, a) in before.iter().zip(&after) {
                assert_eq!(a.key, b.key);
                let changed =
                    a.key.kind == discovery::ResourceType::EndpointSet && a.key.name.starts_with("reviews.");
                assert_eq!(a.version != b.version, changed, "{}", a.key);
                assert_eq!(Arc::ptr_eq(a, b), !changed, "{}", a.key);
            }
        });
    }
}
