//! Processes: the repository and its pinned tools, the binaries cargo built next to the running
//! test or example, children stopped by pid when dropped, and free loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The repository's root folder (this crate lives in its `testkit/`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the repository")
}

/// Path of a pinned tool installed by scripts/install-tools.sh; missing is a failure, not a skip.
pub fn tool(name: &str) -> PathBuf {
    let path = root().join(".tools/bin").join(name);
    assert!(
        path.exists(),
        "{name} not found at {}: run scripts/install-tools.sh (make test does)",
        path.display()
    );
    path
}

/// The Python of `.tools/venv` (PyJWT and cryptography, pinned by scripts/install-tools.sh).
pub fn python() -> PathBuf {
    let path = root().join(".tools/venv/bin/python");
    assert!(
        path.exists(),
        "{} not found: run scripts/install-tools.sh (make test does)",
        path.display()
    );
    path
}

/// Runs `command` to success and returns its stdout.
pub fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A binary of this repository built with the running test or example: cargo puts both one
/// folder below `target/<profile>` (`deps/` or `examples/`), the binaries in it, and builds
/// the package's binaries before its integration tests.
pub fn binary(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "{} not built: cargo build --bins --examples",
        path.display()
    );
    path
}

/// An example of this repository (`target/<profile>/examples/NAME`), like the sample validator
/// the README's demo runs; `make test` builds them before the tests.
pub fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: cargo build --examples",
        path.display()
    );
    path
}

/// `target/<profile>`, one folder above the running test or example.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("run from target/<profile>/deps or target/<profile>/examples")
        .to_path_buf()
}

/// The session-authz binary.
pub fn session_authz() -> PathBuf {
    binary("session-authz")
}

/// A child process stopped (by pid) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(command: &mut Command) -> Self {
        Self(
            command
                .spawn()
                .unwrap_or_else(|err| panic!("start {command:?}: {err}")),
        )
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port free right now, for a process that must keep its address across restarts.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
