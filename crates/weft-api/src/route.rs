//! THE routing decision: `resolve(&CompiledTable, &RequestHead, &Source) -> Decision`.
//!
//! A pure function used by the proxy on every request and by `weft explain` — one
//! implementation, never two (shared/ARCHITECTURE.md, "The routing decision"). The table is
//! compiled once per config (regexes built, rules already in precedence order); resolving
//! allocates only for the explanation of skipped rules, which the proxy asks not to collect.

mod compile;
mod profile;
mod table;

pub use compile::{CompileError, CompiledTable, Miss};
pub use profile::PROFILE_RETRY_LIMIT;
pub use table::*;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// What the router looks at in a request.
#[derive(Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// `Host`/`:authority` without the port.
    pub authority: &'a str,
    /// The service port the request was sent to.
    pub port: u16,
    /// Header lookup by lower-case name.
    pub headers: &'a dyn Headers,
}

/// Request headers as the router and authorization read them: every value of a header, in
/// the order sent, so a harmless first copy cannot hide the one a rule looks for.
pub trait Headers {
    /// Whether `f` holds for some value of the header `name` (lower case). Values are raw
    /// bytes: one that is not UTF-8 is present, and equal to no string.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool;
}

/// Whether `value` matches by `is_match`, which reads strings: a value that is not UTF-8 is
/// read with its invalid bytes as U+FFFD, so it can match a prefix, a suffix or a regex but
/// never equal a string the documents spell.
pub fn value_matches(value: &[u8], is_match: impl Fn(&str) -> bool) -> bool {
    match std::str::from_utf8(value) {
        Ok(s) => is_match(s),
        Err(_) => is_match(&String::from_utf8_lossy(value)),
    }
}

/// The calling workload.
#[derive(Debug, Clone, Default)]
pub struct Source<'a> {
    pub namespace: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// The decision for one request. It borrows from the table it was resolved against (the
/// proxy resolves every request and copies nothing on a match); a policy changed for this
/// request (a rewrite resolved against its path, a ServiceProfile's defaults) is its own copy.
/// [`Decision::into_owned`] detaches it from the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision<'t> {
    pub kind: DecisionKind,
    /// The rule that matched, or none (no rules: the default route; rules but no match:
    /// not found).
    pub matched: Option<Cow<'t, RuleRef>>,
    /// Rules tried before the match and why each did not match (only when asked).
    pub skipped: Vec<Skip>,
    pub backends: Cow<'t, [Backend]>,
    pub policies: Cow<'t, RoutePolicies>,
    pub redirect: Option<Cow<'t, Redirect>>,
    pub direct_response: Option<Cow<'t, DirectResponse>>,
}

/// What happens to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Route,
    Redirect,
    DirectResponse,
    NotFound,
}

/// Which rule of which document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    #[serde(flatten)]
    pub origin: Origin,
    pub rule: usize,
}

/// A rule that did not match, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    pub reason: String,
}

impl Headers for BTreeMap<String, String> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.get(name).is_some_and(|v| f(v.as_bytes()))
    }
}

/// Several values per name, in order (`weft explain -H` given twice, tests).
impl Headers for Vec<(String, String)> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| f(v.as_bytes()))
    }
}

impl Headers for http_like::NoHeaders {
    fn any_value(&self, _name: &str, _f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        false
    }
}

/// Small helpers for callers without a header map.
pub mod http_like {
    /// A request without headers.
    pub struct NoHeaders;
}

/// Resolves a request against a compiled table. `explain` collects why earlier rules were
/// skipped (for `weft explain`); the proxy passes false and pays nothing for it.
pub fn resolve<'t>(
    table: &'t CompiledTable,
    req: &RequestHead<'_>,
    source: &Source<'_>,
    explain: bool,
) -> Decision<'t> {
    let mut decision = resolve_rules(table, req, source, explain);
    if let (Some(profile), DecisionKind::Route) = (&table.profile, decision.kind) {
        profile.annotate(req, &mut decision);
    }
    decision
}

/// The rules' decision alone.
fn resolve_rules<'t>(
    table: &'t CompiledTable,
    req: &RequestHead<'_>,
    source: &Source<'_>,
    explain: bool,
) -> Decision<'t> {
    let mut skipped = Vec::new();
    if table.rules.is_empty() {
        return Decision::forward(
            None,
            &table.default_backends,
            Cow::Borrowed(&NO_POLICIES),
            skipped,
        );
    }
    for rule in &table.rules {
        match rule.matches(req, source) {
            Ok(()) => {
                let matched = Some(Cow::Borrowed(&rule.rule_ref));
                let policies = rule.policies_for(req, source);
                return match &rule.rule.action {
                    Action::Forward(backends) => Decision {
                        backends: rule.backends_for(backends, req, source),
                        ..Decision::forward(matched, &[], policies, skipped)
                    },
                    Action::Redirect(redirect) => Decision {
                        kind: DecisionKind::Redirect,
                        matched,
                        skipped,
                        backends: Cow::Borrowed(&[]),
                        policies,
                        redirect: Some(rule.redirect_for(redirect, req, source)),
                        direct_response: None,
                    },
                    Action::DirectResponse(resp) => Decision {
                        kind: DecisionKind::DirectResponse,
                        matched,
                        skipped,
                        backends: Cow::Borrowed(&[]),
                        policies,
                        redirect: None,
                        direct_response: Some(Cow::Borrowed(resp)),
                    },
                };
            }
            Err(miss) if explain => skipped.push(Skip {
                kind: rule.rule.origin.kind.clone(),
                namespace: rule.rule.origin.namespace.clone(),
                name: rule.rule.origin.name.clone(),
                rule: rule.rule.index,
                reason: rule.why_not(req, source, &miss),
            }),
            Err(_) => {}
        }
    }
    Decision {
        kind: DecisionKind::NotFound,
        matched: None,
        skipped,
        backends: Cow::Borrowed(&[]),
        policies: Cow::Borrowed(&NO_POLICIES),
        redirect: None,
        direct_response: None,
    }
}

/// The policies of a route that has none.
static NO_POLICIES: RoutePolicies = RoutePolicies {
    timeout_ms: None,
    retries: None,
    retry_budget: None,
    fault: None,
    mirrors: Vec::new(),
    rewrite: None,
    request_headers: HeaderOps::EMPTY,
    response_headers: HeaderOps::EMPTY,
    route_name: None,
    retryable: None,
};

impl<'t> Decision<'t> {
    fn forward(
        matched: Option<Cow<'t, RuleRef>>,
        backends: &'t [Backend],
        policies: Cow<'t, RoutePolicies>,
        skipped: Vec<Skip>,
    ) -> Self {
        Decision {
            kind: DecisionKind::Route,
            matched,
            skipped,
            backends: Cow::Borrowed(backends),
            policies,
            redirect: None,
            direct_response: None,
        }
    }

    /// The same decision, owning everything it holds.
    pub fn into_owned(self) -> Decision<'static> {
        Decision {
            kind: self.kind,
            matched: self.matched.map(|m| Cow::Owned(m.into_owned())),
            skipped: self.skipped,
            backends: Cow::Owned(self.backends.into_owned()),
            policies: Cow::Owned(self.policies.into_owned()),
            redirect: self.redirect.map(|r| Cow::Owned(r.into_owned())),
            direct_response: self.direct_response.map(|d| Cow::Owned(d.into_owned())),
        }
    }
}

#[cfg(test)]
mod tests;
