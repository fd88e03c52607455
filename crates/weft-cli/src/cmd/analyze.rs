//! `weft analyze DIR...`: findings for a set of documents, like `istioctl analyze`.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::validate;

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories (read recursively) of YAML documents.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format: `text` (path:line:col: severity CODE: message) or `json`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    for p in &args.paths {
        if !p.exists() {
            eprintln!("weft analyze: {} does not exist", p.display());
            return Ok(ExitCode::from(2));
        }
    }
    let (_translated, findings) = validate::analyze_paths(&args.paths);
    if args.output == "json" {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "findings": findings }))?
        );
    } else if findings.is_empty() {
        out!("no findings");
    } else {
        for f in &findings {
            out!("{f}");
        }
    }
    Ok(if validate::has_errors(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
