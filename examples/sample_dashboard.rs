//! A stand-in for the seed guide's "Serverless Proxy": an admin dashboard under `/admin` and
//! `/api/admin` that greets the user Envoy names in `x-auth-user` with the roles in
//! `x-auth-roles`, and public pages elsewhere. It trusts those headers only because Envoy and
//! session-authz in front of it set or strip them on every request.
//!
//! With `--jwks URL --audience AUD` it trusts no header: an admin page needs a signed
//! `x-auth-assertion` that verifies against session-authz's JWKS (signature, `aud`, `exp`), and
//! the page says whom it names; anything else is a 401.
//!
//! `cargo run --example sample_dashboard -- [ADDR] [--jwks URL --audience AUD]`
//! (default `127.0.0.1:8000`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use tokio::sync::RwLock;

/// Verifies assertions against the JWKS at `url`, fetched again when a `kid` is new (a key
/// added for rotation).
struct Verifier {
    url: String,
    audience: String,
    client: reqwest::Client,
    keys: RwLock<JwkSet>,
}

/// What the dashboard reads from a verified assertion.
#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    aud: String,
    exp: u64,
}

impl Verifier {
    async fn fetch(&self) -> Result<(), String> {
        let text = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| format!("cannot fetch the JWKS: {err}"))?
            .text()
            .await
            .map_err(|err| format!("cannot read the JWKS: {err}"))?;
        let keys = serde_json::from_str(&text).map_err(|err| format!("bad JWKS: {err}"))?;
        *self.keys.write().await = keys;
        Ok(())
    }

    async fn key(&self, kid: &str) -> Option<DecodingKey> {
        let find = |set: &JwkSet| {
            set.find(kid)
                .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        if let Some(key) = find(&*self.keys.read().await) {
            return Some(key);
        }
        self.fetch().await.ok()?;
        find(&*self.keys.read().await)
    }

    async fn verify(&self, token: Option<&str>) -> Result<Claims, String> {
        let token = token.ok_or("no x-auth-assertion header")?;
        let header = decode_header(token).map_err(|err| format!("not a JWT: {err}"))?;
        // Only the algorithms session-authz signs with; never `none` or an HMAC.
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(format!("algorithm {:?} refused", header.alg));
        }
        let kid = header.kid.ok_or("no kid")?;
        let key = self.key(&kid).await.ok_or("unknown kid")?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|err| format!("refused: {err}"))
    }
}

async fn page(
    State(verifier): State<Option<Arc<Verifier>>>,
    uri: Uri,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let path = uri.path();
    if !(path.starts_with("/admin") || path.starts_with("/api/admin")) {
        return (
            StatusCode::OK,
            format!("Public page {path}: no session needed.\n"),
        );
    }
    let Some(verifier) = verifier else {
        let user = header("x-auth-user").unwrap_or("(no user header)");
        let roles = header("x-auth-roles").unwrap_or("none");
        return (
            StatusCode::OK,
            format!("Admin dashboard: hello, {user}! Your roles: {roles}. ({path})\n"),
        );
    };
    match verifier.verify(header("x-auth-assertion")).await {
        Ok(claims) => {
            let user = claims.sub.as_deref().unwrap_or("(no user)");
            let roles = if claims.roles.is_empty() {
                "none".to_owned()
            } else {
                claims.roles.join(",")
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            (
                StatusCode::OK,
                format!(
                    "Admin dashboard: hello, {user}! Your roles: {roles}. ({path})\n\
                     Identity assertion verified: signature, aud {}, expires in {} s.\n",
                    claims.aud,
                    claims.exp.saturating_sub(now)
                ),
            )
        }
        Err(why) => (
            StatusCode::UNAUTHORIZED,
            format!("Identity assertion not verified ({why}): no admin page.\n"),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:8000".to_owned();
    let (mut jwks, mut audience) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--jwks" => jwks = args.next(),
            "--audience" => audience = args.next(),
            _ => addr = arg,
        }
    }
    let verifier = match (jwks, audience) {
        (Some(url), Some(audience)) => Some(Arc::new(Verifier {
            url,
            audience,
            client: reqwest::Client::new(),
            keys: RwLock::new(JwkSet { keys: Vec::new() }),
        })),
        (None, None) => None,
        _ => return Err("--jwks and --audience go together".into()),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("sample dashboard on http://{}", listener.local_addr()?);
    let app = Router::new().fallback(page).with_state(verifier);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
