//! Compiles `proto/weft/discovery.proto` with protox (pure Rust: no `protoc` on the machine) and
//! generates the prost messages and tonic stubs into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/discovery.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Transport-free stubs: the crates that dial or serve pick tonic's transport features.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
