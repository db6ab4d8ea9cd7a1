//! The core every door calls: a transport-free view of a request in, a [`Decision`] out.
//!
//! It runs the credential lookup, refuses cross-site requests ([`csrf`](crate::csrf)), asks for a
//! verdict (the cache in front of the validator), applies the decision table, and records metrics
//! and the decision log line, so that every door gets them alike. It knows nothing of protobuf
//! or HTTP frameworks (docs/architecture.md, "Layers").

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::Instrument;

use crate::assertion::{self, Signer};
use crate::cache::{Answered, DecisionCache, Origin};
use crate::contract::{Identity, Reply, ValidatorError, Verdict};
use crate::credential::{self, Credential, Lookup, Names};
use crate::csrf;
use crate::decision::{decide, Decision, DenyStatus, Situation};
use crate::health::ValidatorHealth;
use crate::metrics::Metrics;
use crate::policy::{MergedPolicy, RoutePolicy, Routes};
use crate::request::{Headers, RequestView};
use crate::signin;
use crate::telemetry;
use crate::throttle::Throttle;
use crate::validator::{Validator, TRACE_HEADERS};

/// Where verdicts come from: [`CachedValidator`] in the service, a table in property tests and
/// fuzzing.
pub trait Verdicts: Send + Sync {
    /// The verdict on `credential`, how it was obtained, and the cookies its answer sets (only
    /// when this very call asked the validator). `request` supplies the trace headers passed on
    /// to the validator.
    fn verdict(
        &self,
        credential: &Credential,
        request: &RequestView<'_>,
    ) -> impl Future<Output = Answered> + Send;
}

/// What the core answers a door: the decision, and how the verdict behind it was obtained (for
/// the door to report, e.g. in Envoy's dynamic metadata).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub decision: Decision,
    /// How the cache answered; `None` when no verdict was asked for (no credential, an
    /// ambiguous one, auth disabled, an unreadable request).
    pub cache: Option<Origin>,
    /// `Set-Cookie` values for the client (session renewal, or clearing a dead cookie): only
    /// from a fresh valid answer behind an allow or a fresh invalid one behind the 401, never
    /// on any other decision.
    pub set_cookies: Vec<String>,
    /// The signed identity assertion behind an allow of a valid session, when `assertion_key`
    /// is set; `None` on every other decision.
    pub assertion: Option<Arc<str>>,
}

/// The request headers that carry a valid session's identity to the app: set with overwrite
/// when the validator named the field, removed when it did not; likewise the signed assertion,
/// removed when assertions are off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub user: String,
    pub roles: String,
    pub email: String,
    pub assertion: String,
}

impl Default for IdentityHeaders {
    /// The `*_header` keys' defaults.
    fn default() -> Self {
        Self {
            user: "x-auth-user".to_owned(),
            roles: "x-auth-roles".to_owned(),
            email: "x-auth-email".to_owned(),
            assertion: assertion::DEFAULT_HEADER.to_owned(),
        }
    }
}

impl IdentityHeaders {
    /// Each header with its value: the identity's fields and the signed assertion. `None`:
    /// the validator named no such field, or assertions are off, so the header is removed.
    pub fn fields<'a>(
        &'a self,
        identity: &'a Identity,
        assertion: Option<&'a str>,
    ) -> [(&'a str, Option<&'a str>); 4] {
        let [user, roles, email, signed] = Self::values(identity, assertion);
        let [user_name, roles_name, email_name, signed_name] = self.names();
        [
            (user_name, user),
            (roles_name, roles),
            (email_name, email),
            (signed_name, signed),
        ]
    }

    /// The header names, in the order of [`IdentityHeaders::values`].
    pub fn names(&self) -> [&str; 4] {
        [&self.user, &self.roles, &self.email, &self.assertion]
    }

    /// The values of [`IdentityHeaders::fields`], without the names (a door that made its own
    /// from [`IdentityHeaders::names`]).
    pub fn values<'a>(identity: &'a Identity, assertion: Option<&'a str>) -> [Option<&'a str>; 4] {
        [
            identity.user(),
            identity.roles_value(),
            identity.email(),
            assertion,
        ]
    }
}

/// What the core needs to know of the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub auth_enabled: bool,
    pub names: Names,
    pub csrf: csrf::Settings,
    /// The `[[routes]]` table (per-route rules from the configuration).
    pub routes: Routes,
    /// Where browsers without a session are sent (`login_url`), if anywhere.
    pub sign_in: signin::Settings,
    /// The signed identity assertion (`assertion_key`), if on.
    pub assertion: Option<assertion::Settings>,
    /// The headers the doors set the identity in.
    pub identity_headers: IdentityHeaders,
}

/// The configuration's defaults: auth on (never a derived `false`), `session` /
/// `x-session-token`, CSRF on, no routes, no sign-in redirects.
impl Default for Settings {
    fn default() -> Self {
        Self {
            auth_enabled: true,
            names: Names::default(),
            csrf: csrf::Settings::default(),
            routes: Routes::default(),
            sign_in: signin::Settings::default(),
            assertion: None,
            identity_headers: IdentityHeaders::default(),
        }
    }
}

/// Decides requests; shared by every door.
#[derive(Debug)]
pub struct Authorizer<V = CachedValidator> {
    /// Replaced whole by a config reload: a Check reads one [`Live`] from start to end.
    live: ArcSwap<Live>,
    verdicts: V,
    metrics: Arc<Metrics>,
    /// A broken route hit by every request logs once a minute, not once a request.
    misconfig_log: Throttle,
}

/// The settings a Check is decided by, and what is built from them (the assertion signer): one
/// configuration's, never a mix of two.
#[derive(Debug)]
pub struct Live {
    settings: Settings,
    /// Signs the identity assertions, when they are on.
    signer: Option<Signer>,
}

impl Live {
    pub fn new(settings: Settings) -> Self {
        let signer = settings
            .assertion
            .clone()
            .map(|assertion| Signer::new(assertion, ASSERTIONS_KEPT));
        Self { settings, signer }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The headers the doors set the identity in.
    pub fn identity_headers(&self) -> &IdentityHeaders {
        &self.settings.identity_headers
    }

    /// The assertion keys' public halves as a JWKS; `None` while assertions are off.
    pub fn jwks(&self) -> Option<String> {
        self.settings
            .assertion
            .as_ref()
            .map(|assertion| assertion.keys.jwks())
    }
}

/// How many signed assertions are kept for reuse: one per session identity and audience.
const ASSERTIONS_KEPT: usize = 65_536;

/// How often a misconfigured route is logged at most.
const MISCONFIG_LOG_EVERY: Duration = Duration::from_secs(60);

impl<V: Verdicts> Authorizer<V> {
    pub fn new(settings: Settings, verdicts: V, metrics: Arc<Metrics>) -> Self {
        Self {
            live: ArcSwap::from_pointee(Live::new(settings)),
            verdicts,
            metrics,
            misconfig_log: Throttle::new(MISCONFIG_LOG_EVERY),
        }
    }

    /// The settings Checks are decided by now; a door answers a Check with the same ones.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Checks that start from now on are decided by `settings` (a config reload); those in
    /// flight finish with the ones they started with.
    pub fn replace(&self, settings: Settings) {
        self.live.store(Arc::new(Live::new(settings)));
    }

    /// Decides one request by the current settings.
    pub async fn authorize(&self, request: &RequestView<'_>) -> Checked {
        self.authorize_by(&self.live(), request).await
    }

    /// Decides one request by `live`; with tracing on, in a span of its own (see
    /// [`telemetry`]).
    pub async fn authorize_by(&self, live: &Live, request: &RequestView<'_>) -> Checked {
        let span = check_span();
        if span.is_disabled() {
            // Tracing off: no span was built, and nothing more is done for one.
            return self.decide(live, request, &span).await;
        }
        telemetry::continue_trace(&span, request.headers);
        // Boxed, as the cache's miss is: an untraced Check's future need not make room for it.
        let checked = Box::pin(self.decide(live, request, &span).instrument(span.clone())).await;
        record_check(&span, &checked);
        checked
    }

    async fn decide(
        &self,
        live: &Live,
        request: &RequestView<'_>,
        span: &tracing::Span,
    ) -> Checked {
        let started = Instant::now();
        let _in_flight = self.metrics.check_started();
        let gathered = self.situation(live, request, span).await;
        let decision = decide(gathered.situation);
        let decision = sign_in(&live.settings, decision, request, gathered.login_redirect);
        self.record(
            &decision,
            gathered.credential.as_ref(),
            gathered.cache,
            started,
        );
        Checked {
            decision,
            cache: gathered.cache,
            set_cookies: gathered.set_cookies,
            assertion: gathered.assertion,
        }
    }

    /// Decides a request the door could not read (a Check without HTTP attributes).
    pub fn unreadable(&self) -> Checked {
        let span = check_span();
        let decision = decide(Situation::Malformed);
        self.record(&decision, None, None, Instant::now());
        let checked = Checked {
            decision,
            cache: None,
            set_cookies: Vec::new(),
            assertion: None,
        };
        if !span.is_disabled() {
            record_check(&span, &checked);
        }
        checked
    }

    /// What the decision depends on, gathered from the request, the route and the verdict.
    /// `span` is the Check's (disabled with tracing off): the route rules' result goes on it.
    async fn situation(
        &self,
        live: &Live,
        request: &RequestView<'_>,
        span: &tracing::Span,
    ) -> Gathered {
        let settings = &live.settings;
        if !settings.auth_enabled {
            return Gathered::before_lookup(Situation::AuthDisabled);
        }
        // Before anything else: a route nobody can read is closed, and costs no validator call.
        let Some(policy) = self.policy(settings, request) else {
            return Gathered::before_lookup(Situation::MisconfiguredRoute);
        };
        let gathered = |situation| Gathered {
            situation,
            credential: None,
            cache: None,
            set_cookies: Vec::new(),
            login_redirect: policy.login_redirect,
            assertion: None,
        };
        match credential::find(request.headers, &settings.names) {
            Lookup::Absent => gathered(Situation::NoCredential),
            Lookup::Ambiguous(why) => gathered(Situation::Ambiguous(why)),
            Lookup::Found(credential) => {
                // Before the verdict: a forged request must not cost a validator call.
                if let Some(why) = cross_site(&settings.csrf, request, &credential, policy.csrf) {
                    tracing::debug!(
                        why = why.as_str(),
                        method = request.method,
                        "cross-site request refused"
                    );
                    return Gathered {
                        credential: Some(credential),
                        ..gathered(Situation::CrossSite)
                    };
                }
                let Answered {
                    verdict,
                    origin,
                    mut set_cookies,
                } = self.verdicts.verdict(&credential, request).await;
                // Only a valid answer (an allow) or an invalid one (the 401) passes cookies on;
                // the cache hands them out on a miss only, this makes sure of the verdict.
                if !matches!(verdict, Verdict::Valid(_) | Verdict::Invalid)
                    || origin != Origin::Miss
                {
                    set_cookies.clear();
                }
                let situation = match (verdict, origin) {
                    (Verdict::Valid(identity), Origin::Stale) => {
                        tracing::warn!(
                            token = %credential.fingerprint(),
                            "validator failing; allowing a session it confirmed recently (stale_if_error)"
                        );
                        Situation::StaleValid(identity)
                    }
                    (verdict, _) => Situation::Checked(verdict),
                };
                // The rule is applied to every verdict, cached or not: the cache knows no route.
                let situation = match situation {
                    Situation::Checked(Verdict::Valid(identity))
                    | Situation::StaleValid(identity)
                        if !policy.permits(&identity) =>
                    {
                        set_cookies.clear();
                        Situation::Forbidden
                    }
                    other => other,
                };
                if !span.is_disabled() {
                    record_route_rules(span, &situation, &policy);
                }
                let (situation, assertion) = signed(live.signer.as_ref(), situation, &policy);
                if situation == Situation::Unsigned {
                    set_cookies.clear();
                }
                Gathered {
                    situation,
                    credential: Some(credential),
                    cache: Some(origin),
                    set_cookies,
                    login_redirect: policy.login_redirect,
                    assertion,
                }
            }
        }
    }

    /// The rules of both sources for `request`; `None` when its `context_extensions` cannot be
    /// read (logged, at most once a minute).
    fn policy<'a>(
        &self,
        settings: &'a Settings,
        request: &RequestView<'_>,
    ) -> Option<MergedPolicy<'a>> {
        let from_proxy = match request.extensions {
            None => RoutePolicy::default(),
            Some(extensions) => match RoutePolicy::from_extensions(extensions) {
                Ok(policy) => policy,
                Err(err) => {
                    self.log_misconfigured(request.path, &err);
                    return None;
                }
            },
        };
        Some(from_proxy.merge(settings.routes.select(request.path)))
    }

    fn log_misconfigured(&self, path: &str, err: &crate::policy::PolicyError) {
        if let Some(suppressed) = self.misconfig_log.due() {
            let path = path.split('?').next().unwrap_or_default();
            tracing::warn!(
                %err,
                path,
                suppressed,
                "misconfigured route (context_extensions): denying every request to it with 500"
            );
        }
    }

    fn record(
        &self,
        decision: &Decision,
        credential: Option<&Credential>,
        cache: Option<Origin>,
        started: Instant,
    ) {
        let took = started.elapsed();
        self.metrics.decision(decision, took);
        let identity = match decision {
            Decision::Allow { identity, .. } => Some(identity),
            _ => None,
        };
        tracing::debug!(
            outcome = if decision.is_allow() { "allow" } else { "deny" },
            reason = decision.reason().as_str(),
            user = identity.and_then(|i| i.user()),
            roles = identity.and_then(|i| i.roles_value()),
            cache = cache.map_or("none", Origin::as_str),
            // Evaluated only when debug is on: hashing is not free.
            token = credential.map(Credential::fingerprint),
            latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            "check decided"
        );
    }
}

/// A 401 for a browser navigation becomes a redirect to the sign-in page, when
/// [`signin::redirect`] says so; every other decision stands.
fn sign_in(
    settings: &Settings,
    decision: Decision,
    request: &RequestView<'_>,
    route_allows: Option<bool>,
) -> Decision {
    match decision {
        Decision::Deny {
            status: DenyStatus::Unauthenticated,
            reason,
        } => match signin::redirect(
            &settings.sign_in,
            request,
            &settings.names.header,
            route_allows,
        ) {
            Some(location) => Decision::SignIn { location, reason },
            None => decision,
        },
        other => other,
    }
}

/// A valid session's situation with its signed assertion, when assertions are on (`signer`);
/// a signature that fails turns the allow into [`Situation::Unsigned`].
fn signed(
    signer: Option<&Signer>,
    situation: Situation,
    policy: &MergedPolicy<'_>,
) -> (Situation, Option<Arc<str>>) {
    let (
        Some(signer),
        Situation::Checked(Verdict::Valid(identity)) | Situation::StaleValid(identity),
    ) = (signer, &situation)
    else {
        return (situation, None);
    };
    match signer.assertion(identity, policy.assertion_audience()) {
        Ok(token) => (situation, Some(token)),
        Err(err) => {
            tracing::error!(%err, "denying a valid session: its identity assertion cannot be signed");
            (Situation::Unsigned, None)
        }
    }
}

/// Why `request` is refused as a cross-site request, if it is. The route's `csrf` setting,
/// when it has one, replaces the service-wide switch.
fn cross_site(
    csrf: &csrf::Settings,
    request: &RequestView<'_>,
    credential: &Credential,
    route: Option<bool>,
) -> Option<csrf::CrossSite> {
    if !route.unwrap_or(csrf.enabled) {
        return None;
    }
    csrf::cross_site(request, credential.source(), &csrf.trusted_origins)
}

/// The span of one Check, for OpenTelemetry; disabled (`Span::none()`, nothing built) unless
/// the OpenTelemetry layer is installed. What it may carry is what the metrics carry: outcome,
/// reason, cache origin, whether the route's rules were met. Never a token or cookie, and not the
/// user (see README, "OpenTelemetry").
fn check_span() -> tracing::Span {
    tracing::info_span!(
        target: telemetry::SPAN_TARGET,
        "check",
        otel.kind = "server",
        session_authz.outcome = tracing::field::Empty,
        session_authz.reason = tracing::field::Empty,
        session_authz.cache = tracing::field::Empty,
        session_authz.route_rules = tracing::field::Empty,
    )
}

/// Whether a valid session met the route's rules: `passed`, `failed`, or `none` when the route
/// has none; left out when no valid session was checked against them.
fn record_route_rules(span: &tracing::Span, situation: &Situation, policy: &MergedPolicy<'_>) {
    let result = match situation {
        Situation::Forbidden => "failed",
        Situation::Checked(Verdict::Valid(_)) | Situation::StaleValid(_) if policy.has_rules() => {
            "passed"
        }
        Situation::Checked(Verdict::Valid(_)) | Situation::StaleValid(_) => "none",
        _ => return,
    };
    span.record("session_authz.route_rules", result);
}

fn record_check(span: &tracing::Span, checked: &Checked) {
    let decision = &checked.decision;
    span.record(
        "session_authz.outcome",
        if decision.is_allow() { "allow" } else { "deny" },
    );
    span.record("session_authz.reason", decision.reason().as_str());
    span.record(
        "session_authz.cache",
        checked.cache.map_or("none", Origin::as_str),
    );
}

/// What one request's decision depends on.
struct Gathered {
    situation: Situation,
    /// The credential found, if one was.
    credential: Option<Credential>,
    /// How its verdict was obtained, when one was asked for.
    cache: Option<Origin>,
    /// The cookies that verdict's answer sets.
    set_cookies: Vec<String>,
    /// The route's `login_redirect`, if it sets one.
    login_redirect: Option<bool>,
    /// The valid session's signed assertion, when assertions are on.
    assertion: Option<Arc<str>>,
}

impl Gathered {
    /// A situation decided before any credential was looked for.
    fn before_lookup(situation: Situation) -> Self {
        Self {
            situation,
            credential: None,
            cache: None,
            set_cookies: Vec::new(),
            login_redirect: None,
            assertion: None,
        }
    }
}

/// Verdicts from the decision cache, which calls the validator on a miss: each call timed,
/// counted and fed to the validator's health.
#[derive(Clone, Debug)]
pub struct CachedValidator {
    pub validator: Validator,
    pub cache: DecisionCache,
    pub metrics: Arc<Metrics>,
    pub health: Arc<ValidatorHealth>,
}

impl CachedValidator {
    /// Asks the validator, passing on the request's trace headers; with tracing on, in a
    /// child span of the Check's whose `traceparent` replaces the client's, so that the auth
    /// service's spans nest under it.
    async fn ask(&self, credential: &Credential, request: &RequestView<'_>) -> Reply {
        let sent = trace_headers(request.headers);
        let span = tracing::info_span!(
            target: telemetry::SPAN_TARGET,
            "validator",
            otel.kind = "client",
            session_authz.verdict = tracing::field::Empty,
        );
        if span.is_disabled() {
            return self.validator.ask(credential, sent).await;
        }
        let ours = telemetry::outgoing_headers(&span);
        let trace = sent
            .filter(|(name, _)| !ours.iter().any(|(replaced, _)| name == replaced))
            .chain(ours.iter().map(|(name, value)| (*name, value.as_bytes())));
        let reply = self
            .validator
            .ask(credential, trace)
            .instrument(span.clone())
            .await;
        let verdict = match &reply.verdict {
            Verdict::Valid(_) => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Error(err) => err.kind().as_str(),
        };
        span.record("session_authz.verdict", verdict);
        reply
    }
}

/// Each trace header the client sent, as it sent it, under its lower-case name.
fn trace_headers<'a>(headers: Headers<'a>) -> impl Iterator<Item = (&'a str, &'a [u8])> + Send {
    TRACE_HEADERS
        .iter()
        .flat_map(move |name: &'static &'static str| {
            headers.all(name).map(move |value| (*name, value))
        })
}

impl Verdicts for CachedValidator {
    async fn verdict(&self, credential: &Credential, request: &RequestView<'_>) -> Answered {
        let fetch = || async {
            let _in_flight = self.metrics.validator_started();
            let started = Instant::now();
            let reply = self.ask(credential, request).await;
            self.metrics
                .validator_call(&reply.verdict, started.elapsed());
            // Shedding is our own overload, not a sign of a sick validator.
            if reply.verdict != Verdict::Error(ValidatorError::Shed) {
                self.health
                    .record(!matches!(reply.verdict, Verdict::Error(_)));
            }
            reply
        };
        let answered = self.cache.lookup(credential, fetch).await;
        self.metrics.cache_lookup(answered.origin);
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Identity;
    use crate::decision::Reason;
    use crate::policy::RuleValue;

    /// Always the same answer, however asked.
    struct Fixed(Answered);

    impl Verdicts for Fixed {
        async fn verdict(&self, _: &Credential, _: &RequestView<'_>) -> Answered {
            self.0.clone()
        }
    }

    const RENEWAL: &str = "session=renewed; Max-Age=60";

    fn answered(verdict: Verdict, origin: Origin) -> Answered {
        Answered {
            verdict,
            origin,
            set_cookies: vec![RENEWAL.to_owned()],
        }
    }

    fn admin() -> Verdict {
        Verdict::Valid(Identity::named("alice").with_roles(["admin"]))
    }

    fn viewer() -> Verdict {
        Verdict::Valid(Identity::named("bob").with_roles(["viewer"]))
    }

    /// The core with `/admin` for admins only, answering every credential with `answer`.
    async fn check(answer: Answered, path: &str) -> Checked {
        let mut admins = RoutePolicy::default();
        admins
            .set("require_roles", RuleValue::Text("admin"))
            .unwrap();
        let settings = Settings {
            routes: Routes::new(vec![("/admin".to_owned(), admins)]),
            ..Settings::default()
        };
        let core = Authorizer::new(settings, Fixed(answer), Arc::new(Metrics::new(true)));
        ask(&core, path).await
    }

    /// `core`'s answer to a GET of `path` with a session cookie.
    async fn ask(core: &Authorizer<Fixed>, path: &str) -> Checked {
        let headers: [(&str, &[u8]); 1] = [("cookie", b"session=t")];
        let request = RequestView {
            method: "GET",
            path,
            host: "dash.example",
            headers: Headers::new(&headers),
            extensions: None,
        };
        core.authorize(&request).await
    }

    /// Cookies pass on only from this Check's own call, and only behind its allow or its 401.
    #[tokio::test]
    async fn set_cookies_only_from_a_fresh_valid_or_invalid_answer() {
        let fresh_allow = check(answered(admin(), Origin::Miss), "/admin").await;
        assert!(fresh_allow.decision.is_allow());
        assert_eq!(fresh_allow.set_cookies, [RENEWAL]);
        let fresh_401 = check(answered(Verdict::Invalid, Origin::Miss), "/admin").await;
        assert_eq!(fresh_401.decision.reason(), Reason::InvalidSession);
        assert_eq!(fresh_401.set_cookies, [RENEWAL]);
        for (verdict, origin) in [
            (admin(), Origin::Hit),
            (admin(), Origin::Coalesced),
            (admin(), Origin::Stale),
            (Verdict::Invalid, Origin::Hit),
            (
                Verdict::Error(crate::contract::ValidatorError::Timeout),
                Origin::Miss,
            ),
            // A valid answer refused by the route's rule: no allow, so no renewal either.
            (viewer(), Origin::Miss),
        ] {
            let checked = check(answered(verdict.clone(), origin), "/admin").await;
            assert!(
                checked.set_cookies.is_empty(),
                "{verdict:?} {origin:?}: {checked:?}"
            );
        }
    }

    /// A route's rule applies to every valid verdict, fresh, cached or stale.
    #[tokio::test]
    async fn a_valid_session_failing_the_route_rule_is_forbidden() {
        for origin in [Origin::Miss, Origin::Hit, Origin::Coalesced, Origin::Stale] {
            let refused = check(answered(viewer(), origin), "/admin/users").await;
            assert_eq!(
                refused.decision,
                Decision::Deny {
                    status: DenyStatus::Forbidden,
                    reason: Reason::Forbidden
                },
                "{origin:?}"
            );
            assert_eq!(refused.cache, Some(origin));
            let elsewhere = check(answered(viewer(), origin), "/reports").await;
            assert!(elsewhere.decision.is_allow(), "{origin:?}");
            let let_in = check(answered(admin(), origin), "/ADMIN").await;
            assert!(let_in.decision.is_allow(), "{origin:?}");
        }
    }

    /// The claims of an assertion, unverified (the signature is `assertion`'s own tests').
    fn claims(token: &str) -> serde_json::Value {
        let mut validation = jsonwebtoken::Validation::default();
        validation.insecure_disable_signature_validation();
        validation.validate_aud = false;
        let key = jsonwebtoken::DecodingKey::from_secret(b"");
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .unwrap()
            .claims
    }

    /// With assertions on, an allow of a valid session (fresh, cached or stale) carries one
    /// for the route's audience; nothing else does.
    #[tokio::test]
    async fn valid_allows_carry_an_assertion_for_the_routes_audience() {
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref()));
        let keys = assertion::KeySet::from_pems([pem.as_bytes()]).unwrap();
        let mut billing = RoutePolicy::default();
        billing
            .set("assertion_audience", RuleValue::Text("billing"))
            .unwrap();
        let mut admins = RoutePolicy::default();
        admins
            .set("require_roles", RuleValue::Text("admin"))
            .unwrap();
        let settings = Settings {
            routes: Routes::new(vec![
                ("/billing".to_owned(), billing),
                ("/admin".to_owned(), admins),
            ]),
            assertion: Some(assertion::Settings {
                keys: Arc::new(keys),
                files: Vec::new(),
                issuer: "gate".to_owned(),
                audience: "dashboard".to_owned(),
                ttl: Duration::from_secs(60),
            }),
            ..Settings::default()
        };
        let core = |answer| {
            Authorizer::new(
                settings.clone(),
                Fixed(answer),
                Arc::new(Metrics::new(true)),
            )
        };
        for origin in [Origin::Miss, Origin::Hit, Origin::Stale] {
            let valid = core(answered(viewer(), origin));
            let home = ask(&valid, "/").await;
            let said = claims(home.assertion.as_deref().unwrap());
            assert_eq!(said["aud"], "dashboard", "{origin:?}");
            assert_eq!(said["iss"], "gate");
            assert_eq!(said["sub"], "bob");
            assert_eq!(said["roles"], serde_json::json!(["viewer"]));
            let billing = ask(&valid, "/billing/x").await;
            assert_eq!(
                claims(billing.assertion.as_deref().unwrap())["aud"],
                "billing"
            );
            let refused = ask(&valid, "/admin").await;
            assert_eq!(refused.decision.reason(), Reason::Forbidden);
            assert_eq!(refused.assertion, None);
        }
        let invalid = ask(&core(answered(Verdict::Invalid, Origin::Miss)), "/").await;
        assert_eq!(invalid.assertion, None);
        // Without assertion settings, no allow carries one.
        let plain = check(answered(admin(), Origin::Miss), "/admin").await;
        assert!(plain.decision.is_allow());
        assert_eq!(plain.assertion, None);
    }

    /// A stale answer allows as itself (its own reason, for logs and metrics), never renews.
    #[tokio::test]
    async fn a_stale_valid_answer_allows_as_stale() {
        let stale = check(answered(admin(), Origin::Stale), "/admin").await;
        assert_eq!(
            stale.decision,
            Decision::Allow {
                identity: Identity::named("alice").with_roles(["admin"]),
                reason: Reason::StaleSession
            }
        );
        assert_eq!(stale.cache, Some(Origin::Stale));
        let fresh = check(answered(admin(), Origin::Hit), "/admin").await;
        assert_eq!(fresh.decision.reason(), Reason::ValidSession);
    }
}
