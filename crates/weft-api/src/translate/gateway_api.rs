//! Gateway API `HTTPRoute` and `GRPCRoute` attached to a Service (GAMMA, the mesh profile)
//! -> `HostRoutes { dialect: GatewayApi }`, and the spec's precedence across all rules of
//! one host:port (`sort_by_precedence`, used by `Mesh::route_table`).
//!
//! Each (rule i, match j) pair becomes one `Rule { index: i, matches: [that match] }`, so the
//! precedence, which the spec defines per match, can order them across documents.

use std::cmp::{Ordering, Reverse};

use marked_yaml::{Span, Spanned};

use super::{origin, Part, Translated};
use crate::finding::{codes, Finding, Location};
use crate::model::{Dialect, HostRoutes};
use crate::proxy_config::ProxyConfig;
use crate::resources::gateway_api::*;
use crate::resources::Document;
use crate::route::{
    Action, Backend, BackendFilters, DirectResponse, HeaderMatch, HeaderOps, Mirror, PathMatch, QueryMatch,
    Redirect, RequestMatch, Retries, Rewrite, RoutePolicies, Rule, StringMatch,
};
use positions::record_rule;

/// A rule with its document's tie-breaks: (rule, creationTimestamp, load order).
pub type Ranked = (Rule, Option<String>, usize);

/// Orders Gateway API rules for one host:port as the spec says (shared/ARCHITECTURE.md,
/// "Gateway API ties"): a consumer route (attached from the caller's namespace) first; then
/// exact path > longest path prefix (in characters) > regular expression path > the match-all
/// prefix `/` (also what a match without a path means); then a method match > more header
/// matches > more query-parameter matches; then the older route
/// (creationTimestamp; a route with one before a route without), the first seen, namespace/
/// name alphabetically, and the rule's index. The sort is stable, so the matches of one rule
/// keep their order.
pub fn sort_by_precedence(rules: &mut [Ranked]) {
    rules.sort_by(|(a, ats, aseen), (b, bts, bseen)| {
        specificity(a)
            .cmp(&specificity(b))
            .then_with(|| match (ats, bts) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then(aseen.cmp(bseen))
            .then_with(|| (&a.origin.namespace, &a.origin.name).cmp(&(&b.origin.namespace, &b.origin.name)))
            .then(a.index.cmp(&b.index))
    });
}

/// Smaller is more specific. A rule carries one match (see the module doc); a rule without
/// any matches everything.
///
/// The spec ranks exact and prefix paths only; where a regular expression goes is left to
/// implementations. Weft puts it after every real prefix but before the match-all `/`, so that
/// a catch-all rule never shadows a regex rule (what a user writing both means; Istio and
/// Envoy Gateway also rank a regex before a catch-all).
fn specificity(rule: &Rule) -> (bool, u8, Reverse<usize>, bool, Reverse<usize>, Reverse<usize>) {
    let Some(m) = rule.matches.first() else {
        return (true, 3, Reverse(0), true, Reverse(0), Reverse(0));
    };
    let (class, len) = match &m.path {
        Some(PathMatch::Exact { value, .. }) => (0, value.len()),
        Some(PathMatch::SegmentPrefix { value } | PathMatch::Prefix { value, .. })
            if value.trim_end_matches('/').is_empty() =>
        {
            (3, 0)
        }
        Some(PathMatch::SegmentPrefix { value } | PathMatch::Prefix { value, .. }) => (1, value.len()),
        Some(PathMatch::Regex { .. }) => (2, 0),
        None => (3, 0),
    };
    (
        m.source_namespace.is_none(),
        class,
        Reverse(len),
        m.method.is_none(),
        Reverse(m.headers.len()),
        Reverse(m.query.len()),
    )
}

/// `HTTPRoute` (v1, v1beta1).
pub fn translate_http_route(doc: &Document, seen: usize, out: &mut Translated) {
    let spec: HttpRouteSpec = match doc.spec() {
        Ok(s) => s,
        Err(f) => return out.findings.extend(f),
    };
    let mut rules = Vec::new();
    for (index, r) in spec.rules.iter().enumerate() {
        let (action, policies) = rule_parts(doc, &r.filters, &r.backend_refs, false, out);
        record_rule(doc, index, &r.backend_refs, out);
        let mut policies = policies;
        prefix_rewrite_needs_prefix_matches(doc, index, r, &mut policies, out);
        timeouts_and_retries(doc, r.timeouts.as_ref(), r.retry.as_ref(), &mut policies, out);
        if let Some(sp) = &r.session_persistence {
            not_implemented(doc, sp.span(), "sessionPersistence is not applied yet", out);
        }
        let matches: Vec<RequestMatch> = if r.matches.is_empty() {
            vec![http_match(&HttpRouteMatch::default())]
        } else {
            r.matches.iter().map(http_match).collect()
        };
        for m in matches {
            rules.push(Rule {
                origin: origin(doc),
                index,
                name: r.name.clone(),
                matches: vec![m],
                action: action.clone(),
                policies: policies.clone(),
            });
        }
    }
    attach(doc, seen, &spec.parent_refs, rules, out);
}

/// The spec: `ReplacePrefixMatch` "is only compatible with a `PathPrefix` HTTPRouteMatch". With
/// any other path match the rewrite is an error and is dropped (the path is kept).
fn prefix_rewrite_needs_prefix_matches(
    doc: &Document,
    index: usize,
    rule: &HttpRouteRule,
    policies: &mut RoutePolicies,
    out: &mut Translated,
) {
    let Some(rw) = policies.rewrite.as_mut() else {
        return;
    };
    let other = rule
        .matches
        .iter()
        .filter_map(|m| m.path.as_ref())
        .find(|p| p.kind != PathMatchType::PathPrefix);
    if let (Some(_), Some(path)) = (&rw.prefix, other) {
        let span = rule
            .filters
            .iter()
            .find(|f| f.url_rewrite.is_some())
            .map(|f| f.span());
        out.findings.push(Finding::error(
            codes::SCHEMA,
            format!(
                "{} {}/{}: rule {index}: urlRewrite ReplacePrefixMatch needs PathPrefix matches, \
                 not a {:?} path {:?}: the path is kept",
                doc.kind, doc.namespace, doc.name, path.kind, path.value
            ),
            &span.map_or_else(|| doc.location(), |s| at(doc, s)),
        ));
        rw.prefix = None;
        if rw.path.is_none() && rw.authority.is_none() {
            policies.rewrite = None;
        }
    }
}

/// `GRPCRoute` (v1): a method match is a match on the path `/service/method`.
pub fn translate_grpc_route(doc: &Document, seen: usize, out: &mut Translated) {
    let spec: GrpcRouteSpec = match doc.spec() {
        Ok(s) => s,
        Err(f) => return out.findings.extend(f),
    };
    let mut rules = Vec::new();
    let default_rules = [GrpcRouteRule::default()];
    let spec_rules = if spec.rules.is_empty() {
        &default_rules[..]
    } else {
        &spec.rules[..]
    };
    for (index, r) in spec_rules.iter().enumerate() {
        let (action, policies) = rule_parts(doc, &r.filters, &r.backend_refs, true, out);
        record_rule(doc, index, &r.backend_refs, out);
        if let Some(sp) = &r.session_persistence {
            not_implemented(doc, sp.span(), "sessionPersistence is not applied yet", out);
        }
        let matches: Vec<RequestMatch> = if r.matches.is_empty() {
            vec![RequestMatch::default()]
        } else {
            r.matches.iter().map(grpc_match).collect()
        };
        for m in matches {
            rules.push(Rule {
                origin: origin(doc),
                index,
                name: r.name.clone(),
                matches: vec![m],
                action: action.clone(),
                policies: policies.clone(),
            });
        }
    }
    attach(doc, seen, &spec.parent_refs, rules, out);
}

/// One `HostRoutes` per Service parent; a Gateway parent is reported, not acted on.
fn attach(
    doc: &Document,
    seen: usize,
    parents: &[Spanned<ParentRef>],
    rules: Vec<Rule>,
    out: &mut Translated,
) {
    if parents.is_empty() {
        out.findings.push(
            Finding::warning(
                codes::MISSING_FIELD,
                format!(
                    "{} {}/{} has no parentRefs: it routes nothing",
                    doc.kind, doc.namespace, doc.name
                ),
                &doc.location(),
            )
            .with_fix("attach it to a Service: parentRefs: [{group: \"\", kind: Service, name: ...}]"),
        );
    }
    let mut attached: Vec<(String, Option<u16>)> = Vec::new();
    for p in parents {
        if !p.is_service() {
            let why = if p.kind == "Gateway" {
                format!(
                    "parentRef Gateway {}: routes attached to a Gateway (ingress) arrive with the gateways issue",
                    p.name
                )
            } else {
                format!(
                    "parentRef {} {} ({}): only a core Service attaches a route to the mesh",
                    p.kind, p.name, p.group
                )
            };
            not_implemented(doc, p.span(), &why, out);
            continue;
        }
        let ns = p.namespace.clone().unwrap_or_else(|| doc.namespace.clone());
        let host = ProxyConfig::fqdn(&p.name, &ns);
        if attached.contains(&(host.clone(), p.port)) {
            continue;
        }
        attached.push((host.clone(), p.port));
        out.spans.record(doc, Part::Host(host.clone()), at(doc, p.span()));
        // A route in another namespace than its Service is a consumer route: it applies
        // only to callers in the route's own namespace (GAMMA).
        let consumer = ns != doc.namespace;
        let rules = rules
            .iter()
            .cloned()
            .map(|mut r| {
                if consumer {
                    for m in &mut r.matches {
                        m.source_namespace = Some(doc.namespace.clone());
                    }
                    if r.matches.is_empty() {
                        r.matches.push(RequestMatch {
                            source_namespace: Some(doc.namespace.clone()),
                            ..RequestMatch::default()
                        });
                    }
                }
                r
            })
            .collect();
        out.mesh.routes.push(HostRoutes {
            dialect: Dialect::GatewayApi,
            host,
            port: p.port,
            origin: origin(doc),
            rules,
            creation_timestamp: doc.creation_timestamp.clone(),
            seen,
        });
    }
}

fn http_match(m: &HttpRouteMatch) -> RequestMatch {
    RequestMatch {
        path: m.path.as_ref().map(|p| match p.kind {
            PathMatchType::Exact => PathMatch::Exact {
                value: p.value.clone(),
                ignore_case: false,
            },
            PathMatchType::PathPrefix => PathMatch::SegmentPrefix {
                value: p.value.clone(),
            },
            PathMatchType::RegularExpression => PathMatch::Regex {
                value: p.value.clone(),
                ignore_case: false,
            },
        }),
        method: m.method.as_ref().map(|v| StringMatch::Exact(v.clone())),
        headers: headers(&m.headers),
        query: first_per_name(&m.query_params, |q| q.name.clone())
            .map(|q| QueryMatch {
                name: q.name.clone(),
                value: Some(value_match(q.kind, &q.value)),
            })
            .collect(),
        ..RequestMatch::default()
    }
}

fn grpc_match(m: &GrpcRouteMatch) -> RequestMatch {
    let path = m.method.as_ref().and_then(|mm| {
        let (service, method) = (mm.service.as_deref(), mm.method.as_deref());
        match (mm.kind, service, method) {
            (_, None, None) => None,
            (ValueMatchType::Exact, Some(s), Some(m)) => Some(PathMatch::Exact {
                value: format!("/{s}/{m}"),
                ignore_case: false,
            }),
            (ValueMatchType::Exact, Some(s), None) => Some(PathMatch::SegmentPrefix {
                value: format!("/{s}"),
            }),
            (ValueMatchType::Exact, None, Some(m)) => Some(PathMatch::Regex {
                value: format!("/[^/]+/{}", regex::escape(m)),
                ignore_case: false,
            }),
            (ValueMatchType::RegularExpression, s, m) => Some(PathMatch::Regex {
                value: format!("/(?:{})/(?:{})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
                ignore_case: false,
            }),
        }
    });
    RequestMatch {
        path,
        headers: headers(&m.headers),
        ..RequestMatch::default()
    }
}

/// Header names are case-insensitive; of two matches on one name the first counts (spec).
fn headers(list: &[ValueMatch]) -> Vec<HeaderMatch> {
    first_per_name(list, |h| h.name.to_ascii_lowercase())
        .map(|h| HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            value: Some(value_match(h.kind, &h.value)),
            invert: false,
        })
        .collect()
}

fn first_per_name<'a>(
    list: &'a [ValueMatch],
    key: impl Fn(&ValueMatch) -> String + 'a,
) -> impl Iterator<Item = &'a ValueMatch> + 'a {
    list.iter()
        .enumerate()
        .filter(move |(i, v)| !list[..*i].iter().any(|w| key(w) == key(v)))
        .map(|(_, v)| v)
}

fn value_match(kind: ValueMatchType, value: &str) -> StringMatch {
    match kind {
        ValueMatchType::Exact => StringMatch::Exact(value.to_string()),
        ValueMatchType::RegularExpression => StringMatch::Regex(value.to_string()),
    }
}

/// A rule's action and the policies its filters add.
fn rule_parts(
    doc: &Document,
    filters: &[Spanned<HttpRouteFilter>],
    backend_refs: &[Spanned<BackendRef>],
    grpc: bool,
    out: &mut Translated,
) -> (Action, RoutePolicies) {
    let mut policies = RoutePolicies::default();
    let mut redirect = None;
    for f in filters {
        let missing = |field: &str, out: &mut Translated| {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "{} {}/{}: filter type {:?} needs the field {field}",
                    doc.kind, doc.namespace, doc.name, f.kind
                ),
                &at(doc, f.span()),
            ))
        };
        if grpc && matches!(f.kind, FilterType::RequestRedirect | FilterType::UrlRewrite) {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "{} {}/{}: filter type {:?} is not allowed in a GRPCRoute",
                    doc.kind, doc.namespace, doc.name, f.kind
                ),
                &at(doc, f.span()),
            ));
            continue;
        }
        match f.kind {
            FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
                let (modifier, ops, field) = if f.kind == FilterType::RequestHeaderModifier {
                    (
                        &f.request_header_modifier,
                        &mut policies.request_headers,
                        "requestHeaderModifier",
                    )
                } else {
                    (
                        &f.response_header_modifier,
                        &mut policies.response_headers,
                        "responseHeaderModifier",
                    )
                };
                let Some(m) = modifier else {
                    missing(field, out);
                    continue;
                };
                modify_headers(ops, m);
            }
            FilterType::RequestRedirect => {
                let Some(r) = &f.request_redirect else {
                    missing("requestRedirect", out);
                    continue;
                };
                let change = r
                    .path
                    .as_ref()
                    .and_then(|p| path_modifier(doc, f.span(), p, "requestRedirect", out));
                let (path, prefix) = match change {
                    Some(PathChange::Full(path)) => (Some(path), None),
                    Some(PathChange::Prefix(prefix)) => (None, Some(prefix)),
                    None => (None, None),
                };
                redirect = Some(Redirect {
                    status: r.status_code,
                    scheme: r.scheme.clone(),
                    authority: r.hostname.clone(),
                    port: r.port,
                    path,
                    prefix,
                });
            }
            FilterType::UrlRewrite => {
                let Some(r) = &f.url_rewrite else {
                    missing("urlRewrite", out);
                    continue;
                };
                let change = r
                    .path
                    .as_ref()
                    .and_then(|p| path_modifier(doc, f.span(), p, "urlRewrite", out));
                let (path, prefix) = match change {
                    Some(PathChange::Full(path)) => (Some(path), None),
                    Some(PathChange::Prefix(prefix)) => (None, Some(prefix)),
                    None => (None, None),
                };
                if path.is_some() || prefix.is_some() || r.hostname.is_some() {
                    policies.rewrite = Some(Rewrite {
                        path,
                        prefix,
                        authority: r.hostname.clone(),
                    });
                }
            }
            FilterType::RequestMirror => {
                let Some(m) = &f.request_mirror else {
                    missing("requestMirror", out);
                    continue;
                };
                let b = &m.backend_ref;
                if !(b.kind == "Service" && (b.group.is_empty() || b.group == "core")) {
                    not_implemented(
                        doc,
                        f.span(),
                        &format!(
                            "mirror to {} {}: only a core Service is a mesh backend",
                            b.kind, b.name
                        ),
                        out,
                    );
                    continue;
                }
                let percent = match (&m.percent, &m.fraction) {
                    (Some(p), _) => f64::from(*p),
                    (None, Some(fr)) if fr.denominator > 0 => {
                        f64::from(fr.numerator) * 100.0 / f64::from(fr.denominator)
                    }
                    (None, Some(_)) => {
                        out.findings.push(Finding::error(
                            codes::SCHEMA,
                            format!(
                                "{} {}/{}: requestMirror fraction with denominator 0",
                                doc.kind, doc.namespace, doc.name
                            ),
                            &at(doc, f.span()),
                        ));
                        continue;
                    }
                    (None, None) => 100.0,
                };
                policies.mirrors.push(Mirror {
                    service: ProxyConfig::fqdn(&b.name, b.namespace.as_deref().unwrap_or(&doc.namespace)),
                    subset: None,
                    percent,
                });
            }
            FilterType::ExtensionRef => {
                not_implemented(doc, f.span(), "ExtensionRef filters are not applied", out);
            }
        }
    }
    if let Some(r) = redirect {
        return (Action::Redirect(r), policies);
    }
    let mut backends = Vec::new();
    for b in backend_refs {
        if !b.is_service() {
            not_implemented(
                doc,
                b.span(),
                &format!(
                    "backendRef {} {} ({}): only a core Service is a mesh backend; the reference is invalid",
                    b.kind, b.name, b.group
                ),
                out,
            );
            continue;
        }
        backends.push(Backend {
            service: ProxyConfig::fqdn(&b.name, b.namespace.as_deref().unwrap_or(&doc.namespace)),
            subset: None,
            port: b.port,
            weight: b.weight,
            filters: backend_filters(doc, &b.filters, out),
        });
    }
    if backends.is_empty() {
        // No (valid) backendRefs: the spec answers 500.
        return (
            Action::DirectResponse(DirectResponse {
                status: 500,
                body: None,
            }),
            policies,
        );
    }
    (Action::Forward(backends), policies)
}

/// A header modifier's set, add and remove, on top of what `ops` already holds.
fn modify_headers(ops: &mut HeaderOps, m: &HeaderModifier) {
    for h in &m.set {
        ops.set.insert(h.name.clone(), h.value.clone());
    }
    for h in &m.add {
        ops.add.insert(h.name.clone(), h.value.clone());
    }
    ops.remove.extend(m.remove.iter().cloned());
}

/// A backendRef's filters: header modifiers and URL rewrites apply to the requests sent to that
/// backend (after the rule's); other filter types are reported and not applied.
fn backend_filters(
    doc: &Document,
    filters: &[Spanned<HttpRouteFilter>],
    out: &mut Translated,
) -> Option<Box<BackendFilters>> {
    let mut result = BackendFilters::default();
    let mut any = false;
    for f in filters {
        let raw = f;
        let error = |message: String| {
            Finding::error(
                codes::SCHEMA,
                format!(
                    "{} {}/{}: backendRef filter: {message}",
                    doc.kind, doc.namespace, doc.name
                ),
                &at(doc, raw.span()),
            )
        };
        match (
            f.kind,
            &f.request_header_modifier,
            &f.response_header_modifier,
            &f.url_rewrite,
        ) {
            (FilterType::RequestHeaderModifier, Some(m), _, _) => {
                modify_headers(&mut result.request_headers, m)
            }
            (FilterType::ResponseHeaderModifier, _, Some(m), _) => {
                modify_headers(&mut result.response_headers, m)
            }
            (FilterType::UrlRewrite, _, _, Some(r)) => {
                let change = r
                    .path
                    .as_ref()
                    .and_then(|p| path_modifier(doc, raw.span(), p, "urlRewrite", out));
                let (path, prefix) = match change {
                    Some(PathChange::Full(path)) => (Some(path), None),
                    Some(PathChange::Prefix(prefix)) => (None, Some(prefix)),
                    None => (None, None),
                };
                result.rewrite = Some(Rewrite {
                    path,
                    prefix,
                    authority: r.hostname.clone(),
                });
            }
            (
                FilterType::RequestHeaderModifier
                | FilterType::ResponseHeaderModifier
                | FilterType::UrlRewrite,
                ..,
            ) => {
                out.findings
                    .push(error(format!("filter type {:?} needs its field", f.kind)));
                continue;
            }
            (kind, ..) => {
                not_implemented(
                    doc,
                    raw.span(),
                    &format!(
                        "backendRef filter {kind:?} is not applied (header modifiers and URLRewrite are)"
                    ),
                    out,
                );
                continue;
            }
        }
        any = true;
    }
    any.then(|| Box::new(result))
}

/// What a path modifier does to the path.
enum PathChange {
    /// The whole path becomes this.
    Full(String),
    /// The matched prefix becomes this.
    Prefix(String),
}

fn path_modifier(
    doc: &Document,
    span: &Span,
    p: &PathModifier,
    filter: &str,
    out: &mut Translated,
) -> Option<PathChange> {
    match p.kind {
        PathModifierType::ReplaceFullPath => {
            if p.replace_full_path.is_none() {
                out.findings.push(Finding::error(
                    codes::SCHEMA,
                    format!(
                        "{} {}/{}: {filter} path type ReplaceFullPath needs replaceFullPath",
                        doc.kind, doc.namespace, doc.name
                    ),
                    &at(doc, span),
                ));
            }
            p.replace_full_path.clone().map(PathChange::Full)
        }
        PathModifierType::ReplacePrefixMatch => {
            if p.replace_prefix_match.is_none() {
                out.findings.push(Finding::error(
                    codes::SCHEMA,
                    format!(
                        "{} {}/{}: {filter} path type ReplacePrefixMatch needs replacePrefixMatch",
                        doc.kind, doc.namespace, doc.name
                    ),
                    &at(doc, span),
                ));
            }
            p.replace_prefix_match.clone().map(PathChange::Prefix)
        }
    }
}

fn timeouts_and_retries(
    doc: &Document,
    timeouts: Option<&Timeouts>,
    retry: Option<&Spanned<Retry>>,
    policies: &mut RoutePolicies,
    out: &mut Translated,
) {
    let duration = |d: &Spanned<String>, field: &str, out: &mut Translated| match duration_ms(d) {
        Some(ms) => Some(ms),
        None => {
            out.findings.push(Finding::error(
                codes::SCHEMA,
                format!(
                    "{} {}/{}: {field} {:?} is not a Gateway API duration such as 10s, 500ms or 1h30m",
                    doc.kind,
                    doc.namespace,
                    doc.name,
                    d.as_str()
                ),
                &at(doc, d.span()),
            ));
            None
        }
    };
    // A zero duration disables the timeout (spec).
    let nonzero = |ms: Option<u64>| ms.filter(|&ms| ms > 0);
    let request = timeouts
        .and_then(|t| t.request.as_ref())
        .and_then(|d| nonzero(duration(d, "timeouts.request", out)));
    let backend = timeouts
        .and_then(|t| t.backend_request.as_ref())
        .and_then(|d| nonzero(duration(d, "timeouts.backendRequest", out)));
    policies.timeout_ms = request;
    if let Some(r) = retry {
        if let Some(b) = &r.backoff {
            if duration(b, "retry.backoff", out).is_some() {
                not_implemented(doc, b.span(), "retry backoff is not applied yet", out);
            }
        }
        policies.retries = Some(Retries {
            attempts: r.attempts.unwrap_or(1),
            per_try_timeout_ms: backend,
            retry_on: r.codes.iter().map(u16::to_string).collect(),
        });
    } else if let Some(b) = backend {
        // Without retries, one backend request is the whole request.
        policies.timeout_ms = Some(request.map_or(b, |r| r.min(b)));
    }
}

fn not_implemented(doc: &Document, span: &Span, why: &str, out: &mut Translated) {
    out.findings.push(Finding::warning(
        codes::NOT_IMPLEMENTED,
        format!("{} {}/{}: {why}", doc.kind, doc.namespace, doc.name),
        &at(doc, span),
    ));
}

fn at(doc: &Document, span: &Span) -> Location {
    match span.start() {
        Some(m) => Location {
            file: Some(doc.file.clone()),
            line: Some(m.line()),
            column: Some(m.column()),
        },
        None => doc.location(),
    }
}

mod positions;
#[cfg(test)]
mod tests;
