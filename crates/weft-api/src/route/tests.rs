//! Table-driven cases for `resolve`, written from Istio's and the Gateway API's documented
//! matching semantics.

use std::collections::BTreeMap;

use super::*;

fn origin(kind: &str, name: &str) -> Origin {
    Origin {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
        file: None,
        line: None,
    }
}

fn backend(subset: &str, weight: u32) -> Backend {
    Backend {
        service: "reviews.default.svc.cluster.local".into(),
        subset: Some(subset.into()),
        port: None,
        weight,
        filters: None,
    }
}

fn rule(index: usize, matches: Vec<RequestMatch>, backends: Vec<Backend>) -> Rule {
    Rule {
        origin: origin("VirtualService", "reviews"),
        index,
        name: None,
        matches,
        action: Action::Forward(backends),
        policies: RoutePolicies::default(),
    }
}

fn header(name: &str, value: Option<StringMatch>, invert: bool) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value,
        invert,
    }
}

struct Req {
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: BTreeMap<String, String>,
}

fn req(method: &'static str, path: &'static str) -> Req {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    Req {
        method,
        path,
        query,
        headers: BTreeMap::new(),
    }
}

impl Req {
    fn h(mut self, k: &str, v: &str) -> Self {
        self.headers.insert(k.into(), v.into());
        self
    }
    fn resolve<'t>(&self, table: &'t CompiledTable) -> Decision<'t> {
        let head = RequestHead {
            method: self.method,
            path: self.path,
            query: self.query,
            authority: "reviews",
            port: 9080,
            headers: &self.headers,
        };
        resolve(
            table,
            &head,
            &Source {
                namespace: "default",
                labels: None,
            },
            true,
        )
    }
}

fn compile(rules: Vec<Rule>) -> CompiledTable {
    CompiledTable::compile(
        &RouteTable { rules, profile: None },
        "reviews.default.svc.cluster.local",
    )
    .expect("compiles")
}

fn subset_of<'a>(d: &'a Decision<'_>) -> Option<&'a str> {
    d.backends.first().and_then(|b| b.subset.as_deref())
}

#[test]
fn no_rules_routes_to_the_service_itself() {
    let table = compile(vec![]);
    let d = req("GET", "/").resolve(&table);
    assert_eq!(d.kind, DecisionKind::Route);
    assert_eq!(d.matched, None);
    assert_eq!(
        d.backends[..],
        [Backend {
            service: "reviews.default.svc.cluster.local".into(),
            subset: None,
            port: None,
            weight: 1,
            filters: None,
        }]
    );
}

#[test]
fn istio_first_match_wins_and_skips_are_explained() {
    // The Bookinfo "jason" rule: end-user: jason goes to v2, everyone else to v1.
    let t = compile(vec![
        rule(
            0,
            vec![RequestMatch {
                headers: vec![header(
                    "end-user",
                    Some(StringMatch::Exact("jason".into())),
                    false,
                )],
                ..Default::default()
            }],
            vec![backend("v2", 100)],
        ),
        rule(1, vec![], vec![backend("v1", 100)]),
    ]);
    let d = req("GET", "/reviews/1").h("end-user", "jason").resolve(&t);
    assert_eq!(subset_of(&d), Some("v2"));
    assert_eq!(d.matched.as_ref().map(|m| m.rule), Some(0));
    let d = req("GET", "/reviews/1").h("end-user", "Jason").resolve(&t);
    assert_eq!(subset_of(&d), Some("v1"), "header values are case-sensitive");
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].reason, "header end-user: want exact jason");
}

#[test]
fn path_kinds() {
    let m = |p: PathMatch| RequestMatch {
        path: Some(p),
        ..Default::default()
    };
    let cases: Vec<(PathMatch, &str, bool)> = vec![
        (
            PathMatch::Exact {
                value: "/a".into(),
                ignore_case: false,
            },
            "/a",
            true,
        ),
        (
            PathMatch::Exact {
                value: "/a".into(),
                ignore_case: false,
            },
            "/a/",
            false,
        ),
        (
            PathMatch::Exact {
                value: "/a".into(),
                ignore_case: false,
            },
            "/A",
            false,
        ),
        (
            PathMatch::Exact {
                value: "/a".into(),
                ignore_case: true,
            },
            "/A",
            true,
        ),
        (
            PathMatch::Prefix {
                value: "/v2".into(),
                ignore_case: false,
            },
            "/v2example",
            true,
        ),
        (
            PathMatch::Prefix {
                value: "/API".into(),
                ignore_case: true,
            },
            "/api/x",
            true,
        ),
        (
            PathMatch::SegmentPrefix { value: "/v2".into() },
            "/v2example",
            false,
        ),
        (PathMatch::SegmentPrefix { value: "/v2".into() }, "/v2", true),
        (PathMatch::SegmentPrefix { value: "/v2".into() }, "/v2/", true),
        (PathMatch::SegmentPrefix { value: "/v2/".into() }, "/v2/x", true),
        (PathMatch::SegmentPrefix { value: "/".into() }, "/anything", true),
        (
            PathMatch::Regex {
                value: "/books/[0-9]+".into(),
                ignore_case: false,
            },
            "/books/12",
            true,
        ),
        (
            PathMatch::Regex {
                value: "/books/[0-9]+".into(),
                ignore_case: false,
            },
            "/books/12/x",
            false,
        ),
        (
            PathMatch::Regex {
                value: "/books/[0-9]+".into(),
                ignore_case: false,
            },
            "/x/books/12",
            false,
        ),
    ];
    for (p, path, want) in cases {
        let t = compile(vec![rule(0, vec![m(p.clone())], vec![backend("v1", 1)])]);
        let got = req("GET", path).resolve(&t).kind == DecisionKind::Route;
        assert_eq!(got, want, "{p:?} vs {path}");
    }
}

#[test]
fn headers_present_absent_prefix_regex_and_case_insensitive_names() {
    let one = |h: HeaderMatch| {
        compile(vec![rule(
            0,
            vec![RequestMatch {
                headers: vec![h],
                ..Default::default()
            }],
            vec![backend("v1", 1)],
        )])
    };
    let hit = |t: &CompiledTable, r: Req| r.resolve(t).kind == DecisionKind::Route;
    let t = one(header("x-canary", None, false));
    assert!(hit(&t, req("GET", "/").h("x-canary", "")));
    assert!(!hit(&t, req("GET", "/")));
    let t = one(header("x-canary", None, true));
    assert!(!hit(&t, req("GET", "/").h("x-canary", "1")));
    assert!(hit(&t, req("GET", "/")));
    let t = one(header(
        "User-Agent",
        Some(StringMatch::Prefix("curl/".into())),
        false,
    ));
    assert!(hit(&t, req("GET", "/").h("user-agent", "curl/8.0")));
    let t = one(header("x-v", Some(StringMatch::Regex("v[12]".into())), false));
    assert!(hit(&t, req("GET", "/").h("x-v", "v2")));
    assert!(
        !hit(&t, req("GET", "/").h("x-v", "v22")),
        "regex matches the whole value"
    );
}

#[test]
fn query_method_and_not_found() {
    let t = compile(vec![rule(
        0,
        vec![RequestMatch {
            method: Some(StringMatch::Exact("POST".into())),
            query: vec![QueryMatch {
                name: "debug".into(),
                value: Some(StringMatch::Exact("1".into())),
            }],
            ..Default::default()
        }],
        vec![backend("v3", 1)],
    )]);
    assert_eq!(
        req("POST", "/x?a=b&debug=1").resolve(&t).kind,
        DecisionKind::Route
    );
    let d = req("GET", "/x?debug=1").resolve(&t);
    assert_eq!(d.kind, DecisionKind::NotFound);
    assert_eq!(d.skipped[0].reason, "method: want exact POST");
    let d = req("POST", "/x?debug=2").resolve(&t);
    assert_eq!(d.skipped[0].reason, "query debug: want exact 1");
}

#[test]
fn any_match_of_a_rule_selects_it() {
    let t = compile(vec![rule(
        0,
        vec![
            RequestMatch {
                path: Some(PathMatch::Exact {
                    value: "/a".into(),
                    ignore_case: false,
                }),
                ..Default::default()
            },
            RequestMatch {
                path: Some(PathMatch::Exact {
                    value: "/b".into(),
                    ignore_case: false,
                }),
                ..Default::default()
            },
        ],
        vec![backend("v1", 1)],
    )]);
    assert_eq!(req("GET", "/b").resolve(&t).kind, DecisionKind::Route);
    assert_eq!(req("GET", "/c").resolve(&t).kind, DecisionKind::NotFound);
}

#[test]
fn source_labels_and_namespace() {
    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), "productpage".to_string());
    let t = compile(vec![rule(
        0,
        vec![RequestMatch {
            source_labels: labels.clone(),
            source_namespace: Some("default".into()),
            ..Default::default()
        }],
        vec![backend("v1", 1)],
    )]);
    let headers = BTreeMap::new();
    let head = RequestHead {
        method: "GET",
        path: "/",
        query: None,
        authority: "reviews",
        port: 9080,
        headers: &headers,
    };
    let yes = resolve(
        &t,
        &head,
        &Source {
            namespace: "default",
            labels: Some(&labels),
        },
        false,
    );
    assert_eq!(yes.kind, DecisionKind::Route);
    let no = resolve(
        &t,
        &head,
        &Source {
            namespace: "other",
            labels: Some(&labels),
        },
        false,
    );
    assert_eq!(no.kind, DecisionKind::NotFound);
    assert!(no.skipped.is_empty(), "the proxy's path collects no explanations");
}

#[test]
fn a_bad_regex_is_a_compile_error_naming_the_rule() {
    let bad = rule(
        3,
        vec![RequestMatch {
            path: Some(PathMatch::Regex {
                value: "/(a".into(),
                ignore_case: false,
            }),
            ..Default::default()
        }],
        vec![backend("v1", 1)],
    );
    let err = CompiledTable::compile(
        &RouteTable {
            rules: vec![bad],
            profile: None,
        },
        "x",
    )
    .expect_err("bad regex");
    assert_eq!(err.rule, 3);
    assert!(
        err.to_string().contains("VirtualService default/reviews rule 3"),
        "{err}"
    );
}
