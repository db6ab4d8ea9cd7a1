//! The decision cache, coalescing, shedding, validator health and metrics, seen through real
//! Checks against a fake validator on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use session_authz_testkit::check::*;
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;
use session_authz_testkit::wait::eventually;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn alice() -> Answer {
    Answer::json(200, r#"{"valid":true,"user":"alice"}"#)
}

async fn check_cookie(
    client: &mut envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
        tonic::transport::Channel,
    >,
    token: &str,
) -> Outcome {
    let cookie = format!("session={token}");
    outcome_of(client, check_request(&[("cookie", &cookie)])).await
}

async fn metrics_text(running: &session_authz::app::Running) -> String {
    reqwest::get(format!("http://{}/metrics", running.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_checks_make_one_validator_call() {
    let validator = FakeValidator::start(vec![(
        "new-token",
        alice().delayed(Duration::from_millis(300)),
    )])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let client = client(&running).await;

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { check_cookie(&mut client, "new-token").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), allow_as("alice"));
    }
    assert_eq!(validator.calls(), 1);

    let text = metrics_text(&running).await;
    let coalesced = metric(
        &text,
        "session_authz_cache_lookups_total{outcome=\"coalesced\"}",
    );
    let hits = metric(&text, "session_authz_cache_lookups_total{outcome=\"hit\"}");
    assert_eq!(
        metric(&text, "session_authz_cache_lookups_total{outcome=\"miss\"}"),
        1.0
    );
    assert_eq!(coalesced + hits, 999.0, "{text}");
    assert!(coalesced > 0.0);
    assert_eq!(
        metric(
            &text,
            "session_authz_decisions_total{outcome=\"allow\",reason=\"valid_session\"}"
        ),
        1000.0
    );
    assert_eq!(
        metric(
            &text,
            "session_authz_validator_calls_total{outcome=\"valid\"}"
        ),
        1.0
    );
    assert_eq!(metric(&text, "session_authz_cache_entries"), 1.0);
    assert_eq!(metric(&text, "session_authz_checks_in_flight"), 0.0);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_are_answered_when_the_leader_is_cancelled() {
    // The leader's call hangs; the one a follower makes after taking over is answered at once.
    let validator =
        FakeValidator::start(vec![("tok", alice().delayed(Duration::from_secs(60)))]).await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let client = client(&running).await;

    let leader = tokio::spawn({
        let mut client = client.clone();
        async move { check_cookie(&mut client, "tok").await }
    });
    let arrived = eventually(Duration::from_secs(10), || async {
        (validator.calls() == 1).then_some(())
    })
    .await;
    assert!(
        arrived.is_some(),
        "the leader's call never reached the validator"
    );
    validator.set_answer("tok", alice());
    let followers: Vec<_> = (0..20)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { check_cookie(&mut client, "tok").await })
        })
        .collect();
    let waiting = eventually(Duration::from_secs(10), || async {
        let text = metrics_text(&running).await;
        (metric(&text, "session_authz_checks_in_flight") == 21.0).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "the followers never waited on the leader"
    );
    leader.abort(); // Envoy gives up on the first Check: its RPC is reset.

    for follower in followers {
        assert_eq!(follower.await.unwrap(), allow_as("alice"));
    }
    // A follower may take over the call, never more than that.
    assert!(validator.calls() <= 2, "{} calls", validator.calls());
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_denies_every_waiter_and_caches_nothing() {
    let validator = FakeValidator::start(vec![(
        "tok",
        Answer::json(500, "{}").delayed(Duration::from_millis(300)),
    )])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let client = client(&running).await;

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { check_cookie(&mut client, "tok").await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), deny_503());
    }
    assert_eq!(validator.calls(), 1);

    validator.set_answer("tok", alice());
    let mut client = client.clone();
    assert_eq!(check_cookie(&mut client, "tok").await, allow_as("alice"));
    assert_eq!(validator.calls(), 2);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn ttl_expiry_revalidates_and_revocation_lands() {
    // How long exactly an answer counts (and that hits never extend it) is the cache's unit
    // test, with a clock it moves by hand; here: the configured TTL reaches the cache.
    let validator = FakeValidator::start(vec![("tok", alice())]).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("cache_ttl", "1s"),
        ("cache_negative_ttl", "1s"),
    ])
    .await;
    let mut client = client(&running).await;

    assert_eq!(check_cookie(&mut client, "tok").await, allow_as("alice"));
    assert_eq!(check_cookie(&mut client, "tok").await, allow_as("alice"));
    assert_eq!(validator.calls(), 1);

    // Revoked: allowed from the cache until the TTL ends, then denied.
    validator.set_answer("tok", Answer::json(401, r#"{"valid":false}"#));
    let denied = eventually(Duration::from_secs(10), || async {
        let mut client = client.clone();
        (check_cookie(&mut client, "tok").await == deny_401()).then_some(())
    })
    .await;
    assert!(denied.is_some(), "revocation never landed");
    assert_eq!(validator.calls(), 2);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn cache_control_from_the_validator_is_honoured() {
    let validator = FakeValidator::start(vec![
        ("no-store", alice().header("cache-control", "no-store")),
        (
            "max-age-0",
            alice().header("cache-control", "private, max-age=0"),
        ),
        ("max-age-60", alice().header("cache-control", "max-age=60")),
    ])
    .await;
    let running = start_service(&[("aimenu_url", &validator.url()), ("cache_ttl", "60s")]).await;
    let mut client = client(&running).await;

    for token in ["no-store", "max-age-0"] {
        let before = validator.calls();
        check_cookie(&mut client, token).await;
        check_cookie(&mut client, token).await;
        assert_eq!(validator.calls() - before, 2, "{token} was cached");
    }
    // A positive max-age is cached (how long: the cache's unit tests, by a hand-moved clock).
    let before = validator.calls();
    check_cookie(&mut client, "max-age-60").await;
    check_cookie(&mut client, "max-age-60").await;
    assert_eq!(validator.calls() - before, 1);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn cache_ttl_zero_turns_caching_off() {
    let validator = FakeValidator::start(vec![("tok", alice())]).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("cache_ttl", "0"),
        ("cache_negative_ttl", "0"),
    ])
    .await;
    let mut client = client(&running).await;
    for _ in 0..3 {
        assert_eq!(check_cookie(&mut client, "tok").await, allow_as("alice"));
        assert_eq!(check_cookie(&mut client, "nobody").await, deny_401());
    }
    assert_eq!(validator.calls(), 6);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_validator_calls_are_shed_fast() {
    let validator = FakeValidator::start(vec![]).await;
    validator.set_default(alice().delayed(Duration::from_millis(500)));
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("validator_max_concurrency", "2"),
        ("validator_max_queue", "2"),
    ])
    .await;
    let client = client(&running).await;

    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let outcome = check_cookie(&mut client, &format!("distinct-{i}")).await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    let mut allowed = 0;
    let mut shed = 0;
    for task in tasks {
        let (outcome, took) = task.await.unwrap();
        if outcome == allow_as("alice") {
            allowed += 1;
        } else {
            assert_eq!(outcome, deny_503());
            assert!(took < Duration::from_millis(400), "shed slowly: {took:?}");
            shed += 1;
        }
    }
    assert_eq!(allowed, 4, "two in flight and two queued");
    assert_eq!(shed, 16);
    assert!(validator.max_in_flight() <= 2);
    let text = metrics_text(&running).await;
    assert_eq!(
        metric(&text, "session_authz_validator_shed_total"),
        16.0,
        "{text}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn named_health_follows_the_validator_with_hysteresis() {
    let validator = FakeValidator::start(vec![]).await;
    validator.set_default(Answer::json(500, "{}"));
    let running = start_service(&[("aimenu_url", &validator.url())]).await;
    let mut client = client(&running).await;
    let health = HealthClient::new(channel(&running).await);
    let status = |service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
        }
    };
    let named = "envoy.service.auth.v3.Authorization";

    for i in 0..4 {
        check_cookie(&mut client, &format!("t{i}")).await;
    }
    assert_eq!(
        status(named).await,
        ServingStatus::Serving as i32,
        "one blip is not an outage"
    );
    check_cookie(&mut client, "t4").await;
    let down = eventually(Duration::from_secs(2), || async {
        (status(named).await == ServingStatus::NotServing as i32).then_some(())
    })
    .await;
    assert!(
        down.is_some(),
        "five failures in a row should turn it NOT_SERVING"
    );
    assert_eq!(
        status("").await,
        ServingStatus::Serving as i32,
        "liveness unaffected"
    );

    validator.set_default(Answer::json(401, r#"{"valid":false}"#));
    for i in 0..3 {
        check_cookie(&mut client, &format!("u{i}")).await;
    }
    let up = eventually(Duration::from_secs(2), || async {
        (status(named).await == ServingStatus::Serving as i32).then_some(())
    })
    .await;
    assert!(up.is_some(), "answers again should turn it SERVING");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn stale_if_error_keeps_recent_sessions_during_a_blip() {
    let validator = FakeValidator::start(vec![("tok", alice())]).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("cache_ttl", "100ms"),
        ("cache_negative_ttl", "100ms"),
        ("stale_if_error", "30s"),
    ])
    .await;
    let mut client = client(&running).await;
    assert_eq!(check_cookie(&mut client, "tok").await, allow_as("alice"));

    // Once the 100 ms entry is gone, the allow comes from the stale window.
    validator.set_answer("tok", Answer::json(503, "{}"));
    let stale = eventually(Duration::from_secs(10), || async {
        let mut client = client.clone();
        assert_eq!(check_cookie(&mut client, "tok").await, allow_as("alice"));
        let text = metrics_text(&running).await;
        (metric(
            &text,
            "session_authz_cache_lookups_total{outcome=\"stale\"}",
        ) > 0.0)
            .then_some(())
    })
    .await;
    assert!(stale.is_some(), "never allowed from the stale window");
    // Never-confirmed sessions still fail closed.
    assert_eq!(check_cookie(&mut client, "other").await, deny_401());
    validator.set_default(Answer::json(503, "{}"));
    assert_eq!(check_cookie(&mut client, "stranger").await, deny_503());

    // Revocation wins over the stale window.
    validator.set_answer("tok", Answer::json(401, r#"{"valid":false}"#));
    assert_eq!(check_cookie(&mut client, "tok").await, deny_401());
    // Once the cached denial is gone, the validator's error is not turned into a stale allow.
    validator.set_answer("tok", Answer::json(503, "{}"));
    let failing = eventually(Duration::from_secs(10), || async {
        let mut client = client.clone();
        let outcome = check_cookie(&mut client, "tok").await;
        assert_ne!(outcome, allow_as("alice"), "a revoked session came back");
        (outcome == deny_503()).then_some(())
    })
    .await;
    assert!(failing.is_some(), "the negative entry never expired");

    let text = metrics_text(&running).await;
    assert_eq!(
        metric(
            &text,
            "session_authz_cache_lookups_total{outcome=\"stale\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "session_authz_decisions_total{outcome=\"allow\",reason=\"stale_session\"}"
        ),
        1.0
    );
    running.shutdown().await.unwrap();
}

/// A cached answer, and one served in the stale-if-error window, carry the validator's whole
/// identity (never only the user), and the metadata tells where the answer came from.
#[tokio::test]
async fn cached_and_stale_answers_keep_the_whole_identity() {
    let full = || {
        Answer::json(
            200,
            r#"{"valid":true,"user":"alice","roles":["admin","viewer"],"email":"alice@example.com"}"#,
        )
    };
    let expected = allow_with(
        Some("alice"),
        Some("admin,viewer"),
        Some("alice@example.com"),
    );
    let validator = FakeValidator::start(vec![("tok", full())]).await;
    let running = start_service(&[
        ("aimenu_url", &validator.url()),
        ("cache_ttl", "100ms"),
        ("stale_if_error", "30s"),
    ])
    .await;
    let client = client(&running).await;
    let check = || {
        let mut client = client.clone();
        async move {
            let request = check_request(&[("cookie", "session=tok")]);
            client.check(request).await.unwrap().into_inner()
        }
    };
    let first = check().await;
    assert_eq!(outcome(&first), expected);
    assert_eq!(
        metadata(&first),
        [
            "cache=miss",
            "reason=valid_session",
            "roles=admin,viewer",
            "user=alice"
        ]
    );

    // From the cache, within its 100 ms: the same identity. A slow machine may miss the
    // window, so look for one hit among a few tries rather than assume the first is one.
    let hit = eventually(Duration::from_secs(10), || async {
        let response = check().await;
        assert_eq!(outcome(&response), expected);
        metadata(&response)
            .contains(&"cache=hit".to_owned())
            .then_some(metadata(&response))
    })
    .await
    .expect("never a cache hit");
    assert!(hit.contains(&"roles=admin,viewer".to_owned()), "{hit:?}");

    // The validator fails: once the entry is gone, the stale window answers with the whole
    // identity too.
    validator.set_answer("tok", Answer::json(503, "{}"));
    let stale = eventually(Duration::from_secs(10), || async {
        let response = check().await;
        assert_eq!(outcome(&response), expected);
        metadata(&response)
            .contains(&"cache=stale".to_owned())
            .then_some(metadata(&response))
    })
    .await
    .expect("never allowed from the stale window");
    assert_eq!(
        stale,
        [
            "cache=stale",
            "reason=stale_session",
            "roles=admin,viewer",
            "user=alice"
        ]
    );
    running.shutdown().await.unwrap();
}
