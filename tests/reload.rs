//! Live config reload, on the real binary: `[[routes]]` and header names changed under load
//! (no Check fails, none sees half of each), a file that does not validate, a deleted file, a
//! Kubernetes ConfigMap update (the `..data` symlink swap), SIGHUP, and a key that only a restart
//! applies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_authz_testkit::http::{raw_get, RawResponse};
use session_authz_testkit::process::free_addr;
use session_authz_testkit::service::ServiceProcess;
use session_authz_testkit::validator::{Answer, FakeValidator};
use session_authz_testkit::wait::eventually;

/// Two configurations that differ in a route rule and a header name at once: under `A`, /admin
/// wants the viewer role and the user goes in `x-a-user`; under `B`, the admin role and
/// `x-b-user`.
fn config(state: char) -> String {
    let role = if state == 'A' { "viewer" } else { "admin" };
    let header = if state == 'A' { "x-a-user" } else { "x-b-user" };
    format!(
        "user_header = \"{header}\"\n\
         [[routes]]\n\
         prefix = \"/admin\"\n\
         require_roles = [\"{role}\"]\n"
    )
}

/// Writes `text` to `path` as an editor or a config tool does: a new file renamed over the old.
fn replace(path: &Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).unwrap();
    std::fs::rename(&new, path).unwrap();
}

async fn validator() -> FakeValidator {
    FakeValidator::start(vec![
        (
            "admin-token",
            Answer::json(200, r#"{"valid":true,"user":"ann","roles":["admin"]}"#),
        ),
        (
            "viewer-token",
            Answer::json(200, r#"{"valid":true,"user":"vic","roles":["viewer"]}"#),
        ),
    ])
    .await
}

/// The binary reading `file`, with its forward-auth door on.
fn service(validator: &FakeValidator, file: &Path, extra: &[(&str, &str)]) -> ServiceProcess {
    let url = validator.url();
    let door = free_addr().to_string();
    let file = file.display().to_string();
    let mut env = vec![
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_CONFIG", file.as_str()),
        ("SESSION_AUTHZ_FORWARD_AUTH_ADDR", door.as_str()),
    ];
    env.extend_from_slice(extra);
    ServiceProcess::spawn(&env)
}

async fn check(authz: &ServiceProcess, token: &str) -> RawResponse {
    let cookie = format!("session={token}");
    raw_get(
        authz.forward_auth_addr.unwrap(),
        "/admin",
        &[("Cookie", cookie.as_str())],
    )
    .await
}

/// Which configuration decided: `Some('A')` or `Some('B')`, `None` for an answer neither
/// could give (a mix, or a failure).
async fn decided_by(authz: &ServiceProcess) -> (Option<char>, Option<char>) {
    let viewer = check(authz, "viewer-token").await;
    let admin = check(authz, "admin-token").await;
    (state_of(&viewer, "vic", 'A'), state_of(&admin, "ann", 'B'))
}

/// The state `response` shows for a session whose role `allowed_in` lets in: allowed, with the
/// user in that state's header; or refused, by the other state's rule.
fn state_of(response: &RawResponse, user: &str, allowed_in: char) -> Option<char> {
    let other = if allowed_in == 'A' { 'B' } else { 'A' };
    let header = format!("x-{}-user", allowed_in.to_ascii_lowercase());
    match response.status {
        200 if response.header(&header) == Some(user) => Some(allowed_in),
        403 => Some(other),
        _ => None,
    }
}

async fn reloads(authz: &ServiceProcess, result: &str) -> u64 {
    let metrics = raw_get(authz.http_addr, "/metrics", &[]).await.body;
    let series = format!("session_authz_config_reload_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

async fn wait_for_state(authz: &ServiceProcess, state: char) {
    eventually(Duration::from_secs(20), || async {
        (decided_by(authz).await == (Some(state), Some(state))).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("config {state} never took effect: {:?}", authz.logs()));
}

/// The binary reading `session-authz.toml` of a new folder, in force with state `A`; the
/// folder and the validator live as long as the test holds them.
async fn started_in_a() -> (tempfile::TempDir, FakeValidator, ServiceProcess) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session-authz.toml");
    std::fs::write(&file, config('A')).unwrap();
    let validator = validator().await;
    let authz = service(&validator, &file, &[]);
    wait_for_state(&authz, 'A').await;
    (dir, validator, authz)
}

/// Waits until `n` reloads ended with `result`.
async fn wait_reloads(authz: &ServiceProcess, result: &str, n: u64) {
    eventually(Duration::from_secs(20), || async {
        (reloads(authz, result).await == n).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("never {n} reloads with {result}: {:?}", authz.logs()));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_and_header_names_change_under_load_and_no_check_sees_half() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session-authz.toml");
    std::fs::write(&file, config('A')).unwrap();
    let validator = validator().await;
    let authz = Arc::new(service(&validator, &file, &[]));
    wait_for_state(&authz, 'A').await;

    let stop = Arc::new(AtomicBool::new(false));
    let (checks, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (authz, stop, checks, bad) =
                (authz.clone(), stop.clone(), checks.clone(), bad.clone());
            tokio::spawn(async move {
                let (token, user, allowed_in) = if i % 2 == 0 {
                    ("viewer-token", "vic", 'A')
                } else {
                    ("admin-token", "ann", 'B')
                };
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = check(&authz, token).await;
                    checks.fetch_add(1, Ordering::Relaxed);
                    if state_of(&response, user, allowed_in).is_none() {
                        bad.fetch_add(1, Ordering::Relaxed);
                        seen.push(format!("{response:?}"));
                    }
                }
                seen
            })
        })
        .collect();
    for state in ['B', 'A', 'B', 'A', 'B', 'A'] {
        replace(&file, &config(state));
        wait_for_state(&authz, state).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut mixed = Vec::new();
    for task in load {
        mixed.extend(task.await.unwrap());
    }
    assert!(checks.load(Ordering::Relaxed) > 0);
    assert_eq!(bad.load(Ordering::Relaxed), 0, "{mixed:?}");
    assert!(reloads(&authz, "ok").await >= 6);
    assert_eq!(reloads(&authz, "error").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_deleted_file_keeps_the_running_config() {
    let (dir, _validator, authz) = started_in_a().await;
    let file = dir.path().join("session-authz.toml");

    // Invalid: a route key that does not exist (with B's header name beside it).
    replace(&file, &config('B').replace("require_roles", "require_role"));
    wait_reloads(&authz, "error", 1).await;
    assert_eq!(decided_by(&authz).await, (Some('A'), Some('A')));
    let logged = authz.logs();
    let line = logged
        .iter()
        .find(|line| line.contains("config reload failed"))
        .expect("the failure is logged");
    assert!(
        line.contains("routes[0].require_role: unknown key")
            && line.contains(&file.display().to_string()),
        "names key and origin: {line}"
    );

    std::fs::remove_file(&file).unwrap();
    wait_reloads(&authz, "error", 2).await;
    assert_eq!(decided_by(&authz).await, (Some('A'), Some('A')));

    // Back, and valid: in force again.
    std::fs::write(&file, config('B')).unwrap();
    wait_for_state(&authz, 'B').await;
    assert_eq!(reloads(&authz, "ok").await, 1);
}

/// How kubelet updates a mounted ConfigMap: the files live in a timestamped folder, `..data`
/// points at it, the key is a symlink through `..data`; an update writes a new folder and
/// renames a new `..data` over the old one.
#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path();
    let version = |name: &str, text: &str| -> PathBuf {
        let folder = mount.join(name);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("session-authz.toml"), text).unwrap();
        folder
    };
    version("..2026_12_06_01", &config('A'));
    std::os::unix::fs::symlink("..2026_12_06_01", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink(
        "..data/session-authz.toml",
        mount.join("session-authz.toml"),
    )
    .unwrap();
    let validator = validator().await;
    let authz = service(&validator, &mount.join("session-authz.toml"), &[]);
    wait_for_state(&authz, 'A').await;

    version("..2026_12_06_02", &config('B'));
    std::os::unix::fs::symlink("..2026_12_06_02", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(mount.join("..2026_12_06_01")).unwrap();
    wait_for_state(&authz, 'B').await;
    assert_eq!(reloads(&authz, "ok").await, 1);
}

/// SIGHUP reloads; a changed key that needs a restart is named and keeps its value.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_restart_keys_are_named() {
    let (dir, _validator, authz) = started_in_a().await;
    let file = dir.path().join("session-authz.toml");

    nix::sys::signal::kill(authz.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_reloads(&authz, "ok", 1).await;

    replace(
        &file,
        &format!("validator_timeout = \"2s\"\n{}", config('B')),
    );
    wait_for_state(&authz, 'B').await;
    let warned = eventually(Duration::from_secs(20), || async {
        authz
            .logs()
            .into_iter()
            .find(|line| line.contains("only a restart applies it"))
    })
    .await
    .expect("the restart key is named");
    assert!(warned.contains("validator_timeout"), "{warned}");
}
