//! Operating the service: gRPC health and reflection, the `/healthz` and `/readyz` endpoints,
//! and the readiness flag they share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tonic_reflection::server::{v1, v1alpha};

use crate::authorize::Authorizer;
use crate::cache::DecisionCache;
use crate::doors::grpc::SERVICE_NAME;
use crate::listener::Limits;
use crate::metrics::Metrics;

/// Descriptors of Envoy's Authorization service and its imports, compiled by build.rs.
pub const AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/session_authz_descriptor.bin"));

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
            .set_service_status(SERVICE_NAME, serving(named))
            .await;
    }

    /// Follows validator health changes until the sender goes away.
    pub async fn follow_validator(mut self) {
        while self.validator_ok.changed().await.is_ok() {
            self.publish().await;
        }
    }
}

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
    /// The core, whose current settings hold the signed assertions' keys (`/.well-known/jwks.json`).
    pub authorizer: Arc<Authorizer>,
}

/// Most ops connections served at once.
pub const OPS_MAX_CONNECTIONS: usize = 64;
/// Longest wait for a request's headers, and so for an idle kept-alive connection too: a
/// probe or a scrape sends its request at once.
pub const OPS_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The ops port's limits.
pub const OPS_LIMITS: Limits = Limits {
    name: "ops",
    max_connections: OPS_MAX_CONNECTIONS,
    header_read_timeout: OPS_HEADER_READ_TIMEOUT,
};

/// The ops HTTP endpoints. `/healthz` never depends on the validator or readiness.
pub fn http_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
}

async fn metrics(State(state): State<OpsState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(state.cache.entry_count()),
    )
}

/// The public keys verifiers check the signed assertion with; 404 while assertions are off.
async fn jwks(State(state): State<OpsState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.authorizer.live().jwks() {
        Some(jwks) => (
            [
                (axum::http::header::CONTENT_TYPE, "application/jwk-set+json"),
                // Short: a verifier sees a key added for rotation within a minute.
                (axum::http::header::CACHE_CONTROL, "max-age=60"),
            ],
            jwks,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "signed assertions are off (assertion_key)\n",
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
