use std::collections::BTreeMap;

use crate::authz::{mtls_for, policies_for};
use crate::finding::codes;
use crate::proxy_config::{AuthzAction, MtlsMode};
use crate::resources::{parse_file, Loaded};
use crate::translate::{translate, Translated};

fn run(yaml: &str) -> Translated {
    let mut loaded = Loaded::default();
    parse_file("s.yaml", yaml, &mut loaded);
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    translate(&loaded.documents)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}

const PEER_AUTHN: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: legacy}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: UNSET}
  portLevelMtls:
    "9080": {mode: STRICT}
    9090: {mode: DISABLE}
"#;

#[test]
fn peer_authentication_precedence_port_workload_namespace_mesh() {
    let t = run(PEER_AUTHN);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    assert_eq!(t.mesh.peer_authentications.len(), 3);
    // Mesh-wide STRICT.
    assert_eq!(
        mtls_for(&t.mesh, "default", &labels(&[("app", "x")])),
        (MtlsMode::Strict, BTreeMap::new())
    );
    // Namespace PERMISSIVE beats mesh STRICT.
    let (mode, ports) = mtls_for(&t.mesh, "legacy", &labels(&[("app", "ratings")]));
    assert_eq!((mode, ports.len()), (MtlsMode::Permissive, 0));
    // Workload UNSET inherits the namespace's; ports override.
    let (mode, ports) = mtls_for(&t.mesh, "legacy", &labels(&[("app", "reviews")]));
    assert_eq!(mode, MtlsMode::Permissive);
    assert_eq!(ports.get(&9080), Some(&MtlsMode::Strict));
    assert_eq!(ports.get(&9090), Some(&MtlsMode::Disable));
    // No policy at all: PERMISSIVE.
    assert_eq!(
        mtls_for(&Default::default(), "default", &labels(&[])).0,
        MtlsMode::Permissive
    );
}

#[test]
fn bad_modes_and_port_level_without_selector_are_reported_at_their_line() {
    let t = run("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  mtls:\n    mode: STRICTEST\n  portLevelMtls:\n    80: {mode: STRICT}\n");
    let codes_lines: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(
        codes_lines,
        vec![(codes::SCHEMA, Some(6)), (codes::NOT_IMPLEMENTED, Some(7))]
    );
    assert_eq!(t.mesh.peer_authentications[0].mode, None);
}

const AUTHZ: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/default/sa/bookinfo-productpage
        - spiffe://cluster.local/ns/default/sa/a
        - b.default.serviceaccount.identity.linkerd.cluster.local
        - cluster.local/ns/other/*
    to:
    - operation: {methods: [GET], ports: ["9080"]}
    when:
    - {key: "request.headers[x-user]", values: [alice]}
    - {key: "connection.sni", values: [x]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: default}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: weft-system}
spec: {action: DENY, rules: [{from: [{source: {namespaces: [evil]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: shop}
spec: {}
"#;

#[test]
fn authorization_policies_normalize_principals_and_select_workloads() {
    let t = run(AUTHZ);
    let found: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    // The unsupported `when` key (line 20); AUDIT is translated.
    assert_eq!(
        found,
        vec![(codes::NOT_IMPLEMENTED, Some(20))],
        "{:?}",
        t.findings
    );
    assert_eq!(t.mesh.authorization_policies.len(), 5);
    let viewer = &t.mesh.authorization_policies[0].policy;
    assert_eq!(
        viewer.rules[0].from[0].principals,
        vec![
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            "spiffe://cluster.local/ns/default/sa/a",
            "spiffe://cluster.local/ns/default/sa/b",
            "cluster.local/ns/other/*",
        ]
    );
    let reviews = policies_for(&t.mesh, "default", "w", &labels(&[("app", "reviews")]));
    let names: Vec<_> = reviews.iter().map(|p| (p.name.as_str(), p.action)).collect();
    assert_eq!(
        names,
        vec![
            ("reviews-viewer", AuthzAction::Allow),
            ("deny-admin", AuthzAction::Deny),
            ("audit", AuthzAction::Audit),
            ("mesh-deny", AuthzAction::Deny)
        ]
    );
    let ratings = policies_for(&t.mesh, "default", "w", &labels(&[("app", "ratings")]));
    assert_eq!(ratings.len(), 3);
    let shop = policies_for(&t.mesh, "shop", "w", &labels(&[("app", "x")]));
    assert_eq!(
        shop.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["mesh-deny", "other-ns"]
    );
}

#[test]
fn bad_ip_blocks_are_schema_errors_and_condition_principals_are_normalized() {
    let t = run("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: [10.0.0.0/8, 10.0.0.0/33, nope]\n    when:\n    - key: source.principal\n      values: [cluster.local/ns/default/sa/a]\n");
    let found: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(
        found,
        vec![(codes::SCHEMA, Some(8)), (codes::SCHEMA, Some(8))],
        "{:?}",
        t.findings
    );
    let rule = &t.mesh.authorization_policies[0].policy.rules[0];
    assert_eq!(
        rule.when[0].values,
        vec!["spiffe://cluster.local/ns/default/sa/a"]
    );
}

const REQUEST_AUTHN: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  jwtRules:
  - issuer: https://mesh.example
    jwksUri: http://127.0.0.1:9999/jwks.json
    timeout: 2s
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: books-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: books}}
  jwtRules:
  - issuer: issuer-books
    audiences: [books]
    jwks: '{"keys": []}'
    fromHeaders: [{name: x-jwt, prefix: "Token "}]
    fromParams: [token]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-jwt-sub, claim: sub}]
    forwardOriginalToken: true
  - issuer: ""
    jwks: 'not json'
  - issuer: issuer-remote
    jwksUri: https://issuer.example/jwks
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: shop}
spec:
  rules:
  - from: [{source: {requestPrincipals: ["issuer-books/*"], notRequestPrincipals: ["issuer-books/bob"]}}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
"#;

#[test]
fn request_authentication_reaches_the_workloads_it_selects() {
    let t = run(REQUEST_AUTHN);
    let issuers = |ns: &str, l: &[(&str, &str)]| -> Vec<String> {
        crate::authz::authentications_for(&t.mesh, ns, &labels(l))
            .into_iter()
            .map(|r| r.issuer)
            .collect()
    };
    assert_eq!(
        issuers("shop", &[("app", "books")]),
        ["https://mesh.example", "issuer-books", "", "issuer-remote"]
    );
    assert_eq!(issuers("shop", &[("app", "orders")]), ["https://mesh.example"]);
    assert_eq!(issuers("other", &[]), ["https://mesh.example"]);
    let rules = crate::authz::authentications_for(&t.mesh, "shop", &labels(&[("app", "books")]));
    let books = &rules[1];
    assert_eq!(books.policy, "books-jwt");
    assert_eq!(books.audiences, ["books"]);
    assert_eq!(books.from_headers[0].prefix, "Token ");
    assert_eq!(books.output_claim_to_headers[0].header, "x-jwt-sub");
    assert!(books.forward_original_token);
    assert_eq!(rules[0].jwks_timeout_ms, Some(2000));
    // A rule that cannot run is an error at its field, and kept (its tokens are refused).
    let errors: Vec<_> = t.findings.iter().filter(|f| f.code == codes::SCHEMA).collect();
    assert!(
        errors.iter().any(|f| f.message.contains("issuer is empty")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|f| f.message.contains("jwks: not JSON")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|f| f.message.contains("https:// key sets are not fetched")),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    // Neither RequestAuthentication nor request principals are "read but not acted on" now.
    assert!(
        !t.findings.iter().any(|f| f.code == codes::NOT_IMPLEMENTED),
        "{:?}",
        t.findings
    );
    let p = policies_for(&t.mesh, "shop", "books", &labels(&[("app", "books")]));
    let source = &p[0].rules[0].from[0];
    assert_eq!(source.request_principals, ["issuer-books/*"]);
    assert_eq!(source.not_request_principals, ["issuer-books/bob"]);
}
