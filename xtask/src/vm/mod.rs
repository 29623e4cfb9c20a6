//! The VM test tier: `cargo xtask vm-test`.
//!
//! The build machines have no DRM device at all (no `/dev/dri`, no KVM that a stock kernel
//! survives), so tests that need a real kernel DRM device run inside a throw-away QEMU guest
//! (TCG, `-cpu max`) booting Debian's Linux 6.12 from bookworm-backports, with the host's `/`
//! shared read-only over virtio-9p, a virtio-gpu device and vgem. See `shared/vm-lab.md` for the
//! measurements behind every choice here.
//!
//! # Convention for kernel tests
//!
//! * A test *target* whose name starts with `kernel_` (that is, a file `tests/kernel_*.rs` in any
//!   workspace member) is a kernel test binary. `cargo xtask vm-test` finds all of them through
//!   `cargo metadata` and runs them with `cargo test -p <pkg> --test kernel_...`, every binary in
//!   its own guest boot (a boot costs seconds under TCG: group kernel tests into few binaries).
//! * A kernel test first looks for the device it needs. On a machine without it (the host),
//!   it prints `SKIP (no /dev/dri…): needs the kernel guest, run `cargo xtask vm-test`` and
//!   returns, so a plain `cargo test --workspace` stays green on the build machines.
//! * In the guest, `FENCEGATE_REQUIRE_KERNEL=1` is set: there a missing device is a test
//!   **failure**, never a skip. The helper lives in `fence-bridge/tests/kernel_devices.rs`
//!   (`require_device`) until it moves into a shared dev crate.
//! * `vm-test` fails when any kernel test failed, when any was ignored, or when none ran; it
//!   prints `vm-test: N kernel tests passed, M failed, K ignored in the guest`.
//!
//! # Pieces
//!
//! * [`install_packages`]: idempotent. Adds `<codename>-backports` to apt when missing (same
//!   mirror as the machine's own Debian sources), installs `qemu-system-x86` (10.x, backports),
//!   `busybox-static`, `kmod`, `xz-utils`, `strace`, `seatd` and `udev` (the guest runs the
//!   host's binaries: `seatd-launch`, `systemd-udevd`, `udevadm` for a DRM-session compositor),
//!   and downloads (never installs) the `linux-image-6.12.*-amd64` package named by backports'
//!   `linux-image-amd64`, extracted with `dpkg-deb -x` and `depmod -b` into the cache. `apt-get update` runs only when something must
//!   be installed.
//! * The cache is `/var/cache/fencegate-vm` (override: `FENCEGATE_VM_CACHE`): it is per machine
//!   like apt's own cache, outside the workspace so that `cargo clean` keeps it, and a kernel
//!   tree once extracted stays pinned there (newest cached 6.12 wins) until the folder is removed.
//!   Layout: `<kver>/root/{boot,lib/modules}` (the extracted package, depmod'ed),
//!   `<kver>/complete` (stamp), `<kver>/vkms/{vkms.ko,complete}` (see below),
//!   `<kver>/initramfs.cpio`, and `current.env` (what `xtask/vm/run-in-guest` boots when called
//!   by hand).
//! * vkms (`vkms.rs`): Debian's kernel lacks it, so it is built out of tree from the guest
//!   kernel's own `linux-source-6.12` and headers packages (downloaded, not installed), once
//!   per kernel version, and cached in `<kver>/vkms/`; a failed build fails the task.
//! * The initramfs (newc cpio, written here) holds busybox, `xtask/vm/init-stage1.sh` as `/init`,
//!   `xtask/vm/guest-init.sh` (stage 2) and the decompressed 9p modules (Debian ships `.ko.xz`;
//!   busybox's insmod is not trusted with xz, so they are decompressed on the host), and the
//!   cached `vkms.ko` under `/extra`. Stage 2 runs on the host's `/` and loads `virtio_gpu` and
//!   `vgem` with the host's kmod `modprobe -d <cache tree>` (the host has no
//!   `/lib/modules/<kver>` and the guest's `/` is read-only), then vkms' dependencies the same
//!   way and `insmod vkms.ko enable_overlay=1`; a module that does not load stops the guest.
//! * [`run_in_guest`] and the cargo runner are the same script, `xtask/vm/run-in-guest`: it boots
//!   one guest, runs one command with the same cwd and a whitelisted environment, brings its
//!   stdout/stderr and exit status back over a writable 9p share, and has a watchdog
//!   (`FENCEGATE_VM_TIMEOUT`, default 600 s) that kills QEMU and fails clearly.
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::test_totals::Totals;
mod initramfs;
mod kernel;
mod selection;
mod vkms;

use self::initramfs::build_initramfs;
use self::kernel::{cache_root, ensure_installed};
use self::selection::{render_cmd, select_kernel_tests, KernelTests, VmTestArgs};

/// Kernel series booted in the guest (Debian bookworm-backports ships it).
const KERNEL_SERIES: &str = "6.12";
/// Default cache location; see the module docs.
const DEFAULT_CACHE: &str = "/var/cache/fencegate-vm";
/// Modules the initramfs must load to mount the host's `/` (their dependencies are added from
/// modules.dep; built-in ones are skipped).
const STAGE1_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
/// Stage 1 (`/init`) and stage 2 of the guest, embedded so the initramfs always matches this build.
const STAGE1: &str = include_str!("../../vm/init-stage1.sh");
const STAGE2: &str = include_str!("../../vm/guest-init.sh");
/// Test targets whose name starts with this run in the guest.
const KERNEL_TEST_PREFIX: &str = "kernel_";

/// Install (idempotently) everything the VM tier needs: QEMU 10 from backports, busybox-static,
/// kmod, xz-utils, strace, seatd, udev, the cached, extracted 6.12 kernel and the vkms module
/// built for it. Prints what it installs; a second run only checks.
pub fn install_packages() -> Result<()> {
    // prepare() = the packages + the cached kernel + the initramfs and current.env, so that
    // `xtask/vm/run-in-guest CMD` works by hand afterwards.
    prepare()?;
    Ok(())
}

/// `cargo xtask vm-test [-p PKG]... [--test kernel_NAME]... [--release] [FILTER]... [-- LIBTEST-ARGS]`
///
/// Installs what is missing, then runs every kernel test binary (test targets named
/// `kernel_*` in the workspace; `-p` / `--test` narrow the selection) in its own guest through
/// the cargo runner, prints the guest's totals and fails unless at least one test ran and none
/// failed or was ignored. FILTER arguments and everything after `--` go to the test binaries.
pub fn vm_test(args: &[String]) -> Result<Totals> {
    let started = Instant::now();
    let opts = VmTestArgs::parse(args)?;
    let guest = prepare()?;
    let selection = select_kernel_tests(&opts)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    // The example clients' binaries, which kernel tests run in the guest (where cargo cannot
    // build: the guest's `/` is read-only). Same profile as the tests.
    let mut build = Command::new(&cargo);
    build.args(["build", "--quiet", "-p", "fencegate-clients", "--bins"]);
    if opts.release {
        build.arg("--release");
    }
    let status = build
        .status()
        .context("running cargo build for the example clients")?;
    if !status.success() {
        bail!("vm-test: building the example clients failed ({status})");
    }

    let mut totals = Totals::default();
    for (pkg, KernelTests { tests, features }) in &selection {
        let mut cmd = Command::new(&cargo);
        cmd.arg("test").arg("-p").arg(pkg);
        for t in tests {
            cmd.arg("--test").arg(t);
        }
        if !features.is_empty() {
            // The selected targets' `required-features`: without them cargo refuses a named
            // target, or silently leaves it out of a whole-package run.
            cmd.arg("--features")
                .arg(features.iter().cloned().collect::<Vec<_>>().join(","));
        }
        if opts.release {
            cmd.arg("--release");
        }
        cmd.args(&opts.cargo_extra);
        if !opts.test_args.is_empty() {
            cmd.arg("--").args(&opts.test_args);
        }
        guest.apply_env(&mut cmd);
        println!(
            "vm-test: {pkg}: {} in the guest ({})",
            tests.join(", "),
            render_cmd(&cmd)
        );
        let status = totals.run(&mut cmd)?;
        if !status.success() {
            totals
                .cargo_failures
                .push(format!("{pkg}: cargo test exited with {status}"));
        }
    }

    println!(
        "vm-test: {} kernel tests passed, {} failed, {} ignored in the guest ({} test binaries, {:.1}s total)",
        totals.passed,
        totals.failed,
        totals.ignored,
        totals.binaries,
        started.elapsed().as_secs_f64()
    );
    if totals.failed > 0 {
        bail!(
            "vm-test failed: {} kernel tests failed in the guest",
            totals.failed
        );
    }
    if !totals.cargo_failures.is_empty() {
        bail!("vm-test failed: {}", totals.cargo_failures.join("; "));
    }
    if totals.ignored > 0 {
        bail!(
            "vm-test failed: {} kernel tests were ignored: kernel tests must run in the guest",
            totals.ignored
        );
    }
    if totals.passed == 0 {
        bail!("vm-test failed: no kernel test ran in the guest");
    }
    Ok(totals)
}

/// Boot a guest, run `cmd` there (same cwd, whitelisted environment plus
/// `FENCEGATE_REQUIRE_KERNEL=1`), stream back its stdout/stderr once the guest has stopped and
/// return its exit code (124: the watchdog killed QEMU; 125: the guest reported nothing).
pub fn run_in_guest(cmd: &[String]) -> Result<i32> {
    if cmd.is_empty() {
        bail!("run_in_guest: no command given");
    }
    let guest = prepare()?;
    let mut c = Command::new(&guest.runner);
    c.args(cmd);
    guest.apply_env(&mut c);
    let status = c
        .status()
        .with_context(|| format!("running {}", guest.runner.display()))?;
    Ok(match status.code() {
        Some(code) => code,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    })
}
// ---------------------------------------------------------------------------------------------
// Guest preparation: assets + initramfs + environment for the runner script

/// Everything the runner script needs to boot a guest.
struct Guest {
    runner: PathBuf,
    env: Vec<(String, OsString)>,
}

impl Guest {
    fn apply_env(&self, cmd: &mut Command) {
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
    }
}

fn prepare() -> Result<Guest> {
    let cache = cache_root();
    if cache.starts_with("/tmp") || cache.starts_with("/run") {
        // The guest has its own tmpfs there and could not see the kernel modules.
        bail!(
            "FENCEGATE_VM_CACHE={} must not be under /tmp or /run",
            cache.display()
        );
    }
    let assets = ensure_installed()?;
    let vkms = vkms::ensure_vkms(&assets)?;
    let initrd = assets.dir.join("initramfs.cpio");
    build_initramfs(&assets, &[vkms], &initrd)?;
    let runner = workspace_root()?.join("xtask/vm/run-in-guest");
    if !runner.is_file() {
        bail!("missing {}", runner.display());
    }
    {
        // A checkout or copy that lost the executable bit must still work as the cargo runner.
        use std::os::unix::fs::PermissionsExt;
        let mut perm = fs::metadata(&runner)?.permissions();
        if perm.mode() & 0o111 != 0o111 {
            perm.set_mode(perm.mode() | 0o755);
            fs::set_permissions(&runner, perm)
                .with_context(|| format!("making {} executable", runner.display()))?;
        }
    }
    let env: Vec<(String, OsString)> = vec![
        ("FENCEGATE_VM_KERNEL".into(), assets.kernel.clone().into()),
        ("FENCEGATE_VM_INITRD".into(), initrd.clone().into()),
        ("FENCEGATE_VM_MODROOT".into(), assets.root.clone().into()),
        ("FENCEGATE_VM_KVER".into(), assets.kver.clone().into()),
        (
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER".into(),
            runner.clone().into(),
        ),
    ];
    // current.env lets `xtask/vm/run-in-guest CMD` work by hand afterwards.
    let mut text = String::from("# written by cargo xtask (xtask/src/vm.rs)\n");
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("FENCEGATE_VM_")) {
        text.push_str(&format!("{k}={}\n", sh_quote(&v.to_string_lossy())));
    }
    write_if_changed(&cache_root().join("current.env"), text.as_bytes())?;
    eprintln!(
        "vm: guest ready: kernel {}, initramfs {}",
        assets.kernel.display(),
        initrd.display()
    );
    Ok(Guest { runner, env })
}

fn workspace_root() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output()
        .context("cargo locate-project")?;
    if !out.status.success() {
        bail!(
            "cargo locate-project failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let manifest = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    Ok(manifest
        .parent()
        .ok_or_else(|| anyhow!("odd manifest path {}", manifest.display()))?
        .to_path_buf())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes only when the content differs (keeps a second run a pure check).
pub(super) fn write_if_changed(path: &Path, data: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    write_atomic(path, data)
}

pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
