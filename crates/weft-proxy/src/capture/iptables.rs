//! The job of istio-init / linkerd proxy-init: NAT rules that send a pod's TCP traffic through
//! the sidecar.
//!
//! Inbound connections (`PREROUTING`) go to [`IptablesOptions::inbound_capture_port`], outbound
//! ones (`OUTPUT`) to [`IptablesOptions::outbound_capture_port`]. The proxy's own outbound
//! traffic is excluded by uid/gid (needs no capability in the proxy, istio-init's way) and/or by
//! socket mark (Linkerd's way, needs `CAP_NET_ADMIN` in the proxy to set `SO_MARK`); without
//! that exclusion the proxy's upstream connections would be captured again, forever.
//!
//! Applying is idempotent: Weft's chains are created if missing and flushed before being
//! refilled, and the jumps from the built-in chains are appended only when `-C` says they are
//! not there yet, so running the init container twice leaves one copy of every rule.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, ExitStatus};

/// Chain that `PREROUTING` jumps to: decides which inbound TCP connections are captured.
pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
/// Chain holding the inbound `REDIRECT` to the inbound capture port.
pub const IN_REDIRECT_CHAIN: &str = "WEFT_IN_REDIRECT";
/// Chain that `OUTPUT` jumps to: decides which outbound TCP connections are captured.
pub const OUTPUT_CHAIN: &str = "WEFT_OUTPUT";
/// Chain holding the outbound `REDIRECT` to the outbound capture port.
pub const REDIRECT_CHAIN: &str = "WEFT_REDIRECT";

/// Every chain Weft owns, in the order they are created. `clean` deletes exactly these.
const CHAINS: [&str; 4] = [INBOUND_CHAIN, IN_REDIRECT_CHAIN, OUTPUT_CHAIN, REDIRECT_CHAIN];

/// The jumps from the built-in chains into Weft's: `(built-in chain, target chain)`.
const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

/// How the pod's traffic is captured. IPv4 only (`iptables`, not `ip6tables`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IptablesOptions {
    /// Port the proxy's inbound listener accepts redirected connections on. Default 15006.
    pub inbound_capture_port: u16,
    /// Port the proxy's outbound listener accepts redirected connections on. Default 15001.
    pub outbound_capture_port: u16,
    /// Uid the proxy runs as; its outbound traffic is not captured. Default none.
    pub proxy_uid: Option<u32>,
    /// Gid the proxy runs as; its outbound traffic is not captured. Default none.
    pub proxy_gid: Option<u32>,
    /// `SO_MARK` the proxy puts on its sockets; marked traffic is not captured. Default none.
    pub proxy_mark: Option<u32>,
    /// Inbound destination ports to capture; empty (the default) captures every TCP port.
    pub inbound_ports: Vec<u16>,
    /// Inbound destination ports never captured (e.g. ssh). Default empty.
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured (e.g. a database the mesh cannot speak). Default
    /// empty.
    pub skip_outbound_ports: Vec<u16>,
    /// IPv4 destinations (`a.b.c.d/len` or a bare address) never captured outbound. Default
    /// empty.
    pub skip_outbound_cidrs: Vec<String>,
    /// The mesh's own mTLS tunnel port: already addressed to the proxy, never captured inbound.
    /// Default 15008.
    pub mesh_port: u16,
    /// The proxy's admin port (metrics, readiness): never captured. Default 15000.
    pub admin_port: u16,
}

/// One or more bad fields in [`IptablesOptions`], all reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid capture options: {}", join_problems(.problems))]
pub struct InvalidOptions {
    /// Every problem found, in field order.
    pub problems: Vec<OptionProblem>,
}

/// A single bad field in [`IptablesOptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionProblem {
    /// A port field or list entry is 0, which iptables would reject or misread.
    ZeroPort { field: &'static str },
    /// Neither uid, gid nor mark is set: the proxy's own traffic would be captured in a loop.
    NoProxyExclusion,
    /// An entry of `skip_outbound_cidrs` is not an IPv4 address or CIDR.
    BadCidr { value: String },
}

/// Why installing or removing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(transparent)]
    InvalidOptions(#[from] InvalidOptions),
    /// The iptables binary could not be started at all (not installed, wrong `--iptables`).
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// iptables ran and refused the command.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// One step of installing the rules. Kept apart from the argument lists so that `apply` knows
/// which steps need an existence check first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `-N chain`, skipped when the chain already exists.
    NewChain(&'static str),
    /// `-F chain`: a re-run replaces the old rules instead of appending duplicates.
    Flush(&'static str),
    /// `-A chain rule...` into one of Weft's (just flushed) chains.
    Append(&'static str, Vec<String>),
    /// `-A builtin rule...` into a built-in chain, skipped when `-C` finds it already there.
    Jump(&'static str, Vec<String>),
}

// === impl IptablesOptions ===

impl Default for IptablesOptions {
    fn default() -> Self {
        Self {
            inbound_capture_port: 15006,
            outbound_capture_port: 15001,
            proxy_uid: None,
            proxy_gid: None,
            proxy_mark: None,
            inbound_ports: Vec::new(),
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
            mesh_port: 15008,
            admin_port: 15000,
        }
    }
}

impl IptablesOptions {
    /// Checks every field and reports all problems together.
    pub fn validate(&self) -> Result<(), InvalidOptions> {
        let mut problems = Vec::new();
        let single = [
            ("inbound_capture_port", self.inbound_capture_port),
            ("outbound_capture_port", self.outbound_capture_port),
            ("mesh_port", self.mesh_port),
            ("admin_port", self.admin_port),
        ];
        for (field, port) in single {
            if port == 0 {
                problems.push(OptionProblem::ZeroPort { field });
            }
        }
        if self.proxy_uid.is_none() && self.proxy_gid.is_none() && self.proxy_mark.is_none() {
            problems.push(OptionProblem::NoProxyExclusion);
        }
        let lists = [
            ("inbound_ports", &self.inbound_ports),
            ("skip_inbound_ports", &self.skip_inbound_ports),
            ("skip_outbound_ports", &self.skip_outbound_ports),
        ];
        for (field, ports) in lists {
            if ports.contains(&0) {
                problems.push(OptionProblem::ZeroPort { field });
            }
        }
        for cidr in &self.skip_outbound_cidrs {
            if !is_ipv4_cidr(cidr) {
                problems.push(OptionProblem::BadCidr { value: cidr.clone() });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidOptions { problems })
        }
    }
}

// === impl OptionProblem ===

impl fmt::Display for OptionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroPort { field } => write!(f, "{field}: port 0 is not a valid port"),
            Self::NoProxyExclusion => f.write_str(
                "none of proxy uid, proxy gid or proxy mark is set: \
                 the proxy's own traffic would be captured in a loop",
            ),
            Self::BadCidr { value } => write!(f, "skip_outbound_cidrs: {value:?} is not an IPv4 CIDR"),
        }
    }
}

// === impl Step ===

impl Step {
    /// The full argument list for iptables, table included.
    fn args(&self) -> Vec<String> {
        let (verb, chain, rule): (&str, &str, &[String]) = match self {
            Self::NewChain(chain) => ("-N", chain, &[]),
            Self::Flush(chain) => ("-F", chain, &[]),
            Self::Append(chain, rule) | Self::Jump(chain, rule) => ("-A", chain, rule),
        };
        let mut args = vec![
            "-t".to_owned(),
            "nat".to_owned(),
            verb.to_owned(),
            chain.to_owned(),
        ];
        args.extend(rule.iter().cloned());
        args
    }
}

/// The iptables argument lists that install capture, in order. Each list is complete
/// (`-t nat ...`), ready to pass to the iptables binary.
///
/// Pure: it does not validate `opts` (see [`IptablesOptions::validate`]) and it is the literal,
/// non-idempotent form; [`apply`] adds the existence checks that make re-runs safe.
pub fn rules(opts: &IptablesOptions) -> Vec<Vec<String>> {
    plan(opts).iter().map(Step::args).collect()
}

/// Installs capture by running `iptables_bin` (e.g. `iptables`, `iptables-legacy`). Safe to run
/// again: chains are refilled and jumps are not duplicated.
pub fn apply(opts: &IptablesOptions, iptables_bin: &str) -> Result<(), IptablesError> {
    opts.validate()?;
    for step in plan(opts) {
        match &step {
            Step::NewChain(chain) if chain_exists(iptables_bin, chain)? => continue,
            Step::Jump(chain, rule) if rule_exists(iptables_bin, chain, rule)? => continue,
            _ => {}
        }
        run_checked(iptables_bin, &step.args())?;
    }
    Ok(())
}

/// Removes Weft's jumps and chains. Does nothing for what is already gone, so it is safe to
/// run on a pod that was never captured.
pub fn clean(iptables_bin: &str) -> Result<(), IptablesError> {
    for (builtin, target) in JUMPS {
        let rule = jump_rule(target);
        // Loop so that copies left by older, non-idempotent runs go too; bounded so a
        // misbehaving iptables cannot spin us forever.
        for _ in 0..64 {
            if !rule_exists(iptables_bin, builtin, &rule)? {
                break;
            }
            run_checked(iptables_bin, &rule_args("-D", builtin, &rule))?;
        }
    }
    // Flush all before deleting any: a chain cannot be deleted while another refers to it.
    let present: Vec<&str> = CHAINS
        .into_iter()
        .map(|chain| chain_exists(iptables_bin, chain).map(|found| (chain, found)))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter_map(|(chain, found)| found.then_some(chain))
        .collect();
    for chain in &present {
        run_checked(iptables_bin, &rule_args("-F", chain, &[]))?;
    }
    for chain in &present {
        run_checked(iptables_bin, &rule_args("-X", chain, &[]))?;
    }
    Ok(())
}

/// A shell script doing what [`apply`] does, for `--dry-run` and for review.
pub fn script(opts: &IptablesOptions) -> String {
    let mut out = String::from("#!/bin/sh\n# Weft transparent capture (iptables, nat table)\nset -e\n");
    for step in plan(opts) {
        let line = shell_line("iptables", &step.args());
        match &step {
            Step::NewChain(chain) => {
                let check = shell_line("iptables", &rule_args("-S", chain, &[]));
                out.push_str(&format!("{check} >/dev/null 2>&1 || {line}\n"));
            }
            Step::Jump(chain, rule) => {
                let check = shell_line("iptables", &rule_args("-C", chain, rule));
                out.push_str(&format!("{check} 2>/dev/null || {line}\n"));
            }
            Step::Flush(_) | Step::Append(..) => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// The ordered steps. Order matters: iptables evaluates rules top to bottom, so every
/// `RETURN` (exclusion) precedes the catch-all jump to the redirect chain.
fn plan(opts: &IptablesOptions) -> Vec<Step> {
    let mut steps: Vec<Step> = CHAINS.iter().map(|c| Step::NewChain(c)).collect();
    steps.extend(CHAINS.iter().map(|c| Step::Flush(c)));

    let redirect = |port: u16| words(&format!("-p tcp -j REDIRECT --to-ports {port}"));
    let ret_port = |port: u16| words(&format!("-p tcp --dport {port} -j RETURN"));

    // Inbound: the mesh and admin ports are addressed to the proxy itself already.
    let mut inbound = vec![ret_port(opts.mesh_port), ret_port(opts.admin_port)];
    inbound.extend(opts.skip_inbound_ports.iter().map(|&p| ret_port(p)));
    if opts.inbound_ports.is_empty() {
        inbound.push(words(&format!("-p tcp -j {IN_REDIRECT_CHAIN}")));
    } else {
        inbound.extend(
            opts.inbound_ports
                .iter()
                .map(|p| words(&format!("-p tcp --dport {p} -j {IN_REDIRECT_CHAIN}"))),
        );
    }
    steps.extend(inbound.into_iter().map(|r| Step::Append(INBOUND_CHAIN, r)));
    steps.push(Step::Append(
        IN_REDIRECT_CHAIN,
        redirect(opts.inbound_capture_port),
    ));

    // Outbound: the proxy's own connections first, then loopback (apps talking to localhost,
    // including to the proxy's admin port), then the user's exclusions.
    let mut outbound = Vec::new();
    if let Some(uid) = opts.proxy_uid {
        outbound.push(words(&format!("-m owner --uid-owner {uid} -j RETURN")));
    }
    if let Some(gid) = opts.proxy_gid {
        outbound.push(words(&format!("-m owner --gid-owner {gid} -j RETURN")));
    }
    if let Some(mark) = opts.proxy_mark {
        outbound.push(words(&format!("-m mark --mark {mark:#x} -j RETURN")));
    }
    outbound.push(words("-d 127.0.0.0/8 -j RETURN"));
    outbound.extend(opts.skip_outbound_ports.iter().map(|&p| ret_port(p)));
    outbound.extend(
        opts.skip_outbound_cidrs
            .iter()
            .map(|cidr| words(&format!("-d {cidr} -j RETURN"))),
    );
    outbound.push(words(&format!("-p tcp -j {REDIRECT_CHAIN}")));
    steps.extend(outbound.into_iter().map(|r| Step::Append(OUTPUT_CHAIN, r)));
    steps.push(Step::Append(REDIRECT_CHAIN, redirect(opts.outbound_capture_port)));

    steps.extend(
        JUMPS
            .iter()
            .map(|(builtin, target)| Step::Jump(builtin, jump_rule(target))),
    );
    steps
}

fn jump_rule(target: &str) -> Vec<String> {
    words(&format!("-p tcp -j {target}"))
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn rule_args(verb: &str, chain: &str, rule: &[String]) -> Vec<String> {
    let mut args = words(&format!("-t nat {verb} {chain}"));
    args.extend(rule.iter().cloned());
    args
}

/// `-S chain` exits non-zero when the chain does not exist; that exit code, not the message,
/// is the answer.
fn chain_exists(bin: &str, chain: &str) -> Result<bool, IptablesError> {
    Ok(run(bin, &rule_args("-S", chain, &[]))?.0.success())
}

fn rule_exists(bin: &str, chain: &str, rule: &[String]) -> Result<bool, IptablesError> {
    Ok(run(bin, &rule_args("-C", chain, rule))?.0.success())
}

fn run_checked(bin: &str, args: &[String]) -> Result<(), IptablesError> {
    let (status, stderr) = run(bin, args)?;
    if status.success() {
        Ok(())
    } else {
        Err(IptablesError::Failed {
            command: shell_line(bin, args),
            status,
            stderr: stderr.trim().to_owned(),
        })
    }
}

fn run(bin: &str, args: &[String]) -> Result<(ExitStatus, String), IptablesError> {
    tracing::debug!(command = %shell_line(bin, args), "iptables");
    let output = Command::new(bin)
        .args(args)
        .output()
        .map_err(|source| IptablesError::Spawn {
            command: shell_line(bin, args),
            source,
        })?;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Our arguments are ports, numbers, chain names and validated CIDRs, none of which needs
/// quoting; joining with spaces gives a line a shell runs as-is.
fn shell_line(bin: &str, args: &[String]) -> String {
    let mut line = bin.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

fn is_ipv4_cidr(s: &str) -> bool {
    let (addr, len) = match s.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (s, None),
    };
    addr.parse::<Ipv4Addr>().is_ok() && len.is_none_or(|len| len.parse::<u8>().is_ok_and(|len| len <= 32))
}

fn join_problems(problems: &[OptionProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
