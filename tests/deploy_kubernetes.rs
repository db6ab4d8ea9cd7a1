//! The Kubernetes manifests under deploy/ (and every YAML file of the repository), checked
//! offline with the pinned tools (yamllint, kubernetes-validate, Envoy, installed by
//! scripts/install-tools.sh) and with session-authz's own `--check-config`: schemas, hardening,
//! what each port serves, probes, shutdown timing and disruption budgets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use session_authz_testkit::envoy;
use session_authz_testkit::manifests::*;
use session_authz_testkit::process::{root, run, tool};

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

fn sidecar_envoy_config(docs: &[Value]) -> &str {
    s(&find(docs, "ConfigMap", "dashboard-envoy")["data"]["envoy.yaml"])
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    // Custom resources (Istio's, Envoy Gateway's) have no schema in kubernetes-validate (the
    // latter are checked in tests/deploy_envoy_gateway.rs); every file of plain Kubernetes kinds
    // does, wherever it is (deploy/istio/dashboard.yaml included).
    let files: Vec<String> = deploy_yaml_files()
        .into_iter()
        .filter(|f| !yaml_file(f).iter().any(is_custom_kind))
        .collect();
    assert!(files.iter().any(|f| f.ends_with("istio/dashboard.yaml")));
    for file in files {
        assert_kubernetes_validates(std::path::Path::new(&file), yaml_file(&file).len());
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
    envoy::validate(text);

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
    // The sample's sign-in page (the /login route and its cluster) is the demo's: the sidecar
    // has none, and session-authz in it runs without login_url.
    let mut sample = yaml_file("envoy/envoy.yaml").remove(0);
    let routes = sample["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        .as_array_mut()
        .unwrap();
    let before = routes.len();
    routes.retain(|route| route["match"]["path"] != "/login");
    assert_eq!(routes.len(), before - 1, "the sample routes /login");
    let clusters = sample["static_resources"]["clusters"]
        .as_array_mut()
        .unwrap();
    clusters.retain(|cluster| cluster["name"] != "signin");
    assert!(
        sidecar == sample,
        "the sidecar's Envoy config drifted from envoy/envoy.yaml (beyond the listener address, \
         the probe listener and the sample's sign-in page); apply the same change to \
         deploy/kubernetes/sidecar.yaml"
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

    // The Service speaks gRPC on 9001 and HTTP (the forward-auth door, for Istio's HTTP
    // provider) on 9003, to these Pods.
    let service = find(&docs, "Service", "session-authz");
    assert_eq!(service["metadata"]["namespace"], namespace);
    let ports = arr(&service["spec"]["ports"]);
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0]["port"], 9001);
    assert_eq!(ports[0]["name"], "grpc");
    assert_eq!(ports[0]["appProtocol"], "grpc");
    assert_eq!(resolve_port(pod, &ports[0]["targetPort"]), grpc_port);
    let forward_auth_port = port_of(config_str(&config, "forward_auth_addr"));
    assert!(on_pod_ip(config_str(&config, "forward_auth_addr")));
    assert_eq!(ports[1]["port"], 9003);
    assert_eq!(ports[1]["name"], "http-forward-auth");
    assert_eq!(ports[1]["appProtocol"], "http");
    assert_eq!(
        resolve_port(pod, &ports[1]["targetPort"]),
        forward_auth_port
    );
    for (label, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[label], value);
    }

    // The budget covers these Pods and leaves at least one up.
    assert_budgeted(&docs, deployment);

    // Every port only from named callers: each peer a namespace AND pod labels.
    let policy = find(&docs, "NetworkPolicy", "session-authz");
    let admitted = network_policy_peers(policy, pod);
    let peers_of = |port: u64| peers_of(&admitted, port);
    assert!(!peers_of(grpc_port).is_empty());
    // The forward-auth door believes the headers that name the original request: exactly the
    // Check API's callers, no one else.
    assert_eq!(peers_of(forward_auth_port), peers_of(grpc_port));
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
        assert!(!peers_of(forward_auth_port).contains(&peer), "{peer}");
    }
}
