//! Finding a running mesh: its control plane's admin address and each sidecar's admin address.
//!
//! ARCHITECTURE.md, "Contracts that users script against": every verb that reads a running mesh
//! takes `--run-dir DIR` (a `weft up` run, default `.weft/run`) or `--control-admin ADDR`. The
//! sidecars' admin addresses are known from the run directory (each sidecar's bootstrap config);
//! the control plane alone does not know them. This is the one place these verbs resolve a
//! mesh, kept small so it can give way to a shared resolver.

use std::net::SocketAddr;

use anyhow::Context as _;

/// Where the mesh is: the one resolution every verb shares (`--run-dir`, `--control-admin`, else
/// the `weft up` of the current directory).
pub use crate::cmd::find_mesh::MeshArgs;

/// A running mesh, as far as it could be found.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub control_admin: Option<SocketAddr>,
    /// Every sidecar of the run, in the run's order.
    pub proxies: Vec<ProxyAdmin>,
}

/// One sidecar and where its admin endpoint listens.
#[derive(Debug, Clone)]
pub struct ProxyAdmin {
    pub instance: String,
    pub workload: String,
    pub namespace: String,
    pub admin: SocketAddr,
}

/// Reads the run directory (when there is a run) and the flags.
pub fn locate(args: &MeshArgs) -> anyhow::Result<Mesh> {
    let run = args.run()?;
    // The control plane as `weft status` finds it: the flag, else the running `weft up`'s, else a
    // `weft control` on its default address; None when there is none (the sidecar views still
    // work from the run directory).
    let control_admin = match args.control_admin {
        Some(addr) => Some(addr),
        None => args.find().ok().map(|found| found.control_admin),
    };
    let record = run.record;
    let mut proxies = Vec::new();
    for inst in record.iter().flat_map(|r| &r.instances) {
        let path = run.dir.sidecar_config(&inst.id);
        let boot: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?;
        let admin = boot["admin"]["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("{}: no admin.address", path.display()))?;
        proxies.push(ProxyAdmin {
            instance: inst.id.clone(),
            workload: inst.workload.clone(),
            namespace: boot["workload"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string(),
            admin,
        });
    }
    // `weft up --netns` puts every admin port on its own namespace's loopback: one address,
    // many sidecars, none reachable from here.
    let mut addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.admin).collect();
    addrs.sort();
    addrs.dedup();
    if addrs.len() < proxies.len() {
        anyhow::bail!(
            "the sidecars of the run in {} listen for admin inside their network namespaces (`weft up --netns`); \
             reading them from the host is not built yet: use `sudo ip netns exec NETNS curl http://127.0.0.1:15000/proxy_config`",
            args.run_dir().display()
        );
    }
    Ok(Mesh {
        control_admin,
        proxies,
    })
}

impl Mesh {
    /// The control plane's admin address, or a clear error.
    pub fn control(&self, args: &MeshArgs) -> anyhow::Result<SocketAddr> {
        self.control_admin.with_context(|| {
            format!(
                "no running mesh found: no `weft up` run in {} and no --control-admin given",
                args.run_dir().display()
            )
        })
    }

    /// The sidecars, or a clear error when none is known.
    pub fn sidecars(&self, args: &MeshArgs) -> anyhow::Result<&[ProxyAdmin]> {
        anyhow::ensure!(
            !self.proxies.is_empty(),
            "no sidecars found: no `weft up` run in {} (the sidecars' admin addresses come from the run directory)",
            args.run_dir().display()
        );
        Ok(&self.proxies)
    }

    /// A sidecar named by instance id (`reviews-v1-0`), by workload (its first instance), or an
    /// admin address given directly (`127.0.0.1:15000`, for a proxy outside any run).
    pub fn sidecar(&self, args: &MeshArgs, name: &str) -> anyhow::Result<ProxyAdmin> {
        if let Ok(admin) = name.parse::<SocketAddr>() {
            return Ok(ProxyAdmin {
                instance: name.to_string(),
                workload: String::new(),
                namespace: String::new(),
                admin,
            });
        }
        let (bare, ns) = match name.split_once('.') {
            Some((n, ns)) => (n, Some(ns)),
            None => (name, None),
        };
        let all = self.sidecars(args)?;
        let in_ns = |p: &&ProxyAdmin| ns.is_none_or(|ns| p.namespace == ns);
        all.iter()
            .filter(in_ns)
            .find(|p| p.instance == bare)
            .or_else(|| all.iter().filter(in_ns).find(|p| p.workload == bare))
            .cloned()
            .with_context(|| {
                let known: Vec<&str> = all.iter().map(|p| p.instance.as_str()).collect();
                format!(
                    "no sidecar {name:?} in this mesh; its sidecars: {}",
                    known.join(", ")
                )
            })
    }
}

/// GETs `path` from an admin endpoint and parses the JSON answer.
pub fn get_json(admin: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let body =
        crate::cmd::find_mesh::http_get(admin, path).with_context(|| format!("GET http://{admin}{path}"))?;
    serde_json::from_str(&body).with_context(|| format!("http://{admin}{path} is not JSON"))
}
