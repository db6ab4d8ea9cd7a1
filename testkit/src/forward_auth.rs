//! The forward-auth door in-process ([`InProcessDoor`]: its door driven request by request, no
//! socket, no binary, on a core built from a configuration), and the stack a proxy's test puts
//! behind the proxy ([`ForwardAuthStack`]: the binary with its door, a validator, an app).

use std::net::SocketAddr;

use axum::http::Request;
use http_body_util::BodyExt;
use session_authz::app::Core;
use session_authz::doors::http::Door;

use crate::http::{RawResponse, Upstream};
use crate::process::root;
use crate::service::{config, ServiceProcess};
use crate::validator::{Answer, FakeValidator};

/// The door and the core behind it.
pub struct InProcessDoor {
    door: Door,
    pub core: Core,
}

impl InProcessDoor {
    /// On the configuration of `toml` with `pairs` over it ([`config`]).
    pub fn new(toml: &str, pairs: &[(&str, &str)]) -> Self {
        let config = config(toml, pairs);
        let core = Core::new(&config).unwrap();
        let door = core.forward_auth_door(&config).service();
        Self { door, core }
    }

    /// One forward-auth request: `method` and `target` are the request's own line, `headers`
    /// exactly these (a `Host` only when given).
    pub async fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> RawResponse {
        let mut request = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let response = self.door.forward_auth().answer(&parts).await;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        RawResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The core's metrics as `/metrics` renders them.
    pub fn metrics(&self) -> String {
        self.core.metrics.render(self.core.cache.entry_count())
    }
}

/// What a proxy's forward-auth test runs behind the proxy: a fake validator with `answers`,
/// an app that echoes what it got, and the session-authz binary with its forward-auth door on
/// loopback, reading the shipped TOML `config` (relative to the repository) and `env` over it.
pub struct ForwardAuthStack {
    pub validator: FakeValidator,
    pub app: Upstream,
    pub authz: Option<ServiceProcess>,
    /// The forward-auth door's address.
    pub door: SocketAddr,
}

impl ForwardAuthStack {
    pub async fn start(answers: Vec<(&str, Answer)>, config: &str, env: &[(&str, &str)]) -> Self {
        let validator = FakeValidator::start(answers).await;
        let app = Upstream::start().await;
        let url = validator.url();
        let config = root().join(config);
        let mut all = vec![
            ("AIMENU_URL", url.as_str()),
            ("SESSION_AUTHZ_FORWARD_AUTH_ADDR", "127.0.0.1:0"),
            ("SESSION_AUTHZ_CONFIG", config.to_str().unwrap()),
        ];
        all.extend_from_slice(env);
        let authz = ServiceProcess::spawn(&all);
        let door = authz
            .forward_auth_addr
            .expect("the forward-auth door's address");
        Self {
            validator,
            app,
            authz: Some(authz),
            door,
        }
    }
}
