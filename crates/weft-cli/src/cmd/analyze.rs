//! `weft analyze DIR...`: findings for a set of documents, like `istioctl analyze`.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::validate::{self, suppress::Suppression};

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories (read recursively) of YAML documents.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format: `text` (path:line:col: severity CODE: message), `json` or `yaml`.
    #[arg(long, short, default_value = "text", value_parser = ["text", "json", "yaml"])]
    pub output: String,
    /// Silence a finding: `CODE=KIND/NAMESPACE/NAME`, CODE a Weft code or the IST code its
    /// message starts with; `*` matches any part (as `istioctl analyze --suppress`). Repeatable.
    /// A document's `weft.dev/analyze-suppress: "CODE,CODE"` annotation silences its own.
    #[arg(long, short = 'S', value_name = "CODE=KIND/NAMESPACE/NAME")]
    pub suppress: Vec<Suppression>,
}

pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    for p in &args.paths {
        if !p.exists() {
            eprintln!("weft analyze: {} does not exist", p.display());
            return Ok(ExitCode::from(2));
        }
    }
    for skipped in weft_api::resources::skipped_variants(&args.paths) {
        eprintln!(
            "note: skipped {} (routing variants, alternatives to each other: name one to check it with the base, e.g. `weft analyze {} {}/NAME`)",
            skipped.display(),
            skipped.parent().unwrap_or(&skipped).display(),
            skipped.display()
        );
    }
    let (_translated, findings) = validate::analyze_paths_suppressing(&args.paths, &args.suppress);
    if args.output == "yaml" {
        out!("{}", validate::findings_yaml(&findings)?.trim_end());
    } else if args.output == "json" {
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
