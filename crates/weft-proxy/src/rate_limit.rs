//! Local rate limits on inbound ports (Linkerd's `HTTPLocalRateLimitPolicy`): a token bucket for
//! the port's total and one per caller identity, each refilled continuously at its rate and
//! holding at most one second's worth.
//!
//! The buckets outlive pushes (shared/ARCHITECTURE.md, "State that outlives a push"): a push
//! that leaves a port's limits as they were keeps its buckets, tokens and all; a changed limit
//! starts full buckets; a port without limits drops them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use weft_api::proxy_config::{ProxyConfig, RateLimit};

/// Per-identity buckets kept per port before the map is cleared (a bound on memory whatever
/// callers present; clearing only refills buckets).
const MAX_IDENTITIES: usize = 10_000;

/// Every inbound port's limiter, read lock-free by requests.
#[derive(Debug, Default)]
pub struct RateLimits {
    ports: ArcSwap<HashMap<u16, Arc<PortLimiter>>>,
    reconciling: Mutex<()>,
}

/// One port's limits and buckets.
#[derive(Debug)]
pub struct PortLimiter {
    limits: RateLimit,
    total: Option<TokenBucket>,
    /// Caller identity ("" for callers without one) -> its bucket.
    identities: Mutex<HashMap<String, Arc<TokenBucket>>>,
}

/// Tokens refilled at `rate` per second up to `rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

/// A request was over a limit; it may be tried again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    /// Which limit: `total` or `identity`.
    pub which: &'static str,
}

// === impl RateLimits ===

impl RateLimits {
    /// Takes a token for one request to `port` (declared or the app's own) from `principal`
    /// (its SPIFFE ID, if any).
    pub fn check(&self, port: u16, principal: Option<&str>) -> Result<(), Limited> {
        match self.ports.load().get(&port) {
            None => Ok(()),
            Some(limiter) => limiter.check(principal, Instant::now()),
        }
    }

    /// Builds the limiters of `config`, keeping those whose limits did not change.
    pub fn reconcile(&self, config: &ProxyConfig) {
        let _one_at_a_time = self.reconciling.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.ports.load_full();
        let mut ports = HashMap::new();
        for l in &config.inbound.listeners {
            let Some(limits) = &l.rate_limit else { continue };
            let limiter = match old.get(&l.port) {
                Some(kept) if kept.limits == *limits => Arc::clone(kept),
                _ => Arc::new(PortLimiter::new(limits.clone())),
            };
            // Requests name the declared port or the port the app really listens on (the
            // endpoint's address when workloads share an IP): one limiter for both.
            if let Some(app) = l.app.filter(|a| a.port() != l.port) {
                ports.insert(app.port(), Arc::clone(&limiter));
            }
            ports.insert(l.port, limiter);
        }
        self.ports.store(Arc::new(ports));
    }
}

// === impl PortLimiter ===

impl PortLimiter {
    pub fn new(limits: RateLimit) -> Self {
        Self {
            total: limits.total.map(TokenBucket::new),
            limits,
            identities: Mutex::default(),
        }
    }

    /// The caller's own bucket first (an override's rate, else `identity`), then the total; a
    /// token taken from the first is given back if the total refuses.
    pub fn check(&self, principal: Option<&str>, now: Instant) -> Result<(), Limited> {
        let own = self.identity_bucket(principal);
        if let Some(bucket) = &own {
            bucket.take(now).map_err(|retry_after| Limited {
                retry_after,
                which: "identity",
            })?;
        }
        if let Some(total) = &self.total {
            if let Err(retry_after) = total.take(now) {
                if let Some(bucket) = &own {
                    bucket.give_back();
                }
                return Err(Limited {
                    retry_after,
                    which: "total",
                });
            }
        }
        Ok(())
    }

    fn identity_bucket(&self, principal: Option<&str>) -> Option<Arc<TokenBucket>> {
        let id = principal.unwrap_or("");
        let rate = self
            .limits
            .overrides
            .iter()
            .find(|o| principal.is_some_and(|p| o.covers(p)))
            .map(|o| o.requests_per_second)
            .or(self.limits.identity)?;
        let mut map = self.identities.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_IDENTITIES && !map.contains_key(id) {
            map.clear();
        }
        Some(Arc::clone(
            map.entry(id.to_string())
                .or_insert_with(|| Arc::new(TokenBucket::new(rate))),
        ))
    }
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A full bucket of `per_second` tokens.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, at) = *state;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.rate).min(self.rate);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            return Ok(());
        }
        *state = (refilled, now);
        if self.rate <= 0.0 {
            // A rate of 0 never admits; tell the caller to come back in a second anyway.
            return Err(Duration::from_secs(1));
        }
        Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
    }

    fn give_back(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = (state.0 + 1.0).min(self.rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;
    use weft_api::proxy_config::{InboundListener, Protocol, RateLimitOverride};

    fn admitted(limiter: &PortLimiter, who: Option<&str>, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.check(who, Instant::now()).is_ok())
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_holds_one_second_and_refills_continuously() {
        let b = TokenBucket::new(10);
        for _ in 0..10 {
            assert!(b.take(Instant::now()).is_ok());
        }
        assert_eq!(b.take(Instant::now()), Err(Duration::from_millis(100)));
        advance(Duration::from_millis(250)).await;
        assert!(b.take(Instant::now()).is_ok());
        assert!(b.take(Instant::now()).is_ok());
        assert_eq!(b.take(Instant::now()), Err(Duration::from_millis(50)));
        // A long quiet never saves up more than one second.
        advance(Duration::from_secs(60)).await;
        let burst = (0..100).filter(|_| b.take(Instant::now()).is_ok()).count();
        assert_eq!(burst, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn identity_buckets_are_per_caller_overrides_replace_them_and_total_caps_all() {
        let alice = "spiffe://cluster.local/ns/shop/sa/alice";
        let bob = "spiffe://cluster.local/ns/shop/sa/bob";
        let vip = "spiffe://cluster.local/ns/ops/sa/batch";
        let limiter = PortLimiter::new(RateLimit {
            total: Some(20),
            identity: Some(5),
            overrides: vec![RateLimitOverride {
                requests_per_second: 8,
                clients: vec!["ns/ops/sa/batch".into()],
            }],
        });
        assert_eq!(admitted(&limiter, Some(alice), 10), 5);
        assert_eq!(admitted(&limiter, Some(bob), 10), 5);
        assert_eq!(admitted(&limiter, Some(vip), 10), 8);
        // 18 of the total's 20 are gone: unauthenticated callers share one bucket of 5, but
        // the total lets only 2 more through, and its refusal does not cost their own bucket.
        assert_eq!(admitted(&limiter, None, 10), 2);
        let refused = limiter.check(None, Instant::now()).expect_err("total spent");
        assert_eq!(refused.which, "total");
        advance(Duration::from_secs(1)).await;
        assert_eq!(
            admitted(&limiter, None, 10),
            5,
            "3 left in its own bucket, refilled to 5"
        );
    }

    fn config(limit: Option<RateLimit>, extra_port: bool) -> ProxyConfig {
        let listener = |port: u16, rate_limit| InboundListener {
            port,
            app: Some(std::net::SocketAddr::from(([127, 0, 0, 1], port + 1))),
            protocol: Protocol::Http,
            listen: None,
            mtls: None,
            rate_limit,
        };
        let mut config = ProxyConfig::default();
        config.inbound.listeners.push(listener(9080, limit));
        if extra_port {
            config.inbound.listeners.push(listener(9090, None));
        }
        config
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_keeps_the_buckets_unless_the_limits_change() {
        let limits = RateLimits::default();
        let one = RateLimit {
            total: Some(3),
            ..RateLimit::default()
        };
        limits.reconcile(&config(Some(one.clone()), false));
        let spend = || (0..10).filter(|_| limits.check(9080, None).is_ok()).count();
        assert_eq!(spend(), 3);
        assert!(
            limits.check(9081, None).is_err(),
            "the app's own port shares the limiter"
        );
        limits.reconcile(&config(Some(one), true));
        assert_eq!(spend(), 0, "an unrelated push keeps the spent bucket");
        assert!(limits.check(9090, None).is_ok(), "a port without limits");
        limits.reconcile(&config(
            Some(RateLimit {
                total: Some(4),
                ..RateLimit::default()
            }),
            true,
        ));
        assert_eq!(spend(), 4, "a new limit starts full");
        limits.reconcile(&config(None, true));
        assert_eq!(spend(), 10);
    }
}
