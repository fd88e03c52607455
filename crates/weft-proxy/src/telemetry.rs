//! What the proxy reports: Istio-standard metrics, and access logs (traces come later).

pub mod access_log;
pub mod metered;
pub mod metrics;
