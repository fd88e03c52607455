//! Rendering a config into resources and assembling it again from pushes.

use super::*;

fn config(endpoint_port: u16, extra_service: bool) -> ProxyConfig {
    let mut services = vec![serde_json::json!({ "name": "reviews", "ports": [{ "port": 9080 }] })];
    let mut endpoints = vec![serde_json::json!({
        "service": "reviews",
        "port": 9080,
        "endpoints": [{ "address": format!("127.0.0.1:{endpoint_port}") }],
    })];
    if extra_service {
        services.push(serde_json::json!({ "name": "ratings", "ports": [{ "port": 9080 }] }));
        endpoints.push(serde_json::json!({ "service": "ratings", "port": 9080, "subset": "v1" }));
        endpoints.push(serde_json::json!({ "service": "ratings", "port": 9080 }));
    }
    serde_json::from_value(serde_json::json!({
        "workload": { "name": "reviews-v1", "labels": { "app": "reviews" } },
        "inbound": { "listeners": [{ "port": 9080, "app": "127.0.0.1:19080" }], "mtls": "STRICT" },
        "services": services,
        "endpoints": endpoints,
    }))
    .expect("test config")
}

/// A push of `resources` and `removed` whose version is that of `after`.
fn push(full: bool, resources: &[Rendered], removed: &[Key], after: &[Rendered]) -> DiscoveryResponse {
    DiscoveryResponse {
        version: state_version(after.iter().map(|r| (&r.key, r.version))),
        nonce: "n".into(),
        resources: resources.iter().map(Rendered::to_proto).collect(),
        removed: removed.iter().map(Key::to_proto).collect(),
        full_state: full,
        more: false,
    }
}

fn full(config: &ProxyConfig) -> (Vec<Rendered>, Held) {
    let resources = resources_of(config).expect("render");
    let (held, _) = assemble(None, &push(true, &resources, &[], &resources)).expect("full state");
    (resources, held)
}

#[test]
fn a_full_state_assembles_the_config_it_was_rendered_from() {
    let original = config(7001, true);
    let resources = resources_of(&original).expect("render");
    let kinds: Vec<_> = resources.iter().map(|r| r.key.to_string()).collect();
    assert_eq!(
        kinds,
        [
            "Workload/workload",
            "InboundListener/9080",
            "Policy/inbound",
            "MeshService/ratings.default.svc.cluster.local",
            "MeshService/reviews.default.svc.cluster.local",
            "EndpointSet/ratings.default.svc.cluster.local:9080",
            "EndpointSet/ratings.default.svc.cluster.local:9080/v1",
            "EndpointSet/reviews.default.svc.cluster.local:9080",
        ]
    );
    let (held, assembled) = assemble(None, &push(true, &resources, &[], &resources)).expect("assembles");
    assert_eq!(held.len(), resources.len());
    // Same parts; services by name, endpoint sets by service then subset (whole service first).
    let mut expected = original.clone();
    expected.services.sort_by_key(MeshService::fqdn);
    expected.endpoints.swap(1, 2);
    expected.endpoints.rotate_left(1);
    assert_eq!(assembled, expected);
    assert_eq!(
        held.version(),
        state_version(resources.iter().map(|r| (&r.key, r.version)))
    );
}

#[test]
fn a_delta_changes_adds_and_removes_only_what_it_names() {
    let (before, held) = full(&config(7001, true));
    let after = resources_of(&config(7002, false)).expect("render");
    let changed: Vec<Rendered> = after
        .iter()
        .filter(|r| !before.iter().any(|b| b.key == r.key && b.version == r.version))
        .cloned()
        .collect();
    assert_eq!(
        changed.iter().map(|r| r.key.to_string()).collect::<Vec<_>>(),
        ["EndpointSet/reviews.default.svc.cluster.local:9080"]
    );
    let removed: Vec<Key> = before
        .iter()
        .filter(|b| !after.iter().any(|r| r.key == b.key))
        .map(|b| b.key.clone())
        .collect();
    assert_eq!(removed.len(), 3, "ratings: its service and two endpoint sets");
    let (next, config) = assemble(Some(&held), &push(false, &changed, &removed, &after)).expect("delta");
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.endpoints[0].endpoints[0].address.port(), 7002);
    assert_eq!(next.len(), after.len());
    // The held state it started from is untouched.
    assert_eq!(held.len(), before.len());
}

#[test]
fn a_delta_that_would_make_the_config_invalid_is_refused_and_changes_nothing() {
    let (before, held) = full(&config(7001, true));
    let version = held.version();
    // Remove the ratings service but keep its endpoint sets: endpoints for no service.
    let mut after = before.clone();
    after.retain(|r| r.key != Key::new(ResourceType::MeshService, "ratings.default.svc.cluster.local"));
    let removed = [Key::new(
        ResourceType::MeshService,
        "ratings.default.svc.cluster.local",
    )];
    let err = assemble(Some(&held), &push(false, &[], &removed, &after)).expect_err("refused");
    assert!(
        matches!(err, ResourceError::InvalidConfig(ref m) if m.contains("ratings")),
        "{err}"
    );
    assert_eq!(held.version(), version);
    assert_eq!(held.config().services.len(), 2);
}

#[test]
fn a_delta_before_any_full_state_is_refused() {
    let resources = resources_of(&config(7001, false)).expect("render");
    let err = assemble(None, &push(false, &resources, &[], &resources)).expect_err("refused");
    assert!(matches!(err, ResourceError::DeltaBeforeFullState), "{err}");
}

#[test]
fn a_full_state_drops_whatever_it_does_not_carry() {
    let (_, held) = full(&config(7001, true));
    let small = resources_of(&config(7001, false)).expect("render");
    let (next, config) = assemble(Some(&held), &push(true, &small, &[], &small)).expect("full");
    assert_eq!(next.len(), small.len());
    assert_eq!(config.services.len(), 1);
}

#[test]
fn a_resource_whose_body_or_name_or_version_does_not_match_is_refused() {
    let (before, held) = full(&config(7001, false));
    // Body altered after rendering: its hash no longer matches its version.
    let mut forged = before[3].clone();
    forged.body = Bytes::from(forged.body.iter().rev().copied().collect::<Vec<u8>>());
    let err = assemble(Some(&held), &push(false, &[forged], &[], &before)).expect_err("refused");
    assert!(err.to_string().contains("does not hash"), "{err}");
    // A body that is another resource than its key names.
    let mut renamed = before[3].clone();
    renamed.key = Key::new(ResourceType::MeshService, "ratings.default.svc.cluster.local");
    let err = assemble(Some(&held), &push(false, &[renamed], &[], &before)).expect_err("refused");
    assert!(err.to_string().contains("not what the key names"), "{err}");
    // A state version that is not what the resources add up to.
    let mut wrong = push(false, &[], &[], &before);
    wrong.version = "0000000000000000".into();
    let err = assemble(Some(&held), &wrong).expect_err("refused");
    assert!(matches!(err, ResourceError::VersionMismatch { .. }), "{err}");
}

#[test]
fn state_versions_are_stable_and_tell_states_apart() {
    assert_eq!(version_string(content_hash(b"")), "cbf29ce484222325");
    let a = Key::new(ResourceType::MeshService, "ab");
    let b = Key::new(ResourceType::MeshService, "a");
    assert_ne!(state_version([(&a, 1)]), state_version([(&a, 2)]));
    assert_ne!(state_version([(&a, 1)]), state_version([(&b, 1)]));
    assert_eq!(state_version([(&a, 1)]), state_version([(&a, 1)]));
}

#[test]
fn a_large_push_travels_in_parts_and_is_whole_again_on_arrival() {
    let resources = resources_of(&config(7001, true)).expect("render");
    let removed = [Key::new(
        ResourceType::MeshService,
        "gone.default.svc.cluster.local",
    )];
    let whole = push(true, &resources, &removed, &resources);
    let parts: Vec<_> = split(whole.clone(), 150).collect();
    assert!(parts.len() > 2, "{} parts", parts.len());
    let (last, rest) = parts.split_last().expect("parts");
    assert!(rest
        .iter()
        .all(|p| p.more && p.removed.is_empty() && p.nonce == whole.nonce));
    assert!(!last.more);
    assert_eq!(last.removed.len(), 1);
    let mut reassembly = Reassembly::default();
    let mut out = None;
    for p in parts {
        assert!(out.is_none(), "whole before the last part");
        out = reassembly.add(p);
    }
    assert_eq!(out, Some(whole.clone()));
    // One small push: one part, as it was.
    assert_eq!(split(whole.clone(), usize::MAX).collect::<Vec<_>>(), [whole]);
}
