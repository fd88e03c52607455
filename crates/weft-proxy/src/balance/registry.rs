//! The long-lived registry of balancers, keyed by service FQDN, port and subset.
//!
//! Requests read it without locks (an `ArcSwap` of an immutable table); a config push builds a
//! whole new table and swaps it in. Per-endpoint state is carried from the old table to the new
//! one for every (service port, address) that remains, so a push never resets in-flight counts,
//! latency estimates or unreachable marks.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use weft_api::proxy_config::{ConnectionPool, Endpoint, LoadBalancer, OutlierDetection, ProxyConfig};

use super::metrics::OutlierMetrics;
use super::{lock, Balancer, Breaker, BreakerState, EndpointState, Outlier, Slot};

/// FQDN -> port -> balancers. Nested so that a lookup by `&str` needs no allocation.
pub(super) type Table = HashMap<String, HashMap<u16, PortBalancers>>;

/// The balancers of one service port: over every endpoint, and per subset. An endpoint in a
/// subset shares its state with the same endpoint in the whole set: it is one endpoint.
#[derive(Debug, Clone, Default)]
pub(super) struct PortBalancers {
    pub(super) all: Option<Arc<Balancer>>,
    pub(super) subsets: HashMap<String, Arc<Balancer>>,
    /// What the port has in flight, for its `connectionPool` limits; kept across pushes.
    breaker_state: Arc<BreakerState>,
}

/// What a service's balancers are built with.
struct ServicePolicy {
    load_balancer: LoadBalancer,
    outlier: Option<Arc<Outlier>>,
    connection_pool: Option<ConnectionPool>,
}

/// The endpoints one service port should have: all of them, and per subset.
#[derive(Debug, Default)]
struct Desired {
    all: Vec<Endpoint>,
    subsets: BTreeMap<String, Vec<Endpoint>>,
}

/// Every balancer of the current config.
#[derive(Debug, Default)]
pub struct Balancers {
    table: Arc<ArcSwap<Table>>,
    /// Where ejections are counted; None in tests that build balancers without an app.
    metrics: Option<OutlierMetrics>,
    /// Held for the whole of a reconcile so that two pushes applied at once cannot each build
    /// on the same old table and lose one another's state. Holds the seed source of
    /// [`Balancers::with_seed`].
    reconciling: Mutex<Option<fastrand::Rng>>,
}

// === impl Balancers ===

impl Balancers {
    /// An empty registry; its balancers use thread-local randomness.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose balancers are seeded from `seed`, for deterministic tests.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            table: Arc::default(),
            metrics: None,
            reconciling: Mutex::new(Some(fastrand::Rng::with_seed(seed))),
        }
    }

    /// An empty registry whose outlier metrics are registered in `registry`.
    pub fn registered(registry: &mut Registry) -> Self {
        let table: Arc<ArcSwap<Table>> = Arc::default();
        Self {
            metrics: Some(OutlierMetrics::register(registry, Arc::clone(&table))),
            table,
            reconciling: Mutex::new(None),
        }
    }

    /// The balancer for `port` of the service named `fqdn` (e.g.
    /// `reviews.default.svc.cluster.local`), if the current config has that service port.
    /// A service port with no endpoints has a balancer that picks nothing.
    pub fn get(&self, fqdn: &str, port: u16) -> Option<Arc<Balancer>> {
        self.table.load().get(fqdn)?.get(&port)?.all.clone()
    }

    /// The balancer of a subset of a service port (`None`: the whole service).
    pub fn get_subset(&self, fqdn: &str, port: u16, subset: Option<&str>) -> Option<Arc<Balancer>> {
        let table = self.table.load();
        let ports = table.get(fqdn)?.get(&port)?;
        match subset {
            None => ports.all.clone(),
            Some(name) => ports.subsets.get(name).cloned(),
        }
    }

    /// Replaces the balancers with those of `config`. An address that remains in a service
    /// port keeps its `EndpointState`; new addresses start fresh; removed ones are dropped
    /// (their state lives on only in requests still holding an `InFlight`). A balancer whose
    /// policy and endpoints did not change is kept whole, round-robin position included.
    pub fn reconcile(&self, config: &ProxyConfig) {
        let mut seeds = lock(&self.reconciling);
        let old = self.table.load_full();
        let policies: HashMap<String, ServicePolicy> = config
            .services
            .iter()
            .map(|s| {
                let fqdn = s.fqdn();
                let outlier = s.outlier_detection.clone().map(|settings| {
                    let counters = self.metrics.as_ref().map(|m| m.counters(&fqdn));
                    Arc::new(Outlier::new(settings, counters))
                });
                let policy = ServicePolicy {
                    load_balancer: s.load_balancer,
                    outlier,
                    connection_pool: s.connection_pool.clone(),
                };
                (fqdn, policy)
            })
            .collect();

        let mut table = Table::new();
        for ((fqdn, port), desired) in desired_endpoints(config) {
            let service = policies.get(&fqdn);
            let policy = service.map(|s| s.load_balancer).unwrap_or_default();
            let outlier = service.and_then(|s| s.outlier.clone());
            let previous = old.get(&fqdn).and_then(|ports| ports.get(&port));
            // One state per address across the whole set and its subsets.
            let mut states = previous_states(previous);
            let breaker_state = previous.map(|p| Arc::clone(&p.breaker_state)).unwrap_or_default();
            let limits = service.and_then(|s| s.connection_pool.clone());
            // One breaker per service port, its subsets included.
            let breaker = match previous.and_then(|p| p.all.as_ref()?.breaker().cloned()) {
                Some(b) if Some(&b.limits) == limits.as_ref() => Some(b),
                _ => limits.map(|limits| {
                    let overflows = self.metrics.as_ref().map(|m| m.overflow_counters(&fqdn));
                    Arc::new(Breaker::new(limits, Arc::clone(&breaker_state), overflows))
                }),
            };
            let mut build = |previous: Option<&Arc<Balancer>>, endpoints: Vec<Endpoint>| match previous {
                Some(b) if unchanged(b, policy, outlier.as_deref(), breaker.as_ref(), &endpoints) => {
                    Arc::clone(b)
                }
                _ => {
                    let slots = carry_state(&mut states, endpoints);
                    let balancer = match seeds.as_mut() {
                        Some(rng) => Balancer::with_seed(policy, slots, rng.u64(..)),
                        None => Balancer::new(policy, slots),
                    };
                    Arc::new(
                        balancer
                            .with_outlier(outlier.clone())
                            .with_breaker(breaker.clone()),
                    )
                }
            };
            let all = build(previous.and_then(|p| p.all.as_ref()), desired.all);
            let subsets = desired
                .subsets
                .into_iter()
                .map(|(name, endpoints)| {
                    let prev = previous.and_then(|p| p.subsets.get(&name));
                    let b = build(prev, endpoints);
                    (name, b)
                })
                .collect();
            table.entry(fqdn).or_default().insert(
                port,
                PortBalancers {
                    all: Some(all),
                    subsets,
                    breaker_state,
                },
            );
        }
        tracing::debug!(services = table.len(), "balancers reconciled");
        self.table.store(Arc::new(table));
    }
}

/// The endpoints of every service port in `config`, in a stable order (so seeded balancers
/// get the same seeds on every run). Two `EndpointSet`s for one service port are merged; a
/// declared service port with no set gets an empty list, so `get` can tell "no such service"
/// from "no endpoints".
fn desired_endpoints(config: &ProxyConfig) -> BTreeMap<(String, u16), Desired> {
    let mut desired: BTreeMap<(String, u16), Desired> = BTreeMap::new();
    for service in &config.services {
        for port in &service.ports {
            desired.entry((service.fqdn(), port.port)).or_default();
        }
    }
    for set in &config.endpoints {
        let key = (ProxyConfig::fqdn(&set.service, &set.namespace), set.port);
        let entry = desired.entry(key).or_default();
        let list = match &set.subset {
            None => &mut entry.all,
            Some(name) => entry.subsets.entry(name.clone()).or_default(),
        };
        list.extend(set.endpoints.iter().cloned());
    }
    desired
}

fn previous_states(previous: Option<&PortBalancers>) -> HashMap<SocketAddr, Arc<EndpointState>> {
    let Some(p) = previous else { return HashMap::new() };
    p.all
        .iter()
        .chain(p.subsets.values())
        .flat_map(|b| b.slots())
        .map(|slot| (slot.endpoint.address, Arc::clone(&slot.state)))
        .collect()
}

fn unchanged(
    balancer: &Balancer,
    policy: LoadBalancer,
    outlier: Option<&Outlier>,
    breaker: Option<&Arc<Breaker>>,
    endpoints: &[Endpoint],
) -> bool {
    let settings = |o: Option<&Outlier>| o.map(|o| o.settings.clone());
    let same_outlier: Option<OutlierDetection> = settings(outlier);
    let same_breaker = match (balancer.breaker(), breaker) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    balancer.policy() == policy
        && same_breaker
        && settings(balancer.outlier().map(|o| &**o)) == same_outlier
        && balancer.slots().len() == endpoints.len()
        && balancer
            .slots()
            .iter()
            .zip(endpoints)
            .all(|(slot, endpoint)| slot.endpoint == *endpoint)
}

/// Slots for `endpoints`, reusing the state of earlier slots with the same address. An
/// address listed twice shares one state, since it is one endpoint.
fn carry_state(states: &mut HashMap<SocketAddr, Arc<EndpointState>>, endpoints: Vec<Endpoint>) -> Vec<Slot> {
    endpoints
        .into_iter()
        .map(|endpoint| {
            let state = states
                .entry(endpoint.address)
                .or_insert_with(|| Arc::new(EndpointState::new(endpoint.address)));
            Slot::with_state(endpoint, Arc::clone(state))
        })
        .collect()
}
