//! The shipped `envoy/envoy.yaml` with only its ports substituted (and, for replica tests, its
//! session_authz endpoint repeated); shared by the end-to-end tests and the benchmark.

use std::net::SocketAddr;
use std::path::Path;

/// The sample with `authz` for 9001 and `app` for 8000, and port 0 (Envoy picks) for the
/// listener (8080) and the admin (9901).
pub(crate) fn sample_with_ports(authz: SocketAddr, app: SocketAddr) -> String {
    sample_with_authz_endpoints(&[authz], app)
}

/// The sample with every address in `authz` as an endpoint of the session_authz cluster (same
/// health check, same load balancing), `app` for 8000, and port 0 for the listener and admin.
pub(crate) fn sample_with_authz_endpoints(authz: &[SocketAddr], app: SocketAddr) -> String {
    let first = authz.first().expect("at least one session-authz endpoint");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml");
    let mut yaml = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|err| panic!("read {}: {err}", shipped.display()));
    for (from, to) in [
        (8080, 0),
        (9901, 0),
        (9001, first.port()),
        (8000, app.port()),
    ] {
        let needle = format!("port_value: {from} ");
        assert_eq!(
            yaml.matches(&needle).count(),
            1,
            "envoy.yaml should hold {needle:?} once"
        );
        yaml = yaml.replace(&needle, &format!("port_value: {to} "));
    }
    // Each further replica repeats the first endpoint entry with its own port.
    let entry = |addr: &SocketAddr| {
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "the sample's endpoints are loopback"
        );
        format!(
            "              - endpoint:\n                  address:\n                    \
             socket_address: {{ address: 127.0.0.1, port_value: {} }}\n",
            addr.port()
        )
    };
    let single = entry(first);
    assert_eq!(
        yaml.matches(&single).count(),
        1,
        "envoy.yaml should hold the session_authz endpoint {single:?} once"
    );
    let all: String = authz.iter().map(entry).collect();
    yaml.replace(&single, &all)
}

/// The address of Envoy's (first) listener, asked from its admin `/listeners`.
pub(crate) async fn listener_addr(admin: SocketAddr) -> SocketAddr {
    let text = reqwest::get(format!("http://{admin}/listeners?format=json"))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|err| panic!("Envoy admin /listeners: {err}"))
        .text()
        .await
        .unwrap_or_else(|err| panic!("Envoy admin /listeners: {err}"));
    let listeners: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("Envoy admin /listeners is not JSON: {err}"));
    let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no listener port in {text}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}
