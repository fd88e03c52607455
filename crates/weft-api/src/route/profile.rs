//! A Linkerd profile made ready to apply: its route conditions compiled, and the step that
//! adds a profile route's name, timeout and retries to a decision.

use regex::Regex;

use super::compile::{anchored, CompileError};
use super::table::{Origin, Profile, ProfileRoute, Retries, RouteCondition};
use super::{Decision, RequestHead};

/// How many times a retryable profile route may retry one request. Linkerd sets no per-request
/// limit (the budget is the limit); Weft bounds the work one request can cause.
pub const PROFILE_RETRY_LIMIT: u32 = 10;

#[derive(Debug, Clone)]
pub(super) struct CompiledProfile {
    profile: Profile,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Method(String),
    PathRegex(Regex),
}

// === impl CompiledProfile ===

impl CompiledProfile {
    pub(super) fn compile(profile: &Profile) -> Result<Self, CompileError> {
        let document = profile.origin.as_ref().map_or_else(
            || "Service annotations".to_string(),
            |o: &Origin| format!("{} {}/{}", o.kind, o.namespace, o.name),
        );
        let conditions = profile
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Condition::compile(&r.condition).map_err(|(regex, e)| CompileError {
                    document: document.clone(),
                    rule: i,
                    regex,
                    message: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            profile: profile.clone(),
            conditions,
        })
    }

    /// The first profile route whose condition holds.
    fn route(&self, req: &RequestHead<'_>) -> Option<&ProfileRoute> {
        self.conditions
            .iter()
            .position(|c| c.holds(req))
            .and_then(|i| self.profile.routes.get(i))
    }

    /// Adds what the profile says about this request to `decision`; fields the matched rule
    /// set itself are kept.
    pub(super) fn annotate(&self, req: &RequestHead<'_>, decision: &mut Decision<'_>) {
        let p = decision.policies.to_mut();
        let route = self.route(req);
        if let Some(route) = route {
            p.route_name = Some(route.name.clone());
            // The contract has `true` or null: a route that is not retryable says nothing.
            p.retryable = route.retryable.then_some(true);
            p.timeout_ms = p.timeout_ms.or(route.timeout_ms);
            if route.retryable && p.retries.is_none() {
                p.retries = Some(Retries {
                    attempts: PROFILE_RETRY_LIMIT,
                    per_try_timeout_ms: None,
                    retry_on: if route.retry_on.is_empty() {
                        vec!["5xx".to_string()]
                    } else {
                        route.retry_on.clone()
                    },
                });
            }
        }
        p.timeout_ms = p.timeout_ms.or(self.profile.timeout_ms);
        // A profile route that is not retryable is never retried by the service-wide default.
        if p.retries.is_none() && route.is_none_or(|r| r.retryable) {
            p.retries = self.profile.retries.clone();
        }
        if p.retries.is_some() && p.retry_budget.is_none() {
            p.retry_budget = self.profile.retry_budget.clone();
        }
    }
}

// === impl Condition ===

impl Condition {
    fn compile(c: &RouteCondition) -> Result<Self, (String, regex::Error)> {
        let many = |cs: &[RouteCondition]| cs.iter().map(Condition::compile).collect::<Result<Vec<_>, _>>();
        Ok(match c {
            RouteCondition::All(cs) => Condition::All(many(cs)?),
            RouteCondition::Any(cs) => Condition::Any(many(cs)?),
            RouteCondition::Not(c) => Condition::Not(Box::new(Condition::compile(c)?)),
            RouteCondition::Method(m) => Condition::Method(m.clone()),
            RouteCondition::PathRegex(r) => {
                Condition::PathRegex(anchored(r, false).map_err(|e| (r.clone(), e))?)
            }
        })
    }

    fn holds(&self, req: &RequestHead<'_>) -> bool {
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.holds(req)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(req)),
            Condition::Not(c) => !c.holds(req),
            Condition::Method(m) => m == req.method,
            Condition::PathRegex(r) => r.is_match(req.path),
        }
    }
}
