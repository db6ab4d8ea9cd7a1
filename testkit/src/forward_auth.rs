//! The forward-auth door in-process: its router driven request by request (no socket, no
//! binary) on a core built from a configuration, as `forward_auth_addr` would serve it.

use axum::body::Body;
use axum::http::Request;
use session_authz::app::Core;
use tower::ServiceExt;

use crate::http::RawResponse;
use crate::service::config;

/// The door and the core behind it.
pub struct InProcessDoor {
    router: axum::Router,
    pub core: Core,
}

impl InProcessDoor {
    /// On the configuration of `toml` with `pairs` over it ([`config`]).
    pub fn new(toml: &str, pairs: &[(&str, &str)]) -> Self {
        let config = config(toml, pairs);
        let core = Core::new(&config).unwrap();
        let router = core.forward_auth_door(&config).router();
        Self { router, core }
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
        let request = request.body(Body::empty()).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
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
