//! A DestinationRule's traffic policy: the load balancer is applied, the rest reported.

use super::{vs, Cx};
use crate::proxy_config::LoadBalancer;

impl Cx<'_> {
    /// The load balancer of a traffic policy; everything else in it is reported.
    pub(super) fn traffic_policy(&mut self, tp: &vs::TrafficPolicy, path: &[&str]) -> Option<LoadBalancer> {
        let sub = |rest: &[&'static str]| [path, rest].concat();
        for (set, field, why) in [
            (
                tp.connection_pool.is_some(),
                "connectionPool",
                "connections are not limited",
            ),
            (
                tp.outlier_detection.is_some(),
                "outlierDetection",
                "endpoints are not ejected",
            ),
            (tp.tls.is_some(), "tls", "mesh traffic uses the mesh's own mTLS"),
            (
                tp.port_level_settings.is_some(),
                "portLevelSettings",
                "the policy applies to every port",
            ),
            (tp.tunnel.is_some(), "tunnel", "no tunnel is used"),
            (
                tp.proxy_protocol.is_some(),
                "proxyProtocol",
                "no PROXY protocol header is sent",
            ),
            (
                tp.retry_budget.is_some(),
                "retryBudget",
                "retries are not budgeted",
            ),
        ] {
            if set {
                self.not_implemented(&sub(&[field]), why);
            }
        }
        let lb = tp.load_balancer.as_ref()?;
        for (set, field) in [
            (lb.consistent_hash.is_some(), "consistentHash"),
            (lb.locality_lb_setting.is_some(), "localityLbSetting"),
            (lb.warmup_duration_secs.is_some(), "warmupDurationSecs"),
            (lb.warmup.is_some(), "warmup"),
        ] {
            if set {
                self.not_implemented(&sub(&["loadBalancer", field]), "the default balancer is used");
            }
        }
        match lb.simple.as_deref()? {
            "ROUND_ROBIN" => Some(LoadBalancer::RoundRobin),
            "LEAST_REQUEST" | "LEAST_CONN" => Some(LoadBalancer::LeastRequest),
            "RANDOM" => Some(LoadBalancer::Random),
            "UNSPECIFIED" => None,
            "PASSTHROUGH" => {
                self.not_implemented(
                    &sub(&["loadBalancer", "simple"]),
                    "PASSTHROUGH; the default is used",
                );
                None
            }
            other => {
                self.schema(
                    &sub(&["loadBalancer", "simple"]),
                    &format!("unknown load balancer {other} (ROUND_ROBIN, LEAST_REQUEST, RANDOM, ...)"),
                );
                None
            }
        }
    }
}
