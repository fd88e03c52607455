//! Linkerd `ServiceProfile` -> a `HostProfile` (named routes with timeouts and retries, and the
//! service's retry budget) plus, for legacy `dstOverrides`, a split `HostRoutes`.
//!
//! A ServiceProfile does not choose destinations: its routes add a name, a timeout and retries
//! to whatever rule decides where a request goes (see `route::Profile`). Values that cannot be
//! read are `SCHEMA`/`BAD_REGEX` errors at their line and are left out; the rest still applies.

mod annotations;

pub(super) use annotations::apply as apply_annotations;

use super::core::{locate, not_implemented};
use super::istio::parse_duration;
use super::{mesh_host, origin, Translated};
use crate::finding::{codes, Finding, Location};
use crate::model::{Dialect, HostProfile, HostRoutes, Mesh};
use crate::proxy_config::{split_host, CLUSTER_DOMAIN};
use crate::resources::linkerd::{self as sp, ServiceProfileSpec};
use crate::resources::Document;
use crate::route::{
    Action, Backend, Profile, ProfileRoute, RetryBudget, RouteCondition, RoutePolicies, Rule,
};

/// Linkerd's budget when a ServiceProfile names none: retries up to 20% of requests, plus 10
/// a second, counted over 10 s.
pub const DEFAULT_RETRY_BUDGET: RetryBudget = RetryBudget {
    ratio: 0.2,
    min_per_second: 10,
    ttl_ms: 10_000,
};

/// `ServiceProfile` (`linkerd.io/v1alpha2`).
pub(super) fn service_profile(doc: &Document, seen: usize, out: &mut Translated) {
    let spec: ServiceProfileSpec = match doc.spec() {
        Ok(s) => s,
        Err(f) => return out.findings.extend(f),
    };
    // Read on even when the name applies to nothing: every bad field is reported at once.
    let host = profile_host(doc, out);
    if spec.opaque_ports.is_some() {
        out.findings.push(not_implemented(
            doc,
            &["spec", "opaquePorts"],
            "declare opaque ports with appProtocol: tcp on the Service port",
        ));
    }
    let mut routes = Vec::with_capacity(spec.routes.len());
    for (i, r) in spec.routes.iter().enumerate() {
        if let Some(route) = profile_route(doc, i, r, out) {
            if routes.iter().any(|x: &ProfileRoute| x.name == route.name) {
                out.findings.push(Finding::warning(
                    codes::DUPLICATE,
                    format!(
                        "ServiceProfile {}/{}: two routes are named {:?}; the first that matches a request names it",
                        doc.namespace, doc.name, route.name
                    ),
                    &locate(doc, &["spec", "routes", &i.to_string(), "name"]),
                ));
            }
            routes.push(route);
        }
    }
    let retry_budget = match &spec.retry_budget {
        None => DEFAULT_RETRY_BUDGET,
        Some(b) => retry_budget(doc, b, out).unwrap_or(DEFAULT_RETRY_BUDGET),
    };
    let Some(host) = host else {
        return;
    };
    out.mesh.profiles.push(HostProfile {
        host: host.clone(),
        origin: origin(doc),
        profile: Profile {
            origin: Some(origin(doc)),
            routes,
            retry_budget: Some(retry_budget),
            timeout_ms: None,
            retries: None,
        },
    });
    dst_overrides(doc, seen, &host, &spec.dst_overrides, out);
}

/// The FQDN a profile applies to: its `metadata.name`. Linkerd looks profiles up by the
/// request's fully qualified authority, so any other name never applies; it is reported.
fn profile_host(doc: &Document, out: &mut Translated) -> Option<String> {
    let name = doc.name.as_str();
    let fqdn = mesh_host(name, &doc.namespace);
    if fqdn.as_deref() == Some(name) {
        if split_host(name, &doc.namespace).is_some_and(|(_, ns)| ns != doc.namespace) {
            out.findings.push(not_implemented(
                doc,
                &["metadata", "namespace"],
                &format!(
                    "a ServiceProfile outside {name}'s namespace applies in Linkerd only to clients of namespace {}; Weft applies it to every client",
                    doc.namespace
                ),
            ));
        }
        return fqdn;
    }
    let fix = match fqdn {
        Some(f) => format!("name it {f}"),
        None => format!("name it <service>.<namespace>.svc.{CLUSTER_DOMAIN}"),
    };
    out.findings.push(
        Finding::warning(
            codes::SCHEMA,
            format!(
                "ServiceProfile {}/{name}: the name must be the fully qualified name of a mesh service \
                 (<service>.<namespace>.svc.{CLUSTER_DOMAIN}); this profile applies to no request",
                doc.namespace
            ),
            &locate(doc, &["metadata", "name"]),
        )
        .with_fix(fix),
    );
    None
}

/// `spec.routes[i]`; None when its condition cannot be read (reported).
fn profile_route(
    doc: &Document,
    i: usize,
    r: &sp::ProfileRoute,
    out: &mut Translated,
) -> Option<ProfileRoute> {
    let idx = i.to_string();
    let at = |tail: &[&str]| {
        let mut path = vec!["spec", "routes", idx.as_str()];
        path.extend_from_slice(tail);
        locate(doc, &path)
    };
    let condition = match condition(&r.condition) {
        Ok(c) => c,
        Err(problem) => {
            let (code, message) = match problem {
                ConditionError::Empty => (
                    codes::SCHEMA,
                    "a condition needs pathRegex, method, all, any or not".to_string(),
                ),
                ConditionError::Regex(re, e) => (
                    codes::BAD_REGEX,
                    format!("pathRegex {re:?} does not compile (RE2 syntax): {e}"),
                ),
            };
            out.findings.push(Finding::error(
                code,
                format!(
                    "ServiceProfile {}/{} route {:?}: {message}; the route is left out",
                    doc.namespace, doc.name, r.name
                ),
                &at(&["condition"]),
            ));
            return None;
        }
    };
    let timeout_ms = r.timeout.as_deref().and_then(|t| match parse_duration(t) {
        Some(ms) if ms > 0 => Some(ms),
        _ => {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "ServiceProfile {}/{} route {:?}: timeout {t:?} is not a duration such as 300ms, 1.5s or 1m; the route has no timeout",
                    doc.namespace, doc.name, r.name
                ),
                &at(&["timeout"]),
            ));
            None
        }
    });
    if let Some(m) = lower_case_method(&r.condition) {
        out.findings.push(
            Finding::warning(
                codes::SCHEMA,
                format!(
                    "ServiceProfile {}/{} route {:?}: method {m:?} never matches: methods are case-sensitive",
                    doc.namespace, doc.name, r.name
                ),
                &at(&["condition"]),
            )
            .with_fix(format!("method: {}", m.to_ascii_uppercase())),
        );
    }
    for c in dropped_classes(&r.response_classes) {
        out.findings.push(Finding::warning(
            codes::SCHEMA,
            format!(
                "ServiceProfile {}/{} route {:?}: responseClasses[{c}] is ignored, as Linkerd's proxy ignores it: a status range needs both min and max",
                doc.namespace, doc.name, r.name
            ),
            &at(&["responseClasses", &c.to_string(), "condition"]),
        ));
    }
    Some(ProfileRoute {
        name: r.name.clone(),
        condition,
        timeout_ms,
        retryable: r.is_retryable,
        retry_on: failure_classes(&r.response_classes),
    })
}

enum ConditionError {
    Empty,
    Regex(String, regex::Error),
}

/// A request match: every field given must hold (Linkerd reads several as `all`).
fn condition(m: &sp::RequestMatch) -> Result<RouteCondition, ConditionError> {
    let mut all = Vec::new();
    if let Some(re) = &m.path_regex {
        // Linkerd matches the whole path; the route table anchors the same way.
        regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| ConditionError::Regex(re.clone(), e))?;
        all.push(RouteCondition::PathRegex(re.clone()));
    }
    if let Some(method) = &m.method {
        all.push(RouteCondition::Method(method.clone()));
    }
    if !m.all.is_empty() {
        all.push(RouteCondition::All(
            m.all.iter().map(condition).collect::<Result<_, _>>()?,
        ));
    }
    if !m.any.is_empty() {
        all.push(RouteCondition::Any(
            m.any.iter().map(condition).collect::<Result<_, _>>()?,
        ));
    }
    if let Some(not) = &m.not {
        all.push(RouteCondition::Not(Box::new(condition(not)?)));
    }
    match all.len() {
        0 => Err(ConditionError::Empty),
        1 => Ok(all.remove(0)),
        _ => Ok(RouteCondition::All(all)),
    }
}

/// A method written in lower case anywhere in a condition (`get` is not `GET`).
fn lower_case_method(m: &sp::RequestMatch) -> Option<&str> {
    m.method
        .as_deref()
        .filter(|x| x.bytes().any(|b| b.is_ascii_lowercase()))
        .or_else(|| m.all.iter().chain(&m.any).find_map(lower_case_method))
        .or_else(|| m.not.as_deref().and_then(lower_case_method))
}

/// The statuses that are failures under `responseClasses` (the first class whose condition
/// holds decides; none: 5xx is a failure), in the retry vocabulary: `5xx` or ranges `a-b`.
///
/// Conditions are read as linkerd2-proxy reads them once the destination controller has
/// passed them on unchanged (`convert_rsp_match` in `linkerd/service-profiles/src/proto.rs`):
/// a status range needs both `min` and `max` (an absent bound arrives as 0, which is no status
/// code, and the range is dropped); an `all` or `any` keeps the conditions it has left and is
/// dropped when none is; a `not` of a dropped condition is dropped; a class whose condition is
/// dropped is ignored. [`dropped_classes`] reports which.
pub fn failure_classes(classes: &[sp::ResponseClass]) -> Vec<String> {
    let failure = |code: u16| {
        classes
            .iter()
            .find(|c| response_holds(&c.condition, code) == Some(true))
            .map_or(code >= 500, |c| c.is_failure)
    };
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for code in 100..=599u16 {
        if !failure(code) {
            continue;
        }
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == code => *end = code,
            _ => ranges.push((code, code)),
        }
    }
    if ranges == [(500, 599)] {
        return vec!["5xx".to_string()];
    }
    ranges
        .into_iter()
        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect()
}

/// Indexes of the classes linkerd2-proxy ignores, their condition being dropped whole (see
/// [`failure_classes`]).
pub fn dropped_classes(classes: &[sp::ResponseClass]) -> Vec<usize> {
    (0..classes.len())
        .filter(|&i| response_holds(&classes[i].condition, 200).is_none())
        .collect()
}

/// Whether `code` meets the condition, or None when linkerd2-proxy drops the condition. Several
/// fields of one match are all required (the controller sends them as one `all`).
fn response_holds(m: &sp::ResponseMatch, code: u16) -> Option<bool> {
    // What `http::StatusCode::from_u16` accepts; 0 stands for an absent bound.
    let status_code = |x: Option<u16>| x.filter(|c| (100..=999).contains(c));
    let mut parts: Vec<bool> = Vec::new();
    if let Some(r) = &m.status {
        if let (Some(min), Some(max)) = (status_code(r.min), status_code(r.max)) {
            parts.push((min..=max).contains(&code));
        }
    }
    let all: Vec<bool> = m.all.iter().filter_map(|c| response_holds(c, code)).collect();
    if !all.is_empty() {
        parts.push(all.iter().all(|&b| b));
    }
    let any: Vec<bool> = m.any.iter().filter_map(|c| response_holds(c, code)).collect();
    if !any.is_empty() {
        parts.push(any.iter().any(|&b| b));
    }
    if let Some(not) = m.not.as_deref().and_then(|c| response_holds(c, code)) {
        parts.push(!not);
    }
    (!parts.is_empty()).then(|| parts.iter().all(|&b| b))
}

fn retry_budget(doc: &Document, b: &sp::RetryBudget, out: &mut Translated) -> Option<RetryBudget> {
    let mut bad = |field: &str, what: String| {
        out.findings.push(Finding::error(
            codes::SCHEMA,
            format!(
                "ServiceProfile {}/{}: retryBudget.{field}: {what}; Linkerd's default budget (20%, 10/s, 10s) is used",
                doc.namespace, doc.name
            ),
            &locate(doc, &["spec", "retryBudget", field]),
        ));
    };
    // The ranges Linkerd's proxy accepts; outside them it drops the budget.
    if !(0.0..=1000.0).contains(&b.retry_ratio) {
        bad(
            "retryRatio",
            format!("{} is not a ratio from 0 to 1000", b.retry_ratio),
        );
        return None;
    }
    let Some(ttl_ms) = parse_duration(&b.ttl).filter(|ms| (1_000..=60_000).contains(ms)) else {
        bad("ttl", format!("{:?} is not a duration from 1s to 60s", b.ttl));
        return None;
    };
    Some(RetryBudget {
        ratio: b.retry_ratio,
        min_per_second: b.min_retries_per_second,
        ttl_ms,
    })
}

/// Legacy `dstOverrides`: a weighted split of the profile's host, ranked after SMI.
fn dst_overrides(
    doc: &Document,
    seen: usize,
    host: &str,
    overrides: &[sp::DstOverride],
    out: &mut Translated,
) {
    if overrides.is_empty() {
        return;
    }
    let mut backends = Vec::with_capacity(overrides.len());
    for (i, o) in overrides.iter().enumerate() {
        let (name, port) = match o.authority.rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(port) => (h, Some(port)),
                Err(_) => (o.authority.as_str(), None),
            },
            None => (o.authority.as_str(), None),
        };
        let Some(service) = mesh_host(name, &doc.namespace) else {
            out.findings.push(Finding::error(
                codes::MISSING_SERVICE,
                format!(
                    "ServiceProfile {}/{}: dstOverrides authority {:?} is not a mesh service name; it is left out of the split",
                    doc.namespace, doc.name, o.authority
                ),
                &locate(doc, &["spec", "dstOverrides", &i.to_string(), "authority"]),
            ));
            continue;
        };
        backends.push(Backend {
            service,
            subset: None,
            port,
            weight: o.weight.0,
            filters: None,
        });
    }
    if !backends.is_empty() && backends.iter().all(|b| b.weight == 0) {
        out.findings.push(Finding::warning(
            codes::WEIGHTS,
            format!(
                "ServiceProfile {}/{}: every dstOverrides weight is 0: requests to {host} fail (no backend)",
                doc.namespace, doc.name
            ),
            &locate(doc, &["spec", "dstOverrides"]),
        ));
    }
    let mut o = origin(doc);
    o.line = locate(doc, &["spec", "dstOverrides"]).line.or(o.line);
    out.mesh.routes.push(HostRoutes {
        dialect: Dialect::LinkerdDstOverrides,
        host: host.to_string(),
        port: None,
        origin: o.clone(),
        rules: vec![Rule {
            origin: o,
            index: 0,
            name: Some("dstOverrides".to_string()),
            matches: Vec::new(),
            action: Action::Forward(backends),
            policies: RoutePolicies::default(),
        }],
        creation_timestamp: doc.creation_timestamp.clone(),
        seen,
    });
}

/// The checks that need the whole mesh: a profile for a host that is no service, and two
/// ServiceProfiles for one host (Linkerd reads one).
pub fn check_profiles(mesh: &Mesh, out: &mut Vec<Finding>) {
    let mut seen: Vec<&HostProfile> = Vec::new();
    for p in mesh.profiles.iter().filter(|p| p.profile.origin.is_some()) {
        let at = Location {
            file: p.origin.file.clone(),
            line: p.origin.line,
            column: None,
        };
        if mesh.service(&p.host).is_none() {
            out.push(
                Finding::warning(
                    codes::MISSING_SERVICE,
                    format!(
                        "ServiceProfile {}/{} is for {}, which is not a service in the mesh: it applies to no request",
                        p.origin.namespace, p.origin.name, p.host
                    ),
                    &at,
                )
                .with_fix(format!("declare a Service for {} or rename the profile", p.host)),
            );
        }
        for a in mesh
            .profiles
            .iter()
            .filter(|a| a.host == p.host && a.profile.origin.is_none())
        {
            out.push(Finding::warning(
                codes::CONFLICTING_ROUTES,
                format!(
                    "{} {}/{}: its Linkerd retry/timeout annotations are ignored: ServiceProfile {}/{} applies to {}, and Linkerd then reads only the profile",
                    a.origin.kind, a.origin.namespace, a.origin.name, p.origin.namespace, p.origin.name, p.host
                ),
                &Location {
                    file: a.origin.file.clone(),
                    line: a.origin.line,
                    column: None,
                },
            ));
        }
        if let Some(first) = seen.iter().find(|s| s.host == p.host) {
            out.push(Finding::warning(
                codes::DUPLICATE,
                format!(
                    "ServiceProfile {}/{} and {}/{} are both for {}: only the first read applies",
                    first.origin.namespace, first.origin.name, p.origin.namespace, p.origin.name, p.host
                ),
                &at,
            ));
        }
        seen.push(p);
    }
}

#[cfg(test)]
mod tests;
