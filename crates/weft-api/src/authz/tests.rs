//! Decision tables from Istio's authorization docs (HTTP traffic, TCP traffic, explicit deny).

use std::net::IpAddr;

use super::*;
use crate::proxy_config::AuthzPolicy;

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
const SLEEP: &str = "spiffe://cluster.local/ns/foo/sa/sleep";

/// A policy written as in Istio (`from[].source`, `to[].operation`), in its compiled form.
fn policy(mut istio: serde_json::Value) -> AuthzPolicy {
    let rules = istio.get_mut("rules").and_then(|r| r.as_array_mut());
    for rule in rules.into_iter().flatten() {
        for (list, wrapper) in [("from", "source"), ("to", "operation")] {
            let items = rule.get_mut(list).and_then(|l| l.as_array_mut());
            for item in items.into_iter().flatten() {
                *item = item[wrapper].take();
            }
        }
    }
    serde_json::from_value(istio).expect("policy")
}

struct Req {
    principal: Option<&'static str>,
    ip: &'static str,
    method: Option<&'static str>,
    path: &'static str,
    port: u16,
    headers: &'static [(&'static str, &'static str)],
    /// The verified JWT's claims as JSON; None: no token.
    jwt: Option<&'static str>,
}

const fn http(principal: Option<&'static str>, method: &'static str, path: &'static str) -> Req {
    Req {
        principal,
        ip: "10.0.0.7",
        method: Some(method),
        path,
        port: 9080,
        headers: &[],
        jwt: None,
    }
}

fn decide(policies: &[AuthzPolicy], r: &Req) -> AuthzDecision {
    // Every value kept, in order: a header sent twice is two entries.
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let ns = r
        .principal
        .and_then(|p| p.split("/ns/").nth(1)?.split('/').next());
    let ip: IpAddr = r.ip.parse().expect("ip");
    let auth = r
        .jwt
        .map(|c| RequestAuth::from_claims(serde_json::from_str(c).expect("claims")));
    authorize(
        policies,
        &AuthzRequest {
            source_principal: r.principal,
            source_namespace: ns,
            source_ip: ip,
            method: r.method,
            path: r.method.map(|_| r.path),
            host: r.method.map(|_| "reviews.default.svc.cluster.local:9080"),
            port: r.port,
            headers: &headers,
            request_auth: auth.as_ref(),
        },
    )
}

#[test]
fn no_policy_allows_everything() {
    let d = decide(&[], &http(None, "GET", "/"));
    assert!(d.allowed);
    assert_eq!(d.action, None);
}

#[test]
fn allow_nothing_denies_everything() {
    // `spec: {}`: an ALLOW policy with no rules.
    let p = [policy(
        serde_json::json!({"name": "allow-nothing", "namespace": "default"}),
    )];
    let d = decide(&p, &http(Some(PRODUCTPAGE), "GET", "/"));
    assert!(!d.allowed);
    assert_eq!(d.action, Some(AuthzAction::Allow));
    // The denial names the ALLOW policy that closed the workload, with no rule.
    assert_eq!(d.policy, Some(("default".into(), "allow-nothing".into())));
    assert_eq!(d.rule, None);
    // `rules: [{}]` allows everything.
    let p = [policy(serde_json::json!({"name": "allow-all", "rules": [{}]}))];
    assert!(decide(&p, &http(None, "POST", "/x")).allowed);
}

#[test]
fn allow_table_from_the_http_task() {
    // Istio "Authorization for HTTP traffic": only productpage may GET reviews.
    let p = [policy(serde_json::json!({
        "name": "reviews-viewer",
        "rules": [{
            "from": [{"source": {"principals": ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]}}],
            "to": [{"operation": {"methods": ["GET"]}}],
        }],
    }))];
    let cases: &[(Req, bool)] = &[
        (http(Some(PRODUCTPAGE), "GET", "/reviews/1"), true),
        (http(Some(PRODUCTPAGE), "POST", "/reviews/1"), false),
        (http(Some(SLEEP), "GET", "/reviews/1"), false),
        (http(None, "GET", "/reviews/1"), false),
    ];
    for (i, (r, allowed)) in cases.iter().enumerate() {
        let d = decide(&p, r);
        assert_eq!(d.allowed, *allowed, "case {i}: {d:?}");
        if d.allowed {
            assert_eq!(d.policy, Some(("default".into(), "reviews-viewer".into())));
            assert_eq!(d.rule, Some(0));
        }
    }
}

#[test]
fn deny_beats_allow_and_matches_in_order() {
    // Istio "Explicit deny": deny GET unless x-token is admin; allow-all otherwise.
    let p = [
        policy(serde_json::json!({"name": "allow-all", "rules": [{}]})),
        policy(serde_json::json!({
            "name": "deny-method-get", "namespace": "foo", "action": "DENY",
            "rules": [
                {"to": [{"operation": {"paths": ["/admin*"]}}]},
                {"to": [{"operation": {"methods": ["GET"]}}], "when": [{"key": "request.headers[x-token]", "notValues": ["admin"]}]},
            ],
        })),
    ];
    let d = decide(&p, &http(None, "GET", "/ip"));
    assert!(!d.allowed);
    assert_eq!(d.action, Some(AuthzAction::Deny));
    assert_eq!(d.policy, Some(("foo".into(), "deny-method-get".into())));
    assert_eq!(d.rule, Some(1));
    let mut admin = http(None, "GET", "/ip");
    admin.headers = &[("x-token", "admin")];
    assert!(decide(&p, &admin).allowed);
    let d = decide(&p, &http(None, "POST", "/admin/users"));
    assert_eq!((d.allowed, d.rule), (false, Some(0)));
    assert!(decide(&p, &http(None, "POST", "/ip")).allowed);
}

#[test]
fn a_header_condition_sees_every_value_of_the_header() {
    let p = [policy(serde_json::json!({
        "name": "deny-evil", "namespace": "foo", "action": "DENY",
        "rules": [{"when": [{"key": "request.headers[X-Role]", "values": ["evil*"]}]}],
    }))];
    let mut r = http(None, "GET", "/");
    r.headers = &[("x-role", "harmless"), ("x-role", "evil-admin")];
    assert!(!decide(&p, &r).allowed, "a harmless first copy hid the second");
    r.headers = &[("x-role", "harmless"), ("x-role", "fine")];
    assert!(decide(&p, &r).allowed);
    // notValues holds only when no value is one of them.
    let p = [policy(serde_json::json!({
        "name": "deny-non-admin", "namespace": "foo", "action": "DENY",
        "rules": [{"when": [{"key": "request.headers[x-role]", "notValues": ["admin"]}]}],
    }))];
    r.headers = &[("x-role", "admin"), ("x-role", "admin")];
    assert!(decide(&p, &r).allowed);
    r.headers = &[("x-role", "admin"), ("x-role", "guest")];
    assert!(
        decide(&p, &r).allowed,
        "one admin value is enough for notValues to fail"
    );
    r.headers = &[("x-role", "guest")];
    assert!(!decide(&p, &r).allowed);
}

/// Raw header bytes, as a proxy sees them.
struct Raw(&'static [u8]);

impl Headers for Raw {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        name == "x-role" && f(self.0)
    }
}

#[test]
fn a_non_utf8_header_value_is_present_and_equal_to_no_string() {
    let check = |values: serde_json::Value, raw: &'static [u8]| {
        let p = [policy(serde_json::json!({
            "name": "deny", "namespace": "foo", "action": "DENY",
            "rules": [{"when": [{"key": "request.headers[x-role]", "values": values}]}],
        }))];
        let req = AuthzRequest {
            source_principal: None,
            source_namespace: None,
            source_ip: "10.0.0.7".parse().expect("ip"),
            method: Some("GET"),
            path: Some("/"),
            host: None,
            port: 9080,
            headers: &Raw(raw),
            request_auth: None,
        };
        !authorize(&p, &req).allowed
    };
    assert!(check(serde_json::json!(["*"]), b"\xffevil"), "present");
    assert!(
        check(serde_json::json!(["evil*"]), b"evil\xff"),
        "prefix still matches"
    );
    assert!(
        !check(serde_json::json!(["evil"]), b"evil\xff"),
        "never equal to a string"
    );
}

#[test]
fn string_matching_is_exact_prefix_suffix_or_presence() {
    assert!(string_matches("/api/*", "/api/v1"));
    assert!(!string_matches("/api/*", "/apix"));
    assert!(string_matches("*.info", "bookinfo.info"));
    assert!(string_matches("*", "x"));
    assert!(!string_matches("*", ""));
    assert!(string_matches("GET", "GET"));
    assert!(!string_matches("GET", "GETX"));
}

#[test]
fn principals_compare_with_or_without_scheme_and_by_pattern() {
    for pattern in [
        "cluster.local/ns/default/sa/bookinfo-productpage",
        PRODUCTPAGE,
        "cluster.local/ns/default/*",
        "*/sa/bookinfo-productpage",
        "*",
    ] {
        let p = [policy(
            serde_json::json!({"name": "p", "rules": [{"from": [{"source": {"principals": [pattern]}}]}]}),
        )];
        assert!(
            decide(&p, &http(Some(PRODUCTPAGE), "GET", "/")).allowed,
            "{pattern}"
        );
        assert!(
            !decide(&p, &http(None, "GET", "/")).allowed,
            "{pattern} plaintext"
        );
    }
    // notPrincipals: ["*"] picks plaintext requests (Istio's "require mTLS" DENY).
    let p = [policy(
        serde_json::json!({"name": "require-mtls", "action": "DENY",
        "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}),
    )];
    assert!(!decide(&p, &http(None, "GET", "/")).allowed);
    assert!(decide(&p, &http(Some(SLEEP), "GET", "/")).allowed);
}

#[test]
fn namespaces_ip_blocks_and_conditions() {
    let p = [policy(serde_json::json!({"name": "p", "rules": [{
        "from": [{"source": {"namespaces": ["foo"], "notIpBlocks": ["10.0.1.0/24"]}}],
        "when": [{"key": "source.ip", "values": ["10.0.0.0/16"]}, {"key": "destination.port", "values": ["9080"]}],
    }]}))];
    assert!(decide(&p, &http(Some(SLEEP), "GET", "/")).allowed);
    assert!(!decide(&p, &http(Some(PRODUCTPAGE), "GET", "/")).allowed);
    let mut r = http(Some(SLEEP), "GET", "/");
    r.ip = "10.0.1.3";
    assert!(!decide(&p, &r).allowed);
    r.ip = "192.168.0.1";
    assert!(!decide(&p, &r).allowed);
    r.ip = "10.0.0.9";
    r.port = 9090;
    assert!(!decide(&p, &r).allowed);
    assert!(ip_in_block("::ffff:10.0.0.1".parse().expect("ip"), "10.0.0.0/8"));
    assert!(ip_in_block("fd00::1".parse().expect("ip"), "fd00::/8"));
    assert!(!ip_in_block("10.0.0.1".parse().expect("ip"), "garbage"));
}

#[test]
fn http_only_fields_on_tcp_never_allow_and_deny_without_them() {
    // Istio "Authorization for TCP traffic": methods on a TCP port.
    let tcp = Req {
        principal: Some(SLEEP),
        ip: "10.0.0.7",
        method: None,
        path: "",
        port: 9000,
        headers: &[],
        jwt: None,
    };
    let allow = [policy(serde_json::json!({"name": "tcp-policy", "rules": [
        {"to": [{"operation": {"methods": ["GET"], "ports": ["9000"]}}]},
    ]}))];
    assert!(
        !decide(&allow, &tcp).allowed,
        "ALLOW with HTTP-only fields never matches TCP"
    );
    let allow_port = [policy(serde_json::json!({"name": "tcp-policy", "rules": [
        {"to": [{"operation": {"ports": ["9000", "9001"]}}]},
    ]}))];
    assert!(decide(&allow_port, &tcp).allowed);
    let deny = [policy(
        serde_json::json!({"name": "tcp-policy", "action": "DENY", "rules": [
            {"to": [{"operation": {"methods": ["GET"], "ports": ["9000"]}}]},
        ]}),
    )];
    let d = decide(&deny, &tcp);
    assert!(!d.allowed, "DENY ignores the HTTP-only fields: {d:?}");
    let mut other = tcp;
    other.port = 9001;
    assert!(decide(&deny, &other).allowed);
}

#[test]
fn audit_never_decides_and_is_reported() {
    let audit = policy(
        serde_json::json!({"name": "audit-get", "action": "AUDIT", "rules": [
            {"to": [{"operation": {"methods": ["GET"]}}]}
        ]}),
    );
    // Alone: allowed, audited.
    let d = decide(std::slice::from_ref(&audit), &http(None, "GET", "/"));
    assert!(d.allowed);
    assert_eq!(d.action, None);
    let a = d.audit.expect("audited");
    assert_eq!((a.name.as_str(), a.rule), ("audit-get", 0));
    // Not matching: no audit.
    assert_eq!(
        decide(std::slice::from_ref(&audit), &http(None, "POST", "/")).audit,
        None
    );
    // With a DENY: still denied, still audited.
    let deny = policy(serde_json::json!({"name": "deny-all", "action": "DENY", "rules": [{}]}));
    let d = decide(&[audit.clone(), deny], &http(None, "GET", "/"));
    assert!(!d.allowed);
    assert!(d.audit.is_some());
    // An AUDIT policy is not an ALLOW policy: it never closes the workload.
    let d = decide(&[audit], &http(Some(SLEEP), "DELETE", "/"));
    assert!(d.allowed);
}

#[test]
fn port_scoped_policies_apply_only_to_their_ports() {
    // A Linkerd Server on 9080 with no authorization, and a default policy on other ports.
    let server = AuthzPolicy {
        name: "reviews-http".into(),
        kind: "Server".into(),
        ports: vec![9080],
        ..Default::default()
    };
    let default = AuthzPolicy {
        name: "all-authenticated".into(),
        kind: "default-inbound-policy".into(),
        not_ports: vec![9080],
        rules: vec![AuthzRule {
            from: vec![AuthzSource {
                principals: vec!["*".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let p = [server, default];
    let d = decide(&p, &http(Some(PRODUCTPAGE), "GET", "/"));
    assert!(!d.allowed);
    assert_eq!(d.kind.as_deref(), Some("Server"));
    assert_eq!(d.describe(), "Server default/reviews-http: no ALLOW rule matched");
    assert_eq!(d.policy_label(), "Server/default/reviews-http");
    let other = |principal| Req {
        port: 9090,
        ..http(principal, "GET", "/")
    };
    assert!(decide(&p, &other(Some(PRODUCTPAGE))).allowed);
    let d = decide(&p, &other(None));
    assert!(!d.allowed);
    assert_eq!(d.kind.as_deref(), Some("default-inbound-policy"));
    // No policy in scope for a port at all: allowed.
    assert!(decide(&p[..1], &other(None)).allowed);
}

#[test]
fn host_patterns_match_ignoring_ascii_case() {
    use super::string_matches_ignore_case as m;
    assert!(m("Reviews.Example.COM", "reviews.example.com"));
    assert!(m("*.Example.com", "api.example.COM"));
    assert!(m("API.*", "api.example.com"));
    assert!(m("*", "x"));
    assert!(!m("*", ""));
    assert!(!m("*.example.com", "example.org"));
    assert!(!m("api.*", "ap"));
    // A multi-byte value is compared, not sliced through a character.
    assert!(!m("ab*", "aé"));
    assert!(!m("*é", "e"));
}

const ALICE: &str = r#"{"iss": "https://issuer.example", "sub": "alice", "aud": ["books", "ratings"], "azp": "web", "groups": ["admin", "dev"], "org": {"team": "search"}, "level": 3}"#;

fn with_jwt(jwt: &'static str) -> Req {
    Req {
        jwt: Some(jwt),
        ..http(None, "GET", "/books")
    }
}

#[test]
fn request_principals_need_a_verified_token() {
    // Istio "Require a valid token": ALLOW requestPrincipals ["*"].
    let require = [policy(serde_json::json!({"name": "require-jwt", "rules": [
        {"from": [{"source": {"requestPrincipals": ["*"]}}]},
    ]}))];
    assert!(
        !decide(&require, &http(Some(PRODUCTPAGE), "GET", "/")).allowed,
        "no token: 403"
    );
    assert!(decide(&require, &with_jwt(ALICE)).allowed);
    // `iss/sub`, exactly or by pattern.
    for (pattern, allowed) in [
        ("https://issuer.example/alice", true),
        ("https://issuer.example/*", true),
        ("*/alice", true),
        ("https://issuer.example/bob", false),
        ("other/*", false),
    ] {
        let p = [policy(serde_json::json!({"name": "p", "rules": [
            {"from": [{"source": {"requestPrincipals": [pattern]}}]},
        ]}))];
        assert_eq!(decide(&p, &with_jwt(ALICE)).allowed, allowed, "{pattern}");
    }
    // Istio's "deny requests without a token": DENY notRequestPrincipals ["*"].
    let deny = [policy(
        serde_json::json!({"name": "deny-anonymous", "action": "DENY", "rules": [
            {"from": [{"source": {"notRequestPrincipals": ["*"]}}]},
        ]}),
    )];
    assert!(!decide(&deny, &http(None, "GET", "/")).allowed);
    assert!(decide(&deny, &with_jwt(ALICE)).allowed);
}

#[test]
fn request_auth_conditions_read_the_verified_claims() {
    let when = |key: &str, values: &[&str], not_values: &[&str]| {
        [policy(serde_json::json!({"name": "claims", "rules": [
            {"when": [{"key": key, "values": values, "notValues": not_values}]},
        ]}))]
    };
    for (key, values, not_values, allowed) in [
        (
            "request.auth.principal",
            &["https://issuer.example/alice"][..],
            &[][..],
            true,
        ),
        ("request.auth.principal", &["*/bob"], &[], false),
        // A list claim: any element matches.
        ("request.auth.claims[groups]", &["admin"], &[], true),
        ("request.auth.claims[groups]", &["ops"], &[], false),
        ("request.auth.claims[groups]", &[], &["dev"], false),
        ("request.auth.claims[groups]", &["d*"], &["ops"], true),
        // Nested claims.
        ("request.auth.claims[org][team]", &["search"], &[], true),
        ("request.auth.claims[org][team]", &["ads"], &[], false),
        // Neither string nor list of strings: no value.
        ("request.auth.claims[level]", &["3"], &[], false),
        ("request.auth.claims[missing]", &[], &["x"], true),
        ("request.auth.audiences", &["ratings"], &[], true),
        ("request.auth.audiences", &["orders"], &[], false),
        ("request.auth.presenter", &["web"], &[], true),
        ("request.auth.presenter", &["cli"], &[], false),
    ] {
        let p = when(key, values, not_values);
        assert_eq!(
            decide(&p, &with_jwt(ALICE)).allowed,
            allowed,
            "{key} {values:?} not {not_values:?}"
        );
    }
    // Without a token no claim has a value.
    assert!(
        !decide(
            &when("request.auth.claims[groups]", &["admin"], &[]),
            &http(None, "GET", "/")
        )
        .allowed
    );
    assert!(supported_key("request.auth.claims[org][team]"));
    assert!(!supported_key("request.auth.claims"));
    assert!(!supported_key("request.auth.claims[]"));
    assert_eq!(claim_path("request.auth.claims[a][b]"), Some(vec!["a", "b"]));
    assert_eq!(claim_path("request.auth.claims[a]b"), None);
}

#[test]
fn request_principals_on_tcp_never_allow_and_are_ignored_by_deny() {
    let tcp = Req {
        method: None,
        jwt: Some(ALICE),
        ..http(Some(SLEEP), "GET", "/")
    };
    let allow = [policy(serde_json::json!({"name": "p", "rules": [
        {"from": [{"source": {"requestPrincipals": ["*"]}}]},
    ]}))];
    assert!(!decide(&allow, &tcp).allowed);
    let deny = [policy(
        serde_json::json!({"name": "p", "action": "DENY", "rules": [
            {"from": [{"source": {"requestPrincipals": ["other/*"], "namespaces": ["foo"]}}],
             "when": [{"key": "request.auth.claims[groups]", "values": ["nobody"]}]},
        ]}),
    )];
    assert!(
        !decide(&deny, &tcp).allowed,
        "a DENY rule ignores its HTTP-only parts on TCP and still applies"
    );
}
