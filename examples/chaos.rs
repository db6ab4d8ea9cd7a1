//! Chaos and soak (`make chaos`; a one-minute run is part of `make test`): real Envoy with the
//! shipped config in front of an echoing dashboard, session-authz at `RUST_LOG=trace`, and the
//! sample validator restarted every few seconds; session-authz is killed and restarted once.
//! A mix of valid, invalid, garbage and ambiguous credentials, forged identities and path tricks
//! runs throughout. It prints what it saw and exits non-zero on any false allow, wrong-user allow
//! or token found in a log.
//!
//! `CHAOS_SECONDS` (default 600) bounds the run; `CHAOS_CLIENTS` (default 8) the concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_authz_testkit::envoy::EnvoyProcess;
use session_authz_testkit::http::{try_raw_get, Upstream};
use session_authz_testkit::process::{binary, free_addr, session_authz, Proc};
use session_authz_testkit::procfs::{open_fds, rss_kib};
use session_authz_testkit::wait::listening;

/// Every token the run invents starts with this, so the logs can be searched for all of them.
const TOKEN_PREFIX: &str = "chaos-";
/// The sample validator's sessions: token, user and role (its email is the user's @example.com).
const SEED_TOKENS: [(&str, &str, &str); 2] = [
    ("user1-token", "user1", "admin"),
    ("user2-token", "user2", "viewer"),
];
/// What session-authz sets for the app (the assertion is off here, so never one of these).
const IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-user",
    "x-auth-roles",
    "x-auth-email",
    "x-auth-assertion",
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A log file that restarts of the same process keep adding to.
fn append_to(log: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap()
}

fn start_validator(addr: SocketAddr, log: &std::path::Path) -> Proc {
    Proc::spawn(
        Command::new(binary("examples/sample_validator"))
            .arg(addr.to_string())
            .stderr(append_to(log)),
    )
}

fn start_authz(
    validator: SocketAddr,
    grpc: SocketAddr,
    http: SocketAddr,
    log: &std::path::Path,
) -> Proc {
    Proc::spawn(
        Command::new(session_authz())
            .env_clear()
            .env("AIMENU_URL", format!("http://{validator}"))
            .env("SESSION_AUTHZ_GRPC_ADDR", grpc.to_string())
            .env("SESSION_AUTHZ_HTTP_ADDR", http.to_string())
            .env("SESSION_AUTHZ_VALIDATOR_TIMEOUT", "1s")
            .env("SESSION_AUTHZ_CACHE_TTL", "2s")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(append_to(log)),
    )
}

/// One kind of request in the mix, and what it may be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A seed session (by cookie or header), maybe with a forged identity: 200 with exactly that
    /// user's identity, or 503.
    Valid,
    Invalid,
    Garbage,
    Ambiguous,
    ForgedIdentityOnly,
    PathTrick,
    /// A public path with a forged identity: 200 with no identity.
    PublicForged,
}

struct Request {
    kind: Kind,
    path: &'static str,
    headers: Vec<(String, String)>,
    /// The identity headers a 200 must carry, as sorted `name=value` (for `Valid`).
    identity: Vec<String>,
}

fn next_request(n: u64) -> Request {
    let unique = format!("{TOKEN_PREFIX}{n:x}");
    let (token, user, role) = SEED_TOKENS[(n % 2) as usize];
    let identity = vec![
        format!("x-auth-email={user}@example.com"),
        format!("x-auth-roles={role}"),
        format!("x-auth-user={user}"),
    ];
    let h = |k: &str, v: String| (k.to_owned(), v);
    match n % 10 {
        0 | 1 => Request {
            kind: Kind::Valid,
            path: "/admin",
            headers: vec![h("cookie", format!("theme=dark; session={token}"))],
            identity,
        },
        2 => Request {
            kind: Kind::Valid,
            path: "/api/admin/stats",
            headers: vec![
                h("x-session-token", token.to_owned()),
                h("x-auth-user", "root".to_owned()),
                h("X-Auth-Roles", "admin,root".to_owned()),
                h("x-auth-email", "root@example.com".to_owned()),
                h("x-auth-assertion", "eyJhbGciOiJub25lIn0.e30.".to_owned()),
            ],
            identity,
        },
        3 => Request {
            kind: Kind::Invalid,
            path: "/admin",
            headers: vec![h("cookie", format!("session={unique}"))],
            identity: vec![],
        },
        4 => Request {
            kind: Kind::Garbage,
            path: "/admin",
            headers: vec![h(
                "cookie",
                format!("session=\"{unique}; session={unique}-x; =;;{n}"),
            )],
            identity: vec![],
        },
        5 => Request {
            kind: Kind::Ambiguous,
            path: "/admin",
            headers: vec![
                h("cookie", format!("session={token}")),
                h("x-session-token", unique),
            ],
            identity: vec![],
        },
        6 => Request {
            kind: Kind::ForgedIdentityOnly,
            path: "/admin",
            headers: vec![
                h("x-auth-user", user.to_owned()),
                h("x-auth-roles", "admin".to_owned()),
            ],
            identity: vec![],
        },
        7 | 8 => Request {
            kind: Kind::PathTrick,
            path: [
                "/ADMIN",
                "//admin",
                "/public/../admin",
                "/%61dmin",
                "/admin%2F..",
                "/Api/Admin/x",
            ][(n % 6) as usize],
            headers: vec![h("cookie", format!("session={unique}"))],
            identity: vec![],
        },
        _ => Request {
            kind: Kind::PublicForged,
            path: "/public",
            headers: vec![
                h("x-auth-user", user.to_owned()),
                h("x-auth-roles", "admin".to_owned()),
                h("X-Auth-Email", format!("{user}@example.com")),
            ],
            identity: vec![],
        },
    }
}

/// Sends one request on a fresh connection, exactly as written; returns the status and the
/// identity headers the app received (sorted `name=value`).
async fn send(envoy: SocketAddr, request: &Request) -> Option<(u16, Vec<String>)> {
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let response = try_raw_get(envoy, request.path, &headers).await.ok()?;
    let mut identity = Vec::new();
    if response.status == 200 {
        for name in IDENTITY_HEADERS {
            for value in response.upstream_saw(name) {
                identity.push(format!("{name}={value}"));
            }
        }
    }
    identity.sort();
    Some((response.status, identity))
}

#[derive(Default)]
struct Tally {
    requests: u64,
    allows: u64,
    by_status: BTreeMap<(Kind, u16), u64>,
    transport_errors: u64,
    false_allows: Vec<String>,
    wrong_user: Vec<String>,
}

/// Adds session-authz's `decisions_total` counters (from `/metrics`) to `into`.
async fn add_decisions(into: &mut BTreeMap<String, u64>, ops: SocketAddr) {
    let Ok(response) = reqwest::get(format!("http://{ops}/metrics")).await else {
        return;
    };
    let text = response.text().await.unwrap_or_default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("session_authz_decisions_total{") {
            if let Some((labels, count)) = rest.split_once("} ") {
                let count: f64 = count.parse().unwrap_or(0.0);
                *into.entry(labels.replace('"', "")).or_default() += count as u64;
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let seconds = env_number("CHAOS_SECONDS", 600);
    let clients = env_number("CHAOS_CLIENTS", 8);
    let restart_every = Duration::from_secs(env_number("CHAOS_VALIDATOR_RESTART_SECONDS", 3));
    let dir = tempfile::tempdir().unwrap();
    let authz_log = dir.path().join("session-authz.log");
    let validator_log = dir.path().join("validator.log");

    let validator_addr = free_addr();
    let grpc = free_addr();
    let ops = free_addr();
    let mut validator = Some(start_validator(validator_addr, &validator_log));
    let mut authz = start_authz(validator_addr, grpc, ops, &authz_log);
    listening(grpc).await;
    listening(validator_addr).await;
    let dashboard = Upstream::start().await;
    let envoy_proc = EnvoyProcess::start(grpc, dashboard.addr).await;
    let envoy = envoy_proc.listener;
    eprintln!("chaos: {seconds} s, {clients} clients, validator restarted every {restart_every:?}");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (tally, stop, counter) = (tally.clone(), stop.clone(), counter.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let request = next_request(n);
                    let answer = send(envoy, &request).await;
                    let mut tally = tally.lock().unwrap();
                    tally.requests += 1;
                    let Some((status, users)) = answer else {
                        tally.transport_errors += 1;
                        continue;
                    };
                    *tally.by_status.entry((request.kind, status)).or_default() += 1;
                    if status != 200 {
                        continue;
                    }
                    tally.allows += 1;
                    match request.kind {
                        Kind::Valid if users == request.identity => {}
                        Kind::Valid => tally.wrong_user.push(format!(
                            "{} {:?} → {users:?}",
                            request.path, request.headers
                        )),
                        Kind::PublicForged if users.is_empty() => {}
                        Kind::PublicForged => tally
                            .wrong_user
                            .push(format!("public path passed a forged identity: {users:?}")),
                        kind => tally.false_allows.push(format!(
                            "{kind:?} {} {:?} → 200 {users:?}",
                            request.path, request.headers
                        )),
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let authz_restart_at = started + Duration::from_secs(seconds / 2);
    let mut authz_restarted = false;
    let mut validator_restarts = 0u64;
    let mut next_validator_restart = started + restart_every;
    let (mut peak_rss, mut peak_fds) = (0u64, 0usize);
    let mut decisions = BTreeMap::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pid = authz.id();
        peak_rss = peak_rss.max(rss_kib(pid));
        peak_fds = peak_fds.max(open_fds(pid));
        if Instant::now() >= next_validator_restart {
            // Down for a moment, then back: an auth-service deploy or crash loop.
            drop(validator.take());
            tokio::time::sleep(Duration::from_millis(300)).await;
            validator = Some(start_validator(validator_addr, &validator_log));
            validator_restarts += 1;
            next_validator_restart = Instant::now() + restart_every;
        }
        if !authz_restarted && Instant::now() >= authz_restart_at {
            add_decisions(&mut decisions, ops).await;
            let _ = authz.kill();
            let _ = authz.wait();
            tokio::time::sleep(Duration::from_millis(500)).await;
            authz = start_authz(validator_addr, grpc, ops, &authz_log);
            authz_restarted = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    add_decisions(&mut decisions, ops).await;
    drop(validator);
    drop(authz);
    drop(envoy_proc);

    let logs = std::fs::read_to_string(&authz_log).unwrap_or_default()
        + &std::fs::read_to_string(&validator_log).unwrap_or_default();
    let log_lines = logs.lines().count();
    let mut token_hits: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(TOKEN_PREFIX) || SEED_TOKENS.iter().any(|(t, ..)| l.contains(t)))
        .take(5)
        .collect();
    token_hits.dedup();

    let tally = tally.lock().unwrap();
    println!(
        "chaos run: {:.0} s on loopback through Envoy 1.40",
        started.elapsed().as_secs_f64()
    );
    println!("requests:                 {}", tally.requests);
    println!("allows (200):             {}", tally.allows);
    println!("transport errors:         {}", tally.transport_errors);
    println!("validator restarts:       {validator_restarts}");
    println!("session-authz restarts:   {}", u8::from(authz_restarted));
    println!("answers by kind and status:");
    for ((kind, status), count) in &tally.by_status {
        println!("  {kind:?} {status}: {count}");
    }
    println!("session-authz decisions by outcome and reason (both runs):");
    for (labels, count) in &decisions {
        println!("  {labels}: {count}");
    }
    println!(
        "false allows:             {} (must be 0)",
        tally.false_allows.len()
    );
    println!(
        "wrong-user allows:        {} (must be 0)",
        tally.wrong_user.len()
    );
    println!(
        "token appearances in logs: {} in {log_lines} lines at RUST_LOG=trace (must be 0)",
        token_hits.len()
    );
    println!(
        "session-authz peak RSS:   {:.1} MiB",
        peak_rss as f64 / 1024.0
    );
    println!("session-authz peak fds:   {peak_fds}");
    for line in tally.false_allows.iter().chain(&tally.wrong_user).take(10) {
        println!("  VIOLATION {line}");
    }
    for line in &token_hits {
        println!("  LEAK {}", line.chars().take(300).collect::<String>());
    }
    let valid_allowed: u64 = tally
        .by_status
        .iter()
        .filter(|((kind, status), _)| *kind == Kind::Valid && *status == 200)
        .map(|(_, n)| n)
        .sum();
    let failed = !tally.false_allows.is_empty()
        || !tally.wrong_user.is_empty()
        || !token_hits.is_empty()
        || valid_allowed == 0
        || log_lines == 0;
    if failed {
        eprintln!("chaos: FAILED");
        std::process::exit(1);
    }
}
