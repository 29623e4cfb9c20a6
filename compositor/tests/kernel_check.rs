//! `fencegate check -- CMD` against real clients on a real kernel: the example clients (the
//! built binaries, run by the `fencegate` binary) in the guest of `cargo xtask vm-test`.
//!
//! * each well-behaved client runs clean: exit 0, no finding, and the numbers of the protocol it
//!   uses say what it did;
//! * each `misbehave` scenario produces exactly its finding and exit status (the table in
//!   docs/src/check.md), including the zwp_linux_explicit_synchronization_v1 one;
//! * every report validates against docs/src/check-report.schema.json; `--trace` writes a
//!   Chrome trace with the fences in it.
//!
//! On a machine without /dev/dri each test prints SKIP and passes.

mod common;

use common::check_report::{check, finding_kinds as kinds};
use common::{vgem_card, virtio_gpu_render};
use serde_json::Value;

/// One check at a time: the acquire delays below must not be eaten by a loaded guest.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The devices every client here needs: virtio-gpu (timelines, GBM) and vgem (fences).
fn devices() -> Option<()> {
    virtio_gpu_render()?;
    vgem_card()?;
    Some(())
}

fn n(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

#[test]
fn well_behaved_clients_run_clean() {
    let _serial = serial();
    let Some(()) = devices() else {
        return;
    };
    // linux-drm-syncobj-v1: every acquire point signalled 150 ms after its commit (long enough
    // that fencegate sees each commit before its point signals, even in the slow guest).
    let (status, r) = check(
        &[],
        "syncobj-client",
        &["--frames", "8", "--acquire-delay-ms", "150"],
    );
    assert_eq!((status, kinds(&r)), (0, vec![]), "{r:#}");
    let s = &r["drm_syncobj"];
    assert_eq!(
        n(&r["protocols"]["wp_linux_drm_syncobj_manager_v1"]["binds"]),
        1,
        "{r:#}"
    );
    assert!(n(&s["acquire"]["waited"]) >= 8, "{r:#}");
    // Every wait was measured (from the commit's arrival to the point's signal).
    assert_eq!(
        n(&s["acquire"]["wait_ms"]["count"]),
        n(&s["acquire"]["waited"]),
        "{r:#}"
    );
    assert_eq!(n(&s["acquire"]["never_signalled"]), 0, "{r:#}");
    assert_eq!(n(&s["release_points"]["owed_at_exit"]), 0, "{r:#}");
    assert!(
        n(&s["buffer_reuse"]["reused"]) >= 6,
        "two buffers over eight frames: {r:#}"
    );
    assert_eq!(n(&s["buffer_reuse"]["rewritten_while_held"]), 0, "{r:#}");
    // It waits for each release point before it draws: every reuse comes after the release.
    assert_eq!(
        n(&s["buffer_reuse"]["committed_before_release"]),
        0,
        "{r:#}"
    );
    assert_eq!(
        n(&s["buffer_reuse"]["release_to_reuse_ms"]["count"]),
        n(&s["buffer_reuse"]["reused"]),
        "{r:#}"
    );
    assert!(n(&r["commits"]["dmabuf"]) >= 8, "{r:#}");

    // zwp_linux_explicit_synchronization_v1 with vgem acquire fences.
    let (status, r) = check(
        &[],
        "explicit-sync-v1-client",
        &["--frames", "6", "--acquire-delay-ms", "150"],
    );
    assert_eq!((status, kinds(&r)), (0, vec![]), "{r:#}");
    let v1 = &r["explicit_sync_v1"];
    assert_eq!(
        n(&r["protocols"]["zwp_linux_explicit_synchronization_v1"]["binds"]),
        1
    );
    assert!(n(&v1["acquire"]["waited"]) >= 6, "{r:#}");
    assert!(n(&v1["releases"]["requested"]) >= 6, "{r:#}");
    assert_eq!(
        n(&v1["releases"]["requested"]),
        n(&v1["releases"]["fenced"]) + n(&v1["releases"]["immediate"]),
        "every release answered: {r:#}"
    );
    // Buffer reuse, measured for this protocol too: each buffer written again only once its
    // release came (and its fenced_release fence signalled).
    let reuse = &v1["buffer_reuse"];
    assert!(
        n(&reuse["reused"]) >= 4,
        "two buffers over six frames: {r:#}"
    );
    assert_eq!(n(&reuse["rewritten_while_held"]), 0, "{r:#}");
    assert_eq!(n(&reuse["committed_before_release"]), 0, "{r:#}");
    assert_eq!(
        n(&reuse["release_to_reuse_ms"]["count"]),
        n(&reuse["reused"]),
        "{r:#}"
    );

    // Implicit sync: every buffer still being written (a vgem fence) when committed.
    let (status, r) = check(
        &[],
        "dmabuf-implicit",
        &["--frames", "5", "--busy-ms", "40"],
    );
    assert_eq!((status, kinds(&r)), (0, vec![]), "{r:#}");
    assert!(n(&r["implicit_sync"]["busy_at_commit"]) >= 5, "{r:#}");
    assert_eq!(
        n(&r["protocols"]["wp_linux_drm_syncobj_manager_v1"]["binds"]),
        0
    );

    // shm: nothing to sync, nothing found.
    let (status, r) = check(&[], "shm-client", &["--frames", "4"]);
    assert_eq!((status, kinds(&r)), (0, vec![]), "{r:#}");
    assert!(n(&r["commits"]["shm"]) >= 4, "{r:#}");
}

#[test]
fn each_misbehaviour_gets_its_finding_and_exit_status() {
    let _serial = serial();
    let Some(()) = devices() else {
        return;
    };
    // (scenario, extra arguments, the findings `check` must report: exit 1 iff any).
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "never-signals",
            &["--hold-ms", "1500"],
            &["fence_never_signalled"],
        ),
        ("signals-late", &["--late-ms", "1500"], &[]),
        (
            "rewrites-before-release",
            &[],
            &["buffer_rewritten_while_held"],
        ),
        ("points-without-buffer", &[], &["protocol_error"]),
        ("buffer-without-points", &[], &["protocol_error"]),
        ("acquire-not-before-release", &[], &["protocol_error"]),
        ("not-a-timeline", &[], &["protocol_error"]),
        (
            "destroy-with-points-pending",
            &[],
            &["fence_never_signalled"],
        ),
        (
            "disconnect-with-points-pending",
            &[],
            &["fence_never_signalled"],
        ),
        // Two buffers alternating, each given a new acquire point while the previous commit of
        // it still waits, and every point signalled at once: writes finished on buffers
        // fencegate still holds.
        (
            "flood-commits",
            &["--commits", "30"],
            &["buffer_rewritten_while_held"],
        ),
        // zwp_linux_explicit_synchronization_v1: the buffer on screen written and committed
        // again, with a signalled acquire fence, then with one signalled after the commit.
        (
            "v1-rewrites-before-release",
            &[],
            &["buffer_rewritten_while_held"],
        ),
    ];
    for (scenario, extra, expected) in cases {
        let mut args = vec!["--scenario", scenario];
        args.extend_from_slice(extra);
        let (status, r) = check(&[], "misbehave", &args);
        let expected: Vec<String> = expected.iter().map(|k| k.to_string()).collect();
        assert_eq!(kinds(&r), expected, "{scenario}: {r:#}");
        let want = if expected.is_empty() { 0 } else { 1 };
        assert_eq!(status, want, "{scenario}: exit status: {r:#}");
        // misbehave itself exits 0 when fencegate answered as documented.
        assert_eq!(r["client_exit_status"], 0, "{scenario}: {r:#}");
        if *scenario == "signals-late" {
            assert_eq!(n(&r["drm_syncobj"]["acquire"]["over_timeout"]), 1, "{r:#}");
        }
        let reuse = |protocol: &str| {
            let b = &r[protocol]["buffer_reuse"];
            (n(&b["reused"]), n(&b["rewritten_while_held"]))
        };
        match *scenario {
            "rewrites-before-release" => assert_eq!(reuse("drm_syncobj"), (1, 1), "{r:#}"),
            // Every commit but the first of each buffer reuses it; every one of them finished
            // its write (all points signalled together) before its previous commit was released.
            "flood-commits" => assert_eq!(reuse("drm_syncobj"), (28, 28), "{r:#}"),
            "v1-rewrites-before-release" => {
                assert_eq!(reuse("explicit_sync_v1"), (2, 2), "{r:#}");
                // The second rewrite waited for its acquire fence.
                assert!(n(&r["explicit_sync_v1"]["acquire"]["waited"]) >= 1, "{r:#}");
                assert_eq!(reuse("drm_syncobj"), (0, 0), "{r:#}");
            }
            _ => {}
        }
        if expected.contains(&"protocol_error".to_string()) {
            assert_eq!(r["protocol_errors"].as_array().unwrap().len(), 1, "{r:#}");
        }
    }
}

#[test]
fn trace_shows_the_clients_fences() {
    let _serial = serial();
    let Some(()) = devices() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    let (status, r) = check(
        &["--trace", path.to_str().unwrap()],
        "syncobj-client",
        &["--frames", "4", "--acquire-delay-ms", "20"],
    );
    assert_eq!(status, 0, "{r:#}");
    assert_eq!(r["trace"], path.to_str().unwrap());
    let trace: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    // The acquire points waited on show as fence slices that begin and end.
    let phase = |ph: &str| {
        events
            .iter()
            .filter(|e| e["cat"] == "fence" && e["ph"] == ph)
            .count()
    };
    assert!(
        phase("b") >= 4 && phase("e") >= 4,
        "{} events",
        events.len()
    );
}
