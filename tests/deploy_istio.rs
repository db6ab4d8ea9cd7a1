//! The Istio configuration under deploy/: the extension provider, the CUSTOM policy's paths,
//! the filter that drops client-sent identity (run in real Envoy, as Istio would build the
//! chain), and that selectors, namespaces, principals and NetworkPolicies agree across deploy/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use serde_json::{json, Map, Value};
use session_authz_testkit::envoy::{self, EnvoyProcess};
use session_authz_testkit::http::{forged_identity_aliases, raw_get, with_aliases, Upstream};
use session_authz_testkit::manifests::*;
use session_authz_testkit::service::start_service_with_toml;
use session_authz_testkit::validator::{Answer, FakeValidator};

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

/// The fields of Istio's `envoyExtAuthzHttp` provider (MeshConfig's
/// EnvoyExternalAuthorizationHttpProvider).
const ISTIO_HTTP_PROVIDER_FIELDS: &[&str] = &[
    "service",
    "port",
    "timeout",
    "pathPrefix",
    "failOpen",
    "statusOnError",
    "includeRequestHeadersInCheck",
    "includeAdditionalHeadersInCheck",
    "includeRequestBodyInCheck",
    "headersToUpstreamOnAllow",
    "headersToDownstreamOnDeny",
    "headersToDownstreamOnAllow",
];

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
        .flat_map(|rel| yaml_file(&rel).into_iter().map(move |d| (rel.clone(), d)))
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

#[tokio::test(flavor = "multi_thread")]
async fn istio_identity_filter_drops_client_copies_in_envoy() {
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

    // The real session-authz, in-process, with the standalone ConfigMap's TOML (its
    // [[routes]]: the way Istio gets per-route rules) and a validator that knows an admin and
    // a viewer. Listeners on loopback port 0 instead of the ConfigMap's.
    let validator = FakeValidator::start(vec![
        (
            "user1-token",
            Answer::json(200, r#"{"valid":true,"user":"user1","roles":["admin"]}"#),
        ),
        (
            "user2-token",
            Answer::json(200, r#"{"valid":true,"user":"user2","roles":["viewer"]}"#),
        ),
    ])
    .await;
    let standalone = yaml_file("deploy/kubernetes/standalone.yaml");
    let config_map = find(&standalone, "ConfigMap", "session-authz-config");
    let authz = start_service_with_toml(
        s(&config_map["data"]["session-authz.toml"]),
        &[
            ("aimenu_url", &validator.url()),
            ("forward_auth_addr", "127.0.0.1:0"),
            ("log_format", "text"),
        ],
    )
    .await;
    let app = Upstream::start().await;

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
    let config = config.to_string();
    envoy::validate(&config);
    let envoy = EnvoyProcess::start_with_config(&config).await;
    let get = |target: &'static str, headers: Vec<(&'static str, &'static str)>| async move {
        raw_get(envoy.listener, target, &headers).await
    };

    // The policy is in force: an admin path without a session is refused.
    let response = get("/admin", vec![("x-auth-user", "admin")]).await;
    assert_eq!(response.status, 401, "{response:?}");

    // A public path: no identity header reaches the app, in any spelling (letter case, `_`,
    // `.` or any other alias character for `-`), and other headers are kept.
    let aliases = forged_identity_aliases(true);
    let mut public = with_aliases(&[("x-other", "kept")], &aliases);
    public.push(("X-Auth-User", "admin"));
    let response = raw_get(envoy.listener, "/public/page", &public).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.identity_as_cgi(),
        [Vec::<String>::new(), vec![], vec![], vec![]],
        "{response:?}"
    );
    assert_eq!(response.upstream_saw("x-other"), ["kept"]);

    // An admin path with a valid session: exactly session-authz's identity.
    let admin = with_aliases(&[("Cookie", "session=user1-token")], &aliases);
    for target in ["/admin", "/api/admin/users"] {
        let response = raw_get(envoy.listener, target, &admin).await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
        assert_eq!(
            response.identity_as_cgi(),
            [vec!["user1"], vec!["admin"], vec![], vec![]],
            "{target}: {response:?}"
        );
    }

    // The ConfigMap's [[routes]]: the settings are for admins, in every spelling the policy
    // and the sidecar's normalization let through to session-authz.
    for target in [
        "/admin/settings",
        "/admin/settings/mail?x=1",
        "/admin//settings",
        "/admin/./settings",
    ] {
        let viewer = get(target, vec![("Cookie", "session=user2-token")]).await;
        assert_eq!(viewer.status, 403, "{target}: {viewer:?}");
        assert_eq!(viewer.body, r#"{"error":"forbidden"}"#);
        let admin = get(target, vec![("Cookie", "session=user1-token")]).await;
        assert_eq!(admin.status, 200, "{target}: {admin:?}");
    }
    let viewer = get("/admin", vec![("Cookie", "session=user2-token")]).await;
    assert_eq!(viewer.status, 200, "the viewer keeps /admin: {viewer:?}");
}

/// The HTTP provider reaches the standalone forward-auth door with the prefix it takes off,
/// fails closed after the validator timeout, and passes what the sign-in and the identity need.
#[test]
fn istio_http_provider_matches_the_forward_auth_door() {
    let operator = yaml_file("deploy/istio/mesh-config.yaml").remove(0);
    let provider = arr(&operator["spec"]["meshConfig"]["extensionProviders"])
        .iter()
        .find(|p| p["name"] == "session-authz-http")
        .expect("the session-authz-http provider")["envoyExtAuthzHttp"]
        .clone();
    for field in provider.as_object().unwrap().keys() {
        assert!(
            ISTIO_HTTP_PROVIDER_FIELDS.contains(&field.as_str()),
            "{field} is not a field of Istio's HTTP provider; istiod would reject it"
        );
    }
    assert_eq!(provider["failOpen"], false);
    assert_eq!(provider["statusOnError"], "503");
    let config = standalone_config(&yaml_file("deploy/kubernetes/standalone.yaml"));
    assert_eq!(
        provider["pathPrefix"].as_str(),
        Some(config_str(&config, "forward_auth_path_prefix"))
    );
    let door_port: u64 = config_str(&config, "forward_auth_addr")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(provider["port"].as_u64(), Some(door_port));
    let timeout = humantime::parse_duration(s(&provider["timeout"])).unwrap();
    let validator = humantime::parse_duration(config_str(&config, "validator_timeout")).unwrap();
    assert!(timeout > validator, "{timeout:?} must exceed {validator:?}");
    let list = |key: &str| -> Vec<String> {
        arr(&provider[key])
            .iter()
            .map(|v| s(v).to_ascii_lowercase())
            .collect()
    };
    for needed in [
        "cookie",
        "x-session-token",
        "origin",
        "sec-fetch-site",
        "sec-fetch-mode",
        "accept",
    ] {
        assert!(
            list("includeRequestHeadersInCheck").contains(&needed.to_owned()),
            "{needed}"
        );
    }
    assert_eq!(
        list("headersToUpstreamOnAllow"),
        [
            "x-auth-user",
            "x-auth-roles",
            "x-auth-email",
            "x-auth-assertion"
        ]
    );
    for needed in ["location", "set-cookie", "retry-after", "content-type"] {
        assert!(
            list("headersToDownstreamOnDeny").contains(&needed.to_owned()),
            "{needed}"
        );
    }
    assert_eq!(list("headersToDownstreamOnAllow"), ["set-cookie"]);
}
