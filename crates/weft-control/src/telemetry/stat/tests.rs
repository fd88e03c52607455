use super::*;
use crate::telemetry::parse;

/// A request series line as the sidecars write it (only the labels these tests read).
fn req(reporter: &str, src: &str, dst: &str, code: u16, mtls: bool, n: f64) -> String {
    let policy = if mtls { "mutual_tls" } else { "none" };
    let principal = |w: &str| {
        if mtls {
            format!("spiffe://cluster.local/ns/default/sa/{w}")
        } else {
            "unknown".into()
        }
    };
    format!(
        "istio_requests_total{{reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"default\",source_principal=\"{}\",destination_workload=\"{dst}\",destination_workload_namespace=\"default\",destination_principal=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"default\",response_code=\"{code}\",grpc_response_status=\"-\",connection_security_policy=\"{policy}\"}} {n}\n",
        principal(src),
        principal(dst),
        dst.split('-').next().unwrap_or(dst),
    )
}

fn bucket(dst: &str, le: &str, n: f64) -> String {
    format!(
        "istio_request_duration_milliseconds_bucket{{le=\"{le}\",reporter=\"destination\",source_workload=\"productpage-v1\",source_workload_namespace=\"default\",destination_workload=\"{dst}\",destination_workload_namespace=\"default\"}} {n}\n"
    )
}

fn window(seconds: f64, proxies: &[(&str, String, String)]) -> Window {
    let mut w = Window::new(seconds);
    for (name, before, after) in proxies {
        w.add_proxy(
            name,
            &parse(before).expect("before"),
            &parse(after).expect("after"),
        );
    }
    w
}

#[test]
fn quantiles_interpolate_inside_the_bucket() {
    let h = [
        (5.0, 3.0),
        (10.0, 18.0),
        (25.0, 22.0),
        (50.0, 25.0),
        (f64::INFINITY, 25.0),
    ];
    let p50 = quantile(0.5, &h).expect("p50");
    assert!((p50 - (5.0 + 5.0 * 9.5 / 15.0)).abs() < 1e-9, "{p50}");
    assert_eq!(quantile(1.0, &h), Some(50.0));
    // Everything past the last finite bound: that bound.
    assert_eq!(quantile(0.99, &[(10.0, 0.0), (f64::INFINITY, 4.0)]), Some(10.0));
    assert_eq!(quantile(0.5, &[(10.0, 0.0), (f64::INFINITY, 0.0)]), None);
    assert_eq!(quantile(0.5, &[]), None);
}

#[test]
fn workloads_served_over_the_window() {
    let before = req("destination", "productpage-v1", "reviews-v1", 200, true, 10.0)
        + &bucket("reviews-v1", "10.0", 5.0)
        + &bucket("reviews-v1", "+Inf", 10.0);
    let after = req("destination", "productpage-v1", "reviews-v1", 200, true, 19.0)
        + &req("destination", "productpage-v1", "reviews-v1", 503, true, 1.0)
        + &req("destination", "unknown", "reviews-v1", 200, false, 10.0)
        + &bucket("reviews-v1", "10.0", 15.0)
        + &bucket("reviews-v1", "+Inf", 30.0)
        // What the client saw is not counted again.
        + &req("source", "productpage-v1", "reviews-v1", 200, true, 500.0);
    let w = window(5.0, &[("reviews-v1-0", before, after)]);
    let rows = stat(&w, Group::Workload, &Query::default());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!((r.name.as_str(), r.namespace.as_str()), ("reviews-v1", "default"));
    assert_eq!(r.requests, 20.0, "9 + 1 + 10 new");
    assert_eq!(r.rps, 4.0);
    assert_eq!(r.success_rate, Some(19.0 / 20.0));
    assert_eq!(r.mtls_share, Some(10.0 / 20.0));
    assert_eq!(r.proxies, 1);
    // 20 observations: 10 at or under 10 ms, 10 above.
    assert_eq!(r.latency_ms_p50, Some(10.0));
    assert_eq!(
        r.latency_ms_p99,
        Some(10.0),
        "the +Inf bucket reads as the last finite bound"
    );

    let from = stat(
        &w,
        Group::Workload,
        &Query {
            from: Some("productpage-v1".into()),
            ..Query::default()
        },
    );
    assert_eq!(from[0].requests, 10.0);
    assert_eq!(from[0].mtls_share, Some(1.0));
    let to = stat(
        &w,
        Group::Workload,
        &Query {
            to: Some("reviews".into()),
            ..Query::default()
        },
    );
    assert_eq!(
        (to[0].name.as_str(), to[0].requests),
        ("productpage-v1", 500.0),
        "the sender's view"
    );
    let svc = stat(&w, Group::Service, &Query::default());
    assert_eq!((svc[0].name.as_str(), svc[0].requests), ("reviews", 20.0));
    assert!(stat(
        &w,
        Group::Workload,
        &Query {
            name: Some("ratings-v1".into()),
            ..Query::default()
        }
    )
    .is_empty());
}

#[test]
fn a_restarted_sidecar_counts_from_zero() {
    let before = req("destination", "a", "b-v1", 200, false, 100.0);
    let after = req("destination", "a", "b-v1", 200, false, 7.0);
    let w = window(1.0, &[("b-v1-0", before, after)]);
    assert_eq!(stat(&w, Group::Workload, &Query::default())[0].requests, 7.0);
}

#[test]
fn edges_carry_verified_identities() {
    let after = req("destination", "productpage-v1", "reviews-v1", 200, true, 4.0)
        + &req("destination", "unknown", "productpage-v1", 200, false, 9.0)
        + &req("source", "productpage-v1", "reviews-v1", 200, true, 4.0);
    let w = window(2.0, &[("p", String::new(), after)]);
    let e = edges(&w, None);
    assert_eq!(e.len(), 2, "{e:?}");
    let secured = e.iter().find(|e| e.destination == "reviews-v1").expect("edge");
    assert_eq!(secured.source, "productpage-v1");
    assert_eq!(
        secured.source_identity.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/productpage-v1")
    );
    assert_eq!(secured.mtls_share, 1.0);
    assert_eq!((secured.requests, secured.rps), (4.0, 2.0));
    let plain = e
        .iter()
        .find(|e| e.destination == "productpage-v1")
        .expect("edge");
    assert_eq!((plain.mtls_share, plain.source_identity.clone()), (0.0, None));
}

#[test]
fn named_routes_count_requests_and_failures() {
    let route = |route: &str, code: u16, n: f64| {
        format!(
            "weft_route_requests_total{{destination_service=\"books.default.svc.cluster.local\",route=\"{route}\",response_code=\"{code}\"}} {n}\n"
        )
    };
    let before = route("GET /books/{id}", 200, 10.0);
    let after = route("GET /books/{id}", 200, 16.0)
        + &route("GET /books/{id}", 500, 2.0)
        + &route("POST /books", 201, 4.0);
    let w = window(2.0, &[("web-0", before, after)]);
    let rows = stat(&w, Group::Route, &Query::default());
    assert_eq!(rows.len(), 2, "{rows:?}");
    let get = rows.iter().find(|r| r.name == "GET /books/{id}").expect("route");
    assert_eq!(
        (get.namespace.as_str(), get.requests, get.rps),
        ("default", 8.0, 4.0)
    );
    assert_eq!(get.service.as_deref(), Some("books.default.svc.cluster.local"));
    assert_eq!(get.success_rate, Some(6.0 / 8.0));
    assert_eq!(
        (get.latency_ms_p50, get.mtls_share),
        (None, None),
        "routes carry counts only"
    );
    let to_other = stat(
        &w,
        Group::Route,
        &Query {
            to: Some("reviews".into()),
            ..Query::default()
        },
    );
    assert!(to_other.is_empty());
    let to_books = stat(
        &w,
        Group::Route,
        &Query {
            to: Some("books".into()),
            ..Query::default()
        },
    );
    assert_eq!(to_books.len(), 2);
}
