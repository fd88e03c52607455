//! Checks a parsed `ProxyConfig` can run: every problem at once, each naming its field.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Problem, ProxyConfig};

impl ProxyConfig {
    /// Every reason this config cannot run; empty when it can.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, log) in self.telemetry.access_logs.iter().flatten().enumerate() {
            if let Some(Err(e)) = log.filter.as_deref().map(crate::telemetry::Filter::parse) {
                problems.push(Problem::field(
                    format!("telemetry.accessLogs[{i}].filter"),
                    e.to_string(),
                ));
            }
        }
        if let Some(t) = &self.telemetry.tracing {
            if !(0.0..=100.0).contains(&t.random_sampling_percentage) {
                problems.push(Problem::field(
                    "telemetry.tracing.randomSamplingPercentage",
                    format!("{} is not a percentage (0 to 100)", t.random_sampling_percentage),
                ));
            }
        }
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
                check_fractions(
                    &pr.table,
                    &format!("services[{i}].routes[{j}].table"),
                    &mut problems,
                );
            }
            if let Some(od) = &svc.outlier_detection {
                problems.extend(od.problems(&format!("services[{i}].outlierDetection")));
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
        for (i, rule) in self.inbound.authentication.iter().enumerate() {
            for (field, message) in rule.problems() {
                problems.push(Problem::field(
                    format!("inbound.authentication[{i}].{field}"),
                    message,
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

/// Percentages between 0 and 100 and retry-budget ratios of at least 0, and every one a finite
/// number: JSON, which carries the config to a proxy, has no NaN or infinity (they would arrive
/// as `null`, a different config, or not at all). And a fault's gRPC status is a status name.
fn check_fractions(table: &crate::route::RouteTable, at: &str, problems: &mut Vec<Problem>) {
    let mut grpc_names = Vec::new();
    let mut percent = |field: String, v: f64| {
        if !(0.0..=100.0).contains(&v) {
            problems.push(Problem::field(
                field,
                format!("{v} is not a percentage from 0 to 100"),
            ));
        }
    };
    for (k, rule) in table.rules.iter().enumerate() {
        let p = &rule.policies;
        if let Some(fault) = &p.fault {
            if let Some(v) = fault.delay_percent {
                percent(format!("{at}.rules[{k}].policies.fault.delay_percent"), v);
            }
            if let Some(v) = fault.abort_percent {
                percent(format!("{at}.rules[{k}].policies.fault.abort_percent"), v);
            }
            if let Some(name) = &fault.abort_grpc_status {
                if crate::route::grpc_status_code(name).is_none() {
                    grpc_names.push(Problem::field(
                        format!("{at}.rules[{k}].policies.fault.abort_grpc_status"),
                        format!("{name:?} is not a gRPC status name such as UNAVAILABLE"),
                    ));
                }
            }
        }
        for (m, mirror) in p.mirrors.iter().enumerate() {
            percent(
                format!("{at}.rules[{k}].policies.mirrors[{m}].percent"),
                mirror.percent,
            );
        }
    }
    problems.append(&mut grpc_names);
    let budgets = table
        .rules
        .iter()
        .enumerate()
        .filter_map(|(k, r)| {
            Some((
                format!("{at}.rules[{k}].policies.retry_budget"),
                r.policies.retry_budget.as_ref()?,
            ))
        })
        .chain(
            table
                .profile
                .as_ref()
                .and_then(|p| Some((format!("{at}.profile.retry_budget"), p.retry_budget.as_ref()?))),
        );
    for (field, budget) in budgets {
        if !(budget.ratio.is_finite() && budget.ratio >= 0.0) {
            problems.push(Problem::field(
                format!("{field}.ratio"),
                format!("{} is not a ratio of at least 0", budget.ratio),
            ));
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

    /// A service whose one rule has these policies.
    fn with_policies(policies: &str) -> String {
        format!(
            r#"
services:
  - name: reviews
    ports: [{{port: 9080}}]
    routes:
      - port: 9080
        table:
          rules:
            - origin: {{kind: VirtualService, namespace: default, name: reviews}}
              index: 0
              action: {{forward: [{{service: reviews.default.svc.cluster.local, weight: 1}}]}}
              policies: {policies}
"#
        )
    }

    /// Found by the `proxy_config` fuzz target: `.nan` was accepted, then read back from the
    /// JSON a proxy receives as `null` (a fault injected on every request instead of none).
    #[test]
    fn percentages_and_ratios_are_finite_and_in_range() {
        let good = "{fault: {delay_ms: 5, delay_percent: 0.5, abort_status: 503, abort_grpc_status: UNAVAILABLE, abort_percent: 100}, \
                    mirrors: [{service: a, percent: 0}], retry_budget: {ratio: 2.5, min_per_second: 1, ttl_ms: 10}}";
        ProxyConfig::from_yaml("good.yaml", &with_policies(good)).unwrap_or_else(|e| panic!("{e}"));
        for (bad, field) in [
            (
                "{fault: {delay_ms: 5, delay_percent: .nan}}",
                "fault.delay_percent",
            ),
            (
                "{fault: {abort_status: 503, abort_percent: 100.5}}",
                "fault.abort_percent",
            ),
            (
                "{fault: {abort_grpc_status: Unavailable, abort_percent: 100}}",
                "fault.abort_grpc_status",
            ),
            ("{mirrors: [{service: a, percent: -1}]}", "mirrors[0].percent"),
            (
                "{retry_budget: {ratio: .inf, min_per_second: 1, ttl_ms: 10}}",
                "retry_budget.ratio",
            ),
            (
                "{retry_budget: {ratio: -0.1, min_per_second: 1, ttl_ms: 10}}",
                "retry_budget.ratio",
            ),
        ] {
            let Err(e) = ProxyConfig::from_yaml("bad.yaml", &with_policies(bad)) else {
                panic!("{bad} was accepted");
            };
            let want = format!("services[0].routes[0].table.rules[0].policies.{field}");
            assert_eq!(e.problems[0].field.as_deref(), Some(want.as_str()), "{e}");
        }
    }
}
