//! Weft's vocabulary and its pure decisions: no sockets, no tasks.
//!
//! - [`proxy_config`]: the resources a proxy runs on (pushed by the control plane or read from a
//!   file by `weft proxy --config`).
//! - [`proto`]: the discovery stream between the control plane and each proxy
//!   (`proto/weft/discovery.proto`, package `weft.discovery.v1`), and certificate issuance
//!   (`proto/weft/identity.proto`, package `weft.identity.v1`, in `proto::identity`).
//! - [`discovery`]: a proxy's config as keyed, versioned resources: rendered by the control
//!   plane, sent as deltas, assembled again by the proxy.
//! - [`identity`]: workload identities (SPIFFE IDs), parsed and printed.

pub mod authz;
pub mod canonical;
pub mod discovery;
pub mod explain;
pub mod finding;
pub mod human;
pub mod identity;
pub mod model;
pub mod proto;
pub mod proxy_config;
pub mod resources;
pub mod route;
pub mod telemetry;
pub mod translate;
pub mod validate;
pub mod version;
