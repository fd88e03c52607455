//! Weft's data plane: the sidecar proxy.

pub mod capture;
