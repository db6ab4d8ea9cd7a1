//! Instructions per request under valgrind's callgrind: a figure this shared machine's swings
//! (±30 % in throughput between runs) do not move. Each server runs under callgrind, gets a
//! warm-up, has its counters zeroed (`callgrind_control -z`), serves a fixed number of requests
//! and is asked for the instructions all its threads executed (`callgrind_control -e`).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_authz_testkit::process::{run, Proc};
use session_authz_testkit::wait::eventually;

use super::{clients, one_call, Load};

/// Requests before the counters are zeroed (connections, caches and allocator warm).
pub(crate) const WARMUP: usize = 4_000;
/// Requests counted.
pub(crate) const COUNTED: usize = 20_000;
/// Requests in flight while counting.
const CONCURRENCY: usize = 16;

/// A server running under callgrind, stopped on drop.
pub(crate) struct Counted {
    child: Proc,
    _dir: tempfile::TempDir,
}

impl Counted {
    /// `command`'s program and arguments under callgrind, with only the environment `command`
    /// sets explicitly.
    pub(crate) fn wrap(command: &Command) -> Command {
        let mut wrapped = Command::new("valgrind");
        wrapped
            .env_clear()
            .arg("--tool=callgrind")
            .arg("-q")
            .arg(command.get_program())
            .args(command.get_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in command.get_envs() {
            if let Some(value) = value {
                wrapped.env(name, value);
            }
        }
        wrapped
    }

    /// Starts `wrapped` (from [`Counted::wrap`]) in a scratch folder for callgrind's files and
    /// waits until `addr` accepts connections (slowly: every thread runs on callgrind's CPU).
    pub(crate) async fn start(mut wrapped: Command, addr: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kept = std::env::var_os("BENCH_CALLGRIND_DIR").map(std::path::PathBuf::from);
        wrapped.current_dir(kept.as_deref().unwrap_or(dir.path()));
        let child = Proc::spawn(&mut wrapped);
        eventually(Duration::from_secs(120), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await
        .unwrap_or_else(|| panic!("{wrapped:?} never listened on {addr}"));
        Self { child, _dir: dir }
    }

    fn control(&self, flag: &str) -> String {
        run(Command::new("callgrind_control")
            .arg(flag)
            .arg(self.child.id().to_string()))
    }

    /// Instructions per request of `load`: warm-up, zero, count.
    pub(crate) async fn per_request(&self, load: Load) -> f64 {
        drive(load, WARMUP).await;
        self.control("-z");
        drive(load, COUNTED).await;
        let total = total(&self.control("-e"));
        if std::env::var_os("BENCH_CALLGRIND_DIR").is_some() {
            // The counted requests' profile, for callgrind_annotate.
            self.control("-d");
        }
        total as f64 / COUNTED as f64
    }
}

/// The sum over threads of `callgrind_control -e`'s per-thread lines (`Th 1  620,513`).
fn total(report: &str) -> u64 {
    report
        .lines()
        .filter(|line| line.trim_start().starts_with("Th "))
        .filter_map(|line| line.split_whitespace().last())
        .map(|count| count.replace(',', "").parse::<u64>().unwrap_or(0))
        .sum()
}

/// Sends exactly `n` requests of `load`, [`CONCURRENCY`] at a time; every one must succeed.
async fn drive(load: Load, n: usize) {
    let (grpc, http) = clients(load, CONCURRENCY).await;
    let left = Arc::new(AtomicUsize::new(n));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let mut grpc = grpc.clone();
            let http = http.clone();
            let left = left.clone();
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    assert!(
                        one_call(load, &mut grpc, &http).await,
                        "a counted request failed"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_every_thread() {
        let report = "PID 1: x\n\n  Totals:     Ir \n   Th 1  620,513 \n   Th 2    7,081 \n";
        assert_eq!(super::total(report), 627_594);
    }
}
