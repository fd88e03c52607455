//! Header hygiene at the proxy's edges.

use http::header::{self, HeaderMap, HeaderName};

/// Prefix of every header the mesh uses between its proxies. Stripped from traffic that enters
/// from outside the mesh so a client cannot forge it.
pub const MESH_PREFIX: &str = "x-weft-";
/// The app port a request is for (the mesh port serves every app port).
pub const TARGET_PORT: &str = "x-weft-target-port";
/// The protocol the app spoke, so the server proxy hands the app the same (`HTTP/1.1`).
pub const ORIG_PROTO: &str = "x-weft-orig-proto";
/// Who sent the request: `workload;namespace;app;version`.
pub const SOURCE: &str = "x-weft-source";
/// The mesh service the request was sent to (for the server's `destination_service` label).
pub const SERVICE: &str = "x-weft-service";
/// On a CONNECT stream between proxies: the stream carries an HTTP/1.1 upgrade request
/// (WebSocket), which the server proxy reads, authorizes and routes as HTTP.
pub const UPGRADE_TUNNEL: &str = "x-weft-upgrade-tunnel";

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    // `TE: trailers` is the one TE value that must survive: gRPC servers require it.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Removes every mesh header: they are believed only between proxies.
pub fn strip_mesh(headers: &mut HeaderMap) {
    let mesh: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(MESH_PREFIX))
        .cloned()
        .collect();
    for name in mesh {
        headers.remove(name);
    }
}

/// A header map as routing and authorization read it: every value of a header, in order.
pub struct HeadersView<'a>(pub &'a HeaderMap);

impl weft_api::route::Headers for HeadersView<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.0.get_all(name).iter().any(|v| f(v.as_bytes()))
    }
}

/// Whether a request is a gRPC call (its errors must be gRPC-shaped).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whether a request asks to switch protocols (WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-custom".parse().expect("value"));
        h.insert("x-custom", "1".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("x-keep", "1".parse().expect("value"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn mesh_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("x-weft-source", "evil".parse().expect("value"));
        h.insert("X-Weft-Target-Port", "1".parse().expect("value"));
        h.insert("x-other", "1".parse().expect("value"));
        strip_mesh(&mut h);
        assert_eq!(h.len(), 1);
    }
}
