//! The canonical request (shared/ARCHITECTURE.md, "The request inside a proxy: canonical
//! once"): on arrival at every listener, before any decision, the request head is rewritten in
//! place into the one form that authorization, routing, metrics, logs and the upstream all
//! read. Nothing downstream looks at the raw head again, so what a policy checked is what the
//! app receives.
//!
//! - The path is normalized by the mesh's `pathNormalization` (`weft_api::canonical`); one
//!   that cannot be is refused (400, flag `DPE`).
//! - The authority is lower-cased without a trailing dot and its port read as a number. An
//!   HTTP/1 request has exactly one `Host`, and an absolute-form target replaces it (RFC 9112
//!   §3.2.2); an HTTP/2 request whose `host` differs from its `:authority` is refused.
//! - Upgrades: only the configured protocols (WebSocket by default, as Istio) pass; an `h2c`
//!   upgrade is not performed (its headers are dropped and the request is served as the
//!   HTTP/1.1 request it also is, as Envoy does); any other upgrade is refused (403).
//! - Identity headers a caller could forge (`x-forwarded-client-cert`, `l5d-client-id`) are
//!   removed, and set from the verified peer on mTLS (Envoy's `SANITIZE_SET`, Linkerd's
//!   `l5d-client-id`).

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority as UriAuthority, PathAndQuery, Uri};
use http::{Method, Request, StatusCode, Version};
use weft_api::canonical::{normalize_path, parse_authority};
use weft_api::proxy_config::HttpOptions;

use super::error::ProxyError;

/// Envoy's header carrying the verified client certificate's identity.
pub const XFCC: &str = "x-forwarded-client-cert";
/// Linkerd's header carrying the verified client identity.
pub const L5D_CLIENT_ID: &str = "l5d-client-id";

/// Rewrites `req` into its canonical form, or says why it has none.
pub fn canonicalize<B>(req: &mut Request<B>, options: &HttpOptions) -> Result<(), ProxyError> {
    canonical_authority(req)?;
    if req.method() != Method::CONNECT {
        canonical_path(req, options)?;
    }
    upgrade(req, options)
}

fn malformed(message: impl Into<String>) -> ProxyError {
    ProxyError::bad_request(StatusCode::BAD_REQUEST, message)
}

/// One authority, canonical, in the URI (when it has one) and in `Host` (HTTP/1).
fn canonical_authority<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(malformed("more than one Host header"));
    }
    let host = host
        .map(|v| v.to_str().map_err(|_| malformed("Host is not ASCII")))
        .transpose()?;
    let uri_authority = req.uri().authority().map(UriAuthority::as_str);
    let h2 = req.version() == Version::HTTP_2;
    let raw = match (h2, uri_authority, host) {
        // HTTP/2: `:authority` and `host` must agree when both are sent.
        (true, Some(a), Some(h)) => {
            if canonical(a)? != canonical(h)? {
                return Err(malformed("host header differs from :authority"));
            }
            a
        }
        // HTTP/1 absolute-form: the target's authority wins over Host.
        (_, Some(a), _) => a,
        (_, None, Some(h)) => h,
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused (HTTP/1.0 may omit it,
        // and HTTP/2 may carry no authority).
        (false, None, None) if req.version() == Version::HTTP_11 => {
            return Err(malformed("HTTP/1.1 request without Host"));
        }
        (_, None, None) => return Ok(()),
    };
    let value = canonical(raw)?;
    let fix_uri = uri_authority.is_some_and(|a| a != value);
    let fix_host = if h2 { host.is_some() } else { host != Some(&*value) };
    if !fix_uri && !fix_host {
        return Ok(());
    }
    let value = value.into_owned();
    if fix_uri {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        let authority =
            UriAuthority::try_from(value.as_str()).map_err(|_| malformed("malformed authority"))?;
        parts.authority = Some(authority);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| malformed("malformed request target"))?;
    }
    if h2 {
        // Equal to `:authority` (checked above): one place to read it from.
        req.headers_mut().remove(header::HOST);
    } else if fix_host {
        let v = HeaderValue::from_str(&value).map_err(|_| malformed("malformed authority"))?;
        req.headers_mut().insert(header::HOST, v);
    }
    Ok(())
}

/// The canonical spelling of an authority; borrowed when `raw` already is it.
fn canonical(raw: &str) -> Result<Cow<'_, str>, ProxyError> {
    let a = parse_authority(raw).map_err(|e| malformed(format!("malformed authority: {e}")))?;
    let unchanged = match (&a.host, a.port) {
        (Cow::Borrowed(h), None) => raw == *h,
        (Cow::Borrowed(h), Some(p)) => raw
            .strip_prefix(*h)
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|digits| !digits.starts_with('0') && digits.parse() == Ok(p)),
        (Cow::Owned(_), _) => false,
    };
    Ok(if unchanged {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(a.to_header_value())
    })
}

fn canonical_path<B>(req: &mut Request<B>, options: &HttpOptions) -> Result<(), ProxyError> {
    let path = req.uri().path();
    if path == "*" {
        return if req.method() == Method::OPTIONS {
            Ok(())
        } else {
            Err(malformed("asterisk-form target outside OPTIONS"))
        };
    }
    let path = if path.is_empty() { "/" } else { path };
    let normalized = normalize_path(path, options.path_normalization)
        .map_err(|e| malformed(format!("path cannot be normalized: {e}")))?;
    if normalized == req.uri().path() {
        return Ok(());
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized.into_owned(),
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(pq).map_err(|_| malformed("malformed request target"))?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| malformed("malformed request target"))?;
    Ok(())
}

/// Lets only configured upgrades through (see the module docs).
fn upgrade<B>(req: &mut Request<B>, options: &HttpOptions) -> Result<(), ProxyError> {
    let Some(upgrade) = req.headers().get(header::UPGRADE) else {
        return Ok(());
    };
    let asks = super::headers::is_upgrade(req.headers());
    let protocols = upgrade.to_str().unwrap_or_default().to_ascii_lowercase();
    let mut tokens = protocols
        .split(',')
        .map(|t| t.trim().split('/').next().unwrap_or(""));
    if tokens.clone().any(|t| t == "h2c") {
        let h = req.headers_mut();
        h.remove(header::UPGRADE);
        h.remove("http2-settings");
        drop_connection_token(h, "upgrade");
        drop_connection_token(h, "http2-settings");
        return Ok(());
    }
    if !asks {
        // Without `Connection: upgrade` it is an ordinary hop-by-hop header, dropped later.
        return Ok(());
    }
    if tokens.all(|t| options.upgrades.iter().any(|u| u.eq_ignore_ascii_case(t))) {
        return Ok(());
    }
    Err(ProxyError::bad_request(
        StatusCode::FORBIDDEN,
        format!("upgrade to {protocols:?} is not allowed"),
    ))
}

/// Removes `token` from the `Connection` header's list.
fn drop_connection_token(h: &mut HeaderMap, token: &str) {
    let kept: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(token))
        .map(str::to_string)
        .collect();
    h.remove(header::CONNECTION);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
            h.insert(header::CONNECTION, v);
        }
    }
}

/// Removes the client-identity headers a caller could forge and, for a peer verified by mTLS,
/// sets them from its certificate: `x-forwarded-client-cert: By=<this workload>;URI=<peer>`
/// and `l5d-client-id` in Linkerd's spelling (`sa.ns.serviceaccount.identity.linkerd.<td>`).
pub fn set_client_identity(h: &mut HeaderMap, verified: Option<(&str, &str)>) {
    h.remove(XFCC);
    h.remove(L5D_CLIENT_ID);
    let Some((peer, local)) = verified else { return };
    if let Ok(v) = HeaderValue::from_str(&format!("By={local};URI={peer}")) {
        h.insert(XFCC, v);
    }
    if let Some(id) = linkerd_identity(peer) {
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert(L5D_CLIENT_ID, v);
        }
    }
}

/// `spiffe://td/ns/NS/sa/SA` -> `SA.NS.serviceaccount.identity.linkerd.td`.
fn linkerd_identity(spiffe: &str) -> Option<String> {
    let rest = spiffe.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
            Some(format!("{sa}.{ns}.serviceaccount.identity.linkerd.{td}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
