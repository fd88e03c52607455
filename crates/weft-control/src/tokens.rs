//! Bootstrap tokens: minted by the control plane for one `Workload` (name, namespace, service
//! account), checked on every discovery subscription and certificate request
//! (shared/ARCHITECTURE.md, "Trust from the first packet"). Whatever a proxy says about itself,
//! the control plane believes only the [`Grant`] its token was minted with.
//!
//! They live in `tokens.json` in the control plane's state directory (mode 0600), read again
//! on every check so a token minted, revoked ([`TokenStore::revoke`]) or expired while the
//! control plane runs takes effect at the next subscription or certificate request.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable a proxy reads its bootstrap token from (`weft up` sets it). Tokens
/// never travel as arguments: every local user can read a process's command line.
pub const TOKEN_ENV: &str = "WEFT_TOKEN";

/// Who a token was minted for: one workload, in one namespace, running as one service account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The `Workload` document's name. Empty in a token minted before tokens were bound to a
    /// workload: such a token still gets a certificate for its namespace and service account,
    /// but discovery refuses it (it would let its holder claim any workload).
    #[serde(default)]
    pub workload: String,
    pub namespace: String,
    pub service_account: String,
    /// When the token stops being accepted (seconds since the Unix epoch); None: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Grant {
    /// A grant for `workload` in `namespace` running as `service_account` (empty: `default`).
    pub fn new(workload: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            workload: workload.to_string(),
            namespace: namespace.to_string(),
            service_account: if service_account.is_empty() {
                "default".to_string()
            } else {
                service_account.to_string()
            },
            expires_at: None,
        }
    }

    /// Whether the token is past its expiry at `now`.
    pub fn expired(&self, now: std::time::SystemTime) -> bool {
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A token as `weft token list` shows it: its first characters (enough to revoke it by, never
/// the whole secret) and its grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub id: String,
    #[serde(flatten)]
    pub grant: Grant,
}

/// How many characters of a token `weft token list` shows.
pub const SHOWN_PREFIX: usize = 8;

/// The token file.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("no token starts with {0:?} (`weft token list` shows them)")]
    NotFound(String),
    #[error("several tokens start with {0:?}: give more of it")]
    Ambiguous(String),
}

impl TokenStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("tokens.json"),
        }
    }

    fn read(&self) -> Result<BTreeMap<String, Grant>, TokenError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| TokenError::Json {
                path: self.path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(TokenError::Io {
                path: self.path.display().to_string(),
                source,
            }),
        }
    }

    /// Mints a token bound to `grant` and saves it.
    pub fn create(&self, grant: &Grant) -> Result<String, TokenError> {
        let io = |source| TokenError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut tokens = self.read()?;
        let token = random_hex(16).map_err(io)?;
        tokens.insert(token.clone(), grant.clone());
        self.write(&tokens)?;
        Ok(token)
    }

    /// Every token (by its first characters) with its grant, expired ones included.
    pub fn list(&self) -> Result<Vec<Listed>, TokenError> {
        Ok(self
            .read()?
            .into_iter()
            .map(|(token, grant)| Listed {
                id: token.chars().take(SHOWN_PREFIX).collect(),
                grant,
            })
            .collect())
    }

    /// Revokes the one token starting with `prefix` (as `list` shows it, or whole); returns
    /// its grant.
    pub fn revoke(&self, prefix: &str) -> Result<Grant, TokenError> {
        let mut tokens = self.read()?;
        let matching: Vec<String> = tokens
            .keys()
            .filter(|t| !prefix.is_empty() && t.starts_with(prefix))
            .cloned()
            .collect();
        let token = match matching.as_slice() {
            [one] => one.clone(),
            [] => return Err(TokenError::NotFound(prefix.to_string())),
            _ => return Err(TokenError::Ambiguous(prefix.to_string())),
        };
        let grant = tokens
            .remove(&token)
            .ok_or_else(|| TokenError::NotFound(prefix.to_string()))?;
        self.write(&tokens)?;
        Ok(grant)
    }

    fn write(&self, tokens: &BTreeMap<String, Grant>) -> Result<(), TokenError> {
        let io = |source| TokenError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let json = serde_json::to_vec_pretty(&tokens).map_err(|source| TokenError::Json {
            path: self.path.display().to_string(),
            source,
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        write_private(&tmp, &json).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// What `token` was minted for; None for a token never minted, revoked or expired, or when the
    /// token file cannot be read (then nothing is trusted).
    pub fn lookup(&self, token: &str) -> Option<Grant> {
        if token.is_empty() {
            return None;
        }
        match self.read() {
            Ok(mut tokens) => tokens
                .remove(token)
                .filter(|g| !g.expired(std::time::SystemTime::now())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read bootstrap tokens; refusing");
                None
            }
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Unguessable: from the kernel's CSPRNG.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_one_workload() {
        let dir = std::env::temp_dir().join(format!("weft-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = TokenStore::new(&dir);
        let reviews = Grant::new("reviews-v1", "shop", "reviews");
        let t = store.create(&reviews).expect("create");
        assert_eq!(t.len(), 32);
        assert_eq!(store.lookup(&t), Some(reviews.clone()));
        assert_eq!(store.lookup("nope"), None);
        assert_eq!(store.lookup(""), None);
        let t2 = store
            .create(&Grant::new("ratings-v1", "shop", ""))
            .expect("create");
        assert_ne!(t, t2);
        assert_eq!(
            store.lookup(&t2).map(|g| g.service_account),
            Some("default".to_string())
        );
        assert_eq!(store.lookup(&t), Some(reviews), "earlier tokens survive");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tokens.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_and_revoked_tokens_are_refused() {
        let dir = std::env::temp_dir().join(format!("weft-tokens-revoke-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = TokenStore::new(&dir);
        let mut past = Grant::new("reviews-v1", "shop", "reviews");
        past.expires_at = Some(1);
        let expired = store.create(&past).expect("create");
        assert_eq!(store.lookup(&expired), None);
        let mut later = Grant::new("reviews-v1", "shop", "reviews");
        later.expires_at = Some(u64::MAX);
        let live = store.create(&later).expect("create");
        assert_eq!(store.lookup(&live), Some(later.clone()));
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|l| l.id.len() == SHOWN_PREFIX));
        assert!(matches!(store.revoke(""), Err(TokenError::NotFound(_))));
        assert_eq!(store.revoke(&live[..SHOWN_PREFIX]).expect("revoke"), later);
        assert_eq!(store.lookup(&live), None);
        assert!(matches!(store.revoke(&live), Err(TokenError::NotFound(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A token file written before tokens named their workload still reads; its grants have no
    /// workload (discovery refuses them).
    #[test]
    fn an_old_token_file_reads_with_unbound_grants() {
        let dir = std::env::temp_dir().join(format!("weft-tokens-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("tokens.json"),
            r#"{"abc": {"namespace": "shop", "serviceAccount": "reviews"}}"#,
        )
        .expect("write");
        let grant = TokenStore::new(&dir).lookup("abc").expect("grant");
        assert_eq!(grant.workload, "");
        assert_eq!(grant.namespace, "shop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
