//! Which fences the kernel waited for, read from its own tracepoints: what shows that an atomic
//! commit carried an in-fence, since debugfs `state` does not print a plane's fence.
//!
//! [`FenceTrace::start`] makes a tracefs instance of its own (`instances/<name>`: its own ring
//! buffer, event switches and clock, so the global trace is left alone), sets its `trace_clock`
//! to `mono` (timestamps on CLOCK_MONOTONIC, the clock of flip events and presentation times)
//! and enables:
//! * `dma_fence/dma_fence_wait_start` (and `_end`): `dma_fence_wait_timeout` emits it for every
//!   wait, an already signalled fence included (6.12: after `dma_fence_enable_sw_signaling`,
//!   before calling `ops->wait` or the default wait), with the fence's driver and timeline names,
//!   context and seqno. The atomic helpers' `commit_tail` starts with
//!   `drm_atomic_helper_wait_for_fences`, which `dma_fence_wait`s each plane's `fence`: the
//!   `IN_FENCE_FD` of the commit (or, on drivers whose `prepare_fb` is
//!   `drm_gem_plane_helper_prepare_fb`, the buffer's implicit fences; not 6.12's virtio-gpu, as
//!   `kernel_kms` shows). A driver may wait for fences of its own in the commit too (virtio-gpu in a plane
//!   update, driver `virtio_gpu`; none showed up in the guest): [`CommitWaits::in_fences`]
//!   leaves the device's own driver out.
//! * `drm/drm_vblank_event_delivered`: a flip's completion event sent to the file that committed
//!   (`drm_crtc_send_vblank_event`), named by the kernel's hashed pointer of that `drm_file`
//!   (fbcon's own commits show all zeros). Its trace time follows the event's timestamp by a few
//!   microseconds on the guest; that timestamp is what a Wayland client gets as presentation
//!   time. So a presentation time finds its flip ([`flip_at`]), and the fence waits since the
//!   same file's flip before are the waits of that flip's commit ([`commit_waits`]).
//!
//! Seen in the guest (6.12, Mesa 25.0.7): every fencegate commit waited on one
//! `stub:stub context 0 seqno 0` fence (the `dma_fence_stub_ops` of `dma_fence_get_stub` and
//! `dma_fence_allocate_private_stub`, signalled when made), the wait ending 18-270 µs after it
//! started and 0.1-10 ms before the flip event. The direct scanout's signalled syncobj and
//! llvmpipe's render fence cannot be told apart by name, only by which flip they precede.
//!
//! tracefs is mounted at `/sys/kernel/tracing` when neither it nor debugfs's `tracing` is there
//! (and stays mounted). Dropping the [`FenceTrace`] (or [`FenceTrace::stop`]) turns its events
//! and tracing off and removes the instance: no tracing is left on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One fence, as the `dma_fence` tracepoints print it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FenceName {
    pub driver: String,
    pub timeline: String,
    pub context: u64,
    pub seqno: u64,
}

impl std::fmt::Display for FenceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} context {} seqno {}",
            self.driver, self.timeline, self.context, self.seqno
        )
    }
}

/// What happened, of what [`FenceTrace`] enables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceKind {
    FenceWaitStart(FenceName),
    FenceWaitEnd(FenceName),
    /// A flip's (or vblank's) event delivered: to which file (the kernel's hashed pointer, the
    /// same for one `drm_file` within a boot; all zeros for the kernel's own clients such as
    /// fbcon), its CRTC index and sequence.
    VblankDelivered {
        file: String,
        crtc: u32,
        seq: u32,
    },
    Other(String),
}

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The task that hit the tracepoint (`comm-pid`): a kworker for a nonblocking commit's tail.
    pub task: String,
    /// CLOCK_MONOTONIC, in nanoseconds (the trace prints microseconds).
    pub time_ns: u64,
    pub kind: TraceKind,
}

/// A tracefs instance with the fence and flip-event tracepoints on (see the module docs).
pub struct FenceTrace {
    dir: PathBuf,
}

/// Where tracefs is (mounting it if it is nowhere).
pub fn tracefs() -> io::Result<PathBuf> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        // debugfs's `tracing` is an automount: looking inside mounts it.
        if Path::new(dir).join("instances").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()?;
    if !status.success() || !Path::new("/sys/kernel/tracing/instances").is_dir() {
        return Err(io::Error::other(format!(
            "mount -t tracefs nodev /sys/kernel/tracing: {status}"
        )));
    }
    Ok(PathBuf::from("/sys/kernel/tracing"))
}

/// The events [`FenceTrace`] enables, relative to `events/`.
pub const EVENTS: [&str; 3] = [
    "dma_fence/dma_fence_wait_start",
    "dma_fence/dma_fence_wait_end",
    "drm/drm_vblank_event_delivered",
];

impl FenceTrace {
    /// A new instance named after `tag` and this process, tracing [`EVENTS`] from now on.
    pub fn start(tag: &str) -> io::Result<FenceTrace> {
        let dir = tracefs()?
            .join("instances")
            .join(format!("fencegate-{tag}-{}", std::process::id()));
        if dir.exists() {
            // Left by an earlier run that died: start afresh.
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", dir.display())))?;
        let trace = FenceTrace { dir };
        trace.write("trace_clock", "mono")?;
        trace.write("buffer_size_kb", "4096")?;
        for event in EVENTS {
            trace.write(&format!("events/{event}/enable"), "1")?;
        }
        trace.write("tracing_on", "1")?;
        Ok(trace)
    }

    /// The instance's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value} to {}: {e}", path.display()),
            )
        })
    }

    /// The instance's `trace` file as it is (non-consuming).
    pub fn text(&self) -> io::Result<String> {
        fs::read_to_string(self.dir.join("trace"))
    }

    /// Everything traced so far, in order.
    pub fn events(&self) -> io::Result<Vec<TraceEvent>> {
        Ok(parse_trace(&self.text()?))
    }

    /// Whether the ring buffer lost events (`per_cpu/cpu*/stats`, `overrun:` or `dropped
    /// events:` not 0): then a missing wait proves nothing.
    pub fn lost_events(&self) -> io::Result<u64> {
        let mut lost = 0;
        for cpu in fs::read_dir(self.dir.join("per_cpu"))? {
            let stats = fs::read_to_string(cpu?.path().join("stats"))?;
            for line in stats.lines() {
                if let Some(n) = line
                    .strip_prefix("overrun:")
                    .or_else(|| line.strip_prefix("dropped events:"))
                {
                    lost += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(lost)
    }

    /// Stops tracing and removes the instance (what dropping does), reporting failures.
    pub fn stop(mut self) -> io::Result<()> {
        let result = self.teardown();
        self.dir = PathBuf::new();
        result
    }

    fn teardown(&self) -> io::Result<()> {
        if self.dir.as_os_str().is_empty() {
            return Ok(());
        }
        let _ = self.write("tracing_on", "0");
        for event in EVENTS {
            let _ = self.write(&format!("events/{event}/enable"), "0");
        }
        fs::remove_dir(&self.dir)
            .map_err(|e| io::Error::new(e.kind(), format!("rmdir {}: {e}", self.dir.display())))
    }
}

impl Drop for FenceTrace {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("fence trace: {e}");
        }
    }
}

/// Parses the `trace` text (6.12, `trace_clock` mono, microseconds; comment lines start with
/// `#`), as seen in the guest:
/// ```text
///     kworker/u8:0-12      [001] .....    24.077660: dma_fence_wait_start: driver=stub timeline=stub context=0 seqno=0
///     kworker/u8:0-12      [001] .....    24.077680: dma_fence_wait_end: driver=stub timeline=stub context=0 seqno=0
///     kworker/u8:0-12      [001] d..1.    24.077823: drm_vblank_event_delivered: file=0000000014f59e65, crtc=0, seq=0
/// ```
pub fn parse_trace(text: &str) -> Vec<TraceEvent> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<TraceEvent> {
    // The task name may hold spaces: everything before the `[cpu]` column.
    let open = line.find(" [")?;
    let task = line[..open].trim().to_string();
    let rest = &line[line[open..].find(']')? + open + 1..];
    let mut words = rest.split_whitespace();
    let _flags = words.next()?;
    let time = words.next()?.strip_suffix(':')?;
    let (secs, micros) = time.split_once('.')?;
    let time_ns = secs.parse::<u64>().ok()? * 1_000_000_000
        + micros.parse::<u64>().ok()? * 10u64.pow(9 - micros.len() as u32);
    let event = words.next()?.strip_suffix(':')?;
    let fields: Vec<&str> = words.collect();
    let field = |name: &str| {
        fields.iter().find_map(|f| {
            f.trim_end_matches(',')
                .strip_prefix(name)
                .and_then(|f| f.strip_prefix('='))
        })
    };
    let fence = || {
        Some(FenceName {
            driver: field("driver")?.to_string(),
            timeline: field("timeline")?.to_string(),
            context: field("context")?.parse().ok()?,
            seqno: field("seqno")?.parse().ok()?,
        })
    };
    let kind = match event {
        "dma_fence_wait_start" => TraceKind::FenceWaitStart(fence()?),
        "dma_fence_wait_end" => TraceKind::FenceWaitEnd(fence()?),
        "drm_vblank_event_delivered" => TraceKind::VblankDelivered {
            file: field("file")?.to_string(),
            crtc: field("crtc")?.parse().ok()?,
            seq: field("seq")?.parse().ok()?,
        },
        other => TraceKind::Other(format!("{other}: {}", fields.join(" "))),
    };
    Some(TraceEvent {
        task,
        time_ns,
        kind,
    })
}

/// One flip of a file and the fence waits that started since that file's flip before it: the
/// waits of the commit that it completed (one commit in flight at a time, as fencegate commits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitWaits {
    /// When its event was delivered (CLOCK_MONOTONIC ns, microsecond precision).
    pub flip_ns: u64,
    /// The flip before it (0 for the first one traced).
    pub previous_flip_ns: u64,
    /// Every fence wait started in (previous flip, this flip].
    pub waits: Vec<(u64, FenceName)>,
}

impl CommitWaits {
    /// The waits on fences not of `device_driver` (the driver's own fences): the in-fences.
    pub fn in_fences(&self, device_driver: &str) -> Vec<&FenceName> {
        self.waits
            .iter()
            .map(|(_, f)| f)
            .filter(|f| f.driver != device_driver)
            .collect()
    }
}

/// Splits `events` at each flip event delivered to `file` (see [`CommitWaits`]; find the file
/// with [`flip_file`]). Waits after the last flip belong to no flip yet and are left out.
pub fn commit_waits(events: &[TraceEvent], file: &str) -> Vec<CommitWaits> {
    let mut commits = Vec::new();
    let mut previous = 0;
    let mut waits = Vec::new();
    for event in events {
        match &event.kind {
            TraceKind::FenceWaitStart(fence) => waits.push((event.time_ns, fence.clone())),
            TraceKind::VblankDelivered { file: f, .. } if f == file => {
                commits.push(CommitWaits {
                    flip_ns: event.time_ns,
                    previous_flip_ns: previous,
                    waits: std::mem::take(&mut waits),
                });
                previous = event.time_ns;
            }
            _ => {}
        }
    }
    commits
}

/// The file that the flip event nearest `presented_ns` went to, if one is within
/// `tolerance_ns`: the compositor's file, when `presented_ns` is a presentation time it gave.
pub fn flip_file(events: &[TraceEvent], presented_ns: u64, tolerance_ns: u64) -> Option<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            TraceKind::VblankDelivered { file, .. } => Some((e.time_ns, file)),
            _ => None,
        })
        .min_by_key(|(t, _)| t.abs_diff(presented_ns))
        .filter(|(t, _)| t.abs_diff(presented_ns) <= tolerance_ns)
        .map(|(_, file)| file.clone())
}

/// The traced flip whose time is nearest `presented_ns` (a presentation time from the flip's
/// event), if one is within `tolerance_ns`.
pub fn flip_at(
    commits: &[CommitWaits],
    presented_ns: u64,
    tolerance_ns: u64,
) -> Option<&CommitWaits> {
    commits
        .iter()
        .min_by_key(|c| c.flip_ns.abs_diff(presented_ns))
        .filter(|c| c.flip_ns.abs_diff(presented_ns) <= tolerance_ns)
}
