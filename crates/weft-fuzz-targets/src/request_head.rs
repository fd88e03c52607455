//! `request_head`: the proxy's canonical step (weft-proxy `http::canonical`), on a request head
//! as hyper hands it over: whatever method, target, version and headers reach it, it either
//! refuses the request or leaves it in the one form every decision reads, and a second pass
//! changes nothing.

use http::header::{HOST, UPGRADE};
use http::{Method, Request, Version};
use weft_api::canonical::{normalize_path, parse_authority, PathNormalization};
use weft_api::proxy_config::HttpOptions;
use weft_proxy::http::canonical::canonicalize;
use weft_proxy::http::headers::is_upgrade;

const MODES: [PathNormalization; 4] = [
    PathNormalization::None,
    PathNormalization::Base,
    PathNormalization::MergeSlashes,
    PathNormalization::DecodeAndMergeSlashes,
];

/// `data`: `METHOD TARGET VERSION` then `name: value` lines (`\n`-separated), as text; a line
/// that is not one is skipped, a head the `http` crate refuses (hyper would too) is not a
/// request.
pub fn request_head(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let Some(first) = lines.next() else { return };
    let mut words = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next()) else {
        return;
    };
    let version = match version.trim_end() {
        "HTTP/1.0" => Version::HTTP_10,
        "HTTP/2" => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder().method(method).uri(target).version(version);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(()) else { return };

    for mode in MODES {
        let options = HttpOptions {
            path_normalization: mode,
            ..HttpOptions::default()
        };
        let mut req = clone(&request);
        if canonicalize(&mut req, &options).is_err() {
            continue;
        }
        holds(&req, mode, &options);
        let once = clone(&req);
        if let Err(e) = canonicalize(&mut req, &options) {
            panic!("{mode:?}: a canonical request is refused the second time: {e:?}\n{once:?}");
        }
        assert_eq!(req.uri(), once.uri(), "{mode:?}: not a fixed point");
        assert_eq!(req.headers(), once.headers(), "{mode:?}: not a fixed point");
    }
}

/// What every decision after the canonical step relies on.
fn holds(req: &Request<()>, mode: PathNormalization, options: &HttpOptions) {
    let hosts: Vec<_> = req.headers().get_all(HOST).iter().collect();
    assert!(hosts.len() <= 1, "more than one Host left: {req:?}");
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    if req.version() == Version::HTTP_2 {
        if authority.is_some() {
            assert!(hosts.is_empty(), "h2: host beside :authority: {req:?}");
        }
    } else if let (Some(a), Some(h)) = (&authority, hosts.first()) {
        assert_eq!(
            h.as_bytes(),
            a.as_bytes(),
            "HTTP/1: Host is not the target's authority: {req:?}"
        );
    }
    // The authority read by policy is in its canonical spelling.
    let read = authority.or_else(|| hosts.first().and_then(|h| h.to_str().ok()).map(str::to_string));
    if let Some(a) = read {
        let parsed = parse_authority(&a).unwrap_or_else(|e| panic!("{a:?} left unparsable: {e}"));
        assert_eq!(parsed.to_header_value(), a, "authority not canonical: {req:?}");
    }
    // The path routing and authorization match on is normalized.
    let path = req.uri().path();
    if req.method() != Method::CONNECT && path != "*" {
        let again =
            normalize_path(path, mode).unwrap_or_else(|e| panic!("{mode:?}: {path:?} refused after: {e}"));
        assert_eq!(again, path, "{mode:?}: path not normalized: {req:?}");
    }
    // An upgrade that passed is one the options allow; h2c never does.
    if let Some(up) = req.headers().get(UPGRADE) {
        let up = String::from_utf8_lossy(up.as_bytes()).to_ascii_lowercase();
        assert!(
            !up.split(',').any(|t| t.trim().starts_with("h2c")),
            "h2c upgrade left: {req:?}"
        );
        if is_upgrade(req.headers()) {
            for t in up.split(',').map(|t| t.trim().split('/').next().unwrap_or("")) {
                assert!(
                    options.upgrades.iter().any(|u| u.eq_ignore_ascii_case(t)),
                    "upgrade {t:?} passed: {req:?}"
                );
            }
        }
    }
}

fn clone(req: &Request<()>) -> Request<()> {
    let mut out = Request::new(());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    out
}
