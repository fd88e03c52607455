//! Generated from `proto/weft/discovery.proto` by `build.rs` (protox + tonic-prost-build).
//!
//! `discovery_server::{Discovery, DiscoveryServer}` is what the control plane implements;
//! `discovery_client::DiscoveryClient` is what a proxy dials. The stubs carry no transport: the
//! crates that serve or dial enable tonic's `server` / `channel` features.

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
mod generated {
    tonic::include_proto!("weft.discovery.v1");
}

pub use generated::*;
