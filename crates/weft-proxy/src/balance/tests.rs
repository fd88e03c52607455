use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, Instant};
use weft_api::proxy_config::{
    Endpoint, EndpointSet, LoadBalancer, MeshService, Protocol, ProxyConfig, ServicePort,
};

use super::*;

const SEED: u64 = 0x5eed;
const PICKS: usize = 10_000;
/// Allowed distance between a random policy's observed and expected share. Over 10,000 picks
/// one standard deviation is under 0.5 points, so 3 points is > 6 sigma (and seeds are fixed).
const TOLERANCE: f64 = 0.03;
const ALL_POLICIES: [LoadBalancer; 4] = [
    LoadBalancer::LeastRequest,
    LoadBalancer::RoundRobin,
    LoadBalancer::Random,
    LoadBalancer::PeakEwma,
];

fn addr(n: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n as u8], 9080))
}

fn endpoint(n: usize, weight: u32) -> Endpoint {
    Endpoint {
        address: addr(n),
        mesh_port: None,
        weight,
        labels: BTreeMap::new(),
        workload: None,
        identity: None,
    }
}

/// A seeded balancer whose slot `i` has address `addr(i)` and weight `weights[i]`.
fn balancer(policy: LoadBalancer, weights: &[u32]) -> Balancer {
    let slots = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Slot::new(endpoint(i, w)))
        .collect();
    Balancer::with_seed(policy, slots, SEED)
}

fn index_of(b: &Balancer, slot: &Slot) -> usize {
    b.slots()
        .iter()
        .position(|s| s.endpoint.address == slot.endpoint.address)
        .expect("picked slot belongs to the balancer")
}

/// How many of `picks` picks went to each slot.
fn counts(b: &Balancer, picks: usize, exclude: &[SocketAddr]) -> Vec<usize> {
    let mut counts = vec![0; b.slots().len()];
    for _ in 0..picks {
        let slot = b.pick(exclude).expect("an endpoint is eligible");
        counts[index_of(b, slot)] += 1;
    }
    counts
}

fn assert_shares(counts: &[usize], expected: &[f64]) {
    let total: usize = counts.iter().sum();
    for (i, (&n, &want)) in counts.iter().zip(expected).enumerate() {
        let got = n as f64 / total as f64;
        assert!(
            (got - want).abs() <= TOLERANCE,
            "slot {i}: share {got:.3}, expected {want:.3} ± {TOLERANCE} (counts {counts:?})"
        );
    }
}

// === distributions ===

#[test]
fn least_request_idle_endpoints_share_by_weight() {
    // Nothing in flight: every comparison ties and the first, weighted, candidate wins.
    let b = balancer(LoadBalancer::LeastRequest, &[1, 1, 2]);
    assert_shares(&counts(&b, PICKS, &[]), &[0.25, 0.25, 0.5]);
}

#[test]
fn random_shares_by_weight() {
    let b = balancer(LoadBalancer::Random, &[1, 1, 2]);
    assert_shares(&counts(&b, PICKS, &[]), &[0.25, 0.25, 0.5]);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_equal_latency_favours_weight() {
    // Equal latency, nothing in flight: cost/weight makes the weight-2 endpoint win every pair
    // it is in. Candidates are drawn without replacement, so the pair is {A,B} with
    // probability 1/4 * 1/3 * 2 = 1/6, split evenly: A and B 1/12 each, C 5/6.
    let b = balancer(LoadBalancer::PeakEwma, &[1, 1, 2]);
    assert_shares(&counts(&b, PICKS, &[]), &[1.0 / 12.0, 1.0 / 12.0, 5.0 / 6.0]);
}

#[test]
fn round_robin_is_exact_per_cycle() {
    let b = balancer(LoadBalancer::RoundRobin, &[1, 1, 2]);
    let order: Vec<usize> = (0..PICKS)
        .map(|_| index_of(&b, b.pick(&[]).expect("eligible")))
        .collect();
    for cycle in order.chunks(4) {
        let mut per_slot = [0; 3];
        cycle.iter().for_each(|&i| per_slot[i] += 1);
        assert_eq!(per_slot, [1, 1, 2], "cycle {cycle:?}");
    }
}

#[test]
fn round_robin_interleaves_rather_than_bursts() {
    let b = balancer(LoadBalancer::RoundRobin, &[2, 1]);
    let order: Vec<usize> = (0..6)
        .map(|_| index_of(&b, b.pick(&[]).expect("eligible")))
        .collect();
    assert_eq!(order, [0, 1, 0, 0, 1, 0]);
}

// === eligibility ===

#[test]
fn weight_zero_is_never_picked() {
    for policy in ALL_POLICIES {
        let b = balancer(policy, &[0, 1, 0, 3]);
        let c = counts(&b, PICKS, &[]);
        assert_eq!((c[0], c[2]), (0, 0), "{policy:?}: {c:?}");
        assert!(balancer(policy, &[0, 0]).pick(&[]).is_none(), "{policy:?}");
    }
}

#[test]
fn excluded_addresses_are_never_picked() {
    for policy in ALL_POLICIES {
        let b = balancer(policy, &[1, 1, 2, 1]);
        let c = counts(&b, PICKS, &[addr(0), addr(2)]);
        assert_eq!((c[0], c[2]), (0, 0), "{policy:?}: {c:?}");
        assert!(c[1] > 0 && c[3] > 0, "{policy:?}: {c:?}");
        let all: Vec<SocketAddr> = (0..4).map(addr).collect();
        assert!(b.pick(&all).is_none(), "{policy:?}");
    }
}

#[test]
fn excluded_addresses_keep_round_robin_exact() {
    let b = balancer(LoadBalancer::RoundRobin, &[1, 5, 2]);
    assert_eq!(counts(&b, 300, &[addr(1)]), [100, 0, 200]);
}

#[tokio::test(start_paused = true)]
async fn unreachable_is_skipped_until_its_time_passes() {
    for policy in ALL_POLICIES {
        let b = balancer(policy, &[1, 1, 1]);
        let a = &b.slots()[0].state;
        a.mark_unreachable(Duration::from_secs(5));
        assert!(a.is_unreachable(Instant::now()));
        assert_eq!(counts(&b, 1_000, &[])[0], 0, "{policy:?}");

        advance(Duration::from_millis(4_999)).await;
        assert_eq!(counts(&b, 1_000, &[])[0], 0, "{policy:?}");

        advance(Duration::from_millis(1)).await;
        assert!(!a.is_unreachable(Instant::now()));
        assert!(counts(&b, 1_000, &[])[0] > 100, "{policy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_shorter_mark_does_not_shorten_a_longer_one() {
    let state = EndpointState::new(addr(0));
    state.mark_unreachable(Duration::from_secs(10));
    state.mark_unreachable(Duration::from_secs(1));
    advance(Duration::from_secs(5)).await;
    assert!(state.is_unreachable(Instant::now()));
    state.clear_unreachable();
    assert!(!state.is_unreachable(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn panic_mode_picks_unreachable_when_nothing_else_remains() {
    for policy in ALL_POLICIES {
        // Slot 0 is excluded, slot 3 has weight 0: neither counts as remaining, so slots 1
        // and 2, both unreachable, are all there is. Equal weights, so that peak EWMA (which
        // divides cost by weight) shares between them too.
        let b = balancer(policy, &[1, 1, 1, 0]);
        for slot in b.slots() {
            slot.state.mark_unreachable(Duration::from_secs(30));
        }
        let c = counts(&b, 1_000, &[addr(0)]);
        assert_eq!((c[0], c[3]), (0, 0), "{policy:?}: {c:?}");
        assert!(c[1] > 0 && c[2] > 0, "{policy:?}: {c:?}");

        // One reachable endpoint left: panic mode ends and it takes everything.
        b.slots()[2].state.clear_unreachable();
        assert_eq!(counts(&b, 1_000, &[addr(0)]), [0, 0, 1_000, 0], "{policy:?}");
    }
}

// === load awareness ===

#[test]
fn least_request_avoids_a_busy_endpoint() {
    // P2C draws two distinct candidates; with three endpoints of which one is busy, at least
    // one idle endpoint is always a candidate and beats it. The busy one gets nothing.
    let b = balancer(LoadBalancer::LeastRequest, &[1, 1, 1]);
    let busy: Vec<InFlight> = (0..10).map(|_| b.slots()[0].state.start()).collect();
    let c = counts(&b, PICKS, &[]);
    assert_eq!(c[0], 0, "{c:?}");
    assert_shares(&c, &[0.0, 0.5, 0.5]);

    drop(busy);
    assert_shares(&counts(&b, PICKS, &[]), &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
}

#[test]
fn least_request_divides_load_by_weight() {
    // 3 in flight on weight 4 (0.75 each) beats 1 in flight on weight 1.
    let b = balancer(LoadBalancer::LeastRequest, &[1, 4]);
    let _light = b.slots()[0].state.start();
    let _heavy: Vec<InFlight> = (0..3).map(|_| b.slots()[1].state.start()).collect();
    assert_eq!(counts(&b, 1_000, &[]), [0, 1_000]);
}

#[test]
fn concurrent_picks_share_by_weight_and_balance_in_flight() {
    // The production path: thread-local randomness, several threads on one balancer.
    let slots = [1, 1, 2].iter().enumerate();
    let slots = slots.map(|(i, &w)| Slot::new(endpoint(i, w))).collect();
    let b = Arc::new(Balancer::new(LoadBalancer::Random, slots));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let mut counts = [0usize; 3];
                for _ in 0..PICKS / 4 {
                    let slot = b.pick(&[]).expect("eligible");
                    let request = slot.state.start();
                    counts[index_of(&b, slot)] += 1;
                    request.finish(Duration::from_millis(1));
                }
                counts
            })
        })
        .collect();
    let mut total = [0usize; 3];
    for thread in threads {
        let counts = thread.join().expect("picking thread");
        total.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
    }
    assert_shares(&total, &[0.25, 0.25, 0.5]);
    assert!(b.slots().iter().all(|s| s.state.in_flight() == 0));
}

#[test]
fn in_flight_guard_counts_each_request_once() {
    let state = Arc::new(EndpointState::new(addr(0)));
    let first = state.start();
    let second = state.start();
    let third = state.start();
    assert_eq!(state.in_flight(), 3);
    drop(first);
    second.finish(Duration::from_millis(5));
    assert_eq!(state.in_flight(), 1);
    assert!(Arc::ptr_eq(third.endpoint(), &state));
    third.finish_now();
    assert_eq!(state.in_flight(), 0);
}

// === peak EWMA ===

#[tokio::test(start_paused = true)]
async fn ewma_starts_at_the_default_and_takes_a_peak_at_once() {
    let state = Arc::new(EndpointState::new(addr(0)));
    assert_eq!(state.rtt_estimate(Instant::now()), DEFAULT_RTT);

    state.start().finish(Duration::from_millis(200));
    assert_eq!(state.rtt_estimate(Instant::now()), Duration::from_millis(200));

    // A fast response right after counts for almost nothing: recovery is believed slowly.
    state.start().finish(Duration::from_millis(10));
    assert_eq!(state.rtt_estimate(Instant::now()), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn ewma_decays_with_time() {
    let state = Arc::new(EndpointState::new(addr(0)));
    state.start().finish(Duration::from_secs(1));

    // No responses: the estimate decays toward zero with time constant EWMA_DECAY.
    advance(EWMA_DECAY).await;
    assert_ms_near(state.rtt_estimate(Instant::now()), 1_000.0 * (-1f64).exp());

    // A faster response pulls it toward itself with weight 1 - e^-1 over those 10 s.
    state.start().finish(Duration::from_millis(50));
    let current = 1_000.0 * (-1f64).exp();
    let expected = current * (-1f64).exp() + 50.0 * (1.0 - (-1f64).exp());
    assert_ms_near(state.rtt_estimate(Instant::now()), expected);
}

#[tokio::test(start_paused = true)]
async fn finish_now_measures_from_start() {
    let state = Arc::new(EndpointState::new(addr(0)));
    let request = state.start();
    advance(Duration::from_millis(250)).await;
    request.finish_now();
    assert_eq!(state.rtt_estimate(Instant::now()), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_avoids_a_slow_endpoint_until_it_decays() {
    let b = balancer(LoadBalancer::PeakEwma, &[1, 1, 1]);
    b.slots()[0].state.start().finish(Duration::from_secs(1));
    // Every pair holds a 30 ms endpoint, which beats the 1 s one.
    let c = counts(&b, PICKS, &[]);
    assert_eq!(c[0], 0, "{c:?}");

    // A minute of the others answering in 30 ms while the slow one gets no traffic: its
    // estimate decays to 1 s x e^-6 ≈ 2.5 ms, so it now wins every pair it is in (2/3).
    for _ in 0..60 {
        advance(Duration::from_secs(1)).await;
        for slot in &b.slots()[1..] {
            slot.state.start().finish(Duration::from_millis(30));
        }
    }
    assert_shares(&counts(&b, PICKS, &[]), &[2.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0]);
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_weighs_load_into_cost() {
    // Equal latency; 2 in flight triples one endpoint's cost, so the idle one wins.
    let b = balancer(LoadBalancer::PeakEwma, &[1, 1]);
    let _busy: Vec<InFlight> = (0..2).map(|_| b.slots()[1].state.start()).collect();
    assert_eq!(counts(&b, 1_000, &[]), [1_000, 0]);
}

fn assert_ms_near(got: Duration, want_ms: f64) {
    let got_ms = got.as_secs_f64() * 1_000.0;
    assert!(
        (got_ms - want_ms).abs() < 0.5,
        "{got_ms} ms, expected {want_ms} ms"
    );
}

// === reconcile ===

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn config(policy: LoadBalancer, endpoints: Vec<Endpoint>) -> ProxyConfig {
    ProxyConfig {
        services: vec![MeshService {
            name: "reviews".into(),
            namespace: "default".into(),
            vip: None,
            ports: vec![
                ServicePort {
                    port: 9080,
                    name: None,
                    protocol: Protocol::Http,
                },
                ServicePort {
                    port: 9090,
                    name: None,
                    protocol: Protocol::Http,
                },
            ],
            load_balancer: policy,
            outlier_detection: None,
            connection_pool: None,
            routes: Vec::new(),
        }],
        endpoints: vec![EndpointSet {
            service: "reviews".into(),
            namespace: "default".into(),
            port: 9080,
            subset: None,
            endpoints,
        }],
        ..ProxyConfig::default()
    }
}

fn state_of(b: &Balancer, n: usize) -> Option<&Arc<EndpointState>> {
    b.slots()
        .iter()
        .find(|s| s.endpoint.address == addr(n))
        .map(|s| &s.state)
}

#[tokio::test(start_paused = true)]
async fn reconcile_keeps_state_for_remaining_addresses() {
    let balancers = Balancers::with_seed(SEED);
    let lr = LoadBalancer::LeastRequest;
    balancers.reconcile(&config(lr, vec![endpoint(1, 1), endpoint(2, 1)]));
    let before = balancers.get(REVIEWS, 9080).expect("reviews:9080");
    let kept = Arc::clone(state_of(&before, 1).expect("endpoint 1"));
    let request = kept.start();
    kept.start().finish(Duration::from_millis(400));
    let removed = Arc::downgrade(state_of(&before, 2).expect("endpoint 2"));

    balancers.reconcile(&config(lr, vec![endpoint(1, 1), endpoint(3, 1)]));
    let after = balancers.get(REVIEWS, 9080).expect("reviews:9080");
    let carried = state_of(&after, 1).expect("endpoint 1 remains");
    assert!(Arc::ptr_eq(carried, &kept));
    assert_eq!(carried.in_flight(), 1);
    assert_eq!(carried.rtt_estimate(Instant::now()), Duration::from_millis(400));
    assert!(state_of(&after, 2).is_none());
    assert_eq!(state_of(&after, 3).expect("endpoint 3").in_flight(), 0);

    drop(request);
    assert_eq!(carried.in_flight(), 0);
    drop(before);
    assert!(removed.upgrade().is_none(), "removed endpoint's state is dropped");
}

#[test]
fn reconcile_follows_policy_and_keeps_unchanged_balancers() {
    let balancers = Balancers::new();
    let endpoints = vec![endpoint(1, 1), endpoint(2, 2)];
    balancers.reconcile(&config(LoadBalancer::LeastRequest, endpoints.clone()));
    let first = balancers.get(REVIEWS, 9080).expect("reviews:9080");
    assert_eq!(first.policy(), LoadBalancer::LeastRequest);

    balancers.reconcile(&config(LoadBalancer::LeastRequest, endpoints.clone()));
    let same = balancers.get(REVIEWS, 9080).expect("reviews:9080");
    assert!(Arc::ptr_eq(&first, &same), "an unchanged push keeps the balancer");

    balancers.reconcile(&config(LoadBalancer::RoundRobin, endpoints));
    let changed = balancers.get(REVIEWS, 9080).expect("reviews:9080");
    assert_eq!(changed.policy(), LoadBalancer::RoundRobin);
    let (old, new) = (state_of(&first, 2), state_of(&changed, 2));
    assert!(Arc::ptr_eq(old.expect("old"), new.expect("new")));
}

#[test]
fn reconcile_tells_unknown_services_from_empty_ones() {
    let balancers = Balancers::new();
    assert!(balancers.get(REVIEWS, 9080).is_none());
    balancers.reconcile(&config(LoadBalancer::Random, vec![endpoint(1, 1)]));
    assert!(balancers.get("ratings.default.svc.cluster.local", 9080).is_none());
    assert!(balancers.get(REVIEWS, 1234).is_none());
    // Declared port without an EndpointSet: a balancer that has nobody to pick.
    let empty = balancers.get(REVIEWS, 9090).expect("reviews:9090");
    assert!(empty.pick(&[]).is_none());

    balancers.reconcile(&ProxyConfig::default());
    assert!(balancers.get(REVIEWS, 9080).is_none());
}
