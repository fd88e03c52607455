//! The long-lived state of one endpoint: requests in flight, peak-EWMA latency, and a passive
//! "unreachable until" mark. It is shared by every `Balancer` built for the endpoint's service
//! port and survives config pushes (see ARCHITECTURE.md, "State that outlives a push").
//!
//! Everything here is a plain atomic so that a pick, which reads two endpoints, never waits on a
//! lock held by a request finishing on another thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The latency assumed for an endpoint that has not answered yet (linkerd2-proxy's default).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The time constant of the latency EWMA: an observation's weight falls by 1/e every 10 s.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Per-endpoint state that outlives any one config.
#[derive(Debug)]
pub struct EndpointState {
    /// The endpoint's address, as `Endpoint::address` names it.
    pub addr: SocketAddr,
    /// The origin of the millisecond and nanosecond clocks below; atomics cannot hold an
    /// `Instant`, so time is stored as an offset from it.
    born: Instant,
    in_flight: AtomicUsize,
    /// The peak-EWMA estimate packed with the time it was last updated, so that both change in
    /// one compare-and-swap (see `pack`).
    rtt: AtomicU64,
    /// Nanoseconds after `born` until which connecting is pointless; 0 when reachable.
    unreachable_until: AtomicU64,
    /// Its outlier-detection counters and ejection.
    pub outlier: super::OutlierState,
}

/// One request in flight to an endpoint. Dropping it, finished or not, ends the request.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while this guard lives"]
pub struct InFlight {
    state: Arc<EndpointState>,
    started: Instant,
}

// === impl EndpointState ===

impl EndpointState {
    /// Fresh state: nothing in flight, latency [`DEFAULT_RTT`], reachable.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            rtt: AtomicU64::new(pack(nanos_f64(DEFAULT_RTT), 0)),
            unreachable_until: AtomicU64::new(0),
            outlier: super::OutlierState::default(),
        }
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight {
            state: Arc::clone(self),
            started: Instant::now(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// The peak-EWMA latency estimate as of `now`.
    ///
    /// Between responses the estimate decays toward zero, as in linkerd2-proxy and Finagle: an
    /// endpoint that was slow once and so stopped receiving traffic is tried again after a
    /// while instead of being starved forever.
    pub fn rtt_estimate(&self, now: Instant) -> Duration {
        // `as` saturates for floats, and the estimate is never negative.
        Duration::from_nanos(self.estimate_ns(now) as u64)
    }

    /// What peak-EWMA balancing compares: latency x (requests in flight + 1). The estimate is
    /// floored at 1 ns so that endpoints idle long enough to decay to zero still differ by load.
    pub fn cost(&self, now: Instant) -> f64 {
        self.estimate_ns(now).max(1.0) * (self.in_flight() as f64 + 1.0)
    }

    /// Marks the endpoint unreachable for `for_` from now, e.g. after a refused connection.
    /// A mark never shortens a longer one already in place.
    pub fn mark_unreachable(&self, for_: Duration) {
        let until = self.nanos_since_born(Instant::now() + for_);
        self.unreachable_until.fetch_max(until, Relaxed);
    }

    /// Forgets an unreachable mark, e.g. once a connection succeeded after all.
    pub fn clear_unreachable(&self) {
        self.unreachable_until.store(0, Relaxed);
    }

    /// Whether a mark set by [`mark_unreachable`](Self::mark_unreachable) still holds at `now`.
    pub fn is_unreachable(&self, now: Instant) -> bool {
        self.nanos_since_born(now) < self.unreachable_until.load(Relaxed)
    }

    /// Folds one response's latency into the estimate: a higher latency than the current
    /// estimate replaces it at once (the "peak", so a degrading endpoint is avoided quickly); a
    /// lower one pulls the estimate toward itself with weight 1 - exp(-elapsed / decay), so
    /// recovery is believed only gradually.
    fn observe_rtt(&self, rtt: Duration, now: Instant) {
        let now_ms = self.millis_since_born(now);
        let rtt_ns = nanos_f64(rtt);
        let mut word = self.rtt.load(Relaxed);
        loop {
            let (estimate, at_ms) = unpack(word);
            let weight = decay_weight(at_ms, now_ms);
            let current = estimate * weight;
            let next = if rtt_ns > current {
                rtt_ns
            } else {
                current * weight + rtt_ns * (1.0 - weight)
            };
            // A concurrent response may have updated the word since we read it; retry on
            // top of its result rather than overwrite it.
            match self
                .rtt
                .compare_exchange_weak(word, pack(next, now_ms), Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    fn estimate_ns(&self, now: Instant) -> f64 {
        let (estimate, at_ms) = unpack(self.rtt.load(Relaxed));
        estimate * decay_weight(at_ms, self.millis_since_born(now))
    }

    fn nanos_since_born(&self, t: Instant) -> u64 {
        // u64 nanoseconds last 584 years; saturate rather than wrap beyond that.
        u64::try_from(t.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Milliseconds since `born`, wrapping every 49.7 days; `decay_weight` reads the difference
    /// of two of them, which is right for gaps under 24.8 days. A longer silence only delays
    /// the decay of an estimate that is not being refreshed anyway.
    fn millis_since_born(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.born).as_millis() as u32
    }
}

// === impl InFlight ===

impl InFlight {
    /// Ends the request, recording `rtt` (e.g. time to the response's head) as its latency.
    pub fn finish(self, rtt: Duration) {
        self.state.observe_rtt(rtt, Instant::now());
        // `self` drops here, which decrements the in-flight count.
    }

    /// Ends the request, recording the time since [`EndpointState::start`] as its latency.
    pub fn finish_now(self) {
        let now = Instant::now();
        self.state
            .observe_rtt(now.saturating_duration_since(self.started), now);
    }

    /// The endpoint this request went to.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.state
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Drop runs exactly once per guard, so each `start` is matched by one decrement.
        self.state.in_flight.fetch_sub(1, Relaxed);
    }
}

// === helpers ===

/// exp(-elapsed / decay) for the time between two wrapping millisecond stamps. A stamp from
/// the future (a racing writer read the clock later than we did) counts as no time at all.
fn decay_weight(from_ms: u32, to_ms: u32) -> f64 {
    let elapsed = (to_ms.wrapping_sub(from_ms) as i32).max(0);
    (-f64::from(elapsed) / EWMA_DECAY.as_millis() as f64).exp()
}

/// The estimate (nanoseconds, as f32: 24 bits of precision is plenty for a heuristic) in the
/// high half, the millisecond stamp of its last update in the low half.
fn pack(estimate_ns: f64, at_ms: u32) -> u64 {
    (u64::from((estimate_ns as f32).to_bits()) << 32) | u64::from(at_ms)
}

fn unpack(word: u64) -> (f64, u32) {
    (f64::from(f32::from_bits((word >> 32) as u32)), word as u32)
}

fn nanos_f64(d: Duration) -> f64 {
    d.as_nanos() as f64
}
