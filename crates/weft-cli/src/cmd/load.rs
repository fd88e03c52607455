//! `weft load URL --rps N [--duration SECS]`: GET requests at a fixed rate until the duration
//! passes or Ctrl-C, then the answers per status. On a terminal a progress line shows the rate,
//! the answers by status and p50/p99 so far, once a second.

use std::io::IsTerminal as _;
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
    /// Print the progress line every second even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
}

/// `12.0 s  100.0 req/s  200: 1190  503: 10  errors: 0  p50 1.2 ms  p99 4.8 ms`.
fn progress_line(r: &weft_demo::LoadReport) -> String {
    let secs = r.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        r.answered() as f64 / secs
    } else {
        0.0
    };
    let mut line = format!("{secs:>6.1} s  {rate:>8.1} req/s");
    for (status, n) in &r.by_status {
        line.push_str(&format!("  {status}: {n}"));
    }
    line.push_str(&format!("  errors: {}", r.failed()));
    let ms = |d: Option<std::time::Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
    };
    line.push_str(&format!("  p50 {}  p99 {}", ms(r.p50), ms(r.p99)));
    line
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
        let live = std::io::stderr().is_terminal() || args.progress;
        weft_demo::load_reporting(
            &args.url,
            args.rps,
            duration,
            args.concurrency as usize,
            headers,
            stop,
            |so_far| {
                if live {
                    // One line, rewritten in place on a terminal.
                    let end = if std::io::stderr().is_terminal() {
                        "\r"
                    } else {
                        "\n"
                    };
                    eprint!("{}\x1b[K{end}", progress_line(so_far));
                }
            },
        )
        .await
    })?;
    if std::io::stderr().is_terminal() {
        eprint!("\x1b[K");
    }
    print!("{report}");
    Ok(ExitCode::SUCCESS)
}
