//! What each resilience policy costs on the request path (issue 15): a balancer pick without
//! and with outlier detection (none ejected, and a tenth ejected), counting one outcome, one
//! `connectionPool` admission, and one rate-limit check.
//!
//! ```sh
//! cargo bench -p weft-proxy --bench resilience
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use weft_api::proxy_config::{ConnectionPool, Endpoint, LoadBalancer, OutlierDetection, RateLimit};
use weft_proxy::balance::{Balancer, Breaker, Outcome, Outlier, Slot};
use weft_proxy::rate_limit::PortLimiter;

const ENDPOINTS: usize = 100;

fn slots() -> Vec<Slot> {
    (0..ENDPOINTS)
        .map(|i| {
            Slot::new(Endpoint {
                address: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 9080)),
                mesh_port: None,
                weight: 1,
                labels: BTreeMap::new(),
                workload: None,
                identity: None,
            })
        })
        .collect()
}

fn outlier() -> Option<Arc<Outlier>> {
    let settings = OutlierDetection {
        max_ejection_percent: 100,
        ..OutlierDetection::default()
    };
    Some(Arc::new(Outlier::new(settings, None)))
}

fn balancing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let mut group = c.benchmark_group("pick");
    let plain = Balancer::new(LoadBalancer::LeastRequest, slots());
    group.bench_function("plain", |b| b.iter(|| plain.pick(&[]).is_some()));
    let with = Balancer::new(LoadBalancer::LeastRequest, slots()).with_outlier(outlier());
    group.bench_function("outlier_none_ejected", |b| b.iter(|| with.pick(&[]).is_some()));
    let ejected = Balancer::new(LoadBalancer::LeastRequest, slots()).with_outlier(outlier());
    for slot in ejected.slots().iter().step_by(10) {
        for _ in 0..5 {
            ejected.observe(slot, Outcome::Status(503));
        }
    }
    assert_eq!(ejected.ejected(tokio::time::Instant::now()), ENDPOINTS / 10);
    group.bench_function("outlier_tenth_ejected", |b| {
        b.iter(|| ejected.pick(&[]).is_some())
    });
    group.finish();

    let slot = &with.slots()[0];
    c.bench_function("outlier/observe_success", |b| {
        b.iter(|| with.observe(slot, Outcome::Status(200)))
    });

    let breaker = Breaker::new(
        ConnectionPool {
            max_requests: Some(1_000_000),
            ..ConnectionPool::default()
        },
        Arc::default(),
        None,
    );
    c.bench_function("connection_pool/admit_request", |b| {
        b.iter(|| breaker.request().is_ok())
    });

    let limiter = PortLimiter::new(RateLimit {
        total: Some(u32::MAX),
        identity: Some(u32::MAX),
        overrides: Vec::new(),
    });
    let caller = Some("spiffe://cluster.local/ns/default/sa/productpage");
    c.bench_function("rate_limit/check_total_and_identity", |b| {
        b.iter(|| limiter.check(caller, tokio::time::Instant::now()).is_ok())
    });
}

criterion_group!(benches, balancing);
criterion_main!(benches);
