//! The checks behind `weft analyze`: what is wrong with a set of documents, each finding with
//! a code, a message, a location and (where one exists) a fix.
//!
//! Reading (YAML syntax) and translation (schema, unknown fields and kinds, not implemented)
//! report their own findings; this module adds the checks that need the whole model.

use std::collections::{BTreeMap, HashSet};

use crate::finding::{codes, Finding, Location, Severity};
use crate::model::{Dialect, HostRoutes, Mesh};
use crate::resources::{self, Loaded};
use crate::route::{Action, CompiledTable, RouteTable, Rule};
use crate::translate::{self, Translated};

/// Reads, translates and checks `paths`; every finding, sorted by file and line.
pub fn analyze_paths(paths: &[std::path::PathBuf]) -> (Translated, Vec<Finding>) {
    let loaded = resources::load_paths(paths);
    let translated = translate::translate(&loaded.documents);
    let findings = analyze(&loaded, &translated);
    (translated, findings)
}

/// Every finding for loaded and translated documents.
pub fn analyze(loaded: &Loaded, translated: &Translated) -> Vec<Finding> {
    let mut findings: Vec<Finding> = loaded
        .findings
        .iter()
        .chain(&translated.findings)
        .cloned()
        .collect();
    check_mesh(&translated.mesh, &mut findings);
    findings.sort_by(|a, b| (&a.file, a.line, a.column, a.code).cmp(&(&b.file, b.line, b.column, b.code)));
    findings.dedup();
    findings
}

/// The checks that need the whole model.
pub fn check_mesh(mesh: &Mesh, out: &mut Vec<Finding>) {
    for routes in &mesh.routes {
        check_references(mesh, routes, out);
        check_regexes(routes, out);
        check_weights(routes, out);
        check_shadowed(routes, out);
    }
    check_conflicts(mesh, out);
    check_strict_plaintext(mesh, out);
    translate::linkerd::check_profiles(mesh, out);
}

/// A client told to send plaintext (DestinationRule `tls.mode: DISABLE`) to a port whose
/// workloads require STRICT mTLS: every such request fails — Istio's classic 503.
fn check_strict_plaintext(mesh: &Mesh, out: &mut Vec<Finding>) {
    use crate::proxy_config::MtlsMode;
    for dr in mesh
        .destinations
        .iter()
        .filter(|d| d.tls_mode.as_deref() == Some("DISABLE"))
    {
        let Some(svc) = mesh.service(&dr.host) else {
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
                let at = Location {
                    file: dr.origin.file.clone(),
                    line: dr.origin.line,
                    column: None,
                };
                out.push(
                    Finding::error(
                        codes::STRICT_PLAINTEXT,
                        format!(
                            "DestinationRule {}/{} sends plaintext (tls.mode DISABLE) to {} port {}, but PeerAuthentication requires STRICT mTLS on workload {}: requests fail",
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

fn at(routes: &HostRoutes) -> Location {
    Location {
        file: routes.origin.file.clone(),
        line: routes.origin.line,
        column: None,
    }
}

fn describe(routes: &HostRoutes) -> String {
    // A ServiceProfile routes only through its dstOverrides; the rest of it still applies.
    let part = if routes.dialect == Dialect::LinkerdDstOverrides {
        " dstOverrides"
    } else {
        ""
    };
    format!(
        "{} {}/{}{part}",
        routes.origin.kind, routes.origin.namespace, routes.origin.name
    )
}

/// Backends naming a service or subset that does not exist: the classic 503.
fn check_references(mesh: &Mesh, routes: &HostRoutes, out: &mut Vec<Finding>) {
    if mesh.service(&routes.host).is_none() {
        out.push(
            Finding::warning(
                codes::MISSING_SERVICE,
                format!(
                    "{} routes host {} which is not a service in the mesh",
                    describe(routes),
                    routes.host
                ),
                &at(routes),
            )
            .with_fix(format!("declare a Service for {}", routes.host)),
        );
    }
    let mut seen = HashSet::new();
    for rule in &routes.rules {
        let Action::Forward(backends) = &rule.action else {
            continue;
        };
        for b in backends {
            if !seen.insert((b.service.clone(), b.subset.clone())) {
                continue;
            }
            if mesh.service(&b.service).is_none() {
                out.push(
                    Finding::error(
                        codes::MISSING_SERVICE,
                        format!(
                            "{} rule {} sends to {} which is not a service in the mesh",
                            describe(routes),
                            rule.index,
                            b.service
                        ),
                        &at(routes),
                    )
                    .with_fix(format!(
                        "declare a Service for {} or fix the destination host",
                        b.service
                    )),
                );
                continue;
            }
            if let Some(subset) = &b.subset {
                let defined = mesh
                    .destination(&b.service)
                    .is_some_and(|d| d.subsets.iter().any(|s| &s.name == subset));
                if !defined {
                    out.push(
                        Finding::error(
                            codes::MISSING_SUBSET,
                            format!(
                                "{} rule {} sends to subset {subset} of {}, which no DestinationRule defines: requests get 503 (UH)",
                                describe(routes),
                                rule.index,
                                b.service
                            ),
                            &at(routes),
                        )
                        .with_fix(format!("add subset {subset} to a DestinationRule for host {}", b.service)),
                    );
                }
            }
        }
    }
}

fn check_regexes(routes: &HostRoutes, out: &mut Vec<Finding>) {
    for rule in &routes.rules {
        let table = RouteTable {
            rules: vec![rule.clone()],
            profile: None,
        };
        if let Err(e) = CompiledTable::compile(&table, &routes.host) {
            out.push(
                Finding::error(
                    codes::BAD_REGEX,
                    format!("regex does not compile (RE2 syntax): {e}"),
                    &at(routes),
                )
                .with_fix("use RE2 syntax: no look-around or back-references"),
            );
        }
    }
}

/// Istio weights are relative, but a split that does not add up to 100 is usually a typo.
fn check_weights(routes: &HostRoutes, out: &mut Vec<Finding>) {
    if routes.dialect != Dialect::Istio {
        return;
    }
    for rule in &routes.rules {
        let Action::Forward(backends) = &rule.action else {
            continue;
        };
        if backends.len() < 2 {
            continue;
        }
        let total: u32 = backends.iter().map(|b| b.weight).sum();
        if total != 100 {
            out.push(
                Finding::warning(
                    codes::WEIGHTS,
                    format!(
                        "{} rule {}: weights add up to {total}, not 100 (Weft reads them as relative)",
                        describe(routes),
                        rule.index
                    ),
                    &at(routes),
                )
                .with_fix("make the weights add up to 100"),
            );
        }
    }
}

/// In first-match order, a rule after one that matches everything can never match.
fn check_shadowed(routes: &HostRoutes, out: &mut Vec<Finding>) {
    if routes.dialect != Dialect::Istio {
        return;
    }
    let catch_all = routes.rules.iter().position(matches_everything);
    if let Some(i) = catch_all {
        for later in &routes.rules[i + 1..] {
            out.push(
                Finding::warning(
                    codes::SHADOWED_RULE,
                    format!(
                        "{} rule {} can never match: rule {} before it matches every request",
                        describe(routes),
                        later.index,
                        routes.rules[i].index
                    ),
                    &at(routes),
                )
                .with_fix(format!(
                    "move rule {} last or give it a match",
                    routes.rules[i].index
                )),
            );
        }
    }
}

fn matches_everything(rule: &Rule) -> bool {
    rule.matches.is_empty()
        || rule.matches.iter().any(|m| {
            let prefix_all = matches!(&m.path, Some(crate::route::PathMatch::Prefix { value, .. }) if value == "/")
                || matches!(&m.path, Some(crate::route::PathMatch::SegmentPrefix { value }) if value == "/");
            (m.path.is_none() || prefix_all)
                && m.method.is_none()
                && m.headers.is_empty()
                && m.query.is_empty()
                && m.authority.is_none()
                && m.port.is_none()
                && m.source_labels.is_empty()
                && m.source_namespace.is_none()
        })
}

/// Two documents routing one host: dialect precedence decides, and the loser is reported.
fn check_conflicts(mesh: &Mesh, out: &mut Vec<Finding>) {
    let mut by_host: BTreeMap<&str, Vec<&HostRoutes>> = BTreeMap::new();
    for r in &mesh.routes {
        by_host.entry(r.host.as_str()).or_default().push(r);
    }
    for (host, routes) in by_host {
        let Some(winner) = routes.iter().map(|r| r.dialect).min() else {
            continue;
        };
        for r in &routes {
            if r.dialect != winner {
                let w = routes
                    .iter()
                    .find(|x| x.dialect == winner)
                    .map(|x| describe(x))
                    .unwrap_or_default();
                out.push(Finding::warning(
                    codes::CONFLICTING_ROUTES,
                    format!(
                        "{} is ignored for {host}: {w} routes it too and takes precedence",
                        describe(r)
                    ),
                    &at(r),
                ));
            }
        }
        // Istio does not merge two VirtualServices for one host: only the oldest applies.
        let istio: Vec<_> = routes
            .iter()
            .filter(|r| r.dialect == Dialect::Istio && winner == Dialect::Istio)
            .collect();
        if istio.len() > 1 {
            for r in &istio[1..] {
                out.push(Finding::new(
                    Severity::Warning,
                    codes::CONFLICTING_ROUTES,
                    format!(
                        "{} and {} both route {host}; rules are tried in document age order",
                        describe(istio[0]),
                        describe(r)
                    ),
                    &at(r),
                ));
            }
        }
    }
}

/// Exit status of `weft analyze`: 1 when any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}
