//! A `tracing` subscriber and a `metrics` recorder that can be switched on and off, so coredb
//! can be measured with and without them in one process: installed once (globally, as a
//! service installs them), then turned on only around the measurements that want them.
//!
//! On: a `tracing-subscriber` registry with its `fmt` layer (writing to nowhere) enabled for
//! coredb's spans and events at INFO, and a Prometheus recorder
//! (`metrics-exporter-prometheus`) receiving coredb's metrics. Off: the subscriber enables
//! nothing and the recorder hands out no-op instruments, which is what a process without them
//! pays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{reload, Layer as _, Registry};

/// Whether the recorder registers real instruments.
static ON: AtomicBool = AtomicBool::new(false);

/// The installed pair.
struct Installed {
    filter: reload::Handle<Targets, Registry>,
    prometheus: PrometheusHandle,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Turns the subscriber and the recorder on or off (installing them on first use). Pools
/// register their instruments when created, so switch before opening one.
pub fn set(on: bool) {
    let installed = INSTALLED.get_or_init(install);
    ON.store(on, Ordering::SeqCst);
    let targets = if on {
        Targets::new().with_target("coredb", tracing::Level::INFO)
    } else {
        Targets::new()
    };
    installed
        .filter
        .reload(targets)
        .expect("the subscriber is installed for good");
    // Keeps the recorder's histograms bounded, as a scrape would.
    installed.prometheus.run_upkeep();
}

fn install() -> Installed {
    let (filter, handle) = reload::Layer::new(Targets::new());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(filter);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(fmt))
        .expect("no other subscriber in the harness");
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::set_global_recorder(Switchable(recorder)).expect("no other recorder in the harness");
    Installed {
        filter: handle,
        prometheus,
    }
}

/// The Prometheus recorder while [`ON`], no-op instruments otherwise.
struct Switchable(PrometheusRecorder);

impl Recorder for Switchable {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if ON.load(Ordering::Relaxed) {
            self.0.register_counter(key, metadata)
        } else {
            Counter::noop()
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if ON.load(Ordering::Relaxed) {
            self.0.register_gauge(key, metadata)
        } else {
            Gauge::noop()
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if ON.load(Ordering::Relaxed) {
            self.0.register_histogram(key, metadata)
        } else {
            Histogram::noop()
        }
    }
}
