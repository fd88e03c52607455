//! Replays every corpus file of every fuzz target on stable: what was found once stays fixed.
//!
//! `fuzz/corpus/<target>/` holds the seeds and the minimized inputs worth keeping, crashes
//! included (named `crash-*`); an empty directory fails, so this cannot pass by finding nothing.

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .map(|e| e.path())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus files", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // Name the file before a panic in the target hides which one it was.
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
}

macro_rules! corpus_tests {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            replay(stringify!($target), weft_fuzz_targets::$target);
        }
    )*};
}

corpus_tests!(
    detect,
    framing_guard,
    proxy_config,
    mesh_documents,
    discovery,
    csr,
    path,
    authority,
);

/// Every target has its test above and its directory of corpus files.
#[test]
fn every_target_is_replayed() {
    for (name, _) in weft_fuzz_targets::TARGETS {
        assert!(corpus_dir(name).is_dir(), "fuzz/corpus/{name} is missing");
    }
}
