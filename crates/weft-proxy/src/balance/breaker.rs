//! Circuit breaking: a service's `connectionPool` limits on what this proxy sends it at once —
//! requests in flight, requests waiting for a connection, retries in flight, HTTP/1
//! connections open. Past a limit the request is refused at once (503 `UO`), never queued.
//!
//! The counters ([`BreakerState`]) belong to the service port and outlive every push, like the
//! endpoints' state; the limits ([`Breaker`]) come with each push. A limit lowered below what
//! is in flight refuses new work until enough finishes; nothing in flight is cut.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use weft_api::proxy_config::ConnectionPool;

use crate::pool::ConnPolicy;

/// What one service port has in flight, across pushes.
#[derive(Debug, Default)]
pub struct BreakerState {
    requests: AtomicUsize,
    pending: AtomicUsize,
    retries: AtomicUsize,
    /// HTTP/1 connections open to the service's apps, counted by the pool (see
    /// [`crate::pool::ConnPolicy`]).
    pub connections: Arc<AtomicUsize>,
}

/// A service port's limits with their counters.
#[derive(Debug)]
pub struct Breaker {
    pub limits: ConnectionPool,
    /// What the limits ask of the pool, built once per push.
    pub conn: ConnPolicy,
    state: Arc<BreakerState>,
    overflows: Option<OverflowCounters>,
}

/// `weft_upstream_overflow_total` of one service, per limit, found once per push.
#[derive(Debug, Clone)]
pub struct OverflowCounters {
    pub max_requests: Counter,
    pub max_pending_requests: Counter,
    pub max_retries: Counter,
    pub max_connections: Counter,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MaxRequests,
    MaxPendingRequests,
    MaxRetries,
    MaxConnections,
}

/// A limit was reached: the request (or retry) is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    pub limit: Limit,
    pub max: u32,
}

/// One admitted request, pending request or retry; dropping it gives its place back.
#[derive(Debug)]
#[must_use = "the place is held only while this guard lives"]
pub struct Admitted {
    state: Arc<BreakerState>,
    limit: Limit,
}

// === impl Limit ===

impl Limit {
    /// The `limit` label, and the field's name in Istio's `connectionPool`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::MaxRequests => "http2MaxRequests",
            Limit::MaxPendingRequests => "http1MaxPendingRequests",
            Limit::MaxRetries => "maxRetries",
            Limit::MaxConnections => "maxConnections",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connectionPool {} ({}) reached", self.limit.label(), self.max)
    }
}

// === impl Breaker ===

impl Breaker {
    pub fn new(
        limits: ConnectionPool,
        state: Arc<BreakerState>,
        overflows: Option<OverflowCounters>,
    ) -> Self {
        let conn = ConnPolicy {
            connect_timeout: limits.connect_timeout_ms.map(std::time::Duration::from_millis),
            max_connections: limits
                .max_connections
                .map(|max| (Arc::clone(&state.connections), max as usize)),
            max_requests_per_connection: limits.max_requests_per_connection,
        };
        Self {
            limits,
            conn,
            state,
            overflows,
        }
    }

    /// The long-lived counters.
    pub fn state(&self) -> &Arc<BreakerState> {
        &self.state
    }

    /// A place for one request until its response ends.
    pub fn request(&self) -> Result<Option<Admitted>, Overflow> {
        self.admit(Limit::MaxRequests, self.limits.max_requests)
    }

    /// A place for one request while its connection opens.
    pub fn pending(&self) -> Result<Option<Admitted>, Overflow> {
        self.admit(Limit::MaxPendingRequests, self.limits.max_pending_requests)
    }

    /// A place for one retry while it runs.
    pub fn retry(&self) -> Result<Option<Admitted>, Overflow> {
        self.admit(Limit::MaxRetries, self.limits.max_retries)
    }

    /// Counts a refusal by the connection limit, which the pool enforces.
    pub fn count_connection_overflow(&self) {
        if let Some(c) = &self.overflows {
            c.max_connections.inc();
        }
    }

    fn admit(&self, limit: Limit, max: Option<u32>) -> Result<Option<Admitted>, Overflow> {
        let Some(max) = max else { return Ok(None) };
        let counter = self.state.counter(limit);
        // Take a place, then give it back if that went past the limit: no lock, and two
        // racing requests can never both take the last place.
        if counter.fetch_add(1, Relaxed) >= max as usize {
            counter.fetch_sub(1, Relaxed);
            if let Some(c) = &self.overflows {
                c.for_limit(limit).inc();
            }
            return Err(Overflow { limit, max });
        }
        Ok(Some(Admitted {
            state: Arc::clone(&self.state),
            limit,
        }))
    }
}

// === impl BreakerState ===

impl BreakerState {
    fn counter(&self, limit: Limit) -> &AtomicUsize {
        match limit {
            Limit::MaxRequests => &self.requests,
            Limit::MaxPendingRequests => &self.pending,
            Limit::MaxRetries => &self.retries,
            Limit::MaxConnections => &self.connections,
        }
    }

    /// Requests in flight now.
    pub fn requests(&self) -> usize {
        self.requests.load(Relaxed)
    }
}

// === impl OverflowCounters ===

impl OverflowCounters {
    fn for_limit(&self, limit: Limit) -> &Counter {
        match limit {
            Limit::MaxRequests => &self.max_requests,
            Limit::MaxPendingRequests => &self.max_pending_requests,
            Limit::MaxRetries => &self.max_retries,
            Limit::MaxConnections => &self.max_connections,
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.state.counter(self.limit).fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(limits: ConnectionPool) -> Breaker {
        Breaker::new(limits, Arc::default(), None)
    }

    #[test]
    fn each_limit_refuses_past_its_count_and_frees_a_place_on_drop() {
        let b = breaker(ConnectionPool {
            max_requests: Some(2),
            max_pending_requests: Some(1),
            max_retries: Some(0),
            ..ConnectionPool::default()
        });
        let first = b.request().expect("first");
        let second = b.request().expect("second");
        assert_eq!(
            b.request().expect_err("third"),
            Overflow {
                limit: Limit::MaxRequests,
                max: 2
            }
        );
        drop(first);
        let _third = b.request().expect("a place came free");
        drop(second);
        assert_eq!(b.state().requests(), 1);

        let pending = b.pending().expect("pending");
        assert!(b.pending().is_err());
        drop(pending);
        assert!(b.pending().is_ok());
        assert_eq!(b.retry().expect_err("no retries").limit, Limit::MaxRetries);
    }

    #[test]
    fn no_limit_admits_without_counting() {
        let b = breaker(ConnectionPool::default());
        let guards: Vec<_> = (0..1_000).map(|_| b.request().expect("no limit")).collect();
        assert!(guards.iter().all(Option::is_none));
        assert_eq!(b.state().requests(), 0);
    }

    #[test]
    fn a_new_limit_applies_to_what_is_already_in_flight() {
        let state: Arc<BreakerState> = Arc::default();
        let loose = Breaker::new(
            ConnectionPool {
                max_requests: Some(10),
                ..ConnectionPool::default()
            },
            Arc::clone(&state),
            None,
        );
        let held: Vec<_> = (0..3).map(|_| loose.request().expect("room")).collect();
        // A push lowers the limit to 2 with the same state: new requests wait for room.
        let tight = Breaker::new(
            ConnectionPool {
                max_requests: Some(2),
                ..ConnectionPool::default()
            },
            state,
            None,
        );
        assert!(tight.request().is_err());
        drop(held);
        assert!(tight.request().is_ok());
    }
}
