//! Compiles `proto/*.proto` with protox (a protobuf compiler in Rust), so building
//! Flotilla never needs a system protoc; tonic generates the gRPC services.

fn main() {
    // Read at run time, not baked in with `env!`: a build script compiled for one checkout
    // is reused from a shared CARGO_TARGET_DIR by another (.ci/run's cache), and the first
    // checkout may be gone by then.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        "metapb.proto",
        "raft_serverpb.proto",
        "kvpb.proto",
        "metaservicepb.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let descriptors = protox::compile(files, [&proto_dir]).expect("proto files compile");
    let mut config = tonic_prost_build::Config::new();
    config.bytes(["."]);
    tonic_prost_build::configure()
        .compile_fds_with_config(descriptors, config)
        .expect("prost and tonic code generation");
}
