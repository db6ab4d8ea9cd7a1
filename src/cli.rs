//! Command-line flags: the top configuration layer, one flag per config key.

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

/// Envoy external-authorization gRPC service that checks session cookies and headers
/// against an auth service's `GET /session/validate`.
#[derive(Debug, Default, Parser, Serialize)]
#[command(name = "session-authz", version, about)]
pub struct Cli {
    /// TOML config file (lowest layer above the defaults)
    #[arg(
        long,
        env = "SESSION_AUTHZ_CONFIG",
        hide_env_values = true,
        value_name = "FILE"
    )]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Print the effective config (secrets redacted) and exit
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// Check sessions (true/false/1/0/yes/no) [env: AUTH_ENABLED] [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_enabled: Option<String>,

    /// Auth service base URL [env: AIMENU_URL] [default: http://localhost:5000]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aimenu_url: Option<String>,

    /// gRPC listen address [env: SESSION_AUTHZ_GRPC_ADDR] [default: 0.0.0.0:9001]
    #[arg(long, value_name = "IP:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,

    /// Ops HTTP listen address (/healthz, /readyz) [env: SESSION_AUTHZ_HTTP_ADDR] [default: 0.0.0.0:9002]
    #[arg(long, value_name = "IP:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,

    /// Session cookie name [env: SESSION_AUTHZ_SESSION_COOKIE] [default: session]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cookie: Option<String>,

    /// Session header name [env: SESSION_AUTHZ_SESSION_HEADER] [default: x-session-token]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_header: Option<String>,

    /// Identity header set upstream [env: SESSION_AUTHZ_USER_HEADER] [default: x-auth-user]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_header: Option<String>,

    /// Longest wait for the auth service [env: SESSION_AUTHZ_VALIDATOR_TIMEOUT] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator_timeout: Option<String>,

    /// deny (503, fail closed) or grpc-error (let Envoy decide) [env: SESSION_AUTHZ_ON_VALIDATOR_ERROR] [default: deny]
    #[arg(long, value_name = "MODE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_validator_error: Option<String>,

    /// Log format: text or json (filter with RUST_LOG) [env: SESSION_AUTHZ_LOG_FORMAT] [default: text]
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,

    /// Longest wait for in-flight Checks at shutdown [env: SESSION_AUTHZ_SHUTDOWN_GRACE] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,

    /// After SIGTERM, stay NOT_SERVING but answering this long before closing; 0 is off [env: SESSION_AUTHZ_DRAIN_DELAY] [default: 5s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_delay: Option<String>,

    /// Longest life of a cached valid answer; 0 turns the cache off [env: SESSION_AUTHZ_CACHE_TTL] [default: 10s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,

    /// Longest life of a cached invalid answer [env: SESSION_AUTHZ_CACHE_NEGATIVE_TTL] [default: 2s]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_negative_ttl: Option<String>,

    /// Most sessions cached [env: SESSION_AUTHZ_CACHE_MAX_ENTRIES] [default: 100000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_max_entries: Option<String>,

    /// Keep recently confirmed sessions allowed while the validator errs; 0 is off [env: SESSION_AUTHZ_STALE_IF_ERROR] [default: 0]
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<String>,

    /// Most validator calls in flight [env: SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY] [default: 256]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator_max_concurrency: Option<String>,

    /// Most validator calls waiting; beyond, Checks are denied at once [env: SESSION_AUTHZ_VALIDATOR_MAX_QUEUE] [default: 1024]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator_max_queue: Option<String>,

    /// PEM certificate (chain) for TLS on the gRPC listener [env: SESSION_AUTHZ_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,

    /// PEM private key for --tls-cert [env: SESSION_AUTHZ_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,

    /// PEM CA bundle; clients must present a certificate it signed (mTLS) [env: SESSION_AUTHZ_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<String>,

    /// Extra PEM CA bundle trusted for an https:// auth service [env: SESSION_AUTHZ_VALIDATOR_CA]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validator_ca: Option<String>,
}
