//! `weft explain`: why a request goes where it goes, computed from the same model the proxies
//! get and by the same `route::resolve` the proxy runs. The JSON shape is a contract
//! (shared/ARCHITECTURE.md, "Contracts that users script against").

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Mesh;
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
    pub mtls: Mtls,
    /// Problems met while explaining (e.g. a route table that does not compile).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
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
        // Authorization and mTLS modes arrive with the identity issue; until then every port
        // is PERMISSIVE (Istio's default) and nothing is denied.
        authorization: None,
        mtls: Mtls { mode: "PERMISSIVE" },
        errors: Vec::new(),
    };
    let Some(fqdn) = mesh_host(&req.host, from_ns).filter(|f| mesh.service(f).is_some()) else {
        return out;
    };
    out.service = Some(fqdn.clone());
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
    out.matched = decision.matched.map(|m| Matched {
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
    out.policies = decision.policies;
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
    out.direct_response = decision.direct_response;
    out
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
}
