//! Reading a `ProxyConfig` from text, with every problem reported at once and located.

use std::fmt;

use super::ProxyConfig;

/// A config that cannot be run, with every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file or source name the text came from.
    pub source_name: String,
    /// Every problem, in document order.
    pub problems: Vec<Problem>,
}

/// One problem in a config document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Path of the field, e.g. `endpoints[0].weight`, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

// === impl ProxyConfig ===

impl ProxyConfig {
    /// Parses YAML (JSON is YAML too) and validates it. `source_name` names the input in errors.
    pub fn from_yaml(source_name: &str, text: &str) -> Result<Self, ConfigError> {
        // A file with nothing in it is a mistake (the wrong path, a truncated write), not a
        // request for every default: refused, as `{}` is the way to ask for those.
        let blank = text.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
        });
        if blank {
            return Err(ConfigError {
                source_name: source_name.to_string(),
                problems: vec![Problem {
                    line: None,
                    column: None,
                    field: None,
                    message: "the config is empty (only blank lines or comments); write `{}` to run on every default".into(),
                }],
            });
        }
        // Enums as one-key maps (`{exact: /a}`), as in JSON, rather than YAML tags (`!exact`).
        let de = serde_norway::Deserializer::from_str(text);
        let parsed: Result<ProxyConfig, _> = serde_norway::with::singleton_map_recursive::deserialize(de);
        let config: ProxyConfig = parsed.map_err(|e| {
            let location = e.location();
            ConfigError {
                source_name: source_name.to_string(),
                problems: vec![Problem {
                    line: location.as_ref().map(|l| l.line()),
                    column: location.as_ref().map(|l| l.column()),
                    field: None,
                    message: e.to_string(),
                }],
            }
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                source_name: source_name.to_string(),
                problems,
            })
        }
    }

    /// Reads and parses a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            problems: vec![Problem {
                line: None,
                column: None,
                field: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::from_yaml(&name, &text)
    }
}

// === impl ConfigError ===

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.source_name, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {}", self.source_name)?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
                if let Some(col) = p.column {
                    write!(f, ":{col}")?;
                }
            }
            if let Some(field) = &p.field {
                write!(f, ": {field}")?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

impl Problem {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: None,
            column: None,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
workload: {name: productpage-v1, namespace: default, labels: {app: productpage, version: v1}}
admin: {address: "127.0.0.1:0"}
inbound:
  mesh: "127.0.0.1:0"
  listeners: [{port: 9080, app: "127.0.0.1:9080"}]
outbound:
  listen: "127.0.0.1:0"
  ports: [{listen: "127.0.0.1:0", service: reviews, port: 9080}]
services:
  - name: reviews
    ports: [{port: 9080, protocol: http}]
    loadBalancer: ROUND_ROBIN
endpoints:
  - service: reviews
    port: 9080
    endpoints:
      - {address: "127.0.0.1:9081", meshPort: 15008, weight: 2, labels: {version: v1}}
      - {address: "127.0.0.1:9082"}
"#;

    #[test]
    fn an_empty_or_comment_only_config_is_refused_not_defaulted() {
        for text in ["", "\n  \n", "# just a comment\n---\n# another\n"] {
            let err = ProxyConfig::from_yaml("p.yaml", text).expect_err("refused");
            assert!(err.problems[0].message.contains("the config is empty"), "{err:?}");
        }
        assert!(
            ProxyConfig::from_yaml("p.yaml", "{}").is_ok(),
            "an explicit {{}} is every default"
        );
    }

    #[test]
    fn parses_a_full_config() {
        let c = ProxyConfig::from_yaml("good.yaml", GOOD).expect("valid");
        assert_eq!(c.workload.name, "productpage-v1");
        assert_eq!(c.services[0].fqdn(), "reviews.default.svc.cluster.local");
        assert_eq!(
            c.services[0].load_balancer,
            crate::proxy_config::LoadBalancer::RoundRobin
        );
        assert_eq!(c.endpoints[0].endpoints[0].weight, 2);
        assert_eq!(c.endpoints[0].endpoints[1].weight, 1);
        assert_eq!(c.endpoints[0].endpoints[1].mesh_port, None);
        assert!(c.find_service("reviews.default.svc.cluster.local").is_some());
    }

    #[test]
    fn unknown_field_is_located() {
        let text = "workload:\n  name: a\n  nmespace: b\n";
        let err = ProxyConfig::from_yaml("bad.yaml", text).expect_err("unknown field");
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].line, Some(3));
        assert!(err.problems[0].message.contains("nmespace"), "{err}");
        assert!(err.to_string().starts_with("bad.yaml: 1 problem"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = r#"
services:
  - {name: a.b, ports: []}
endpoints:
  - {service: missing, port: 1}
outbound:
  ports: [{listen: "127.0.0.1:7000", service: nope, port: 80}]
limits: {maxConnections: 0}
"#;
        let err = ProxyConfig::from_yaml("x.yaml", text).expect_err("invalid");
        let fields: Vec<_> = err.problems.iter().filter_map(|p| p.field.clone()).collect();
        assert_eq!(
            fields,
            [
                "services[0].name",
                "services[0].ports",
                "endpoints[0].service",
                "limits.maxConnections"
            ]
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/proxy/sidecar.yaml");
        let c = ProxyConfig::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.services[0].vip, Some("240.240.0.10".parse().expect("ip")));
        assert_eq!(c.outbound.ports[0].service, "reviews");
    }
}
