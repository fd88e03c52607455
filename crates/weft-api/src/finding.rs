//! Findings: what `weft analyze` prints and what translation reports about a document.
//!
//! The JSON shape is a contract users script against (shared/ARCHITECTURE.md, "Contracts"):
//! `{"severity", "code", "message", "file", "line", "column", "fix"}`.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

/// One finding, located in a file when it can be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable code, e.g. `WEFT0101` (see `codes`).
    pub code: &'static str,
    pub message: String,
    /// Relative to the directory given.
    pub file: Option<String>,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based.
    pub column: Option<usize>,
    pub fix: Option<String>,
}

/// A place in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// The finding codes, one place.
pub mod codes {
    pub const YAML_SYNTAX: &str = "WEFT0001";
    pub const SCHEMA: &str = "WEFT0002";
    pub const UNKNOWN_FIELD: &str = "WEFT0003";
    pub const UNKNOWN_KIND: &str = "WEFT0004";
    pub const NOT_IMPLEMENTED: &str = "WEFT0005";
    pub const MISSING_FIELD: &str = "WEFT0006";
    pub const DUPLICATE: &str = "WEFT0007";
    /// A field Istio deprecated (IST0002).
    pub const DEPRECATED: &str = "WEFT0008";
    /// A file that is not a mesh document (e.g. a sidecar's ProxyConfig): left out.
    pub const NOT_A_MESH_DOCUMENT: &str = "WEFT0009";
    pub const MISSING_SERVICE: &str = "WEFT0101";
    pub const MISSING_SUBSET: &str = "WEFT0102";
    pub const MISSING_GATEWAY: &str = "WEFT0103";
    pub const CONFLICTING_ROUTES: &str = "WEFT0104";
    pub const WEIGHTS: &str = "WEFT0105";
    pub const BAD_REGEX: &str = "WEFT0106";
    pub const SHADOWED_RULE: &str = "WEFT0107";
    pub const STRICT_PLAINTEXT: &str = "WEFT0108";
    /// A destination without a port to a service with several (IST0112).
    pub const PORT_REQUIRED: &str = "WEFT0109";
    /// A destination port the service does not expose (IST0101 host:port).
    pub const MISSING_PORT: &str = "WEFT0110";
    /// A DestinationRule for a host that is not a service (IST0174).
    pub const UNKNOWN_RULE_HOST: &str = "WEFT0111";
    /// A match that an earlier rule's match already takes (IST0131).
    pub const INEFFECTIVE_MATCH: &str = "WEFT0112";
    /// A namespace named by a policy that no document is in (IST0101 namespace).
    pub const MISSING_NAMESPACE: &str = "WEFT0113";
    /// A workload selector that selects no Workload (IST0127).
    pub const NO_MATCHING_WORKLOADS: &str = "WEFT0114";
    /// `request.auth` conditions without a RequestAuthentication (IST0172).
    pub const NO_REQUEST_AUTHENTICATION: &str = "WEFT0115";
    /// A Linkerd policy names a Server, HTTPRoute or authentication that is in no document.
    pub const MISSING_POLICY_REF: &str = "WEFT0120";
    /// A Linkerd `Server` selects no workload port.
    pub const SELECTS_NOTHING: &str = "WEFT0121";
}

// === impl Finding ===

impl Finding {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>, at: &Location) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            file: at.file.clone(),
            line: at.line,
            column: at.column,
            fix: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>, at: &Location) -> Self {
        Self::new(Severity::Error, code, message, at)
    }

    pub fn warning(code: &'static str, message: impl Into<String>, at: &Location) -> Self {
        Self::new(Severity::Warning, code, message, at)
    }

    pub fn info(code: &'static str, message: impl Into<String>, at: &Location) -> Self {
        Self::new(Severity::Info, code, message, at)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// `path:line:col: error CODE: message (fix: ...)`, as `istioctl analyze` and compilers print.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
                if let Some(col) = self.column {
                    write!(f, "{col}:")?;
                }
            }
            f.write_str(" ")?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        write!(f, "{sev} {}: {}", self.code, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, " (fix: {fix})")?;
        }
        Ok(())
    }
}
