//! Supervision (issue 19, item 2): every process `weft up` starts dies with it, whatever kills
//! it — grandchildren too — and `weft down` / the next `weft up` find and stop what a run killed
//! with -9 left; a run's log files belong to it, the previous run's kept once as `.prev`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::up::{recorded_pids, still_running, Up};
use common::{run, tempdir, weft_bin};

/// One service whose app starts a grandchild (`sleep MARK`, found by its unique duration)
/// before it execs the demo app.
fn mesh_with_grandchild(dir: &Path, mark: u32) {
    let yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: details}}
spec:
  selector: {{app: details}}
  ports: [{{name: http, port: 9080}}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {{name: details-v1}}
spec:
  labels: {{app: details, version: v1}}
  ports: [{{name: http, port: 9080}}]
  command: ["sh", "-c", "sleep {mark} & exec {weft} demo-app details"]
"#,
        weft = weft_bin()
    );
    std::fs::write(dir.join("mesh.yaml"), yaml).expect("write mesh");
}

/// The pids of `sleep MARK` processes.
fn grandchildren(mark: u32) -> Vec<u32> {
    run("pgrep", &["-f", &format!("^sleep {mark}$")])
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_9(pid: u32) {
    let _ = run("kill", &["-9", &pid.to_string()]);
}

/// A unique duration for this test's `sleep`.
fn mark(salt: u32) -> u32 {
    100_000 + (std::process::id() % 50_000) * 4 + salt
}

#[test]
fn kill_9_of_weft_up_takes_children_and_grandchildren_with_it() {
    let dir = tempdir::Dir::new("weft-supervise");
    let run_dir = tempdir::Dir::new("weft-supervise-run");
    let mark = mark(1);
    mesh_with_grandchild(&dir.path, mark);
    let mut up = Up::start(&dir.path, &run_dir.path);
    up.wait_for("Open the application", Duration::from_secs(60));
    let pids = recorded_pids(&run_dir.path);
    assert_eq!(pids.len(), 3, "weft up, the app and its sidecar");
    until("the grandchild runs", Duration::from_secs(5), || {
        !grandchildren(mark).is_empty()
    });

    kill_9(pids[0]);
    let _ = up.child.wait();
    until(
        "every process of the run stops within seconds of weft up's death",
        Duration::from_secs(10),
        || still_running(&pids).is_empty() && grandchildren(mark).is_empty(),
    );
    // The reaper, done, removes the record.
    until("the reaper removes the record", Duration::from_secs(10), || {
        !run_dir.path.join("up.json").exists()
    });
    // Nothing left, and the next `weft down` says so.
    let down = run(
        weft_bin(),
        &["down", "--run-dir", run_dir.path.to_str().expect("utf-8")],
    );
    assert!(down.status.success(), "{}", down.stderr);
}

/// Starts a run, then kills it so that something is left: its reaper first (which would
/// otherwise stop the leftovers at once), then `weft up`; the app and sidecar die with it, a
/// process placed in the group of the app (or sidecar: `which` 1 or 2 in the record) stays, as
/// a grandchild that outlived its parents would. Returns the leftover.
fn killed_run_with_leftover(dir: &Path, run_dir: &Path, mark: u32, which: usize) -> std::process::Child {
    use std::os::unix::process::CommandExt as _;
    let mut up = Up::start(dir, run_dir);
    up.wait_for("Open the application", Duration::from_secs(60));
    let pids = recorded_pids(run_dir);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("up.json")).expect("up.json")).expect("json");
    let reaper = rec["reaperPid"].as_u64().expect("the record names the reaper") as u32;
    let leftover = std::process::Command::new("sleep")
        .arg((mark + 10_000).to_string())
        .process_group(pids[which] as i32)
        .spawn()
        .expect("spawn a process in the group");
    kill_9(reaper);
    until("the reaper is gone", Duration::from_secs(5), || {
        still_running(&[reaper]).is_empty()
    });
    kill_9(pids[0]);
    let _ = up.child.wait();
    until(
        "the app and sidecar die with weft up",
        Duration::from_secs(10),
        || still_running(&pids).is_empty(),
    );
    // The sh's own `sleep` grandchild is also left; not the point here.
    let _ = grandchildren(mark).into_iter().map(kill_9).count();
    assert_eq!(still_running(&[leftover.id()]), vec![leftover.id()]);
    leftover
}

#[test]
fn down_stops_what_a_killed_run_left_and_the_next_run_keeps_its_logs_once() {
    let dir = tempdir::Dir::new("weft-leftovers");
    let run_dir = tempdir::Dir::new("weft-leftovers-run");
    let mark = mark(2);
    mesh_with_grandchild(&dir.path, mark);
    let mut leftover = killed_run_with_leftover(&dir.path, &run_dir.path, mark, 1);
    let down = run(
        weft_bin(),
        &["down", "--run-dir", run_dir.path.to_str().expect("utf-8")],
    );
    assert!(down.status.success(), "{}", down.stderr);
    assert!(down.stdout.contains("left running"), "{}", down.stdout);
    let _ = leftover.wait();
    assert!(!run_dir.path.join("up.json").exists());

    // A new run in the same directory: the old logs are kept once, the new ones are new files.
    let log = run_dir.path.join("logs/details-v1-0.log");
    let inode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let old_inode = inode(&log);
    assert!(old_inode.is_some());
    let mut again = Up::start(&dir.path, &run_dir.path);
    again.wait_for("Open the application", Duration::from_secs(60));
    let prev = run_dir.path.join("logs/details-v1-0.log.prev");
    assert_eq!(inode(&prev), old_inode, "the previous run's log is kept as .prev");
    assert_ne!(inode(&log), old_inode, "a new file for the new run");
    // `weft logs` shows this run's files only.
    let logs = run(
        weft_bin(),
        &[
            "logs",
            "details-v1",
            "--run-dir",
            run_dir.path.to_str().expect("utf-8"),
        ],
    );
    assert!(logs.status.success(), "{}", logs.stderr);
    assert!(!logs.stdout.contains(".prev"), "{}", logs.stdout);
}

#[test]
fn the_next_up_stops_what_a_killed_run_left() {
    let dir = tempdir::Dir::new("weft-leftovers-up");
    let run_dir = tempdir::Dir::new("weft-leftovers-up-run");
    let mark = mark(3);
    mesh_with_grandchild(&dir.path, mark);
    let mut leftover = killed_run_with_leftover(&dir.path, &run_dir.path, mark, 2);
    let mut again = Up::start(&dir.path, &run_dir.path);
    again.wait_for("left running", Duration::from_secs(30));
    let _ = leftover.wait();
    again.wait_for("Open the application", Duration::from_secs(60));
}
