//! The model, plus what the registry knows, compiled into the resources a proxy runs on.
//!
//! Pure: no sockets, no tasks, no clock. The same mesh and registry give byte-identical JSON
//! (services sorted by name, ports by number, endpoint sets by port then subset, endpoints by
//! address), so the push layer can diff configs and send only what changed.
//!
//! Each service is compiled once ([`compile_services`]) and shared by every proxy that sees it
//! ([`compile_with`]): the work grows with services + proxies, never services x proxies
//! (shared/ARCHITECTURE.md, "What travels between the planes").
//!
//! What a compiled [`ProxyConfig`] leaves at its defaults, for the launcher (`weft up`,
//! `weft proxy`) to set from flags: `admin`, `limits`, `inbound.mesh`, `inbound.capture`,
//! `inbound.listeners[].listen`, `outbound` (its listen address, per-service ports and traffic
//! policy). Those are facts about the host, not about the mesh.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use weft_api::model::{Mesh, RateLimitTarget, Service, Workload};
use weft_api::proxy_config::{
    Endpoint, EndpointSet, InboundListener, MeshService, PortRoutes, Protocol, ProxyConfig, ServicePort,
    WorkloadInfo,
};
use weft_api::route::CompiledTable;

use crate::registry::{Instance, Registry};

/// The proxy a config is compiled for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRef {
    /// The registry id of the instance the proxy stands beside.
    pub instance_id: String,
}

/// A proxy's config and what went wrong on the way (each error left its part out; nothing
/// panics and nothing stops the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub config: ProxyConfig,
    pub errors: Vec<String>,
}

/// Every service compiled once, shared by every proxy: the input of [`compile_with`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SharedServices {
    /// Sorted by fully qualified name.
    pub services: Vec<CompiledService>,
    /// Services left out (defined twice, without ports).
    pub errors: Vec<String>,
}

/// One service compiled once, shared by every proxy that sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledService {
    pub service: MeshService,
    /// Per service port: the whole service (`subset: None`), then each DestinationRule subset.
    pub endpoints: Vec<EndpointSet>,
    /// Route tables that did not compile (that port falls back to no rules).
    pub errors: Vec<String>,
}

/// Compiles the config of one proxy. To compile many, call [`compile_services`] once and
/// [`compile_with`] per proxy.
pub fn compile(mesh: &Mesh, registry: &mut Registry, proxy: &ProxyRef) -> Compiled {
    let shared = compile_services(mesh, registry);
    compile_with(mesh, registry, &shared, proxy)
}

/// Every service of the mesh with its VIP (allocated now if new), ports, load balancer, route
/// tables and endpoint sets, sorted by fully qualified name.
pub fn compile_services(mesh: &Mesh, registry: &mut Registry) -> SharedServices {
    let mut services: Vec<&Service> = mesh.services.iter().collect();
    services.sort_by_cached_key(|s| s.fqdn());
    let mut out: Vec<CompiledService> = Vec::with_capacity(services.len());
    let mut errors = Vec::new();
    for svc in services {
        let fqdn = svc.fqdn();
        if out.last().is_some_and(|prev| prev.service.fqdn() == fqdn) {
            // Two documents define one service: the first (in document order) wins.
            errors.push(format!(
                "service {fqdn}: defined twice ({} {}/{} ignored)",
                svc.origin.kind, svc.origin.namespace, svc.origin.name
            ));
            continue;
        }
        if svc.ports.is_empty() {
            // A proxy refuses a service without ports; leave it out rather than the whole config.
            errors.push(format!(
                "service {fqdn} ({} {}/{}): no ports; left out",
                svc.origin.kind, svc.origin.namespace, svc.origin.name
            ));
            continue;
        }
        let vip = registry.vip_for(&fqdn);
        out.push(compile_service(mesh, registry, svc, &fqdn, IpAddr::V4(vip)));
    }
    SharedServices {
        services: out,
        errors,
    }
}

fn compile_service(
    mesh: &Mesh,
    registry: &Registry,
    svc: &Service,
    fqdn: &str,
    vip: IpAddr,
) -> CompiledService {
    let mut errors = Vec::new();
    let mut ports = svc.ports.clone();
    ports.sort_by_key(|p| p.port);
    ports.dedup_by_key(|p| p.port);

    let mut routes = Vec::new();
    for p in &ports {
        let table = mesh.route_table(fqdn, p.port);
        if table.is_empty() {
            continue;
        }
        match CompiledTable::compile(&table, fqdn) {
            Ok(_) => routes.push(PortRoutes { port: p.port, table }),
            Err(e) => errors.push(format!(
                "service {fqdn} port {}: {e}; serving it without routes",
                p.port
            )),
        }
    }

    let policy = mesh.destination(fqdn);
    let service = MeshService {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        vip: Some(vip),
        ports: ports
            .iter()
            .map(|p| ServicePort {
                port: p.port,
                name: p.name.clone(),
                protocol: p.protocol,
            })
            .collect(),
        load_balancer: policy.and_then(|d| d.load_balancer).unwrap_or_default(),
        outlier_detection: mesh.outlier_detection(fqdn).map(|o| o.settings.clone()),
        connection_pool: policy.and_then(|d| d.connection_pool.clone()),
        routes,
    };

    // The instances behind the service: same namespace, labels matching the selector.
    let members: Vec<&Instance> = registry
        .instances()
        .filter(|i| i.namespace == svc.namespace && selects(&svc.selector, &i.labels))
        .collect();
    let mut subsets: Vec<_> = policy.map(|d| d.subsets.iter().collect()).unwrap_or_default();
    subsets.sort_by(|a, b| a.name.cmp(&b.name));
    let mut endpoints = Vec::new();
    for p in &ports {
        let set = |subset: Option<&String>, labels: Option<&BTreeMap<String, String>>| EndpointSet {
            service: svc.name.clone(),
            namespace: svc.namespace.clone(),
            port: p.port,
            subset: subset.cloned(),
            endpoints: endpoints_of(
                registry,
                members
                    .iter()
                    .copied()
                    .filter(|i| labels.is_none_or(|l| l.iter().all(|(k, v)| i.labels.get(k) == Some(v)))),
                p.target_port,
            ),
        };
        endpoints.push(set(None, None));
        for s in &subsets {
            endpoints.push(set(Some(&s.name), Some(&s.labels)));
        }
    }

    CompiledService {
        service,
        endpoints,
        errors,
    }
}

/// One endpoint per instance that has `target_port`, sorted by address.
fn endpoints_of<'a>(
    registry: &Registry,
    instances: impl Iterator<Item = &'a Instance>,
    target_port: u16,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = instances
        .filter_map(|i| {
            let actual = *i.app_ports.get(&target_port)?;
            Some(Endpoint {
                address: SocketAddr::new(i.ip, actual),
                mesh_port: i.mesh_port,
                weight: 1,
                labels: i.labels.clone(),
                workload: Some(i.workload.clone()),
                // Only a sidecar presents an identity; a bare endpoint has none to check.
                identity: i.mesh_port.map(|_| registry.identity_of(i)),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.address, a.mesh_port, &a.workload).cmp(&(b.address, b.mesh_port, &b.workload)));
    out
}

/// Kubernetes selector semantics: every pair present; an empty selector picks nothing.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The config of one proxy from services compiled once by [`compile_services`].
pub fn compile_with(mesh: &Mesh, registry: &Registry, shared: &SharedServices, proxy: &ProxyRef) -> Compiled {
    let mut compiled = compile_local(mesh, registry, proxy);
    let mut errors: Vec<String> = shared.errors.clone();
    errors.extend(shared.services.iter().flat_map(|s| s.errors.iter().cloned()));
    errors.append(&mut compiled.errors);
    compiled.errors = errors;
    // Every service for now; later, only those the proxy's identity may see.
    for s in &shared.services {
        compiled.config.services.push(s.service.clone());
        compiled.config.endpoints.extend(s.endpoints.iter().cloned());
    }
    compiled
}

/// The part of a proxy's config that is its own (workload, inbound listeners), without the
/// services and endpoints every proxy shares: a push layer can serialize those once.
pub fn compile_local(mesh: &Mesh, registry: &Registry, proxy: &ProxyRef) -> Compiled {
    let mut errors: Vec<String> = Vec::new();
    let mut config = ProxyConfig::default();

    let Some(instance) = registry.instance(&proxy.instance_id) else {
        errors.push(format!(
            "instance {:?} is not registered: no workload, no inbound listeners",
            proxy.instance_id
        ));
        return Compiled { config, errors };
    };
    let workload = mesh
        .workloads
        .iter()
        .find(|w| w.name == instance.workload && w.namespace == instance.namespace);
    match workload {
        Some(w) => {
            config.workload = WorkloadInfo {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                service_account: w.service_account.clone(),
                labels: w.labels.clone(),
                tap_disabled: w.tap_disabled,
            };
        }
        None => {
            errors.push(format!(
                "instance {:?}: workload {}/{} is in no document; using what the instance registered",
                instance.id, instance.namespace, instance.workload
            ));
            config.workload = WorkloadInfo {
                name: instance.workload.clone(),
                namespace: instance.namespace.clone(),
                service_account: instance.service_account.clone(),
                labels: instance.labels.clone(),
                tap_disabled: false,
            };
        }
    }
    config.inbound.listeners = inbound_listeners(mesh, workload, instance);
    // PeerAuthentication, AuthorizationPolicy and RequestAuthentication for this workload.
    let (ns, labels) = (config.workload.namespace.clone(), config.workload.labels.clone());
    let (mtls, port_mtls) = weft_api::authz::mtls_for(mesh, &ns, &labels);
    config.inbound.mtls = mtls;
    for l in &mut config.inbound.listeners {
        l.mtls = port_mtls.get(&l.port).copied();
    }
    config.inbound.authorization = weft_api::authz::policies_for(mesh, &ns, &config.workload.name, &labels);
    config.inbound.authentication = weft_api::authz::authentications_for(mesh, &ns, &labels);
    config.telemetry = weft_api::telemetry::for_workload(mesh, &ns, &labels);
    Compiled { config, errors }
}

/// One listener per declared app port: the workload's own ports and the target ports of the
/// services selecting it. The app's address is the instance's IP and the port it really
/// listens on (`app_ports`; the declared port when the instance names none).
fn inbound_listeners(mesh: &Mesh, workload: Option<&Workload>, instance: &Instance) -> Vec<InboundListener> {
    // Declared port -> protocol; a workload's own declaration wins, then the first service
    // (in name order) that names a protocol.
    let mut ports: BTreeMap<u16, Protocol> = BTreeMap::new();
    if let Some(w) = workload {
        for p in &w.ports {
            let e = ports.entry(p.port).or_insert(Protocol::Auto);
            if *e == Protocol::Auto {
                *e = p.protocol;
            }
        }
    }
    let labels = workload.map_or(&instance.labels, |w| &w.labels);
    let mut services: Vec<&Service> = mesh
        .services
        .iter()
        .filter(|s| s.namespace == instance.namespace && selects(&s.selector, labels))
        .collect();
    services.sort_by_cached_key(|s| s.fqdn());
    for s in services {
        for p in &s.ports {
            let e = ports.entry(p.target_port).or_insert(Protocol::Auto);
            if *e == Protocol::Auto {
                *e = p.protocol;
            }
        }
    }
    if workload.is_none() {
        for port in instance.app_ports.keys() {
            ports.entry(*port).or_insert(Protocol::Auto);
        }
    }
    ports
        .into_iter()
        .map(|(port, protocol)| InboundListener {
            port,
            app: Some(SocketAddr::new(
                instance.ip,
                instance.app_ports.get(&port).copied().unwrap_or(port),
            )),
            protocol,
            listen: None,
            mtls: None,
            rate_limit: rate_limit_of(mesh, workload, instance, port),
        })
        .collect()
}

/// The local rate limit on `port` of this workload: a Linkerd Server's, or a Weft
/// RateLimitPolicy's on the workload or a service selecting it (the first policy loaded wins).
fn rate_limit_of(
    mesh: &Mesh,
    workload: Option<&Workload>,
    instance: &Instance,
    port: u16,
) -> Option<weft_api::proxy_config::RateLimit> {
    let w = workload?;
    let covers = |target: &RateLimitTarget| match target {
        RateLimitTarget::Workloads { names, port: p } => *p == port && names.contains(&w.name),
        RateLimitTarget::Workload { name, port: p } => *name == w.name && p.is_none_or(|p| p == port),
        RateLimitTarget::Service { name, port: p } => mesh
            .services
            .iter()
            .find(|s| s.name == *name && s.namespace == instance.namespace)
            .filter(|s| selects(&s.selector, &w.labels))
            .is_some_and(|s| {
                s.ports
                    .iter()
                    .any(|sp| sp.target_port == port && p.is_none_or(|p| p == sp.port))
            }),
    };
    mesh.inbound_rate_limits
        .iter()
        .find(|r| r.namespace == instance.namespace && covers(&r.target))
        .map(|r| r.limit.clone())
}

#[cfg(test)]
mod tests;
