//! Where the parts of the model came from, so a check on the whole model can put its finding
//! at the field that causes it (the destination, the subset, the weight list, the rule, the
//! host entry) rather than at the start of the document.
//!
//! Translators record a `Part` of a document with its location; checks look it up by the
//! model element's `Origin` and fall back to a coarser part (or the document) when a dialect
//! recorded nothing finer.

use std::collections::HashMap;

use crate::finding::Location;
use crate::resources::Document;
use crate::route::Origin;

/// A part of a routing or policy document. Rule indexes are the rule's place in its
/// document (`Rule::index`); backend indexes are the backend's place in the model's rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// The entry naming this fully qualified host (`hosts[i]`, a `parentRef`, `spec.host`).
    Host(String),
    /// Rule `i` itself (`http[i]`, `rules[i]`).
    Rule(usize),
    /// The list of destinations of rule `i` (`route:`, `backendRefs:`).
    Routes(usize),
    /// The host of backend `j` of rule `i` (`destination.host`, a backendRef's `name`).
    BackendHost(usize, usize),
    /// The subset of backend `j` of rule `i`.
    Subset(usize, usize),
    /// The port selector of backend `j` of rule `i`.
    BackendPort(usize, usize),
    /// Match `m` of rule `i` (numbered as the model keeps them).
    Match(usize, usize),
    /// Mirror `k` of rule `i` (`mirror:` is 0, `mirrors[k]` follow).
    Mirror(usize, usize),
    /// The value of a regex written in rule `i`.
    Regex(usize, String),
    /// A DestinationRule's `trafficPolicy.tls.mode`.
    TlsMode,
}

/// Locations of recorded parts, keyed by their document.
#[derive(Debug, Default)]
pub struct Spans {
    map: HashMap<(DocKey, Part), Location>,
}

/// A document as a model element's `Origin` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DocKey {
    file: Option<String>,
    kind: String,
    namespace: String,
    name: String,
}

// === impl Spans ===

impl Spans {
    /// Records where `part` of `doc` is; the first record of a part wins.
    pub fn record(&mut self, doc: &Document, part: Part, at: Location) {
        let key = DocKey {
            file: Some(doc.file.clone()),
            kind: doc.kind.clone(),
            namespace: doc.namespace.clone(),
            name: doc.name.clone(),
        };
        self.map.entry((key, part)).or_insert(at);
    }

    /// Where `part` of the document `origin` names is, if its translator recorded it.
    pub fn get(&self, origin: &Origin, part: Part) -> Option<&Location> {
        let key = DocKey {
            file: origin.file.clone(),
            kind: origin.kind.clone(),
            namespace: origin.namespace.clone(),
            name: origin.name.clone(),
        };
        self.map.get(&(key, part))
    }

    /// The first recorded of `parts`, else the origin's own line.
    pub fn locate(&self, origin: &Origin, parts: impl IntoIterator<Item = Part>) -> Location {
        parts
            .into_iter()
            .find_map(|p| self.get(origin, p).cloned())
            .unwrap_or_else(|| Location {
                file: origin.file.clone(),
                line: origin.line,
                column: None,
            })
    }
}
