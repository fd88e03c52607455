//! Outlier detection: ejecting an endpoint that keeps failing, for a time that grows with each
//! ejection (Istio's `outlierDetection`, Envoy's semantics), or until a probe request succeeds
//! (Linkerd's consecutive failure accrual).
//!
//! The counters and the ejection live in each endpoint's [`OutlierState`], inside its
//! long-lived `EndpointState`, so they survive every push that keeps the endpoint. The settings
//! live in the balancer's [`Outlier`], built per push: a push that changes them applies the new
//! settings to the old counts.
//!
//! A pick reads two atomics per candidate and takes no lock; a finished request takes one
//! uncontended per-endpoint lock to count its outcome.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use weft_api::proxy_config::{EjectionBackoff, OutlierDetection};

use super::{lock, Slot};

/// How long a probe request holds its endpoint's probe slot if its result never comes (the
/// request was cancelled): then another request may probe.
pub const PROBE_CLAIM: Duration = Duration::from_secs(10);

/// The result of one request to an endpoint, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this HTTP status (a gRPC error status in a trailers-only
    /// response is read as the HTTP status gRPC maps it to).
    Status(u16),
    /// A failure of the proxy's own making: connect refused or timed out, or the connection
    /// reset before a response.
    LocalFailure,
}

/// Why an endpoint was ejected: the `reason` label of `weft_outlier_ejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocalOrigin,
    /// Linkerd: the one request sent after a penalty failed.
    FailedProbe,
}

/// One balancer's outlier settings, and the counters its ejections are reported on.
#[derive(Debug)]
pub struct Outlier {
    pub settings: OutlierDetection,
    ejections: Option<EjectionCounters>,
}

/// `weft_outlier_ejections_total` for one service, per reason, found once per push.
#[derive(Debug, Clone)]
pub struct EjectionCounters {
    pub consecutive_5xx: Counter,
    pub consecutive_gateway: Counter,
    pub consecutive_local_origin: Counter,
    pub failed_probe: Counter,
}

/// One endpoint's outlier record, shared by every balancer of its service port.
#[derive(Debug)]
pub struct OutlierState {
    /// The origin of the nanosecond stamps below.
    born: Instant,
    /// Nanoseconds after `born` until which the endpoint is ejected; 0 when it never was.
    ejected_until: AtomicU64,
    /// Set while an ejected endpoint awaits the probe that returns it (Linkerd).
    on_probation: AtomicBool,
    /// Nanoseconds after `born` until which a probe request holds the endpoint.
    probe_until: AtomicU64,
    record: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// Ejections that still lengthen the next one: it grows by one per ejection and shrinks by
    /// one per `interval` spent without one.
    ejections: u32,
    /// When the latest ejection ended (or is planned to).
    last_end: Option<Instant>,
}

/// What counting an outcome decided.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Nothing,
    Eject(Reason),
    Returned,
}

// === impl Reason ===

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::Consecutive5xx => "consecutive_5xx",
            Reason::ConsecutiveGateway => "consecutive_gateway",
            Reason::ConsecutiveLocalOrigin => "consecutive_local_origin",
            Reason::FailedProbe => "failed_probe",
        }
    }
}

// === impl Outcome ===

impl Outcome {
    /// The outcome of a response head: its status, or for a trailers-only gRPC response the
    /// HTTP status its `grpc-status` maps to (as Envoy feeds gRPC results to outlier detection).
    pub fn of_response(status: u16, grpc_status: Option<&[u8]>) -> Self {
        let mapped = match grpc_status {
            Some(b"14") => 503,                // UNAVAILABLE
            Some(b"4") => 504,                 // DEADLINE_EXCEEDED
            Some(b"2" | b"13" | b"15") => 500, // UNKNOWN, INTERNAL, DATA_LOSS
            _ => status,
        };
        Outcome::Status(mapped)
    }
}

// === impl Outlier ===

impl Outlier {
    pub fn new(settings: OutlierDetection, ejections: Option<EjectionCounters>) -> Self {
        Self { settings, ejections }
    }

    /// Whether a pick among `slots` must avoid ejected endpoints as of `now`: yes, unless fewer
    /// than `min_health_percent` of them are healthy (then traffic goes to all, Envoy's panic).
    pub fn honoured(&self, slots: &[Slot], now: Instant) -> bool {
        let min = self.settings.min_health_percent;
        if min == 0 || slots.is_empty() {
            return true;
        }
        let healthy = slots.iter().filter(|s| !s.state.outlier.is_ejected(now)).count();
        healthy * 100 >= min as usize * slots.len()
    }

    /// Counts the outcome of a request `slot` served in a balancer over `slots`, ejecting it
    /// when a rule says so and the balancer may lose one more endpoint.
    pub fn observe(&self, slots: &[Slot], slot: &Slot, outcome: Outcome) {
        let now = Instant::now();
        let state = &slot.state.outlier;
        match state.count(&self.settings, outcome, now) {
            Verdict::Nothing => {}
            Verdict::Returned => {
                tracing::info!(endpoint = %slot.endpoint.address, "probe succeeded: endpoint returned");
            }
            Verdict::Eject(reason) => {
                if !self.may_eject(slots, slot, now) {
                    tracing::info!(
                        endpoint = %slot.endpoint.address,
                        reason = reason.label(),
                        max_percent = self.settings.max_ejection_percent,
                        "not ejected: too many endpoints already are"
                    );
                    return;
                }
                let length = state.eject(&self.settings, now);
                if let Some(c) = &self.ejections {
                    c.for_reason(reason).inc();
                }
                tracing::info!(
                    endpoint = %slot.endpoint.address,
                    reason = reason.label(),
                    for_ms = length.as_millis() as u64,
                    "endpoint ejected"
                );
            }
        }
    }

    /// One endpoint may always be ejected; beyond that, at most `max_ejection_percent` of the
    /// balancer's endpoints at once (Envoy).
    fn may_eject(&self, slots: &[Slot], slot: &Slot, now: Instant) -> bool {
        let others = slots
            .iter()
            .filter(|s| s.endpoint.address != slot.endpoint.address && s.state.outlier.is_ejected(now))
            .count();
        others == 0 || (others + 1) * 100 <= self.settings.max_ejection_percent as usize * slots.len()
    }
}

// === impl EjectionCounters ===

impl EjectionCounters {
    fn for_reason(&self, reason: Reason) -> &Counter {
        match reason {
            Reason::Consecutive5xx => &self.consecutive_5xx,
            Reason::ConsecutiveGateway => &self.consecutive_gateway,
            Reason::ConsecutiveLocalOrigin => &self.consecutive_local_origin,
            Reason::FailedProbe => &self.failed_probe,
        }
    }
}

// === impl OutlierState ===

impl Default for OutlierState {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            ejected_until: AtomicU64::new(0),
            on_probation: AtomicBool::new(false),
            probe_until: AtomicU64::new(0),
            record: Mutex::default(),
        }
    }
}

impl OutlierState {
    /// Whether the endpoint must not be picked at `now`: its ejection runs, or it awaits a
    /// probe that another request already carries.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let t = self.nanos(now);
        t < self.ejected_until.load(Relaxed)
            || (self.on_probation.load(Relaxed) && t < self.probe_until.load(Relaxed))
    }

    /// Until when the current ejection runs, if one does at `now`.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        let until = self.ejected_until.load(Relaxed);
        let t = self.nanos(now);
        (t < until).then(|| Duration::from_nanos(until - t))
    }

    /// Whether the endpoint awaits its probe (Linkerd), or the probe is under way.
    pub fn on_probation(&self) -> bool {
        self.on_probation.load(Relaxed)
    }

    /// Called on the endpoint a pick chose: if it awaits a probe, this request becomes the probe
    /// (true), unless another request took it first (false: pick again). Any other endpoint: true.
    pub fn claim(&self, now: Instant) -> bool {
        if !self.on_probation.load(Relaxed) {
            return true;
        }
        let t = self.nanos(now);
        let held = self.probe_until.load(Relaxed);
        held <= t
            && self
                .probe_until
                .compare_exchange(held, self.nanos(now + PROBE_CLAIM), Relaxed, Relaxed)
                .is_ok()
    }

    /// Counts one outcome under `settings`.
    fn count(&self, settings: &OutlierDetection, outcome: Outcome, now: Instant) -> Verdict {
        let mut r = lock(&self.record);
        if self.nanos(now) < self.ejected_until.load(Relaxed) {
            // A request sent before the ejection: the endpoint is already out.
            return Verdict::Nothing;
        }
        let failed = match outcome {
            Outcome::Status(code) => code >= 500,
            Outcome::LocalFailure => true,
        };
        if self.on_probation.load(Relaxed) {
            if failed {
                return Verdict::Eject(Reason::FailedProbe);
            }
            *r = Record::default();
            self.on_probation.store(false, Relaxed);
            self.probe_until.store(0, Relaxed);
            return Verdict::Returned;
        }
        match outcome {
            Outcome::Status(code) => {
                r.consecutive_local = 0;
                if code >= 500 {
                    r.consecutive_5xx += 1;
                } else {
                    r.consecutive_5xx = 0;
                }
                if (502..=504).contains(&code) {
                    r.consecutive_gateway += 1;
                } else {
                    r.consecutive_gateway = 0;
                }
            }
            // Counted apart, or as the 503 the proxy would answer.
            Outcome::LocalFailure if settings.split_external_local_origin_errors => r.consecutive_local += 1,
            Outcome::LocalFailure => {
                r.consecutive_5xx += 1;
                r.consecutive_gateway += 1;
            }
        }
        let reached = |count: u32, limit: u32| limit > 0 && count >= limit;
        let reason = if reached(r.consecutive_5xx, settings.consecutive_5xx_errors) {
            Reason::Consecutive5xx
        } else if reached(r.consecutive_gateway, settings.consecutive_gateway_errors) {
            Reason::ConsecutiveGateway
        } else if settings.split_external_local_origin_errors
            && reached(r.consecutive_local, settings.consecutive_local_origin_failures)
        {
            Reason::ConsecutiveLocalOrigin
        } else {
            return Verdict::Nothing;
        };
        Verdict::Eject(reason)
    }

    /// Ejects the endpoint from `now` and returns for how long: the base time grown by its
    /// recent ejections (each `interval` without one forgives one), capped, plus jitter.
    fn eject(&self, settings: &OutlierDetection, now: Instant) -> Duration {
        let mut r = lock(&self.record);
        if let Some(left) = self.ejected_for(now) {
            // Two failures raced past the threshold: one ejection.
            return left;
        }
        let interval = settings.interval_ms.max(1);
        if let Some(end) = r.last_end {
            let quiet = now.saturating_duration_since(end).as_millis() as u64 / interval;
            r.ejections = r
                .ejections
                .saturating_sub(u32::try_from(quiet).unwrap_or(u32::MAX));
        }
        r.ejections = r.ejections.saturating_add(1);
        r.consecutive_5xx = 0;
        r.consecutive_gateway = 0;
        r.consecutive_local = 0;
        let length = ejection_length(settings, r.ejections, fastrand::f64());
        r.last_end = Some(now + length);
        self.ejected_until.store(self.nanos(now + length), Relaxed);
        self.probe_until.store(0, Relaxed);
        self.on_probation.store(settings.probe, Relaxed);
        length
    }

    fn nanos(&self, t: Instant) -> u64 {
        // At least 1, so that "until 0" always means "never ejected".
        u64::try_from(t.saturating_duration_since(self.born).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// The length of an endpoint's `n`-th ejection in a row (n >= 1): base x n (Envoy) or
/// base x 2^(n-1) (Linkerd), at most the maximum (or the base, if that is longer, as Envoy
/// does), plus up to `jitter_ratio` of it more; `unit` is a uniform draw in [0, 1).
pub fn ejection_length(settings: &OutlierDetection, n: u32, unit: f64) -> Duration {
    let base = settings.base_ejection_time_ms;
    let grown = match settings.backoff {
        EjectionBackoff::Linear => base.saturating_mul(u64::from(n)),
        EjectionBackoff::Exponential => base.saturating_mul(1u64 << n.saturating_sub(1).min(32)),
    };
    let capped = grown.min(settings.max_ejection_time_ms.max(base));
    let jitter = (capped as f64 * settings.jitter_ratio * unit) as u64;
    Duration::from_millis(capped.saturating_add(jitter))
}

#[cfg(test)]
mod tests;
