//! deploy/envoy-gateway/, offline: every object validated against the schemas of the pinned
//! Gateway API and Envoy Gateway packages (scripts/validate-crds.mjs: field types, required
//! fields, enums, patterns, no unknown field; not the CRDs' CEL rules), and held to what
//! envoy/envoy.yaml and the session-authz manifests say: the SecurityPolicy reaches the
//! session-authz Service over gRPC and sends exactly the headers the shipped Envoy config sends,
//! every route is either checked or strips the identity headers, the header-alias Lua is the
//! shipped one, and the per-route rule Envoy gives in context_extensions is in [[routes]].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_json::Value;
use session_authz_testkit::manifests::*;

const IDENTITY_HEADERS: &[&str] = &[
    "x-auth-user",
    "x-auth-roles",
    "x-auth-email",
    "x-auth-assertion",
];

fn envoy_gateway_docs() -> Vec<Value> {
    yaml_files_under("deploy/envoy-gateway")
        .iter()
        .flat_map(|f| yaml_to_json(&std::fs::read_to_string(f).unwrap()))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The ext_authz filter of envoy/envoy.yaml's dashboard listener, and its other HTTP filters.
fn sample_http_filters() -> Vec<Value> {
    let sample = yaml_file("envoy/envoy.yaml").remove(0);
    arr(
        &sample["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"],
    )
    .clone()
}

fn sample_filter(name: &str) -> Value {
    sample_http_filters()
        .into_iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("envoy/envoy.yaml has no {name}"))
}

/// Whether a policy's targetRefs name this object (same namespace: policies are local).
fn targets(policy: &Value, object: &Value) -> bool {
    policy["metadata"]["namespace"] == object["metadata"]["namespace"]
        && arr(&policy["spec"]["targetRefs"]).iter().any(|t| {
            t["kind"] == object["kind"]
                && t["name"] == object["metadata"]["name"]
                && t["group"] == "gateway.networking.k8s.io"
        })
}

#[test]
fn envoy_gateway_objects_validate_against_their_schemas() {
    let docs = envoy_gateway_docs();
    // All of them are custom kinds; none is left to kubernetes-validate.
    assert!(docs.iter().all(is_custom_kind));
    let kinds: BTreeSet<&str> = docs.iter().map(|d| s(&d["kind"])).collect();
    for kind in ["Gateway", "HTTPRoute", "SecurityPolicy", "ReferenceGrant"] {
        assert!(kinds.contains(kind), "no {kind}");
    }
    assert_custom_kinds_validate(&docs);
}

#[test]
fn security_policy_calls_session_authz_over_grpc_with_the_headers_it_reads() {
    let docs = envoy_gateway_docs();
    let policies = of_kind(&docs, "SecurityPolicy");
    assert_eq!(policies.len(), 1);
    let policy = policies[0];
    let ext_auth = &policy["spec"]["extAuth"];
    assert!(
        ext_auth["http"].is_null(),
        "the gRPC door, not forward-auth"
    );
    assert_eq!(ext_auth["failOpen"], false);

    // The backend is the standalone Service's gRPC port.
    let standalone = yaml_file("deploy/kubernetes/standalone.yaml");
    let backends = arr(&ext_auth["grpc"]["backendRefs"]);
    assert_eq!(backends.len(), 1);
    let backend = &backends[0];
    assert!(backend["kind"].is_null() || backend["kind"] == "Service");
    let service = find(&standalone, "Service", s(&backend["name"]));
    assert_eq!(service["metadata"]["namespace"], backend["namespace"]);
    let port = arr(&service["spec"]["ports"])
        .iter()
        .find(|p| p["port"] == backend["port"])
        .expect("a port of the Service");
    assert_eq!(port["appProtocol"], "grpc");
    let config = standalone_config(&standalone);
    let deployment = find(&standalone, "Deployment", "session-authz");
    assert_eq!(
        resolve_port(&deployment["spec"]["template"]["spec"], &port["targetPort"]),
        port_of(config_str(&config, "grpc_addr"))
    );

    // Above session-authz's validator timeout, as in envoy/envoy.yaml, so its own 503 wins.
    let ext_authz = sample_filter("envoy.filters.http.ext_authz");
    let sample_timeout = duration(s(&ext_authz["typed_config"]["grpc_service"]["timeout"]));
    let timeout = duration(s(&ext_auth["timeout"]));
    assert_eq!(timeout, sample_timeout);
    assert!(timeout > duration(config_str(&config, "validator_timeout")));

    // Exactly the headers envoy/envoy.yaml's allowed_headers lets through (without the list
    // Envoy Gateway sends every header), the ones session-authz reads among them.
    let sent: BTreeSet<&str> = arr(&ext_auth["headersToExtAuth"]).iter().map(s).collect();
    let allowed: BTreeSet<&str> = arr(&ext_authz["typed_config"]["allowed_headers"]["patterns"])
        .iter()
        .map(|p| s(&p["exact"]))
        .collect();
    assert_eq!(sent, allowed);
    for header in [
        "cookie",
        "x-session-token",
        "origin",
        "sec-fetch-site",
        "sec-fetch-mode",
        "accept",
        "x-request-id",
        "traceparent",
    ] {
        assert!(sent.contains(header), "{header}");
    }

    // A Service in another namespace: granted there, to this policy's namespace.
    let grant = of_kind(&docs, "ReferenceGrant")
        .into_iter()
        .find(|g| g["metadata"]["namespace"] == backend["namespace"])
        .expect("a ReferenceGrant in the Service's namespace");
    assert!(arr(&grant["spec"]["from"]).iter().any(|f| {
        f["group"] == "gateway.envoyproxy.io"
            && f["kind"] == "SecurityPolicy"
            && f["namespace"] == policy["metadata"]["namespace"]
    }));
    assert!(arr(&grant["spec"]["to"])
        .iter()
        .any(|t| t["group"] == "" && t["kind"] == "Service" && t["name"] == backend["name"]));
}

#[test]
fn every_route_is_checked_or_strips_the_identity_headers() {
    let docs = envoy_gateway_docs();
    let policy = of_kind(&docs, "SecurityPolicy")[0];
    let gateways = of_kind(&docs, "Gateway");
    assert_eq!(gateways.len(), 1);
    let gateway = gateways[0];
    let class = of_kind(&docs, "GatewayClass")
        .into_iter()
        .find(|c| c["metadata"]["name"] == gateway["spec"]["gatewayClassName"])
        .expect("the Gateway's class");
    assert_eq!(
        class["spec"]["controllerName"],
        "gateway.envoyproxy.io/gatewayclass-controller"
    );
    // The session cookie never crosses the network in plain text.
    for listener in arr(&gateway["spec"]["listeners"]) {
        assert_eq!(listener["protocol"], "HTTPS", "{listener}");
    }

    let routes = of_kind(&docs, "HTTPRoute");
    let mut checked_prefixes = Vec::new();
    for route in &routes {
        let name = s(&route["metadata"]["name"]);
        for parent in arr(&route["spec"]["parentRefs"]) {
            assert_eq!(parent["name"], gateway["metadata"]["name"], "{name}");
        }
        let rules = arr(&route["spec"]["rules"]);
        if targets(policy, route) {
            for rule in rules {
                for m in arr(&rule["matches"]) {
                    checked_prefixes.push(s(&m["path"]["value"]).to_owned());
                }
            }
            continue;
        }
        // Not checked: every rule removes client-sent identity headers, and serves a prefix
        // longer than "/", so that everything not listed falls to the checked route.
        for rule in rules {
            let removed: BTreeSet<&str> = arr(&rule["filters"])
                .iter()
                .filter(|f| f["type"] == "RequestHeaderModifier")
                .flat_map(|f| arr(&f["requestHeaderModifier"]["remove"]).iter().map(s))
                .collect();
            for header in IDENTITY_HEADERS {
                assert!(removed.contains(header), "{name}: {header} reaches the app");
            }
            for m in arr(&rule["matches"]) {
                assert_eq!(m["path"]["type"], "PathPrefix", "{name}");
                assert!(
                    s(&m["path"]["value"]).len() > 1,
                    "{name}: a public catch-all"
                );
            }
        }
    }
    // Checked by default: the guarded route catches every path.
    assert_eq!(checked_prefixes, vec!["/".to_owned()]);
}

#[test]
fn gateway_drops_header_aliases_as_the_shipped_envoy_does() {
    let docs = envoy_gateway_docs();
    let gateway = of_kind(&docs, "Gateway")[0];

    // Underscores refused and one spelling per path, as envoy/envoy.yaml's listener.
    let client = of_kind(&docs, "ClientTrafficPolicy")
        .into_iter()
        .find(|p| targets(p, gateway))
        .expect("a ClientTrafficPolicy on the Gateway");
    assert_eq!(
        client["spec"]["headers"]["withUnderscoresAction"],
        "RejectRequest"
    );
    assert_eq!(
        client["spec"]["path"]["escapedSlashesAction"],
        "RejectRequest"
    );
    assert_eq!(client["spec"]["path"]["disableMergeSlashes"], false);

    // The other aliases: the same Lua as envoy/envoy.yaml's first filter, on the whole Gateway.
    let extension = of_kind(&docs, "EnvoyExtensionPolicy")
        .into_iter()
        .find(|p| targets(p, gateway))
        .expect("an EnvoyExtensionPolicy on the Gateway");
    let lua = arr(&extension["spec"]["lua"]);
    assert_eq!(lua.len(), 1);
    assert_eq!(lua[0]["type"], "Inline");
    let sample = sample_filter("envoy.filters.http.lua");
    assert_eq!(
        lua[0]["inline"], sample["typed_config"]["default_source_code"]["inline_string"],
        "the alias filter drifted from envoy/envoy.yaml's"
    );
}

#[test]
fn per_route_rules_of_the_shipped_envoy_are_in_routes_tables() {
    // Envoy Gateway's SecurityPolicy sends no context_extensions here: every rule envoy/envoy.yaml
    // gives a route that way must be in the [[routes]] of the standalone TOML and of the chart.
    let docs = envoy_gateway_docs();
    let policy = of_kind(&docs, "SecurityPolicy")[0];
    assert!(policy["spec"]["extAuth"]["contextExtensions"].is_null());

    let sample = yaml_file("envoy/envoy.yaml").remove(0);
    let routes = arr(
        &sample["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"],
    );
    let with_rules: Vec<(&str, &Value)> = routes
        .iter()
        .filter_map(|r| {
            let extensions = &r["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
                ["check_settings"]["context_extensions"];
            extensions
                .as_object()
                .map(|_| (s(&r["match"]["prefix"]), extensions))
        })
        .collect();
    assert!(!with_rules.is_empty());
    let toml: toml::Table = standalone_toml(&yaml_file("deploy/kubernetes/standalone.yaml"))
        .parse()
        .unwrap();
    let tables = toml["routes"].as_array().unwrap();
    let chart = yaml_file("deploy/helm/session-authz/values.yaml").remove(0);
    for (prefix, extensions) in with_rules {
        let table = tables
            .iter()
            .find(|t| t["prefix"].as_str() == Some(prefix))
            .unwrap_or_else(|| panic!("no [[routes]] for {prefix}"));
        let value = arr(&chart["routes"])
            .iter()
            .find(|r| r["prefix"] == prefix)
            .unwrap_or_else(|| panic!("the chart's routes have no {prefix}"));
        for (key, list) in extensions.as_object().unwrap() {
            let wanted: Vec<&str> = s(list).split(',').collect();
            let in_toml: Vec<&str> = table[key.as_str()]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(in_toml, wanted, "{prefix} {key}");
            let in_chart: Vec<&str> = arr(&value[key.as_str()]).iter().map(s).collect();
            assert_eq!(in_chart, wanted, "{prefix} {key} in the chart");
        }
    }
}
