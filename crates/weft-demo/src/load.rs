//! A bounded traffic generator: `GET url` at a fixed rate, at most `concurrency` requests in
//! flight, until a duration passes or `stop` is cancelled.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::client::Client;

/// Per-request timeout of the generator.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Latency samples kept (the rest are counted, not sampled).
const MAX_SAMPLES: usize = 100_000;

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Requests started.
    pub sent: u64,
    /// Answers per HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests without an answer (connect failure, timeout...), per reason.
    pub errors: BTreeMap<String, u64>,
    /// Ticks skipped because `concurrency` requests were already in flight.
    pub skipped: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of answered requests.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
}

impl LoadReport {
    /// Answers of any status.
    pub fn answered(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// Requests that got no answer.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.answered() as f64 / secs
        } else {
            0.0
        };
        writeln!(
            f,
            "{} requests in {secs:.1} s ({rate:.1}/s answered), {} without answer, {} skipped (concurrency limit)",
            self.sent,
            self.failed(),
            self.skipped
        )?;
        for (status, n) in &self.by_status {
            writeln!(f, "  {status}: {n}")?;
        }
        for (reason, n) in &self.errors {
            writeln!(f, "  error {reason}: {n}")?;
        }
        if let (Some(p50), Some(p99), Some(max)) = (self.p50, self.p99, self.max) {
            writeln!(
                f,
                "  latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms(p50),
                ms(p99),
                ms(max)
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type Outcome = (Result<u16, String>, Duration);

/// Sends `GET url` (with `headers`) `rps` times a second until `duration` has passed (if given)
/// or `stop` is cancelled, with at most `concurrency` requests in flight (a tick that finds them
/// all busy is skipped and counted, so the rate never bunches up). Waits for the requests in
/// flight (each bounded by a 10 s timeout) before reporting.
pub async fn load(
    url: &str,
    rps: u32,
    duration: Option<Duration>,
    concurrency: usize,
    headers: HeaderMap,
    stop: CancellationToken,
) -> anyhow::Result<LoadReport> {
    load_reporting(url, rps, duration, concurrency, headers, stop, |_| {}).await
}

/// As [`load`], calling `progress` once a second with the report so far (latencies of the
/// answers so far), e.g. for a live progress line.
pub async fn load_reporting(
    url: &str,
    rps: u32,
    duration: Option<Duration>,
    concurrency: usize,
    headers: HeaderMap,
    stop: CancellationToken,
    mut progress: impl FnMut(&LoadReport),
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(rps > 0, "the rate must be at least 1 request per second");
    anyhow::ensure!(concurrency > 0, "concurrency must be at least 1");
    let parsed: http::Uri = url.parse()?;
    anyhow::ensure!(
        parsed.scheme_str() == Some("http") && parsed.host().is_some(),
        "only http://host[:port]/path URLs, not {url:?}"
    );
    let client = Client::new(concurrency);
    let mut report = LoadReport::default();
    let mut samples: Vec<Duration> = Vec::new();
    let mut inflight: JoinSet<Outcome> = JoinSet::new();
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rps);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let headers = std::sync::Arc::new(headers);
    let mut progress_ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    progress_ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = until_deadline => break,
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                record(&mut report, &mut samples, done);
            }
            _ = progress_ticker.tick() => {
                let mut so_far = report.clone();
                so_far.elapsed = start.elapsed();
                fill_latencies(&mut so_far, &mut samples);
                progress(&so_far);
            }
            _ = ticker.tick() => {
                if inflight.len() >= concurrency {
                    report.skipped += 1;
                    continue;
                }
                report.sent += 1;
                let client = client.clone();
                let url = url.to_string();
                let headers = headers.clone();
                inflight.spawn(async move {
                    let t0 = Instant::now();
                    let res = client
                        .get(&url, &headers, REQUEST_TIMEOUT)
                        .await
                        .map(|a| a.status.as_u16())
                        .map_err(|e| e.to_string());
                    (res, t0.elapsed())
                });
            }
        }
    }
    // Every task ends within its own timeout; the outer bound is a safety net.
    let drain = async {
        while let Some(done) = inflight.join_next().await {
            record(&mut report, &mut samples, done);
        }
    };
    if tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), drain)
        .await
        .is_err()
    {
        inflight.abort_all();
    }
    report.elapsed = start.elapsed();
    fill_latencies(&mut report, &mut samples);
    Ok(report)
}

/// p50, p99 and max of `samples` (sorted in place) into `report`.
fn fill_latencies(report: &mut LoadReport, samples: &mut [Duration]) {
    samples.sort_unstable();
    let pick = |q: f64| -> Option<Duration> {
        let last = samples.len().checked_sub(1)?;
        let i = ((last as f64) * q).round() as usize;
        samples.get(i.min(last)).copied()
    };
    report.p50 = pick(0.5);
    report.p99 = pick(0.99);
    report.max = samples.last().copied();
}

fn record(
    report: &mut LoadReport,
    samples: &mut Vec<Duration>,
    done: Result<Outcome, tokio::task::JoinError>,
) {
    match done {
        Ok((Ok(status), latency)) => {
            *report.by_status.entry(status).or_default() += 1;
            if samples.len() < MAX_SAMPLES {
                samples.push(latency);
            }
        }
        Ok((Err(reason), _)) => {
            // Reasons carry addresses and such; keep the map small.
            let reason: String = reason.chars().take(80).collect();
            if report.errors.len() < 32 || report.errors.contains_key(&reason) {
                *report.errors.entry(reason).or_default() += 1;
            } else {
                *report.errors.entry("other".to_string()).or_default() += 1;
            }
        }
        Err(e) => {
            *report.errors.entry(format!("task: {e}")).or_default() += 1;
        }
    }
}
