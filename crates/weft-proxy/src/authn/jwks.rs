//! Key sets at a `jwksUri`: fetched when first needed, kept across pushes, refreshed every
//! [`REFRESH`], and fetched early (at most every [`MIN_REFETCH`]) when a token names a key id
//! the cached set lacks (the issuer rotated its keys). One fetch per URI at a time; while a
//! refresh fails, the keys already held keep serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::{AuthnError, KeySet};

/// How long a fetched key set is used before it is fetched again (Istio's default).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// The earliest a key set is fetched again for an unknown key id, or after a failed fetch.
pub const MIN_REFETCH: Duration = Duration::from_secs(1);
/// Time allowed for a fetch when the rule names none (Istio's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set read.
const MAX_BYTES: usize = 1 << 20;

/// Key sets by URI; lives as long as the proxy.
#[derive(Default)]
pub struct JwksCache {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Default, Clone)]
struct Slot {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    tried_at: Option<Instant>,
    /// Held while one request fetches, so concurrent ones wait for its result.
    gate: Arc<tokio::sync::Mutex<()>>,
}

// === impl JwksCache ===

impl JwksCache {
    /// The key set at `uri`, fetched if not held, too old, or lacking `kid`.
    pub async fn get(
        &self,
        uri: &str,
        timeout_ms: Option<u64>,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, AuthnError> {
        if let Some(keys) = self.usable(uri, kid) {
            return Ok(keys);
        }
        let gate = self.slot(uri).gate;
        let _fetching = gate.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(keys) = self.usable(uri, kid) {
            return Ok(keys);
        }
        let slot = self.slot(uri);
        if slot.tried_at.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return slot.keys.ok_or_else(|| {
                AuthnError::JwksFetchFailed(format!("{uri}: the last fetch failed a moment ago"))
            });
        }
        let timeout = timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let fetched = tokio::time::timeout(timeout, fetch(uri))
            .await
            .unwrap_or_else(|_| Err(format!("no key set within {timeout:?}")))
            .and_then(|text| KeySet::parse(&text));
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(uri.to_string()).or_default();
        slot.tried_at = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                tracing::info!(uri, keys = keys.len(), "JWKS fetched");
                let keys = Arc::new(keys);
                slot.keys = Some(keys.clone());
                slot.fetched_at = Some(Instant::now());
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(uri, error = %e, "JWKS fetch failed");
                // Keys already held keep serving (a refresh failed, not the issuer).
                slot.keys.clone().ok_or(AuthnError::JwksFetchFailed(e))
            }
        }
    }

    /// The held keys for `uri` when fresh and (for a `kid`) holding it or just fetched.
    fn usable(&self, uri: &str, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.get(uri)?;
        let keys = slot.keys.clone()?;
        let age = slot.fetched_at?.elapsed();
        let fresh = age < REFRESH;
        let knows_kid = kid.is_none_or(|k| keys.has_kid(k)) || age < MIN_REFETCH;
        (fresh && knows_kid).then_some(keys)
    }

    fn slot(&self, uri: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(uri.to_string()).or_default().clone()
    }
}

/// Reads the key set at `uri`: `http://` with a GET, `file://` from the proxy's disk.
async fn fetch(uri: &str) -> Result<String, String> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = path.to_string();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if bytes.len() > MAX_BYTES {
            return Err(format!("larger than {MAX_BYTES} bytes"));
        }
        return String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string());
    }
    let parsed: http::Uri = uri.parse().map_err(|e| format!("not a URI: {e}"))?;
    if parsed.scheme_str() != Some("http") {
        return Err("only http:// and file:// key sets are fetched".into());
    }
    let authority = parsed.authority().ok_or("names no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "not UTF-8".to_string())
}
