//! Values, both ways: each parser turns a layer's value (text from the environment or a flag,
//! any TOML scalar from a file) into a checked, typed value or says what was expected; each type
//! knows how `--check-config` shows it ([`Setting`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::Value;
use reqwest::Url;

use super::secret::{redact_text, Secret};
use crate::csrf::{TrustedOrigins, TRUSTED_ORIGINS_EXPECTED};
use crate::doors::grpc::OnValidatorError;
use crate::policy::{PolicyError, RoutePolicy, Routes, RuleValue, Why};
use crate::signin::{LoginUrl, ReturnParam, LOGIN_URL_EXPECTED, RETURN_PARAM_EXPECTED};
use crate::telemetry::{LogFormat, SampleRatio};

/// A type a key can hold.
pub(super) trait Setting: Sized {
    /// How `--check-config` shows the value; `None` leaves the key out.
    fn shown(&self) -> Option<toml::Value>;

    /// The value of a key that no layer sets and that has no default; `None`: it is required.
    fn unset() -> Option<Self> {
        None
    }
}

impl Setting for bool {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*self))
    }
}

impl Setting for String {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.clone()))
    }
}

impl Setting for SocketAddr {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl Setting for Duration {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(
            humantime::format_duration(*self).to_string(),
        ))
    }
}

impl Setting for u64 {
    fn shown(&self) -> Option<toml::Value> {
        Some(count(*self))
    }
}

impl Setting for usize {
    fn shown(&self) -> Option<toml::Value> {
        Some(count(*self))
    }
}

/// A count as a TOML integer; every count is bounded far below `i64::MAX`, so the text is only
/// a fallback.
fn count<N: Copy + TryInto<i64> + ToString>(n: N) -> toml::Value {
    n.try_into()
        .map_or_else(|_| toml::Value::String(n.to_string()), toml::Value::Integer)
}

impl Setting for PathBuf {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.display().to_string()))
    }
}

/// Files (`assertion_key`): none unless set, and then left out of `--check-config`.
impl Setting for Vec<PathBuf> {
    fn shown(&self) -> Option<toml::Value> {
        let paths: Vec<_> = self.iter().filter_map(Setting::shown).collect();
        (!paths.is_empty()).then_some(toml::Value::Array(paths))
    }

    fn unset() -> Option<Self> {
        Some(Vec::new())
    }
}

/// An optional key: unset unless a layer sets it, and then left out of `--check-config`.
impl<T: Setting> Setting for Option<T> {
    fn shown(&self) -> Option<toml::Value> {
        self.as_ref().and_then(Setting::shown)
    }

    fn unset() -> Option<Self> {
        Some(None)
    }
}

/// A list: empty unless a layer sets it, and then left out of `--check-config` like an unset
/// optional key; else a TOML array.
impl Setting for TrustedOrigins {
    fn shown(&self) -> Option<toml::Value> {
        let origins = self.as_slice().iter().cloned().map(toml::Value::String);
        let origins: Vec<_> = origins.collect();
        (!origins.is_empty()).then_some(toml::Value::Array(origins))
    }

    fn unset() -> Option<Self> {
        Some(Self::default())
    }
}

impl Setting for Url {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl Setting for Secret<Url> {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

impl Setting for LoginUrl {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.as_str().to_owned()))
    }
}

impl Setting for ReturnParam {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.as_str().to_owned()))
    }
}

impl Setting for OnValidatorError {
    fn shown(&self) -> Option<toml::Value> {
        word_of(ON_VALIDATOR_ERROR_WORDS, *self)
    }
}

impl Setting for SampleRatio {
    fn shown(&self) -> Option<toml::Value> {
        Some(toml::Value::Float(self.get()))
    }
}

impl Setting for LogFormat {
    fn shown(&self) -> Option<toml::Value> {
        word_of(LOG_FORMAT_WORDS, *self)
    }
}

/// How an error message shows a value that was rejected: quoted, and redacted for a secret key.
pub(super) fn rejected_value(secret: bool, value: &Value) -> String {
    let text = match (as_text(value), value) {
        (Some(text), _) => text,
        // A TOML array, shown as its entries.
        (None, Value::Array(_, items)) => {
            let items: Vec<String> = items
                .iter()
                .map(|item| as_text(item).unwrap_or_else(|| "(not a scalar)".to_owned()))
                .collect();
            format!("[{}]", items.join(", "))
        }
        // A float is shown as written, though no key accepts one.
        (None, Value::Num(_, n)) => n.to_f64().map(|f| f.to_string()).unwrap_or_default(),
        (None, _) => "(not a scalar)".to_owned(),
    };
    let text = if secret { redact_text(&text) } else { text };
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

/// Per-route rules: shown in `--check-config` as the tables they came from.
impl Setting for Routes {
    fn shown(&self) -> Option<toml::Value> {
        let tables: Vec<toml::Value> = self
            .iter()
            .map(|(prefix, policy)| {
                let mut table = toml::Table::new();
                table.insert("prefix".into(), toml::Value::String(prefix.clone()));
                let list = |items: &[String]| {
                    toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect())
                };
                if !policy.require_roles.is_empty() {
                    table.insert("require_roles".into(), list(&policy.require_roles));
                }
                if !policy.allow_users.is_empty() {
                    table.insert("allow_users".into(), list(&policy.allow_users));
                }
                if let Some(flag) = policy.login_redirect {
                    table.insert("login_redirect".into(), toml::Value::Boolean(flag));
                }
                if let Some(flag) = policy.csrf {
                    table.insert("csrf".into(), toml::Value::Boolean(flag));
                }
                if let Some(audience) = &policy.assertion_audience {
                    table.insert(
                        "assertion_audience".into(),
                        toml::Value::String(audience.clone()),
                    );
                }
                toml::Value::Table(table)
            })
            .collect();
        (!tables.is_empty()).then_some(toml::Value::Array(tables))
    }

    fn unset() -> Option<Self> {
        Some(Self::default())
    }
}

pub(super) fn routes(value: &Value) -> Result<Routes, &'static str> {
    route_tables(value).map_err(|_| "expected [[routes]] tables")
}

/// What is wrong with a `routes` value, naming the route and the key.
pub(super) fn routes_explained(value: &Value) -> String {
    match route_tables(value) {
        Ok(_) => "expected [[routes]] tables".to_owned(),
        Err(err) => err.to_string(),
    }
}

/// The `routes` TOML value: an array of tables, each with a `prefix` (starting with `/`) and
/// any route key ([`RoutePolicy::set`]): lists as arrays of strings, switches as booleans.
fn route_tables(value: &Value) -> Result<Routes, PolicyError> {
    let error = |route, key: Option<&str>, why| PolicyError {
        route,
        key: key.map(str::to_owned),
        why: Why::BadValue(why),
    };
    let Value::Array(_, routes) = value else {
        return Err(error(
            None,
            None,
            "expected an array of tables ([[routes]])",
        ));
    };
    let mut out: Vec<(String, RoutePolicy)> = Vec::with_capacity(routes.len());
    for (index, route) in routes.iter().enumerate() {
        let Value::Dict(_, table) = route else {
            return Err(error(Some(index), None, "expected a table"));
        };
        let mut prefix = None;
        let mut policy = RoutePolicy::default();
        // Sorted, so that the error named does not depend on the map's order.
        let mut keys: Vec<_> = table.iter().collect();
        keys.sort_by_key(|(key, _)| key.as_str());
        for (key, value) in keys {
            if key == "prefix" {
                match value.as_str() {
                    Some(text) if text.starts_with('/') => prefix = Some(text.to_owned()),
                    _ => {
                        let why = "expected a string starting with /";
                        return Err(error(Some(index), Some(key), why));
                    }
                }
                continue;
            }
            policy
                .set(key, rule_value(value))
                .map_err(|err| PolicyError {
                    route: Some(index),
                    ..err
                })?;
        }
        let prefix = prefix.ok_or_else(|| error(Some(index), Some("prefix"), "required"))?;
        // Matching ignores letter case, so prefixes differing only in it would clash.
        if out.iter().any(|(p, _)| p.eq_ignore_ascii_case(&prefix)) {
            let why = "appears twice (letter case aside)";
            return Err(error(Some(index), Some("prefix"), why));
        }
        out.push((prefix, policy));
    }
    Ok(Routes::new(out))
}

/// A TOML value as a route key's value: an array of strings, a boolean, a string, or something
/// else.
fn rule_value(value: &Value) -> RuleValue<'_> {
    match value {
        Value::Bool(_, flag) => RuleValue::Bool(*flag),
        Value::String(_, text) => RuleValue::String(text),
        Value::Array(_, items) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .map_or(RuleValue::Other, RuleValue::List),
        _ => RuleValue::Other,
    }
}

const BOOL_EXPECTED: &str = "expected one of true, false, 1, 0, yes, no";

pub(super) fn boolean(value: &Value) -> Result<bool, &'static str> {
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

pub(super) fn url(value: &Value) -> Result<Secret<Url>, &'static str> {
    const EXPECTED: &str = "expected an http:// or https:// URL, like http://auth:5000";
    let text = as_text(value).ok_or(EXPECTED)?;
    let url = Url::parse(text.trim()).map_err(|_| EXPECTED)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(EXPECTED);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without query or fragment");
    }
    Ok(Secret::new(url))
}

/// The collector's base URL. No user-info: it would be shown by `--check-config` and sent in
/// the clear on every export; a collector's credentials go in `OTEL_EXPORTER_OTLP_HEADERS`.
pub(super) fn otel_endpoint(value: &Value) -> Result<Option<Url>, &'static str> {
    const EXPECTED: &str = "expected an http:// or https:// URL, like http://otel-collector:4318";
    let text = as_text(value).ok_or(EXPECTED)?;
    let url = Url::parse(text.trim()).map_err(|_| EXPECTED)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(EXPECTED);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("expected a URL without user name or password (put credentials in OTEL_EXPORTER_OTLP_HEADERS)");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without query or fragment");
    }
    // The exporter reads it again with the `http` crate's stricter rules: refuse here what it
    // would refuse at start-up.
    let traces = crate::telemetry::OtelConfig::traces_url(url.clone());
    if http::Uri::try_from(traces.as_str()).is_err() {
        return Err(EXPECTED);
    }
    Ok(Some(url))
}

/// A `service.name`: what a tracing backend lists the spans under.
pub(super) fn service_name(value: &Value) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected 1 to 255 visible ASCII characters, like session-authz";
    let text = as_text(value).ok_or(EXPECTED)?;
    if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EXPECTED);
    }
    Ok(text)
}

/// A ratio from 0 to 1: text (`0.25`) or, in a file, a TOML number.
pub(super) fn sample_ratio(value: &Value) -> Result<SampleRatio, &'static str> {
    const EXPECTED: &str = "expected a number from 0 to 1, like 0.25";
    let ratio = match value {
        Value::Num(_, n) => n.to_f64(),
        Value::String(_, s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    ratio.and_then(SampleRatio::new).ok_or(EXPECTED)
}

pub(super) fn addr(value: &Value) -> Result<SocketAddr, &'static str> {
    const EXPECTED: &str = "expected IP:PORT, like 0.0.0.0:9001 or [::1]:9001";
    as_text(value)
        .and_then(|text| text.trim().parse().ok())
        .ok_or(EXPECTED)
}

pub(super) fn optional_addr(value: &Value) -> Result<Option<SocketAddr>, &'static str> {
    addr(value).map(Some)
}

/// A path prefix as Envoy's `path_prefix` writes it: `/` and more, no trailing `/` (the
/// original path brings its own), visible ASCII without query or fragment.
pub(super) fn path_prefix(value: &Value) -> Result<Option<String>, &'static str> {
    const EXPECTED: &str =
        "expected a path prefix starting with / and not ending with /, like /authz";
    let text = as_text(value).ok_or(EXPECTED)?;
    let text = text.trim();
    let fits = text.len() > 1
        && text.starts_with('/')
        && !text.ends_with('/')
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    fits.then(|| Some(text.to_owned())).ok_or(EXPECTED)
}

// Upper bounds: every accepted value must also start and serve (an entry's deadline, now + TTL,
// must not overflow; tokio's semaphore takes at most 2^61 permits), and far beyond these a value is a
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

pub(super) fn validator_timeout(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration from 1ms to 5m, like 5s or 500ms";
    bounded_duration(as_text(value), false, 5 * MINUTE, EXPECTED)
}

pub(super) fn shutdown_grace(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration from 1ms to 1h, like 10s";
    bounded_duration(as_text(value), false, HOUR, EXPECTED)
}

pub(super) fn drain_delay(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration up to 1h, like 5s, or 0 to turn it off";
    bounded_duration(as_text(value), true, HOUR, EXPECTED)
}

/// A cache lifetime where `0` (or `off`) means "none".
pub(super) fn ttl(value: &Value) -> Result<Duration, &'static str> {
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

pub(super) fn cache_entries(value: &Value) -> Result<u64, &'static str> {
    bounded_count(
        value,
        10_000_000,
        "expected a whole number from 1 to 10000000",
    )
}

pub(super) fn concurrency(value: &Value) -> Result<usize, &'static str> {
    bounded_count(value, 65_536, "expected a whole number from 1 to 65536")
}

pub(super) fn queue(value: &Value) -> Result<usize, &'static str> {
    bounded_count(
        value,
        1_000_000,
        "expected a whole number from 1 to 1000000",
    )
}

/// Files, as a TOML array of strings or a comma-separated text; empty unless set.
pub(super) fn paths(value: &Value) -> Result<Vec<PathBuf>, &'static str> {
    const EXPECTED: &str = "expected file paths, comma-separated or a TOML array of strings";
    let texts: Vec<String> = match value {
        Value::Array(_, items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(EXPECTED))
            .collect::<Result<_, _>>()?,
        _ => as_text(value)
            .ok_or(EXPECTED)?
            .split(',')
            .map(str::to_owned)
            .collect(),
    };
    let paths: Vec<PathBuf> = texts
        .iter()
        .map(|text| match text.trim() {
            "" => Err(EXPECTED),
            path => Ok(PathBuf::from(path)),
        })
        .collect::<Result<_, _>>()?;
    if paths.is_empty() {
        return Err(EXPECTED);
    }
    Ok(paths)
}

/// The `aud` (and `iss`) of the signed assertion.
pub(super) fn audience(value: &Value) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected 1 to 256 visible ASCII characters, no comma";
    let text = as_text(value).ok_or(EXPECTED)?;
    let text = text.trim();
    if !crate::policy::is_audience(text) {
        return Err(EXPECTED);
    }
    Ok(text.to_owned())
}

pub(super) fn optional_audience(value: &Value) -> Result<Option<String>, &'static str> {
    audience(value).map(Some)
}

pub(super) fn assertion_ttl(value: &Value) -> Result<Duration, &'static str> {
    const EXPECTED: &str = "expected a duration from 2s to 10m, like 60s";
    let ttl = bounded_duration(as_text(value), false, 10 * MINUTE, EXPECTED)?;
    // Whole seconds (JWT times are), and at least 2 so that half of it is one.
    if ttl < Duration::from_secs(2) || ttl.subsec_nanos() != 0 {
        return Err(EXPECTED);
    }
    Ok(ttl)
}

/// The revocation bus: `redis://[user:password@]host[:port][/db]` (Redis or Valkey).
pub(super) fn redis_url(value: &Value) -> Result<Option<Secret<Url>>, &'static str> {
    const EXPECTED: &str = "expected redis://[user:password@]host[:port][/db]";
    let text = as_text(value).ok_or(EXPECTED)?;
    let url = Url::parse(text.trim()).map_err(|_| EXPECTED)?;
    let db_ok = matches!(url.path(), "" | "/") || url.path()[1..].parse::<u16>().is_ok();
    if url.scheme() != "redis"
        || url.host_str().is_none_or(str::is_empty)
        || !db_ok
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(EXPECTED);
    }
    Ok(Some(Secret::new(url)))
}

/// A pub/sub channel name: 1 to 128 visible ASCII characters.
pub(super) fn channel(value: &Value) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected 1 to 128 visible ASCII characters";
    let text = as_text(value).ok_or(EXPECTED)?;
    let text = text.trim();
    if !(1..=128).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EXPECTED);
    }
    Ok(text.to_owned())
}

pub(super) fn path(value: &Value) -> Result<Option<PathBuf>, &'static str> {
    const EXPECTED: &str = "expected a file path";
    match as_text(value) {
        Some(text) if !text.trim().is_empty() => Ok(Some(PathBuf::from(text.trim()))),
        _ => Err(EXPECTED),
    }
}

/// A list from text (the environment, a flag, a TOML string) is comma-separated; a TOML file may
/// also give an array of strings.
pub(super) fn trusted_origins(value: &Value) -> Result<TrustedOrigins, &'static str> {
    match value {
        Value::Array(_, items) => {
            let entries = items
                .iter()
                .map(|item| match item {
                    Value::String(_, entry) => Ok(entry.as_str()),
                    _ => Err(TRUSTED_ORIGINS_EXPECTED),
                })
                .collect::<Result<Vec<_>, _>>()?;
            TrustedOrigins::parse(entries)
        }
        _ => {
            let text = as_text(value).ok_or(TRUSTED_ORIGINS_EXPECTED)?;
            TrustedOrigins::parse(text.split(','))
        }
    }
}

pub(super) fn login_url(value: &Value) -> Result<Option<LoginUrl>, &'static str> {
    let text = as_text(value).ok_or(LOGIN_URL_EXPECTED)?;
    LoginUrl::parse(&text).map(Some)
}

pub(super) fn return_param(value: &Value) -> Result<ReturnParam, &'static str> {
    let text = as_text(value).ok_or(RETURN_PARAM_EXPECTED)?;
    ReturnParam::parse(&text)
}

pub(super) fn header_name(value: &Value) -> Result<String, &'static str> {
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

pub(super) fn cookie_name(value: &Value) -> Result<String, &'static str> {
    const EXPECTED: &str = "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~)";
    let text = as_text(value).ok_or(EXPECTED)?;
    // A cookie name is an RFC 7230 token, the same alphabet as a header name but case-kept.
    if text.is_empty() || http::HeaderName::from_bytes(text.as_bytes()).is_err() {
        return Err(EXPECTED);
    }
    Ok(text)
}

/// The words of a key with a fixed set of values, used both to read and to show it.
type Words<T> = &'static [(&'static str, T)];

const ON_VALIDATOR_ERROR_WORDS: Words<OnValidatorError> = &[
    ("deny", OnValidatorError::Deny),
    ("grpc-error", OnValidatorError::GrpcError),
];

const LOG_FORMAT_WORDS: Words<LogFormat> = &[("text", LogFormat::Text), ("json", LogFormat::Json)];

fn word<T: Copy>(
    words: Words<T>,
    value: &Value,
    expected: &'static str,
) -> Result<T, &'static str> {
    let text = as_text(value).ok_or(expected)?;
    words
        .iter()
        .find(|(word, _)| *word == text.trim())
        .map(|(_, value)| *value)
        .ok_or(expected)
}

fn word_of<T: PartialEq>(words: Words<T>, value: T) -> Option<toml::Value> {
    words
        .iter()
        .find(|(_, candidate)| *candidate == value)
        .map(|(word, _)| toml::Value::String((*word).to_owned()))
}

pub(super) fn on_validator_error(value: &Value) -> Result<OnValidatorError, &'static str> {
    word(
        ON_VALIDATOR_ERROR_WORDS,
        value,
        "expected deny or grpc-error",
    )
}

pub(super) fn log_format(value: &Value) -> Result<LogFormat, &'static str> {
    word(LOG_FORMAT_WORDS, value, "expected text or json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_routes(text: &str) -> Result<Routes, String> {
        let doc: figment::value::Value = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(text),
        )
        .extract_inner("routes")
        .unwrap();
        route_tables(&doc).map_err(|err| err.to_string())
    }

    #[test]
    fn longest_prefix_wins_without_query() {
        let routes = toml_routes(
            r#"
            [[routes]]
            prefix = "/admin"
            require_roles = ["staff"]
            [[routes]]
            prefix = "/admin/settings"
            require_roles = ["admin"]
            csrf = false
            login_redirect = true
            [[routes]]
            prefix = "/"
            allow_users = ["alice", "bob"]
            "#,
        )
        .unwrap();
        assert_eq!(routes.select("/admin/settings/x").require_roles, ["admin"]);
        assert_eq!(routes.select("/admin/settings").csrf, Some(false));
        assert_eq!(routes.select("/admin/users").require_roles, ["staff"]);
        assert_eq!(routes.select("/ADMIN/Settings").require_roles, ["admin"]);
        assert_eq!(routes.select("/admin/sé").require_roles, ["staff"]);
        assert_eq!(
            routes.select("/admin?/admin/settings").require_roles,
            ["staff"]
        );
        assert_eq!(routes.select("/other").allow_users, ["alice", "bob"]);
        assert_eq!(Routes::default().select("/x"), &RoutePolicy::default());
    }

    /// A longer prefix keeps every rule of a shorter one it does not restate: adding
    /// `/admin/api` for its `login_redirect` must not let a viewer into `/admin/api/...`.
    #[test]
    fn longer_prefixes_inherit_the_rules_they_do_not_restate() {
        let routes = toml_routes(
            r#"
            [[routes]]
            prefix = "/admin/api"
            login_redirect = false
            [[routes]]
            prefix = "/admin"
            require_roles = ["admin"]
            allow_users = ["alice", "bob"]
            csrf = false
            [[routes]]
            prefix = "/admin/api/audit"
            allow_users = ["alice"]
            [[routes]]
            prefix = "/ADMIN/api/open"
            require_roles = ["viewer", "admin"]
            csrf = true
            [[routes]]
            prefix = "/administrators"
            [[routes]]
            prefix = "/public"
            login_redirect = false
            "#,
        )
        .unwrap();
        let api = routes.select("/admin/api/users");
        assert_eq!(api.require_roles, ["admin"]);
        assert_eq!(api.allow_users, ["alice", "bob"]);
        assert_eq!((api.login_redirect, api.csrf), (Some(false), Some(false)));
        // Through two levels; a restated key replaces the inherited one, whatever its order.
        let audit = routes.select("/admin/api/audit/log");
        assert_eq!(audit.require_roles, ["admin"]);
        assert_eq!(audit.allow_users, ["alice"]);
        assert_eq!(audit.login_redirect, Some(false));
        let open = routes.select("/admin/api/open/x");
        assert_eq!(open.require_roles, ["viewer", "admin"]);
        assert_eq!((open.login_redirect, open.csrf), (Some(false), Some(true)));
        // A prefix is a prefix of the text, as the match is: /administrators is under /admin.
        assert_eq!(routes.select("/administrators").require_roles, ["admin"]);
        assert_eq!(
            routes.select("/public/x").require_roles,
            Vec::<String>::new()
        );
        assert_eq!(routes.select("/public/x").login_redirect, Some(false));
    }

    #[test]
    fn toml_errors_name_route_and_key() {
        for (text, wanted) in [
            (
                "[[routes]]\nprefix = \"/a\"\nrequire_role = [\"x\"]",
                "routes[0].require_role: unknown key (known: prefix, require_roles, allow_users,",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\ncsrf = \"no\"",
                "routes[0].csrf",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nlogin_redirect = \"maybe\"",
                "routes[0].login_redirect",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nrequire_roles = \"admin\"",
                "routes[0].require_roles",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nrequire_roles = [\"\"]",
                "require_roles: an empty item",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\nrequire_roles = []",
                "require_roles: an empty list",
            ),
            (
                "[[routes]]\nrequire_roles = [\"a\"]",
                "routes[0].prefix: required",
            ),
            ("[[routes]]\nprefix = \"a\"", "routes[0].prefix"),
            (
                "[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/a\"",
                "appears twice",
            ),
            (
                "[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/A\"",
                "appears twice",
            ),
        ] {
            let err = toml_routes(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
