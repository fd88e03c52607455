//! `weft proxy --config FILE`: a sidecar from a ProxyConfig file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use weft_api::proxy_config::ProxyConfig;
use weft_control::tokens::TOKEN_ENV;
use weft_proxy::app::{self, Options};
use weft_proxy::control_tls::TrustAnchor;

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
    /// A file holding the bootstrap token minted by the control plane (`weft token create`);
    /// it must be readable by its owner only (mode 0600). Without it the token is read from the
    /// environment variable `WEFT_TOKEN` (which `weft up` sets). A token is never an argument:
    /// every local user can read a process's arguments.
    #[arg(long, value_name = "FILE", requires = "control")]
    pub token_file: Option<PathBuf>,
    /// Refused: a token on the command line is readable by every local user (`ps`). Use
    /// `--token-file FILE` or `WEFT_TOKEN`.
    #[arg(long, hide = true, value_name = "VALUE")]
    pub token: Option<String>,
    /// The roots (PEM) to trust the control plane with, given out of band: with it, discovery
    /// and identity go over TLS verified against them (`weft control --tls`), and every
    /// certificate issued must chain to them. Read again on each connection (a root rotation
    /// that rewrites the file is picked up). Required with `--control`, unless
    /// `--insecure-plaintext-control-plane`.
    #[arg(long, env = "WEFT_TRUST_ANCHOR", requires = "control")]
    pub trust_anchor: Option<PathBuf>,
    /// Talk to the control plane without a trust anchor, in plaintext. INSECURE: the bootstrap
    /// token travels in clear (anyone on the path can take it and join as this workload), the
    /// config is taken from whoever answers, and the mesh's roots are taken unverified from the
    /// same channel. For a control plane without `--tls`, on a trusted loopback only.
    #[arg(long, requires = "control", conflicts_with = "trust_anchor")]
    pub insecure_plaintext_control_plane: bool,
    /// This instance's unique name. Default: `<workload>.<namespace>`. The control plane
    /// refuses an id that another workload, or another live proxy, holds.
    #[arg(long, requires = "control")]
    pub instance_id: Option<String>,
    /// The IP the workload's apps listen on, as other proxies reach them. Default: the address
    /// the proxy connects to the control plane from (the control plane takes that one, and
    /// refuses a different claim).
    #[arg(long)]
    pub ip: Option<std::net::IpAddr>,
    /// Print the effective config (the file with every default filled in) as JSON and exit.
    /// (It is logged at debug level at every start.)
    #[arg(long)]
    pub print_config: bool,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let config = match ProxyConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft: invalid config {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.token.is_some() {
        anyhow::bail!(
            "--token is refused: a token in the arguments is readable by every local user (ps, /proc/PID/cmdline). Put it in a file only you can read (`--token-file FILE`, mode 0600) or in the environment variable {TOKEN_ENV}"
        );
    }
    let control = match &args.control {
        Some(endpoint) => Some(control_plane(&args, endpoint)?),
        None => None,
    };
    // The effective config, with every default filled in: asked for, or at debug level; at
    // info, one line says what starts.
    if args.print_config {
        out!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    tracing::debug!(config = %serde_json::to_string(&config)?, "effective config");
    tracing::info!(
        workload = %config.workload.name,
        namespace = %config.workload.namespace,
        services = config.services.len(),
        control = args.control.as_deref().unwrap_or("none (static config)"),
        "weft proxy {} starting",
        weft_api::version::describe()
    );
    let runtime = super::runtime(args.threads)?;
    runtime.block_on(async move {
        let running = app::start(
            config.clone(),
            Options {
                outbound_mark: args.outbound_mark,
                await_control: control.is_some(),
                await_identity: control.is_some(),
                // OpenTelemetry's convention: where spans go when no Telemetry names a collector.
                otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok(),
                ..Options::default()
            },
        )
        .await?;
        let stop_discovery = tokio_util::sync::CancellationToken::new();
        if let Some(ControlPlane {
            endpoint,
            token,
            anchor,
        }) = &control
        {
            let w = &config.workload;
            let id = args
                .instance_id
                .clone()
                .unwrap_or_else(|| format!("{}.{}", w.name, w.namespace));
            let (token, anchor) = (token.clone(), anchor.clone());
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

/// How this proxy reaches its control plane.
struct ControlPlane {
    endpoint: String,
    token: String,
    anchor: Option<TrustAnchor>,
}

/// The token (a private file, else the environment) and the trust anchor; refuses to go on
/// without an anchor unless the insecure flag says so.
fn control_plane(args: &ProxyArgs, endpoint: &str) -> anyhow::Result<ControlPlane> {
    let anchor = args.trust_anchor.as_ref().map(TrustAnchor::new);
    match &anchor {
        // Refuse a missing or empty anchor at start rather than retry forever.
        Some(a) => {
            a.load()?;
        }
        None if args.insecure_plaintext_control_plane => {
            tracing::warn!(
                "--insecure-plaintext-control-plane: the bootstrap token travels in clear and the mesh's roots are taken unverified"
            );
        }
        None => anyhow::bail!(
            "--control without --trust-anchor FILE (or WEFT_TRUST_ANCHOR): the proxy would send its bootstrap token in clear and take its roots from whoever answers. Give the control plane's roots (`<state-dir>/trust-bundle.pem` of `weft control --tls`), or pass --insecure-plaintext-control-plane to accept that"
        ),
    }
    let token = match &args.token_file {
        Some(path) => weft_proxy::control_tls::read_token_file(path)?,
        None => std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .with_context(|| {
                format!(
                    "--control needs a bootstrap token: --token-file FILE (mode 0600) or the environment variable {TOKEN_ENV}; mint one with `weft token create --workload NAME`"
                )
            })?,
    };
    Ok(ControlPlane {
        endpoint: endpoint.to_string(),
        token,
        anchor,
    })
}
