//! Authorization end to end under `weft up`: Bookinfo's sidecars enforce the Istio
//! AuthorizationPolicies the control plane pushes, on the mTLS identities it issued.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{curl, tempdir, weft_bin};

struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Up {
    fn start(dir: &std::path::Path, run_dir: &std::path::Path) -> Up {
        let mut child = Command::new(weft_bin())
            .arg("up")
            .arg(dir)
            .arg("--run-dir")
            .arg(run_dir)
            .args(["--ready-timeout", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weft up");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Up {
            child,
            lines,
            output: Vec::new(),
        }
    }

    fn wait_for(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "weft up never printed {what:?}; output so far:\n{}",
            self.output.join("\n")
        );
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo")
        .join(path)
}

fn admin_of(run_dir: &std::path::Path, instance: &str) -> String {
    let boot = std::fs::read(run_dir.join(format!("sidecars/{instance}.json"))).expect("bootstrap");
    let boot: serde_json::Value = serde_json::from_slice(&boot).expect("json");
    boot["admin"]["address"].as_str().expect("admin").to_string()
}

/// Loads the page until `pred` holds (config pushes take a moment), or gives up.
fn page_until(url: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut page = String::new();
    for _ in 0..40 {
        page = curl(&["-sS", url]).stdout;
        if pred(&page) {
            return page;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    page
}

#[test]
fn bookinfo_sidecars_enforce_authorization_policies() {
    let dir = tempdir::Dir::new("weft-authz-bookinfo");
    for f in ["mesh.yaml", "destination-rules.yaml"] {
        std::fs::copy(example(f), dir.path.join(f)).expect("copy example");
    }
    let run_dir = tempdir::Dir::new("weft-authz-run");
    let mut up = Up::start(&dir.path, &run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();
    let page = page_until(&url, |p| p.contains("reviews-v"));
    assert!(page.contains("reviews-v"), "{page}");

    // Who may call whom: productpage may still GET reviews and details, and a caller the
    // policies leave out (reviews' identity, calling details) is refused with 403 `RBAC`. The
    // refusal showing up is what says the policies arrived.
    let (as_reviews, _) = sidecar_ports(&run_dir.path, "reviews-v1-0", "details.default");
    let refused = format!("http://{as_reviews}/details/0");
    assert_eq!(
        status_until(&refused, "200"),
        "200",
        "details open before any policy"
    );
    std::fs::copy(
        example("routing/authz/authorization-policies.yaml"),
        dir.path.join("authorization-policies.yaml"),
    )
    .expect("copy");
    assert_eq!(
        status_until(&refused, "403"),
        "403",
        "the ALLOW policies never arrived"
    );
    let denied = curl(&["-sS", &refused]).stdout;
    assert_eq!(denied, "RBAC: access denied\n");
    let details_metrics = curl(&[
        "-sS",
        &format!("http://{}/metrics", admin_of(&run_dir.path, "details-v1-0")),
    ])
    .stdout;
    let from_reviews = common::metric_sum(
        &details_metrics,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("response_code", "403"),
            ("response_flags", "RBAC"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            ),
        ],
    );
    assert!(from_reviews >= 2.0, "{details_metrics}");
    for _ in 0..5 {
        let page = curl(&["-sS", &url]).stdout;
        assert!(
            page.contains("reviews-v") && !page.contains("unavailable"),
            "{page}"
        );
    }

    // Deny productpage's calls to reviews: the page says reviews are unavailable, and the
    // reviews sidecars count the 403s with flag RBAC.
    std::fs::write(
        dir.path.join("deny-reviews.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-reviews, namespace: default}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [\"/reviews/*\"]}}]\n",
    )
    .expect("write");
    let page = page_until(&url, |p| p.contains("Reviews unavailable"));
    assert!(page.contains("Reviews unavailable"), "{page}");
    let denied: f64 = ["reviews-v1-0", "reviews-v2-0", "reviews-v3-0"]
        .iter()
        .map(|i| {
            let m = curl(&["-sS", &format!("http://{}/metrics", admin_of(&run_dir.path, i))]).stdout;
            common::metric_sum(
                &m,
                "istio_requests_total",
                &[
                    ("reporter", "destination"),
                    ("response_code", "403"),
                    ("response_flags", "RBAC"),
                    (
                        "source_principal",
                        "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
                    ),
                ],
            )
        })
        .sum();
    assert!(denied >= 1.0, "no RBAC denials counted");

    // Removing the DENY restores the page.
    std::fs::remove_file(dir.path.join("deny-reviews.yaml")).expect("remove");
    let page = page_until(&url, |p| p.contains("reviews-v") && !p.contains("unavailable"));
    assert!(
        page.contains("reviews-v") && !page.contains("unavailable"),
        "{page}"
    );
    drop(up);
}

/// The HTTP status of `GET url`, retried until it is `want` (config pushes take a moment).
fn status_until(url: &str, want: &str) -> String {
    let mut status = String::new();
    for _ in 0..40 {
        status = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", url]).stdout;
        if status == want {
            return status;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    status
}

/// The sidecar of `instance`: where it sends `service` (its outbound port, so a request
/// through it carries the instance's mTLS identity) and where it fronts app port 9080 for
/// plaintext from outside the mesh.
fn sidecar_ports(run_dir: &std::path::Path, instance: &str, service: &str) -> (String, String) {
    let boot = std::fs::read(run_dir.join(format!("sidecars/{instance}.json"))).expect("bootstrap");
    let boot: serde_json::Value = serde_json::from_slice(&boot).expect("json");
    let out = boot["outbound"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["service"] == service)
        .and_then(|p| p["listen"].as_str())
        .expect("outbound port")
        .to_string();
    let front = boot["inbound"]["listeners"][0]["listen"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (out, front)
}

const LINKERD_DETAILS: &str = r#"
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: details-http, namespace: default}
spec:
  podSelector: {matchLabels: {app: details}}
  port: http
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: details-from-productpage, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: details-http}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: productpage}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: productpage, namespace: default}
spec:
  identities: [bookinfo-productpage.default.serviceaccount.identity.linkerd.cluster.local]
"#;

const LOOPBACK_PLAINTEXT: &str = r#"
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: details-from-loopback, namespace: default}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: details-http}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: NetworkAuthentication, name: loopback}
---
apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {name: loopback, namespace: default}
spec:
  networks: [{cidr: 127.0.0.0/8}]
"#;

fn mesh_wide_default(policy: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: weft-system\n  annotations: {{config.linkerd.io/default-inbound-policy: {policy}}}\n")
}

#[test]
fn bookinfo_sidecars_enforce_linkerd_policy_and_audit() {
    let dir = tempdir::Dir::new("weft-linkerd-bookinfo");
    for f in ["mesh.yaml", "destination-rules.yaml"] {
        std::fs::copy(example(f), dir.path.join(f)).expect("copy example");
    }
    let run_dir = tempdir::Dir::new("weft-linkerd-run");
    let mut up = Up::start(&dir.path, &run_dir.path);
    let open = up.wait_for("Open the application:", Duration::from_secs(60));
    let url = open.rsplit(' ').next().expect("url").to_string();
    let page = page_until(&url, |p| p.contains("reviews-v"));
    assert!(page.contains("reviews-v"), "{page}");
    let details = "details.default";
    let (as_productpage, _) = sidecar_ports(&run_dir.path, "productpage-v1-0", details);
    let (as_reviews, _) = sidecar_ports(&run_dir.path, "reviews-v1-0", details);
    let (_, details_front) = sidecar_ports(&run_dir.path, "details-v1-0", details);
    let via = |addr: &str| format!("http://{addr}/details/0");
    let plaintext = format!("http://{details_front}/details/0");
    assert_eq!(status_until(&via(&as_reviews), "200"), "200");

    // A Server on details' port with a MeshTLSAuthentication naming productpage's identity:
    // productpage is allowed, reviews' identity gets 403, plaintext from outside too.
    std::fs::write(dir.path.join("linkerd.yaml"), LINKERD_DETAILS).expect("write");
    assert_eq!(status_until(&via(&as_reviews), "403"), "403");
    assert_eq!(status_until(&via(&as_productpage), "200"), "200");
    assert_eq!(status_until(&plaintext, "403"), "403");
    let page = page_until(&url, |p| p.contains("reviews-v") && !p.contains("unavailable"));
    assert!(!page.contains("unavailable"), "{page}");
    let details_admin = admin_of(&run_dir.path, "details-v1-0");
    let m = curl(&["-sS", &format!("http://{details_admin}/metrics")]).stdout;
    let denied = [("decision", "deny"), ("policy", "Server/default/details-http")];
    assert!(
        common::metric_sum(&m, "weft_authz_decisions_total", &denied) >= 2.0,
        "{m}"
    );

    // A NetworkAuthentication for 127.0.0.0/8 admits plaintext from loopback.
    std::fs::write(dir.path.join("linkerd-loopback.yaml"), LOOPBACK_PLAINTEXT).expect("write");
    assert_eq!(status_until(&plaintext, "200"), "200");

    // Mesh-wide default `deny` (no Server any more): every call is refused...
    for f in ["linkerd.yaml", "linkerd-loopback.yaml"] {
        std::fs::remove_file(dir.path.join(f)).expect("remove");
    }
    std::fs::write(dir.path.join("namespace.yaml"), mesh_wide_default("deny")).expect("write");
    assert_eq!(status_until(&via(&as_productpage), "403"), "403");
    assert_eq!(status_until(&plaintext, "403"), "403");
    // ...`all-authenticated`: mesh identities pass, plaintext from outside does not.
    std::fs::write(
        dir.path.join("namespace.yaml"),
        mesh_wide_default("all-authenticated"),
    )
    .expect("write");
    assert_eq!(status_until(&via(&as_reviews), "200"), "200");
    assert_eq!(status_until(&via(&as_productpage), "200"), "200");
    assert_eq!(status_until(&plaintext, "403"), "403");
    // The page itself is plaintext from outside: refused too, by productpage's sidecar.
    assert_eq!(status_until(&url, "403"), "403");

    // Istio AUDIT never blocks: the request passes and is counted as audited.
    std::fs::remove_file(dir.path.join("namespace.yaml")).expect("remove");
    std::fs::write(
        dir.path.join("audit.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-details, namespace: default}\nspec:\n  selector: {matchLabels: {app: details}}\n  action: AUDIT\n  rules: [{to: [{operation: {paths: [\"/details/*\"]}}]}]\n",
    )
    .expect("write");
    let audited = [
        ("decision", "audit"),
        ("policy", "AuthorizationPolicy/default/audit-details"),
    ];
    let mut count = 0.0;
    for _ in 0..40 {
        assert_eq!(status_until(&plaintext, "200"), "200");
        let m = curl(&["-sS", &format!("http://{details_admin}/metrics")]).stdout;
        count = common::metric_sum(&m, "weft_authz_decisions_total", &audited);
        if count >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(count >= 1.0, "no audited request counted");
    drop(up);
}
