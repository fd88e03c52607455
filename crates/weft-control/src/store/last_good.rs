//! Last good documents, per file: a file whose new version fails to parse or validate is
//! refused as a whole and its last good version stays in force (as Istio and Linkerd keep what
//! was serving when a change is rejected), so a typo in a live edit never reverts routing.
//! Deleting a file still removes what it defined; a file that never had a good version is served
//! as before — its readable, valid documents, the rest left out and reported.
//!
//! A file is refused only when it changed: an unchanged file that another file's edit made
//! invalid is reported, not "refused". Errors a file has on its own (syntax, schema) are
//! looked at first; then errors that need the whole model (a missing subset, a conflict), with
//! the refused files' last good versions in place, so that one broken file does not drag a file
//! that depends on it down with it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use weft_api::finding::{Finding, Severity};
use weft_api::resources::{Document, Loaded};
use weft_api::translate::{self, Translated};
use weft_api::validate;

/// How many times the whole model is checked again after refusing files whose errors only the
/// whole model shows (each round refuses at least one more file; a bound keeps a reload cheap).
const MODEL_ROUNDS: usize = 3;

/// The last good version of every file.
#[derive(Debug, Default)]
pub struct LastGood {
    files: BTreeMap<String, GoodFile>,
    /// The refusals in force, by file (kept across reloads so that `refused_at` is when the
    /// refused version was first seen).
    refused: BTreeMap<String, Refusal>,
    /// How many versions were refused since the start.
    refusals_total: u64,
}

#[derive(Debug)]
struct GoodFile {
    documents: Vec<Document>,
    since: SystemTime,
}

/// A file whose new version is refused: its last good version serves.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub file: String,
    /// Since when the version still in force has been the file's good one.
    pub serving_since: SystemTime,
    /// When the refused version was first seen.
    pub refused_at: SystemTime,
    /// Why: the errors of the refused version (file, line and column in each).
    pub errors: Vec<Finding>,
}

/// What to serve after a reload.
#[derive(Debug)]
pub struct Accepted {
    pub translated: Translated,
    /// Every finding: those of what is served, then the errors of each refused version.
    pub findings: Vec<Finding>,
    /// The files whose new version is refused.
    pub refused: Vec<Refusal>,
    /// Files refused by this reload that were not refused before it (to announce).
    pub newly_refused: Vec<String>,
    /// Files refused before this reload whose refusal ended (fixed, or deleted).
    pub no_longer_refused: Vec<String>,
}

impl LastGood {
    /// Decides what serves from a fresh read of every file, and remembers the good versions.
    pub fn accept(&mut self, loaded: Loaded) -> Accepted {
        let now = SystemTime::now();
        let by_file = group(&loaded.documents);
        // Files with a good version that differs from what was just read.
        let changed = |file: &str| {
            self.files
                .get(file)
                .is_some_and(|good| by_file.get(file).is_none_or(|docs| *docs != good.documents))
        };
        let read_errors: BTreeSet<String> = error_files(&loaded.findings);

        // Round 0: errors of each file on its own.
        let mut refused: BTreeSet<String> = BTreeSet::new();
        let translated = translate::translate(&loaded.documents);
        let own = read_errors
            .iter()
            .cloned()
            .chain(error_files(&translated.findings));
        refused.extend(own.filter(|f| changed(f)));
        let mut errors_of: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
        let mut effective = self.substitute(&loaded, &refused);
        let mut translated = match refused.is_empty() {
            true => translated,
            false => translate::translate(&effective.documents),
        };
        let mut findings = validate::analyze(&effective, &translated);
        // Rounds 1..: errors only the whole model shows.
        for _ in 0..MODEL_ROUNDS {
            let more: Vec<String> = error_files(&findings)
                .into_iter()
                .filter(|f| !refused.contains(f) && changed(f))
                .collect();
            if more.is_empty() {
                break;
            }
            // Their errors as found with the new version in place.
            for f in findings.iter().filter(|f| is_error(f)) {
                if let Some(file) = f.file.as_ref().filter(|file| more.contains(file)) {
                    errors_of.entry(file.clone()).or_default().push(f.clone());
                }
            }
            refused.extend(more);
            effective = self.substitute(&loaded, &refused);
            translated = translate::translate(&effective.documents);
            findings = validate::analyze(&effective, &translated);
        }
        // The errors of the refused versions read on their own.
        let translated_refused = translated_own(&loaded, &refused);
        for f in loaded
            .findings
            .iter()
            .chain(&translated_refused)
            .filter(|f| is_error(f))
        {
            if let Some(file) = f.file.as_ref().filter(|file| refused.contains(*file)) {
                let list = errors_of.entry(file.clone()).or_default();
                if !list.contains(f) {
                    list.push(f.clone());
                }
            }
        }

        // The versions that serve with no error are the new good ones.
        let failing = error_files(&findings);
        let mut present: BTreeSet<String> = by_file.keys().cloned().collect();
        present.extend(read_errors);
        for (file, docs) in &by_file {
            if refused.contains(file) || failing.contains(file) {
                continue;
            }
            match self.files.get_mut(file) {
                Some(good) if good.documents == *docs => {}
                _ => {
                    self.files.insert(
                        file.clone(),
                        GoodFile {
                            documents: docs.clone(),
                            since: now,
                        },
                    );
                }
            }
        }
        // A deleted (or emptied) file defines nothing any more.
        self.files.retain(|file, _| present.contains(file));

        let before: BTreeSet<String> = self.refused.keys().cloned().collect();
        let mut next = BTreeMap::new();
        for file in &refused {
            let errors = errors_of.remove(file).unwrap_or_default();
            let (Some(good), false) = (self.files.get(file), errors.is_empty()) else {
                continue;
            };
            let refused_at = match self.refused.get(file) {
                Some(r) if r.errors == errors => r.refused_at,
                _ => {
                    self.refusals_total += 1;
                    now
                }
            };
            next.insert(
                file.clone(),
                Refusal {
                    file: file.clone(),
                    serving_since: good.since,
                    refused_at,
                    errors,
                },
            );
        }
        let newly_refused = next
            .iter()
            .filter(|(f, r)| {
                self.refused
                    .get(*f)
                    .is_none_or(|old| old.refused_at != r.refused_at)
            })
            .map(|(f, _)| f.clone())
            .collect();
        let no_longer_refused = before.into_iter().filter(|f| !next.contains_key(f)).collect();
        self.refused = next;
        let refusals: Vec<Refusal> = self.refused.values().cloned().collect();
        findings.extend(refusals.iter().flat_map(|r| r.errors.iter().cloned()));
        Accepted {
            translated,
            findings,
            refused: refusals,
            newly_refused,
            no_longer_refused,
        }
    }

    /// How many new versions were refused since the start.
    pub fn refusals_total(&self) -> u64 {
        self.refusals_total
    }

    /// `loaded` with each refused file's documents (and read findings) replaced by its last
    /// good version, files kept in the order they were read.
    fn substitute(&self, loaded: &Loaded, refused: &BTreeSet<String>) -> Loaded {
        let mut documents: Vec<Document> = Vec::with_capacity(loaded.documents.len());
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        for doc in &loaded.documents {
            if !refused.contains(&doc.file) {
                documents.push(doc.clone());
            } else if placed.insert(doc.file.as_str()) {
                if let Some(good) = self.files.get(&doc.file) {
                    documents.extend(good.documents.iter().cloned());
                }
            }
        }
        // A refused file with no readable document now: its good version goes where its name
        // sorts.
        for file in refused.iter().filter(|f| !placed.contains(f.as_str())) {
            if let Some(good) = self.files.get(file) {
                let at = documents
                    .iter()
                    .position(|d| d.file.as_str() > file.as_str())
                    .unwrap_or(documents.len());
                documents.splice(at..at, good.documents.iter().cloned());
            }
        }
        let findings = loaded
            .findings
            .iter()
            .filter(|f| f.file.as_ref().is_none_or(|file| !refused.contains(file)))
            .cloned()
            .collect();
        Loaded { documents, findings }
    }
}

/// The translation findings of the refused files' new versions (their schema errors).
fn translated_own(loaded: &Loaded, refused: &BTreeSet<String>) -> Vec<Finding> {
    let docs: Vec<Document> = loaded
        .documents
        .iter()
        .filter(|d| refused.contains(&d.file))
        .cloned()
        .collect();
    if docs.is_empty() {
        return Vec::new();
    }
    translate::translate(&docs).findings
}

fn is_error(f: &Finding) -> bool {
    f.severity == Severity::Error
}

fn error_files(findings: &[Finding]) -> BTreeSet<String> {
    findings
        .iter()
        .filter(|f| is_error(f))
        .filter_map(|f| f.file.clone())
        .collect()
}

fn group(documents: &[Document]) -> BTreeMap<String, Vec<Document>> {
    let mut out: BTreeMap<String, Vec<Document>> = BTreeMap::new();
    for d in documents {
        out.entry(d.file.clone()).or_default().push(d.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}\n";
    const ROUTE_V1: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: 100\n";

    fn read(files: &[(&str, &str)]) -> Loaded {
        let mut loaded = Loaded::default();
        for (name, text) in files {
            weft_api::resources::parse_file(name, text, &mut loaded);
        }
        loaded
    }

    fn routes(a: &Accepted) -> usize {
        a.translated.mesh.routes.len()
    }

    #[test]
    fn a_broken_edit_keeps_the_last_good_version_until_fixed_and_deletion_removes() {
        let mut good = LastGood::default();
        let first = good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", ROUTE_V1)]));
        assert!(first.refused.is_empty(), "{:?}", first.findings);
        assert_eq!(routes(&first), 1);

        // A syntax error: the route stays, the refusal names the file and line.
        let broken = ROUTE_V1.replace("{host: reviews}", "{host: reviews");
        let second = good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", &broken)]));
        assert_eq!(routes(&second), 1, "{:?}", second.findings);
        assert_eq!(second.refused.len(), 1);
        assert_eq!(second.newly_refused, vec!["vs.yaml".to_string()]);
        let r = &second.refused[0];
        assert_eq!(r.file, "vs.yaml");
        assert!(r
            .errors
            .iter()
            .all(|e| e.file.as_deref() == Some("vs.yaml") && e.line.is_some()));
        assert!(r.serving_since <= r.refused_at);

        // The same broken version read again: still refused, not announced again.
        let again = good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", &broken)]));
        assert!(again.newly_refused.is_empty());
        assert_eq!(again.refused.len(), 1);
        assert_eq!(good.refusals_total(), 1);

        // A schema error (an unknown field) is refused too.
        let misspelt = ROUTE_V1.replace("  - route:", "  - rout:");
        let third = good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", &misspelt)]));
        assert_eq!(routes(&third), 1);
        assert_eq!(third.refused.len(), 1);
        assert_eq!(good.refusals_total(), 2);

        // Fixed: served, refusal over.
        let fixed = good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", ROUTE_V1)]));
        assert!(fixed.refused.is_empty());
        assert_eq!(fixed.no_longer_refused, vec!["vs.yaml".to_string()]);

        // Deleted: what it defined is gone.
        let deleted = good.accept(read(&[("svc.yaml", SERVICE)]));
        assert_eq!(routes(&deleted), 0);
        assert!(deleted.refused.is_empty());
    }

    #[test]
    fn a_file_with_no_good_version_serves_its_valid_documents() {
        let mut good = LastGood::default();
        let broken = format!("{ROUTE_V1}---\nkind: Broken\n  indentation: wrong: here\n");
        let first = good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", &broken)]));
        assert!(first.refused.is_empty());
        assert_eq!(routes(&first), 1);
        assert!(validate::has_errors(&first.findings));
    }

    #[test]
    fn an_unchanged_file_made_invalid_by_another_is_reported_not_refused() {
        let mut good = LastGood::default();
        good.accept(read(&[("svc.yaml", SERVICE), ("vs.yaml", ROUTE_V1)]));
        // The service goes away (deleted): the route now names a missing host.
        let after = good.accept(read(&[("vs.yaml", ROUTE_V1)]));
        assert!(validate::has_errors(&after.findings), "{:?}", after.findings);
        assert!(after.refused.is_empty(), "{:?}", after.refused);
    }
}
