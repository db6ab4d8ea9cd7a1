//! Real nginx and Caddy (Debian's packages) and Traefik (the pinned `.tools/bin/traefik`), all
//! installed by scripts/install-tools.sh, running the shipped `proxies/` files with only their
//! ports substituted, on loopback, in a temporary folder; stopped by pid when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::http::try_raw_get;
use crate::process::{free_addr, root, tool, Proc};
use crate::wait::{eventually, listening};

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
    Traefik,
}

impl Kind {
    /// The shipped file, relative to the repository.
    pub fn shipped(self) -> &'static str {
        match self {
            Kind::Nginx => "proxies/nginx/nginx.conf",
            Kind::Caddy => "proxies/caddy/Caddyfile",
            Kind::Traefik => "proxies/traefik/dynamic.yml",
        }
    }

    /// The Debian package's binary; missing is a failure, not a skip.
    pub fn binary(self) -> PathBuf {
        let path = PathBuf::from(match self {
            Kind::Nginx => "/usr/sbin/nginx",
            Kind::Caddy => "/usr/bin/caddy",
            Kind::Traefik => return tool("traefik"),
        });
        assert!(
            path.exists(),
            "{} not found: run scripts/install-tools.sh (make test does)",
            path.display()
        );
        path
    }
}

/// The shipped file with the listener (8080; Traefik's is a flag), the door (9003) and the app
/// (8000) replaced, each found exactly once.
pub fn shipped_config(
    kind: Kind,
    listener: SocketAddr,
    door: SocketAddr,
    app: SocketAddr,
) -> String {
    let path = root().join(kind.shipped());
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let listen = match kind {
        Kind::Nginx => Some((
            "listen 127.0.0.1:8080;".to_owned(),
            format!("listen {listener};"),
        )),
        Kind::Caddy => Some((
            "http://:8080 {".to_owned(),
            format!("http://:{} {{", listener.port()),
        )),
        Kind::Traefik => None,
    };
    for (from, to) in listen.into_iter().chain([
        ("127.0.0.1:9003".to_owned(), door.to_string()),
        ("127.0.0.1:8000".to_owned(), app.to_string()),
    ]) {
        let count = text.matches(&from).count();
        let expected = if kind == Kind::Nginx && from.ends_with(":8000") {
            2 // the checked and the public location
        } else {
            1
        };
        assert_eq!(
            count,
            expected,
            "{} should hold {from:?} {expected} time(s)",
            kind.shipped()
        );
        text = text.replace(&from, &to);
    }
    text
}

/// The shipped `proxies/traefik/traefik.yml` (Traefik's static configuration) with its entry
/// point on `listener` and its file provider reading `dynamic`, each found exactly once.
pub fn traefik_static_config(listener: SocketAddr, dynamic: &std::path::Path) -> String {
    let path = root().join("proxies/traefik/traefik.yml");
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    for (from, to) in [
        ("\"127.0.0.1:8080\"".to_owned(), format!("\"{listener}\"")),
        (
            "filename: proxies/traefik/dynamic.yml".to_owned(),
            format!("filename: {}", dynamic.display()),
        ),
    ] {
        assert_eq!(
            text.matches(&from).count(),
            1,
            "traefik.yml should hold {from:?} once"
        );
        text = text.replace(&from, &to);
    }
    text
}

/// A proxy process on loopback, stopped when dropped (nginx with SIGTERM, so that its master
/// stops its workers; then SIGKILL if it lingers).
pub struct ProxyProcess {
    child: Proc,
    pub kind: Kind,
    pub listener: SocketAddr,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    pub async fn start(kind: Kind, door: SocketAddr, app: SocketAddr) -> Self {
        // nginx and Caddy cannot report a port 0 they bound: a port free right now.
        let listener = free_addr();
        Self::start_with_config(kind, listener, shipped_config(kind, listener, door, app)).await
    }

    /// The proxy on `config` (a whole file of its kind) that listens on `listener`.
    pub async fn start_with_config(kind: Kind, listener: SocketAddr, config: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut command = Command::new(kind.binary());
        match kind {
            Kind::Nginx => {
                std::fs::create_dir(dir.path().join("tmp")).unwrap();
                let file = dir.path().join("nginx.conf");
                std::fs::write(&file, config).unwrap();
                command
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&file)
                    .args(["-e", "stderr", "-g", "daemon off;"]);
            }
            Kind::Caddy => {
                let file = dir.path().join("Caddyfile");
                std::fs::write(&file, config).unwrap();
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&file)
                    // Caddy keeps its state under these; none of the user's.
                    .env("HOME", dir.path())
                    .env("XDG_DATA_HOME", dir.path().join("data"))
                    .env("XDG_CONFIG_HOME", dir.path().join("config"));
            }
            Kind::Traefik => {
                let dynamic = dir.path().join("dynamic.yml");
                std::fs::write(&dynamic, config).unwrap();
                let file = dir.path().join("traefik.yml");
                std::fs::write(&file, traefik_static_config(listener, &dynamic)).unwrap();
                command
                    .arg(format!("--configFile={}", file.display()))
                    .current_dir(dir.path());
            }
        }
        let child = Proc::spawn(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let proxy = Self {
            child,
            kind,
            listener,
            dir,
        };
        listening(listener).await;
        if kind == Kind::Traefik {
            // Traefik listens before its file provider's routers are loaded (404 until then);
            // the checked route answers without reaching the app.
            let routed = eventually(Duration::from_secs(20), || async {
                let response = try_raw_get(listener, "/admin", &[]).await.ok()?;
                (response.status != 404).then_some(())
            })
            .await;
            assert!(
                routed.is_some(),
                "Traefik never routed /admin: {}",
                proxy.log()
            );
        }
        proxy
    }

    /// The proxy's own process (nginx's master; its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the proxy has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Proc's own drop kills what is left.
    }
}
