//! Configuration: figment layers (defaults < TOML file < environment < flags) into a validated
//! [`Config`], or a [`ConfigError`] that names the key, the value and where it came from.
//!
//! Each key is declared once, in [`keys`] (name, variable, flag, default, parser, help, secret);
//! the environment layer, the command line ([`crate::cli`]), `--help` and `--check-config`
//! ([`Effective`]) are derived from that table. [`Config::load`] is the one place that puts
//! each key's value into the nested, typed [`Config`].

mod environment;
pub mod keys;
mod parse;
mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Provider};
use reqwest::Url;
use serde::{Serialize, Serializer};

use crate::doors::grpc::OnValidatorError;
use crate::doors::IdentityHeaders;
use crate::telemetry::{LogFormat, OtelConfig};
use environment::{Environment, ENVIRONMENT};
use keys::Key;
pub use keys::{KeySpec, ENV_PREFIX, KEYS};
use parse::Setting;
pub use secret::{redact_url, Redact, Secret};

/// The validated configuration. Secrets are [`Secret`]s, so `Debug` shows none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub auth_enabled: bool,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The forward-auth door (`forward_auth_addr`, `forward_auth_path_prefix`).
    pub forward_auth: ForwardAuthConfig,
    /// TLS for the gRPC listener; `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    pub session_cookie: String,
    pub session_header: String,
    /// The names of the headers the identity is sent upstream in.
    pub identity_headers: IdentityHeaders,
    /// Cross-site request refusal (`csrf`, `csrf_trusted_origins`).
    pub csrf: crate::csrf::Settings,
    /// Per-route rules from the `[[routes]]` tables (TOML only).
    pub routes: crate::policy::Routes,
    /// Browser sign-in redirects (`login_url`, `login_return_param`).
    pub sign_in: crate::signin::Settings,
    pub validator: ValidatorConfig,
    pub cache: crate::cache::Settings,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// How long the service stays NOT_SERVING, still answering, before it stops accepting.
    pub drain_delay: Duration,
    /// OpenTelemetry span export; `None` (no `otel_endpoint`): off.
    pub otel: Option<OtelConfig>,
    /// The signed identity assertion (`assertion_*`); `None` (no `assertion_key`): off.
    pub assertion: Option<crate::assertion::Settings>,
    /// `POST /v1/revoke` and the revocation bus (`revoke_secret_file`, `revocation_*`);
    /// `None`: off.
    pub revocation: Option<crate::revoke::Settings>,
}

/// How to reach the auth service (the validator) and how much to ask of it at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Its base URL (key `aimenu_url`, variable `AIMENU_URL`: the seed guide's names).
    pub url: Secret<Url>,
    pub timeout: Duration,
    pub on_error: OnValidatorError,
    pub max_concurrency: usize,
    pub max_queue: usize,
    /// Extra CA bundle (PEM) trusted for an `https://` validator.
    pub ca: Option<PathBuf>,
}

/// The plain-HTTP forward-auth door.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    /// Its listener; `None`: no such door.
    pub addr: Option<SocketAddr>,
    /// Taken off the request's own path when no header names the original URI.
    pub path_prefix: Option<String>,
}

/// PEM files for the gRPC listener's TLS; with `client_ca`, clients must present a certificate
/// it signed (mTLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn from_keys(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, ConfigError> {
        match (cert, key, client_ca) {
            (Some(cert), Some(key), client_ca) => Ok(Some(Self {
                cert,
                key,
                client_ca,
            })),
            (None, None, None) => Ok(None),
            _ => Err(ConfigError::Incomplete(
                "tls_cert and tls_key must be set together, and tls_client_ca needs both",
            )),
        }
    }
}

impl Default for Config {
    /// Every key at its default from the key table: the same as reading no layer at all.
    fn default() -> Self {
        Self::from_figment(&Figment::new()).unwrap_or_else(|err| {
            unreachable!("the key table's defaults are valid (unit-tested): {err}")
        })
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
        expected: std::borrow::Cow<'static, str>,
    },
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("config: {0}")]
    Source(String),
    #[error("config {key} ({origin}) is not a key; the keys are {}", key_names())]
    Unknown { key: String, origin: String },
    #[error("config {key} is required: set it in the file, as {env} or with --{flag}")]
    Required {
        key: &'static str,
        env: String,
        flag: String,
    },
    #[error("config: {0}")]
    Incomplete(&'static str),
    #[error("config {key} ({origin}) {why}")]
    Conflict {
        key: &'static str,
        origin: String,
        why: String,
    },
    #[error("config {key} ({origin}): only a TOML file can set it")]
    TomlOnly { key: &'static str, origin: String },
    #[error("config: environment variable {found} is not read; the name is {expected} (exact letter case)")]
    EnvSpelling { found: String, expected: String },
}

fn key_names() -> String {
    KEYS.iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Config {
    /// The layered sources: TOML file (if any) < environment < `flags`. The defaults lie below
    /// them all, applied by [`Config::load`] to whatever no layer sets.
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
        Self::load(figment).map(|(config, _)| config)
    }

    /// Validates the merged layers into a config, and how `--check-config` shows it.
    pub fn load(figment: &Figment) -> Result<(Config, Effective), ConfigError> {
        let mut read = Reader::new(figment)?;
        let config = Config {
            auth_enabled: read.get(&keys::AUTH_ENABLED)?,
            grpc_addr: read.get(&keys::GRPC_ADDR)?,
            http_addr: read.get(&keys::HTTP_ADDR)?,
            forward_auth: ForwardAuthConfig {
                addr: read.get(&keys::FORWARD_AUTH_ADDR)?,
                path_prefix: read.get(&keys::FORWARD_AUTH_PATH_PREFIX)?,
            },
            tls: TlsFiles::from_keys(
                read.get(&keys::TLS_CERT)?,
                read.get(&keys::TLS_KEY)?,
                read.get(&keys::TLS_CLIENT_CA)?,
            )?,
            session_cookie: read.get(&keys::SESSION_COOKIE)?,
            session_header: read.get(&keys::SESSION_HEADER)?,
            identity_headers: IdentityHeaders {
                user: read.get(&keys::USER_HEADER)?,
                roles: read.get(&keys::ROLES_HEADER)?,
                email: read.get(&keys::EMAIL_HEADER)?,
                assertion: read.get(&keys::ASSERTION_HEADER)?,
            },
            csrf: crate::csrf::Settings {
                enabled: read.get(&keys::CSRF)?,
                trusted_origins: read.get(&keys::CSRF_TRUSTED_ORIGINS)?,
            },
            routes: read.get(&keys::ROUTES)?,
            sign_in: crate::signin::Settings {
                login_url: read.get(&keys::LOGIN_URL)?,
                return_param: read.get(&keys::LOGIN_RETURN_PARAM)?,
            },
            validator: ValidatorConfig {
                url: read.get(&keys::VALIDATOR_URL)?,
                timeout: read.get(&keys::VALIDATOR_TIMEOUT)?,
                on_error: read.get(&keys::ON_VALIDATOR_ERROR)?,
                max_concurrency: read.get(&keys::VALIDATOR_MAX_CONCURRENCY)?,
                max_queue: read.get(&keys::VALIDATOR_MAX_QUEUE)?,
                ca: read.get(&keys::VALIDATOR_CA)?,
            },
            cache: crate::cache::Settings {
                ttl: read.get(&keys::CACHE_TTL)?,
                negative_ttl: read.get(&keys::CACHE_NEGATIVE_TTL)?,
                max_entries: read.get(&keys::CACHE_MAX_ENTRIES)?,
                stale_if_error: read.get(&keys::STALE_IF_ERROR)?,
            },
            log_format: read.get(&keys::LOG_FORMAT)?,
            shutdown_grace: read.get(&keys::SHUTDOWN_GRACE)?,
            drain_delay: read.get(&keys::DRAIN_DELAY)?,
            otel: OtelConfig::from_keys(
                read.get(&keys::OTEL_ENDPOINT)?,
                read.get(&keys::OTEL_SERVICE_NAME)?,
                read.get(&keys::OTEL_SAMPLE_RATIO)?,
            ),
            assertion: assertion_settings(&mut read)?,
            revocation: revocation_settings(&mut read)?,
        };
        config.check_consistency(&read)?;
        Ok((config, read.effective))
    }

    /// Rules between keys: each value alone is fine, together they would misbehave.
    fn check_consistency(&self, read: &Reader<'_>) -> Result<(), ConfigError> {
        // Two of these on one name would send the session token upstream, read an identity
        // as a token, or let one identity field overwrite or remove another.
        let names = [
            (&keys::SESSION_HEADER, &self.session_header),
            (&keys::USER_HEADER, &self.identity_headers.user),
            (&keys::ROLES_HEADER, &self.identity_headers.roles),
            (&keys::EMAIL_HEADER, &self.identity_headers.email),
            (&keys::ASSERTION_HEADER, &self.identity_headers.assertion),
        ];
        for (i, (first, first_name)) in names.iter().enumerate() {
            for (second, second_name) in &names[i + 1..] {
                if first_name != second_name {
                    continue;
                }
                // Name the key that was set, not the one left at its default.
                let (key, other) = if read.is_set(second.spec.name) {
                    (second.spec.name, first.spec.name)
                } else {
                    (first.spec.name, second.spec.name)
                };
                return Err(ConfigError::Conflict {
                    key,
                    origin: read.origin(key),
                    why: conflict_why(key, other),
                });
            }
        }
        if self.validator.ca.is_some() && self.validator.url.expose().scheme() != "https" {
            return Err(ConfigError::Conflict {
                key: keys::VALIDATOR_CA.spec.name,
                origin: read.origin(keys::VALIDATOR_CA.spec.name),
                why: "is set but aimenu_url is not https://, so the CA would never be used"
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// What the core decides by: the part of the configuration a reload may replace, and the
    /// switch and names it shares with the validator client.
    pub fn core_settings(&self) -> crate::authorize::Settings {
        crate::authorize::Settings {
            auth_enabled: self.auth_enabled,
            names: crate::credential::Names {
                cookie: self.session_cookie.clone(),
                header: self.session_header.clone(),
            },
            csrf: self.csrf.clone(),
            routes: self.routes.clone(),
            sign_in: self.sign_in.clone(),
            assertion: self.assertion.clone(),
            identity_headers: self.identity_headers.clone(),
        }
    }

    /// What an operator should hear about at start-up, although the configuration is usable.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        let url = self.validator.url.expose();
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
}

/// The error for `key` (and where it was set) that cannot be used because of `why`.
fn key_conflict(read: &Reader<'_>, key: &'static str, why: String) -> ConfigError {
    ConfigError::Conflict {
        key,
        origin: read.origin(key),
        why,
    }
}

/// The signed assertion's settings, its keys read from their files: `None` without
/// `assertion_key`. A file that cannot sign, or keys without an audience, is an error naming
/// the key and where it was set.
fn assertion_settings(
    read: &mut Reader<'_>,
) -> Result<Option<crate::assertion::Settings>, ConfigError> {
    let files = read.get(&keys::ASSERTION_KEY)?;
    let audience = read.get(&keys::ASSERTION_AUDIENCE)?;
    let issuer = read.get(&keys::ASSERTION_ISSUER)?;
    let ttl = read.get(&keys::ASSERTION_TTL)?;
    if files.is_empty() {
        return Ok(None);
    }
    let key = keys::ASSERTION_KEY.spec.name;
    let conflict = |why| key_conflict(read, key, why);
    let texts = files
        .iter()
        .map(|path| {
            std::fs::read(path)
                .map_err(|err| conflict(format!("cannot read {}: {err}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys = crate::assertion::KeySet::from_pems(texts.iter().map(Vec::as_slice))
        .map_err(|(index, err)| conflict(format!("{}: {err}", files[index].display())))?;
    let Some(audience) = audience else {
        return Err(conflict(
            "is set but assertion_audience is not: every assertion needs an aud its verifier checks"
                .to_owned(),
        ));
    };
    Ok(Some(crate::assertion::Settings {
        keys: std::sync::Arc::new(keys),
        files,
        issuer,
        audience,
        ttl,
    }))
}

/// The revocation settings, the secret read from its file: `None` without
/// `revoke_secret_file`; a bus without a secret is an error.
fn revocation_settings(
    read: &mut Reader<'_>,
) -> Result<Option<crate::revoke::Settings>, ConfigError> {
    let file = read.get(&keys::REVOKE_SECRET_FILE)?;
    let redis = read.get(&keys::REVOCATION_REDIS_URL)?;
    let channel = read.get(&keys::REVOCATION_CHANNEL)?;
    let key = keys::REVOKE_SECRET_FILE.spec.name;
    let Some(file) = file else {
        if redis.is_some() {
            return Err(key_conflict(
                read,
                keys::REVOCATION_REDIS_URL.spec.name,
                "is set but revoke_secret_file is not: the replicas need the secret to share revocations"
                    .to_owned(),
            ));
        }
        return Ok(None);
    };
    let conflict = |why| key_conflict(read, key, why);
    let bytes = std::fs::read(&file)
        .map_err(|err| conflict(format!("cannot read {}: {err}", file.display())))?;
    let secret = crate::revoke::RevokeSecret::from_file_bytes(&bytes)
        .map_err(|why| conflict(format!("{} {why}", file.display())))?;
    Ok(Some(crate::revoke::Settings {
        secret,
        redis: redis.map(|url| url.expose().clone()),
        channel,
    }))
}

/// Why header `key` may not have the same name as header `other`.
fn conflict_why(key: &str, other: &str) -> String {
    let harm = if [key, other].contains(&keys::SESSION_HEADER.spec.name) {
        "the session token would be sent upstream, or an identity read as a token"
    } else {
        "one identity field would overwrite or remove the other"
    };
    format!("equals {other}: {harm}")
}

/// The effective configuration as `--check-config` shows it: each key that was read, with its
/// parsed value shown the way its type shows (durations in words, secrets redacted), so it
/// needs no code per key.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective(Vec<(&'static KeySpec, Option<toml::Value>)>);

impl Effective {
    /// As TOML in key-table order; keys without a value (unset files) are left out.
    pub fn to_toml(&self) -> String {
        /// A map that keeps its order, which `toml::Table` does not.
        struct Ordered<'a>(Vec<(&'static str, &'a toml::Value)>);
        impl Serialize for Ordered<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().copied())
            }
        }
        let shown = KEYS
            .iter()
            .filter_map(|spec| {
                let (_, value) = self.0.iter().find(|(read, _)| read.name == spec.name)?;
                Some((spec.name, value.as_ref()?))
            })
            .collect();
        toml::to_string(&Ordered(shown))
            .unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }

    /// How `--check-config` shows `name`'s value; `None` when it has none (or was not read).
    pub fn value(&self, name: &str) -> Option<&toml::Value> {
        self.0
            .iter()
            .find(|(spec, _)| spec.name == name)
            .and_then(|(_, value)| value.as_ref())
    }

    /// The names of the keys that were read, in the order they were.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|(spec, _)| spec.name)
    }
}

/// Reads each key from the merged layers, or from its default, and notes how it is shown.
struct Reader<'a> {
    figment: &'a Figment,
    effective: Effective,
}

impl<'a> Reader<'a> {
    /// Fails on a layer's own error (a TOML syntax error, say) and on any key not in [`KEYS`].
    fn new(figment: &'a Figment) -> Result<Self, ConfigError> {
        let data = figment
            .data()
            .map_err(|err| ConfigError::Source(first_line(&err.to_string())))?;
        let reader = Self {
            figment,
            effective: Effective(Vec::with_capacity(KEYS.len())),
        };
        for name in data.values().flat_map(|dict| dict.keys()) {
            if keys::find(name).is_none() {
                return Err(ConfigError::Unknown {
                    key: name.clone(),
                    origin: reader.origin(name),
                });
            }
        }
        Ok(reader)
    }

    /// The key's value from the highest layer that sets it, else its default, parsed.
    fn get<T: Setting>(&mut self, key: &'static Key<T>) -> Result<T, ConfigError> {
        let spec = &key.spec;
        let value = match self.figment.find_value(spec.name) {
            Ok(value) => {
                if spec.toml_only && !self.set_in_file(spec.name) {
                    return Err(ConfigError::TomlOnly {
                        key: spec.name,
                        origin: self.origin(spec.name),
                    });
                }
                (key.parse)(&value).map_err(|expected| ConfigError::Invalid {
                    key: spec.name,
                    value: parse::rejected_value(spec.secret, &value),
                    origin: self.origin(spec.name),
                    expected: match key.explain {
                        Some(explain) => explain(&value).into(),
                        None => expected.into(),
                    },
                })?
            }
            Err(_) => match spec.default {
                Some(default) => {
                    (key.parse)(&Value::from(default)).map_err(|expected| ConfigError::Invalid {
                        key: spec.name,
                        value: format!("{default:?}"),
                        origin: "the built-in default".to_owned(),
                        expected: expected.into(),
                    })?
                }
                None => T::unset().ok_or_else(|| ConfigError::Required {
                    key: spec.name,
                    env: spec.env_var(),
                    flag: spec.flag(),
                })?,
            },
        };
        self.effective.0.push((spec, value.shown()));
        Ok(value)
    }

    /// Whether `name`'s value comes from a TOML file.
    fn set_in_file(&self, name: &str) -> bool {
        self.figment.find_metadata(name).is_some_and(|metadata| {
            metadata.name != ENVIRONMENT
                && matches!(metadata.source, Some(figment::Source::File(_)))
        })
    }

    /// Whether any layer sets `name`.
    fn is_set(&self, name: &str) -> bool {
        self.figment.find_metadata(name).is_some()
    }

    /// Where the value of `name` came from, for error messages.
    fn origin(&self, name: &str) -> String {
        match self.figment.find_metadata(name) {
            Some(metadata) if metadata.name == ENVIRONMENT => match keys::find(name) {
                Some(spec) => format!("from the {} environment variable", spec.env_var()),
                None => "from the environment".to_owned(),
            },
            Some(metadata) => match &metadata.source {
                Some(figment::Source::File(path)) => format!("from {}", path.display()),
                _ => format!("from the --{} flag", name.replace('_', "-")),
            },
            None => "from the defaults".to_owned(),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// A flags layer from `(key, value)` pairs: the command line's, or a test's without clap.
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

    /// The config and its `--check-config` view under this environment and these flags.
    fn loaded(
        jail_env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<(Config, Effective), ConfigError> {
        let mut result = None;
        Jail::expect_with(|jail| {
            for (k, v) in jail_env {
                jail.set_env(k, v);
            }
            result = Some(
                Config::figment(None, flags_from_pairs(flags))
                    .and_then(|figment| Config::load(&figment)),
            );
            Ok(())
        });
        result.unwrap_or_else(|| panic!("jail did not run"))
    }

    fn load(jail_env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Config, ConfigError> {
        loaded(jail_env, flags).map(|(config, _)| config)
    }

    fn shown(jail_env: &[(&str, &str)], flags: &[(&str, &str)]) -> String {
        loaded(jail_env, flags).unwrap().1.to_toml()
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
        let expected = Config {
            auth_enabled: true,
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9001)),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 9002)),
            forward_auth: ForwardAuthConfig::default(),
            tls: None,
            session_cookie: "session".to_owned(),
            session_header: "x-session-token".to_owned(),
            identity_headers: IdentityHeaders {
                user: "x-auth-user".to_owned(),
                roles: "x-auth-roles".to_owned(),
                email: "x-auth-email".to_owned(),
                assertion: "x-auth-assertion".to_owned(),
            },
            csrf: crate::csrf::Settings {
                enabled: true,
                trusted_origins: crate::csrf::TrustedOrigins::default(),
            },
            routes: crate::policy::Routes::default(),
            sign_in: crate::signin::Settings::default(),
            validator: ValidatorConfig {
                url: Secret::new(Url::parse("http://localhost:5000").unwrap()),
                timeout: Duration::from_secs(5),
                on_error: OnValidatorError::Deny,
                max_concurrency: 256,
                max_queue: 1024,
                ca: None,
            },
            cache: crate::cache::Settings {
                ttl: Duration::from_secs(10),
                negative_ttl: Duration::from_secs(2),
                max_entries: 100_000,
                stale_if_error: Duration::ZERO,
            },
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            drain_delay: Duration::from_secs(5),
            otel: None,
            assertion: None,
            revocation: None,
        };
        assert_eq!(config, expected);
        // The cache's own defaults (for callers without a config) are the same.
        assert_eq!(config.cache, crate::cache::Settings::default());
        assert_eq!(config.validator.on_error, OnValidatorError::default());
        assert_eq!(config.identity_headers, IdentityHeaders::default());
        assert_eq!(config.log_format, LogFormat::default());
        assert_eq!(config.csrf, crate::csrf::Settings::default());
    }

    /// A PKCS#8 PEM file of a new Ed25519 key in `dir`.
    fn ed25519_key_file(dir: &Path, name: &str) -> PathBuf {
        use ring::signature::Ed25519KeyPair;
        let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let path = dir.join(name);
        std::fs::write(
            &path,
            pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref())),
        )
        .unwrap();
        path
    }

    #[test]
    fn assertions_are_on_with_keys_and_an_audience() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (
            ed25519_key_file(dir.path(), "a.pem"),
            ed25519_key_file(dir.path(), "b.pem"),
        );
        assert_eq!(load(&[], &[]).unwrap().assertion, None);
        let files = format!("{},{}", first.display(), second.display());
        let config = load(
            &[],
            &[
                ("assertion_key", &files),
                ("assertion_audience", "https://dash.example"),
                ("assertion_ttl", "2m"),
            ],
        )
        .unwrap();
        let assertion = config.assertion.unwrap();
        assert_eq!(assertion.keys.kids().count(), 2);
        assert_eq!(assertion.audience, "https://dash.example");
        assert_eq!(assertion.issuer, "session-authz");
        assert_eq!(assertion.ttl, Duration::from_secs(120));

        let without_audience = error_line(&[], &[("assertion_key", &files)]);
        assert!(
            without_audience.contains("assertion_key (from the --assertion-key flag) is set but assertion_audience is not"),
            "{without_audience}"
        );
        let not_a_key = dir.path().join("cert.pem");
        std::fs::write(
            &not_a_key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = error_line(
            &[],
            &[
                ("assertion_key", &not_a_key.display().to_string()),
                ("assertion_audience", "dash"),
            ],
        );
        assert!(
            err.contains("cert.pem: holds a \"CERTIFICATE\" PEM block"),
            "{err}"
        );
        let missing = error_line(
            &[],
            &[
                ("assertion_key", "/nonexistent/key.pem"),
                ("assertion_audience", "dash"),
            ],
        );
        assert!(
            missing.contains("cannot read /nonexistent/key.pem"),
            "{missing}"
        );
        for (key, value) in [
            ("assertion_ttl", "1s"),
            ("assertion_ttl", "11m"),
            ("assertion_ttl", "1500ms"),
            ("assertion_audience", "a,b"),
            ("assertion_issuer", ""),
            ("assertion_key", ""),
            ("assertion_header", "x-auth-user"),
        ] {
            let err = error_line(&[], &[(key, value)]);
            assert!(
                err.starts_with(&format!("config {key}")),
                "{key}={value}: {err}"
            );
        }
    }

    #[test]
    fn revocation_needs_its_secret_and_hides_the_bus_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoke.secret");
        std::fs::write(&file, format!("{}\n", "s".repeat(40))).unwrap();
        let path = file.display().to_string();
        assert_eq!(load(&[], &[]).unwrap().revocation, None);
        let url = "redis://:hunter2@10.0.0.5:6380/2";
        let pairs = [
            ("revoke_secret_file", path.as_str()),
            ("revocation_redis_url", url),
        ];
        let revocation = load(&[], &pairs).unwrap().revocation.unwrap();
        assert_eq!(revocation.redis.unwrap().as_str(), url);
        assert_eq!(revocation.channel, "session-authz.revocations");
        let shown = shown(&[], &pairs);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("revocation_redis_url = \"redis://:REDACTED@10.0.0.5:6380/2\""),
            "{shown}"
        );

        let err = error_line(&[], &[("revocation_redis_url", url)]);
        assert!(err.contains("revocation_redis_url (from the --revocation-redis-url flag) is set but revoke_secret_file is not"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        std::fs::write(&file, "short\n").unwrap();
        let err = error_line(&[], &[("revoke_secret_file", &path)]);
        assert!(err.contains("holds fewer than 32 bytes"), "{err}");
        for bad in [
            "http://redis:6379",
            "redis://",
            "redis://h/x",
            "redis://h?db=1",
        ] {
            let err = error_line(&[], &[("revocation_redis_url", bad)]);
            assert!(
                err.starts_with("config revocation_redis_url"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn otel_is_off_unless_its_endpoint_is_set() {
        assert_eq!(
            load(&[], &[("otel_service_name", "gate")]).unwrap().otel,
            None
        );
        // The standard variables are not ours: they turn nothing on (README, "OpenTelemetry").
        let ambient = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://collector:4318/v1/traces",
            ),
        ];
        assert_eq!(load(&ambient, &[]).unwrap().otel, None);
        let on = |endpoint: &str| {
            load(&[("SESSION_AUTHZ_OTEL_ENDPOINT", endpoint)], &[])
                .unwrap()
                .otel
                .unwrap()
        };
        let otel = on("http://collector:4318");
        assert_eq!(otel.traces_url.as_str(), "http://collector:4318/v1/traces");
        assert_eq!(otel.service_name, "session-authz");
        assert_eq!(
            on("https://otlp.example/prefix/").traces_url.as_str(),
            "https://otlp.example/prefix/v1/traces"
        );
        let shown = shown(
            &[("SESSION_AUTHZ_OTEL_ENDPOINT", "http://collector:4318")],
            &[],
        );
        assert!(
            shown.contains("otel_endpoint = \"http://collector:4318/\""),
            "{shown}"
        );
    }

    #[test]
    fn otel_endpoint_and_service_name_are_checked() {
        for bad in [
            "collector:4318",
            "ftp://collector",
            "http://collector:4318/?x=1",
            "http://user:pw@collector:4318",
        ] {
            let err = error_line(&[("SESSION_AUTHZ_OTEL_ENDPOINT", bad)], &[]);
            assert!(err.contains("otel_endpoint"), "{err}");
            assert!(
                !err.contains("pw@"),
                "a refused URL's password is shown: {err}"
            );
        }
        for bad in ["", "has space", &"x".repeat(256)] {
            let err = error_line(&[], &[("otel_service_name", bad)]);
            assert!(err.contains("otel_service_name"), "{err}");
        }
        let on = [("SESSION_AUTHZ_OTEL_ENDPOINT", "http://collector:4318")];
        for bad in ["-0.1", "1.5", "NaN", "inf", "half", ""] {
            let err = error_line(&on, &[("otel_sample_ratio", bad)]);
            assert!(err.contains("otel_sample_ratio"), "{err}");
        }
        for (good, ratio) in [("0", 0.0), ("0.25", 0.25), ("1", 1.0), (" 1.0 ", 1.0)] {
            let otel = load(&on, &[("otel_sample_ratio", good)]).unwrap().otel;
            assert_eq!(otel.unwrap().sample_ratio.get(), ratio, "{good}");
        }
        // A TOML float is a ratio too (elsewhere a float is no key's value).
        let (config, _) =
            from_file("otel_endpoint = \"http://c:4318\"\notel_sample_ratio = 0.5\n").unwrap();
        assert_eq!(config.otel.unwrap().sample_ratio.get(), 0.5);
    }

    /// The config from a TOML file with this text (and no other layer).
    fn from_file(text: &str) -> Result<(Config, Effective), ConfigError> {
        let mut result = None;
        Jail::expect_with(|jail| {
            jail.create_file("session-authz.toml", text)?;
            result = Some(
                Config::figment(Some(Path::new("session-authz.toml")), flags_from_pairs(&[]))
                    .and_then(|figment| Config::load(&figment)),
            );
            Ok(())
        });
        result.unwrap_or_else(|| panic!("jail did not run"))
    }

    #[test]
    fn routes_come_from_the_file_only() {
        let text = "cache_ttl = \"3s\"\n\
                    [[routes]]\n\
                    prefix = \"/admin/settings\"\n\
                    require_roles = [\"admin\", \"ops\"]\n\
                    csrf = false\n\
                    [[routes]]\n\
                    prefix = \"/audit\"\n\
                    allow_users = [\"user1\"]\n\
                    login_redirect = true\n";
        let (config, effective) = from_file(text).unwrap();
        let settings = config.routes.select("/admin/settings/x?y=1");
        assert_eq!(settings.require_roles, ["admin", "ops"]);
        assert_eq!(settings.csrf, Some(false));
        assert_eq!(config.routes.select("/audit").login_redirect, Some(true));
        assert!(config.routes.select("/admin").require_roles.is_empty());
        // --check-config shows them, and what it shows loads to the same routes.
        let shown = effective.to_toml();
        assert!(shown.contains("[[routes]]"), "{shown}");
        let (again, _) = from_file(&shown).unwrap();
        assert_eq!(again.routes, config.routes);
        assert!(load(&[], &[]).unwrap().routes.is_empty());

        // A longer prefix keeps the rules it does not restate, and --check-config shows them
        // on it, as they apply.
        let (nested, effective) = from_file(
            "[[routes]]
prefix = \"/admin\"
require_roles = [\"admin\"]
\
             [[routes]]
prefix = \"/admin/api\"
login_redirect = false
",
        )
        .unwrap();
        assert_eq!(
            nested.routes.select("/admin/api/x").require_roles,
            ["admin"]
        );
        let shown = effective.to_toml();
        let api = shown
            .split("[[routes]]")
            .find(|t| t.contains("\"/admin/api\""));
        assert!(
            api.is_some_and(|table| table.contains("require_roles = [\"admin\"]")),
            "{shown}"
        );

        // Mistakes stop start-up naming the route and the key.
        for (text, wanted) in [
            (
                "[[routes]]\nprefix = \"/a\"\nrequire_role = [\"admin\"]\n",
                "routes[0].require_role: unknown key",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nlogin_redirect = \"maybe\"\n",
                "routes[0].login_redirect",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nrequire_roles = [\"admin\", \"\"]\n",
                "require_roles: an empty item",
            ),
        ] {
            let err = from_file(text).unwrap_err().to_string();
            assert!(
                err.starts_with("config routes = ") && err.contains(wanted),
                "{err}"
            );
            assert!(err.contains("session-authz.toml"), "{err}");
        }
        // Neither a variable nor a flag can set them, and neither is ignored.
        let err = error_line(&[("SESSION_AUTHZ_ROUTES", "/admin")], &[]);
        assert!(
            err.contains("routes")
                && err.contains("SESSION_AUTHZ_ROUTES")
                && err.contains("only a TOML file"),
            "{err}"
        );
        let err = error_line(&[], &[("routes", "/admin")]);
        assert!(
            err.contains("--routes") && err.contains("only a TOML file"),
            "{err}"
        );
    }

    #[test]
    fn check_config_shows_every_key_that_has_a_value() {
        assert_eq!(
            shown(&[], &[]),
            "auth_enabled = true\n\
             aimenu_url = \"http://localhost:5000/\"\n\
             grpc_addr = \"0.0.0.0:9001\"\n\
             http_addr = \"0.0.0.0:9002\"\n\
             session_cookie = \"session\"\n\
             session_header = \"x-session-token\"\n\
             user_header = \"x-auth-user\"\n\
             roles_header = \"x-auth-roles\"\n\
             email_header = \"x-auth-email\"\n\
             assertion_header = \"x-auth-assertion\"\n\
             assertion_issuer = \"session-authz\"\n\
             assertion_ttl = \"1m\"\n\
             validator_timeout = \"5s\"\n\
             on_validator_error = \"deny\"\n\
             csrf = true\n\
             login_return_param = \"return_to\"\n\
             log_format = \"text\"\n\
             shutdown_grace = \"10s\"\n\
             drain_delay = \"5s\"\n\
             cache_ttl = \"10s\"\n\
             cache_negative_ttl = \"2s\"\n\
             cache_max_entries = 100000\n\
             stale_if_error = \"0s\"\n\
             validator_max_concurrency = 256\n\
             validator_max_queue = 1024\n\
             revocation_channel = \"session-authz.revocations\"\n\
             otel_service_name = \"session-authz\"\n\
             otel_sample_ratio = 1.0\n"
        );
        let shown = shown(
            &[("SESSION_AUTHZ_ON_VALIDATOR_ERROR", "grpc-error")],
            &[
                ("log_format", "json"),
                ("validator_ca", "/ca.pem"),
                ("aimenu_url", "https://auth"),
            ],
        );
        assert!(
            shown.contains("on_validator_error = \"grpc-error\"\n"),
            "{shown}"
        );
        assert!(shown.contains("log_format = \"json\"\n"), "{shown}");
        assert!(
            shown.ends_with(
                "validator_ca = \"/ca.pem\"\n\
                 revocation_channel = \"session-authz.revocations\"\n\
                 otel_service_name = \"session-authz\"\n\
                 otel_sample_ratio = 1.0\n"
            ),
            "{shown}"
        );
    }

    #[test]
    fn every_key_in_the_table_is_read_once() {
        let (_, effective) = loaded(&[], &[]).unwrap();
        let mut read: Vec<&str> = effective.keys().collect();
        read.sort_unstable();
        let mut table: Vec<&str> = KEYS.iter().map(|spec| spec.name).collect();
        table.sort_unstable();
        assert_eq!(read, table);
        let mut unique = table.clone();
        unique.dedup();
        assert_eq!(unique, table, "a key is declared twice");
    }

    #[test]
    fn every_key_is_read_from_its_variable_and_its_flag() {
        // A blank value is wrong for every key, so the error proves the key was read and
        // parsed from exactly that variable or flag.
        for spec in KEYS {
            let var = spec.env_var();
            let err = error_line(&[(&var, " ")], &[]);
            assert!(
                err.contains(spec.name) && err.contains(&var),
                "{var}: {err}"
            );
            let err = error_line(&[], &[(spec.name, " ")]);
            let flag = format!("--{}", spec.flag());
            assert!(
                err.contains(spec.name) && err.contains(&flag),
                "{flag}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = error_line(&[], &[("cache_tll", "1s")]);
        assert!(
            err.contains("cache_tll") && err.contains("cache_ttl"),
            "{err}"
        );
    }

    #[test]
    fn a_key_without_a_default_or_an_unset_value_is_required() {
        static REQUIRED: Key<Duration> = Key {
            spec: KeySpec {
                name: "cache_ttl",
                seed_name: false,
                value_name: "DURATION",
                default: None,
                help: "",
                secret: false,
                toml_only: false,
            },
            parse: parse::ttl,
            explain: None,
        };
        let figment = Figment::new();
        let mut read = Reader::new(&figment).unwrap();
        let err = read.get(&REQUIRED).unwrap_err().to_string();
        assert!(
            err.contains("SESSION_AUTHZ_CACHE_TTL") && err.contains("--cache-ttl"),
            "{err}"
        );
        let figment = Figment::new().merge(flags_from_pairs(&[("cache_ttl", "3s")]));
        let mut read = Reader::new(&figment).unwrap();
        assert_eq!(read.get(&REQUIRED).unwrap(), Duration::from_secs(3));
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
        assert_eq!(
            config.validator.url.expose().as_str(),
            "http://auth:5000/internal"
        );
        assert_eq!(config.grpc_addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(config.validator.timeout, Duration::from_millis(500));
        assert_eq!(config.identity_headers.user, "x-user");
        assert_eq!(config.validator.on_error, OnValidatorError::GrpcError);
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
        assert_eq!(config.validator.max_concurrency, 8);
        assert_eq!(config.validator.max_queue, 16);
        assert_eq!(config.tls, None);
        assert!(shown(&[("SESSION_AUTHZ_STALE_IF_ERROR", "5m")], &[])
            .contains("stale_if_error = \"5m\""));
    }

    #[test]
    fn sign_in_keys() {
        let config = load(&[("SESSION_AUTHZ_LOGIN_URL", "/login")], &[]).unwrap();
        let login = config.sign_in.login_url.as_ref().map(|url| url.as_str());
        assert_eq!(login, Some("/login"));
        assert_eq!(config.sign_in.return_param.as_str(), "return_to");
        let config = load(
            &[],
            &[
                ("login_url", "https://auth.example/signin"),
                ("login_return_param", "rd"),
            ],
        )
        .unwrap();
        let login = config.sign_in.login_url.as_ref().map(|url| url.as_str());
        assert_eq!(login, Some("https://auth.example/signin"));
        assert_eq!(config.sign_in.return_param.as_str(), "rd");
        assert!(shown(&[("SESSION_AUTHZ_LOGIN_URL", "/login")], &[])
            .contains("login_url = \"/login\"\nlogin_return_param = \"return_to\"\n"));
        for bad in [
            "//evil.example",
            "login",
            "https://u:p@auth.example/",
            "/a#b",
        ] {
            let err = error_line(&[("SESSION_AUTHZ_LOGIN_URL", bad)], &[]);
            assert!(
                err.contains("SESSION_AUTHZ_LOGIN_URL") && err.contains("local path"),
                "{err}"
            );
        }
        let err = error_line(&[], &[("login_return_param", "a b")]);
        assert!(
            err.contains("--login-return-param") && err.contains("query parameter"),
            "{err}"
        );
    }

    #[test]
    fn csrf_keys() {
        let config = load(&[("SESSION_AUTHZ_CSRF", "false")], &[]).unwrap();
        assert!(!config.csrf.enabled);
        let config = load(&[], &[("csrf", "no")]).unwrap();
        assert!(!config.csrf.enabled);
        assert!(load(&[], &[]).unwrap().csrf.enabled);

        // A list in a variable or a flag is comma-separated; blanks around entries are dropped.
        let two = ["https://admin.example", "http://localhost:3000"];
        let from_env = load(
            &[(
                "SESSION_AUTHZ_CSRF_TRUSTED_ORIGINS",
                "https://admin.example, http://localhost:3000",
            )],
            &[],
        )
        .unwrap();
        assert_eq!(from_env.csrf.trusted_origins.as_slice(), two);
        let from_flag = load(
            &[],
            &[(
                "csrf_trusted_origins",
                "https://admin.example,http://localhost:3000",
            )],
        )
        .unwrap();
        assert_eq!(from_flag.csrf.trusted_origins.as_slice(), two);
        assert!(shown(
            &[("SESSION_AUTHZ_CSRF_TRUSTED_ORIGINS", "https://a.example")],
            &[]
        )
        .contains("csrf_trusted_origins = [\"https://a.example\"]\n"));

        // In a file: an array (or the same comma-separated text).
        Jail::expect_with(|jail| {
            jail.create_file(
                "list.toml",
                "csrf = false\ncsrf_trusted_origins = [\"https://admin.example\", \"http://localhost:3000\"]\n",
            )?;
            let figment = Config::figment(Some(Path::new("list.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            let config = Config::from_figment(&figment).map_err(jail_error)?;
            assert!(!config.csrf.enabled);
            assert_eq!(config.csrf.trusted_origins.as_slice(), two);

            jail.create_file("empty.toml", "csrf_trusted_origins = []\n")?;
            let figment = Config::figment(Some(Path::new("empty.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            let config = Config::from_figment(&figment).map_err(jail_error)?;
            assert!(config.csrf.trusted_origins.as_slice().is_empty());

            jail.create_file(
                "text.toml",
                "csrf_trusted_origins = \"https://admin.example\"\n",
            )?;
            let figment = Config::figment(Some(Path::new("text.toml")), flags_from_pairs(&[]))
                .map_err(jail_error)?;
            let config = Config::from_figment(&figment).map_err(jail_error)?;
            assert_eq!(
                config.csrf.trusted_origins.as_slice(),
                ["https://admin.example"]
            );

            for (file, body) in [
                (
                    "upper.toml",
                    "csrf_trusted_origins = [\"https://Admin.example\"]\n",
                ),
                (
                    "number.toml",
                    "csrf_trusted_origins = [\"https://a.example\", 7]\n",
                ),
                (
                    "path.toml",
                    "csrf_trusted_origins = [\"https://a.example/\"]\n",
                ),
            ] {
                jail.create_file(file, body)?;
                let figment = Config::figment(Some(Path::new(file)), flags_from_pairs(&[]))
                    .map_err(jail_error)?;
                let err = Config::from_figment(&figment).unwrap_err().to_string();
                assert!(
                    err.starts_with("config csrf_trusted_origins = \"[")
                        && err.contains(file)
                        && !err.contains('\n'),
                    "{err}"
                );
            }
            Ok(())
        });

        // Each bad origin stops start-up, naming the key, the value and where it came from.
        for value in [
            "admin.example",
            "https://admin.example/",
            "https://admin.example/path",
            "https://admin.example?x=1",
            "https://admin.example#top",
            "https://user:pw@admin.example",
            "HTTPS://ADMIN.EXAMPLE",
            "https://admin.example:443",
            "https://*.example",
            "null",
            "https://a.example,",
            "https://a.example,,https://b.example",
            "",
        ] {
            let err = error_line(&[("SESSION_AUTHZ_CSRF_TRUSTED_ORIGINS", value)], &[]);
            assert!(
                err.starts_with(&format!("config csrf_trusted_origins = {value:?} (from the SESSION_AUTHZ_CSRF_TRUSTED_ORIGINS environment variable): expected origins")),
                "{value:?}: {err}"
            );
            let err = error_line(&[], &[("csrf_trusted_origins", value)]);
            assert!(
                err.contains("csrf_trusted_origins") && err.contains("--csrf-trusted-origins"),
                "{value:?}: {err}"
            );
        }
    }

    #[test]
    fn forward_auth_is_off_unless_set_and_its_prefix_is_a_path() {
        let config = load(&[], &[]).unwrap();
        assert_eq!(config.forward_auth, ForwardAuthConfig::default());
        let config = load(
            &[
                ("SESSION_AUTHZ_FORWARD_AUTH_ADDR", "127.0.0.1:9003"),
                ("SESSION_AUTHZ_FORWARD_AUTH_PATH_PREFIX", " /authz "),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.forward_auth,
            ForwardAuthConfig {
                addr: Some(SocketAddr::from(([127, 0, 0, 1], 9003))),
                path_prefix: Some("/authz".to_owned()),
            }
        );
        for value in ["authz", "/", "/authz/", "/au thz", "/authz?x=1", "/a#b", ""] {
            let err = error_line(&[("SESSION_AUTHZ_FORWARD_AUTH_PATH_PREFIX", value)], &[]);
            assert!(
                err.starts_with(&format!("config forward_auth_path_prefix = {value:?}")),
                "{value:?}: {err}"
            );
        }
        let err = error_line(&[], &[("forward_auth_addr", "localhost")]);
        assert!(err.contains("expected IP:PORT"), "{err}");
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
        assert_eq!(tls.key, PathBuf::from("/etc/authz/tls.key"));
        assert_eq!(tls.cert, PathBuf::from("/etc/authz/tls.crt"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/authz/ca.crt")));
        assert_eq!(
            config.validator.ca,
            Some(PathBuf::from("/etc/authz/auth-ca.crt"))
        );
        let shown = shown(
            &[
                ("SESSION_AUTHZ_TLS_CERT", "/etc/authz/tls.crt"),
                ("SESSION_AUTHZ_TLS_KEY", "/etc/authz/tls.key"),
            ],
            &[],
        );
        assert!(
            shown.contains("tls_cert = \"/etc/authz/tls.crt\""),
            "{shown}"
        );
        assert!(!shown.contains("tls_client_ca"), "{shown}");
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
            ("SESSION_AUTHZ_ROLES_HEADER", "x roles", "roles_header"),
            ("SESSION_AUTHZ_ROLES_HEADER", ":authority", "roles_header"),
            ("SESSION_AUTHZ_EMAIL_HEADER", "x-email:", "email_header"),
            ("SESSION_AUTHZ_EMAIL_HEADER", "", "email_header"),
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
            ("SESSION_AUTHZ_CSRF", "off", "csrf"),
            (
                "SESSION_AUTHZ_CSRF_TRUSTED_ORIGINS",
                "admin.example",
                "csrf_trusted_origins",
            ),
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
        assert_eq!(config.validator.max_concurrency, 65_536);
    }

    #[test]
    fn keys_that_contradict_each_other() {
        let err = error_line(&[("SESSION_AUTHZ_USER_HEADER", "X-Session-Token")], &[]);
        assert!(
            err.contains("user_header") && err.contains("session_header"),
            "{err}"
        );
        // The key that was set is named, not the default it collides with.
        let err = error_line(&[("SESSION_AUTHZ_SESSION_HEADER", "X-Auth-User")], &[]);
        assert!(
            err.starts_with("config session_header (from the SESSION_AUTHZ_SESSION_HEADER")
                && err.contains("user_header"),
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
            for var in [
                "SESSION_AUTHZ_USER_HEADER",
                "SESSION_AUTHZ_ROLES_HEADER",
                "SESSION_AUTHZ_EMAIL_HEADER",
                "SESSION_AUTHZ_SESSION_HEADER",
            ] {
                let err = error_line(&[(var, name)], &[]);
                assert!(err.contains(var), "{var}={name}: {err}");
            }
        }
    }

    #[test]
    fn identity_headers_are_named_apart() {
        let config = load(
            &[
                ("SESSION_AUTHZ_ROLES_HEADER", "X-Dashboard-Roles"),
                ("SESSION_AUTHZ_EMAIL_HEADER", "x-dashboard-email"),
            ],
            &[("user_header", "x-dashboard-user")],
        )
        .unwrap();
        assert_eq!(
            config.identity_headers,
            IdentityHeaders {
                user: "x-dashboard-user".to_owned(),
                roles: "x-dashboard-roles".to_owned(),
                email: "x-dashboard-email".to_owned(),
                assertion: "x-auth-assertion".to_owned(),
            }
        );
        let config = load(&[], &[("roles_header", "x-r"), ("email_header", "x-e")]).unwrap();
        assert_eq!(config.identity_headers.roles, "x-r");
        assert_eq!(config.identity_headers.email, "x-e");

        // Every pair among the session header and the three identity headers, in any letter
        // case: the key that was set is named, with the one it collides with.
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "SESSION_AUTHZ_ROLES_HEADER",
                "X-Auth-User",
                "roles_header",
                "user_header",
            ),
            (
                "SESSION_AUTHZ_EMAIL_HEADER",
                "x-auth-user",
                "email_header",
                "user_header",
            ),
            (
                "SESSION_AUTHZ_EMAIL_HEADER",
                "x-auth-roles",
                "email_header",
                "roles_header",
            ),
            (
                "SESSION_AUTHZ_USER_HEADER",
                "x-auth-roles",
                "user_header",
                "roles_header",
            ),
            (
                "SESSION_AUTHZ_USER_HEADER",
                "X-AUTH-EMAIL",
                "user_header",
                "email_header",
            ),
            (
                "SESSION_AUTHZ_ROLES_HEADER",
                "x-auth-email",
                "roles_header",
                "email_header",
            ),
            (
                "SESSION_AUTHZ_ROLES_HEADER",
                "x-session-token",
                "roles_header",
                "session_header",
            ),
            (
                "SESSION_AUTHZ_EMAIL_HEADER",
                "X-Session-Token",
                "email_header",
                "session_header",
            ),
            (
                "SESSION_AUTHZ_SESSION_HEADER",
                "x-auth-roles",
                "session_header",
                "roles_header",
            ),
            (
                "SESSION_AUTHZ_SESSION_HEADER",
                "x-auth-email",
                "session_header",
                "email_header",
            ),
        ];
        for (var, value, key, other) in cases {
            let err = error_line(&[(var, value)], &[]);
            assert!(
                err.starts_with(&format!("config {key} (from the {var}"))
                    && err.contains(&format!("equals {other}")),
                "{var}={value}: {err}"
            );
        }
        let err = error_line(&[("SESSION_AUTHZ_SESSION_HEADER", "x-auth-email")], &[]);
        assert!(err.contains("session token"), "{err}");
        // Moving two names at once is fine as long as they stay apart.
        assert!(load(
            &[
                ("SESSION_AUTHZ_USER_HEADER", "x-auth-roles"),
                ("SESSION_AUTHZ_ROLES_HEADER", "x-auth-user"),
            ],
            &[],
        )
        .is_ok());
        // Both set to one name: still refused.
        let err = error_line(
            &[
                ("SESSION_AUTHZ_ROLES_HEADER", "x-identity"),
                ("SESSION_AUTHZ_EMAIL_HEADER", "x-identity"),
            ],
            &[],
        );
        assert!(
            err.contains("email_header") && err.contains("roles_header"),
            "{err}"
        );
    }

    #[test]
    fn url_secrets_never_shown() {
        // A user name alone is an API key as often as not.
        let (config, effective) =
            loaded(&[("AIMENU_URL", "http://APIKEY123@auth:5000")], &[]).unwrap();
        assert!(!effective.to_toml().contains("APIKEY123"));
        assert!(!format!("{effective:?}").contains("APIKEY123"));
        assert!(!config.validator.url.to_string().contains("APIKEY123"));
        assert!(!format!("{config:?}").contains("APIKEY123"));
        assert!(!redact_url(config.validator.url.expose()).contains("APIKEY123"));
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
        let (config, effective) =
            loaded(&[("AIMENU_URL", "http://svc:hunter2@auth:5000")], &[]).unwrap();
        assert!(!effective.to_toml().contains("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(effective.to_toml().contains("auth_enabled = true"));
        // Only `expose` gives the URL itself, to the code that calls it.
        assert_eq!(config.validator.url.expose().password(), Some("hunter2"));
        let err = error_line(&[("AIMENU_URL", "ftp://svc:hunter2@auth")], &[]);
        assert!(!err.contains("hunter2"), "{err}");
    }
}
