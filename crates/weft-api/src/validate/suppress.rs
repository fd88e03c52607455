//! Silencing findings, as `istioctl analyze --suppress` and the `galley.istio.io/analyze-suppress`
//! annotation do: `weft analyze --suppress CODE=KIND/NAMESPACE/NAME` and the
//! `weft.dev/analyze-suppress: "CODE,CODE"` annotation on a document.
//!
//! A CODE is a Weft code (`WEFT0102`) or the Istio code a message starts with (`IST0101`). A
//! finding belongs to the document whose lines hold it. `*` matches any kind, namespace or name,
//! and a trailing `*` any suffix (`reviews-*`).

use std::collections::HashMap;
use std::str::FromStr;

use crate::finding::Finding;
use crate::resources::Document;

/// The annotation that silences codes on the document carrying it.
pub const ANNOTATION: &str = "weft.dev/analyze-suppress";

/// One `CODE=KIND/NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub code: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// A `--suppress` value that is not `CODE=KIND/NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--suppress {given:?}: expected CODE=KIND/NAMESPACE/NAME (e.g. IST0101=VirtualService/default/reviews; * matches any)")]
pub struct BadSuppression {
    pub given: String,
}

// === impl Suppression ===

impl FromStr for Suppression {
    type Err = BadSuppression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSuppression { given: s.to_string() };
        let (code, target) = s.split_once('=').ok_or_else(bad)?;
        let mut parts = target.split('/');
        let (Some(kind), Some(namespace), Some(name), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if [code, kind, namespace, name].iter().any(|p| p.trim().is_empty()) {
            return Err(bad());
        }
        Ok(Self {
            code: code.trim().to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

impl Suppression {
    fn silences(&self, finding: &Finding, doc: &Document) -> bool {
        has_code(finding, &self.code)
            && glob(&self.kind, &doc.kind)
            && glob(&self.namespace, &doc.namespace)
            && glob(&self.name, &doc.name)
    }
}

/// The finding's Weft code, or the Istio code its message starts with.
fn has_code(finding: &Finding, code: &str) -> bool {
    finding.code.eq_ignore_ascii_case(code)
        || finding
            .message
            .split_once(':')
            .is_some_and(|(ist, _)| ist.eq_ignore_ascii_case(code))
}

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Drops the findings that a `--suppress` rule or their document's annotation silences.
pub fn apply(findings: Vec<Finding>, docs: &[Document], rules: &[Suppression]) -> Vec<Finding> {
    let annotated = docs.iter().any(|d| d.annotations.contains_key(ANNOTATION));
    if rules.is_empty() && !annotated {
        return findings;
    }
    // Per file, the documents by their first line: a finding belongs to the last document
    // that starts at or before its line.
    let mut by_file: HashMap<&str, Vec<(usize, &Document)>> = HashMap::new();
    for d in docs {
        by_file.entry(d.file.as_str()).or_default().push((d.line, d));
    }
    for starts in by_file.values_mut() {
        starts.sort_by_key(|(line, _)| *line);
    }
    let owner = |f: &Finding| -> Option<&Document> {
        let starts = by_file.get(f.file.as_deref()?)?;
        let line = f.line?;
        let i = starts.partition_point(|(start, _)| *start <= line);
        let doc = starts.get(i.checked_sub(1)?).map(|(_, d)| *d)?;
        // Past the document's last line: a later document that did not load.
        (line <= doc.end_line).then_some(doc)
    };
    findings
        .into_iter()
        .filter(|f| {
            let Some(doc) = owner(f) else {
                return true;
            };
            let by_annotation = doc
                .annotations
                .get(ANNOTATION)
                .is_some_and(|codes| codes.split(',').any(|c| has_code(f, c.trim())));
            !(by_annotation || rules.iter().any(|r| r.silences(f, doc)))
        })
        .collect()
}
