//! The bypass suite: what an attacker sends, through real `weft proxy` processes, against DENY
//! and ALLOW policies written in Istio's and Linkerd's dialects (compiled by the same
//! translator the control plane runs). Every request is either refused (400 or 403) or reaches
//! the app as exactly the request the policy allowed — each case reads what the app received.
//!
//! Requests are written byte for byte on raw sockets (curl would clean them up first), once
//! straight to the app port (a caller outside the mesh) and once through a client sidecar and
//! the mesh hop.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{curl, metric_sum, Proxy};
use weft_api::authz::policies_for;
use weft_api::resources::{parse_file, Loaded};
use weft_api::translate::translate;
use weft_test_support::HttpEcho;

const API: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: default}
spec: {labels: {app: api}, serviceAccount: api, ports: [{name: http, port: 8080}]}
"#;

const ISTIO_DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
  - to: [{operation: {hosts: ["internal.example"]}}]
  - to: [{operation: {methods: ["DELETE"]}}]
  - when: [{key: "request.headers[x-role]", values: ["evil*"]}]
"#;

const ISTIO_ALLOW: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
"#;

const LINKERD_ALLOW: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: api-http, namespace: default}
spec: {podSelector: {matchLabels: {app: api}}, port: http}
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: api-public, namespace: default}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: api-http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /public}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: public-for-all, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: api-public}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: everyone}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: everyone, namespace: default}
spec: {networks: [{cidr: 0.0.0.0/0}, {cidr: "::/0"}]}
"#;

/// The compiled policies of `api` for these documents, as the control plane would push them.
fn policies(docs: &str) -> serde_json::Value {
    let mut loaded = Loaded::default();
    parse_file("policies.yaml", &format!("{API}\n---\n{docs}"), &mut loaded);
    assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
    let t = translate(&loaded.documents);
    let api = t.mesh.workloads.iter().find(|w| w.name == "api").expect("api");
    let p = policies_for(&t.mesh, "default", "api", &api.labels);
    assert!(!p.is_empty(), "no policy compiled");
    serde_json::to_value(p).expect("policies as JSON")
}

/// The app (an echo server that answers with what it received), its sidecar fronting it on an
/// app port and on the mesh port, and a client sidecar whose `api` service leads there.
struct Mesh {
    app: HttpEcho,
    server: Proxy,
    client: Proxy,
    _rt: tokio::runtime::Runtime,
}

impl Mesh {
    fn start(docs: &str, normalization: &str) -> Mesh {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let app = rt.block_on(HttpEcho::start("api")).expect("echo app");
        let server = serde_json::json!({
            "workload": {"name": "api", "namespace": "default", "serviceAccount": "api",
                         "labels": {"app": "api"}},
            "admin": {"address": "127.0.0.1:0"},
            "limits": {"detectTimeoutMs": 300},
            "http": {"pathNormalization": normalization},
            "inbound": {
                "mesh": "127.0.0.1:0",
                "listeners": [{"port": 8080, "app": app.addr().to_string(), "protocol": "http",
                               "listen": "127.0.0.1:0"}],
                "authorization": policies(docs),
            },
            "outbound": {"listen": null},
        });
        let server = Proxy::start(&server.to_string());
        let client = serde_json::json!({
            "workload": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "admin": {"address": "127.0.0.1:0"},
            "http": {"pathNormalization": normalization},
            "inbound": {"mesh": "127.0.0.1:0"},
            "outbound": {"listen": null,
                         "ports": [{"listen": "127.0.0.1:0", "service": "api", "port": 8080}]},
            "services": [{"name": "api", "ports": [{"port": 8080, "protocol": "http"}]}],
            "endpoints": [{"service": "api", "port": 8080, "endpoints": [
                {"address": app.addr().to_string(), "meshPort": server.bound.mesh.port(),
                 "workload": "api", "labels": {"app": "api"}}]}],
        });
        let client = Proxy::start(&client.to_string());
        Mesh {
            app,
            server,
            client,
            _rt: rt,
        }
    }

    /// Where a request enters: the app port (outside the mesh) and the client sidecar.
    fn entries(&self) -> [(&'static str, SocketAddr); 2] {
        [
            ("app port", self.server.bound.inbound_ports[0]),
            ("through the mesh", self.client.bound.outbound_ports[0]),
        ]
    }
}

/// A response as read off the socket.
struct Reply {
    status: u16,
    text: String,
}

impl Reply {
    /// The target the app saw (`api METHOD TARGET` is the echo's first line), if it was reached.
    fn app_target(&self) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("api "))
            .and_then(|l| l.split_once(' '))
            .map(|(_, target)| target)
    }

    /// A header as the app received it (the echo lists them `name: value`, names lower case).
    fn app_header(&self, name: &str) -> Option<&str> {
        let body = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }
}

/// Writes `raw` and reads the whole answer (every request asks `Connection: close`).
fn send(addr: SocketAddr, raw: &[u8]) -> Reply {
    send_after(addr, Duration::ZERO, raw)
}

/// As [`send`], after holding the connection silent for `pause`.
fn send_after(addr: SocketAddr, pause: Duration, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    std::thread::sleep(pause);
    s.write_all(raw).expect("write");
    let mut buf = Vec::new();
    // A reset after the answer is fine: what was read is the answer.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Reply { status, text }
}

fn get(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: api\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

/// What must become of a request.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// 403 from the policy; the app never sees it.
    Denied,
    /// 400: it has no canonical form.
    Refused,
    /// Served, and the app received exactly this target.
    App(&'static str),
}

fn check(mesh: &Mesh, cases: &[(&str, Vec<u8>, Want)]) {
    for (entry, addr) in mesh.entries() {
        for (name, raw, want) in cases {
            let before = mesh.app.requests();
            let r = send(addr, raw);
            let what = format!("{name} ({entry}): {want:?}, got:\n{}", r.text);
            match want {
                Want::Denied => {
                    assert_eq!(r.status, 403, "{what}");
                    assert!(r.text.ends_with("RBAC: access denied\n"), "{what}");
                }
                Want::Refused => assert_eq!(r.status, 400, "{what}"),
                Want::App(target) => {
                    assert_eq!(r.status, 200, "{what}");
                    assert_eq!(r.app_target(), Some(*target), "{what}");
                }
            }
            if !matches!(want, Want::App(_)) {
                assert_eq!(mesh.app.requests(), before, "the app saw it: {what}");
            }
        }
    }
}

#[test]
fn istio_deny_on_paths_holds_against_every_spelling_of_the_path() {
    use Want::*;
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let cases = [
        ("plain", get("/admin", ""), Denied),
        ("dot segment", get("/./admin", ""), Denied),
        ("dot-dot segment", get("/x/../admin", ""), Denied),
        ("encoded letter", get("/%61dmin", ""), Denied),
        ("encoded dot", get("/%2e/admin", ""), Denied),
        ("encoded dot-dot", get("/x/%2e%2e/admin", ""), Denied),
        ("parameter", get("/admin;jsessionid=1", ""), Denied),
        ("absolute form", get("http://api/admin", ""), Denied),
        ("escaping the root", get("/%2e%2e/admin", ""), Refused),
        ("dot-dot with parameter", get("/..;/admin", ""), Refused),
        ("encoded NUL", get("/admin%00", ""), Refused),
        ("bad percent-encoding", get("/a%zz", ""), Refused),
        // Istio's BASE leaves these alone; the app gets what the policy saw.
        ("backslash", get("/\\admin", ""), App("//admin")),
        ("double slash", get("//admin", ""), App("//admin")),
        ("case", get("/ADMIN", ""), App("/ADMIN")),
        ("encoded slash", get("/%2fadmin", ""), App("/%2Fadmin")),
        ("allowed", get("/ok/./x", ""), App("/ok/x")),
    ];
    check(&mesh, &cases);
}

#[test]
fn merging_and_decoding_slashes_close_what_base_leaves() {
    use Want::*;
    let mesh = Mesh::start(ISTIO_DENY, "MERGE_SLASHES");
    let cases = [
        ("double slash", get("//admin", ""), Denied),
        ("backslash", get("/\\admin", ""), Denied),
        ("encoded slash", get("/%2Fadmin", ""), App("/%2Fadmin")),
        ("allowed", get("//ok//x", ""), App("/ok/x")),
    ];
    check(&mesh, &cases);
    drop(mesh);
    let mesh = Mesh::start(ISTIO_DENY, "DECODE_AND_MERGE_SLASHES");
    let cases = [
        ("encoded slash", get("/%2Fadmin", ""), Denied),
        ("encoded backslash", get("/%5Cadmin", ""), Denied),
    ];
    check(&mesh, &cases);
}

#[test]
fn istio_deny_on_hosts_methods_and_headers_sees_what_the_app_gets() {
    use Want::*;
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let host = |h: &str| format!("GET /ok HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n").into_bytes();
    let cases = [
        ("host", host("internal.example"), Denied),
        ("host case and trailing dot", host("INTERNAL.Example."), Denied),
        ("host with port", host("internal.example.:8080"), Denied),
        (
            "two Host headers",
            b"GET /ok HTTP/1.1\r\nHost: api\r\nHost: internal.example\r\nConnection: close\r\n\r\n".to_vec(),
            Refused,
        ),
        (
            "method",
            b"DELETE /ok HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n".to_vec(),
            Denied,
        ),
        ("header", get("/ok", "X-Role: evil\r\n"), Denied),
        (
            "second header copy",
            get("/ok", "X-Role: fine\r\nx-role: evil-admin\r\n"),
            Denied,
        ),
        (
            "non-UTF-8 header",
            b"GET /ok HTTP/1.1\r\nHost: api\r\nx-role: evil\xff\r\nConnection: close\r\n\r\n".to_vec(),
            Denied,
        ),
        ("harmless header", get("/ok", "X-Role: fine\r\n"), App("/ok")),
    ];
    check(&mesh, &cases);
    // Absolute form: the target's authority is the one checked, and the one the app gets.
    for (entry, addr) in mesh.entries() {
        let r = send(
            addr,
            b"GET http://Allowed.Example./ok HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{entry}: {}", r.text);
        let host = r.app_header("host");
        assert!(
            host.is_some_and(|h| h.starts_with("allowed.example")),
            "{entry}: {}",
            r.text
        );
        let r = send(
            addr,
            b"GET http://internal.example/ok HTTP/1.1\r\nHost: allowed\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 403, "{entry}: {}", r.text);
    }
}

#[test]
fn an_http2_host_that_differs_from_the_authority_is_refused() {
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let addr = mesh.server.bound.inbound_ports[0];
    // curl turns -H host: into :authority; a second, different `host` must be written raw.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let status = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("http://allowed/ok")
            .header("host", "internal.example")
            .body(())
            .expect("request");
        let (resp, _) = h2.send_request(req, true).expect("send");
        resp.await.expect("response").status()
    });
    assert_eq!(status, 400);
    assert_eq!(mesh.app.requests(), 0);
}

#[test]
fn allow_rules_do_not_admit_a_path_that_climbs_out_of_them() {
    use Want::*;
    for (dialect, docs) in [("Istio", ISTIO_ALLOW), ("Linkerd", LINKERD_ALLOW)] {
        let mesh = Mesh::start(docs, "BASE");
        let cases = [
            ("allowed", get("/public/x", ""), App("/public/x")),
            ("encoded but allowed", get("/%70ublic/x", ""), App("/public/x")),
            ("climbing out", get("/public/../admin/secret.txt", ""), Denied),
            ("climbing out, encoded", get("/public/%2e%2e/admin", ""), Denied),
            ("climbing out, parameter", get("/public/..;/admin", ""), Refused),
            ("elsewhere", get("/admin", ""), Denied),
        ];
        eprintln!("{dialect}");
        check(&mesh, &cases);
    }
}

#[test]
fn claims_a_plaintext_caller_makes_never_reach_the_app_or_the_metrics() {
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let spoofed = "x-weft-source: attacker;default;admin;v1\r\n\
x-weft-service: evil.default.svc.cluster.local\r\n\
X-Forwarded-Client-Cert: URI=spiffe://cluster.local/ns/default/sa/admin\r\n\
l5d-client-id: admin.default.serviceaccount.identity.linkerd.cluster.local\r\n";
    for (entry, addr) in mesh.entries() {
        let r = send(addr, &get("/ok", spoofed));
        assert_eq!(r.status, 200, "{entry}: {}", r.text);
        let lower = r.text.to_ascii_lowercase();
        for forged in ["x-weft-", "x-forwarded-client-cert", "l5d-client-id"] {
            assert!(
                !lower.contains(forged),
                "{entry}: {forged} reached the app:\n{}",
                r.text
            );
        }
    }
    // Straight to the mesh port, as a peer would but without mTLS: the service it names is
    // not believed, so it cannot write metric labels.
    let mesh_port = mesh.server.bound.mesh;
    let out = curl(&[
        "-sS",
        "--http2-prior-knowledge",
        "-H",
        "x-weft-target-port: 8080",
        "-H",
        "x-weft-service: evil.default.svc.cluster.local",
        "-H",
        "x-weft-source: attacker;default;admin;v1",
        &format!("http://{mesh_port}/ok"),
    ]);
    assert!(
        out.stdout.starts_with("api GET /ok"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let m = mesh.server.metrics();
    assert!(!m.contains("evil") && !m.contains("attacker"), "{m}");
    assert!(
        metric_sum(&m, "istio_requests_total", &[("reporter", "destination")]) >= 3.0,
        "{m}"
    );
}

#[test]
fn only_websocket_upgrades_pass_and_they_are_authorized_as_http() {
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let h2c =
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    for (entry, addr) in mesh.entries() {
        // A path-scoped DENY applies to a WebSocket request like any other; an allowed path
        // reaches the app with its upgrade (this app answers without switching).
        let r = send(addr, &get("/admin", ws));
        assert_eq!(r.status, 403, "{entry}: {}", r.text);
        let r = send(addr, &get("/ok", ws));
        assert_eq!(r.status, 200, "{entry}: {}", r.text);
        assert_eq!(r.app_header("upgrade"), Some("websocket"), "{entry}: {}", r.text);
        // h2c is not performed: served as the HTTP/1.1 request it also is.
        let r = send(addr, &get("/ok", h2c));
        assert_eq!(r.status, 200, "{entry}: {}", r.text);
        assert_eq!(r.app_header("upgrade"), None, "{entry}: {}", r.text);
        // Other protocols are refused.
        let r = send(addr, &get("/ok", "Connection: upgrade\r\nUpgrade: spdy/3.1\r\n"));
        assert_eq!(r.status, 403, "{entry}: {}", r.text);
    }
}

#[test]
fn a_late_or_odd_first_byte_on_an_http_port_never_opens_a_raw_pipe() {
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let addr = mesh.server.bound.inbound_ports[0];
    // Past the detect timeout (300 ms here) the port is still HTTP: policy and limits apply.
    let r = send_after(addr, Duration::from_millis(800), &get("/admin", ""));
    assert_eq!(r.status, 403, "{}", r.text);
    let r = send_after(addr, Duration::from_millis(800), b"HELLO app, raw bytes\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(mesh.app.requests(), 0);
    assert_eq!(mesh.app.connections(), 0, "a raw connection reached the app");
}

#[test]
fn a_connect_tunnel_to_an_http_port_is_served_as_http_not_a_raw_pipe() {
    // A plaintext caller on the mesh port opens a CONNECT stream to the app's HTTP port and
    // writes raw HTTP inside it: the request must meet the same canonical form, header hygiene
    // and policy as any other, not reach the app as bytes.
    let mesh = Mesh::start(ISTIO_DENY, "BASE");
    let (mesh_port, app) = (mesh.server.bound.mesh, mesh.app.addr());
    let through_tunnel = |raw: &'static [u8]| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(mesh_port).await.expect("connect");
            let (h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
            tokio::spawn(conn);
            let mut h2 = h2.ready().await.expect("ready");
            let req = http::Request::builder()
                .method("CONNECT")
                .uri(app.to_string())
                .body(())
                .expect("request");
            let (resp, mut send) = h2.send_request(req, false).expect("send");
            let resp = resp.await.expect("response");
            assert_eq!(resp.status(), 200);
            send.send_data(bytes::Bytes::from_static(raw), false)
                .expect("data");
            let mut body = resp.into_body();
            let mut text = Vec::new();
            let read = async {
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("chunk");
                    let _ = body.flow_control().release_capacity(chunk.len());
                    text.extend_from_slice(&chunk);
                    if String::from_utf8_lossy(&text).contains("\r\n\r\n") {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let forged = through_tunnel(
        b"GET /ok HTTP/1.1\r\nHost: api\r\nX-Forwarded-Client-Cert: URI=spiffe://cluster.local/ns/default/sa/admin\r\nConnection: close\r\n\r\n",
    );
    assert!(forged.starts_with("HTTP/1.1 200"), "{forged}");
    assert!(
        !forged.to_ascii_lowercase().contains("x-forwarded-client-cert"),
        "{forged}"
    );
    let denied = through_tunnel(b"GET /x/../admin HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n");
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert_eq!(mesh.app.requests(), 1, "only the allowed request reached the app");
}
