//! End-user authentication end to end, as real processes: Istio `RequestAuthentication` and
//! `AuthorizationPolicy` documents given to `weft control`, a sidecar that verifies JWTs signed
//! in the test (RS256 with its key set on a loopback URL, ES256 inline), real curl through a
//! client sidecar (mTLS between the proxies) and straight to the app port from outside.
//! Istio's answers: an invalid token 401, no token where a principal is required 403.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::control::{sidecar, wait_ready, Control};
use common::{curl, metric_sum, run, tempdir, weft_bin};
use serde_json::json;
use weft_test_support::jwt::now;
use weft_test_support::{HttpEcho, JwtIssuer, StaticHttp};

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: books}
spec:
  selector: {app: books}
  ports: [{name: http, port: 9080}]
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: books-v1}
spec: {labels: {app: books}, ports: [{name: http, port: 9080}]}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: web-v1}
spec: {labels: {app: web}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: books, namespace: default}
spec:
  selector: {matchLabels: {app: books}}
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
  - from: [{source: {requestPrincipals: ["*"]}}]
    to: [{operation: {paths: ["/private/*"]}}]
  - to: [{operation: {paths: ["/admin/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
"#;

/// RS256 from a key set on a loopback URL, with an audience; ES256 inline, its payload passed
/// to the app.
fn request_authentication(jwks_url: &str, es: &JwtIssuer) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: books-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: books}}}}
  jwtRules:
  - issuer: https://rsa.example
    jwksUri: {jwks_url}
    audiences: [books]
  - issuer: https://ec.example
    jwks: '{jwks}'
    outputPayloadToHeader: x-jwt-payload
"#,
        jwks = es.jwks()
    )
}

/// `curl -i URL` with an optional bearer token: (status, whole response).
fn get(url: &str, token: Option<&str>) -> (String, String) {
    let auth;
    let mut args = vec!["-sS", "-i", url];
    if let Some(t) = token {
        auth = format!("authorization: Bearer {t}");
        args.extend(["-H", &auth]);
    }
    let out = curl(&args);
    let status = out
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, out.stdout)
}

/// Polls until `GET url` answers `want` (the push takes a moment), returning the response.
fn until(url: &str, token: Option<&str>, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, resp) = get(url, token);
        if status == want {
            return resp;
        }
        assert!(Instant::now() < deadline, "never {want}; last:\n{resp}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_verify_jwts_and_authorize_on_their_claims() {
    let rsa = JwtIssuer::rs256("https://rsa.example", "rsa-1").expect("rsa key");
    let es = JwtIssuer::es256("https://ec.example", "ec-1").expect("ec key");
    let stranger = JwtIssuer::es256("https://stranger.example", "s-1").expect("ec key");
    let jwks_server = StaticHttp::start(rsa.jwks(), "application/json")
        .await
        .expect("jwks");

    let config = tempdir::Dir::new("weft-authn-config");
    let state = tempdir::Dir::new("weft-authn-state");
    std::fs::write(config.path.join("mesh.yaml"), MESH).expect("write");
    std::fs::write(
        config.path.join("authn.yaml"),
        request_authentication(&jwks_server.url("/jwks.json"), &es),
    )
    .expect("write");
    // The documents read as acted on: RequestAuthentication is no "read but not acted on".
    let analyze = run(
        weft_bin(),
        &["analyze", config.path.to_str().expect("utf-8"), "-o", "json"],
    );
    assert!(!analyze.stdout.contains("not acted on"), "{}", analyze.stdout);
    assert!(analyze.status.success(), "{}{}", analyze.stdout, analyze.stderr);

    let control = Control::start(&config.path, &state.path, "127.0.0.1:0", "127.0.0.1:0");
    let app = HttpEcho::start("books-v1").await.expect("app");
    let books = sidecar(
        &control,
        "books-v1",
        &format!("{{port: 9080, app: \"{}\", listen: \"127.0.0.1:0\"}}", app.addr()),
        "",
    );
    let web = sidecar(
        &control,
        "web-v1",
        "",
        "{listen: \"127.0.0.1:0\", service: books, port: 9080}",
    );
    for p in [&books, &web] {
        wait_ready(p);
    }
    let via_mesh: SocketAddr = web.bound.outbound_ports[0];
    let outside: SocketAddr = books.bound.inbound_ports[0];
    let mesh = |path: &str| format!("http://{via_mesh}{path}");
    let direct = |path: &str| format!("http://{outside}{path}");

    let valid_rsa = rsa.token_for("alice", json!({"aud": "books"})).expect("token");
    // Policies arrive with the push: until then everything is 200.
    until(&mesh("/private/1"), None, "403");

    for url in [mesh("/private/1"), direct("/private/1")] {
        // A valid RS256 token, its key set fetched from the loopback URL: allowed, and the app
        // never sees the token.
        let (status, resp) = get(&url, Some(&valid_rsa));
        assert_eq!(status, "200", "{resp}");
        assert!(
            !resp.to_ascii_lowercase().contains("authorization:"),
            "token reached the app:\n{resp}"
        );
        // No token: authenticated as nobody, refused by the policy (403 RBAC).
        let (status, resp) = get(&url, None);
        assert_eq!(status, "403", "{resp}");
        assert!(resp.contains("RBAC: access denied"), "{resp}");
        // Invalid tokens: 401 with Envoy's reason and a Bearer challenge.
        let refused = [
            (
                rsa.token_for("alice", json!({"aud": "books", "exp": now() - 3600})),
                "Jwt is expired",
            ),
            (
                stranger.token_for("alice", json!({})),
                "Jwt issuer is not configured",
            ),
            (
                rsa.token_for("alice", json!({"aud": "orders"})),
                "Audiences in Jwt are not allowed",
            ),
            // Signed by another key than the issuer's.
            (
                JwtIssuer::es256("https://ec.example", "ec-1")
                    .expect("key")
                    .token_for("a", json!({})),
                "Jwt verification fails",
            ),
        ];
        for (token, reason) in refused {
            let (status, resp) = get(&url, Some(&token.expect("token")));
            assert_eq!(status, "401", "{reason}: {resp}");
            assert!(resp.contains(reason), "{reason}: {resp}");
            assert!(
                resp.to_ascii_lowercase().contains("www-authenticate: bearer"),
                "{resp}"
            );
        }
    }
    assert!(
        jwks_server.requests() >= 1,
        "the key set came from the loopback URL"
    );
    // An invalid token is refused even where the policy needs none.
    let expired = rsa
        .token_for("a", json!({"aud": "books", "exp": now() - 3600}))
        .expect("token");
    assert_eq!(get(&mesh("/public/1"), Some(&expired)).0, "401");
    assert_eq!(get(&mesh("/public/1"), None).0, "200");

    // A claims condition, ES256 inline: groups [admin] allowed, [dev] 403; the payload header
    // reaches the app.
    let admin = es.token_for("root", json!({"groups": ["admin"]})).expect("token");
    let dev = es.token_for("bob", json!({"groups": ["dev"]})).expect("token");
    let (status, resp) = get(&mesh("/admin/1"), Some(&admin));
    assert_eq!(status, "200", "{resp}");
    let payload = admin.split('.').nth(1).expect("payload");
    assert!(resp.contains(&format!("x-jwt-payload: {payload}")), "{resp}");
    assert_eq!(get(&mesh("/admin/1"), Some(&dev)).0, "403");

    // The refusals are counted by the server sidecar as 401s.
    let m = books.metrics();
    let unauthenticated = [("reporter", "destination"), ("response_code", "401")];
    assert!(
        metric_sum(&m, "istio_requests_total", &unauthenticated) >= 8.0,
        "{m}"
    );

    // `weft explain` names the RequestAuthentication that applies.
    let explained = run(
        weft_bin(),
        &[
            "explain",
            config.path.to_str().expect("utf-8"),
            "--from",
            "web-v1",
            "GET http://books:9080/private/1",
            "-o",
            "json",
        ],
    );
    let e: serde_json::Value = serde_json::from_str(&explained.stdout).expect("explain json");
    assert_eq!(e["authentication"][0]["name"], "books-jwt", "{e}");
    assert_eq!(e["authentication"][0]["issuers"][1], "https://ec.example", "{e}");
    assert_eq!(e["authorization"]["allowed"], false, "no verified token: {e}");
}
