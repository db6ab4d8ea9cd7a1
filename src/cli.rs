//! The command line: `--config`, `--check-config`, and one flag per configuration key, built
//! from the key table ([`KEYS`]) so that the flags, their help and what is read cannot drift
//! apart. Flag values stay text: the config's parsers check them like any other layer's.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{flags_from_pairs, Config, ConfigError, Effective, KEYS};

/// What the command line asked for.
#[derive(Debug, Default)]
pub struct Cli {
    /// TOML config file, from `--config` or `SESSION_AUTHZ_CONFIG`.
    pub config: Option<PathBuf>,
    pub check_config: bool,
    /// `(key, value)` for each key flag given.
    flags: Vec<(&'static str, String)>,
}

/// `--help`: the two flags of the binary itself, then one per key with its variable and default.
pub fn command() -> Command {
    let command = Command::new("session-authz")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .arg(
            Arg::new("config")
                .long("config")
                .env("SESSION_AUTHZ_CONFIG")
                .hide_env_values(true)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML config file (lowest layer above the defaults)"),
        )
        .arg(
            Arg::new("check_config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective config (secrets redacted) and exit"),
        );
    // The key's variable is read by the config's environment layer, not by clap: a flag is only
    // ever a flag, so errors can say which of the two a value came from.
    // A TOML-only key has no flag; `--help` still names it, so that it is not a secret.
    let toml_only: Vec<&str> = KEYS
        .iter()
        .filter(|key| key.toml_only)
        .map(|key| key.name)
        .collect();
    let command = command.after_help(format!(
        "Only a TOML file (--config) can set: {} (see the README)",
        toml_only.join(", ")
    ));
    KEYS.iter()
        .filter(|key| !key.toml_only)
        .fold(command, |command, key| {
            command.arg(
                Arg::new(key.name)
                    .long(key.flag())
                    .value_name(key.value_name)
                    .help(key.help_line()),
            )
        })
}

impl Cli {
    /// Parses the process's arguments; `--help`, `--version` and usage errors exit here.
    pub fn parse() -> Self {
        Self::from_matches(&command().get_matches())
    }

    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::from_matches(&command().try_get_matches_from(args)?))
    }

    fn from_matches(matches: &ArgMatches) -> Self {
        let flags = KEYS
            .iter()
            .filter(|key| !key.toml_only)
            .filter_map(|key| {
                let value = matches.get_one::<String>(key.name)?;
                Some((key.name, value.clone()))
            })
            .collect();
        Self {
            config: matches.get_one::<PathBuf>("config").cloned(),
            check_config: matches.get_flag("check_config"),
            flags,
        }
    }

    /// The configuration these arguments, the environment and the file give, and how
    /// `--check-config` shows it.
    pub fn load(&self) -> Result<(Config, Effective), ConfigError> {
        let flags: Vec<(&str, &str)> = self
            .flags
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let figment = Config::figment(self.config.as_deref(), flags_from_pairs(&flags))?;
        Config::load(&figment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_flag_and_only_given_flags_are_a_layer() {
        command().debug_assert();
        let cli = Cli::try_parse_from([
            "session-authz",
            "--cache-ttl",
            "0",
            "--aimenu-url",
            "http://auth:5000",
            "--check-config",
        ])
        .unwrap_or_else(|err| panic!("{err}"));
        assert!(cli.check_config);
        assert_eq!(
            cli.flags,
            [
                ("aimenu_url", "http://auth:5000".to_owned()),
                ("cache_ttl", "0".to_owned())
            ]
        );
        for key in KEYS.iter().filter(|key| !key.toml_only) {
            let flag = format!("--{}", key.flag());
            let cli = Cli::try_parse_from(["session-authz", &flag, "x"])
                .unwrap_or_else(|err| panic!("{flag}: {err}"));
            assert_eq!(cli.flags, [(key.name, "x".to_owned())]);
        }
    }
}
