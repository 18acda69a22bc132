//! What the service reports: coredb's metrics as Prometheus text on `/metrics`, and its spans
//! (coredb's and the service's) to OpenTelemetry when `OTEL_EXPORTER_OTLP_ENDPOINT` names a
//! collector. coredb itself exports nothing; the service chooses the exporters.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;

/// Histogram buckets for durations in seconds: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder, installed as the `metrics` recorder on first use. Call it
/// before creating the database manager: a pool registers its instruments with the recorder
/// installed when it is created.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .with_recommended_naming(true)
            .set_buckets_for_metric(Matcher::Suffix("time".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("duration".into()), SECONDS_BUCKETS)
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            eprintln!(
                "another metrics recorder is installed; /metrics shows only what reaches this one"
            );
        }
        handle
    })
}

/// `GET /metrics`: every metric in Prometheus' text format.
pub async fn metrics() -> impl IntoResponse {
    let handle = prometheus();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// A tracer provider that sends spans to `exporter` in batches, as the service `prepaid`.
pub fn tracer_provider(exporter: impl SpanExporter + 'static) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("prepaid").build())
        .build()
}

/// The `tracing` layer that turns spans into OpenTelemetry spans through `provider`: coredb's
/// statement spans become client spans named after the operation (`SELECT`, ...).
pub fn otel_layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("prepaid"))
}

/// A provider exporting over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
/// exporter reads that variable and the other `OTEL_EXPORTER_OTLP_*` ones itself); `None`
/// otherwise. Blocking: call it outside the async runtime's threads.
///
/// # Errors
/// When the exporter cannot be built from those variables.
pub fn otlp_from_env() -> Result<Option<SdkTracerProvider>, Box<dyn std::error::Error + Send + Sync>>
{
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    Ok(Some(tracer_provider(exporter)))
}
