//! Where the control plane's documents live. Files (a directory of YAML, watched) is the
//! embedded default; etcd and Kubernetes come later behind the same trait, with one
//! conformance suite.

pub mod files;
pub mod last_good;

use weft_api::resources::Loaded;

/// A source of mesh documents that can tell when they changed.
pub trait Store: Send + Sync + 'static {
    /// Every document, with what could not be read.
    fn load(&self) -> Loaded;
    /// A value that changes whenever the documents do (cheap: called several times a second).
    fn fingerprint(&self) -> u64;
}
