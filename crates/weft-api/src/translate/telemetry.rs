//! Istio `telemetry.istio.io` `Telemetry` -> the model: access logging (providers, filter,
//! side, disabled) and tracing (sampling percentage, provider, span reporting). Every value that cannot be used is an error at its line, and what it
//! would have limited is kept rather than lost: a filter that does not parse logs every
//! request, an unknown mode covers both sides.

use super::core::{locate, not_implemented};
use super::{origin, Translated};
use crate::finding::{codes, Finding};
use crate::model::{AccessLogRule, Telemetry, TracingRule};
use crate::proxy_config::{AccessLog, TrafficMode};
use crate::resources::telemetry as tel;
use crate::resources::Document;
use crate::telemetry::{provider, tracing_provider, Filter};

/// `Telemetry` -> `model::Telemetry`.
pub(super) fn telemetry(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: tel::TelemetrySpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    for (field, present, why) in [
        (
            "targetRef",
            spec.target_ref.is_some(),
            "select workloads with `selector`",
        ),
        (
            "targetRefs",
            spec.target_refs.is_some(),
            "select workloads with `selector`",
        ),
        (
            "metrics",
            spec.metrics.is_some(),
            "Istio's standard metrics are always on, and their overrides are not applied",
        ),
    ] {
        if present {
            out.findings.push(not_implemented(doc, &["spec", field], why));
        }
    }
    let error = |path: &[&str], message: String| {
        Finding::error(
            codes::SCHEMA,
            format!("Telemetry {}/{}: {message}", doc.namespace, doc.name),
            &locate(doc, path),
        )
    };
    let mut rules = Vec::new();
    for (i, rule) in spec.access_logging.iter().enumerate() {
        let i = i.to_string();
        let mode = match rule.matches.as_ref().and_then(|m| m.mode.as_deref()) {
            None => TrafficMode::ClientAndServer,
            Some(m) => {
                match m.to_ascii_uppercase().as_str() {
                    "CLIENT" => TrafficMode::Client,
                    "SERVER" => TrafficMode::Server,
                    "CLIENT_AND_SERVER" => TrafficMode::ClientAndServer,
                    _ => {
                        out.findings.push(error(
                        &["spec", "accessLogging", &i, "match", "mode"],
                        format!("unknown mode {m:?} (CLIENT, SERVER or CLIENT_AND_SERVER); both sides are logged"),
                    ));
                        TrafficMode::ClientAndServer
                    }
                }
            }
        };
        let filter = match rule.filter.as_ref().and_then(|f| f.expression.as_deref()) {
            None => None,
            Some(expr) => match Filter::parse(expr) {
                Ok(_) => Some(expr.to_string()),
                Err(e) => {
                    out.findings.push(error(
                        &["spec", "accessLogging", &i, "filter", "expression"],
                        format!("{e}; every request is logged"),
                    ));
                    None
                }
            },
        };
        // No provider named: Istio's default provider, `envoy`.
        let names: Vec<&str> = if rule.providers.is_empty() {
            vec!["envoy"]
        } else {
            rule.providers.iter().map(|p| p.name.as_str()).collect()
        };
        let mut logs = Vec::new();
        for (j, name) in names.iter().enumerate() {
            match provider(name) {
                Ok((format, file)) => logs.push(AccessLog {
                    format,
                    path: file,
                    mode,
                    filter: filter.clone(),
                }),
                Err(message) => {
                    let j = j.to_string();
                    out.findings.push(error(
                        &["spec", "accessLogging", &i, "providers", &j, "name"],
                        message,
                    ));
                }
            }
        }
        rules.push(AccessLogRule {
            mode,
            disabled: rule.disabled.unwrap_or(false),
            logs,
        });
    }
    let tracing = tracing(doc, &spec.tracing, out);
    out.mesh.telemetries.push(Telemetry {
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        selector: spec.selector.map(|s| s.match_labels),
        access_logging: rules,
        tracing,
        origin: origin(doc),
    });
}

/// The `tracing` list: Istio applies one entry per workload and side; Weft applies the first
/// to both sides and reports the others.
fn tracing(doc: &Document, entries: &[tel::Tracing], out: &mut Translated) -> Option<TracingRule> {
    let first = entries.first()?;
    for i in 1..entries.len() {
        out.findings.push(not_implemented(
            doc,
            &["spec", "tracing", &i.to_string()],
            "only the first tracing entry is applied, to both sides",
        ));
    }
    for (field, present) in [
        ("match", first.matches.is_some()),
        ("customTags", first.custom_tags.is_some()),
        (
            "useRequestIdForTraceSampling",
            first.use_request_id_for_trace_sampling.is_some(),
        ),
        ("enableIstioTags", first.enable_istio_tags.is_some()),
    ] {
        if present {
            out.findings.push(not_implemented(
                doc,
                &["spec", "tracing", "0", field],
                "the default applies",
            ));
        }
    }
    let mut rule = TracingRule {
        random_sampling_percentage: first.random_sampling_percentage,
        disable_span_reporting: first.disable_span_reporting,
        collector: None,
    };
    if let Some(p) = first
        .random_sampling_percentage
        .filter(|p| !(0.0..=100.0).contains(p))
    {
        out.findings.push(Finding::error(
            codes::SCHEMA,
            format!(
                "Telemetry {}/{}: randomSamplingPercentage {p} is not a percentage (0 to 100); the less specific setting applies",
                doc.namespace, doc.name
            ),
            &locate(doc, &["spec", "tracing", "0", "randomSamplingPercentage"]),
        ));
        rule.random_sampling_percentage = None;
    }
    if let Some(p) = first.providers.first() {
        match tracing_provider(&p.name) {
            Ok(collector) => rule.collector = Some(collector),
            Err(message) => out.findings.push(Finding::error(
                codes::SCHEMA,
                format!("Telemetry {}/{}: {message}", doc.namespace, doc.name),
                &locate(doc, &["spec", "tracing", "0", "providers", "0", "name"]),
            )),
        }
    }
    Some(rule)
}

#[cfg(test)]
mod tests {
    use crate::finding::codes;
    use crate::proxy_config::{AccessLogFormat, TrafficMode};
    use crate::resources::{parse_file, Loaded};
    use crate::translate::translate;

    const DOCS: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers:
    - name: envoy
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews}
  accessLogging:
  - match: {mode: SERVER}
    providers:
    - name: json:/var/log/reviews.json
    - name: otel
    filter:
      expression: response.code >= 400 || response.flags != 0
  - match: {mode: CLIENT}
    disabled: true
    filter:
      expression: response.size > 3
  tracing:
  - randomSamplingPercentage: 10
";

    #[test]
    fn access_logging_providers_filters_and_modes() {
        let mut loaded = Loaded::default();
        parse_file("t.yaml", DOCS, &mut loaded);
        let t = translate(&loaded.documents);
        let findings: Vec<(&str, Option<usize>)> = t.findings.iter().map(|f| (f.code, f.line)).collect();
        assert_eq!(
            findings,
            [(codes::SCHEMA, Some(19)), (codes::SCHEMA, Some(25)),],
            "{:#?}",
            t.findings
        );
        let [mesh, errors] = &t.mesh.telemetries[..] else {
            panic!("two documents: {:?}", t.mesh.telemetries)
        };
        assert!(mesh.selector.is_none());
        assert_eq!(mesh.access_logging[0].logs[0].format, AccessLogFormat::Text);
        assert_eq!(mesh.access_logging[0].logs[0].path, None);
        let server = &errors.access_logging[0];
        assert_eq!(server.mode, TrafficMode::Server);
        // The unknown provider is reported and left out; the JSON file stays.
        assert_eq!(server.logs.len(), 1);
        assert_eq!(server.logs[0].format, AccessLogFormat::Json);
        assert_eq!(
            server.logs[0].filter.as_deref(),
            Some("response.code >= 400 || response.flags != 0")
        );
        let client = &errors.access_logging[1];
        assert!(client.disabled);
        assert_eq!(client.mode, TrafficMode::Client);
        // The filter that does not parse is dropped: every request would be logged.
        assert_eq!(client.logs[0].filter, None);
        let tracing = errors.tracing.as_ref().expect("tracing");
        assert_eq!(tracing.random_sampling_percentage, Some(10.0));
        assert_eq!(tracing.collector, None, "no provider named");
        assert!(mesh.tracing.is_none());
    }
}
