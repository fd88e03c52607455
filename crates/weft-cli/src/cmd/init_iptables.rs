//! `weft init-iptables`: install (or remove) the NAT rules that send a pod's TCP traffic
//! through its sidecar. Runs once, as root or with CAP_NET_ADMIN, in the pod's network
//! namespace before the application starts — the job of istio-init / linkerd proxy-init.

use anyhow::Context as _;
use weft_proxy::capture::iptables::{self, IptablesOptions};

/// The uid a sidecar runs as by convention (Istio's `istio-proxy` user), the default exclusion.
pub const DEFAULT_PROXY_UID: u32 = 1337;

/// Flags of `weft init-iptables`. Defaults match [`IptablesOptions::default`], with the proxy
/// excluded by uid [`DEFAULT_PROXY_UID`] when no uid, gid or mark is given.
#[derive(Debug, Clone, clap::Args)]
pub struct InitIptablesArgs {
    /// Port the proxy accepts captured inbound connections on.
    #[arg(long = "inbound-port", default_value_t = 15006)]
    pub inbound_port: u16,
    /// Port the proxy accepts captured outbound connections on.
    #[arg(long = "outbound-port", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Uid the proxy runs as; its own outbound traffic is not captured. Default: 1337, as
    /// istio-iptables, unless a gid or mark is given instead.
    #[arg(long)]
    pub proxy_uid: Option<u32>,
    /// Gid the proxy runs as; its own outbound traffic is not captured.
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// SO_MARK the proxy sets on its sockets; marked traffic is not captured (the proxy then
    /// needs CAP_NET_ADMIN).
    #[arg(long, value_parser = parse_u32_maybe_hex)]
    pub proxy_mark: Option<u32>,
    /// Inbound ports to capture, comma-separated (e.g. 9080,9090). Default: every TCP port.
    #[arg(long, value_delimiter = ',')]
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never captured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports never captured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound IPv4 destinations never captured, comma-separated CIDRs.
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_cidrs: Vec<String>,
    /// The mesh's mTLS tunnel port, never captured inbound.
    #[arg(long, default_value_t = 15008)]
    pub mesh_port: u16,
    /// The proxy's admin port, never captured inbound.
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    /// Print the shell script that would be run instead of running it.
    #[arg(long, conflicts_with = "clean")]
    pub dry_run: bool,
    /// Remove Weft's chains and jumps instead of installing them.
    #[arg(long)]
    pub clean: bool,
    /// The iptables binary to run (e.g. iptables-legacy).
    #[arg(long = "iptables", value_name = "PATH", default_value = "iptables")]
    pub iptables: String,
}

// === impl InitIptablesArgs ===

impl InitIptablesArgs {
    fn options(&self) -> IptablesOptions {
        IptablesOptions {
            inbound_capture_port: self.inbound_port,
            outbound_capture_port: self.outbound_port,
            proxy_uid: match (self.proxy_uid, self.proxy_gid, self.proxy_mark) {
                (None, None, None) => Some(DEFAULT_PROXY_UID),
                (uid, _, _) => uid,
            },
            proxy_gid: self.proxy_gid,
            proxy_mark: self.proxy_mark,
            inbound_ports: self.inbound_ports.clone(),
            skip_inbound_ports: self.skip_inbound_ports.clone(),
            skip_outbound_ports: self.skip_outbound_ports.clone(),
            skip_outbound_cidrs: self.skip_outbound_cidrs.clone(),
            mesh_port: self.mesh_port,
            admin_port: self.admin_port,
        }
    }
}

/// Runs `weft init-iptables`.
pub fn run(args: InitIptablesArgs) -> anyhow::Result<()> {
    if args.clean {
        return iptables::clean(&args.iptables).context("removing Weft's iptables rules");
    }
    let opts = args.options();
    // Validate before a dry run too, so the printed script is one that would be applied.
    opts.validate()?;
    if args.dry_run {
        print!("{}", iptables::script(&opts));
        return Ok(());
    }
    iptables::apply(&opts, &args.iptables).context("installing Weft's iptables rules")
}

/// Marks are usually written in hex (`0x539`), as iptables prints them.
fn parse_u32_maybe_hex(s: &str) -> Result<u32, std::num::ParseIntError> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: InitIptablesArgs,
    }

    fn parse(argv: &[&str]) -> Result<InitIptablesArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_match_library_defaults() {
        let args = parse(&["--proxy-uid", "1337"]).expect("parse");
        let expected = IptablesOptions {
            proxy_uid: Some(1337),
            ..IptablesOptions::default()
        };
        assert_eq!(args.options(), expected);
        assert_eq!(args.iptables, "iptables");
        assert!(!args.dry_run && !args.clean);
    }

    #[test]
    fn comma_separated_lists_and_hex_mark() {
        let args = parse(&[
            "--proxy-mark",
            "0x539",
            "--inbound-ports",
            "9080,9090",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,192.168.0.0/16",
            "--skip-inbound-ports=22",
            "--skip-outbound-ports",
            "5432,6379",
            "--inbound-port",
            "16006",
            "--outbound-port",
            "16001",
            "--iptables",
            "/usr/sbin/iptables-legacy",
        ])
        .expect("parse");
        let opts = args.options();
        assert_eq!(opts.proxy_mark, Some(0x539));
        assert_eq!(opts.inbound_ports, [9080, 9090]);
        assert_eq!(opts.skip_outbound_cidrs, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(opts.skip_inbound_ports, [22]);
        assert_eq!(opts.skip_outbound_ports, [5432, 6379]);
        assert_eq!(
            (opts.inbound_capture_port, opts.outbound_capture_port),
            (16006, 16001)
        );
        assert_eq!(args.iptables, "/usr/sbin/iptables-legacy");
    }

    #[test]
    fn dry_run_conflicts_with_clean() {
        assert!(parse(&["--dry-run", "--clean"]).is_err());
    }

    #[test]
    fn the_proxy_is_excluded_by_uid_1337_unless_told_otherwise() {
        let args = parse(&[]).expect("parse");
        assert_eq!(args.options().proxy_uid, Some(1337));
        assert!(iptables::script(&args.options()).contains("1337"));
        let by_mark = parse(&["--proxy-mark", "0x539"]).expect("parse");
        assert_eq!(by_mark.options().proxy_uid, None);
        let by_gid = parse(&["--proxy-gid", "1337"]).expect("parse");
        assert_eq!(by_gid.options().proxy_uid, None);
    }

    #[test]
    fn invalid_options_fail_before_running_iptables() {
        let args = parse(&[
            "--dry-run",
            "--inbound-port",
            "0",
            "--iptables",
            "/nonexistent/iptables",
        ])
        .expect("parse");
        let err = run(args).expect_err("port 0");
        assert!(err.to_string().contains("inbound_capture_port"), "{err:#}");
    }
}
