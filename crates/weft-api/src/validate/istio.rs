//! Istio's analyzers on the translated model, each finding carrying the Istio code in its
//! message so users can search for it: destination ports (IST0112, IST0101 host:port), mirrors
//! (IST0101), DestinationRules for unknown hosts (IST0174), unreachable rules and ineffective
//! matches (IST0130, IST0131).

use crate::finding::{codes, Finding};
use crate::model::{Dialect, HostRoutes};
use crate::route::{Action, Rule};
use crate::translate::{Part, Spans};

use super::covers::covers;
use super::routes::{describe, matches_everything};
use super::Index;

/// The checks on one Istio VirtualService's routes.
pub(super) fn check_routes(ix: &Index<'_>, spans: &Spans, routes: &HostRoutes, out: &mut Vec<Finding>) {
    if routes.dialect != Dialect::Istio {
        return;
    }
    for rule in &routes.rules {
        check_ports(ix, spans, routes, rule, out);
        check_mirrors(ix, spans, routes, rule, out);
    }
    check_unreachable(spans, routes, out);
}

/// A destination without a port to a multi-port service (IST0112); a port the service does
/// not expose (IST0101).
fn check_ports(ix: &Index<'_>, spans: &Spans, routes: &HostRoutes, rule: &Rule, out: &mut Vec<Finding>) {
    let Action::Forward(backends) = &rule.action else {
        return;
    };
    let i = rule.index;
    for (j, b) in backends.iter().enumerate() {
        let Some(svc) = ix.service(&b.service) else {
            continue;
        };
        let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
        match b.port {
            None if svc.ports.len() > 1 => {
                let at = spans.locate(&routes.origin, [Part::BackendHost(i, j), Part::Rule(i)]);
                out.push(
                    Finding::error(
                        codes::PORT_REQUIRED,
                        format!(
                            "IST0112: {} rule {i} routes to {} which exposes several ports ({}): name one in the destination",
                            describe(routes),
                            b.service,
                            ports.join(", ")
                        ),
                        &at,
                    )
                    .with_fix(format!("add `port: {{number: {}}}` to the destination", ports[0])),
                );
            }
            Some(port) if !svc.ports.iter().any(|p| p.port == port) => {
                let at = spans.locate(
                    &routes.origin,
                    [Part::BackendPort(i, j), Part::BackendHost(i, j), Part::Rule(i)],
                );
                out.push(
                    Finding::error(
                        codes::MISSING_PORT,
                        format!(
                            "IST0101: {} rule {i}: referenced host:port not found: {}:{port} (the service exposes {})",
                            describe(routes),
                            b.service,
                            ports.join(", ")
                        ),
                        &at,
                    )
                    .with_fix(format!("use one of the service's ports: {}", ports.join(", "))),
                );
            }
            _ => {}
        }
    }
}

/// A mirror to a host that is not a service, or to a subset no DestinationRule defines.
fn check_mirrors(ix: &Index<'_>, spans: &Spans, routes: &HostRoutes, rule: &Rule, out: &mut Vec<Finding>) {
    let i = rule.index;
    for (k, m) in rule.policies.mirrors.iter().enumerate() {
        let at = spans.locate(&routes.origin, [Part::Mirror(i, k), Part::Rule(i)]);
        if ix.service(&m.service).is_none() {
            out.push(
                Finding::error(
                    codes::MISSING_SERVICE,
                    format!(
                        "IST0101: {} rule {i}: referenced mirror host not found: {}",
                        describe(routes),
                        m.service
                    ),
                    &at,
                )
                .with_fix(format!(
                    "declare a Service for {} or fix the mirror host",
                    m.service
                )),
            );
            continue;
        }
        if let Some(subset) = &m.subset {
            let defined = ix
                .destination(&m.service)
                .is_some_and(|d| d.subsets.iter().any(|s| &s.name == subset));
            if !defined {
                out.push(Finding::error(
                    codes::MISSING_SUBSET,
                    format!(
                        "IST0101: {} rule {i}: referenced mirror subset not found: {subset} of {}",
                        describe(routes),
                        m.service
                    ),
                    &at,
                ));
            }
        }
    }
}

/// A rule no request reaches (IST0130): an earlier rule matches every request, or each of its
/// matches is covered by (the same as, or broader than) a match of an earlier rule. A single
/// match covered by an earlier rule's, or by an earlier match of its own rule, is IST0131.
/// (A rule after a match-all is also SHADOWED_RULE, which says so; this adds the duplicates.)
fn check_unreachable(spans: &Spans, routes: &HostRoutes, out: &mut Vec<Finding>) {
    let catch_all = routes.rules.iter().position(matches_everything);
    for (n, rule) in routes.rules.iter().enumerate() {
        if catch_all.is_some_and(|c| c < n) || rule.matches.is_empty() {
            continue;
        }
        let earlier = &routes.rules[..n];
        let taken: Vec<(usize, Option<usize>)> = rule
            .matches
            .iter()
            .enumerate()
            .map(|(m, want)| {
                let by = earlier
                    .iter()
                    .find(|r| r.matches.iter().any(|x| covers(x, want)))
                    .map(|r| r.index)
                    .or_else(|| {
                        rule.matches[..m]
                            .iter()
                            .any(|x| covers(x, want))
                            .then_some(rule.index)
                    });
                (m, by)
            })
            .collect();
        let i = rule.index;
        if taken.iter().all(|(_, by)| by.is_some_and(|by| by != i)) {
            out.push(
                Finding::warning(
                    codes::SHADOWED_RULE,
                    format!(
                        "IST0130: {} rule {i} is not used: each of its matches is taken by an earlier rule",
                        describe(routes)
                    ),
                    &spans.locate(&routes.origin, [Part::Rule(i)]),
                )
                .with_fix(format!("remove rule {i} or change its matches")),
            );
            continue;
        }
        for (m, by) in taken {
            if let Some(by) = by {
                out.push(Finding::info(
                    codes::INEFFECTIVE_MATCH,
                    format!(
                        "IST0131: {} rule {i} match {m} is not used: rule {by} has the same match or a broader one before it",
                        describe(routes)
                    ),
                    &spans.locate(&routes.origin, [Part::Match(i, m), Part::Rule(i)]),
                ));
            }
        }
    }
}

/// A DestinationRule for a host that is not a service in the mesh: its subsets and policy
/// apply to nothing (IST0174).
pub(super) fn check_destination_rules(ix: &Index<'_>, spans: &Spans, out: &mut Vec<Finding>) {
    for dr in &ix.mesh.destinations {
        if ix.service(&dr.host).is_none() {
            let at = spans.locate(&dr.origin, [Part::Host(dr.host.clone())]);
            out.push(
                Finding::warning(
                    codes::UNKNOWN_RULE_HOST,
                    format!(
                        "IST0174: DestinationRule {}/{} is for host {} which is not a service in the mesh: it applies to nothing",
                        dr.origin.namespace, dr.origin.name, dr.host
                    ),
                    &at,
                )
                .with_fix(format!("declare a Service for {} or fix spec.host", dr.host)),
            );
        }
    }
}
