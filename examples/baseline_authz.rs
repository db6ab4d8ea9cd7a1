//! The benchmark's ceilings. By default, a do-nothing `envoy.service.auth.v3.Authorization`
//! server that allows every Check (and reports SERVING health, so Envoy's health check passes).
//! With `--call URL` it makes one pooled HTTP GET per Check first: the "ceiling + one pooled HTTP
//! call" baseline. With `--http` it is instead a do-nothing forward-auth endpoint: a plain hyper
//! service answering 200 with no header and no body to every request, served by the
//! forward-auth door's own accept loop and limits, so that only the answer differs from the
//! door's. `--http-identity USER ROLES EMAIL` is the same endpoint sending, from values made once
//! at start-up, the headers the door's allow of that identity carries (the three identity
//! headers and `x-envoy-auth-headers-to-remove: x-auth-assertion`): what answering costs hyper,
//! without deciding anything. With `--mutations USER ROLES EMAIL`
//! every Check gets the allow session-authz gives a cache hit of a session with that identity:
//! the three identity headers set (overwrite, never append) and the dynamic metadata (reason,
//! cache, user, roles). Built here, not by session-authz's code, so that the ceiling does not
//! move with what it measures; the benchmark checks at start-up that the two answers are equal.
//!
//! `cargo run --release --example baseline_authz -- ADDR [--call URL | --http |
//! --http-identity USER ROLES EMAIL | --mutations USER ROLES EMAIL]`

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
};
use envoy_types::ext_authz::v3::{CheckResponseExt, OkHttpResponseBuilder};
use envoy_types::pb::google::protobuf::{value::Kind, BoolValue, Struct, Value};
use tonic::{Request, Response, Status};

struct Baseline {
    call: Option<(reqwest::Client, String)>,
    /// The answer to every Check, when it carries mutations.
    mutations: Option<CheckResponse>,
}

/// session-authz's allow for a cache hit of this identity, with its default header names.
fn with_mutations(user: &str, roles: &str, email: &str) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    let set = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    ok.add_header("x-auth-user", user, set, false)
        .add_header("x-auth-roles", roles, set, false)
        .add_header("x-auth-email", email, set, false)
        // Signed assertions are off: a client's copy is removed.
        .remove_header("x-auth-assertion");
    let mut ok = ok.build();
    // session-authz also sets the deprecated `append` to false, for older Envoys.
    #[allow(deprecated)]
    for option in &mut ok.headers {
        option.append = Some(BoolValue { value: false });
    }
    let text = |value: &str| Value {
        kind: Some(Kind::StringValue(value.to_owned())),
    };
    let fields = [
        ("reason", "valid_session"),
        ("cache", "hit"),
        ("user", user),
        ("roles", roles),
    ];
    let fields: HashMap<String, Value> = fields
        .into_iter()
        .map(|(key, value)| (key.to_owned(), text(value)))
        .collect();
    let mut response = CheckResponse::with_status(Status::ok(""));
    response.set_http_response(ok);
    response.set_dynamic_metadata(Some(Struct { fields }));
    response
}

/// The headers of the forward-auth door's allow for this identity, with its default names.
fn identity_headers(
    user: &str,
    roles: &str,
    email: &str,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, http::Error> {
    let header = |name: &'static str, value: &str| -> Result<_, http::Error> {
        Ok((
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(value)?,
        ))
    };
    Ok(vec![
        header("x-auth-user", user)?,
        header("x-auth-roles", roles)?,
        header("x-auth-email", email)?,
        // Signed assertions are off: Envoy's http_service is told to remove a client's copy.
        header("x-envoy-auth-headers-to-remove", "x-auth-assertion")?,
    ])
}

#[tonic::async_trait]
impl Authorization for Baseline {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        if let Some((client, url)) = &self.call {
            let response = client
                .get(url)
                .send()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            response
                .bytes()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        if let Some(response) = &self.mutations {
            return Ok(Response::new(response.clone()));
        }
        let mut response = CheckResponse::with_status(Status::ok(""));
        response.set_http_response(OkHttpResponseBuilder::new());
        Ok(Response::new(response))
    }
}

async fn stop() {
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9101".to_owned());
    let mode = args.next();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    if mode.as_deref() == Some("--http") {
        eprintln!(
            "baseline forward-auth endpoint on {}",
            listener.local_addr()?
        );
        // Every request allowed: a plain hyper service, an empty 200 at once, the body never
        // read (as the door never reads it).
        let allow = hyper::service::service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                hyper::body::Bytes,
            >::new()))
        });
        session_authz::listener::serve(listener, allow, session_authz::doors::http::LIMITS, stop())
            .await?;
        return Ok(());
    }
    let rest: Vec<String> = args.collect();
    if let (Some("--http-identity"), [user, roles, email]) = (mode.as_deref(), rest.as_slice()) {
        let headers = identity_headers(user, roles, email)?;
        eprintln!(
            "baseline forward-auth endpoint with headers on {}",
            listener.local_addr()?
        );
        let allow = hyper::service::service_fn(move |_request| {
            let mut response =
                hyper::Response::new(http_body_util::Empty::<hyper::body::Bytes>::new());
            // Each value a reference-counted copy of the one made at start-up.
            for (name, value) in &headers {
                response.headers_mut().insert(name.clone(), value.clone());
            }
            async { Ok::<_, std::convert::Infallible>(response) }
        });
        session_authz::listener::serve(listener, allow, session_authz::doors::http::LIMITS, stop())
            .await?;
        return Ok(());
    }
    let (call, mutations) = match (mode.as_deref(), rest.as_slice()) {
        (Some("--call"), [url]) => (
            Some((reqwest::Client::builder().no_proxy().build()?, url.clone())),
            None,
        ),
        (Some("--mutations"), [user, roles, email]) => {
            (None, Some(with_mutations(user, roles, email)))
        }
        (None, []) => (None, None),
        _ => return Err(format!("unknown arguments: {mode:?} {rest:?}").into()),
    };
    eprintln!("baseline Check server on {}", listener.local_addr()?);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthorizationServer<Baseline>>().await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(Baseline { call, mutations }))
        .serve_with_incoming_shutdown(
            // tonic's own `tcp_nodelay` applies only to sockets it binds itself.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop(),
        )
        .await?;
    Ok(())
}
