//! Whatever configuration `--check-config` accepts also starts and answers a Check: no value
//! passes validation only to panic later (as a 2000-year cache TTL once did inside moka).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use session_authz::app;
use session_authz::config::{flags_from_pairs, Config, KEYS};
use session_authz_testkit::check::*;
use session_authz_testkit::service::*;
use session_authz_testkit::validator::*;

/// Values for one key: typical, at the bounds, past them, and malformed.
fn value_for(key: &'static str) -> BoxedStrategy<(&'static str, String)> {
    let duration = prop_oneof![
        Just("0".to_owned()),
        Just("off".to_owned()),
        Just("1ns".to_owned()),
        Just("24h".to_owned()),
        Just("2000years".to_owned()),
        Just("18446744073709551615s".to_owned()),
        "[0-9]{1,12}(ns|ms|s|m|h|d|years)",
    ];
    let count = prop_oneof![
        Just("1".to_owned()),
        Just("65536".to_owned()),
        Just("10000000".to_owned()),
        Just("2305843009213693951".to_owned()),
        Just("18446744073709551615".to_owned()),
        "[0-9]{1,20}",
    ];
    let word = prop_oneof![
        Just("true".to_owned()),
        Just("0.0".to_owned()),
        Just("no".to_owned()),
        Just("deny".to_owned()),
        Just("grpc-error".to_owned()),
        Just("json".to_owned()),
        Just("x-user".to_owned()),
        Just("host".to_owned()),
        "[a-zA-Z0-9_-]{0,12}",
    ];
    let origins = prop_oneof![
        Just("https://admin.example".to_owned()),
        Just("https://admin.example, http://[::1]:3000".to_owned()),
        Just("https://Admin.example".to_owned()),
        Just(",".to_owned()),
        "(https?://[a-z0-9.-]{0,12}(:[0-9]{1,6})?/?,?){1,3}",
    ];
    let endpoints = prop_oneof![
        Just("http://127.0.0.1:4318".to_owned()),
        Just("https://otlp.example/prefix/".to_owned()),
        Just("http://[::1]:4318".to_owned()),
        Just("http://user:pw@collector".to_owned()),
        Just("http://collector:99999".to_owned()),
        "https?://[a-zA-Z0-9.%_~-]{0,12}(:[0-9]{1,6})?(/[a-zA-Z0-9%._~ -]{0,8}){0,2}",
    ];
    let values = match key {
        "validator_timeout" | "shutdown_grace" | "drain_delay" | "cache_ttl"
        | "cache_negative_ttl" | "stale_if_error" => duration.boxed(),
        "cache_max_entries" | "validator_max_concurrency" | "validator_max_queue" => count.boxed(),
        "csrf_trusted_origins" => origins.boxed(),
        "otel_endpoint" => endpoints.boxed(),
        _ => word.boxed(),
    };
    values.prop_map(move |value| (key, value)).boxed()
}

fn settings() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    // Every key but those that name the test's own addresses, validator and files, and those
    // only a TOML file sets (their own tests load files).
    let keys: Vec<&'static str> = KEYS
        .iter()
        .filter(|key| !key.toml_only)
        .map(|key| key.name)
        .filter(|key| {
            !matches!(
                *key,
                "aimenu_url"
                    | "grpc_addr"
                    | "http_addr"
                    | "tls_cert"
                    | "tls_key"
                    | "tls_client_ca"
                    | "validator_ca"
            )
        })
        .collect();
    proptest::sample::subsequence(keys, 1..=3)
        .prop_flat_map(|keys| keys.into_iter().map(value_for).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn accepted_config_starts_and_answers(settings in settings()) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let validator = FakeValidator::one_user("token-1", "alice").await;
            let url = validator.url();
            let mut pairs: Vec<(&str, &str)> =
                settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
            pairs.extend([
                ("aimenu_url", url.as_str()),
                ("grpc_addr", "127.0.0.1:0"),
                ("http_addr", "127.0.0.1:0"),
            ]);
            let figment = figment::Figment::new().merge(flags_from_pairs(&pairs));
            // Rejected: fine, as long as it is rejected here, before anything starts.
            let Ok(config) = Config::from_figment(&figment) else {
                return;
            };
            // The span exporter is built before the runtime starts, and must be too.
            if let Some(otel) = &config.otel {
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| session_authz::telemetry::check(otel))
                        .join()
                        .unwrap()
                })
                .expect("an accepted otel_endpoint starts the exporter");
            }
            let running = app::start(&config).await.expect("an accepted config starts");
            let mut client = client(&running).await;
            for _ in 0..2 {
                client
                    .check(check_request(&[("cookie", "session=token-1")]))
                    .await
                    .expect("a Check is answered");
            }
            // The runtime's end stops the servers; a long drain_delay would only slow this down.
            drop(running);
        });
    }
}
