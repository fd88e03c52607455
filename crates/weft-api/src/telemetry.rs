//! Istio's `Telemetry` resource, decided: which documents apply to a workload, the access-log
//! providers Weft has built in, and the filter language (`filter.expression`).
//!
//! Levels, as in Istio: a `Telemetry` without selector in a root namespace (`istio-system`,
//! `weft-system`) covers the mesh; one without selector elsewhere covers its namespace; one
//! with a selector covers the workloads it picks in its namespace. For each setting the most
//! specific document that sets it wins; within one level, the first in document order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::authz::ROOT_NAMESPACES;
use crate::model::{Mesh, Telemetry as TelemetryDoc};
use crate::proxy_config::{AccessLog, AccessLogFormat, Telemetry, Tracing, TrafficMode};

pub mod filter;

pub use filter::{Filter, FilterError, FilterInput};

/// The access-log providers every proxy has without configuration (Istio defines providers in
/// `meshConfig.extensionProviders`; Weft has no mesh config, so these are built in):
/// - `envoy`: Istio's default text format, on the proxy's stdout (Istio's own built-in name);
/// - `envoy-json` (or `json`): the JSON format on stdout;
/// - an absolute path (`/var/log/weft/access.log`) or `file:PATH`: text, appended to that file;
/// - `json:PATH`: JSON, appended to that file.
pub const PROVIDERS: &str = "envoy, envoy-json, an absolute file path, file:PATH or json:PATH";

/// The tracing providers every proxy has: OpenTelemetry over OTLP/gRPC, to the collector the
/// proxy's `OTEL_EXPORTER_OTLP_ENDPOINT` names (`otel`, `opentelemetry`, `otel-tracing`), or to
/// the one the name gives (`otel:http://collector:4317`, or the URL alone).
pub const TRACING_PROVIDERS: &str =
    "otel (the proxy's OTEL_EXPORTER_OTLP_ENDPOINT), otel:URL, or an http(s):// URL";

/// The collector a tracing provider name stands for (None: the proxy's environment).
pub fn tracing_provider(name: &str) -> Result<Option<String>, String> {
    let url = |u: &str| {
        if u.starts_with("http://") || u.starts_with("https://") {
            Ok(Some(u.to_string()))
        } else {
            Err(format!(
                "tracing provider {name:?}: the collector must be an http:// or https:// URL"
            ))
        }
    };
    match name {
        "otel" | "opentelemetry" | "otel-tracing" => Ok(None),
        _ if name.starts_with("http://") || name.starts_with("https://") => url(name),
        _ => match name.split_once(':') {
            Some(("otel", rest)) => url(rest),
            _ => Err(format!(
                "unknown tracing provider {name:?}: Weft exports OpenTelemetry over OTLP/gRPC only ({TRACING_PROVIDERS})"
            )),
        },
    }
}

/// The format and destination (None: stdout) a provider name stands for.
pub fn provider(name: &str) -> Result<(AccessLogFormat, Option<PathBuf>), String> {
    let file = |path: &str, format| {
        if path.starts_with('/') {
            Ok((format, Some(PathBuf::from(path))))
        } else {
            Err(format!(
                "access-log provider {name:?}: the file path must be absolute"
            ))
        }
    };
    match name {
        "envoy" => Ok((AccessLogFormat::Text, None)),
        "envoy-json" | "json" => Ok((AccessLogFormat::Json, None)),
        _ if name.starts_with('/') => file(name, AccessLogFormat::Text),
        _ => match name.split_once(':') {
            Some(("file", path)) => file(path, AccessLogFormat::Text),
            Some(("json", path)) => file(path, AccessLogFormat::Json),
            _ => Err(format!(
                "unknown access-log provider {name:?} (Weft's built-in providers: {PROVIDERS})"
            )),
        },
    }
}

/// The telemetry settings of a workload, from the documents that cover it. Each side (client,
/// server) is decided by the most specific document with an `accessLogging` rule for it; a
/// destination enabled for both sides is listed once. None when no document says anything of
/// access logs for this workload (the proxy's own default then applies to both sides).
pub fn for_workload(mesh: &Mesh, namespace: &str, labels: &BTreeMap<String, String>) -> Telemetry {
    let docs = &mesh.telemetries;
    let root = |t: &&TelemetryDoc| ROOT_NAMESPACES.contains(&t.namespace.as_str());
    let mesh_wide = docs.iter().filter(root).filter(|t| t.selector.is_none());
    let ns_wide = docs
        .iter()
        .filter(|t| t.namespace == namespace && t.selector.is_none() && !root(t));
    let workload = docs.iter().filter(|t| {
        t.namespace == namespace
            && t.selector
                .as_ref()
                .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    });
    // Most specific first.
    let ordered: Vec<&TelemetryDoc> = workload.chain(ns_wide).chain(mesh_wide).collect();
    let side = |client: bool| -> Option<Vec<AccessLog>> {
        let doc = ordered
            .iter()
            .find(|t| t.access_logging.iter().any(|r| r.mode.covers(client)))?;
        let logs = doc
            .access_logging
            .iter()
            .filter(|r| r.mode.covers(client) && !r.disabled)
            .flat_map(|r| r.logs.iter())
            .map(|l| AccessLog {
                mode: if client {
                    TrafficMode::Client
                } else {
                    TrafficMode::Server
                },
                ..l.clone()
            });
        Some(logs.collect())
    };
    let tracing = tracing_of(&ordered);
    let (client, server) = (side(true), side(false));
    if client.is_none() && server.is_none() {
        return Telemetry {
            access_logs: None,
            tracing,
        };
    }
    let mut logs = client.unwrap_or_default();
    for s in server.unwrap_or_default() {
        let same = |c: &AccessLog| {
            c.mode == TrafficMode::Client
                && (&c.format, &c.path, &c.filter) == (&s.format, &s.path, &s.filter)
        };
        match logs.iter_mut().find(|c| same(c)) {
            Some(c) => c.mode = TrafficMode::ClientAndServer,
            None => logs.push(s),
        }
    }
    Telemetry {
        access_logs: Some(logs),
        tracing,
    }
}

/// Tracing, field by field from the most specific document that sets each; None when no
/// document has a `tracing` entry.
fn tracing_of(ordered: &[&TelemetryDoc]) -> Option<Tracing> {
    let rules: Vec<_> = ordered.iter().filter_map(|t| t.tracing.as_ref()).collect();
    if rules.is_empty() {
        return None;
    }
    let mut out = Tracing::default();
    if let Some(p) = rules.iter().find_map(|r| r.random_sampling_percentage) {
        out.random_sampling_percentage = p;
    }
    if let Some(d) = rules.iter().find_map(|r| r.disable_span_reporting) {
        out.disable_span_reporting = d;
    }
    if let Some(c) = rules.iter().find_map(|r| r.collector.clone()) {
        out.collector = c;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccessLogRule;

    fn doc(ns: &str, selector: Option<(&str, &str)>, path: &str) -> TelemetryDoc {
        TelemetryDoc {
            name: "t".into(),
            namespace: ns.into(),
            selector: selector.map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
            access_logging: vec![AccessLogRule {
                mode: TrafficMode::ClientAndServer,
                disabled: false,
                logs: vec![AccessLog {
                    format: AccessLogFormat::Text,
                    path: Some(PathBuf::from(path)),
                    mode: TrafficMode::ClientAndServer,
                    filter: None,
                }],
            }],
            tracing: None,
            origin: Default::default(),
        }
    }

    fn path_for(mesh: &Mesh, ns: &str, app: &str) -> Option<String> {
        let labels = BTreeMap::from([("app".to_string(), app.to_string())]);
        for_workload(mesh, ns, &labels)
            .access_logs
            .and_then(|l| l.first()?.path.clone())
            .map(|p| p.display().to_string())
    }

    #[test]
    fn workload_over_namespace_over_mesh() {
        let mut mesh = Mesh::default();
        assert_eq!(path_for(&mesh, "default", "reviews"), None);
        mesh.telemetries.push(doc("istio-system", None, "/mesh"));
        mesh.telemetries.push(doc("default", None, "/ns"));
        mesh.telemetries
            .push(doc("default", Some(("app", "reviews")), "/reviews"));
        // A selector in a root namespace picks workloads there only, not the mesh.
        mesh.telemetries
            .push(doc("istio-system", Some(("app", "ratings")), "/nope"));
        assert_eq!(path_for(&mesh, "default", "reviews").as_deref(), Some("/reviews"));
        assert_eq!(path_for(&mesh, "default", "ratings").as_deref(), Some("/ns"));
        assert_eq!(path_for(&mesh, "shop", "ratings").as_deref(), Some("/mesh"));
    }

    #[test]
    fn each_side_is_decided_by_the_most_specific_document_for_it() {
        let mut mesh = Mesh::default();
        mesh.telemetries.push(doc("istio-system", None, "/mesh"));
        // The namespace turns the client side off; the server side still follows the mesh.
        let mut off = doc("default", None, "/unused");
        off.access_logging[0].mode = TrafficMode::Client;
        off.access_logging[0].disabled = true;
        mesh.telemetries.push(off);
        let labels = BTreeMap::new();
        let logs = for_workload(&mesh, "default", &labels)
            .access_logs
            .expect("decided");
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].mode, TrafficMode::Server);
        assert_eq!(logs[0].path, Some(PathBuf::from("/mesh")));
        // Elsewhere the mesh document covers both sides, listed once.
        let logs = for_workload(&mesh, "shop", &labels).access_logs.expect("decided");
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].mode, TrafficMode::ClientAndServer);
    }

    #[test]
    fn tracing_fields_come_from_the_most_specific_document_that_sets_each() {
        use crate::model::TracingRule;
        let mut mesh = Mesh::default();
        let mut mesh_doc = doc("istio-system", None, "/mesh");
        mesh_doc.access_logging.clear();
        mesh_doc.tracing = Some(TracingRule {
            random_sampling_percentage: Some(5.0),
            disable_span_reporting: None,
            collector: Some(Some("http://collector:4317".into())),
        });
        let mut workload_doc = doc("default", Some(("app", "reviews")), "/w");
        workload_doc.access_logging.clear();
        workload_doc.tracing = Some(TracingRule {
            random_sampling_percentage: Some(100.0),
            ..TracingRule::default()
        });
        mesh.telemetries.extend([mesh_doc, workload_doc]);
        let labels = BTreeMap::from([("app".to_string(), "reviews".to_string())]);
        let t = for_workload(&mesh, "default", &labels);
        assert_eq!(t.access_logs, None);
        let tracing = t.tracing.expect("decided");
        assert_eq!(tracing.random_sampling_percentage, 100.0);
        assert_eq!(tracing.collector.as_deref(), Some("http://collector:4317"));
        let other = for_workload(&mesh, "default", &BTreeMap::new())
            .tracing
            .expect("mesh");
        assert_eq!(other.random_sampling_percentage, 5.0);
        assert_eq!(tracing_provider("otel"), Ok(None));
        assert_eq!(
            tracing_provider("otel:http://c:4317"),
            Ok(Some("http://c:4317".to_string()))
        );
        assert!(tracing_provider("zipkin").is_err());
        assert!(tracing_provider("otel:c:4317").is_err());
    }

    #[test]
    fn built_in_providers() {
        assert_eq!(provider("envoy"), Ok((AccessLogFormat::Text, None)));
        assert_eq!(provider("envoy-json"), Ok((AccessLogFormat::Json, None)));
        assert_eq!(
            provider("/var/log/a.log"),
            Ok((AccessLogFormat::Text, Some(PathBuf::from("/var/log/a.log"))))
        );
        assert_eq!(
            provider("json:/tmp/a.json"),
            Ok((AccessLogFormat::Json, Some(PathBuf::from("/tmp/a.json"))))
        );
        assert!(provider("otel").is_err());
        assert!(provider("file:relative.log").is_err());
    }

    #[test]
    fn telemetry_travels_as_its_own_policy_resource_and_comes_back_whole() {
        use crate::discovery::{assemble, resources_of, state_version, Rendered};
        use crate::proto::DiscoveryResponse;
        let push = |resources: &[Rendered]| DiscoveryResponse {
            version: state_version(resources.iter().map(|r| (&r.key, r.version))),
            nonce: "n".into(),
            resources: resources.iter().map(Rendered::to_proto).collect(),
            removed: Vec::new(),
            full_state: true,
            more: false,
        };
        let mut config = crate::proxy_config::ProxyConfig::default();
        let plain = resources_of(&config).expect("render");
        // Nothing decided: no resource, so configs without documents are pushed as before.
        assert!(plain.iter().all(|r| r.key.to_string() != "Policy/telemetry"));
        config.telemetry.access_logs = Some(vec![AccessLog {
            format: AccessLogFormat::Json,
            path: Some(PathBuf::from("/var/log/a.json")),
            mode: TrafficMode::Server,
            filter: Some("response.code >= 500".into()),
        }]);
        let resources = resources_of(&config).expect("render");
        assert!(resources.iter().any(|r| r.key.to_string() == "Policy/telemetry"));
        let (_, assembled) = assemble(None, &push(&resources)).expect("assembles");
        assert_eq!(assembled.telemetry, config.telemetry);
        // A pushed filter the proxy cannot run refuses the push.
        config.telemetry.access_logs = Some(vec![AccessLog {
            filter: Some("response.code >".into()),
            ..config.telemetry.access_logs.expect("set")[0].clone()
        }]);
        let resources = resources_of(&config).expect("render");
        let err = assemble(None, &push(&resources)).expect_err("refused");
        assert!(
            err.to_string().contains("telemetry.accessLogs[0].filter"),
            "{err}"
        );
    }
}
