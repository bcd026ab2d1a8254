//! Compiles `proto/*.proto` with protox (a protobuf compiler in Rust), so building
//! Flotilla never needs a system protoc; tonic generates the gRPC services.

fn main() {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
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
