//! Weft's `RateLimitPolicy` (`weft.dev/v1alpha1`): local rate limits on a Service's or a
//! Workload's ports, for meshes written in Istio's dialect (Linkerd's own
//! `HTTPLocalRateLimitPolicy` is read in `linkerd_policy`). Both become the model's
//! `InboundRateLimit`, enforced by the target workloads' proxies.

use super::core::{locate, not_implemented};
use super::{origin, Translated};
use crate::finding::{codes, Finding};
use crate::model::{InboundRateLimit, RateLimitTarget};
use crate::proxy_config::{RateLimit, RateLimitOverride};
use crate::resources::core::RateLimitPolicySpec;
use crate::resources::Document;

pub(super) fn rate_limit_policy(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: RateLimitPolicySpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    let (name, port) = (spec.target_ref.name.clone(), spec.port);
    let target = match spec.target_ref.kind.as_str() {
        "Service" => RateLimitTarget::Service { name, port },
        "Workload" => RateLimitTarget::Workload { name, port },
        other => {
            out.findings.push(not_implemented(
                doc,
                &["spec", "targetRef", "kind"],
                &format!(
                    "a rate limit on kind {other} (Service and Workload targets are); it is not applied"
                ),
            ));
            return;
        }
    };
    let mut overrides = Vec::new();
    for (i, o) in spec.overrides.iter().enumerate() {
        for (j, c) in o.clients.iter().enumerate() {
            if !(c.starts_with("spiffe://") || is_service_account_path(c)) {
                out.findings.push(Finding::error(
                    codes::SCHEMA,
                    format!(
                        "RateLimitPolicy {}/{}: client {c:?} is neither a SPIFFE ID nor ns/NAMESPACE/sa/NAME; it matches no caller",
                        doc.namespace, doc.name
                    ),
                    &locate(doc, &["spec", "overrides", &i.to_string(), "clients", &j.to_string()]),
                ));
            }
        }
        overrides.push(RateLimitOverride {
            requests_per_second: o.requests_per_second,
            clients: o.clients.clone(),
        });
    }
    out.mesh.inbound_rate_limits.push(InboundRateLimit {
        namespace: doc.namespace.clone(),
        target,
        limit: RateLimit {
            total: spec.total.map(|t| t.requests_per_second),
            identity: spec.identity.map(|t| t.requests_per_second),
            overrides,
        },
        origin: origin(doc),
    });
}

fn is_service_account_path(c: &str) -> bool {
    let parts: Vec<&str> = c.split('/').collect();
    matches!(parts.as_slice(), ["ns", ns, "sa", sa] if !ns.is_empty() && !sa.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::finding::codes;
    use crate::model::RateLimitTarget;
    use crate::resources::{parse_file, Loaded};
    use crate::translate::translate;

    #[test]
    fn a_rate_limit_policy_targets_a_service_or_workload_and_bad_clients_are_reported() {
        let yaml = "\
apiVersion: weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: reviews-rl}
spec:
  targetRef: {kind: Service, name: reviews}
  port: 9080
  total: {requestsPerSecond: 50}
  overrides:
  - requestsPerSecond: 5
    clients: [ns/default/sa/productpage, spiffe://cluster.local/ns/x/sa/y, productpage]
---
apiVersion: weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: by-route}
spec:
  targetRef: {kind: HTTPRoute, name: reviews}
  total: {requestsPerSecond: 1}
";
        let mut loaded = Loaded::default();
        parse_file("mesh.yaml", yaml, &mut loaded);
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        let t = translate(&loaded.documents);
        let at: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
        assert_eq!(
            at,
            [(codes::SCHEMA, Some(10)), (codes::NOT_IMPLEMENTED, Some(16))],
            "{:#?}",
            t.findings
        );
        let [rl] = t.mesh.inbound_rate_limits.as_slice() else {
            panic!("{:#?}", t.mesh.inbound_rate_limits)
        };
        assert_eq!(
            rl.target,
            RateLimitTarget::Service {
                name: "reviews".into(),
                port: Some(9080)
            }
        );
        assert_eq!(rl.limit.total, Some(50));
        assert_eq!(rl.limit.overrides[0].clients.len(), 3);
    }
}
