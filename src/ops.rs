//! Operating the service: gRPC health and reflection, the `/healthz` and `/readyz` endpoints,
//! and the readiness flag they share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tonic_reflection::server::{v1, v1alpha};

use crate::ext_authz::CheckService;

/// Descriptors of Envoy's Authorization service and its imports, compiled by build.rs.
pub const AUTHZ_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/session_authz_descriptor.bin"));

/// Whether the service should receive traffic; shared by gRPC health and `/readyz`.
#[derive(Clone, Debug)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    health: HealthReporter,
}

impl Readiness {
    pub fn new(health: HealthReporter) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            health,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the service ready (`true`) or draining (`false`), for both probes.
    pub async fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        if ready {
            self.health
                .set_serving::<AuthorizationServer<CheckService>>()
                .await;
        } else {
            self.health
                .set_not_serving::<AuthorizationServer<CheckService>>()
                .await;
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

/// The ops HTTP endpoints. `/healthz` never depends on the validator or readiness.
pub fn http_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
