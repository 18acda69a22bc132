//! Captures the spans and events coredb emits through `tracing`, with their fields, in memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// A span as it was when last seen: its fields, including those recorded after it began.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    pub name: &'static str,
    pub target: String,
    /// The names of the spans it is nested in, innermost first.
    pub ancestors: Vec<&'static str>,
    pub fields: BTreeMap<String, String>,
}

impl CapturedSpan {
    /// The field's value as text (strings without quotes).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// An event (a log line) with its fields; `message` holds the text.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    pub level: tracing::Level,
    pub fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Store {
    spans: Vec<CapturedSpan>,
    events: Vec<CapturedEvent>,
}

/// Everything captured so far; clone it into a subscriber with [`Spans::subscriber`].
#[derive(Clone, Default)]
pub struct Spans(Arc<Mutex<Store>>);

/// Where a span's record is in the store.
struct Index(usize);

impl Spans {
    /// A subscriber that records every span and event here (all levels).
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync {
        tracing_subscriber::registry().with(self.clone())
    }

    /// The spans named `name`, in the order they began.
    pub fn named(&self, name: &str) -> Vec<CapturedSpan> {
        let store = self.0.lock().unwrap();
        store
            .spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// Every event.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.0.lock().unwrap().events.clone()
    }

    /// Every field of every span and event, as text, for "this never appears" checks.
    pub fn all_text(&self) -> String {
        let store = self.0.lock().unwrap();
        let mut text = String::new();
        for span in &store.spans {
            text.push_str(&format!("{} {:?}\n", span.name, span.fields));
        }
        for event in &store.events {
            text.push_str(&format!("{:?}\n", event.fields));
        }
        text
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for Spans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let span = ctx.span(id).expect("the span is new");
        let ancestors = span.scope().skip(1).map(|s| s.name()).collect();
        let mut store = self.0.lock().unwrap();
        store.spans.push(CapturedSpan {
            name: attrs.metadata().name(),
            target: attrs.metadata().target().to_string(),
            ancestors,
            fields,
        });
        span.extensions_mut().insert(Index(store.spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("the span exists");
        let extensions = span.extensions();
        let Some(Index(i)) = extensions.get::<Index>() else {
            return;
        };
        let mut store = self.0.lock().unwrap();
        values.record(&mut Fields(&mut store.spans[*i].fields));
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().events.push(CapturedEvent {
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// Makes `subscriber` this thread's default, like `tracing::subscriber::set_default`, in a way
/// that also works for spans first met on another thread.
///
/// `tracing` decides once per call site whether anyone listens. While a single dispatcher
/// exists, a call site first met on a thread without a subscriber (coredb's test harness
/// creates databases on a thread of its own) is decided against for good. With a second
/// dispatcher alive, every registered one is asked instead.
pub fn set_default(subscriber: impl Subscriber + Send + Sync) -> tracing::subscriber::DefaultGuard {
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    tracing::subscriber::set_default(subscriber)
}
