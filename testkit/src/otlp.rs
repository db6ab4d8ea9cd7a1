//! An OpenTelemetry collector on loopback, as far as a test needs one: it accepts OTLP/HTTP
//! protobuf on `POST /v1/traces`, keeps every body as it came, and decodes the spans.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::oneshot;

use crate::http::serve;

/// The receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    _stop: oneshot::Sender<()>,
}

/// One exported span, with what a test asks of it.
#[derive(Clone, Debug)]
pub struct ExportedSpan {
    pub span: Span,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
}

impl ExportedSpan {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent's span id; empty for a root span.
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// A string attribute's value.
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                other => Some(format!("{other:?}")),
            })
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post({
                let bodies = bodies.clone();
                move |headers: HeaderMap, body: Bytes| {
                    let bodies = bodies.clone();
                    async move {
                        let protobuf = headers
                            .get("content-type")
                            .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
                        if !protobuf || ExportTraceServiceRequest::decode(body.as_ref()).is_err() {
                            return (StatusCode::BAD_REQUEST, Vec::new());
                        }
                        bodies.lock().unwrap().push(body.to_vec());
                        (
                            StatusCode::OK,
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                }
            }),
        );
        let (addr, stop) = serve(app).await;
        Self {
            addr,
            bodies,
            _stop: stop,
        }
    }

    /// The base URL to configure as `otel_endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request body received, as it came.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }

    /// Every span received, in order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let mut spans = Vec::new();
        for body in self.bodies() {
            let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            for resource_spans in request.resource_spans {
                let service_name = resource_spans.resource.as_ref().and_then(|resource| {
                    resource
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                });
                for scope_spans in resource_spans.scope_spans {
                    for span in scope_spans.spans {
                        spans.push(ExportedSpan {
                            span,
                            service_name: service_name.clone(),
                        });
                    }
                }
            }
        }
        spans
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
