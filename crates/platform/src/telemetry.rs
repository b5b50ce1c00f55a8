//! Logging and tracing set-up: structured logs (text in development, JSON with
//! `LOG_FORMAT=json`), `RUST_LOG` filtering, W3C trace context propagation, and
//! OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces variant) is set.
//!
//! Every log line written inside a span carries that span's OpenTelemetry
//! `trace_id` and `span_id` (text: ` trace_id=… span_id=…` at the end of the
//! line; JSON: top-level `"trace_id"` and `"span_id"` members), so a line
//! leads to its trace and a trace to its lines.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{self, Env};

/// Keeps the tracer provider alive; dropping it flushes pending spans.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn otlp_configured(env: &Env) -> bool {
    env.get(&settings::OTEL_EXPORTER_OTLP_ENDPOINT).is_some()
        || env
            .get(&settings::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
            .is_some()
}

/// Installs the global subscriber and propagator for `service`. Call once, from
/// inside the Tokio runtime (the OTLP exporter needs it).
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let env = Env::process();
    let service_name = env
        .get(&settings::OTEL_SERVICE_NAME)
        .unwrap_or_else(|| service.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if otlp_configured(&env) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    // Without an exporter the provider still creates real, sampled spans, so
    // trace ids exist, reach the logs and propagate to the next service.
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let filter = env
        .get(&settings::RUST_LOG)
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn,sea_orm=warn,h2=warn,hyper=warn"));
    let json = env.string(&settings::LOG_FORMAT) == "json";
    let ansi = !json && std::io::stdout().is_terminal();
    let slot = DispatchSlot::default();
    tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(slot.layer())
        .with(log_layer(json, ansi, slot, std::io::stdout))
        .try_init()?;
    Ok(Telemetry { provider })
}

/// The log layer: text or JSON lines, each inside a span with its OTel ids.
fn log_layer<S, W>(
    json: bool,
    ansi: bool,
    slot: DispatchSlot,
    writer: W,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    if json {
        tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
                json: true,
                slot,
            })
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .with_target(false)
                    .with_ansi(ansi),
                json: false,
                slot,
            })
            .with_writer(writer)
            .boxed()
    }
}

/// The dispatcher the subscriber was installed as, learnt by a layer when it
/// is registered: inside an event's dispatch `tracing::dispatcher::get_default`
/// yields no dispatcher, and the OTel ids live in the OTel layer's span data.
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl DispatchSlot {
    fn layer(&self) -> DispatchSlotLayer {
        DispatchSlotLayer(self.clone())
    }

    /// The OTel trace and span id of the tracing span `id`, when valid.
    fn ids(&self, id: &tracing::span::Id) -> Option<(String, String)> {
        let dispatch: Dispatch = self.0.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

struct DispatchSlotLayer(DispatchSlot);

impl<S: Subscriber> Layer<S> for DispatchSlotLayer {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.0.set(subscriber.downgrade());
    }
}

/// Formats with `inner`, adding the OTel ids of the event's span. Lines
/// outside any span are written by `inner` untouched.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
    slot: DispatchSlot,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        // Look the ids up before `inner` reads the span's extensions.
        let ids = ctx
            .lookup_current()
            .and_then(|span| self.slot.ids(&span.id()));
        let Some((trace_id, span_id)) = ids else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json {
            match line.strip_prefix('{') {
                Some(rest) => write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
                ),
                None => writer.write_str(&line),
            }
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
        }
    }
}

/// The current span's trace id, as the 32 hex digits W3C uses, if any.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Serializes the current span's context (`traceparent`, `tracestate`).
pub fn current_context_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut map);
    map
}

/// Makes the context serialized in `carrier` the parent of `span`.
pub fn set_parent_from<E: Extractor>(span: &tracing::Span, carrier: &E) {
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's context into any text map.
pub fn inject_current<I: Injector>(carrier: &mut I) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, carrier);
}

/// Adapts NATS headers to the propagator.
pub struct NatsHeaders<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads trace context from NATS headers.
pub struct NatsHeadersRef<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    const PARENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const PARENT_SPAN: &str = "b7ad6b7169203331";

    /// Logs outside a span, inside a span continuing a remote parent, and in
    /// a child of it, with the layers `init` installs.
    fn capture(json: bool) -> Vec<String> {
        let provider = SdkTracerProvider::builder().build();
        let slot = DispatchSlot::default();
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(slot.layer())
            .with(log_layer(json, false, slot, buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("request", route = "/orders");
            let carrier: HashMap<String, String> = [(
                "traceparent".to_owned(),
                format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01"),
            )]
            .into();
            set_parent_from(&span, &carrier);
            span.in_scope(|| {
                tracing::info!(answer = 42, "inside");
                tracing::info_span!("child").in_scope(|| tracing::warn!("nested"));
            });
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        line[start..].split_whitespace().next()
    }

    fn is_span_id(id: &str) -> bool {
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()) && id != "0000000000000000"
    }

    #[test]
    fn text_lines_inside_a_span_carry_its_trace_and_span_id() {
        let lines = capture(false);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].contains("outside") && !lines[0].contains("trace_id"));

        assert!(lines[1].contains("inside") && lines[1].contains("answer=42"));
        assert_eq!(
            field(&lines[1], "trace_id"),
            Some(PARENT_TRACE),
            "{}",
            lines[1]
        );
        let request_span = field(&lines[1], "span_id").unwrap();
        assert!(is_span_id(request_span), "{}", lines[1]);
        assert_ne!(
            request_span, PARENT_SPAN,
            "the span is a child of the remote one"
        );

        assert!(lines[2].contains("nested"));
        assert_eq!(
            field(&lines[2], "trace_id"),
            Some(PARENT_TRACE),
            "{}",
            lines[2]
        );
        let child_span = field(&lines[2], "span_id").unwrap();
        assert!(is_span_id(child_span));
        assert_ne!(child_span, request_span, "the child's own span id");
        assert!(!lines.iter().any(|l| l.contains('\x1b')), "no ANSI codes");
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_trace_and_span_id() {
        let lines = capture(true);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let parsed: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(parsed[0]["fields"]["message"], "outside");
        assert!(parsed[0].get("trace_id").is_none(), "{}", lines[0]);

        assert_eq!(parsed[1]["fields"]["message"], "inside");
        assert_eq!(parsed[1]["fields"]["answer"], 42);
        assert_eq!(parsed[1]["span"]["route"], "/orders");
        assert_eq!(parsed[1]["trace_id"], PARENT_TRACE);
        let request_span = parsed[1]["span_id"].as_str().unwrap();
        assert!(is_span_id(request_span) && request_span != PARENT_SPAN);

        assert_eq!(parsed[2]["trace_id"], PARENT_TRACE);
        let child_span = parsed[2]["span_id"].as_str().unwrap();
        assert!(is_span_id(child_span) && child_span != request_span);
    }
}
