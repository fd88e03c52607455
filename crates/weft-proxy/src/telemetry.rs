//! What the proxy reports: Istio-standard metrics (and, later, traces and access logs).

pub mod metered;
pub mod metrics;
pub mod tap;
