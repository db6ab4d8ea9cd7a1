//! The Helm chart under deploy/helm/session-authz, offline: Helm's own linter and template engine
//! (Helm 4's Go SDK from PyPI's helm-python-sdk, driven by scripts/helm_sdk.py: no registry here
//! carries the helm binary), every rendering validated like the other manifests
//! (kubernetes-validate --strict; the ServiceMonitor against Prometheus Operator's schema), the
//! default rendering equal in substance to deploy/kubernetes/standalone.yaml and mode sidecar to
//! deploy/kubernetes/sidecar.yaml, and a non-default install (Envoy Gateway's callers, IPv6, TLS,
//! ServiceMonitor) read through session-authz's own `--check-config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::{json, Value};
use session_authz_testkit::manifests::*;

const CHART: &str = "deploy/helm/session-authz";

/// The value sets every test renders: the defaults and the two of the chart's ci/ folder.
const VALUE_SETS: &[(&str, Option<&str>, &str)] = &[
    ("default", None, "session-authz"),
    (
        "gateway",
        Some("deploy/helm/session-authz/ci/gateway-values.yaml"),
        "session-authz",
    ),
    (
        "sidecar",
        Some("deploy/helm/session-authz/ci/sidecar-values.yaml"),
        "dashboard",
    ),
];

/// Labels only the chart sets: which release and chart made an object. app.kubernetes.io/instance
/// is in the selectors too, so two releases in one namespace never select each other's Pods.
const HELM_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

/// `helm template` of the chart as release `session-authz` in `namespace`: the text and its
/// documents.
fn render(values: Option<&str>, namespace: &str) -> (String, Vec<Value>) {
    let mut args = vec![
        "template",
        CHART,
        "--name",
        "session-authz",
        "--namespace",
        namespace,
    ];
    if let Some(values) = values {
        args.extend(["-f", values]);
    }
    let (ok, out) = helm_sdk(&args);
    assert!(ok, "helm template {values:?}:\n{out}");
    let docs = yaml_to_json(&out);
    (out, docs)
}

fn value_set(label: &str) -> Vec<Value> {
    let (_, values, namespace) = VALUE_SETS.iter().find(|(l, _, _)| *l == label).unwrap();
    render(*values, namespace).1
}

/// Removes the chart's own labels from every labels, matchLabels and selector map.
fn strip_helm_labels(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if matches!(key.as_str(), "labels" | "matchLabels" | "selector") {
                    if let Some(labels) = child.as_object_mut() {
                        for label in HELM_LABELS {
                            labels.remove(*label);
                        }
                    }
                }
                strip_helm_labels(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_helm_labels),
        _ => {}
    }
}

/// The documents by (kind, name), for a comparison that names what differs.
fn by_kind_and_name(docs: Vec<Value>) -> BTreeMap<(String, String), Value> {
    docs.into_iter()
        .map(|d| {
            let key = (
                s(&d["kind"]).to_owned(),
                s(&d["metadata"]["name"]).to_owned(),
            );
            (key, d)
        })
        .collect()
}

fn assert_same_objects(chart: Vec<Value>, manifest: Vec<Value>, what: &str) {
    let chart = by_kind_and_name(chart);
    let manifest = by_kind_and_name(manifest);
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        manifest.keys().collect::<Vec<_>>(),
        "the chart renders other objects than {what}"
    );
    for (key, rendered) in &chart {
        assert!(
            rendered == &manifest[key],
            "{key:?} differs from {what}:\nchart:    {rendered}\nmanifest: {}",
            manifest[key]
        );
    }
}

/// Replaces an annotation that rolls the Pods with a marker, after checking it is a sha256.
fn take_checksum(template: &mut Value, key: &str) {
    let annotations = template["metadata"]["annotations"].as_object_mut().unwrap();
    let checksum = annotations
        .remove(key)
        .unwrap_or_else(|| panic!("no {key}"));
    let checksum = s(&checksum);
    assert!(
        checksum.len() == 64 && checksum.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}: {checksum}"
    );
}

#[test]
fn chart_lints_strictly_with_every_value_set() {
    for (label, values, namespace) in VALUE_SETS {
        for version in K8S_VERSIONS {
            let kube_version = format!("v{version}");
            let mut args = vec![
                "lint",
                CHART,
                "--kube-version",
                &kube_version,
                "--namespace",
                namespace,
            ];
            if let Some(values) = values {
                args.extend(["-f", values]);
            }
            let (ok, out) = helm_sdk(&args);
            assert!(
                ok && out.contains("lint: passed"),
                "{label} {version}:\n{out}"
            );
        }
    }
}

#[test]
fn chart_refuses_values_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    for (values, refusal) in [
        ("mode: ingress\n", "mode must be standalone or sidecar"),
        // Mode sidecar has no TOML: rules there are Envoy's context_extensions.
        ("mode: sidecar\n", "set routes: []"),
        // A key the chart writes itself would be a duplicate TOML key.
        (
            "config:\n  extra:\n    drain_delay: 1s\n",
            "the chart writes drain_delay itself",
        ),
        ("aimenuUrl: null\n", "aimenuUrl"),
        ("networkPolicy:\n  callers: []\n", "networkPolicy.callers"),
    ] {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values).unwrap();
        let (ok, out) = helm_sdk(&["template", CHART, "-f", file.to_str().unwrap()]);
        assert!(!ok && out.contains(refusal), "{values:?} rendered:\n{out}");
    }
}

#[test]
fn every_rendering_validates_strictly() {
    let dir = tempfile::tempdir().unwrap();
    for (label, values, namespace) in VALUE_SETS {
        let (_, docs) = render(*values, namespace);
        let (custom, native): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(is_custom_kind);
        // Kubernetes' own kinds: the same strict check as every manifest under deploy/.
        let file = dir.path().join(format!("{label}.yaml"));
        let text: Vec<String> = native.iter().map(|d| d.to_string()).collect();
        std::fs::write(&file, text.join("\n---\n")).unwrap();
        assert_kubernetes_validates(&file, native.len());
        // The ServiceMonitor: Prometheus Operator's schema, no unknown field.
        let kinds: Vec<&str> = custom.iter().map(|d| s(&d["kind"])).collect();
        assert_eq!(
            kinds,
            if *label == "gateway" {
                vec!["ServiceMonitor"]
            } else {
                vec![]
            },
            "{label}"
        );
        if !custom.is_empty() {
            assert_custom_kinds_validate(&custom);
        }
    }
}

#[test]
fn default_rendering_is_the_standalone_manifest() {
    let mut chart = value_set("default");
    let mut manifest = yaml_file("deploy/kubernetes/standalone.yaml");

    // The chart creates no Namespace: `helm install -n session-authz --create-namespace` does.
    let namespace = manifest.remove(
        manifest
            .iter()
            .position(|d| d["kind"] == "Namespace")
            .unwrap(),
    );
    assert_eq!(namespace["metadata"]["name"], "session-authz");

    for doc in &mut chart {
        strip_helm_labels(doc);
    }
    // The TOML in substance: the same settings and [[routes]], comments aside.
    let chart_toml: toml::Table = standalone_toml(&chart).parse().unwrap();
    let manifest_toml: toml::Table = standalone_toml(&manifest).parse().unwrap();
    assert_eq!(chart_toml, manifest_toml);
    assert_eq!(standalone_config(&chart), standalone_config(&manifest));
    for docs in [&mut chart, &mut manifest] {
        let config = docs.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        config["data"]["session-authz.toml"] = json!("(compared above)");
    }
    // The manifest's config-revision is bumped by hand after a ConfigMap edit; the chart rolls the
    // Pods itself with a checksum of the TOML.
    for doc in &mut chart {
        if doc["kind"] == "Deployment" {
            take_checksum(&mut doc["spec"]["template"], "checksum/config");
        }
    }
    for doc in &mut manifest {
        if doc["kind"] == "Deployment" {
            let annotations = doc["spec"]["template"]["metadata"]["annotations"]
                .as_object_mut()
                .unwrap();
            assert!(annotations
                .remove("session-authz.example.com/config-revision")
                .is_some());
        }
    }
    assert_same_objects(chart, manifest, "deploy/kubernetes/standalone.yaml");
}

#[test]
fn sidecar_rendering_is_the_sidecar_manifest() {
    let mut chart = value_set("sidecar");
    let mut manifest = yaml_file("deploy/kubernetes/sidecar.yaml");
    for doc in &mut chart {
        strip_helm_labels(doc);
        // The manifest is applied with `kubectl apply -n`; the chart names the release's.
        let namespace = doc["metadata"].as_object_mut().unwrap().remove("namespace");
        assert_eq!(namespace, Some(json!("dashboard")));
    }
    // Envoy's config in substance (the header comment names the chart's file).
    let envoy_config = |docs: &mut Vec<Value>| {
        let config = docs
            .iter_mut()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "dashboard-envoy")
            .unwrap();
        let text = s(&config["data"]["envoy.yaml"]).to_owned();
        config["data"]["envoy.yaml"] = json!("(compared above)");
        yaml_to_json(&text)
    };
    assert_eq!(
        envoy_config(&mut chart),
        envoy_config(&mut manifest),
        "files/envoy-sidecar.yaml drifted from deploy/kubernetes/sidecar.yaml's envoy.yaml"
    );
    for doc in &mut chart {
        if doc["kind"] == "Deployment" {
            take_checksum(&mut doc["spec"]["template"], "checksum/envoy-config");
        }
    }
    for doc in &mut manifest {
        if doc["kind"] == "Deployment" {
            let annotations = doc["spec"]["template"]["metadata"]["annotations"]
                .as_object_mut()
                .unwrap();
            assert!(annotations
                .remove("dashboard.example.com/envoy-config-revision")
                .is_some());
        }
    }
    assert_same_objects(chart, manifest, "deploy/kubernetes/sidecar.yaml");
}

#[test]
fn gateway_values_render_a_tls_ipv6_install_for_envoy_gateway() {
    let docs = value_set("gateway");
    let values = &yaml_file("deploy/helm/session-authz/ci/gateway-values.yaml")[0];
    let deployment = find(&docs, "Deployment", "session-authz");
    let template = &deployment["spec"]["template"];
    let pod = &template["spec"];
    assert_hardened(pod);
    assert_eq!(deployment["spec"]["replicas"], values["replicas"]);
    assert_budgeted(&docs, deployment);
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "session-authz")["spec"]["minAvailable"],
        2
    );
    assert_eq!(
        template["metadata"]["annotations"]["example.com/owner"],
        "platform"
    );

    // session-authz's own reading of the rendered TOML and environment.
    let config = standalone_config(&docs);
    let authz = container(pod, "session-authz");
    let env = env_of(authz);
    let grpc_addr = config_str(&config, "grpc_addr");
    assert_eq!(grpc_addr, "[::]:9001");
    assert_eq!(config_str(&config, "http_addr"), "[::]:9002");
    assert_eq!(config_str(&config, "login_url"), "/login");
    assert_eq!(config["csrf_trusted_origins"].as_array().unwrap().len(), 1);
    assert_eq!(config["cache_max_entries"].as_integer(), Some(50_000));
    let routes = config["routes"].as_array().unwrap();
    assert_eq!(routes.len(), arr(&values["routes"]).len());
    let ops = routes
        .iter()
        .find(|r| r["prefix"].as_str() == Some("/ops"))
        .unwrap();
    assert_eq!(ops["csrf"].as_bool(), Some(false));

    // No forward-auth door anywhere: not in the config, the Pod, the Service or the policy.
    assert!(config.get("forward_auth_addr").is_none());
    assert_eq!(arr(&authz["ports"]).len(), 2);
    assert!(!docs
        .iter()
        .any(|d| d["metadata"]["name"] == "session-authz-headless"));
    let service = find(&docs, "Service", "session-authz");
    let service_ports = arr(&service["spec"]["ports"]);
    assert_eq!(service_ports.len(), 1);
    assert_eq!(resolve_port(pod, &service_ports[0]["targetPort"]), 9001);

    // TLS: every file session-authz reads comes from the Secret, mounted read-only; kubelet's
    // gRPC probe has no TLS, so readiness is /readyz on the ops port.
    let secret_volume = arr(&pod["volumes"])
        .iter()
        .find(|v| v["secret"]["secretName"] == "session-authz-tls")
        .expect("the TLS Secret as a volume");
    let mount = arr(&authz["volumeMounts"])
        .iter()
        .find(|m| m["name"] == secret_volume["name"])
        .unwrap();
    assert_eq!(mount["readOnly"], true);
    for key in ["tls_cert", "tls_key", "tls_client_ca"] {
        let (dir, _) = config_str(&config, key).rsplit_once('/').unwrap();
        assert_eq!(dir, s(&mount["mountPath"]), "{key}");
    }
    assert!(authz["readinessProbe"]["grpc"].is_null());
    assert_eq!(authz["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        resolve_port(pod, &authz["readinessProbe"]["httpGet"]["port"]),
        port_of(config_str(&config, "http_addr"))
    );

    // The longer drain still fits the grace period and Istio's drain.
    let authz_stop = drain_delay(&config, &env, Some(standalone_toml(&docs)))
        + duration(config_str(&config, "shutdown_grace"));
    assert_eq!(authz_stop, duration("18s"));
    assert_shutdown_fits(template, authz_stop);

    // Envoy Gateway's proxies may call gRPC; the scrapers reach only the ops ports.
    let policy = find(&docs, "NetworkPolicy", "session-authz");
    let admitted = network_policy_peers(policy, pod);
    let grpc = peers_of(&admitted, port_of(grpc_addr));
    assert!(grpc.iter().any(|peer| {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            == "envoy-gateway-system"
            && peer["podSelector"]["matchLabels"]["app.kubernetes.io/managed-by"] == "envoy-gateway"
    }));
    let scrapers = peers_of(&admitted, port_of(config_str(&config, "http_addr")));
    assert!(!scrapers.is_empty());
    assert_eq!(scrapers, peers_of(&admitted, ISTIO_MERGED_METRICS_PORT));
    for peer in &scrapers {
        assert!(!grpc.contains(peer), "{peer}");
    }

    // The ServiceMonitor selects exactly the metrics Service, whose named port is the ops port.
    let monitor = find(&docs, "ServiceMonitor", "session-authz");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let selected: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Service")
        .filter(|d| {
            monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &d["metadata"]["labels"][k] == v)
        })
        .collect();
    assert_eq!(selected.len(), 1);
    assert_eq!(selected[0]["metadata"]["name"], "session-authz-metrics");
    let endpoint = &arr(&monitor["spec"]["endpoints"])[0];
    assert_eq!(endpoint["path"], "/metrics");
    let port = arr(&selected[0]["spec"]["ports"])
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .unwrap();
    assert_eq!(
        resolve_port(pod, &port["targetPort"]),
        port_of(config_str(&config, "http_addr"))
    );
    for (label, value) in selected[0]["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&template["metadata"]["labels"][label], value);
    }
}
