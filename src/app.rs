//! Binds the listeners, wires the services together and runs them until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::authorize::{Authorizer, CachedValidator};
use crate::cache::DecisionCache;
use crate::config::{Config, Effective, TlsFiles};
use crate::doors::grpc::{CheckServer, CheckService};
use crate::doors::http::{self as forward_auth, ForwardAuth};
use crate::health::ValidatorHealth;
use crate::listener;
use crate::metrics::Metrics;
use crate::ops::{self, OpsState, Readiness};
use crate::probe::{self, Prober};
use crate::reload::{self, Reloader};
use crate::revoke::Revocations;
use crate::timers;
use crate::validator::{self, Validator};

/// Why the service could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("validator client: {0}")]
    Validator(#[from] validator::BuildError),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("ops or forward-auth HTTP server: {0}")]
    Http(std::io::Error),
    #[error("{0}")]
    Bus(#[from] crate::revoke::BusError),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("a server stopped on its own")]
    Stopped,
}

/// A started service: its real addresses and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    forward_auth_addr: Option<SocketAddr>,
    readiness: Readiness,
    stop: watch::Sender<bool>,
    drain_delay: Duration,
    grace: Duration,
    servers: JoinHandle<Result<(), AppError>>,
}

/// The core and what feeds it, built from the configuration; both doors share it.
#[derive(Debug)]
pub struct Core {
    pub authorizer: Arc<Authorizer>,
    pub validator: Validator,
    pub cache: DecisionCache,
    pub metrics: Arc<Metrics>,
    pub health: Arc<ValidatorHealth>,
    /// `POST /v1/revoke` and the revocation bus, when `revoke_secret_file` is set.
    pub revocations: Option<Revocations>,
}

impl Core {
    /// The validator client, cache, metrics and health, and the core over them: no listener,
    /// no task (in-process tests drive a door on it directly).
    pub fn new(config: &Config) -> Result<Self, AppError> {
        let validator = Validator::new(&validator::Settings {
            base_url: config.validator.url.expose().clone(),
            timeout: config.validator.timeout,
            cookie_name: config.session_cookie.clone(),
            header_name: config.session_header.clone(),
            max_concurrency: config.validator.max_concurrency,
            max_queue: config.validator.max_queue,
            extra_ca_pem: config.validator.ca.as_deref().map(read).transpose()?,
        })?;
        let metrics = Arc::new(Metrics::new(config.auth_enabled));
        let health = Arc::new(ValidatorHealth::default());
        // Replicas that share revocations make their cache keys under one secret.
        let cache = match &config.revocation {
            Some(revocation) => {
                DecisionCache::with_secret(config.cache, revocation.secret.cache_secret())
            }
            None => DecisionCache::new(config.cache),
        };
        let revocations = config
            .revocation
            .clone()
            .map(|settings| Revocations::new(settings, cache.clone(), metrics.clone()))
            .transpose()?;
        let authorizer = Arc::new(Authorizer::new(
            config.core_settings(),
            CachedValidator {
                validator: validator.clone(),
                cache: cache.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
            },
            metrics.clone(),
        ));
        Ok(Self {
            authorizer,
            validator,
            cache,
            metrics,
            health,
            revocations,
        })
    }

    /// The forward-auth door on this core, as `forward_auth_addr` serves it.
    pub fn forward_auth_door(&self, config: &Config) -> ForwardAuth {
        ForwardAuth::new(
            self.authorizer.clone(),
            config.forward_auth.path_prefix.clone(),
        )
    }

    /// The gRPC door on this core.
    pub fn check_service(&self, config: &Config) -> CheckService {
        CheckService::new(self.authorizer.clone(), config.validator.on_error)
    }
}

/// How the running service reads its configuration again (`reload`): SIGHUP, and changes of
/// `file` when there is one.
pub struct Reloading {
    pub load: reload::Load,
    /// How the start-up configuration showed each key.
    pub effective: Effective,
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Binds both listeners (port 0 allowed), starts serving and reports ready; no reloads.
pub async fn start(config: &Config) -> Result<Running, AppError> {
    start_reloading(config, None).await
}

/// [`start`], and with `reloading` the configuration is read again on SIGHUP and when its
/// file changes (`reload`).
pub async fn start_reloading(
    config: &Config,
    reloading: Option<Reloading>,
) -> Result<Running, AppError> {
    let core = Core::new(config)?;
    let prober = Prober::new(core.validator.clone(), core.health.clone(), probe::INTERVAL);
    let grpc_listener = bind(config.grpc_addr).await?;
    let http_listener = bind(config.http_addr).await?;
    let grpc_addr = local_addr(&grpc_listener, config.grpc_addr)?;
    let http_addr = local_addr(&http_listener, config.http_addr)?;
    let forward_auth_listener = match config.forward_auth.addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            let bound = local_addr(&listener, addr)?;
            Some((listener, bound))
        }
        None => None,
    };
    let forward_auth_addr = forward_auth_listener.as_ref().map(|(_, addr)| *addr);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health_reporter, core.health.subscribe());
    readiness.set(false).await;
    tokio::spawn(readiness.clone().follow_validator());
    let (reflection_v1, reflection_v1alpha) = ops::reflection_services()?;
    let ops_state = OpsState {
        readiness: readiness.clone(),
        metrics: core.metrics.clone(),
        cache: core.cache.clone(),
        authorizer: core.authorizer.clone(),
        revocations: core.revocations.clone(),
    };
    let forward_auth_door = core.forward_auth_door(config);
    let check = CheckServer::new(core.check_service(config));
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(prober.run(stopped.clone()));
    if let Some(revocations) = core.revocations.clone() {
        tokio::spawn(revocations.follow(stop_requested(stopped.clone())));
    }
    if let Some(Reloading {
        load,
        effective,
        file,
    }) = reloading
    {
        let reloader = Reloader::new(
            load,
            (config.clone(), effective),
            core.authorizer.clone(),
            core.cache.clone(),
            core.metrics.clone(),
        );
        tokio::spawn(reloader.run(file, stop_requested(stopped.clone())));
    }
    let mut deadlines = vec![config.validator.timeout];
    if forward_auth_listener.is_some() {
        deadlines.push(forward_auth::LIMITS.header_read_timeout);
    }
    tokio::spawn(timers::keep_one_due(
        timers::period(&deadlines),
        stopped.clone(),
    ));

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(server_tls(tls)?)?;
    }
    let grpc = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(check)
        .serve_with_incoming_shutdown(
            grpc_incoming(grpc_listener),
            stop_requested(stopped.clone()),
        );
    let http = listener::serve_http(
        http_listener,
        ops::http_router(ops_state),
        ops::OPS_LIMITS,
        stop_requested(stopped.clone()),
    );
    // Same accept loop as the ops port, with the door's own limits.
    let forward_auth = forward_auth_listener.map(|(listener, _)| {
        listener::serve(
            listener,
            forward_auth_door.service(),
            forward_auth::LIMITS,
            stop_requested(stopped),
        )
    });
    let servers = tokio::spawn(async move {
        tokio::try_join!(
            async { grpc.await.map_err(AppError::from) },
            async { http.await.map_err(AppError::Http) },
            async {
                match forward_auth {
                    Some(door) => door.await.map_err(AppError::Http),
                    None => Ok(()),
                }
            },
        )
        .map(|_| ())
    });

    readiness.set(true).await;
    tracing::info!(
        %grpc_addr,
        %http_addr,
        forward_auth_addr = forward_auth_addr.map(tracing::field::display),
        validator = %config.validator.url,
        "session-authz ready"
    );
    Ok(Running {
        grpc_addr,
        http_addr,
        forward_auth_addr,
        readiness,
        stop,
        drain_delay: config.drain_delay,
        grace: config.shutdown_grace,
        servers,
    })
}

impl Running {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The forward-auth door's address, when `forward_auth_addr` is set.
    pub fn forward_auth_addr(&self) -> Option<SocketAddr> {
        self.forward_auth_addr
    }

    /// Serves until `signal` completes, then drains.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), AppError> {
        let ended_early = tokio::select! {
            () = signal => None,
            result = &mut self.servers => Some(result),
        };
        match ended_early {
            None => self.shutdown().await,
            Some(result) => {
                result??;
                Err(AppError::Stopped)
            }
        }
    }

    /// Reports NOT_SERVING, keeps answering for the drain delay (so health checks and endpoint
    /// lists see it before connections are refused), stops accepting, and waits for in-flight
    /// Checks up to the grace period.
    pub async fn shutdown(self) -> Result<(), AppError> {
        tracing::info!(drain_delay = ?self.drain_delay, grace = ?self.grace, "draining");
        self.readiness.set(false).await;
        tokio::time::sleep(self.drain_delay).await;
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.grace, self.servers).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "grace period over; exiting with requests in flight");
                Ok(())
            }
        }
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, AppError> {
    std::fs::read(path).map_err(|source| AppError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

/// The listener's TLS: our certificate and key, and the client CA when mTLS is on.
fn server_tls(files: &TlsFiles) -> Result<ServerTlsConfig, AppError> {
    let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &files.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(tls)
}

async fn stop_requested(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, AppError> {
    listener
        .local_addr()
        .map_err(|source| AppError::Bind { addr, source })
}

/// The gRPC port's connections. tonic applies its own `tcp_nodelay` only to sockets it binds
/// itself, never to a listener handed to it. A failed accept (out of descriptors, or a
/// connection reset before it was taken) is passed on after a pause, as the HTTP listeners do:
/// tonic asks again at once, and with the connection still queued the socket stays readable,
/// so without one the loop would spin a core.
fn grpc_incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<Unvectored>> {
    use tokio_stream::StreamExt;
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .then(|accepted| async move {
            if let Err(err) = &accepted {
                tracing::debug!(listener = "grpc", error = %err, "accept failed");
                tokio::time::sleep(listener::ACCEPT_BACKOFF).await;
            }
            accepted.map(Unvectored)
        })
}

/// A gRPC connection as h2 is to see it: one that takes no vectored writes. On a socket that
/// does, h2 copies a DATA frame into its write buffer only up to 256 bytes and flushes a larger
/// one on its own; without, up to 1 024. A Check's answer carrying a signed assertion (~600
/// bytes) then shares a `write` with the answers in flight beside it instead of costing a
/// `writev` of its own (docs/benchmarks.md, "The signed answer's writes").
#[derive(Debug)]
struct Unvectored(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Unvectored {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

/// Every write but the vectored ones, which are left to the trait's defaults (one buffer at a
/// time, and `is_write_vectored` false).
impl tokio::io::AsyncWrite for Unvectored {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Unvectored {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    /// Without TCP_NODELAY, a miss's answer (headers and message, then the trailers a moment
    /// later) waits for the client's delayed ACK: 40 ms per Check on a kept-alive connection.
    #[tokio::test]
    async fn grpc_connections_are_accepted_without_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(grpc_incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.0.nodelay().unwrap());
    }

    /// h2 batches an answer of up to 1 024 bytes with the others in flight only on a
    /// connection that takes no vectored writes (see [`Unvectored`]).
    #[tokio::test]
    async fn grpc_connections_take_no_vectored_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = std::pin::pin!(grpc_incoming(listener));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut accepted = incoming.next().await.unwrap().unwrap();
        assert!(!tokio::io::AsyncWrite::is_write_vectored(&accepted));
        // Still a whole connection both ways.
        accepted.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        client.write_all(b"pong").await.unwrap();
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
