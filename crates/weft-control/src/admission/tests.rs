use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const DOCS: &str = "apiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: reviews-v1}\nspec: {labels: {app: reviews, version: v1}, serviceAccount: reviews, ports: [{port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: ratings-v1}\nspec: {labels: {app: ratings, version: v1}, serviceAccount: ratings, ports: [{port: 9080}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Workload\nmetadata: {name: db-vm}\nspec: {labels: {app: db}, address: 192.0.2.10, ports: [{port: 5432}]}\n";

fn mesh() -> Mesh {
    let mut loaded = weft_api::resources::Loaded::default();
    weft_api::resources::parse_file("mesh.yaml", DOCS, &mut loaded);
    weft_api::translate::translate(&loaded.documents).mesh
}

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

fn reviews() -> Grant {
    Grant::new("reviews-v1", "default", "reviews")
}

fn ratings() -> Grant {
    Grant::new("ratings-v1", "default", "ratings")
}

/// What a well-behaved proxy sends: an id, its token, its ports; no claims about itself.
fn plain(id: &str) -> Subscribe {
    Subscribe {
        instance_id: id.into(),
        token: "t".into(),
        mesh_port: 15008,
        app_ports: [(9080, 19080)].into(),
        ..Subscribe::default()
    }
}

fn admit_plain(registry: &Registry, grant: Grant, sub: &Subscribe) -> Result<Instance, AdmitError> {
    admit(&mesh(), registry, Some(grant), sub, Some(PEER))
}

#[test]
fn the_instance_is_what_the_token_and_its_workload_document_say() {
    let registry = Registry::load(None).expect("registry");
    let i = admit_plain(&registry, reviews(), &plain("reviews-v1-0")).expect("admitted");
    assert_eq!(i.id, "reviews-v1-0");
    assert_eq!(
        (i.workload.as_str(), i.namespace.as_str()),
        ("reviews-v1", "default")
    );
    assert_eq!(i.service_account, "reviews");
    assert_eq!(
        i.labels,
        [
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v1".to_string())
        ]
        .into()
    );
    assert_eq!(i.ip, PEER, "the address is the connection's peer");
    assert_eq!(i.app_ports, [(9080, 19080)].into());
    assert_eq!(i.mesh_port, Some(15008));
    // Claims that agree are fine.
    let mut agreeing = plain("reviews-v1-0");
    agreeing.workload = "reviews-v1".into();
    agreeing.namespace = "default".into();
    agreeing.service_account = "reviews".into();
    agreeing.labels = [("app".into(), "reviews".into()), ("version".into(), "v1".into())].into();
    agreeing.ip = "10.0.0.7".into();
    assert_eq!(admit_plain(&registry, reviews(), &agreeing), Ok(i));
}

#[test]
fn a_token_without_a_document_gets_no_labels() {
    let registry = Registry::load(None).expect("registry");
    let i = admit_plain(
        &registry,
        Grant::new("details-v1", "default", ""),
        &plain("details-v1-0"),
    )
    .expect("admitted");
    assert!(i.labels.is_empty());
    assert_eq!(i.service_account, "default");
}

#[test]
fn claims_beyond_the_token_are_refused_by_name() {
    let registry = Registry::load(None).expect("registry");
    let with = |f: &dyn Fn(&mut Subscribe)| {
        let mut s = plain("ratings-v1-0");
        f(&mut s);
        admit_plain(&registry, ratings(), &s)
    };
    let e = with(&|s| s.workload = "reviews-v1".into()).expect_err("workload");
    assert_eq!(
        e,
        AdmitError::Contradicts {
            field: "workload",
            bound: "ratings-v1".into(),
            claimed: "reviews-v1".into()
        }
    );
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = with(&|s| s.namespace = "shop".into()).expect_err("namespace");
    assert!(
        matches!(
            e,
            AdmitError::Contradicts {
                field: "namespace",
                ..
            }
        ),
        "{e}"
    );
    let e = with(&|s| s.service_account = "reviews".into()).expect_err("sa");
    assert!(
        matches!(
            e,
            AdmitError::Contradicts {
                field: "service account",
                ..
            }
        ),
        "{e}"
    );
    let e = with(&|s| s.labels = [("app".into(), "reviews".into())].into()).expect_err("labels");
    assert_eq!(
        e.to_string(),
        "the Workload document default/ratings-v1 has labels {app=ratings,version=v1}, but the subscription claims {app=reviews}; labels come from the document"
    );
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = with(&|s| s.ip = "10.9.9.9".into()).expect_err("ip");
    assert_eq!(
        e,
        AdmitError::Address {
            claimed: "10.9.9.9".into(),
            address: PEER,
            via: AddressSource::Peer,
        }
    );
    assert_eq!(
        e.to_string(),
        "the subscription claims address \"10.9.9.9\", but it connects from 10.0.0.7"
    );
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = with(&|s| s.ip = "not-an-ip".into()).expect_err("bad ip");
    assert!(matches!(e, AdmitError::Address { .. }), "{e}");
}

#[test]
fn wrong_unbound_and_missing_tokens() {
    let registry = Registry::load(None).expect("registry");
    let e = admit(&mesh(), &registry, None, &plain("reviews-v1-0"), Some(PEER)).expect_err("no token");
    assert_eq!(
        (e.clone(), e.code()),
        (AdmitError::UnknownToken, tonic::Code::Unauthenticated)
    );
    let old = Grant {
        workload: String::new(),
        namespace: "default".into(),
        service_account: "reviews".into(),
        expires_at: None,
    };
    let e = admit_plain(&registry, old, &plain("reviews-v1-0")).expect_err("unbound");
    assert_eq!(e, AdmitError::Unbound);
    assert!(e.to_string().contains("weft token create --workload"), "{e}");
    let e = admit_plain(&registry, reviews(), &plain("")).expect_err("no id");
    assert_eq!(e, AdmitError::NoInstanceId);
    let e = admit(&mesh(), &registry, Some(reviews()), &plain("reviews-v1-0"), None).expect_err("no peer");
    assert_eq!(e, AdmitError::NoAddress);
}

#[test]
fn a_token_for_another_service_account_than_the_document_is_refused() {
    let registry = Registry::load(None).expect("registry");
    let e = admit_plain(
        &registry,
        Grant::new("reviews-v1", "default", "ratings"),
        &plain("reviews-v1-0"),
    )
    .expect_err("sa");
    assert_eq!(
        e,
        AdmitError::ServiceAccount {
            namespace: "default".into(),
            workload: "reviews-v1".into(),
            document: "reviews".into(),
            token: "ratings".into()
        }
    );
}

#[test]
fn an_instance_id_of_another_workload_cannot_be_taken() {
    let mut registry = Registry::load(None).expect("registry");
    let real = admit_plain(&registry, reviews(), &plain("reviews-v1-0")).expect("admitted");
    registry.upsert(real.clone());
    // A ratings token claiming reviews' instance id: not named after ratings-v1.
    let e = admit_plain(&registry, ratings(), &plain("reviews-v1-0")).expect_err("taken");
    assert_eq!(
        e,
        AdmitError::InstanceName {
            id: "reviews-v1-0".into(),
            workload: "ratings-v1".into()
        }
    );
    // A workload of the same name in another namespace: named after it, but the id is held.
    let e = admit_plain(
        &registry,
        Grant::new("reviews-v1", "other", "reviews"),
        &plain("reviews-v1-0"),
    )
    .expect_err("held");
    assert_eq!(
        e,
        AdmitError::InstanceOwned {
            id: "reviews-v1-0".into(),
            owner: "default/reviews-v1".into()
        }
    );
    assert_eq!(registry.instance("reviews-v1-0"), Some(&real));
    // The real workload reconnecting (from elsewhere, say) gets it.
    let again = admit(
        &mesh(),
        &registry,
        Some(reviews()),
        &plain("reviews-v1-0"),
        Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    )
    .expect("its own id");
    assert_eq!(again.ip, IpAddr::V6(Ipv6Addr::LOCALHOST));
    // An IPv4 peer seen as IPv4-mapped IPv6 is the IPv4 address.
    let mapped = Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped();
    let mut claimed = plain("reviews-v1-1");
    claimed.ip = "10.0.0.7".into();
    let i = admit(
        &mesh(),
        &registry,
        Some(reviews()),
        &claimed,
        Some(IpAddr::V6(mapped)),
    )
    .expect("mapped");
    assert_eq!(i.ip, PEER);
}

#[test]
fn a_workload_that_declares_its_address_is_reached_there_whatever_the_peer() {
    let registry = Registry::load(None).expect("registry");
    let vm = Grant::new("db-vm", "default", "");
    let declared: IpAddr = "192.0.2.10".parse().expect("ip");
    let i = admit_plain(&registry, vm.clone(), &plain("db-vm-0")).expect("admitted");
    assert_eq!(i.ip, declared, "not the peer {PEER}");
    let mut agreeing = plain("db-vm-0");
    agreeing.ip = "192.0.2.10".into();
    assert_eq!(
        admit_plain(&registry, vm.clone(), &agreeing).map(|i| i.ip),
        Ok(declared)
    );
    let mut peer_claim = plain("db-vm-0");
    peer_claim.ip = PEER.to_string();
    let e = admit_plain(&registry, vm, &peer_claim).expect_err("not the declared address");
    assert_eq!(
        e.to_string(),
        "the subscription claims address \"10.0.0.7\", but its Workload document declares 192.0.2.10"
    );
}

#[test]
fn an_id_not_yet_held_cannot_be_squatted_by_another_workload() {
    let registry = Registry::load(None).expect("registry");
    // Unheld ids of reviews' replicas: ratings' token may not take them before they start.
    for id in ["reviews-v1-3", "reviews-v1", "reviews-v1.default"] {
        let e = admit_plain(&registry, ratings(), &plain(id)).expect_err(id);
        assert!(matches!(e, AdmitError::InstanceName { .. }), "{id}: {e}");
    }
    // A workload whose name prefixes a longer one's does not own that one's ids.
    let short = Grant::new("reviews", "default", "reviews");
    let e = admit_plain(&registry, short.clone(), &plain("reviews-v1-3")).expect_err("longer owner");
    assert!(matches!(e, AdmitError::InstanceName { .. }), "{e}");
    admit_plain(&registry, short, &plain("reviews-2")).expect("its own");
    // Names are whole: `ratings-v10` is not named after `ratings-v1`.
    let e = admit_plain(&registry, ratings(), &plain("ratings-v10")).expect_err("not a delimiter");
    assert!(matches!(e, AdmitError::InstanceName { .. }), "{e}");
    for id in ["ratings-v1", "ratings-v1-0", "ratings-v1.default"] {
        admit_plain(&registry, ratings(), &plain(id)).expect(id);
    }
}
