//! What `weft up` will start, decided before anything starts: one instance per workload
//! replica, each with its app's ports, its sidecar's ports, and the environment a sidecar
//! injector would give the app. Pure: ports (and, with `--netns`, each instance's namespace and
//! address) come from functions, so tests are deterministic.
//!
//! On loopback every instance needs ports of its own and the app is told where its sidecar
//! listens. In a network namespace each instance is a pod: the app listens on its declared
//! ports, the sidecar on the same fixed ports everywhere, and the app's environment names its
//! upstreams as Kubernetes would (`http://reviews:9080`), knowing nothing of the mesh.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use weft_api::model::{Mesh, Workload};
use weft_api::proxy_config::{
    Admin, InboundListener, Outbound, OutboundPort, OutboundTrafficPolicy, ProxyConfig, WorkloadInfo,
};

use crate::netns::{self, InstanceNet};

/// Everything to start.
#[derive(Debug, Clone)]
pub struct Plan {
    pub instances: Vec<InstancePlan>,
}

/// One replica of one workload, with its sidecar.
#[derive(Debug, Clone)]
pub struct InstancePlan {
    /// `<workload>-<replica>`, unique in the mesh (namespace added when not `default`).
    pub id: String,
    pub workload: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The command, with a leading `weft` replaced by this executable.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Declared port -> the port this replica's app listens on.
    pub app_ports: BTreeMap<u16, u16>,
    pub sidecar: SidecarPlan,
    /// The instance's own network namespace (`weft up --netns`); `None` on shared loopback.
    pub net: Option<InstanceNet>,
}

/// The sidecar's own addresses.
#[derive(Debug, Clone)]
pub struct SidecarPlan {
    pub admin: u16,
    pub mesh: u16,
    /// The HTTP-proxy port (`HTTP_PROXY`).
    pub http_proxy: u16,
    /// (service short name, namespace, service port, local port) per service port it may reach.
    pub outbound: Vec<(String, String, u16, u16)>,
    /// Declared app port -> the port the sidecar fronts it on for traffic from outside the mesh
    /// (the URL a person opens).
    pub front: BTreeMap<u16, u16>,
}

// === impl Plan ===

impl Plan {
    /// Plans every replica of every workload in `mesh`. `port` hands out free ports; `exe` is
    /// the `weft` executable that replaces a leading `weft` in commands.
    pub fn new(mesh: &Mesh, exe: &Path, mut port: impl FnMut() -> u16) -> anyhow::Result<Plan> {
        Self::build(mesh, exe, &mut |_| Ok(None), &mut port)
    }

    /// Plans every replica into a network namespace of its own: `net(n)` gives the `n`th
    /// instance's namespace and address.
    pub fn in_netns(
        mesh: &Mesh,
        exe: &Path,
        mut net: impl FnMut(usize) -> anyhow::Result<InstanceNet>,
    ) -> anyhow::Result<Plan> {
        Self::build(mesh, exe, &mut |n| net(n).map(Some), &mut || 0)
    }

    fn build(
        mesh: &Mesh,
        exe: &Path,
        net: &mut dyn FnMut(usize) -> anyhow::Result<Option<InstanceNet>>,
        port: &mut dyn FnMut() -> u16,
    ) -> anyhow::Result<Plan> {
        let mut instances = Vec::new();
        for w in &mesh.workloads {
            if w.command.is_empty() {
                anyhow::bail!(
                    "workload {}/{} has no command: weft up cannot start it",
                    w.namespace,
                    w.name
                );
            }
            for replica in 0..w.replicas {
                let net = net(instances.len())?;
                instances.push(plan_instance(mesh, w, replica, exe, net, port)?);
            }
        }
        anyhow::ensure!(
            !instances.is_empty(),
            "the documents declare no Workload: nothing to start"
        );
        Ok(Plan { instances })
    }
}

fn plan_instance(
    mesh: &Mesh,
    w: &Workload,
    replica: u32,
    exe: &Path,
    net: Option<InstanceNet>,
    port: &mut dyn FnMut() -> u16,
) -> anyhow::Result<InstancePlan> {
    let id = if w.namespace == "default" {
        format!("{}-{replica}", w.name)
    } else {
        format!("{}-{replica}.{}", w.name, w.namespace)
    };
    // The app listens on the declared ports of the workload and on the target ports of the
    // services that select it.
    let mut declared: Vec<u16> = w.ports.iter().map(|p| p.port).collect();
    for s in mesh
        .services
        .iter()
        .filter(|s| s.namespace == w.namespace && w.selected_by(&s.selector))
    {
        declared.extend(s.ports.iter().map(|p| p.target_port));
    }
    declared.sort_unstable();
    declared.dedup();

    let mut env = w.env.clone();
    let (app_ports, sidecar) = match &net {
        None => loopback_ports(mesh, &declared, &mut env, port),
        Some(net) => netns_ports(mesh, w, net, &declared, &mut env)?,
    };
    env.insert("WEFT_WORKLOAD".into(), w.name.clone());
    env.insert("WEFT_INSTANCE".into(), id.clone());
    env.insert("WEFT_NAMESPACE".into(), w.namespace.clone());
    if let Some(v) = w.labels.get("version") {
        env.insert("WEFT_VERSION".into(), v.clone());
    }
    if let Some(first) = app_ports.values().next() {
        env.insert("PORT".into(), first.to_string());
    }
    for (declared, actual) in &app_ports {
        env.insert(format!("PORT_{declared}"), actual.to_string());
    }
    // `$(NAME)` in arguments expands from the environment, as in a Kubernetes container spec.
    let mut command: Vec<String> = w.command.iter().map(|arg| expand(arg, &env)).collect();
    if command.first().is_some_and(|c| c == "weft") {
        command[0] = exe.display().to_string();
    }
    Ok(InstancePlan {
        id,
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: w.service_account.clone(),
        labels: w.labels.clone(),
        command,
        env,
        app_ports,
        sidecar,
        net,
    })
}

/// On shared loopback: fresh ports for the app and the sidecar, and the app is told the
/// sidecar's per-service ports and HTTP-proxy port, as a sidecar injector would.
fn loopback_ports(
    mesh: &Mesh,
    declared: &[u16],
    env: &mut BTreeMap<String, String>,
    port: &mut dyn FnMut() -> u16,
) -> (BTreeMap<u16, u16>, SidecarPlan) {
    let app_ports: BTreeMap<u16, u16> = declared.iter().map(|d| (*d, port())).collect();
    let front = declared.iter().map(|d| (*d, port())).collect();
    let mut outbound = Vec::new();
    for s in &mesh.services {
        for (i, p) in s.ports.iter().enumerate() {
            let local = port();
            outbound.push((s.name.clone(), s.namespace.clone(), p.port, local));
            if i == 0 {
                // What a sidecar injector gives the app: one URL per service it may call.
                env.entry(url_var(&s.name))
                    .or_insert_with(|| format!("http://127.0.0.1:{local}"));
            }
        }
    }
    let sidecar = SidecarPlan {
        admin: port(),
        mesh: port(),
        http_proxy: port(),
        outbound,
        front,
    };
    env.insert(
        "HTTP_PROXY".into(),
        format!("http://127.0.0.1:{}", sidecar.http_proxy),
    );
    (app_ports, sidecar)
}

/// In a namespace of its own: the app keeps its declared ports, the sidecar has the fixed
/// ports capture redirects to, and the app's upstreams are service names and service ports —
/// what a Kubernetes app is given. Capture sends its connections through the sidecar.
fn netns_ports(
    mesh: &Mesh,
    w: &Workload,
    net: &InstanceNet,
    declared: &[u16],
    env: &mut BTreeMap<String, String>,
) -> anyhow::Result<(BTreeMap<u16, u16>, SidecarPlan)> {
    let reserved = [
        netns::ADMIN_PORT,
        netns::OUTBOUND_CAPTURE_PORT,
        netns::INBOUND_CAPTURE_PORT,
        netns::MESH_PORT,
    ];
    if let Some(p) = declared.iter().find(|p| reserved.contains(p)) {
        anyhow::bail!(
            "workload {}/{} listens on port {p}, which its sidecar uses in --netns mode \
             (15000, 15001, 15006, 15008): choose another port",
            w.namespace,
            w.name
        );
    }
    for s in &mesh.services {
        if let Some(p) = s.ports.first() {
            let host = if s.namespace == w.namespace {
                s.name.clone()
            } else {
                format!("{}.{}", s.name, s.namespace)
            };
            env.entry(url_var(&s.name))
                .or_insert_with(|| format!("http://{host}:{}", p.port));
        }
    }
    // Kubernetes' downward API gives apps their pod IP; the sidecar hands inbound traffic to
    // the app there (as Istio does), so an app that listens on it or on 0.0.0.0 is reached.
    env.insert("POD_IP".into(), net.ip.to_string());
    let app_ports = declared.iter().map(|d| (*d, *d)).collect();
    let sidecar = SidecarPlan {
        admin: netns::ADMIN_PORT,
        mesh: netns::MESH_PORT,
        http_proxy: netns::OUTBOUND_CAPTURE_PORT,
        outbound: Vec::new(),
        front: BTreeMap::new(),
    };
    Ok((app_ports, sidecar))
}

/// `reviews` -> `REVIEWS_URL`.
fn url_var(service: &str) -> String {
    format!("{}_URL", service.to_ascii_uppercase().replace(['-', '.'], "_"))
}

fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// What `weft up` turns on in every sidecar unless a document says otherwise, as Istio's demo
/// profile does: access logs in the default text format on the sidecar's stdout (its log file,
/// shown by `weft logs --access`), and every trace recorded (spans go to the collector that
/// `OTEL_EXPORTER_OTLP_ENDPOINT` names, which sidecars inherit from `weft up`).
fn up_defaults() -> ProxyConfig {
    use weft_api::proxy_config::{AccessLog, Telemetry, Tracing};
    ProxyConfig {
        telemetry: Telemetry {
            access_logs: Some(vec![AccessLog {
                format: Default::default(),
                path: None,
                mode: Default::default(),
                filter: None,
            }]),
            tracing: Some(Tracing {
                random_sampling_percentage: 100.0,
                ..Tracing::default()
            }),
        },
        ..ProxyConfig::default()
    }
}

// === impl InstancePlan ===

impl InstancePlan {
    /// The sidecar's bootstrap config: what only it knows (addresses, identity); the control
    /// plane pushes services, endpoints and routes.
    pub fn bootstrap(&self) -> ProxyConfig {
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let any = |p: u16| SocketAddr::from(([0, 0, 0, 0], p));
        let workload = WorkloadInfo {
            name: self.workload.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            labels: self.labels.clone(),
            ..WorkloadInfo::default()
        };
        let listeners = |front: bool| {
            self.app_ports
                .iter()
                .map(|(declared, actual)| InboundListener {
                    port: *declared,
                    app: Some(SocketAddr::new(self.ip(), *actual)),
                    protocol: Default::default(),
                    listen: front
                        .then(|| self.sidecar.front.get(declared).map(|p| local(*p)))
                        .flatten(),
                    mtls: None,
                    rate_limit: None,
                })
                .collect()
        };
        if self.net.is_some() {
            // A pod: peers and people reach the namespace's address; capture brings inbound
            // connections to 15006 and the app's outbound ones to 15001. The admin port stays on
            // the namespace's loopback, as in every mode (`ip netns exec NS curl ...` reaches it).
            return ProxyConfig {
                workload,
                admin: Admin {
                    address: local(self.sidecar.admin),
                },
                inbound: weft_api::proxy_config::Inbound {
                    mesh: any(self.sidecar.mesh),
                    capture: Some(any(netns::INBOUND_CAPTURE_PORT)),
                    mtls: Default::default(),
                    authorization: Vec::new(),
                    authentication: Vec::new(),
                    listeners: listeners(false),
                },
                outbound: Outbound {
                    listen: Some(local(self.sidecar.http_proxy)),
                    ports: Vec::new(),
                    traffic_policy: OutboundTrafficPolicy::AllowAny,
                },
                ..up_defaults()
            };
        }
        ProxyConfig {
            workload,
            admin: Admin {
                address: local(self.sidecar.admin),
            },
            inbound: weft_api::proxy_config::Inbound {
                mesh: local(self.sidecar.mesh),
                capture: None,
                mtls: Default::default(),
                authorization: Vec::new(),
                authentication: Vec::new(),
                listeners: listeners(true),
            },
            outbound: Outbound {
                listen: Some(local(self.sidecar.http_proxy)),
                ports: self
                    .sidecar
                    .outbound
                    .iter()
                    .map(|(name, ns, port, localp)| OutboundPort {
                        listen: local(*localp),
                        service: format!("{name}.{ns}"),
                        port: *port,
                    })
                    .collect(),
                traffic_policy: OutboundTrafficPolicy::AllowAny,
            },
            ..up_defaults()
        }
    }

    /// The address this instance's apps and sidecar are reached at from the host.
    pub fn ip(&self) -> std::net::IpAddr {
        match &self.net {
            Some(net) => net.ip.into(),
            None => [127, 0, 0, 1].into(),
        }
    }

    /// The sidecar's admin address: always on loopback; with `--netns`, the loopback of the
    /// instance's namespace (reach it from there: [`crate::netns::connect_in`]).
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sidecar.admin))
    }

    /// Where a person opens the app through its sidecar: the front port on loopback; in a
    /// namespace the app's own port, which inbound capture hands to the sidecar.
    pub fn open_url(&self) -> Option<String> {
        match &self.net {
            Some(net) => self
                .app_ports
                .keys()
                .next()
                .map(|p| format!("http://{}:{p}/", net.ip)),
            None => self
                .sidecar
                .front
                .values()
                .next()
                .map(|p| format!("http://127.0.0.1:{p}/")),
        }
    }

    /// The SPIFFE identity this instance runs as.
    pub fn identity(&self) -> String {
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::resources::{parse_file, Loaded};

    const DOCS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: details}
spec: {selector: {app: details}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec:
  labels: {app: reviews, version: v1}
  serviceAccount: bookinfo-reviews
  ports: [{name: http, port: 9080}]
  command: [weft, demo-app, reviews, --version, v1]
  replicas: 2
";

    fn mesh() -> Mesh {
        let mut loaded = Loaded::default();
        parse_file("m.yaml", DOCS, &mut loaded);
        weft_api::translate::translate(&loaded.documents).mesh
    }

    #[test]
    fn replicas_get_their_own_ports_env_and_bootstrap() {
        let mut next = 20_000;
        let plan = Plan::new(&mesh(), Path::new("/usr/bin/weft"), || {
            next += 1;
            next
        })
        .expect("plan");
        assert_eq!(plan.instances.len(), 2);
        let (a, b) = (&plan.instances[0], &plan.instances[1]);
        assert_eq!((a.id.as_str(), b.id.as_str()), ("reviews-v1-0", "reviews-v1-1"));
        assert_ne!(
            a.app_ports[&9080], b.app_ports[&9080],
            "replicas share 127.0.0.1 on different ports"
        );
        assert_eq!(a.command[0], "/usr/bin/weft");
        assert_eq!(a.env["PORT"], a.app_ports[&9080].to_string());
        assert!(a.env["REVIEWS_URL"].starts_with("http://127.0.0.1:"));
        assert!(a.env["DETAILS_URL"].starts_with("http://127.0.0.1:"));
        assert_eq!(a.env["WEFT_VERSION"], "v1");
        let boot = a.bootstrap();
        assert!(boot.validate().is_empty(), "{:?}", boot.validate());
        assert_eq!(boot.inbound.listeners[0].port, 9080);
        assert_eq!(boot.outbound.ports.len(), 2);
        assert_eq!(
            a.identity(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
    }

    #[test]
    fn in_a_namespace_the_app_keeps_its_ports_and_knows_only_service_names() {
        let net = |n: usize| {
            Ok(InstanceNet {
                netns: format!("weft-test-{n}"),
                ip: std::net::Ipv4Addr::new(10, 233, 1, 2 + n as u8),
                gateway: std::net::Ipv4Addr::new(10, 233, 1, 1),
                veth: format!("wefttestv{n}"),
            })
        };
        let plan = Plan::in_netns(&mesh(), Path::new("/usr/bin/weft"), net).expect("plan");
        let (a, b) = (&plan.instances[0], &plan.instances[1]);
        assert_eq!(a.app_ports[&9080], 9080, "the declared port, as in a pod");
        assert_eq!(b.app_ports[&9080], 9080);
        assert_eq!(a.env["REVIEWS_URL"], "http://reviews:9080");
        assert_eq!(a.env["POD_IP"], "10.233.1.2");
        assert_eq!(b.env["POD_IP"], "10.233.1.3");
        assert!(!a.env.contains_key("HTTP_PROXY"), "{:?}", a.env);
        assert_eq!(a.open_url().as_deref(), Some("http://10.233.1.2:9080/"));
        assert_eq!(a.admin().to_string(), "127.0.0.1:15000", "in its namespace");
        let boot = a.bootstrap();
        assert_eq!(
            boot.admin.address.to_string(),
            "127.0.0.1:15000",
            "admin on loopback"
        );
        assert!(boot.validate().is_empty(), "{:?}", boot.validate());
        assert_eq!(boot.inbound.mesh.to_string(), "0.0.0.0:15008");
        assert_eq!(
            boot.inbound.capture.map(|c| c.to_string()).as_deref(),
            Some("0.0.0.0:15006")
        );
        assert_eq!(
            boot.inbound.listeners[0].app.map(|c| c.to_string()).as_deref(),
            Some("10.233.1.2:9080")
        );
        assert_eq!(
            boot.inbound.listeners[0].listen, None,
            "capture brings outside traffic"
        );
        assert!(
            boot.outbound.ports.is_empty(),
            "no per-service ports: capture finds the service"
        );
    }

    #[test]
    fn in_a_namespace_a_sidecar_port_is_not_an_app_port() {
        let docs = "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: w}\nspec: {labels: {app: w}, ports: [{port: 15001}], command: [x]}\n";
        let mut loaded = Loaded::default();
        parse_file("m.yaml", docs, &mut loaded);
        let mesh = weft_api::translate::translate(&loaded.documents).mesh;
        let net = |_| {
            Ok(InstanceNet {
                netns: "n".into(),
                ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
                gateway: std::net::Ipv4Addr::new(10, 0, 0, 1),
                veth: "v".into(),
            })
        };
        let err = Plan::in_netns(&mesh, Path::new("weft"), net).expect_err("port 15001");
        assert!(err.to_string().contains("port 15001"), "{err}");
    }

    #[test]
    fn arguments_expand_from_the_environment() {
        let env: BTreeMap<String, String> = [("PORT".to_string(), "8080".to_string())].into();
        assert_eq!(expand("--port=$(PORT)", &env), "--port=8080");
        assert_eq!(expand("$(NOPE) $(PORT)", &env), "$(NOPE) 8080");
        assert_eq!(expand("plain", &env), "plain");
    }

    #[test]
    fn a_workload_without_command_is_refused() {
        let docs =
            "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: w}\nspec: {labels: {app: w}}\n";
        let mut loaded = Loaded::default();
        parse_file("m.yaml", docs, &mut loaded);
        let mesh = weft_api::translate::translate(&loaded.documents).mesh;
        let err = Plan::new(&mesh, Path::new("weft"), || 1).expect_err("no command");
        assert!(err.to_string().contains("has no command"), "{err}");
    }
}
