//! Live config reload: on SIGHUP, and when the `--config` file or an assertion key file changes,
//! the configuration is read again and the settings that need no new listener are swapped in
//! whole.
//!
//! A file that does not validate (as `--check-config` would refuse it) keeps the running
//! settings, logged and counted; a changed key that only a restart applies is named.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::authorize::Authorizer;
use crate::cache::DecisionCache;
use crate::config::{Config, ConfigError, Effective, KEYS};
use crate::metrics::{Metrics, ReloadResult};

/// The keys a reload applies; every other key keeps its start-up value until a restart.
pub const RELOADABLE: &[&str] = &[
    "csrf",
    "csrf_trusted_origins",
    "routes",
    "login_url",
    "login_return_param",
    "user_header",
    "roles_header",
    "email_header",
    "assertion_key",
    "assertion_header",
    "assertion_audience",
    "assertion_issuer",
    "assertion_ttl",
    "cache_ttl",
    "cache_negative_ttl",
];

/// Events closer together than this are one change (an editor's write, a ConfigMap's swap).
const SETTLE: Duration = Duration::from_millis(100);

/// Reads the configuration again, the way start-up did (file, environment, flags).
pub type Load = Box<dyn Fn() -> Result<(Config, Effective), ConfigError> + Send + Sync>;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// Reloadable keys whose values changed, now in force.
    pub applied: Vec<&'static str>,
    /// Keys whose values changed that only a restart applies.
    pub need_restart: Vec<&'static str>,
}

/// Why a reload kept the running settings.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// Applies new configurations to the running core and cache.
pub struct Reloader {
    load: Load,
    /// How the start-up configuration showed each key: a key that only a restart applies is
    /// compared with this, so it is named on every reload until a restart.
    started: Effective,
    /// How the configuration last put in force showed each key.
    last: Effective,
    /// The configuration now in force (restart-only keys at their start-up values).
    running: Config,
    authorizer: Arc<Authorizer>,
    cache: DecisionCache,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(
        load: Load,
        started: (Config, Effective),
        authorizer: Arc<Authorizer>,
        cache: DecisionCache,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (running, started) = started;
        Self {
            load,
            last: started.clone(),
            started,
            running,
            authorizer,
            cache,
            metrics,
        }
    }

    /// Reads the configuration and puts its reloadable settings in force, or keeps the running
    /// ones; either way logged and counted.
    pub fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(reloaded) => {
                self.metrics.config_reload(ReloadResult::Ok);
                for key in &reloaded.need_restart {
                    tracing::warn!(
                        key,
                        "config {key} changed, but only a restart applies it; the running value stays"
                    );
                }
                tracing::info!(
                    applied = %reloaded.applied.join(","),
                    "config reloaded"
                );
            }
            Err(err) => {
                self.metrics.config_reload(ReloadResult::Error);
                tracing::error!(%err, "config reload failed; the running config stays");
            }
        }
        result
    }

    fn try_reload(&mut self) -> Result<Reloaded, ReloadError> {
        let (next, shown) = (self.load)()?;
        let changed = |from: &Effective, name: &str| from.value(name) != shown.value(name);
        let need_restart = KEYS
            .iter()
            .map(|spec| spec.name)
            .filter(|name| !RELOADABLE.contains(name) && changed(&self.started, name))
            .collect();
        let running = Config {
            csrf: next.csrf,
            routes: next.routes,
            sign_in: next.sign_in,
            identity_headers: next.identity_headers,
            assertion: next.assertion,
            cache: crate::cache::Settings {
                ttl: next.cache.ttl,
                negative_ttl: next.cache.negative_ttl,
                ..self.running.cache
            },
            ..self.running.clone()
        };
        self.authorizer.replace(running.core_settings());
        self.cache
            .set_lifetimes(running.cache.ttl, running.cache.negative_ttl);
        self.running = running;
        let applied = RELOADABLE
            .iter()
            .copied()
            .filter(|name| changed(&self.last, name))
            .collect();
        self.last = shown;
        Ok(Reloaded {
            applied,
            need_restart,
        })
    }
}

/// What the watcher compares to tell a change from an event that changed nothing: the file's
/// bytes, or why it cannot be read.
fn contents(path: &Path) -> Result<Vec<u8>, std::io::ErrorKind> {
    std::fs::read(path).map_err(|err| err.kind())
}

/// The folders whose events may mean `file` changed: its own (an editor's rename, a
/// ConfigMap's or Secret's `..data` symlink swap) and, when it is a symlink, its target's.
fn watched_folders(file: &Path) -> Vec<PathBuf> {
    let parent = |path: &Path| match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut folders = vec![parent(file)];
    if let Ok(target) = std::fs::canonicalize(file) {
        let dir = parent(&target);
        if !folders.contains(&dir) {
            folders.push(dir);
        }
    }
    folders
}

/// The files a reload reads that can change under it: the `--config` file, and the key files
/// of the assertion in force. Watched through their folders; their bytes tell a change from an
/// event that changed nothing.
struct Watched {
    /// `None` when the system cannot watch (SIGHUP still reloads).
    watcher: Option<notify::RecommendedWatcher>,
    folders: Vec<PathBuf>,
    files: Vec<PathBuf>,
    seen: Vec<Result<Vec<u8>, std::io::ErrorKind>>,
}

impl Watched {
    /// Each event in a watched folder sends a `()` on `events`.
    fn new(events: mpsc::UnboundedSender<()>) -> Self {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = events.send(());
            }
        });
        let watcher = watcher
            .inspect_err(|err| {
                tracing::warn!(%err, "cannot watch the config and key files: reload on SIGHUP only");
            })
            .ok();
        Self {
            watcher,
            folders: Vec::new(),
            files: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Watches `files` from now on (their folders not watched yet are added) and remembers
    /// their bytes.
    fn follow(&mut self, files: Vec<PathBuf>) {
        use notify::Watcher;
        self.seen = files.iter().map(|file| contents(file)).collect();
        self.files = files;
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        for folder in self.files.iter().flat_map(|file| watched_folders(file)) {
            if self.folders.contains(&folder) {
                continue;
            }
            if let Err(err) = watcher.watch(&folder, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(%err, folder = %folder.display(), "cannot watch a config or key file's folder: its changes reload on SIGHUP only");
            }
            self.folders.push(folder);
        }
    }

    /// Whether a watched file's bytes differ from those remembered.
    fn changed(&self) -> bool {
        self.files
            .iter()
            .zip(&self.seen)
            .any(|(file, seen)| contents(file) != *seen)
    }
}

impl Reloader {
    /// The files a reload reads that can change under it: `config` (the `--config` file) and
    /// the assertion's key files now in force.
    fn watched_files(&self, config: Option<&Path>) -> Vec<PathBuf> {
        let keys = self.running.assertion.iter().flat_map(|a| a.files.iter());
        config
            .map(Path::to_path_buf)
            .into_iter()
            .chain(keys.cloned())
            .collect()
    }

    /// Reloads on every SIGHUP, and when `file` (the `--config` file) or a key file of the
    /// assertion in force changes (a mounted Secret's update), until `stop` completes. The
    /// signal handler, the watcher and the first read are set up before this returns, so a
    /// change made once the service is ready is never missed.
    pub fn run(
        mut self,
        file: Option<PathBuf>,
        stop: impl std::future::Future<Output = ()>,
    ) -> impl std::future::Future<Output = ()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP: reload on file changes only");
                None
            }
        };
        let (events, mut changed) = mpsc::unbounded_channel();
        let mut watched = Watched::new(events);
        watched.follow(self.watched_files(file.as_deref()));
        async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(hangup) => hangup.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        tracing::info!("SIGHUP: reloading the config");
                        let _ = self.reload();
                    }
                    Some(()) = changed.recv() => {
                        // One change is often several events: wait until they stop.
                        while tokio::time::timeout(SETTLE, changed.recv())
                            .await
                            .is_ok_and(|e| e.is_some())
                        {}
                        if !watched.changed() {
                            continue;
                        }
                        tracing::info!("the config file or a key file changed: reloading");
                        let _ = self.reload();
                    }
                }
                // The reload may name other key files; a failed one keeps the old ones.
                watched.follow(self.watched_files(file.as_deref()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::flags_from_pairs;

    type Flags = Arc<Mutex<Vec<(&'static str, &'static str)>>>;

    fn load(flags: &Flags) -> Result<(Config, Effective), ConfigError> {
        let pairs = flags.lock().unwrap().clone();
        Config::load(&figment::Figment::new().merge(flags_from_pairs(&pairs)))
    }

    #[test]
    fn a_reload_applies_what_it_can_names_the_rest_and_keeps_all_on_error() {
        let flags: Flags = Arc::new(Mutex::new(vec![("grpc_addr", "127.0.0.1:0")]));
        let started = load(&flags).unwrap();
        let core = crate::app::Core::new(&started.0).unwrap();
        let reading = flags.clone();
        let mut reloader = Reloader::new(
            Box::new(move || load(&reading)),
            started,
            core.authorizer.clone(),
            core.cache.clone(),
            core.metrics.clone(),
        );

        *flags.lock().unwrap() = vec![
            ("grpc_addr", "127.0.0.1:1"),
            ("user_header", "x-who"),
            ("cache_ttl", "3s"),
            ("auth_enabled", "false"),
        ];
        let reloaded = reloader.reload().unwrap();
        assert_eq!(reloaded.applied, ["user_header", "cache_ttl"]);
        assert_eq!(reloaded.need_restart, ["auth_enabled", "grpc_addr"]);
        let live = core.authorizer.live();
        assert_eq!(live.identity_headers().user, "x-who");
        // A restart key keeps its start-up value, in the core too.
        assert!(live.settings().auth_enabled);
        assert_eq!(reloader.running.grpc_addr.port(), 0);
        assert_eq!(reloader.running.cache.ttl, Duration::from_secs(3));

        // Again with nothing new: nothing applied, the restart key still named.
        let again = reloader.reload().unwrap();
        assert!(again.applied.is_empty());
        assert_eq!(again.need_restart, ["auth_enabled", "grpc_addr"]);

        flags.lock().unwrap().push(("cache_ttl", "forever"));
        let err = reloader.reload().unwrap_err().to_string();
        assert!(err.contains("cache_ttl"), "{err}");
        assert_eq!(core.authorizer.live().identity_headers().user, "x-who");
        let metrics = core.metrics.render(0);
        assert!(
            metrics.contains("session_authz_config_reload_total{result=\"ok\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("session_authz_config_reload_total{result=\"error\"} 1"),
            "{metrics}"
        );
    }
}
