//! The checks behind `weft analyze`: what is wrong with a set of documents, each finding with
//! a code, a message, a location and (where one exists) a fix.
//!
//! Reading (YAML syntax) and translation (schema, unknown fields and kinds, not implemented)
//! report their own findings; this module adds the checks that need the whole model.

mod covers;
mod istio;
mod istio_docs;
mod routes;
pub mod suppress;

use std::collections::HashMap;

use crate::finding::{codes, Finding, Severity};
use crate::model::{DestinationPolicy, Mesh, Service};
use crate::resources::{self, Loaded};
use crate::translate::{self, Part, Spans, Translated};

/// Reads, translates and checks `paths`; every finding, sorted by file and line.
pub fn analyze_paths(paths: &[std::path::PathBuf]) -> (Translated, Vec<Finding>) {
    analyze_paths_suppressing(paths, &[])
}

/// As [`analyze_paths`], without the findings that `suppressions` silence.
pub fn analyze_paths_suppressing(
    paths: &[std::path::PathBuf],
    suppressions: &[suppress::Suppression],
) -> (Translated, Vec<Finding>) {
    let loaded = resources::load_paths(paths);
    let translated = translate::translate(&loaded.documents);
    let findings = analyze(&loaded, &translated);
    let findings = suppress::apply(findings, &loaded.documents, suppressions);
    (translated, findings)
}

/// The findings as YAML, `findings:` holding the same objects as the JSON form.
pub fn findings_yaml(findings: &[Finding]) -> Result<String, serde_norway::Error> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        findings: &'a [Finding],
    }
    serde_norway::to_string(&Out { findings })
}

/// Every finding for loaded and translated documents, without those the documents' own
/// `weft.dev/analyze-suppress` annotations silence.
pub fn analyze(loaded: &Loaded, translated: &Translated) -> Vec<Finding> {
    let mut findings: Vec<Finding> = loaded
        .findings
        .iter()
        .chain(&translated.findings)
        .cloned()
        .collect();
    check_mesh(&translated.mesh, &translated.spans, &mut findings);
    istio_docs::check(&loaded.documents, &translated.mesh, &mut findings);
    findings.sort_by(|a, b| (&a.file, a.line, a.column, a.code).cmp(&(&b.file, b.line, b.column, b.code)));
    findings.dedup();
    suppress::apply(findings, &loaded.documents, &[])
}

/// The checks that need the whole model.
pub fn check_mesh(mesh: &Mesh, spans: &Spans, out: &mut Vec<Finding>) {
    let ix = Index::new(mesh);
    for r in &mesh.routes {
        routes::check_references(&ix, spans, r, out);
        routes::check_regexes(spans, r, out);
        routes::check_weights(spans, r, out);
        routes::check_shadowed(spans, r, out);
        istio::check_routes(&ix, spans, r, out);
    }
    istio::check_destination_rules(&ix, spans, out);
    routes::check_conflicts(&ix, spans, out);
    check_strict_plaintext(&ix, spans, out);
    translate::linkerd::check_profiles(mesh, out);
}

/// A client told to send plaintext (DestinationRule `tls.mode: DISABLE`) to a port whose
/// workloads require STRICT mTLS: every such request fails — Istio's classic 503.
fn check_strict_plaintext(ix: &Index<'_>, spans: &Spans, out: &mut Vec<Finding>) {
    let mesh = ix.mesh;
    use crate::proxy_config::MtlsMode;
    for dr in mesh
        .destinations
        .iter()
        .filter(|d| d.tls_mode.as_deref() == Some("DISABLE"))
    {
        let Some(svc) = ix.service(&dr.host) else {
            continue;
        };
        for w in mesh
            .workloads
            .iter()
            .filter(|w| w.namespace == svc.namespace && w.selected_by(&svc.selector))
        {
            let (mode, ports) = crate::authz::mtls_for(mesh, &w.namespace, &w.labels);
            for p in &svc.ports {
                if ports.get(&p.target_port).copied().unwrap_or(mode) != MtlsMode::Strict {
                    continue;
                }
                let at = spans.locate(&dr.origin, [Part::TlsMode]);
                out.push(
                    Finding::error(
                        codes::STRICT_PLAINTEXT,
                        format!(
                            "IST0113: DestinationRule {}/{} sends plaintext (tls.mode DISABLE) to {} port {}, but PeerAuthentication requires STRICT mTLS on workload {}: requests fail",
                            dr.origin.namespace, dr.origin.name, dr.host, p.port, w.name
                        ),
                        &at,
                    )
                    .with_fix("remove tls.mode DISABLE from the DestinationRule, or make the PeerAuthentication PERMISSIVE"),
                );
            }
        }
    }
}

/// Services and DestinationRules by host, so that each check looks a host up in constant time
/// (`Mesh::service` scans, which made analyzing many documents quadratic).
pub(crate) struct Index<'a> {
    pub mesh: &'a Mesh,
    services: HashMap<String, &'a Service>,
    destinations: HashMap<&'a str, &'a DestinationPolicy>,
}

impl<'a> Index<'a> {
    fn new(mesh: &'a Mesh) -> Self {
        let mut services = HashMap::with_capacity(mesh.services.len());
        for s in &mesh.services {
            services.entry(s.fqdn()).or_insert(s);
        }
        let mut destinations = HashMap::with_capacity(mesh.destinations.len());
        for d in &mesh.destinations {
            destinations.entry(d.host.as_str()).or_insert(d);
        }
        Self {
            mesh,
            services,
            destinations,
        }
    }

    /// As `Mesh::service`: the first Service with this fully qualified name.
    pub fn service(&self, fqdn: &str) -> Option<&'a Service> {
        self.services.get(fqdn).copied()
    }

    /// As `Mesh::destination`: the first DestinationRule for this host.
    pub fn destination(&self, fqdn: &str) -> Option<&'a DestinationPolicy> {
        self.destinations.get(fqdn).copied()
    }
}

/// Exit status of `weft analyze`: 1 when any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod istio_tests;
#[cfg(test)]
mod tests;
