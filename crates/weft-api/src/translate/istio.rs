//! Istio `VirtualService` and `DestinationRule` -> the model.
//!
//! Rules keep their document order (Istio is first-match). Fields Weft reads but does not act
//! on yet are reported with `NOT_IMPLEMENTED` at their line; a value that cannot be read (a bad
//! duration, a string match with two kinds) is a `SCHEMA` error and that value is left out.

use super::core::{locate, not_implemented};
use super::{mesh_host, origin, Part, Translated};
use crate::finding::{codes, Finding, Location};
use crate::model::{self, DestinationPolicy, Dialect, HostOutlierDetection, HostRoutes};
use crate::resources::istio as vs;
use crate::resources::Document;
use crate::route::{
    self, Action, Backend, DirectResponse, Fault, HeaderMatch, HeaderOps, Mirror, PathMatch, QueryMatch,
    Redirect, RequestMatch, Retries, Rewrite, RoutePolicies, Rule,
};

/// `VirtualService` -> one `HostRoutes` per mesh host.
pub(super) fn virtual_service(doc: &Document, seen: usize, out: &mut Translated) {
    let spec: vs::VirtualServiceSpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    let mut cx = Cx::new(doc);
    if let Some(export) = &spec.export_to {
        if export.iter().any(|e| e != "*") {
            cx.not_implemented(&["spec", "exportTo"], "every namespace sees it");
        }
    }
    if spec.tcp.is_some() {
        cx.not_implemented(
            &["spec", "tcp"],
            "TCP routes; TCP traffic goes to the host itself",
        );
    }
    if spec.tls.is_some() {
        cx.not_implemented(
            &["spec", "tls"],
            "TLS routes; TLS traffic goes to the host itself",
        );
    }
    // Without `mesh` among its gateways a VirtualService does not apply to mesh traffic.
    let for_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    if spec.gateways.iter().any(|g| g != "mesh") {
        let why = if for_mesh {
            "gateways other than mesh; the rules apply to mesh traffic only"
        } else {
            "gateways; without `mesh` among them these rules are not applied"
        };
        cx.not_implemented(&["spec", "gateways"], why);
    }
    let rules: Vec<Rule> = spec
        .http
        .iter()
        .enumerate()
        .filter_map(|(i, http)| cx.rule(i, http))
        .collect();
    if for_mesh && !rules.is_empty() {
        for (i, host) in spec.hosts.iter().enumerate() {
            match mesh_host(host, &doc.namespace).filter(|_| !host.contains('*')) {
                Some(fqdn) => {
                    cx.record(Part::Host(fqdn.clone()), &["spec", "hosts", &i.to_string()]);
                    out.mesh.routes.push(HostRoutes {
                        dialect: Dialect::Istio,
                        host: fqdn,
                        port: None,
                        origin: origin(doc),
                        rules: rules.clone(),
                        creation_timestamp: doc.creation_timestamp.clone(),
                        seen,
                    })
                }
                None => cx.not_implemented(
                    &["spec", "hosts", &i.to_string()],
                    &format!("host {host} is not a mesh service name; routes for it are not applied"),
                ),
            }
        }
    }
    cx.finish(out);
}

/// `DestinationRule` -> `DestinationPolicy`.
pub(super) fn destination_rule(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: vs::DestinationRuleSpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    let mut cx = Cx::new(doc);
    if let Some(export) = &spec.export_to {
        if export.iter().any(|e| e != "*") {
            cx.not_implemented(&["spec", "exportTo"], "every namespace sees it");
        }
    }
    if spec.workload_selector.is_some() {
        cx.not_implemented(&["spec", "workloadSelector"], "the rule applies to every client");
    }
    let applied = spec
        .traffic_policy
        .as_ref()
        .map(|tp| cx.traffic_policy(tp, &["spec", "trafficPolicy"], false))
        .unwrap_or_default();
    let subsets = spec
        .subsets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let i = i.to_string();
            model::Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
                load_balancer: s.traffic_policy.as_ref().and_then(|tp| {
                    cx.traffic_policy(tp, &["spec", "subsets", &i, "trafficPolicy"], true)
                        .load_balancer
                }),
            }
        })
        .collect();
    match mesh_host(&spec.host, &doc.namespace).filter(|_| !spec.host.contains('*')) {
        Some(host) => {
            cx.record(Part::Host(host.clone()), &["spec", "host"]);
            cx.record(Part::TlsMode, &["spec", "trafficPolicy", "tls", "mode"]);
            if let Some(settings) = applied.outlier_detection {
                out.mesh.outlier_detections.push(HostOutlierDetection {
                    host: host.clone(),
                    origin: origin(doc),
                    settings,
                });
            }
            out.mesh.destinations.push(DestinationPolicy {
                host,
                origin: origin(doc),
                load_balancer: applied.load_balancer,
                connection_pool: applied.connection_pool,
                subsets,
                tls_mode: spec
                    .traffic_policy
                    .as_ref()
                    .and_then(|tp| tp.tls.as_ref()?.mode.clone()),
            })
        }
        None => cx.not_implemented(
            &["spec", "host"],
            &format!(
                "host {} is not a mesh service name; the rule is not applied",
                spec.host
            ),
        ),
    }
    cx.finish(out);
}

/// Parses an Istio duration (`2s`, `500ms`, `1.5s`, `1m30s`, `1h`) into milliseconds
/// (sub-millisecond remainders round up, so a non-zero duration is never 0 ms).
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        nanos += number * scale;
    }
    Some((nanos / 1e6).ceil() as u64)
}

/// Findings of one document, and what places them.
struct Cx<'a> {
    doc: &'a Document,
    findings: Vec<Finding>,
    /// Parts of the document the checks on the whole model point at.
    spans: Vec<(Part, Location)>,
    /// The index of the rule being read.
    rule: usize,
    /// The document's tree, parsed once for every part recorded.
    root: marked_yaml::Node,
}

impl<'a> Cx<'a> {
    fn new(doc: &'a Document) -> Self {
        Self {
            doc,
            findings: Vec::new(),
            spans: Vec::new(),
            rule: 0,
            root: doc.node(),
        }
    }

    /// Records `part` at `path` when the document has that field.
    fn record(&mut self, part: Part, path: &[&str]) {
        if super::core::has_path_in(&self.root, path) {
            self.spans
                .push((part, super::core::locate_in(self.doc, &self.root, path)));
        }
    }

    fn finish(self, out: &mut Translated) {
        out.findings.extend(self.findings);
        for (part, at) in self.spans {
            out.spans.record(self.doc, part, at);
        }
    }

    fn not_implemented(&mut self, path: &[&str], what: &str) {
        self.findings.push(not_implemented(self.doc, path, what));
    }

    fn schema(&mut self, path: &[&str], what: &str) {
        let doc = self.doc;
        self.findings.push(Finding::error(
            codes::SCHEMA,
            format!(
                "{} {}/{}: {}: {what}",
                doc.kind,
                doc.namespace,
                doc.name,
                super::core::field_name(path)
            ),
            &locate(doc, path),
        ));
    }

    fn duration(&mut self, path: &[&str], text: &str) -> Option<u64> {
        let ms = parse_duration(text);
        if ms.is_none() {
            self.schema(path, &format!("invalid duration {text:?} (e.g. 2s, 500ms, 1m)"));
        }
        ms
    }

    /// `http[i]` -> a rule; None when it cannot be applied (reported).
    fn rule(&mut self, i: usize, http: &vs::HttpRoute) -> Option<Rule> {
        let idx = i.to_string();
        macro_rules! p {
            ($($seg:expr),*) => { &["spec", "http", idx.as_str(), $($seg),*] };
        }
        self.rule = i;
        let mut origin = origin(self.doc);
        origin.line = locate(self.doc, p!()).line.or(origin.line);
        self.record(Part::Rule(i), p!());
        self.record(Part::Routes(i), p!("route"));

        if http.delegate.is_some() {
            self.not_implemented(p!("delegate"), "delegation; this rule is left out");
            return None;
        }
        if http.cors_policy.is_some() {
            self.not_implemented(p!("corsPolicy"), "CORS; requests pass without CORS handling");
        }

        // Matches: a match restricted to gateways without `mesh` never applies in the mesh.
        let mut matches = Vec::new();
        let mut dropped = 0;
        for (m, want) in http.matches.iter().enumerate() {
            let ms = m.to_string();
            if !want.gateways.is_empty() && !want.gateways.iter().any(|g| g == "mesh") {
                self.not_implemented(
                    p!("match", ms.as_str(), "gateways"),
                    "gateways; this match applies to gateway traffic only and is left out",
                );
                dropped += 1;
                continue;
            }
            self.record(Part::Match(i, matches.len()), p!("match", ms.as_str()));
            matches.push(self.request_match(p!("match", ms.as_str()), want));
        }
        if dropped > 0 && matches.is_empty() {
            return None;
        }

        let action = if !http.route.is_empty() {
            let backends = self.backends(&idx, &http.route);
            if backends.is_empty() {
                return None;
            }
            Action::Forward(backends)
        } else if let Some(r) = &http.redirect {
            if r.derive_port.is_some() {
                self.not_implemented(p!("redirect", "derivePort"), "the port is kept as requested");
            }
            Action::Redirect(Redirect {
                status: r.redirect_code.unwrap_or(301),
                scheme: r.scheme.clone(),
                authority: r.authority.clone(),
                port: r.port,
                path: r.uri.clone(),
                prefix: None,
            })
        } else if let Some(d) = &http.direct_response {
            if d.body.as_ref().is_some_and(|b| b.bytes.is_some()) {
                self.not_implemented(p!("directResponse", "body", "bytes"), "the body is left empty");
            }
            Action::DirectResponse(DirectResponse {
                status: d.status,
                body: d.body.as_ref().and_then(|b| b.string.clone()),
            })
        } else {
            self.schema(p!(), "a rule needs route, redirect or directResponse; left out");
            return None;
        };

        let policies = self.policies(&idx, http);
        Some(Rule {
            origin,
            index: i,
            name: http.name.clone(),
            matches,
            action,
            policies,
        })
    }

    fn request_match(&mut self, path: &[&str], m: &vs::HttpMatchRequest) -> RequestMatch {
        let sub = |field: &'static str| [path, &[field]].concat();
        if m.scheme.is_some() {
            self.not_implemented(&sub("scheme"), "the scheme is not compared");
        }
        if m.stat_prefix.is_some() {
            self.not_implemented(&sub("statPrefix"), "no per-match statistics");
        }
        let mut out = RequestMatch {
            port: m.port,
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
            ..RequestMatch::default()
        };
        if let Some(uri) = &m.uri {
            let ignore_case = m.ignore_uri_case;
            out.path = self.string_match(&sub("uri"), uri).map(|s| match s {
                route::StringMatch::Exact(value) => PathMatch::Exact { value, ignore_case },
                route::StringMatch::Prefix(value) => PathMatch::Prefix { value, ignore_case },
                route::StringMatch::Regex(value) => PathMatch::Regex { value, ignore_case },
            });
        }
        if let Some(method) = &m.method {
            out.method = self.string_match(&sub("method"), method);
        }
        if let Some(authority) = &m.authority {
            out.authority = self.string_match(&sub("authority"), authority);
        }
        for (invert, field, headers) in [
            (false, "headers", &m.headers),
            (true, "withoutHeaders", &m.without_headers),
        ] {
            for (name, value) in headers {
                let at = [path, &[field, name.as_str()]].concat();
                out.headers.push(HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    value: self.string_match(&at, value),
                    invert,
                });
            }
        }
        for (name, value) in &m.query_params {
            let at = [path, &["queryParams", name.as_str()]].concat();
            // Istio: `exact: ""` checks that the parameter is present.
            let value = match self.string_match(&at, value) {
                Some(route::StringMatch::Exact(v)) if v.is_empty() => None,
                v => v,
            };
            out.query.push(QueryMatch {
                name: name.clone(),
                value,
            });
        }
        out
    }

    /// Istio's StringMatch: one of exact, prefix, regex; `{}` is None (present / anything).
    fn string_match(&mut self, path: &[&str], m: &vs::StringMatch) -> Option<route::StringMatch> {
        let set = [&m.exact, &m.prefix, &m.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 {
            self.schema(
                path,
                "use one of exact, prefix, regex; this condition is left out",
            );
            return None;
        }
        if let Some(v) = &m.exact {
            Some(route::StringMatch::Exact(v.clone()))
        } else if let Some(v) = &m.prefix {
            Some(route::StringMatch::Prefix(v.clone()))
        } else {
            let regex = m.regex.clone()?;
            self.record(
                Part::Regex(self.rule, regex.clone()),
                &[path, &["regex"]].concat(),
            );
            Some(route::StringMatch::Regex(regex))
        }
    }

    fn destination(&mut self, path: &[&str], d: &vs::Destination) -> Option<(String, Option<u16>)> {
        match mesh_host(&d.host, &self.doc.namespace).filter(|_| !d.host.contains('*')) {
            Some(fqdn) => Some((fqdn, d.port.as_ref().map(|p| p.number))),
            None => {
                let host_path = [path, &["host"]].concat();
                self.not_implemented(
                    &host_path,
                    &format!("destination {} is not a mesh service name; left out", d.host),
                );
                None
            }
        }
    }

    /// Istio weights: one destination without a weight gets 100; several without any weight
    /// share equally (1 each); when some have weights a missing one is 0.
    fn backends(&mut self, idx: &str, route: &[vs::HttpRouteDestination]) -> Vec<Backend> {
        let any_weight = route.iter().any(|r| r.weight.is_some());
        let single = route.len() == 1;
        let mut out = Vec::with_capacity(route.len());
        for (j, r) in route.iter().enumerate() {
            let js = j.to_string();
            let path: &[&str] = &["spec", "http", idx, "route", &js];
            if r.headers.is_some() {
                self.not_implemented(&[path, &["headers"]].concat(), "per-destination header changes");
            }
            let Some((service, port)) = self.destination(&[path, &["destination"]].concat(), &r.destination)
            else {
                continue;
            };
            let (rule, j) = (self.rule, out.len());
            let dest = [path, &["destination"]].concat();
            self.record(Part::BackendHost(rule, j), &[&dest[..], &["host"]].concat());
            self.record(Part::Subset(rule, j), &[&dest[..], &["subset"]].concat());
            self.record(Part::BackendPort(rule, j), &[&dest[..], &["port"]].concat());
            let weight = match r.weight {
                Some(w) => w,
                None if single => 100,
                None if any_weight => 0,
                None => 1,
            };
            out.push(Backend {
                service,
                subset: r.destination.subset.clone(),
                port,
                weight,
                filters: None,
            });
        }
        out
    }

    fn policies(&mut self, idx: &str, http: &vs::HttpRoute) -> RoutePolicies {
        let p = |rest: &[&'static str]| -> Vec<&str> { [&["spec", "http", idx][..], rest].concat() };
        let mut out = RoutePolicies::default();
        if let Some(t) = &http.timeout {
            out.timeout_ms = self.duration(&p(&["timeout"]), t);
        }
        if let Some(r) = &http.retries {
            for (set, field) in [
                (r.retry_remote_localities.is_some(), "retryRemoteLocalities"),
                (
                    r.retry_ignore_previous_hosts.is_some(),
                    "retryIgnorePreviousHosts",
                ),
                (r.backoff.is_some(), "backoff"),
            ] {
                if set {
                    self.not_implemented(&p(&["retries", field]), "the default is used");
                }
            }
            let per_try_timeout_ms = match &r.per_try_timeout {
                Some(t) => self.duration(&p(&["retries", "perTryTimeout"]), t),
                None => None,
            };
            out.retries = Some(Retries {
                attempts: r.attempts,
                per_try_timeout_ms,
                retry_on: r
                    .retry_on
                    .iter()
                    .flat_map(|s| s.split(','))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            });
        }
        if let Some(f) = &http.fault {
            out.fault = self.fault(&p(&["fault"]), f);
        }
        if let Some(m) = &http.mirror {
            let percent = match (&http.mirror_percentage, http.mirror_percent) {
                (Some(pc), _) => pc.value,
                (None, Some(pc)) => f64::from(pc),
                (None, None) => 100.0,
            };
            if let Some((service, _port)) = self.destination(&p(&["mirror"]), m) {
                self.record(
                    Part::Mirror(self.rule, out.mirrors.len()),
                    &p(&["mirror", "host"]),
                );
                out.mirrors.push(Mirror {
                    service,
                    subset: m.subset.clone(),
                    percent,
                });
            }
        }
        for (k, m) in http.mirrors.iter().enumerate() {
            let ks = k.to_string();
            let at = p(&["mirrors"]);
            let at = [&at[..], &[ks.as_str(), "destination"]].concat();
            if let Some((service, _port)) = self.destination(&at, &m.destination) {
                let host = [&at[..], &["host"]].concat();
                self.record(Part::Mirror(self.rule, out.mirrors.len()), &host);
                out.mirrors.push(Mirror {
                    service,
                    subset: m.destination.subset.clone(),
                    percent: m.percentage.as_ref().map_or(100.0, |pc| pc.value),
                });
            }
        }
        if let Some(r) = &http.rewrite {
            if r.uri_regex_rewrite.is_some() {
                self.not_implemented(&p(&["rewrite", "uriRegexRewrite"]), "the path is not rewritten");
            }
            if r.uri.is_some() || r.authority.is_some() {
                // Istio replaces the matched prefix (the whole path after an exact or regex
                // match), as Envoy's prefix_rewrite does.
                out.rewrite = Some(Rewrite {
                    path: None,
                    prefix: r.uri.clone(),
                    authority: r.authority.clone(),
                });
            }
        }
        if let Some(h) = &http.headers {
            let ops = |o: &Option<vs::HeaderOperations>| {
                o.as_ref().map_or_else(HeaderOps::default, |o| HeaderOps {
                    set: o.set.clone(),
                    add: o.add.clone(),
                    remove: o.remove.clone(),
                })
            };
            out.request_headers = ops(&h.request);
            out.response_headers = ops(&h.response);
        }
        out
    }

    /// Delay and abort; an unspecified percentage is 100.
    fn fault(&mut self, path: &[&str], f: &vs::HttpFaultInjection) -> Option<Fault> {
        let sub = |rest: &[&'static str]| [path, rest].concat();
        let mut out = Fault {
            delay_ms: None,
            delay_percent: None,
            abort_status: None,
            abort_grpc_status: None,
            abort_percent: None,
        };
        if let Some(d) = &f.delay {
            if d.exponential_delay.is_some() {
                self.not_implemented(&sub(&["delay", "exponentialDelay"]), "no delay is injected");
            }
            if let Some(t) = &d.fixed_delay {
                out.delay_ms = self.duration(&sub(&["delay", "fixedDelay"]), t);
                out.delay_percent = Some(match (&d.percentage, d.percent) {
                    (Some(pc), _) => pc.value,
                    (None, Some(pc)) => f64::from(pc),
                    (None, None) => 100.0,
                });
            }
        }
        if let Some(a) = &f.abort {
            if a.http2_error.is_some() {
                self.not_implemented(&sub(&["abort", "http2Error"]), "no HTTP/2 error is injected");
            }
            out.abort_status = a.http_status;
            out.abort_grpc_status = a.grpc_status.clone().filter(|name| {
                let known = crate::route::grpc_status_code(name).is_some();
                if !known {
                    self.schema(
                        &sub(&["abort", "grpcStatus"]),
                        &format!("{name:?} is not a gRPC status name such as UNAVAILABLE; no gRPC abort is injected"),
                    );
                }
                known
            });
            if out.abort_status.is_some() || out.abort_grpc_status.is_some() {
                out.abort_percent = Some(a.percentage.as_ref().map_or(100.0, |pc| pc.value));
            }
        }
        let any = out.delay_ms.is_some() || out.abort_status.is_some() || out.abort_grpc_status.is_some();
        any.then_some(out)
    }
}

#[cfg(test)]
mod tests;
mod traffic_policy;
