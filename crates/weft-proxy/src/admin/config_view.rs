//! `/proxy_config`: the proxy's compiled configuration as `weft proxy-config` shows it (the
//! shape of `istioctl proxy-config`): listeners, services, routes, endpoints with their live
//! balancer state, and the workload certificate (its identity and expiry only: no key, no PEM).
//!
//! `/config_dump` stays the config exactly as received; this view adds what only the running
//! proxy knows (endpoint state, the certificate) and lays the config out by kind. Each object
//! may gain fields (an endpoint's `state` grows with outlier ejection); names do not change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde_json::{json, Value};
use weft_api::proxy_config::ProxyConfig;

use crate::balance::EndpointState;
use crate::config::Shared;

/// The whole view at `now` (wall clock for the certificate, tokio's clock for endpoint state).
pub fn proxy_config_json(shared: &Shared, now: SystemTime) -> Value {
    let snapshot = shared.snapshot.load();
    let config = &snapshot.config;
    let w = &config.workload;
    json!({
        "workload": {
            "name": w.name,
            "namespace": w.namespace,
            "serviceAccount": w.service_account,
            "labels": w.labels,
        },
        "listeners": listeners(config),
        "services": services(config),
        "routes": routes(config),
        "endpoints": endpoints(shared, config),
        "secrets": secrets(shared, now),
    })
}

/// Every address this proxy accepts on, and what it does with what arrives there.
fn listeners(config: &ProxyConfig) -> Vec<Value> {
    let inbound = &config.inbound;
    let mut out = vec![json!({
        "name": "mesh",
        "direction": "inbound",
        "address": inbound.mesh,
        "mtls": inbound.mtls,
        "note": "traffic from other proxies (mTLS HTTP/2, CONNECT for TCP)",
    })];
    if let Some(capture) = inbound.capture {
        out.push(json!({
            "name": "inbound-capture",
            "direction": "inbound",
            "address": capture,
            "mtls": inbound.mtls,
        }));
    }
    for l in &inbound.listeners {
        out.push(json!({
            "name": format!("inbound|{}", l.port),
            "direction": "inbound",
            "address": l.listen,
            "port": l.port,
            "app": l.app.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], l.port))),
            "protocol": l.protocol,
            "mtls": l.mtls.unwrap_or(inbound.mtls),
        }));
    }
    if let Some(listen) = config.outbound.listen {
        out.push(json!({
            "name": "outbound",
            "direction": "outbound",
            "address": listen,
            "trafficPolicy": config.outbound.traffic_policy,
            "note": "HTTP proxy (Host names the service) and captured connections",
        }));
    }
    for p in &config.outbound.ports {
        out.push(json!({
            "name": format!("outbound|{}|{}", p.port, p.service),
            "direction": "outbound",
            "address": p.listen,
            "service": p.service,
            "port": p.port,
        }));
    }
    out.push(json!({
        "name": "admin",
        "direction": "admin",
        "address": config.admin.address,
    }));
    out
}

fn services(config: &ProxyConfig) -> Vec<Value> {
    config
        .services
        .iter()
        .map(|s| {
            json!({
                "fqdn": s.fqdn(),
                "name": s.name,
                "namespace": s.namespace,
                "vip": s.vip,
                "ports": s.ports,
                "loadBalancer": s.load_balancer,
                "routedPorts": s.routes.iter().map(|r| r.port).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Each service port's route table as compiled from the documents: the rules in the order the
/// proxy tries them, with where each came from.
fn routes(config: &ProxyConfig) -> Vec<Value> {
    config
        .services
        .iter()
        .flat_map(|s| {
            s.routes.iter().map(move |r| {
                json!({
                    "service": s.fqdn(),
                    "port": r.port,
                    "rules": r.table.rules,
                    "profile": r.table.profile,
                })
            })
        })
        .collect()
}

/// Every endpoint set with each endpoint's balancer state.
fn endpoints(shared: &Shared, config: &ProxyConfig) -> Vec<Value> {
    let now = tokio::time::Instant::now();
    let lb: HashMap<String, _> = config
        .services
        .iter()
        .map(|s| (s.fqdn(), s.load_balancer))
        .collect();
    config
        .endpoints
        .iter()
        .map(|set| {
            let fqdn = ProxyConfig::fqdn(&set.service, &set.namespace);
            let balancer = shared
                .balancers
                .get_subset(&fqdn, set.port, set.subset.as_deref());
            let states: HashMap<SocketAddr, &EndpointState> = balancer
                .iter()
                .flat_map(|b| b.slots())
                .map(|slot| (slot.endpoint.address, slot.state.as_ref()))
                .collect();
            let endpoints: Vec<Value> = set
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "address": e.address,
                        "meshPort": e.mesh_port,
                        "weight": e.weight,
                        "workload": e.workload,
                        "identity": e.identity,
                        "labels": e.labels,
                        "state": states.get(&e.address).map(|s| endpoint_state(s, now)),
                    })
                })
                .collect();
            json!({
                "service": fqdn,
                "port": set.port,
                "subset": set.subset,
                "loadBalancer": lb.get(&fqdn),
                "endpoints": endpoints,
            })
        })
        .collect()
}

/// What the balancer has learnt of one endpoint. An object so it can grow (outlier ejection).
fn endpoint_state(state: &EndpointState, now: tokio::time::Instant) -> Value {
    json!({
        "inFlight": state.in_flight(),
        "rttEstimateMs": state.rtt_estimate(now).as_secs_f64() * 1e3,
        "unreachable": state.is_unreachable(now),
    })
}

/// The workload certificate: who it says this proxy is and when it expires. Never the key.
fn secrets(shared: &Shared, now: SystemTime) -> Vec<Value> {
    let Some(cell) = shared.identity.as_ref() else {
        return Vec::new();
    };
    let Some(creds) = cell.load_full() else {
        return vec![json!({ "name": "default", "state": "awaiting a certificate" })];
    };
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let left = creds.not_after.duration_since(now).map_or(0, |d| d.as_secs());
    vec![json!({
        "name": "default",
        "state": if left > 0 { "valid" } else { "expired" },
        "spiffeId": creds.spiffe_id,
        "notAfter": unix(creds.not_after),
        "expiresInSeconds": left,
        "trustBundleRoots": creds.trust_bundle.len(),
        "trustDomain": creds.spiffe_id.strip_prefix("spiffe://").and_then(|r| r.split('/').next()),
    })]
}
