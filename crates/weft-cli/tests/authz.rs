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

    // Who may call whom: productpage may still GET reviews and details.
    std::fs::copy(
        example("routing/authz/authorization-policies.yaml"),
        dir.path.join("authorization-policies.yaml"),
    )
    .expect("copy");
    std::thread::sleep(Duration::from_millis(1500));
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
