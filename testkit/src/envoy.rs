//! Real Envoy (the pinned `.tools/bin/envoy`): the shipped `envoy/envoy.yaml` with only its ports
//! substituted, or any config a test builds; started on loopback port 0, read through its admin.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{root, run, tool, Proc};
use crate::wait::eventually;

/// The shipped `envoy/envoy.yaml` with every address in `authz` as an endpoint of the
/// session_authz cluster (same health check, same load balancing) in place of 9001, `app` in
/// place of 8000 and of the sign-in page's 5000, and port 0 (Envoy picks) for the listener
/// (8080) and the admin (9901).
pub fn shipped_config(authz: &[SocketAddr], app: SocketAddr) -> String {
    shipped_config_with_signin(authz, app, app)
}

/// Like [`shipped_config`], with `signin` serving the sign-in page (5000).
pub fn shipped_config_with_signin(
    authz: &[SocketAddr],
    app: SocketAddr,
    signin: SocketAddr,
) -> String {
    render("envoy.yaml", authz, app, Some(signin))
}

/// The session-authz port a shipped Envoy config names: 9001 (gRPC) in `envoy.yaml`, 9003 (the
/// forward-auth door) in `envoy-http.yaml`.
fn authz_port(file: &str) -> u16 {
    match file {
        "envoy-http.yaml" => 9003,
        _ => 9001,
    }
}

/// Like [`shipped_config`], for any file of `envoy/` without a sign-in page (its session-authz
/// port replaced).
pub fn shipped_file_config(file: &str, authz: &[SocketAddr], app: SocketAddr) -> String {
    render(file, authz, app, None)
}

fn render(file: &str, authz: &[SocketAddr], app: SocketAddr, signin: Option<SocketAddr>) -> String {
    let first = authz.first().expect("at least one session-authz endpoint");
    let shipped = root().join("envoy").join(file);
    let mut yaml = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|err| panic!("read {}: {err}", shipped.display()));
    for (from, to) in [
        (8080, 0),
        (9901, 0),
        (authz_port(file), first.port()),
        (8000, app.port()),
    ]
    .into_iter()
    .chain(signin.map(|signin| (5000, signin.port())))
    {
        let needle = format!("port_value: {from} ");
        assert_eq!(
            yaml.matches(&needle).count(),
            1,
            "{file} should hold {needle:?} once"
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
        "{file} should hold the session_authz endpoint {single:?} once"
    );
    let all: String = authz.iter().map(entry).collect();
    let yaml = yaml.replace(&single, &all);
    // A server_uri (http_service) names the address too; Envoy uses the cluster, but keep it true.
    let uri = format!("uri: http://127.0.0.1:{}", authz_port(file));
    yaml.replace(&uri, &format!("uri: http://{first}"))
}

/// `envoy --mode validate` on a config file: it must pass.
pub fn validate_file(path: &Path) {
    run(Command::new(tool("envoy"))
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(path));
}

/// `envoy --mode validate` on a config (YAML or JSON): it must pass.
pub fn validate(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name(config));
    std::fs::write(&path, config).unwrap();
    validate_file(&path);
}

/// Envoy picks the parser by the file's extension.
fn file_name(config: &str) -> &'static str {
    if config.trim_start().starts_with('{') {
        "envoy.json"
    } else {
        "envoy.yaml"
    }
}

/// Real Envoy on loopback, stopped on drop; its log (at `warning`) and its stdout (where the
/// shipped config writes its access log) go to files.
pub struct EnvoyProcess {
    child: Proc,
    /// The (first) listener's address.
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl EnvoyProcess {
    /// The shipped config; `authz` and `app` replace the sample's 9001 and 8000.
    pub async fn start(authz: SocketAddr, app: SocketAddr) -> Self {
        Self::start_with_replicas(&[authz], app).await
    }

    /// Like [`EnvoyProcess::start`], with every address in `authz` an endpoint of the
    /// session_authz cluster.
    pub async fn start_with_replicas(authz: &[SocketAddr], app: SocketAddr) -> Self {
        Self::start_with_config(&shipped_config(authz, app)).await
    }

    /// The shipped config with `signin` serving its sign-in page.
    pub async fn start_with_signin(authz: SocketAddr, app: SocketAddr, signin: SocketAddr) -> Self {
        Self::start_with_config(&shipped_config_with_signin(&[authz], app, signin)).await
    }

    /// Any config (YAML or JSON) whose admin and listeners bind loopback port 0.
    pub async fn start_with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(config));
        let admin_file = dir.path().join("admin-address");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("envoy.log")).unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let child = Proc::spawn(
            Command::new(tool("envoy"))
                .arg("-c")
                .arg(&path)
                .arg("--admin-address-path")
                .arg(&admin_file)
                .args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "-l",
                    "warning",
                    // The access log reaches stdout within 0.2 s, not Envoy's default 10 s.
                    "--file-flush-interval-msec",
                    "200",
                ])
                .stdout(stdout)
                .stderr(log),
        );
        let mut envoy = Self {
            child,
            listener: "127.0.0.1:1".parse().unwrap(),
            admin: "127.0.0.1:1".parse().unwrap(),
            dir,
        };
        let admin = eventually(Duration::from_secs(30), || async {
            std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await
        .unwrap_or_else(|| panic!("Envoy wrote no admin address: {}", envoy.log()));
        envoy.admin = admin;
        let ready = eventually(Duration::from_secs(30), || async {
            let ready = admin_client()
                .get(format!("http://{admin}/ready"))
                .send()
                .await
                .ok()?;
            (ready.status() == 200).then_some(())
        })
        .await;
        assert!(ready.is_some(), "Envoy never ready: {}", envoy.log());
        envoy.listener = envoy.listener_addr().await;
        envoy
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What Envoy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// What Envoy has written to stdout so far: the shipped config's access log, one JSON
    /// object a line (flushed every 0.2 s here; wait for lines with `eventually`).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// The body of an admin page, e.g. `/stats?filter=…`.
    pub async fn admin_text(&self, path_and_query: &str) -> String {
        let url = format!("http://{}{path_and_query}", self.admin);
        admin_client()
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|err| panic!("Envoy admin {url}: {err}"))
            .text()
            .await
            .unwrap_or_else(|err| panic!("Envoy admin {url}: {err}"))
    }

    /// The address of Envoy's (first) listener, asked from its admin `/listeners`.
    async fn listener_addr(&self) -> SocketAddr {
        let text = self.admin_text("/listeners?format=json").await;
        let listeners: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("Envoy admin /listeners is not JSON: {err}"));
        let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]
            ["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("no listener port in {text}"));
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The health flags Envoy's admin `/clusters` shows for the (first) session_authz host.
    pub async fn authz_health(&self) -> String {
        self.authz_hosts("health_flags")
            .await
            .into_iter()
            .next()
            .map(|(_, flags)| flags)
            .unwrap_or_default()
    }

    /// One per-host value of the session_authz cluster from admin `/clusters`, for every host
    /// (e.g. `health_flags` → `healthy` or `/failed_active_hc`, `rq_success` → a count).
    pub async fn authz_hosts(&self, stat: &str) -> Vec<(SocketAddr, String)> {
        let clusters = self.admin_text("/clusters").await;
        // Lines read `session_authz::127.0.0.1:9001::health_flags::healthy`.
        clusters
            .lines()
            .filter_map(|line| {
                let mut parts = line.split("::");
                let (cluster, host, name, value) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                if cluster != "session_authz" || name != stat {
                    return None;
                }
                Some((host.parse().ok()?, value.to_owned()))
            })
            .collect()
    }
}

/// Admin calls go straight to loopback, whatever proxy the environment names.
fn admin_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
