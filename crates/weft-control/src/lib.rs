//! Weft's control plane: store, registry, compile, push, identity.
//!
//! - [`registry`]: services' virtual IPs (stable, persisted) and the running instances of
//!   workloads.
//! - [`compile`]: the model plus the registry -> the `ProxyConfig` of one proxy; each service
//!   compiled once and shared by every proxy that sees it. Pure.
//!
//! Still to come (issue 3, control plane; issue 4, identity): the store, the push service and
//! the CA. See shared/ARCHITECTURE.md for where each goes.

pub mod compile;
pub mod registry;
pub mod store;
