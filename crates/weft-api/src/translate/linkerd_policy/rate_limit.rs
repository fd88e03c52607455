//! Linkerd's `HTTPLocalRateLimitPolicy`: the limits of the Server it targets, on every workload
//! port that Server covers.

use std::collections::BTreeMap;

use crate::finding::{codes, Finding};
use crate::model::{InboundRateLimit, RateLimitTarget};
use crate::proxy_config::{RateLimit, RateLimitOverride};
use crate::resources::linkerd_policy as lp;
use crate::resources::Document;
use crate::translate::core::locate;
use crate::translate::{origin, Translated};

/// Adds the limits of every policy targeting the Server `server` to the ports it covers
/// (`by_port`: port -> workload names).
pub(super) fn attach(
    server: &Document,
    by_port: &BTreeMap<u16, Vec<String>>,
    policies: &[(Document, lp::HttpLocalRateLimitPolicySpec)],
    out: &mut Translated,
) {
    for (doc, spec) in policies.iter().filter(|(doc, spec)| targets(doc, spec, server)) {
        let limit = RateLimit {
            total: spec.total.as_ref().map(|t| t.requests_per_second),
            identity: spec.identity.as_ref().map(|t| t.requests_per_second),
            overrides: spec
                .overrides
                .iter()
                .enumerate()
                .map(|(i, o)| RateLimitOverride {
                    requests_per_second: o.requests_per_second,
                    clients: clients(doc, i, o, out),
                })
                .collect(),
        };
        for (port, names) in by_port {
            out.mesh.inbound_rate_limits.push(InboundRateLimit {
                namespace: server.namespace.clone(),
                target: RateLimitTarget::Workloads {
                    names: names.clone(),
                    port: *port,
                },
                limit: limit.clone(),
                origin: origin(doc),
            });
        }
    }
}

/// A policy whose target is no Server of the documents limits nothing: said so at its targetRef.
pub(super) fn report_missing_servers(
    servers: &[&Document],
    policies: &[(Document, lp::HttpLocalRateLimitPolicySpec)],
    out: &mut Translated,
) {
    for (doc, spec) in policies {
        if !servers.iter().any(|s| targets(doc, spec, s)) {
            out.findings.push(Finding::warning(
                codes::MISSING_POLICY_REF,
                format!(
                    "HTTPLocalRateLimitPolicy {}/{}: targetRef names no Server ({} {}) in its namespace; it limits nothing",
                    doc.namespace,
                    doc.name,
                    spec.target_ref.kind,
                    spec.target_ref.name.as_deref().unwrap_or("")
                ),
                &locate(doc, &["spec", "targetRef"]),
            ));
        }
    }
}

fn targets(doc: &Document, spec: &lp::HttpLocalRateLimitPolicySpec, server: &Document) -> bool {
    let r = &spec.target_ref;
    r.kind == "Server"
        && r.name.as_deref() == Some(server.name.as_str())
        && r.namespace.as_deref().unwrap_or(&doc.namespace) == server.namespace
        && doc.namespace == server.namespace
}

/// `clientRefs` as the identities the proxy matches: `ns/NS/sa/NAME` per ServiceAccount.
fn clients(doc: &Document, i: usize, o: &lp::RateLimitOverride, out: &mut Translated) -> Vec<String> {
    let mut ids = Vec::new();
    for (j, r) in o.client_refs.iter().enumerate() {
        match (r.kind.as_str(), r.name.as_deref()) {
            ("ServiceAccount", Some(name)) => {
                let ns = r.namespace.as_deref().unwrap_or(&doc.namespace);
                ids.push(format!("ns/{ns}/sa/{name}"));
            }
            _ => out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "HTTPLocalRateLimitPolicy {}/{}: a clientRef must name a ServiceAccount; this one matches no client",
                    doc.namespace, doc.name
                ),
                &locate(doc, &["spec", "overrides", &i.to_string(), "clientRefs", &j.to_string()]),
            )),
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use crate::finding::codes;
    use crate::resources::{parse_file, Loaded};
    use crate::translate::translate;

    const DOCS: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: web-v1, namespace: shop}
spec: {labels: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  accessPolicy: all-unauthenticated
---
apiVersion: policy.linkerd.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata: {name: web-rl, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  total: {requestsPerSecond: 100}
  identity: {requestsPerSecond: 20}
  overrides:
  - requestsPerSecond: 50
    clientRefs:
    - {kind: ServiceAccount, name: batch, namespace: ops}
    - {kind: Namespace, name: ops}
";

    #[test]
    fn a_servers_rate_limit_lands_on_the_ports_it_covers() {
        let mut loaded = Loaded::default();
        parse_file("mesh.yaml", DOCS, &mut loaded);
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        let t = translate(&loaded.documents);
        let at: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
        assert_eq!(at, [(codes::SCHEMA, Some(25))], "{:#?}", t.findings);
        let [rl] = t.mesh.inbound_rate_limits.as_slice() else {
            panic!("{:#?}", t.mesh.inbound_rate_limits)
        };
        assert_eq!(rl.namespace, "shop");
        assert_eq!(
            rl.target,
            crate::model::RateLimitTarget::Workloads {
                names: vec!["web-v1".into()],
                port: 8080
            }
        );
        assert_eq!((rl.limit.total, rl.limit.identity), (Some(100), Some(20)));
        assert_eq!(rl.limit.overrides[0].clients, ["ns/ops/sa/batch"]);
        assert!(rl.limit.overrides[0].covers("spiffe://cluster.local/ns/ops/sa/batch"));
        assert!(!rl.limit.overrides[0].covers("spiffe://cluster.local/ns/ops/sa/batch2"));
        assert!(!rl.limit.overrides[0].covers("spiffe://cluster.local/ns/xops/sa/batch"));

        let mut loaded = Loaded::default();
        parse_file(
            "mesh.yaml",
            &DOCS.replace("name: web-http}", "name: web}"),
            &mut loaded,
        );
        let t = translate(&loaded.documents);
        assert!(t.mesh.inbound_rate_limits.is_empty());
        assert!(
            t.findings
                .iter()
                .any(|f| f.code == codes::MISSING_POLICY_REF && f.line == Some(18)),
            "{:#?}",
            t.findings
        );
    }
}
