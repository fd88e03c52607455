//! Choosing an endpoint for a request, once routing has chosen the service port.
//!
//! A [`Balancer`] is immutable apart from its atomics: it is built per config push for one service
//! port and holds [`Slot`]s, each pairing the pushed [`Endpoint`] with its long-lived
//! [`EndpointState`]. [`Balancers`] is the registry the data plane reads lock-free; its
//! `reconcile` keeps an endpoint's state across pushes for as long as the endpoint remains.
//!
//! Every policy honours the same rules: weight 0 is never picked, the caller's `exclude` list
//! (endpoints already tried by failover) is never picked, and endpoints marked unreachable are
//! skipped unless every remaining endpoint is, in which case they are picked anyway (Envoy's
//! "panic mode": better to try than to refuse outright). With outlier detection on, an ejected
//! endpoint is never picked (unless too few are healthy, see [`Outlier::honoured`]); one
//! awaiting its probe is picked by one request at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;
use weft_api::proxy_config::{Endpoint, LoadBalancer};

mod breaker;
mod endpoint;
mod metrics;
mod outlier;
mod registry;
#[cfg(test)]
mod tests;

pub use breaker::{Admitted, Breaker, BreakerState, Limit, Overflow, OverflowCounters};
pub use endpoint::{EndpointState, InFlight, DEFAULT_RTT, EWMA_DECAY};
pub use outlier::{ejection_length, EjectionCounters, Outcome, Outlier, OutlierState, Reason};
pub use registry::Balancers;

/// One endpoint of a balancer: what the config says about it, and what the proxy has learnt.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The endpoint as pushed.
    pub endpoint: Endpoint,
    /// Its state, shared with the balancers of earlier and later pushes.
    pub state: Arc<EndpointState>,
    /// Its `destination_*` metric labels, built once (on first use) rather than per request.
    peer: std::sync::OnceLock<crate::telemetry::metrics::Peer>,
}

/// Chooses among the endpoints of one service port under one [`LoadBalancer`] policy.
#[derive(Debug)]
pub struct Balancer {
    policy: LoadBalancer,
    slots: Vec<Slot>,
    /// `cumulative[i]` is the sum of the weights of slots `0..=i`: a weighted draw is one
    /// random number and a binary search, with no per-pick allocation.
    cumulative: Vec<u64>,
    /// Smooth weighted round robin's running weights, one per slot. Only round robin locks it.
    round_robin: Mutex<Vec<i64>>,
    /// `None` uses fastrand's thread-local generator (no lock on the hot path); tests pass a
    /// seed to get the same picks on every run.
    rng: Option<Mutex<fastrand::Rng>>,
    /// Outlier detection settings; None: endpoints are never ejected.
    outlier: Option<Arc<Outlier>>,
    /// The service's `connectionPool` limits; None: the proxy's own limits only.
    breaker: Option<Arc<Breaker>>,
}

/// How many times a weighted draw over all slots is retried when it lands on an ineligible one
/// before falling back to an exact scan over the eligible ones. Rejection keeps the common case
/// (few or no exclusions) O(log n); the scan bounds the worst case.
const REJECTION_TRIES: usize = 4;

// === impl Slot ===

impl Slot {
    /// A slot with fresh state, for an endpoint the proxy has not seen before.
    pub fn new(endpoint: Endpoint) -> Self {
        let state = Arc::new(EndpointState::new(endpoint.address));
        Self::with_state(endpoint, state)
    }

    /// A slot for `endpoint` sharing `state` with earlier slots of the same address.
    pub fn with_state(endpoint: Endpoint, state: Arc<EndpointState>) -> Self {
        Self {
            endpoint,
            state,
            peer: std::sync::OnceLock::new(),
        }
    }

    /// The endpoint as the `destination_*` labels name it (`svc_ns`: its service's namespace,
    /// the same on every call for one slot).
    pub fn peer(&self, svc_ns: &crate::telemetry::metrics::Label) -> crate::telemetry::metrics::Peer {
        self.peer
            .get_or_init(|| crate::config::endpoint_peer(&self.endpoint, svc_ns))
            .clone()
    }

    fn weight(&self) -> u64 {
        u64::from(self.endpoint.weight)
    }
}

// === impl Balancer ===

impl Balancer {
    /// A balancer drawing randomness from the thread-local generator.
    pub fn new(policy: LoadBalancer, slots: Vec<Slot>) -> Self {
        Self::build(policy, slots, None)
    }

    /// A balancer whose random choices are fixed by `seed`, for deterministic tests.
    pub fn with_seed(policy: LoadBalancer, slots: Vec<Slot>, seed: u64) -> Self {
        Self::build(policy, slots, Some(Mutex::new(fastrand::Rng::with_seed(seed))))
    }

    fn build(policy: LoadBalancer, slots: Vec<Slot>, rng: Option<Mutex<fastrand::Rng>>) -> Self {
        let cumulative = slots
            .iter()
            .scan(0u64, |sum, slot| {
                *sum = sum.saturating_add(slot.weight());
                Some(*sum)
            })
            .collect();
        let round_robin = Mutex::new(vec![0; slots.len()]);
        Self {
            policy,
            slots,
            cumulative,
            round_robin,
            rng,
            outlier: None,
            breaker: None,
        }
    }

    /// This balancer, ejecting endpoints under `outlier`.
    pub fn with_outlier(mut self, outlier: Option<Arc<Outlier>>) -> Self {
        self.outlier = outlier;
        self
    }

    /// Its outlier detection, if on.
    pub fn outlier(&self) -> Option<&Arc<Outlier>> {
        self.outlier.as_ref()
    }

    /// This balancer, with its service's `connectionPool` limits.
    pub fn with_breaker(mut self, breaker: Option<Arc<Breaker>>) -> Self {
        self.breaker = breaker;
        self
    }

    /// Its service's `connectionPool` limits, if any.
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.breaker.as_ref()
    }

    /// Counts the outcome of a request `slot` served, for outlier detection.
    pub fn observe(&self, slot: &Slot, outcome: Outcome) {
        if let Some(o) = &self.outlier {
            o.observe(&self.slots, slot, outcome);
        }
    }

    /// How many of its endpoints are ejected at `now`.
    pub fn ejected(&self, now: Instant) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state.outlier.is_ejected(now))
            .count()
    }

    /// The policy this balancer applies.
    pub fn policy(&self) -> LoadBalancer {
        self.policy
    }

    /// All endpoints, in config order, whatever their weight or state.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Chooses an endpoint, never one of weight 0 nor one whose address is in `exclude`.
    /// Endpoints marked unreachable are chosen only if no other is left. `None` when nothing
    /// is eligible.
    /// Ejected endpoints are never chosen while outlier detection is honoured.
    pub fn pick(&self, exclude: &[SocketAddr]) -> Option<&Slot> {
        let now = Instant::now();
        let ejections = self
            .outlier
            .as_ref()
            .is_some_and(|o| o.honoured(&self.slots, now));
        // Endpoints whose probe another request took between our check and our claim.
        let mut lost: Vec<SocketAddr> = Vec::new();
        loop {
            let joined;
            let exclude = if lost.is_empty() {
                exclude
            } else {
                joined = [exclude, &lost].concat();
                &joined
            };
            let pick = |mode| self.pick_among(exclude, now, mode, ejections);
            let index = pick(Reachability::Required).or_else(|| pick(Reachability::Panic))?;
            let slot = self.slots.get(index)?;
            if !ejections || slot.state.outlier.claim(now) {
                return Some(slot);
            }
            lost.push(slot.endpoint.address);
        }
    }

    fn pick_among(
        &self,
        exclude: &[SocketAddr],
        now: Instant,
        mode: Reachability,
        ejections: bool,
    ) -> Option<usize> {
        let eligible = |i: usize| self.eligible(i, exclude, now, mode, ejections);
        match self.policy {
            LoadBalancer::RoundRobin => self.round_robin(eligible),
            LoadBalancer::Random => self.draw(eligible),
            LoadBalancer::LeastRequest => self.power_of_two(eligible, |a, b| {
                // in_flight(b) / weight(b) < in_flight(a) / weight(a), without dividing.
                let load = |s: &Slot| s.state.in_flight() as u128;
                load(b) * u128::from(a.weight()) < load(a) * u128::from(b.weight())
            }),
            LoadBalancer::PeakEwma => self.power_of_two(eligible, |a, b| {
                // cost(b) / weight(b) < cost(a) / weight(a); weights are u32, exact in f64.
                let weight = |s: &Slot| s.weight() as f64;
                b.state.cost(now) * weight(a) < a.state.cost(now) * weight(b)
            }),
        }
    }

    fn eligible(
        &self,
        i: usize,
        exclude: &[SocketAddr],
        now: Instant,
        mode: Reachability,
        ejections: bool,
    ) -> bool {
        let Some(slot) = self.slots.get(i) else {
            return false;
        };
        slot.endpoint.weight > 0
            && !exclude.contains(&slot.endpoint.address)
            && (mode == Reachability::Panic || !slot.state.is_unreachable(now))
            && !(ejections && slot.state.outlier.is_ejected(now))
    }

    /// Power of two choices: two distinct weighted-random candidates, and the second replaces
    /// the first only if `better(first, second)`. Ties go to the first, so idle endpoints share
    /// traffic in proportion to their weights.
    fn power_of_two(
        &self,
        eligible: impl Fn(usize) -> bool,
        better: impl Fn(&Slot, &Slot) -> bool,
    ) -> Option<usize> {
        let first = self.draw(&eligible)?;
        let Some(second) = self.draw(|i| i != first && eligible(i)) else {
            return Some(first);
        };
        match (self.slots.get(first), self.slots.get(second)) {
            (Some(a), Some(b)) if better(a, b) => Some(second),
            _ => Some(first),
        }
    }

    /// A weighted-random eligible slot.
    fn draw(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return None;
        }
        // Rejection sampling from all slots yields exactly the weighted distribution over the
        // eligible ones, and is usually right the first time.
        for _ in 0..REJECTION_TRIES {
            let at = self.random_below(total);
            let i = self.cumulative.partition_point(|&sum| sum <= at);
            if eligible(i) {
                return Some(i);
            }
        }
        self.draw_by_scan(eligible)
    }

    /// The exact fallback of `draw`: sum the eligible weights, then walk to the chosen one.
    fn draw_by_scan(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let weight = |i: usize| self.slots.get(i).map_or(0, Slot::weight);
        let total: u64 = (0..self.slots.len())
            .filter(|&i| eligible(i))
            .map(weight)
            .fold(0, u64::saturating_add);
        if total == 0 {
            return None;
        }
        let mut at = self.random_below(total);
        for i in (0..self.slots.len()).filter(|&i| eligible(i)) {
            if at < weight(i) {
                return Some(i);
            }
            at -= weight(i);
        }
        None
    }

    /// Smooth weighted round robin (nginx): every eligible slot gains its weight, the richest
    /// is picked and pays back the total. Over a cycle of `sum(weights)` picks each slot gets
    /// exactly its weight, interleaved (2:1 gives A B A) rather than in bursts.
    fn round_robin(&self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = lock(&self.round_robin);
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (slot, running)) in self.slots.iter().zip(current.iter_mut()).enumerate() {
            if !eligible(i) {
                continue;
            }
            let weight = i64::from(slot.endpoint.weight);
            *running += weight;
            total += weight;
            // Strictly richer: ties go to the earlier slot, which keeps the order stable.
            if best.is_none_or(|(_, richest)| *running > richest) {
                best = Some((i, *running));
            }
        }
        let (chosen, _) = best?;
        if let Some(running) = current.get_mut(chosen) {
            *running -= total;
        }
        Some(chosen)
    }

    fn random_below(&self, bound: u64) -> u64 {
        match &self.rng {
            None => fastrand::u64(0..bound),
            Some(rng) => lock(rng).u64(0..bound),
        }
    }
}

/// Whether a pick must avoid endpoints marked unreachable, or has already found that every
/// remaining endpoint is unreachable and picks among them anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reachability {
    Required,
    Panic,
}

/// Locks a mutex whose data stays valid even if a holder panicked (running weights, an RNG).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
