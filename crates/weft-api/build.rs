//! Compiles `proto/weft/{discovery,identity}.proto` with protox (pure Rust: no `protoc` on the
//! machine) and generates the prost messages and tonic stubs into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/weft/discovery.proto", "proto/weft/identity.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Transport-free stubs: the crates that dial or serve pick tonic's transport features.
        .build_transport(false)
        // Resource bodies as `bytes::Bytes`: the control plane renders a shared resource once and
        // every push that carries it shares those bytes instead of copying them.
        .bytes(".weft.discovery.v1.Resource.body")
        // Small per-stream buffers: the control plane holds one stream per proxy.
        .codec_path("crate::proto::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
