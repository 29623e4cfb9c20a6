//! `ChromeTraceLayer`: a small SwTimeline scenario under the layer, the JSON parsed back and
//! checked: tracks per context (each its own (pid, tid), both in 32 bits, as Perfetto needs),
//! one slice per fence from enable (or emit) to signal, instants for waits, errors in args,
//! timestamp order.
//!
//! One test: the layer is installed as the global subscriber (fences are signalled on other
//! threads), which a process can do only once.

use std::collections::HashMap;
use std::time::Duration;

use fence_bridge::{ChromeTraceLayer, FenceContext, FenceError, SwTimeline};
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;

fn ts(event: &Value) -> f64 {
    event["ts"].as_f64().expect("ts")
}

#[test]
fn scenario_round_trips_as_a_perfetto_trace() {
    let layer = ChromeTraceLayer::new();
    let trace = layer.trace();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    // The scenario: a timeline of three frames and a hand-signalled context.
    let timeline = SwTimeline::new("frames");
    let ctx = timeline.context().as_u64();
    let f1 = timeline.create_fence(1);
    let f2 = timeline.create_fence(2);
    let f3 = timeline.create_fence(3);
    f2.add_callback(|_| {}).unwrap(); // enabled long before it signals
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(5));
            timeline.advance(2);
        });
        f1.wait_timeout(Some(Duration::from_secs(10))).unwrap(); // enabled here, waited on
    });
    let other = FenceContext::new("other");
    let lone = other.create_fence();
    lone.signal_with_error(FenceError::EIO); // never enabled: its slice starts at emit
    let stamps = [
        f1.timestamp().unwrap(),
        f2.timestamp().unwrap(),
        lone.timestamp().unwrap(),
    ];
    drop(timeline); // f3 fails with ENOENT
    assert!(f3.status().is_signaled());
    let f3_stamp = f3.timestamp().unwrap();

    // Parse it back.
    let json: Value = serde_json::from_str(&trace.to_json()).expect("valid JSON");
    let events = json["traceEvents"].as_array().expect("traceEvents array");
    assert!(!events.is_empty());

    // Metadata first, then everything in timestamp order.
    let first_timed = events.iter().position(|e| e["ph"] != "M").unwrap();
    assert!(events[first_timed..].iter().all(|e| e["ph"] != "M"));
    let times: Vec<f64> = events[first_timed..].iter().map(ts).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by ts");
    // Perfetto reads pid and tid as 32-bit numbers (a larger tid puts the event on the main
    // thread's track): every one fits in an i32.
    let pid_tid = |e: &Value| (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
    for e in events {
        assert!(
            e["name"].is_string() && e["ph"].is_string() && e["pid"].is_u64() && e["tid"].is_u64()
        );
        let (pid, tid) = pid_tid(e);
        assert!(pid <= i32::MAX as u64 && tid <= i32::MAX as u64, "{e}");
    }

    // One named track per context: its own (pid, tid), not a main thread (tid = pid).
    let track_names: HashMap<(u64, u64), &str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| (pid_tid(e), e["args"]["name"].as_str().unwrap()))
        .collect();
    let track = |label: &str| {
        let tracks: Vec<_> = track_names.iter().filter(|(_, n)| **n == label).collect();
        assert_eq!(tracks.len(), 1, "{label}: {track_names:?}");
        *tracks[0].0
    };
    let label = format!("sw_sync:frames (ctx {ctx})");
    let other_label = format!("fence_bridge:other (ctx {})", other.id().as_u64());
    let frames_track = track(&label);
    let other_track = track(&other_label);
    assert_ne!(frames_track, other_track);
    for (pid, tid) in [frames_track, other_track] {
        assert_ne!(pid, tid);
        assert_ne!(
            pid,
            u64::from(std::process::id()),
            "contexts have their own process"
        );
    }
    // Each context's instants and slices are on its track.
    for e in events.iter().filter(|e| e["ph"] != "M") {
        let on = |c: u64| {
            e["args"]["context"] == c
                || e["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("{c}:")))
        };
        if on(ctx) {
            assert_eq!(pid_tid(e), frames_track, "{e}");
        } else if on(other.id().as_u64()) {
            assert_eq!(pid_tid(e), other_track, "{e}");
        }
    }

    // One async slice per fence, begin/end paired by id, named after the timeline.
    let slice = |id: &str| {
        let find = |ph: &str| {
            events
                .iter()
                .find(|e| e["ph"] == ph && e["id"] == id)
                .unwrap_or_else(|| panic!("no {ph} event for fence {id}"))
        };
        (find("b"), find("e"))
    };
    for (seqno, stamp) in [(1, stamps[0]), (2, stamps[1]), (3, f3_stamp)] {
        let (b, e) = slice(&format!("{ctx}:{seqno}"));
        assert_eq!(b["name"], label.as_str());
        assert_eq!(e["name"], label.as_str());
        assert_eq!(b["cat"], "fence");
        assert_eq!(b["args"]["seqno"], seqno);
        assert!(ts(b) <= ts(e));
        // The end is the fence's own signal timestamp, in µs.
        assert!((ts(e) - stamp.as_nanos() as f64 / 1000.0).abs() < 0.01);
        let dur = e["args"]["duration_ns"].as_i64().unwrap();
        assert!(((ts(e) - ts(b)) * 1000.0 - dur as f64).abs() < 2.0);
        match seqno {
            1 => {
                assert_eq!(b["args"]["from"], "enable signaling");
                assert_eq!(e["args"]["status"], "signaled");
                assert!(dur >= 1_000_000, "f1 was waited on for ~5 ms, got {dur} ns");
            }
            2 => {
                assert_eq!(b["args"]["from"], "enable signaling");
                assert!(
                    ts(b) <= ts(slice(&format!("{ctx}:1")).0),
                    "f2 enabled before f1"
                );
            }
            _ => {
                assert_eq!(b["args"]["from"], "emit");
                assert_eq!(e["args"]["status"], "error");
                assert_eq!(e["args"]["error"], FenceError::ENOENT.errno());
            }
        }
    }
    let (b, e) = slice(&format!("{}:{}", other.id().as_u64(), lone.seqno()));
    assert_eq!(b["args"]["from"], "emit");
    assert_eq!(e["args"]["error"], FenceError::EIO.errno());
    assert!((ts(e) - stamps[2].as_nanos() as f64 / 1000.0).abs() < 0.01);

    // Instants on the frames track: emit < wait start <= enable <= signal <= wait end for f1.
    let instant = |name: &str, seqno: u64| {
        events
            .iter()
            .find(|e| {
                e["ph"] == "i"
                    && e["name"] == name
                    && pid_tid(e) == frames_track
                    && e["args"]["seqno"] == seqno
            })
            .unwrap_or_else(|| panic!("no {name:?} instant for seqno {seqno}"))
    };
    let (emit, start, enable, signal, end) = (
        instant("emit", 1),
        instant("wait start", 1),
        instant("enable signaling", 1),
        instant("signal", 1),
        instant("wait end", 1),
    );
    assert_eq!(emit["s"], "t");
    assert_eq!(start["args"]["timeout_ms"], 10_000);
    assert_eq!(end["args"]["ok"], true);
    assert!(ts(emit) <= ts(start) && ts(start) <= ts(enable));
    assert!(ts(enable) <= ts(signal) && ts(signal) <= ts(end));
    assert_eq!(
        instant("signal", 3)["args"]["error"],
        FenceError::ENOENT.errno()
    );

    // Nothing from other targets.
    tracing::info!(target: "somebody_else", "not a fence event");
    let again: Value = serde_json::from_str(&trace.to_json()).unwrap();
    assert_eq!(again["traceEvents"].as_array().unwrap().len(), events.len());
}
