//! Replicas: a replica taken out for a failing validator comes back by itself (the background
//! probe), and a rolling restart of two replicas behind real Envoy drops no request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use session_authz::doors::grpc::SERVICE_NAME as AUTHZ_SERVICE;
use session_authz_testkit::check::*;
use session_authz_testkit::envoy::EnvoyProcess;
use session_authz_testkit::http::*;
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::{eventually, holds_for};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const VALID: &str = r#"{"valid":true,"user":"user1"}"#;

/// The named `envoy.service.auth.v3.Authorization` status, as Envoy's health check asks it.
async fn named_health(channel: tonic::transport::Channel) -> ServingStatus {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: AUTHZ_SERVICE.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

/// Whether a request the fake validator saw carried anything of a client: a credential or a
/// forwarded trace header.
fn carries_client_headers(seen: &Seen) -> bool {
    ["cookie", "x-session-token", "x-request-id", "traceparent"]
        .iter()
        .any(|name| seen.headers.contains_key(*name))
}

#[tokio::test(flavor = "multi_thread")]
async fn validator_health_recovers_by_probing_without_check_traffic() {
    let validator = FakeValidator::start(vec![]).await;
    validator.set_answer("user1-token", Answer::json(500, VALID));
    validator.set_default(Answer::json(500, VALID));
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let channel = channel(&running).await;
    assert_eq!(named_health(channel.clone()).await, ServingStatus::Serving);

    let mut client = client(&running).await;
    for _ in 0..session_authz::health::FAILURES_TO_UNHEALTHY {
        let request = check_request(&[("cookie", "session=user1-token")]);
        assert_eq!(outcome_of(&mut client, request).await, deny_503());
    }
    let down = eventually(Duration::from_secs(10), || {
        let channel = channel.clone();
        async move { (named_health(channel).await == ServingStatus::NotServing).then_some(()) }
    })
    .await;
    assert!(down.is_some(), "named health never turned NOT_SERVING");

    // The validator recovers; nothing sends a Check from here on.
    let before = validator.calls();
    validator.set_answer("user1-token", Answer::json(200, VALID));
    validator.set_default(Answer::json(401, r#"{"valid":false}"#));
    let interval = session_authz::probe::INTERVAL;
    let limit = interval * (4 * session_authz::health::SUCCESSES_TO_HEALTHY + 4);
    let up = eventually(limit, || {
        let channel = channel.clone();
        async move { (named_health(channel).await == ServingStatus::Serving).then_some(()) }
    })
    .await;
    assert!(
        up.is_some(),
        "named health still NOT_SERVING {limit:?} after the validator recovered"
    );

    let probes: Vec<Seen> = validator.seen().split_off(before);
    assert!(
        probes.len() >= session_authz::health::SUCCESSES_TO_HEALTHY as usize,
        "too few probes: {probes:?}"
    );
    for probe in &probes {
        assert_eq!(probe.path, "/session/validate");
        assert!(!carries_client_headers(probe), "probe carried {probe:?}");
    }

    // Healthy again: the probing stops. Absence needs time to show; a slow machine only makes
    // this check weaker, never wrong.
    let settled = validator.calls();
    let quiet = holds_for(interval * 3, || validator.calls() == settled).await;
    assert!(quiet, "still probing while healthy: {:?}", validator.seen());
    let request = check_request(&[("cookie", "session=user1-token")]);
    assert_eq!(outcome_of(&mut client, request).await, allow_as("user1"));
}

/// Two replicas (the real binary) behind real Envoy running the shipped health check.
struct Replicas {
    validator: FakeValidator,
    _dashboard: Upstream,
    replicas: Vec<ServiceProcess>,
    envoy: EnvoyProcess,
}

impl Replicas {
    async fn start(env: &[(&str, &str)]) -> Self {
        let validator = FakeValidator::start(vec![("user1-token", Answer::json(200, VALID))]).await;
        let dashboard = Upstream::start().await;
        let url = validator.url();
        let mut all = vec![("AIMENU_URL", url.as_str())];
        all.extend_from_slice(env);
        let replicas: Vec<_> = (0..2).map(|_| ServiceProcess::spawn(&all)).collect();
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.grpc_addr).collect();
        let envoy = EnvoyProcess::start_with_replicas(&addrs, dashboard.addr).await;
        let stack = Self {
            validator,
            _dashboard: dashboard,
            replicas,
            envoy,
        };
        stack
            .wait_for_flags(Duration::from_secs(20), |flags| flags == "healthy")
            .await
            .expect("both replicas healthy in Envoy");
        stack
    }

    /// Waits until Envoy's flags for every replica satisfy `wanted`.
    async fn wait_for_flags(
        &self,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<Vec<(SocketAddr, String)>> {
        let wanted = &wanted;
        eventually(limit, || async move {
            let hosts = self.envoy.authz_hosts("health_flags").await;
            (hosts.len() == self.replicas.len() && hosts.iter().all(|(_, f)| wanted(f)))
                .then_some(hosts)
        })
        .await
    }

    async fn get(&self, headers: &[(&str, &str)]) -> RawResponse {
        raw_get(self.envoy.listener, "/admin", headers).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_taken_out_by_a_failing_validator_come_back_without_traffic() {
    let stack = Replicas::start(&[]).await;

    // The validator fails: traffic through Envoy trips both replicas' validator health.
    stack
        .validator
        .set_answer("user1-token", Answer::json(500, VALID));
    stack.validator.set_default(Answer::json(500, VALID));
    let out = eventually(Duration::from_secs(30), || async {
        let response = stack.get(&[("Cookie", "session=user1-token")]).await;
        assert_eq!(response.status, 503, "validator down: {response:?}");
        let hosts = stack.envoy.authz_hosts("health_flags").await;
        (hosts.len() == 2 && hosts.iter().all(|(_, f)| f.contains("failed_active_hc")))
            .then_some(())
    })
    .await;
    assert!(
        out.is_some(),
        "Envoy never took both replicas out: {:?}",
        stack.envoy.authz_hosts("health_flags").await
    );

    // The validator recovers; no client request is sent until Envoy lists both again.
    let before = stack.validator.calls();
    stack
        .validator
        .set_answer("user1-token", Answer::json(200, VALID));
    stack
        .validator
        .set_default(Answer::json(401, r#"{"valid":false}"#));
    let back = stack
        .wait_for_flags(Duration::from_secs(30), |flags| flags == "healthy")
        .await;
    assert!(
        back.is_some(),
        "replicas still out 30 s after the validator recovered: {:?}",
        stack.envoy.authz_hosts("health_flags").await
    );
    let probes = stack.validator.seen().split_off(before);
    assert!(!probes.is_empty());
    assert!(
        probes.iter().all(|p| !carries_client_headers(p)),
        "only credential-less probes reached the validator: {probes:?}"
    );

    let response = stack.get(&[("Cookie", "session=user1-token")]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.upstream_saw("x-auth-user"), ["user1"]);
}

/// Allowed Checks a replica answered, from its `/metrics`.
async fn allowed(replica: &ServiceProcess) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", replica.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("session_authz_decisions_total{") && l.contains("outcome=\"allow\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until `replica` has allowed some Checks.
async fn serves_traffic(replica: &ServiceProcess, which: &str) {
    let served = eventually(Duration::from_secs(20), || async {
        (allowed(replica).await > 0).then_some(())
    })
    .await;
    assert!(served.is_some(), "{which} never served a Check");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_behind_envoy_drops_no_request() {
    // The shipped drain delay: Envoy's health check (every 2 s, out after 2 failures) sees
    // NOT_SERVING within about 4 s. With no drain delay this test sees hundreds of 503s.
    let drain = [("SESSION_AUTHZ_DRAIN_DELAY", "5s")];
    let mut stack = Replicas::start(&drain).await;

    let listener = stack.envoy.listener;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                // Bounded even if the test below hangs: at most 20 000 requests per worker.
                while !stop.load(Ordering::Relaxed) && answers.len() < 20_000 {
                    let response =
                        raw_get(listener, "/admin", &[("Cookie", "session=user1-token")]).await;
                    let ok =
                        response.status == 200 && response.upstream_saw("x-auth-user") == ["user1"];
                    answers.push((ok, response.status, response.body));
                }
                answers
            })
        })
        .collect();

    for (i, which) in ["A", "B"].into_iter().enumerate() {
        serves_traffic(&stack.replicas[i], which).await;
        kill(stack.replicas[i].pid(), Signal::SIGTERM).unwrap();
        let exited = eventually(Duration::from_secs(30), || {
            let status = stack.replicas[i].child.try_wait().unwrap();
            async move { status }
        })
        .await
        .unwrap_or_else(|| panic!("{which} never exited after SIGTERM"));
        assert!(exited.success(), "{which} exited with {exited}");

        // The replacement takes the same port: Envoy's STATIC endpoints are fixed. tokio binds
        // with SO_REUSEADDR, so the old connections in TIME_WAIT do not block it.
        let addr = stack.replicas[i].grpc_addr.to_string();
        let url = stack.validator.url();
        let replacement = tokio::task::spawn_blocking(move || {
            ServiceProcess::spawn(&[
                ("AIMENU_URL", url.as_str()),
                ("SESSION_AUTHZ_GRPC_ADDR", addr.as_str()),
                drain[0],
            ])
        })
        .await
        .unwrap();
        stack.replicas[i] = replacement;
        stack
            .wait_for_flags(Duration::from_secs(20), |flags| flags == "healthy")
            .await
            .unwrap_or_else(|| panic!("{which}' never healthy in Envoy"));
        serves_traffic(&stack.replicas[i], &format!("{which}'")).await;
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut failed = Vec::new();
    for worker in workers {
        for (ok, status, body) in worker.await.unwrap() {
            total += 1;
            if !ok {
                failed.push((status, body));
            }
        }
    }
    assert!(total > 100, "too little load: {total}");
    assert!(
        failed.is_empty(),
        "{} of {total} requests failed during the rolling restart: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
}
