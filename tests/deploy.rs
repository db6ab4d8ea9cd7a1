//! The deployment files — Dockerfile, Kubernetes manifests, Istio config — checked offline with
//! the pinned tools (hadolint, yamllint, kubernetes-validate, Envoy, installed by
//! scripts/install-tools.sh) and with session-authz's own `--check-config`. YAML is read with the
//! PyYAML that comes with yamllint, as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

mod common;

/// Kubernetes versions whose schemas the manifests must pass: the oldest we claim (native
/// `preStop: sleep` is on by default from 1.30) and a current one.
const K8S_VERSIONS: &[&str] = &["1.30.0", "1.34.0"];

/// The fields of Istio's `EnvoyExternalAuthorizationGrpcProvider`; istiod rejects any other
/// (the header lists exist only on the HTTP provider).
const ISTIO_GRPC_PROVIDER_FIELDS: &[&str] = &[
    "service",
    "port",
    "timeout",
    "failOpen",
    "statusOnError",
    "includeRequestBodyInCheck",
];

/// Istio's merged-metrics port: with metrics merging (Istio's default) the injector points a
/// Pod's prometheus.io annotations at its agent here, which scrapes the app's own port itself.
const ISTIO_MERGED_METRICS_PORT: u64 = 15020;

/// What a Pod's terminationGracePeriodSeconds keeps beyond the longest stop it may take.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);

/// session-authz's drain_delay when nothing sets it.
const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A pinned tool in .tools/bin; missing is a failure, not a skip.
fn tool(name: &str) -> PathBuf {
    let path = root().join(".tools/bin").join(name);
    assert!(
        path.exists(),
        "{name} not found at {}: run scripts/install-tools.sh (make test does)",
        path.display()
    );
    path
}

/// Runs `command` to success and returns its stdout.
fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every YAML document in `text`, as JSON (empty documents dropped).
fn yaml_to_json(text: &str) -> Vec<Value> {
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

fn yaml_file(rel: &str) -> Vec<Value> {
    let path = root().join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    yaml_to_json(&text)
}

fn yaml_files_under(rel: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(rel))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML under {rel}");
    files
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn s(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

fn arr(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    arr(&pod["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A container's plain `env` values (no valueFrom expected in these manifests).
fn env_of(container: &Value) -> Vec<(String, String)> {
    arr(&container["env"])
        .iter()
        .map(|e| (s(&e["name"]).to_owned(), s(&e["value"]).to_owned()))
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> &'a str {
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// A named or numbered container port of the pod, as a number.
fn resolve_port(pod: &Value, port: &Value) -> u64 {
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

fn port_of(addr: &str) -> u64 {
    addr.parse::<SocketAddr>().unwrap().port().into()
}

fn duration(text: &str) -> Duration {
    humantime::parse_duration(text).unwrap_or_else(|e| panic!("duration {text:?}: {e}"))
}

/// The probes of a container: (kind, probe).
fn probes(container: &Value) -> Vec<(&'static str, &Value)> {
    ["livenessProbe", "readinessProbe", "startupProbe"]
        .into_iter()
        .filter(|k| !container[*k].is_null())
        .map(|k| (k, &container[k]))
        .collect()
}

/// The hardening every Pod here must have, in every container.
fn assert_hardened(pod: &Value) {
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
fn longest_pre_stop(pod: &Value) -> u64 {
    arr(&pod["containers"])
        .iter()
        .filter_map(|c| c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64())
        .max()
        .unwrap_or(0)
}

/// session-authz's drain_delay under this environment and TOML. `--check-config` reports it once
/// the binary knows the key; until then, the same precedence by hand: environment, TOML, default.
fn drain_delay(
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
fn assert_shutdown_fits(pod_template: &Value, authz_stop: Duration) {
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
fn assert_budgeted(docs: &[Value], deployment: &Value) {
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

/// Whether an address binds every interface of the Pod (IPv4 or IPv6).
fn on_pod_ip(addr: &str) -> bool {
    addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:")
}

/// session-authz's effective configuration (`--check-config`) under exactly this environment
/// and, if given, this TOML file in place of `SESSION_AUTHZ_CONFIG`'s path.
fn effective_config(env: &[(String, String)], toml_file: Option<&str>) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_session-authz"));
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

fn config_str<'a>(config: &'a toml::Table, key: &str) -> &'a str {
    config[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
}

/// The address each listener of an Envoy config binds: (name, address, port).
fn envoy_listeners(config: &Value) -> Vec<(String, String, u64)> {
    arr(&config["static_resources"]["listeners"])
        .iter()
        .map(|l| {
            let socket = &l["address"]["socket_address"];
            (
                s(&l["name"]).to_owned(),
                s(&socket["address"]).to_owned(),
                socket["port_value"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The one endpoint of a static Envoy cluster.
fn envoy_cluster_endpoint(config: &Value, cluster: &str) -> (String, u64) {
    let cluster = arr(&config["static_resources"]["clusters"])
        .iter()
        .find(|c| c["name"] == cluster)
        .unwrap_or_else(|| panic!("no cluster {cluster}"));
    let socket = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    (
        s(&socket["address"]).to_owned(),
        socket["port_value"].as_u64().unwrap(),
    )
}

/// The ext_authz filter's gRPC timeout in the dashboard listener.
fn envoy_ext_authz_timeout(config: &Value) -> Duration {
    let listener = arr(&config["static_resources"]["listeners"])
        .iter()
        .find(|l| l["name"] == "dashboard")
        .unwrap();
    let filters = &listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    let ext_authz = arr(filters)
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .unwrap();
    duration(s(&ext_authz["typed_config"]["grpc_service"]["timeout"]))
}

fn envoy_validate(config_text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config_text).unwrap();
    run(Command::new(tool("envoy"))
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(&path));
}

fn sidecar_envoy_config(docs: &[Value]) -> &str {
    s(&find(docs, "ConfigMap", "dashboard-envoy")["data"]["envoy.yaml"])
}

/// Every YAML file under deploy/.
fn deploy_yaml_files() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("deploy"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .flat_map(|d| yaml_files_under(d.strip_prefix(root()).unwrap().to_str().unwrap()))
        .collect()
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    // Istio's kinds have no schema in kubernetes-validate; every file of plain Kubernetes kinds
    // does, wherever it is (deploy/istio/dashboard.yaml included).
    let files: Vec<PathBuf> = deploy_yaml_files()
        .into_iter()
        .filter(|f| {
            yaml_file(f.strip_prefix(root()).unwrap().to_str().unwrap())
                .iter()
                .all(|d| !s(&d["apiVersion"]).contains("istio.io"))
        })
        .collect();
    assert!(files.iter().any(|f| f.ends_with("istio/dashboard.yaml")));
    for file in files {
        let docs = yaml_to_json(&std::fs::read_to_string(&file).unwrap()).len();
        let mut command = Command::new(tool("kubernetes-validate"));
        command.arg("--strict");
        for version in K8S_VERSIONS {
            command.args(["-k", version]);
        }
        let out = run(command.arg(&file));
        // It exits 0 with a WARN for a kind it has no schema for: not good enough here.
        assert!(
            !out.contains("WARN") && !out.contains("ERROR"),
            "{}:\n{out}",
            file.display()
        );
        let passed = out.lines().filter(|l| l.contains(" passed for ")).count();
        assert_eq!(
            passed,
            docs * K8S_VERSIONS.len(),
            "{}:\n{out}",
            file.display()
        );
    }
}

#[test]
fn yaml_lints_clean() {
    run(Command::new(tool("yamllint")).current_dir(root()).args([
        "--strict",
        "-c",
        ".yamllint",
        "deploy",
        "envoy",
        ".yamllint",
    ]));
}

#[test]
fn dockerfile_lints_clean_and_builds_locked_for_a_non_root_user() {
    run(Command::new(tool("hadolint")).current_dir(root()).args([
        "--failure-threshold",
        "style",
        "Dockerfile",
    ]));

    // Instructions, with continuation lines joined and comments dropped.
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut instructions: Vec<String> = Vec::new();
    let mut continued = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !continued) {
            continue;
        }
        let (body, more) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim(), true),
            None => (trimmed, false),
        };
        if continued {
            let last = instructions.last_mut().unwrap();
            last.push(' ');
            last.push_str(body);
        } else {
            instructions.push(body.to_owned());
        }
        continued = more;
    }
    let keyword = |i: &String| i.split_whitespace().next().unwrap().to_ascii_uppercase();
    let stages: Vec<&[String]> = {
        let starts: Vec<usize> = (0..instructions.len())
            .filter(|&n| keyword(&instructions[n]) == "FROM")
            .collect();
        assert!(starts.len() >= 2, "a multi-stage build");
        starts
            .iter()
            .zip(starts.iter().skip(1).chain([&instructions.len()]))
            .map(|(&a, &b)| &instructions[a..b])
            .collect()
    };

    let builds: Vec<&String> = instructions
        .iter()
        .filter(|i| i.contains("cargo build"))
        .collect();
    assert!(!builds.is_empty());
    for build in &builds {
        for flag in ["--locked", "--release", "--bin session-authz"] {
            assert!(build.contains(flag), "{build}: wants {flag}");
        }
    }

    let last = stages.last().unwrap();
    let user = last
        .iter()
        .rev()
        .find(|i| keyword(i) == "USER")
        .expect("USER in the final stage");
    let uid = user
        .split_whitespace()
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid > 0),
        "numeric non-root USER: {user}"
    );
    let entrypoint = last
        .iter()
        .find(|i| keyword(i) == "ENTRYPOINT")
        .expect("ENTRYPOINT in the final stage");
    assert!(
        entrypoint.contains("[\"") && entrypoint.contains("session-authz\""),
        "exec-form ENTRYPOINT of the binary: {entrypoint}"
    );
    let expose = last
        .iter()
        .find(|i| keyword(i) == "EXPOSE")
        .expect("EXPOSE");
    assert!(
        expose.contains("9001") && expose.contains("9002"),
        "{expose}"
    );
    assert!(
        !last.iter().any(|i| i.contains("cargo")),
        "no toolchain in the runtime stage"
    );

    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: BTreeSet<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    for dir in ["target", ".tools", ".git"] {
        assert!(ignored.contains(dir), ".dockerignore should hold {dir}/");
    }
    for needed in ["src", "proto", "Cargo.lock", "Cargo.toml", "build.rs"] {
        assert!(
            !ignored.contains(needed),
            ".dockerignore must not hold {needed}"
        );
    }
}

#[test]
fn sidecar_keeps_session_authz_on_loopback_and_exposes_only_envoy() {
    let docs = yaml_file("deploy/kubernetes/sidecar.yaml");
    let deployment = find(&docs, "Deployment", "dashboard");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_hardened(pod);

    let authz = container(pod, "session-authz");
    let env = env_of(authz);
    let config = effective_config(&env, None);
    let grpc_addr = config_str(&config, "grpc_addr");
    let http_addr = config_str(&config, "http_addr");
    assert!(grpc_addr.starts_with("127.0.0.1:"), "{grpc_addr}");
    assert_eq!(config_str(&config, "log_format"), "json");
    assert!(config_str(&config, "aimenu_url").starts_with("http"));

    // What the pod IP serves: ops HTTP, and Envoy's listeners bound to 0.0.0.0.
    let envoy_docs = yaml_to_json(sidecar_envoy_config(&docs));
    let envoy_config = &envoy_docs[0];
    let mut pod_ip_ports = BTreeSet::new();
    if on_pod_ip(http_addr) {
        pod_ip_ports.insert(port_of(http_addr));
    }
    for (_, address, port) in envoy_listeners(envoy_config) {
        if address == "0.0.0.0" || address == "::" {
            pod_ip_ports.insert(port);
        }
    }
    assert!(!pod_ip_ports.contains(&port_of(grpc_addr)));

    // Kubelet probes the pod IP: every probe must target a port served there, and
    // session-authz's probes are HTTP (a grpc probe could not reach its loopback gRPC).
    for c in arr(&pod["containers"]) {
        for (kind, probe) in probes(c) {
            let target = ["httpGet", "grpc", "tcpSocket"]
                .iter()
                .map(|k| &probe[*k]["port"])
                .find(|port| !port.is_null())
                .unwrap_or_else(|| panic!("{kind}: no port"));
            let port = resolve_port(pod, target);
            assert!(
                pod_ip_ports.contains(&port),
                "{} {kind} probes {port}, which is not on the pod IP",
                c["name"]
            );
        }
    }
    let authz_probes = probes(authz);
    assert!(authz_probes.len() >= 2, "liveness and readiness");
    assert!(authz_probes.iter().all(|(_, p)| p["httpGet"].is_object()));
    assert_eq!(authz["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(authz["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(arr(&authz["ports"])
        .iter()
        .all(|p| p["containerPort"].as_u64() != Some(port_of(grpc_addr))));

    // Envoy reaches session-authz and the app on loopback; its admin stays there.
    assert_eq!(
        envoy_cluster_endpoint(envoy_config, "session_authz"),
        ("127.0.0.1".to_owned(), port_of(grpc_addr))
    );
    assert_eq!(envoy_cluster_endpoint(envoy_config, "app").0, "127.0.0.1");
    assert_eq!(
        envoy_config["admin"]["address"]["socket_address"]["address"],
        "127.0.0.1"
    );
    assert!(
        envoy_ext_authz_timeout(envoy_config) > duration(config_str(&config, "validator_timeout"))
    );

    // Envoy reads the ConfigMap's envoy.yaml.
    let envoy = container(pod, "envoy");
    let args: Vec<&str> = arr(&envoy["args"]).iter().map(s).collect();
    let config_path = args[args.iter().position(|a| *a == "--config-path").unwrap() + 1];
    let (dir, key) = config_path.rsplit_once('/').unwrap();
    let mount = arr(&envoy["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("Envoy's config mounted");
    let volume = arr(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "dashboard-envoy");
    assert_eq!(key, "envoy.yaml");

    // The Service: Envoy's client listener only.
    let service = find(&docs, "Service", "dashboard");
    let ports = arr(&service["spec"]["ports"]);
    assert_eq!(ports.len(), 1, "only Envoy's listener");
    let target = resolve_port(pod, &ports[0]["targetPort"]);
    let listener = envoy_listeners(envoy_config)
        .into_iter()
        .find(|(name, _, _)| name == "dashboard")
        .unwrap();
    assert_eq!(target, listener.2);
    assert!(arr(&envoy["ports"])
        .iter()
        .any(|p| p["containerPort"].as_u64() == Some(target)));
    for (label, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &deployment["spec"]["template"]["metadata"]["labels"][label],
            value
        );
    }

    // Long enough for the preStop sleep and session-authz's drain.
    let authz_stop =
        drain_delay(&config, &env, None) + duration(config_str(&config, "shutdown_grace"));
    assert_shutdown_fits(&deployment["spec"]["template"], authz_stop);

    // A node drain never takes both replicas at once.
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_budgeted(&docs, deployment);
}

#[test]
fn sidecar_envoy_config_validates_and_matches_the_sample() {
    let docs = yaml_file("deploy/kubernetes/sidecar.yaml");
    let text = sidecar_envoy_config(&docs);
    envoy_validate(text);

    // The probe listener answers /ready itself and routes nowhere.
    let mut sidecar = yaml_to_json(text).remove(0);
    let listeners = sidecar["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap();
    let probes = listeners
        .iter()
        .position(|l| l["name"] == "probes")
        .unwrap();
    let probe = listeners.remove(probes);
    let hcm = &probe["filter_chains"][0]["filters"][0]["typed_config"];
    for route in arr(&hcm["route_config"]["virtual_hosts"][0]["routes"]) {
        assert!(route["route"].is_null(), "{route}");
    }
    assert_eq!(
        hcm["http_filters"][0]["name"],
        "envoy.filters.http.health_check"
    );

    // Otherwise it is envoy/envoy.yaml with the listener on 0.0.0.0: keep the two in step.
    let address = &mut listeners
        .iter_mut()
        .find(|l| l["name"] == "dashboard")
        .unwrap()["address"]["socket_address"]["address"];
    assert_eq!(*address, "0.0.0.0");
    *address = json!("127.0.0.1");
    let sample = yaml_file("envoy/envoy.yaml").remove(0);
    assert!(
        sidecar == sample,
        "the sidecar's Envoy config drifted from envoy/envoy.yaml (beyond the listener address \
         and the probe listener); apply the same change to deploy/kubernetes/sidecar.yaml"
    );
}

#[test]
fn standalone_is_replicated_budgeted_and_probed_over_grpc() {
    let docs = yaml_file("deploy/kubernetes/standalone.yaml");
    let deployment = find(&docs, "Deployment", "session-authz");
    let namespace = s(&deployment["metadata"]["namespace"]);
    let pod = &deployment["spec"]["template"]["spec"];
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_hardened(pod);
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    let authz = container(pod, "session-authz");
    let env = env_of(authz);
    assert!(env_value(&env, "AIMENU_URL").starts_with("http"));
    let config = standalone_config(&docs);
    let grpc_port = port_of(config_str(&config, "grpc_addr"));
    assert!(on_pod_ip(config_str(&config, "grpc_addr")));
    assert_eq!(config_str(&config, "log_format"), "json");
    assert_eq!(
        config_str(&config, "aimenu_url").trim_end_matches('/'),
        env_value(&env, "AIMENU_URL").trim_end_matches('/')
    );

    // Readiness: kubelet's gRPC probe on the overall health; liveness: /healthz.
    let readiness = &authz["readinessProbe"]["grpc"];
    assert_eq!(readiness["port"].as_u64(), Some(grpc_port));
    assert!(
        readiness["service"].is_null() || readiness["service"] == "",
        "the overall status, not the named one that follows the auth service"
    );
    assert_eq!(authz["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(
        resolve_port(pod, &authz["livenessProbe"]["httpGet"]["port"]),
        port_of(config_str(&config, "http_addr"))
    );

    let authz_stop = drain_delay(&config, &env, Some(standalone_toml(&docs)))
        + duration(config_str(&config, "shutdown_grace"));
    assert_shutdown_fits(&deployment["spec"]["template"], authz_stop);

    // The Service speaks gRPC on 9001, to these Pods.
    let service = find(&docs, "Service", "session-authz");
    assert_eq!(service["metadata"]["namespace"], namespace);
    let ports = arr(&service["spec"]["ports"]);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"], 9001);
    assert_eq!(ports[0]["name"], "grpc");
    assert_eq!(ports[0]["appProtocol"], "grpc");
    assert_eq!(resolve_port(pod, &ports[0]["targetPort"]), grpc_port);
    for (label, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[label], value);
    }

    // The budget covers these Pods and leaves at least one up.
    assert_budgeted(&docs, deployment);

    // Every port only from named callers: each peer a namespace AND pod labels (pod labels
    // alone admit any Pod, in any namespace, that labels itself; a namespace alone, all of it).
    let policy = find(&docs, "NetworkPolicy", "session-authz");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let mut admitted: Vec<(u64, Value)> = Vec::new();
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
    let peers_of = |port: u64| -> Vec<&Value> {
        admitted
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, peer)| peer)
            .collect()
    };
    assert!(!peers_of(grpc_port).is_empty());
    // Whoever scrapes the annotated port may also scrape Istio's merged metrics, and the
    // reverse: in the mesh the same Prometheus scrapes 15020 instead.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    let scrape_port: u64 = s(&annotations["prometheus.io/port"]).parse().unwrap();
    assert_eq!(scrape_port, port_of(config_str(&config, "http_addr")));
    assert!(!peers_of(scrape_port).is_empty());
    assert_eq!(
        peers_of(scrape_port),
        peers_of(ISTIO_MERGED_METRICS_PORT),
        "the scraper of {scrape_port} and of Istio's {ISTIO_MERGED_METRICS_PORT}"
    );
    // The Check API is for Envoys, not for the scraper.
    for peer in peers_of(scrape_port) {
        assert!(!peers_of(grpc_port).contains(&peer), "{peer}");
    }
}

/// The standalone Deployment's effective configuration: the TOML from the ConfigMap mounted
/// where SESSION_AUTHZ_CONFIG says, under the container's environment.
fn standalone_config(docs: &[Value]) -> toml::Table {
    let deployment = find(docs, "Deployment", "session-authz");
    let env = env_of(container(
        &deployment["spec"]["template"]["spec"],
        "session-authz",
    ));
    effective_config(&env, Some(standalone_toml(docs)))
}

/// The TOML the standalone Deployment mounts where SESSION_AUTHZ_CONFIG says.
fn standalone_toml(docs: &[Value]) -> &str {
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

/// Istio's path match: exact, `prefix*`, `*suffix`, or `*`.
fn istio_path_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        path.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        path.ends_with(suffix)
    } else {
        pattern == path
    }
}

#[test]
fn istio_provider_fails_closed_after_the_validator_timeout() {
    let operator = yaml_file("deploy/istio/mesh-config.yaml").remove(0);
    assert_eq!(operator["kind"], "IstioOperator");
    let mesh = &operator["spec"]["meshConfig"];
    let provider = arr(&mesh["extensionProviders"])
        .iter()
        .find(|p| p["name"] == "session-authz")
        .expect("the session-authz provider");
    let grpc = provider["envoyExtAuthzGrpc"]
        .as_object()
        .expect("envoyExtAuthzGrpc: session-authz serves the gRPC API");
    for field in grpc.keys() {
        assert!(
            ISTIO_GRPC_PROVIDER_FIELDS.contains(&field.as_str()),
            "{field} is not a field of Istio's gRPC provider; istiod would reject it"
        );
    }
    assert_eq!(grpc["failOpen"], false);
    assert_eq!(grpc["statusOnError"], "503");

    // It names the standalone Service, fully qualified, on its gRPC port, and waits longer than
    // that Deployment waits for the auth service (so session-authz's own 503 wins).
    let standalone = yaml_file("deploy/kubernetes/standalone.yaml");
    let validator_timeout = duration(config_str(
        &standalone_config(&standalone),
        "validator_timeout",
    ));
    assert!(duration(s(&grpc["timeout"])) > validator_timeout);
    let service = find(&standalone, "Service", "session-authz");
    assert_eq!(
        grpc["service"],
        format!(
            "{}.{}.svc.cluster.local",
            s(&service["metadata"]["name"]),
            s(&service["metadata"]["namespace"])
        )
    );
    assert_eq!(grpc["port"], service["spec"]["ports"][0]["port"]);

    // //admin and %2F spellings must be normalized before the policy's paths are compared.
    let normalization = s(&mesh["pathNormalization"]["normalization"]);
    assert!(
        ["MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"].contains(&normalization),
        "{normalization}"
    );
}

#[test]
fn istio_policy_checks_the_admin_paths_and_strips_forged_identity() {
    let docs = yaml_file("deploy/istio/authorization-policy.yaml");
    let policy = find(&docs, "AuthorizationPolicy", "dashboard-session-authz");
    let spec = &policy["spec"];
    assert_eq!(spec["action"], "CUSTOM");
    assert_eq!(spec["provider"]["name"], "session-authz");
    let selector = &spec["selector"]["matchLabels"];
    assert!(selector.as_object().is_some_and(|m| !m.is_empty()));

    let mut paths = Vec::new();
    for rule in arr(&spec["rules"]) {
        // Only `to`: a `from` or `when` would leave admin requests unchecked.
        assert_eq!(
            rule.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["to"],
            "{rule}"
        );
        for to in arr(&rule["to"]) {
            let operation = to["operation"].as_object().unwrap();
            assert_eq!(operation.keys().collect::<Vec<_>>(), ["paths"], "{to}");
            paths.extend(arr(&operation["paths"]).iter().map(s));
        }
    }
    let checked = |path: &str| paths.iter().any(|p| istio_path_matches(p, path));
    for path in [
        "/admin",
        "/admin/",
        "/admin/users",
        "/administrator",
        "/api/admin",
        "/api/admin/",
        "/api/admin/stats",
    ] {
        assert!(checked(path), "{path} should be checked by {paths:?}");
    }
    for path in ["/", "/public", "/api/public", "/static/admin.css"] {
        assert!(
            !checked(path),
            "{path} should stay public, not in {paths:?}"
        );
    }

    // The Lua filter that drops client-sent x-auth-user runs first on the same workload.
    let filter = find(&docs, "EnvoyFilter", "dashboard-strip-identity");
    assert_eq!(
        filter["metadata"]["namespace"],
        policy["metadata"]["namespace"]
    );
    assert_eq!(&filter["spec"]["workloadSelector"]["labels"], selector);
    let patch = &filter["spec"]["configPatches"][0];
    assert_eq!(patch["applyTo"], "HTTP_FILTER");
    assert_eq!(patch["match"]["context"], "SIDECAR_INBOUND");
    assert_eq!(patch["patch"]["operation"], "INSERT_FIRST");
}

/// A Pod-creating object under deploy/: where its Pods land, their labels and account.
struct Workload {
    what: String,
    namespace: String,
    labels: Map<String, Value>,
    service_account: String,
    pod: Value,
}

/// Where a namespaced object lands: its own namespace or, without one, the one `kubectl apply
/// -n` gives its whole file (never the same as another file's, nor a named namespace).
fn namespace_of(file: &str, doc: &Value) -> String {
    doc["metadata"]["namespace"]
        .as_str()
        .map_or_else(|| format!("(kubectl -n for {file})"), str::to_owned)
}

/// Whether every `wanted` label is on `labels` (a Kubernetes `matchLabels`, or an Istio
/// selector's `labels`: an empty one selects everything).
fn labels_select(wanted: &Value, labels: &Map<String, Value>) -> bool {
    wanted
        .as_object()
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A `LabelSelector` as its `matchLabels` (expressions are not used under deploy/, so not
/// evaluated: refuse them rather than guess).
fn match_labels(selector: &Value) -> &Value {
    assert!(selector["matchExpressions"].is_null(), "{selector}");
    &selector["matchLabels"]
}

/// Pods a NetworkPolicy peer admits: (namespace, workload); `known_namespaces` maps each
/// namespace under deploy/ to its labels (with the kubernetes.io/metadata.name Kubernetes adds).
fn peer_selects<'a>(
    peer: &Value,
    policy_namespace: &str,
    known_namespaces: &[(String, Map<String, Value>)],
    workloads: &'a [Workload],
) -> (Vec<String>, Vec<&'a Workload>) {
    let namespaces: Vec<String> = if peer["namespaceSelector"].is_null() {
        vec![policy_namespace.to_owned()]
    } else {
        let wanted = match_labels(&peer["namespaceSelector"]);
        known_namespaces
            .iter()
            .filter(|(_, labels)| labels_select(wanted, labels))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let wanted = match_labels(&peer["podSelector"]);
    let pods = workloads
        .iter()
        .filter(|w| namespaces.contains(&w.namespace) && labels_select(wanted, &w.labels))
        .collect();
    (namespaces, pods)
}

#[test]
fn deploy_selectors_namespaces_and_principals_agree() {
    // Istio applies a policy that selects no Pod without a word: reused as shipped, such a
    // policy checks nothing. So every selector must select something shipped here.
    let docs: Vec<(String, Value)> = deploy_yaml_files()
        .into_iter()
        .flat_map(|path| {
            let rel = path
                .strip_prefix(root())
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            yaml_file(&rel).into_iter().map(move |d| (rel.clone(), d))
        })
        .collect();
    let name = |d: &Value| s(&d["metadata"]["name"]).to_owned();

    let workloads: Vec<Workload> = docs
        .iter()
        .filter(|(_, d)| ["Deployment", "StatefulSet", "DaemonSet"].contains(&s(&d["kind"])))
        .map(|(file, d)| {
            let template = &d["spec"]["template"];
            Workload {
                what: format!("{file}: {} {}", s(&d["kind"]), name(d)),
                namespace: namespace_of(file, d),
                labels: template["metadata"]["labels"].as_object().unwrap().clone(),
                service_account: template["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned(),
                pod: template["spec"].clone(),
            }
        })
        .collect();
    let mut known_namespaces: Vec<(String, Map<String, Value>)> = Vec::new();
    for (file, d) in &docs {
        let (namespace, mut labels) = if d["kind"] == "Namespace" {
            let labels = d["metadata"]["labels"].as_object().cloned();
            (name(d), labels.unwrap_or_default())
        } else {
            (namespace_of(file, d), Map::new())
        };
        match known_namespaces.iter_mut().find(|(n, _)| *n == namespace) {
            Some((_, known)) => known.append(&mut labels),
            None => {
                labels.insert("kubernetes.io/metadata.name".into(), json!(namespace));
                known_namespaces.push((namespace, labels));
            }
        }
    }
    let selected = |namespace: &str, wanted: &Value| -> Vec<&Workload> {
        workloads
            .iter()
            .filter(|w| w.namespace == namespace && labels_select(wanted, &w.labels))
            .collect()
    };

    let mut problems: Vec<String> = Vec::new();
    // Pods each object acts on, by (file, kind/name): the checks below look them up.
    let mut targets: Vec<(&Value, Vec<&Workload>)> = Vec::new();
    for (file, d) in &docs {
        let wanted = match s(&d["kind"]) {
            "AuthorizationPolicy" | "PeerAuthentication" | "PodDisruptionBudget" => {
                match_labels(&d["spec"]["selector"])
            }
            "EnvoyFilter" => &d["spec"]["workloadSelector"]["labels"],
            "NetworkPolicy" => match_labels(&d["spec"]["podSelector"]),
            "Service" => &d["spec"]["selector"],
            _ => continue,
        };
        let namespace = namespace_of(file, d);
        let pods = selected(&namespace, wanted);
        if pods.is_empty() {
            problems.push(format!(
                "{file}: {} {} selects {wanted} in namespace {namespace}: no workload under \
                 deploy/ has those Pod labels there",
                d["kind"],
                name(d)
            ));
        }
        targets.push((d, pods));
    }
    let targets_of = |doc: &Value| -> Vec<&Workload> {
        targets
            .iter()
            .find(|(d, _)| std::ptr::eq(*d, doc))
            .map(|(_, pods)| pods.clone())
            .unwrap_or_default()
    };

    // NetworkPolicy peers that name a namespace shipped here must admit a Pod shipped there;
    // others (Prometheus in monitoring) are outside deploy/.
    for (file, d) in docs.iter().filter(|(_, d)| d["kind"] == "NetworkPolicy") {
        for rule in d["spec"]["ingress"].as_array().into_iter().flatten() {
            for peer in rule["from"].as_array().into_iter().flatten() {
                let (namespaces, pods) =
                    peer_selects(peer, &namespace_of(file, d), &known_namespaces, &workloads);
                let ours = namespaces
                    .iter()
                    .any(|n| workloads.iter().any(|w| w.namespace == *n));
                if ours && pods.is_empty() {
                    problems.push(format!(
                        "{file}: NetworkPolicy {} admits {peer}: no workload under deploy/ \
                         matches (namespaces {namespaces:?})",
                        name(d)
                    ));
                }
            }
        }
    }

    // The mesh provider names a shipped Service, on one of its ports.
    let mut providers: Vec<String> = Vec::new();
    let mut provider_services: Vec<(&Value, u64)> = Vec::new();
    for (file, d) in docs.iter().filter(|(_, d)| d["kind"] == "IstioOperator") {
        for provider in arr(&d["spec"]["meshConfig"]["extensionProviders"]) {
            providers.push(s(&provider["name"]).to_owned());
            let Some(target) = ["envoyExtAuthzGrpc", "envoyExtAuthzHttp"]
                .iter()
                .map(|k| &provider[*k])
                .find(|t| !t.is_null())
            else {
                continue;
            };
            let fqdn = s(&target["service"]);
            let port = target["port"].as_u64().unwrap();
            let service = docs.iter().find(|(f, svc)| {
                svc["kind"] == "Service"
                    && format!("{}.{}.svc.cluster.local", name(svc), namespace_of(f, svc)) == fqdn
            });
            match service {
                Some((_, svc)) if arr(&svc["spec"]["ports"]).iter().any(|p| p["port"] == port) => {
                    provider_services.push((svc, port));
                }
                Some(_) => problems.push(format!("{file}: {fqdn} has no port {port}")),
                None => problems.push(format!(
                    "{file}: provider {} calls {fqdn}, which is no Service under deploy/",
                    provider["name"]
                )),
            }
        }
    }

    // CUSTOM policies name a provider; principals name a shipped account that a shipped
    // workload runs as, and that workload gets through the NetworkPolicies of the Pods the
    // rule allows it to call (else the mesh allows what the network drops).
    for (file, d) in docs
        .iter()
        .filter(|(_, d)| d["kind"] == "AuthorizationPolicy")
    {
        if d["spec"]["action"] == "CUSTOM" {
            let provider = s(&d["spec"]["provider"]["name"]);
            if !providers.iter().any(|p| p == provider) {
                problems.push(format!("{file}: no extension provider {provider}"));
            }
        }
        let namespace = namespace_of(file, d);
        for rule in d["spec"]["rules"].as_array().into_iter().flatten() {
            let ports: Vec<u64> = rule["to"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|to| {
                    to["operation"]["ports"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|p| s(&p).parse().unwrap())
                .collect();
            let principals = rule["from"].as_array().into_iter().flatten().flat_map(|f| {
                f["source"]["principals"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            });
            for principal in principals {
                let principal = s(&principal);
                let Some((ns, sa)) = principal
                    .strip_prefix("cluster.local/ns/")
                    .and_then(|rest| rest.split_once("/sa/"))
                else {
                    problems.push(format!("{file}: principal {principal} is not ns/N/sa/S"));
                    continue;
                };
                if !docs.iter().any(|(f, a)| {
                    a["kind"] == "ServiceAccount" && name(a) == sa && namespace_of(f, a) == ns
                }) {
                    problems.push(format!(
                        "{file}: principal {principal}: no ServiceAccount {sa} in namespace \
                         {ns} under deploy/"
                    ));
                }
                let callers: Vec<&Workload> = workloads
                    .iter()
                    .filter(|w| w.namespace == ns && w.service_account == sa)
                    .collect();
                if callers.is_empty() {
                    problems.push(format!(
                        "{file}: principal {principal}: no workload under deploy/ runs as it"
                    ));
                }
                for caller in callers {
                    for target in targets_of(d) {
                        for &port in &ports {
                            let admitted = docs.iter().any(|(f, np)| {
                                np["kind"] == "NetworkPolicy"
                                    && namespace_of(f, np) == namespace
                                    && targets_of(np).iter().any(|t| std::ptr::eq(*t, target))
                                    && arr(&np["spec"]["ingress"]).iter().any(|r| {
                                        arr(&r["ports"])
                                            .iter()
                                            .any(|p| resolve_port(&target.pod, &p["port"]) == port)
                                            && arr(&r["from"]).iter().any(|peer| {
                                                peer_selects(
                                                    peer,
                                                    &namespace,
                                                    &known_namespaces,
                                                    &workloads,
                                                )
                                                .1
                                                .iter()
                                                .any(|w| std::ptr::eq(*w, caller))
                                            })
                                    })
                            });
                            if !admitted {
                                problems.push(format!(
                                    "{file}: {principal} may call {} on {port}, but no \
                                     NetworkPolicy admits {} there",
                                    target.what, caller.what
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    // The provider's Service reaches Pods the CUSTOM policies' callers may call.
    for (svc, port) in provider_services {
        let target_port = arr(&svc["spec"]["ports"])
            .iter()
            .find(|p| p["port"] == port)
            .unwrap()["targetPort"]
            .clone();
        for pod in targets_of(svc) {
            let container_port = resolve_port(&pod.pod, &target_port);
            if container_port != port {
                // Not wrong, but the policies' ports are container ports: keep them one.
                problems.push(format!(
                    "Service {} maps {port} to {container_port}",
                    name(svc)
                ));
            }
        }
    }

    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// An Envoy process on ephemeral loopback ports, killed on drop.
struct Envoy {
    child: std::process::Child,
    listener: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Envoy {
    fn start(config: &Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("envoy.json");
        let admin_file = dir.path().join("admin-address");
        std::fs::write(&path, config.to_string()).unwrap();
        let child = Command::new(tool("envoy"))
            .arg("-c")
            .arg(&path)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut envoy = Self {
            child,
            listener: "127.0.0.1:1".parse().unwrap(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin: SocketAddr = loop {
            if let Some(addr) = std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|a| a.trim().parse().ok())
            {
                break addr;
            }
            assert!(Instant::now() < deadline, "Envoy did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let port = loop {
            let listeners: Option<Value> =
                http_get(admin, "/listeners?format=json", &[]).and_then(|(status, body)| {
                    (status == 200).then(|| serde_json::from_str(&body).ok())?
                });
            if let Some(port) = listeners.as_ref().and_then(|l| {
                l["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()
            }) {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "Envoy's listener did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        envoy.listener = SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
        envoy
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET with `Connection: close`: (status, body), or None if it could not connect.
fn http_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        },
    ))
}

/// The payload of a chunked HTTP/1.1 body (Envoy's admin answers chunked).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// A plain HTTP/1.1 server for Envoy to route to, answering each request with its path and its
/// header lines exactly as they arrived (names neither folded nor lowercased), as JSON.
struct RawUpstream {
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawUpstream {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                for stream in listener.incoming() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        std::thread::spawn(move || Self::answer(stream));
                    }
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn answer(mut stream: TcpStream) {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let path = lines.next().unwrap_or_default().split(' ').nth(1);
        let headers: Vec<(&str, &str)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name, value.trim()))
            .collect();
        let body = json!({ "path": path, "headers": headers }).to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The header lines a [`RawUpstream`] echoed: (name as received, value).
fn upstream_headers(body: &str) -> Vec<(String, String)> {
    let echo: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not the upstream's echo: {body}"));
    arr(&echo["headers"])
        .iter()
        .map(|pair| (s(&pair[0]).to_owned(), s(&pair[1]).to_owned()))
        .collect()
}

/// What a WSGI server makes of a header name: `X-AUTH_USER` and `x_auth-user` are both
/// `HTTP_X_AUTH_USER`, i.e. `x-auth-user` here.
fn wsgi_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The RBAC permission Istio derives from an AuthorizationPolicy path (`/admin*` is a prefix).
fn istio_path_permission(pattern: &str) -> Value {
    let matcher = if pattern == "*" {
        json!({ "safe_regex": { "regex": ".*" } })
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        json!({ "prefix": prefix })
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        json!({ "suffix": suffix })
    } else {
        json!({ "exact": pattern })
    };
    json!({ "url_path": { "path": matcher } })
}

#[test]
fn istio_identity_filter_drops_client_copies_in_envoy() {
    let docs = yaml_file("deploy/istio/authorization-policy.yaml");
    let policy = find(&docs, "AuthorizationPolicy", "dashboard-session-authz");
    let filter = find(&docs, "EnvoyFilter", "dashboard-strip-identity");
    let strip = filter["spec"]["configPatches"][0]["patch"]["value"].clone();
    let operator = yaml_file("deploy/istio/mesh-config.yaml").remove(0);
    let provider = arr(&operator["spec"]["meshConfig"]["extensionProviders"])
        .iter()
        .find(|p| p["name"] == "session-authz")
        .unwrap()["envoyExtAuthzGrpc"]
        .clone();

    // The real session-authz, in-process, with a validator that knows one session. The runtime
    // outlives everything below (locals drop in reverse order).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_validator, authz) = runtime.block_on(async {
        let validator = common::FakeValidator::start(vec![(
            "user1-token",
            common::Answer::json(200, r#"{"valid":true,"user":"user1"}"#),
        )])
        .await;
        let authz = common::start_service(&[("aimenu_url", &validator.url())]).await;
        (validator, authz)
    });
    let app = RawUpstream::start();

    // The dashboard's inbound chain as Istio builds it for these files: the EnvoyFilter's Lua
    // first (INSERT_FIRST), then the CUSTOM policy as a shadow RBAC rule that marks the
    // request, ext_authz running only on marked requests, and the router. Istio's defaults:
    // header names with `_` allowed; paths normalized as mesh-config.yaml asks.
    let permissions: Vec<Value> = arr(&policy["spec"]["rules"])
        .iter()
        .flat_map(|rule| arr(&rule["to"]).clone())
        .flat_map(|to| arr(&to["operation"]["paths"]).clone())
        .map(|path| istio_path_permission(s(&path)))
        .collect();
    let shadow_rbac = json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "shadow_rules": {
                "action": "DENY",
                "policies": {
                    "istio-ext-authz-ns[dashboard]-policy[dashboard-session-authz]-rule[0]": {
                        "permissions": [{ "or_rules": { "rules": permissions } }],
                        "principals": [{ "any": true }]
                    }
                }
            },
            "shadow_rules_stat_prefix": "istio_ext_authz_"
        }
    });
    let ext_authz = json!({
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "grpc_service": {
                "envoy_grpc": { "cluster_name": "session_authz" },
                "timeout": provider["timeout"]
            },
            "failure_mode_allow": provider["failOpen"],
            "status_on_error": { "code": s(&provider["statusOnError"]).parse::<u16>().unwrap() },
            "filter_enabled_metadata": {
                "filter": "envoy.filters.http.rbac",
                "path": [{ "key": "istio_ext_authz_shadow_effective_policy_id" }],
                "value": { "string_match": { "prefix": "istio-ext-authz" } }
            }
        }
    });
    let cluster = |name: &str, addr: SocketAddr, http2: bool| {
        let mut cluster = json!({
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "socket_address": {
                    "address": "127.0.0.1", "port_value": addr.port()
                } } }
            }] }] }
        });
        if http2 {
            cluster["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} }
                }
            });
        }
        cluster
    };
    let config = json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": [{
                "name": "inbound",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "inbound",
                        "normalize_path": true,
                        "merge_slashes": true,
                        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
                        "route_config": { "virtual_hosts": [{
                            "name": "inbound",
                            "domains": ["*"],
                            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "app" } }]
                        }] },
                        "http_filters": [strip, shadow_rbac, ext_authz, {
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                            }
                        }]
                    }
                }] }]
            }],
            "clusters": [
                cluster("session_authz", authz.grpc_addr(), true),
                cluster("app", app.addr, false)
            ]
        }
    });
    envoy_validate(&config.to_string());
    let envoy = Envoy::start(&config);
    let get = |target: &str, headers: &[(&str, &str)]| {
        http_get(envoy.listener, target, headers).expect("Envoy answers")
    };

    // The policy is in force: an admin path without a session is refused.
    let (status, body) = get("/admin", &[("x-auth-user", "admin")]);
    assert_eq!(status, 401, "{body}");

    let identity = ["x-auth-user", "x-auth-roles", "x-auth-email"];
    let spellings = [
        "x-auth_user",
        "x_auth-user",
        "X-AUTH_USER",
        "x_auth_user",
        "X-Auth-User",
    ];
    for spelling in spellings {
        // A public path: no identity header reaches the app, in any spelling.
        let (status, body) = get(
            "/public/page",
            &[
                (spelling, "admin"),
                ("X_Auth_Roles", "admin"),
                ("x-auth-email", "admin@example.com"),
                ("x-other", "kept"),
            ],
        );
        assert_eq!(status, 200, "{spelling}: {body}");
        let seen = upstream_headers(&body);
        assert!(
            seen.iter()
                .all(|(name, _)| !identity.contains(&wsgi_name(name).as_str())),
            "{spelling} on a public path reached the app: {seen:?}"
        );
        assert!(seen.contains(&("x-other".to_owned(), "kept".to_owned())));

        // An admin path with a valid session: exactly session-authz's x-auth-user.
        let (status, body) = get(
            "/admin",
            &[("Cookie", "session=user1-token"), (spelling, "admin")],
        );
        assert_eq!(status, 200, "{spelling}: {body}");
        let seen: Vec<(String, String)> = upstream_headers(&body)
            .into_iter()
            .filter(|(name, _)| identity.contains(&wsgi_name(name).as_str()))
            .collect();
        assert_eq!(
            seen,
            [("x-auth-user".to_owned(), "user1".to_owned())],
            "{spelling} on /admin"
        );
    }

    // Every spelling at once, on the admin API.
    let mut headers = vec![("Cookie", "session=user1-token")];
    headers.extend(spellings.map(|spelling| (spelling, "admin")));
    let (status, body) = get("/api/admin/users", &headers);
    assert_eq!(status, 200, "{body}");
    let seen: Vec<(String, String)> = upstream_headers(&body)
        .into_iter()
        .filter(|(name, _)| identity.contains(&wsgi_name(name).as_str()))
        .collect();
    assert_eq!(seen, [("x-auth-user".to_owned(), "user1".to_owned())]);
}
