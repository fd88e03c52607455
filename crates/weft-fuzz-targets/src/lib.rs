//! One `pub fn <target>(data: &[u8])` per parser that reads bytes from the network or the user.
//!
//! Each calls the real parser (never a copy of it) and asserts what can be said of its output
//! for any input. `fuzz/fuzz_targets/<target>.rs` hands libFuzzer's bytes to it; on stable,
//! `tests/corpus.rs` feeds it every file of `fuzz/corpus/<target>/`, so a crash found once stays
//! fixed. Not a dependency of any shipped crate.

#![forbid(unsafe_code)]

mod admission;
mod canonical;
mod csr;
mod detect;
mod discovery;
mod documents;
mod framing;
mod pieces;
mod proxy_config;
mod request_head;

pub use admission::admission;
pub use canonical::{authority, path};
pub use csr::csr;
pub use detect::detect;
pub use discovery::discovery;
pub use documents::mesh_documents;
pub use framing::framing_guard;
pub use proxy_config::proxy_config;
pub use request_head::request_head;

/// What a target is: bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/corpus/` names its directories.
pub const TARGETS: &[(&str, Target)] = &[
    ("detect", detect),
    ("framing_guard", framing_guard),
    ("proxy_config", proxy_config),
    ("mesh_documents", mesh_documents),
    ("discovery", discovery),
    ("csr", csr),
    ("path", path),
    ("authority", authority),
    ("request_head", request_head),
    ("admission", admission),
];
