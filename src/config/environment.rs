//! The environment layer: exactly the variables of [`KEYS`], values kept as text.
//!
//! figment's `Env` matches names case-insensitively and parses values (`0.0` becomes a number
//! that reads as `0`); a gate reads exact names and exact words instead. A variable that
//! differs from one of ours only in letter case is an error, never silently read or ignored.
//! Only known keys are read, so that variables such as Kubernetes' injected
//! `SESSION_AUTHZ_PORT` do not trip the unknown-key check.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::keys::KEYS;
use super::ConfigError;

#[derive(Debug)]
pub(super) struct Environment(BTreeMap<&'static str, String>);

impl Environment {
    pub(super) fn read() -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else {
                continue; // not UTF-8, so none of ours
            };
            let Some(key) = KEYS
                .iter()
                .find(|key| key.env_var().eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let expected = key.env_var();
            if name != expected {
                return Err(ConfigError::EnvSpelling {
                    found: name.to_owned(),
                    expected,
                });
            }
            let value = value.into_string().map_err(|_| ConfigError::Invalid {
                key: key.name,
                value: "(not UTF-8)".to_owned(),
                origin: format!("from the {expected} environment variable"),
                expected: "expected UTF-8 text".into(),
            })?;
            values.insert(key.name, value);
        }
        Ok(Self(values))
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENVIRONMENT)
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

/// The name of this layer's metadata, by which an error tells where a value came from.
pub(super) const ENVIRONMENT: &str = "environment variable";
