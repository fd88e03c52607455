//! Token verification with real signatures (keys made per test), and key sets fetched from a
//! real HTTP server on loopback and from a file.

use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde_json::json;
use weft_api::proxy_config::{ClaimToHeader, JwtHeader, JwtRule};
use weft_test_support::jwt::{jwks_of, now};
use weft_test_support::{JwtIssuer, StaticHttp};

use super::*;

fn rule(issuer: &JwtIssuer) -> JwtRule {
    JwtRule {
        issuer: issuer.issuer.clone(),
        jwks: Some(issuer.jwks()),
        ..Default::default()
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    h
}

async fn run(rules: &[JwtRule], headers: &mut HeaderMap, uri: &str) -> Result<Option<Verified>, AuthnError> {
    let cache = JwksCache::default();
    let uri: Uri = uri.parse().expect("uri");
    Authenticator::new(rules)
        .authenticate(&cache, headers, &uri, now())
        .await
}

#[tokio::test]
async fn valid_tokens_verify_and_invalid_ones_say_why() {
    let rsa = JwtIssuer::rs256("https://rsa.example", "r1").expect("rsa");
    let ec = JwtIssuer::es256("https://ec.example", "e1").expect("ec");
    let other = JwtIssuer::es256("https://ec.example", "e1").expect("another key, same kid");
    let rules = [rule(&rsa), rule(&ec)];
    let rules = &rules;
    let ok = |t: String| async move { run(rules, &mut bearer(&t), "/").await };

    let v = ok(rsa.token_for("alice", json!({})).expect("t"))
        .await
        .expect("RS256")
        .expect("some");
    assert_eq!(v.auth.principal, "https://rsa.example/alice");
    let v = ok(ec.token_for("bob", json!({"groups": ["dev"]})).expect("t"))
        .await
        .expect("ES256")
        .expect("some");
    assert_eq!(v.auth.principal, "https://ec.example/bob");
    assert_eq!(v.auth.claim_values(&["groups"]), ["dev"]);

    let past = now() - 3600;
    let cases = [
        (rsa.token_for("a", json!({"exp": past})), AuthnError::Expired),
        // Within the 60 s of clock skew: still valid, checked below.
        (
            rsa.token_for("a", json!({"nbf": now() + 3600})),
            AuthnError::NotYetValid,
        ),
        (
            rsa.token_for("a", json!({"iss": "https://unknown.example"})),
            AuthnError::UnknownIssuer,
        ),
        (other.token_for("a", json!({})), AuthnError::VerificationFails),
        (
            rsa.token_for("a", json!({"exp": "tomorrow"})),
            AuthnError::BadFormat,
        ),
        (Ok("not-a-jwt".to_string()), AuthnError::BadFormat),
    ];
    for (token, want) in cases {
        let token = token.expect("token");
        assert_eq!(ok(token).await.err(), Some(want.clone()), "{want}");
    }
    let skewed = rsa.token_for("a", json!({"exp": now() - 30})).expect("t");
    assert!(ok(skewed).await.is_ok(), "30 s past exp is inside the clock skew");
    // A token whose `kid` the set lacks.
    let rotated = JwtIssuer::rs256("https://rsa.example", "r2").expect("rsa");
    assert_eq!(
        ok(rotated.token_for("a", json!({})).expect("t")).await.err(),
        Some(AuthnError::NoMatchingKey)
    );
    // No token: authenticated as nobody, not refused.
    assert!(run(rules, &mut HeaderMap::new(), "/")
        .await
        .expect("ok")
        .is_none());
    // Another scheme in Authorization is not a token.
    let mut basic = HeaderMap::new();
    basic.insert("authorization", HeaderValue::from_static("Basic dXNlcjpwdw=="));
    assert!(run(rules, &mut basic, "/").await.expect("ok").is_none());
}

#[tokio::test]
async fn audiences_accept_one_match_ignoring_scheme_and_slash() {
    let iss = JwtIssuer::es256("issuer-a", "k").expect("ec");
    let rule = JwtRule {
        audiences: vec!["books.example".into(), "https://ratings.example/".into()],
        ..rule(&iss)
    };
    for (aud, ok) in [
        (json!("books.example"), true),
        (json!(["other", "http://ratings.example"]), true),
        (json!(["other"]), false),
        (json!(null), false),
    ] {
        let t = iss.token_for("a", json!({"aud": aud})).expect("t");
        let got = run(std::slice::from_ref(&rule), &mut bearer(&t), "/").await;
        assert_eq!(got.is_ok(), ok, "{aud}");
        if !ok {
            assert_eq!(got.err(), Some(AuthnError::AudienceNotAllowed));
        }
    }
}

#[tokio::test]
async fn token_locations_stripping_and_outputs() {
    let iss = JwtIssuer::es256("issuer-a", "k").expect("ec");
    let t = iss
        .token_for("alice", json!({"level": 3, "team": "search"}))
        .expect("t");

    // Default: Authorization stripped after verification; forged output headers removed.
    let outputs = JwtRule {
        output_payload_to_header: Some("x-jwt-payload".into()),
        output_claim_to_headers: vec![
            ClaimToHeader {
                header: "x-jwt-team".into(),
                claim: "team".into(),
            },
            ClaimToHeader {
                header: "x-jwt-level".into(),
                claim: "level".into(),
            },
        ],
        ..rule(&iss)
    };
    let mut h = bearer(&t);
    run(std::slice::from_ref(&outputs), &mut h, "/")
        .await
        .expect("ok")
        .expect("verified");
    assert!(h.get("authorization").is_none(), "token stripped before the app");
    assert_eq!(h["x-jwt-payload"], t.split('.').nth(1).expect("payload"));
    assert_eq!(h["x-jwt-team"], "search");
    assert_eq!(h["x-jwt-level"], "3");
    let mut forged = HeaderMap::new();
    forged.insert("x-jwt-team", HeaderValue::from_static("admins"));
    assert!(run(std::slice::from_ref(&outputs), &mut forged, "/")
        .await
        .expect("ok")
        .is_none());
    assert!(
        forged.get("x-jwt-team").is_none(),
        "a client cannot write what the proxy vouches for"
    );

    // forwardOriginalToken keeps it.
    let forward = JwtRule {
        forward_original_token: true,
        ..rule(&iss)
    };
    let mut h = bearer(&t);
    run(&[forward], &mut h, "/").await.expect("ok").expect("verified");
    assert!(h.get("authorization").is_some());

    // fromHeaders with a prefix, fromParams, fromCookies: only those are read.
    let custom = JwtRule {
        from_headers: vec![JwtHeader {
            name: "x-jwt".into(),
            prefix: "Token ".into(),
        }],
        from_params: vec!["jwt".into()],
        from_cookies: vec!["session".into()],
        ..rule(&iss)
    };
    let rules = std::slice::from_ref(&custom);
    let mut h = HeaderMap::new();
    h.insert("x-jwt", HeaderValue::from_str(&format!("Token {t}")).expect("h"));
    run(rules, &mut h, "/").await.expect("ok").expect("from x-jwt");
    assert!(h.get("x-jwt").is_none());
    run(rules, &mut HeaderMap::new(), &format!("/p?a=1&jwt={t}"))
        .await
        .expect("ok")
        .expect("from ?jwt");
    let mut h = HeaderMap::new();
    h.insert(
        "cookie",
        HeaderValue::from_str(&format!("a=b; session={t}")).expect("h"),
    );
    run(rules, &mut h, "/")
        .await
        .expect("ok")
        .expect("from the cookie");
    // The default places are not read by a rule that names its own.
    assert!(run(rules, &mut bearer(&t), &format!("/?access_token={t}"))
        .await
        .expect("ok")
        .is_none());
    // ...and are by one that names none.
    run(
        &[rule(&iss)],
        &mut HeaderMap::new(),
        &format!("/?access_token={t}"),
    )
    .await
    .expect("ok")
    .expect("from ?access_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_key_sets_are_fetched_once_refetched_for_a_new_kid_and_read_from_files() {
    let old = JwtIssuer::rs256("issuer-r", "old").expect("rsa");
    let new = JwtIssuer::es256("issuer-r", "new").expect("ec");
    let server = StaticHttp::start(old.jwks(), "application/json")
        .await
        .expect("server");
    let rule = JwtRule {
        issuer: "issuer-r".into(),
        jwks_uri: Some(server.url("/jwks.json")),
        ..Default::default()
    };
    let auth = Authenticator::new(std::slice::from_ref(&rule));
    let cache = JwksCache::default();
    let uri: Uri = "/".parse().expect("uri");
    let check = |token: String| {
        let (auth, cache, uri) = (&auth, &cache, &uri);
        async move { auth.authenticate(cache, &mut bearer(&token), uri, now()).await }
    };
    for _ in 0..3 {
        check(old.token_for("a", json!({})).expect("t"))
            .await
            .expect("verified");
    }
    assert_eq!(server.requests(), 1, "the key set is cached");

    // The issuer rotates: a token naming the new kid makes the proxy fetch again.
    server.set_body(jwks_of(&[&old, &new]), StatusCode::OK);
    tokio::time::sleep(jwks::MIN_REFETCH).await;
    check(new.token_for("a", json!({})).expect("t"))
        .await
        .expect("rotated key verified");
    assert_eq!(server.requests(), 2);

    // Keys that cannot be fetched refuse the token (401), never let it through.
    let missing = JwtRule {
        jwks_uri: Some("http://127.0.0.1:1/jwks.json".into()),
        jwks_timeout_ms: Some(500),
        ..rule.clone()
    };
    let got = Authenticator::new(&[missing])
        .authenticate(
            &cache,
            &mut bearer(&old.token_for("a", json!({})).expect("t")),
            &uri,
            now(),
        )
        .await;
    assert!(matches!(got, Err(AuthnError::JwksFetchFailed(_))), "{got:?}");

    // file://
    let dir = std::env::temp_dir().join(format!("weft-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("jwks.json");
    std::fs::write(&path, new.jwks()).expect("write");
    let from_file = JwtRule {
        jwks_uri: Some(format!("file://{}", path.display())),
        ..rule.clone()
    };
    Authenticator::new(&[from_file])
        .authenticate(
            &JwksCache::default(),
            &mut bearer(&new.token_for("a", json!({})).expect("t")),
            &uri,
            now(),
        )
        .await
        .expect("verified from a file")
        .expect("some");
    let _ = std::fs::remove_dir_all(&dir);
}
