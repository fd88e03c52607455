//! Documents -> the one model. One module per family; each finding carries file:line.
//!
//! Unknown kinds and unknown fields are reported, never silently dropped; a kind Weft reads
//! but does not act on yet is a finding that says so.

mod core;
pub mod gateway_api;
mod istio;
pub mod linkerd;
pub mod linkerd_policy;
mod rate_limit;
pub mod security;
pub mod smi;
pub mod spans;
mod telemetry;

pub(crate) use self::core::locate;
use crate::finding::{codes, Finding};
use crate::model::Mesh;
use crate::proxy_config::{split_host, ProxyConfig};
use crate::resources::Document;
use crate::route::Origin;
pub use spans::{Part, Spans};

/// The model and what translation found on the way.
#[derive(Debug, Default)]
pub struct Translated {
    pub mesh: Mesh,
    pub findings: Vec<Finding>,
    /// Where the model's parts were written, for findings at the causing field.
    pub spans: Spans,
    /// Linkerd policy documents read but not yet compiled (they name each other).
    linkerd_policy: linkerd_policy::Pending,
}

/// Kinds Weft recognises but does not act on yet: each gets a finding saying so.
const NOT_YET: &[(&str, &str, &str)] = &[
    (
        "networking.istio.io",
        "Gateway",
        "ingress gateways arrive with the gateways issue",
    ),
    (
        "networking.istio.io",
        "ServiceEntry",
        "external services arrive with the egress issue",
    ),
    (
        "gateway.networking.k8s.io",
        "Gateway",
        "ingress gateways arrive with the gateways issue",
    ),
    (
        "policy.linkerd.io",
        "ServerAuthorization",
        "deprecated in Linkerd; write an AuthorizationPolicy targeting the Server",
    ),
];

/// A translator: reads one document (its load order in `seen`) into the model.
type Translator = fn(doc: &Document, seen: usize, out: &mut Translated);

/// Who translates what: (API group, kind, translator). Core `v1` has the empty group.
const TRANSLATORS: &[(&str, &str, Translator)] = &[
    ("", "Service", core::service),
    ("networking.istio.io", "DestinationRule", istio::destination_rule),
    ("networking.istio.io", "VirtualService", istio::virtual_service),
    ("weft.dev", "Workload", core::workload),
    ("weft.dev", "RateLimitPolicy", rate_limit::rate_limit_policy),
    // A Linkerd Server parent makes an HTTPRoute of either group an inbound route; the rest
    // goes to the Gateway API translator.
    (
        "gateway.networking.k8s.io",
        "HTTPRoute",
        linkerd_policy::http_route,
    ),
    (
        "gateway.networking.k8s.io",
        "GRPCRoute",
        gateway_api::translate_grpc_route,
    ),
    ("split.smi-spec.io", "TrafficSplit", smi::translate_traffic_split),
    ("linkerd.io", "ServiceProfile", linkerd::service_profile),
    (
        "security.istio.io",
        "PeerAuthentication",
        security::peer_authentication,
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        security::authorization_policy,
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        security::request_authentication,
    ),
    ("policy.linkerd.io", "Server", linkerd_policy::server),
    (
        "policy.linkerd.io",
        "AuthorizationPolicy",
        linkerd_policy::authorization_policy,
    ),
    (
        "policy.linkerd.io",
        "MeshTLSAuthentication",
        linkerd_policy::mesh_tls_authentication,
    ),
    (
        "policy.linkerd.io",
        "NetworkAuthentication",
        linkerd_policy::network_authentication,
    ),
    ("policy.linkerd.io", "HTTPRoute", linkerd_policy::http_route),
    (
        "policy.linkerd.io",
        "HTTPLocalRateLimitPolicy",
        linkerd_policy::http_local_rate_limit_policy,
    ),
    ("", "Namespace", linkerd_policy::namespace),
    ("telemetry.istio.io", "Telemetry", telemetry::telemetry),
];

/// Translates every document, in order.
pub fn translate(docs: &[Document]) -> Translated {
    let mut out = Translated::default();
    for (seen, doc) in docs.iter().enumerate() {
        let (group, kind) = (doc.group(), doc.kind.as_str());
        if let Some((_, _, translator)) = TRANSLATORS.iter().find(|(g, k, _)| *g == group && *k == kind) {
            let first = out.mesh.routes.len();
            translator(doc, seen, &mut out);
            linkerd::apply_annotations(doc, first, &mut out);
        } else if let Some((_, _, why)) = NOT_YET.iter().find(|(g, k, _)| *g == group && *k == kind) {
            out.findings.push(Finding::warning(
                codes::NOT_IMPLEMENTED,
                format!(
                    "{kind} {}/{} is read but not acted on: {why}",
                    doc.namespace, doc.name
                ),
                &doc.location(),
            ));
        } else {
            out.findings.push(Finding::warning(
                codes::UNKNOWN_KIND,
                format!(
                    "unknown kind {kind} ({}) {}/{}: ignored",
                    doc.api_version, doc.namespace, doc.name
                ),
                &doc.location(),
            ));
        }
    }
    linkerd_policy::resolve(docs, &mut out);
    out
}

/// The origin of a document, for rules and findings.
pub fn origin(doc: &Document) -> Origin {
    Origin {
        kind: doc.kind.clone(),
        namespace: doc.namespace.clone(),
        name: doc.name.clone(),
        file: Some(doc.file.clone()),
        line: Some(doc.line),
    }
}

/// A host as written in a document (`reviews`, `reviews.ns`, FQDN), made fully qualified in
/// the document's namespace. None for a name that is not a mesh service name.
pub fn mesh_host(host: &str, doc_namespace: &str) -> Option<String> {
    let (name, ns) = split_host(host, doc_namespace)?;
    Some(ProxyConfig::fqdn(name, ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{parse_file, Loaded};

    #[test]
    fn unknown_and_not_yet_kinds_are_reported_with_their_line() {
        let mut loaded = Loaded::default();
        parse_file(
            "m.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: default}\nspec: {}\n",
            &mut loaded,
        );
        let t = translate(&loaded.documents);
        assert_eq!(t.findings.len(), 2);
        assert_eq!(t.findings[0].code, codes::UNKNOWN_KIND);
        assert_eq!(t.findings[0].line, Some(1));
        assert_eq!(t.findings[1].code, codes::NOT_IMPLEMENTED);
        assert_eq!(t.findings[1].line, Some(5));
    }

    #[test]
    fn hosts_are_qualified_in_the_document_namespace() {
        assert_eq!(
            mesh_host("reviews", "shop").as_deref(),
            Some("reviews.shop.svc.cluster.local")
        );
        assert_eq!(
            mesh_host("reviews.default.svc.cluster.local", "shop").as_deref(),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(mesh_host("www.example.com", "shop"), None);
    }
}
