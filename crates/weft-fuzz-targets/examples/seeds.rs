//! Writes the generated part of the seed corpus: inputs as real peers send them.
//!
//!     cargo run -p weft-fuzz-targets --example seeds -- fuzz/corpus
//!
//! A ClientHello as rustls writes it, a discovery stream as the control plane renders it from a
//! real proxy config, CSRs as a proxy makes them. (Hand-written HTTP heads, the examples' YAML
//! and the openssl captures are committed as files.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use weft_api::discovery::{assemble, resources_of, split, state_version};
use weft_api::proto::DiscoveryResponse;
use weft_api::proxy_config::ProxyConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::args().nth(1).ok_or("usage: seeds CORPUS_DIR")?);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");

    // detect: a seed byte (0: one piece; else the cut), then a real ClientHello.
    for (name, alpn) in [
        ("mesh", &[&b"weft-mesh/1"[..], b"h2"][..]),
        ("h2", &[b"h2", b"http/1.1"]),
        ("none", &[]),
    ] {
        let hello = client_hello(alpn)?;
        write(
            &root,
            "detect",
            &format!("seed-rustls-hello-{name}"),
            &[&[0], &hello[..]].concat(),
        )?;
        if name == "mesh" {
            write(
                &root,
                "detect",
                "seed-rustls-hello-cut",
                &[&[7], &hello[..]].concat(),
            )?;
        }
    }

    // discovery: the full state of the example sidecar's config, in one message and in parts,
    // then a delta that changes one resource and removes another.
    let text = std::fs::read_to_string(repo.join("examples/proxy/sidecar.yaml"))?;
    let config = ProxyConfig::from_yaml("sidecar.yaml", &text)?;
    let rendered = resources_of(&config)?;
    let full = DiscoveryResponse {
        version: state_version(rendered.iter().map(|r| (&r.key, r.version))),
        nonce: "1".into(),
        resources: rendered.iter().map(|r| r.to_proto()).collect(),
        removed: Vec::new(),
        full_state: true,
        more: false,
    };
    write(
        &root,
        "discovery",
        "seed-full-state",
        &full.encode_length_delimited_to_vec(),
    )?;
    let mut parts = Vec::new();
    for part in split(full.clone(), 200) {
        part.encode_length_delimited(&mut parts)?;
    }
    write(&root, "discovery", "seed-full-state-in-parts", &parts)?;
    let mut changed = config.clone();
    changed.workload.labels.insert("version".into(), "v2".into());
    changed.inbound.listeners.clear();
    let next = resources_of(&changed)?;
    let removed: Vec<_> = rendered
        .iter()
        .filter(|r| !next.iter().any(|n| n.key == r.key))
        .map(|r| r.key.to_proto())
        .collect();
    let delta = DiscoveryResponse {
        version: state_version(next.iter().map(|r| (&r.key, r.version))),
        nonce: "2".into(),
        resources: next
            .iter()
            .filter(|n| !rendered.contains(n))
            .map(|r| r.to_proto())
            .collect(),
        removed,
        full_state: false,
        more: false,
    };
    let stream = [
        full.encode_length_delimited_to_vec(),
        delta.encode_length_delimited_to_vec(),
    ]
    .concat();
    write(&root, "discovery", "seed-full-state-then-delta", &stream)?;
    // Seeds the proxy accepts, so the fuzzer starts from the far side of every check.
    let (held, _) = assemble(None, &full)?;
    let (_, applied) = assemble(Some(&held), &delta)?;
    assert!(applied.inbound.listeners.is_empty());

    // proxy_config: the example as JSON too (YAML's files are committed as they are).
    write(
        &root,
        "proxy_config",
        "seed-sidecar.json",
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;

    // proxy_config and discovery: the example sidecar with the Bookinfo services as the control
    // plane compiles them under each routing variant (faults, weights, retry budgets...).
    let bookinfo = repo.join("examples/bookinfo");
    for variant in [
        "fault-delay",
        "fault-abort",
        "80-20",
        "linkerd-profiles",
        "gateway-api-80-20",
    ] {
        let loaded = weft_api::resources::load_paths_excluding(
            &[bookinfo.clone(), bookinfo.join("routing").join(variant)],
            &[bookinfo.join("routing")],
        );
        let translated = weft_api::translate::translate(&loaded.documents);
        let mut registry = weft_control::registry::Registry::default();
        let shared = weft_control::compile::compile_services(&translated.mesh, &mut registry);
        let mut compiled = config.clone();
        compiled.services = shared.services.iter().map(|s| s.service.clone()).collect();
        compiled.endpoints = shared.services.iter().flat_map(|s| s.endpoints.clone()).collect();
        compiled.outbound.ports.clear();
        let problems = compiled.validate();
        assert!(problems.is_empty(), "{variant}: {problems:?}");
        let name = format!("seed-bookinfo-{variant}.json");
        write(
            &root,
            "proxy_config",
            &name,
            serde_json::to_string_pretty(&compiled)?.as_bytes(),
        )?;
        let rendered = resources_of(&compiled)?;
        let push = DiscoveryResponse {
            version: state_version(rendered.iter().map(|r| (&r.key, r.version))),
            nonce: variant.into(),
            resources: rendered.iter().map(|r| r.to_proto()).collect(),
            removed: Vec::new(),
            full_state: true,
            more: false,
        };
        assemble(None, &push)?;
        write(
            &root,
            "discovery",
            &format!("seed-bookinfo-{variant}"),
            &push.encode_length_delimited_to_vec(),
        )?;
    }

    // csr: what a proxy sends (P-256), one asking for more than it may have, one not P-256.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let plain = rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?;
    write(&root, "csr", "seed-p256.pem", plain.pem()?.as_bytes())?;
    write(&root, "csr", "seed-p256.der", plain.der())?;
    let mut greedy = rcgen::CertificateParams::new(vec!["admin.example.com".to_string()])?;
    greedy.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin".try_into()?,
    ));
    greedy.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    write(
        &root,
        "csr",
        "seed-greedy-p256.pem",
        greedy.serialize_request(&key)?.pem()?.as_bytes(),
    )?;
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let other = rcgen::CertificateParams::new(Vec::<String>::new())?.serialize_request(&ed)?;
    write(&root, "csr", "seed-ed25519.pem", other.pem()?.as_bytes())?;

    // admission: a choice byte (grant and peer), then a Subscribe as a proxy sends it, and as
    // one claiming what is not its own.
    use weft_api::proto::Subscribe;
    let honest = Subscribe {
        instance_id: "reviews-v1-1".into(),
        token: "t".into(),
        mesh_port: 15008,
        app_ports: [(9080, 19080)].into(),
        ..Subscribe::default()
    };
    let squat = Subscribe {
        instance_id: "reviews-v1-7".into(),
        ..honest.clone()
    };
    let liar = Subscribe {
        workload: "reviews-v1".into(),
        labels: [("app".into(), "db".into())].into(),
        ip: "192.0.2.10".into(),
        ..honest.clone()
    };
    for (name, choice, sub) in [
        ("seed-honest", 1u8, &honest),
        ("seed-squat-shorter-name", 2, &squat),
        (
            "seed-held-id",
            1,
            &Subscribe {
                instance_id: "reviews-v1-0".into(),
                ..honest.clone()
            },
        ),
        ("seed-claims", 3, &liar),
        ("seed-no-peer", 0x81, &honest),
    ] {
        let mut bytes = vec![choice];
        bytes.extend(sub.encode_to_vec());
        write(&root, "admission", name, &bytes)?;
    }
    Ok(())
}

/// A ClientHello as rustls sends it, offering `alpn`.
fn client_hello(alpn: &[&[u8]]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("reviews.default.svc.cluster.local")?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut out = Vec::new();
    conn.write_tls(&mut out)?;
    Ok(out)
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)
}
