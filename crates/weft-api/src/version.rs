//! The build every process of the mesh reports (`weft version`, `weft status`): the crate
//! version and the git commit it was built from. The commit is known to the `weft` binary (its
//! build script), which hands it here at start; libraries used on their own report the version
//! alone.

use std::sync::OnceLock;

/// The release version of every weft crate (one workspace version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

static COMMIT: OnceLock<String> = OnceLock::new();

/// Records the git commit of this build (once, at start; later calls are ignored).
pub fn set_commit(commit: &str) {
    let _ = COMMIT.set(commit.to_string());
}

/// The git commit of this build, when known.
pub fn commit() -> Option<&'static str> {
    COMMIT
        .get()
        .map(String::as_str)
        .filter(|c| !c.is_empty() && *c != "unknown")
}

/// `0.1.0 (3982934c1a2b)`, or `0.1.0` without a known commit.
pub fn describe() -> String {
    match commit() {
        Some(c) => format!("{VERSION} ({c})"),
        None => VERSION.to_string(),
    }
}
