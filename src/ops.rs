//! Operating the service: gRPC health and reflection, the `/healthz` and `/readyz` endpoints,
//! and the readiness flag they share.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tonic_reflection::server::{v1, v1alpha};

use crate::cache::DecisionCache;
use crate::ext_authz::CheckService;
use crate::metrics::Metrics;

/// Descriptors of Envoy's Authorization service and its imports, compiled by build.rs.
pub const AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/session_authz_descriptor.bin"));

/// Consecutive validator failures that turn the named health NOT_SERVING.
pub const FAILURES_TO_UNHEALTHY: u32 = 5;
/// Consecutive validator answers that turn it SERVING again.
pub const SUCCESSES_TO_HEALTHY: u32 = 3;

/// Whether the validator answers, with hysteresis so that one blip does not flap the health.
#[derive(Debug)]
pub struct ValidatorHealth {
    run: std::sync::Mutex<(bool, u32)>,
    changed: watch::Sender<bool>,
}

impl Default for ValidatorHealth {
    fn default() -> Self {
        Self {
            run: std::sync::Mutex::new((true, 0)),
            changed: watch::channel(true).0,
        }
    }
}

impl ValidatorHealth {
    /// Records one validator call: `true` for an answer (valid or invalid), `false` for an error.
    pub fn record(&self, answered: bool) {
        let Ok(mut run) = self.run.lock() else {
            return;
        };
        let (healthy, streak) = &mut *run;
        if answered == *healthy {
            *streak = 0;
            return;
        }
        *streak += 1;
        let needed = if *healthy {
            FAILURES_TO_UNHEALTHY
        } else {
            SUCCESSES_TO_HEALTHY
        };
        if *streak >= needed {
            *healthy = answered;
            *streak = 0;
            self.changed.send_replace(answered);
            if answered {
                tracing::info!("validator answering again; health SERVING");
            } else {
                tracing::warn!(
                    failures = needed,
                    "validator failing; health of the Authorization service NOT_SERVING"
                );
            }
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changed.subscribe()
    }
}

/// Whether the service should receive traffic; shared by gRPC health and `/readyz`.
///
/// The overall (`""`) health and `/readyz` follow only draining, so liveness and readiness
/// probes do not restart or unlist every replica when the auth service blips; the named
/// `envoy.service.auth.v3.Authorization` health also follows the validator.
#[derive(Clone, Debug)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    validator_ok: watch::Receiver<bool>,
    health: HealthReporter,
}

impl Readiness {
    pub fn new(health: HealthReporter, validator_ok: watch::Receiver<bool>) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            validator_ok,
            health,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the service ready (`true`) or draining (`false`), for both probes.
    pub async fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        self.publish().await;
    }

    /// Pushes the current state to gRPC health.
    pub async fn publish(&self) {
        let ready = self.is_ready();
        let serving = |up: bool| {
            if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        self.health.set_service_status("", serving(ready)).await;
        let named = ready && *self.validator_ok.borrow();
        self.health
            .set_service_status(AUTHZ_SERVICE, serving(named))
            .await;
    }

    /// Follows validator health changes until the sender goes away.
    pub async fn follow_validator(mut self) {
        while self.validator_ok.changed().await.is_ok() {
            self.publish().await;
        }
    }
}

/// The gRPC name of the Authorization service, as health checks name it.
pub const AUTHZ_SERVICE: &str =
    <AuthorizationServer<CheckService> as tonic::server::NamedService>::NAME;

/// Reflection v1 and v1alpha (grpcurl 1.8.6 asks v1alpha) over every service we serve.
pub fn reflection_services() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(AUTHZ_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// What the ops endpoints read.
#[derive(Clone, Debug)]
pub struct OpsState {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
    pub cache: DecisionCache,
}

/// Most ops connections served at once. The rest wait in the kernel's accept queue and hold
/// none of our file descriptors, which the validator's connections need.
pub const OPS_MAX_CONNECTIONS: usize = 64;
/// Longest wait for a request's headers, and so for an idle kept-alive connection too: a
/// probe or a scrape sends its request at once.
pub const OPS_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the ops endpoints on `listener` until `stop` completes, then lets the requests in
/// progress finish.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(OPS_HEADER_READ_TIMEOUT);
    let slots = Arc::new(Semaphore::new(OPS_MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors, or a connection reset before it was accepted: back
                    // off briefly rather than spin.
                    tracing::debug!(error = %err, "ops listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = http.serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// The ops HTTP endpoints. `/healthz` never depends on the validator or readiness.
pub fn http_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<OpsState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(state.cache.settled_entry_count().await),
    )
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(health: &ValidatorHealth) -> bool {
        *health.subscribe().borrow()
    }

    fn record_n(health: &ValidatorHealth, answered: bool, times: u32) {
        for _ in 0..times {
            health.record(answered);
        }
    }

    #[test]
    fn turns_unhealthy_on_the_fifth_failure_in_a_row() {
        let health = ValidatorHealth::default();
        assert!(healthy(&health));
        record_n(&health, false, FAILURES_TO_UNHEALTHY - 1);
        assert!(healthy(&health), "4 failures are a blip");
        health.record(false);
        assert!(!healthy(&health), "the 5th turns it unhealthy");
    }

    #[test]
    fn turns_healthy_on_the_third_answer_in_a_row() {
        let health = ValidatorHealth::default();
        record_n(&health, false, FAILURES_TO_UNHEALTHY);
        record_n(&health, true, SUCCESSES_TO_HEALTHY - 1);
        assert!(!healthy(&health), "2 answers are not enough");
        health.record(true);
        assert!(healthy(&health), "the 3rd turns it healthy");
    }

    #[test]
    fn an_interleaved_outcome_restarts_the_streak() {
        let health = ValidatorHealth::default();
        record_n(&health, false, FAILURES_TO_UNHEALTHY - 1);
        health.record(true);
        record_n(&health, false, FAILURES_TO_UNHEALTHY - 1);
        assert!(healthy(&health), "a success resets the failure streak");
        health.record(false);
        assert!(!healthy(&health));

        record_n(&health, true, SUCCESSES_TO_HEALTHY - 1);
        health.record(false);
        record_n(&health, true, SUCCESSES_TO_HEALTHY - 1);
        assert!(!healthy(&health), "a failure resets the success streak");
        health.record(true);
        assert!(healthy(&health));
    }

    #[test]
    fn subscribers_see_each_change() {
        let health = ValidatorHealth::default();
        let mut changes = health.subscribe();
        record_n(&health, false, FAILURES_TO_UNHEALTHY);
        assert!(changes.has_changed().unwrap());
        assert!(!*changes.borrow_and_update());
        record_n(&health, false, 10);
        assert!(
            !changes.has_changed().unwrap(),
            "no news while it stays down"
        );
        record_n(&health, true, SUCCESSES_TO_HEALTHY);
        assert!(*changes.borrow_and_update());
    }
}
