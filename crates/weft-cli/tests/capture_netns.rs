//! Transparent capture end to end, against a real kernel: `weft init-iptables` redirects an
//! app's connections to its sidecar, which routes them by original destination.
//!
//! Each test builds two network namespaces joined by a veth pair: APP (10.200.X.1, a client
//! sidecar with outbound capture) and SRV (10.200.X.2, a real Python backend and a server
//! sidecar on the mesh port). `curl` and a Python TCP client run in APP as the unmodified app.
//! Needs root; without it each test prints that it skipped, and fails under `CI=true` or
//! `WEFT_REQUIRE_ROOT=1`. Namespaces and processes belong to
//! guards that remove them on drop, also when an assertion fails, and all traffic stays on
//! addresses of the veth pair (plus a VIP that only exists as an APP route).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{metric_sum, Proxy};

/// The mark the client sidecar sets on its sockets; `init-iptables` exempts it from capture.
const MARK: &str = "1337";
/// The server sidecar's mark, when SRV captures too.
const SRV_MARK: &str = "1338";
/// The `reviews` service's virtual IP: routed in APP, owned by nobody.
const VIP: &str = "240.240.0.10";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// An HTTP server on :8080 (answers with the path and the peer it saw) and a TCP echo server
/// on :9000 (prefixes the peer), both bound to argv[1].
const BACKEND: &str = r#"
import socketserver, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
host = sys.argv[1]
class Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"backend saw {self.path} from {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        peer = self.client_address[0].encode()
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(b"echo from " + peer + b": " + data)
ThreadingHTTPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.allow_reuse_address = True
servers = [ThreadingHTTPServer((host, 8080), Http), socketserver.ThreadingTCPServer((host, 9000), Echo)]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Connects to argv[1]:argv[2], sends a line, prints the answer.
const TCP_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"ping\n")
print(s.recv(4096).decode(), end="")
"#;

/// A network namespace owned by one test; deleted on drop (with its interfaces and rules).
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Self {
        let name = format!("weft-{tag}-{}", std::process::id());
        // A namespace left over by a killed earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        check(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS args...`, which must succeed.
    fn ip(&self, args: &[&str]) {
        check(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// `timeout 15 ip netns exec NS program args...`, whatever its exit status.
    fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .args(["15", "ip", "netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("spawn ip netns exec")
    }

    /// `curl` inside the namespace, bounded by `--max-time`.
    fn curl(&self, url: &str) -> std::process::Output {
        self.exec("curl", &["-sS", "--max-time", "5", url])
    }

    /// A one-line TCP exchange with `host:port` from inside the namespace.
    fn tcp_ping(&self, host: &str, port: u16) -> std::process::Output {
        self.exec("python3", &["-c", TCP_CLIENT, host, &port.to_string()])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A child process killed (and reaped) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two namespaces with everything running. Fields drop in order: processes first, then the
/// namespaces they live in.
struct Mesh {
    client: Proxy,
    server: Proxy,
    _backend: Process,
    app: Netns,
    srv: Netns,
    /// 10.200.X.2, the backend's (and server sidecar's) address.
    srv_ip: String,
    /// 10.200.X.1, the app's address.
    app_ip: String,
}

impl Mesh {
    /// Builds the namespaces, starts backend and sidecars and installs outbound capture in
    /// APP (and inbound capture of port 8080 in SRV with `srv_capture`); `None` (after saying
    /// why) when not root.
    fn start(tag: &str, srv_capture: bool) -> Option<Self> {
        if !weft_test_support::privilege::require_root(
            &format!("capture test {tag}"),
            "to create network namespaces and NAT rules",
        ) {
            return None;
        }
        let pid = std::process::id();
        let x = pid % 250;
        let (app_ip, srv_ip) = (format!("10.200.{x}.1"), format!("10.200.{x}.2"));
        let app = Netns::create(&format!("cap{tag}-app"));
        let srv = Netns::create(&format!("cap{tag}-srv"));
        // Both ends are created straight into the namespaces, so nothing touches the host's.
        let (veth_app, veth_srv) = (format!("wa{tag}{pid}"), format!("ws{tag}{pid}"));
        check(Command::new("ip").args([
            "link", "add", &veth_app, "netns", &app.name, "type", "veth", "peer", "name", &veth_srv, "netns",
            &srv.name,
        ]));
        app.ip(&["addr", "add", &format!("{app_ip}/24"), "dev", &veth_app]);
        srv.ip(&["addr", "add", &format!("{srv_ip}/24"), "dev", &veth_srv]);
        app.ip(&["link", "set", &veth_app, "up"]);
        srv.ip(&["link", "set", &veth_srv, "up"]);
        // Services' VIPs need a route for the app's packets to leave at all; the NAT redirect
        // then sends them to the sidecar instead.
        app.ip(&["route", "add", "240.240.0.0/16", "dev", &veth_app]);

        let backend = start_backend(&srv, &srv_ip);
        let capture = if srv_capture {
            "\n  capture: \"0.0.0.0:15006\""
        } else {
            ""
        };
        let server_args: &[&str] = if srv_capture {
            &["--outbound-mark", SRV_MARK]
        } else {
            &[]
        };
        let server = Proxy::start_in_netns(
            &srv.name,
            &format!(
                r#"
workload: {{name: reviews-v1, labels: {{app: reviews, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
inbound:
  mesh: "0.0.0.0:15008"{capture}
  listeners:
    - {{port: 8080, app: "{srv_ip}:8080"}}
    - {{port: 9000, app: "{srv_ip}:9000", protocol: tcp}}
outbound: {{listen: null}}
"#
            ),
            server_args,
        );
        let client = Proxy::start_in_netns(
            &app.name,
            &format!(
                r#"
workload: {{name: productpage-v1, labels: {{app: productpage, version: v1}}}}
admin: {{address: "127.0.0.1:0"}}
inbound: {{mesh: "127.0.0.1:0"}}
outbound: {{listen: "0.0.0.0:15001"}}
services:
  - name: reviews
    vip: {VIP}
    ports: [{{port: 8080}}, {{port: 9000, protocol: tcp}}]
endpoints:
  - service: reviews
    port: 8080
    endpoints: [{{address: "{srv_ip}:8080", meshPort: 15008, workload: reviews-v1, labels: {{app: reviews, version: v1}}}}]
  - service: reviews
    port: 9000
    endpoints: [{{address: "{srv_ip}:9000", meshPort: 15008, workload: reviews-v1, labels: {{app: reviews, version: v1}}}}]
"#
            ),
            &["--outbound-mark", MARK],
        );
        assert_eq!(
            client.bound.outbound.map(|a| a.port()),
            Some(15001),
            "{:?}",
            client.bound
        );
        // Outbound capture in APP; the sidecar's own (marked) connections are let through.
        let out = app.exec(common::weft_bin(), &["init-iptables", "--proxy-mark", MARK]);
        assert!(out.status.success(), "weft init-iptables: {}", show(&out));
        if srv_capture {
            let args = [
                "init-iptables",
                "--proxy-mark",
                SRV_MARK,
                "--inbound-ports",
                "8080",
            ];
            let out = srv.exec(common::weft_bin(), &args);
            assert!(out.status.success(), "weft init-iptables in SRV: {}", show(&out));
        }
        Some(Self {
            client,
            server,
            _backend: backend,
            app,
            srv,
            srv_ip,
            app_ip,
        })
    }

    fn client_metrics(&self) -> String {
        self.client.metrics_in_netns(&self.app.name)
    }

    fn server_metrics(&self) -> String {
        self.server.metrics_in_netns(&self.srv.name)
    }

    /// Both sidecars' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- client sidecar ---\n{}\n--- server sidecar ---\n{}",
            self.client.logs(),
            self.server.logs()
        )
    }
}

/// Starts the Python backend in `srv` and waits (10 s at most) until it listens.
fn start_backend(srv: &Netns, ip: &str) -> Process {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &srv.name, "python3", "-u", "-c", BACKEND, ip])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn backend");
    let stdout = child.stdout.take().expect("stdout");
    let backend = Process(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.trim() == "ready" => backend,
        other => panic!("backend did not start: {other:?}"),
    }
}

fn check(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", show(&out));
}

fn show(out: &std::process::Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `metrics` until the sum of `name` over `labels` is `want` (5 s at most); returns the
/// last exposition seen, for the assertion message.
fn wait_metric(
    metrics: impl Fn() -> String,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> (f64, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics();
        let got = metric_sum(&text, name, labels);
        if got == want || Instant::now() > deadline {
            return (got, text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn captured_http_to_a_vip_crosses_both_sidecars() {
    let Some(mesh) = Mesh::start("h", false) else {
        return;
    };
    // The app dials the VIP, which nobody owns: only the redirect can answer it.
    let out = mesh.app.curl(&format!("http://{VIP}:8080/hello"));
    assert!(out.status.success(), "curl: {}\n{}", show(&out), mesh.logs());
    // The backend was dialled by the server sidecar (from SRV), not by the app.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("backend saw /hello from {}\n", mesh.srv_ip)
    );

    let source = [
        ("reporter", "source"),
        ("destination_service", REVIEWS),
        ("destination_workload", "reviews-v1"),
        ("response_code", "200"),
    ];
    let (got, m) = wait_metric(|| mesh.client_metrics(), "istio_requests_total", &source, 1.0);
    assert_eq!(got, 1.0, "client sidecar:\n{m}");
    let dest = [
        ("reporter", "destination"),
        // Plaintext between proxies proves nothing: the claimed source is not believed.
        ("source_workload", "unknown"),
        ("destination_workload", "reviews-v1"),
        ("response_code", "200"),
    ];
    let (got, m) = wait_metric(|| mesh.server_metrics(), "istio_requests_total", &dest, 1.0);
    assert_eq!(got, 1.0, "server sidecar:\n{m}");
}

#[test]
fn captured_tcp_to_a_vip_is_relayed_through_the_mesh() {
    let Some(mesh) = Mesh::start("t", false) else {
        return;
    };
    let out = mesh.app.tcp_ping(VIP, 9000);
    assert!(
        out.status.success(),
        "tcp client: {}\n{}",
        show(&out),
        mesh.logs()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("echo from {}: ping\n", mesh.srv_ip)
    );

    let source = [
        ("reporter", "source"),
        ("destination_service", REVIEWS),
        ("request_protocol", "tcp"),
    ];
    let (got, m) = wait_metric(
        || mesh.client_metrics(),
        "istio_tcp_connections_opened_total",
        &source,
        1.0,
    );
    assert_eq!(got, 1.0, "client sidecar:\n{m}");
    // Plaintext between proxies proves nothing: the claimed source is not believed.
    let dest = [("reporter", "destination"), ("source_workload", "unknown")];
    let (got, m) = wait_metric(
        || mesh.server_metrics(),
        "istio_tcp_connections_opened_total",
        &dest,
        1.0,
    );
    assert_eq!(got, 1.0, "server sidecar:\n{m}");
    // Both sides count the connection closed, and the bytes each way: Istio's names are from
    // the proxy's view (received from the app, sent back to it).
    let (got, m) = wait_metric(
        || mesh.client_metrics(),
        "istio_tcp_connections_closed_total",
        &source,
        1.0,
    );
    assert_eq!(got, 1.0, "client sidecar:\n{m}");
    assert_eq!(
        metric_sum(&m, "istio_tcp_received_bytes_total", &source),
        "ping\n".len() as f64,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "istio_tcp_sent_bytes_total", &source),
        out.stdout.len() as f64,
        "{m}"
    );
    let (got, m) = wait_metric(
        || mesh.server_metrics(),
        "istio_tcp_connections_closed_total",
        &dest,
        1.0,
    );
    assert_eq!(got, 1.0, "server sidecar:\n{m}");
}

#[test]
fn captured_connections_to_other_addresses_pass_through() {
    let Some(mesh) = Mesh::start("p", false) else {
        return;
    };
    // Opaque TCP straight to the backend's address (no VIP): captured, then sent on unchanged.
    let out = mesh.app.tcp_ping(&mesh.srv_ip, 9000);
    assert!(
        out.status.success(),
        "tcp client: {}\n{}",
        show(&out),
        mesh.logs()
    );
    // The echo server saw APP's address: the connection went direct, not via the mesh.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("echo from {}: ping\n", mesh.app_ip)
    );
    let pt = [("reporter", "source"), ("response_flags", "PT")];
    let (got, m) = wait_metric(
        || mesh.client_metrics(),
        "istio_tcp_connections_opened_total",
        &pt,
        1.0,
    );
    assert_eq!(got, 1.0, "client sidecar:\n{m}");

    // HTTP to a non-mesh address: the sidecar still proxies (and meters) the request.
    let out = mesh.app.curl(&format!("http://{}:8080/direct", mesh.srv_ip));
    assert!(out.status.success(), "curl: {}\n{}", show(&out), mesh.logs());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("backend saw /direct from {}\n", mesh.app_ip)
    );
    let source = [("reporter", "source"), ("response_code", "200")];
    let (got, m) = wait_metric(|| mesh.client_metrics(), "istio_requests_total", &source, 1.0);
    assert_eq!(got, 1.0, "client sidecar:\n{m}");
    assert_eq!(
        metric_sum(&m, "istio_requests_total", &[("destination_service", REVIEWS)]),
        0.0,
        "{m}"
    );
    // Nothing of it reached the server sidecar.
    let m = mesh.server_metrics();
    assert_eq!(metric_sum(&m, "istio_requests_total", &[]), 0.0, "{m}");
    assert_eq!(
        metric_sum(&m, "istio_tcp_connections_opened_total", &[]),
        0.0,
        "{m}"
    );
}

#[test]
fn inbound_capture_sends_outside_traffic_through_the_server_sidecar() {
    let Some(mesh) = Mesh::start("i", true) else {
        return;
    };
    // Not a mesh service: APP's sidecar passes it through, then SRV's PREROUTING redirect hands
    // it to the server sidecar's capture port, which finds the app port by original destination.
    let out = mesh.app.curl(&format!("http://{}:8080/inbound", mesh.srv_ip));
    assert!(out.status.success(), "curl: {}\n{}", show(&out), mesh.logs());
    // Dialled by the server sidecar, not by APP's.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("backend saw /inbound from {}\n", mesh.srv_ip)
    );
    let dest = [("reporter", "destination"), ("response_code", "200")];
    let (got, m) = wait_metric(|| mesh.server_metrics(), "istio_requests_total", &dest, 1.0);
    assert_eq!(got, 1.0, "server sidecar:\n{m}");
    let source = [("reporter", "source"), ("response_code", "200")];
    let (got, m) = wait_metric(|| mesh.client_metrics(), "istio_requests_total", &source, 1.0);
    assert_eq!(got, 1.0, "client sidecar:\n{m}");

    // Mesh traffic arrives on 15008, which is not captured, and still works beside it.
    let out = mesh.app.curl(&format!("http://{VIP}:8080/mesh"));
    assert!(out.status.success(), "curl: {}\n{}", show(&out), mesh.logs());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("backend saw /mesh from {}\n", mesh.srv_ip)
    );
    // Both requests counted; over plaintext neither source is believed.
    let from_both = [("reporter", "destination"), ("source_workload", "unknown")];
    let (got, m) = wait_metric(|| mesh.server_metrics(), "istio_requests_total", &from_both, 2.0);
    assert_eq!(got, 2.0, "server sidecar:\n{m}");
}
