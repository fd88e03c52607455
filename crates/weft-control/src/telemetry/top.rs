//! `weft top`: the most requested paths, by source and destination, from tap events as they
//! arrive (the shape of `linkerd viz top`). One event is one finished request as the receiving
//! sidecar saw it.

use std::collections::HashMap;

use serde::Serialize;

/// Distinct (source, destination, method, path) rows kept; the rest fold into one `(other)`
/// path per pair, so a caller hitting endless distinct paths cannot grow the table.
pub const MAX_ROWS: usize = 10_000;

/// The table so far.
#[derive(Debug, Default)]
pub struct Top {
    rows: HashMap<Key, Acc>,
    /// Events seen in all, and the drops the proxies reported.
    pub events: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    destination: String,
    method: String,
    path: String,
}

#[derive(Debug, Default)]
struct Acc {
    count: u64,
    successes: u64,
    best_ms: f64,
    worst_ms: f64,
    last_ms: f64,
}

/// One row of `weft top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopRow {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub path: String,
    pub count: u64,
    pub success_rate: f64,
    pub best_ms: f64,
    pub worst_ms: f64,
    pub last_ms: f64,
}

impl Top {
    /// Counts one tap event (a JSON object as `/tap` sends it).
    pub fn add(&mut self, event: &serde_json::Value) {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("unknown").to_string();
        self.events += 1;
        self.dropped += event["dropped"].as_u64().unwrap_or(0) + event["limited"].as_u64().unwrap_or(0);
        let mut key = Key {
            source: s(&event["source"]["workload"]),
            destination: s(&event["destination"]["workload"]),
            method: s(&event["method"]),
            path: s(&event["path"]),
        };
        if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
            key.path = "(other)".to_string();
        }
        let ms = event["latencyMs"].as_f64().unwrap_or(0.0);
        let status = event["status"].as_u64().unwrap_or(0);
        let ok = (1..500).contains(&status) && event["grpcStatus"].as_str().is_none_or(|g| g == "0");
        let acc = self.rows.entry(key).or_default();
        if acc.count == 0 || ms < acc.best_ms {
            acc.best_ms = ms;
        }
        acc.worst_ms = acc.worst_ms.max(ms);
        acc.last_ms = ms;
        acc.count += 1;
        acc.successes += u64::from(ok);
    }

    /// The `limit` busiest rows, most requests first.
    pub fn rows(&self, limit: usize) -> Vec<TopRow> {
        let mut rows: Vec<TopRow> = self
            .rows
            .iter()
            .map(|(k, a)| TopRow {
                source: k.source.clone(),
                destination: k.destination.clone(),
                method: k.method.clone(),
                path: k.path.clone(),
                count: a.count,
                success_rate: a.successes as f64 / a.count.max(1) as f64,
                best_ms: a.best_ms,
                worst_ms: a.worst_ms,
                last_ms: a.last_ms,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.source, &a.destination, &a.path).cmp(&(&b.source, &b.destination, &b.path)))
        });
        rows.truncate(limit);
        rows
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(src: &str, dst: &str, path: &str, status: u16, ms: f64) -> serde_json::Value {
        json!({"source": {"workload": src}, "destination": {"workload": dst}, "method": "GET",
               "path": path, "status": status, "latencyMs": ms, "dropped": 1, "limited": 0})
    }

    #[test]
    fn busiest_first_with_latency_and_success() {
        let mut top = Top::default();
        for (ms, status) in [(5.0, 200), (2.0, 200), (9.0, 503), (4.0, 200)] {
            top.add(&event("productpage-v1", "reviews-v1", "/reviews/0", status, ms));
        }
        top.add(&event("unknown", "productpage-v1", "/productpage", 200, 10.0));
        let rows = top.rows(10);
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(
            (r.source.as_str(), r.path.as_str(), r.count),
            ("productpage-v1", "/reviews/0", 4)
        );
        assert_eq!((r.best_ms, r.worst_ms, r.last_ms), (2.0, 9.0, 4.0));
        assert_eq!(r.success_rate, 0.75);
        assert_eq!((top.events, top.dropped), (5, 5));
        assert_eq!(top.rows(1).len(), 1);
    }

    #[test]
    fn endless_paths_fold_into_one_row() {
        let mut top = Top::default();
        for i in 0..MAX_ROWS + 50 {
            top.add(&event("a", "b", &format!("/item/{i}"), 200, 1.0));
        }
        let rows = top.rows(usize::MAX);
        assert_eq!(rows.len(), MAX_ROWS + 1);
        assert_eq!((rows[0].path.as_str(), rows[0].count), ("(other)", 50));
    }
}
