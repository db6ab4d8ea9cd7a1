//! The deployment files under deploy/ read as JSON values (YAML through the PyYAML that comes with
//! the pinned yamllint), a few accessors that fail with the missing name, session-authz's own
//! reading of a manifest's settings (`--check-config`), the checks every Pod spec here must pass
//! (hardening, shutdown timing, budgets, NetworkPolicy peers), and the offline validators:
//! kubernetes-validate for Kubernetes' own kinds, scripts/validate-crds.mjs for Gateway API,
//! Envoy Gateway and Prometheus Operator kinds, and Helm's SDK (scripts/helm_sdk.py) for the chart.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::process::{root, run, session_authz, tool};

/// Kubernetes versions whose schemas the manifests must pass: the oldest we claim (native
/// `preStop: sleep` is on by default from 1.30) and a current one.
pub const K8S_VERSIONS: &[&str] = &["1.30.0", "1.34.0"];

/// Istio's merged-metrics port: with metrics merging (Istio's default) the injector points a
/// Pod's prometheus.io annotations at its agent here, which scrapes the app's own port itself.
pub const ISTIO_MERGED_METRICS_PORT: u64 = 15020;

/// What a Pod's terminationGracePeriodSeconds keeps beyond the longest stop it may take.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// session-authz's drain_delay when nothing sets it.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

/// API groups of custom resources: kubernetes-validate has no schema for them.
const CUSTOM_GROUPS: &[&str] = &[
    "istio.io",
    "gateway.networking.k8s.io",
    "gateway.networking.x-k8s.io",
    "gateway.envoyproxy.io",
    "monitoring.coreos.com",
];

/// Whether an object is of a custom resource's kind (Istio, Gateway API, Envoy Gateway,
/// Prometheus Operator) rather than one of Kubernetes' own.
pub fn is_custom_kind(doc: &Value) -> bool {
    let api_version = s(&doc["apiVersion"]);
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    CUSTOM_GROUPS
        .iter()
        .any(|custom| group == *custom || group.ends_with(&format!(".{custom}")))
}

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

/// Every YAML file in the folders of deploy/, by its path from the repository's root; not
/// deploy/helm/, whose chart is templates (tests/deploy_helm.rs renders and checks it).
pub fn deploy_yaml_files() -> Vec<String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("deploy"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("helm"))
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

pub fn port_of(addr: &str) -> u64 {
    addr.parse::<SocketAddr>().unwrap().port().into()
}

/// Whether an address binds every interface of the Pod (IPv4 or IPv6).
pub fn on_pod_ip(addr: &str) -> bool {
    addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:")
}

/// The probes of a container: (kind, probe).
pub fn probes(container: &Value) -> Vec<(&'static str, &Value)> {
    ["livenessProbe", "readinessProbe", "startupProbe"]
        .into_iter()
        .filter(|k| !container[*k].is_null())
        .map(|k| (k, &container[k]))
        .collect()
}

/// The hardening every Pod here must have, in every container.
pub fn assert_hardened(pod: &Value) {
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);
    for c in arr(&pod["containers"]) {
        let name = s(&c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        // Numeric and not root, so runAsNonRoot can verify it whatever the image says.
        assert!(sc["runAsUser"].as_u64().unwrap() > 0, "{name}");
        for key in ["requests", "limits"] {
            assert!(c["resources"][key]["memory"].is_string(), "{name} {key}");
        }
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{name}");
        let image = s(&c["image"]);
        let tag = image.rsplit('/').next().unwrap().split_once(':');
        assert!(
            matches!(tag, Some((_, t)) if t != "latest"),
            "{name}: pin the image tag: {image}"
        );
    }
}

/// Seconds of the longest `preStop: sleep` in the pod.
pub fn longest_pre_stop(pod: &Value) -> u64 {
    arr(&pod["containers"])
        .iter()
        .filter_map(|c| c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64())
        .max()
        .unwrap_or(0)
}

/// session-authz's drain_delay under this environment and TOML. `--check-config` reports it once
/// the binary knows the key; until then, the same precedence by hand: environment, TOML, default.
pub fn drain_delay(
    config: &toml::Table,
    env: &[(String, String)],
    toml_file: Option<&str>,
) -> Duration {
    if let Some(value) = config.get("drain_delay") {
        return duration(value.as_str().unwrap());
    }
    if let Some((_, value)) = env.iter().find(|(n, _)| n == "SESSION_AUTHZ_DRAIN_DELAY") {
        return duration(value);
    }
    let file: Option<toml::Table> = toml_file.map(|text| text.parse().unwrap());
    file.as_ref()
        .and_then(|f| f.get("drain_delay"))
        .map_or(DEFAULT_DRAIN_DELAY, |v| duration(v.as_str().unwrap()))
}

/// A Pod stops in this order: every container's preStop sleep (still serving while the Pod
/// leaves the Service's endpoints), then SIGTERM; session-authz turns NOT_SERVING but answers for
/// drain_delay, closes its listeners and waits up to shutdown_grace for Checks in flight. All of
/// it must end before kubelet's SIGKILL, and an Istio proxy must not stop before it has.
pub fn assert_shutdown_fits(pod_template: &Value, authz_stop: Duration) {
    let pod = &pod_template["spec"];
    let containers = arr(&pod["containers"]);
    // The same sleep everywhere: a container that stopped earlier (Envoy exits at once on
    // SIGTERM) would fail requests the others still accept.
    let pre_stop = longest_pre_stop(pod);
    for c in containers {
        assert_eq!(
            c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64(),
            Some(pre_stop),
            "{}: preStop sleep",
            c["name"]
        );
    }
    let stop = Duration::from_secs(pre_stop) + authz_stop;
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace >= stop + SHUTDOWN_MARGIN,
        "terminationGracePeriodSeconds {grace:?} < preStop {pre_stop} s + session-authz's \
         drain_delay and shutdown_grace ({authz_stop:?}) + {SHUTDOWN_MARGIN:?}"
    );
    if let Some(proxy) = pod_template["metadata"]["annotations"]["proxy.istio.io/config"].as_str() {
        let proxy = yaml_to_json(proxy).remove(0);
        let drain = duration(s(&proxy["terminationDrainDuration"]));
        assert!(
            drain >= stop,
            "Istio's proxy stops after {drain:?}, before the Pod ({stop:?})"
        );
        assert!(drain + SHUTDOWN_MARGIN <= grace, "{drain:?}");
    }
}

/// A PodDisruptionBudget for the Deployment's Pods that leaves at least one up and still lets
/// node drains proceed.
pub fn assert_budgeted(docs: &[Value], deployment: &Value) {
    let pdb = docs
        .iter()
        .find(|d| {
            d["kind"] == "PodDisruptionBudget"
                && d["metadata"]["namespace"] == deployment["metadata"]["namespace"]
                && d["spec"]["selector"]["matchLabels"]
                    == deployment["spec"]["selector"]["matchLabels"]
        })
        .unwrap_or_else(|| {
            panic!(
                "no PodDisruptionBudget for {}",
                deployment["metadata"]["name"]
            )
        });
    let min = pdb["spec"]["minAvailable"].as_u64().unwrap();
    assert!(min >= 1 && min < deployment["spec"]["replicas"].as_u64().unwrap());
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
}

/// Who a NetworkPolicy admits to which port of the pod: (port, peer). Every peer must name a
/// namespace AND pod labels (pod labels alone admit any Pod, in any namespace, that labels
/// itself; a namespace alone, all of it), never an ipBlock or a match expression.
pub fn network_policy_peers(policy: &Value, pod: &Value) -> Vec<(u64, Value)> {
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let mut admitted = Vec::new();
    for rule in arr(&policy["spec"]["ingress"]) {
        let peers = arr(&rule["from"]);
        assert!(!peers.is_empty(), "a rule for anyone: {rule}");
        for peer in peers {
            assert!(peer["ipBlock"].is_null(), "{peer}");
            for key in ["namespaceSelector", "podSelector"] {
                assert!(peer[key]["matchExpressions"].is_null(), "{peer}");
                assert!(
                    peer[key]["matchLabels"]
                        .as_object()
                        .is_some_and(|m| !m.is_empty()),
                    "{key} must name something: {peer}"
                );
            }
        }
        for port in arr(&rule["ports"]) {
            for peer in peers {
                admitted.push((resolve_port(pod, &port["port"]), peer.clone()));
            }
        }
    }
    admitted
}

/// The peers admitted to one port, from `network_policy_peers`.
pub fn peers_of(admitted: &[(u64, Value)], port: u64) -> Vec<&Value> {
    admitted
        .iter()
        .filter(|(p, _)| *p == port)
        .map(|(_, peer)| peer)
        .collect()
}

/// Runs the pinned kubernetes-validate --strict on a file (path from the repository's root, or
/// absolute) of `docs` objects for every version of K8S_VERSIONS: each must pass, none be skipped.
pub fn assert_kubernetes_validates(file: &Path, docs: usize) {
    let mut command = Command::new(tool("kubernetes-validate"));
    command.current_dir(root()).arg("--strict");
    for version in K8S_VERSIONS {
        command.args(["-k", version]);
    }
    let out = run(command.arg(file));
    let file = file.display();
    // It exits 0 with a WARN for a kind it has no schema for: not good enough here.
    assert!(
        !out.contains("WARN") && !out.contains("ERROR"),
        "{file}:\n{out}"
    );
    let passed = out.lines().filter(|l| l.contains(" passed for ")).count();
    assert_eq!(passed, docs * K8S_VERSIONS.len(), "{file}:\n{out}");
}

/// Validates custom resources (Gateway API, Envoy Gateway, Prometheus Operator) with
/// scripts/validate-crds.mjs against the pinned schema packages in .tools/npm: each object's
/// schema and its fields (no unknown key). Panics with the validator's report on any failure.
pub fn assert_custom_kinds_validate(docs: &[Value]) {
    assert!(
        root()
            .join(".tools/npm/node_modules/@kubernetes-models/envoy-gateway")
            .exists(),
        "the schema packages are not in .tools/npm: run scripts/install-tools.sh"
    );
    let mut child = Command::new("node")
        .arg(root().join("scripts/validate-crds.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (installed by scripts/install-tools.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(docs).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "custom kinds do not validate:\n{report}"
    );
    // Two passes (schema, fields) per object, and nothing else.
    let passed = report.lines().filter(|l| l.starts_with("PASS ")).count();
    assert_eq!(passed, docs.len() * 2, "{report}");
}

/// Helm's SDK (scripts/helm_sdk.py, pinned in scripts/tools-requirements.txt) on a chart under
/// deploy/helm/: `lint` or `template` with these arguments; (success, stdout and stderr).
pub fn helm_sdk(args: &[&str]) -> (bool, String) {
    let python = root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} not found: run scripts/install-tools.sh",
        python.display()
    );
    let out = Command::new(python)
        .current_dir(root())
        .arg("scripts/helm_sdk.py")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
