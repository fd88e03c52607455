//! The documents users write, in Kubernetes shape (`apiVersion`/`kind`/`metadata`/`spec`),
//! read from files with their positions kept so every finding can name file, line and column.
//!
//! A directory is read recursively in sorted path order (the Gateway API tie-break "first
//! seen" depends on it), documents in file order. A document that cannot be read is reported
//! and skipped; the rest still load.

use std::path::{Path, PathBuf};

use marked_yaml::Node;
use serde::de::DeserializeOwned;

use crate::finding::{codes, Finding, Location};

pub mod core;
pub mod gateway_api;
pub mod istio;
pub mod linkerd;
pub mod linkerd_policy;
mod schema;
pub mod security;
pub mod smi;
pub mod telemetry;
pub mod yaml;

/// One document with where it came from. Equal when its text, place and metadata are: the
/// control plane tells a changed file from an unchanged one with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Path relative to the directory given (or as given, for a single file).
    pub file: String,
    /// 1-based line where the document starts (its `apiVersion` or first key).
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `default` when the document names none.
    pub namespace: String,
    /// `metadata.creationTimestamp`, when given (Gateway API tie-break).
    pub creation_timestamp: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// 1-based last line of the document in its file.
    pub end_line: usize,
    /// The document's text and the number of lines before it in its file. Its positioned tree
    /// is parsed again when asked for ([`Document::node`]): keeping every document's tree
    /// made 100,000 small documents take 750 MB.
    text: std::sync::Arc<str>,
    offset: usize,
}

/// The documents of a set of files, and what could not be read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    pub findings: Vec<Finding>,
}

/// `metadata`, as every kind has it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    creation_timestamp: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    _rest: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

// === loading ===

/// Reads every `*.yaml`, `*.yml` and `*.json` under each path (a file or a directory).
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    load_paths_excluding(paths, &[])
}

/// As [`load_paths`], skipping the directories in `exclude` (e.g. routing variants shipped next
/// to an example, which apply only once copied in).
pub fn load_paths_excluding(paths: &[PathBuf], exclude: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for root in paths {
        let mut files = Vec::new();
        if root.is_dir() {
            let mut exclude = exclude.to_vec();
            exclude.extend(variants_dir(root));
            collect(root, &exclude, &mut files, &mut loaded.findings);
            files.sort();
        } else {
            files.push(root.clone());
        }
        for path in files {
            let shown = display_name(root, &path);
            match std::fs::read_to_string(&path) {
                Ok(text) => parse_file(&shown, &text, &mut loaded),
                Err(e) => loaded.findings.push(Finding::error(
                    codes::YAML_SYNTAX,
                    format!("cannot read: {e}"),
                    &Location {
                        file: Some(shown),
                        line: None,
                        column: None,
                    },
                )),
            }
        }
    }
    loaded
}

/// Name of a folder of routing variants kept beside a mesh's documents.
pub const VARIANTS_DIR: &str = "routing";

/// Every folder of routing variants under `paths` (at any depth), which reading skips: what a
/// reader is told was left out.
pub fn skipped_variants(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        if let Some(v) = variants_dir(dir) {
            out.push(v);
        }
        let mut subdirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && Some(p) != out.last())
            .collect();
        subdirs.sort();
        for d in subdirs {
            walk(&d, out);
        }
    }
    let mut out = Vec::new();
    for p in paths.iter().filter(|p| p.is_dir()) {
        walk(p, &mut out);
    }
    out
}

/// The top-level keys of a ProxyConfig (a sidecar's own config file, `weft proxy --config`).
const PROXY_CONFIG_KEYS: [&str; 8] = [
    "workload",
    "admin",
    "limits",
    "http",
    "inbound",
    "outbound",
    "services",
    "endpoints",
];

/// Whether a document is a ProxyConfig rather than a mesh document: no `apiVersion`, and
/// only ProxyConfig keys.
fn is_proxy_config(node: &Node) -> bool {
    let Some(map) = node.as_mapping() else {
        return false;
    };
    !map.is_empty()
        && map.get_node("apiVersion").is_none()
        && map.keys().all(|k| PROXY_CONFIG_KEYS.contains(&k.as_str()))
}

/// `root/routing` when it is a folder of variants (only sub-folders, one per variant): those
/// are alternatives to copy into `root`, not documents that apply together, so a directory is
/// read without them. A `routing/` folder holding documents itself is read as usual.
pub fn variants_dir(root: &Path) -> Option<PathBuf> {
    let dir = root.join(VARIANTS_DIR);
    let entries: Vec<_> = std::fs::read_dir(&dir).ok()?.flatten().collect();
    (!entries.is_empty() && entries.iter().all(|e| e.path().is_dir())).then_some(dir)
}

fn display_name(root: &Path, path: &Path) -> String {
    if root.is_dir() {
        path.strip_prefix(root).unwrap_or(path).display().to_string()
    } else {
        path.display().to_string()
    }
}

fn collect(dir: &Path, exclude: &[PathBuf], files: &mut Vec<PathBuf>, findings: &mut Vec<Finding>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            let at = Location {
                file: Some(dir.display().to_string()),
                ..Location::default()
            };
            findings.push(Finding::error(
                codes::YAML_SYNTAX,
                format!("cannot read directory: {e}"),
                &at,
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            // Routing variants are alternatives, at any depth: skipped as at the top.
            if !exclude.contains(&path) && variants_dir(dir).as_ref() != Some(&path) {
                collect(&path, exclude, files, findings);
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(path);
        }
    }
}

/// Splits a file into documents at `---` lines and parses each, keeping absolute positions.
pub fn parse_file(file: &str, text: &str, out: &mut Loaded) {
    let text = yaml_line_breaks(text);
    for (start_line, body) in split_documents(&text) {
        if body.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        let at = Location {
            file: Some(file.to_string()),
            line: Some(start_line),
            column: None,
        };
        // Each document is parsed alone, its marks placed at the file's lines as they are made:
        // padding it with the lines before it made reading a file quadratic in its documents.
        let offset = start_line - 1;
        let node = match yaml::parse_document(&body, offset) {
            Ok(node) => node,
            Err(e) => {
                let at = Location {
                    file: Some(file.to_string()),
                    line: Some(e.line),
                    column: Some(e.column),
                };
                out.findings
                    .push(Finding::error(codes::YAML_SYNTAX, format!("YAML: {e}"), &at));
                continue;
            }
        };
        if is_proxy_config(&node) {
            out.findings.push(Finding::info(
                codes::NOT_A_MESH_DOCUMENT,
                format!("a ProxyConfig (one sidecar's own config), not a mesh document: left out (run it with `weft proxy --config {file}`)"),
                &at,
            ));
            continue;
        }
        match document(file, start_line, node, &body) {
            Ok(doc) => out.documents.push(doc),
            Err(message) => out.findings.push(Finding::error(codes::SCHEMA, message, &at)),
        }
    }
}

/// `text` with every lone CR made a LF. YAML reads a lone CR as a line break (as many editors
/// do), `str::lines` does not: without this, a file with old Mac line endings was split into
/// documents by one count of lines and located by the parser with the other, and its findings
/// pointed past the end of the file.
fn yaml_line_breaks(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .bytes()
        .enumerate()
        .any(|(i, b)| b == b'\r' && text.as_bytes().get(i + 1) != Some(&b'\n'))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(if c == '\r' && chars.peek() != Some(&'\n') {
            '\n'
        } else {
            c
        });
    }
    std::borrow::Cow::Owned(out)
}

/// Yields (1-based first line, text) for each `---`-separated document.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") || t.starts_with("---\t") {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push((start, current));
    docs
}

fn document(file: &str, line: usize, node: Node, body: &str) -> Result<Document, String> {
    let map = node.as_mapping().ok_or("a document must be a mapping")?;
    let text = |key: &str| map.get_scalar(key).map(|s| s.as_str().to_string());
    let api_version = text("apiVersion").ok_or("missing apiVersion")?;
    let kind = text("kind").ok_or("missing kind")?;
    let metadata: Metadata = match map.get_node("metadata") {
        Some(m) => marked_yaml::from_node(m).map_err(|e| format!("metadata: {e}"))?,
        None => Metadata::default(),
    };
    let name = metadata.name.ok_or("missing metadata.name")?;
    // The document's own position: its first key.
    let offset = line - 1;
    let line = node.span().start().map_or(line, |m| m.line());
    let end_line = node.span().end().map_or(line, |m| m.line());
    Ok(Document {
        file: file.to_string(),
        line,
        api_version,
        kind,
        name,
        namespace: metadata.namespace.unwrap_or_else(|| "default".to_string()),
        creation_timestamp: metadata.creation_timestamp,
        labels: metadata.labels,
        annotations: metadata.annotations,
        end_line,
        text: std::sync::Arc::from(body),
        offset,
    })
}

// === typed access ===

impl Document {
    /// The API group of `apiVersion` (`networking.istio.io`; empty for core `v1`).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The location of the document itself.
    pub fn location(&self) -> Location {
        Location {
            file: Some(self.file.clone()),
            line: Some(self.line),
            column: None,
        }
    }

    /// The location of a node inside this document.
    pub fn location_of(&self, node: &Node) -> Location {
        match node.span().start() {
            Some(m) => Location {
                file: Some(self.file.clone()),
                line: Some(m.line()),
                column: Some(m.column()),
            },
            None => self.location(),
        }
    }

    /// The whole document, positions absolute within its file (parsed from its text again;
    /// it parsed when loaded, so this cannot fail: a failure would give an empty mapping).
    pub fn node(&self) -> Node {
        yaml::parse_document(&self.text, self.offset).unwrap_or_else(|_| {
            Node::from(marked_yaml::types::MarkedMappingNode::new_empty(
                marked_yaml::Span::new_blank(),
            ))
        })
    }

    /// The `spec` node, if any.
    pub fn spec_node(&self) -> Option<Node> {
        match self.node() {
            Node::Mapping(mut map) => map.remove("spec"),
            _ => None,
        }
    }

    /// Deserializes `spec` into `T`, or every schema error in it (with `deny_unknown_fields`,
    /// an unknown field is one, with a "did you mean"): type errors, unknown and missing
    /// fields, values out of range, each at its line and column. A missing spec deserializes
    /// from an empty mapping.
    pub fn spec<T: DeserializeOwned>(&self) -> Result<T, Vec<Finding>> {
        let node = self.spec_node().unwrap_or_else(|| {
            Node::from(marked_yaml::types::MarkedMappingNode::new_empty(
                marked_yaml::Span::new_blank(),
            ))
        });
        schema::read_all(self, &node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# leading comment
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  ports: [{port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  bogus: 1
---
kind: Broken
  indentation: wrong: here
";

    /// Found by the `mesh_documents` fuzz target: lone CRs counted as line breaks by the YAML
    /// parser but not by the document splitter.
    #[test]
    fn lone_carriage_returns_are_line_breaks_as_for_the_yaml_parser() {
        let mut out = Loaded::default();
        let text = FILE.replace('\n', "\r");
        parse_file("mac.yaml", &text, &mut out);
        assert_eq!(out.documents.len(), 2, "{:?}", out.findings);
        assert_eq!((out.documents[0].line, out.documents[1].line), (2, 9));
        assert_eq!(out.findings.len(), 1);
        let lines = FILE.lines().count();
        assert!(
            out.findings[0].line.is_some_and(|l| (16..=lines).contains(&l)),
            "{}",
            out.findings[0]
        );
        // CRLF stays one line break.
        let mut crlf = Loaded::default();
        parse_file("dos.yaml", &FILE.replace('\n', "\r\n"), &mut crlf);
        assert_eq!((crlf.documents[0].line, crlf.documents[1].line), (2, 9));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct VsSpec {
        hosts: Vec<String>,
    }

    #[test]
    fn documents_keep_their_lines_and_bad_ones_are_reported() {
        let mut out = Loaded::default();
        parse_file("mesh.yaml", FILE, &mut out);
        assert_eq!(out.documents.len(), 2, "{:?}", out.findings);
        let svc = &out.documents[0];
        assert_eq!(
            (svc.kind.as_str(), svc.name.as_str(), svc.namespace.as_str()),
            ("Service", "reviews", "default")
        );
        assert_eq!(svc.line, 2);
        let vs = &out.documents[1];
        assert_eq!(vs.line, 9);
        assert_eq!(vs.group(), "networking.istio.io");
        assert_eq!(vs.namespace, "shop");
        let errs = vs.spec::<VsSpec>().expect_err("unknown field");
        let err = &errs[0];
        assert_eq!(err.code, codes::UNKNOWN_FIELD);
        assert_eq!(err.line, Some(14), "{err}");
        assert!(err.message.contains("bogus"), "{err}");
        assert_eq!(out.findings.len(), 1);
        assert_eq!(out.findings[0].code, codes::YAML_SYNTAX);
        assert!(
            out.findings[0].line.is_some_and(|l| l >= 16),
            "{}",
            out.findings[0]
        );
    }
}
