//! `/proxy-status`: what `weft proxy-status` prints (as `istioctl proxy-status`): every proxy
//! the control plane has served, the config version it ACKed, whether that is the version last
//! pushed to it, and for how long.

use std::time::SystemTime;

use crate::push::ProxyStatus;

/// Where a proxy stands with the config the control plane last pushed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Connected, and it ACKed the last push.
    Synced,
    /// Connected, and a push is not ACKed yet.
    Stale,
    /// It refused the last push; it keeps serving what it ACKed before.
    Nack,
    /// Not connected: it runs its last known good config, which may be out of date.
    Disconnected,
}

impl Sync {
    pub fn of(p: &ProxyStatus) -> Self {
        if !p.connected {
            Self::Disconnected
        } else if p.nack.is_some() {
            Self::Nack
        } else if p.in_sync {
            Self::Synced
        } else {
            Self::Stale
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "SYNCED",
            Self::Stale => "STALE",
            Self::Nack => "NACK",
            Self::Disconnected => "DISCONNECTED",
        }
    }
}

/// The `/proxy-status` document at `now`.
pub fn proxy_status_json(proxies: &[ProxyStatus], now: SystemTime) -> serde_json::Value {
    let age = |t: Option<SystemTime>| t.map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64());
    let rows: Vec<serde_json::Value> = proxies
        .iter()
        .map(|p| {
            let sync = Sync::of(p);
            // How long the proxy has been behind: since the push it has not ACKed went out.
            let behind_for = match sync {
                Sync::Stale | Sync::Nack => age(p.last_sent_at),
                Sync::Synced | Sync::Disconnected => None,
            };
            serde_json::json!({
                "instance": p.instance_id,
                "workload": p.workload,
                "namespace": p.namespace,
                "sync": sync.as_str(),
                "connected": p.connected,
                "sentVersion": p.sent_version,
                "ackedVersion": p.acked_version,
                "nack": p.nack,
                "lastAckAgeSeconds": age(p.last_acked_at),
                "lastPushAgeSeconds": age(p.last_sent_at),
                "behindForSeconds": behind_for,
                "connectedForSeconds": p.connected.then(|| age(Some(p.connected_since))),
                "pushes": p.pushes,
            })
        })
        .collect();
    serde_json::json!({ "proxies": rows })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn proxy(connected: bool, sent: Option<&str>, acked: Option<&str>, nack: Option<&str>) -> ProxyStatus {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        ProxyStatus {
            instance_id: "reviews-v1-0".into(),
            workload: "reviews-v1".into(),
            namespace: "default".into(),
            proxy_version: String::new(),
            sent_version: sent.map(str::to_string),
            acked_version: acked.map(str::to_string),
            nack: nack.map(str::to_string),
            in_sync: connected && sent.is_some() && sent == acked,
            connected,
            connected_since: t0,
            last_sent_at: sent.map(|_| t0 + Duration::from_secs(10)),
            last_acked_at: acked.map(|_| t0 + Duration::from_secs(5)),
            last_push: None,
            pushes: 2,
            resources_sent: 7,
        }
    }

    #[test]
    fn each_state_with_its_ages() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_030);
        let v = proxy_status_json(
            &[
                proxy(true, Some("b"), Some("b"), None),
                proxy(true, Some("b"), Some("a"), None),
                proxy(true, Some("b"), Some("a"), Some("bad route")),
                proxy(false, Some("b"), Some("b"), None),
            ],
            now,
        );
        let rows = v["proxies"].as_array().expect("rows");
        let syncs: Vec<&str> = rows.iter().filter_map(|r| r["sync"].as_str()).collect();
        assert_eq!(syncs, ["SYNCED", "STALE", "NACK", "DISCONNECTED"]);
        assert_eq!(rows[0]["lastAckAgeSeconds"], 25.0);
        assert_eq!(rows[0]["behindForSeconds"], serde_json::Value::Null);
        assert_eq!(
            rows[1]["behindForSeconds"], 20.0,
            "since the unACKed push went out"
        );
        assert_eq!(rows[2]["nack"], "bad route");
        assert_eq!(rows[3]["connectedForSeconds"], serde_json::Value::Null);
        assert_eq!(rows[0]["connectedForSeconds"], 30.0);
    }
}
