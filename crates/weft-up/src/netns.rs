//! `weft up --netns`: each instance in its own network namespace, like a pod.
//!
//! One bridge per run in the root namespace holds the gateway address of a private /24; each
//! instance gets a namespace joined to the bridge by a veth pair (`eth0` inside), its own
//! address, a default route via the gateway, and `/etc/netns/NS/hosts` mapping every service's
//! names to its VIP (`ip netns exec` bind-mounts it over `/etc/hosts`, so the app resolves
//! `reviews` with no DNS server). `weft init-iptables` then installs transparent capture inside
//! it. The only rule in the root namespace lets the bridge's own traffic through FORWARD (which
//! bridged packets cross when br_netfilter is loaded). What a run creates is recorded in the run directory before it is created, so that a later
//! `weft up` or `weft down` removes what a killed run left behind.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The `SO_MARK` sidecars put on their own connections; capture lets marked traffic through
/// (the sidecar runs as root in its namespace, so it may set it).
pub const PROXY_MARK: u32 = 1337;
/// The ports a sidecar uses inside its namespace: the same in every namespace, as in a pod.
pub const ADMIN_PORT: u16 = 15000;
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
pub const MESH_PORT: u16 = 15008;

/// The addresses of one run: a private /24, `.1` on the bridge, instances from `.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub prefix: [u8; 3],
}

/// What a run created (or is about to): `netns.json` in the run directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub bridge: String,
    pub namespaces: Vec<String>,
    /// The root-namespace ends of the veth pairs.
    pub veths: Vec<String>,
}

/// The network of a running `weft up --netns`. Removed by [`Network::teardown`], and on drop
/// when an error left it half built.
#[derive(Debug)]
pub struct Network {
    pub subnet: Subnet,
    /// Short and unique per run: namespaces are `weft-<run>-<n>`.
    pub run_id: String,
    record: PathBuf,
    created: Created,
}

/// One instance's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNet {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The root-namespace end of its veth pair (`eth0` inside).
    pub veth: String,
}

// === impl Subnet ===

impl Subnet {
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// Instance `n` (0-based) gets `.n+2`; a /24 holds 253 of them.
    pub fn instance(&self, n: usize) -> Option<Ipv4Addr> {
        u8::try_from(n + 2)
            .ok()
            .filter(|h| *h < 255)
            .map(|h| self.host(h))
    }

    fn host(&self, h: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, h)
    }

    pub fn cidr(&self) -> String {
        format!("{}0/24", self.dotted_prefix())
    }

    /// `a.b.c.`, how every address of the subnet starts.
    fn dotted_prefix(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.")
    }
}

// === impl Network ===

impl Network {
    /// Checks that this can work at all (root, `ip`, `iptables`), picks a free /24 and creates
    /// the bridge with the gateway on it. Call [`clean_leftovers`] first.
    pub fn create(run_root: &Path) -> anyhow::Result<Network> {
        preflight()?;
        let mut last_error = None;
        // Two runs starting together may pick the same name or /24: the one that loses sees
        // it (the bridge exists, or its /24 is on two links) and tries another.
        for _ in 0..16 {
            let run_id = format!("{:04x}", fastrand::u16(..));
            let subnet = free_subnet()?;
            let bridge = format!("weftbr{run_id}");
            if let Err(e) = ip(&["link", "add", &bridge, "type", "bridge"]) {
                last_error = Some(e);
                continue;
            }
            let mut net = Network {
                subnet,
                record: record_path(run_root),
                created: Created::default(),
                run_id,
            };
            net.created.bridge = bridge.clone();
            net.save()?;
            let gateway = format!("{}/24", subnet.gateway());
            ip(&["addr", "add", &gateway, "dev", &bridge])?;
            let prefix = subnet.dotted_prefix();
            let links_on_it = output("ip", &["-4", "-o", "addr"])?
                .lines()
                .filter(|l| l.contains(&format!(" {prefix}")))
                .count();
            if links_on_it != 1 {
                last_error = Some(anyhow::anyhow!("{} is in use", subnet.cidr()));
                continue; // dropping `net` removes the bridge
            }
            ip(&["link", "set", &bridge, "up"])?;
            // With br_netfilter loaded, bridged packets cross the root namespace's FORWARD
            // chain, which Docker sets to DROP: let this bridge's own traffic through.
            output("iptables", &forward_rule("-I", &bridge))?;
            return Ok(net);
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .context("creating the bridge for weft up --netns")
    }

    /// Instance `n`'s namespace, address and veth name (nothing is created yet).
    pub fn instance(&self, n: usize) -> anyhow::Result<InstanceNet> {
        let ip = self
            .subnet
            .instance(n)
            .context("more than 253 instances do not fit one weft up --netns")?;
        Ok(InstanceNet {
            netns: format!("weft-{}-{n}", self.run_id),
            ip,
            gateway: self.subnet.gateway(),
            veth: format!("weft{}v{n}", self.run_id),
        })
    }

    /// Creates each instance's namespace (with its hosts lines), all at once: recorded first,
    /// then built in parallel (each takes a few dozen `ip`/`iptables` runs).
    pub fn add_instances(&mut self, instances: &[(InstanceNet, String)], exe: &Path) -> anyhow::Result<()> {
        for (inst, _) in instances {
            self.created.namespaces.push(inst.netns.clone());
            self.created.veths.push(inst.veth.clone());
        }
        self.save()?;
        let bridge = self.created.bridge.as_str();
        // A few at a time: enough to hide the latency of the commands, not a thread per pod.
        for batch in instances.chunks(8) {
            std::thread::scope(|s| {
                let builds: Vec<_> = batch
                    .iter()
                    .map(|(inst, hosts)| s.spawn(move || build_instance(bridge, inst, hosts, exe)))
                    .collect();
                builds
                    .into_iter()
                    .map(|b| {
                        b.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("building a namespace panicked")))
                    })
                    .collect::<anyhow::Result<Vec<()>>>()
            })?;
        }
        Ok(())
    }

    /// Kills whatever still runs in the namespaces, deletes them, the veths, the bridge (and
    /// its FORWARD rule) and the hosts files, then the record. Safe to call twice.
    pub fn teardown(&mut self) {
        remove(&self.created);
        std::fs::remove_file(&self.record).ok();
        self.created = Created::default();
    }

    fn save(&self) -> anyhow::Result<()> {
        let tmp = self.record.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.created)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.record).with_context(|| format!("writing {}", self.record.display()))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// One instance's namespace: hosts file, veth to `bridge`, address, default route via the
/// gateway, then capture with `exe init-iptables`.
fn build_instance(bridge: &str, inst: &InstanceNet, hosts: &str, exe: &Path) -> anyhow::Result<()> {
    write_hosts(inst, hosts)?;

    let ns = inst.netns.as_str();
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&[
        "link", "add", &inst.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["link", "set", &inst.veth, "master", bridge])?;
    ip(&["link", "set", &inst.veth, "up"])?;
    ip(&["-n", ns, "addr", "add", &format!("{}/24", inst.ip), "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    // Every VIP is routed (the NAT redirect then hands the connection to the sidecar).
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &inst.gateway.to_string(),
    ])?;
    let mark = PROXY_MARK.to_string();
    let gateway = format!("{}/32", inst.gateway);
    let capture = [
        "init-iptables",
        "--proxy-mark",
        &mark,
        // The control plane lives on the gateway: the sidecar's own discovery and identity
        // streams (not marked) must reach it directly.
        "--skip-outbound-cidrs",
        &gateway,
    ];
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(capture)
        .output()
        .context("running weft init-iptables")?;
    anyhow::ensure!(
        out.status.success(),
        "weft init-iptables in {ns} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Writes `inst`'s `/etc/netns/NS/hosts`: localhost, itself, then `hosts`. Rewritten in place,
/// so apps already running (which see it bind-mounted as `/etc/hosts`) read the new lines.
pub fn write_hosts(inst: &InstanceNet, hosts: &str) -> anyhow::Result<()> {
    let etc = etc_dir(&inst.netns);
    std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{} {}\n{hosts}", inst.ip, inst.netns),
    )
    .with_context(|| format!("writing {}/hosts", etc.display()))
}

/// Removes the network a previous run in `run_root` recorded and did not remove (it was killed,
/// or the machine lost power). Nothing recorded: nothing to do.
pub fn clean_leftovers(run_root: &Path) -> anyhow::Result<bool> {
    let path = record_path(run_root);
    let created: Created = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    preflight().with_context(|| format!("{} records namespaces a previous run left", path.display()))?;
    remove(&created);
    std::fs::remove_file(&path).ok();
    Ok(true)
}

/// Whether the namespace of process `pid` has a TCP socket listening on `port` (any address).
/// Read from `/proc/PID/net/tcp{,6}`, which list the sockets of the process's namespace: a
/// connection would not do, since capture hands it to the sidecar before the app sees it.
/// A TCP connection to `addr` made from inside network namespace `netns`, e.g. to a sidecar's
/// admin port on that namespace's loopback. Only a short-lived thread enters the namespace; the
/// socket stays in it and is used from anywhere.
pub fn connect_in(netns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let path = Path::new("/run/netns").join(netns);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(&path)?;
                // Affects this thread only, which ends right after.
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                TcpStream::connect_timeout(&addr, timeout)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the thread entering the namespace panicked",
                ))
            })
    })
}

pub fn listening(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["tcp", "tcp6"].iter().any(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or("");
            let state = fields.nth(1).unwrap_or("");
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            state == LISTEN && local_port == Some(port)
        })
    })
}

fn remove(created: &Created) {
    for ns in &created.namespaces {
        // Processes keep a namespace (and its veth) alive after `ip netns del`: stop them first.
        if let Ok(pids) = output("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                crate::rundir::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        std::fs::remove_dir_all(etc_dir(ns)).ok();
    }
    if !created.bridge.is_empty() {
        // Bounded: one copy is inserted per run, and a bridge name is not reused by a live run.
        for _ in 0..4 {
            if output("iptables", &forward_rule("-D", &created.bridge)).is_err() {
                break;
            }
        }
    }
    for link in created.veths.iter().chain(std::iter::once(&created.bridge)) {
        if !link.is_empty() && output("ip", &["link", "show", link]).is_ok() {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// `FORWARD -i BRIDGE -o BRIDGE -j ACCEPT`, inserted (`-I`) or deleted (`-D`).
fn forward_rule<'a>(verb: &'a str, bridge: &'a str) -> [&'a str; 8] {
    [verb, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
}

/// Whether `--netns` can work here: root, and `ip` and `iptables` to run.
pub fn preflight() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "weft up --netns needs root (it creates network namespaces, veth pairs and iptables rules): \
         run it with sudo, or without --netns"
    );
    for (bin, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        Command::new(bin)
            .arg("-V")
            .output()
            .with_context(|| format!("weft up --netns needs `{bin}` ({package}), which cannot be run"))?;
    }
    Ok(())
}

/// A 10.233.X.0/24 that no address or route of this machine uses.
fn free_subnet() -> anyhow::Result<Subnet> {
    let used = format!(
        "{}\n{}",
        output("ip", &["-4", "addr"])?,
        output("ip", &["-4", "route"])?
    );
    let start = fastrand::u8(..);
    (0..=255u8)
        .map(|i| Subnet {
            prefix: [10, 233, start.wrapping_add(i)],
        })
        .find(|s| !used.contains(&s.dotted_prefix()))
        .context("no free /24 left in 10.233.0.0/16 for weft up --netns")
}

fn record_path(run_root: &Path) -> PathBuf {
    run_root.join("netns.json")
}

fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// `ip args...`, which must succeed.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    output("ip", args).map(|_| ())
}

/// Runs a command to completion; its stdout, or an error naming it with its stderr.
fn output(bin: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {bin} {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "`{bin} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_fill_the_subnet_after_the_gateway() {
        let s = Subnet { prefix: [10, 233, 7] };
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 233, 7, 1));
        assert_eq!(s.instance(0), Some(Ipv4Addr::new(10, 233, 7, 2)));
        assert_eq!(s.instance(252), Some(Ipv4Addr::new(10, 233, 7, 254)));
        assert_eq!(s.instance(253), None, ".255 is the broadcast address");
        assert_eq!(s.cidr(), "10.233.7.0/24");
    }

    #[test]
    fn a_listening_socket_is_seen_in_proc() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(listening(std::process::id(), port));
        drop(listener);
        assert!(!listening(std::process::id(), port));
    }
}
