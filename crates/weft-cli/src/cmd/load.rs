//! `weft load URL --rps N [--duration SECS]`: GET requests at a fixed rate until the duration
//! passes or Ctrl-C, then the answers per status.

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The URL to GET, e.g. http://127.0.0.1:9080/productpage?u=jason.
    pub url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rps: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// At most this many requests in flight (ticks that find them all busy are skipped).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// A request header, `Name: value` (repeatable), e.g. -H 'end-user: jason'.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
}

pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let duration = match args.duration {
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--duration must be between 0 and 86400 seconds, not {s}"),
        None => None,
    };
    let mut headers = http::HeaderMap::new();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            anyhow::bail!("header {h:?} is not 'Name: value'");
        };
        headers.append(
            http::HeaderName::from_bytes(name.trim().as_bytes())?,
            http::HeaderValue::from_str(value.trim())?,
        );
    }
    let rt = super::runtime(None)?;
    let report = rt.block_on(async {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            if super::shutdown_signal().await.is_ok() {
                on_signal.cancel();
            }
        });
        weft_demo::load(
            &args.url,
            args.rps,
            duration,
            args.concurrency as usize,
            headers,
            stop,
        )
        .await
    })?;
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
