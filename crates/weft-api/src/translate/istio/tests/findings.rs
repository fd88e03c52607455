//! Findings: unknown fields, fields read but not acted on, bad values, each at its line.

use super::*;

#[test]
fn unknown_field_skips_the_document_not_the_file() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      wieght: 100
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
");
    assert_eq!(found(&t), [(codes::UNKNOWN_FIELD, Some(9))]);
    assert!(t.findings[0].message.contains("wieght"), "{}", t.findings[0]);
    assert_eq!(t.mesh.routes.len(), 1);
    assert_eq!(t.mesh.routes[0].host, format!("ratings.{NS}"));
}

#[test]
fn tcp_and_tls_routes_are_not_implemented_at_their_line() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route:
    - destination: {host: db-v2}
  tls:
  - match: [{sniHosts: [db]}]
    route: [{destination: {host: db}}]
");
    assert_eq!(
        found(&t),
        [
            (codes::NOT_IMPLEMENTED, Some(6)),
            (codes::NOT_IMPLEMENTED, Some(10))
        ]
    );
    assert!(t.findings[0].message.contains("spec.tcp"), "{}", t.findings[0]);
    assert!(t.mesh.routes.is_empty(), "no HTTP rules, no routes");
}

#[test]
fn connection_pool_limits_are_read_and_per_subset_ones_reported() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1, connectTimeout: 250ms}
      http:
        http1MaxPendingRequests: 2
        http2MaxRequests: 3
        maxRequestsPerConnection: 4
        maxRetries: 5
        idleTimeout: 30s
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {http2MaxRequests: 9}}
      outlierDetection: {consecutive5xxErrors: 2}
");
    let at: Vec<_> = t.findings.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(
        at,
        [
            (codes::NOT_IMPLEMENTED, Some(14)),
            (codes::NOT_IMPLEMENTED, Some(20)),
            (codes::NOT_IMPLEMENTED, Some(19)),
        ],
        "{:#?}",
        t.findings
    );
    let cp = t.mesh.destinations[0]
        .connection_pool
        .clone()
        .expect("connectionPool");
    assert_eq!(
        cp,
        crate::proxy_config::ConnectionPool {
            max_connections: Some(1),
            connect_timeout_ms: Some(250),
            max_pending_requests: Some(2),
            max_requests: Some(3),
            max_requests_per_connection: Some(4),
            max_retries: Some(5),
        }
    );
    assert!(
        t.mesh.outlier_detections.is_empty(),
        "a subset's own is not applied"
    );
}

#[test]
fn upstream_fields_not_acted_on_are_reported_with_their_lines() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  gateways: [mesh, istio-system/public]
  exportTo: ['.']
  http:
  - corsPolicy: {allowOrigins: [{exact: 'https://a.example'}]}
    rewrite: {uriRegexRewrite: {match: '^/a(.*)', rewrite: '/b\\1'}}
    route:
    - destination: {host: web}
      headers: {request: {set: {x: y}}}
  - delegate: {name: other}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 100, tcpKeepalive: {time: 7200s}}}
    outlierDetection: {consecutive5xxErrors: 7}
    tls: {mode: ISTIO_MUTUAL}
    loadBalancer:
      simple: LEAST_REQUEST
      warmupDurationSecs: 30s
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer:
        consistentHash: {httpHeaderName: x-user}
        localityLbSetting: {enabled: true}
");
    let lines: Vec<_> = t
        .findings
        .iter()
        .map(|f| {
            assert_eq!(f.code, codes::NOT_IMPLEMENTED, "{f}");
            f.line.expect("located")
        })
        .collect();
    assert_eq!(
        lines,
        [7, 6, 9, 13, 10, 14, 22, 24, 27, 33, 34],
        "{:#?}",
        t.findings
    );
    assert!(
        t.findings[5].message.contains("spec.http[1].delegate"),
        "{}",
        t.findings[5]
    );
    // Still applied to the mesh: `mesh` is among the gateways; the delegating rule is left out.
    assert_eq!(t.mesh.routes[0].rules.len(), 1);
    assert_eq!(
        t.mesh.destinations[0].load_balancer,
        Some(LoadBalancer::LeastRequest)
    );
    // The connection limit is acted on; the keepalive is reported (line 22).
    assert!(
        t.findings[6].message.contains("tcpKeepalive"),
        "{}",
        t.findings[6]
    );
    let cp = t.mesh.destinations[0]
        .connection_pool
        .as_ref()
        .expect("connectionPool");
    assert_eq!(cp.max_connections, Some(100));
    // Outlier detection is acted on, Istio's defaults filling in the rest.
    let od = &t.mesh.outlier_detections[0];
    assert_eq!(od.host, "web.default.svc.cluster.local");
    assert_eq!(od.settings.consecutive_5xx_errors, 7);
    assert_eq!(od.settings.base_ejection_time_ms, 30_000);
    assert_eq!(od.settings.max_ejection_percent, 10);
}

#[test]
fn gateway_only_virtual_service_does_not_route_mesh_traffic() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [web]
  gateways: [public-gw]
  http:
  - route: [{destination: {host: web}}]
  - match:
    - gateways: [public-gw]
      uri: {prefix: /x}
    route: [{destination: {host: web}}]
");
    assert_eq!(
        found(&t),
        [
            (codes::NOT_IMPLEMENTED, Some(6)),
            (codes::NOT_IMPLEMENTED, Some(10))
        ]
    );
    assert!(t.mesh.routes.is_empty());
}

#[test]
fn a_rule_without_an_action_is_a_schema_error() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - match: [{uri: {exact: /a, prefix: /b}}]
    route: [{destination: {host: r}}]
  - name: nothing
");
    assert_eq!(found(&t), [(codes::SCHEMA, Some(7)), (codes::SCHEMA, Some(9))]);
    let rules = &t.mesh.routes[0].rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].matches[0].path, None,
        "the two-kind condition is left out"
    );
}

#[test]
fn an_abort_grpc_status_that_is_no_status_name_is_a_schema_error_and_injects_nothing() {
    let t = run("\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - fault:
      abort: {grpcStatus: Unavailable}
    route: [{destination: {host: echo}}]
  - fault:
      abort: {grpcStatus: RESOURCE_EXHAUSTED, percentage: {value: 25}}
    route: [{destination: {host: echo}}]
");
    assert_eq!(found(&t), [(codes::SCHEMA, Some(8))]);
    assert!(
        t.findings[0].message.contains("\"Unavailable\""),
        "{}",
        t.findings[0]
    );
    let rules = &t.mesh.routes[0].rules;
    assert_eq!(rules[0].policies.fault, None, "no abort left to inject");
    let fault = rules[1].policies.fault.clone().expect("a gRPC abort");
    assert_eq!(
        (fault.abort_grpc_status.as_deref(), fault.abort_percent),
        (Some("RESOURCE_EXHAUSTED"), Some(25.0))
    );
    assert_eq!(crate::route::grpc_status_code("RESOURCE_EXHAUSTED"), Some(8));
}
