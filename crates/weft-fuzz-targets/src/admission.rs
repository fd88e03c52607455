//! `admission`: the control plane deciding who a subscribing proxy is (weft-control
//! `admission::admit`), on any `Subscribe` a caller can send, with any token grant. It never
//! panics, and what it admits is what the token and the documents say: the token's workload,
//! namespace and service account, the document's labels, an id named after the workload and not
//! held by another workload.

use std::net::{IpAddr, Ipv4Addr};

use prost::Message;
use weft_api::proto::Subscribe;
use weft_control::admission::admit;
use weft_control::registry::{Instance, Registry};
use weft_control::tokens::Grant;

const DOCS: &str = "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v1}\nspec: {labels: {app: reviews, version: v1}, serviceAccount: reviews, ports: [{port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews}\nspec: {labels: {app: reviews}, serviceAccount: reviews}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: db-vm}\nspec: {labels: {app: db}, address: 192.0.2.10, ports: [{port: 5432}]}\n";

/// The documents, translated once (not per input: that would be most of each run).
fn mesh() -> &'static weft_api::model::Mesh {
    static MESH: std::sync::OnceLock<weft_api::model::Mesh> = std::sync::OnceLock::new();
    MESH.get_or_init(|| {
        let mut loaded = weft_api::resources::Loaded::default();
        weft_api::resources::parse_file("mesh.yaml", DOCS, &mut loaded);
        weft_api::translate::translate(&loaded.documents).mesh
    })
}

/// `data`: one byte choosing the grant and the peer, then a `Subscribe` (protobuf).
pub fn admission(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let Ok(sub) = Subscribe::decode(rest) else { return };
    let mesh = mesh();
    let mut registry = match Registry::load(None) {
        Ok(r) => r,
        Err(e) => panic!("an in-memory registry: {e}"),
    };
    registry.upsert(Instance {
        id: "reviews-v1-0".into(),
        workload: "reviews-v1".into(),
        namespace: "default".into(),
        labels: Default::default(),
        service_account: "reviews".into(),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        app_ports: Default::default(),
        mesh_port: Some(15008),
    });
    let grant = match choice % 5 {
        0 => None,
        1 => Some(Grant::new("reviews-v1", "default", "reviews")),
        2 => Some(Grant::new("reviews", "default", "reviews")),
        3 => Some(Grant::new("db-vm", "default", "")),
        _ => Some(Grant::new("", "default", "reviews")),
    };
    let peer = (choice & 0x80 == 0).then_some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, choice & 0x7f)));
    let Ok(instance) = admit(mesh, &registry, grant.clone(), &sub, peer) else {
        return;
    };
    let Some(grant) = grant else {
        panic!("admitted without a token: {instance:?}")
    };
    assert_eq!(instance.id, sub.instance_id);
    assert_eq!(
        (
            &*instance.workload,
            &*instance.namespace,
            &*instance.service_account
        ),
        (&*grant.workload, &*grant.namespace, &*grant.service_account),
        "the instance is not what the token says"
    );
    assert!(
        instance
            .id
            .strip_prefix(&*grant.workload)
            .is_some_and(|r| r.is_empty() || r.starts_with(['-', '.'])),
        "{} is not named after {}",
        instance.id,
        grant.workload
    );
    assert!(
        !(grant.workload == "reviews" && instance.id.starts_with("reviews-v1")),
        "a shorter workload name took a longer one's id: {}",
        instance.id
    );
    match mesh.workloads.iter().find(|w| w.name == grant.workload) {
        Some(doc) => {
            assert_eq!(instance.labels, doc.labels, "labels come from the document");
            if let Some(address) = doc.address {
                assert_eq!(instance.ip, address, "a declared address wins");
                return;
            }
        }
        None => assert!(instance.labels.is_empty(), "labels without a document"),
    }
    assert_eq!(Some(instance.ip), peer, "the address is the peer's");
}
