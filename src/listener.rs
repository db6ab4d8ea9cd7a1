//! The accept loop the plain-HTTP listeners share (the ops port and the forward-auth door): a
//! connection cap, a header-read timeout, no Nagle delay, and a graceful stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The pause after a failed accept (out of descriptors, or a connection reset before it was
/// taken): the queued connection keeps the socket readable, and retrying at once would spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a plain-HTTP listener (ops, forward-auth) protects itself from slow or idle clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Its name in logs.
    pub name: &'static str,
    /// Most connections served at once. The rest wait in the kernel's accept queue and hold
    /// none of our file descriptors, which the validator's connections need.
    pub max_connections: usize,
    /// Longest wait for a request's headers, and so for an idle kept-alive connection too.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` within `limits` until `stop` completes, then lets the requests
/// in progress finish.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve(
        listener,
        hyper_util::service::TowerToHyperService::new(router),
        limits,
        stop,
    )
    .await
}

/// [`serve_http`] for a hyper service of its own (the forward-auth door: no router between
/// hyper and its one answer).
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
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
                    tracing::debug!(listener = limits.name, error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Small answers, often on kept-alive connections: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let connection =
            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}
