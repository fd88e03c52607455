//! The scale benchmark of issue 18: `weft analyze` reads, translates and checks 100,000
//! documents in one file (Services, and VirtualServices and DestinationRules routing a tenth of
//! them) in at most 10 s and 500 MB. Reading was quadratic in the documents of one file, every
//! check looked services up by scanning them all, and every document kept its positioned YAML
//! tree (about 7.5 KB for a small one: 750 MB for 100k) where it now keeps its text.
//!
//! Run it optimized, alone (it measures the whole process's peak memory):
//!
//! ```sh
//! cargo test --release -p weft-api --test analyze_scale -- --ignored --nocapture
//! ```
//!
//! `WEFT_SCALE_DOCS` changes the number of documents.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use weft_api::{resources, translate, validate};

const DEFAULT_DOCS: usize = 100_000;
const TIME_LIMIT: Duration = Duration::from_secs(10);
const MEMORY_LIMIT_MB: u64 = 500;

/// `n` documents: Services, and for every 10th a VirtualService and a DestinationRule.
fn mesh(n: usize) -> String {
    let mut out = String::with_capacity(n * 200);
    let services = n * 10 / 12;
    for i in 0..services {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: ns-{}\nspec:\n  selector: {{app: svc-{i}}}\n  ports:\n  - {{name: http, port: 8080}}\n---\n",
            i % 100
        );
        if i % 10 == 0 {
            let _ = write!(
                out,
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i}, namespace: ns-{ns}}}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n    route: [{{destination: {{host: svc-{i}, subset: v2}}}}]\n  - route:\n    - {{destination: {{host: svc-{i}, subset: v1}}, weight: 90}}\n    - {{destination: {{host: svc-{i}, subset: v2}}, weight: 10}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{i}, namespace: ns-{ns}}}\nspec:\n  host: svc-{i}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n---\n",
                ns = i % 100
            );
        }
    }
    out
}

/// Peak resident memory of this process (Linux), in MB.
fn peak_rss_mb() -> Option<u64> {
    status_mb("VmHWM:")
}

/// Resident memory now, in MB.
fn rss_mb() -> Option<u64> {
    status_mb("VmRSS:")
}

fn status_mb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[test]
#[ignore = "a benchmark: run with --release -- --ignored"]
fn analyze_100k_documents_in_10_s_and_500_mb() {
    let n = std::env::var("WEFT_SCALE_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_DOCS);
    let dir = std::env::temp_dir().join(format!("weft-analyze-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = mesh(n);
    let documents = text.matches("\n---\n").count();
    std::fs::write(dir.join("mesh.yaml"), &text).expect("write");
    let megabytes = text.len() / 1_000_000;
    drop(text);

    let start = Instant::now();
    let loaded = resources::load_paths(std::slice::from_ref(&dir));
    let read = start.elapsed();
    let read_mb = rss_mb();
    let translated = translate::translate(&loaded.documents);
    let translated_at = start.elapsed();
    let translated_mb = rss_mb();
    let findings = validate::analyze(&loaded, &translated);
    let took = start.elapsed();
    let peak = peak_rss_mb();
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "{documents} documents ({megabytes} MB, one file): read {read:?}, translated {translated_at:?}, analyzed {took:?}; RSS after reading {read_mb:?} MB, after translating {translated_mb:?} MB, peak {peak:?} MB; {} findings",
        findings.len()
    );
    assert_eq!(loaded.documents.len(), documents, "every document read");
    assert!(findings.is_empty(), "{:?}", &findings[..findings.len().min(5)]);
    assert!(took <= TIME_LIMIT, "{took:?} > {TIME_LIMIT:?}");
    if let Some(mb) = peak {
        assert!(mb <= MEMORY_LIMIT_MB, "peak RSS {mb} MB > {MEMORY_LIMIT_MB} MB");
    }
}
