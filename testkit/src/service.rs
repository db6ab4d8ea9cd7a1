//! session-authz under test: in-process on loopback port 0 ([`start_service`]), or its binary as
//! a child process ([`ServiceProcess`]) whose log lines are kept.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use figment::providers::{Format, Toml};
use session_authz::app::{self, Running};
use session_authz::config::{flags_from_pairs, Config};
use tonic::transport::Channel;

use crate::process::{session_authz, Proc};

/// The service in-process on loopback port 0 with the given config keys.
pub async fn start_service(pairs: &[(&str, &str)]) -> Running {
    start_service_with_toml("", pairs).await
}

/// [`start_service`] with a TOML file's content under the keys (for `[[routes]]`, TOML only).
pub async fn start_service_with_toml(toml: &str, pairs: &[(&str, &str)]) -> Running {
    app::start(&config(toml, pairs)).await.unwrap()
}

/// The configuration of a TOML file's content with these keys over it (as flags), on loopback
/// port 0 and without a drain delay unless the keys say otherwise.
pub fn config(toml: &str, pairs: &[(&str, &str)]) -> Config {
    // No drain delay unless a test asks for one: most tests stop the service many times.
    let mut all = vec![
        ("grpc_addr", "127.0.0.1:0"),
        ("http_addr", "127.0.0.1:0"),
        ("drain_delay", "0"),
    ];
    all.extend_from_slice(pairs);
    // A file, as the service reads it: `[[routes]]` is refused from anywhere else.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), toml).unwrap();
    let figment = figment::Figment::new()
        .merge(Toml::file_exact(file.path()))
        .merge(flags_from_pairs(&all));
    Config::from_figment(&figment).unwrap()
}

/// An Authorization client of the service at `grpc_addr`.
pub async fn client_at(grpc_addr: SocketAddr) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{grpc_addr}"))
        .await
        .unwrap()
}

pub async fn client(running: &Running) -> AuthorizationClient<Channel> {
    client_at(running.grpc_addr()).await
}

/// A gRPC channel to the service at `grpc_addr`, for clients other than Authorization.
pub async fn channel_at(grpc_addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub async fn channel(running: &Running) -> Channel {
    channel_at(running.grpc_addr()).await
}

/// The `session-authz` binary started as a child process on loopback port 0.
pub struct ServiceProcess {
    /// Stopped when the handle drops.
    pub child: Proc,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The forward-auth door, when `SESSION_AUTHZ_FORWARD_AUTH_ADDR` is set.
    pub forward_auth_addr: Option<SocketAddr>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts the binary with JSON logs and waits for its "ready" line.
    pub fn spawn(env: &[(&str, &str)]) -> Self {
        Self::start(std::process::Command::new(session_authz()), env)
    }

    /// Like [`spawn`](Self::spawn), with these soft and hard limits on open files (set by the
    /// shell, which then becomes the binary: the pid is the service's).
    pub fn spawn_with_fd_limits(soft: u64, hard: u64, env: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new("/bin/sh");
        command
            .args([
                "-c",
                &format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\""),
            ])
            .arg(session_authz());
        Self::start(command, env)
    }

    fn start(mut command: std::process::Command, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;

        command
            .env_clear()
            .env("SESSION_AUTHZ_GRPC_ADDR", "127.0.0.1:0")
            .env("SESSION_AUTHZ_HTTP_ADDR", "127.0.0.1:0")
            .env("SESSION_AUTHZ_LOG_FORMAT", "json")
            .env("SESSION_AUTHZ_DRAIN_DELAY", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = Proc::spawn(&mut command);
        let stderr = child.stderr.take().expect("stderr piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if line.contains("session-authz ready") {
                        let _ = ready_tx.send(line.clone());
                    }
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let ready = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            // The child is stopped as the panic drops it.
            Err(_) => panic!("session-authz never got ready: {:?}", lines.lock().unwrap()),
        };
        // JSON lines by default; `key=value` pairs when a test asks for text logs.
        let optional_addr = |key: &str| -> Option<SocketAddr> {
            if let Ok(fields) = serde_json::from_str::<serde_json::Value>(&ready) {
                return fields[key].as_str().map(|addr| addr.parse().unwrap());
            }
            let prefix = format!("{key}=");
            ready
                .split_whitespace()
                .find_map(|word| word.strip_prefix(&prefix))
                .map(|addr| addr.parse().unwrap())
        };
        let addr = |key: &str| -> SocketAddr {
            optional_addr(key).unwrap_or_else(|| panic!("no {key} in {ready:?}"))
        };
        Self {
            grpc_addr: addr("grpc_addr"),
            http_addr: addr("http_addr"),
            forward_auth_addr: optional_addr("forward_auth_addr"),
            child,
            lines,
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// Kills the process at once (SIGKILL: no drain, as a crash or the OOM killer would) and
    /// waits until it is gone.
    pub fn kill(&mut self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
        self.wait_exit(Duration::from_secs(5))
            .expect("killed, but still running after 5 s");
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}
