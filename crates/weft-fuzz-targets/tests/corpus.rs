//! Replays every corpus file of every fuzz target on stable: what was found once stays fixed.
//!
//! `fuzz/corpus/<target>/` holds the seeds and the minimized inputs worth keeping, crashes
//! included (named `crash-*`); an empty directory fails, so this cannot pass by finding nothing.
//!
//! `fuzz/known-crashes/<target>/` holds crashes found in code this branch does not own, reported
//! and not fixed yet: each must still fail (so the branch stays green), and the day one passes,
//! this test says to move it into the corpus, where it then guards the fix.

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .map(|e| e.path())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus_dir(target);
    let files = files_of(&dir);
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

/// Every known crash still crashes; one that no longer does belongs in the corpus now.
#[test]
fn known_crashes_still_fail() {
    for (name, run) in weft_fuzz_targets::TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/known-crashes")
            .join(name);
        if !dir.is_dir() {
            continue;
        }
        for file in files_of(&dir) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_err(),
                "{} passes now: move it to fuzz/corpus/{name}/",
                file.display()
            );
        }
    }
}
