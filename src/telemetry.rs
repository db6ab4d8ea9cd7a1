//! Log set-up: text or JSON lines, filtered by `RUST_LOG` (default `info`); and, when
//! `otel_endpoint` is set, OpenTelemetry spans exported over OTLP/HTTP.
//!
//! The spans (one per Check, a child per validator call) have their own target, [`SPAN_TARGET`]:
//! only the OpenTelemetry layer sees it, never the log lines. Without that layer no subscriber
//! wants the target, so each span's callsite is disabled once and for all and a Check builds no
//! span at all (`Span::none()`); with it, spans go to a bounded batch queue that a thread of the
//! SDK's own empties, so an export never holds up a Check (a full queue drops spans).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanLimits,
};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{Directive, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use url::Url;

use crate::request::Headers;

/// The target of the exported spans: `RUST_LOG` never shows them, and nothing but the
/// OpenTelemetry layer ever enables them.
pub const SPAN_TARGET: &str = "session_authz_otel";

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans waiting for export at most; more are dropped rather than held in memory.
const MAX_QUEUE: usize = 2048;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where and as what spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtelConfig {
    /// The collector's traces URL: `otel_endpoint` with `/v1/traces` appended.
    pub traces_url: Url,
    pub service_name: String,
    /// The share of traces that start here (no `traceparent`) that are sampled; a caller's
    /// decision is always followed.
    pub sample_ratio: SampleRatio,
}

/// A sampling ratio, 0 to 1 (never NaN, so equality is plain).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRatio(f64);

impl Eq for SampleRatio {}

impl SampleRatio {
    /// `ratio` when it is a ratio (0 to 1).
    pub fn new(ratio: f64) -> Option<Self> {
        (0.0..=1.0).contains(&ratio).then_some(Self(ratio))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl OtelConfig {
    pub(crate) fn from_keys(
        endpoint: Option<Url>,
        service_name: String,
        sample_ratio: SampleRatio,
    ) -> Option<Self> {
        Some(Self {
            traces_url: Self::traces_url(endpoint?),
            service_name,
            sample_ratio,
        })
    }

    /// `/v1/traces` under the collector's base URL, as the OTLP specification appends it to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a path prefix is kept.
    pub(crate) fn traces_url(mut base: Url) -> Url {
        let path = format!("{}/v1/traces", base.path().trim_end_matches('/'));
        base.set_path(&path);
        base
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("otel_endpoint is set, but the span exporter cannot start: {0}")]
pub struct TelemetryError(String);

/// The installed telemetry; [`Telemetry::shutdown`] sends what is still queued.
#[derive(Debug)]
#[must_use = "shut it down, or queued spans are lost at exit"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (waiting up to the SDK's shutdown timeout, 5 s) and stops
    /// the exporter. Call it outside the async runtime: it blocks.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                tracing::warn!("OpenTelemetry: spans not flushed at shutdown: {err}");
            }
        }
    }
}

/// Installs the global subscriber (a second call installs nothing); with `otel`, the
/// OpenTelemetry layer and its exporter too. Call it outside the async runtime: the exporter's
/// blocking HTTP client must not be built on it.
pub fn init(format: LogFormat, otel: Option<&OtelConfig>) -> Result<Telemetry, TelemetryError> {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Even RUST_LOG=trace never prints the spans: they are for the collector only.
    if let Ok(off) = format!("{SPAN_TARGET}=off").parse::<Directive>() {
        filter = filter.add_directive(off);
    }
    let color = use_color(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(color)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let provider = otel.map(provider).transpose()?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("session-authz"))
            // Only what the spans say: no thread, source location, level or busy/idle times.
            .with_threads(false)
            .with_location(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // The validator's traceparent is taken from the span itself, never from the
            // current context: no need to make it current on every poll.
            .with_context_activation(false)
            .with_filter(Targets::new().with_target(SPAN_TARGET, tracing::Level::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    Ok(Telemetry { provider })
}

/// Builds the export pipeline and shuts it down again, sending nothing: `--check-config` runs
/// it so that what it accepts also starts (the exporter has its own rules for a URL, and reads
/// `OTEL_EXPORTER_OTLP_COMPRESSION`). Call it outside the async runtime, like [`init`].
pub fn check(otel: &OtelConfig) -> Result<(), TelemetryError> {
    provider(otel)?
        .shutdown()
        .map_err(|err| TelemetryError(err.to_string()))
}

/// The SDK pipeline: every setting explicit, so that no `OTEL_*` variable changes it behind the
/// configuration's back. The exporter still reads two (README, "OpenTelemetry"):
/// `OTEL_EXPORTER_OTLP_HEADERS`, the specification's place for a collector's credentials, and
/// `OTEL_EXPORTER_OTLP_COMPRESSION`, which it offers no way to set to "none".
fn provider(otel: &OtelConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(otel.traces_url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| TelemetryError(err.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(MAX_QUEUE)
        .with_max_export_batch_size(512)
        .with_scheduled_delay(Duration::from_secs(5))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        // Envoy (or whoever sent `traceparent`) decides whether a trace is sampled; a Check
        // without one starts a trace sampled at `otel_sample_ratio`.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otel.sample_ratio.get(),
        ))))
        .with_span_limits(SpanLimits::default())
        .with_resource(
            Resource::builder_empty()
                .with_service_name(otel.service_name.clone())
                .build(),
        )
        .build())
}

/// The W3C trace context a request carries (`traceparent`, `tracestate`), for a Check's span
/// to continue; an empty context when there is none or it is malformed.
pub fn incoming_context(headers: Headers<'_>) -> Context {
    TraceContextPropagator::new().extract(&Incoming(headers))
}

/// Makes `span` a child of the trace `headers` carry. Only for an enabled span: the
/// extraction is work that tracing off must not do.
pub fn continue_trace(span: &tracing::Span, headers: Headers<'_>) {
    // Fails only when the span is disabled or already started; neither is worth a word.
    let _ = span.set_parent(incoming_context(headers));
}

/// The `traceparent` (and `tracestate`, when there is one) that make a callee's spans children
/// of `span`.
pub fn outgoing_headers(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let mut headers = Outgoing(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&span.context(), &mut headers);
    headers.0
}

/// Request headers as the core sees them, for the propagator to read.
struct Incoming<'a>(Headers<'a>);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let mut values = self.0.all(key);
        let value = values.next()?;
        // Two `traceparent`s: which trace is this? Neither (W3C trace context says so too).
        if values.next().is_some() {
            return None;
        }
        std::str::from_utf8(value).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.pairs().iter().map(|(name, _)| *name).collect()
    }
}

/// The headers the propagator writes, with the names it uses (`traceparent`, `tracestate`).
struct Outgoing(Vec<(&'static str, String)>);

impl Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            // The W3C propagator writes no other header.
            _ => return,
        };
        self.0.push((name, value));
    }
}

/// Colour only for a person at a terminal: a file, a pipe or a container's log collector
/// would store the escape codes. `NO_COLOR` set to anything but empty turns it off
/// (<https://no-color.org>).
fn use_color(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsString::new())));
        assert!(!use_color(true, Some(OsString::from("1"))));
        assert!(!use_color(false, None));
        assert!(!use_color(false, Some(OsString::from("1"))));
    }

    #[test]
    fn incoming_trace_context_is_read_once_and_exactly() {
        use opentelemetry::trace::TraceContextExt;
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let read = |headers: &[(&str, &[u8])]| {
            let cx = incoming_context(Headers::new(headers));
            let span = cx.span();
            let sc = span.span_context();
            sc.is_valid()
                .then(|| format!("{}-{}", sc.trace_id(), sc.span_id()))
        };
        let expected = Some("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".to_owned());
        assert_eq!(read(&[("TraceParent", parent.as_bytes())]), expected);
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[("traceparent", b"00-zz-00f067aa0ba902b7-01")]), None);
        // A repeated traceparent is believed in neither copy.
        assert_eq!(
            read(&[
                ("traceparent", parent.as_bytes()),
                ("traceparent", parent.as_bytes())
            ]),
            None
        );
    }
}
