//! [`ChromeTraceLayer`]: records fence-bridge's `tracing` events and writes them as Chrome
//! trace-event JSON, which [Perfetto](https://ui.perfetto.dev) and `chrome://tracing` open.
//!
//! # What the trace shows
//!
//! The layer listens to the events with target `fence_bridge` (see the crate docs, "Tracing")
//! and ignores every other event. In the written trace (the "Trace Event Format", an object
//! `{"traceEvents": [...], "displayTimeUnit": "ns"}`, timestamps in µs on `CLOCK_MONOTONIC`):
//!
//! * **One track per fence context** (timeline), named `<driver>:<timeline> (ctx N)`:
//!   - each fence is an async slice (`ph` `"b"`/`"e"`, `cat` `"fence"`, one `id` per fence) from
//!     the moment signalling was enabled — or, for a fence nobody waited on, from its emission —
//!     to its signal timestamp. Async slices may overlap (fence 2 is enabled before fence 1
//!     signals); Perfetto stacks them in one track per name, and the name is the timeline's.
//!     `args` hold `seqno`, `context`, and on the end event `status` and `error` (errno);
//!   - a thread track (`tid` per context, named by an `"M"` `thread_name` event) carries the
//!     instants (`ph` `"i"`): `emit`, `enable signaling`, `wait start`/`wait end` (with
//!     `timeout_ms` / `ok`), `signal` (with `error`), `poll fd created`.
//! * **Waits on several fences** (`wait any`/`wait all` start and end) have no single context:
//!   they are instants on the track of the OS thread that waited.
//! * A fence whose signal happened with no earlier event recorded (emitted before the layer was
//!   installed) shows only its `signal` instant; one still pending when the trace is written has
//!   an unterminated slice with `"pending": true`.
//!
//! Recording costs one short mutex-protected `Vec` push per event. Nothing is written until you
//! call [`ChromeTrace::write_json`] (or [`ChromeTrace::save`]).
//!
//! # Example
//!
//! ```
//! use fence_bridge::{ChromeTraceLayer, SwTimeline};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! let layer = ChromeTraceLayer::new();
//! let trace = layer.trace();
//! // In an application: `tracing::subscriber::set_global_default`, so that fences signalled on
//! // other threads are recorded too. `with_default` only covers this thread.
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     let timeline = SwTimeline::new("frames");
//!     let fence = timeline.create_fence(1);
//!     fence.enable_signaling();
//!     timeline.advance(1);
//! });
//! let json = trace.to_json();
//! assert!(json.starts_with("{\"traceEvents\":["));
//! assert!(json.contains(r#""ph":"b""#) && json.contains(r#""ph":"e""#));
//! // trace.save("/tmp/fences.json")?; then open it in ui.perfetto.dev
//! ```

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::fence::TARGET;
use crate::time::Ktime;

/// A `tracing_subscriber` [`Layer`] that records fence-bridge's events for a Chrome/Perfetto
/// trace. See the [module docs](self).
///
/// Get the recording with [`trace`](ChromeTraceLayer::trace) before handing the layer to the
/// subscriber.
#[derive(Debug, Clone, Default)]
pub struct ChromeTraceLayer {
    shared: Arc<Mutex<Recording>>,
}

/// The recording a [`ChromeTraceLayer`] fills; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct ChromeTrace {
    shared: Arc<Mutex<Recording>>,
}

/// One recorded event: what the core emitted, plus when and on which thread.
#[derive(Debug, Clone)]
struct Record {
    /// `CLOCK_MONOTONIC` ns: the event's `timestamp_ns` field if it has one, else when recorded.
    ts_ns: i64,
    thread: u64,
    message: String,
    fields: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    I64(i64),
    U64(u64),
    Bool(bool),
    Str(String),
}

#[derive(Debug, Default)]
struct Recording {
    records: Vec<Record>,
    /// OS thread (our small id) → its name, for the `thread_name` metadata.
    threads: HashMap<u64, String>,
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_ID: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl ChromeTraceLayer {
    /// A layer with an empty recording.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle to this layer's recording, to write it out later.
    pub fn trace(&self) -> ChromeTrace {
        ChromeTrace {
            shared: self.shared.clone(),
        }
    }
}

struct Visitor<'a>(&'a mut Record);

impl Visit for Visitor<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.fields.push((field.name(), Value::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.fields.push((field.name(), Value::U64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.fields.push((field.name(), Value::Bool(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.message = value.to_owned();
        } else {
            self.0
                .fields
                .push((field.name(), Value::Str(value.to_owned())));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.0
                .fields
                .push((field.name(), Value::Str(format!("{value:?}"))));
        }
    }
}

impl<S: Subscriber> Layer<S> for ChromeTraceLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut record = Record {
            ts_ns: Ktime::now().as_nanos(),
            thread: THREAD_ID.with(|id| *id),
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut Visitor(&mut record));
        if let Some(Value::I64(ts)) = record.get("timestamp_ns") {
            record.ts_ns = *ts;
        }
        let mut rec = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        rec.threads.entry(record.thread).or_insert_with(|| {
            let current = std::thread::current();
            current.name().unwrap_or("thread").to_owned()
        });
        rec.records.push(record);
    }
}

impl Record {
    fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn get_u64(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            Value::U64(v) => Some(*v),
            Value::I64(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    fn get_str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Per-fence state while building the trace.
#[derive(Default)]
struct FenceSpan {
    emit_ns: Option<i64>,
    enable_ns: Option<i64>,
}

/// Trace-event JSON, written by hand (the format is small; no serde in the library). Events are
/// collected with their timestamp and written sorted, metadata first.
struct Json {
    events: Vec<(i64, String)>,
}

impl Json {
    fn event_at(&mut self, ts_ns: i64, body: fmt::Arguments<'_>) {
        self.events.push((ts_ns, body.to_string()));
    }

    fn metadata(&mut self, body: fmt::Arguments<'_>) {
        self.event_at(i64::MIN, body);
    }

    fn finish(mut self) -> String {
        self.events.sort_by_key(|(ts, _)| *ts); // stable
        let mut out = String::from("{\"traceEvents\":[");
        for (i, (_, event)) in self.events.iter().enumerate() {
            out.push_str(if i == 0 { "\n" } else { ",\n" });
            out.push_str(event);
        }
        out.push_str("\n],\"displayTimeUnit\":\"ns\"}\n");
        out
    }
}

fn ts_us(ns: i64) -> String {
    // µs with ns precision; Perfetto accepts fractional timestamps.
    format!("{}.{:03}", ns.div_euclid(1000), ns.rem_euclid(1000))
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value_json(v: &Value) -> String {
    match v {
        Value::I64(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::Bool(v) => v.to_string(),
        Value::Str(s) => quote(s),
    }
}

fn args_json(fields: &[(&'static str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", quote(name), value_json(value));
    }
    out.push('}');
    out
}

/// Context tracks get tids above any OS thread's small id.
const CONTEXT_TID_BASE: u64 = 1 << 32;

impl ChromeTrace {
    /// How many fence-bridge events were recorded.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        let mut rec = self.lock();
        rec.records.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The trace as JSON (`{"traceEvents": [...]}`), events in timestamp order.
    pub fn to_json(&self) -> String {
        let rec = self.lock();
        let mut records: Vec<&Record> = rec.records.iter().collect();
        // Stable: events with one timestamp keep the order they were emitted in.
        records.sort_by_key(|r| r.ts_ns);

        let pid = std::process::id();
        let mut json = Json { events: Vec::new() };
        json.metadata(format_args!(
            r#"{{"name":"process_name","ph":"M","pid":{pid},"tid":0,"args":{{"name":"fence-bridge"}}}}"#
        ));
        let mut thread_ids: Vec<_> = rec.threads.iter().collect();
        thread_ids.sort();
        for (tid, name) in thread_ids {
            json.metadata(format_args!(
                r#"{{"name":"thread_name","ph":"M","pid":{pid},"tid":{tid},"args":{{"name":{}}}}}"#,
                quote(&format!("{name} (thread {tid})"))
            ));
        }

        // Context → track label, from the first `fence emit` seen on it.
        let mut labels: HashMap<u64, String> = HashMap::new();
        for r in &records {
            if r.message == "fence emit" {
                if let Some(ctx) = r.get_u64("context") {
                    labels.entry(ctx).or_insert_with(|| {
                        format!(
                            "{}:{} (ctx {ctx})",
                            r.get_str("driver").unwrap_or("?"),
                            r.get_str("timeline").unwrap_or("?")
                        )
                    });
                }
            }
        }
        let label = |labels: &HashMap<u64, String>, ctx: u64| {
            labels
                .get(&ctx)
                .cloned()
                .unwrap_or_else(|| format!("ctx {ctx}"))
        };
        let mut named_contexts = std::collections::HashSet::new();
        let mut spans: HashMap<(u64, u64), FenceSpan> = HashMap::new();

        for r in &records {
            let context = r.get_u64("context");
            let seqno = r.get_u64("seqno");
            let ts = ts_us(r.ts_ns);
            let short = r.message.strip_prefix("fence ").unwrap_or(&r.message);
            let Some(ctx) = context else {
                // No single fence: an instant on the OS thread.
                json.event_at(r.ts_ns, format_args!(
                    r#"{{"name":{},"cat":"fence","ph":"i","s":"t","ts":{ts},"pid":{pid},"tid":{},"args":{}}}"#,
                    quote(short),
                    r.thread,
                    args_json(&r.fields)
                ));
                continue;
            };
            let tid = CONTEXT_TID_BASE + ctx;
            if named_contexts.insert(ctx) {
                json.metadata(format_args!(
                    r#"{{"name":"thread_name","ph":"M","pid":{pid},"tid":{tid},"args":{{"name":{}}}}}"#,
                    quote(&label(&labels, ctx))
                ));
            }
            let mut args = r.fields.clone();
            args.push(("thread", Value::U64(r.thread)));
            json.event_at(r.ts_ns, format_args!(
                r#"{{"name":{},"cat":"fence","ph":"i","s":"t","ts":{ts},"pid":{pid},"tid":{tid},"args":{}}}"#,
                quote(short),
                args_json(&args)
            ));
            let Some(seqno) = seqno else { continue };
            let key = (ctx, seqno);
            let id = quote(&format!("{ctx}:{seqno}"));
            match r.message.as_str() {
                "fence emit" => spans.entry(key).or_default().emit_ns = Some(r.ts_ns),
                "fence enable signaling" => spans.entry(key).or_default().enable_ns = Some(r.ts_ns),
                "fence signal" => {
                    let Some(span) = spans.remove(&key) else {
                        continue;
                    };
                    let Some(start) = span.enable_ns.or(span.emit_ns) else {
                        continue;
                    };
                    let name = quote(&label(&labels, ctx));
                    let error = r.get("error").cloned();
                    let status = if error.is_some() { "error" } else { "signaled" };
                    json.event_at(start, format_args!(
                        r#"{{"name":{name},"cat":"fence","ph":"b","id":{id},"ts":{},"pid":{pid},"tid":{tid},"args":{{"context":{ctx},"seqno":{seqno},"from":{}}}}}"#,
                        ts_us(start),
                        quote(if span.enable_ns.is_some() { "enable signaling" } else { "emit" }),
                    ));
                    let mut end_args = vec![
                        ("status", Value::Str(status.into())),
                        ("duration_ns", Value::I64(r.ts_ns - start)),
                    ];
                    if let Some(error) = error {
                        end_args.push(("error", error));
                    }
                    json.event_at(r.ts_ns, format_args!(
                        r#"{{"name":{name},"cat":"fence","ph":"e","id":{id},"ts":{ts},"pid":{pid},"tid":{tid},"args":{}}}"#,
                        args_json(&end_args)
                    ));
                }
                _ => {}
            }
        }
        // Still pending: an unterminated slice.
        let mut pending: Vec<_> = spans.into_iter().collect();
        pending.sort_by_key(|(key, _)| *key);
        for ((ctx, seqno), span) in pending {
            let Some(start) = span.enable_ns.or(span.emit_ns) else {
                continue;
            };
            json.event_at(start, format_args!(
                r#"{{"name":{},"cat":"fence","ph":"b","id":{},"ts":{},"pid":{pid},"tid":{},"args":{{"context":{ctx},"seqno":{seqno},"pending":true}}}}"#,
                quote(&label(&labels, ctx)),
                quote(&format!("{ctx}:{seqno}")),
                ts_us(start),
                CONTEXT_TID_BASE + ctx
            ));
        }
        json.finish()
    }

    /// Writes [`to_json`](ChromeTrace::to_json) to `w`.
    pub fn write_json(&self, mut w: impl Write) -> io::Result<()> {
        w.write_all(self.to_json().as_bytes())
    }

    /// Writes the trace to the file `path` (created or truncated).
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_json())
    }
}
