//! `weft token create`: mint a bootstrap token for a namespace and service account.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_control::tokens::TokenStore;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Mint a token; prints it. The control plane accepts it at once.
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// The control plane's state directory.
    #[arg(long, default_value = ".weft/control")]
    pub state_dir: PathBuf,
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create(args) => {
            let token = TokenStore::new(&args.state_dir).create(&args.namespace, &args.service_account)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
