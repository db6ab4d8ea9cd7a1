//! Process helpers shared by the benchmark and the chaos run: children stopped by pid on drop,
//! free loopback ports, real Envoy running the shipped sample, /proc readings.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/common/envoy_config.rs"]
mod envoy_config;
#[path = "../../tests/common/procfs.rs"]
pub mod procfs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process stopped (by pid) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The folder of the binaries built with this example (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

pub async fn wait_for_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Real Envoy running the shipped sample with `authz` and `app` substituted; returns its listener.
pub async fn start_envoy(authz: SocketAddr, app: SocketAddr, dir: &Path) -> (Proc, SocketAddr) {
    let config = dir.join(format!("envoy-{}.yaml", authz.port()));
    let admin_file = dir.join(format!("admin-{}", authz.port()));
    std::fs::write(&config, envoy_config::sample_with_ports(authz, app)).unwrap();
    let envoy = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/envoy");
    let child = Command::new(envoy)
        .arg("-c")
        .arg(&config)
        .arg("--admin-address-path")
        .arg(&admin_file)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "error"])
        .stdout(Stdio::null())
        .spawn()
        .expect("Envoy installed by scripts/install-tools.sh");
    let proc = Proc(child);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut admin = None;
    for _ in 0..200 {
        if let Some(addr) = std::fs::read_to_string(&admin_file)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        {
            let ready = client.get(format!("http://{addr}/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                admin = Some(addr);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = admin.expect("Envoy ready");
    (proc, envoy_config::listener_addr(admin).await)
}
