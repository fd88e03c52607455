//! `weft up --netns` as a real child process: every instance in a network namespace of its own
//! with transparent iptables capture, as pods are. The apps are unchanged (they dial
//! `http://reviews:9080`); the tests open the printed URLs from the host, swap routing files
//! while it runs, stop it, and look for anything left behind: processes, namespaces, links,
//! hosts files.
//!
//! Needs root (CI runs the tests as root); without it each test prints that it skipped, and
//! fails under `CI=true` or `WEFT_REQUIRE_ROOT=1`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::up::{
    assert_tokens_only_in_environment, bookinfo_copy, processes_of, recorded_pids, routing, still_running,
    versions_seen, wait_for_versions, Up,
};
use common::{curl, metric_sum, run, tempdir, weft_bin};

/// True as root; otherwise says it skipped (and fails under `CI=true`/`WEFT_REQUIRE_ROOT=1`).
fn may_run(test: &str) -> bool {
    weft_test_support::privilege::require_root(test, "to create network namespaces and NAT rules")
}

/// The namespaces `weft up` printed in its table (last column).
fn namespaces_in_table(output: &[String]) -> Vec<String> {
    output
        .iter()
        .filter(|l| l.contains("/metrics"))
        .filter_map(|l| l.split_whitespace().last())
        .filter(|w| w.starts_with("weft-"))
        .map(str::to_string)
        .collect()
}

/// The `/metrics` of `instance`'s sidecar, fetched from inside its namespace (the table's last
/// column), where its admin port listens on loopback.
fn metrics_in_namespace(output: &[String], instance: &str) -> String {
    let ns = output
        .iter()
        .find(|l| l.starts_with(&format!("{instance} ")))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("{instance}'s namespace in the table: {}", output.join("\n")));
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "http://127.0.0.1:15000/metrics",
        ],
    )
    .stdout
}

/// What of a run's network is still there: its namespaces, its links (`weft<run>v<n>`,
/// `weftbr<run>`), the FORWARD rule for its bridge, its hosts files.
fn leftovers(namespaces: &[String]) -> Vec<String> {
    let listed = run("ip", &["netns", "list"]).stdout;
    let links = run("ip", &["-o", "link"]).stdout;
    let forward = run("iptables", &["-S", "FORWARD"]).stdout;
    let mut left = Vec::new();
    for ns in namespaces {
        if listed.split_whitespace().any(|w| w == ns) {
            left.push(format!("netns {ns}"));
        }
        if Path::new("/etc/netns").join(ns).exists() {
            left.push(format!("/etc/netns/{ns}"));
        }
        let run_id = ns.split('-').nth(1).expect("weft-<run>-<n>");
        for link in links
            .lines()
            .filter(|l| l.contains(&format!("weft{run_id}v")) || l.contains(&format!("weftbr{run_id}")))
        {
            left.push(format!("link {link}"));
        }
        for rule in forward.lines().filter(|l| l.contains(&format!("weftbr{run_id}"))) {
            left.push(format!("iptables {rule}"));
        }
    }
    left
}

/// SIGTERM, as Ctrl-C would; returns once it printed `stopped` and exited.
fn stop(up: &mut Up) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(up.child.id().to_string())
        .status();
    up.wait_for("weft up: stopped", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = up.child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "weft up did not exit after `stopped`");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The environment of a running process.
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn bookinfo_in_namespaces_through_captured_mtls_with_live_routing() {
    if !may_run("bookinfo_in_namespaces_through_captured_mtls_with_live_routing") {
        return;
    }
    let dir = bookinfo_copy();
    let run_dir = tempdir::Dir::new("weft-up-netns-run");
    let started = Instant::now();
    let mut up = Up::start_with(&dir.path, &run_dir.path, &["--netns"]);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    eprintln!("weft up --netns was ready in {:?}", started.elapsed());
    let url = open.rsplit(' ').next().expect("url").to_string();
    assert!(
        url.starts_with("http://10.") && url.ends_with(":9080/productpage"),
        "the app's own port at its namespace's address: {open}"
    );
    let namespaces = namespaces_in_table(&up.output);
    assert_eq!(namespaces.len(), 6, "{}", up.output.join("\n"));
    let listed = run("ip", &["netns", "list"]).stdout;
    for ns in &namespaces {
        assert!(
            listed.contains(ns.as_str()),
            "{ns} not in `ip netns list`:\n{listed}"
        );
    }
    let pids = recorded_pids(&run_dir.path);
    assert_eq!(pids.len(), 13, "weft up, six apps and six sidecars");
    // `ip netns exec` passes the token on in the environment, never in the arguments.
    assert_tokens_only_in_environment(&run_dir.path);

    // The app knows only service names and its own port: no sidecar port, no proxy variable.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.path.join("up.json")).expect("up.json")).expect("json");
    let productpage = rec["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["workload"] == "productpage-v1")
        .expect("productpage");
    let env = environ(productpage["appPid"].as_u64().expect("pid") as u32);
    let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("REVIEWS_URL"), Some("http://reviews:9080"), "{env:?}");
    assert_eq!(get("DETAILS_URL"), Some("http://details:9080"), "{env:?}");
    assert_eq!(get("PORT"), Some("9080"));
    assert!(
        get("HTTP_PROXY").is_none() && get("http_proxy").is_none(),
        "{env:?}"
    );
    for (k, v) in &env {
        for mesh_port in ["15000", "15001", "15006", "15008"] {
            assert!(!v.contains(mesh_port), "{k}={v} names a sidecar port");
        }
    }

    // No routing: all three versions of reviews answer, through the mesh.
    let seen = versions_seen(&url, 30);
    assert_eq!(seen.len(), 3, "{seen:?}");

    // Admin ports listen on their namespace's loopback only: not from the host on the
    // namespace's address, but from inside the namespace.
    let outside = url.trim_end_matches("/productpage").replace(":9080", ":15000");
    let refused = curl(&["-sS", "--max-time", "3", &format!("{outside}/metrics")]);
    assert!(
        !refused.status.success() && refused.stdout.is_empty(),
        "the admin port answered on the namespace's address: {}",
        refused.stdout
    );
    let note = up.wait_for(
        "Admin ports listen on each namespace's loopback",
        Duration::from_secs(5),
    );
    assert!(
        note.contains("ip netns exec NETNS curl http://127.0.0.1:15000/metrics"),
        "{note}"
    );
    // productpage's sidecar caught the app's plain connections to `reviews` (a VIP) and sent
    // every request on as mutual TLS to the reviews identity.
    let metrics = metrics_in_namespace(&up.output, "productpage-v1-0");
    let to_reviews = [
        ("reporter", "source"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("response_code", "200"),
    ];
    let reviews = metric_sum(&metrics, "istio_requests_total", &to_reviews);
    assert!(reviews >= 30.0, "{metrics}");
    let mtls = metric_sum(
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
    // The page itself came from outside the mesh through inbound capture (PERMISSIVE).
    let inbound = metric_sum(
        &metrics,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("destination_workload", "productpage-v1"),
            ("response_code", "200"),
        ],
    );
    assert!(inbound >= 30.0, "{metrics}");

    // And reviews' sidecar, in its own namespace, saw productpage's identity on mTLS.
    let server = metrics_in_namespace(&up.output, "reviews-v2-0");
    let from_productpage = metric_sum(
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
    assert!(from_productpage >= 1.0, "{server}");
    // `weft check` finds the run's control plane and every sidecar's certificate.
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

    // Routing files swapped while it runs: traffic follows (polled to a deadline: how fast is
    // not what this test measures).
    let vs = dir.path.join("virtual-services.yaml");
    std::fs::copy(routing("v3").join("virtual-services.yaml"), &vs).expect("copy");
    wait_for_versions(&url, &["reviews-v3"], 10, Duration::from_secs(10));
    std::fs::copy(routing("all-v1").join("virtual-services.yaml"), &vs).expect("copy");
    wait_for_versions(&url, &["reviews-v1"], 10, Duration::from_secs(10));

    // A service added while it runs is named in every namespace's hosts file.
    std::fs::write(
        dir.path.join("extra.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: extra}\nspec: {selector: {app: extra}, ports: [{port: 80}]}\n",
    )
    .expect("write");
    let hosts = Path::new("/etc/netns").join(&namespaces[0]).join("hosts");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&hosts)
        .expect("hosts")
        .contains(" extra.default.svc.cluster.local ")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&hosts).expect("hosts")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Ctrl-C: a clean exit, and nothing of the run is left.
    let status = stop(&mut up);
    assert!(status.success(), "{status}");
    assert_eq!(still_running(&pids), Vec::<u32>::new(), "processes left behind");
    assert_eq!(processes_of(&run_dir.path), Vec::<String>::new());
    assert_eq!(leftovers(&namespaces), Vec::<String>::new());
    assert!(
        !run_dir.path.join("netns.json").exists(),
        "the record of the network is removed with it"
    );
}

/// Two replicas of an unmodified program (python's HTTP server on `$(POD_IP)`), for the
/// lifecycle test.
fn web_mesh(dir: &Path) {
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
  command: [python3, -m, http.server, "$(PORT)", --bind, "$(POD_IP)"]
  replicas: 2
"#,
    )
    .expect("write");
}

#[test]
fn a_killed_run_is_cleaned_up_by_the_next_up_or_by_down() {
    if !may_run("a_killed_run_is_cleaned_up_by_the_next_up_or_by_down") {
        return;
    }
    let dir = tempdir::Dir::new("weft-up-netns-web");
    let run_dir = tempdir::Dir::new("weft-up-netns-web-run");
    web_mesh(&dir.path);

    let mut first = Up::start_with(&dir.path, &run_dir.path, &["--netns"]);
    let open = first.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();
    let out = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(out.stdout, "200", "{}", out.stderr);
    let killed_namespaces = namespaces_in_table(&first.output);
    assert_eq!(killed_namespaces.len(), 2, "{}", first.output.join("\n"));
    let orphans = recorded_pids(&run_dir.path)[1..].to_vec();
    // Killed outright: it cannot clean up, but its apps and sidecars die with it (issue 19);
    // its network namespaces are left.
    let _ = first.child.kill();
    let _ = first.child.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !still_running(&orphans).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} outlived weft up",
            still_running(&orphans)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The next `weft up --netns` on the same run directory starts without complaint, after
    // removing what the killed one left.
    let mut second = Up::start_with(&dir.path, &run_dir.path, &["--netns"]);
    second.wait_for(
        "removed the network namespaces a previous run left",
        Duration::from_secs(30),
    );
    let open = second.wait_for("Open the application:", Duration::from_secs(60));
    assert_eq!(
        still_running(&orphans),
        Vec::<u32>::new(),
        "orphans of the killed run"
    );
    assert_eq!(leftovers(&killed_namespaces), Vec::<String>::new());
    let url = open.rsplit(' ').next().expect("url").to_string();
    let out = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(out.stdout, "200", "{}", out.stderr);
    let namespaces = namespaces_in_table(&second.output);
    let orphans = recorded_pids(&run_dir.path)[1..].to_vec();

    // Killed too: `weft down` finds nothing running but removes what it left.
    let _ = second.child.kill();
    let _ = second.child.wait();
    let down = run(
        weft_bin(),
        &["down", "--run-dir", run_dir.path.to_str().expect("utf-8")],
    );
    assert!(down.status.success(), "{}{}", down.stdout, down.stderr);
    assert!(
        down.stdout.contains("removed the network namespaces"),
        "{}",
        down.stdout
    );
    assert_eq!(
        still_running(&orphans),
        Vec::<u32>::new(),
        "orphans of the killed run"
    );
    assert_eq!(processes_of(&run_dir.path), Vec::<String>::new());
    assert_eq!(leftovers(&namespaces), Vec::<String>::new());
    assert!(
        !run_dir.path.join("netns.json").exists(),
        "the record of the network is removed with it"
    );
}

#[test]
fn netns_mode_without_root_says_what_it_needs() {
    if !weft_test_support::privilege::require_root(
        "netns_mode_without_root_says_what_it_needs",
        "to switch to an unprivileged user",
    ) {
        return;
    }
    let dir = tempdir::Dir::new("weft-up-netns-nobody");
    web_mesh(&dir.path);
    let run_dir = std::env::temp_dir().join(format!("weft-up-netns-nobody-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    // `nobody` may read the documents and write its run directory, nothing more.
    Command::new("chmod")
        .arg("a+rx")
        .arg(&dir.path)
        .status()
        .expect("chmod");
    let out = run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            weft_bin(),
            "up",
            dir.path.to_str().expect("utf-8"),
            "--netns",
            "--run-dir",
            run_dir.to_str().expect("utf-8"),
        ],
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--netns needs root") && out.stderr.contains("without --netns"),
        "{}",
        out.stderr
    );
}
