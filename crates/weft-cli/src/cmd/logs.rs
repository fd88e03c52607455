//! Reading a run's log files for `weft logs`: the last N lines, the lines since a time, and
//! following files as they grow (`-f`).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::find_mesh::FoundRun;

/// `--since`: an RFC 3339 time, or an age before now (`90s`, `10m`, `2h`, `1d`).
pub fn parse_since(text: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let age = parse_age(text).with_context(|| {
        format!("--since {text:?}: give an RFC 3339 time (2026-12-07T23:10:00Z) or an age (90s, 10m, 2h, 1d)")
    })?;
    let then = SystemTime::now()
        .checked_sub(age)
        .context("--since: too far back")?;
    Ok(OffsetDateTime::from(then))
}

/// A span of time as people write it: `90s`, `10m`, `2h`, `7d` (a bare number: seconds).
pub fn parse_age(text: &str) -> anyhow::Result<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .ok()
        .with_context(|| format!("{text:?} is not a duration (90s, 10m, 2h, 7d)"))?;
    let unit = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("{text:?}: the unit of a duration is s, m, h or d"),
    };
    n.checked_mul(unit)
        .map(Duration::from_secs)
        .with_context(|| format!("{text:?} is too long"))
}

/// The lines of `text` to show: those at or after `since` (a line without a time of its own
/// goes with the line before it), then the last `tail` of them.
pub fn select(text: &str, tail: Option<usize>, since: Option<OffsetDateTime>) -> Vec<&str> {
    let mut keep = since.is_none();
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let (Some(since), Some(at)) = (since, stamp_of(line)) {
            keep = at >= since;
        }
        if keep {
            lines.push(line);
        }
    }
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    lines
}

/// The time a log line is stamped with: a leading RFC 3339 time (text logs, after any colour
/// codes), or the `timestamp` field of a JSON line.
fn stamp_of(line: &str) -> Option<OffsetDateTime> {
    let text = strip_ansi(line);
    let text = text.trim_start();
    let candidate = match text.strip_prefix('{') {
        Some(_) => {
            let start = text.find("\"timestamp\":\"")? + "\"timestamp\":\"".len();
            let len = text[start..].find('"')?;
            &text[start..start + len]
        }
        None => text.split_whitespace().next()?,
    };
    OffsetDateTime::parse(candidate, &Rfc3339).ok()
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A file read from an offset on.
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Follower {
    pub fn at_end(path: PathBuf, offset: u64) -> Self {
        Self {
            path,
            offset,
            partial: String::new(),
        }
    }

    /// The whole lines written since the last call.
    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: read it from the start.
            self.offset = 0;
        }
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        done.lines().map(str::to_string).collect()
    }
}

/// Prints what is added to `files` until the run stops (or the command is interrupted), with a
/// `==> file <==` header whenever the file changes, as `tail -f` does.
pub fn follow(files: &mut [Follower], run: &FoundRun) -> anyhow::Result<()> {
    let pid = run.record.as_ref().map(|r| r.pid);
    let mut last: Option<usize> = None;
    loop {
        for (i, f) in files.iter_mut().enumerate() {
            let lines = f.new_lines();
            if lines.is_empty() {
                continue;
            }
            if last != Some(i) {
                out!("\n==> {} <==", f.path.display());
            }
            last = Some(i);
            for l in lines {
                out!("{l}");
            }
        }
        if !pid.is_some_and(weft_up::rundir::alive) {
            eprintln!("weft logs: the run stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\u{1b}[2m2026-12-07T10:00:00.000001Z\u{1b}[0m  INFO weft: one\n  continued\n2026-12-07T10:05:00Z  INFO weft: two\n{\"timestamp\":\"2026-12-07T10:10:00Z\",\"level\":\"INFO\"}\nlast\n";

    #[test]
    fn since_keeps_stamped_lines_and_what_follows_them() {
        let since = OffsetDateTime::parse("2026-12-07T10:05:00Z", &Rfc3339).expect("time");
        assert_eq!(
            select(LOG, None, Some(since)),
            vec![
                "2026-12-07T10:05:00Z  INFO weft: two",
                "{\"timestamp\":\"2026-12-07T10:10:00Z\",\"level\":\"INFO\"}",
                "last"
            ]
        );
        let early = OffsetDateTime::parse("2026-12-07T09:00:00Z", &Rfc3339).expect("time");
        assert_eq!(select(LOG, None, Some(early)).len(), 5);
        assert_eq!(
            select(LOG, Some(2), None),
            vec![LOG.lines().nth(3).expect("line"), "last"]
        );
    }

    #[test]
    fn since_takes_ages_and_refuses_nonsense() {
        let ten = parse_since("10m").expect("age");
        let age = OffsetDateTime::now_utc() - ten;
        assert!((599..=601).contains(&age.whole_seconds()), "{age}");
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("5w").is_err());
    }
}
