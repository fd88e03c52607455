//! Anchors, aliases and merge keys as Helm writes them, positions in the file, and a bound on
//! alias expansion.

use super::{parse_document, MAX_ALIAS_NODES};
use crate::finding::codes;
use crate::resources::{parse_file, Loaded};

fn line_col(node: &marked_yaml::Node) -> (usize, usize) {
    node.span().start().map_or((0, 0), |m| (m.line(), m.column()))
}

#[test]
fn aliases_are_copies_of_their_anchor_with_the_anchors_positions() {
    let text = "\
base: &ports
  - {name: http, port: 9080}
svc:
  ports: *ports
labels: &l {app: reviews}
more:
  <<: *l
  version: v2
";
    let node = parse_document(text, 10).expect("anchors are accepted");
    let map = node.as_mapping().expect("mapping");
    let ports = map
        .get_mapping("svc")
        .and_then(|s| s.get_sequence("ports"))
        .expect("alias expanded");
    let port = ports[0]
        .as_mapping()
        .and_then(|p| p.get_node("port"))
        .expect("port");
    // Line 2 of the document, 11 lines into its file.
    assert_eq!(line_col(port), (12, 24));
    let more = map.get_mapping("more").expect("merged");
    assert_eq!(more.get_scalar("app").map(|s| s.as_str()), Some("reviews"));
    assert_eq!(more.get_scalar("version").map(|s| s.as_str()), Some("v2"));
    assert!(more.get_node("<<").is_none());
}

#[test]
fn a_billion_laughs_is_refused_at_the_alias_that_crosses_the_bound() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let err = parse_document(&text, 0).expect_err("refused");
    assert!(err.message.contains(&MAX_ALIAS_NODES.to_string()), "{err}");
    // a1..a3 expand to 110 + 1,110 + 11,110 nodes; in a4 each `*a3` is 11,111 more: the 8th
    // crosses 100,000.
    assert_eq!((err.line, err.column), (5, 45), "{err:?}");
}

#[test]
fn a_document_with_anchors_loads_and_a_broken_one_is_a_syntax_finding_at_its_line() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: &labels {app: reviews}}
spec:
  selector: *labels
  ports: [{port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: *nowhere
";
    let mut out = Loaded::default();
    parse_file("mesh.yaml", text, &mut out);
    assert_eq!(out.documents.len(), 1, "{:?}", out.findings);
    let spec = out.documents[0].spec_node().expect("spec");
    let selector = spec
        .as_mapping()
        .and_then(|s| s.get_mapping("selector"))
        .and_then(|s| s.get_scalar("app"))
        .map(|s| s.as_str().to_string());
    assert_eq!(selector.as_deref(), Some("reviews"));
    let placed: Vec<_> = out.findings.iter().map(|f| (f.code, f.line, f.column)).collect();
    assert_eq!(
        placed,
        [(codes::YAML_SYNTAX, Some(12), Some(10))],
        "{:?}",
        out.findings
    );
}
