//! What a DRM-session compositor (`fencegate --backend drm`: libseat, udev, libinput, KMS) needs
//! in the kernel guest, and running one there under `seatd-launch`.
//!
//! * [`DrmSession::setup`] (idempotent, once per process): `systemd-udevd --daemon` unless one
//!   runs, `udevadm trigger`, `udevadm settle` (without the udev database libinput and udev
//!   monitors see no initialised devices); `XDG_RUNTIME_DIR` on the guest's tmpfs `/run` (mode
//!   0700); `/tmp/.X11-unix` (an Xwayland-capable compositor wants it). Only in the guest: it
//!   starts daemons and writes under `/run`, which must never happen on a build machine.
//! * [`SeatedCommand`] runs a command under `seatd-launch --`, stdout/stderr to files, in its own
//!   process group; [`SeatedChild`] kills and reaps the whole group when dropped.
//!
//! Pitfalls met in the guest (seatd 0.7.0, systemd-udevd 254, Linux 6.12):
//! * seatd-launch 0.7 always uses the socket `/run/seatd.sock` and exports only
//!   `SEATD_SOCK=/run/seatd.sock` to the command (the rest of the environment is inherited). A
//!   second seatd refuses to start while the first listens there ("Socket file found at socket
//!   path ..., refusing to start"): one seated command at a time ([`SeatedCommand::spawn`]
//!   holds a lock for as long as the child lives).
//! * The seat is VT-bound (`Created VT-bound seat seat0`): one active libseat client per seat.
//! * seatd logs (INFO lines) on its stderr, which is the command's: both land in one file.
//! * seatd-launch makes no process group of its own, and in the guest every process inherits
//!   PID 1's process group **0** (busybox init never calls setsid): `kill(0, sig)` or
//!   `kill(-0, ..)` would hit the test itself. Hence `process_group(0)` on seatd-launch (its own
//!   group) and `killpg` of that pgid only.
//! * Killing seatd-launch orphans seatd and the command: they are reparented to the nearest
//!   subreaper. The test process makes itself one (`PR_SET_CHILD_SUBREAPER`) so it can reap the
//!   whole group (`waitpid(-pgid)`) and prove nothing is left. That is process-wide: anything
//!   a test starts that daemonizes is reparented to the test process from then on.
//! * `systemd-udevd` is not on PATH (`/lib/systemd/systemd-udevd`, a symlink to udevadm). Plain
//!   `udevadm trigger` (action "change") fills the database; `--action=add` would also make
//!   udevd's kmod builtin try to load modules from `/lib/modules/<kver>`, which the host's `/`
//!   lacks (the guest's modules live in xtask's cache).
//! * The guest has no input devices (no `/dev/input/event*`): libinput finds none.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::require_device;

/// The socket seatd-launch 0.7 gives seatd (fixed, not per instance).
pub const SEATD_SOCK: &str = "/run/seatd.sock";
/// Written by the guest's init (xtask/vm/guest-init.sh): present only inside the kernel guest.
const GUEST_MARKER: &str = "/run/fencegate/job/guest.env";
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether this process runs inside `xtask/vm/run-in-guest`'s guest.
pub fn in_guest() -> bool {
    Path::new(GUEST_MARKER).is_file()
}

/// The prepared DRM session environment (see the module docs).
#[derive(Debug)]
pub struct DrmSession {
    /// `XDG_RUNTIME_DIR` for seated commands: `/run/user/<uid>`, tmpfs, mode 0700.
    pub runtime_dir: PathBuf,
    /// Where [`SeatedCommand`] logs and udevd's output go (`/run/fencegate-drm-session`).
    pub log_dir: PathBuf,
    /// Whether this process started systemd-udevd (false: one was already running).
    pub started_udevd: bool,
}

impl DrmSession {
    /// Prepares the session once per process and returns it; `None` (after a SKIP line) outside
    /// the guest, a failure there when `FENCEGATE_REQUIRE_KERNEL=1` (see [`require_device`]).
    /// Panics when a step fails in the guest.
    pub fn setup() -> Option<&'static DrmSession> {
        require_device("kernel guest to start udevd and seatd in", || {
            in_guest().then_some(())
        })?;
        static SESSION: OnceLock<DrmSession> = OnceLock::new();
        Some(SESSION.get_or_init(|| {
            DrmSession::prepare().unwrap_or_else(|e| panic!("DRM session setup: {e}"))
        }))
    }

    fn prepare() -> io::Result<DrmSession> {
        let log_dir = PathBuf::from("/run/fencegate-drm-session");
        fs::create_dir_all(&log_dir)?;
        let started_udevd = ensure_udevd(&log_dir)?;
        run_checked(Command::new("udevadm").arg("trigger"))?;
        run_checked(Command::new("udevadm").args(["settle", "--timeout=60"]))?;

        let uid = unsafe { libc::geteuid() };
        let gid = unsafe { libc::getegid() };
        if fs_type("/run")? != TMPFS_MAGIC {
            return Err(io::Error::other("/run is not a tmpfs in this guest"));
        }
        let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
        fs::create_dir_all(&runtime_dir)?;
        std::os::unix::fs::chown(&runtime_dir, Some(uid), Some(gid))?;
        fs::set_permissions(&runtime_dir, fs::Permissions::from_mode(0o700))?;

        let x11 = Path::new("/tmp/.X11-unix");
        fs::create_dir_all(x11)?;
        fs::set_permissions(x11, fs::Permissions::from_mode(0o1777))?;
        Ok(DrmSession {
            runtime_dir,
            log_dir,
            started_udevd,
        })
    }
}

/// Starts `systemd-udevd --daemon` unless one runs; true when it started it.
fn ensure_udevd(log_dir: &Path) -> io::Result<bool> {
    if !processes_named("systemd-udevd").is_empty() {
        return Ok(false);
    }
    let udevd = [
        "/usr/lib/systemd/systemd-udevd",
        "/lib/systemd/systemd-udevd",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .ok_or_else(|| io::Error::other("no systemd-udevd: install Debian's udev"))?;
    // The daemon keeps whatever stdio it gets: never the test's own pipes.
    let log = File::create(log_dir.join("udevd.log"))?;
    run_checked(
        Command::new(udevd)
            .arg("--daemon")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    // --daemon returns once forked; trigger needs the control socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new("/run/udev/control").exists() {
        if Instant::now() > deadline {
            return Err(io::Error::other("systemd-udevd made no /run/udev/control"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

fn run_checked(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// `statfs(path).f_type` (tmpfs: 0x01021994).
pub fn fs_type(path: &str) -> io::Result<i64> {
    let c = std::ffi::CString::new(path).expect("no NUL");
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// One line of `/proc/PID/stat`, what the harness needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub comm: String,
    /// `R`, `S`, `Z` (zombie), ...
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
}

/// Reads `/proc/PID/stat`; `None` when the process is gone.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parentheses: it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        comm,
        state,
        ppid,
        pgid,
    })
}

/// Every process, zombies included.
pub fn all_processes() -> Vec<ProcInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .collect()
}

/// Processes whose comm is `name` (the kernel truncates comm to 15 bytes).
pub fn processes_named(name: &str) -> Vec<ProcInfo> {
    all_processes()
        .into_iter()
        .filter(|p| p.comm == name)
        .collect()
}

/// Members of process group `pgid` (zombies included).
pub fn group_members(pgid: i32) -> Vec<ProcInfo> {
    assert!(pgid > 0, "process group {pgid}: 0 would mean our own");
    all_processes()
        .into_iter()
        .filter(|p| p.pgid == pgid)
        .collect()
}

/// A command to run under `seatd-launch --` with the session's environment.
pub struct SeatedCommand {
    name: String,
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl SeatedCommand {
    /// `name` names the log files (`<log_dir>/<name>-<pid>-<n>.{stdout,stderr}`).
    pub fn new(name: &str, program: impl AsRef<OsStr>) -> SeatedCommand {
        SeatedCommand {
            name: name.to_string(),
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts `seatd-launch -- PROGRAM ARGS...` in a new process group, with `XDG_RUNTIME_DIR`,
    /// `LIBSEAT_BACKEND=seatd` (no silent fallback to another backend) and no nested-display
    /// variables, stdin from /dev/null, stdout/stderr to files. Blocks while another seated
    /// command of this process lives (one seatd per guest: see the module docs).
    pub fn spawn(self, session: &DrmSession) -> SeatedChild {
        let lock = seatd_lock();
        become_subreaper();
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let stem = format!(
            "{}-{}-{}",
            self.name,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let stdout_path = session.log_dir.join(format!("{stem}.stdout"));
        let stderr_path = session.log_dir.join(format!("{stem}.stderr"));
        let stdout = File::create(&stdout_path).expect("creating the stdout log");
        let stderr = File::create(&stderr_path).expect("creating the stderr log");
        let mut cmd = Command::new("seatd-launch");
        cmd.arg("--")
            .arg(&self.program)
            .args(&self.args)
            .env("XDG_RUNTIME_DIR", &session.runtime_dir)
            .env("LIBSEAT_BACKEND", "seatd")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("WAYLAND_SOCKET")
            .env_remove("DISPLAY")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e} (is Debian's seatd installed?)"));
        let pid = child.id() as i32;
        // std's Child is not used for waiting: the group is reaped with waitpid(-pgid) below.
        drop(child);
        SeatedChild {
            launcher: pid,
            status: None,
            stdout_path,
            stderr_path,
            _lock: lock,
        }
    }
}

fn seatd_lock() -> MutexGuard<'static, ()> {
    static SEATD: Mutex<()> = Mutex::new(());
    SEATD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Orphans of our process groups come back to us to be reaped, not to PID 1.
fn become_subreaper() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            io::Error::last_os_error()
        );
    });
}

/// A running `seatd-launch -- CMD`: seatd-launch leads process group `pgid()`, with seatd and
/// the command (and whatever the command starts) in it. Dropping it kills the group and reaps
/// every member.
pub struct SeatedChild {
    launcher: i32,
    status: Option<ExitStatus>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl SeatedChild {
    /// seatd-launch's pid, also the process group id.
    pub fn pgid(&self) -> i32 {
        self.launcher
    }

    /// The seatd seatd-launch started, while it runs.
    pub fn seatd_pid(&self) -> Option<i32> {
        self.launcher_children()
            .into_iter()
            .find(|p| p.comm == "seatd")
            .map(|p| p.pid)
    }

    /// The command (seatd-launch's other child), once started and while it runs.
    pub fn command_pid(&self) -> Option<i32> {
        self.launcher_children()
            .into_iter()
            .find(|p| p.comm != "seatd")
            .map(|p| p.pid)
    }

    fn launcher_children(&self) -> Vec<ProcInfo> {
        if self.status.is_some() {
            return Vec::new();
        }
        group_members(self.launcher)
            .into_iter()
            .filter(|p| p.ppid == self.launcher && p.state != 'Z')
            .collect()
    }

    /// seatd-launch's exit status once it has exited (the command's status, 128+N when it
    /// died of signal N).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let mut raw = 0;
            let r = unsafe { libc::waitpid(self.launcher, &mut raw, libc::WNOHANG) };
            if r == self.launcher {
                self.status = Some(ExitStatus::from_raw(raw));
            }
        }
        self.status
    }

    /// Waits up to `timeout` for seatd-launch to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM to the command only, so seatd-launch stops seatd itself and exits with the
    /// command's status; after `grace`, [`kill_group`](Self::kill_group).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(pid) = self.command_pid() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if let Some(status) = self.wait_timeout(grace) {
            self.reap_group(Duration::from_secs(5));
            return Some(status);
        }
        self.kill_group();
        self.status
    }

    /// SIGTERM to the whole group, SIGKILL after 2 s, then reaps every member (5 s at most;
    /// panics if any is left, unless already panicking).
    pub fn kill_group(&mut self) {
        let pgid = self.launcher;
        unsafe { libc::killpg(pgid, libc::SIGTERM) };
        if !self.reap_group(Duration::from_secs(2)) {
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            if !self.reap_group(Duration::from_secs(5)) && !std::thread::panicking() {
                panic!(
                    "process group {pgid} survived SIGKILL: {:?}",
                    group_members(pgid)
                );
            }
        }
    }

    /// Reaps group members until none is left (true) or `timeout` passes.
    fn reap_group(&mut self, timeout: Duration) -> bool {
        let pgid = self.launcher;
        let deadline = Instant::now() + timeout;
        loop {
            let mut raw = 0;
            let r = unsafe { libc::waitpid(-pgid, &mut raw, libc::WNOHANG) };
            if r == self.launcher && self.status.is_none() {
                self.status = Some(ExitStatus::from_raw(raw));
            }
            if r > 0 {
                continue;
            }
            // ECHILD: none of ours left in the group; members that are not our children (should
            // not exist with the subreaper) would still show in /proc.
            if r < 0 && group_members(pgid).is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Both logs, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ({}):\n{}--- stderr ({}):\n{}",
            self.stdout_path.display(),
            self.stdout(),
            self.stderr_path.display(),
            self.stderr()
        )
    }
}

impl Drop for SeatedChild {
    fn drop(&mut self) {
        if self.status.is_some() && group_members(self.launcher).is_empty() {
            return;
        }
        self.kill_group();
    }
}
