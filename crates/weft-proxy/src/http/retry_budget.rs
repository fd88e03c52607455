//! Retry budgets (Linkerd's ServiceProfile `retryBudget`): a service may receive retries up to
//! `ratio` times the requests sent to it over the last `ttl`, plus `min_per_second` retries a
//! second whatever the traffic. Retries beyond that are not made: the failure is returned, so
//! a struggling service is not buried under retries.
//!
//! One budget per service, kept across config pushes (shared/ARCHITECTURE.md, "State that
//! outlives a push"): a push that changes the limits keeps the counts; only a new `ttl`
//! restarts the window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use weft_api::route::RetryBudget as Params;

/// The `ttl` window is counted in this many slots; the oldest slot leaves as a new one starts.
const SLOTS: usize = 10;

/// Every service's budget.
#[derive(Debug, Default)]
pub struct RetryBudgets {
    by_service: Mutex<HashMap<String, Arc<RetryBudget>>>,
}

/// One service's budget.
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    params: Params,
    epoch: Instant,
    slot: Duration,
    /// Indexed by slot number modulo `SLOTS`.
    slots: [Slot; SLOTS],
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// Which slot number this slot currently counts.
    number: u64,
    requests: u64,
    retries: u64,
}

// === impl RetryBudgets ===

impl RetryBudgets {
    /// The budget of `service`, created on first use; its parameters follow the config.
    pub fn get(&self, service: &str, params: &Params) -> Arc<RetryBudget> {
        let mut map = self.by_service.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(service) {
            b.set_params(params);
            return b.clone();
        }
        let b = Arc::new(RetryBudget::new(params, Instant::now()));
        map.insert(service.to_string(), b.clone());
        b
    }

    /// Keeps the budgets of the services `keep` accepts, drops the rest (on each push).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.by_service.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|service, _| keep(service));
    }

    pub fn len(&self) -> usize {
        self.by_service
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    pub fn new(params: &Params, now: Instant) -> Self {
        Self {
            window: Mutex::new(Window {
                params: params.clone(),
                epoch: now,
                slot: slot_length(params),
                slots: [Slot::default(); SLOTS],
            }),
        }
    }

    fn set_params(&self, params: &Params) {
        let mut w = self.lock();
        if w.params.ttl_ms != params.ttl_ms {
            // Slots of another length cannot be recounted: a new ttl starts a new window.
            *w = Window {
                params: params.clone(),
                epoch: Instant::now(),
                slot: slot_length(params),
                slots: [Slot::default(); SLOTS],
            };
        } else if w.params != *params {
            // Same window, new limits: the counts stay.
            w.params = params.clone();
        }
    }

    /// Counts a request sent to the service (each original request, not its retries).
    pub fn deposit(&self, now: Instant) {
        self.lock().current(now).requests += 1;
    }

    /// Takes one retry from the budget; false when the budget is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let mut w = self.lock();
        let (requests, retries) = w.totals(now);
        let ttl_secs = w.params.ttl_ms as f64 / 1000.0;
        let allowed = w.params.ratio * requests as f64 + f64::from(w.params.min_per_second) * ttl_secs;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        w.current(now).retries += 1;
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn slot_length(params: &Params) -> Duration {
    Duration::from_millis((params.ttl_ms / SLOTS as u64).max(1))
}

// === impl Window ===

impl Window {
    fn number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        (elapsed / self.slot.as_nanos().max(1)) as u64
    }

    /// The slot counting `now`, emptied if it last counted an older slot number.
    fn current(&mut self, now: Instant) -> &mut Slot {
        let number = self.number(now);
        let slot = &mut self.slots[(number % SLOTS as u64) as usize];
        if slot.number != number {
            *slot = Slot {
                number,
                ..Slot::default()
            };
        }
        slot
    }

    /// Requests and retries over the last `SLOTS` slots (the `ttl`).
    fn totals(&self, now: Instant) -> (u64, u64) {
        let number = self.number(now);
        self.slots
            .iter()
            .filter(|s| s.number + (SLOTS as u64) > number && s.number <= number)
            .fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ratio: f64, min_per_second: u32, ttl_ms: u64) -> Params {
        Params {
            ratio,
            min_per_second,
            ttl_ms,
        }
    }

    fn withdrawals(b: &RetryBudget, now: Instant, max: usize) -> usize {
        (0..max).take_while(|_| b.try_withdraw(now)).count()
    }

    #[test]
    fn retries_follow_the_ratio_of_requests() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&params(0.2, 0, 10_000), t0);
        assert!(!b.try_withdraw(t0), "no requests, no reserve: no retry");
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert_eq!(withdrawals(&b, t0, 1000), 20);
        // Five more requests earn one more retry.
        for _ in 0..5 {
            b.deposit(t0);
        }
        assert_eq!(withdrawals(&b, t0, 1000), 1);
    }

    #[test]
    fn the_minimum_per_second_is_a_reserve_over_the_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&params(0.0, 3, 2_000), t0);
        assert_eq!(withdrawals(&b, t0, 1000), 6, "3/s over 2 s");
    }

    #[test]
    fn counts_leave_the_window_after_the_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&params(0.5, 0, 1_000), t0);
        for _ in 0..10 {
            b.deposit(t0);
        }
        assert_eq!(withdrawals(&b, t0, 100), 5);
        // Half a window later the requests and the retries are still counted.
        assert_eq!(withdrawals(&b, t0 + Duration::from_millis(500), 100), 0);
        // A whole window later both have left: nothing is owed, nothing is earned.
        let later = t0 + Duration::from_millis(1_100);
        assert_eq!(withdrawals(&b, later, 100), 0);
        for _ in 0..4 {
            b.deposit(later);
        }
        assert_eq!(withdrawals(&b, later, 100), 2);
    }

    #[test]
    fn budgets_outlive_a_push_and_go_with_their_service() {
        let budgets = RetryBudgets::default();
        let p = params(0.0, 1, 10_000);
        let a = budgets.get("a", &p);
        let now = Instant::now();
        assert_eq!(withdrawals(&a, now, 100), 10);
        // The same config pushed again: the same budget, still spent.
        let again = budgets.get("a", &p);
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!again.try_withdraw(now));
        // New parameters keep the counts: 2/s over 10 s allows 20, 10 are spent.
        let raised = budgets.get("a", &params(0.0, 2, 10_000));
        assert_eq!(withdrawals(&raised, now, 100), 10);
        budgets.get("b", &p);
        budgets.retain(|s| s == "b");
        assert_eq!(budgets.len(), 1);
        assert!(
            !Arc::ptr_eq(&budgets.get("a", &p), &a),
            "a dropped service starts afresh"
        );
    }
}
