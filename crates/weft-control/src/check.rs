//! `weft check`: every certificate the mesh depends on, and how soon it expires.
//!
//! - The CA (from the control plane's state directory: `ca-cert.pem`, its issuers, and every root
//!   in `trust-bundle.pem`): a warning when one expires within `warn_days` (default 30), an error
//!   when one has expired.
//! - Workload certificates (the control plane's `/status` `identities`: the last certificate
//!   issued to each identity): a warning past 80% of their life (a proxy renews at about 2/3, so
//!   it is not renewing), an error once expired.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::identity::{CA_CERT_FILE, TRUST_BUNDLE_FILE};

/// A certificate's name and validity (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub self_signed: bool,
}

/// Reads a DER certificate.
pub fn describe(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(CertInfo {
        subject: c.subject().to_string(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        is_ca: c.is_ca(),
        self_signed: c.subject() == c.issuer(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Error,
}

/// One certificate's verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    /// `root`, `intermediate` or `workload`.
    pub kind: &'static str,
    /// The subject (CA) or SPIFFE ID (workload).
    pub name: String,
    pub not_before: i64,
    pub not_after: i64,
    pub level: Level,
    pub message: String,
}

/// What counts as soon.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A CA certificate expiring within this is a warning.
    pub ca_warn: Duration,
    /// A workload certificate past this fraction of its life is a warning.
    pub workload_fraction: f64,
    pub now: SystemTime,
}

impl Thresholds {
    pub fn new(warn_days: u64) -> Self {
        Self {
            ca_warn: Duration::from_secs(warn_days * 86_400),
            workload_fraction: 0.8,
            now: SystemTime::now(),
        }
    }

    fn now(&self) -> i64 {
        self.now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

fn human(secs: i64) -> String {
    let a = secs.unsigned_abs();
    if a >= 2 * 86_400 {
        format!("{} days", a / 86_400)
    } else if a >= 2 * 3600 {
        format!("{} hours", a / 3600)
    } else if a >= 120 {
        format!("{} minutes", a / 60)
    } else {
        format!("{a} seconds")
    }
}

/// The verdict on a CA certificate.
pub fn evaluate_ca(info: &CertInfo, t: &Thresholds) -> Item {
    let kind = if info.self_signed { "root" } else { "intermediate" };
    let left = info.not_after - t.now();
    let warn = i64::try_from(t.ca_warn.as_secs()).unwrap_or(i64::MAX);
    let (level, message) = if left <= 0 {
        (Level::Error, format!("expired {} ago", human(left)))
    } else if left <= warn {
        (
            Level::Warning,
            format!(
                "expires in {}: rotate it (`weft control rotate-root`)",
                human(left)
            ),
        )
    } else {
        (Level::Ok, format!("expires in {}", human(left)))
    };
    Item {
        kind,
        name: info.subject.clone(),
        not_before: info.not_before,
        not_after: info.not_after,
        level,
        message,
    }
}

/// The verdict on a workload certificate.
pub fn evaluate_workload(spiffe_id: &str, not_before: i64, not_after: i64, t: &Thresholds) -> Item {
    evaluate_instance(spiffe_id, "", Some(true), not_before, not_after, t)
}

/// [`evaluate_workload`] for the certificate of one proxy instance; an expired certificate of a
/// proxy that is gone (`connected` false) is a warning, not an error.
pub fn evaluate_instance(
    spiffe_id: &str,
    instance: &str,
    connected: Option<bool>,
    not_before: i64,
    not_after: i64,
    t: &Thresholds,
) -> Item {
    let mut item = evaluate_workload_only(spiffe_id, not_before, not_after, t);
    if !instance.is_empty() {
        item.name = format!("{spiffe_id} ({instance})");
    }
    if connected == Some(false) {
        item.message.push_str(" [proxy disconnected]");
        if item.level == Level::Error {
            item.level = Level::Warning;
        }
    }
    item
}

fn evaluate_workload_only(spiffe_id: &str, not_before: i64, not_after: i64, t: &Thresholds) -> Item {
    let now = t.now();
    let life = (not_after - not_before).max(1);
    let used = (now - not_before) as f64 / life as f64;
    let (level, message) = if now >= not_after {
        (
            Level::Error,
            format!(
                "expired {} ago: its proxy is not renewing",
                human(not_after - now)
            ),
        )
    } else if used >= t.workload_fraction {
        (
            Level::Warning,
            format!(
                "{}% of its life used, expires in {}: its proxy should have renewed at about 67%",
                (used * 100.0) as u32,
                human(not_after - now)
            ),
        )
    } else {
        (Level::Ok, format!("expires in {}", human(not_after - now)))
    };
    Item {
        kind: "workload",
        name: spiffe_id.to_string(),
        not_before,
        not_after,
        level,
        message,
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The CA in `state_dir`: its certificate, its issuers, and the roots of the trust bundle (each
/// once).
pub fn check_state_dir(state_dir: &Path, t: &Thresholds) -> anyhow::Result<Vec<Item>> {
    let ca_cert = state_dir.join(CA_CERT_FILE);
    let bundle = state_dir.join(TRUST_BUNDLE_FILE);
    // A CA given with --ca-cert leaves only the trust bundle in the state directory.
    let own = if ca_cert.exists() || !bundle.exists() {
        read_certs(&ca_cert)?
    } else {
        Vec::new()
    };
    let mut certs: Vec<(CertificateDer<'static>, &str)> = own
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, if i == 0 { " (signs)" } else { "" }))
        .collect();
    if bundle.exists() {
        for c in read_certs(&bundle)? {
            if !certs.iter().any(|(have, _)| *have == c) {
                certs.push((c, " (trusted, another root)"));
            }
        }
    }
    certs
        .iter()
        .map(|(c, role)| {
            let mut item = describe(c)
                .map(|i| evaluate_ca(&i, t))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            item.name.push_str(role);
            Ok(item)
        })
        .collect()
}

/// The workload certificates a control plane's `/status` reports.
pub fn check_status(status: &serde_json::Value, t: &Thresholds) -> Vec<Item> {
    status["identities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some(evaluate_instance(
                i["spiffeId"].as_str()?,
                i["instance"].as_str().unwrap_or(""),
                i["connected"].as_bool(),
                i["notBefore"].as_i64()?,
                i["notAfter"].as_i64()?,
                t,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, PKCS_ECDSA_P256_SHA256};

    use super::*;
    use crate::identity::CertificateAuthority;

    fn root_expiring_in(dir: &Path, days: u64) {
        std::fs::create_dir_all(dir).expect("dir");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "short root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = (SystemTime::now() - Duration::from_secs(86_400 * 365)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(86_400 * days)).into();
        let cert = params.self_signed(&key).expect("root");
        std::fs::write(dir.join(CA_CERT_FILE), cert.pem()).expect("write");
        std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).expect("write");
    }

    #[test]
    fn a_root_expiring_soon_is_a_warning_and_an_expired_one_an_error() {
        let dir = std::env::temp_dir().join(format!("weft-check-soon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        root_expiring_in(&dir, 10);
        // A usable CA all the same.
        CertificateAuthority::from_files(&dir.join(CA_CERT_FILE), &dir.join("ca-key.pem")).expect("loads");
        let items = check_state_dir(&dir, &Thresholds::new(30)).expect("check");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, "root");
        assert_eq!(items[0].level, Level::Warning, "{items:?}");
        assert!(
            items[0].message.contains("10 days") || items[0].message.contains("9 days"),
            "{items:?}"
        );
        // With a shorter warning window: fine.
        assert_eq!(
            check_state_dir(&dir, &Thresholds::new(7)).expect("check")[0].level,
            Level::Ok
        );
        // Seen from 11 days on: expired.
        let mut later = Thresholds::new(30);
        later.now += Duration::from_secs(11 * 86_400);
        assert_eq!(
            check_state_dir(&dir, &later).expect("check")[0].level,
            Level::Error
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fresh_ca_is_fine_and_workloads_warn_past_eighty_percent() {
        let dir = std::env::temp_dir().join(format!("weft-check-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        CertificateAuthority::load_or_create(&dir)
            .and_then(|ca| ca.with_state_dir(&dir))
            .expect("ca");
        let items = check_state_dir(&dir, &Thresholds::new(30)).expect("check");
        assert_eq!(items.len(), 1, "the root is in both files, listed once");
        assert_eq!(items[0].level, Level::Ok);

        let t = Thresholds::new(30);
        let now = t.now();
        let status = serde_json::json!({ "identities": [
            { "spiffeId": "spiffe://cluster.local/ns/a/sa/fresh", "notBefore": now - 10, "notAfter": now + 90 },
            { "spiffeId": "spiffe://cluster.local/ns/a/sa/stale", "notBefore": now - 85, "notAfter": now + 15 },
            { "spiffeId": "spiffe://cluster.local/ns/a/sa/dead", "notBefore": now - 200, "notAfter": now - 100 },
            { "spiffeId": "spiffe://cluster.local/ns/a/sa/gone", "instance": "gone-0", "connected": false,
              "notBefore": now - 200, "notAfter": now - 100 },
        ]});
        let items = check_status(&status, &t);
        let levels: Vec<Level> = items.iter().map(|i| i.level).collect();
        assert_eq!(levels, [Level::Ok, Level::Warning, Level::Error, Level::Warning]);
        assert_eq!(items[3].name, "spiffe://cluster.local/ns/a/sa/gone (gone-0)");
        assert!(items[3].message.contains("disconnected"), "{items:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
