//! Configuration: figment layers (defaults < TOML file < environment < flags) into a validated
//! [`Config`], or a [`ConfigError`] that names the key, the value and where it came from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::decision::OnValidatorError;

/// Keys read from `SESSION_AUTHZ_<KEY>`. `auth_enabled` and `aimenu_url` keep the seed guide's
/// names (`AUTH_ENABLED`, `AIMENU_URL`). Only known keys are read, so that variables such as
/// Kubernetes' injected `SESSION_AUTHZ_PORT` do not trip the unknown-key check.
pub const PREFIXED_KEYS: &[&str] = &[
    "grpc_addr",
    "http_addr",
    "session_cookie",
    "session_header",
    "user_header",
    "validator_timeout",
    "on_validator_error",
    "log_format",
    "shutdown_grace",
    "drain_delay",
    "cache_ttl",
    "cache_negative_ttl",
    "cache_max_entries",
    "stale_if_error",
    "validator_max_concurrency",
    "validator_max_queue",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "validator_ca",
];
pub const SEED_KEYS: &[&str] = &["auth_enabled", "aimenu_url"];
pub const ENV_PREFIX: &str = "SESSION_AUTHZ_";

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub auth_enabled: bool,
    pub aimenu_url: Url,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub session_cookie: String,
    pub session_header: String,
    pub user_header: String,
    pub validator_timeout: Duration,
    pub on_validator_error: OnValidatorError,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// How long the service stays NOT_SERVING, still answering, before it stops accepting.
    pub drain_delay: Duration,
    pub cache: crate::cache::Settings,
    pub validator_max_concurrency: usize,
    pub validator_max_queue: usize,
    /// TLS for the gRPC listener; `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    /// Extra CA bundle (PEM) trusted for an `https://` validator.
    pub validator_ca: Option<PathBuf>,
}

/// PEM files for the gRPC listener's TLS; with `client_ca`, clients must present a certificate
/// it signed (mTLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth_enabled: true,
            aimenu_url: Url::parse("http://localhost:5000").unwrap_or_else(|_| unreachable!()),
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9001)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9002)),
            session_cookie: "session".to_owned(),
            session_header: "x-session-token".to_owned(),
            user_header: "x-auth-user".to_owned(),
            validator_timeout: Duration::from_secs(5),
            on_validator_error: OnValidatorError::Deny,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            drain_delay: Duration::from_secs(5),
            cache: crate::cache::Settings::default(),
            validator_max_concurrency: 256,
            validator_max_queue: 1024,
            tls: None,
            validator_ca: None,
        }
    }
}

/// The environment layer: exactly the variables [`env_var`] names, values kept as text.
///
/// figment's `Env` matches names case-insensitively and parses values (`0.0` becomes a number
/// that reads as `0`); a gate reads exact names and exact words instead. A variable that
/// differs from one of ours only in letter case is an error, never silently read or ignored.
#[derive(Debug)]
struct Environment(std::collections::BTreeMap<&'static str, String>);

impl Environment {
    fn read() -> Result<Self, ConfigError> {
        let mut values = std::collections::BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else {
                continue; // not UTF-8, so none of ours
            };
            let Some(key) = SEED_KEYS
                .iter()
                .chain(PREFIXED_KEYS)
                .find(|key| env_var(key).eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let expected = env_var(key);
            if name != expected {
                return Err(ConfigError::EnvSpelling {
                    found: name.to_owned(),
                    expected,
                });
            }
            let value = value.into_string().map_err(|_| ConfigError::Invalid {
                key,
                value: "(not UTF-8)".to_owned(),
                origin: format!("from the {expected} environment variable"),
                expected: "expected UTF-8 text",
            })?;
            values.insert(*key, value);
        }
        Ok(Self(values))
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = self
            .0
            .iter()
            .map(|(key, value)| ((*key).to_owned(), Value::from(value.as_str())))
            .collect();
        Ok(Profile::Default.collect(dict))
    }
}

/// A configuration that cannot be used. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {key} = {value} ({origin}): {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        origin: String,
        expected: &'static str,
    },
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("config: {0}")]
    Source(String),
    #[error("config: {0}")]
    Incomplete(&'static str),
    #[error("config {key} ({origin}) {why}")]
    Conflict {
        key: &'static str,
        origin: String,
        why: &'static str,
    },
    #[error("config: environment variable {found} is not read; the name is {expected} (exact letter case)")]
    EnvSpelling { found: String, expected: String },
}

/// Every key, loosely typed: each is checked by hand so errors name the key and value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    auth_enabled: Option<Value>,
    aimenu_url: Option<Value>,
    grpc_addr: Option<Value>,
    http_addr: Option<Value>,
    session_cookie: Option<Value>,
    session_header: Option<Value>,
    user_header: Option<Value>,
    validator_timeout: Option<Value>,
    on_validator_error: Option<Value>,
    log_format: Option<Value>,
    shutdown_grace: Option<Value>,
    drain_delay: Option<Value>,
    cache_ttl: Option<Value>,
    cache_negative_ttl: Option<Value>,
    cache_max_entries: Option<Value>,
    stale_if_error: Option<Value>,
    validator_max_concurrency: Option<Value>,
    validator_max_queue: Option<Value>,
    tls_cert: Option<Value>,
    tls_key: Option<Value>,
    tls_client_ca: Option<Value>,
    validator_ca: Option<Value>,
}

impl Config {
    /// The layered sources: TOML file (if any) < environment < `flags`.
    pub fn figment(file: Option<&Path>, flags: impl Provider) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Ok(figment.merge(Environment::read()?).merge(flags))
    }

    /// Validates the merged layers into a config.
    pub fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let raw: Raw = figment
            .extract()
            .map_err(|err| ConfigError::Source(first_line(&err.to_string())))?;
        let field = Field { figment };
        let defaults = Config::default();
        let path = |key, value| field.parse(key, value, None, parse_path);
        let tls = match (
            path("tls_cert", raw.tls_cert)?,
            path("tls_key", raw.tls_key)?,
            path("tls_client_ca", raw.tls_client_ca)?,
        ) {
            (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::Incomplete(
                    "tls_cert and tls_key must be set together, and tls_client_ca needs both",
                ))
            }
        };
        let config = Config {
            auth_enabled: field.parse(
                "auth_enabled",
                raw.auth_enabled,
                defaults.auth_enabled,
                parse_bool,
            )?,
            aimenu_url: field.parse(
                "aimenu_url",
                raw.aimenu_url,
                defaults.aimenu_url,
                parse_url,
            )?,
            grpc_addr: field.parse("grpc_addr", raw.grpc_addr, defaults.grpc_addr, parse_addr)?,
            http_addr: field.parse("http_addr", raw.http_addr, defaults.http_addr, parse_addr)?,
            session_cookie: field.parse(
                "session_cookie",
                raw.session_cookie,
                defaults.session_cookie,
                parse_cookie_name,
            )?,
            session_header: field.parse(
                "session_header",
                raw.session_header,
                defaults.session_header,
                parse_header_name,
            )?,
            user_header: field.parse(
                "user_header",
                raw.user_header,
                defaults.user_header,
                parse_header_name,
            )?,
            validator_timeout: field.parse(
                "validator_timeout",
                raw.validator_timeout,
                defaults.validator_timeout,
                parse_validator_timeout,
            )?,
            on_validator_error: field.parse(
                "on_validator_error",
                raw.on_validator_error,
                defaults.on_validator_error,
                parse_on_error,
            )?,
            log_format: field.parse(
                "log_format",
                raw.log_format,
                defaults.log_format,
                parse_log_format,
            )?,
            shutdown_grace: field.parse(
                "shutdown_grace",
                raw.shutdown_grace,
                defaults.shutdown_grace,
                parse_shutdown_grace,
            )?,
            drain_delay: field.parse(
                "drain_delay",
                raw.drain_delay,
                defaults.drain_delay,
                parse_drain_delay,
            )?,
            cache: crate::cache::Settings {
                ttl: field.parse("cache_ttl", raw.cache_ttl, defaults.cache.ttl, parse_ttl)?,
                negative_ttl: field.parse(
                    "cache_negative_ttl",
                    raw.cache_negative_ttl,
                    defaults.cache.negative_ttl,
                    parse_ttl,
                )?,
                max_entries: field.parse(
                    "cache_max_entries",
                    raw.cache_max_entries,
                    defaults.cache.max_entries,
                    parse_cache_entries,
                )?,
                stale_if_error: field.parse(
                    "stale_if_error",
                    raw.stale_if_error,
                    defaults.cache.stale_if_error,
                    parse_ttl,
                )?,
            },
            validator_max_concurrency: field.parse(
                "validator_max_concurrency",
                raw.validator_max_concurrency,
                defaults.validator_max_concurrency,
                parse_concurrency,
            )?,
            validator_max_queue: field.parse(
                "validator_max_queue",
                raw.validator_max_queue,
                defaults.validator_max_queue,
                parse_queue,
            )?,
            tls,
            validator_ca: path("validator_ca", raw.validator_ca)?,
        };
        config.check_consistency(&field)?;
        Ok(config)
    }

    /// Rules between keys: each value alone is fine, together they would misbehave.
    fn check_consistency(&self, field: &Field<'_>) -> Result<(), ConfigError> {
        if self.user_header == self.session_header {
            return Err(ConfigError::Conflict {
                key: "user_header",
                origin: field.origin("user_header"),
                why: "equals session_header: the session token would be sent upstream, or the \
                      identity read as a token",
            });
        }
        if self.validator_ca.is_some() && self.aimenu_url.scheme() != "https" {
            return Err(ConfigError::Conflict {
                key: "validator_ca",
                origin: field.origin("validator_ca"),
                why: "is set but aimenu_url is not https://, so the CA would never be used",
            });
        }
        Ok(())
    }

    /// What an operator should hear about at start-up, although the configuration is usable.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        let url = &self.aimenu_url;
        let has_userinfo = !url.username().is_empty() || url.password().is_some();
        let host = url.host_str().unwrap_or_default();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if has_userinfo && url.scheme() == "http" && !loopback {
            warnings.push(
                "aimenu_url carries credentials (user-info) over plain http:// to a non-loopback host: anyone on the path can read them; use https://",
            );
        }
        warnings
    }

    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Shown<'a> {
            auth_enabled: bool,
            aimenu_url: String,
            grpc_addr: String,
            http_addr: String,
            session_cookie: &'a str,
            session_header: &'a str,
            user_header: &'a str,
            validator_timeout: String,
            on_validator_error: OnValidatorError,
            log_format: LogFormat,
            shutdown_grace: String,
            drain_delay: String,
            cache_ttl: String,
            cache_negative_ttl: String,
            cache_max_entries: u64,
            stale_if_error: String,
            validator_max_concurrency: usize,
            validator_max_queue: usize,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls_cert: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls_key: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tls_client_ca: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            validator_ca: Option<String>,
        }
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        let shown = Shown {
            auth_enabled: self.auth_enabled,
            aimenu_url: redact_url(&self.aimenu_url),
            grpc_addr: self.grpc_addr.to_string(),
            http_addr: self.http_addr.to_string(),
            session_cookie: &self.session_cookie,
            session_header: &self.session_header,
            user_header: &self.user_header,
            validator_timeout: duration(self.validator_timeout),
            on_validator_error: self.on_validator_error,
            log_format: self.log_format,
            shutdown_grace: duration(self.shutdown_grace),
            drain_delay: duration(self.drain_delay),
            cache_ttl: duration(self.cache.ttl),
            cache_negative_ttl: duration(self.cache.negative_ttl),
            cache_max_entries: self.cache.max_entries,
            stale_if_error: duration(self.cache.stale_if_error),
            validator_max_concurrency: self.validator_max_concurrency,
            validator_max_queue: self.validator_max_queue,
            tls_cert: self.tls.as_ref().map(|t| t.cert.display().to_string()),
            tls_key: self.tls.as_ref().map(|t| t.key.display().to_string()),
            tls_client_ca: self
                .tls
                .as_ref()
                .and_then(|t| t.client_ca.as_ref())
                .map(|p| p.display().to_string()),
            validator_ca: self.validator_ca.as_ref().map(|p| p.display().to_string()),
        };
        toml::to_string(&shown).unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("auth_enabled", &self.auth_enabled)
            .field("aimenu_url", &redact_url(&self.aimenu_url))
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("session_cookie", &self.session_cookie)
            .field("session_header", &self.session_header)
            .field("user_header", &self.user_header)
            .field("validator_timeout", &self.validator_timeout)
            .field("on_validator_error", &self.on_validator_error)
            .field("log_format", &self.log_format)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("drain_delay", &self.drain_delay)
            .field("cache", &self.cache)
            .field("validator_max_concurrency", &self.validator_max_concurrency)
            .field("validator_max_queue", &self.validator_max_queue)
            .field("tls", &self.tls)
            .field("validator_ca", &self.validator_ca)
            .finish()
    }
}

/// A URL fit for logs and messages: user name, password, query and fragment replaced, since
/// API keys hide in any of them.
pub fn redact_url(url: &Url) -> String {
    const HIDDEN: &str = "REDACTED";
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username(HIDDEN);
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some(HIDDEN));
    }
    if shown.query().is_some() {
        shown.set_query(Some(HIDDEN));
    }
    if shown.fragment().is_some() {
        shown.set_fragment(Some(HIDDEN));
    }
    shown.to_string()
}

/// Looks up where a key's value came from, for error messages.
struct Field<'a> {
    figment: &'a Figment,
}

impl Field<'_> {
    fn parse<T>(
        &self,
        key: &'static str,
        value: Option<Value>,
        default: T,
        parse: fn(&Value) -> Result<T, &'static str>,
    ) -> Result<T, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        parse(&value).map_err(|expected| ConfigError::Invalid {
            key,
            value: shown_value(key, &value),
            origin: self.origin(key),
            expected,
        })
    }

    fn origin(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            Some(metadata) if metadata.name.contains("environment") => {
                format!("from the {} environment variable", env_var(key))
            }
            Some(metadata) => match &metadata.source {
                Some(figment::Source::File(path)) => format!("from {}", path.display()),
                _ => format!("from the --{} flag", key.replace('_', "-")),
            },
            None => "from an unknown source".to_owned(),
        }
    }
}

/// The environment variable that sets `key`.
pub fn env_var(key: &str) -> String {
    let upper = key.to_ascii_uppercase();
    if SEED_KEYS.contains(&key) {
        upper
    } else {
        format!("{ENV_PREFIX}{upper}")
    }
}

fn shown_value(key: &str, value: &Value) -> String {
    let text = match (as_text(value), value) {
        (Some(text), _) => text,
        // A float is shown as written, though no key accepts one.
        (None, Value::Num(_, n)) => n.to_f64().map(|f| f.to_string()).unwrap_or_default(),
        (None, _) => "(not a scalar)".to_owned(),
    };
    let text = if key == "aimenu_url" {
        match Url::parse(&text) {
            Ok(url) => redact_url(&url),
            Err(_) if text.contains(['@', '?', '#']) => {
                "(not shown: may hold credentials)".to_owned()
            }
            Err(_) => text,
        }
    } else {
        text
    };
    format!("{text:?}")
}

/// The value as text: a TOML file may give `9001` or `true` as a number or a bool.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        // A float is no key's value: rendering 0.0 as "0" would turn it into a valid word.
        Value::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string())),
        _ => None,
    }
}

const BOOL_EXPECTED: &str = "expected one of true, false, 1, 0, yes, no";

fn parse_bool(value: &Value) -> Result<bool, &'static str> {
    if let Value::Bool(_, b) = value {
        return Ok(*b);
    }
    let text = as_text(value).ok_or(BOOL_EXPECTED)?;
    // Exact words in any letter case; `00`, `+0` or `0.0` are not among them.
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(BOOL_EXPECTED),
    }
}

fn parse_url(value: &Value) -> Result<Url, &'static str> {
    const EXPECTED: &str = "expected an http:// or https:// URL, like http://auth:5000";
    let text = as_text(value).ok_or(EXPECTED)?;
    let url = Url::parse(text.trim()).map_err(|_| EXPECTED)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(EXPECTED);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without query or fragment");
    }
    Ok(url)
}

fn parse_addr(value: &Value) -> Result<SocketAddr, &'static str> {
    const EXPECTED: &str = "expected IP:PORT, like 0.0.0.0:9001 or [::1]:9001";
    as_text(value)
        .and_then(|text| text.trim().parse().ok())
        .ok_or(EXPECTED)
}

// Upper bounds: every accepted value must also start and serve (moka refuses a time-to-live
// over 1000 years, tokio's semaphore more than 2^61 permits), and far beyond these a value is a
// typo rather than a wish.
const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

fn bounded_duration(
    text: Option<String>,
    off_allowed: bool,
    max_secs: u64,
    expected: &'static str,
) -> Result<Duration, &'static str> {
    let text = text.ok_or(expected)?;
    let duration = match text.trim() {
        "0" | "off" if off_allowed => Duration::ZERO,
        other => humantime::parse_duration(other).map_err(|_| expected)?,
    };
    if (duration.is_zero() && !off_allowed) || duration > Duration::from_secs(max_secs) {
        return Err(expected);
    }
    Ok(duration)
}

fn parse_validator_timeout(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration from 1ms to 5m, like 5s or 500ms";
    bounded_duration(as_text(value), false, 5 * MINUTE, EXPECTED)
}

fn parse_shutdown_grace(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration from 1ms to 1h, like 10s";
    bounded_duration(as_text(value), false, HOUR, EXPECTED)
}

fn parse_drain_delay(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration up to 1h, like 5s, or 0 to turn it off";
    bounded_duration(as_text(value), true, HOUR, EXPECTED)
}

/// A cache lifetime where `0` (or `off`) means "none".
fn parse_ttl(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration up to 24h, like 10s, or 0 to turn it off";
    bounded_duration(as_text(value), true, DAY, EXPECTED)
}

fn bounded_count<T: TryFrom<u64>>(
    value: &Value,
    max: u64,
    expected: &'static str,
) -> Result<T, &'static str> {
    let text = as_text(value).ok_or(expected)?;
    let n: u64 = text.trim().parse().map_err(|_| expected)?;
    if n == 0 || n > max {
        return Err(expected);
    }
    T::try_from(n).map_err(|_| expected)
}

fn parse_cache_entries(value: &Value) -> Result<u64, &'static str> {
    bounded_count(
        value,
        10_000_000,
        "expected a whole number from 1 to 10000000",
    )
}

fn parse_concurrency(value: &Value) -> Result<usize, &'static str> {
    bounded_count(value, 65_536, "expected a whole number from 1 to 65536")
}

fn parse_queue(value: &Value) -> Result<usize, &'static str> {
    bounded_count(
        value,
        1_000_000,
        "expected a whole number from 1 to 1000000",
    )
}

fn parse_path(value: &Value) -> Result<Option<PathBuf>, &'static str> {
    const EXPECTED: &str = "expected a file path";
    match as_text(value) {
        Some(text) if !text.trim().is_empty() => Ok(Some(PathBuf::from(text.trim()))),
        _ => Err(EXPECTED),
    }
}

fn parse_header_name(value: &Value) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected an HTTP header name, like x-auth-user";
    let text = as_text(value).ok_or(EXPECTED)?;
    let name = http::HeaderName::from_bytes(text.trim().as_bytes()).map_err(|_| EXPECTED)?;
    // Pseudo-headers and host route the request, cookie holds the session, and hop-by-hop
    // headers are dropped or re-framed by every proxy on the way: none can carry a session
    // or an identity.
    const RESERVED: &[&str] = &[
        "host",
        "cookie",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ];
    if name.as_str().starts_with(':') || RESERVED.contains(&name.as_str()) {
        return Err(
            "expected an ordinary header name (not a pseudo-header, host, cookie, content-length or hop-by-hop)",
        );
    }
    Ok(name.as_str().to_owned())
}

fn parse_cookie_name(value: &Value) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~)";
    let text = as_text(value).ok_or(EXPECTED)?;
    // A cookie name is an RFC 7230 token, the same alphabet as a header name but case-kept.
    if text.is_empty() || http::HeaderName::from_bytes(text.as_bytes()).is_err() {
        return Err(EXPECTED);
    }
    Ok(text)
}

fn parse_on_error(value: &Value) -> Result<OnValidatorError, &'static str> {
    const EXPECTED: &str = "expected deny or grpc-error";
    match as_text(value).ok_or(EXPECTED)?.trim() {
        "deny" => Ok(OnValidatorError::Deny),
        "grpc-error" => Ok(OnValidatorError::GrpcError),
        _ => Err(EXPECTED),
    }
}

fn parse_log_format(value: &Value) -> Result<LogFormat, &'static str> {
    const EXPECTED: &str = "expected text or json";
    match as_text(value).ok_or(EXPECTED)?.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(EXPECTED),
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// A flags layer from `(key, value)` pairs, for callers that do not use clap.
pub fn flags_from_pairs(
    pairs: &[(&str, &str)],
) -> Serialized<std::collections::BTreeMap<String, String>> {
    Serialized::defaults(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the error type
mod tests {
    use super::*;
    use figment::Jail;

    fn jail_error(err: ConfigError) -> figment::Error {
        err.to_string().into()
    }

    fn load(jail_env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut result = None;
        Jail::expect_with(|jail| {
            for (k, v) in jail_env {
                jail.set_env(k, v);
            }
            result = Some(
                Config::figment(None, flags_from_pairs(flags))
                    .and_then(|figment| Config::from_figment(&figment)),
            );
            Ok(())
        });
        result.unwrap_or_else(|| panic!("jail did not run"))
    }

    fn error_line(env: &[(&str, &str)], flags: &[(&str, &str)]) -> String {
        let err = load(env, flags).unwrap_err().to_string();
        assert!(!err.contains('\n'), "not one line: {err}");
        err
    }

    #[test]
    fn defaults() {
        let config = load(&[], &[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.aimenu_url.as_str(), "http://localhost:5000/");
    }

    #[test]
    fn seed_names_and_prefixed_env() {
        let config = load(
            &[
                ("AUTH_ENABLED", "no"),
                ("AIMENU_URL", "http://auth:5000/internal"),
                ("SESSION_AUTHZ_GRPC_ADDR", "127.0.0.1:7001"),
                ("SESSION_AUTHZ_VALIDATOR_TIMEOUT", "500ms"),
                ("SESSION_AUTHZ_USER_HEADER", "X-User"),
                ("SESSION_AUTHZ_ON_VALIDATOR_ERROR", "grpc-error"),
                ("SESSION_AUTHZ_PORT", "tcp://10.0.0.1:9001"),
            ],
            &[],
        )
        .unwrap();
        assert!(!config.auth_enabled);
        assert_eq!(config.aimenu_url.as_str(), "http://auth:5000/internal");
        assert_eq!(config.grpc_addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(config.validator_timeout, Duration::from_millis(500));
        assert_eq!(config.user_header, "x-user");
        assert_eq!(config.on_validator_error, OnValidatorError::GrpcError);
    }

    #[test]
    fn cache_and_backpressure_keys() {
        let config = load(
            &[
                ("SESSION_AUTHZ_CACHE_TTL", "0"),
                ("SESSION_AUTHZ_CACHE_NEGATIVE_TTL", "500ms"),
                ("SESSION_AUTHZ_CACHE_MAX_ENTRIES", "5000"),
                ("SESSION_AUTHZ_STALE_IF_ERROR", "5m"),
                ("SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY", "8"),
            ],
            &[("validator_max_queue", "16")],
        )
        .unwrap();
        assert_eq!(config.cache.ttl, Duration::ZERO);
        assert_eq!(config.cache.negative_ttl, Duration::from_millis(500));
        assert_eq!(config.cache.max_entries, 5000);
        assert_eq!(config.cache.stale_if_error, Duration::from_secs(300));
        assert_eq!(config.validator_max_concurrency, 8);
        assert_eq!(config.validator_max_queue, 16);
        assert_eq!(config.tls, None);
        assert!(config.to_toml().contains("stale_if_error = \"5m\""));
    }

    #[test]
    fn tls_files_come_together() {
        let config = load(
            &[
                ("SESSION_AUTHZ_TLS_CERT", "/etc/authz/tls.crt"),
                ("SESSION_AUTHZ_TLS_KEY", "/etc/authz/tls.key"),
                ("SESSION_AUTHZ_TLS_CLIENT_CA", "/etc/authz/ca.crt"),
                ("SESSION_AUTHZ_VALIDATOR_CA", "/etc/authz/auth-ca.crt"),
                ("AIMENU_URL", "https://auth:5443"),
            ],
            &[],
        )
        .unwrap();
        let tls = config.tls.clone().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/authz/tls.crt"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/authz/ca.crt")));
        assert_eq!(
            config.validator_ca,
            Some(PathBuf::from("/etc/authz/auth-ca.crt"))
        );
        assert!(config
            .to_toml()
            .contains("tls_cert = \"/etc/authz/tls.crt\""));
        for env in [
            &[("SESSION_AUTHZ_TLS_CERT", "/a")][..],
            &[("SESSION_AUTHZ_TLS_KEY", "/a")],
            &[("SESSION_AUTHZ_TLS_CLIENT_CA", "/a")],
            &[
                ("SESSION_AUTHZ_TLS_CLIENT_CA", "/a"),
                ("SESSION_AUTHZ_TLS_CERT", "/b"),
            ],
        ] {
            let err = error_line(env, &[]);
            assert!(err.contains("tls_cert and tls_key"), "{err}");
        }
    }

    #[test]
    fn strict_booleans() {
        for (text, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("YES", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ] {
            let config = load(&[("AUTH_ENABLED", text)], &[]).unwrap();
            assert_eq!(config.auth_enabled, expected, "{text}");
        }
        for text in ["flase", "off", "", "2", "disabled", "nope"] {
            let err = error_line(&[("AUTH_ENABLED", text)], &[]);
            assert!(err.contains("auth_enabled"), "{err}");
            assert!(err.contains("AUTH_ENABLED"), "{err}");
        }
    }

    #[test]
    fn file_env_flag_precedence() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "authz.toml",
                "grpc_addr = \"127.0.0.1:1001\"\nhttp_addr = \"127.0.0.1:1002\"\nsession_cookie = \"sid\"\n",
            )?;
            jail.set_env("SESSION_AUTHZ_HTTP_ADDR", "127.0.0.1:2002");
            jail.set_env("SESSION_AUTHZ_SESSION_COOKIE", "sid2");
            let figment = Config::figment(
                Some(Path::new("authz.toml")),
                flags_from_pairs(&[("session_cookie", "sid3")]),
            )
            .map_err(jail_error)?;
            let config = Config::from_figment(&figment).map_err(jail_error)?;
            assert_eq!(config.grpc_addr, "127.0.0.1:1001".parse().unwrap());
            assert_eq!(config.http_addr, "127.0.0.1:2002".parse().unwrap());
            assert_eq!(config.session_cookie, "sid3");
            Ok(())
        });
    }

    #[test]
    fn file_errors() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "auth_enabed = false\n")?;
            let figment = Config::figment(Some(Path::new("typo.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            let err = Config::from_figment(&figment).unwrap_err().to_string();
            assert!(err.contains("auth_enabed"), "{err}");

            jail.create_file("bad.toml", "validator_timeout = \"soon\"\n")?;
            let figment = Config::figment(Some(Path::new("bad.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            let err = Config::from_figment(&figment).unwrap_err().to_string();
            assert!(
                err.contains("validator_timeout") && err.contains("bad.toml"),
                "{err}"
            );

            let err = Config::figment(Some(Path::new("missing.toml")), flags_from_pairs(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_key_rejects_bad_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("AIMENU_URL", "auth:5000", "aimenu_url"),
            ("AIMENU_URL", "ftp://auth", "aimenu_url"),
            ("AIMENU_URL", "http://auth/?x=1", "aimenu_url"),
            ("SESSION_AUTHZ_GRPC_ADDR", "localhost", "grpc_addr"),
            ("SESSION_AUTHZ_GRPC_ADDR", "9001", "grpc_addr"),
            ("SESSION_AUTHZ_HTTP_ADDR", "1.2.3.4:99999", "http_addr"),
            ("SESSION_AUTHZ_SESSION_COOKIE", "a b", "session_cookie"),
            ("SESSION_AUTHZ_SESSION_COOKIE", "a;b", "session_cookie"),
            (
                "SESSION_AUTHZ_SESSION_HEADER",
                "bad header",
                "session_header",
            ),
            ("SESSION_AUTHZ_SESSION_HEADER", "cookie", "session_header"),
            ("SESSION_AUTHZ_USER_HEADER", ":path", "user_header"),
            ("SESSION_AUTHZ_USER_HEADER", "", "user_header"),
            ("SESSION_AUTHZ_VALIDATOR_TIMEOUT", "5", "validator_timeout"),
            ("SESSION_AUTHZ_VALIDATOR_TIMEOUT", "0s", "validator_timeout"),
            (
                "SESSION_AUTHZ_VALIDATOR_TIMEOUT",
                "soon",
                "validator_timeout",
            ),
            (
                "SESSION_AUTHZ_ON_VALIDATOR_ERROR",
                "allow",
                "on_validator_error",
            ),
            ("SESSION_AUTHZ_LOG_FORMAT", "xml", "log_format"),
            ("SESSION_AUTHZ_SHUTDOWN_GRACE", "-1s", "shutdown_grace"),
            ("SESSION_AUTHZ_CACHE_TTL", "soon", "cache_ttl"),
            ("SESSION_AUTHZ_CACHE_TTL", "10", "cache_ttl"),
            (
                "SESSION_AUTHZ_CACHE_NEGATIVE_TTL",
                "x",
                "cache_negative_ttl",
            ),
            ("SESSION_AUTHZ_CACHE_MAX_ENTRIES", "0", "cache_max_entries"),
            ("SESSION_AUTHZ_CACHE_MAX_ENTRIES", "-5", "cache_max_entries"),
            ("SESSION_AUTHZ_STALE_IF_ERROR", "forever", "stale_if_error"),
            (
                "SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY",
                "0",
                "validator_max_concurrency",
            ),
            (
                "SESSION_AUTHZ_VALIDATOR_MAX_QUEUE",
                "many",
                "validator_max_queue",
            ),
        ];
        for (var, value, key) in cases {
            let err = error_line(&[(var, value)], &[]);
            assert!(
                err.contains(key) && err.contains(var),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn booleans_are_exact_words() {
        for text in [
            "0.0", "00", "+0", "-0", "1.0", " 0", "0 ", "ture", "y", "n", "on",
        ] {
            let err = error_line(&[("AUTH_ENABLED", text)], &[]);
            assert!(err.contains("AUTH_ENABLED"), "{text:?}: {err}");
        }
        Jail::expect_with(|jail| {
            jail.create_file("float.toml", "auth_enabled = 0.0\n")?;
            let figment = Config::figment(Some(Path::new("float.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            let err = Config::from_figment(&figment).unwrap_err().to_string();
            assert!(
                err.contains("auth_enabled") && err.contains("float.toml"),
                "{err}"
            );
            jail.create_file("int.toml", "auth_enabled = 0\n")?;
            let figment = Config::figment(Some(Path::new("int.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            assert!(
                !Config::from_figment(&figment)
                    .map_err(jail_error)?
                    .auth_enabled
            );
            Ok(())
        });
    }

    #[test]
    fn environment_names_are_exact() {
        // A second spelling would otherwise decide which value wins.
        let err = error_line(&[("AUTH_ENABLED", "true"), ("auth_enabled", "false")], &[]);
        assert!(
            err.contains("auth_enabled") && err.contains("AUTH_ENABLED"),
            "{err}"
        );
        let err = error_line(&[("auth_enabled", "false")], &[]);
        assert!(err.contains("exact letter case"), "{err}");
        let err = error_line(&[("Session_Authz_Cache_Ttl", "0")], &[]);
        assert!(err.contains("SESSION_AUTHZ_CACHE_TTL"), "{err}");
        // Values are text: `5` stays the word 5, not a number figment guessed.
        let config = load(&[("SESSION_AUTHZ_SESSION_COOKIE", "1.0")], &[]).unwrap();
        assert_eq!(config.session_cookie, "1.0");
    }

    #[test]
    fn values_are_bounded() {
        for (var, value) in [
            ("SESSION_AUTHZ_CACHE_TTL", "2000years"),
            ("SESSION_AUTHZ_CACHE_TTL", "25h"),
            ("SESSION_AUTHZ_CACHE_NEGATIVE_TTL", "1000000000000s"),
            ("SESSION_AUTHZ_STALE_IF_ERROR", "2d"),
            ("SESSION_AUTHZ_VALIDATOR_TIMEOUT", "6m"),
            ("SESSION_AUTHZ_SHUTDOWN_GRACE", "2h"),
            ("SESSION_AUTHZ_DRAIN_DELAY", "2h"),
            (
                "SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY",
                "18446744073709551615",
            ),
            ("SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY", "65537"),
            ("SESSION_AUTHZ_VALIDATOR_MAX_QUEUE", "1000001"),
            ("SESSION_AUTHZ_CACHE_MAX_ENTRIES", "10000001"),
        ] {
            let err = error_line(&[(var, value)], &[]);
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        let config = load(
            &[
                ("SESSION_AUTHZ_CACHE_TTL", "24h"),
                ("SESSION_AUTHZ_DRAIN_DELAY", "0"),
                ("SESSION_AUTHZ_VALIDATOR_MAX_CONCURRENCY", "65536"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(config.cache.ttl, Duration::from_secs(86_400));
        assert_eq!(config.drain_delay, Duration::ZERO);
        assert_eq!(config.validator_max_concurrency, 65_536);
    }

    #[test]
    fn keys_that_contradict_each_other() {
        let err = error_line(&[("SESSION_AUTHZ_USER_HEADER", "X-Session-Token")], &[]);
        assert!(
            err.contains("user_header") && err.contains("session_header"),
            "{err}"
        );
        let err = error_line(&[("SESSION_AUTHZ_VALIDATOR_CA", "/etc/ca.pem")], &[]);
        assert!(
            err.contains("validator_ca") && err.contains("https"),
            "{err}"
        );
        assert!(load(
            &[
                ("SESSION_AUTHZ_VALIDATOR_CA", "/etc/ca.pem"),
                ("AIMENU_URL", "https://auth:5000"),
            ],
            &[]
        )
        .is_ok());
        for name in [
            "host",
            "Cookie",
            "connection",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
            "trailer",
            "proxy-connection",
            "content-length",
        ] {
            for var in ["SESSION_AUTHZ_USER_HEADER", "SESSION_AUTHZ_SESSION_HEADER"] {
                let err = error_line(&[(var, name)], &[]);
                assert!(err.contains(var), "{var}={name}: {err}");
            }
        }
    }

    #[test]
    fn url_secrets_never_shown() {
        // A user name alone is an API key as often as not.
        let config = load(&[("AIMENU_URL", "http://APIKEY123@auth:5000")], &[]).unwrap();
        assert!(!config.to_toml().contains("APIKEY123"));
        assert!(!format!("{config:?}").contains("APIKEY123"));
        assert!(!redact_url(&config.aimenu_url).contains("APIKEY123"));
        let err = error_line(&[("AIMENU_URL", "http://auth:5000/?apikey=SECRET")], &[]);
        assert!(
            err.contains("aimenu_url") && !err.contains("SECRET"),
            "{err}"
        );
        let err = error_line(&[("AIMENU_URL", "http://auth:5000/#SECRET")], &[]);
        assert!(!err.contains("SECRET"), "{err}");
        let err = error_line(&[("AIMENU_URL", "auth:5000?apikey=SECRET")], &[]);
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn warns_of_credentials_over_plain_http() {
        let warned = |url: &str| {
            !load(&[("AIMENU_URL", url)], &[])
                .unwrap()
                .warnings()
                .is_empty()
        };
        assert!(warned("http://key@auth:5000"));
        assert!(warned("http://user:pw@10.0.0.7:5000"));
        assert!(!warned("https://key@auth:5000"));
        assert!(!warned("http://key@127.0.0.1:5000"));
        assert!(!warned("http://key@[::1]:5000"));
        assert!(!warned("http://key@localhost:5000"));
        assert!(!warned("http://auth:5000"));
    }

    #[test]
    fn flag_errors_name_the_key() {
        let err = error_line(&[], &[("grpc_addr", "nowhere")]);
        assert!(
            err.contains("grpc_addr") && err.contains("nowhere"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let config = load(&[("AIMENU_URL", "http://svc:hunter2@auth:5000")], &[]).unwrap();
        assert!(!config.to_toml().contains("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(config.to_toml().contains("auth_enabled = true"));
        let err = error_line(&[("AIMENU_URL", "ftp://svc:hunter2@auth")], &[]);
        assert!(!err.contains("hunter2"), "{err}");
    }
}
