//! Compiles the descriptor set served by gRPC reflection.
//!
//! No proto text is copied into this repository: envoy-types ships Envoy's
//! .proto files, `cargo metadata` tells where that package lives, and protox
//! (a protobuf compiler written in Rust, so no protoc is needed) compiles our
//! `proto/session_authz/v1/reflection.proto`, which only imports
//! `envoy/service/auth/v3/external_auth.proto`, with all its dependencies.

use std::path::PathBuf;

use prost::Message;

const ROOT_PROTO: &str = "session_authz/v1/reflection.proto";

/// Folders inside the envoy-types package that hold the imported .proto files.
const ENVOY_TYPES_INCLUDES: &[&str] = &[
    "proto/data-plane-api",
    "proto/xds",
    "proto/googleapis",
    "proto/protoc-gen-validate",
    "proto/cel-spec/proto",
    "proto/opentelemetry-proto",
    "proto/client_model",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=Cargo.lock");

    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(manifest_dir.join("Cargo.toml"))
        .exec()?;
    let envoy_types = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "envoy-types")
        .ok_or("envoy-types is not among the resolved packages")?;
    let envoy_types_root = envoy_types
        .manifest_path
        .parent()
        .ok_or("envoy-types manifest has no parent folder")?;

    let mut includes = vec![manifest_dir.join("proto")];
    includes.extend(
        ENVOY_TYPES_INCLUDES
            .iter()
            .map(|dir| envoy_types_root.join(dir).into_std_path_buf()),
    );

    let mut compiler = protox::Compiler::new(includes)?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(ROOT_PROTO)?;
    let descriptors = compiler.file_descriptor_set();

    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("session_authz_descriptor.bin");
    std::fs::write(out, descriptors.encode_to_vec())?;
    Ok(())
}
