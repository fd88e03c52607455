//! Verbs that look at a running mesh (`proxy-status`, `proxy-config`, `routes`, `stat`,
//! `edges`, `tap`, `top`): they find it through [`mesh::locate`], read the control plane's and
//! the sidecars' admin endpoints, and print for a person or, with `-o json`, for a script.

pub mod edges;
pub mod mesh;
pub mod proxy_config;
pub mod proxy_status;
pub mod routes;
pub mod scrape;
pub mod stat;
pub mod tap;
pub mod top;

/// `-o` of a view verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Prints `v` as pretty JSON.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A `text` column: the string, or `-` for null.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds as a person reads an age: `42s`, `3m10s`, `2h5m`, `3d4h`.
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_like_a_person_writes_them() {
        assert_eq!(super::age(0.4), "0s");
        assert_eq!(super::age(59.9), "59s");
        assert_eq!(super::age(190.0), "3m10s");
        assert_eq!(super::age(7_500.0), "2h5m");
        assert_eq!(super::age(273_600.0), "3d4h");
    }
}
