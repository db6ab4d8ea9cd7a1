//! Offline builds: with no network and only this platform's crates on disk, `cargo check` of the
//! library (which runs build.rs, the part that looks for envoy-types' .proto files) succeeds, and
//! build.rs compiles the same descriptor set as this build's.
//!
//! The crates come the two ways an offline build gets them:
//! - what `cargo fetch --locked --target <host>` downloads (a container's fetch stage): other
//!   platforms' crates are missing; build.rs's `cargo metadata --offline --filter-platform`
//!   works with these.
//! - only what a plain `cargo build` downloads (a cache or image layer from an earlier build): no
//!   dev-dependencies either, so `cargo metadata --offline` fails and build.rs falls back to
//!   Cargo.lock and registry/src.
//!
//! The fetch needs crates.io once (as `make test` on a clean clone does anyway); the builds run
//! offline, in a network namespace where `unshare` can make one (else on CARGO_NET_OFFLINE
//! alone). All state stays in target/tmp/offline-build, so later runs re-check only this crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use session_authz_testkit::dockerfile::Dockerfile;
use session_authz_testkit::process::root;

/// The files the Dockerfile copies (all a library build reads, tests/container.rs checks).
fn build_inputs() -> Vec<String> {
    let dockerfile = Dockerfile::read(&root().join("Dockerfile"));
    let sources = dockerfile.context_sources();
    assert!(!sources.is_empty(), "the Dockerfile copies nothing");
    sources.into_iter().map(str::to_owned).collect()
}

fn work() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("offline-build")
}

/// The cargo running this test (so a rustup proxy's CARGO_HOME plays no part).
fn cargo_bin() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn cargo(home: &Path) -> Command {
    let mut command = Command::new(cargo_bin());
    command.current_dir(root()).env("CARGO_HOME", home);
    command
}

fn describe(command: &Command, out: &Output) -> String {
    format!(
        "{command:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", describe(command, &out));
    String::from_utf8(out.stdout).unwrap()
}

fn host_triple() -> String {
    let version = run(Command::new(cargo_bin()).arg("-vV"));
    version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host line in cargo -vV")
        .to_owned()
}

/// `cargo metadata --offline` for `host`, as build.rs runs it.
fn metadata(home: &Path, host: &str) -> Command {
    let mut command = cargo(home);
    command.args(["metadata", "--offline", "--locked", "--format-version", "1"]);
    command.args(["--filter-platform", host]);
    command
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// The single registry folder under `home`'s registry/`kind` (crates.io's).
fn registry_dir(home: &Path, kind: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(home.join("registry").join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "one registry in {}: {dirs:?}",
        home.display()
    );
    dirs.into_iter().next().unwrap()
}

fn crate_files(home: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(registry_dir(home, "cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// A CARGO_HOME holding what `cargo fetch --target <host>` downloads. Offline first, so a
/// complete one from an earlier run needs no network; None if crates.io cannot be reached either.
fn fetched_store(host: &str) -> Option<PathBuf> {
    let store = work().join("fetched");
    for offline in [true, false] {
        let mut fetch = cargo(&store);
        fetch.args(["fetch", "--locked", "--target", host]);
        if offline {
            fetch.arg("--offline");
        }
        let out = fetch.output().unwrap();
        if out.status.success() {
            return Some(store);
        }
        if !offline {
            eprintln!("cannot fetch crates: {}", describe(&fetch, &out));
        }
    }
    None
}

/// The crates a plain `cargo build` downloads: those the resolve reaches from this crate
/// without a dev-dependency edge.
fn needed_by_build(store: &Path, host: &str) -> BTreeSet<OsString> {
    let metadata: Value = serde_json::from_str(&run(&mut metadata(store, host))).unwrap();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (node["id"].as_str().unwrap(), node))
        .collect();
    let mut reached = BTreeSet::new();
    let mut next = vec![metadata["resolve"]["root"].as_str().unwrap()];
    while let Some(id) = next.pop() {
        if reached.insert(id) {
            for dep in nodes[id]["deps"].as_array().unwrap() {
                let kinds = dep["dep_kinds"].as_array().unwrap();
                if kinds.iter().any(|k| k["kind"] != "dev") {
                    next.push(dep["pkg"].as_str().unwrap());
                }
            }
        }
    }
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| reached.contains(p["id"].as_str().unwrap()) && !p["source"].is_null())
        .map(|p| crate_file(p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .collect()
}

fn crate_file(name: &str, version: &str) -> OsString {
    format!("{name}-{version}.crate").into()
}

/// The CARGO_HOME the builds use: the store's index and only `crates` of its downloads. Always
/// the same folder, as cargo's fingerprints hold the dependencies' source paths (a home elsewhere
/// would re-check every dependency). Its registry/src, where cargo unpacks crates, is kept across
/// runs to save unpacking them again: cargo takes a crate as downloaded only if registry/cache
/// holds it.
fn home_with(store: &Path, crates: &BTreeSet<OsString>) -> PathBuf {
    let home = work().join("cargo-home");
    for dir in ["registry/index", "registry/cache"] {
        if home.join(dir).exists() {
            std::fs::remove_dir_all(home.join(dir)).unwrap();
        }
    }
    copy_tree(&store.join("registry/index"), &home.join("registry/index"));
    let from = registry_dir(store, "cache");
    let to = home.join("registry/cache").join(from.file_name().unwrap());
    std::fs::create_dir_all(&to).unwrap();
    for file in crates {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    home
}

/// A fresh copy of the build inputs (new mtimes, so build.rs runs again), `cargo check`ed with
/// `home` and no network. Returns the descriptor set build.rs wrote.
fn check_offline(home: &Path) -> Vec<u8> {
    let work = work();
    let repo = work.join("repo");
    if repo.exists() {
        std::fs::remove_dir_all(&repo).unwrap();
    }
    for input in build_inputs() {
        copy_tree(&root().join(&input), &repo.join(&input));
    }

    // A network namespace with only loopback, down, if this machine lets us make one.
    let isolated = Command::new("unshare")
        .args(["--net", "--map-root-user", "true"])
        .output()
        .is_ok_and(|out| out.status.success());
    let mut check = if isolated {
        let mut command = Command::new("unshare");
        command.args(["--net", "--map-root-user"]);
        command.arg(cargo_bin());
        command
    } else {
        eprintln!("no network namespace here: relying on CARGO_NET_OFFLINE alone");
        Command::new(cargo_bin())
    };
    check
        .current_dir(&repo)
        .env("CARGO_HOME", home)
        .env("CARGO_TARGET_DIR", work.join("target"))
        // Reaches build.rs too: a `cargo` it runs is offline whatever flags it passes.
        .env("CARGO_NET_OFFLINE", "true")
        .args(["check", "--offline", "--locked", "--lib"])
        .args(["--message-format", "json"]);
    let out = check.output().unwrap();
    // stdout is cargo's JSON messages; what went wrong is in stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{check:?}: {}\n{stderr}", out.status);
    eprint!("{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();

    let out_dir = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|m| {
            m["reason"] == "build-script-executed"
                && m["package_id"]
                    .as_str()
                    .unwrap()
                    .contains("#session-authz@")
        })
        .expect("session-authz's build script ran")["out_dir"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::read(Path::new(&out_dir).join("session_authz_descriptor.bin")).unwrap()
}

#[test]
fn library_builds_offline_with_only_this_platforms_crates() {
    let host = host_triple();
    let Some(store) = fetched_store(&host) else {
        eprintln!("SKIPPED: crates.io is unreachable, so there are no fetched crates to use");
        return;
    };
    let expected =
        std::fs::read(Path::new(env!("OUT_DIR")).join("session_authz_descriptor.bin")).unwrap();

    // Without crates missing for other platforms the test would prove nothing.
    let lock: toml::Table = std::fs::read_to_string(root().join("Cargo.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let fetched = crate_files(&store);
    let other_platforms: Vec<OsString> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("source").is_some())
        .map(|p| crate_file(p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .filter(|file| !fetched.contains(file))
        .collect();
    assert!(
        !other_platforms.is_empty(),
        "every crate of Cargo.lock was fetched for {host}: none is platform-specific any more?"
    );

    // build.rs's first way works with these crates...
    let home = home_with(&store, &fetched);
    run(&mut metadata(&home, &host));
    let descriptors = check_offline(&home);
    assert!(
        descriptors == expected,
        "descriptor set differs, fetched crates"
    );

    let needed = needed_by_build(&store, &host);
    assert!(needed.len() < fetched.len(), "some crates are dev-only");
    // ...and not with these, so build.rs must fall back.
    let home = home_with(&store, &needed);
    let mut metadata = metadata(&home, &host);
    let out = metadata.output().unwrap();
    assert!(
        !out.status.success(),
        "cargo metadata --offline works without dev-dependencies now, so this case no longer \
         reaches build.rs's fallback: {}",
        describe(&metadata, &out)
    );
    let descriptors = check_offline(&home);
    assert!(
        descriptors == expected,
        "descriptor set differs, a build's crates"
    );
}
