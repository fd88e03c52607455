//! Every finding of the checks on the whole model, at the exact line and column of the field
//! that causes it.

use super::analyze;
use crate::finding::Finding;
use crate::resources::{parse_file, Loaded};
use crate::translate::translate;

pub(super) fn findings(yaml: &str) -> Vec<Finding> {
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", yaml, &mut loaded);
    let translated = translate(&loaded.documents);
    analyze(&loaded, &translated)
}

/// (code, line, column) of each finding with `code`.
pub(super) fn at(yaml: &str, code: &str) -> Vec<(usize, usize)> {
    findings(yaml)
        .iter()
        .filter(|f| f.code == code)
        .map(|f| (f.line.unwrap_or(0), f.column.unwrap_or(0)))
        .collect()
}

const REVIEWS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
";

#[test]
fn a_missing_subset_is_at_its_subset_field_and_a_missing_host_at_its_host_field() {
    let yaml = format!(
        "{REVIEWS}\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v9
    - destination: {{host: nowhere}}
"
    );
    assert_eq!(at(&yaml, "WEFT0102"), [(23, 9)], "{:?}", findings(&yaml));
    assert_eq!(at(&yaml, "WEFT0101"), [(24, 21)], "{:?}", findings(&yaml));
}

#[test]
fn weights_are_at_the_route_list_and_a_shadowed_rule_at_the_rule() {
    let yaml = format!(
        "{REVIEWS}\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 50}}
    - {{destination: {{host: reviews}}, weight: 40}}
  - match: [{{uri: {{prefix: /a}}}}]
    route: [{{destination: {{host: reviews}}}}]
"
    );
    assert_eq!(at(&yaml, "WEFT0105"), [(20, 5)]);
    assert_eq!(at(&yaml, "WEFT0107"), [(23, 5)]);
}

#[test]
fn a_host_routed_by_no_service_is_at_its_hosts_entry() {
    let yaml = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost}
spec:
  hosts:
  - ghost
  http:
  - route: [{destination: {host: ghost}}]
";
    let f = findings(yaml);
    let host = f.iter().find(|f| f.severity == crate::finding::Severity::Warning);
    assert_eq!(
        host.map(|f| (f.code, f.line, f.column)),
        Some(("WEFT0101", Some(6), Some(5))),
        "{f:?}"
    );
}

#[test]
fn a_bad_regex_is_at_its_value_in_istio_and_gateway_api() {
    let yaml = format!(
        "{REVIEWS}\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {{regex: '/ok'}}
    - headers:
        x-id: {{regex: '(?!x)'}}
    route: [{{destination: {{host: reviews}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ratings}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ratings}}
spec:
  parentRefs: [{{kind: Service, group: \"\", name: ratings}}]
  rules:
  - matches:
    - path: {{type: RegularExpression, value: '/a(?=b)'}}
    backendRefs: [{{name: ratings, port: 80}}]
"
    );
    assert_eq!(
        at(&yaml, "WEFT0106"),
        [(23, 16), (38, 39)],
        "{:?}",
        findings(&yaml)
    );
}

#[test]
fn the_losing_dialect_and_a_second_virtual_service_are_at_their_host_entries() {
    let yaml = format!(
        "{REVIEWS}\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-2}}
spec:
  hosts: [other, reviews]
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: reviews-split}}
spec:
  service: reviews
  backends: [{{service: reviews, weight: 1}}]
"
    );
    let f = findings(&yaml);
    let conflicts: Vec<_> = f
        .iter()
        .filter(|f| f.code == "WEFT0104")
        .map(|f| (f.line, f.column, f.message.starts_with("IST0109")))
        .collect();
    assert_eq!(
        conflicts,
        [(Some(25), Some(18), true), (Some(32), Some(3), false)],
        "{f:?}"
    );
}

#[test]
fn plaintext_to_a_strict_port_is_at_the_tls_mode() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata: {name: ledger}
spec: {selector: {app: ledger}, ports: [{name: http, port: 8080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: ledger-v1}
spec: {labels: {app: ledger}, ports: [{port: 8080}], command: [sleep, \"1\"]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger}
spec:
  host: ledger
  trafficPolicy:
    tls:
      mode: DISABLE
";
    assert_eq!(at(yaml, "WEFT0108"), [(23, 7)], "{:?}", findings(yaml));
    // Istio's MTLSPolicyConflict.
    let f = findings(yaml);
    assert!(
        f.iter()
            .any(|f| f.code == "WEFT0108" && f.message.starts_with("IST0113: ")),
        "{f:?}"
    );
}

#[test]
fn a_missing_smi_backend_and_gateway_api_backend_are_at_their_names() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web}
spec:
  service: web
  backends:
  - {service: web, weight: 1}
  - {service: web-v2, weight: 1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{kind: Service, group: \"\", name: web}]
  rules:
  - backendRefs:
    - {name: web, port: 80}
    - {name: web-v3, port: 80}
";
    let missing: Vec<_> = findings(yaml)
        .iter()
        .filter(|f| f.code == "WEFT0101" && f.severity == crate::finding::Severity::Error)
        .map(|f| (f.line, f.column))
        .collect();
    assert_eq!(
        missing,
        [(Some(13), Some(6)), (Some(23), Some(7))],
        "{:?}",
        findings(yaml)
    );
}

const SUPPRESSIBLE: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  annotations:
    weft.dev/analyze-suppress: \"WEFT0105, IST0130\"
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews}, weight: 50}
    - {destination: {host: reviews, subset: v9}, weight: 40}
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ghost, namespace: shop}
spec: {host: ghost}
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{port: 9080}]}
";

#[test]
fn the_annotation_silences_its_own_documents_codes_weft_or_istio() {
    let codes: Vec<_> = findings(SUPPRESSIBLE).iter().map(|f| (f.code, f.line)).collect();
    // Weights (WEFT0105) and the shadowed rule (IST0130 in its message) are silenced; the
    // missing subset and the other document's finding are not.
    assert_eq!(
        codes,
        [("WEFT0102", Some(12)), ("WEFT0111", Some(18))],
        "{codes:?}"
    );
}

#[test]
fn suppress_rules_match_code_kind_namespace_and_name_with_wildcards() {
    use super::suppress::{apply, BadSuppression, Suppression};
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", SUPPRESSIBLE, &mut loaded);
    let all = findings(SUPPRESSIBLE);
    let kept = |rules: &[&str]| -> Vec<&'static str> {
        let rules: Vec<Suppression> = rules.iter().map(|r| r.parse().expect("valid")).collect();
        apply(all.clone(), &loaded.documents, &rules)
            .iter()
            .map(|f| f.code)
            .collect()
    };
    assert_eq!(kept(&[]), ["WEFT0102", "WEFT0111"]);
    assert_eq!(kept(&["IST0101=VirtualService/default/reviews"]), ["WEFT0111"]);
    assert_eq!(kept(&["WEFT0102=*/*/rev*"]), ["WEFT0111"]);
    assert_eq!(kept(&["IST0174=DestinationRule/shop/*"]), ["WEFT0102"]);
    // Another namespace or kind silences nothing.
    assert_eq!(
        kept(&["IST0174=DestinationRule/default/ghost"]),
        ["WEFT0102", "WEFT0111"]
    );
    for bad in ["IST0101", "IST0101=VirtualService/reviews", "=a/b/c", "X=a/b/c/d"] {
        assert_eq!(
            bad.parse::<Suppression>(),
            Err(BadSuppression {
                given: bad.to_string()
            }),
            "{bad}"
        );
    }
}
