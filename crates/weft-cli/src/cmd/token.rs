//! `weft token create`: mint a bootstrap token bound to one workload (name, namespace, service
//! account). Give it to that workload's proxy in a private file (`--token-file`) or the
//! environment (`WEFT_TOKEN`), never as an argument.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_control::tokens::{Grant, TokenStore};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a token; prints it. The control plane accepts it at once.
    Create(CreateArgs),
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
    /// The control plane's state directory.
    #[arg(long, default_value = ".weft/control")]
    pub state_dir: PathBuf,
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(args) => {
            let grant = Grant::new(&args.workload, &args.namespace, &args.service_account);
            let token = TokenStore::new(&args.state_dir).create(&grant)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
