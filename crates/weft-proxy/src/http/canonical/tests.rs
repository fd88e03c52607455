use http::{HeaderMap, Method, Request, StatusCode, Version};
use weft_api::canonical::PathNormalization;
use weft_api::proxy_config::HttpOptions;

use super::*;

fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().version(version).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("request")
}

fn run(mut r: Request<()>) -> Result<Request<()>, StatusCode> {
    canonicalize(&mut r, &HttpOptions::default()).map_err(|e| e.status)?;
    Ok(r)
}

#[test]
fn the_path_the_app_gets_is_the_normalized_one() {
    let r = run(req(Version::HTTP_11, "/x/../%61dmin?q=%2e", &[("host", "a")])).expect("ok");
    assert_eq!(r.uri().path(), "/admin");
    assert_eq!(r.uri().query(), Some("q=%2e"), "the query is left alone");
    let r = run(req(Version::HTTP_11, "/../admin", &[("host", "a")]));
    assert_eq!(r.err(), Some(StatusCode::BAD_REQUEST));
    let mut options = HttpOptions {
        path_normalization: PathNormalization::MergeSlashes,
        ..HttpOptions::default()
    };
    let mut r = req(Version::HTTP_11, "//admin", &[("host", "a")]);
    canonicalize(&mut r, &options).expect("ok");
    assert_eq!(r.uri().path(), "/admin");
    options.path_normalization = PathNormalization::None;
    let mut r = req(Version::HTTP_11, "/x/../admin", &[("host", "a")]);
    canonicalize(&mut r, &options).expect("ok");
    assert_eq!(r.uri().path(), "/x/../admin");
}

#[test]
fn absolute_form_replaces_host_and_the_authority_is_canonical() {
    let r = run(req(
        Version::HTTP_11,
        "http://Allowed.:80/x",
        &[("host", "internal")],
    ))
    .expect("ok");
    assert_eq!(r.headers()["host"], "allowed:80");
    assert_eq!(r.uri().authority().map(|a| a.as_str()), Some("allowed:80"));
    let r = run(req(Version::HTTP_11, "/x", &[("host", "Reviews.Default.:09080")])).expect("ok");
    assert_eq!(r.headers()["host"], "reviews.default:9080");
}

#[test]
fn conflicting_or_duplicate_hosts_are_refused() {
    let two = run(req(Version::HTTP_11, "/", &[("host", "a"), ("host", "b")]));
    assert_eq!(two.err(), Some(StatusCode::BAD_REQUEST));
    let h2 = run(req(Version::HTTP_2, "http://allowed/x", &[("host", "internal")]));
    assert_eq!(h2.err(), Some(StatusCode::BAD_REQUEST));
    // Equal up to case and trailing dot: one authority, the `host` copy dropped.
    let r = run(req(Version::HTTP_2, "http://allowed/x", &[("host", "Allowed.")])).expect("ok");
    assert!(r.headers().get("host").is_none());
    let bad = run(req(Version::HTTP_11, "/", &[("host", "a b")]));
    assert_eq!(bad.err(), Some(StatusCode::BAD_REQUEST));
    let hostless = run(req(Version::HTTP_11, "/", &[]));
    assert_eq!(hostless.err(), Some(StatusCode::BAD_REQUEST));
    assert!(
        run(req(Version::HTTP_10, "/", &[])).is_ok(),
        "HTTP/1.0 may omit Host"
    );
}

#[test]
fn only_configured_upgrades_pass_and_h2c_is_never_performed() {
    let ws = &[("host", "a"), ("connection", "Upgrade"), ("upgrade", "websocket")];
    assert!(run(req(Version::HTTP_11, "/chat", ws)).is_ok());
    let h2c = &[
        ("host", "a"),
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
    ];
    let r = run(req(Version::HTTP_11, "/", h2c)).expect("served as HTTP/1.1");
    assert!(r.headers().get("upgrade").is_none());
    assert!(r.headers().get("http2-settings").is_none());
    assert!(r.headers().get("connection").is_none());
    let other = &[("host", "a"), ("connection", "upgrade"), ("upgrade", "spdy/3.1")];
    assert_eq!(
        run(req(Version::HTTP_11, "/", other)).err(),
        Some(StatusCode::FORBIDDEN)
    );
}

#[test]
fn client_identity_headers_come_only_from_the_verified_peer() {
    let mut h = HeaderMap::new();
    h.insert(
        XFCC,
        "URI=spiffe://cluster.local/ns/default/sa/admin"
            .parse()
            .expect("v"),
    );
    h.insert(
        L5D_CLIENT_ID,
        "admin.default.serviceaccount.identity.linkerd.cluster.local"
            .parse()
            .expect("v"),
    );
    set_client_identity(&mut h, None);
    assert!(h.get(XFCC).is_none() && h.get(L5D_CLIENT_ID).is_none());
    set_client_identity(
        &mut h,
        Some((
            "spiffe://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/api",
        )),
    );
    assert_eq!(
        h[XFCC],
        "By=spiffe://cluster.local/ns/shop/sa/api;URI=spiffe://cluster.local/ns/shop/sa/web"
    );
    assert_eq!(
        h[L5D_CLIENT_ID],
        "web.shop.serviceaccount.identity.linkerd.cluster.local"
    );
}

#[test]
fn connect_keeps_its_authority_form() {
    let mut r = req(Version::HTTP_11, "Reviews:9080", &[("host", "reviews:9080")]);
    *r.method_mut() = Method::CONNECT;
    let r = run(r).expect("ok");
    assert_eq!(r.uri().authority().map(|a| a.as_str()), Some("reviews:9080"));
}
