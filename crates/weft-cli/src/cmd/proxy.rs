//! `weft proxy --config FILE`: a sidecar from a ProxyConfig file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use weft_api::proxy_config::ProxyConfig;
use weft_proxy::app::{self, Options};

#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The ProxyConfig (YAML or JSON): the same resources the control plane pushes.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Worker threads. Default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// SO_MARK set on upstream sockets (exclude the proxy from iptables capture by mark; needs
    /// CAP_NET_ADMIN).
    #[arg(long)]
    pub outbound_mark: Option<u32>,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let config = match ProxyConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft: invalid config {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // The effective config, with every default filled in, before anything starts.
    println!("# effective config\n{}", serde_json::to_string_pretty(&config)?);
    let runtime = super::runtime(args.threads)?;
    runtime.block_on(async move {
        let running = app::start(
            config,
            Options {
                outbound_mark: args.outbound_mark,
                ..Options::default()
            },
        )
        .await?;
        // One machine-readable line, for scripts and tests that bind port 0.
        println!("weft proxy listening {}", serde_json::to_string(&running.bound)?);
        super::shutdown_signal().await.context("waiting for a signal")?;
        tracing::info!("signal received; draining");
        running.drain().await;
        Ok(ExitCode::SUCCESS)
    })
}
