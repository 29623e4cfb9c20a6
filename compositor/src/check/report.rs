//! [`Report`]: what `fencegate check` saw a client do, as a summary for people and as JSON for
//! machines (schema: `docs/src/check-report.schema.json`, named by [`REPORT_SCHEMA`]).

use std::fmt::Write as _;
use std::time::Duration;

use fencegate_protocols::drm_syncobj::{AcquireStats, BufferReuseStats, ReleaseStats};
use fencegate_protocols::explicit_sync::BufferReleaseStats;
use fencegate_protocols::implicit_sync::ImplicitSyncStats;
use fencegate_protocols::wait_times::{WaitSummary, WaitTimes};
use serde::Serialize;

use crate::client_log::{CommitCounts, ProtocolErrorRecord};
use crate::state::State;

/// The `schema` field of every report: bumped when a field changes meaning or goes away.
pub const REPORT_SCHEMA: &str = "fencegate-check/2";

/// Everything `fencegate check` reports about one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub command: Vec<String>,
    /// The client's exit status (128 + signal when killed), as a shell reports it.
    pub client_exit_status: i32,
    pub duration_ms: f64,
    pub renderer: &'static str,
    pub protocols: Protocols,
    /// Wayland connections the client (and its children) made.
    pub connections: u64,
    pub protocol_errors: Vec<ProtocolErrorRecord>,
    pub commits: CommitCounts,
    /// linux-drm-syncobj-v1, when offered.
    pub drm_syncobj: Option<DrmSyncobjReport>,
    /// zwp_linux_explicit_synchronization_v1, when offered.
    pub explicit_sync_v1: Option<ExplicitSyncV1Report>,
    pub implicit_sync: ImplicitSyncReport,
    /// The rules the client broke; empty when it broke none.
    pub findings: Vec<Finding>,
    /// Where the Perfetto trace was written (`--trace`).
    pub trace: Option<String>,
}

/// Which sync protocols were offered and how often the client bound them.
#[derive(Debug, Clone, Serialize)]
pub struct Protocols {
    pub wp_linux_drm_syncobj_manager_v1: Offer,
    pub zwp_linux_explicit_synchronization_v1: Offer,
    /// linux-dmabuf's version (0: not offered; 4 and up carry default feedback).
    pub zwp_linux_dmabuf_v1_version: u32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Offer {
    pub offered: bool,
    pub binds: u64,
}

/// Acquire waits, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct AcquireReport {
    /// Commits whose fence had signalled when committed (no wait).
    pub already_signalled: u64,
    /// Commits that waited for their fence.
    pub waited: u64,
    /// How long those waited, once their fence signalled.
    pub wait_ms: Option<Distribution>,
    /// Waits that outlasted the fence timeout (reported in the log; the fence may have come
    /// later).
    pub over_timeout: u64,
    /// Fences that never signalled: given up when their surface or client went away, or still
    /// pending when the client exited.
    pub never_signalled: u64,
}

/// min / median / p99 / max, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrmSyncobjReport {
    pub acquire: AcquireReport,
    /// Release points set, and how fencegate signalled them.
    pub release_points: ReleasePointsReport,
    pub buffer_reuse: BufferReuseReport,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReleasePointsReport {
    pub set: u64,
    /// Signalled by the kernel after the render that last read the buffer (fence imported).
    pub after_render_fence: u64,
    /// Signalled from the CPU (never drawn, or drawn with no fence to wait for).
    pub from_cpu: u64,
    /// Not signalled yet when the client exited (0 unless fencegate broke its own rule).
    pub owed_at_exit: u64,
}

/// How buffers were reused, judged by fencegate's release of their previous commit: made (the
/// release point signalled or given the render fence; `immediate_release` or `fenced_release`
/// sent) and in effect (at once, or once that render fence signalled).
#[derive(Debug, Clone, Serialize)]
pub struct BufferReuseReport {
    /// Commits, with a new acquire fence (or point), of a buffer whose previous commit carried a
    /// release.
    pub reused: u64,
    /// Of those, commits made before that release took effect: allowed, the client's write
    /// must only finish after it (GPU work queued behind the release point).
    pub committed_before_release: u64,
    /// Of those, buffers whose new acquire fence signalled before that release took effect: the
    /// client finished writing a buffer fencegate could still be reading.
    pub rewritten_while_held: u64,
    /// For reuses committed after the release took effect: from the release to the commit.
    pub release_to_reuse_ms: Option<Distribution>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplicitSyncV1Report {
    pub acquire: AcquireReport,
    pub releases: BufferReleasesReport,
    pub buffer_reuse: BufferReuseReport,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct BufferReleasesReport {
    pub requested: u64,
    pub fenced: u64,
    pub immediate: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ImplicitSyncReport {
    /// dma-bufs committed without explicit sync whose writers had finished.
    pub idle_at_commit: u64,
    /// dma-bufs committed while their write fences were still pending (the commit waited).
    pub busy_at_commit: u64,
    /// Of those, waits that outlasted the fence timeout.
    pub over_timeout: u64,
}

/// A rule the client broke.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub count: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    ProtocolError,
    FenceNeverSignalled,
    BufferRewrittenWhileHeld,
}

impl Report {
    /// Reads the report off the compositor's state, once the loop has stopped.
    pub(crate) fn from_state(state: &State, command: Vec<String>, ran: Duration) -> Report {
        let core = &state.core;
        let records = core.client_log.records();
        let drm_syncobj = core.drm_syncobj.as_ref().map(|s| DrmSyncobjReport {
            acquire: AcquireReport::from(&s.stats()),
            release_points: ReleasePointsReport::from(s.release_stats()),
            buffer_reuse: BufferReuseReport::from(&s.buffer_reuse_stats()),
        });
        let explicit_sync_v1 = core.explicit_sync.as_ref().map(|s| ExplicitSyncV1Report {
            acquire: AcquireReport::from(&s.stats()),
            releases: BufferReleasesReport::from(s.release_stats()),
            buffer_reuse: BufferReuseReport::from(&s.buffer_reuse_stats()),
        });
        let mut report = Report {
            schema: REPORT_SCHEMA,
            command,
            client_exit_status: 0,
            duration_ms: millis(ran),
            renderer: state.backend.renderer_name(),
            protocols: Protocols {
                wp_linux_drm_syncobj_manager_v1: Offer {
                    offered: core.drm_syncobj.is_some(),
                    binds: core.drm_syncobj.as_ref().map_or(0, |s| s.binds()),
                },
                zwp_linux_explicit_synchronization_v1: Offer {
                    offered: core.explicit_sync.is_some(),
                    binds: core.explicit_sync.as_ref().map_or(0, |s| s.binds()),
                },
                zwp_linux_dmabuf_v1_version: core.dmabuf_version,
            },
            connections: records.connected,
            protocol_errors: records.protocol_errors,
            commits: records.commits,
            drm_syncobj,
            explicit_sync_v1,
            implicit_sync: ImplicitSyncReport::from(core.implicit_sync.stats()),
            findings: Vec::new(),
            trace: None,
        };
        report.findings = report.find();
        report
    }

    pub(crate) fn set_client_status(&mut self, status: i32) {
        self.client_exit_status = status;
    }

    /// The rules broken, from the numbers.
    fn find(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        if !self.protocol_errors.is_empty() {
            let first = &self.protocol_errors[0];
            findings.push(Finding {
                kind: FindingKind::ProtocolError,
                count: self.protocol_errors.len() as u64,
                detail: format!(
                    "{} error {}: {}",
                    first.interface, first.code, first.message
                ),
            });
        }
        let never = |name: &str, acquire: &AcquireReport| {
            (acquire.never_signalled > 0).then(|| Finding {
                kind: FindingKind::FenceNeverSignalled,
                count: acquire.never_signalled,
                detail: format!(
                    "{name}: acquire fences that never signalled (the surface stayed frozen on \
                     its previous content)"
                ),
            })
        };
        let rewritten = |name: &str, fence: &str, release: &str, reuse: &BufferReuseReport| {
            (reuse.rewritten_while_held > 0).then(|| Finding {
                kind: FindingKind::BufferRewrittenWhileHeld,
                count: reuse.rewritten_while_held,
                detail: format!(
                    "{name}: buffers whose new acquire {fence} signalled before fencegate's \
                     release of their previous commit took effect ({release})"
                ),
            })
        };
        if let Some(s) = &self.drm_syncobj {
            findings.extend(never("linux-drm-syncobj-v1", &s.acquire));
            findings.extend(rewritten(
                "linux-drm-syncobj-v1",
                "point",
                "release point signalled, or the render fence imported into it signalled",
                &s.buffer_reuse,
            ));
        }
        if let Some(s) = &self.explicit_sync_v1 {
            findings.extend(never("zwp_linux_explicit_synchronization_v1", &s.acquire));
            findings.extend(rewritten(
                "zwp_linux_explicit_synchronization_v1",
                "fence",
                "immediate_release sent, or the fenced_release fence signalled",
                &s.buffer_reuse,
            ));
        }
        findings
    }

    /// 0 clean, 1 rules broken, 2 the client failed by itself (see the module docs).
    pub fn exit_status(&self) -> i32 {
        if !self.findings.is_empty() {
            1
        } else if self.client_exit_status != 0 {
            2
        } else {
            0
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "fencegate check: {}", self.command.join(" "));
        let _ = writeln!(
            w,
            "  client exit status {}, ran {:.0} ms, {} connection(s), renderer {}",
            self.client_exit_status, self.duration_ms, self.connections, self.renderer
        );
        let p = &self.protocols;
        let _ = writeln!(
            w,
            "  protocols: wp_linux_drm_syncobj_manager_v1 {}, zwp_linux_explicit_synchronization_v1 {}, zwp_linux_dmabuf_v1 v{}",
            offer(p.wp_linux_drm_syncobj_manager_v1),
            offer(p.zwp_linux_explicit_synchronization_v1),
            p.zwp_linux_dmabuf_v1_version
        );
        let c = &self.commits;
        let _ = writeln!(
            w,
            "  commits: {} ({} dma-buf, {} shm, {} without a buffer)",
            c.total, c.dmabuf, c.shm, c.without_buffer
        );
        if let Some(s) = &self.drm_syncobj {
            let _ = writeln!(w, "  linux-drm-syncobj-v1:");
            acquire_lines(w, &s.acquire);
            let r = &s.release_points;
            let _ = writeln!(
                w,
                "    release points: {} set, {} after the render fence, {} from the CPU, {} owed at exit",
                r.set, r.after_render_fence, r.from_cpu, r.owed_at_exit
            );
            buffer_reuse_line(w, &s.buffer_reuse);
        }
        if let Some(s) = &self.explicit_sync_v1 {
            let _ = writeln!(w, "  zwp_linux_explicit_synchronization_v1:");
            acquire_lines(w, &s.acquire);
            let r = &s.releases;
            let _ = writeln!(
                w,
                "    releases: {} requested, {} fenced, {} immediate",
                r.requested, r.fenced, r.immediate
            );
            buffer_reuse_line(w, &s.buffer_reuse);
        }
        let i = &self.implicit_sync;
        let _ = writeln!(
            w,
            "  implicit sync: {} dma-buf commits idle, {} still being written at commit ({} over the timeout)",
            i.idle_at_commit, i.busy_at_commit, i.over_timeout
        );
        for e in &self.protocol_errors {
            let _ = writeln!(
                w,
                "  protocol error: {}@{} error {}: {}",
                e.interface, e.object_id, e.code, e.message
            );
        }
        if let Some(trace) = &self.trace {
            let _ = writeln!(w, "  trace: {trace} (open it in https://ui.perfetto.dev)");
        }
        if self.findings.is_empty() {
            let _ = writeln!(w, "verdict: no rule broken");
        } else {
            for f in &self.findings {
                let _ = writeln!(w, "FINDING {:?} x{}: {}", f.kind, f.count, f.detail);
            }
            let _ = writeln!(w, "verdict: {} finding(s)", self.findings.len());
        }
        out
    }
}

fn offer(offer: Offer) -> String {
    if offer.offered {
        format!("offered, bound {}x", offer.binds)
    } else {
        "not offered".into()
    }
}

fn acquire_lines(w: &mut String, a: &AcquireReport) {
    let _ = writeln!(
        w,
        "    acquire: {} already signalled, {} waited {}, {} over the timeout, {} never signalled",
        a.already_signalled,
        a.waited,
        distribution(a.wait_ms),
        a.over_timeout,
        a.never_signalled
    );
}

fn buffer_reuse_line(w: &mut String, b: &BufferReuseReport) {
    let _ = writeln!(
        w,
        "    buffer reuse: {} reused ({} committed before the release), {} rewritten while held, release to reuse {}",
        b.reused,
        b.committed_before_release,
        b.rewritten_while_held,
        distribution(b.release_to_reuse_ms)
    );
}

fn distribution(d: Option<Distribution>) -> String {
    match d {
        None => "(none)".into(),
        Some(d) => format!(
            "min {:.2} / median {:.2} / p99 {:.2} / max {:.2} ms",
            d.min, d.median, d.p99, d.max
        ),
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Distribution {
    fn of(times: &WaitTimes) -> Option<Distribution> {
        times.summary().map(|s: WaitSummary| Distribution {
            count: s.count,
            min: millis(s.min),
            median: millis(s.median),
            p99: millis(s.p99),
            max: millis(s.max),
        })
    }
}

impl From<&AcquireStats> for AcquireReport {
    fn from(s: &AcquireStats) -> Self {
        AcquireReport {
            already_signalled: s.already_signaled,
            waited: s.blocked,
            wait_ms: Distribution::of(&s.waited),
            over_timeout: s.timed_out,
            never_signalled: s.abandoned + s.waiting(),
        }
    }
}

impl From<ReleaseStats> for ReleasePointsReport {
    fn from(s: ReleaseStats) -> Self {
        ReleasePointsReport {
            set: s.taken,
            after_render_fence: s.fence_imported,
            from_cpu: s.cpu_signaled,
            owed_at_exit: s.owed(),
        }
    }
}

impl From<&BufferReuseStats> for BufferReuseReport {
    fn from(s: &BufferReuseStats) -> Self {
        BufferReuseReport {
            reused: s.reused,
            committed_before_release: s.committed_before_release,
            rewritten_while_held: s.rewritten_while_held,
            release_to_reuse_ms: Distribution::of(&s.after_release),
        }
    }
}

impl From<BufferReleaseStats> for BufferReleasesReport {
    fn from(s: BufferReleaseStats) -> Self {
        BufferReleasesReport {
            requested: s.taken,
            fenced: s.fenced,
            immediate: s.immediate,
        }
    }
}

impl From<ImplicitSyncStats> for ImplicitSyncReport {
    fn from(s: ImplicitSyncStats) -> Self {
        ImplicitSyncReport {
            idle_at_commit: s.idle,
            busy_at_commit: s.blocked,
            over_timeout: s.timed_out,
        }
    }
}
