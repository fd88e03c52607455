//! Table-driven cases from the Gateway API conformance semantics (HTTPRouteMatching,
//! HTTPRouteQueryParamMatching, HTTPRouteMethodMatching, HTTPRouteHeaderMatching,
//! HTTPRoutePathMatchOrder, HTTPRouteWeight, HTTPRouteRequestMirror, HTTPRouteRedirect*,
//! HTTPRouteRewrite*) and SMI TrafficSplit: YAML text -> translate -> route table ->
//! compile -> resolve, asserting which backend wins.

use std::collections::BTreeMap;

use super::*;
use crate::model::Mesh;
use crate::resources::{parse_file, Loaded};
use crate::route::{self, CompiledTable, Decision, DecisionKind, Origin, RequestHead, Source};
use crate::translate::{translate, Translated};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn load(yaml: &str) -> Translated {
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", yaml, &mut loaded);
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    translate(&loaded.documents)
}

/// A translation without findings.
fn clean(yaml: &str) -> Mesh {
    let t = load(yaml);
    assert!(t.findings.is_empty(), "{:#?}", t.findings);
    t.mesh
}

/// An HTTPRoute named `name` attached to the Service `reviews` with the given rules.
fn route(name: &str, extra_meta: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n{extra_meta}spec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: reviews, port: 9080}}\n  rules:\n{rules}---\n"
    )
}

struct Req<'a> {
    method: &'a str,
    target: &'a str,
    headers: BTreeMap<String, String>,
    from: &'a str,
}

fn get(target: &str) -> Req<'_> {
    Req {
        method: "GET",
        target,
        headers: BTreeMap::new(),
        from: "default",
    }
}

impl<'a> Req<'a> {
    fn method(mut self, m: &'a str) -> Self {
        self.method = m;
        self
    }
    fn h(mut self, k: &str, v: &str) -> Self {
        self.headers.insert(k.to_ascii_lowercase(), v.into());
        self
    }
    fn from(mut self, ns: &'a str) -> Self {
        self.from = ns;
        self
    }
    fn resolve(&self, mesh: &Mesh, fqdn: &str, port: u16) -> Decision<'static> {
        let table = CompiledTable::compile(&mesh.route_table(fqdn, port), fqdn).expect("compiles");
        let (path, query) = match self.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.target, None),
        };
        let head = RequestHead {
            method: self.method,
            path,
            query,
            authority: fqdn,
            port,
            headers: &self.headers,
        };
        let source = Source {
            namespace: self.from,
            labels: None,
        };
        route::resolve(&table, &head, &source, true).into_owned()
    }
}

/// Where a request ends: the short name of the first backend with weight, or what the proxy
/// answers itself.
fn outcome(d: &Decision<'_>) -> String {
    match d.kind {
        DecisionKind::Route => d
            .backends
            .iter()
            .find(|b| b.weight > 0)
            .or(d.backends.first())
            .map(|b| b.service.split('.').next().unwrap_or_default().to_string())
            .unwrap_or_default(),
        DecisionKind::Redirect => "redirect".into(),
        DecisionKind::DirectResponse => {
            format!("direct {}", d.direct_response.as_ref().map_or(0, |r| r.status))
        }
        DecisionKind::NotFound => "404".into(),
    }
}

fn check(mesh: &Mesh, cases: &[(Req<'_>, &str)]) {
    for (req, want) in cases {
        let d = req.resolve(mesh, REVIEWS, 9080);
        assert_eq!(
            outcome(&d),
            *want,
            "{} {} {:?} from {}: {:#?}",
            req.method,
            req.target,
            req.headers,
            req.from,
            d
        );
    }
}

fn backend_to(svc: &str) -> String {
    format!("    backendRefs: [{{name: {svc}, port: 8080}}]\n")
}

#[test]
fn http_route_matching_path_prefix_is_segment_wise() {
    // Conformance HTTPRouteMatching.
    let yaml = route(
        "matching",
        "",
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n{}  - matches:\n    - path: {{type: PathPrefix, value: /v2}}\n    - headers: [{{name: version, value: two}}]\n{}",
            backend_to("v1"),
            backend_to("v2")
        ),
    );
    let mesh = clean(&yaml);
    check(
        &mesh,
        &[
            (get("/"), "v1"),
            (get("/example"), "v1"),
            (get("/v2"), "v2"),
            (get("/v2/"), "v2"),
            (get("/v2/example"), "v2"),
            (get("/v2example"), "v1"),
            (get("/").h("version", "two"), "v2"),
            (get("/").h("Version", "three"), "v1"),
        ],
    );
}

#[test]
fn query_param_matching() {
    // Conformance HTTPRouteQueryParamMatching: more query matches win; names are
    // case-sensitive.
    let yaml = route(
        "query",
        "",
        &format!(
            "  - matches: [{{queryParams: [{{name: animal, value: whale}}]}}]\n{}  - matches: [{{queryParams: [{{name: animal, value: dolphin}}]}}]\n{}  - matches:\n    - queryParams: [{{name: animal, value: dolphin}}, {{name: color, value: blue}}]\n    - queryParams: [{{name: ANIMAL, value: Whale}}]\n{}  - matches: [{{queryParams: [{{type: RegularExpression, name: n, value: \"[0-9]+\"}}]}}]\n{}",
            backend_to("v1"),
            backend_to("v2"),
            backend_to("v3"),
            backend_to("v4"),
        ),
    );
    let mesh = clean(&yaml);
    check(
        &mesh,
        &[
            (get("/?animal=whale"), "v1"),
            (get("/?animal=dolphin"), "v2"),
            (get("/?animal=dolphin&color=blue"), "v3"),
            (get("/?color=blue&animal=dolphin"), "v3"),
            (get("/?ANIMAL=Whale"), "v3"),
            (get("/?animal=dolphin&color=yellow"), "v2"),
            (get("/?color=blue"), "404"),
            (get("/?ANIMAL=whale"), "404"),
            (get("/?n=42"), "v4"),
            (get("/?n=4x"), "404"),
        ],
    );
}

#[test]
fn method_matching_and_method_beats_headers() {
    // Conformance HTTPRouteMethodMatching; the spec ranks a method match above header matches.
    let yaml = route(
        "method",
        "",
        &format!(
            "  - matches: [{{method: POST}}]\n{}  - matches: [{{method: GET}}]\n{}  - matches: [{{headers: [{{name: x, value: \"1\"}}, {{name: y, value: \"2\"}}]}}]\n{}",
            backend_to("v1"),
            backend_to("v2"),
            backend_to("v3"),
        ),
    );
    let mesh = clean(&yaml);
    check(
        &mesh,
        &[
            (get("/").method("POST"), "v1"),
            (get("/"), "v2"),
            (get("/").method("HEAD"), "404"),
            (get("/").h("x", "1").h("y", "2"), "v2"),
            (get("/").method("PUT").h("x", "1").h("y", "2"), "v3"),
        ],
    );
}

#[test]
fn header_matching_exact_regex_and_most_headers_win() {
    // Conformance HTTPRouteHeaderMatching: names case-insensitive, values case-sensitive.
    let yaml = route(
        "headers",
        "",
        &format!(
            "  - matches: [{{headers: [{{name: Version, value: one}}]}}]\n{}  - matches: [{{headers: [{{name: version, value: two}}]}}]\n{}  - matches: [{{headers: [{{name: version, value: two}}, {{name: color, value: orange}}]}}]\n{}  - matches: [{{headers: [{{type: RegularExpression, name: color, value: \"bl.*\"}}]}}]\n{}",
            backend_to("v1"),
            backend_to("v2"),
            backend_to("v3"),
            backend_to("v4"),
        ),
    );
    let mesh = clean(&yaml);
    check(
        &mesh,
        &[
            (get("/").h("version", "one"), "v1"),
            (get("/").h("VERSION", "one"), "v1"),
            (get("/").h("version", "ONE"), "404"),
            (get("/").h("version", "two"), "v2"),
            (get("/").h("version", "two").h("color", "orange"), "v3"),
            (get("/").h("color", "orange").h("version", "two"), "v3"),
            (get("/").h("color", "blue"), "v4"),
            (get("/").h("color", "xblue"), "404"),
            (get("/"), "404"),
        ],
    );
}

#[test]
fn path_match_order_exact_then_longest_prefix_then_regex() {
    // Conformance HTTPRoutePathMatchOrder, across two routes and out of document order.
    let yaml = route(
        "short",
        "",
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /match}}}}]\n{}  - matches: [{{path: {{type: RegularExpression, value: \"/match/[0-9]+\"}}}}]\n{}",
            backend_to("prefix-short"),
            backend_to("regex"),
        ),
    ) + &route(
        "long",
        "",
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /match/prefix}}}}]\n{}  - matches: [{{path: {{type: Exact, value: /match/exact}}}}]\n{}  - matches: [{{path: {{type: Exact, value: /match/prefix}}}}]\n{}  - matches: [{{path: {{type: RegularExpression, value: \"/other/[0-9]+\"}}}}]\n{}",
            backend_to("prefix-long"),
            backend_to("exact"),
            backend_to("exact-prefix"),
            backend_to("regex-other"),
        ),
    );
    let mesh = clean(&yaml);
    check(
        &mesh,
        &[
            (get("/match/exact"), "exact"),
            (get("/match/exact/one"), "prefix-short"),
            (get("/match/prefix"), "exact-prefix"),
            (get("/match/prefix/one"), "prefix-long"),
            (get("/match/prefixed"), "prefix-short"),
            (get("/match"), "prefix-short"),
            // A regex comes after every prefix: /match shadows it here.
            (get("/match/42"), "prefix-short"),
            (get("/other/42"), "regex-other"),
            (get("/other/x"), "404"),
            (get("/matches"), "404"),
        ],
    );
}

#[test]
fn a_regex_rule_comes_before_the_catch_all() {
    // Rules in document order: a catch-all first (no matches = PathPrefix /), then a regex with
    // a method, then an explicit `/` prefix with a header.
    let yaml = route(
        "r",
        "",
        &format!(
            "  - backendRefs: [{{name: all, port: 8080}}]\n  - matches: [{{path: {{type: RegularExpression, value: \"/api/.*\"}}, method: POST}}]\n{}  - matches: [{{path: {{type: PathPrefix, value: /}}, headers: [{{name: x, value: y}}]}}]\n{}",
            backend_to("regex"),
            backend_to("slash-header"),
        ),
    );
    let mesh = clean(&yaml);
    check(
        &mesh,
        &[
            (get("/api/x").method("POST"), "regex"),
            (get("/api/x"), "all"),
            (get("/api/x").method("POST").h("x", "y"), "regex"),
            (get("/other").h("x", "y"), "slash-header"),
            (get("/other"), "all"),
        ],
    );
}

#[test]
fn identical_matches_older_route_then_first_seen_wins() {
    let same = |svc: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /same}}}}]\n{}",
            backend_to(svc)
        )
    };
    // Seen first but newer: the older one wins.
    let yaml = route(
        "a-newer",
        "  creationTimestamp: \"2024-05-01T00:00:00Z\"\n",
        &same("newer"),
    ) + &route(
        "b-older",
        "  creationTimestamp: \"2023-01-01T00:00:00Z\"\n",
        &same("older"),
    ) + &route("c-no-timestamp", "", &same("untimed"));
    let mesh = clean(&yaml);
    check(&mesh, &[(get("/same/x"), "older")]);
    // A route with a timestamp beats one without, whatever the load order.
    let yaml = route("z", "", &same("untimed"))
        + &route(
            "y",
            "  creationTimestamp: \"2024-05-01T00:00:00Z\"\n",
            &same("timed"),
        );
    check(&clean(&yaml), &[(get("/same"), "timed")]);
    // Without timestamps: the first seen.
    let yaml = route("z-first", "", &same("first")) + &route("a-second", "", &same("second"));
    check(&clean(&yaml), &[(get("/same"), "first")]);
    // Equal timestamps: the first seen, not the name.
    let ts = "  creationTimestamp: \"2024-05-01T00:00:00Z\"\n";
    let yaml = route("z-first", ts, &same("first")) + &route("a-second", ts, &same("second"));
    check(&clean(&yaml), &[(get("/same"), "first")]);
}

#[test]
fn sort_ties_fall_back_to_namespace_name_then_rule_index() {
    let rule = |ns: &str, name: &str, index: usize| Rule {
        origin: Origin {
            kind: "HTTPRoute".into(),
            namespace: ns.into(),
            name: name.into(),
            file: None,
            line: None,
        },
        index,
        name: None,
        matches: vec![RequestMatch::default()],
        action: Action::Forward(Vec::new()),
        policies: RoutePolicies::default(),
    };
    let mut ranked: Vec<Ranked> = vec![
        (rule("b", "r", 0), None, 3),
        (rule("a", "z", 1), None, 3),
        (rule("a", "z", 0), None, 3),
        (rule("a", "y", 5), None, 3),
        (rule("z", "z", 0), Some("2020-01-01T00:00:00Z".into()), 9),
    ];
    sort_by_precedence(&mut ranked);
    let order: Vec<(String, String, usize)> = ranked
        .iter()
        .map(|(r, _, _)| (r.origin.namespace.clone(), r.origin.name.clone(), r.index))
        .collect();
    assert_eq!(
        order,
        [
            ("z".into(), "z".into(), 0),
            ("a".into(), "y".into(), 5),
            ("a".into(), "z".into(), 0),
            ("a".into(), "z".into(), 1),
            ("b".into(), "r".into(), 0),
        ]
    );
}

#[test]
fn weights_as_written_and_zero_stays_zero() {
    // Conformance HTTPRouteWeight.
    let yaml = route(
        "weights",
        "",
        "  - backendRefs:\n    - {name: v1, port: 8080, weight: 70}\n    - {name: v2, port: 8080, weight: 30}\n    - {name: v3, port: 8080, weight: 0}\n    - {name: v4, namespace: other}\n",
    );
    let mesh = clean(&yaml);
    let d = get("/anything").resolve(&mesh, REVIEWS, 9080);
    let got: Vec<(&str, Option<u16>, u32)> = d
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.port, b.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("v1.default.svc.cluster.local", Some(8080), 70),
            ("v2.default.svc.cluster.local", Some(8080), 30),
            ("v3.default.svc.cluster.local", Some(8080), 0),
            ("v4.other.svc.cluster.local", None, 1),
        ]
    );
}

#[test]
fn a_rule_without_backends_answers_500() {
    let yaml = route("empty", "", "  - matches: [{path: {type: Exact, value: /x}}]\n");
    check(&clean(&yaml), &[(get("/x"), "direct 500"), (get("/y"), "404")]);
}

#[test]
fn request_mirror_percent_fraction_default() {
    // Conformance HTTPRouteRequestMirror (and the fraction/percent variants).
    let yaml = route(
        "mirror",
        "",
        &format!(
            "  - matches: [{{path: {{type: Exact, value: /all}}}}]\n    filters:\n    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: shadow, port: 8080}}}}\n{0}  - matches: [{{path: {{type: Exact, value: /percent}}}}]\n    filters:\n    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: shadow, namespace: qa}}, percent: 35}}\n{0}  - matches: [{{path: {{type: Exact, value: /fraction}}}}]\n    filters:\n    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: shadow}}, fraction: {{numerator: 1, denominator: 8}}}}\n    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: other}}, fraction: {{numerator: 3}}}}\n{0}",
            backend_to("v1")
        ),
    );
    let mesh = clean(&yaml);
    let mirrors = |path: &str| -> Vec<(String, f64)> {
        let d = get(path).resolve(&mesh, REVIEWS, 9080);
        assert_eq!(outcome(&d), "v1");
        d.policies
            .mirrors
            .iter()
            .map(|m| (m.service.clone(), m.percent))
            .collect()
    };
    assert_eq!(
        mirrors("/all"),
        [("shadow.default.svc.cluster.local".into(), 100.0)]
    );
    assert_eq!(
        mirrors("/percent"),
        [("shadow.qa.svc.cluster.local".into(), 35.0)]
    );
    assert_eq!(
        mirrors("/fraction"),
        [
            ("shadow.default.svc.cluster.local".into(), 12.5),
            ("other.default.svc.cluster.local".into(), 3.0)
        ]
    );
}

#[test]
fn redirects_hostname_scheme_port_status_full_path() {
    // Conformance HTTPRouteRedirectHostAndStatus, -Scheme, -Port, -Path.
    let redirect = |path: &str, body: &str| {
        format!(
            "  - matches: [{{path: {{type: Exact, value: {path}}}}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {body}\n{}",
            backend_to("ignored")
        )
    };
    let rules = [
        redirect("/host", "{hostname: example.org}"),
        redirect("/status", "{hostname: example.org, statusCode: 301}"),
        redirect("/scheme", "{scheme: https}"),
        redirect("/port", "{port: 8083}"),
        redirect(
            "/full",
            "{path: {type: ReplaceFullPath, replaceFullPath: /new/page}}",
        ),
    ]
    .concat();
    let mesh = clean(&route("redirect", "", &rules));
    let cases: [(&str, Redirect); 5] = [
        (
            "/host",
            Redirect {
                status: 302,
                scheme: None,
                authority: Some("example.org".into()),
                port: None,
                path: None,
                prefix: None,
            },
        ),
        (
            "/status",
            Redirect {
                status: 301,
                scheme: None,
                authority: Some("example.org".into()),
                port: None,
                path: None,
                prefix: None,
            },
        ),
        (
            "/scheme",
            Redirect {
                status: 302,
                scheme: Some("https".into()),
                authority: None,
                port: None,
                path: None,
                prefix: None,
            },
        ),
        (
            "/port",
            Redirect {
                status: 302,
                scheme: None,
                authority: None,
                port: Some(8083),
                path: None,
                prefix: None,
            },
        ),
        (
            "/full",
            Redirect {
                status: 302,
                scheme: None,
                authority: None,
                port: None,
                path: Some("/new/page".into()),
                prefix: None,
            },
        ),
    ];
    for (path, want) in cases {
        let d = get(path).resolve(&mesh, REVIEWS, 9080);
        assert_eq!(d.kind, DecisionKind::Redirect, "{path}");
        assert_eq!(d.redirect.as_deref(), Some(&want), "{path}");
        assert!(d.backends.is_empty(), "{path}");
    }
}

#[test]
fn redirect_replace_prefix_match_swaps_the_matched_prefix() {
    // Conformance HTTPRouteRedirectPath: `/original-prefix/lemon` -> `/replacement-prefix/lemon`.
    let rule = |prefix: &str, body: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {body}\n{}",
            backend_to("ignored")
        )
    };
    let rules = [
        rule(
            "/original-prefix",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        rule(
            "/path-and-host",
            "{hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        rule(
            "/strip",
            "{statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}",
        ),
    ]
    .concat();
    let mesh = clean(&route("redirect", "", &rules));
    for (path, want, host, status) in [
        ("/original-prefix/lemon", "/replacement-prefix/lemon", None, 302),
        ("/original-prefix", "/replacement-prefix", None, 302),
        ("/path-and-host", "/replacement-prefix", Some("example.org"), 302),
        ("/strip/a/b", "/a/b", None, 301),
    ] {
        let d = get(path).resolve(&mesh, REVIEWS, 9080);
        assert_eq!(d.kind, DecisionKind::Redirect, "{path}");
        let r = d.redirect.as_deref().expect("redirect");
        assert_eq!(r.path.as_deref(), Some(want), "{path}");
        assert_eq!(r.prefix, None, "{path}");
        assert_eq!(r.authority.as_deref(), host, "{path}");
        assert_eq!(r.status, status, "{path}");
    }
}

#[test]
fn rewrites_hostname_full_path_and_prefix() {
    // Conformance HTTPRouteRewriteHost, HTTPRouteRewritePath.
    let yaml = route(
        "rewrite",
        "",
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /one}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{hostname: one.example.org, path: {{type: ReplaceFullPath, replaceFullPath: /two}}}}\n{0}  - matches: [{{path: {{type: PathPrefix, value: /prefix}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite:\n        path: {{type: ReplacePrefixMatch, replacePrefixMatch: /other}}\n{0}",
            backend_to("v1")
        ),
    );
    let mesh = clean(&yaml);
    let d = get("/one/x").resolve(&mesh, REVIEWS, 9080);
    assert_eq!(
        d.policies.rewrite,
        Some(Rewrite {
            path: Some("/two".into()),
            prefix: None,
            authority: Some("one.example.org".into())
        })
    );
    let rewritten = |path: &str| {
        let d = get(path).resolve(&mesh, REVIEWS, 9080);
        assert_eq!(outcome(&d), "v1", "{path}");
        d.policies.rewrite.clone().and_then(|r| r.path)
    };
    assert_eq!(rewritten("/prefix/x").as_deref(), Some("/other/x"));
    assert_eq!(rewritten("/prefix").as_deref(), Some("/other"));
    assert_eq!(rewritten("/prefix/").as_deref(), Some("/other/"));
}

#[test]
fn replace_prefix_match_after_a_regex_match_is_an_error() {
    let yaml = route(
        "r",
        "",
        &format!(
            "  - matches: [{{path: {{type: RegularExpression, value: \"/api/.*\"}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}\n{}",
            backend_to("v1")
        ),
    );
    let t = load(&yaml);
    assert_eq!(t.findings.len(), 1, "{:#?}", t.findings);
    let f = &t.findings[0];
    assert_eq!((f.code, f.line), (codes::SCHEMA, Some(11)), "{f}");
    assert!(f.message.contains("ReplacePrefixMatch needs PathPrefix"), "{f}");
    let d = get("/api/x").resolve(&t.mesh, REVIEWS, 9080);
    assert_eq!((outcome(&d).as_str(), d.policies.rewrite.clone()), ("v1", None));
}

#[test]
fn replace_prefix_match_follows_the_spec_table() {
    // The table in the Gateway API spec (HTTPPathModifier.ReplacePrefixMatch): matched
    // prefix, request path, replacement -> the path sent.
    let cases = [
        ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
        ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
        ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
        ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo", "/foo/", "/xyz", "/xyz/"),
        ("/foo/", "/foo", "/xyz", "/xyz"),
        ("/foo", "/foo/bar", "", "/bar"),
        ("/foo/", "/foo/bar", "", "/bar"),
        ("/foo", "/foo", "", "/"),
        ("/", "/foo/bar", "/xyz", "/xyz/foo/bar"),
    ];
    for (prefix, path, replacement, want) in cases {
        let yaml = route(
            "r",
            "",
            &format!(
                "  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: \"{replacement}\"}}}}\n{}",
                backend_to("v1")
            ),
        );
        let mesh = clean(&yaml);
        let d = get(path).resolve(&mesh, REVIEWS, 9080);
        let got = d.policies.rewrite.clone().and_then(|r| r.path);
        assert_eq!(got.as_deref(), Some(want), "{prefix} {path} {replacement:?}");
    }
}

#[test]
fn header_modifiers_timeouts_and_retries() {
    let yaml = route(
        "policies",
        "",
        &format!(
            "  - name: api\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set: [{{name: x-set, value: a}}]\n        add: [{{name: x-add, value: b}}]\n        remove: [x-drop]\n    - type: ResponseHeaderModifier\n      responseHeaderModifier: {{set: [{{name: x-resp, value: c}}]}}\n    timeouts: {{request: 10s, backendRequest: 500ms}}\n    retry: {{attempts: 3, codes: [500, 503]}}\n{}",
            backend_to("v1")
        ),
    );
    let mesh = clean(&yaml);
    let d = get("/").resolve(&mesh, REVIEWS, 9080);
    let p = &d.policies;
    assert_eq!(p.request_headers.set.get("x-set").map(String::as_str), Some("a"));
    assert_eq!(p.request_headers.add.get("x-add").map(String::as_str), Some("b"));
    assert_eq!(p.request_headers.remove, ["x-drop"]);
    assert_eq!(
        p.response_headers.set.get("x-resp").map(String::as_str),
        Some("c")
    );
    assert_eq!(p.timeout_ms, Some(10_000));
    assert_eq!(
        p.retries,
        Some(Retries {
            attempts: 3,
            per_try_timeout_ms: Some(500),
            retry_on: vec!["500".into(), "503".into()]
        })
    );
    assert_eq!(
        d.matched.as_ref().map(|m| m.origin.name.as_str()),
        Some("policies")
    );
}

#[test]
fn durations_in_the_gateway_api_format() {
    for (text, want) in [
        ("10s", Some(10_000)),
        ("500ms", Some(500)),
        ("1h", Some(3_600_000)),
        ("1m30s", Some(90_000)),
        ("1h1m1s1ms", Some(3_661_001)),
        ("0s", Some(0)),
        ("1h1m1s1ms1h", None),
        ("10", None),
        ("1.5s", None),
        ("123456s", None),
        ("", None),
        ("s", None),
    ] {
        assert_eq!(duration_ms(text), want, "{text}");
    }
    let yaml = route(
        "bad",
        "",
        &format!("  - timeouts: {{request: 10sec}}\n{}", backend_to("v1")),
    );
    let t = load(&yaml);
    assert_eq!(t.findings.len(), 1, "{:#?}", t.findings);
    assert_eq!(t.findings[0].code, codes::SCHEMA);
    assert_eq!(t.findings[0].line, Some(9));
}

#[test]
fn gateway_parents_unknown_fields_and_consumer_routes() {
    let yaml = "\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: ingress}
spec:
  parentRefs:
  - name: public-gw
  rules: [{backendRefs: [{name: v1}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: typo}
spec:
  parentRefs: [{kind: Service, group: \"\", name: reviews}]
  rules:
  - backendRef: [{name: v1}]
";
    let t = load(yaml);
    assert!(t.mesh.routes.is_empty(), "{:#?}", t.mesh.routes);
    let found: Vec<(&str, Option<usize>)> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(
        found,
        [
            (codes::NOT_IMPLEMENTED, Some(6)),
            (codes::UNKNOWN_FIELD, Some(15))
        ]
    );

    // A route in the caller's namespace attached to a Service elsewhere (GAMMA consumer
    // route) applies to that namespace's callers only, ahead of the producer's routes.
    let yaml = route("producer", "", "  - backendRefs: [{name: v1}]\n")
        + "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: consumer, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, group: \"\", name: reviews, namespace: default}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: canary, namespace: default}]\n";
    let mesh = clean(&yaml);
    check(&mesh, &[(get("/a"), "v1"), (get("/a").from("shop"), "canary")]);
}

#[test]
fn grpc_route_methods_become_paths() {
    let yaml = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc}
spec:
  parentRefs: [{kind: Service, group: \"\", name: reviews, port: 9080}]
  rules:
  - matches: [{method: {service: shop.Reviews, method: Get}}]
    backendRefs: [{name: exact}]
  - matches: [{method: {service: shop.Reviews}}]
    backendRefs: [{name: service}]
  - matches: [{method: {method: Health}}]
    backendRefs: [{name: method}]
  - matches: [{method: {type: RegularExpression, service: \"shop\\\\..*\", method: \"L.*\"}}]
    backendRefs: [{name: regex}]
  - matches: [{headers: [{name: x-canary, value: \"yes\"}]}]
    backendRefs: [{name: canary}]
";
    let mesh = clean(yaml);
    check(
        &mesh,
        &[
            (get("/shop.Reviews/Get").method("POST"), "exact"),
            (get("/shop.Reviews/List").method("POST"), "service"),
            (get("/shop.Other/List").method("POST"), "regex"),
            (get("/grpc.health.v1.Health/Health").method("POST"), "method"),
            (get("/x.Y/Z").method("POST").h("x-canary", "yes"), "canary"),
            (get("/x.Y/Z").method("POST"), "404"),
        ],
    );
}

#[test]
fn gateway_api_beats_istio_for_one_host() {
    let mut mesh = clean(&route(
        "gamma",
        "",
        &format!(
            "  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n{}",
            backend_to("gw")
        ),
    ));
    // The Istio translator is written elsewhere: its result, by hand.
    mesh.routes.push(istio_routes());
    let (winners, losers) = mesh.routes_for(REVIEWS, 9080);
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].dialect, Dialect::GatewayApi);
    assert_eq!(losers.len(), 1);
    assert_eq!(losers[0].dialect, Dialect::Istio);
    check(&mesh, &[(get("/"), "gw"), (get("/reviews/1"), "gw")]);
}

fn istio_routes() -> HostRoutes {
    let origin = Origin {
        kind: "VirtualService".into(),
        namespace: "default".into(),
        name: "reviews".into(),
        file: None,
        line: None,
    };
    HostRoutes {
        dialect: Dialect::Istio,
        host: REVIEWS.into(),
        port: None,
        origin: origin.clone(),
        rules: vec![Rule {
            origin,
            index: 0,
            name: None,
            matches: Vec::new(),
            action: Action::Forward(vec![Backend {
                service: "istio.default.svc.cluster.local".into(),
                subset: Some("v1".into()),
                port: None,
                weight: 100,
                filters: None,
            }]),
            policies: RoutePolicies::default(),
        }],
        creation_timestamp: None,
        seen: 99,
    }
}

const SPLIT: &str = "\
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: reviews-split}
spec:
  service: reviews
  backends:
  - {service: reviews-v1, weight: 900m}
  - {service: reviews-v2.default, weight: 100m}
  - {service: reviews-v3, weight: \"0\"}
";

#[test]
fn smi_weights_in_milli_units() {
    let mesh = clean(SPLIT);
    let d = get("/").resolve(&mesh, REVIEWS, 9080);
    let got: Vec<(&str, u32)> = d
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("reviews-v1.default.svc.cluster.local", 900),
            ("reviews-v2.default.svc.cluster.local", 100),
            ("reviews-v3.default.svc.cluster.local", 0),
        ]
    );
    assert_eq!(
        d.matched.as_ref().map(|m| m.origin.kind.as_str()),
        Some("TrafficSplit")
    );

    // Integer weights (v1alpha2+), and matches reported as not applied.
    let t = load("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s, namespace: shop}\nspec:\n  service: web\n  matches:\n  - {kind: HTTPRouteGroup, name: canary}\n  backends:\n  - {service: web-v1, weight: 50}\n  - {service: web-v2, weight: 1}\n");
    assert_eq!(t.findings.len(), 1, "{:#?}", t.findings);
    assert_eq!(
        (t.findings[0].code, t.findings[0].line),
        (codes::NOT_IMPLEMENTED, Some(7))
    );
    let d = get("/").resolve(&t.mesh, "web.shop.svc.cluster.local", 80);
    let weights: Vec<u32> = d.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [50_000, 1_000]);

    let t = load("apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: s}\nspec:\n  service: web\n  backends:\n  - {service: web-v1, weight: lots}\n");
    assert_eq!(t.findings.len(), 1, "{:#?}", t.findings);
    assert_eq!((t.findings[0].code, t.findings[0].line), (codes::SCHEMA, Some(7)));
}

#[test]
fn istio_beats_a_traffic_split() {
    let mut mesh = clean(SPLIT);
    mesh.routes.push(istio_routes());
    let (winners, losers) = mesh.routes_for(REVIEWS, 9080);
    assert_eq!(
        (winners.len(), winners[0].dialect, losers.len(), losers[0].dialect),
        (1, Dialect::Istio, 1, Dialect::Smi)
    );
    check(&mesh, &[(get("/"), "istio")]);
}

#[test]
fn backend_ref_filters_apply_to_their_backend_only() {
    // Conformance HTTPRouteBackendRequestHeaderModifier and the backendRef forms of
    // ResponseHeaderModifier and URLRewrite.
    let rules = "  - matches: [{path: {type: PathPrefix, value: /prefix}}]\n    backendRefs:\n    - name: reviews\n      port: 8080\n      filters:\n      - type: RequestHeaderModifier\n        requestHeaderModifier:\n          set: [{name: X-Header-Set, value: set-overwrites-values}]\n          add: [{name: X-Header-Add, value: add-appends-values}]\n          remove: [X-Header-Remove]\n      - type: ResponseHeaderModifier\n        responseHeaderModifier: {set: [{name: X-Backend, value: reviews}]}\n      - type: URLRewrite\n        urlRewrite: {hostname: rewritten.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}\n      - type: RequestMirror\n        requestMirror: {backendRef: {name: ratings, port: 8080}}\n    - name: ratings\n      port: 8080\n";
    let t = load(&route("backend-filters", "", rules));
    let mirror_finding = t.findings.iter().find(|f| {
        f.message
            .contains("backendRef filter RequestMirror is not applied")
    });
    assert!(mirror_finding.is_some(), "{:?}", t.findings);
    assert!(
        !t.findings
            .iter()
            .any(|f| f.message.contains("per-backend filters")),
        "{:?}",
        t.findings
    );
    let d = get("/prefix/lemon").resolve(&t.mesh, REVIEWS, 9080);
    let reviews = &d.backends[0];
    let f = reviews.filters.as_deref().expect("filters on reviews");
    assert_eq!(f.request_headers.set["X-Header-Set"], "set-overwrites-values");
    assert_eq!(f.request_headers.add["X-Header-Add"], "add-appends-values");
    assert_eq!(f.request_headers.remove, ["X-Header-Remove"]);
    assert_eq!(f.response_headers.set["X-Backend"], "reviews");
    let rw = f.rewrite.as_ref().expect("rewrite");
    // The prefix resolved against this request's path, as for a rule's rewrite.
    assert_eq!(rw.path.as_deref(), Some("/one/lemon"));
    assert_eq!(rw.prefix, None);
    assert_eq!(rw.authority.as_deref(), Some("rewritten.example"));
    assert!(d.backends[1].filters.is_none(), "ratings has no filters");
    // The rule itself changes nothing.
    assert!(d.policies.request_headers.set.is_empty());
    assert!(d.policies.rewrite.is_none());
}
