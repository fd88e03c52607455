//! `discovery`: the messages of the discovery stream, decoded, and a proxy applying the pushes
//! they make (reassembly of parts, `assemble` of resources into a validated config).

use prost::Message;
use weft_api::discovery::{
    assemble, content_hash, resources_of, split, state_version, version_string, Held, Reassembly,
    ResourceError,
};
use weft_api::proto::{DiscoveryRequest, DiscoveryResponse};

/// `data`: length-delimited `DiscoveryResponse`s as a proxy receives them (one stream); the
/// same bytes are also read as one `DiscoveryRequest`, what the control plane receives.
pub fn discovery(data: &[u8]) {
    let _ = DiscoveryRequest::decode(data);

    let mut rest = data;
    let mut parts = Reassembly::default();
    let mut held: Option<Held> = None;
    while !rest.is_empty() {
        let Ok(message) = DiscoveryResponse::decode_length_delimited(&mut rest) else {
            break;
        };
        splits_and_reassembles(&message);
        if let Some(push) = parts.add(message) {
            apply(&mut held, push);
        }
    }
}

/// Applies one push as the proxy does, keeping what it had when the push is refused. A push
/// the fuzzer made is almost never consistent (each body must hash to its version, the push's
/// version must hash every key): when it is refused, the same push with its versions made right
/// is tried too, so the parsing and validation behind those checks are reached.
fn apply(held: &mut Option<Held>, push: DiscoveryResponse) {
    if let Ok(next) = assembled(held.as_ref(), &push) {
        *held = Some(next);
        return;
    }
    let mut fixed = push;
    for r in &mut fixed.resources {
        r.version = version_string(content_hash(&r.body));
    }
    match assemble(held.as_ref(), &fixed) {
        Err(ResourceError::VersionMismatch { assembled: v, .. }) => fixed.version = v,
        _ => return,
    }
    if let Ok(next) = assembled(held.as_ref(), &fixed) {
        *held = Some(next);
    }
}

/// `assemble`, and what holds when it accepts.
fn assembled(held: Option<&Held>, push: &DiscoveryResponse) -> Result<Held, ResourceError> {
    let (next, config) = assemble(held, push)?;
    assert_eq!(
        next.version(),
        push.version,
        "accepted at the version it was pushed"
    );
    assert!(config.validate().is_empty(), "accepted, so valid");
    // What a control plane renders from the accepted config is accepted in turn, as the same
    // config: the proxy and the control plane read resources alike.
    let rendered = match resources_of(&config) {
        Ok(r) => r,
        Err(e) => panic!("an accepted config renders: {e}"),
    };
    let again = DiscoveryResponse {
        version: state_version(rendered.iter().map(|r| (&r.key, r.version))),
        nonce: "again".into(),
        resources: rendered.iter().map(|r| r.to_proto()).collect(),
        removed: Vec::new(),
        full_state: true,
        more: false,
    };
    match assemble(None, &again) {
        Ok((_, config_again)) => assert!(config_again == config, "rendered and read back differently"),
        Err(e) => panic!("the accepted config, rendered, is refused: {e}"),
    }
    Ok(next)
}

/// A push split into parts for sending comes back whole from the receiver's reassembly.
fn splits_and_reassembles(message: &DiscoveryResponse) {
    let whole = DiscoveryResponse {
        more: false,
        ..message.clone()
    };
    let mut parts = Reassembly::default();
    let mut out = None;
    for (i, part) in split(whole.clone(), 64).enumerate() {
        assert!(out.is_none(), "a part after the last");
        assert!(i <= whole.resources.len(), "more parts than resources");
        out = parts.add(part);
    }
    assert!(out == Some(whole), "reassembled differently");
}
