//! Compiles the descriptor set served by gRPC reflection.
//!
//! No proto text is copied into this repository: envoy-types ships Envoy's .proto files, and
//! protox (a protobuf compiler written in Rust, so no protoc is needed) compiles our
//! `proto/session_authz/v1/reflection.proto`, which only imports
//! `envoy/service/auth/v3/external_auth.proto`, with all its dependencies.
//!
//! Finding envoy-types' folder must not touch the network: an offline or sandboxed build may have
//! on disk only the crates the build itself needs, for one platform. So, never downloading:
//! 1. `cargo metadata --offline --filter-platform <target>`: cargo's own answer, right for
//!    vendored sources and path, git or `[patch]` overrides too. It needs every package of this
//!    platform's graph on disk, dev-dependencies included, as `cargo fetch --target` leaves them;
//!    a plain `cargo build` downloads no dev-dependencies, so then it fails and we go on to
//! 2. the envoy-types version Cargo.lock pins, in `$CARGO_HOME/registry/src/*/`, where cargo
//!    unpacked it for this very build (it unpacks every package a build uses before compiling).

use std::error::Error;
use std::path::{Path, PathBuf};

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

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=Cargo.lock");

    let envoy_types_root = envoy_types_root(&manifest_dir)?;
    let mut includes = vec![manifest_dir.join("proto")];
    includes.extend(
        ENVOY_TYPES_INCLUDES
            .iter()
            .map(|dir| envoy_types_root.join(dir)),
    );

    let mut compiler = protox::Compiler::new(includes)?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file(ROOT_PROTO)?;
    let descriptors = compiler.file_descriptor_set();

    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("session_authz_descriptor.bin");
    std::fs::write(out, descriptors.encode_to_vec())?;
    Ok(())
}

/// The folder of the envoy-types package this build compiles, found without the network.
fn envoy_types_root(manifest_dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let metadata_error = match from_cargo_metadata(manifest_dir) {
        Ok(root) => return Ok(root),
        Err(error) => error,
    };
    from_registry_src(manifest_dir).map_err(|registry_error| {
        format!(
            "cannot find envoy-types' .proto files without the network\n\
             - cargo metadata --offline: {metadata_error}\n\
             - Cargo.lock and $CARGO_HOME/registry/src: {registry_error}\n\
             (`cargo fetch --locked` before an offline build makes the first one work)"
        )
        .into()
    })
}

fn from_cargo_metadata(manifest_dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    // Only the platforms of this build: the full graph would need every platform's crates.
    // Build-dependencies run on the host, so a cross build filters for both.
    let target = std::env::var("TARGET")?;
    let host = std::env::var("HOST")?;
    let mut options = vec!["--offline", "--locked", "--filter-platform", &target];
    if host != target {
        options.extend(["--filter-platform", &host]);
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(manifest_dir.join("Cargo.toml"))
        .other_options(options.into_iter().map(String::from).collect::<Vec<_>>())
        .exec()?;
    let envoy_types = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "envoy-types")
        .ok_or("envoy-types is not among the resolved packages")?;
    let root = envoy_types
        .manifest_path
        .parent()
        .ok_or("envoy-types manifest has no parent folder")?;
    Ok(root.into())
}

fn from_registry_src(manifest_dir: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let lock: toml::Table = std::fs::read_to_string(manifest_dir.join("Cargo.lock"))?.parse()?;
    let package = lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some("envoy-types"))
        .ok_or("Cargo.lock has no envoy-types")?;
    let field = |key: &str| package.get(key).and_then(|v| v.as_str()).unwrap_or("");
    // A path or git envoy-types is not under registry/src; cargo metadata is the way for those.
    let source = field("source");
    if !(source.starts_with("registry+") || source.starts_with("sparse+")) {
        return Err(format!("Cargo.lock's envoy-types is not from a registry ({source:?})").into());
    }
    let folder_name = format!("envoy-types-{}", field("version"));

    // One folder per registry index, and crates.io can have several: the folder's name has
    // changed across cargo versions. A published version never changes, so any holds the same
    // files.
    let src = home::cargo_home()?.join("registry").join("src");
    let mut registries = std::fs::read_dir(&src)
        .map_err(|e| format!("{}: {e}", src.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    registries.sort();
    registries
        .into_iter()
        .map(|registry| registry.join(&folder_name))
        .find(|root| root.join("Cargo.toml").is_file())
        .ok_or_else(|| format!("no {folder_name} in {}", src.display()).into())
}
