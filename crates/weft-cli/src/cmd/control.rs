//! `weft control --config-dir DIR`: the control plane on its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use weft_control::app::{self, ControlOptions};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ControlArgs {
    #[command(subcommand)]
    pub command: Option<ControlCommand>,
    /// Directory (or file) of mesh documents, watched for changes (repeatable).
    #[arg(long = "config-dir", required = true)]
    pub config_dirs: Vec<PathBuf>,
    /// Discovery (gRPC) address proxies connect to.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub listen: SocketAddr,
    /// Admin address serving /status (read by `weft status`).
    #[arg(long, default_value = super::find_mesh::DEFAULT_CONTROL_ADMIN)]
    pub admin: SocketAddr,
    /// State directory: virtual IPs and bootstrap tokens (never inside a config directory).
    #[arg(long, default_value = ".weft/control")]
    pub state_dir: PathBuf,
    /// How often the config directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
    /// How long an endpoint stays after its proxy disconnects, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub endpoint_grace_ms: u64,
    /// CA certificate (PEM; a root or an intermediate followed by its issuers) to issue workload
    /// certificates with. Default: a root made in the state directory on first start.
    #[arg(long, requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The CA certificate's private key (PKCS#8 PEM).
    #[arg(long, requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// SPIFFE trust domain of issued identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).
    #[arg(long, default_value = weft_api::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Lifetime of issued workload certificates, in seconds (proxies renew at about 2/3).
    #[arg(long, default_value_t = 86_400)]
    pub cert_ttl_secs: u64,
    /// Serve discovery and identity over TLS, with a server certificate from the CA
    /// (spiffe://<td>/ns/weft-system/sa/weft-control, localhost, 127.0.0.1). Proxies then need
    /// `--trust-anchor <state-dir>/trust-bundle.pem`. Without it, bootstrap tokens travel in
    /// clear and proxies must be started with `--insecure-plaintext-control-plane`.
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ControlCommand {
    /// Rotate the root CA of a running control plane (POST /rotate-root): the new root is
    /// trusted at once, signs after one certificate lifetime, and the old root stays trusted
    /// one lifetime more.
    RotateRoot {
        #[command(flatten)]
        mesh: super::find_mesh::MeshArgs,
    },
}

pub fn run(args: ControlArgs) -> anyhow::Result<ExitCode> {
    if let Some(ControlCommand::RotateRoot { mesh }) = args.command {
        let control_admin = mesh.find()?.control_admin;
        let body = super::find_mesh::http_request(control_admin, "POST", "/rotate-root")?;
        println!("{}", body.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let options = ControlOptions {
        config_paths: args.config_dirs,
        exclude: Vec::new(),
        listen: args.listen,
        admin: args.admin,
        state_dir: args.state_dir,
        poll: Duration::from_millis(args.poll_ms),
        endpoint_grace: Duration::from_millis(args.endpoint_grace_ms),
        ca_cert: args.ca_cert,
        ca_key: args.ca_key,
        trust_domain: args.trust_domain,
        cert_ttl: Duration::from_secs(args.cert_ttl_secs),
        tls: args.tls,
    };
    if !options.tls {
        tracing::warn!(
            "discovery and identity without --tls: bootstrap tokens travel in clear; proxies must pass --insecure-plaintext-control-plane"
        );
    }
    super::runtime(None)?.block_on(async move {
        let running = app::start(options).await?;
        println!(
            "weft control listening {}",
            serde_json::json!({ "discovery": running.listen.to_string(), "admin": running.admin.to_string() })
        );
        super::shutdown_signal().await?;
        running.stop();
        Ok(ExitCode::SUCCESS)
    })
}
