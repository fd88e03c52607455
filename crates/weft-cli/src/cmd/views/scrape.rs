//! Two scrapes of every sidecar's `/metrics`, a window apart: the input of `weft stat` and
//! `weft edges` (the numbers are computed by `weft_control::telemetry`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use weft_control::telemetry::{self, Sample, Window};

use super::mesh::ProxyAdmin;

/// `10s`, `1m`, `500ms`, `2h`, or plain seconds.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?}: want a duration such as 10s or 1m"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit {unit:?} is not ms, s, m or h")),
    };
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{s:?}: want a window over 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What a scrape found.
pub struct Scraped {
    pub window: Window,
    /// Sidecars that did not answer (with why), left out of the numbers.
    pub unreachable: Vec<(String, String)>,
}

/// Scrapes every sidecar, waits `window`, scrapes again.
pub fn scrape(proxies: &[ProxyAdmin], window: Duration) -> Scraped {
    let start = Instant::now();
    let before: Vec<anyhow::Result<Vec<Sample>>> = proxies.iter().map(metrics).collect();
    std::thread::sleep(window.saturating_sub(start.elapsed()));
    let seconds = start.elapsed().as_secs_f64();
    let mut out = Scraped {
        window: Window::new(seconds),
        unreachable: Vec::new(),
    };
    for (proxy, before) in proxies.iter().zip(before) {
        match before.and_then(|b| Ok((b, metrics(proxy)?))) {
            Ok((b, a)) => out.window.add_proxy(&proxy.instance, &b, &a),
            Err(e) => out.unreachable.push((proxy.instance.clone(), format!("{e:#}"))),
        }
    }
    out
}

fn metrics(proxy: &ProxyAdmin) -> anyhow::Result<Vec<Sample>> {
    let text = crate::cmd::find_mesh::http_get(proxy.admin, "/metrics")
        .with_context(|| format!("GET http://{}/metrics", proxy.admin))?;
    Ok(telemetry::parse(&text)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn windows() {
        assert_eq!(super::parse_window("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(super::parse_window("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(super::parse_window("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(super::parse_window("3"), Ok(Duration::from_secs(3)));
        assert!(super::parse_window("0s").is_err());
        assert!(super::parse_window("5d").expect_err("an error").contains("unit"));
        assert!(super::parse_window("abc").is_err());
    }
}
