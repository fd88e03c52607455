//! Bootstrap tokens: minted by the control plane for one `Workload` (name, namespace, service
//! account), checked on every discovery subscription and certificate request
//! (shared/ARCHITECTURE.md, "Trust from the first packet"). Whatever a proxy says about itself,
//! the control plane believes only the [`Grant`] its token was minted with.
//!
//! They live in `tokens.json` in the control plane's state directory (mode 0600), read again
//! on every check so a token minted (or deleted, to revoke it) while the control plane runs
//! takes effect at once.

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
        }
    }
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

    /// Mints a token bound to `grant` and saves it.
    pub fn create(&self, grant: &Grant) -> Result<String, TokenError> {
        let io = |source| TokenError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut tokens = self.read()?;
        let token = random_hex(16).map_err(io)?;
        tokens.insert(token.clone(), grant.clone());
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

    /// What `token` was minted for; None for a token never minted (or revoked), or when the
    /// token file cannot be read (then nothing is trusted).
    pub fn lookup(&self, token: &str) -> Option<Grant> {
        if token.is_empty() {
            return None;
        }
        match self.read() {
            Ok(mut tokens) => tokens.remove(token),
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
