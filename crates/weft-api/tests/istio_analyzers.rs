//! Istio's own analyzer test table, run through Weft's analyzer (issue 18, item 6).
//!
//! The documents in `istio_analyzers/` are Istio's analyzer testdata, unchanged
//! (pkg/config/analysis/analyzers/testdata in istio/istio at commit 86c9f01fd73, Apache-2.0; see
//! `istio_analyzers/README.md`). Each case below is a case of Istio's table
//! (pkg/config/analysis/analyzers/analyzers_test.go): its files and the messages Istio expects,
//! as (code, resource). Weft's findings carry the Istio code at the start of their message and
//! name the resource right after it; for the codes Weft implements, the set of (code, resource)
//! Weft reports must be exactly the set Istio expects: nothing missing, nothing extra.
//!
//! Istio's table runs one analyzer at a time over documents that are often incomplete on
//! purpose (VirtualServices without `hosts`, routes to hosts no Service defines), so only the
//! codes of the analyzer a case is about are compared; Weft's other findings on the same
//! documents (schema errors, "read but not acted on") are not part of Istio's expectation.
//!
//! Where Weft differs from Istio today, the case lists it in `differs`, with the reason: a
//! finding Istio expects that Weft does not report (`Missing`), or one Weft reports that Istio
//! does not (`Extra`). The test holds Weft to exactly that: a difference that goes away (a gap
//! closed) fails the test too, until it is taken off the list, so the list is always the true
//! distance to Istio's table.

use std::collections::BTreeSet;
use std::path::PathBuf;

use weft_api::{resources, translate, validate};

struct Case {
    /// Istio's name for the case.
    name: &'static str,
    files: &'static [&'static str],
    /// The Istio codes of the analyzer(s) the case is about.
    codes: &'static [&'static str],
    /// (code, "Kind namespace/name") as Istio's table lists them.
    want: &'static [(&'static str, &'static str)],
    /// Where Weft's findings differ from `want` today, and why.
    differs: &'static [(Differs, &'static str, &'static str)],
}

#[derive(Clone, Copy, PartialEq)]
enum Differs {
    /// Istio expects it; Weft does not report it. The `&str` says why.
    Missing(&'static str),
    /// Weft reports it; Istio's table does not list it.
    Extra(&'static str),
}
use Differs::{Extra, Missing};

/// Weft refuses a VirtualService without `hosts` whole (IST0106, an error that keeps it out of
/// the served config) and checks nothing inside it; Istio's table runs the reference analyzer on
/// such documents alone.
const NO_HOSTS: Differs =
    Missing("VirtualService without hosts: refused whole (IST0106), its destinations are not checked");
/// `exportTo` (on VirtualServices, and `networking.istio.io/exportTo` on Services) is read but
/// not acted on: every namespace sees every resource, in the proxies as in the analyzer.
const EXPORT_TO: Differs = Missing("exportTo is not acted on: every namespace sees every resource");
const EXPORT_TO_EXTRA: Differs =
    Extra("exportTo is not acted on: the two VirtualServices do conflict in Weft's proxies");
/// Wildcard VirtualService hosts (`*.productpage`) are reported as not acted on (WEFT0005).
const WILDCARD_HOSTS: Differs = Missing("wildcard VirtualService hosts are not acted on (WEFT0005)");
/// Weft knows workloads from its `Workload` documents; Kubernetes Pods and Deployments are not
/// read (WEFT0004), so a selector cannot be checked against them.
const PODS: Differs = Missing("Pods and Deployments are not read: workloads are Workload documents");
/// Unreachable rules and ineffective matches are checked for `http` routes only.
const TCP_TLS: Differs = Missing("tcp and tls routes are not checked for unreachable rules or matches");
/// Weft reports a rule whose every match is covered as unreachable (IST0130), once, rather than
/// (also) each of its matches (IST0131).
const RULE_NOT_MATCH: Differs = Missing("the whole rule is reported (IST0130), not also each match");
const RULE_NOT_MATCH_EXTRA: Differs =
    Extra("every match of the rule is covered: the rule is reported (IST0130)");
/// Istio compares URI prefixes only; Weft also sees an exact URI under an earlier prefix.
const EXACT_UNDER_PREFIX: Differs = Extra("exact \"/\" is covered by the prefix \"/\" before it");
/// JWT claim routing is a gateway feature, and Weft has no gateway yet (issue 16).
const GATEWAY: Differs = Missing("claim-based routing is checked at gateways, which Weft does not run yet");

const REFERENCED_RESOURCE_NOT_FOUND: &str = "IST0101";
const PORT_SELECTOR_REQUIRED: &str = "IST0112";
const CONFLICTING_MESH_GATEWAY_HOSTS: &str = "IST0109";
const NO_MATCHING_WORKLOADS: &str = "IST0127";
const UNREACHABLE_RULE: &str = "IST0130";
const INEFFECTIVE_MATCH: &str = "IST0131";
const JWT_ROUTING_WITHOUT_AUTHN: &str = "IST0149";

const CASES: &[Case] = &[
    Case {
        name: "virtualServiceDestinationRules",
        files: &["virtualservice_destinationrules.yaml"],
        codes: &[REFERENCED_RESOURCE_NOT_FOUND],
        want: &[
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bogussubset",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-mirror-bogussubset",
            ),
        ],
        differs: &[
            (
                NO_HOSTS,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bogussubset",
            ),
            (
                NO_HOSTS,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-mirror-bogussubset",
            ),
        ],
    },
    Case {
        name: "virtualServiceDestinationHosts",
        files: &["virtualservice_destinationhosts.yaml"],
        codes: &[REFERENCED_RESOURCE_NOT_FOUND, PORT_SELECTOR_REQUIRED],
        want: &[
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bogushost",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bookinfo-other",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-mirror-bogushost",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bogusport",
            ),
            (
                PORT_SELECTOR_REQUIRED,
                "VirtualService default/reviews-2port-missing",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService istio-system/cross-namespace-details",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService hello/hello-export-to-bogus",
            ),
        ],
        differs: &[
            (
                NO_HOSTS,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bogushost",
            ),
            (
                NO_HOSTS,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bookinfo-other",
            ),
            (
                NO_HOSTS,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-mirror-bogushost",
            ),
            (
                NO_HOSTS,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService default/reviews-bogusport",
            ),
            (
                NO_HOSTS,
                PORT_SELECTOR_REQUIRED,
                "VirtualService default/reviews-2port-missing",
            ),
            (
                EXPORT_TO,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService istio-system/cross-namespace-details",
            ),
            (
                EXPORT_TO,
                REFERENCED_RESOURCE_NOT_FOUND,
                "VirtualService hello/hello-export-to-bogus",
            ),
        ],
    },
    Case {
        name: "virtualServiceConflictingMeshGatewayHosts",
        files: &["virtualservice_conflictingmeshgatewayhosts.yaml"],
        codes: &[CONFLICTING_MESH_GATEWAY_HOSTS],
        want: &[
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService team3/ratings"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService team4/ratings"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService foo/ratings"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService bar/ratings"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService foo/productpage"),
            (
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService foo/bogus-productpage",
            ),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService team2/ratings"),
        ],
        differs: &[(
            EXPORT_TO_EXTRA,
            CONFLICTING_MESH_GATEWAY_HOSTS,
            "VirtualService team1/ratings",
        )],
    },
    Case {
        name: "virtualServiceConflictingMeshGatewayHostsWithExportTo",
        files: &["virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml"],
        codes: &[CONFLICTING_MESH_GATEWAY_HOSTS],
        want: &[
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService foo/productpage"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService bar/productpage"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService foo/productpage-c"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService bar/productpage-c"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService foo/productpage-d"),
            (CONFLICTING_MESH_GATEWAY_HOSTS, "VirtualService bar/productpage-d"),
        ],
        differs: &[
            (
                WILDCARD_HOSTS,
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService foo/productpage",
            ),
            (
                WILDCARD_HOSTS,
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService bar/productpage",
            ),
            (
                WILDCARD_HOSTS,
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService foo/productpage-c",
            ),
            (
                WILDCARD_HOSTS,
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService bar/productpage-c",
            ),
            (
                WILDCARD_HOSTS,
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService foo/productpage-d",
            ),
            (
                WILDCARD_HOSTS,
                CONFLICTING_MESH_GATEWAY_HOSTS,
                "VirtualService bar/productpage-d",
            ),
        ],
    },
    Case {
        name: "dupmatches",
        files: &[
            "virtualservice_dupmatches.yaml",
            "virtualservice_overlappingmatches.yaml",
        ],
        codes: &[UNREACHABLE_RULE, INEFFECTIVE_MATCH],
        want: &[
            (UNREACHABLE_RULE, "VirtualService default/duplicate-match"),
            (UNREACHABLE_RULE, "VirtualService foo/sample-foo-cluster01"),
            (INEFFECTIVE_MATCH, "VirtualService default/almost-duplicate-match"),
            (INEFFECTIVE_MATCH, "VirtualService default/duplicate-match"),
            (UNREACHABLE_RULE, "VirtualService default/duplicate-tcp-match"),
            (UNREACHABLE_RULE, "VirtualService default/duplicate-empty-tcp"),
            (
                INEFFECTIVE_MATCH,
                "VirtualService default/almost-duplicate-tcp-match",
            ),
            (INEFFECTIVE_MATCH, "VirtualService default/duplicate-tcp-match"),
            (UNREACHABLE_RULE, "VirtualService none/tls-routing"),
            (INEFFECTIVE_MATCH, "VirtualService none/tls-routing-almostmatch"),
            (INEFFECTIVE_MATCH, "VirtualService none/tls-routing"),
            (INEFFECTIVE_MATCH, "VirtualService default/non-method-get"),
            (
                INEFFECTIVE_MATCH,
                "VirtualService default/overlapping-in-single-match",
            ),
            (
                INEFFECTIVE_MATCH,
                "VirtualService default/overlapping-in-two-matches",
            ),
            (
                INEFFECTIVE_MATCH,
                "VirtualService default/overlapping-mathes-with-different-methods",
            ),
        ],
        differs: &[
            (
                RULE_NOT_MATCH,
                INEFFECTIVE_MATCH,
                "VirtualService default/duplicate-match",
            ),
            (
                RULE_NOT_MATCH,
                INEFFECTIVE_MATCH,
                "VirtualService default/overlapping-in-two-matches",
            ),
            (
                RULE_NOT_MATCH_EXTRA,
                UNREACHABLE_RULE,
                "VirtualService default/overlapping-in-two-matches",
            ),
            (
                EXACT_UNDER_PREFIX,
                INEFFECTIVE_MATCH,
                "VirtualService default/uri-with-prefix-exact",
            ),
            (
                TCP_TLS,
                UNREACHABLE_RULE,
                "VirtualService default/duplicate-tcp-match",
            ),
            (
                TCP_TLS,
                UNREACHABLE_RULE,
                "VirtualService default/duplicate-empty-tcp",
            ),
            (
                TCP_TLS,
                INEFFECTIVE_MATCH,
                "VirtualService default/almost-duplicate-tcp-match",
            ),
            (
                TCP_TLS,
                INEFFECTIVE_MATCH,
                "VirtualService default/duplicate-tcp-match",
            ),
            (TCP_TLS, UNREACHABLE_RULE, "VirtualService none/tls-routing"),
            (
                TCP_TLS,
                INEFFECTIVE_MATCH,
                "VirtualService none/tls-routing-almostmatch",
            ),
            (TCP_TLS, INEFFECTIVE_MATCH, "VirtualService none/tls-routing"),
        ],
    },
    Case {
        name: "authorizationpolicies",
        files: &["authorizationpolicies.yaml"],
        codes: &[NO_MATCHING_WORKLOADS, REFERENCED_RESOURCE_NOT_FOUND],
        want: &[
            (
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy istio-system/meshwide-httpbin-v1",
            ),
            (
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
            ),
            (
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy httpbin/httpbin-nopods",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "AuthorizationPolicy httpbin/httpbin-bogus-ns",
            ),
            (
                REFERENCED_RESOURCE_NOT_FOUND,
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
            ),
            (
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy test-ambient/no-workload",
            ),
        ],
        differs: &[
            (
                PODS,
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy istio-system/meshwide-httpbin-v1",
            ),
            (
                PODS,
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
            ),
            (
                PODS,
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy httpbin/httpbin-nopods",
            ),
            (
                PODS,
                NO_MATCHING_WORKLOADS,
                "AuthorizationPolicy test-ambient/no-workload",
            ),
        ],
    },
    Case {
        name: "virtualServiceJWTClaimRoute",
        files: &["virtualservice_jwtclaimroute.yaml"],
        codes: &[JWT_ROUTING_WITHOUT_AUTHN],
        want: &[(JWT_ROUTING_WITHOUT_AUTHN, "VirtualService default/foo")],
        differs: &[(GATEWAY, JWT_ROUTING_WITHOUT_AUTHN, "VirtualService default/foo")],
    },
];

const KINDS: &[&str] = &[
    "VirtualService",
    "DestinationRule",
    "AuthorizationPolicy",
    "Gateway",
    "Sidecar",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/istio_analyzers")
}

/// (code, "Kind ns/name") of every finding whose message starts with one of `codes`.
fn reported(files: &[&str], codes: &[&str]) -> (BTreeSet<(String, String)>, Vec<String>) {
    let paths: Vec<PathBuf> = files.iter().map(|f| dir().join(f)).collect();
    let loaded = resources::load_paths(&paths);
    let translated = translate::translate(&loaded.documents);
    let findings = validate::analyze(&loaded, &translated);
    let mut out = BTreeSet::new();
    let mut all = Vec::new();
    for f in &findings {
        all.push(format!(
            "{}:{} {} {}",
            f.line.unwrap_or(0),
            f.column.unwrap_or(0),
            f.code,
            f.message
        ));
        let Some((code, rest)) = f.message.split_once(": ") else {
            continue;
        };
        if !codes.contains(&code) {
            continue;
        }
        // Every resource the message names ("A and B both route …" names two, as Istio reports
        // a conflict once per resource).
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.windows(2) {
            if KINDS.contains(&pair[0]) && pair[1].contains('/') {
                let name = pair[1].trim_end_matches([':', ',', ';']);
                out.insert((code.to_string(), format!("{} {name}", pair[0])));
            }
        }
    }
    (out, all)
}

#[test]
fn weft_reports_what_istios_analyzer_table_expects() {
    let mut failures = Vec::new();
    for case in CASES {
        let key = |c: &str, r: &str| (c.to_string(), r.to_string());
        let mut want: BTreeSet<(String, String)> = case.want.iter().map(|(c, r)| key(c, r)).collect();
        for (how, code, resource) in case.differs {
            match how {
                Missing(_) => assert!(
                    want.remove(&key(code, resource)),
                    "{}: {code} {resource} is not in Istio's table",
                    case.name
                ),
                Extra(_) => assert!(
                    want.insert(key(code, resource)),
                    "{}: {code} {resource} is in Istio's table",
                    case.name
                ),
            }
        }
        let (got, all) = reported(case.files, case.codes);
        let known: Vec<String> = case
            .differs
            .iter()
            .map(|(how, code, resource)| match how {
                Missing(why) => format!("{code} {resource}: missing: {why}"),
                Extra(why) => format!("{code} {resource}: extra: {why}"),
            })
            .collect();
        if got != want {
            failures.push(format!(
                "{}:\n  not reported (and not listed as a known difference): {:?}\n  reported (and not expected): {:?}\n  known differences:\n    {}\n  every finding:\n    {}",
                case.name,
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>(),
                known.join("\n    "),
                all.join("\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "Weft's findings moved against Istio's table (a gap closed: take it off `differs`; a regression: fix it)\n{}",
        failures.join("\n\n")
    );
}
