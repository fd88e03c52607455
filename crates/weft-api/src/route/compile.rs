//! A route table made ready to match: regexes built once, the default route filled in.

use std::fmt;

use regex::Regex;

use super::profile::CompiledProfile;
use super::table::*;
use super::{RequestHead, Source};

/// A table ready for `resolve`.
#[derive(Debug, Clone)]
pub struct CompiledTable {
    pub(super) rules: Vec<CompiledRule>,
    /// Where a request goes when the table has no rules: the service itself.
    pub(super) default_backends: Vec<Backend>,
    /// The Linkerd profile that annotates every decision.
    pub(super) profile: Option<CompiledProfile>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledRule {
    pub(super) rule: Rule,
    /// What a decision names as the matched rule, built once.
    pub(super) rule_ref: super::RuleRef,
    matches: Vec<CompiledMatch>,
}

#[derive(Debug, Clone)]
struct CompiledMatch {
    path: Option<(Matcher, &'static str)>,
    method: Option<Matcher>,
    headers: Vec<(String, Option<Matcher>, bool)>,
    query: Vec<(String, Option<Matcher>)>,
    authority: Option<Matcher>,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    ExactNoCase(String),
    Prefix(String),
    PrefixNoCase(String),
    Segments(String),
    Regex(Regex),
}

/// A rule that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{document} rule {rule}: regex {regex:?}: {message}")]
pub struct CompileError {
    /// `Kind namespace/name`.
    pub document: String,
    pub rule: usize,
    pub regex: String,
    pub message: String,
}

/// Why a rule did not match; formatted only when someone asks (`weft explain`).
#[derive(Debug)]
pub enum Miss<'a> {
    Path(&'a PathMatch),
    Method(&'a StringMatch),
    Header(&'a HeaderMatch),
    Query(&'a QueryMatch),
    Authority(&'a StringMatch),
    Port(u16),
    SourceLabels(&'a std::collections::BTreeMap<String, String>),
    SourceNamespace(&'a str),
}

// === impl CompiledTable ===

impl CompiledTable {
    /// Compiles `table` for the service `fqdn` (its own default route).
    pub fn compile(table: &RouteTable, fqdn: &str) -> Result<Self, CompileError> {
        let rules = table
            .rules
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<_, _>>()?;
        let default_backends = vec![Backend {
            service: fqdn.to_string(),
            subset: None,
            port: None,
            weight: 1,
            filters: None,
        }];
        let profile = table.profile.as_ref().map(CompiledProfile::compile).transpose()?;
        Ok(Self {
            rules,
            default_backends,
            profile,
        })
    }

    /// No rules and no profile: requests go to the service itself, untouched.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.profile.is_none()
    }
}

// === impl CompiledRule ===

impl CompiledRule {
    fn compile(rule: &Rule) -> Result<Self, CompileError> {
        let o = &rule.origin;
        let err = |regex: &str, e: regex::Error| CompileError {
            document: format!("{} {}/{}", o.kind, o.namespace, o.name),
            rule: rule.index,
            regex: regex.to_string(),
            message: e.to_string(),
        };
        let string = |m: &StringMatch| -> Result<Matcher, CompileError> {
            Ok(match m {
                StringMatch::Exact(v) => Matcher::Exact(v.clone()),
                StringMatch::Prefix(v) => Matcher::Prefix(v.clone()),
                StringMatch::Regex(v) => Matcher::Regex(anchored(v, false).map_err(|e| err(v, e))?),
            })
        };
        let mut matches = Vec::with_capacity(rule.matches.len());
        for m in &rule.matches {
            let path = match &m.path {
                None => None,
                Some(PathMatch::Exact { value, ignore_case }) => Some((
                    if *ignore_case {
                        Matcher::ExactNoCase(value.to_ascii_lowercase())
                    } else {
                        Matcher::Exact(value.clone())
                    },
                    "exact",
                )),
                Some(PathMatch::Prefix { value, ignore_case }) => Some((
                    if *ignore_case {
                        Matcher::PrefixNoCase(value.to_ascii_lowercase())
                    } else {
                        Matcher::Prefix(value.clone())
                    },
                    "prefix",
                )),
                Some(PathMatch::SegmentPrefix { value }) => Some((
                    Matcher::Segments(value.trim_end_matches('/').to_string()),
                    "prefix",
                )),
                Some(PathMatch::Regex { value, ignore_case }) => Some((
                    Matcher::Regex(anchored(value, *ignore_case).map_err(|e| err(value, e))?),
                    "regex",
                )),
            };
            let headers = m
                .headers
                .iter()
                .map(|h| {
                    Ok((
                        h.name.to_ascii_lowercase(),
                        h.value.as_ref().map(string).transpose()?,
                        h.invert,
                    ))
                })
                .collect::<Result<_, CompileError>>()?;
            let query = m
                .query
                .iter()
                .map(|q| Ok((q.name.clone(), q.value.as_ref().map(string).transpose()?)))
                .collect::<Result<_, CompileError>>()?;
            matches.push(CompiledMatch {
                path,
                method: m.method.as_ref().map(string).transpose()?,
                headers,
                query,
                authority: m.authority.as_ref().map(string).transpose()?,
                port: m.port,
            });
        }
        Ok(Self {
            rule: rule.clone(),
            rule_ref: super::RuleRef {
                origin: rule.origin.clone(),
                rule: rule.index,
            },
            matches,
        })
    }

    /// Whether the request matches any of the rule's matches; the first match's miss if not.
    pub(super) fn matches<'a>(&'a self, req: &RequestHead<'_>, src: &Source<'_>) -> Result<(), Miss<'a>> {
        if self.matches.is_empty() {
            return Ok(());
        }
        let mut first = None;
        for (compiled, spec) in self.matches.iter().zip(&self.rule.matches) {
            match compiled.check(spec, req, src) {
                Ok(()) => return Ok(()),
                Err(miss) => {
                    first.get_or_insert(miss);
                }
            }
        }
        Err(first.unwrap_or(Miss::Port(0)))
    }

    /// Why the request matches none of the rule's match blocks, for a person (`weft explain`):
    /// the first block's miss, or each block's when there are several.
    pub(super) fn why_not(&self, req: &RequestHead<'_>, src: &Source<'_>, first: &Miss<'_>) -> String {
        if self.matches.len() <= 1 {
            return first.to_string();
        }
        let each: Vec<String> = self
            .matches
            .iter()
            .zip(&self.rule.matches)
            .enumerate()
            .filter_map(|(i, (compiled, spec))| {
                let miss = compiled.check(spec, req, src).err()?;
                Some(format!("[{i}] {miss}"))
            })
            .collect();
        format!("no match block fits: {}", each.join("; "))
    }

    /// The rule's policies for a request it matched: a prefix rewrite becomes the path this
    /// request is sent with.
    /// The rule's policies, borrowed; copied only when a prefix rewrite must be resolved
    /// against this request's path.
    pub(super) fn policies_for(
        &self,
        req: &RequestHead<'_>,
        src: &Source<'_>,
    ) -> std::borrow::Cow<'_, RoutePolicies> {
        let policies = &self.rule.policies;
        let Some(replacement) = policies.rewrite.as_ref().and_then(|rw| rw.prefix.as_ref()) else {
            return std::borrow::Cow::Borrowed(policies);
        };
        let path = replace_prefix(self.matched_path(req, src), req.path, replacement);
        let mut policies = policies.clone();
        if let Some(rw) = policies.rewrite.as_mut() {
            rw.prefix = None;
            rw.path = Some(path);
        }
        std::borrow::Cow::Owned(policies)
    }

    /// A redirect as this request gets it: a `ReplacePrefixMatch` resolved against its path.
    pub(super) fn redirect_for<'r>(
        &self,
        redirect: &'r Redirect,
        req: &RequestHead<'_>,
        src: &Source<'_>,
    ) -> std::borrow::Cow<'r, Redirect> {
        let Some(replacement) = redirect.prefix.as_ref() else {
            return std::borrow::Cow::Borrowed(redirect);
        };
        let path = replace_prefix(self.matched_path(req, src), req.path, replacement);
        std::borrow::Cow::Owned(Redirect {
            path: Some(path),
            prefix: None,
            ..redirect.clone()
        })
    }

    /// The rule's backends as this request gets them: a backend's prefix rewrite resolved
    /// against its path (borrowed when no backend has one).
    pub(super) fn backends_for<'r>(
        &self,
        backends: &'r [Backend],
        req: &RequestHead<'_>,
        src: &Source<'_>,
    ) -> std::borrow::Cow<'r, [Backend]> {
        let has_prefix = |b: &Backend| {
            b.filters
                .as_ref()
                .is_some_and(|f| f.rewrite.as_ref().is_some_and(|r| r.prefix.is_some()))
        };
        if !backends.iter().any(has_prefix) {
            return std::borrow::Cow::Borrowed(backends);
        }
        let matched = self.matched_path(req, src);
        let mut owned = backends.to_vec();
        for b in &mut owned {
            let Some(rw) = b.filters.as_mut().and_then(|f| f.rewrite.as_mut()) else {
                continue;
            };
            if let Some(replacement) = rw.prefix.take() {
                rw.path = Some(replace_prefix(matched, req.path, &replacement));
            }
        }
        std::borrow::Cow::Owned(owned)
    }

    /// The path match of the first match block this request fits.
    fn matched_path(&self, req: &RequestHead<'_>, src: &Source<'_>) -> Option<&PathMatch> {
        self.matches
            .iter()
            .zip(&self.rule.matches)
            .find(|(compiled, spec)| compiled.check(spec, req, src).is_ok())
            .and_then(|(_, spec)| spec.path.as_ref())
    }
}

/// `path` with the prefix that `matched` matched replaced by `replacement`:
/// - a Gateway API `PathPrefix` matches whole segments, so its trailing `/` does not count and
///   `replacement`'s trailing `/` is dropped (`/foo` -> `/xyz`: `/foo/bar` -> `/xyz/bar`;
///   `/foo` -> ``: `/foo/bar` -> `/bar`), as the spec's table says;
/// - an Istio prefix is swapped as a plain string (Envoy's `prefix_rewrite`: `/ratings` ->
///   `/v1/bookRatings`: `/ratings/0` -> `/v1/bookRatings/0`); without a path match the prefix
///   is `/`;
/// - after an exact or regex match the whole path is replaced.
fn replace_prefix(matched: Option<&PathMatch>, path: &str, replacement: &str) -> String {
    let swap = |prefix_len: usize| {
        // The prefix matched (case-insensitively at most, ASCII), so this is a char boundary.
        let rest = path.get(prefix_len.min(path.len())..).unwrap_or("");
        format!("{replacement}{rest}")
    };
    match matched {
        Some(PathMatch::SegmentPrefix { value }) => {
            let prefix = value.trim_end_matches('/');
            let rest = path.get(prefix.len().min(path.len())..).unwrap_or("");
            let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
            if joined.is_empty() {
                "/".to_string()
            } else {
                joined
            }
        }
        Some(PathMatch::Prefix { value, .. }) => swap(value.len()),
        None => swap(1),
        Some(PathMatch::Exact { .. } | PathMatch::Regex { .. }) => replacement.to_string(),
    }
}

impl CompiledMatch {
    fn check<'a>(
        &self,
        spec: &'a RequestMatch,
        req: &RequestHead<'_>,
        src: &Source<'_>,
    ) -> Result<(), Miss<'a>> {
        if let (Some((m, _)), Some(want)) = (&self.path, &spec.path) {
            if !m.is_match(req.path) {
                return Err(Miss::Path(want));
            }
        }
        if let (Some(m), Some(want)) = (&self.method, &spec.method) {
            if !m.is_match(req.method) {
                return Err(Miss::Method(want));
            }
        }
        for ((name, value, invert), want) in self.headers.iter().zip(&spec.headers) {
            let holds = req.headers.any_value(name, &mut |v| match value {
                None => true,
                Some(m) => super::value_matches(v, |s| m.is_match(s)),
            });
            if holds == *invert {
                return Err(Miss::Header(want));
            }
        }
        for ((name, value), want) in self.query.iter().zip(&spec.query) {
            let found = query_param(req.query, name);
            let holds = match (found, value) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(m)) => m.is_match(v),
            };
            if !holds {
                return Err(Miss::Query(want));
            }
        }
        if let (Some(m), Some(want)) = (&self.authority, &spec.authority) {
            if !m.is_match(req.authority) {
                return Err(Miss::Authority(want));
            }
        }
        if let Some(port) = self.port {
            if port != req.port {
                return Err(Miss::Port(port));
            }
        }
        if !spec.source_labels.is_empty() {
            let ok = src.labels.is_some_and(|labels| {
                spec.source_labels
                    .iter()
                    .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
            });
            if !ok {
                return Err(Miss::SourceLabels(&spec.source_labels));
            }
        }
        if let Some(ns) = &spec.source_namespace {
            if ns != src.namespace {
                return Err(Miss::SourceNamespace(ns));
            }
        }
        Ok(())
    }
}

pub(super) fn anchored(pattern: &str, ignore_case: bool) -> Result<Regex, regex::Error> {
    let flags = if ignore_case { "(?i)" } else { "" };
    Regex::new(&format!("^{flags}(?:{pattern})$"))
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

// === impl Matcher ===

impl Matcher {
    fn is_match(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(v) => s == v,
            Matcher::ExactNoCase(v) => s.eq_ignore_ascii_case(v),
            Matcher::Prefix(v) => s.starts_with(v.as_str()),
            Matcher::PrefixNoCase(v) => {
                s.len() >= v.len() && s.as_bytes()[..v.len()].eq_ignore_ascii_case(v.as_bytes())
            }
            Matcher::Segments(v) => {
                v.is_empty()
                    || (s.starts_with(v.as_str()) && matches!(s.as_bytes().get(v.len()), None | Some(b'/')))
            }
            Matcher::Regex(r) => r.is_match(s),
        }
    }
}

// === impl Miss ===

impl fmt::Display for Miss<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::Path(p) => match p {
                PathMatch::Exact { value, .. } => write!(f, "path: want exact {value}"),
                PathMatch::Prefix { value, .. } | PathMatch::SegmentPrefix { value } => {
                    write!(f, "path: want prefix {value}")
                }
                PathMatch::Regex { value, .. } => write!(f, "path: want regex {value}"),
            },
            Miss::Method(m) => write!(f, "method: want {}", Want(m)),
            Miss::Header(h) => match (&h.value, h.invert) {
                (None, false) => write!(f, "header {}: want present", h.name),
                (None, true) => write!(f, "header {}: want absent", h.name),
                (Some(v), false) => write!(f, "header {}: want {}", h.name, Want(v)),
                (Some(v), true) => write!(f, "header {}: want not {}", h.name, Want(v)),
            },
            Miss::Query(q) => match &q.value {
                None => write!(f, "query {}: want present", q.name),
                Some(v) => write!(f, "query {}: want {}", q.name, Want(v)),
            },
            Miss::Authority(a) => write!(f, "authority: want {}", Want(a)),
            Miss::Port(p) => write!(f, "port: want {p}"),
            Miss::SourceLabels(l) => {
                let labels: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "source labels: want {}", labels.join(","))
            }
            Miss::SourceNamespace(ns) => write!(f, "source namespace: want {ns}"),
        }
    }
}

struct Want<'a>(&'a StringMatch);

impl fmt::Display for Want<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StringMatch::Exact(v) => write!(f, "exact {v}"),
            StringMatch::Prefix(v) => write!(f, "prefix {v}"),
            StringMatch::Regex(v) => write!(f, "regex {v}"),
        }
    }
}
