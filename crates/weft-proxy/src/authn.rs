//! End-user authentication: the JWTs of Istio's `RequestAuthentication`, verified as Envoy's
//! `jwt_authn` filter does under Istio.
//!
//! - A request with no token (in any location a rule reads) passes without a request identity;
//!   authorization then decides (`requestPrincipals: ["*"]` refuses it with 403).
//! - A token that is found but fails (not three base64url parts, an issuer no rule names, a
//!   signature no key verifies, expired, not yet valid, an audience the rule does not accept,
//!   keys that could not be fetched) is refused with 401 and Envoy's words for the reason.
//! - A verified token gives the request its identity (`iss/sub` and the claims); the header it
//!   came in is removed before the app unless `forwardOriginalToken`; `outputPayloadToHeader`
//!   and `outputClaimToHeaders` are written.
//!
//! Inline key sets are parsed once per config ([`Authenticator::new`], at push time); key sets
//! at a `jwksUri` live in the long-lived [`JwksCache`] (see `jwks`).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use weft_api::proxy_config::{JwtRule, RequestAuth, TokenLocation};

mod jwks;

pub use jwks::JwksCache;

/// Clock skew allowed on `exp` and `nbf`, in seconds (Envoy's default).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token was refused; `Display` is Envoy's message, which the client gets with its 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")]
    BadFormat,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwt verification fails")]
    VerificationFails,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
    /// The key set at `jwksUri` could not be fetched or read (the detail goes to the log).
    #[error("Jwks remote fetch is failed")]
    JwksFetchFailed(String),
}

/// A key set: the keys of one JWKS that this proxy can verify with.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names a signing algorithm: the token's must be the same.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The JWT rules of one config, with their inline key sets parsed.
#[derive(Default)]
pub struct Authenticator {
    rules: Vec<CompiledRule>,
    /// Headers the rules write after verification: removed from every request first, so a
    /// client cannot pass them off as the proxy's.
    output_headers: Vec<HeaderName>,
}

struct CompiledRule {
    rule: JwtRule,
    /// Parsed from `jwks`; None: fetched from `jwks_uri` (or no keys at all).
    inline: Option<Arc<KeySet>>,
}

/// What a verified token did to the request.
#[derive(Debug)]
pub struct Verified {
    pub auth: RequestAuth,
}

// === impl KeySet ===

impl KeySet {
    /// Reads a JSON Web Key Set. Keys this proxy cannot use (encryption keys, unknown key
    /// types, malformed parameters) are skipped, so one odd key does not lose the others.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Some(items) = v.get("keys").and_then(Value::as_array) else {
            return Err("a JSON Web Key Set needs a \"keys\" list".into());
        };
        let mut keys = Vec::new();
        for item in items {
            if item.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            let jwk: jsonwebtoken::jwk::Jwk = match serde_json::from_value(item.clone()) {
                Ok(jwk) => jwk,
                Err(e) => {
                    tracing::debug!(error = %e, "JWKS key skipped: not a key this proxy reads");
                    continue;
                }
            };
            let key = match DecodingKey::from_jwk(&jwk) {
                Ok(key) => key,
                Err(e) => {
                    tracing::debug!(error = %e, "JWKS key skipped: bad parameters");
                    continue;
                }
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| format!("{a:?}").parse::<Algorithm>().ok());
            keys.push(Key {
                kid: jwk.common.key_id,
                alg,
                key,
            });
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

// === impl Authenticator ===

impl Authenticator {
    /// Compiles a config's rules; a key set that does not read leaves its rule without keys
    /// (its tokens are refused), as the config check already reported.
    pub fn new(rules: &[JwtRule]) -> Self {
        let rules: Vec<CompiledRule> = rules
            .iter()
            .map(|rule| {
                let inline = rule.jwks.as_deref().map(|text| {
                    Arc::new(KeySet::parse(text).unwrap_or_else(|e| {
                        tracing::warn!(issuer = %rule.issuer, error = %e, "inline JWKS does not read; this issuer's tokens are refused");
                        KeySet::default()
                    }))
                });
                CompiledRule {
                    rule: rule.clone(),
                    inline,
                }
            })
            .collect();
        let output_headers = rules
            .iter()
            .flat_map(|r| {
                let claims = r.rule.output_claim_to_headers.iter().map(|c| c.header.as_str());
                r.rule
                    .output_payload_to_header
                    .as_deref()
                    .into_iter()
                    .chain(claims)
            })
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        Self {
            rules,
            output_headers,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Authenticates one request: `Ok(None)` without a token, `Ok(Some)` with a verified one
    /// (the request's headers then changed as the rule says), `Err` for a token refused.
    pub async fn authenticate(
        &self,
        cache: &JwksCache,
        headers: &mut HeaderMap,
        uri: &Uri,
        now: u64,
    ) -> Result<Option<Verified>, AuthnError> {
        if self.rules.is_empty() {
            return Ok(None);
        }
        for h in &self.output_headers {
            headers.remove(h);
        }
        let mut found_any = false;
        for compiled in &self.rules {
            let rule = &compiled.rule;
            let Some((token, location)) = find_token(rule, headers, uri) else {
                continue;
            };
            found_any = true;
            let (header, payload) = peek(&token)?;
            if payload.get("iss").and_then(Value::as_str) != Some(rule.issuer.as_str()) {
                // Another rule reading the same place may name this issuer.
                continue;
            }
            let keys = match &compiled.inline {
                Some(keys) => keys.clone(),
                None => match rule.jwks_uri.as_deref() {
                    Some(uri) => {
                        cache
                            .get(uri, rule.jwks_timeout_ms, header.kid.as_deref())
                            .await?
                    }
                    None => Arc::new(KeySet::default()),
                },
            };
            let claims = verify(&token, rule, &keys, now)?;
            apply_outputs(rule, &token, &claims, location, headers);
            return Ok(Some(Verified {
                auth: RequestAuth::from_claims(claims),
            }));
        }
        if found_any {
            return Err(AuthnError::UnknownIssuer);
        }
        Ok(None)
    }
}

/// The first token this rule finds, and where (to remove it from there).
fn find_token<'r>(rule: &'r JwtRule, headers: &HeaderMap, uri: &Uri) -> Option<(String, TokenLocation<'r>)> {
    for location in rule.locations() {
        let token = match location {
            TokenLocation::Header { name, prefix } => headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                let head = v.get(..prefix.len())?;
                head.eq_ignore_ascii_case(prefix)
                    .then(|| v[prefix.len()..].trim().to_string())
            }),
            TokenLocation::Param(name) => uri.query().and_then(|q| {
                q.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == name).then(|| v.to_string())
                })
            }),
            TokenLocation::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then(|| v.to_string())
                }),
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            return Some((token, location));
        }
    }
    None
}

/// The header and claims of a token, unverified: only to pick the rule and the key.
fn peek(token: &str) -> Result<(jsonwebtoken::Header, Map<String, Value>), AuthnError> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthnError::BadFormat);
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::BadFormat)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthnError::BadFormat)?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| AuthnError::BadFormat)?;
    Ok((header, claims))
}

/// Verifies a token whose issuer is `rule`'s against `keys` at time `now` (seconds since the
/// epoch): signature, `exp`/`nbf` with [`CLOCK_SKEW_SECS`], audiences. Returns its claims.
pub fn verify(
    token: &str,
    rule: &JwtRule,
    keys: &KeySet,
    now: u64,
) -> Result<Map<String, Value>, AuthnError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthnError::BadFormat)?;
    let candidates: Vec<&Key> = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .filter(|k| k.alg.is_none_or(|a| a == header.alg))
        .collect();
    if candidates.is_empty() {
        return Err(AuthnError::NoMatchingKey);
    }
    // Claims are checked below, by Istio's rules, not by the library's defaults.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let mut claims = None;
    for k in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => match e.kind() {
                // A key of another family or one that does not verify: try the next.
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                | jsonwebtoken::errors::ErrorKind::Crypto(_) => {}
                _ => return Err(AuthnError::BadFormat),
            },
        }
    }
    let claims = claims.ok_or(AuthnError::VerificationFails)?;
    let time = |name: &str| -> Result<Option<u64>, AuthnError> {
        match claims.get(name) {
            None => Ok(None),
            // A time that is not a number is not a time: refused rather than ignored.
            Some(v) => v
                .as_f64()
                .filter(|t| *t >= 0.0)
                .map(|t| Some(t as u64))
                .ok_or(AuthnError::BadFormat),
        }
    };
    if time("exp")?.is_some_and(|exp| exp.saturating_add(CLOCK_SKEW_SECS) < now) {
        return Err(AuthnError::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(CLOCK_SKEW_SECS)) {
        return Err(AuthnError::NotYetValid);
    }
    if !rule.audiences.is_empty() {
        let auds: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let accepted = auds
            .iter()
            .any(|a| rule.audiences.iter().any(|want| same_audience(a, want)));
        if !accepted {
            return Err(AuthnError::AudienceNotAllowed);
        }
    }
    Ok(claims)
}

/// Audiences compare without an `http://`/`https://` scheme or a trailing slash, as Envoy's.
fn same_audience(a: &str, b: &str) -> bool {
    let bare = |s: &str| -> String {
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        s.strip_suffix('/').unwrap_or(s).to_string()
    };
    bare(a) == bare(b)
}

/// After verification: remove the token's header (unless forwarded) and write the outputs.
fn apply_outputs(
    rule: &JwtRule,
    token: &str,
    claims: &Map<String, Value>,
    location: TokenLocation<'_>,
    headers: &mut HeaderMap,
) {
    if !rule.forward_original_token {
        if let TokenLocation::Header { name, .. } = location {
            headers.remove(name);
        }
    }
    if let Some(name) = &rule.output_payload_to_header {
        let payload = token.split('.').nth(1).unwrap_or_default();
        insert(headers, name, payload);
    }
    for c in &rule.output_claim_to_headers {
        let value = match claims.get(&c.claim) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        insert(headers, &c.header, &value);
    }
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

/// Seconds since the epoch, for [`Authenticator::authenticate`].
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
