//! `weft analyze` and `weft explain` as users script them: exit codes and the JSON contracts of
//! shared/ARCHITECTURE.md.

mod common;

use common::{run, tempdir, weft_bin};

fn fixture() -> String {
    format!("{}/tests/fixtures/bookinfo", env!("CARGO_MANIFEST_DIR"))
}

fn json(out: &common::Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out.stdout))
}

#[test]
fn analyze_reports_a_missing_subset_as_an_error_with_file_line_and_fix() {
    let out = run(weft_bin(), &["analyze", &fixture(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let v = json(&out);
    let findings = v["findings"].as_array().expect("findings");
    let missing = findings
        .iter()
        .find(|f| f["code"] == "WEFT0102")
        .expect("missing subset finding");
    assert_eq!(missing["severity"], "error");
    assert_eq!(missing["file"], "mesh.yaml");
    // At the `subset:` field of the destination, not the start of the VirtualService.
    assert_eq!(
        (&missing["line"], &missing["column"]),
        (&serde_json::json!(36), &serde_json::json!(36))
    );
    assert!(missing["fix"].as_str().is_some_and(|f| f.contains("subset v3")));
    let weights = findings
        .iter()
        .find(|f| f["code"] == "WEFT0105")
        .expect("weights finding");
    assert_eq!(weights["severity"], "warning");
    // At the `route:` list of rule 1.
    assert_eq!(
        (&weights["line"], &weights["column"]),
        (&serde_json::json!(33), &serde_json::json!(5))
    );
    // The text form, as istioctl prints it.
    let out = run(weft_bin(), &["analyze", &fixture()]);
    assert!(
        out.stdout.contains("mesh.yaml:36:36: error WEFT0102:"),
        "{}",
        out.stdout
    );
}

#[test]
fn analyze_exit_codes_clean_bad_yaml_and_usage() {
    let dir = tempdir::Dir::new("weft-analyze");
    std::fs::write(
        dir.path.join("ok.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n",
    )
    .expect("write");
    let out = run(
        weft_bin(),
        &["analyze", dir.path.to_str().expect("utf-8"), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    assert_eq!(json(&out)["findings"], serde_json::json!([]));

    std::fs::write(
        dir.path.join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: b\n",
    )
    .expect("write");
    std::fs::write(
        dir.path.join("typo.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [a]\n  htpp: []\n",
    )
    .expect("write");
    let out = run(
        weft_bin(),
        &["analyze", dir.path.to_str().expect("utf-8"), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let codes: Vec<(&str, &str, i64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap_or(""),
                f["code"].as_str().unwrap_or(""),
                f["line"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        codes.iter().any(|(f, c, _)| *f == "bad.yaml" && *c == "WEFT0001"),
        "{codes:?}"
    );
    assert!(codes.contains(&("typo.yaml", "WEFT0003", 6)), "{codes:?}");

    let out = run(weft_bin(), &["analyze"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(weft_bin(), &["analyze", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_follows_the_contract() {
    let out = run(
        weft_bin(),
        &[
            "explain",
            &fixture(),
            "GET http://reviews:9080/reviews/1",
            "-H",
            "end-user: jason",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let v = json(&out);
    assert_eq!(v["service"], "reviews.default.svc.cluster.local");
    assert_eq!(v["decision"], "route");
    assert_eq!(v["matched"]["kind"], "VirtualService");
    assert_eq!(v["matched"]["rule"], 0);
    assert_eq!(v["matched"]["file"], "mesh.yaml");
    assert_eq!(v["backends"][0]["subset"], "v2");
    assert_eq!(v["backends"][0]["weight"], 100);
    assert_eq!(v["backends"][0]["port"], 9080);
    assert_eq!(v["mtls"]["mode"], "PERMISSIVE");
    for key in [
        "skipped",
        "policies",
        "redirect",
        "direct_response",
        "authorization",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }

    let out = run(
        weft_bin(),
        &["explain", &fixture(), "GET http://reviews:9080/", "-o", "json"],
    );
    let v = json(&out);
    assert_eq!(v["matched"]["rule"], 1);
    assert_eq!(v["skipped"][0]["reason"], "header end-user: want exact jason");
    assert_eq!(v["backends"].as_array().map(Vec::len), Some(2));

    // Gateway API: exact path beats the prefix rule before it; /v2example does not match /v2.
    let out = run(
        weft_bin(),
        &[
            "explain",
            &fixture(),
            "GET http://ratings:9080/v2/exact",
            "-o",
            "json",
        ],
    );
    let v = json(&out);
    assert_eq!(v["decision"], "redirect");
    assert_eq!(v["redirect"]["status"], 301);
    assert_eq!(v["redirect"]["location"], "http://ratings:9080/moved");
    let out = run(
        weft_bin(),
        &[
            "explain",
            &fixture(),
            "GET http://ratings:9080/v2example",
            "-o",
            "json",
        ],
    );
    assert_eq!(json(&out)["decision"], "not_found");

    let out = run(
        weft_bin(),
        &["explain", &fixture(), "GET http://www.example.com/", "-o", "json"],
    );
    assert_eq!(json(&out)["service"], serde_json::Value::Null);
    let out = run(weft_bin(), &["explain", &fixture(), "GET reviews"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn analyze_finds_a_plaintext_client_of_a_strict_port() {
    let dir = tempdir::Dir::new("weft-analyze-strict");
    std::fs::write(
        dir.path.join("mesh.yaml"),
        r#"apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: bank}
spec: {selector: {app: ledger}, ports: [{name: http, port: 8080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: ledger-v1, namespace: bank}
spec: {labels: {app: ledger}, ports: [{port: 8080}], command: [sleep, "1"]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bank}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger, namespace: bank}
spec:
  host: ledger
  trafficPolicy: {tls: {mode: DISABLE}}
"#,
    )
    .expect("write");
    let out = run(
        weft_bin(),
        &["analyze", dir.path.to_str().expect("utf-8"), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let v = json(&out);
    let f = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["code"] == "WEFT0108")
        .unwrap_or_else(|| panic!("no STRICT/plaintext finding: {v}"));
    assert_eq!(f["severity"], "error");
    assert_eq!(
        (&f["line"], &f["column"]),
        (&serde_json::json!(21), &serde_json::json!(25)),
        "the DestinationRule's tls.mode"
    );
    assert!(
        f["message"].as_str().is_some_and(|m| m.contains("ledger-v1")),
        "{f}"
    );

    // PERMISSIVE: plaintext is accepted, no finding.
    let text = std::fs::read_to_string(dir.path.join("mesh.yaml")).expect("read");
    std::fs::write(dir.path.join("mesh.yaml"), text.replace("STRICT", "PERMISSIVE")).expect("write");
    let out = run(
        weft_bin(),
        &["analyze", dir.path.to_str().expect("utf-8"), "-o", "json"],
    );
    assert!(!out.stdout.contains("WEFT0108"), "{}", out.stdout);
}

#[test]
fn analyze_finds_broken_linkerd_policy_references() {
    let dir = tempdir::Dir::new("weft-analyze-linkerd");
    let write = |text: &str| std::fs::write(dir.path.join("policy.yaml"), text).expect("write");
    let analyze = || {
        let out = run(
            weft_bin(),
            &["analyze", dir.path.to_str().expect("utf-8"), "-o", "json"],
        );
        (out.status.code(), json(&out))
    };
    let workload = "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: api}\nspec: {labels: {app: api}, ports: [{name: http, port: 8080}], command: [sleep, \"1\"]}\n---\n";
    let server = "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {name: api-http}\nspec: {podSelector: {matchLabels: {app: api}}, port: http}\n---\n";
    let policy = "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: api-authz}\nspec:\n  targetRef: {group: policy.linkerd.io, kind: Server, name: api-http}\n  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: clients}]\n";
    let mtls = "---\napiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: clients}\nspec: {identities: [\"*\"]}\n";
    let finding = |v: &serde_json::Value, code: &str| -> Option<(String, u64)> {
        v["findings"]
            .as_array()?
            .iter()
            .find(|f| f["code"] == code)
            .map(|f| {
                (
                    f["severity"].as_str().unwrap_or_default().to_string(),
                    f["line"].as_u64().unwrap_or_default(),
                )
            })
    };

    // Whole: clean.
    write(&format!("{workload}{server}{policy}{mtls}"));
    let (code, v) = analyze();
    assert_eq!(code, Some(0), "{v}");
    // The MeshTLSAuthentication missing: an error at the reference's line.
    write(&format!("{workload}{server}{policy}"));
    let (code, v) = analyze();
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(finding(&v, "WEFT0120"), Some(("error".into(), 16)), "{v}");
    // The Server missing: an error at the targetRef.
    write(&format!("{workload}{policy}{mtls}"));
    let (code, v) = analyze();
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(finding(&v, "WEFT0120"), Some(("error".into(), 10)), "{v}");
    // A Server selecting nothing: a warning at its podSelector.
    write(&format!(
        "{}{policy}{mtls}",
        server.replace("app: api", "app: nobody")
    ));
    let (_, v) = analyze();
    assert_eq!(finding(&v, "WEFT0121"), Some(("warning".into(), 4)), "{v}");
}

const BOOKS: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: books
  annotations:
    timeout.linkerd.io/request: 4s
spec: {selector: {app: books}, ports: [{name: http, port: 7000}]}
---
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: books.default.svc.cluster.local}
spec:
  routes:
  - name: GET /books/{id}
    condition: {method: GET, pathRegex: '/books/\\d+'}
    isRetryable: true
    timeout: 300ms
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
";

#[test]
fn linkerd_documents_analyze_clean_and_explain_their_routes() {
    let dir = tempdir::Dir::new("weft-linkerd");
    let path = dir.path.to_str().expect("utf-8");
    std::fs::write(dir.path.join("books.yaml"), BOOKS).expect("write");
    let out = run(weft_bin(), &["analyze", path, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    let v = json(&out);
    let findings = v["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(
        (
            &findings[0]["code"],
            &findings[0]["line"],
            &findings[0]["severity"]
        ),
        (
            &serde_json::json!("WEFT0104"),
            &serde_json::json!(1),
            &serde_json::json!("warning")
        ),
        "{v}"
    );

    let out = run(
        weft_bin(),
        &["explain", path, "GET http://books:7000/books/7", "-o", "json"],
    );
    let p = &json(&out)["policies"];
    assert_eq!(p["route_name"], "GET /books/{id}", "{p}");
    assert_eq!(
        (p["timeout_ms"].as_u64(), p["retryable"].as_bool()),
        (Some(300), Some(true))
    );
    assert_eq!(
        p["retry_budget"],
        serde_json::json!({"ratio": 0.2, "min_per_second": 10, "ttl_ms": 10000})
    );
    // Outside every profile route: no route name, and no timeout: as in Linkerd, the Service's
    // annotations are ignored once a ServiceProfile exists (analyze warned).
    let out = run(
        weft_bin(),
        &["explain", path, "GET http://books:7000/authors", "-o", "json"],
    );
    let p = &json(&out)["policies"];
    assert_eq!(
        (p["route_name"].is_null(), p["timeout_ms"].as_u64()),
        (true, None),
        "{p}"
    );
    let out = run(weft_bin(), &["explain", path, "GET http://books:7000/books/7"]);
    assert!(
        out.stdout.contains("route:     GET /books/{id} (retryable)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("timeout:   300 ms"), "{}", out.stdout);

    // Each kind of mistake, at its line; any error makes the exit status 1.
    std::fs::write(
        dir.path.join("bad.yaml"),
        "\
apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata: {name: authors}
spec:
  routes:
  - {name: a, condition: {pathRegex: '/a(?!b)'}}
  - {name: b, condition: {method: GET}, timeout: 5 seconds}
  retryBudget: {retryRatio: -1, minRetriesPerSecond: 1, ttl: 10s}
  dstOverrides: [{authority: nowhere.default.svc.cluster.local, weight: 1}]
  surprise: true
",
    )
    .expect("write");
    let out = run(weft_bin(), &["analyze", path, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let v = json(&out);
    let codes: Vec<(&str, i64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["file"] == "bad.yaml")
        .map(|f| (f["code"].as_str().unwrap_or(""), f["line"].as_i64().unwrap_or(0)))
        .collect();
    // An unknown field rejects the document: only that finding.
    assert_eq!(codes, [("WEFT0003", 10)], "{v}");
    let without_surprise = std::fs::read_to_string(dir.path.join("bad.yaml"))
        .expect("read")
        .replace("  surprise: true\n", "");
    std::fs::write(dir.path.join("bad.yaml"), without_surprise).expect("write");
    let out = run(weft_bin(), &["analyze", path, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let v = json(&out);
    let codes: Vec<(&str, i64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["file"] == "bad.yaml")
        .map(|f| (f["code"].as_str().unwrap_or(""), f["line"].as_i64().unwrap_or(0)))
        .collect();
    // Not a service FQDN (a warning: the profile applies to nothing), and still every bad
    // field is reported: regex, duration, budget.
    assert_eq!(
        codes,
        [("WEFT0002", 3), ("WEFT0106", 6), ("WEFT0002", 7), ("WEFT0002", 8)],
        "{v}"
    );
}

/// `weft explain ... | head -0`: a reader that is gone before the output is written ends the
/// output quietly, with the verb's own exit status, instead of a panic (exit 101).
#[test]
fn a_closed_output_pipe_is_not_a_crash() {
    let dir = env!("CARGO_MANIFEST_DIR").to_string() + "/../../examples/bookinfo";
    for args in [
        vec!["explain", dir.as_str(), "GET http://reviews:9080/", "-o", "json"],
        vec!["analyze", dir.as_str()],
    ] {
        let mut child = std::process::Command::new(weft_bin())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn weft");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Issue 18's example: one bad field does not hide the next; every schema error of the
/// document in one run, each at its line and column, and the document stays out (exit 1).
#[test]
fn analyze_reports_every_schema_error_of_a_document_in_one_run() {
    let dir = tempdir::Dir::new("weft-analyze-schema");
    std::fs::write(
        dir.path.join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: \"ten\"\n    retries: {attempts: three}\n    timeot: 2s\n",
    )
    .expect("write");
    let out = run(
        weft_bin(),
        &["analyze", dir.path.to_str().expect("utf-8"), "-o", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let v = json(&out);
    let placed: Vec<(&str, i64, i64)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["file"] == "vs.yaml")
        .map(|f| {
            (
                f["code"].as_str().unwrap_or(""),
                f["line"].as_i64().unwrap_or(0),
                f["column"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [("WEFT0002", 9, 15), ("WEFT0002", 10, 25), ("WEFT0003", 11, 5)],
        "{v}"
    );
}

/// `--suppress CODE=KIND/NS/NAME` silences a finding (exit status from what is left), `-o yaml`
/// prints the same objects as JSON, and a malformed `--suppress` is a usage error.
#[test]
fn analyze_suppresses_findings_and_prints_yaml() {
    let fixture = fixture();
    let out = run(
        weft_bin(),
        &[
            "analyze",
            &fixture,
            "--suppress",
            "IST0101=VirtualService/default/reviews",
            "-o",
            "json",
        ],
    );
    // The missing subset (an error) is silenced; the weights warning is left: exit 0.
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    let codes: Vec<String> = json(&out)["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(codes, ["WEFT0105"]);

    let out = run(weft_bin(), &["analyze", &fixture, "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    assert!(out.stdout.starts_with("findings:\n"), "{}", out.stdout);
    assert!(out.stdout.contains("  code: WEFT0102\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("  line: 36\n  column: 36\n"),
        "{}",
        out.stdout
    );

    let out = run(weft_bin(), &["analyze", &fixture, "--suppress", "IST0101"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("CODE=KIND/NAMESPACE/NAME"), "{}", out.stderr);
}

/// Helm-style anchors and aliases read as written; a "billion laughs" is refused with a YAML
/// finding at the alias that crosses the bound, and the other documents still load.
#[test]
fn analyze_reads_anchors_and_refuses_a_billion_laughs() {
    let dir = tempdir::Dir::new("weft-analyze-anchors");
    std::fs::write(
        dir.path.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, labels: &app {app: reviews}}\nspec:\n  selector: *app\n  ports: [{port: 9080}]\n",
    )
    .expect("write");
    let path = dir.path.to_str().expect("utf-8");
    let out = run(weft_bin(), &["analyze", path, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout);
    assert_eq!(json(&out)["findings"], serde_json::json!([]));

    let mut laughs = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("  a{i}: &a{i} [{refs}]\n"));
    }
    std::fs::write(dir.path.join("laughs.yaml"), laughs).expect("write");
    let out = run(weft_bin(), &["analyze", path, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let v = json(&out);
    let f = &v["findings"][0];
    assert_eq!(
        (&f["file"], &f["code"], &f["line"], &f["column"]),
        (
            &serde_json::json!("laughs.yaml"),
            &serde_json::json!("WEFT0001"),
            &serde_json::json!(9),
            &serde_json::json!(47)
        ),
        "{v}"
    );
    assert!(
        f["message"].as_str().is_some_and(|m| m.contains("100000 nodes")),
        "{v}"
    );
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(1), "{v}");
}
