//! Bootstrap tokens: minted by the control plane for a namespace and service account, checked
//! on every discovery subscription (shared/ARCHITECTURE.md, "Trust from the first packet").
//!
//! They live in `tokens.json` in the control plane's state directory (mode 0600), read again
//! on every check so a token minted (or deleted, to revoke it) while the control plane runs
//! takes effect at once.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who a token was minted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub namespace: String,
    pub service_account: String,
}

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

    /// Mints a token for `namespace`/`service_account` and saves it.
    pub fn create(&self, namespace: &str, service_account: &str) -> Result<String, TokenError> {
        let io = |source| TokenError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut tokens = self.read()?;
        let token = random_hex(16).map_err(io)?;
        tokens.insert(
            token.clone(),
            Grant {
                namespace: namespace.into(),
                service_account: service_account.into(),
            },
        );
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
        Ok(token)
    }

    /// Whether `token` was minted for this namespace and service account.
    pub fn check(&self, token: &str, namespace: &str, service_account: &str) -> bool {
        match self.read() {
            Ok(tokens) => tokens
                .get(token)
                .is_some_and(|g| g.namespace == namespace && g.service_account == service_account),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read bootstrap tokens; refusing");
                false
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
    fn tokens_are_bound_to_namespace_and_service_account() {
        let dir = std::env::temp_dir().join(format!("weft-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = TokenStore::new(&dir);
        let t = store.create("shop", "reviews").expect("create");
        assert_eq!(t.len(), 32);
        assert!(store.check(&t, "shop", "reviews"));
        assert!(!store.check(&t, "default", "reviews"));
        assert!(!store.check(&t, "shop", "ratings"));
        assert!(!store.check("nope", "shop", "reviews"));
        let t2 = store.create("shop", "ratings").expect("create");
        assert_ne!(t, t2);
        assert!(store.check(&t, "shop", "reviews"), "earlier tokens survive");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("tokens.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
