//! Cases written from Linkerd's documented semantics (the ServiceProfile reference, the
//! "Configuring Retries/Timeouts" guides and the 2.16 retry/timeout annotations).

use std::collections::BTreeMap;

use super::super::{translate, Translated};
use super::*;
use crate::finding::Finding;
use crate::resources::{parse_file, Loaded};
use crate::route::{self, CompiledTable, Decision, DecisionKind, RequestHead, Source, PROFILE_RETRY_LIMIT};
use crate::validate;

const BOOKS: &str = "books.default.svc.cluster.local";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: books}
spec:
  selector: {app: books}
  ports: [{name: http, port: 7000}]
";

/// The profile of Linkerd's books demo, with nested conditions and response classes.
const PROFILE: &str = r#"
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
spec:
  routes:
  - name: GET /books/{id}
    condition:
      method: GET
      pathRegex: /books/\d+
    isRetryable: true
    timeout: 300ms
  - name: POST /books
    condition:
      all:
      - method: POST
      - pathRegex: /books
    timeout: 1.5s
    responseClasses:
    - condition: {status: {min: 500, max: 504}}
      isFailure: false
  - name: not DELETE /admin
    condition:
      all:
      - pathRegex: /admin/.*
      - not: {method: DELETE}
    isRetryable: true
    responseClasses:
    - condition:
        any:
        - status: {min: 429, max: 429}
        - status: {min: 500, max: 599}
      isFailure: true
  - name: any
    condition:
      any:
      - pathRegex: /a
      - pathRegex: /b
  retryBudget:
    retryRatio: 0.5
    minRetriesPerSecond: 3
    ttl: 1m
"#;

fn run(yaml: &str) -> Translated {
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", yaml, &mut loaded);
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    translate(&loaded.documents)
}

fn analyze(yaml: &str) -> Vec<Finding> {
    let mut loaded = Loaded::default();
    parse_file("mesh.yaml", yaml, &mut loaded);
    let t = translate(&loaded.documents);
    validate::analyze(&loaded, &t)
}

fn decide(t: &Translated, method: &str, path: &str) -> Decision<'static> {
    let table = CompiledTable::compile(&t.mesh.route_table(BOOKS, 7000), BOOKS).expect("compiles");
    let headers = BTreeMap::new();
    let req = RequestHead {
        method,
        path,
        query: None,
        authority: "books",
        port: 7000,
        headers: &headers,
    };
    route::resolve(&table, &req, &Source::default(), false).into_owned()
}

fn codes_at(findings: &[Finding]) -> Vec<(&'static str, Option<usize>)> {
    findings.iter().map(|f| (f.code, f.line)).collect()
}

/// (method, path) -> (route name, timeout, retryable, retry_on).
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<u64>,
    Option<bool>,
    Option<&'static [&'static str]>,
);

#[test]
fn first_matching_route_names_the_request_and_sets_timeout_and_retries() {
    let t = run(&format!("{SERVICE}---{PROFILE}"));
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    let cases: &[Case] = &[
        (
            "GET",
            "/books/12",
            Some("GET /books/{id}"),
            Some(300),
            Some(true),
            Some(&["5xx"]),
        ),
        // pathRegex matches the whole path.
        ("GET", "/books/12/x", None, None, None, None),
        ("GET", "/books/abc", None, None, None, None),
        ("POST", "/books", Some("POST /books"), Some(1500), None, None),
        ("PUT", "/books", None, None, None, None),
        (
            "GET",
            "/admin/x",
            Some("not DELETE /admin"),
            None,
            Some(true),
            Some(&["429", "500-599"]),
        ),
        ("DELETE", "/admin/x", None, None, None, None),
        ("PATCH", "/b", Some("any"), None, None, None),
        ("GET", "/c", None, None, None, None),
    ];
    for (method, path, name, timeout, retryable, retry_on) in cases {
        let d = decide(&t, method, path);
        let p = &d.policies;
        assert_eq!(d.kind, DecisionKind::Route);
        assert_eq!(
            d.backends[0].service, BOOKS,
            "a profile never chooses the destination"
        );
        assert_eq!(p.route_name.as_deref(), *name, "{method} {path}");
        assert_eq!(p.timeout_ms, *timeout, "{method} {path}");
        assert_eq!(p.retryable, *retryable, "{method} {path}");
        let got: Option<Vec<&str>> = p
            .retries
            .as_ref()
            .map(|r| r.retry_on.iter().map(String::as_str).collect());
        assert_eq!(got.as_deref(), *retry_on, "{method} {path}");
        if let Some(r) = &p.retries {
            assert_eq!(r.attempts, PROFILE_RETRY_LIMIT);
            let b = p.retry_budget.as_ref().expect("a budget with retries");
            assert_eq!((b.ratio, b.min_per_second, b.ttl_ms), (0.5, 3, 60_000));
        } else {
            assert_eq!(p.retry_budget, None, "{method} {path}");
        }
    }
}

#[test]
fn response_classes_decide_what_is_a_failure() {
    // Expected values follow linkerd2-proxy (`convert_rsp_match` in
    // linkerd/service-profiles/src/proto.rs, given the condition as the destination controller
    // passes it on, an absent bound as 0): a range needs both bounds, and a condition the
    // proxy drops takes its class with it.
    let classes = |yaml: &str| -> Vec<String> {
        let c: Vec<crate::resources::linkerd::ResponseClass> = serde_norway::from_str(yaml).expect("yaml");
        failure_classes(&c)
    };
    let dropped = |yaml: &str| -> Vec<usize> {
        let c: Vec<crate::resources::linkerd::ResponseClass> = serde_norway::from_str(yaml).expect("yaml");
        dropped_classes(&c)
    };
    assert_eq!(classes("[]"), ["5xx"]);
    assert_eq!(
        classes("[{condition: {status: {min: 500, max: 504}}, isFailure: false}]"),
        ["505-599"]
    );
    // One bound alone: the proxy cannot make a status code of the missing one (0) and drops
    // the class, so the default (5xx) stands.
    let one_bound = "[{condition: {status: {max: 503}}, isFailure: false}]";
    assert_eq!(classes(one_bound), ["5xx"]);
    assert_eq!(dropped(one_bound), [0]);
    let one_bound = "[{condition: {status: {min: 418}}, isFailure: true}]";
    assert_eq!(classes(one_bound), ["5xx"]);
    assert_eq!(dropped(one_bound), [0]);
    // First class that matches decides.
    assert_eq!(
        classes("[{condition: {status: {min: 500, max: 599}}, isFailure: true}, {condition: {status: {min: 502}}, isFailure: false}]"),
        ["5xx"]
    );
    // A dropped class is skipped, not a stop: the next one decides.
    assert_eq!(
        classes("[{condition: {status: {min: 502}}, isFailure: false}, {condition: {status: {min: 400, max: 499}}, isFailure: true}]"),
        ["400-599"]
    );
    assert_eq!(
        classes("[{condition: {not: {status: {min: 200, max: 399}}}, isFailure: true}]"),
        ["100-199", "400-599"]
    );
    // Inside `all`, a one-bound range is dropped and the rest of the `all` stands: here 4xx.
    let in_all = "[{condition: {all: [{status: {min: 400, max: 499}}, {not: {status: {min: 404}}}]}, isFailure: true}]";
    assert_eq!(classes(in_all), ["400-599"]);
    assert_eq!(dropped(in_all), Vec::<usize>::new());
    // With both bounds, the same `all` leaves 404 out.
    assert_eq!(
        classes("[{condition: {all: [{status: {min: 400, max: 499}}, {not: {status: {min: 404, max: 404}}}]}, isFailure: true}]"),
        ["400-403", "405-599"]
    );
    // An `any` left with nothing, or a `not` of a dropped range, is dropped too.
    assert_eq!(
        dropped("[{condition: {any: [{status: {min: 429}}]}, isFailure: true}, {condition: {not: {status: {max: 299}}}, isFailure: true}]"),
        [0, 1]
    );
}

#[test]
fn a_response_class_linkerd_ignores_is_reported_where_it_is() {
    let t = run(&format!(
        "{SERVICE}---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {{name: {BOOKS}}}\nspec:\n  routes:\n  - name: all\n    condition: {{pathRegex: /.*}}\n    responseClasses:\n    - condition: {{status: {{min: 500, max: 599}}}}\n      isFailure: true\n    - condition: {{status: {{min: 429}}}}\n      isFailure: true\n"
    ));
    assert_eq!(t.findings.len(), 1, "{:?}", t.findings);
    let f = &t.findings[0];
    assert_eq!(f.code, codes::SCHEMA);
    assert!(
        f.message.contains("responseClasses[1] is ignored") && f.message.contains("both min and max"),
        "{f:?}"
    );
}

#[test]
fn retry_budgets_outside_linkerds_ranges_are_errors() {
    for (budget, ok) in [
        ("{retryRatio: 0, minRetriesPerSecond: 0, ttl: 1s}", true),
        ("{retryRatio: 1000, minRetriesPerSecond: 5, ttl: 60s}", true),
        ("{retryRatio: 1001, minRetriesPerSecond: 5, ttl: 10s}", false),
        ("{retryRatio: -0.1, minRetriesPerSecond: 5, ttl: 10s}", false),
        ("{retryRatio: 0.2, minRetriesPerSecond: 5, ttl: 500ms}", false),
        ("{retryRatio: 0.2, minRetriesPerSecond: 5, ttl: 2m}", false),
    ] {
        let t = run(&format!(
            "{SERVICE}---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {{name: {BOOKS}}}\nspec:\n  retryBudget: {budget}\n"
        ));
        assert_eq!(t.findings.is_empty(), ok, "{budget}: {:?}", t.findings);
        if !ok {
            assert_eq!(t.findings[0].code, codes::SCHEMA);
            assert_eq!(
                t.mesh.profile(BOOKS).and_then(|p| p.retry_budget),
                Some(DEFAULT_RETRY_BUDGET)
            );
        }
    }
}

#[test]
fn retryable_routes_for_requests_with_a_body_are_retried_without_a_finding() {
    // The proxy keeps up to 64 KiB of a request body to send it again, as Linkerd does.
    let t = run(&format!(
        "{SERVICE}---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {{name: {BOOKS}}}\nspec:\n  routes:\n  - {{name: a, condition: {{all: [{{method: POST}}]}}, isRetryable: true}}\n  - {{name: b, condition: {{not: {{method: POST}}}}, isRetryable: true}}\n  - {{name: c, condition: {{method: PUT}}}}\n"
    ));
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    let d = decide(&t, "POST", "/x");
    assert_eq!(d.policies.retryable, Some(true));
}

#[test]
fn without_retry_budget_linkerds_default_applies() {
    let t = run(&format!(
        "{SERVICE}---\napiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nmetadata: {{name: {BOOKS}}}\nspec:\n  routes:\n  - {{name: all, condition: {{pathRegex: '/.*'}}, isRetryable: true}}\n"
    ));
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    let d = decide(&t, "GET", "/x");
    assert_eq!(d.policies.retry_budget, Some(DEFAULT_RETRY_BUDGET));
    assert_eq!(
        d.policies.timeout_ms, None,
        "no timeout unless the route names one"
    );
}

#[test]
fn bad_values_are_reported_at_their_line_and_the_rest_applies() {
    let yaml = format!(
        "{SERVICE}---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{name: {BOOKS}}}
spec:
  routes:
  - name: bad regex
    condition: {{pathRegex: '/(?=x)'}}
  - name: bad timeout
    condition: {{method: GET}}
    timeout: soon
  - name: empty
    condition: {{}}
  - name: lower case
    condition: {{any: [{{method: get}}]}}
  retryBudget: {{retryRatio: 0.2, minRetriesPerSecond: 10, ttl: forever}}
  opaquePorts: ['7000']
"
    );
    let t = run(&yaml);
    let mut got = codes_at(&t.findings);
    got.sort_by_key(|(_, line)| *line);
    assert_eq!(
        got,
        [
            (codes::BAD_REGEX, Some(14)),
            (codes::SCHEMA, Some(17)),
            (codes::SCHEMA, Some(19)),
            (codes::SCHEMA, Some(21)),
            (codes::SCHEMA, Some(22)),
            (codes::NOT_IMPLEMENTED, Some(23)),
        ],
        "{:#?}",
        t.findings
    );
    let d = decide(&t, "GET", "/x");
    assert_eq!(d.policies.route_name.as_deref(), Some("bad timeout"));
    assert_eq!(d.policies.timeout_ms, None);
    let p = t.mesh.profile(BOOKS).expect("profile");
    assert_eq!(p.routes.len(), 2);
    assert_eq!(p.retry_budget, Some(DEFAULT_RETRY_BUDGET));
    // `weft analyze` exits 1 on these.
    assert!(validate::has_errors(&analyze(&yaml)));
}

#[test]
fn unknown_fields_and_names_that_are_not_a_service_fqdn() {
    let f = analyze(&format!(
        "{SERVICE}---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{name: {BOOKS}}}
spec:
  routes:
  - name: r
    condition: {{method: GET}}
    retries: 3
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{name: books}}
spec: {{}}
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{name: authors.default.svc.cluster.local}}
spec: {{}}
"
    ));
    assert_eq!(
        codes_at(&f),
        [
            (codes::UNKNOWN_FIELD, Some(15)),
            (codes::SCHEMA, Some(19)),
            (codes::MISSING_SERVICE, Some(22)),
        ],
        "{f:#?}"
    );
    assert!(
        f[1].fix.as_deref().is_some_and(|x| x.contains(BOOKS)),
        "{:?}",
        f[1]
    );
}

#[test]
fn dst_overrides_split_and_rank_below_a_traffic_split() {
    let overrides = format!(
        "{SERVICE}---
apiVersion: v1
kind: Service
metadata: {{name: books-v2}}
spec: {{ports: [{{port: 7000}}]}}
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {{name: {BOOKS}}}
spec:
  dstOverrides:
  - {{authority: books.default.svc.cluster.local:7000, weight: 900m}}
  - {{authority: books-v2.default.svc.cluster.local, weight: 100m}}
  - {{authority: nope.default.svc.cluster.local, weight: 0}}
"
    );
    let f = analyze(&overrides);
    // The unknown authority is an error at its own rule's document.
    assert_eq!(codes_at(&f), [(codes::MISSING_SERVICE, Some(17))], "{f:#?}");
    let t = run(&overrides);
    let d = decide(&t, "GET", "/");
    let split: Vec<(&str, Option<u16>, u32)> = d
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.port, b.weight))
        .collect();
    assert_eq!(
        split,
        [
            (BOOKS, Some(7000), 900),
            ("books-v2.default.svc.cluster.local", None, 100),
            ("nope.default.svc.cluster.local", None, 0),
        ]
    );

    let with_split = format!(
        "{overrides}---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: books-split}}
spec:
  service: books
  backends: [{{service: books-v2, weight: 1}}]
"
    );
    let t = run(&with_split);
    assert_eq!(
        decide(&t, "GET", "/").backends[0].service,
        "books-v2.default.svc.cluster.local"
    );
    let conflict: Vec<_> = analyze(&with_split)
        .into_iter()
        .filter(|f| f.code == codes::CONFLICTING_ROUTES)
        .collect();
    assert_eq!(conflict.len(), 1, "{conflict:#?}");
    assert!(
        conflict[0].message.starts_with("ServiceProfile default/books"),
        "{}",
        conflict[0]
    );
}

#[test]
fn an_istio_rule_decides_the_destination_and_its_own_policy_wins() {
    let yaml = format!(
        "{SERVICE}---{PROFILE}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: books}}
spec:
  hosts: [books]
  http:
  - match: [{{uri: {{prefix: /books/1}}}}]
    timeout: 2s
    retries: {{attempts: 1, retryOn: gateway-error}}
    route: [{{destination: {{host: books-v2}}}}]
  - route: [{{destination: {{host: books}}}}]
"
    );
    let t = run(&yaml);
    let d = decide(&t, "GET", "/books/12");
    assert_eq!(d.backends[0].service, "books-v2.default.svc.cluster.local");
    assert_eq!(d.policies.route_name.as_deref(), Some("GET /books/{id}"));
    assert_eq!(d.policies.timeout_ms, Some(2000));
    let r = d.policies.retries.as_ref().expect("retries");
    assert_eq!(
        (r.attempts, r.retry_on.as_slice()),
        (1, ["gateway-error".to_string()].as_slice())
    );
    // The service's budget limits every retry to it, whoever asked for them.
    assert!(d.policies.retry_budget.is_some());
    // The second rule sets nothing: the profile route fills in.
    let d = decide(&t, "GET", "/books/2");
    assert_eq!(d.backends[0].service, BOOKS);
    assert_eq!(d.policies.timeout_ms, Some(300));
    assert_eq!(
        d.policies.retries.as_ref().map(|r| r.attempts),
        Some(PROFILE_RETRY_LIMIT)
    );
}

#[test]
fn service_annotations_set_defaults_and_unknown_ones_are_reported() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata:
  name: books
  annotations:
    retry.linkerd.io/http: 5xx,429
    retry.linkerd.io/grpc: cancelled,unavailable
    retry.linkerd.io/limit: \"2\"
    retry.linkerd.io/timeout: 250ms
    timeout.linkerd.io/request: 3s
    timeout.linkerd.io/idle: 1m
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"7\"
    retry.linkerd.io/budget: \"0.2\"
    config.linkerd.io/proxy-cpu-limit: \"1\"
spec:
  ports: [{port: 7000}]
";
    let t = run(yaml);
    assert_eq!(
        codes_at(&t.findings),
        [
            (codes::UNKNOWN_FIELD, Some(14)),
            (codes::NOT_IMPLEMENTED, Some(11)),
        ],
        "{:#?}",
        t.findings
    );
    let d = decide(&t, "GET", "/anything");
    assert_eq!(d.policies.timeout_ms, Some(3000));
    let r = d.policies.retries.clone().expect("retries");
    assert_eq!(r.attempts, 2);
    assert_eq!(r.per_try_timeout_ms, Some(250));
    assert_eq!(r.retry_on, ["cancelled", "unavailable", "5xx", "429"]);
    assert_eq!(d.policies.route_name, None);
    assert_eq!(d.policies.retry_budget, None, "annotations do not budget retries");
    // Failure accrual: Linkerd's consecutive mode with its defaults but the count given.
    let od = &t.mesh.outlier_detections[0].settings;
    assert_eq!(od.consecutive_5xx_errors, 7);
    assert!(od.probe);
    assert_eq!(
        (od.base_ejection_time_ms, od.max_ejection_time_ms),
        (1_000, 60_000)
    );
}

#[test]
fn failure_accrual_annotations_are_read_and_bad_ones_reported_at_their_line() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata:
  name: books
  annotations:
    balancer.linkerd.io/failure-accrual: consecutive
    balancer.linkerd.io/failure-accrual-consecutive-max-failures: \"3\"
    balancer.linkerd.io/failure-accrual-consecutive-min-penalty: 2s
    balancer.linkerd.io/failure-accrual-consecutive-max-penalty: 30s
    balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio: \"0.1\"
spec:
  ports: [{port: 7000}]
";
    let t = run(yaml);
    assert!(t.findings.is_empty(), "{:#?}", t.findings);
    let od = &t.mesh.outlier_detections[0].settings;
    assert_eq!(od.consecutive_5xx_errors, 3);
    assert_eq!(
        (od.base_ejection_time_ms, od.max_ejection_time_ms),
        (2_000, 30_000)
    );
    assert_eq!(od.jitter_ratio, 0.1);
    assert_eq!(od.max_ejection_percent, 100, "Linkerd ejects any number");

    let bad = yaml.replace("\"3\"", "\"many\"").replace("30s", "1s");
    let t = run(&bad);
    assert_eq!(
        codes_at(&t.findings),
        [(codes::SCHEMA, Some(7)), (codes::SCHEMA, Some(9))],
        "{:#?}",
        t.findings
    );
    assert!(
        t.mesh.outlier_detections.is_empty(),
        "max penalty below the min: not applied"
    );

    let untriggered = yaml.replace("failure-accrual: consecutive", "failure-accrual-x: y");
    let t = run(&untriggered);
    assert!(t.mesh.outlier_detections.is_empty());
}

#[test]
fn a_service_profile_makes_the_services_annotations_ignored() {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: books\n  annotations: {{timeout.linkerd.io/request: 4s}}\nspec: {{ports: [{{port: 7000}}]}}\n---{PROFILE}"
    );
    let t = run(&yaml);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    assert_eq!(decide(&t, "GET", "/books/1").policies.timeout_ms, Some(300));
    assert_eq!(decide(&t, "GET", "/elsewhere").policies.timeout_ms, None);
    let f = analyze(&yaml);
    assert_eq!(codes_at(&f), [(codes::CONFLICTING_ROUTES, Some(1))], "{f:#?}");
    assert!(f[0].message.contains("annotations are ignored"), "{}", f[0]);
}

#[test]
fn bad_annotation_values_are_schema_errors() {
    let yaml = "\
apiVersion: v1
kind: Service
metadata:
  name: books
  annotations:
    retry.linkerd.io/http: 5xx,teapot
    retry.linkerd.io/grpc: lost
    retry.linkerd.io/limit: many
    timeout.linkerd.io/request: soon
spec:
  ports: [{port: 7000}]
";
    let t = run(yaml);
    let mut got = codes_at(&t.findings);
    got.sort();
    assert_eq!(
        got,
        [
            (codes::SCHEMA, Some(6)),
            (codes::SCHEMA, Some(7)),
            (codes::SCHEMA, Some(8)),
            (codes::SCHEMA, Some(9)),
        ]
    );
    assert_eq!(t.mesh.profile(BOOKS), None, "nothing usable was asked for");
}

#[test]
fn annotations_on_a_gateway_api_route_apply_to_its_rules() {
    let yaml = format!(
        "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: books
  annotations:
    timeout.linkerd.io/request: 700ms
    retry.linkerd.io/http: gateway-error
spec:
  parentRefs: [{{group: '', kind: Service, name: books, port: 7000}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /fast}}}}]
    timeouts: {{request: 100ms}}
    backendRefs: [{{name: books, port: 7000}}]
  - backendRefs: [{{name: books, port: 7000}}]
"
    );
    let t = run(&yaml);
    assert!(t.findings.is_empty(), "{:?}", t.findings);
    // gRPC conditions are not valid on an HTTPRoute: reported at their line, ignored.
    let t2 = run(&yaml.replace(
        "    retry.linkerd.io/http: gateway-error\n",
        "    retry.linkerd.io/http: gateway-error\n    retry.linkerd.io/grpc: unavailable\n",
    ));
    assert_eq!(
        codes_at(&t2.findings),
        [(codes::SCHEMA, Some(15))],
        "{:?}",
        t2.findings
    );
    let d = decide(&t2, "GET", "/slow");
    assert_eq!(
        d.policies.retries.clone().map(|r| r.retry_on),
        Some(vec!["gateway-error".to_string()])
    );
    let d = decide(&t, "GET", "/fast");
    assert_eq!(d.policies.timeout_ms, Some(100), "the rule's own timeout wins");
    let d = decide(&t, "GET", "/slow");
    assert_eq!(d.policies.timeout_ms, Some(700));
    assert_eq!(
        d.policies.retries.clone().map(|r| r.retry_on),
        Some(vec!["gateway-error".to_string()])
    );
}
