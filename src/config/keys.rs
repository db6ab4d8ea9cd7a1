//! Every configuration key, declared once: its name (the TOML key), its environment variable,
//! its flag, its default, its parser and its help. The environment provider, the command line,
//! `--help`, `--check-config` and the README check are all derived from [`KEYS`]; the only other
//! place a key appears is the line of [`Config::load`](super::Config::load) that puts its value
//! into the config.
//!
//! A new key is one `static` here, one entry in [`KEYS`], one line in `Config::load` and one
//! row in the README's table. Unit tests catch a key in only one of `KEYS` and `Config::load`,
//! and a README row that is missing or disagrees.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;
use reqwest::Url;

use super::parse;
use super::secret::Secret;
use crate::csrf::TrustedOrigins;
use crate::doors::grpc::OnValidatorError;
use crate::policy::Routes;
use crate::signin::{LoginUrl, ReturnParam};
use crate::telemetry::{LogFormat, SampleRatio};

/// Prefix of the environment variables of all keys but the seed guide's own two.
pub const ENV_PREFIX: &str = "SESSION_AUTHZ_";

/// What every face of the configuration needs to know about one key, whatever its type.
#[derive(Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// The TOML key, also the flag (`--` + name with `-`) and the variable's stem.
    pub name: &'static str,
    /// Read from the seed guide's own variable (the name in capitals, like `AIMENU_URL`) rather
    /// than `SESSION_AUTHZ_<NAME>`.
    pub seed_name: bool,
    /// The placeholder in `--help`, like `DURATION`.
    pub value_name: &'static str,
    /// The value when no layer sets the key, as an operator would write it; it goes through
    /// the same parser. `None`: the key stays unset (or, for a type with no "unset", is required).
    pub default: Option<&'static str>,
    /// One sentence for `--help`.
    pub help: &'static str,
    /// The value may hold credentials: error messages show it redacted like a URL.
    pub secret: bool,
    /// Only a TOML file can set it (a table has no flat form): no variable, no flag.
    pub toml_only: bool,
}

impl KeySpec {
    /// The environment variable that sets this key (exact letter case).
    pub fn env_var(&self) -> String {
        let upper = self.name.to_ascii_uppercase();
        if self.seed_name {
            upper
        } else {
            format!("{ENV_PREFIX}{upper}")
        }
    }

    /// The long flag, without the leading `--`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The `--help` line: the sentence, then where the value comes from when unset.
    pub fn help_line(&self) -> String {
        if self.toml_only {
            return format!("{} [TOML only]", self.help);
        }
        let env = self.env_var();
        match self.default {
            Some(default) => format!("{} [env: {env}] [default: {default}]", self.help),
            None => format!("{} [env: {env}]", self.help),
        }
    }
}

/// A key together with the parser that turns any layer's value into a `T`.
#[derive(Debug)]
pub struct Key<T> {
    pub spec: KeySpec,
    pub(super) parse: fn(&Value) -> Result<T, &'static str>,
    /// The whole message for a rejected value, when a fixed sentence cannot name what is wrong
    /// (which route, which key).
    pub(super) explain: Option<fn(&Value) -> String>,
}

/// A key read from `SESSION_AUTHZ_<NAME>`, not secret; see [`Key::seed_name`] and [`Key::secret`].
const fn key<T>(
    name: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    parse: fn(&Value) -> Result<T, &'static str>,
    help: &'static str,
) -> Key<T> {
    Key {
        spec: KeySpec {
            name,
            seed_name: false,
            value_name,
            default,
            help,
            secret: false,
            toml_only: false,
        },
        parse,
        explain: None,
    }
}

impl<T> Key<T> {
    /// Read from the seed guide's variable name (the key in capitals).
    const fn seed_name(mut self) -> Self {
        self.spec.seed_name = true;
        self
    }

    const fn secret(mut self) -> Self {
        self.spec.secret = true;
        self
    }

    const fn toml_only(mut self, explain: fn(&Value) -> String) -> Self {
        self.spec.toml_only = true;
        self.explain = Some(explain);
        self
    }
}

// In `--help` and `--check-config` order.

pub static AUTH_ENABLED: Key<bool> = key(
    "auth_enabled",
    "BOOL",
    Some("true"),
    parse::boolean,
    "Check sessions (true/false/1/0/yes/no)",
)
.seed_name();

/// The auth service. `aimenu_url` / `AIMENU_URL` are the seed guide's names; inside the code it
/// is the validator's URL.
pub static VALIDATOR_URL: Key<Secret<Url>> = key(
    "aimenu_url",
    "URL",
    Some("http://localhost:5000"),
    parse::url,
    "Auth service base URL",
)
.seed_name()
.secret();

pub static GRPC_ADDR: Key<SocketAddr> = key(
    "grpc_addr",
    "IP:PORT",
    Some("0.0.0.0:9001"),
    parse::addr,
    "gRPC listen address",
);

pub static HTTP_ADDR: Key<SocketAddr> = key(
    "http_addr",
    "IP:PORT",
    Some("0.0.0.0:9002"),
    parse::addr,
    "Ops HTTP listen address (/healthz, /readyz)",
);

/// The forward-auth door's listener. Off unless set: it trusts `X-Forwarded-*`, so only the
/// proxy may reach it (bind loopback, as every sample does).
pub static FORWARD_AUTH_ADDR: Key<Option<SocketAddr>> = key(
    "forward_auth_addr",
    "IP:PORT",
    None,
    parse::optional_addr,
    "Forward-auth (plain HTTP) listen address for nginx, Caddy, Traefik, Envoy http_service; off unless set",
);

pub static FORWARD_AUTH_PATH_PREFIX: Key<Option<String>> = key(
    "forward_auth_path_prefix",
    // Short: a longer flag column makes clap put every help text on its own line.
    "URI",
    None,
    parse::path_prefix,
    "Prefix before the original path on forward-auth requests without X-Forwarded-Uri/X-Original-URI (Envoy's path_prefix)",
);

pub static SESSION_COOKIE: Key<String> = key(
    "session_cookie",
    "NAME",
    Some("session"),
    parse::cookie_name,
    "Session cookie name",
);

pub static SESSION_HEADER: Key<String> = key(
    "session_header",
    "NAME",
    Some("x-session-token"),
    parse::header_name,
    "Session header name",
);

pub static USER_HEADER: Key<String> = key(
    "user_header",
    "NAME",
    Some("x-auth-user"),
    parse::header_name,
    "Identity header set upstream",
);

pub static ROLES_HEADER: Key<String> = key(
    "roles_header",
    "NAME",
    Some("x-auth-roles"),
    parse::header_name,
    "Roles header set upstream (comma-joined)",
);

pub static EMAIL_HEADER: Key<String> = key(
    "email_header",
    "NAME",
    Some("x-auth-email"),
    parse::header_name,
    "Email header set upstream",
);

pub static ASSERTION_KEY: Key<Vec<PathBuf>> = key(
    "assertion_key",
    "FILES",
    None,
    parse::paths,
    "PEM private keys (PKCS#8, Ed25519 or P-256), comma-separated: an allow also sends a signed JWT of the identity; the first signs, all are in /.well-known/jwks.json; off unless set",
);

pub static ASSERTION_HEADER: Key<String> = key(
    "assertion_header",
    "NAME",
    Some(crate::assertion::DEFAULT_HEADER),
    parse::header_name,
    "Header the signed identity assertion is set upstream in (removed when off)",
);

pub static ASSERTION_AUDIENCE: Key<Option<String>> = key(
    "assertion_audience",
    "AUD",
    None,
    parse::optional_audience,
    "The assertion's aud where a route names none ([[routes]] or context_extensions assertion_audience); required with assertion_key",
);

pub static ASSERTION_ISSUER: Key<String> = key(
    "assertion_issuer",
    "ISS",
    Some("session-authz"),
    parse::audience,
    "The assertion's iss",
);

pub static ASSERTION_TTL: Key<Duration> = key(
    "assertion_ttl",
    "DURATION",
    Some("60s"),
    parse::assertion_ttl,
    "Life of a signed assertion (2s to 10m); one is reused while more than half of it is left",
);

pub static VALIDATOR_TIMEOUT: Key<Duration> = key(
    "validator_timeout",
    "DURATION",
    Some("5s"),
    parse::validator_timeout,
    "Longest wait for the auth service",
);

pub static ON_VALIDATOR_ERROR: Key<OnValidatorError> = key(
    "on_validator_error",
    "MODE",
    Some("deny"),
    parse::on_validator_error,
    "deny (503, fail closed) or grpc-error (let Envoy decide)",
);

pub static CSRF: Key<bool> = key(
    "csrf",
    "BOOL",
    Some("true"),
    parse::boolean,
    "Refuse cookie requests that may change state (not GET/HEAD/OPTIONS) from other sites (403)",
);

pub static CSRF_TRUSTED_ORIGINS: Key<TrustedOrigins> = key(
    "csrf_trusted_origins",
    "ORIGINS",
    None,
    parse::trusted_origins,
    "Origins allowed past the csrf check, comma-separated, like https://admin.example",
);

/// Per-route rules (`[[routes]]`), TOML only: a table has no flat form for a variable or flag.
pub static ROUTES: Key<Routes> = key(
    "routes",
    "TABLES",
    None,
    parse::routes,
    "Per-route rules: [[routes]] tables with prefix and require_roles, allow_users, login_redirect, csrf, assertion_audience",
)
.toml_only(parse::routes_explained);

pub static LOGIN_URL: Key<Option<LoginUrl>> = key(
    "login_url",
    "URL",
    None,
    parse::login_url,
    "Send browsers without a session here (302) instead of a 401: a URL or a local path like /login",
);

pub static LOGIN_RETURN_PARAM: Key<ReturnParam> = key(
    "login_return_param",
    "NAME",
    Some("return_to"),
    parse::return_param,
    "Query parameter of login_url that carries the page to return to",
);

pub static LOG_FORMAT: Key<LogFormat> = key(
    "log_format",
    "FORMAT",
    Some("text"),
    parse::log_format,
    "Log format: text or json (filter with RUST_LOG)",
);

pub static SHUTDOWN_GRACE: Key<Duration> = key(
    "shutdown_grace",
    "DURATION",
    Some("10s"),
    parse::shutdown_grace,
    "Longest wait for in-flight Checks at shutdown",
);

pub static DRAIN_DELAY: Key<Duration> = key(
    "drain_delay",
    "DURATION",
    Some("5s"),
    parse::drain_delay,
    "After SIGTERM, stay NOT_SERVING but answering this long before closing; 0 is off",
);

pub static CACHE_TTL: Key<Duration> = key(
    "cache_ttl",
    "DURATION",
    Some("10s"),
    parse::ttl,
    "Longest life of a cached valid answer; 0 turns the cache off",
);

pub static CACHE_NEGATIVE_TTL: Key<Duration> = key(
    "cache_negative_ttl",
    "DURATION",
    Some("2s"),
    parse::ttl,
    "Longest life of a cached invalid answer",
);

pub static CACHE_MAX_ENTRIES: Key<u64> = key(
    "cache_max_entries",
    "N",
    Some("100000"),
    parse::cache_entries,
    "Most sessions cached",
);

pub static STALE_IF_ERROR: Key<Duration> = key(
    "stale_if_error",
    "DURATION",
    Some("0"),
    parse::ttl,
    "Keep recently confirmed sessions allowed while the validator errs; 0 is off",
);

pub static VALIDATOR_MAX_CONCURRENCY: Key<usize> = key(
    "validator_max_concurrency",
    "N",
    Some("256"),
    parse::concurrency,
    "Most validator calls in flight",
);

pub static VALIDATOR_MAX_QUEUE: Key<usize> = key(
    "validator_max_queue",
    "N",
    Some("1024"),
    parse::queue,
    "Most validator calls waiting; beyond, Checks are denied at once",
);

pub static TLS_CERT: Key<Option<PathBuf>> = key(
    "tls_cert",
    "FILE",
    None,
    parse::path,
    "PEM certificate (chain) for TLS on the gRPC listener",
);

pub static TLS_KEY: Key<Option<PathBuf>> = key(
    "tls_key",
    "FILE",
    None,
    parse::path,
    "PEM private key for --tls-cert",
);

pub static TLS_CLIENT_CA: Key<Option<PathBuf>> = key(
    "tls_client_ca",
    "FILE",
    None,
    parse::path,
    "PEM CA bundle; clients must present a certificate it signed (mTLS)",
);

pub static VALIDATOR_CA: Key<Option<PathBuf>> = key(
    "validator_ca",
    "FILE",
    None,
    parse::path,
    "Extra PEM CA bundle trusted for an https:// auth service",
);

/// Where spans go (OTLP over HTTP/protobuf); unset, nothing is traced. A base URL, like the
/// OTLP specification's `OTEL_EXPORTER_OTLP_ENDPOINT`: `/v1/traces` is appended.
pub static REVOKE_SECRET_FILE: Key<Option<PathBuf>> = key(
    "revoke_secret_file",
    "FILE",
    None,
    parse::path,
    "File holding the bearer secret (32+ bytes) for POST /v1/revoke on the ops port, shared by every replica; off unless set",
);

pub static REVOCATION_REDIS_URL: Key<Option<Secret<Url>>> = key(
    "revocation_redis_url",
    "URL",
    None,
    parse::redis_url,
    "Redis or Valkey (redis://host:6379) whose pub/sub shares revocations between replicas; needs revoke_secret_file",
)
.secret();

pub static REVOCATION_CHANNEL: Key<String> = key(
    "revocation_channel",
    "NAME",
    Some(crate::revoke::DEFAULT_CHANNEL),
    parse::channel,
    "The pub/sub channel revocations are shared on",
);

pub static OTEL_ENDPOINT: Key<Option<Url>> = key(
    "otel_endpoint",
    "URL",
    None,
    parse::otel_endpoint,
    "OpenTelemetry collector (OTLP/HTTP) base URL, like http://otel-collector:4318; spans go to its /v1/traces; off unless set",
)
// A refused value (one with user-info) is shown redacted in the error.
.secret();

pub static OTEL_SERVICE_NAME: Key<String> = key(
    "otel_service_name",
    "NAME",
    Some("session-authz"),
    parse::service_name,
    "service.name of the exported spans",
);

pub static OTEL_SAMPLE_RATIO: Key<SampleRatio> = key(
    "otel_sample_ratio",
    "RATIO",
    Some("1"),
    parse::sample_ratio,
    "Share of traces started here (no traceparent) that are sampled, 0 to 1; a caller's decision is followed",
);

/// Every key, in `--help` and `--check-config` order. Only these are read from the environment
/// and accepted in a file or as flags.
pub static KEYS: &[&KeySpec] = &[
    &AUTH_ENABLED.spec,
    &VALIDATOR_URL.spec,
    &GRPC_ADDR.spec,
    &HTTP_ADDR.spec,
    &FORWARD_AUTH_ADDR.spec,
    &FORWARD_AUTH_PATH_PREFIX.spec,
    &SESSION_COOKIE.spec,
    &SESSION_HEADER.spec,
    &USER_HEADER.spec,
    &ROLES_HEADER.spec,
    &EMAIL_HEADER.spec,
    &ASSERTION_KEY.spec,
    &ASSERTION_HEADER.spec,
    &ASSERTION_AUDIENCE.spec,
    &ASSERTION_ISSUER.spec,
    &ASSERTION_TTL.spec,
    &VALIDATOR_TIMEOUT.spec,
    &ON_VALIDATOR_ERROR.spec,
    &CSRF.spec,
    &CSRF_TRUSTED_ORIGINS.spec,
    &ROUTES.spec,
    &LOGIN_URL.spec,
    &LOGIN_RETURN_PARAM.spec,
    &LOG_FORMAT.spec,
    &SHUTDOWN_GRACE.spec,
    &DRAIN_DELAY.spec,
    &CACHE_TTL.spec,
    &CACHE_NEGATIVE_TTL.spec,
    &CACHE_MAX_ENTRIES.spec,
    &STALE_IF_ERROR.spec,
    &VALIDATOR_MAX_CONCURRENCY.spec,
    &VALIDATOR_MAX_QUEUE.spec,
    &TLS_CERT.spec,
    &TLS_KEY.spec,
    &TLS_CLIENT_CA.spec,
    &VALIDATOR_CA.spec,
    &REVOKE_SECRET_FILE.spec,
    &REVOCATION_REDIS_URL.spec,
    &REVOCATION_CHANNEL.spec,
    &OTEL_ENDPOINT.spec,
    &OTEL_SERVICE_NAME.spec,
    &OTEL_SAMPLE_RATIO.spec,
];

/// The key called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().copied().find(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's configuration table cannot drift: one row per key, in table order, with
    /// its variable, its flag and, first in the last cell, its default (or "none").
    #[test]
    fn readme_table_matches_the_keys() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_else(|| panic!("README has no Configuration section"));
        let rows: Vec<Vec<&str>> = section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| line.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect();
        let names: Vec<&str> = rows.iter().map(|row| row[0]).collect();
        let expected: Vec<String> = KEYS.iter().map(|spec| format!("`{}`", spec.name)).collect();
        assert_eq!(names, expected, "README rows, in KEYS order");
        for (row, spec) in rows.iter().zip(KEYS) {
            if spec.toml_only {
                assert_eq!(row[1], "TOML only", "{}", spec.name);
                assert_eq!(row[2], "TOML only", "{}", spec.name);
            } else {
                assert_eq!(row[1], format!("`{}`", spec.env_var()), "{}", spec.name);
                assert_eq!(row[2], format!("`--{}`", spec.flag()), "{}", spec.name);
            }
            let default = match spec.default {
                Some(default) => format!("`{default}`"),
                None => "none".to_owned(),
            };
            assert!(row[3].starts_with(&default), "{}: {}", spec.name, row[3]);
        }
    }

    #[test]
    fn names_are_derived() {
        assert_eq!(AUTH_ENABLED.spec.env_var(), "AUTH_ENABLED");
        assert_eq!(VALIDATOR_URL.spec.env_var(), "AIMENU_URL");
        assert_eq!(
            CACHE_NEGATIVE_TTL.spec.env_var(),
            "SESSION_AUTHZ_CACHE_NEGATIVE_TTL"
        );
        assert_eq!(CACHE_NEGATIVE_TTL.spec.flag(), "cache-negative-ttl");
        assert_eq!(
            GRPC_ADDR.spec.help_line(),
            "gRPC listen address [env: SESSION_AUTHZ_GRPC_ADDR] [default: 0.0.0.0:9001]"
        );
        assert_eq!(
            TLS_KEY.spec.help_line(),
            "PEM private key for --tls-cert [env: SESSION_AUTHZ_TLS_KEY]"
        );
        // Only the seed guide's two names go without the prefix, and only the URLs are secret.
        let seed: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.seed_name)
            .map(|k| k.name)
            .collect();
        assert_eq!(seed, ["auth_enabled", "aimenu_url"]);
        let secret: Vec<&str> = KEYS.iter().filter(|k| k.secret).map(|k| k.name).collect();
        assert_eq!(
            secret,
            ["aimenu_url", "revocation_redis_url", "otel_endpoint"]
        );
    }
}
