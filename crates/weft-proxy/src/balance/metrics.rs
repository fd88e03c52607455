//! Resilience metrics: `weft_upstream_overflow_total` (requests a `connectionPool` limit refused),
//! `weft_outlier_ejections_total` (counted as ejections happen) and
//! `weft_outlier_ejections_active` (read from the endpoints' state at each scrape, so an ejection
//! that ended shows as ended even if no request has touched the endpoint since).
//!
//! Labels are mesh service names and a fixed reason vocabulary: bounded by the config.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::registry::Table;
use super::{EjectionCounters, Limit, OverflowCounters, Reason};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EjectionLabels {
    destination_service: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OverflowLabels {
    destination_service: String,
    /// The `connectionPool` field that refused (`http2MaxRequests`...).
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActiveLabels {
    destination_service: String,
}

/// The ejection counters, registered once by the app.
#[derive(Debug, Clone)]
pub struct OutlierMetrics {
    ejections: Family<EjectionLabels, Counter>,
    overflows: Family<OverflowLabels, Counter>,
}

/// Reads the live balancers at scrape time for the active-ejections gauge.
#[derive(Debug)]
struct ActiveEjections {
    table: Arc<ArcSwap<Table>>,
}

// === impl OutlierMetrics ===

impl OutlierMetrics {
    /// Registers both families in `registry`; the gauge reads `table`.
    pub(super) fn register(registry: &mut Registry, table: Arc<ArcSwap<Table>>) -> Self {
        let ejections = Family::<EjectionLabels, Counter>::default();
        registry.register(
            "weft_outlier_ejections",
            "Endpoints ejected by outlier detection or failure accrual, by service and reason",
            ejections.clone(),
        );
        let overflows = Family::<OverflowLabels, Counter>::default();
        registry.register(
            "weft_upstream_overflow",
            "Requests refused at once (503 UO) because a service's connectionPool limit was reached, by limit",
            overflows.clone(),
        );
        registry.register_collector(Box::new(ActiveEjections { table }));
        Self { ejections, overflows }
    }

    /// The overflow counters of `service`, one per limit, found once per push.
    pub(super) fn overflow_counters(&self, service: &str) -> OverflowCounters {
        let of = |limit: Limit| {
            self.overflows
                .get_or_create(&OverflowLabels {
                    destination_service: service.to_string(),
                    limit: limit.label(),
                })
                .clone()
        };
        OverflowCounters {
            max_requests: of(Limit::MaxRequests),
            max_pending_requests: of(Limit::MaxPendingRequests),
            max_retries: of(Limit::MaxRetries),
            max_connections: of(Limit::MaxConnections),
        }
    }

    /// The counters of `service`, one per reason, found once per push.
    pub(super) fn counters(&self, service: &str) -> EjectionCounters {
        let of = |reason: Reason| {
            self.ejections
                .get_or_create(&EjectionLabels {
                    destination_service: service.to_string(),
                    reason: reason.label(),
                })
                .clone()
        };
        EjectionCounters {
            consecutive_5xx: of(Reason::Consecutive5xx),
            consecutive_gateway: of(Reason::ConsecutiveGateway),
            consecutive_local_origin: of(Reason::ConsecutiveLocalOrigin),
            failed_probe: of(Reason::FailedProbe),
        }
    }
}

// === impl ActiveEjections ===

impl Collector for ActiveEjections {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let table = self.table.load();
        // One count per service: an endpoint in several ports or subsets is one endpoint there.
        let mut active: BTreeMap<&str, usize> = BTreeMap::new();
        for (fqdn, ports) in table.iter() {
            let mut seen = std::collections::HashSet::new();
            for slot in ports.values().flat_map(|p| p.all.iter()).flat_map(|b| b.slots()) {
                if slot.state.outlier.ejected_for(now).is_some() || slot.state.outlier.on_probation() {
                    seen.insert(Arc::as_ptr(&slot.state));
                }
            }
            let has_outlier = ports
                .values()
                .filter_map(|p| p.all.as_ref())
                .any(|b| b.outlier().is_some());
            if has_outlier || !seen.is_empty() {
                active.insert(fqdn.as_str(), seen.len());
            }
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "weft_outlier_ejections_active",
            "Endpoints ejected now (or awaiting the probe that returns them), by service",
            None,
            gauge.metric_type(),
        )?;
        for (service, n) in active {
            let labels = ActiveLabels {
                destination_service: service.to_string(),
            };
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
