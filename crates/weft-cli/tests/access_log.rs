//! Access logs in a real `weft up`: on by default (Istio's demo profile), shown by
//! `weft logs --access`, and changed live by a `Telemetry` document written into the watched
//! directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::up::Up;
use common::{curl, run, tempdir, weft_bin};

fn mesh(dir: &Path) {
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
"#,
    )
    .expect("write");
}

/// Only errors, as JSON on stdout, mesh-wide: Istio's docs' example filter.
const ERRORS_ONLY: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers:
    - name: envoy-json
    filter:
      expression: response.code >= 400
"#;

fn access_lines(run_dir: &Path) -> Vec<String> {
    let out = run(
        weft_bin(),
        &[
            "logs",
            "web-v1",
            "--access",
            "--run-dir",
            run_dir.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout.lines().map(str::to_string).collect()
}

fn status(url: &str) -> String {
    curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", url]).stdout
}

#[test]
fn weft_up_logs_every_request_and_a_telemetry_document_changes_it_live() {
    let dir = tempdir::Dir::new("weft-access-log-mesh");
    let run_dir = tempdir::Dir::new("weft-access-log-run");
    mesh(&dir.path);
    let mut up = Up::start(&dir.path, &run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(40));
    let front = open.rsplit(' ').next().expect("url").to_string();
    let boot: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run_dir.path.join("sidecars/web-v1-0.json")).expect("bootstrap config"),
    )
    .expect("json");
    let outbound = format!(
        "http://{}",
        boot["outbound"]["ports"][0]["listen"].as_str().expect("listen")
    );

    // From outside the mesh to the front door, and through the mesh (client and server side).
    assert_eq!(status(&front), "200");
    assert_eq!(status(&format!("{outbound}/")), "200");
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = access_lines(&run_dir.path);
        if lines.len() >= 3 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for l in &lines {
        assert!(l.contains("\"GET / HTTP/1.1\" 200 - via_upstream"), "{l}");
    }
    let clusters: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').rev().nth(5)).collect();
    assert_eq!(
        clusters.iter().filter(|c| c.starts_with("inbound|")).count(),
        2,
        "{lines:#?}"
    );
    assert!(
        clusters.contains(&"outbound|8000||web.default.svc.cluster.local"),
        "{lines:#?}"
    );

    // A Telemetry document: from then on, errors only, as JSON.
    std::fs::write(dir.path.join("telemetry.yaml"), ERRORS_ONLY).expect("write");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        assert_eq!(status(&format!("{outbound}/missing-{n}")), "404");
        let lines = access_lines(&run_dir.path);
        let json = |l: &&String| l.starts_with('{');
        if lines
            .iter()
            .filter(json)
            .any(|l| l.contains(&format!("/missing-{n}")))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON line after the change: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status(&format!("{outbound}/")), "200");
    assert_eq!(status(&format!("{outbound}/after")), "404");
    let deadline = Instant::now() + Duration::from_secs(10);
    let json: Vec<serde_json::Value> = loop {
        let json: Vec<serde_json::Value> = access_lines(&run_dir.path)
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        // Both sides log the 404: client and server.
        if json.iter().filter(|v| v["path"] == "/after").count() == 2 || Instant::now() > deadline {
            break json;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        json.iter().filter(|v| v["path"] == "/after").count(),
        2,
        "{json:#?}"
    );
    // The filter holds: no success was logged as JSON; the 200 in between left no line.
    for v in &json {
        assert!(v["response_code"].as_u64().is_some_and(|c| c >= 400), "{v}");
    }
    let reporters: Vec<&str> = json
        .iter()
        .filter(|v| v["path"] == "/after")
        .filter_map(|v| v["reporter"].as_str())
        .collect();
    assert!(
        reporters.contains(&"source") && reporters.contains(&"destination"),
        "{json:#?}"
    );
    drop(up);
}
