//! Linkerd policy, translated and then decided: each case is documents, a request to one
//! workload, and what Linkerd's docs say happens to it.

use std::collections::BTreeMap;

use crate::authz::{authorize, policies_for, AuthzRequest};
use crate::finding::codes;
use crate::proxy_config::AuthzAction;
use crate::resources::{parse_file, Loaded};
use crate::translate::{translate, Translated};

fn run(yaml: &str) -> Translated {
    let mut loaded = Loaded::default();
    parse_file("l.yaml", yaml, &mut loaded);
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    translate(&loaded.documents)
}

/// `api` (default/api, sa api, ports 8080 `http` and 9090 `admin`), `web` (sa web) and
/// `other` (namespace other).
const WORKLOADS: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: default}
spec:
  labels: {app: api, tier: backend}
  serviceAccount: api
  ports: [{name: http, port: 8080}, {name: admin, port: 9090}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: default}
spec: {labels: {app: web}, serviceAccount: web, ports: [{name: http, port: 8080}]}
"#;

const SERVER: &str = r#"
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: api-http, namespace: default}
spec:
  podSelector:
    matchLabels: {app: api}
    matchExpressions: [{key: tier, operator: In, values: [backend]}]
  port: http
"#;

const ALLOW_WEB: &str = r#"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-from-web, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: api-http}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: web-only}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: web-only, namespace: default}
spec:
  identities: [web.default.serviceaccount.identity.linkerd.cluster.local]
"#;

const LOCAL_NETWORK: &str = r#"
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-from-loopback, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: api-http}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: loopback}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: loopback, namespace: default}
spec:
  networks: [{cidr: 127.0.0.0/8, except: [127.0.0.9/32]}]
"#;

const ROUTE: &str = r#"
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: api-read, namespace: default}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: api-http}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /books}
      method: GET
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-read-any-mesh, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: api-read}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: any-mesh}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: any-mesh, namespace: default}
spec: {identities: ["*"]}
"#;

fn annotated_api(policy: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: api\n  namespace: default\n  annotations: {{config.linkerd.io/default-inbound-policy: {policy}}}\nspec:\n  labels: {{app: api, tier: backend}}\n  serviceAccount: api\n  ports: [{{name: http, port: 8080}}, {{name: admin, port: 9090}}]\n"
    )
}

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const STRANGER: &str = "spiffe://cluster.local/ns/other/sa/stranger";

struct Case {
    name: &'static str,
    docs: String,
    principal: Option<&'static str>,
    ip: &'static str,
    method: Option<&'static str>,
    path: &'static str,
    port: u16,
    allowed: bool,
    /// `kind ns/name` of the deciding policy, or "-" without one.
    by: &'static str,
}

fn case(
    name: &'static str,
    docs: String,
    principal: Option<&'static str>,
    port: u16,
    allowed: bool,
    by: &'static str,
) -> Case {
    Case {
        name,
        docs,
        principal,
        ip: "10.1.2.3",
        method: Some("GET"),
        path: "/books/1",
        port,
        allowed,
        by,
    }
}

fn decide(c: &Case) -> (bool, String, Option<String>) {
    let t = run(&c.docs);
    let errors: Vec<_> = t
        .findings
        .iter()
        .filter(|f| f.code != codes::NOT_IMPLEMENTED)
        .collect();
    assert!(errors.is_empty(), "{}: {errors:?}", c.name);
    let api = t.mesh.workloads.iter().find(|w| w.name == "api").expect("api");
    let policies = policies_for(&t.mesh, "default", "api", &api.labels);
    let headers = BTreeMap::new();
    let d = authorize(
        &policies,
        &AuthzRequest {
            source_principal: c.principal,
            source_namespace: c
                .principal
                .and_then(|p| p.split("/ns/").nth(1)?.split('/').next()),
            source_ip: c.ip.parse().expect("ip"),
            method: c.method,
            path: c.method.map(|_| c.path),
            host: None,
            port: c.port,
            headers: &headers,
            request_auth: None,
        },
    );
    let by = match (&d.policy, &d.kind) {
        (Some((ns, name)), Some(kind)) => format!("{kind} {ns}/{name}"),
        _ => "-".into(),
    };
    let audit = d.audit.map(|a| format!("{} {}/{}", a.kind, a.namespace, a.name));
    (d.allowed, by, audit)
}

#[test]
fn linkerd_policy_decisions_follow_linkerd_semantics() {
    let base = || format!("{WORKLOADS}{SERVER}");
    let cases = vec![
        // No Linkerd policy: all-unauthenticated, nothing to decide.
        case("no policy", WORKLOADS.into(), None, 8080, true, "-"),
        // A Server without AuthorizationPolicy denies its port (accessPolicy default deny)...
        case("server alone denies", base(), Some(WEB), 8080, false, "Server default/api-http"),
        // ...and only its port: 9090 keeps the default policy.
        case("other port untouched", base(), None, 9090, true, "-"),
        case("mesh tls allows web", format!("{}{ALLOW_WEB}", base()), Some(WEB), 8080, true, "Server default/api-http"),
        case("mesh tls denies stranger", format!("{}{ALLOW_WEB}", base()), Some(STRANGER), 8080, false, "Server default/api-http"),
        case("mesh tls denies plaintext", format!("{}{ALLOW_WEB}", base()), None, 8080, false, "Server default/api-http"),
        Case {
            ip: "127.0.0.1",
            ..case("network allows loopback plaintext", format!("{}{LOCAL_NETWORK}", base()), None, 8080, true, "Server default/api-http")
        },
        Case {
            ip: "127.0.0.9",
            ..case("network except", format!("{}{LOCAL_NETWORK}", base()), None, 8080, false, "Server default/api-http")
        },
        case("network denies elsewhere", format!("{}{LOCAL_NETWORK}", base()), None, 8080, false, "Server default/api-http"),
        case("route allows GET /books", format!("{}{ROUTE}", base()), Some(STRANGER), 8080, true, "Server default/api-http"),
        Case {
            method: Some("POST"),
            ..case("route denies POST", format!("{}{ROUTE}", base()), Some(STRANGER), 8080, false, "Server default/api-http")
        },
        Case {
            path: "/bookstore",
            ..case("route prefix is by segment", format!("{}{ROUTE}", base()), Some(STRANGER), 8080, false, "Server default/api-http")
        },
        case("route needs mesh identity", format!("{}{ROUTE}", base()), None, 8080, false, "Server default/api-http"),
        Case {
            method: None,
            ..case("route does not admit TCP", format!("{}{ROUTE}", base()), Some(STRANGER), 8080, false, "Server default/api-http")
        },
        // Identity patterns: every service account of a namespace, Linkerd's way and by ref.
        case(
            "linkerd wildcard identity",
            format!("{}{}", base(), ALLOW_WEB.replace("[web.default.", "[\"*.default.").replace("linkerd.cluster.local]", "linkerd.cluster.local\"]")),
            // Not web: any service account of the namespace.
            Some("spiffe://cluster.local/ns/default/sa/batch"),
            8080,
            true,
            "Server default/api-http",
        ),
        case(
            "linkerd wildcard identity, other namespace",
            format!("{}{}", base(), ALLOW_WEB.replace("[web.default.", "[\"*.default.").replace("linkerd.cluster.local]", "linkerd.cluster.local\"]")),
            Some(STRANGER),
            8080,
            false,
            "Server default/api-http",
        ),
        case(
            "identityRefs service account",
            format!(
                "{}{}",
                base(),
                ALLOW_WEB.replace(
                    "identities: [web.default.serviceaccount.identity.linkerd.cluster.local]",
                    "identityRefs: [{kind: ServiceAccount, name: stranger, namespace: other}]"
                )
            ),
            Some(STRANGER),
            8080,
            true,
            "Server default/api-http",
        ),
        // With inbound routes, a Server-wide policy admits only what a route matches.
        case(
            "server policy within routes",
            format!("{}{ROUTE}{ALLOW_WEB}", base()),
            Some(WEB),
            8080,
            true,
            "Server default/api-http",
        ),
        Case {
            path: "/admin",
            ..case(
                "no route matches",
                format!("{}{ROUTE}{ALLOW_WEB}", base()),
                Some(WEB),
                8080,
                false,
                "Server default/api-http",
            )
        },
        // Server accessPolicy replaces the deny default.
        case(
            "accessPolicy all-authenticated",
            format!("{}  accessPolicy: all-authenticated\n", base()),
            Some(STRANGER),
            8080,
            true,
            "Server default/api-http",
        ),
        // Default inbound policies, from the workload's annotation.
        case("default deny", annotated_api("deny"), Some(WEB), 8080, false, "default-inbound-policy default/deny"),
        case("default all-authenticated admits mTLS", annotated_api("all-authenticated"), Some(STRANGER), 9090, true, "default-inbound-policy default/all-authenticated"),
        case("default all-authenticated refuses plaintext", annotated_api("all-authenticated"), None, 9090, false, "default-inbound-policy default/all-authenticated"),
        case("default cluster-unauthenticated", annotated_api("cluster-unauthenticated"), None, 9090, true, "default-inbound-policy default/cluster-unauthenticated"),
        Case {
            ip: "8.8.8.8",
            ..case("cluster-unauthenticated outside", annotated_api("cluster-unauthenticated"), None, 9090, false, "default-inbound-policy default/cluster-unauthenticated")
        },
        case("default audit allows", annotated_api("audit"), None, 9090, true, "-"),
        // A Server's port is decided by the Server, not the default.
        case(
            "server beats default",
            format!("{}{SERVER}{ALLOW_WEB}", annotated_api("deny")),
            Some(WEB),
            8080,
            true,
            "Server default/api-http",
        ),
        case(
            "default still covers other ports",
            format!("{}{SERVER}{ALLOW_WEB}", annotated_api("deny")),
            Some(WEB),
            9090,
            false,
            "default-inbound-policy default/deny",
        ),
        // Mesh-wide default: the annotation on the root namespace's Namespace document.
        case(
            "mesh-wide deny",
            format!("{WORKLOADS}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-system\n  annotations: {{config.linkerd.io/default-inbound-policy: deny}}\n"),
            Some(WEB),
            8080,
            false,
            "default-inbound-policy default/deny",
        ),
        // The namespace's own annotation beats the mesh-wide one.
        case(
            "namespace beats mesh",
            format!("{WORKLOADS}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-system\n  annotations: {{config.linkerd.io/default-inbound-policy: deny}}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  annotations: {{config.linkerd.io/default-inbound-policy: all-unauthenticated}}\n"),
            None,
            8080,
            true,
            "-",
        ),
        // Namespace-targeted AuthorizationPolicy: every Server in the namespace.
        case(
            "namespace target",
            format!(
                "{}---\napiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: ns-wide, namespace: default}}\nspec:\n  targetRef: {{kind: Namespace, name: default}}\n  requiredAuthenticationRefs: [{{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: ns-default}}]\n---\napiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {{name: ns-default, namespace: default}}\nspec:\n  identityRefs: [{{kind: Namespace, name: default}}]\n",
                base()
            ),
            Some(WEB),
            8080,
            true,
            "Server default/api-http",
        ),
    ];
    let mut failed = Vec::new();
    for c in &cases {
        let (allowed, by, _) = decide(c);
        if allowed != c.allowed || by != c.by {
            failed.push(format!(
                "{}: got ({allowed}, {by}), want ({}, {})",
                c.name, c.allowed, c.by
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn audit_default_is_reported_not_enforced() {
    let c = case("audit", annotated_api("audit"), None, 9090, true, "-");
    let (allowed, _, audit) = decide(&c);
    assert!(allowed);
    assert_eq!(audit.as_deref(), Some("default-inbound-policy default/audit"));
}

#[test]
fn istio_and_linkerd_combine_on_one_workload() {
    // An Istio DENY beats a Linkerd Server that would allow; an Istio ALLOW is an alternative
    // to the Server's rules (any in-scope ALLOW rule admits).
    let istio = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
"#;
    let docs = format!("{WORKLOADS}{SERVER}{ALLOW_WEB}{istio}");
    let del = Case {
        method: Some("DELETE"),
        ..case("istio deny", docs.clone(), Some(WEB), 8080, false, "")
    };
    let (allowed, by, _) = decide(&del);
    assert!(!allowed);
    assert_eq!(by, "AuthorizationPolicy default/no-delete");
    let (allowed, by, _) = decide(&case("linkerd allows", docs, Some(WEB), 8080, true, ""));
    assert!(allowed);
    assert_eq!(by, "Server default/api-http");
}

#[test]
fn broken_references_and_empty_selections_are_findings_at_their_line() {
    let t = run(&format!(
        r#"{WORKLOADS}---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: nothing, namespace: default}}
spec:
  podSelector: {{matchLabels: {{app: ghost}}}}
  port: 8080
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: to-missing-server, namespace: default}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: missing}}
  requiredAuthenticationRefs: []
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: missing-authn, namespace: default}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: nothing}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: nobody}}
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: bad-access, namespace: default}}
spec:
  podSelector: {{}}
  port: 9090
  accessPolicy: everyone
  surprise: true
"#
    ));
    let found: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert!(
        found.contains(&(codes::SELECTS_NOTHING, Some(19))),
        "{:#?}",
        t.findings
    );
    assert!(
        found.contains(&(codes::MISSING_POLICY_REF, Some(26))),
        "{:#?}",
        t.findings
    );
    assert!(
        found.contains(&(codes::MISSING_POLICY_REF, Some(35))),
        "{:#?}",
        t.findings
    );
    // The unknown field fails the whole Server document at its line.
    assert!(
        found
            .iter()
            .any(|(c, l)| *c == codes::UNKNOWN_FIELD && *l == Some(44)),
        "{:#?}",
        t.findings
    );
    // A policy with a missing reference authorizes nothing: port 8080 of nothing... the
    // Server `nothing` selects no workload, so api's policies are only what resolved.
    let api = &t.mesh.workloads[0];
    let policies = policies_for(&t.mesh, "default", "api", &api.labels);
    assert!(
        policies
            .iter()
            .all(|p| p.action == AuthzAction::Allow && p.rules.is_empty()),
        "{policies:#?}"
    );
}

#[test]
fn service_parent_routes_like_the_gateway_api() {
    let t = run(&format!(
        r#"{WORKLOADS}---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec: {{selector: {{app: api}}, ports: [{{port: 8080}}]}}
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {{name: api-split, namespace: default}}
spec:
  parentRefs: [{{kind: Service, group: core, name: api, port: 8080}}]
  rules:
  - backendRefs: [{{name: api, port: 8080}}]
"#
    ));
    assert!(t.findings.is_empty(), "{:#?}", t.findings);
    let (docs, _) = t.mesh.routes_for("api.default.svc.cluster.local", 8080);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].origin.name, "api-split");
    assert!(t.mesh.authorization_policies.is_empty());
}

#[test]
fn proxy_protocol_sets_the_protocol_of_detected_ports() {
    use crate::proxy_config::Protocol;
    let admin = SERVER
        .replace("name: api-http", "name: api-admin")
        .replace("port: http", "port: admin");
    let t = run(&format!("{WORKLOADS}{admin}  proxyProtocol: opaque\n"));
    assert!(t.findings.is_empty(), "{:#?}", t.findings);
    let api = t.mesh.workloads.iter().find(|w| w.name == "api").expect("api");
    let protocols: Vec<_> = api.ports.iter().map(|p| (p.port, p.protocol)).collect();
    // `http` is HTTP by its name; `admin` was left to detection and is now opaque.
    assert_eq!(protocols, vec![(8080, Protocol::Http), (9090, Protocol::Tcp)]);
    // A protocol the Workload declares (here by the port's name) is kept, and the conflict
    // reported at the Server's proxyProtocol.
    let t = run(&format!("{WORKLOADS}{SERVER}  proxyProtocol: gRPC\n"));
    let found: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(found, vec![(codes::SCHEMA, Some(24))], "{:#?}", t.findings);
    let api = t.mesh.workloads.iter().find(|w| w.name == "api").expect("api");
    assert_eq!(api.ports[0].protocol, Protocol::Http);
    // An unknown value is an error at its line; the port stays as it was.
    let t = run(&format!("{WORKLOADS}{admin}  proxyProtocol: HTTP/3\n"));
    let found: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(found, vec![(codes::SCHEMA, Some(24))], "{:#?}", t.findings);
    let api = t.mesh.workloads.iter().find(|w| w.name == "api").expect("api");
    assert_eq!(api.ports[1].protocol, Protocol::Auto);
}

#[test]
fn a_gateway_api_http_route_with_a_server_parent_is_an_inbound_route() {
    let route = ROUTE
        .replace(
            "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute",
        )
        .replace(
            "{group: policy.linkerd.io, kind: HTTPRoute, name: api-read}",
            "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api-read}",
        );
    assert!(route.contains("gateway.networking.k8s.io/v1"), "{route}");
    let docs = format!("{WORKLOADS}{SERVER}{route}");
    let get = case("gateway route GET", docs.clone(), Some(STRANGER), 8080, true, "");
    assert!(decide(&get).0);
    let post = Case {
        method: Some("POST"),
        ..case(
            "gateway route POST",
            docs.clone(),
            Some(STRANGER),
            8080,
            false,
            "",
        )
    };
    assert!(!decide(&post).0);
    // No routing findings for the Server parent, and no mesh route either.
    let t = run(&docs);
    assert!(t.findings.is_empty(), "{:#?}", t.findings);
    assert!(t.mesh.routes.is_empty());
    // The targetRef's group must be the route's: the default (policy.linkerd.io) misses it.
    let wrong = docs.replace(
        "{group: gateway.networking.k8s.io, kind: HTTPRoute",
        "{kind: HTTPRoute",
    );
    let t = run(&wrong);
    assert!(
        t.findings.iter().any(|f| f.code == codes::MISSING_POLICY_REF),
        "{:#?}",
        t.findings
    );
}
