//! `csr`: a certificate signing request as `Identity.Sign` receives it, signed by the mesh CA.

use std::sync::OnceLock;

use rcgen::PublicKeyData;

use weft_control::identity::{CertificateAuthority, IdentityError, DEFAULT_CERT_TTL};
use weft_control::tokens::Grant;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// `data`: a CSR, PEM (as the request carries it) or, when it does not start like PEM, DER
/// (wrapped in PEM here, so the fuzzer need not learn base64).
pub fn csr(data: &[u8]) {
    let text = if data.starts_with(b"-----BEGIN") {
        String::from_utf8_lossy(data).into_owned()
    } else {
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data.to_vec()))
    };
    let grant = Grant::new("reviews-v1", "shop", "reviews");
    match ca().sign(&text, &grant, DEFAULT_CERT_TTL) {
        Ok(signed) => {
            // Whatever the CSR asked for, the certificate names exactly the granted identity,
            // for exactly the CSR's key.
            let want = "spiffe://cluster.local/ns/shop/sa/reviews";
            assert_eq!(signed.spiffe_id.to_string(), want);
            let Some(leaf) = pem::parse_many(&signed.cert_chain_pem)
                .ok()
                .and_then(|c| c.into_iter().next())
            else {
                panic!("an issued chain is PEM: {}", signed.cert_chain_pem);
            };
            let cert = match X509Certificate::from_der(leaf.contents()) {
                Ok((_, cert)) => cert,
                Err(e) => panic!("an issued certificate parses: {e}"),
            };
            let sans: Vec<String> = match cert.subject_alternative_name() {
                Ok(Some(san)) => san
                    .value
                    .general_names
                    .iter()
                    .map(|n| match n {
                        GeneralName::URI(u) => (*u).to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect(),
                other => panic!("an issued certificate has one SAN: {other:?}"),
            };
            assert_eq!(sans, [want]);
            assert!(!cert.is_ca(), "a workload certificate cannot sign");
            let Ok(request) = rcgen::CertificateSigningRequestParams::from_pem(&text) else {
                panic!("a signed CSR parses again");
            };
            assert_eq!(
                cert.public_key().subject_public_key.data.as_ref(),
                request.public_key.der_bytes(),
                "certifies the CSR's key"
            );
        }
        Err(IdentityError::Csr(_) | IdentityError::CsrAlgorithm) => {}
        Err(e) => panic!("a bad CSR is a bad CSR, not: {e}"),
    }
}

/// The mesh CA, made once per process in a directory of its own.
fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weft-fuzz-ca-{}", std::process::id()));
        match CertificateAuthority::load_or_create(&dir) {
            Ok(ca) => ca,
            Err(e) => panic!("a CA in {}: {e}", dir.display()),
        }
    })
}
