//! The shipped `envoy/envoy.yaml` with only its ports substituted; shared by the end-to-end
//! tests and the benchmark.

use std::net::SocketAddr;
use std::path::Path;

/// The sample with `authz` for 9001 and `app` for 8000, and port 0 (Envoy picks) for the
/// listener (8080) and the admin (9901).
pub(crate) fn sample_with_ports(authz: SocketAddr, app: SocketAddr) -> String {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml");
    let mut yaml = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|err| panic!("read {}: {err}", shipped.display()));
    for (from, to) in [
        (8080, 0),
        (9901, 0),
        (9001, authz.port()),
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
    yaml
}
