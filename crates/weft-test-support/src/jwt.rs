//! A JWT issuer for tests: a fresh signing key per issuer, its JSON Web Key Set, and tokens
//! signed with it (RS256 or ES256), so tests of end-user authentication use real signatures
//! and never a key checked into the tree.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

/// Signs tokens as one issuer.
pub struct JwtIssuer {
    /// The `iss` the issuer's tokens carry.
    pub issuer: String,
    /// The key id in the JWKS and in each token's header.
    pub kid: String,
    signer: Signer,
}

enum Signer {
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

// === impl JwtIssuer ===

impl JwtIssuer {
    /// An RS256 issuer with a new 2048-bit key (made by the `openssl` command: ring signs with
    /// RSA keys but does not make them).
    pub fn rs256(issuer: &str, kid: &str) -> anyhow::Result<Self> {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-outform",
                "DER",
            ])
            .output()
            .context("running openssl genpkey")?;
        anyhow::ensure!(
            out.status.success(),
            "openssl genpkey failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // openssl writes an RSA key in DER as PKCS#1.
        let key = RsaKeyPair::from_der(&out.stdout).map_err(|e| anyhow::anyhow!("RSA key: {e}"))?;
        Ok(Self {
            issuer: issuer.into(),
            kid: kid.into(),
            signer: Signer::Rs256(key),
        })
    }

    /// An ES256 issuer with a new P-256 key.
    pub fn es256(issuer: &str, kid: &str) -> anyhow::Result<Self> {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|e| anyhow::anyhow!("EC key: {e}"))?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow::anyhow!("EC key: {e}"))?;
        Ok(Self {
            issuer: issuer.into(),
            kid: kid.into(),
            signer: Signer::Es256(key),
        })
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rs256(_) => "RS256",
            Signer::Es256(_) => "ES256",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.signer {
            Signer::Rs256(key) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(key.public());
                serde_json::json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Es256(key) => {
                // Uncompressed point: 0x04 || x || y.
                let point = key.public_key().as_ref();
                let (x, y) = point[1..].split_at(32);
                serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid, "x": b64(x), "y": b64(y)})
            }
        }
    }

    /// A JWKS holding this issuer's key.
    pub fn jwks(&self) -> String {
        jwks_of(&[self])
    }

    /// A token with these claims, signed with this issuer's key (the claims are as given: add
    /// `iss`, `exp` and the rest yourself, or use [`JwtIssuer::token_for`]).
    pub fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let header = serde_json::json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match &self.signer {
            Signer::Rs256(key) => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(&signature::RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut sig)
                    .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
                sig
            }
            Signer::Es256(key) => key
                .sign(&rng, message.as_bytes())
                .map_err(|e| anyhow::anyhow!("signing: {e}"))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// A token for `sub` from this issuer, valid for an hour, with `extra` claims merged in
    /// (they win, so `{"exp": ...}` makes an expired one).
    pub fn token_for(&self, sub: &str, extra: serde_json::Value) -> anyhow::Result<String> {
        let mut claims =
            serde_json::json!({"iss": self.issuer, "sub": sub, "iat": now(), "exp": now() + 3600});
        if let (Some(c), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                c.insert(k.clone(), v.clone());
            }
        }
        self.sign(&claims)
    }
}

/// One JWKS holding the keys of several issuers.
pub fn jwks_of(issuers: &[&JwtIssuer]) -> String {
    serde_json::json!({"keys": issuers.iter().map(|i| i.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
