//! Generated from `proto/weft/discovery.proto` and `proto/weft/identity.proto` by `build.rs`
//! (protox + tonic-prost-build).
//!
//! `discovery_server::{Discovery, DiscoveryServer}` is what the control plane implements;
//! `discovery_client::DiscoveryClient` is what a proxy dials. The identity service
//! (`weft.identity.v1`) is in [`identity`]. The stubs carry no transport: the crates that serve
//! or dial enable tonic's `server` / `channel` features. Both use [`codec::LeanCodec`].

pub mod codec;

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
mod generated {
    tonic::include_proto!("weft.discovery.v1");
}

pub use generated::*;

/// `weft.identity.v1`: certificate issuance (`Identity.Sign`).
pub mod identity {
    #[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    mod generated {
        tonic::include_proto!("weft.identity.v1");
    }

    pub use generated::*;
}
