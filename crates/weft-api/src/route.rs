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

/// Request headers as the router reads them.
pub trait Headers {
    /// The first value of a header (name in lower case), if any.
    fn get(&self, name: &str) -> Option<&str>;
}

/// The calling workload.
#[derive(Debug, Clone, Default)]
pub struct Source<'a> {
    pub namespace: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    /// The rule that matched, or none (no rules: the default route; rules but no match:
    /// not found).
    pub matched: Option<RuleRef>,
    /// Rules tried before the match and why each did not match (only when asked).
    pub skipped: Vec<Skip>,
    pub backends: Vec<Backend>,
    pub policies: RoutePolicies,
    pub redirect: Option<Redirect>,
    pub direct_response: Option<DirectResponse>,
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
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl Headers for http_like::NoHeaders {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Small helpers for callers without a header map.
pub mod http_like {
    /// A request without headers.
    pub struct NoHeaders;
}

/// Resolves a request against a compiled table. `explain` collects why earlier rules were
/// skipped (for `weft explain`); the proxy passes false and pays nothing for it.
pub fn resolve(table: &CompiledTable, req: &RequestHead<'_>, source: &Source<'_>, explain: bool) -> Decision {
    let mut decision = resolve_rules(table, req, source, explain);
    if let (Some(profile), DecisionKind::Route) = (&table.profile, decision.kind) {
        profile.annotate(req, &mut decision);
    }
    decision
}

/// The rules' decision alone.
fn resolve_rules(
    table: &CompiledTable,
    req: &RequestHead<'_>,
    source: &Source<'_>,
    explain: bool,
) -> Decision {
    let mut skipped = Vec::new();
    if table.rules.is_empty() {
        return Decision::forward(
            None,
            table.default_backends.clone(),
            RoutePolicies::default(),
            skipped,
        );
    }
    for rule in &table.rules {
        match rule.matches(req, source) {
            Ok(()) => {
                let r = &rule.rule;
                let matched = Some(RuleRef {
                    origin: r.origin.clone(),
                    rule: r.index,
                });
                return match &r.action {
                    Action::Forward(backends) => {
                        Decision::forward(matched, backends.clone(), rule.policies_for(req, source), skipped)
                    }
                    Action::Redirect(redirect) => Decision {
                        kind: DecisionKind::Redirect,
                        matched,
                        skipped,
                        backends: Vec::new(),
                        policies: rule.policies_for(req, source),
                        redirect: Some(redirect.clone()),
                        direct_response: None,
                    },
                    Action::DirectResponse(resp) => Decision {
                        kind: DecisionKind::DirectResponse,
                        matched,
                        skipped,
                        backends: Vec::new(),
                        policies: rule.policies_for(req, source),
                        redirect: None,
                        direct_response: Some(resp.clone()),
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
        backends: Vec::new(),
        policies: RoutePolicies::default(),
        redirect: None,
        direct_response: None,
    }
}

impl Decision {
    fn forward(
        matched: Option<RuleRef>,
        backends: Vec<Backend>,
        policies: RoutePolicies,
        skipped: Vec<Skip>,
    ) -> Self {
        Decision {
            kind: DecisionKind::Route,
            matched,
            skipped,
            backends,
            policies,
            redirect: None,
            direct_response: None,
        }
    }
}

#[cfg(test)]
mod tests;
