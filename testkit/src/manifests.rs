//! The deployment files under deploy/ read as JSON values (YAML through the PyYAML that comes with
//! the pinned yamllint), a few accessors that fail with the missing name, and session-authz's
//! own reading of a manifest's settings (`--check-config`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::{root, run, session_authz};

/// Every YAML document in `text`, as JSON (empty documents dropped).
pub fn yaml_to_json(text: &str) -> Vec<Value> {
    let python = root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run scripts/install-tools.sh",
        python.display()
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; \
             print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "YAML does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// The documents of a YAML file, by its path from the repository's root.
pub fn yaml_file(rel: &str) -> Vec<Value> {
    let path = root().join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    yaml_to_json(&text)
}

/// The YAML files directly in a folder (path from the repository's root), sorted.
pub fn yaml_files_under(rel: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(rel))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML under {rel}");
    files
}

/// Every YAML file in the folders of deploy/, by its path from the repository's root.
pub fn deploy_yaml_files() -> Vec<String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("deploy"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .flat_map(|d| yaml_files_under(d.strip_prefix(root()).unwrap().to_str().unwrap()))
        .map(|f| f.strip_prefix(root()).unwrap().to_str().unwrap().to_owned())
        .collect()
}

/// The object of this kind and name.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn s(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

pub fn arr(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
}

/// A Pod spec's container by name.
pub fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    arr(&pod["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A container's plain `env` values (no valueFrom expected in these manifests).
pub fn env_of(container: &Value) -> Vec<(String, String)> {
    arr(&container["env"])
        .iter()
        .map(|e| (s(&e["name"]).to_owned(), s(&e["value"]).to_owned()))
        .collect()
}

pub fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// A named or numbered container port of the pod, as a number.
pub fn resolve_port(pod: &Value, port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = s(port);
    arr(&pod["containers"])
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

pub fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

/// session-authz's effective configuration (`--check-config`) under exactly this environment
/// and, if given, this TOML file in place of `SESSION_AUTHZ_CONFIG`'s path.
pub fn effective_config(env: &[(String, String)], toml_file: Option<&str>) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(session_authz());
    command.arg("--check-config").env_clear();
    for (name, value) in env {
        if name == "SESSION_AUTHZ_CONFIG" {
            let path = dir.path().join("session-authz.toml");
            std::fs::write(
                &path,
                toml_file.expect("a TOML file for SESSION_AUTHZ_CONFIG"),
            )
            .unwrap();
            command.env(name, path);
        } else {
            command.env(name, value);
        }
    }
    run(&mut command).parse().unwrap()
}

pub fn config_str<'a>(config: &'a toml::Table, key: &str) -> &'a str {
    config[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

/// The standalone Deployment's effective configuration: the TOML from the ConfigMap mounted
/// where SESSION_AUTHZ_CONFIG says, under the container's environment.
pub fn standalone_config(docs: &[Value]) -> toml::Table {
    let deployment = find(docs, "Deployment", "session-authz");
    let env = env_of(container(
        &deployment["spec"]["template"]["spec"],
        "session-authz",
    ));
    effective_config(&env, Some(standalone_toml(docs)))
}

/// The TOML the standalone Deployment mounts where SESSION_AUTHZ_CONFIG says.
pub fn standalone_toml(docs: &[Value]) -> &str {
    let deployment = find(docs, "Deployment", "session-authz");
    let pod = &deployment["spec"]["template"]["spec"];
    let authz = container(pod, "session-authz");
    let env = env_of(authz);
    let config_path = env_value(&env, "SESSION_AUTHZ_CONFIG");
    let (dir, key) = config_path.rsplit_once('/').unwrap();
    let mount = arr(&authz["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("the config mounted");
    assert_eq!(mount["readOnly"], true);
    let volume = arr(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let config_map = find(docs, "ConfigMap", s(&volume["configMap"]["name"]));
    s(&config_map["data"][key])
}
