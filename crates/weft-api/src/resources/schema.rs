//! Reading a spec field by field: every schema error of a document in one run.
//!
//! serde stops at the first error. To report the next ones too, the offending node is taken
//! out of a copy of the spec and the copy read again, until it reads or nothing more can be
//! taken out. A "missing field" that only exists because a bad value was taken out is not
//! reported; the enclosing node is taken out instead. Positions are the original ones (the
//! copy keeps its marks), and paths in messages are renumbered as written.

use marked_yaml::spanned_serde::Error as DeError;
use marked_yaml::{FromNodeError, Node};
use serde::de::DeserializeOwned;

use super::Document;
use crate::finding::{codes, Finding, Location};

/// At most this many findings per document: a file of garbage is not a thousand lines of output.
const MAX_ERRORS: usize = 50;

/// One step of a path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Deserializes `node` (the document's spec) into `T`, or every schema error found in it.
pub(super) fn read_all<T: DeserializeOwned>(doc: &Document, node: &Node) -> Result<T, Vec<Finding>> {
    let first = match marked_yaml::from_node::<T>(node) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let mut work = node.clone();
    let mut findings = Vec::new();
    // Paths taken out (as numbered at that time), and list items taken out, in order.
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    let mut error = first;
    while findings.len() < MAX_ERRORS {
        let Some(path) = error.path().map(parse_path) else {
            findings.push(finding(doc, &work, &[], &removed, error));
            break;
        };
        let caused_by_us = missing_field(&error)
            .is_some_and(|field| removed.contains(&[&path[..], &[Seg::Key(field)]].concat()));
        if !caused_by_us {
            findings.push(finding(doc, &work, &path, &removed, error));
        }
        // The bad value, the unknown key, or the mapping that lacks a required field.
        let target = path;
        if target.is_empty() || !remove(&mut work, &target) {
            break;
        }
        removed.push(target);
        error = match marked_yaml::from_node::<T>(&work) {
            Ok(_) => break,
            Err(e) => e,
        };
    }
    Err(findings)
}

/// `http[0].route[1].weight` -> [http, 0, route, 1, weight].
fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for piece in path.split('.') {
        let (key, mut rest) = piece.split_once('[').map_or((piece, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                segs.push(Seg::Index(i));
            }
            rest = after.trim_start_matches('[');
        }
    }
    segs
}

/// The field named by serde's "missing field `x`".
fn missing_field(e: &FromNodeError) -> Option<String> {
    match &**e {
        DeError::Other(message, _) => message
            .strip_prefix("missing field `")?
            .strip_suffix('`')
            .map(String::from),
        _ => None,
    }
}

fn get<'a>(node: &'a Node, path: &[Seg]) -> Option<&'a Node> {
    path.iter().try_fold(node, |n, seg| match (n, seg) {
        (Node::Mapping(m), Seg::Key(k)) => m.get_node(k),
        (Node::Sequence(s), Seg::Index(i)) => s.get(*i),
        _ => None,
    })
}

fn remove(node: &mut Node, path: &[Seg]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let mut at = node;
    for seg in parent {
        let next = match (at, seg) {
            (Node::Mapping(m), Seg::Key(k)) => m.get_mut(k.as_str()),
            (Node::Sequence(s), Seg::Index(i)) => s.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    match (at, last) {
        (Node::Mapping(m), Seg::Key(k)) => m.remove(k.as_str()).is_some(),
        (Node::Sequence(s), Seg::Index(i)) if *i < s.len() => {
            s.remove(*i);
            true
        }
        _ => false,
    }
}

/// `path` (numbered in the current copy) as written: list items taken out before shift the
/// later ones down, so each removal is undone in reverse order.
fn as_written(path: &[Seg], removed: &[Vec<Seg>]) -> Vec<Seg> {
    let mut path = path.to_vec();
    for r in removed.iter().rev() {
        let Some((Seg::Index(gone), list)) = r.split_last() else {
            continue;
        };
        if path.len() > list.len() && path[..list.len()] == *list {
            if let Seg::Index(i) = &mut path[list.len()] {
                if *i >= *gone {
                    *i += 1;
                }
            }
        }
    }
    path
}

fn display(path: &[Seg]) -> String {
    let mut out = String::from("spec");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn finding(doc: &Document, work: &Node, path: &[Seg], removed: &[Vec<Seg>], e: FromNodeError) -> Finding {
    let written = display(&as_written(path, removed));
    let value = get(work, path)
        .and_then(Node::as_scalar)
        .map(|s| s.as_str().to_string());
    let mut at = match e.start_mark() {
        Some(m) => Location {
            file: Some(doc.file.clone()),
            line: Some(m.line()),
            column: Some(m.column()),
        },
        None => doc.location(),
    };
    let who = format!("{} {}/{}", doc.kind, doc.namespace, doc.name);
    let missing = missing_field(&e);
    let (code, message, fix) = match (e.into_inner(), missing) {
        (_, Some(field)) => {
            // The mapping's own mark can lie after its first key: point at the mapping's start.
            if let Some(first) = get(work, path)
                .and_then(Node::as_mapping)
                .and_then(|m| m.keys().next())
                .and_then(|k| k.span().start())
            {
                if (Some(first.line()), Some(first.column())) < (at.line, at.column) {
                    at.line = Some(first.line());
                    at.column = Some(first.column());
                }
            }
            (
                codes::MISSING_FIELD,
                format!("{who}: {written}: missing required field `{field}`"),
                Some(format!("add `{field}` to {written}")),
            )
        }
        (DeError::UnknownFieldError(field, expected, _), None) => {
            let guess = did_you_mean(&field, expected);
            let hint = guess
                .map(|g| format!("; did you mean `{g}`?"))
                .unwrap_or_default();
            (
                codes::UNKNOWN_FIELD,
                format!("{who}: {written}: unknown field `{field}`{hint}"),
                guess.map(|g| format!("rename `{field}` to `{g}`")),
            )
        }
        (DeError::IntegerParseFailure(e, _), None) => {
            use std::num::IntErrorKind as K;
            let v = value.unwrap_or_default();
            let what = match e.kind() {
                K::PosOverflow | K::NegOverflow => "is out of range".to_string(),
                _ if v.starts_with('-') && v[1..].chars().all(|c| c.is_ascii_digit()) => {
                    "is out of range (it must not be negative)".to_string()
                }
                _ => "is not an integer".to_string(),
            };
            (codes::SCHEMA, format!("{who}: {written}: `{v}` {what}"), None)
        }
        (inner, None) => (codes::SCHEMA, format!("{who}: {written}: {inner}"), None),
    };
    let f = Finding::error(code, message, &at);
    match fix {
        Some(fix) => f.with_fix(fix),
        None => f,
    }
}

/// The expected field closest to `field` (case-insensitive edit distance at most 2, or one
/// being a prefix of the other), if any.
fn did_you_mean(field: &str, expected: &[&'static str]) -> Option<&'static str> {
    let lower = field.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (distance(&lower, &e.to_ascii_lowercase()), *e))
        .filter(|(d, e)| *d <= 2.max(field.len() / 4) || e.to_ascii_lowercase().starts_with(&lower))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// Levenshtein distance, two rows.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            row.push((prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
