//! The file store: directories of YAML documents, read recursively in sorted path order.
//!
//! Changes are noticed by polling a fingerprint of every file's path, size and modification
//! time (no inotify dependency, and it works the same on every filesystem); the control plane
//! polls it a few times a second, so an edit reaches the proxies well within a second.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use weft_api::resources::{self, Loaded};

use super::Store;

/// Documents under one or more directories (or files).
#[derive(Debug, Clone)]
pub struct FileStore {
    paths: Vec<PathBuf>,
    exclude: Vec<PathBuf>,
}

impl FileStore {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            exclude: Vec::new(),
        }
    }

    /// Skips these directories (e.g. routing variants shipped next to an example).
    pub fn excluding(mut self, exclude: Vec<PathBuf>) -> Self {
        self.exclude = exclude;
        self
    }
}

impl Store for FileStore {
    fn load(&self) -> Loaded {
        resources::load_paths_excluding(&self.paths, &self.exclude)
    }

    fn fingerprint(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for root in &self.paths {
            let mut files = Vec::new();
            let mut exclude = self.exclude.clone();
            exclude.extend(resources::variants_dir(root));
            walk(root, &exclude, &mut files);
            files.sort();
            for (path, len, modified) in files {
                (path, len, modified).hash(&mut hasher);
            }
        }
        hasher.finish()
    }
}

fn walk(path: &Path, exclude: &[PathBuf], out: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    if meta.is_dir() {
        if exclude.iter().any(|e| e == path) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for e in entries.flatten() {
            walk(&e.path(), exclude, out);
        }
    } else if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) {
        out.push((path.to_path_buf(), meta.len(), meta.modified().ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_edits_additions_and_deletions() {
        let dir = std::env::temp_dir().join(format!("weft-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let store = FileStore::new(vec![dir.clone()]);
        let empty = store.fingerprint();
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";
        std::fs::write(dir.join("sub/a.yaml"), doc).expect("write");
        let one = store.fingerprint();
        assert_ne!(empty, one);
        assert_eq!(store.load().documents.len(), 1);
        std::fs::write(
            dir.join("sub/a.yaml"),
            format!("{doc}---\n{}", doc.replace("name: a", "name: bb")),
        )
        .expect("write");
        let two = store.fingerprint();
        assert_ne!(one, two);
        assert_eq!(store.load().documents.len(), 2);
        std::fs::write(dir.join("notes.txt"), "ignored").expect("write");
        assert_eq!(store.fingerprint(), two, "non-YAML files do not count");
        std::fs::remove_file(dir.join("sub/a.yaml")).expect("rm");
        assert_eq!(store.fingerprint(), empty);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
