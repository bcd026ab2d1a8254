//! Compiles `proto/*.proto` with protox (a protobuf compiler in Rust), so building
//! Flotilla never needs a system protoc.

fn main() {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["metapb.proto", "raft_serverpb.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let descriptors = protox::compile(files, [&proto_dir]).expect("proto files compile");
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)
        .expect("prost code generation");
}
