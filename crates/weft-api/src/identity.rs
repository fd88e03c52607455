//! Workload identities (shared/ARCHITECTURE.md, "Identity"): SPIFFE IDs
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Linkerd names the same identity `<sa>.<ns>.serviceaccount.identity.linkerd.<trust-domain>`
//! (e.g. in a ServerAuthorization's `identities`); [`SpiffeId::parse`] reads both forms into the
//! same value, and [`fmt::Display`] always prints the SPIFFE URI.

use std::fmt;
use std::str::FromStr;

/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const LINKERD_INFIX: &str = ".serviceaccount.identity.linkerd.";

/// One workload identity: who a certificate says a proxy is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not a workload identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("{0:?}: not a workload identity (want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> or <sa>.<ns>.serviceaccount.identity.linkerd.<trust-domain>)")]
    Shape(String),
    #[error("{id:?}: invalid trust domain {trust_domain:?} (lowercase letters, digits, '.', '-', '_')")]
    TrustDomain { id: String, trust_domain: String },
    #[error("{id:?}: invalid {what} {value:?} (letters, digits, '.', '-', '_')")]
    Segment {
        id: String,
        what: &'static str,
        value: String,
    },
}

impl SpiffeId {
    /// An identity from its parts, checked like a parsed one.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        let id = Self {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        };
        id.check(&id.to_string())?;
        Ok(id)
    }

    /// Reads `spiffe://td/ns/NS/sa/SA` or `SA.NS.serviceaccount.identity.linkerd.TD`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        let shape = || SpiffeIdError::Shape(s.to_string());
        let id = if let Some(rest) = s.strip_prefix("spiffe://") {
            let (td, path) = rest.split_once('/').ok_or_else(shape)?;
            let parts: Vec<&str> = path.split('/').collect();
            match parts.as_slice() {
                ["ns", ns, "sa", sa] => Self {
                    trust_domain: td.to_string(),
                    namespace: (*ns).to_string(),
                    service_account: (*sa).to_string(),
                },
                _ => return Err(shape()),
            }
        } else if let Some((sa_ns, td)) = s.split_once(LINKERD_INFIX) {
            // Namespaces are DNS labels (no dots); service-account names may hold dots.
            let (sa, ns) = sa_ns.rsplit_once('.').ok_or_else(shape)?;
            Self {
                trust_domain: td.to_string(),
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            }
        } else {
            return Err(shape());
        };
        id.check(s)?;
        Ok(id)
    }

    /// The Linkerd spelling of this identity.
    pub fn to_linkerd_name(&self) -> String {
        format!(
            "{}.{}{LINKERD_INFIX}{}",
            self.service_account, self.namespace, self.trust_domain
        )
    }

    fn check(&self, original: &str) -> Result<(), SpiffeIdError> {
        let td = &self.trust_domain;
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
        if !td_ok {
            return Err(SpiffeIdError::TrustDomain {
                id: original.to_string(),
                trust_domain: td.clone(),
            });
        }
        for (what, value) in [
            ("namespace", &self.namespace),
            ("service account", &self.service_account),
        ] {
            let ok = !value.is_empty()
                && value != "."
                && value != ".."
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if !ok {
                return Err(SpiffeIdError::Segment {
                    id: original.to_string(),
                    what,
                    value: value.clone(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(td: &str, ns: &str, sa: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: td.into(),
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    #[test]
    fn spiffe_uris_parse_and_print_back() {
        let s = "spiffe://cluster.local/ns/shop/sa/reviews";
        let parsed = SpiffeId::parse(s).expect("parses");
        assert_eq!(parsed, id("cluster.local", "shop", "reviews"));
        assert_eq!(parsed.to_string(), s);
        assert_eq!(s.parse::<SpiffeId>().expect("FromStr"), parsed);
        assert_eq!(
            SpiffeId::new("example.org", "default", "default")
                .expect("new")
                .to_string(),
            "spiffe://example.org/ns/default/sa/default"
        );
    }

    #[test]
    fn linkerd_names_are_the_same_identity() {
        let l =
            SpiffeId::parse("reviews.shop.serviceaccount.identity.linkerd.cluster.local").expect("parses");
        assert_eq!(
            l,
            SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/reviews").expect("parses")
        );
        assert_eq!(
            l.to_linkerd_name(),
            "reviews.shop.serviceaccount.identity.linkerd.cluster.local"
        );
        // A service account with dots: the namespace is the last label before the suffix.
        let dotted =
            SpiffeId::parse("build.bot.ci.serviceaccount.identity.linkerd.cluster.local").expect("parses");
        assert_eq!(dotted, id("cluster.local", "ci", "build.bot"));
        assert_eq!(
            SpiffeId::parse(&dotted.to_linkerd_name()).expect("round trip"),
            dotted
        );
    }

    #[test]
    fn malformed_identities_are_refused_with_the_reason() {
        for bad in [
            "",
            "reviews",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/sa",
            "spiffe://cluster.local/ns/shop/sa/reviews/extra",
            "spiffe://cluster.local/sa/reviews/ns/shop",
            "https://cluster.local/ns/shop/sa/reviews",
            "shop.serviceaccount.identity.linkerd.cluster.local",
        ] {
            assert!(
                matches!(SpiffeId::parse(bad), Err(SpiffeIdError::Shape(_))),
                "{bad:?} should be a shape error"
            );
        }
        assert!(matches!(
            SpiffeId::parse("spiffe://Cluster.Local/ns/shop/sa/reviews"),
            Err(SpiffeIdError::TrustDomain { .. })
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe:///ns/shop/sa/reviews"),
            Err(SpiffeIdError::TrustDomain { .. })
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://cluster.local/ns//sa/reviews"),
            Err(SpiffeIdError::Segment {
                what: "namespace",
                ..
            })
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/re%20views"),
            Err(SpiffeIdError::Segment {
                what: "service account",
                ..
            })
        ));
        assert!(SpiffeId::new("cluster.local", "..", "x").is_err());
    }
}
