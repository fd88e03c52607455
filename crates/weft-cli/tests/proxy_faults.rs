//! Istio fault injection and rewrites obeyed end to end, from the document to the wire: a real
//! `weft control` translates a VirtualService, real sidecars run it, curl and a python grpcio
//! client call through them. (Translation and `weft explain` are tested on their own; this is
//! what a request meets.)

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::control::{sidecar, wait_ready, Control};
use common::{curl, metric_sum, peer_script, run, tempdir, Proxy};
use weft_test_support::HttpEcho;

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec: {selector: {app: echo}, ports: [{name: grpc, port: 7070}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec: {labels: {app: reviews, version: v1}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: echo-v1}
spec: {labels: {app: echo, version: v1}, ports: [{name: grpc, port: 7070}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: productpage-v1}
spec: {labels: {app: productpage, version: v1}}
"#;

/// How long jason's requests are held: long enough that no ordinary answer takes it.
const DELAY: Duration = Duration::from_millis(1500);

const REVIEWS_ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {delay: {fixedDelay: 1500ms, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /abort}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /reviews/, authority: reviews.internal}
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"#;

/// Only the unary `Echo` method is aborted, with a gRPC status (no HTTP status).
const ECHO_ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo}
spec:
  hosts: [echo]
  http:
  - match: [{uri: {exact: /weft.test.Echo/Echo}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
"#;

/// The python gRPC peer server, killed when dropped.
struct GrpcServer {
    child: std::process::Child,
    port: u16,
    _dir: tempdir::Dir,
}

impl GrpcServer {
    fn start() -> Self {
        let dir = tempdir::Dir::new("weft-fault-grpc");
        let port_file = dir.path.join("port");
        let mut child = Command::new("/usr/bin/python3")
            .arg(peer_script("grpc_peer.py"))
            .arg("server")
            .arg(&port_file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 grpc_peer.py server");
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break port;
            }
            if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                panic!("the gRPC peer server wrote no port");
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call of the python gRPC client through `target`: its JSON line.
fn grpc_call(target: &str, case: &str) -> serde_json::Value {
    let script = peer_script("grpc_peer.py");
    let out = run(
        "timeout",
        &[
            "30",
            "/usr/bin/python3",
            &script,
            "client",
            target,
            case,
            "--count",
            "3",
        ],
    );
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr))
}

/// `GET url` with curl: (status line and headers, body, seconds it took).
fn get(url: &str, headers: &[&str]) -> (String, String, Duration) {
    let mut args = vec!["-sS", "-i"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let started = Instant::now();
    let out = curl(&args);
    let took = started.elapsed();
    let (head, body) = out
        .stdout
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response from {url}: {}", out.stderr));
    (head.to_string(), body.to_string(), took)
}

/// Polls until `url` answers with a body naming `want` (the routes reached the client sidecar).
fn until_body(url: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = curl(&["-sS", url]);
        if out.stdout.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {want:?}: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Mesh {
    reviews: HttpEcho,
    client: Proxy,
    echo_server: Proxy,
    _servers: Vec<Proxy>,
    _grpc: GrpcServer,
    _control: Control,
    _dirs: (tempdir::Dir, tempdir::Dir),
}

async fn mesh() -> Mesh {
    let config = tempdir::Dir::new("weft-fault-config");
    let state = tempdir::Dir::new("weft-fault-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    std::fs::write(config.path.join("reviews-vs.yaml"), REVIEWS_ROUTES).expect("write");
    std::fs::write(config.path.join("echo-vs.yaml"), ECHO_ROUTES).expect("write");
    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let reviews = HttpEcho::start("reviews-v1").await.expect("reviews");
    let grpc = GrpcServer::start();
    let reviews_server = sidecar(
        &control,
        "reviews-v1",
        &format!("{{port: 9080, app: \"{}\"}}", reviews.addr()),
        "",
    );
    let echo_server = sidecar(
        &control,
        "echo-v1",
        &format!("{{port: 7070, app: \"127.0.0.1:{}\"}}", grpc.port),
        "",
    );
    let client = sidecar(
        &control,
        "productpage-v1",
        "",
        "{listen: \"127.0.0.1:0\", service: reviews, port: 9080}, {listen: \"127.0.0.1:0\", service: echo, port: 7070}",
    );
    for p in [&reviews_server, &echo_server, &client] {
        wait_ready(p);
    }
    let base = format!("http://{}", client.bound.outbound_ports[0]);
    // The rewrite rule is the third: once it shows, the whole table is there.
    until_body(&format!("{base}/v1/0"), "reviews-v1 GET /reviews/0");
    Mesh {
        reviews,
        client,
        echo_server,
        _servers: vec![reviews_server],
        _grpc: grpc,
        _control: control,
        _dirs: (config, state),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_faults_and_rewrites_are_obeyed_through_the_sidecars() {
    let m = mesh().await;
    let base = format!("http://{}", m.client.bound.outbound_ports[0]);

    // Rewrite: the matched prefix is replaced and the authority set; the query stays.
    let (head, body, _) = get(&format!("{base}/v1/3?x=1"), &[]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("reviews-v1 GET /reviews/3?x=1\n"), "{body}");
    assert!(body.contains("\nhost: reviews.internal\n"), "{body}");

    // Abort with an HTTP status: the client sidecar answers 418 itself, flag FI, and the app
    // never sees the request.
    let before = m.reviews.requests();
    let (head, body, _) = get(&format!("{base}/abort/1"), &[]);
    assert!(head.starts_with("HTTP/1.1 418"), "{head}\n{body}");
    assert!(head.contains("\r\nx-weft-response-flags: FI"), "{head}");
    assert_eq!(m.reviews.requests(), before, "an aborted request reached the app");

    // Delay: jason's request is held, then served; anyone else's is not held.
    let (head, body, took) = get(&format!("{base}/reviews/1"), &["end-user: jason"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.starts_with("reviews-v1 GET /reviews/1\n"), "{body}");
    assert!(
        took >= DELAY,
        "jason's request took {took:?}, not the {DELAY:?} delay"
    );
    let (head, _, took) = get(&format!("{base}/reviews/1"), &["end-user: alice"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(took < DELAY, "alice's request took {took:?}: delayed too");

    // The client sidecar counted the abort with its flag.
    let metrics = m.client.metrics();
    let aborted = [
        ("reporter", "source"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("response_code", "418"),
        ("response_flags", "FI"),
    ];
    assert_eq!(
        metric_sum(&metrics, "istio_requests_total", &aborted),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_abort_answers_grpc_clients_with_its_status() {
    let m = mesh().await;
    let target = m.client.bound.outbound_ports[1].to_string();
    // The aborted method gets the configured status, from the client sidecar itself.
    let echo = grpc_call(&target, "unary");
    assert_eq!(echo["code"], "RESOURCE_EXHAUSTED", "{echo}");
    assert_eq!(echo["details"], "fault injected", "{echo}");
    // Another method of the same service is untouched.
    let count = grpc_call(&target, "count");
    assert_eq!(count["ok"], true, "{count}");
    assert_eq!(count["messages"], serde_json::json!(["0", "1", "2"]), "{count}");

    let metrics = m.client.metrics();
    let aborted = [
        ("reporter", "source"),
        ("destination_service", "echo.default.svc.cluster.local"),
        ("grpc_response_status", "8"),
        ("response_flags", "FI"),
    ];
    assert_eq!(
        metric_sum(&metrics, "istio_requests_total", &aborted),
        1.0,
        "{metrics}"
    );
    // Only the streaming call reached the server's sidecar.
    let server = m.echo_server.metrics();
    let arrived = [("reporter", "destination"), ("destination_workload", "echo-v1")];
    assert_eq!(
        metric_sum(&server, "istio_requests_total", &arrived),
        1.0,
        "{server}"
    );
}
