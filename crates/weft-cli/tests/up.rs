//! `weft up` as a real child process: starts every workload with its sidecar, serves through
//! them, follows edits, `weft logs`, `weft down` (and a second `weft up` starting again), and
//! leaves no process behind.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::up::{
    assert_tokens_only_in_environment, bookinfo_copy, processes_of, recorded_pids, routing, still_running,
    versions_seen, wait_for_versions, Up,
};
use common::{curl, run, tempdir, weft_bin};

/// Two replicas of a real HTTP server (python's), each answering with its own directory
/// listing, behind a Service.
fn mesh(dir: &std::path::Path) {
    std::fs::write(
        dir.join("mesh.yaml"),
        r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 8000}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: web-v1}
spec:
  labels: {app: web, version: v1}
  ports: [{name: http, port: 8000}]
  command: [python3, -m, http.server, "$(PORT)", --bind, 127.0.0.1]
  replicas: 2
"#,
    )
    .expect("write");
}

/// The `GET /` answered 200 in the section of `weft logs` output for the file named `file`
/// (sections start with `==> PATH <==`).
fn served_in_log(logs: &str, file: &str) -> usize {
    let mut in_file = false;
    let mut served = 0;
    for line in logs.lines() {
        if let Some(path) = line.strip_prefix("==> ").and_then(|l| l.strip_suffix(" <==")) {
            in_file = path.ends_with(&format!("/{file}"));
        } else if in_file && line.contains("\"GET / HTTP/1.1\" 200") {
            served += 1;
        }
    }
    served
}

#[test]
fn up_serves_through_sidecars_then_down_leaves_nothing() {
    let dir = tempdir::Dir::new("weft-up-mesh");
    let run_dir = tempdir::Dir::new("weft-up-run");
    mesh(&dir.path);
    let mut up = Up::start(&dir.path, &run_dir.path);
    // Progress is shown while starting, then the table.
    up.wait_for("waiting for", Duration::from_secs(30));
    let open = up.wait_for("Open the application:", Duration::from_secs(40));
    let url = open.rsplit(' ').next().expect("url").to_string();
    let table: Vec<String> = up
        .output
        .iter()
        .filter(|l| l.starts_with("web-v1-"))
        .cloned()
        .collect();
    assert_eq!(table.len(), 2, "{:?}", up.output);
    assert!(
        table[0].contains("spiffe://cluster.local/ns/default/sa/default"),
        "{table:?}"
    );

    // Each sidecar got its own workload's token in its environment, none in its arguments.
    assert_tokens_only_in_environment(&run_dir.path);

    // Through the sidecar's front door to the app.
    let out = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(out.stdout, "200", "{}", out.stderr);
    // Through a sidecar's per-service port, balanced over both replicas by the mesh.
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.path.join("sidecars/web-v1-0.json")).expect("bootstrap config"),
    )
    .expect("json");
    let web_port = boot["outbound"]["ports"][0]["listen"]
        .as_str()
        .expect("listen")
        .to_string();
    // Sequential requests, so the least-request balancer sees equal loads and picks either
    // replica with even odds: with 20 requests one replica goes unused with odds 2^-19.
    const REQUESTS: usize = 20;
    for _ in 0..REQUESTS {
        let out = curl(&[
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{web_port}/"),
        ]);
        assert_eq!(out.stdout, "200");
    }
    // Each replica's own log (a section of `weft logs`) shows its share; together they show
    // every request (and the one through the front door). Polled: a log line may lag its answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (logs, per_replica) = loop {
        let logs = run(
            weft_bin(),
            &[
                "logs",
                "web-v1",
                "--run-dir",
                run_dir.path.to_str().expect("utf-8"),
            ],
        );
        let per_replica = ["web-v1-0.log", "web-v1-1.log"].map(|f| served_in_log(&logs.stdout, f));
        if per_replica.iter().sum::<usize>() > REQUESTS || Instant::now() > deadline {
            break (logs, per_replica);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        per_replica.iter().sum::<usize>(),
        REQUESTS + 1,
        "every request in a replica's log: {}",
        logs.stdout
    );
    assert!(
        per_replica.iter().all(|&n| n >= 1),
        "both replicas served (per replica: {per_replica:?}): {}",
        logs.stdout
    );
    assert!(logs.stdout.contains("web-v1-1.log"), "{}", logs.stdout);

    // `weft check` finds the run's control plane: its root, and each sidecar's certificate.
    let check = run(
        weft_bin(),
        &[
            "check",
            "--run-dir",
            run_dir.path.to_str().expect("utf-8"),
            "-o",
            "json",
        ],
    );
    assert!(check.status.success(), "{}\n{}", check.stdout, check.stderr);
    let v: serde_json::Value = serde_json::from_str(&check.stdout).expect("json");
    assert_eq!(v["result"], "ok", "{v}");
    let names: Vec<&str> = v["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["kind"] == "workload")
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("web-v1-0")) && names.iter().any(|n| n.contains("web-v1-1")),
        "{v}"
    );

    // A second `weft up` on the same run directory refuses while the first runs.
    let second = run(
        weft_bin(),
        &[
            "up",
            dir.path.to_str().expect("utf-8"),
            "--run-dir",
            run_dir.path.to_str().expect("utf-8"),
        ],
    );
    assert!(!second.status.success());
    assert!(second.stderr.contains("already running"), "{}", second.stderr);

    // `weft down` stops it: the process exits and nothing it started is left.
    let down = run(
        weft_bin(),
        &["down", "--run-dir", run_dir.path.to_str().expect("utf-8")],
    );
    assert!(down.stdout.contains("stopped"), "{}", down.stdout);
    let deadline = Instant::now() + Duration::from_secs(15);
    while up.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "weft up did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    up.wait_for("stopped", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_of(&run_dir.path), Vec::<String>::new());
    assert!(!run_dir.path.join("up.json").exists());

    // And it starts again without complaint, then stops on SIGTERM (as Ctrl-C would).
    let mut again = Up::start(&dir.path, &run_dir.path);
    again.wait_for("Open the application:", Duration::from_secs(40));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(again.child.id().to_string())
        .status();
    again.wait_for("stopped", Duration::from_secs(15));
    let _ = again.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_of(&run_dir.path), Vec::<String>::new());
}

#[test]
fn a_workload_that_fails_to_start_is_named_with_its_log() {
    let dir = tempdir::Dir::new("weft-up-bad");
    let run_dir = tempdir::Dir::new("weft-up-bad-run");
    std::fs::write(
        dir.path.join("mesh.yaml"),
        "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: broken}\nspec:\n  labels: {app: broken}\n  ports: [{port: 8000}]\n  command: [sh, -c, \"echo cannot bind port $(PORT) >&2; exit 3\"]\n",
    )
    .expect("write");
    let out = run(
        weft_bin(),
        &[
            "up",
            dir.path.to_str().expect("utf-8"),
            "--run-dir",
            run_dir.path.to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("broken-0 exited"), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot bind port"),
        "the log's last lines are shown: {}",
        out.stderr
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_of(&run_dir.path), Vec::<String>::new());
}

#[test]
fn bookinfo_through_the_mesh_with_live_routing() {
    let dir = bookinfo_copy();
    let run_dir = tempdir::Dir::new("weft-up-bookinfo-run");
    let mut up = Up::start(&dir.path, &run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();
    assert!(url.ends_with("/productpage"), "{open}");
    let pids = recorded_pids(&run_dir.path);
    assert_eq!(pids.len(), 13, "weft up, six apps and six sidecars");
    let page = curl(&["-sS", &url]).stdout;
    assert!(
        page.contains("reviews-v"),
        "the page shows which reviews answered: {page}"
    );

    // No routing: all three versions serve.
    let seen = versions_seen(&url, 30);
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Copy a routing variant in: only v1 (the README says within about a second; the deadline
    // is generous for a loaded machine, and the latency is not what this test measures).
    let vs = dir.path.join("virtual-services.yaml");
    std::fs::copy(routing("all-v1").join("virtual-services.yaml"), &vs).expect("copy");
    wait_for_versions(&url, &["reviews-v1"], 10, Duration::from_secs(10));

    // jason gets v2, everyone else v1.
    std::fs::copy(routing("jason-v2").join("virtual-services.yaml"), &vs).expect("copy");
    wait_for_versions(
        &format!("{url}?u=jason"),
        &["reviews-v2"],
        5,
        Duration::from_secs(10),
    );
    assert_eq!(versions_seen(&url, 5), ["reviews-v1".to_string()].into());

    // The mesh saw it: productpage's sidecar reported requests to reviews.
    let admin = std::fs::read(run_dir.path.join("sidecars/productpage-v1-0.json")).expect("bootstrap");
    let admin: serde_json::Value = serde_json::from_slice(&admin).expect("json");
    let admin = admin["admin"]["address"].as_str().expect("admin").to_string();
    let metrics = curl(&["-sS", &format!("http://{admin}/metrics")]).stdout;
    let reviews = common::metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("destination_service", "reviews.default.svc.cluster.local"),
            ("response_code", "200"),
        ],
    );
    assert!(reviews >= 50.0, "{metrics}");
    // Between sidecars it is mutual TLS, with the SPIFFE identities the control plane issued.
    let mtls = common::metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("destination_service", "reviews.default.svc.cluster.local"),
            ("connection_security_policy", "mutual_tls"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            ),
        ],
    );
    assert_eq!(mtls, reviews, "every request to reviews rode mTLS: {metrics}");
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.path.join("sidecars/reviews-v2-0.json")).expect("bootstrap"),
    )
    .expect("json");
    let reviews_admin = boot["admin"]["address"].as_str().expect("admin").to_string();
    let server = curl(&["-sS", &format!("http://{reviews_admin}/metrics")]).stdout;
    let inbound = common::metric_sum(
        &server,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
            ),
            ("source_workload", "productpage-v1"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    assert!(inbound >= 1.0, "{server}");

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(up.child.id().to_string())
        .status();
    up.wait_for("stopped", Duration::from_secs(20));
    let _ = up.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(still_running(&pids), Vec::<u32>::new(), "processes left behind");
    assert_eq!(processes_of(&run_dir.path), Vec::<String>::new());
}
