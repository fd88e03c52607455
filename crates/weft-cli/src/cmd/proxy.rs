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
    /// The control plane's discovery address (e.g. http://127.0.0.1:15010). With it, the
    /// config file is the bootstrap (admin, limits, the addresses to bind, the workload's
    /// identity and app ports) and the control plane pushes services, endpoints and routes;
    /// the proxy is ready once its first push is applied and it holds a certificate from the
    /// control plane's CA.
    #[arg(long, env = "WEFT_CONTROL")]
    pub control: Option<String>,
    /// Bootstrap token minted by the control plane (`weft token create`).
    #[arg(long, env = "WEFT_TOKEN", requires = "control")]
    pub token: Option<String>,
    /// The roots (PEM) to trust the control plane with, given out of band: with it, discovery
    /// and identity go over TLS verified against them (`weft control --tls`), and every
    /// certificate issued must chain to them. Read again on each connection (a root rotation
    /// that rewrites the file is picked up).
    #[arg(long, env = "WEFT_TRUST_ANCHOR", requires = "control")]
    pub trust_anchor: Option<PathBuf>,
    /// This instance's unique name. Default: `<workload>.<namespace>`.
    #[arg(long, requires = "control")]
    pub instance_id: Option<String>,
    /// The IP the workload's apps listen on, as other proxies reach them.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
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
            config.clone(),
            Options {
                outbound_mark: args.outbound_mark,
                await_control: args.control.is_some(),
                await_identity: args.control.is_some(),
                ..Options::default()
            },
        )
        .await?;
        let stop_discovery = tokio_util::sync::CancellationToken::new();
        if let Some(endpoint) = &args.control {
            let w = &config.workload;
            let id = args
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("{}.{}", w.name, w.namespace));
            let token = args.token.clone().unwrap_or_default();
            let anchor = args
                .trust_anchor
                .as_ref()
                .map(weft_proxy::control_tls::TrustAnchor::new);
            if let Some(a) = &anchor {
                // Refuse a missing or empty anchor at start rather than retry forever.
                a.load()?;
            }
            let sub = weft_proxy::discovery::Subscription::for_instance(
                &id,
                &token,
                &config,
                args.ip,
                running.bound.mesh.port(),
            );
            if let Some((cell, metrics)) = running.identity.clone() {
                let request = weft_proxy::identity::IdentityRequest {
                    token: token.clone(),
                    namespace: w.namespace.clone(),
                    service_account: w.service_account.clone(),
                    instance_id: id.clone(),
                };
                tokio::spawn(weft_proxy::identity::run_anchored(
                    endpoint.clone(),
                    anchor.clone(),
                    request,
                    cell,
                    metrics,
                    stop_discovery.clone(),
                ));
            }
            tokio::spawn(weft_proxy::discovery::run_anchored(
                endpoint.clone(),
                anchor,
                sub,
                running.shared.clone(),
                stop_discovery.clone(),
            ));
        }
        // One machine-readable line, for scripts and tests that bind port 0.
        println!("weft proxy listening {}", serde_json::to_string(&running.bound)?);
        super::shutdown_signal().await.context("waiting for a signal")?;
        tracing::info!("signal received; draining");
        stop_discovery.cancel();
        running.drain().await;
        Ok(ExitCode::SUCCESS)
    })
}
