//! The signed identity assertion end to end: keys made by Python's `cryptography`, the real
//! session-authz binary behind the real Envoy with the shipped `envoy/envoy.yaml`, and every
//! assertion the app receives verified by an independent JWT library (PyJWT) against the JWKS
//! the ops port serves; then the sample dashboard verifying it itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use session_authz_testkit::check::{check_request, outcome, Outcome};
use session_authz_testkit::envoy::EnvoyProcess;
use session_authz_testkit::http::{raw_get, Upstream};
use session_authz_testkit::process::{example, free_addr, python, root, run, Proc};
use session_authz_testkit::service::{client_at, ServiceProcess};
use session_authz_testkit::validator::{Answer, FakeValidator};
use session_authz_testkit::wait::eventually;

/// A new PKCS#8 PEM key (`ed25519` or `p256`) in `dir`, written by scripts/assertion-key.py.
fn key_file(dir: &Path, kind: &str) -> PathBuf {
    let path = dir.join(format!("{kind}.pem"));
    run(Command::new(python())
        .arg(root().join("scripts/assertion-key.py"))
        .arg(kind)
        .arg(&path));
    path
}

/// PyJWT's verdict on `token` against `jwks` for `audience`: the header's `alg` and the
/// claims, or PyJWT's error.
fn pyjwt_verify(token: &str, jwks: &str, audience: &str) -> Result<(String, Value), String> {
    const SCRIPT: &str = r#"
import json, sys, jwt
token, jwks, audience = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
header = jwt.get_unverified_header(token)
key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
claims = jwt.decode(token, key=key, algorithms=["EdDSA", "ES256"], audience=audience,
                    issuer="session-authz", options={"require": ["exp", "iat", "aud", "iss"]})
print(json.dumps({"alg": header["alg"], "claims": claims}))
"#;
    let out = Command::new(python())
        .args(["-c", SCRIPT, token, jwks, audience])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok((
        verdict["alg"].as_str().unwrap().to_owned(),
        verdict["claims"].clone(),
    ))
}

async fn validator() -> FakeValidator {
    FakeValidator::start(vec![
        (
            "user1-token",
            Answer::json(
                200,
                r#"{"valid":true,"user":"user1","roles":["admin","ops"],"email":"user1@example.com"}"#,
            ),
        ),
        ("nouser-token", Answer::json(200, r#"{"valid":true}"#)),
    ])
    .await
}

fn service(validator: &FakeValidator, keys: &[&Path], extra: &[(&str, &str)]) -> ServiceProcess {
    let url = validator.url();
    let keys = keys
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut env = vec![
        ("AIMENU_URL", url.as_str()),
        ("SESSION_AUTHZ_ASSERTION_KEY", keys.as_str()),
        ("SESSION_AUTHZ_ASSERTION_AUDIENCE", "dashboard"),
    ];
    env.extend_from_slice(extra);
    ServiceProcess::spawn(&env)
}

async fn jwks(authz: &ServiceProcess) -> String {
    let response = raw_get(authz.http_addr, "/.well-known/jwks.json", &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/jwk-set+json")
    );
    response.body
}

#[tokio::test(flavor = "multi_thread")]
async fn pyjwt_verifies_what_the_app_receives_through_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let (ed25519, p256) = (
        key_file(dir.path(), "ed25519"),
        key_file(dir.path(), "p256"),
    );
    let validator = validator().await;
    let app = Upstream::start().await;
    let authz = service(&validator, &[&ed25519, &p256], &[]);
    let envoy = EnvoyProcess::start(authz.grpc_addr, app.addr).await;
    let jwks = jwks(&authz).await;
    let published: Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(published["keys"].as_array().unwrap().len(), 2, "{jwks}");

    // A client's own assertion never reaches the app: replaced on an allow...
    let forged = (
        "X-Auth-Assertion",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
    );
    let allowed = raw_get(
        envoy.listener,
        "/admin",
        &[("Cookie", "session=user1-token"), forged],
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let seen = allowed.upstream_saw("x-auth-assertion");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let token = &seen[0];
    assert_ne!(token, forged.1);
    let (alg, claims) = pyjwt_verify(token, &jwks, "dashboard").unwrap();
    assert_eq!(alg, "EdDSA", "the first key signs");
    assert_eq!(claims["sub"], "user1");
    assert_eq!(claims["roles"], serde_json::json!(["admin", "ops"]));
    assert_eq!(claims["email"], "user1@example.com");
    assert_eq!(claims["iss"], "session-authz");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    // ...and no other audience accepts it.
    let wrong = pyjwt_verify(token, &jwks, "billing").unwrap_err();
    assert!(wrong.contains("InvalidAudienceError"), "{wrong}");

    // A cache hit hands out the same assertion (more than half its life is left).
    let again = raw_get(
        envoy.listener,
        "/admin",
        &[("Cookie", "session=user1-token")],
    )
    .await;
    assert_eq!(&again.upstream_saw("x-auth-assertion"), &seen);

    // A session without a user: an assertion without `sub`.
    let anonymous = raw_get(
        envoy.listener,
        "/admin",
        &[("Cookie", "session=nouser-token")],
    )
    .await;
    let (_, claims) = pyjwt_verify(
        &anonymous.upstream_saw("x-auth-assertion")[0],
        &jwks,
        "dashboard",
    )
    .unwrap();
    assert!(claims.get("sub").is_none(), "{claims}");

    // ...and removed on the public routes, where ext_authz does not run.
    let public = raw_get(envoy.listener, "/", &[forged]).await;
    assert_eq!(public.status, 200, "{public:?}");
    assert!(
        public.upstream_saw_as_cgi("x-auth-assertion").is_empty(),
        "{public:?}"
    );
}

/// The forward-auth door signs alike, here with a P-256 key first (ES256), and the JWKS still
/// carries the key that signed before the rotation.
#[tokio::test(flavor = "multi_thread")]
async fn the_forward_auth_door_sends_an_es256_assertion_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (ed25519, p256) = (
        key_file(dir.path(), "ed25519"),
        key_file(dir.path(), "p256"),
    );
    let validator = validator().await;
    let door = free_addr().to_string();
    let authz = service(
        &validator,
        &[&p256, &ed25519],
        &[("SESSION_AUTHZ_FORWARD_AUTH_ADDR", door.as_str())],
    );
    let jwks = jwks(&authz).await;
    let answer = raw_get(
        authz.forward_auth_addr.unwrap(),
        "/admin",
        &[
            ("Cookie", "session=user1-token"),
            ("X-Auth-Assertion", "forged"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let (alg, claims) = pyjwt_verify(
        answer.header("x-auth-assertion").unwrap(),
        &jwks,
        "dashboard",
    )
    .unwrap();
    assert_eq!(alg, "ES256");
    assert_eq!(claims["sub"], "user1");
    let published: Value = serde_json::from_str(&jwks).unwrap();
    let kinds: Vec<_> = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kty"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["EC", "OKP"]);
}

/// The sample dashboard behind Envoy trusts the assertion it verifies, and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn the_sample_dashboard_verifies_the_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "ed25519");
    let validator = validator().await;
    let authz = service(&validator, &[&key], &[]);
    let dashboard_addr = free_addr();
    let jwks_url = format!("http://{}/.well-known/jwks.json", authz.http_addr);
    let _dashboard = Proc::spawn(
        Command::new(example("sample_dashboard"))
            .arg(dashboard_addr.to_string())
            .args(["--jwks", &jwks_url, "--audience", "dashboard"])
            .stderr(std::process::Stdio::null()),
    );
    session_authz_testkit::wait::listening(dashboard_addr).await;
    let envoy = EnvoyProcess::start(authz.grpc_addr, dashboard_addr).await;

    let page = raw_get(
        envoy.listener,
        "/admin",
        &[("Cookie", "session=user1-token")],
    )
    .await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body.contains("hello, user1! Your roles: admin,ops."),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("Identity assertion verified: signature, aud dashboard, expires in"),
        "{}",
        page.body
    );
    // Straight to the dashboard, past Envoy: headers alone, or a token it did not get from
    // session-authz, open nothing.
    for headers in [
        vec![("x-auth-user", "root"), ("x-auth-roles", "admin")],
        vec![(
            "x-auth-assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
        )],
    ] {
        let direct = raw_get(dashboard_addr, "/admin", &headers).await;
        assert_eq!(direct.status, 401, "{direct:?}");
        assert!(
            direct.body.contains("Identity assertion not verified"),
            "{}",
            direct.body
        );
    }
}

/// A key file replaced where it lies (as kubelet updates a mounted Secret: a new file renamed
/// over the old) is read again without a SIGHUP: the new key signs, and the JWKS follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_file_is_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = dir.path().join("secret");
    std::fs::create_dir(&mounted).unwrap();
    let key = mounted.join("assertion.pem");
    std::fs::copy(key_file(dir.path(), "ed25519"), &key).unwrap();
    let validator = validator().await;
    let authz = service(&validator, &[&key], &[]);
    let before = jwks(&authz).await;
    assert!(before.contains("OKP"), "{before}");

    let rotated = key_file(dir.path(), "p256");
    let staged = mounted.join(".assertion.pem.new");
    std::fs::copy(&rotated, &staged).unwrap();
    std::fs::rename(&staged, &key).unwrap();
    let after = eventually(Duration::from_secs(20), || async {
        let now = jwks(&authz).await;
        (now != before).then_some(now)
    })
    .await
    .expect("the JWKS follows the rotated key file");
    let published: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(published["keys"][0]["kty"], "EC", "{after}");

    let mut client = client_at(authz.grpc_addr).await;
    let response = client
        .check(check_request(&[("cookie", "session=user1-token")]))
        .await
        .unwrap()
        .into_inner();
    let Outcome::Allow { set, .. } = outcome(&response) else {
        panic!("{response:?}")
    };
    let token = set
        .iter()
        .find(|(name, _)| name == "x-auth-assertion")
        .map(|(_, value)| value.clone())
        .unwrap();
    let (alg, claims) = pyjwt_verify(&token, &after, "dashboard").unwrap();
    assert_eq!(alg, "ES256");
    assert_eq!(claims["sub"], "user1");
}
