//! What the mesh's traffic looks like, from the sidecars' own metrics: the numbers behind
//! `weft stat` and `weft edges` (and, later, `top` and the dashboard).
//!
//! Each sidecar serves Istio's standard metrics on its admin `/metrics`. Two scrapes of every
//! sidecar, a window apart, give per-series increases ([`Window`]); those are grouped by what a
//! person asks about (a workload, a service, an edge) into golden metrics: success rate,
//! requests per second, latency percentiles from the duration histogram (interpolated inside a
//! bucket, as Prometheus's `histogram_quantile`), the share of requests on mTLS, and TCP
//! connections open.
//!
//! Requests are read from one side only so none counts twice: `reporter="destination"` (the
//! server's sidecar, which also knows the caller's verified identity) for what a workload or
//! service served; `reporter="source"` (the client's) for what a workload sent.

pub mod prom;
pub mod stat;
pub mod top;

pub use prom::{parse, ParseError, Sample};
pub use stat::{edges, stat, Edge, Golden, Group, Query, Window};
pub use top::{Top, TopRow};
