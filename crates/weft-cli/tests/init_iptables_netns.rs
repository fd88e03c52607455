//! `weft init-iptables` against a real kernel, inside network namespaces this test creates.
//!
//! Needs root (to create namespaces and load NAT rules); without it each test prints that it
//! skipped, and fails under `CI=true` or `WEFT_REQUIRE_ROOT=1`. Every namespace is deleted when its guard drops, also when an assertion fails, and
//! all traffic stays inside it: the only addresses used live on a veth pair inside it.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use weft_proxy::capture::original_dst;

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A network namespace owned by one test; deleted on drop.
struct Netns {
    name: String,
}

// === impl Netns ===

impl Netns {
    /// Creates `weft-<tag>-<pid>`, or returns `None` (after saying why) when not root.
    fn create(tag: &str) -> Option<Self> {
        if !weft_test_support::privilege::require_root(tag, "to create network namespaces and NAT rules") {
            return None;
        }
        let name = format!("weft-{tag}-{}", std::process::id());
        // A namespace left over by a killed earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        check(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// `ip -n NS args...`, which must succeed.
    fn ip(&self, args: &[&str]) -> Output {
        check(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip netns exec NS program args...`, returning the output whatever the exit status.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("spawn ip netns exec")
    }

    /// `weft init-iptables args...` inside the namespace, which must succeed.
    fn init_iptables(&self, args: &[&str]) -> Output {
        let out = self.exec(WEFT, &[&["init-iptables"], args].concat());
        assert!(
            out.status.success(),
            "weft init-iptables {args:?}: {}",
            show(&out)
        );
        out
    }

    /// `iptables -t nat -S` inside the namespace.
    fn nat_rules(&self) -> String {
        let out = self.exec("iptables", &["-t", "nat", "-S"]);
        assert!(out.status.success(), "iptables -S: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread that has entered the namespace. Sockets keep the namespace they
    /// were created in, so what `f` returns can be used from any thread afterwards.
    fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("open netns handle");
            // setns affects only this thread, which exits afterwards.
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its interfaces and rules with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn check(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", show(&out));
    out
}

fn show(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn count(haystack: &str, line: &str) -> usize {
    haystack.lines().filter(|l| *l == line).count()
}

/// Reads the original destination of an accepted connection through the proxy's own API.
fn original_dst_of(stream: TcpStream) -> Option<SocketAddr> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        stream.set_nonblocking(true).expect("nonblocking");
        let stream = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
        original_dst(&stream).expect("SO_ORIGINAL_DST")
    })
}

#[test]
fn init_iptables_is_idempotent_and_clean_removes_everything() {
    let Some(ns) = Netns::create("ipt") else {
        return;
    };
    let flags = [
        "--proxy-uid",
        "1337",
        "--skip-inbound-ports",
        "22",
        "--skip-outbound-cidrs",
        "10.96.0.0/12",
    ];
    ns.init_iptables(&flags);
    let first = ns.nat_rules();
    for line in [
        "-N WEFT_INBOUND",
        "-N WEFT_IN_REDIRECT",
        "-N WEFT_OUTPUT",
        "-N WEFT_REDIRECT",
        "-A PREROUTING -p tcp -j WEFT_INBOUND",
        "-A OUTPUT -p tcp -j WEFT_OUTPUT",
        "-A WEFT_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
        "-A WEFT_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN",
        "-A WEFT_OUTPUT -d 10.96.0.0/12 -j RETURN",
        "-A WEFT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert_eq!(count(&first, line), 1, "{line:?} once in:\n{first}");
    }

    // A second run (an init container restarted) changes nothing.
    ns.init_iptables(&flags);
    assert_eq!(ns.nat_rules(), first);

    ns.init_iptables(&["--clean"]);
    let cleaned = ns.nat_rules();
    assert!(!cleaned.contains("WEFT"), "left over:\n{cleaned}");
    // Cleaning what is already clean is not an error.
    ns.init_iptables(&["--clean"]);
}

#[test]
fn dry_run_prints_the_script_and_changes_nothing() {
    let Some(ns) = Netns::create("dry") else {
        return;
    };
    let out = ns.init_iptables(&["--proxy-uid", "1337", "--dry-run"]);
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("iptables -t nat -A WEFT_OUTPUT -m owner --uid-owner 1337 -j RETURN"),
        "{script}"
    );
    assert!(!ns.nat_rules().contains("WEFT"));
}

#[test]
fn invalid_options_are_all_reported_and_nothing_is_installed() {
    let Some(ns) = Netns::create("bad") else {
        return;
    };
    let out = ns.exec(
        WEFT,
        &[
            "init-iptables",
            "--outbound-port",
            "0",
            "--skip-outbound-cidrs",
            "nope",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // No uid given is no problem: uid 1337 by default, as istio-iptables (issue 19).
    for problem in ["outbound_capture_port", "\"nope\""] {
        assert!(stderr.contains(problem), "{problem:?} in {stderr}");
    }
    assert!(!ns.nat_rules().contains("WEFT"));
}

#[test]
fn outbound_capture_preserves_the_original_destination() {
    let Some(ns) = Netns::create("cap") else {
        return;
    };
    // 10.201.x.2 is routable (via a veth pair whose both ends stay in the namespace; this
    // kernel has no dummy driver) but owned by nobody: without the redirect a connection to it
    // could never be accepted, so an accept proves the capture worked.
    let x = std::process::id() % 250;
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["addr", "add", &format!("10.201.{x}.1/24"), "dev", "v0"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    let target: SocketAddr = format!("10.201.{x}.2:8080").parse().expect("addr");

    // Stands in for the proxy's outbound listener.
    let listener = ns.run_inside(|| TcpListener::bind("0.0.0.0:0").expect("bind"));
    let port = listener.local_addr().expect("local addr").port();
    ns.init_iptables(&["--proxy-uid", "1337", "--outbound-port", &port.to_string()]);

    // Captured: this test runs as root, not as the proxy's uid.
    let client =
        ns.run_inside(move || TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect"));
    let (accepted, _) = listener.accept().expect("accept");
    assert_eq!(original_dst_of(accepted), Some(target));
    drop(client);

    // Loopback is excluded, so dialling the listener directly is not a redirect.
    let direct: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let client = ns.run_inside(move || TcpStream::connect(direct).expect("connect direct"));
    let (accepted, _) = listener.accept().expect("accept direct");
    assert_eq!(original_dst_of(accepted), None);
    drop(client);

    // The proxy's own uid is not captured: its connection heads for 10.201.x.2, which nobody
    // answers, and never reaches the listener.
    let dial = format!("exec 3<>/dev/tcp/10.201.{x}.2/8080");
    let out = ns.exec(
        "setpriv",
        &[
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            "timeout",
            "1",
            "bash",
            "-c",
            &dial,
        ],
    );
    // 124: `timeout` gave up on the unanswered dial (anything else means setpriv or bash
    // failed, and the check below would prove nothing).
    assert_eq!(out.status.code(), Some(124), "{}", show(&out));
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the proxy's own connection was captured: {other:?}"),
    }
}
