//! `weft token create | list | revoke`: bootstrap tokens bound to one workload (name,
//! namespace, service account). Give one to that workload's proxy in a private file
//! (`--token-file`) or the environment (`WEFT_TOKEN`), never as an argument. The control plane
//! reads the token file on every check: a token minted, revoked or expired counts at once.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use weft_control::tokens::{Grant, TokenStore};

use super::find_mesh::MeshArgs;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a token; prints it. The control plane accepts it at once.
    Create(CreateArgs),
    /// Every token by its first characters (never the whole secret), its workload and expiry.
    List(ListArgs),
    /// Revoke a token (by the characters `list` shows, or whole): refused from then on.
    Revoke(RevokeArgs),
}

/// Whose tokens: a state directory, or the one of a `weft up` run.
#[derive(Debug, clap::Args)]
pub struct StateArgs {
    /// The control plane's state directory. Default: the `weft up` run's (`<run-dir>/control`)
    /// when one is found, else `.weft/control` (a `weft control`'s default).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub mesh: MeshArgs,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The `Workload` the token is bound to: its proxy's labels, ports and instances come from
    /// that document, whatever the proxy says.
    #[arg(long)]
    pub workload: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Must be the Workload document's `serviceAccount` (default `default`); the certificate
    /// the token gets is for this one.
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// How long the token is accepted (`90s`, `30m`, `12h`, `7d`). Default: until revoked.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Output format: `text` or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The token, or its first characters as `weft token list` shows them.
    pub id: String,
    #[command(flatten)]
    pub state: StateArgs,
}

impl StateArgs {
    fn store(&self) -> anyhow::Result<TokenStore> {
        if let Some(dir) = &self.state_dir {
            return Ok(TokenStore::new(dir));
        }
        let run = self.mesh.run()?;
        let dir = match (&self.mesh.run_dir, run.record.is_some()) {
            // Named, or found in this directory: that run's control plane.
            (Some(_), _) | (None, true) => run.dir.control_state(),
            (None, false) => PathBuf::from(".weft/control"),
        };
        Ok(TokenStore::new(&dir))
    }
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(args) => {
            let mut grant = Grant::new(&args.workload, &args.namespace, &args.service_account);
            if let Some(ttl) = &args.ttl {
                let ttl = super::logs::parse_age(ttl)?;
                let at = SystemTime::now() + ttl;
                grant.expires_at = Some(at.duration_since(SystemTime::UNIX_EPOCH)?.as_secs());
            }
            let token = args.state.store()?.create(&grant)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List(args) => {
            let tokens = args.state.store()?.list()?;
            if args.output == "json" {
                out!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            out!(
                "{:<10} {:<28} {:<12} {:<20} EXPIRES",
                "ID",
                "WORKLOAD",
                "NAMESPACE",
                "SERVICE ACCOUNT"
            );
            let now = SystemTime::now();
            for t in tokens {
                let g = &t.grant;
                let expires = match g.expires_at {
                    None => "never".to_string(),
                    Some(at) => {
                        let when = weft_api::human::time(SystemTime::UNIX_EPOCH + Duration::from_secs(at));
                        if g.expired(now) {
                            format!("{when} (expired)")
                        } else {
                            when
                        }
                    }
                };
                let workload = if g.workload.is_empty() {
                    "(none)"
                } else {
                    &g.workload
                };
                out!(
                    "{:<10} {:<28} {:<12} {:<20} {expires}",
                    t.id,
                    workload,
                    g.namespace,
                    g.service_account
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke(args) => {
            let grant = args.state.store()?.revoke(&args.id)?;
            println!(
                "revoked the token of {}/{} (service account {}): refused from now on",
                grant.namespace, grant.workload, grant.service_account
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
