//! Prometheus metrics (prometheus-client), all prefixed `session_authz_`. Labels carry only
//! fixed words — never a token, a cookie or a user.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::cache::Origin;
use crate::contract::{ErrorKind, Verdict};
use crate::decision::{Decision, Reason};

/// A Check's outcome as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Outcome {
    Allow,
    Deny,
}

/// A validator call's outcome as a label: `valid`, `invalid` or the error kind.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum CallOutcome {
    Valid,
    Invalid,
    Error(ErrorKind),
}

/// How a config reload went, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new settings are in force.
    Ok,
    /// The file could not be read or did not validate: the old settings stay.
    Error,
}

/// Writes a fixed word: labels never carry a token, a cookie or a user.
macro_rules! label_words {
    ($($ty:ty => |$value:ident| $word:expr;)*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                let $value = *self;
                std::fmt::Write::write_str(encoder, $word)
            }
        }
    )*};
}

label_words! {
    Outcome => |outcome| match outcome {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
    };
    CallOutcome => |outcome| match outcome {
        CallOutcome::Valid => "valid",
        CallOutcome::Invalid => "invalid",
        CallOutcome::Error(kind) => kind.as_str(),
    };
    Reason => |reason| reason.as_str();
    Origin => |origin| origin.as_str();
    Reached => |reach| match reach {
        Reached::Shared => "shared",
        Reached::Local => "local",
    };
    ReloadResult => |result| match result {
        ReloadResult::Ok => "ok",
        ReloadResult::Error => "error",
    };
}

/// How far a revocation reached, as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Reached {
    Shared,
    Local,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevocationLabels {
    reach: Reached,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: ReloadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: Outcome,
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    outcome: CallOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    outcome: Origin,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    check_duration: Histogram,
    checks_in_flight: Gauge,
    validator_calls: Family<CallLabels, Counter>,
    validator_duration: Histogram,
    validator_in_flight: Gauge,
    validator_shed: Counter,
    cache_lookups: Family<CacheLabels, Counter>,
    cache_entries: Gauge<u64, AtomicU64>,
    config_reloads: Family<ReloadLabels, Counter>,
    revocations: Family<RevocationLabels, Counter>,
    revocations_received: Counter,
    revocation_bus_up: Gauge,
    /// The series every cache hit counts, each resolved from its family once, at its first use
    /// (so /metrics shows it only from then on, as before): a family lookup hashes the labels
    /// and takes a lock on every Check.
    valid_allows: OnceLock<Counter>,
    hits: OnceLock<Counter>,
}

impl Metrics {
    pub fn new(auth_enabled: bool) -> Self {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("session_authz");
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 18));

        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Check decisions by outcome and reason",
            decisions.clone(),
        );
        let check_duration = latency();
        registry.register_with_unit(
            "check_duration",
            "Time to answer a Check",
            Unit::Seconds,
            check_duration.clone(),
        );
        let checks_in_flight = Gauge::default();
        registry.register(
            "checks_in_flight",
            "Checks being answered",
            checks_in_flight.clone(),
        );
        let validator_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "validator_calls",
            "Validator calls by outcome (valid, invalid or the error kind)",
            validator_calls.clone(),
        );
        let validator_duration = latency();
        registry.register_with_unit(
            "validator_duration",
            "Time of one validator call",
            Unit::Seconds,
            validator_duration.clone(),
        );
        let validator_in_flight = Gauge::default();
        registry.register(
            "validator_in_flight",
            "Validator calls in flight",
            validator_in_flight.clone(),
        );
        let validator_shed = Counter::default();
        registry.register(
            "validator_shed",
            "Validator calls refused because too many were waiting",
            validator_shed.clone(),
        );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Decision cache lookups: hit, miss, coalesced (waited for another Check's call), stale",
            cache_lookups.clone(),
        );
        let cache_entries = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "cache_entries",
            "Entries in the decision cache",
            cache_entries.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        // Both series from the start, so that an alert on errors sees a 0 before the first.
        for result in [ReloadResult::Ok, ReloadResult::Error] {
            let _ = config_reloads.get_or_create(&ReloadLabels { result });
        }
        registry.register(
            "config_reload",
            "Config reloads (SIGHUP or the --config file changed) by result: ok, or error (the old config stays)",
            config_reloads.clone(),
        );
        let revocations = Family::<RevocationLabels, Counter>::default();
        for reach in [Reached::Shared, Reached::Local] {
            let _ = revocations.get_or_create(&RevocationLabels { reach });
        }
        registry.register(
            "revocations",
            "Sessions revoked through POST /v1/revoke by reach: shared (published to every replica) or local (this replica only: no bus, or the bus is down)",
            revocations.clone(),
        );
        let revocations_received = Counter::default();
        registry.register(
            "revocations_received",
            "Revocations applied from the bus (this replica's own included)",
            revocations_received.clone(),
        );
        let revocation_bus_up = Gauge::default();
        registry.register(
            "revocation_bus_up",
            "1 while subscribed to the revocation bus; 0 when it is down or not configured (revocations are not being shared)",
            revocation_bus_up.clone(),
        );
        let enabled = Gauge::<i64>::default();
        enabled.set(i64::from(auth_enabled));
        registry.register(
            "auth_enabled",
            "1 when sessions are checked, 0 when AUTH_ENABLED=false",
            enabled,
        );
        registry.register(
            "build",
            "Build information",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );

        Self {
            registry: root,
            decisions,
            check_duration,
            checks_in_flight,
            validator_calls,
            validator_duration,
            validator_in_flight,
            validator_shed,
            cache_lookups,
            cache_entries,
            config_reloads,
            revocations,
            revocations_received,
            revocation_bus_up,
            valid_allows: OnceLock::new(),
            hits: OnceLock::new(),
        }
    }

    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// A revocation, and whether the bus took it.
    pub fn revocation(&self, shared: bool) {
        let reach = if shared {
            Reached::Shared
        } else {
            Reached::Local
        };
        self.revocations
            .get_or_create(&RevocationLabels { reach })
            .inc();
    }

    pub fn revocation_received(&self) {
        self.revocations_received.inc();
    }

    pub fn revocation_bus_up(&self, up: bool) {
        self.revocation_bus_up.set(i64::from(up));
    }

    pub fn decision(&self, decision: &Decision, took: Duration) {
        let outcome = if decision.is_allow() {
            Outcome::Allow
        } else {
            Outcome::Deny
        };
        let labels = DecisionLabels {
            outcome,
            reason: decision.reason(),
        };
        if labels.reason == Reason::ValidSession {
            resolved(&self.valid_allows, &self.decisions, &labels).inc();
        } else {
            self.decisions.get_or_create(&labels).inc();
        }
        self.check_duration.observe(took.as_secs_f64());
    }

    /// Counts a Check in flight until the guard drops.
    pub fn check_started(&self) -> InFlight<'_> {
        self.checks_in_flight.inc();
        InFlight(&self.checks_in_flight)
    }

    pub fn validator_call(&self, verdict: &Verdict, took: Duration) {
        let outcome = match verdict {
            Verdict::Valid(_) => CallOutcome::Valid,
            Verdict::Invalid => CallOutcome::Invalid,
            // Shed calls never reached the validator: counted apart, not timed.
            Verdict::Error(err) if err.kind() == ErrorKind::Shed => {
                self.validator_shed.inc();
                return;
            }
            Verdict::Error(err) => CallOutcome::Error(err.kind()),
        };
        self.validator_calls
            .get_or_create(&CallLabels { outcome })
            .inc();
        self.validator_duration.observe(took.as_secs_f64());
    }

    pub fn validator_started(&self) -> InFlight<'_> {
        self.validator_in_flight.inc();
        InFlight(&self.validator_in_flight)
    }

    pub fn cache_lookup(&self, origin: Origin) {
        let labels = CacheLabels { outcome: origin };
        if origin == Origin::Hit {
            resolved(&self.hits, &self.cache_lookups, &labels).inc();
        } else {
            self.cache_lookups.get_or_create(&labels).inc();
        }
    }

    /// The Prometheus text exposition, with the cache size read now.
    pub fn render(&self, cache_entries: u64) -> String {
        self.cache_entries.set(cache_entries);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Decrements an in-flight gauge when dropped, however the work ends.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `family`'s counter for `labels`, kept in `slot` after the first lookup. A clone of a counter
/// is the same counter.
fn resolved<'a, L>(
    slot: &'a OnceLock<Counter>,
    family: &Family<L, Counter>,
    labels: &L,
) -> &'a Counter
where
    L: Clone + std::hash::Hash + Eq,
{
    slot.get_or_init(|| family.get_or_create(labels).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Identity;

    #[test]
    fn names_are_prefixed_and_move() {
        let metrics = Metrics::new(true);
        let allow = Decision::Allow {
            identity: Identity::named("alice"),
            reason: Reason::ValidSession,
        };
        metrics.decision(&allow, Duration::from_micros(80));
        let cross_site = Decision::Deny {
            status: crate::decision::DenyStatus::Forbidden,
            reason: Reason::CrossSite,
        };
        metrics.decision(&cross_site, Duration::from_micros(5));
        metrics.validator_call(
            &Verdict::Valid(Identity::default()),
            Duration::from_millis(2),
        );
        metrics.validator_call(
            &Verdict::Error(crate::contract::ValidatorError::Shed),
            Duration::ZERO,
        );
        metrics.validator_call(
            &Verdict::Error(crate::contract::ValidatorError::Timeout),
            Duration::from_secs(5),
        );
        metrics.cache_lookup(Origin::Hit);
        {
            let _guard = metrics.check_started();
            assert!(metrics
                .render(0)
                .contains("session_authz_checks_in_flight 1"));
        }
        let text = metrics.render(7);
        for line in [
            "session_authz_decisions_total{outcome=\"allow\",reason=\"valid_session\"} 1",
            "session_authz_decisions_total{outcome=\"deny\",reason=\"cross_site\"} 1",
            "session_authz_validator_calls_total{outcome=\"valid\"} 1",
            "session_authz_validator_shed_total 1",
            "session_authz_validator_calls_total{outcome=\"timeout\"} 1",
            "session_authz_cache_lookups_total{outcome=\"hit\"} 1",
            "session_authz_cache_entries 7",
            "session_authz_checks_in_flight 0",
            "session_authz_auth_enabled 1",
            "session_authz_check_duration_seconds_count 2",
            "session_authz_build_info{version=",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
    }
}
