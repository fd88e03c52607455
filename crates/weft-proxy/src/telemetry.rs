//! What the proxy reports: Istio-standard metrics, access logs and traces.

pub mod access_log;
pub mod metered;
pub mod metrics;
pub mod tap;
pub mod trace;
