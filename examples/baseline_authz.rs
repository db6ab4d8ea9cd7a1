//! The benchmark's ceilings. By default, a do-nothing `envoy.service.auth.v3.Authorization`
//! server that allows every Check (and reports SERVING health, so Envoy's health check passes).
//! With `--call URL` it makes one pooled HTTP GET per Check first: the "ceiling + one pooled HTTP
//! call" baseline. With `--http` it is instead a do-nothing forward-auth endpoint: 200 with no
//! header and no body to every request, served by the forward-auth door's own accept loop and
//! limits, so that only the answer differs from the door's.
//!
//! `cargo run --release --example baseline_authz -- ADDR [--call URL | --http]`

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use tonic::{Request, Response, Status};

struct Baseline {
    call: Option<(reqwest::Client, String)>,
}

#[tonic::async_trait]
impl Authorization for Baseline {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if let Some((client, url)) = &self.call {
            let response = client
                .get(url)
                .send()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            response
                .bytes()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        let mut response = CheckResponse::with_status(Status::ok(""));
        response.set_http_response(OkHttpResponseBuilder::new());
        Ok(Response::new(response))
    }
}

async fn stop() {
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9101".to_owned());
    let mode = args.next();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    if mode.as_deref() == Some("--http") {
        eprintln!(
            "baseline forward-auth endpoint on {}",
            listener.local_addr()?
        );
        // Every request allowed: the body is never read, as the door never reads it.
        let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
        session_authz::ops::serve_http(
            listener,
            router,
            session_authz::doors::http::LIMITS,
            stop(),
        )
        .await?;
        return Ok(());
    }
    let call = match (mode.as_deref(), args.next()) {
        (Some("--call"), Some(url)) => Some((reqwest::Client::builder().no_proxy().build()?, url)),
        _ => None,
    };
    eprintln!("baseline Check server on {}", listener.local_addr()?);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthorizationServer<Baseline>>().await;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(AuthorizationServer::new(Baseline { call }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop(),
        )
        .await?;
    Ok(())
}
