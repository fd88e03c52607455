//! SMI `TrafficSplit` -> `HostRoutes { dialect: Smi }`: one rule forwarding to the weighted
//! backends (weights in milli-units, `900m` = 900).

use super::core::locate;
use super::{mesh_host, origin, Part, Translated};
use crate::finding::{codes, Finding};
use crate::model::{Dialect, HostRoutes};
use crate::proxy_config::ProxyConfig;
use crate::resources::smi::TrafficSplitSpec;
use crate::resources::Document;
use crate::route::{Action, Backend, RoutePolicies, Rule};

/// `TrafficSplit` (v1alpha1 to v1alpha4).
pub fn translate_traffic_split(doc: &Document, seen: usize, out: &mut Translated) {
    let spec: TrafficSplitSpec = match doc.spec() {
        Ok(s) => s,
        Err(f) => return out.findings.extend(f),
    };
    let qualify = |name: &str| {
        mesh_host(name, &doc.namespace).unwrap_or_else(|| ProxyConfig::fqdn(name, &doc.namespace))
    };
    if let Some(m) = spec.matches.first() {
        let loc = match m.span().start() {
            Some(mark) => crate::finding::Location {
                file: Some(doc.file.clone()),
                line: Some(mark.line()),
                column: Some(mark.column()),
            },
            None => doc.location(),
        };
        out.findings.push(Finding::warning(
            codes::NOT_IMPLEMENTED,
            format!(
                "TrafficSplit {}/{}: matches (HTTPRouteGroup references) are not applied yet: the split applies to every request",
                doc.namespace, doc.name
            ),
            &loc,
        ));
    }
    let backends = spec
        .backends
        .iter()
        .map(|b| Backend {
            service: qualify(&b.service),
            subset: None,
            port: None,
            weight: b.weight.0,
            filters: None,
        })
        .collect();
    let host = qualify(&spec.service);
    out.spans
        .record(doc, Part::Host(host.clone()), locate(doc, &["spec", "service"]));
    out.spans
        .record(doc, Part::Routes(0), locate(doc, &["spec", "backends"]));
    for j in 0..spec.backends.len() {
        let at = locate(doc, &["spec", "backends", &j.to_string(), "service"]);
        out.spans.record(doc, Part::BackendHost(0, j), at);
    }
    out.mesh.routes.push(HostRoutes {
        dialect: Dialect::Smi,
        host,
        port: None,
        origin: origin(doc),
        rules: vec![Rule {
            origin: origin(doc),
            index: 0,
            name: None,
            matches: Vec::new(),
            action: Action::Forward(backends),
            policies: RoutePolicies::default(),
        }],
        creation_timestamp: doc.creation_timestamp.clone(),
        seen,
    });
}
