//! Checks a parsed `ProxyConfig` can run: every problem at once, each naming its field.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Problem, ProxyConfig};

impl ProxyConfig {
    /// Every reason this config cannot run; empty when it can.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut services = HashSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            if svc.name.is_empty() || svc.name.contains('.') {
                problems.push(Problem::field(
                    format!("services[{i}].name"),
                    format!("'{}' must be a short name without dots", svc.name),
                ));
            }
            if !services.insert((svc.name.as_str(), svc.namespace.as_str())) {
                problems.push(Problem::field(
                    format!("services[{i}]"),
                    format!("service {}.{} is declared twice", svc.name, svc.namespace),
                ));
            }
            if svc.ports.is_empty() {
                problems.push(Problem::field(
                    format!("services[{i}].ports"),
                    "a service needs at least one port",
                ));
            }
            for (j, pr) in svc.routes.iter().enumerate() {
                if let Err(e) = crate::route::CompiledTable::compile(&pr.table, &svc.fqdn()) {
                    problems.push(Problem::field(
                        format!("services[{i}].routes[{j}]"),
                        e.to_string(),
                    ));
                }
            }
            let mut ports = HashSet::new();
            for (j, p) in svc.ports.iter().enumerate() {
                if !ports.insert(p.port) {
                    problems.push(Problem::field(
                        format!("services[{i}].ports[{j}]"),
                        format!("port {} twice", p.port),
                    ));
                }
            }
        }
        for (i, set) in self.endpoints.iter().enumerate() {
            let svc = self
                .services
                .iter()
                .find(|s| s.name == set.service && s.namespace == set.namespace);
            match svc {
                None => problems.push(Problem::field(
                    format!("endpoints[{i}].service"),
                    format!("no service {}.{} in services", set.service, set.namespace),
                )),
                Some(svc) if !svc.ports.iter().any(|p| p.port == set.port) => problems.push(Problem::field(
                    format!("endpoints[{i}].port"),
                    format!("service {} has no port {}", set.service, set.port),
                )),
                Some(_) => {}
            }
        }
        // A per-service port may name a service the control plane has not pushed yet (it is
        // resolved per connection); one naming a port the service does not have is a mistake.
        for (i, p) in self.outbound.ports.iter().enumerate() {
            if self
                .find_service(&p.service)
                .is_some_and(|s| !s.ports.iter().any(|sp| sp.port == p.port))
            {
                problems.push(Problem::field(
                    format!("outbound.ports[{i}]"),
                    format!("no service port {}:{}", p.service, p.port),
                ));
            }
        }
        let mut app_ports = HashSet::new();
        for (i, l) in self.inbound.listeners.iter().enumerate() {
            if !app_ports.insert(l.port) {
                problems.push(Problem::field(
                    format!("inbound.listeners[{i}].port"),
                    format!("port {} twice", l.port),
                ));
            }
        }
        self.check_addresses_unique(&mut problems);
        if self.limits.max_connections == 0 {
            problems.push(Problem::field("limits.maxConnections", "must be at least 1"));
        }
        if self.limits.max_header_bytes < 8192 {
            problems.push(Problem::field("limits.maxHeaderBytes", "must be at least 8192"));
        }
        problems
    }

    /// Finds a service by `name`, `name.namespace` or its fully qualified name; a bare name is
    /// looked up in the workload's namespace.
    pub fn find_service(&self, name: &str) -> Option<&super::MeshService> {
        let (short, ns) = split_host(name, &self.workload.namespace)?;
        self.services
            .iter()
            .find(|s| s.name == short && s.namespace == ns)
    }

    fn check_addresses_unique(&self, problems: &mut Vec<Problem>) {
        let mut seen: HashSet<SocketAddr> = HashSet::new();
        let mut check = |field: String, addr: SocketAddr| {
            if addr.port() != 0 && !seen.insert(addr) {
                problems.push(Problem::field(
                    field,
                    format!("address {addr} is used by two listeners"),
                ));
            }
        };
        check("admin.address".into(), self.admin.address);
        check("inbound.mesh".into(), self.inbound.mesh);
        if let Some(a) = self.inbound.capture {
            check("inbound.capture".into(), a);
        }
        if let Some(a) = self.outbound.listen {
            check("outbound.listen".into(), a);
        }
        for (i, p) in self.outbound.ports.iter().enumerate() {
            check(format!("outbound.ports[{i}].listen"), p.listen);
        }
        for (i, l) in self.inbound.listeners.iter().enumerate() {
            if let Some(a) = l.listen {
                check(format!("inbound.listeners[{i}].listen"), a);
            }
        }
    }
}

/// Splits a mesh host name into (service, namespace): `reviews` (in `default_ns`),
/// `reviews.ns`, `reviews.ns.svc`, `reviews.ns.svc.cluster.local`. None for other names.
pub fn split_host<'a>(host: &'a str, default_ns: &'a str) -> Option<(&'a str, &'a str)> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut parts = host.split('.');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let Some(ns) = parts.next() else {
        return Some((name, default_ns));
    };
    let rest: Vec<&str> = parts.collect();
    let domain: Vec<&str> = super::CLUSTER_DOMAIN.split('.').collect();
    let ok = match rest.as_slice() {
        [] => true,
        ["svc"] => true,
        ["svc", tail @ ..] => tail == domain.as_slice(),
        _ => false,
    };
    ok.then_some((name, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(split_host("reviews", "default"), Some(("reviews", "default")));
        assert_eq!(split_host("reviews.shop", "default"), Some(("reviews", "shop")));
        assert_eq!(split_host("reviews.shop.svc", "x"), Some(("reviews", "shop")));
        assert_eq!(
            split_host("reviews.shop.svc.cluster.local", "x"),
            Some(("reviews", "shop"))
        );
        assert_eq!(
            split_host("reviews.shop.svc.cluster.local.", "x"),
            Some(("reviews", "shop"))
        );
        assert_eq!(split_host("www.example.com", "x"), None);
        assert_eq!(split_host("", "x"), None);
    }
}
