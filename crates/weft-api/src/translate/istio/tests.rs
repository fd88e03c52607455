//! Cases written from Istio's documented semantics (the Bookinfo samples and the
//! VirtualService / DestinationRule references).

use std::collections::BTreeMap;

use super::super::{translate, Translated};
use super::parse_duration;
use crate::finding::codes;
use crate::proxy_config::LoadBalancer;
use crate::resources::{parse_file, Loaded};
use crate::route::{
    self, Action, Backend, CompiledTable, DecisionKind, HeaderMatch, PathMatch, QueryMatch, RequestHead,
    Source, StringMatch,
};

const NS: &str = "default.svc.cluster.local";

fn run(yaml: &str) -> Translated {
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", yaml, &mut loaded);
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    translate(&loaded.documents)
}

fn clean(yaml: &str) -> Translated {
    let t = run(yaml);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    t
}

fn backends(t: &Translated, route: usize, rule: usize) -> Vec<(String, Option<String>, u32)> {
    match &t.mesh.routes[route].rules[rule].action {
        Action::Forward(b) => b
            .iter()
            .map(|b| (b.service.clone(), b.subset.clone(), b.weight))
            .collect(),
        other => panic!("not a forward: {other:?}"),
    }
}

fn b(service: &str, subset: Option<&str>, weight: u32) -> (String, Option<String>, u32) {
    (service.to_string(), subset.map(String::from), weight)
}

/// (code, line) of every finding.
fn found(t: &Translated) -> Vec<(&'static str, Option<usize>)> {
    t.findings.iter().map(|f| (f.code, f.line)).collect()
}

// === Bookinfo ===

#[test]
fn bookinfo_virtual_service_all_v1() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage}
spec:
  hosts: [productpage]
  http:
  - route:
    - destination: {host: productpage, subset: v1}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
",
    );
    assert_eq!(t.mesh.routes.len(), 2);
    let r = &t.mesh.routes[1];
    assert_eq!(r.host, format!("reviews.{NS}"));
    assert_eq!(
        (r.port, r.seen, r.dialect),
        (None, 1, crate::model::Dialect::Istio)
    );
    assert_eq!(r.origin.line, Some(10));
    assert_eq!(
        r.rules[0].origin.line,
        Some(16),
        "a rule is located at its own line"
    );
    assert!(r.rules[0].matches.is_empty());
    assert_eq!(backends(&t, 1, 0), [b(&format!("reviews.{NS}"), Some("v1"), 100)]);
}

#[test]
fn bookinfo_reviews_v2_v3_weights() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
",
    );
    let host = format!("reviews.{NS}");
    assert_eq!(
        backends(&t, 0, 0),
        [b(&host, Some("v2"), 50), b(&host, Some("v3"), 50)]
    );
}

const JASON: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts:
  - reviews
  http:
  - name: jason
    match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
";

#[test]
fn bookinfo_jason_header_match_routes_first_match() {
    let t = clean(JASON);
    let rules = &t.mesh.routes[0].rules;
    assert_eq!(rules.len(), 2);
    assert_eq!((rules[0].index, rules[0].name.as_deref()), (0, Some("jason")));
    assert_eq!(
        rules[0].matches[0].headers,
        [HeaderMatch {
            name: "end-user".into(),
            value: Some(StringMatch::Exact("jason".into())),
            invert: false
        }]
    );
    assert_eq!((rules[1].index, rules[1].matches.len()), (1, 0));

    // The same table the proxy resolves with.
    let fqdn = format!("reviews.{NS}");
    let table = CompiledTable::compile(&t.mesh.route_table(&fqdn, 9080), &fqdn).expect("compiles");
    for (user, want) in [(Some("jason"), "v2"), (Some("bob"), "v1"), (None, "v1")] {
        let headers: BTreeMap<String, String> = user
            .map(|u| ("end-user".to_string(), u.to_string()))
            .into_iter()
            .collect();
        let req = RequestHead {
            method: "GET",
            path: "/reviews/0",
            query: None,
            authority: "reviews",
            port: 9080,
            headers: &headers,
        };
        let d = route::resolve(&table, &req, &Source::default(), false);
        assert_eq!(d.kind, DecisionKind::Route);
        assert_eq!(d.backends[0].subset.as_deref(), Some(want), "user {user:?}");
    }
}

#[test]
fn bookinfo_ratings_fault_delay_and_abort_for_jason() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    fault:
      delay:
        percentage: {value: 100.0}
        fixedDelay: 7s
    route:
    - destination: {host: ratings, subset: v1}
  - fault:
      abort:
        percentage: {value: 10}
        httpStatus: 500
    route:
    - destination: {host: ratings, subset: v1}
  - fault:
      delay: {fixedDelay: 2s, percent: 50}
      abort: {grpcStatus: UNAVAILABLE}
    route:
    - destination: {host: ratings, subset: v1}
",
    );
    let rules = &t.mesh.routes[0].rules;
    let f0 = rules[0].policies.fault.clone().expect("delay");
    assert_eq!(
        (f0.delay_ms, f0.delay_percent, f0.abort_status),
        (Some(7000), Some(100.0), None)
    );
    let f1 = rules[1].policies.fault.clone().expect("abort");
    assert_eq!(
        (f1.delay_ms, f1.abort_status, f1.abort_percent),
        (None, Some(500), Some(10.0))
    );
    let f2 = rules[2].policies.fault.clone().expect("both");
    assert_eq!(
        (f2.delay_ms, f2.delay_percent),
        (Some(2000), Some(50.0)),
        "legacy percent"
    );
    assert_eq!(
        (f2.abort_grpc_status.as_deref(), f2.abort_percent),
        (Some("UNAVAILABLE"), Some(100.0))
    );
}

#[test]
fn mirroring_httpbin() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {host: httpbin, subset: v1}
      weight: 100
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 100.0}
  - route:
    - destination: {host: httpbin}
    mirror: {host: httpbin, subset: v2}
    mirrors:
    - destination: {host: shadow.test}
      percentage: {value: 5}
",
    );
    let rules = &t.mesh.routes[0].rules;
    let m0: Vec<_> = rules[0]
        .policies
        .mirrors
        .iter()
        .map(|m| (m.subset.as_deref(), m.percent))
        .collect();
    assert_eq!(m0, [(Some("v2"), 100.0)]);
    let m1: Vec<_> = rules[1]
        .policies
        .mirrors
        .iter()
        .map(|m| (m.service.as_str(), m.percent))
        .collect();
    let (httpbin, shadow) = (
        format!("httpbin.{NS}"),
        "shadow.test.svc.cluster.local".to_string(),
    );
    assert_eq!(m1, [(httpbin.as_str(), 100.0), (shadow.as_str(), 5.0)]);
}

#[test]
fn bookinfo_destination_rule_subsets() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
  - name: v3
    labels: {version: v3}
",
    );
    let d = t
        .mesh
        .destination("reviews.bookinfo.svc.cluster.local")
        .expect("policy");
    assert_eq!(d.load_balancer, Some(LoadBalancer::Random));
    let subsets: Vec<_> = d
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str(), s.load_balancer))
        .collect();
    assert_eq!(
        subsets,
        [
            ("v1", "v1", None),
            ("v2", "v2", Some(LoadBalancer::RoundRobin)),
            ("v3", "v3", None)
        ]
    );
}

#[test]
fn load_balancer_names() {
    for (simple, want, finding) in [
        ("ROUND_ROBIN", Some(LoadBalancer::RoundRobin), None),
        ("LEAST_REQUEST", Some(LoadBalancer::LeastRequest), None),
        ("LEAST_CONN", Some(LoadBalancer::LeastRequest), None),
        ("RANDOM", Some(LoadBalancer::Random), None),
        ("PASSTHROUGH", None, Some(codes::NOT_IMPLEMENTED)),
        ("FASTEST", None, Some(codes::SCHEMA)),
    ] {
        let t = run(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n  host: r\n  trafficPolicy:\n    loadBalancer:\n      simple: {simple}\n"
        ));
        assert_eq!(t.mesh.destinations[0].load_balancer, want, "{simple}");
        let codes: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
        assert_eq!(
            codes,
            finding.map(|c| (c, Some(8))).into_iter().collect::<Vec<_>>(),
            "{simple}"
        );
    }
}

// === hosts and weights ===

#[test]
fn short_hosts_resolve_in_the_document_namespace() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mixed, namespace: shop}
spec:
  hosts:
  - reviews
  - ratings.prod
  - details.shop.svc.cluster.local
  - '*.example.com'
  - www.google.com
  http:
  - route:
    - destination: {host: reviews}
    - destination: {host: ratings.prod, port: {number: 9080}}
");
    let hosts: Vec<_> = t.mesh.routes.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "reviews.shop.svc.cluster.local",
            "ratings.prod.svc.cluster.local",
            "details.shop.svc.cluster.local"
        ]
    );
    assert_eq!(
        found(&t),
        [
            (codes::NOT_IMPLEMENTED, Some(9)),
            (codes::NOT_IMPLEMENTED, Some(10))
        ]
    );
    assert!(
        t.findings[0].message.contains("*.example.com"),
        "{}",
        t.findings[0]
    );
    let Action::Forward(bs) = &t.mesh.routes[0].rules[0].action else {
        panic!()
    };
    assert_eq!(
        bs,
        &[
            Backend {
                service: "reviews.shop.svc.cluster.local".into(),
                subset: None,
                port: None,
                weight: 1,
                filters: None,
            },
            Backend {
                service: "ratings.prod.svc.cluster.local".into(),
                subset: None,
                port: Some(9080),
                weight: 1,
                filters: None,
            }
        ]
    );
}

#[test]
fn istio_weights() {
    // (weights as written, weights translated)
    let cases: &[(&[Option<u32>], &[u32])] = &[
        (&[None], &[100]),
        (&[Some(100)], &[100]),
        (&[None, None], &[1, 1]),
        (&[Some(80), None], &[80, 0]),
        (&[Some(75), Some(25)], &[75, 25]),
        (&[Some(1), Some(1), Some(2)], &[1, 1, 2]),
        (&[Some(0), Some(100)], &[0, 100]),
    ];
    for (written, want) in cases {
        let mut yaml = String::from(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n",
        );
        for (i, w) in written.iter().enumerate() {
            yaml.push_str(&format!("    - destination: {{host: r, subset: s{i}}}\n"));
            if let Some(w) = w {
                yaml.push_str(&format!("      weight: {w}\n"));
            }
        }
        let t = clean(&yaml);
        let got: Vec<u32> = backends(&t, 0, 0).iter().map(|b| b.2).collect();
        assert_eq!(&got, want, "{written:?}");
    }
}

// === matches, actions, policies ===

#[test]
fn request_matches() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web]
  http:
  - match:
    - uri: {exact: /login}
      ignoreUriCase: true
      method: {exact: POST}
      authority: {prefix: web}
      port: 8080
      sourceLabels: {app: frontend}
      sourceNamespace: edge
    - uri: {prefix: /api/}
      headers:
        X-Canary: {}
        x-version: {regex: 'v[23]'}
      withoutHeaders:
        x-debug: {}
      queryParams:
        beta: {exact: ''}
        lang: {exact: en}
    - uri: {regex: '/items/[0-9]+'}
      name: items
    - {}
    route:
    - destination: {host: web}
",
    );
    let m = &t.mesh.routes[0].rules[0].matches;
    assert_eq!(m.len(), 4);
    assert_eq!(
        m[0].path,
        Some(PathMatch::Exact {
            value: "/login".into(),
            ignore_case: true
        })
    );
    assert_eq!(m[0].method, Some(StringMatch::Exact("POST".into())));
    assert_eq!(m[0].authority, Some(StringMatch::Prefix("web".into())));
    assert_eq!(m[0].port, Some(8080));
    assert_eq!(m[0].source_labels["app"], "frontend");
    assert_eq!(m[0].source_namespace.as_deref(), Some("edge"));
    assert_eq!(
        m[1].path,
        Some(PathMatch::Prefix {
            value: "/api/".into(),
            ignore_case: false
        })
    );
    let hm = |name: &str, value: Option<StringMatch>, invert| HeaderMatch {
        name: name.into(),
        value,
        invert,
    };
    assert_eq!(
        m[1].headers,
        [
            hm("x-canary", None, false),
            hm("x-version", Some(StringMatch::Regex("v[23]".into())), false),
            hm("x-debug", None, true),
        ]
    );
    assert_eq!(
        m[1].query,
        [
            QueryMatch {
                name: "beta".into(),
                value: None
            },
            QueryMatch {
                name: "lang".into(),
                value: Some(StringMatch::Exact("en".into()))
            },
        ]
    );
    assert_eq!(
        m[2].path,
        Some(PathMatch::Regex {
            value: "/items/[0-9]+".into(),
            ignore_case: false
        })
    );
    assert_eq!(m[3], route::RequestMatch::default());
}

#[test]
fn redirect_direct_response_and_policies() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: web-next.shop}
  - match: [{uri: {prefix: /moved}}]
    redirect: {uri: /x, scheme: https, port: 8443, redirectCode: 308}
  - match: [{uri: {exact: /gone}}]
    directResponse:
      status: 410
      body: {string: gone for good}
  - name: main
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: 'gateway-error, connect-failure,refused-stream'}
    rewrite: {uri: /v2/, authority: web-v2}
    headers:
      request:
        set: {x-env: prod}
        remove: [x-internal]
      response:
        add: {x-served-by: weft}
    route:
    - destination: {host: web}
",
    );
    let rules = &t.mesh.routes[0].rules;
    let Action::Redirect(r0) = &rules[0].action else {
        panic!("{:?}", rules[0].action)
    };
    assert_eq!(
        (
            r0.status,
            r0.path.as_deref(),
            r0.authority.as_deref(),
            r0.scheme.as_deref()
        ),
        (301, Some("/new"), Some("web-next.shop"), None)
    );
    let Action::Redirect(r1) = &rules[1].action else {
        panic!()
    };
    assert_eq!(
        (r1.status, r1.scheme.as_deref(), r1.port),
        (308, Some("https"), Some(8443))
    );
    let Action::DirectResponse(d) = &rules[2].action else {
        panic!()
    };
    assert_eq!((d.status, d.body.as_deref()), (410, Some("gone for good")));
    let p = &rules[3].policies;
    assert_eq!(p.timeout_ms, Some(1500));
    let retries = p.retries.clone().expect("retries");
    assert_eq!((retries.attempts, retries.per_try_timeout_ms), (3, Some(500)));
    assert_eq!(
        retries.retry_on,
        ["gateway-error", "connect-failure", "refused-stream"]
    );
    let rw = p.rewrite.clone().expect("rewrite");
    assert_eq!(
        (rw.path.as_deref(), rw.prefix.as_deref(), rw.authority.as_deref()),
        (None, Some("/v2/"), Some("web-v2"))
    );
    assert_eq!(p.request_headers.set["x-env"], "prod");
    assert_eq!(p.request_headers.remove, ["x-internal"]);
    assert_eq!(p.response_headers.add["x-served-by"], "weft");
}

#[test]
fn durations() {
    for (text, want) in [
        ("2s", Some(2000)),
        ("500ms", Some(500)),
        ("1m", Some(60_000)),
        ("1.5s", Some(1500)),
        ("1h", Some(3_600_000)),
        ("1m30s", Some(90_000)),
        ("0.25ms", Some(1)),
        ("250us", Some(1)),
        ("0s", Some(0)),
        ("", None),
        ("2", None),
        ("s", None),
        ("2 seconds", None),
        ("-1s", None),
        ("1.2.3s", None),
    ] {
        assert_eq!(parse_duration(text), want, "{text:?}");
    }
}

#[test]
fn invalid_duration_is_a_schema_error_at_its_line() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - timeout: soon
    route:
    - destination: {host: r}
");
    assert_eq!(found(&t), [(codes::SCHEMA, Some(7))]);
    assert_eq!(t.mesh.routes[0].rules[0].policies.timeout_ms, None);
}

mod findings;

#[test]
fn rewrite_uri_replaces_the_matched_prefix_as_envoy_does() {
    // Istio: "If the original URI was matched based on prefix, the value provided in this
    // field will replace the corresponding matched prefix"; after exact or regex matches, the
    // whole path.
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /ratings}}]
    rewrite: {uri: /v1/bookRatings}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {exact: /stars}}, {uri: {regex: '/stars/[0-9]+'}}]
    rewrite: {uri: /v1/stars}
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /}
    route: [{destination: {host: ratings}}]
  - rewrite: {uri: /fallback/}
    route: [{destination: {host: ratings}}]
",
    );
    let fqdn = format!("ratings.{NS}");
    let table = CompiledTable::compile(&t.mesh.route_table(&fqdn, 9080), &fqdn).expect("compiles");
    let headers = BTreeMap::new();
    for (path, want) in [
        ("/ratings/0", "/v1/bookRatings/0"),
        ("/ratings", "/v1/bookRatings"),
        ("/ratingsx", "/v1/bookRatingsx"),
        ("/stars", "/v1/stars"),
        ("/stars/5", "/v1/stars"),
        ("/old/page", "/page"),
        ("/other", "/fallback/other"),
    ] {
        let req = RequestHead {
            method: "GET",
            path,
            query: None,
            authority: "ratings",
            port: 9080,
            headers: &headers,
        };
        let d = route::resolve(&table, &req, &Source::default(), false);
        let rw = d.policies.rewrite.clone().expect("rewrite");
        assert_eq!((rw.path.as_deref(), rw.prefix), (Some(want), None), "{path}");
    }
}

#[test]
fn explain_names_why_each_match_block_of_a_rule_missed() {
    let t = clean(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    - queryParams: {debug: {exact: '1'}}
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
",
    );
    let fqdn = format!("reviews.{NS}");
    let table = CompiledTable::compile(&t.mesh.route_table(&fqdn, 9080), &fqdn).expect("compiles");
    let headers = BTreeMap::new();
    let req = RequestHead {
        method: "GET",
        path: "/other",
        query: Some("debug=0"),
        authority: "reviews",
        port: 9080,
        headers: &headers,
    };
    let d = route::resolve(&table, &req, &Source::default(), true);
    let reasons: Vec<&str> = d.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "no match block fits: [0] header end-user: want exact jason; [1] query debug: want exact 1",
            "path: want prefix /reviews",
        ]
    );
}
