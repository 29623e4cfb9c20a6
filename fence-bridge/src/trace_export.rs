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
//!   - a thread track of its own, named by an `"M"` `thread_name` event, carries the instants
//!     (`ph` `"i"`): `emit`, `enable signaling`, `wait start`/`wait end` (with `timeout_ms` /
//!     `ok`), `signal` (with `error`), `poll fd created`; `args.thread` says which OS thread
//!     emitted each.
//! * **Waits on several fences** (`wait any`/`wait all` start and end) have no single context:
//!   they are instants on the track of the OS thread that waited.
//! * A fence whose signal happened with no earlier event recorded (emitted before the layer was
//!   installed) shows only its `signal` instant; one still pending when the trace is written has
//!   an unterminated slice with `"pending": true`.
//!
//! Recording costs one short mutex-protected `Vec` push per event. Nothing is written until you
//! call [`ChromeTrace::write_json`] (or [`ChromeTrace::save`]).
//!
//! # Process and thread ids
//!
//! Every `pid` and `tid` in the trace is a small positive number that fits in an `i32`: Perfetto
//! reads them as 32-bit (a larger `tid` is dropped and the event lands on the process's main
//! thread, `tid` = `pid`, where the tracks of all contexts merge), and other viewers expect
//! the same. Two processes appear:
//!
//! * the real one (`pid` = [`std::process::id`], named `fence-bridge`), whose threads are the OS
//!   threads that emitted events, numbered 1, 2, ... in the order they first did (named
//!   `<thread name> (thread N)`);
//! * one that holds the fence contexts, named `fence contexts (pid P)`, with the synthetic `pid`
//!   1,000,000,000 + P. Linux pids never exceed 2^22 (`PID_MAX_LIMIT`), so it cannot be a real
//!   process's, and it still fits in an `i32`. Its threads are the contexts, `tid` 1, 2, ... in
//!   the order of their context numbers (which can be any `u64`, so they are not used as tids),
//!   each named after its timeline. No `tid` equals the `pid`: no context passes for a main
//!   thread. The fence slices carry their context's `pid`/`tid` too, but their `id`s are
//!   global: Perfetto shows them under *Global Legacy Events*, and the contexts' thread tracks
//!   under this process.
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

/// The synthetic process of the fence contexts has `pid` `CONTEXT_PID_BASE` + the real pid:
/// above any Linux pid (at most 2^22), below `i32::MAX` (see the module docs).
const CONTEXT_PID_BASE: u32 = 1_000_000_000;

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
        // Linux pids stay below 2^22; the modulo keeps the sum below i32::MAX anywhere else.
        let ctx_pid = CONTEXT_PID_BASE + pid % CONTEXT_PID_BASE;
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
        // Context → its tid in the contexts' process: 1, 2, ... by context number.
        let mut contexts: Vec<u64> = records
            .iter()
            .filter_map(|r| r.get_u64("context"))
            .collect();
        contexts.sort_unstable();
        contexts.dedup();
        let tids: HashMap<u64, usize> = contexts
            .iter()
            .enumerate()
            .map(|(i, &ctx)| (ctx, i + 1))
            .collect();
        if !contexts.is_empty() {
            json.metadata(format_args!(
                r#"{{"name":"process_name","ph":"M","pid":{ctx_pid},"tid":0,"args":{{"name":{}}}}}"#,
                quote(&format!("fence contexts (pid {pid})"))
            ));
        }
        for &ctx in &contexts {
            json.metadata(format_args!(
                r#"{{"name":"thread_name","ph":"M","pid":{ctx_pid},"tid":{},"args":{{"name":{}}}}}"#,
                tids[&ctx],
                quote(&label(&labels, ctx))
            ));
        }
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
            let tid = tids[&ctx];
            let mut args = r.fields.clone();
            args.push(("thread", Value::U64(r.thread)));
            json.event_at(r.ts_ns, format_args!(
                r#"{{"name":{},"cat":"fence","ph":"i","s":"t","ts":{ts},"pid":{ctx_pid},"tid":{tid},"args":{}}}"#,
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
                        r#"{{"name":{name},"cat":"fence","ph":"b","id":{id},"ts":{},"pid":{ctx_pid},"tid":{tid},"args":{{"context":{ctx},"seqno":{seqno},"from":{}}}}}"#,
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
                        r#"{{"name":{name},"cat":"fence","ph":"e","id":{id},"ts":{ts},"pid":{ctx_pid},"tid":{tid},"args":{}}}"#,
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
                r#"{{"name":{},"cat":"fence","ph":"b","id":{},"ts":{},"pid":{ctx_pid},"tid":{},"args":{{"context":{ctx},"seqno":{seqno},"pending":true}}}}"#,
                quote(&label(&labels, ctx)),
                quote(&format!("{ctx}:{seqno}")),
                ts_us(start),
                tids[&ctx]
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;
    use std::collections::{HashMap, HashSet};

    fn record(ts_ns: i64, thread: u64, message: &str, fields: &[(&'static str, Value)]) -> Record {
        Record {
            ts_ns,
            thread,
            message: message.to_owned(),
            fields: fields.to_vec(),
        }
    }

    /// A fence emitted and signalled on context `ctx` (emit at `t`, signal at `t + 10`), on OS
    /// thread `thread`.
    fn fence_life(ctx: u64, seqno: u64, t: i64, thread: u64) -> [Record; 2] {
        [
            record(
                t,
                thread,
                "fence emit",
                &[
                    ("context", Value::U64(ctx)),
                    ("seqno", Value::U64(seqno)),
                    ("driver", Value::Str("drm_syncobj".into())),
                    ("timeline", Value::Str(format!("syncobj{ctx}"))),
                ],
            ),
            record(
                t + 10,
                thread,
                "fence signal",
                &[("context", Value::U64(ctx)), ("seqno", Value::U64(seqno))],
            ),
        ]
    }

    /// A trace of fences on contexts 1, 2 and a kernel-sized context id, plus one multi-fence
    /// instant on an OS thread, parsed back.
    fn sample() -> Vec<Json> {
        let big = (1u64 << 40) + 7;
        let mut records = Vec::new();
        records.extend(fence_life(1, 1, 1_000, 1));
        records.extend(fence_life(2, 1, 2_000, 2));
        records.extend(fence_life(big, 5, 3_000, 1));
        records.extend(fence_life(1, 3, 4_000, 2));
        records.push(record(
            5_000,
            1,
            "fence wait any start",
            &[("count", Value::U64(2))],
        ));
        let trace = ChromeTrace {
            shared: Arc::new(Mutex::new(Recording {
                records,
                threads: HashMap::from([(1, "main".to_owned()), (2, "worker".to_owned())]),
            })),
        };
        let json: Json = serde_json::from_str(&trace.to_json()).expect("valid JSON");
        json["traceEvents"].as_array().unwrap().clone()
    }

    fn pid_tid(e: &Json) -> (i64, i64) {
        (e["pid"].as_i64().unwrap(), e["tid"].as_i64().unwrap())
    }

    #[test]
    fn every_pid_and_tid_fits_in_32_bits() {
        // Perfetto drops a tid beyond u32 (the event lands on the process's main thread, tid =
        // pid); chrome://tracing-style viewers want small positive ints too.
        for e in sample() {
            for key in ["pid", "tid"] {
                let v = e[key]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{key} not an int: {e}"));
                assert!(
                    (0..=i64::from(i32::MAX)).contains(&v),
                    "{key} {v} out of i32: {e}"
                );
            }
        }
    }

    #[test]
    fn each_context_has_its_own_named_thread_track() {
        let events = sample();
        let pid = i64::from(std::process::id());
        let thread_names: HashMap<(i64, i64), &str> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
            .map(|e| (pid_tid(e), e["args"]["name"].as_str().unwrap()))
            .collect();
        let process_names: HashMap<i64, &str> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
            .map(|e| {
                (
                    e["pid"].as_i64().unwrap(),
                    e["args"]["name"].as_str().unwrap(),
                )
            })
            .collect();

        // Context → the (pid, tid) of its instants: one pair per context, distinct.
        let mut tracks: HashMap<u64, HashSet<(i64, i64)>> = HashMap::new();
        for e in events.iter().filter(|e| e["ph"] == "i") {
            if let Some(ctx) = e["args"]["context"].as_u64() {
                tracks.entry(ctx).or_default().insert(pid_tid(e));
            }
        }
        assert_eq!(tracks.len(), 3, "{tracks:?}");
        let mut seen = HashSet::new();
        for (ctx, pairs) in &tracks {
            assert_eq!(pairs.len(), 1, "ctx {ctx} spread over {pairs:?}");
            let pair = *pairs.iter().next().unwrap();
            assert!(seen.insert(pair), "ctx {ctx} shares its track {pair:?}");
            // Named after its timeline; not a process's main thread (tid = pid); not one of the
            // OS threads' tracks.
            assert_eq!(
                thread_names.get(&pair).copied(),
                Some(format!("drm_syncobj:syncobj{ctx} (ctx {ctx})").as_str())
            );
            assert_ne!(pair.0, pair.1, "ctx {ctx} would show as a main thread");
            assert!(!thread_names[&pair].contains("(thread "));
            assert!(
                process_names.contains_key(&pair.0),
                "no process_name for {pair:?}"
            );
            // The fence slices of the context sit with it.
            for e in events.iter().filter(|e| {
                matches!(e["ph"].as_str(), Some("b" | "e"))
                    && e["id"].as_str().unwrap().starts_with(&format!("{ctx}:"))
            }) {
                assert_eq!(pid_tid(e), pair, "{e}");
            }
        }

        // The OS threads keep their own tracks in the real process.
        let wait = events
            .iter()
            .find(|e| e["name"] == "wait any start")
            .unwrap();
        assert_eq!(pid_tid(wait), (pid, 1));
        assert_eq!(thread_names[&(pid, 1)], "main (thread 1)");
        assert_eq!(thread_names[&(pid, 2)], "worker (thread 2)");
        assert_eq!(process_names[&pid], "fence-bridge");
        assert!(!seen.contains(&(pid, 1)) && !seen.contains(&(pid, 2)));

        // Every event's (pid, tid) is named.
        for e in events.iter().filter(|e| e["ph"] != "M") {
            assert!(thread_names.contains_key(&pid_tid(e)), "unnamed track: {e}");
        }
    }
}
