//! The `session-authz` binary: flags → config → tracing → serve until a signal → flush spans.

use std::process::ExitCode;

use session_authz::{app, cli::Cli, config::Config, telemetry};

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
    let served = serve(&config);
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
async fn serve(config: &Config) -> anyhow::Result<()> {
    if !config.auth_enabled {
        tracing::warn!(
            "AUTH_ENABLED=false: EVERY REQUEST IS ALLOWED WITHOUT A SESSION; the identity header is only stripped"
        );
    }
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let running = app::start(config).await?;
    running.run_until(shutdown_signal()).await?;
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
