//! A test CA (rcgen) issuing SPIFFE certificates, for real TLS on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Credentials, CredentialsCell};

pub const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
pub const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

/// A self-signed root that signs leaves directly.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    root_pem: String,
}

/// When a test leaf is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From 2024 to 2099.
    Current,
    /// During 2020 only.
    Expired,
    /// From 2098 on.
    NotYetValid,
}

/// A leaf with its key.
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
    pub key: KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        Self {
            root: cert.der().clone(),
            root_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// A leaf for `spiffe_id`, valid now (or expired a year ago when `expired`).
    pub fn leaf(&self, spiffe_id: &str, expired: bool) -> Leaf {
        self.leaf_valid(
            spiffe_id,
            match expired {
                true => Validity::Expired,
                false => Validity::Current,
            },
        )
    }

    /// A leaf for `spiffe_id` with the given validity period.
    pub fn leaf_valid(&self, spiffe_id: &str, validity: Validity) -> Leaf {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "weft workload");
        params.subject_alt_names = vec![SanType::URI(
            spiffe_id.to_string().try_into().expect("SPIFFE ID is IA5"),
        )];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        (params.not_before, params.not_after) = match validity {
            Validity::Expired => (date_time_ymd(2020, 1, 1), date_time_ymd(2021, 1, 1)),
            Validity::Current => (date_time_ymd(2024, 1, 1), date_time_ymd(2099, 1, 1)),
            Validity::NotYetValid => (date_time_ymd(2098, 1, 1), date_time_ymd(2099, 1, 1)),
        };
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key,
        }
    }

    /// Fresh credentials for `spiffe_id`, trusting this CA.
    pub fn credentials(&self, spiffe_id: &str) -> Credentials {
        let leaf = self.leaf(spiffe_id, false);
        Credentials {
            chain: vec![leaf.cert],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der())),
            trust_bundle: vec![self.root()],
            spiffe_id: spiffe_id.to_string(),
            not_after: SystemTime::now() + Duration::from_secs(3600),
        }
    }

    /// A cell holding fresh credentials for `spiffe_id`.
    pub fn cell(&self, spiffe_id: &str) -> CredentialsCell {
        Arc::new(ArcSwapOption::from_pointee(self.credentials(spiffe_id)))
    }

    /// Writes `ca.pem`, and a leaf's `NAME.pem` / `NAME.key` into `dir`; returns (cert, key).
    pub fn write_leaf(&self, dir: &Path, name: &str, spiffe_id: &str, expired: bool) -> (PathBuf, PathBuf) {
        let validity = match expired {
            true => Validity::Expired,
            false => Validity::Current,
        };
        self.write_leaf_valid(dir, name, spiffe_id, validity)
    }

    /// [`write_leaf`](Self::write_leaf) with the given validity period.
    pub fn write_leaf_valid(
        &self,
        dir: &Path,
        name: &str,
        spiffe_id: &str,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        std::fs::write(dir.join("ca.pem"), &self.root_pem).expect("write CA");
        let leaf = self.leaf_valid(spiffe_id, validity);
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&key, leaf.key.serialize_pem()).expect("write key");
        (cert, key)
    }
}
