//! Weft's control plane: store, registry, compile, push, identity.
//!
//! - [`push`]: the discovery stream's server end (`weft.discovery.v1.Discovery`): pushes each
//!   proxy its config and records its ACKs and NACKs for `weft status`.

pub mod push;
