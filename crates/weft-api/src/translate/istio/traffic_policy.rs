//! A DestinationRule's traffic policy: the load balancer and (host-wide) outlier detection are
//! applied, the rest reported.

use super::{vs, Cx};
use crate::proxy_config::{ConnectionPool, LoadBalancer, OutlierDetection};

/// What a traffic policy asks of the proxies, as far as Weft acts on it.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
}

impl Cx<'_> {
    /// The parts of a traffic policy Weft applies; everything else in it is reported. A
    /// subset's own outlier detection is reported too: ejection state is per endpoint, and the
    /// host's settings apply to every subset.
    pub(super) fn traffic_policy(&mut self, tp: &vs::TrafficPolicy, path: &[&str], subset: bool) -> Applied {
        let sub = |rest: &[&'static str]| [path, rest].concat();
        let outlier_detection = match &tp.outlier_detection {
            Some(_) if subset => {
                self.not_implemented(
                    &sub(&["outlierDetection"]),
                    "per subset; the host-wide outlierDetection applies to every subset",
                );
                None
            }
            Some(od) => self.outlier_detection(od, &sub(&["outlierDetection"])),
            None => None,
        };
        let connection_pool = match &tp.connection_pool {
            Some(_) if subset => {
                self.not_implemented(
                    &sub(&["connectionPool"]),
                    "per subset; the host-wide connectionPool applies to every subset",
                );
                None
            }
            Some(cp) => Some(self.connection_pool(cp, &sub(&["connectionPool"]))),
            None => None,
        };
        Applied {
            load_balancer: self.load_balancer(tp, path),
            connection_pool,
            outlier_detection,
        }
    }

    fn load_balancer(&mut self, tp: &vs::TrafficPolicy, path: &[&str]) -> Option<LoadBalancer> {
        let sub = |rest: &[&'static str]| [path, rest].concat();
        for (set, field, why) in [
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

impl Cx<'_> {
    /// Istio's `outlierDetection`, with Istio's defaults for what it leaves out.
    fn outlier_detection(&mut self, od: &vs::OutlierDetection, path: &[&str]) -> Option<OutlierDetection> {
        let sub = |field: &'static str| [path, &[field]].concat();
        let mut out = OutlierDetection::default();
        if let Some(n) = od.consecutive_5xx_errors {
            out.consecutive_5xx_errors = n;
        }
        // Istio read the deprecated `consecutiveErrors` as gateway errors (502, 503, 504).
        if let Some(n) = od.consecutive_gateway_errors.or(od.consecutive_errors) {
            out.consecutive_gateway_errors = n;
        }
        if let Some(n) = od.consecutive_local_origin_failures {
            out.consecutive_local_origin_failures = n;
        }
        out.split_external_local_origin_errors = od.split_external_local_origin_errors.unwrap_or(false);
        if let Some(text) = &od.interval {
            out.interval_ms = self.duration(&sub("interval"), text).filter(|ms| *ms > 0)?;
        }
        if let Some(text) = &od.base_ejection_time {
            out.base_ejection_time_ms = self.duration(&sub("baseEjectionTime"), text)?;
        }
        for (value, field) in [
            (od.max_ejection_percent, "maxEjectionPercent"),
            (od.min_health_percent, "minHealthPercent"),
        ] {
            if value.is_some_and(|v| v > 100) {
                self.schema(&sub(field), "a percent must be 0..=100");
                return None;
            }
        }
        if let Some(p) = od.max_ejection_percent {
            out.max_ejection_percent = p;
        }
        if let Some(p) = od.min_health_percent {
            out.min_health_percent = p;
        }
        if od.consecutive_local_origin_failures.is_some() && !out.split_external_local_origin_errors {
            self.findings.push(crate::finding::Finding::warning(
                crate::finding::codes::SCHEMA,
                format!(
                    "{} {}/{}: consecutiveLocalOriginFailures is read only with splitExternalLocalOriginErrors: true; local failures count as 5xx errors",
                    self.doc.kind, self.doc.namespace, self.doc.name
                ),
                &crate::translate::core::locate(self.doc, &sub("consecutiveLocalOriginFailures")),
            ));
        }
        Some(out)
    }
}

impl Cx<'_> {
    /// Istio's `connectionPool`: the limits Weft enforces, and a report for each field it reads
    /// but does not act on.
    fn connection_pool(&mut self, cp: &vs::ConnectionPoolSettings, path: &[&str]) -> ConnectionPool {
        let at = |rest: &[&'static str]| [path, rest].concat();
        let mut out = ConnectionPool::default();
        if let Some(tcp) = &cp.tcp {
            out.max_connections = tcp.max_connections;
            if let Some(text) = &tcp.connect_timeout {
                out.connect_timeout_ms = self.duration(&at(&["tcp", "connectTimeout"]), text);
            }
            for (set, field) in [
                (tcp.tcp_keepalive.is_some(), "tcpKeepalive"),
                (tcp.max_connection_duration.is_some(), "maxConnectionDuration"),
                (tcp.idle_timeout.is_some(), "idleTimeout"),
            ] {
                if set {
                    self.not_implemented(&at(&["tcp", field]), "the proxy's own connection settings apply");
                }
            }
        }
        if let Some(http) = &cp.http {
            out.max_pending_requests = http.http1_max_pending_requests;
            out.max_requests = http.http2_max_requests;
            out.max_requests_per_connection = http.max_requests_per_connection;
            out.max_retries = http.max_retries;
            for (set, field) in [
                (http.idle_timeout.is_some(), "idleTimeout"),
                (http.h2_upgrade_policy.is_some(), "h2UpgradePolicy"),
                (http.use_client_protocol.is_some(), "useClientProtocol"),
                (http.max_concurrent_streams.is_some(), "maxConcurrentStreams"),
            ] {
                if set {
                    self.not_implemented(&at(&["http", field]), "the proxy's own connection settings apply");
                }
            }
        }
        out
    }
}
