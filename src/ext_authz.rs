//! The `envoy.service.auth.v3.Authorization` service: thin glue from a `CheckRequest` through
//! credential → (cache →) validator → decision to a `CheckResponse`.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tonic::{Request, Response, Status};

use crate::cache::{DecisionCache, Origin};
use crate::config::Config;
use crate::credential::{self, Credential, Lookup, Names};
use crate::decision::{decide, Decision, OnValidatorError, Situation};
use crate::metrics::Metrics;
use crate::ops::ValidatorHealth;
use crate::response::check_response;
use crate::validator::{Validator, ValidatorError, Verdict, TRACE_HEADERS};

/// The parts a Check uses besides the config.
#[derive(Clone, Debug)]
pub struct Parts {
    pub validator: Validator,
    pub cache: DecisionCache,
    pub metrics: Arc<Metrics>,
    pub validator_health: Arc<ValidatorHealth>,
}

/// Answers Envoy's Check calls.
#[derive(Debug)]
pub struct CheckService {
    auth_enabled: bool,
    names: Names,
    user_header: String,
    on_error: OnValidatorError,
    parts: Parts,
}

impl CheckService {
    pub fn new(config: &Config, parts: Parts) -> Self {
        Self {
            auth_enabled: config.auth_enabled,
            names: Names {
                cookie: config.session_cookie.clone(),
                header: config.session_header.clone(),
            },
            user_header: config.user_header.clone(),
            on_error: config.validator.on_error,
            parts,
        }
    }

    /// Runs one check and returns the decision with the credential, if one was found.
    pub async fn decide(&self, request: &CheckRequest) -> (Decision, Option<Credential>) {
        let Some(http) = http_request(request) else {
            return (decide(Situation::Malformed, self.on_error), None);
        };
        if !self.auth_enabled {
            return (decide(Situation::AuthDisabled, self.on_error), None);
        }
        let (situation, credential) = match credential::find(headers(http), &self.names) {
            Lookup::Absent => (Situation::NoCredential, None),
            Lookup::Ambiguous(why) => (Situation::Ambiguous(why), None),
            Lookup::Found(credential) => (self.validate(&credential, http).await, Some(credential)),
        };
        (decide(situation, self.on_error), credential)
    }

    /// The verdict from the cache or one shared validator call.
    async fn validate(&self, credential: &Credential, http: &HttpRequest) -> Situation {
        let Parts {
            validator,
            cache,
            metrics,
            validator_health,
        } = &self.parts;
        let fetch = || async {
            let _in_flight = metrics.validator_started();
            let started = Instant::now();
            let trace = headers(http).filter(|(name, _)| {
                TRACE_HEADERS
                    .iter()
                    .any(|wanted| name.eq_ignore_ascii_case(wanted))
            });
            let reply = validator.check(credential, trace).await;
            let outcome = match &reply.verdict {
                Verdict::Valid { .. } => "valid",
                Verdict::Invalid => "invalid",
                Verdict::Error(err) => err.kind(),
            };
            metrics.validator_call(outcome, started.elapsed());
            // Shedding is our own overload, not a sign of a sick validator.
            if reply.verdict != Verdict::Error(ValidatorError::Shed) {
                validator_health.record(!matches!(reply.verdict, Verdict::Error(_)));
            }
            reply
        };
        let (verdict, origin) = cache.verdict(credential, fetch).await;
        metrics.cache_lookup(origin.as_str());
        match (verdict, origin) {
            (Verdict::Valid { user }, Origin::Stale) => {
                tracing::warn!(
                    token = %credential.fingerprint(),
                    "validator failing; allowing a session it confirmed recently (stale_if_error)"
                );
                Situation::StaleValid { user }
            }
            (verdict, _) => Situation::Checked(verdict),
        }
    }
}

/// The HTTP request a Check is about, if the CheckRequest carries one.
pub fn http_request(request: &CheckRequest) -> Option<&HttpRequest> {
    request.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

/// The credential lookup a Check runs on its request (pure; for tests and fuzzing).
pub fn lookup(request: &CheckRequest, names: &Names) -> Option<Lookup> {
    http_request(request).map(|http| credential::find(headers(http), names))
}

/// Every request header as `(name, bytes)`: the `headers` map and, when Envoy sends
/// `encode_raw_headers: true`, the `header_map` list.
fn headers(http: &HttpRequest) -> impl Iterator<Item = (&str, &[u8])> {
    let plain = http
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    let raw = http.header_map.iter().flat_map(|map| {
        map.headers.iter().map(|h| {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                h.raw_value.as_slice()
            };
            (h.key.as_str(), value)
        })
    });
    plain.chain(raw)
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.parts.metrics.check_started();
        let (decision, credential) = self.decide(request.get_ref()).await;
        let took = started.elapsed();
        self.parts
            .metrics
            .decision(decision.is_allow(), decision.reason().as_str(), took);
        let user = match &decision {
            Decision::Allow { user, .. } => user.as_deref(),
            _ => None,
        };
        tracing::debug!(
            outcome = if decision.is_allow() { "allow" } else { "deny" },
            reason = decision.reason().as_str(),
            user,
            // Evaluated only when debug is on: hashing is not free.
            token = credential.as_ref().map(Credential::fingerprint),
            latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            "check decided"
        );
        check_response(&decision, &self.user_header).map(Response::new)
    }
}
