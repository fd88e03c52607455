//! Outlier detection and failure accrual, on paused time: every ejection, its length, its end,
//! the limits on how many endpoints may be out, and what a push keeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::advance;
use weft_api::proxy_config::{
    EjectionBackoff, Endpoint, EndpointSet, LoadBalancer, MeshService, OutlierDetection, Protocol,
    ProxyConfig, ServicePort,
};

use super::super::{Balancer, Balancers, Slot};
use super::*;

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn addr(n: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n as u8], 9080))
}

fn endpoint(n: usize) -> Endpoint {
    Endpoint {
        address: addr(n),
        mesh_port: None,
        weight: 1,
        labels: BTreeMap::new(),
        workload: None,
        identity: None,
    }
}

/// Istio's settings with 100% ejectable, so that small balancers show each rule alone.
fn istio() -> OutlierDetection {
    OutlierDetection {
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    }
}

fn balancer(n: usize, settings: OutlierDetection) -> Balancer {
    let slots = (0..n).map(|i| Slot::new(endpoint(i))).collect();
    Balancer::with_seed(LoadBalancer::RoundRobin, slots, 7)
        .with_outlier(Some(Arc::new(Outlier::new(settings, None))))
}

fn slot(b: &Balancer, i: usize) -> &Slot {
    &b.slots()[i]
}

fn fail(b: &Balancer, i: usize, times: usize, status: u16) {
    for _ in 0..times {
        b.observe(slot(b, i), Outcome::Status(status));
    }
}

/// Which endpoints `picks` picks reach.
fn picked(b: &Balancer, picks: usize) -> Vec<usize> {
    let mut seen = vec![0; b.slots().len()];
    for _ in 0..picks {
        let s = b.pick(&[]).expect("a pick");
        seen[b
            .slots()
            .iter()
            .position(|x| x.endpoint.address == s.endpoint.address)
            .expect("own slot")] += 1;
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn five_5xx_in_a_row_eject_for_the_base_time_then_longer_each_time() {
    let b = balancer(2, istio());
    fail(&b, 0, 4, 503);
    b.observe(slot(&b, 0), Outcome::Status(200));
    fail(&b, 0, 4, 500);
    assert_eq!(
        b.ejected(Instant::now()),
        0,
        "a success in between resets the count"
    );
    fail(&b, 0, 1, 500);
    assert_eq!(b.ejected(Instant::now()), 1);
    assert_eq!(picked(&b, 50), vec![0, 50]);

    advance(Duration::from_millis(29_999)).await;
    assert_eq!(picked(&b, 4), vec![0, 4], "still out just before 30 s");
    advance(Duration::from_millis(1)).await;
    assert_eq!(picked(&b, 4), vec![2, 2], "back after 30 s");

    // The second ejection soon after lasts twice the base.
    fail(&b, 0, 5, 503);
    advance(Duration::from_millis(59_999)).await;
    assert!(slot(&b, 0).state.outlier.is_ejected(Instant::now()));
    advance(Duration::from_millis(1)).await;
    assert!(!slot(&b, 0).state.outlier.is_ejected(Instant::now()));

    // Each quiet interval (10 s) forgives one ejection: after 15 s quiet the third is 1 x base
    // again (2 remembered, 1 forgiven, +1), after a long quiet it is the base.
    advance(Duration::from_secs(15)).await;
    fail(&b, 0, 5, 503);
    assert_eq!(
        slot(&b, 0).state.outlier.ejected_for(Instant::now()),
        Some(Duration::from_secs(60))
    );
    advance(Duration::from_secs(60 + 3_600)).await;
    fail(&b, 0, 5, 503);
    assert_eq!(
        slot(&b, 0).state.outlier.ejected_for(Instant::now()),
        Some(Duration::from_secs(30))
    );
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_count_502_to_504_only() {
    let settings = OutlierDetection {
        consecutive_5xx_errors: 0,
        consecutive_gateway_errors: 3,
        ..istio()
    };
    let b = balancer(2, settings);
    fail(&b, 0, 10, 500);
    assert_eq!(
        b.ejected(Instant::now()),
        0,
        "500 is no gateway error, and 5xx is off"
    );
    fail(&b, 0, 2, 502);
    fail(&b, 0, 1, 500);
    fail(&b, 0, 2, 504);
    assert_eq!(b.ejected(Instant::now()), 0, "a 500 breaks the run");
    fail(&b, 0, 1, 503);
    assert_eq!(b.ejected(Instant::now()), 1);
}

#[tokio::test(start_paused = true)]
async fn local_origin_failures_count_apart_only_when_split() {
    let joined = balancer(2, istio());
    for _ in 0..3 {
        joined.observe(slot(&joined, 0), Outcome::LocalFailure);
    }
    fail(&joined, 0, 2, 503);
    assert_eq!(
        joined.ejected(Instant::now()),
        1,
        "not split: a refused connect is a 5xx"
    );

    let settings = OutlierDetection {
        split_external_local_origin_errors: true,
        consecutive_local_origin_failures: 2,
        ..istio()
    };
    let split = balancer(2, settings.clone());
    for _ in 0..3 {
        split.observe(slot(&split, 0), Outcome::LocalFailure);
        fail(&split, 0, 1, 503);
    }
    assert_eq!(
        split.ejected(Instant::now()),
        0,
        "each response resets the local count"
    );
    fail(&split, 0, 2, 503);
    assert_eq!(
        split.ejected(Instant::now()),
        1,
        "the 5xx rule still counts responses"
    );

    let split = balancer(
        2,
        OutlierDetection {
            consecutive_5xx_errors: 0,
            ..settings
        },
    );
    split.observe(slot(&split, 1), Outcome::LocalFailure);
    split.observe(slot(&split, 1), Outcome::LocalFailure);
    assert_eq!(split.ejected(Instant::now()), 1);
    assert_eq!(picked(&split, 3), vec![3, 0]);
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_caps_ejections_but_one_may_always_go() {
    let b = balancer(
        10,
        OutlierDetection {
            max_ejection_percent: 20,
            ..OutlierDetection::default()
        },
    );
    for i in 0..5 {
        fail(&b, i, 5, 503);
    }
    assert_eq!(b.ejected(Instant::now()), 2, "20% of 10");

    // Istio's default 10% of a two-endpoint service is 0.2 of an endpoint: one still goes.
    let b = balancer(2, OutlierDetection::default());
    fail(&b, 0, 5, 503);
    fail(&b, 1, 5, 503);
    assert_eq!(b.ejected(Instant::now()), 1);
}

#[tokio::test(start_paused = true)]
async fn below_min_health_percent_every_endpoint_takes_traffic() {
    let b = balancer(
        2,
        OutlierDetection {
            min_health_percent: 60,
            ..istio()
        },
    );
    fail(&b, 0, 5, 503);
    assert_eq!(b.ejected(Instant::now()), 1);
    assert_eq!(picked(&b, 4), vec![2, 2], "50% healthy < 60%: balance over all");

    let b = balancer(
        2,
        OutlierDetection {
            min_health_percent: 50,
            ..istio()
        },
    );
    fail(&b, 0, 5, 503);
    assert_eq!(picked(&b, 4), vec![0, 4], "50% healthy is enough");
}

#[tokio::test(start_paused = true)]
async fn with_every_endpoint_ejected_nothing_is_picked() {
    let b = balancer(2, istio());
    fail(&b, 0, 5, 503);
    fail(&b, 1, 5, 503);
    assert!(b.pick(&[]).is_none());
    assert_eq!(b.ejected(Instant::now()), 2);
    // Without outlier detection the same state is ignored.
    let plain = Balancer::new(LoadBalancer::RoundRobin, b.slots().to_vec());
    assert!(plain.pick(&[]).is_some());
}

fn linkerd() -> OutlierDetection {
    OutlierDetection {
        jitter_ratio: 0.0,
        ..OutlierDetection::linkerd_consecutive()
    }
}

#[tokio::test(start_paused = true)]
async fn failure_accrual_probes_with_one_request_after_each_penalty() {
    let b = balancer(2, linkerd());
    fail(&b, 0, 6, 503);
    assert_eq!(b.ejected(Instant::now()), 0);
    b.observe(slot(&b, 0), Outcome::LocalFailure);
    assert_eq!(b.ejected(Instant::now()), 1, "7 failures in a row");
    assert_eq!(picked(&b, 10), vec![0, 10]);

    // After the 1 s penalty, exactly one request goes: the probe. The rest go elsewhere until
    // it answers.
    advance(Duration::from_secs(1)).await;
    assert_eq!(picked(&b, 10), vec![1, 9]);
    // It fails: a 2 s penalty, then one probe again.
    fail(&b, 0, 1, 503);
    advance(Duration::from_millis(1_999)).await;
    assert_eq!(picked(&b, 10), vec![0, 10]);
    advance(Duration::from_millis(1)).await;
    assert_eq!(picked(&b, 10), vec![1, 9]);
    // It succeeds: back in full, and the next penalty starts again at 1 s.
    b.observe(slot(&b, 0), Outcome::Status(200));
    assert_eq!(picked(&b, 10), vec![5, 5]);
    fail(&b, 0, 7, 500);
    assert_eq!(
        slot(&b, 0).state.outlier.ejected_for(Instant::now()),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_frees_the_endpoint_for_another() {
    let b = balancer(2, linkerd());
    fail(&b, 0, 7, 503);
    advance(Duration::from_secs(1)).await;
    assert_eq!(picked(&b, 4), vec![1, 3]);
    // The probe request was cancelled: no result ever comes.
    advance(PROBE_CLAIM).await;
    assert_eq!(picked(&b, 4), vec![1, 3], "a new probe after the claim lapses");
}

#[test]
fn ejection_lengths_grow_cap_and_jitter() {
    let envoy = OutlierDetection::default();
    let len = |s: &OutlierDetection, n, unit| ejection_length(s, n, unit).as_secs_f64();
    assert_eq!(len(&envoy, 1, 0.0), 30.0);
    assert_eq!(len(&envoy, 3, 0.0), 90.0);
    assert_eq!(len(&envoy, 50, 0.0), 300.0, "capped at max_ejection_time");
    let linkerd = OutlierDetection::linkerd_consecutive();
    assert_eq!(linkerd.backoff, EjectionBackoff::Exponential);
    assert_eq!(len(&linkerd, 1, 0.0), 1.0);
    assert_eq!(len(&linkerd, 4, 0.0), 8.0);
    assert_eq!(len(&linkerd, 40, 0.0), 60.0);
    // Jitter 0.5 adds up to half again.
    assert_eq!(len(&linkerd, 2, 0.5), 2.5);
    assert!(len(&linkerd, 2, 0.999) < 3.0);
    // A base longer than the cap wins (Envoy).
    let long = OutlierDetection {
        base_ejection_time_ms: 400_000,
        ..OutlierDetection::default()
    };
    assert_eq!(len(&long, 2, 0.0), 400.0);
}

#[test]
fn grpc_errors_in_a_trailers_only_head_count_as_their_http_status() {
    assert_eq!(Outcome::of_response(200, Some(b"14")), Outcome::Status(503));
    assert_eq!(Outcome::of_response(200, Some(b"0")), Outcome::Status(200));
    assert_eq!(
        Outcome::of_response(200, Some(b"5")),
        Outcome::Status(200),
        "NOT_FOUND is the app's answer"
    );
    assert_eq!(Outcome::of_response(503, None), Outcome::Status(503));
}

fn config(endpoints: &[usize], settings: Option<OutlierDetection>, extra_service: bool) -> ProxyConfig {
    let service = |name: &str, outlier_detection| MeshService {
        name: name.into(),
        namespace: "default".into(),
        vip: None,
        ports: vec![ServicePort {
            port: 9080,
            name: None,
            protocol: Protocol::Http,
        }],
        load_balancer: LoadBalancer::RoundRobin,
        outlier_detection,
        connection_pool: None,
        routes: Vec::new(),
    };
    let mut services = vec![service("reviews", settings)];
    if extra_service {
        services.push(service("ratings", None));
    }
    ProxyConfig {
        services,
        endpoints: vec![EndpointSet {
            service: "reviews".into(),
            namespace: "default".into(),
            port: 9080,
            subset: None,
            endpoints: endpoints.iter().map(|&n| endpoint(n)).collect(),
        }],
        ..ProxyConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_push_keeps_ejections_and_drops_only_a_removed_endpoints_state() {
    let balancers = Balancers::with_seed(3);
    balancers.reconcile(&config(&[1, 2, 3], Some(istio()), false));
    let mut b = balancers.get(REVIEWS, 9080).expect("reviews");
    fail(&b, 0, 5, 503);
    fail(&b, 1, 4, 503);
    assert_eq!(b.ejected(Instant::now()), 1);

    // An unrelated push (another service appears): the ejection and the count of 4 stay.
    balancers.reconcile(&config(&[1, 2, 3], Some(istio()), true));
    b = balancers.get(REVIEWS, 9080).expect("reviews");
    assert!(b.slots()[0].state.outlier.is_ejected(Instant::now()));
    fail(&b, 1, 1, 503);
    assert_eq!(
        b.ejected(Instant::now()),
        2,
        "the fifth failure after the push ejects"
    );

    // Tuning the settings keeps the state too.
    balancers.reconcile(&config(
        &[1, 2, 3],
        Some(OutlierDetection {
            base_ejection_time_ms: 1_000,
            ..istio()
        }),
        true,
    ));
    b = balancers.get(REVIEWS, 9080).expect("reviews");
    assert_eq!(b.ejected(Instant::now()), 2);
    assert_eq!(b.outlier().expect("on").settings.base_ejection_time_ms, 1_000);

    // Removing endpoint 1 drops its state alone: when it comes back it starts clean.
    let removed = Arc::downgrade(&b.slots()[0].state);
    drop(b);
    balancers.reconcile(&config(&[2, 3], Some(istio()), true));
    assert!(removed.upgrade().is_none());
    balancers.reconcile(&config(&[1, 2, 3], Some(istio()), true));
    let b = balancers.get(REVIEWS, 9080).expect("reviews");
    assert!(!b.slots()[0].state.outlier.is_ejected(Instant::now()));
    assert!(b.slots()[1].state.outlier.is_ejected(Instant::now()));

    // Turning outlier detection off returns every endpoint at once.
    balancers.reconcile(&config(&[1, 2, 3], None, true));
    let b = balancers.get(REVIEWS, 9080).expect("reviews");
    assert_eq!(picked(&b, 3), vec![1, 1, 1]);
}
