// Minimal entry point so `weft init-iptables` can be built and tested on this branch; the real
// CLI (owned by main.rs's maintainer) wires the same `cmd::init_iptables` in by hand.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", about = "Weft service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the iptables rules that capture a pod's traffic into its sidecar.
    InitIptables(cmd::init_iptables::InitIptablesArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::InitIptables(args) => cmd::init_iptables::run(args),
    }
}
