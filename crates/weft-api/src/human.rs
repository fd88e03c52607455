//! Times and durations as log lines show them to people: RFC 3339 in UTC to the second
//! (`2026-12-07T23:40:12Z`), and durations in the largest units that matter (`17h12m`, `2.5s`,
//! `120ms`) — not Rust's debug forms (`SystemTime { tv_sec: .. }`, `61991.890914645s`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as RFC 3339 in UTC, to the second; times before 1970 show as the epoch.
pub fn time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `d` in the two largest units that matter: `3d4h`, `17h12m`, `5m3s`, `2.5s`, `120ms`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400.. => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        3600.. => format!("{}h{}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m{}s", s / 60, s % 60),
        1.. => format!("{:.1}s", d.as_secs_f64()),
        0 => format!("{}ms", d.as_millis()),
    }
}

/// Year, month, day of the `days`-th day after 1970-01-01 (proleptic Gregorian; the
/// well-known era-based conversion).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let at = |s| time(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(1_796_686_812), "2026-12-07T23:40:12Z");
        assert_eq!(at(1_709_208_000), "2024-02-29T12:00:00Z");
    }

    #[test]
    fn durations_in_the_units_that_matter() {
        assert_eq!(duration(Duration::from_secs_f64(61_991.89)), "17h13m");
        assert_eq!(duration(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d4h");
        assert_eq!(duration(Duration::from_secs(303)), "5m3s");
        assert_eq!(duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(duration(Duration::from_millis(120)), "120ms");
    }
}
