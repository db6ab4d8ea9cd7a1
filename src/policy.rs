//! Per-route rules (docs/architecture.md, "Per-route rules"): who may use a route, and
//! per-route switches, from Envoy's `context_extensions` and the TOML `[[routes]]` table. Pure.
//!
//! Both sources apply: a request must satisfy the rules of both. A rule never changes what is
//! cached; it is applied to the (possibly cached) verdict's identity on every Check.

use std::collections::HashMap;
use std::fmt;

use crate::contract::{self, Identity};

/// The keys a route may set, in `context_extensions` and in `[[routes]]` alike: each with its
/// one setter. A new key is one entry here.
const SETTERS: [(&str, Setter); 5] = [
    ("require_roles", |policy, value| {
        policy.require_roles = value.list(role)?;
        Ok(())
    }),
    ("allow_users", |policy, value| {
        policy.allow_users = value.list(user)?;
        Ok(())
    }),
    ("login_redirect", |policy, value| {
        policy.login_redirect = Some(value.boolean()?);
        Ok(())
    }),
    ("csrf", |policy, value| {
        policy.csrf = Some(value.boolean()?);
        Ok(())
    }),
    ("assertion_audience", |policy, value| {
        policy.assertion_audience = Some(value.text(is_audience)?);
        Ok(())
    }),
];

/// Sets one key's rule from its value, or says what is wrong with the value.
type Setter = fn(&mut RoutePolicy, RuleValue<'_>) -> Result<(), &'static str>;

/// The keys a route may set.
pub fn keys() -> impl Iterator<Item = &'static str> {
    SETTERS.iter().map(|(key, _)| *key)
}

/// A route key's value, as either source gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleValue<'a> {
    /// Envoy's `context_extensions` hold strings: a list comma-separated (blanks around an
    /// item allowed), a switch `true` or `false`.
    Text(&'a str),
    /// A TOML array of strings.
    List(Vec<&'a str>),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML string: a single value (a TOML list is an array, never a comma-separated string).
    String(&'a str),
    /// Any other TOML value (a string, a number, a table, an array holding a non-string).
    Other,
}

impl RuleValue<'_> {
    /// A non-empty list of items `check` accepts; an empty item (`a,,b`, a trailing comma)
    /// is an error.
    fn list(self, check: fn(&str) -> bool) -> Result<Vec<String>, &'static str> {
        let items = match self {
            RuleValue::Text(text) => text.split(',').collect(),
            RuleValue::List(items) => items,
            RuleValue::Bool(_) | RuleValue::String(_) | RuleValue::Other => {
                return Err("expected an array of strings")
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                return Err("an empty item");
            }
            if !check(item) {
                return Err("an item no validator answer could carry");
            }
            out.push(item.to_owned());
        }
        if out.is_empty() {
            return Err("an empty list");
        }
        Ok(out)
    }

    /// One item `check` accepts, written as text (either source).
    fn text(self, check: fn(&str) -> bool) -> Result<String, &'static str> {
        match self {
            RuleValue::Text(text) | RuleValue::String(text) if check(text) => Ok(text.to_owned()),
            RuleValue::Text(_) | RuleValue::String(_) => {
                Err("expected 1 to 256 visible ASCII characters, no comma")
            }
            _ => Err("expected a string"),
        }
    }

    fn boolean(self) -> Result<bool, &'static str> {
        match self {
            RuleValue::Text("true") | RuleValue::Bool(true) => Ok(true),
            RuleValue::Text("false") | RuleValue::Bool(false) => Ok(false),
            _ => Err("expected true or false"),
        }
    }
}

/// Why a route's settings cannot be used: the route (its place in `[[routes]]`; none for
/// `context_extensions`), the key, and what is wrong — never the value, which could be
/// anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub route: Option<usize>,
    pub key: Option<String>,
    pub why: Why,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.route, &self.key) {
            (Some(index), Some(key)) => write!(f, "routes[{index}].{key}: {}", self.why),
            (Some(index), None) => write!(f, "routes[{index}]: {}", self.why),
            (None, Some(key)) => write!(f, "route key {key}: {}", self.why),
            (None, None) => write!(f, "routes: {}", self.why),
        }
    }
}

impl std::error::Error for PolicyError {}

/// What is wrong with a route key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    #[error("unknown key (known: prefix, {})", keys().collect::<Vec<_>>().join(", "))]
    UnknownKey,
    #[error("{0}")]
    BadValue(&'static str),
}

/// The rules of one route (or of two sources merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Any one of these roles lets a session through; empty: no role rule.
    pub require_roles: Vec<String>,
    /// Any one of these users lets a session through; empty: no user rule.
    pub allow_users: Vec<String>,
    /// Whether a 401 here may become a sign-in redirect (`login_url`); unset: it may.
    pub login_redirect: Option<bool>,
    /// Replaces the service-wide `csrf` switch for this route.
    pub csrf: Option<bool>,
    /// The signed assertion's `aud` here, in place of `assertion_audience`.
    pub assertion_audience: Option<String>,
}

impl RoutePolicy {
    /// Sets `key`'s rule from `value`; an unknown key or a bad value is an error, never
    /// skipped: a typo must not open a route.
    pub fn set(&mut self, key: &str, value: RuleValue<'_>) -> Result<(), PolicyError> {
        let error = |why| PolicyError {
            route: None,
            key: Some(key.to_owned()),
            why,
        };
        let (_, setter) = SETTERS
            .iter()
            .find(|(known, _)| *known == key)
            .ok_or_else(|| error(Why::UnknownKey))?;
        setter(self, value).map_err(|why| error(Why::BadValue(why)))
    }

    /// The rules in Envoy's `context_extensions` ([`RuleValue::Text`] each).
    pub fn from_extensions(extensions: &HashMap<String, String>) -> Result<Self, PolicyError> {
        let mut policy = RoutePolicy::default();
        // Sorted, so that the error named is the same on every Check.
        let mut entries: Vec<_> = extensions.iter().collect();
        entries.sort();
        for (key, value) in entries {
            policy.set(key, RuleValue::Text(value))?;
        }
        Ok(policy)
    }

    /// Both sources' rules at once: every list rule of either must hold, so the stricter wins;
    /// for a switch, `context_extensions` (`self`) is the more specific and wins.
    pub fn merge(self, other: &RoutePolicy) -> MergedPolicy<'_> {
        MergedPolicy {
            login_redirect: self.login_redirect.or(other.login_redirect),
            csrf: self.csrf.or(other.csrf),
            proxy: self,
            table: other,
        }
    }

    /// `self` with every rule `nearer` sets replacing its own (a list when not empty, a switch
    /// when set).
    fn overlaid_by(self, nearer: &RoutePolicy) -> RoutePolicy {
        let list = |mine: Vec<String>, theirs: &Vec<String>| {
            if theirs.is_empty() {
                mine
            } else {
                theirs.clone()
            }
        };
        RoutePolicy {
            require_roles: list(self.require_roles, &nearer.require_roles),
            allow_users: list(self.allow_users, &nearer.allow_users),
            login_redirect: nearer.login_redirect.or(self.login_redirect),
            csrf: nearer.csrf.or(self.csrf),
            assertion_audience: nearer
                .assertion_audience
                .clone()
                .or(self.assertion_audience),
        }
    }

    /// Whether `identity` satisfies this policy's rules: any of the roles and any of the users,
    /// each only when set.
    pub fn permits(&self, identity: &Identity) -> bool {
        let roles = self.require_roles.is_empty()
            || identity
                .roles()
                .any(|have| self.require_roles.iter().any(|want| want == have));
        let users = self.allow_users.is_empty()
            || identity
                .user()
                .is_some_and(|user| self.allow_users.iter().any(|allowed| allowed == user));
        roles && users
    }
}

/// The two sources' policies of one request; the table's is borrowed, not copied per Check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedPolicy<'a> {
    proxy: RoutePolicy,
    table: &'a RoutePolicy,
    pub login_redirect: Option<bool>,
    pub csrf: Option<bool>,
}

impl MergedPolicy<'_> {
    /// Whether `identity` satisfies the rules of both sources.
    pub fn permits(&self, identity: &Identity) -> bool {
        self.proxy.permits(identity) && self.table.permits(identity)
    }

    /// The signed assertion's audience on this route, if either source names one
    /// (`context_extensions` wins, as for a switch).
    pub fn assertion_audience(&self) -> Option<&str> {
        self.proxy
            .assertion_audience
            .as_deref()
            .or(self.table.assertion_audience.as_deref())
    }

    /// Whether either source has a role or user rule (for the Check's trace span).
    pub fn has_rules(&self) -> bool {
        [&self.proxy, self.table]
            .iter()
            .any(|policy| !policy.require_roles.is_empty() || !policy.allow_users.is_empty())
    }
}

/// The `[[routes]]` table: prefixes and their policies. The longest prefix of a request's path
/// (without its query) wins, and a route holds every rule of the shorter prefixes of its own
/// prefix that it does not restate (resolved once, here, not per Check).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes(Vec<(String, RoutePolicy)>);

impl Routes {
    /// The table with each route's inherited rules filled in: a longer prefix that sets only
    /// `login_redirect` must not drop a shorter one's `require_roles` by accident.
    pub fn new(routes: Vec<(String, RoutePolicy)>) -> Self {
        let resolved = routes
            .iter()
            .map(|(prefix, own)| {
                let mut ancestors: Vec<&(String, RoutePolicy)> = routes
                    .iter()
                    .filter(|(other, _)| other.len() < prefix.len() && starts_with(prefix, other))
                    .collect();
                // Shortest first, so that the nearer prefix's rule replaces the farther one's.
                ancestors.sort_by_key(|(other, _)| other.len());
                let policy = ancestors
                    .into_iter()
                    .map(|(_, policy)| policy)
                    .chain([own])
                    .fold(RoutePolicy::default(), RoutePolicy::overlaid_by);
                (prefix.clone(), policy)
            })
            .collect();
        Self(resolved)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, RoutePolicy)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The policy of the longest prefix of `path` (its query ignored); the empty policy when
    /// none matches.
    pub fn select(&self, path: &str) -> &RoutePolicy {
        static NONE: RoutePolicy = RoutePolicy {
            require_roles: Vec::new(),
            allow_users: Vec::new(),
            login_redirect: None,
            csrf: None,
            assertion_audience: None,
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        self.0
            .iter()
            .filter(|(prefix, _)| starts_with(path, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(&NONE, |(_, policy)| policy)
    }
}

/// Whether `text` starts with `prefix`, letter case aside, like the shipped Envoy routes
/// (`case_sensitive: false`): a rule on /admin/settings must not be skipped by /ADMIN/settings.
fn starts_with(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Whether `text` may be an assertion's `aud`: 1 to 256 visible ASCII characters, no comma
/// (so that it reads the same from `context_extensions` and TOML).
pub fn is_audience(text: &str) -> bool {
    (1..=256).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// A role as the contract accepts it from the validator, so that a rule can match.
fn role(text: &str) -> bool {
    contract::screen_roles(&[text.to_owned()]).is_ok()
}

/// A user as the contract accepts it (no comma, so the list form is unambiguous).
fn user(text: &str) -> bool {
    contract::screen_user(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<RoutePolicy, PolicyError> {
        RoutePolicy::from_extensions(&ext(pairs))
    }

    #[test]
    fn every_key_parses() {
        let policy = parse(&[
            ("require_roles", "admin, ops:write"),
            ("allow_users", "alice,42"),
            ("login_redirect", "false"),
            ("csrf", "true"),
            ("assertion_audience", "https://dash.example"),
        ])
        .unwrap();
        assert_eq!(
            policy.assertion_audience.as_deref(),
            Some("https://dash.example")
        );
        assert_eq!(policy.require_roles, ["admin", "ops:write"]);
        assert_eq!(policy.allow_users, ["alice", "42"]);
        assert_eq!(policy.login_redirect, Some(false));
        assert_eq!(policy.csrf, Some(true));
        assert_eq!(parse(&[]).unwrap(), RoutePolicy::default());
    }

    #[test]
    fn malformed_values_are_errors() {
        for (key, value) in [
            ("require_roles", ""),
            ("require_roles", "admin,"),
            ("require_roles", "admin,,viewer"),
            ("require_roles", " , "),
            ("require_roles", "ad min"),
            ("require_roles", "admin;viewer"),
            ("allow_users", ""),
            ("allow_users", "alice,"),
            ("login_redirect", "maybe"),
            ("login_redirect", "TRUE"),
            ("login_redirect", ""),
            ("csrf", "1"),
            ("assertion_audience", ""),
            ("assertion_audience", "a,b"),
            ("assertion_audience", "a b"),
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert!(
                err.key.as_deref() == Some(key) && matches!(err.why, Why::BadValue(_)),
                "{key}={value:?}: {err:?}"
            );
            assert!(
                err.to_string().starts_with(&format!("route key {key}: ")),
                "{err}"
            );
        }
        let long = "r".repeat(65);
        assert!(parse(&[("require_roles", &long)]).is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        for key in ["require_role", "Require_Roles", "roles", ""] {
            assert_eq!(
                parse(&[(key, "admin")]),
                Err(PolicyError {
                    route: None,
                    key: Some(key.to_owned()),
                    why: Why::UnknownKey
                })
            );
        }
        // A good key beside a bad one is no excuse.
        assert!(parse(&[("require_roles", "admin"), ("requre_roles", "x")]).is_err());
    }

    #[test]
    fn permits_any_of_each_and_both() {
        let admin = Identity::named("alice").with_roles(["viewer", "admin"]);
        let viewer = Identity::named("bob").with_roles(["viewer"]);
        let nobody = Identity::default();
        let roles = parse(&[("require_roles", "admin,ops")]).unwrap();
        assert!(roles.permits(&admin));
        assert!(!roles.permits(&viewer));
        assert!(!roles.permits(&nobody));
        let users = parse(&[("allow_users", "bob,carol")]).unwrap();
        assert!(users.permits(&viewer));
        assert!(!users.permits(&admin));
        assert!(!users.permits(&nobody));
        let both = parse(&[("require_roles", "admin"), ("allow_users", "bob")]).unwrap();
        assert!(!both.permits(&admin));
        assert!(!both.permits(&viewer));
        assert!(both.permits(&Identity::named("bob").with_roles(["admin"])));
        assert!(RoutePolicy::default().permits(&nobody));
        // Roles match exactly, letter case included.
        assert!(!roles.permits(&Identity::named("x").with_roles(["Admin"])));
    }

    #[test]
    fn merging_needs_both_and_extensions_win_switches() {
        let ext = parse(&[("require_roles", "admin"), ("csrf", "false")]).unwrap();
        let toml = RoutePolicy {
            allow_users: vec!["alice".into()],
            csrf: Some(true),
            login_redirect: Some(true),
            ..RoutePolicy::default()
        };
        let merged = ext.clone().merge(&toml);
        assert_eq!(merged.assertion_audience(), None);
        assert_eq!(merged.csrf, Some(false));
        assert_eq!(merged.login_redirect, Some(true));
        assert!(merged.permits(&Identity::named("alice").with_roles(["admin"])));
        assert!(!merged.permits(&Identity::named("alice").with_roles(["viewer"])));
        assert!(!merged.permits(&Identity::named("bob").with_roles(["admin"])));
        let table = RoutePolicy {
            assertion_audience: Some("table".into()),
            ..RoutePolicy::default()
        };
        assert_eq!(
            ext.clone().merge(&table).assertion_audience(),
            Some("table")
        );
        let proxy = parse(&[("assertion_audience", "proxy")]).unwrap();
        assert_eq!(proxy.merge(&table).assertion_audience(), Some("proxy"));
    }
}
