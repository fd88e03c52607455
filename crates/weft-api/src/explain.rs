//! `weft explain`: why a request goes where it goes, computed from the same model the proxies
//! get and by the same `route::resolve` the proxy runs. The JSON shape is a contract
//! (shared/ARCHITECTURE.md, "Contracts that users script against").

use std::collections::BTreeMap;

use serde::Serialize;

use crate::authz;
use crate::identity::{SpiffeId, DEFAULT_TRUST_DOMAIN};
use crate::model::Mesh;
use crate::proxy_config::{AuthzAction, MtlsMode};
use crate::route::{self, Backend, CompiledTable, DecisionKind, RequestHead, RoutePolicies, Source};
use crate::translate::mesh_host;

/// A request as `weft explain` is given it.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The calling workload: `(name, namespace)`; None calls from namespace `default`.
    pub from: Option<(String, String)>,
}

/// The answer, in the contract's shape.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub service: Option<String>,
    pub decision: &'static str,
    pub matched: Option<Matched>,
    pub skipped: Vec<route::Skip>,
    pub backends: Vec<Backend>,
    /// Where each backend's traffic can go: the workloads behind it (an addition to the
    /// contract; fields may be added).
    pub endpoints: BTreeMap<String, Vec<String>>,
    pub policies: RoutePolicies,
    pub redirect: Option<RedirectOut>,
    pub direct_response: Option<route::DirectResponse>,
    pub authorization: Option<serde_json::Value>,
    /// The RequestAuthentications of the destination workload (an addition to the contract):
    /// which issuers its proxy accepts. `authorization` is decided as for a request without a
    /// verified token (explain verifies none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authentication: Vec<AuthnOut>,
    pub mtls: Mtls,
    /// Problems met while explaining (e.g. a route table that does not compile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Why a request is refused before any rule is looked at, as the proxy says it (its
    /// response flag first): e.g. a port the service does not have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Matched {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    pub file: Option<String>,
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedirectOut {
    pub status: u16,
    pub location: String,
}

/// One RequestAuthentication that applies to the destination workload.
#[derive(Debug, Clone, Serialize)]
pub struct AuthnOut {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub issuers: Vec<String>,
    pub file: Option<String>,
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mtls {
    pub mode: &'static str,
}

/// Explains one request against the mesh.
pub fn explain(mesh: &Mesh, req: &ExplainRequest) -> Explanation {
    let from_ns = req.from.as_ref().map_or("default", |(_, ns)| ns.as_str());
    let caller = req.from.as_ref().and_then(|(name, ns)| {
        mesh.workloads
            .iter()
            .find(|w| &w.name == name && &w.namespace == ns)
    });
    let mut out = Explanation {
        service: None,
        decision: "not_found",
        matched: None,
        skipped: Vec::new(),
        backends: Vec::new(),
        endpoints: BTreeMap::new(),
        policies: RoutePolicies::default(),
        redirect: None,
        direct_response: None,
        // Filled below from the destination workloads' AuthorizationPolicies and
        // PeerAuthentications; no policy: nothing denied, PERMISSIVE (Istio's default).
        authorization: None,
        authentication: Vec::new(),
        mtls: Mtls { mode: "PERMISSIVE" },
        errors: Vec::new(),
        reason: None,
    };
    let Some(fqdn) = mesh_host(&req.host, from_ns).filter(|f| mesh.service(f).is_some()) else {
        return out;
    };
    out.service = Some(fqdn.clone());
    // The proxy routes a service's declared ports only: any other port has no route (404, NR).
    if let Some(svc) = mesh.service(&fqdn) {
        if !svc.ports.iter().any(|p| p.port == req.port) {
            let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
            out.reason = Some(format!(
                "NR: {fqdn} has no port {} (its ports: {}); the proxy answers 404",
                req.port,
                ports.join(", ")
            ));
            return out;
        }
    }
    let table = match CompiledTable::compile(&mesh.route_table(&fqdn, req.port), &fqdn) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    let head = RequestHead {
        method: &req.method,
        path: &req.path,
        query: req.query.as_deref(),
        authority: &req.host,
        port: req.port,
        headers: &req.headers,
    };
    let source = Source {
        namespace: from_ns,
        labels: caller.map(|w| &w.labels),
    };
    let decision = route::resolve(&table, &head, &source, true);
    out.decision = match decision.kind {
        DecisionKind::Route => "route",
        DecisionKind::Redirect => "redirect",
        DecisionKind::DirectResponse => "direct_response",
        DecisionKind::NotFound => "not_found",
    };
    let decision = decision.into_owned();
    out.matched = decision.matched.map(|m| m.into_owned()).map(|m| Matched {
        kind: m.origin.kind,
        namespace: m.origin.namespace,
        name: m.origin.name,
        rule: m.rule,
        file: m.origin.file,
        line: m.origin.line,
    });
    out.skipped = decision.skipped;
    out.backends = decision
        .backends
        .into_owned()
        .into_iter()
        .map(|mut b| {
            b.port = b.port.or(Some(req.port));
            b
        })
        .collect();
    for b in &out.backends {
        let key = match &b.subset {
            Some(s) => format!("{} subset {s}", b.service),
            None => b.service.clone(),
        };
        out.endpoints.insert(key, endpoints_of(mesh, b));
    }
    out.policies = decision.policies.into_owned();
    out.redirect = decision.redirect.map(|r| {
        let host = r.authority.clone().unwrap_or_else(|| req.host.clone());
        let port = match (r.port, &r.authority) {
            (Some(p), _) => format!(":{p}"),
            (None, None) if req.port != 80 => format!(":{}", req.port),
            _ => String::new(),
        };
        let path = r.path.clone().unwrap_or_else(|| req.path.clone());
        let scheme = r.scheme.clone().unwrap_or_else(|| "http".into());
        RedirectOut {
            status: r.status,
            location: format!("{scheme}://{host}{port}{path}"),
        }
    });
    out.direct_response = decision.direct_response.map(|d| d.into_owned());
    authorize_for(mesh, req, caller, &mut out);
    out
}

/// `authorization` and `mtls` for the destination workloads of the decision, as the caller's
/// identity (its service account's SPIFFE ID) would meet them. With several workloads behind
/// the backends, the first that denies is reported, else the first.
fn authorize_for(
    mesh: &Mesh,
    req: &ExplainRequest,
    caller: Option<&crate::model::Workload>,
    out: &mut Explanation,
) {
    let mut destinations: Vec<(&crate::model::Workload, u16)> = Vec::new();
    for b in &out.backends {
        let Some(svc) = mesh.service(&b.service) else {
            continue;
        };
        let port = b.port.unwrap_or(req.port);
        let target = svc.port(port).map_or(port, |p| p.target_port);
        for key in out.endpoints.values().flatten() {
            let found = mesh
                .workloads
                .iter()
                .find(|w| format!("{}.{}", w.name, w.namespace) == *key && w.selected_by(&svc.selector));
            if let Some(w) = found {
                if !destinations
                    .iter()
                    .any(|(d, p)| std::ptr::eq(*d, w) && *p == target)
                {
                    destinations.push((w, target));
                }
            }
        }
    }
    let Some((first, first_port)) = destinations.first().copied() else {
        return;
    };
    let (mode, ports) = authz::mtls_for(mesh, &first.namespace, &first.labels);
    out.mtls.mode = mode_name(ports.get(&first_port).copied().unwrap_or(mode));
    out.authentication = authz::applicable_authentications(mesh, &first.namespace, &first.labels)
        .map(|ra| AuthnOut {
            kind: "RequestAuthentication",
            namespace: ra.origin.namespace.clone(),
            name: ra.origin.name.clone(),
            issuers: ra.rules.iter().map(|r| r.issuer.clone()).collect(),
            file: ra.origin.file.clone(),
            line: ra.origin.line,
        })
        .collect();

    let principal = caller.and_then(|w| {
        SpiffeId::new(DEFAULT_TRUST_DOMAIN, &w.namespace, &w.service_account)
            .ok()
            .map(|id| id.to_string())
    });
    let mut chosen: Option<authz::AuthzDecision> = None;
    for (w, port) in &destinations {
        let policies = authz::policies_for(mesh, &w.namespace, &w.name, &w.labels);
        if policies.is_empty() {
            continue;
        }
        let d = authz::authorize(
            &policies,
            &authz::AuthzRequest {
                source_principal: principal.as_deref(),
                source_namespace: caller.map(|w| w.namespace.as_str()),
                source_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                method: Some(&req.method),
                path: Some(&req.path),
                host: Some(&req.host),
                port: *port,
                headers: &req.headers,
                request_auth: None,
            },
        );
        let deny = !d.allowed;
        if chosen.is_none() || deny {
            chosen = Some(d);
        }
        if deny {
            break;
        }
    }
    let Some(d) = chosen else { return };
    if !d.allowed && out.decision == "route" {
        out.decision = "deny";
    }
    let (namespace, name) = d.policy.clone().unzip();
    out.authorization = Some(serde_json::json!({
        "allowed": d.allowed,
        "action": match d.action {
            Some(AuthzAction::Deny) => "DENY",
            _ => "ALLOW",
        },
        "kind": d.kind.as_deref().unwrap_or("AuthorizationPolicy"),
        "namespace": namespace,
        "name": name,
        "rule": d.rule,
        // A matching AUDIT policy: the request is logged and counted, never blocked by it.
        "audit": d.audit,
    }));
}

fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Disable => "DISABLE",
    }
}

/// The workloads behind a backend: selected by its service and, for a subset, by the
/// subset's labels too.
fn endpoints_of(mesh: &Mesh, b: &Backend) -> Vec<String> {
    let Some(svc) = mesh.service(&b.service) else {
        return Vec::new();
    };
    let subset_labels = match &b.subset {
        None => None,
        Some(name) => {
            let defined = mesh
                .destination(&b.service)
                .and_then(|d| d.subsets.iter().find(|s| &s.name == name));
            match defined {
                Some(s) => Some(&s.labels),
                // An undefined subset has no endpoints: the proxy answers 503 (UH).
                None => return Vec::new(),
            }
        }
    };
    mesh.workloads
        .iter()
        .filter(|w| w.selected_by(&svc.selector))
        .filter(|w| subset_labels.is_none_or(|l| l.iter().all(|(k, v)| w.labels.get(k) == Some(v))))
        .map(|w| format!("{}.{}", w.name, w.namespace))
        .collect()
}

/// Parses `METHOD URL` (`GET http://reviews:9080/reviews/1?x=1`).
pub fn parse_request_line(line: &str) -> Result<(String, String, u16, String, Option<String>), String> {
    let (method, url) = line
        .trim()
        .split_once(' ')
        .ok_or("expected 'METHOD URL', e.g. 'GET http://reviews:9080/'")?;
    let rest = url
        .trim()
        .strip_prefix("http://")
        .ok_or("the URL must start with http://")?;
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().map_err(|_| format!("bad port in {authority}"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_query.to_string(), None),
    };
    Ok((method.to_ascii_uppercase(), host.to_string(), port, path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line("GET http://reviews:9080/reviews/1?u=1"),
            Ok((
                "GET".into(),
                "reviews".into(),
                9080,
                "/reviews/1".into(),
                Some("u=1".into())
            ))
        );
        assert_eq!(
            parse_request_line("get http://r").map(|r| (r.2, r.3)),
            Ok((80, "/".into()))
        );
        assert!(parse_request_line("http://r").is_err());
        assert!(parse_request_line("GET https://r/").is_err());
        assert!(parse_request_line("GET http://r:x/").is_err());
    }

    #[test]
    fn an_unknown_host_has_no_service() {
        let req = ExplainRequest {
            method: "GET".into(),
            host: "nowhere".into(),
            port: 80,
            path: "/".into(),
            query: None,
            headers: BTreeMap::new(),
            from: None,
        };
        let e = explain(&Mesh::default(), &req);
        assert_eq!(e.service, None);
        assert_eq!(e.decision, "not_found");
        let json = serde_json::to_value(&e).expect("json");
        for key in [
            "service",
            "decision",
            "matched",
            "skipped",
            "backends",
            "policies",
            "redirect",
            "direct_response",
            "authorization",
            "mtls",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
    }

    const SECURED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 9081}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews}, serviceAccount: reviews, ports: [{port: 9081}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage}, serviceAccount: bookinfo-productpage}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: ratings-v1}
spec: {labels: {app: ratings}, serviceAccount: ratings}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {"9081": {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/bookinfo-productpage]}}]
    to: [{operation: {methods: [GET]}}]
"#;

    fn secured(from: &str, method: &str) -> Explanation {
        explain_docs(SECURED, from, method)
    }

    fn explain_docs(docs: &str, from: &str, method: &str) -> Explanation {
        let mut loaded = crate::resources::Loaded::default();
        crate::resources::parse_file("m.yaml", docs, &mut loaded);
        let t = crate::translate::translate(&loaded.documents);
        assert!(t.findings.is_empty(), "{:?}", t.findings);
        let req = ExplainRequest {
            method: method.into(),
            host: "reviews".into(),
            port: 9080,
            path: "/reviews/1".into(),
            query: None,
            headers: BTreeMap::new(),
            from: Some((from.into(), "default".into())),
        };
        explain(&t.mesh, &req)
    }

    #[test]
    fn authorization_and_mtls_of_the_destination_workload() {
        let e = secured("productpage-v1", "GET");
        assert_eq!(e.decision, "route");
        assert_eq!(
            serde_json::to_value(&e.authorization).expect("json"),
            serde_json::json!({"allowed": true, "action": "ALLOW", "kind": "AuthorizationPolicy",
                "namespace": "default", "name": "reviews-viewer", "rule": 0, "audit": null})
        );
        // The port-level mode of the target port beats the mesh-wide STRICT.
        assert_eq!(e.mtls.mode, "PERMISSIVE");

        let e = secured("ratings-v1", "GET");
        assert_eq!(e.decision, "deny");
        assert_eq!(
            serde_json::to_value(&e.authorization).expect("json"),
            serde_json::json!({"allowed": false, "action": "ALLOW", "kind": "AuthorizationPolicy",
                "namespace": "default", "name": "reviews-viewer", "rule": null, "audit": null})
        );
        assert_eq!(secured("productpage-v1", "DELETE").decision, "deny");
    }

    /// The same mesh with reviews under Linkerd policy instead: a Server on 9081 that only
    /// productpage's identity may use, an Istio AUDIT on GETs, and DISABLE on the port.
    const LINKERD: &str = r#"
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: reviews-http}
spec: {podSelector: {matchLabels: {app: reviews}}, port: 9081}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: reviews-from-productpage}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: reviews-http}
  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: productpage}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: productpage}
spec: {identities: [bookinfo-productpage.default.serviceaccount.identity.linkerd.cluster.local]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-gets}
spec:
  action: AUDIT
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-plain}
spec: {selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}
"#;

    #[test]
    fn linkerd_server_audit_and_disable_are_explained() {
        // SECURED's first five documents (services and workloads), then LINKERD.
        let base: Vec<&str> = SECURED.split("\n---\n").take(4).collect();
        let docs = format!("{}{LINKERD}", base.join("\n---\n"));
        let e = explain_docs(&docs, "productpage-v1", "GET");
        assert_eq!(e.decision, "route");
        assert_eq!(
            serde_json::to_value(&e.authorization).expect("json"),
            serde_json::json!({"allowed": true, "action": "ALLOW", "kind": "Server",
                "namespace": "default", "name": "reviews-http", "rule": 0,
                "audit": {"kind": "AuthorizationPolicy", "namespace": "default", "name": "audit-gets", "rule": 0}})
        );
        assert_eq!(e.mtls.mode, "DISABLE");
        // Another identity: denied by the Server, still audited (AUDIT never decides).
        let e = explain_docs(&docs, "ratings-v1", "GET");
        assert_eq!(e.decision, "deny");
        let a = serde_json::to_value(&e.authorization).expect("json");
        assert_eq!(
            (a["kind"].as_str(), a["name"].as_str(), a["allowed"].as_bool()),
            (Some("Server"), Some("reviews-http"), Some(false))
        );
        assert_eq!(a["audit"]["name"], "audit-gets");
        // Not a GET: nothing audited.
        let e = explain_docs(&docs, "productpage-v1", "POST");
        assert_eq!(
            serde_json::to_value(&e.authorization).expect("json")["audit"],
            serde_json::Value::Null
        );
    }
}
