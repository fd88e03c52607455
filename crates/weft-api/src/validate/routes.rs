//! Checks on routing: references to services and subsets, regexes, weights, shadowed rules and
//! two documents routing one host. Each finding is placed at the field that causes it (looked
//! up in the translator's `Spans`), falling back to the rule or the document.

use std::collections::{BTreeMap, HashSet};

use crate::finding::{codes, Finding, Location, Severity};
use crate::model::{Dialect, HostRoutes};
use crate::route::{Action, CompiledTable, RouteTable, Rule};
use crate::translate::{Part, Spans};

use super::Index;

/// The rule itself: its own line (every dialect records it in `Rule::origin`), a column when
/// the translator recorded one.
fn rule_at(spans: &Spans, routes: &HostRoutes, rule: &Rule) -> Location {
    spans
        .get(&routes.origin, Part::Rule(rule.index))
        .cloned()
        .unwrap_or_else(|| Location {
            file: rule.origin.file.clone(),
            line: rule.origin.line,
            column: None,
        })
}

/// `part` of the rule when recorded, else the rule.
fn part_at(spans: &Spans, routes: &HostRoutes, rule: &Rule, parts: &[Part]) -> Location {
    parts
        .iter()
        .find_map(|p| spans.get(&routes.origin, p.clone()).cloned())
        .unwrap_or_else(|| rule_at(spans, routes, rule))
}

fn host_at(spans: &Spans, routes: &HostRoutes) -> Location {
    spans.locate(&routes.origin, [Part::Host(routes.host.clone())])
}

/// The document named in a reference finding, after Istio's code for an Istio document.
fn ist0101(routes: &HostRoutes) -> String {
    match routes.dialect {
        Dialect::Istio => format!("IST0101: {}", describe(routes)),
        _ => describe(routes),
    }
}

pub(super) fn describe(routes: &HostRoutes) -> String {
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
pub(super) fn check_references(ix: &Index<'_>, spans: &Spans, routes: &HostRoutes, out: &mut Vec<Finding>) {
    if ix.service(&routes.host).is_none() {
        out.push(
            Finding::warning(
                codes::MISSING_SERVICE,
                format!(
                    "{} routes host {} which is not a service in the mesh",
                    describe(routes),
                    routes.host
                ),
                &host_at(spans, routes),
            )
            .with_fix(format!("declare a Service for {}", routes.host)),
        );
    }
    let mut seen = HashSet::new();
    for rule in &routes.rules {
        let Action::Forward(backends) = &rule.action else {
            continue;
        };
        for (j, b) in backends.iter().enumerate() {
            if !seen.insert((b.service.clone(), b.subset.clone())) {
                continue;
            }
            let (i, what) = (rule.index, ist0101(routes));
            if ix.service(&b.service).is_none() {
                let at = part_at(spans, routes, rule, &[Part::BackendHost(i, j)]);
                out.push(
                    Finding::error(
                        codes::MISSING_SERVICE,
                        format!(
                            "{what} rule {i} sends to {} which is not a service in the mesh",
                            b.service
                        ),
                        &at,
                    )
                    .with_fix(format!(
                        "declare a Service for {} or fix the destination host",
                        b.service
                    )),
                );
                continue;
            }
            if let Some(subset) = &b.subset {
                let defined = ix
                    .destination(&b.service)
                    .is_some_and(|d| d.subsets.iter().any(|s| &s.name == subset));
                if !defined {
                    let at = part_at(
                        spans,
                        routes,
                        rule,
                        &[Part::Subset(i, j), Part::BackendHost(i, j)],
                    );
                    out.push(
                        Finding::error(
                            codes::MISSING_SUBSET,
                            format!(
                                "{what} rule {i} sends to subset {subset} of {}, which no DestinationRule defines: requests get 503 (UH)",
                                b.service
                            ),
                            &at,
                        )
                        .with_fix(format!("add subset {subset} to a DestinationRule for host {}", b.service)),
                    );
                }
            }
        }
    }
}

/// Each regex that does not compile, at its value.
pub(super) fn check_regexes(spans: &Spans, routes: &HostRoutes, out: &mut Vec<Finding>) {
    for rule in &routes.rules {
        let table = RouteTable {
            rules: vec![rule.clone()],
            profile: None,
        };
        if let Err(e) = CompiledTable::compile(&table, &routes.host) {
            let at = part_at(spans, routes, rule, &[Part::Regex(rule.index, e.regex.clone())]);
            out.push(
                Finding::error(
                    codes::BAD_REGEX,
                    format!("regex does not compile (RE2 syntax): {e}"),
                    &at,
                )
                .with_fix("use RE2 syntax: no look-around or back-references"),
            );
        }
    }
}

/// Istio weights are relative, but a split that does not add up to 100 is usually a typo.
pub(super) fn check_weights(spans: &Spans, routes: &HostRoutes, out: &mut Vec<Finding>) {
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
                    &part_at(spans, routes, rule, &[Part::Routes(rule.index)]),
                )
                .with_fix("make the weights add up to 100"),
            );
        }
    }
}

/// In first-match order, a rule after one that matches everything can never match.
pub(super) fn check_shadowed(spans: &Spans, routes: &HostRoutes, out: &mut Vec<Finding>) {
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
                        "IST0130: {} rule {} can never match: rule {} before it matches every request",
                        describe(routes),
                        later.index,
                        routes.rules[i].index
                    ),
                    &rule_at(spans, routes, later),
                )
                .with_fix(format!(
                    "move rule {} last or give it a match",
                    routes.rules[i].index
                )),
            );
        }
    }
}

pub(super) fn matches_everything(rule: &Rule) -> bool {
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

/// Two documents routing one host: dialect precedence decides, and the loser is reported at
/// the entry naming the host.
pub(super) fn check_conflicts(ix: &Index<'_>, spans: &Spans, out: &mut Vec<Finding>) {
    let mut by_host: BTreeMap<&str, Vec<&HostRoutes>> = BTreeMap::new();
    for r in &ix.mesh.routes {
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
                    &host_at(spans, r),
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
                        "IST0109: {} and {} both route {host}; rules are tried in document age order",
                        describe(istio[0]),
                        describe(r)
                    ),
                    &host_at(spans, r),
                ));
            }
        }
    }
}
