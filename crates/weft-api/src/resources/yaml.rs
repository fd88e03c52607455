//! Reading one YAML document as users write it, into the positioned nodes the rest of Weft reads.
//!
//! `marked_yaml`'s own loader refuses anchors and aliases, which Helm output and hand-written
//! files use; this loader builds the same `Node`s from the YAML parser's events, expanding each
//! alias into a copy of its anchor's node (positions are those of the anchor, where the value is
//! written). Expansion is bounded: a document whose aliases would produce more than
//! `MAX_ALIAS_NODES` nodes (a "billion laughs") is refused with an error, not expanded.
//! Positions are moved by the document's place in its file as they are made, so a file of many
//! documents is read in linear time.

use std::collections::HashMap;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{Marker, Node, Span};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker as YamlMarker;

/// At most this many nodes may be made by expanding aliases in one document.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// A document that is not YAML Weft can read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    /// 1-based, in the file.
    pub line: usize,
    /// 1-based.
    pub column: usize,
}

/// Parses `text`, whose first line is line `offset + 1` of its file.
pub fn parse_document(text: &str, offset: usize) -> Result<Node, YamlError> {
    let mut loader = Loader {
        offset,
        stack: Vec::new(),
        anchors: HashMap::new(),
        done: None,
        error: None,
        expanded: 0,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut loader, false) {
        let at = loader.marker(*e.marker());
        return Err(YamlError {
            message: e.info().to_string(),
            line: at.line(),
            column: at.column(),
        });
    }
    if let Some(e) = loader.error {
        return Err(e);
    }
    Ok(loader
        .done
        .unwrap_or_else(|| Node::from(MarkedMappingNode::new_empty(Span::new_blank()))))
}

/// A mapping or sequence being read. Only as many live at once as the document is deep, so the
/// size difference between the variants costs nothing worth a box per mapping.
#[allow(clippy::large_enum_variant)]
enum Frame {
    Mapping {
        start: Marker,
        anchor: usize,
        map: MarkedMappingNode,
        key: Option<MarkedScalarNode>,
    },
    Sequence {
        start: Marker,
        anchor: usize,
        items: Vec<Node>,
    },
}

struct Loader {
    offset: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    done: Option<Node>,
    error: Option<YamlError>,
    /// Nodes made by expanding aliases so far.
    expanded: usize,
}

// === impl Loader ===

impl Loader {
    fn marker(&self, m: YamlMarker) -> Marker {
        Marker::new(0, m.index(), m.line() + self.offset, m.col() + 1)
    }

    fn fail(&mut self, at: Marker, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                message: message.into(),
                line: at.line(),
                column: at.column(),
            });
        }
    }

    /// A finished node: remembered under its anchor, then placed in its parent.
    fn finish(&mut self, node: Node, anchor: usize, at: Marker) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.done = Some(node),
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping { map, key, .. }) => match key.take() {
                Some(k) => {
                    map.insert(k, node);
                }
                None => match node {
                    Node::Scalar(k) => *key = Some(k),
                    _ => self.fail(at, "a mapping key must be a scalar"),
                },
            },
        }
    }

    fn alias(&mut self, id: usize, at: Marker) {
        let Some(node) = self.anchors.get(&id) else {
            return self.fail(at, "an alias to an anchor not defined before it");
        };
        let budget = MAX_ALIAS_NODES.saturating_sub(self.expanded);
        let size = count_nodes(node, budget + 1);
        if size > budget {
            return self.fail(
                at,
                format!(
                    "aliases expand to more than {MAX_ALIAS_NODES} nodes (a \"billion laughs\" document?): refused"
                ),
            );
        }
        self.expanded += size;
        let node = node.clone();
        self.finish(node, 0, at);
    }
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, ev: Event, mark: YamlMarker) {
        if self.error.is_some() {
            return;
        }
        let at = self.marker(mark);
        match ev {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
            Event::Alias(id) => self.alias(id, at),
            // Tags (`!!str`) are read as the plain value they mark.
            Event::Scalar(value, _style, anchor, _tag) => {
                let node = Node::from(MarkedScalarNode::new(Span::new_start(at), value));
                self.finish(node, anchor, at);
            }
            Event::SequenceStart(anchor, _tag) => self.stack.push(Frame::Sequence {
                start: at,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(anchor, _tag) => self.stack.push(Frame::Mapping {
                start: at,
                anchor,
                map: MarkedMappingNode::new_empty(Span::new_start(at)),
                key: None,
            }),
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Sequence { start, anchor, items }) => {
                    let node = MarkedSequenceNode::new(Span::new_with_marks(start, at), items);
                    self.finish(Node::from(node), anchor, at);
                }
                _ => self.fail(at, "unbalanced sequence"),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Mapping {
                    start,
                    anchor,
                    mut map,
                    ..
                }) => {
                    *map.span_mut() = Span::new_with_marks(start, at);
                    merge_keys(&mut map);
                    self.finish(Node::from(map), anchor, at);
                }
                _ => self.fail(at, "unbalanced mapping"),
            },
        }
    }
}

/// YAML's merge key (`<<: *base`, `<<: [*a, *b]`): the merged mappings' entries that the
/// mapping does not set itself, earlier mappings first.
fn merge_keys(map: &mut MarkedMappingNode) {
    let Some(merged) = map.remove("<<") else {
        return;
    };
    let sources: Vec<Node> = match merged {
        Node::Sequence(seq) => seq.iter().cloned().collect(),
        other => vec![other],
    };
    for source in sources {
        if let Node::Mapping(m) = source {
            for (k, v) in m.iter() {
                if !map.contains_key(k.as_str()) {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// The nodes in `node`, counting no further than `limit`.
fn count_nodes(node: &Node, limit: usize) -> usize {
    let mut count = 0;
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        count += 1;
        if count > limit {
            break;
        }
        match n {
            Node::Scalar(_) => {}
            Node::Sequence(seq) => todo.extend(seq.iter()),
            Node::Mapping(map) => todo.extend(map.values()),
        }
    }
    count
}

#[cfg(test)]
mod tests;
