//! Weft's control plane: store, registry, compile, push, identity.
//!
//! - [`store`]: where documents live (files today; etcd and Kubernetes behind the same trait).
//! - [`registry`]: services' virtual IPs (stable, persisted) and the running instances of
//!   workloads.
//! - [`compile`]: the model plus the registry -> the `ProxyConfig` of one proxy; each service
//!   compiled once and shared by every proxy that sees it. Pure.
//! - [`admission`]: who a subscribing proxy is: its token's workload and that workload's
//!   documents, never its own claims.
//! - [`push`]: the discovery stream's server end (`weft.discovery.v1.Discovery`): pushes each
//!   proxy its config and records its ACKs and NACKs for `weft status`.
//!
//! - [`identity`]: the CA and `weft.identity.v1.Identity` (workload certificates), served on the
//!   discovery port.

pub mod admin;
pub mod admission;
pub mod app;
pub mod check;
pub mod compile;
pub mod identity;
pub mod push;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tokens;
