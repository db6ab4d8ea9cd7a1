//! Per-route rules (docs/architecture.md, "Per-route rules"): who may use a route, and per-route switches,
//! from Envoy's per-route `context_extensions` and from the TOML `[[routes]]` table. Pure.
//!
//! Both sources apply: a request must satisfy the rules of both. A rule never changes what is
//! cached; it is applied to the (possibly cached) verdict's identity on every Check.

use std::collections::HashMap;
use std::fmt;

use crate::contract::{self, Identity};

/// The keys a route may set, in `context_extensions` and in `[[routes]]` alike.
pub const KEYS: &[&str] = &["require_roles", "allow_users", "login_redirect", "csrf"];

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
}

/// Why a route's settings cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    UnknownKey(String),
    /// The key, and what is wrong with its value (never the value: it could be anything).
    BadValue {
        key: &'static str,
        why: &'static str,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::UnknownKey(key) => {
                write!(f, "unknown route key {key:?} (known: {})", KEYS.join(", "))
            }
            PolicyError::BadValue { key, why } => write!(f, "route key {key}: {why}"),
        }
    }
}

impl std::error::Error for PolicyError {}

impl RoutePolicy {
    /// The rules in Envoy's `context_extensions`: lists comma-separated (spaces around an item
    /// allowed), booleans `true`/`false`. Any unknown key or bad value is an error, never
    /// skipped: a typo must not open a route.
    pub fn from_extensions(extensions: &HashMap<String, String>) -> Result<Self, PolicyError> {
        let mut policy = RoutePolicy::default();
        // Sorted, so that the error named is the same on every Check.
        let mut entries: Vec<_> = extensions.iter().collect();
        entries.sort();
        for (key, value) in entries {
            match key.as_str() {
                "require_roles" => {
                    policy.require_roles = list("require_roles", value.split(','), role)?;
                }
                "allow_users" => {
                    policy.allow_users = list("allow_users", value.split(','), user)?;
                }
                "login_redirect" => policy.login_redirect = Some(boolean("login_redirect", value)?),
                "csrf" => policy.csrf = Some(boolean("csrf", value)?),
                other => return Err(PolicyError::UnknownKey(other.to_owned())),
            }
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
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        self.0
            .iter()
            .filter(|(prefix, _)| starts_with(path, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(&NONE, |(_, policy)| policy)
    }

    /// The `routes` TOML value: an array of tables, each with a `prefix` (starting with `/`) and
    /// any of [`KEYS`], lists as arrays of strings and switches as booleans. The error names the
    /// route and the key.
    pub fn from_toml(value: &figment::value::Value) -> Result<Self, String> {
        use figment::value::Value;
        let Value::Array(_, routes) = value else {
            return Err("routes: expected an array of tables ([[routes]])".to_owned());
        };
        let mut out = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let at = format!("routes[{index}]");
            let Value::Dict(_, table) = route else {
                return Err(format!("{at}: expected a table"));
            };
            let mut prefix = None;
            let mut policy = RoutePolicy::default();
            let mut keys: Vec<_> = table.iter().collect();
            keys.sort_by_key(|(key, _)| key.as_str());
            for (key, value) in keys {
                let bad = |why: &str| format!("{at}.{key}: {why}");
                match key.as_str() {
                    "prefix" => match value.as_str() {
                        Some(p) if p.starts_with('/') => prefix = Some(p.to_owned()),
                        _ => return Err(bad("expected a string starting with /")),
                    },
                    "require_roles" | "allow_users" => {
                        let Value::Array(_, items) = value else {
                            return Err(bad("expected an array of strings"));
                        };
                        let mut strings = Vec::new();
                        for item in items {
                            strings.push(item.as_str().ok_or_else(|| bad("expected strings"))?);
                        }
                        let parsed = if key == "require_roles" {
                            list("require_roles", strings.into_iter(), role)
                        } else {
                            list("allow_users", strings.into_iter(), user)
                        }
                        .map_err(|e| format!("{at}: {e}"))?;
                        if key == "require_roles" {
                            policy.require_roles = parsed;
                        } else {
                            policy.allow_users = parsed;
                        }
                    }
                    "login_redirect" | "csrf" => {
                        let Value::Bool(_, flag) = value else {
                            return Err(bad("expected true or false"));
                        };
                        if key == "csrf" {
                            policy.csrf = Some(*flag);
                        } else {
                            policy.login_redirect = Some(*flag);
                        }
                    }
                    other => {
                        return Err(format!(
                            "{at}: unknown key {other:?} (known: prefix, {})",
                            KEYS.join(", ")
                        ))
                    }
                }
            }
            let prefix = prefix.ok_or_else(|| format!("{at}: prefix is required"))?;
            // Matching ignores letter case, so prefixes differing only in it would clash.
            if out
                .iter()
                .any(|(p, _): &(String, RoutePolicy)| p.eq_ignore_ascii_case(&prefix))
            {
                return Err(format!("{at}: prefix {prefix:?} appears twice"));
            }
            out.push((prefix, policy));
        }
        Ok(Routes::new(out))
    }
}

/// Whether `text` starts with `prefix`, letter case aside, like the shipped Envoy routes
/// (`case_sensitive: false`): a rule on /admin/settings must not be skipped by /ADMIN/settings.
fn starts_with(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// A non-empty list of checked items; an empty item (`a,,b`, a trailing comma) is an error.
fn list<'v>(
    key: &'static str,
    items: impl Iterator<Item = &'v str>,
    check: fn(&str) -> bool,
) -> Result<Vec<String>, PolicyError> {
    let mut out = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            return Err(PolicyError::BadValue {
                key,
                why: "an empty item",
            });
        }
        if !check(item) {
            return Err(PolicyError::BadValue {
                key,
                why: "an item no validator answer could carry",
            });
        }
        out.push(item.to_owned());
    }
    if out.is_empty() {
        return Err(PolicyError::BadValue {
            key,
            why: "an empty list",
        });
    }
    Ok(out)
}

/// A role as the contract accepts it from the validator, so that a rule can match.
fn role(text: &str) -> bool {
    contract::screen_roles(&[text.to_owned()]).is_ok()
}

/// A user as the contract accepts it (no comma, so the list form is unambiguous).
fn user(text: &str) -> bool {
    contract::screen_user(text).is_ok()
}

fn boolean(key: &'static str, value: &str) -> Result<bool, PolicyError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(PolicyError::BadValue {
            key,
            why: "expected true or false",
        }),
    }
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
        ])
        .unwrap();
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
        ] {
            let err = parse(&[(key, value)]).unwrap_err();
            assert!(
                matches!(err, PolicyError::BadValue { key: k, .. } if k == key),
                "{key}={value:?}: {err:?}"
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
                Err(PolicyError::UnknownKey(key.to_owned()))
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
        let merged = ext.merge(&toml);
        assert_eq!(merged.csrf, Some(false));
        assert_eq!(merged.login_redirect, Some(true));
        assert!(merged.permits(&Identity::named("alice").with_roles(["admin"])));
        assert!(!merged.permits(&Identity::named("alice").with_roles(["viewer"])));
        assert!(!merged.permits(&Identity::named("bob").with_roles(["admin"])));
    }

    fn toml_routes(text: &str) -> Result<Routes, String> {
        let doc: figment::value::Value = figment::Figment::from(
            <figment::providers::Toml as figment::providers::Format>::string(text),
        )
        .extract_inner("routes")
        .unwrap();
        Routes::from_toml(&doc)
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
                "routes[0]: unknown key \"require_role\"",
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
                "routes[0]: prefix is required",
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
