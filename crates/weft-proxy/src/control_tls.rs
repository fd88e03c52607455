//! The proxy's connection to the control plane, over TLS when it has a trust anchor
//! (shared/ARCHITECTURE.md, "Trust from the first packet": the anchor reaches the proxy out of
//! band, `--trust-anchor FILE` or `WEFT_TRUST_ANCHOR`, never only over the channel it secures).
//!
//! - [`TrustAnchor`]: a PEM file of roots, read again on every connection and every certificate
//!   issuance, so a root rotation that rewrites it (`trust-bundle.pem` in the control plane's
//!   state directory) is picked up without a restart.
//! - [`connect`]: a gRPC channel to the control plane. With an anchor, TLS (ring) verifying the
//!   control plane's server certificate against the anchor and the host of the address
//!   (`127.0.0.1` or `localhost` as `weft control --tls` issues it); without one, plaintext
//!   (which `weft proxy` allows only with `--insecure-plaintext-control-plane`).
//! - [`read_token_file`]: the bootstrap token from a file only its owner can read; tokens never
//!   travel in a process's arguments.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// The roots this proxy trusts the control plane (and the mesh) with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    path: PathBuf,
}

impl TrustAnchor {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The roots in the file now (at least one).
    pub fn load(&self) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let pem = std::fs::read(&self.path)
            .map_err(|e| anyhow::anyhow!("trust anchor {}: {e}", self.path.display()))?;
        let roots = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("trust anchor {}: {e}", self.path.display()))?;
        anyhow::ensure!(
            !roots.is_empty(),
            "trust anchor {}: no CERTIFICATE in the file",
            self.path.display()
        );
        Ok(roots)
    }

    /// A root store of the roots in the file now.
    pub fn root_store(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut store = rustls::RootCertStore::empty();
        for r in self.load()? {
            store
                .add(r)
                .map_err(|e| anyhow::anyhow!("trust anchor {}: {e}", self.path.display()))?;
        }
        Ok(store)
    }
}

/// Why a token file was not used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token file {path} is readable by its group or others (mode {mode:04o}); a bootstrap token lets its holder join the mesh as this workload: `chmod 600 {path}`"
    )]
    Readable { path: String, mode: u32 },
    #[error("token file {path} is empty")]
    Empty { path: String },
}

/// The bootstrap token in `path` (surrounding whitespace trimmed). Refused when the file's
/// group or others may read it (mode 0600 or stricter is wanted), as ssh refuses a private key.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let io = |source| TokenFileError::Io {
        path: shown.clone(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenFileError::Readable { path: shown, mode });
    }
    let token = std::fs::read_to_string(path).map_err(io)?.trim().to_string();
    if token.is_empty() {
        return Err(TokenFileError::Empty { path: shown });
    }
    Ok(token)
}

/// A channel to the control plane at `endpoint` (`http://HOST:PORT`; `https://` is the same with
/// an anchor), `configure`d (timeouts, keep-alive). TLS when `anchor` is given.
pub async fn connect(
    endpoint: &str,
    anchor: Option<&TrustAnchor>,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> anyhow::Result<Channel> {
    let Some(anchor) = anchor else {
        return configure(Endpoint::from_shared(endpoint.to_owned())?)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)));
    };
    // tonic speaks plaintext HTTP/2 over whatever the connector returns: the TLS is ours.
    let plain = match endpoint.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => endpoint.to_owned(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(anchor.root_store()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector {
        config: Arc::new(config),
    };
    configure(Endpoint::from_shared(plain)?)
        .connect_with_connector(connector)
        .await
        .map_err(|e| anyhow::anyhow!("{}", error_chain(&e)))
}

/// An error with its sources (`transport error: ...: invalid peer certificate: UnknownIssuer`):
/// why the control plane was refused belongs in the log line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

type Conn = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone()).map_err(|e| invalid(format!("{host}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "TLS to the control plane at {host}:{port} (verified against the trust anchor): {e}"
                    ),
                )
            })?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_token_file_must_be_private() {
        let dir = std::env::temp_dir().join(format!("weft-token-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("token");
        std::fs::write(&path, "abc123\n").expect("write");
        let chmod =
            |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        chmod(0o600);
        assert_eq!(read_token_file(&path).expect("private file"), "abc123");
        chmod(0o400);
        assert_eq!(read_token_file(&path).expect("read-only file"), "abc123");
        for mode in [0o640, 0o604, 0o644] {
            chmod(mode);
            match read_token_file(&path) {
                Err(e @ TokenFileError::Readable { .. }) => {
                    assert!(e.to_string().contains("chmod 600"), "{e}");
                    assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        chmod(0o600);
        std::fs::write(&path, " \n").expect("write");
        assert!(matches!(
            read_token_file(&path),
            Err(TokenFileError::Empty { .. })
        ));
        assert!(matches!(
            read_token_file(&dir.join("missing")),
            Err(TokenFileError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
