//! Operating the service: gRPC health and reflection, the `/healthz` and `/readyz` endpoints,
//! and the readiness flag they share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
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
use crate::revoke::{Reach, Revocations};

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
    /// `POST /v1/revoke`, when `revoke_secret_file` is set.
    pub revocations: Option<Revocations>,
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
        .route(
            "/v1/revoke",
            post(revoke).layer(axum::extract::DefaultBodyLimit::max(REVOKE_BODY_LIMIT)),
        )
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

/// The largest `POST /v1/revoke` body read.
const REVOKE_BODY_LIMIT: usize = 8 * 1024;

/// The longest session token a revocation names.
const MAX_TOKEN_LEN: usize = 4096;

/// `POST /v1/revoke` with `Authorization: Bearer <revoke secret>` and `{"session": "<token>"}`:
/// the session's cached answers are forgotten here and, through the bus, on every replica.
async fn revoke(
    State(state): State<OpsState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Revoke {
        session: String,
    }
    let json = |status: StatusCode, body: String| {
        (
            status,
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (axum::http::header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response()
    };
    let Some(revocations) = state.revocations else {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"error":"revocation is off (revoke_secret_file)"}"#.to_owned(),
        );
    };
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .is_some_and(|value| revocations.secret().authorizes(value.as_bytes()));
    if !authorized {
        let mut response = json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized"}"#.to_owned(),
        );
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let session = match serde_json::from_slice::<Revoke>(&body) {
        Ok(Revoke { session }) if !session.is_empty() && session.len() <= MAX_TOKEN_LEN => session,
        _ => {
            return json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"expected {\"session\": \"<token>\"}"}"#.to_owned(),
            )
        }
    };
    let reach = revocations.revoke(&session).await;
    let shared = reach == Reach::Shared;
    tracing::info!(shared, "session revoked");
    json(
        StatusCode::OK,
        format!(r#"{{"revoked":true,"shared":{shared}}}"#),
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
