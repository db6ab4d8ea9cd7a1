//! The imports are the architecture (docs/architecture.md, "Layers"): every module of `src/`
//! has a layer, and a module's code (its tests aside) uses only modules of lower layers. So
//! there is no cycle, a pure leaf never reaches the core or a door, and nothing below a door
//! names one. A new module must be given its layer here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use session_authz_testkit::process::root;

/// Lowest first. A module may use only modules of the layers before its own.
const LAYERS: &[&[&str]] = &[
    // Leaves: the request view, the validator contract, the validator's health, timers, the
    // shared accept loop, the log throttle.
    &[
        "request", "contract", "health", "timers", "listener", "throttle",
    ],
    // Pure rules over a request or an identity.
    &["credential", "policy", "signin"],
    &["csrf", "decision"],
    // Verdicts, what operators see, the signed identity assertion.
    &["cache", "validator", "telemetry", "assertion"],
    &["metrics", "probe"],
    // The core, and revoking what it cached.
    &["authorize", "revoke"],
    // The doors: what every door shares, then the gRPC answer's encoding, then each door.
    &["doors"],
    &["doors::answer"],
    &["doors::grpc", "doors::http"],
    // Operating the service (gRPC health names the door's service).
    &["ops"],
    // Every module's settings assembled and validated; the command line built from its keys.
    &["config"],
    &["cli", "reload"],
    // Binding, wiring, serving.
    &["app"],
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layers.rs"))
}

/// The module a file of `src/` is (`src/doors/grpc.rs` → `doors::grpc`, `src/config/keys.rs`
/// → `config`: config's parts are one module to the others).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root().join("src")).ok()?;
    let parts: Vec<&str> = relative
        .iter()
        .map(|part| part.to_str().unwrap().trim_end_matches(".rs"))
        .collect();
    match parts.as_slice() {
        ["lib" | "main"] => None,
        [top] => Some((*top).to_owned()),
        ["doors", "mod"] => Some("doors".to_owned()),
        ["doors", door] => Some(format!("doors::{door}")),
        [top, ..] => Some((*top).to_owned()),
        [] => None,
    }
}

/// The modules of this crate that `code` (of `module`) names.
fn imports(module: &str, code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let named = |path: &str| -> String {
        let mut parts = path.split("::");
        let top = parts.next().unwrap_or_default().to_owned();
        match (top.as_str(), parts.next()) {
            ("doors", Some(door @ ("grpc" | "http" | "answer"))) => format!("doors::{door}"),
            _ => top,
        }
    };
    for (at, _) in code.match_indices("crate::") {
        let path: String = code[at + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        found.insert(named(&path));
    }
    // Within the doors, `super::` is the doors' own module or a sibling door.
    if let Some(door) = module.strip_prefix("doors::") {
        for (at, _) in code.match_indices("super::") {
            let path: String = code[at + "super::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let sibling = path.split("::").next().unwrap_or_default();
            if ["grpc", "http", "answer"].contains(&sibling) && sibling != door {
                found.insert(format!("doors::{sibling}"));
            } else {
                found.insert("doors".to_owned());
            }
        }
    }
    found.remove(module);
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        seen.insert(module.clone());
        let text = std::fs::read_to_string(file).unwrap();
        // A module's own tests may use what they need to drive it; a comment's link is no use.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for imported in imports(&module, &code) {
            if layer(&imported) >= layer(&module) {
                problems.push(format!(
                    "{}: {module} (layer {}) uses {imported} (layer {})",
                    file.strip_prefix(root()).unwrap().display(),
                    layer(&module),
                    layer(&imported)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // Every layer's module exists: the table is the tree, not a wish.
    for module in LAYERS.iter().flat_map(|layer| layer.iter()) {
        assert!(
            seen.contains(*module),
            "{module} is in LAYERS but not in src/"
        );
    }
}

/// The framework crates only a door, the edges that bind or call out, or the config may name.
const FRAMEWORKS: &[&str] = &[
    "tonic",
    "axum",
    "hyper",
    "hyper_util",
    "prost",
    "envoy_types",
    "reqwest",
    "figment",
];

/// Below the doors, the one module that may name each framework crate: the validator's HTTP
/// client and the shared accept loop. Every other module there is transport-free.
const FRAMEWORK_EDGES: &[(&str, &[&str])] = &[
    ("validator", &["reqwest"]),
    ("listener", &["axum", "hyper", "hyper_util"]),
];

#[test]
fn nothing_below_a_door_names_a_framework() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        if layer(&module) >= layer("doors") {
            continue;
        }
        let allowed: &[&str] = FRAMEWORK_EDGES
            .iter()
            .find(|(edge, _)| *edge == module)
            .map_or(&[], |(_, crates)| crates);
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for krate in FRAMEWORKS.iter().filter(|k| !allowed.contains(k)) {
                let named = line.match_indices(&format!("{krate}::")).any(|(at, _)| {
                    !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
                });
                if named {
                    problems.push(format!("{module} names {krate}: {}", line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_check_sees_imports() {
    let code = "use crate::authorize::RequestView;\nuse super::answer::Allowed;\nlet x = crate::doors::grpc::SERVICE_NAME;";
    let found: Vec<String> = imports("doors::http", code).into_iter().collect();
    assert_eq!(found, ["authorize", "doors::answer", "doors::grpc"]);
    assert_eq!(layer("doors::grpc"), layer("doors::http"));
    assert!(layer("request") < layer("csrf"));
}
