//! End-user authentication as a proxy runs it: Istio `RequestAuthentication` `jwtRules`
//! compiled to plain data (`Inbound.authentication`). The proxy verifies tokens against them;
//! [`crate::authz`] then reads the verified identity (`requestPrincipals`,
//! `request.auth.*` conditions).
//!
//! Istio's semantics, which the proxy follows: a request with no token passes authentication
//! without a request identity; a request whose token is invalid (bad signature, expired, not
//! yet valid, an issuer no rule names, an audience no rule accepts) is refused with 401.

use serde::{Deserialize, Serialize};

/// The header and prefix a token is read from when a rule names no location.
pub const DEFAULT_HEADER: &str = "authorization";
pub const DEFAULT_PREFIX: &str = "Bearer ";
/// The query parameter a token is read from when a rule names no location.
pub const DEFAULT_PARAM: &str = "access_token";

/// One JWT issuer the workload accepts (one `jwtRules` item).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtRule {
    /// The RequestAuthentication that wrote it, for logs and `weft explain`.
    #[serde(default)]
    pub policy: String,
    #[serde(default)]
    pub namespace: String,
    /// The `iss` claim a token must carry.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry one of them. Empty: `aud` is not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The JSON Web Key Set, inline. Wins over `jwks_uri` when both are set (as in Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Where the proxy fetches the key set: `http://` (on loopback or any reachable host) or
    /// `file://` (a path on the proxy's host). Cached, refreshed every 20 minutes, and fetched
    /// again early when a token names a key id the cached set lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Time allowed to fetch `jwks_uri`. Default 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_timeout_ms: Option<u64>,
    /// Headers the token is read from. With no header, parameter or cookie named, the token is
    /// read from `Authorization: Bearer ...` and the `access_token` query parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// A header the verified token's payload (base64url, as in the token) is written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Claims copied to headers after verification (string, number or boolean claims).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token in the request passed to the app. Default false: the header it came in
    /// is removed after verification.
    #[serde(default)]
    pub forward_original_token: bool,
}

/// A header a token is read from, with the prefix stripped before decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JwtHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `outputClaimToHeaders` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// Where a token may be found: the rule's own locations, or the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLocation<'a> {
    Header { name: &'a str, prefix: &'a str },
    Param(&'a str),
    Cookie(&'a str),
}

// === impl JwtRule ===

impl JwtRule {
    /// The locations this rule reads a token from, in order.
    pub fn locations(&self) -> Vec<TokenLocation<'_>> {
        if self.from_headers.is_empty() && self.from_params.is_empty() && self.from_cookies.is_empty() {
            return vec![
                TokenLocation::Header {
                    name: DEFAULT_HEADER,
                    prefix: DEFAULT_PREFIX,
                },
                TokenLocation::Param(DEFAULT_PARAM),
            ];
        }
        let headers = self.from_headers.iter().map(|h| TokenLocation::Header {
            name: &h.name,
            prefix: &h.prefix,
        });
        let params = self.from_params.iter().map(|p| TokenLocation::Param(p));
        let cookies = self.from_cookies.iter().map(|c| TokenLocation::Cookie(c));
        headers.chain(params).chain(cookies).collect()
    }

    /// Why this rule cannot run, as (field, sentence); empty when it can. A key set that does
    /// not read, or a `jwks_uri` the proxy cannot fetch, would reject every token of the issuer.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.issuer.trim().is_empty() {
            out.push(("issuer", "issuer is empty".to_string()));
        }
        if let Some(jwks) = &self.jwks {
            if let Err(e) = check_jwks(jwks) {
                out.push(("jwks", format!("jwks: {e}")));
            }
        } else if let Some(uri) = &self.jwks_uri {
            if let Err(e) = check_jwks_uri(uri) {
                out.push(("jwksUri", format!("jwksUri {uri:?}: {e}")));
            }
        }
        for h in &self.from_headers {
            if !is_header_name(&h.name) {
                out.push((
                    "fromHeaders",
                    format!("fromHeaders: {:?} is not a header name", h.name),
                ));
            }
        }
        if let Some(h) = self
            .output_payload_to_header
            .as_ref()
            .filter(|h| !is_header_name(h))
        {
            out.push(("outputPayloadToHeader", format!("{h:?} is not a header name")));
        }
        for c in self
            .output_claim_to_headers
            .iter()
            .filter(|c| !is_header_name(&c.header))
        {
            out.push((
                "outputClaimToHeaders",
                format!("{:?} is not a header name", c.header),
            ));
        }
        out
    }
}

/// The verified identity of a request's end user, as authorization reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestAuth {
    /// `iss/sub`, what `requestPrincipals` and `request.auth.principal` match.
    pub principal: String,
    /// The token's claims (`aud` gives `request.auth.audiences`, `azp`
    /// `request.auth.presenter`).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl RequestAuth {
    /// From verified claims: the principal is `iss/sub` (either empty when absent).
    pub fn from_claims(claims: serde_json::Map<String, serde_json::Value>) -> Self {
        let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        Self {
            principal: format!("{}/{}", text("iss"), text("sub")),
            claims,
        }
    }

    /// The string values of a claim at `path` (nested objects by successive names): a string is
    /// one value, a list of strings each of its strings; anything else none.
    pub fn claim_values(&self, path: &[&str]) -> Vec<&str> {
        let mut at: Option<&serde_json::Value> = None;
        for (i, name) in path.iter().enumerate() {
            at = if i == 0 {
                self.claims.get(*name)
            } else {
                at.and_then(|v| v.get(*name))
            };
        }
        match at {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// A JSON Web Key Set reads as JSON with a `keys` list.
pub fn check_jwks(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        _ => Err("a JSON Web Key Set needs a \"keys\" list".to_string()),
    }
}

/// The key-set locations a proxy fetches: `http://` and `file://`.
pub fn check_jwks_uri(uri: &str) -> Result<(), String> {
    if let Some(rest) = uri.strip_prefix("http://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err("names no host".to_string());
        }
        return Ok(());
    }
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("a file:// URI needs an absolute path".to_string());
        }
        return Ok(());
    }
    if uri.starts_with("https://") {
        return Err(
            "https:// key sets are not fetched yet (no public trust roots in the proxy): serve it over http:// on loopback, from a file:// path, or inline it as jwks"
                .to_string(),
        );
    }
    Err("only http:// and file:// key sets are fetched".to_string())
}

/// An HTTP header name: one or more token characters (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
