//! What `weft up` will start, decided before anything starts: one instance per workload
//! replica, each with its app's ports, its sidecar's ports, and the environment a sidecar
//! injector would give the app. Pure: ports come from a function, so tests are deterministic.

use std::collections::BTreeMap;
use std::path::Path;

use weft_api::model::{Mesh, Workload};
use weft_api::proxy_config::{
    Admin, InboundListener, Outbound, OutboundPort, OutboundTrafficPolicy, ProxyConfig, WorkloadInfo,
};

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
                instances.push(plan_instance(mesh, w, replica, exe, &mut port));
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
    port: &mut impl FnMut() -> u16,
) -> InstancePlan {
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
    let app_ports: BTreeMap<u16, u16> = declared.iter().map(|d| (*d, port())).collect();
    let front = declared.iter().map(|d| (*d, port())).collect();

    let mut outbound = Vec::new();
    let mut env = w.env.clone();
    for s in &mesh.services {
        for (i, p) in s.ports.iter().enumerate() {
            let local = port();
            outbound.push((s.name.clone(), s.namespace.clone(), p.port, local));
            if i == 0 {
                // What a sidecar injector gives the app: one URL per service it may call.
                let var = format!("{}_URL", s.name.to_ascii_uppercase().replace(['-', '.'], "_"));
                env.entry(var)
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
    InstancePlan {
        id,
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        service_account: w.service_account.clone(),
        labels: w.labels.clone(),
        command,
        env,
        app_ports,
        sidecar,
    }
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

// === impl InstancePlan ===

impl InstancePlan {
    /// The sidecar's bootstrap config: what only it knows (addresses, identity); the control
    /// plane pushes services, endpoints and routes.
    pub fn bootstrap(&self) -> ProxyConfig {
        let local = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        ProxyConfig {
            workload: WorkloadInfo {
                name: self.workload.clone(),
                namespace: self.namespace.clone(),
                service_account: self.service_account.clone(),
                labels: self.labels.clone(),
            },
            admin: Admin {
                address: local(self.sidecar.admin),
            },
            inbound: weft_api::proxy_config::Inbound {
                mesh: local(self.sidecar.mesh),
                capture: None,
                mtls: Default::default(),
                authorization: Vec::new(),
                listeners: self
                    .app_ports
                    .iter()
                    .map(|(declared, actual)| InboundListener {
                        port: *declared,
                        app: Some(local(*actual)),
                        protocol: Default::default(),
                        listen: self.sidecar.front.get(declared).map(|p| local(*p)),
                        mtls: None,
                    })
                    .collect(),
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
            ..ProxyConfig::default()
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
