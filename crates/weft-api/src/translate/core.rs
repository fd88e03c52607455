//! Core `v1` `Service` and Weft's `Workload` -> the model; and the helpers every translator
//! uses to place a finding on the field it is about.

use marked_yaml::Node;

use super::{origin, Translated};
use crate::finding::{codes, Finding, Location};
use crate::model::{self, protocol_of};
use crate::proxy_config::Protocol;
use crate::resources::core::{ServiceSpec, WorkloadSpec};
use crate::resources::Document;

/// `Service` (core `v1`) -> `model::Service`.
pub(super) fn service(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: ServiceSpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    let mut ports = Vec::with_capacity(spec.ports.len());
    for (i, p) in spec.ports.iter().enumerate() {
        let i = i.to_string();
        let target_port = match p.target_port.as_deref() {
            None => p.port,
            Some(t) => match t.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => {
                    out.findings.push(not_implemented(
                        doc,
                        &["spec", "ports", &i, "targetPort"],
                        &format!("a named targetPort ({t}): port {} is used instead", p.port),
                    ));
                    p.port
                }
            },
        };
        if let Some(proto) = p.protocol.as_deref().filter(|p| !p.eq_ignore_ascii_case("TCP")) {
            out.findings.push(not_implemented(
                doc,
                &["spec", "ports", &i, "protocol"],
                &format!("protocol {proto}: the mesh carries TCP only"),
            ));
        }
        ports.push(model::ServicePort {
            port: p.port,
            name: p.name.clone(),
            protocol: protocol_of(p.app_protocol.as_deref(), p.name.as_deref()),
            target_port,
        });
    }
    if let Some(affinity) = spec.session_affinity.as_deref().filter(|a| *a != "None") {
        out.findings.push(not_implemented(
            doc,
            &["spec", "sessionAffinity"],
            &format!("sessionAffinity {affinity}: requests are balanced without affinity"),
        ));
    }
    if spec.type_.as_deref() == Some("ExternalName") || spec.external_name.is_some() {
        let field = if spec.external_name.is_some() {
            "externalName"
        } else {
            "type"
        };
        out.findings.push(not_implemented(
            doc,
            &["spec", field],
            "ExternalName services: external services arrive with the egress issue",
        ));
    }
    out.mesh.services.push(model::Service {
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        ports,
        selector: spec.selector,
        origin: origin(doc),
    });
}

/// `Workload` (`weft.dev/v1alpha1`) -> `model::Workload`.
pub(super) fn workload(doc: &Document, _seen: usize, out: &mut Translated) {
    let spec: WorkloadSpec = match doc.spec() {
        Ok(spec) => spec,
        Err(f) => return out.findings.extend(f),
    };
    let mut ports = Vec::with_capacity(spec.ports.len());
    for (i, p) in spec.ports.iter().enumerate() {
        if let Some(proto) = p.protocol.as_deref() {
            if protocol_of(Some(proto), None) == Protocol::Auto && !proto.eq_ignore_ascii_case("auto") {
                out.findings.push(Finding::warning(
                    codes::SCHEMA,
                    format!(
                        "Workload {}/{}: unknown protocol {proto} (http, http2, grpc, tcp, auto): \
                         detected instead",
                        doc.namespace, doc.name
                    ),
                    &locate(doc, &["spec", "ports", &i.to_string(), "protocol"]),
                ));
            }
        }
        ports.push(model::WorkloadPort {
            name: p.name.clone(),
            port: p.port,
            protocol: protocol_of(p.protocol.as_deref(), p.name.as_deref()),
        });
    }
    // The pods' labels: `spec.labels` (as a Deployment's pod template) and, since a Kubernetes
    // user writes them there as readily, `metadata.labels`. Where both name a key, spec wins.
    let mut labels = doc.labels.clone();
    for (key, value) in spec.labels {
        if labels.get(&key).is_some_and(|v| *v != value) {
            out.findings.push(Finding::warning(
                codes::SCHEMA,
                format!(
                    "Workload {}/{}: label {key} is {} in metadata.labels and {value} in \
                     spec.labels: spec.labels wins",
                    doc.namespace, doc.name, labels[&key]
                ),
                &locate(doc, &["spec", "labels", &key]),
            ));
        }
        labels.insert(key, value);
    }
    out.mesh.workloads.push(model::Workload {
        name: doc.name.clone(),
        namespace: doc.namespace.clone(),
        labels,
        service_account: spec.service_account.unwrap_or_else(|| "default".to_string()),
        ports,
        command: spec.command,
        env: spec.env,
        replicas: spec.replicas.unwrap_or(1),
        address: spec.address,
        tap_disabled: ["config.linkerd.io/disable-tap", "weft.dev/disable-tap"]
            .iter()
            .any(|k| {
                doc.annotations
                    .get(*k)
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            }),
        origin: origin(doc),
    });
}

// === locating fields ===

/// The location of a field: `path` walks the document from its root (`["spec", "http", "0",
/// "corsPolicy"]`; a number indexes a sequence). The key's own position when the last step is
/// a key; the deepest node found when the path does not go all the way.
pub(crate) fn locate(doc: &Document, path: &[&str]) -> Location {
    locate_in(doc, &doc.node(), path)
}

/// As [`locate`], in the document's tree already parsed (`root`).
pub(crate) fn locate_in(doc: &Document, root: &Node, path: &[&str]) -> Location {
    let mut node: &Node = root;
    let mut at = doc.location_of(node);
    for step in path {
        let next = match node {
            Node::Mapping(map) => map.iter().find(|(k, _)| k.as_str() == *step).map(|(k, v)| {
                at = doc.location_of(&Node::Scalar(k.clone()));
                v
            }),
            Node::Sequence(seq) => step.parse::<usize>().ok().and_then(|i| seq.get(i)).inspect(|v| {
                at = item_location(doc, v);
            }),
            Node::Scalar(_) => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    at
}

/// Where a list item starts: a block mapping's own mark lies after its first key (the parser
/// marks it late), so the first key is the item's first character.
fn item_location(doc: &Document, item: &Node) -> Location {
    let own = doc.location_of(item);
    let first_key = item
        .as_mapping()
        .and_then(|m| m.keys().next())
        .map(|k| doc.location_of(&Node::Scalar(k.clone())));
    match first_key {
        Some(key) if (key.line, key.column) < (own.line, own.column) => key,
        _ => own,
    }
}

/// Whether the document's tree (`root`) has a node at `path` (mapping keys and list indexes).
pub(crate) fn has_path_in(root: &Node, path: &[&str]) -> bool {
    let mut node: &Node = root;
    for step in path {
        let next = match node {
            Node::Mapping(map) => map.iter().find(|(k, _)| k.as_str() == *step).map(|(_, v)| v),
            Node::Sequence(seq) => step.parse::<usize>().ok().and_then(|i| seq.get(i)),
            Node::Scalar(_) => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    true
}

/// `spec.http[0].corsPolicy` from `["spec", "http", "0", "corsPolicy"]`.
pub(crate) fn field_name(path: &[&str]) -> String {
    let mut name = String::new();
    for step in path {
        if step.parse::<usize>().is_ok() {
            name.push_str(&format!("[{step}]"));
        } else {
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(step);
        }
    }
    name
}

/// A `NOT_IMPLEMENTED` warning on a field Weft reads but does not act on yet.
pub(crate) fn not_implemented(doc: &Document, path: &[&str], what: &str) -> Finding {
    Finding::warning(
        codes::NOT_IMPLEMENTED,
        format!(
            "{} {}/{}: {} is read but not acted on yet: {what}",
            doc.kind,
            doc.namespace,
            doc.name,
            field_name(path)
        ),
        &locate(doc, path),
    )
}

#[cfg(test)]
mod tests {
    use super::super::translate;
    use crate::finding::codes;
    use crate::proxy_config::Protocol;
    use crate::resources::{parse_file, Loaded};

    fn run(yaml: &str) -> super::Translated {
        let mut loaded = Loaded::default();
        parse_file("m.yaml", yaml, &mut loaded);
        assert!(loaded.findings.is_empty(), "{:?}", loaded.findings);
        translate(&loaded.documents)
    }

    #[test]
    fn service_ports_protocols_and_target_ports() {
        let t = run("\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  type: ClusterIP
  clusterIP: 10.0.0.7
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 8080, nodePort: 30080}
  - {name: grpc-api, port: 9090, appProtocol: kubernetes.io/h2c}
  - {name: metrics, port: 9100, targetPort: metrics}
");
        let svc = &t.mesh.services[0];
        assert_eq!(svc.fqdn(), "reviews.shop.svc.cluster.local");
        assert_eq!(svc.selector.get("app").map(String::as_str), Some("reviews"));
        let ports: Vec<_> = svc
            .ports
            .iter()
            .map(|p| (p.port, p.target_port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                (9080, 8080, Protocol::Http),
                (9090, 9090, Protocol::Http2),
                (9100, 9100, Protocol::Auto)
            ]
        );
        assert_eq!(t.findings.len(), 1, "{:?}", t.findings);
        assert_eq!(t.findings[0].code, codes::NOT_IMPLEMENTED);
        assert_eq!(t.findings[0].line, Some(11));
        assert!(
            t.findings[0].message.contains("spec.ports[2].targetPort"),
            "{}",
            t.findings[0]
        );
    }

    #[test]
    fn session_affinity_warns_only_when_it_changes_behaviour() {
        let t = run("\
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  sessionAffinity: None
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec:
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 10}}
  ports: [{port: 80}]
");
        assert_eq!(t.mesh.services.len(), 2);
        assert_eq!(t.findings.len(), 1, "{:?}", t.findings);
        assert_eq!(
            (t.findings[0].code, t.findings[0].line),
            (codes::NOT_IMPLEMENTED, Some(12))
        );
    }

    #[test]
    fn unknown_service_field_skips_only_that_document() {
        let t = run("\
apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports: [{port: 80, bogus: 1}]
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {ports: [{port: 80}]}
");
        assert_eq!(t.mesh.services.len(), 1);
        assert_eq!(t.mesh.services[0].name, "b");
        assert_eq!(
            (t.findings[0].code, t.findings[0].line),
            (codes::UNKNOWN_FIELD, Some(5))
        );
    }

    #[test]
    fn workload_labels_come_from_metadata_and_spec() {
        let t = run("\
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1, team: books}}
spec:
  labels: {version: v2, tier: backend}
  ports: [{port: 9080}]
");
        let labels = &t.mesh.workloads[0].labels;
        let got: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["app=reviews", "team=books", "tier=backend", "version=v2"]);
        assert_eq!(t.findings.len(), 1, "{:?}", t.findings);
        assert_eq!((t.findings[0].code, t.findings[0].line), (codes::SCHEMA, Some(5)));
        assert!(
            t.findings[0].message.contains("label version"),
            "{}",
            t.findings[0]
        );
    }

    #[test]
    fn workload_defaults_and_fields() {
        let t = run("\
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1, namespace: shop}
spec:
  labels: {app: reviews, version: v1}
  ports: [{name: http, port: 9080}, {port: 9090, protocol: grpc}, {port: 5432, protocol: tcp}]
  command: [python3, -m, http.server, '9080']
  env: {LOG: debug}
---
apiVersion: weft.dev/v1alpha1
kind: Workload
metadata: {name: db}
spec:
  serviceAccount: db-sa
  replicas: 3
  ports: [{port: 80, protocol: quic}]
");
        let w = &t.mesh.workloads[0];
        assert_eq!((w.service_account.as_str(), w.replicas), ("default", 1));
        assert_eq!(w.namespace, "shop");
        assert_eq!(w.command, ["python3", "-m", "http.server", "9080"]);
        assert_eq!(w.env.get("LOG").map(String::as_str), Some("debug"));
        let protos: Vec<_> = w.ports.iter().map(|p| (p.port, p.protocol)).collect();
        assert_eq!(
            protos,
            [
                (9080, Protocol::Http),
                (9090, Protocol::Grpc),
                (5432, Protocol::Tcp)
            ]
        );
        let db = &t.mesh.workloads[1];
        assert_eq!((db.service_account.as_str(), db.replicas), ("db-sa", 3));
        assert_eq!(t.findings.len(), 1, "{:?}", t.findings);
        assert_eq!(
            (t.findings[0].code, t.findings[0].line),
            (codes::SCHEMA, Some(16))
        );
    }
}
