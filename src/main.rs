//! The `session-authz` binary: flags → config → tracing → serve until a signal → flush spans.

use std::process::ExitCode;

use session_authz::{app, cli::Cli, config::Config, telemetry};

// mimalloc rather than glibc's malloc: with the decision cache full (100 000 entries, evicting),
// glibc's scattered free lists made a cache miss ~20 % and a later hit ~15 % dearer in CPU;
// mimalloc keeps each size class's blocks together (docs/benchmarks.md, "What the time-based
// figures were measuring", 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an unusable configuration (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, effective) = match cli.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("session-authz: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        // What start-up would refuse, --check-config refuses too.
        if let Some(Err(err)) = config.otel.as_ref().map(telemetry::check) {
            eprintln!("session-authz: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
        print!("{}", effective.to_toml());
        return ExitCode::SUCCESS;
    }
    // Before the runtime starts: the span exporter's blocking client must not live on it.
    let telemetry = match telemetry::init(config.log_format, config.otel.as_ref()) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("session-authz: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    raise_fd_limit();
    let reloading = app::Reloading {
        effective,
        file: cli.config.clone(),
        // The same layers as at start-up: the file, the environment, the same flags.
        load: Box::new(move || cli.load()),
    };
    let served = serve(&config, reloading);
    // After the runtime has stopped (the Checks are drained): send the spans still queued.
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(config: &Config, reloading: app::Reloading) -> anyhow::Result<()> {
    if !config.auth_enabled {
        tracing::warn!(
            "AUTH_ENABLED=false: EVERY REQUEST IS ALLOWED WITHOUT A SESSION; the identity header is only stripped"
        );
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // Before the listeners and the "ready" line: a SIGTERM right after must never meet the
    // default action (an exit without draining).
    let shutdown = shutdown_signal();
    let running = app::start_reloading(config, Some(reloading)).await?;
    running.run_until(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: each Check may need a validator
/// connection, and the default soft limit (often 1024) is far below what the host allows.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(err) => tracing::warn!("cannot raise the open-file limit: {err}"),
    }
}

/// Registers for SIGINT (Ctrl-C) and SIGTERM at once, when called (not when first polled), and
/// resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
