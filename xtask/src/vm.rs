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
//!   `busybox-static`, `kmod`, `xz-utils`, and downloads (never installs) the
//!   `linux-image-6.12.*-amd64` package named by backports' `linux-image-amd64`, extracted with
//!   `dpkg-deb -x` and `depmod -b` into the cache. `apt-get update` runs only when something must
//!   be installed.
//! * The cache is `/var/cache/fencegate-vm` (override: `FENCEGATE_VM_CACHE`): it is per machine
//!   like apt's own cache, outside the workspace so that `cargo clean` keeps it, and a kernel
//!   tree once extracted stays pinned there (newest cached 6.12 wins) until the folder is removed.
//!   Layout: `<kver>/root/{boot,lib/modules}` (the extracted package, depmod'ed),
//!   `<kver>/complete` (stamp), `<kver>/initramfs.cpio`, and `current.env` (what
//!   `xtask/vm/run-in-guest` boots when called by hand).
//! * The initramfs (newc cpio, written here) holds busybox, `xtask/vm/init-stage1.sh` as `/init`,
//!   `xtask/vm/guest-init.sh` (stage 2) and the decompressed 9p modules (Debian ships `.ko.xz`;
//!   busybox's insmod is not trusted with xz, so they are decompressed on the host). Stage 2
//!   runs on the host's `/` and loads `virtio_gpu` and `vgem` with the host's kmod `modprobe -d
//!   <cache tree>` (the host has no `/lib/modules/<kver>` and the guest's `/` is read-only).
//! * [`run_in_guest`] and the cargo runner are the same script, `xtask/vm/run-in-guest`: it boots
//!   one guest, runs one command with the same cwd and a whitelisted environment, brings its
//!   stdout/stderr and exit status back over a writable 9p share, and has a watchdog
//!   (`FENCEGATE_VM_TIMEOUT`, default 600 s) that kills QEMU and fails clearly.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::packages;
use crate::test_totals::Totals;

/// Kernel series booted in the guest (Debian bookworm-backports ships it).
const KERNEL_SERIES: &str = "6.12";
/// Default cache location; see the module docs.
const DEFAULT_CACHE: &str = "/var/cache/fencegate-vm";
/// Modules the initramfs must load to mount the host's `/` (their dependencies are added from
/// modules.dep; built-in ones are skipped).
const STAGE1_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];
/// Stage 1 (`/init`) and stage 2 of the guest, embedded so the initramfs always matches this build.
const STAGE1: &str = include_str!("../vm/init-stage1.sh");
const STAGE2: &str = include_str!("../vm/guest-init.sh");
/// Test targets whose name starts with this run in the guest.
const KERNEL_TEST_PREFIX: &str = "kernel_";

/// Install (idempotently) everything the VM tier needs: QEMU 10 from backports, busybox-static,
/// kmod, xz-utils, and the cached, extracted 6.12 kernel. Prints what it installs; a second run
/// only checks.
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
// vm-test arguments, selection and result parsing

#[derive(Default, Debug)]
struct VmTestArgs {
    packages: Vec<String>,
    tests: Vec<String>,
    release: bool,
    /// Extra cargo flags passed through (e.g. `--features x`, `-j1`).
    cargo_extra: Vec<String>,
    /// Test-name filters and libtest arguments (after `--`).
    test_args: Vec<String>,
}

impl VmTestArgs {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = VmTestArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("vm-test: {flag} needs a value"))
            };
            match a.as_str() {
                "--" => {
                    o.test_args.extend(it.by_ref().cloned());
                    break;
                }
                "-p" | "--package" => o.packages.push(value(a)?),
                "--test" => o.tests.push(value(a)?),
                "--release" => o.release = true,
                "-F" | "--features" | "-j" | "--jobs" | "--profile" => {
                    let v = value(a)?;
                    o.cargo_extra.push(a.clone());
                    o.cargo_extra.push(v);
                }
                "--all-features"
                | "--no-default-features"
                | "--locked"
                | "--offline"
                | "--frozen" => o.cargo_extra.push(a.clone()),
                "-h" | "--help" => {
                    println!(
                        "cargo xtask vm-test [-p PKG]... [--test kernel_NAME]... [--release] \
                         [cargo flags] [FILTER]... [-- LIBTEST-ARGS]\n\
                         Runs the workspace's kernel test binaries (tests/kernel_*.rs) in QEMU guests."
                    );
                    std::process::exit(0);
                }
                s if s.starts_with("--package=") => o.packages.push(s["--package=".len()..].into()),
                s if s.starts_with("--test=") => o.tests.push(s["--test=".len()..].into()),
                s if s.starts_with("-p") && s.len() > 2 => o.packages.push(s[2..].into()),
                s if s.starts_with("--features=") || s.starts_with("--profile=") => {
                    o.cargo_extra.push(s.into())
                }
                s if s.starts_with('-') => {
                    bail!("vm-test: unknown option {s} (libtest options go after `--`)")
                }
                _ => o.test_args.push(a.clone()),
            }
        }
        Ok(o)
    }
}

/// The kernel test targets of one package, and the features they require.
#[derive(Default, Debug)]
struct KernelTests {
    tests: Vec<String>,
    /// Union of the targets' `required-features` (enabled by `vm-test`, so that a feature-gated
    /// kernel test is built and run, never skipped).
    features: BTreeSet<String>,
}

/// package name -> kernel test targets, from `cargo metadata`.
fn select_kernel_tests(opts: &VmTestArgs) -> Result<BTreeMap<String, KernelTests>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut found: BTreeMap<String, KernelTests> = BTreeMap::new();
    let mut all_tests: Vec<(String, String)> = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let pname = pkg["name"].as_str().unwrap_or_default().to_string();
        for t in pkg["targets"].as_array().into_iter().flatten() {
            let is_test = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if !is_test {
                continue;
            }
            let tname = t["name"].as_str().unwrap_or_default().to_string();
            all_tests.push((pname.clone(), tname.clone()));
            let wanted_pkg = opts.packages.is_empty() || opts.packages.contains(&pname);
            let wanted_test = if opts.tests.is_empty() {
                tname.starts_with(KERNEL_TEST_PREFIX)
            } else {
                opts.tests.contains(&tname)
            };
            if wanted_pkg && wanted_test {
                let entry = found.entry(pname.clone()).or_default();
                entry.tests.push(tname);
                entry.features.extend(
                    t["required-features"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.as_str().map(str::to_owned)),
                );
            }
        }
    }
    for p in &opts.packages {
        if !meta["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|pkg| pkg["name"] == p.as_str())
        {
            bail!("vm-test: no workspace member named {p}");
        }
    }
    for t in &opts.tests {
        if !found.values().flat_map(|k| &k.tests).any(|x| x == t) {
            bail!("vm-test: no test target named {t} in the selected packages");
        }
    }
    if found.is_empty() {
        bail!(
            "vm-test: no kernel test targets (tests/{KERNEL_TEST_PREFIX}*.rs) in the selected packages; \
             test targets seen: {all_tests:?}"
        );
    }
    Ok(found)
}

fn render_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
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
    let initrd = assets.dir.join("initramfs.cpio");
    build_initramfs(&assets, &initrd)?;
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
fn write_if_changed(path: &Path, data: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    write_atomic(path, data)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Packages and the cached kernel

struct Assets {
    kver: String,
    /// `<cache>/<kver>`
    dir: PathBuf,
    /// `<cache>/<kver>/root`: the extracted package (modprobe -d / depmod -b base).
    root: PathBuf,
    kernel: PathBuf,
}

fn cache_root() -> PathBuf {
    std::env::var_os("FENCEGATE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

fn ensure_installed() -> Result<Assets> {
    packages::ensure_versions(&[
        ("qemu-system-x86", 10),
        ("busybox-static", 0),
        ("kmod", 0),
        ("xz-utils", 0),
        // kernel_source counts the syscalls of an already-signalled fence with it.
        ("strace", 0),
    ])?;
    let mut apt = packages::Apt::default();

    // The kernel: newest complete cached tree of the series, else download + extract.
    let cache = cache_root();
    if let Some(assets) = cached_kernel(&cache)? {
        return Ok(assets);
    }
    if !packages::is_root() && fs::create_dir_all(&cache).is_err() {
        bail!(
            "vm: cannot create {} (run as root or set FENCEGATE_VM_CACHE)",
            cache.display()
        );
    }
    let backports = apt.backports_suite()?.unwrap_or_else(|| "backports".into());
    let (pkg, version) = match resolve_kernel_package()? {
        Some(x) => x,
        None => {
            apt.update()?;
            resolve_kernel_package()?.ok_or_else(|| {
                anyhow!("vm: apt knows no linux-image-amd64 depending on a {KERNEL_SERIES} kernel ({backports})")
            })?
        }
    };
    let kver = pkg
        .strip_prefix("linux-image-")
        .ok_or_else(|| anyhow!("odd kernel package {pkg}"))?
        .to_string();
    eprintln!(
        "vm: downloading {pkg} {version} (extracted into {}, not installed)",
        cache.display()
    );
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let dl = cache.join(format!("download.{}", std::process::id()));
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    // Let apt's _apt sandbox user write there (avoids a warning and works unsandboxed anyway).
    let _ = Command::new("chmod").arg("0777").arg(&dl).status();
    let pkg_ver = format!("{pkg}={version}");
    let download = || -> Result<bool> {
        eprintln!("vm: apt-get download {pkg_ver}");
        Ok(Command::new("apt-get")
            .args(["download", "-q", &pkg_ver])
            .current_dir(&dl)
            .stdout(std::io::stderr())
            .status()
            .context("apt-get download")?
            .success())
    };
    if !download()? {
        // Stale lists name a version the mirror no longer has: refresh once and retry.
        apt.update()?;
        if !download()? {
            bail!("vm: apt-get download {pkg_ver} failed");
        }
    }
    let deb = fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download produced no .deb in {}", dl.display()))?;

    let t0 = Instant::now();
    let staging = cache.join(format!("{kver}.partial.{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let root = staging.join("root");
    fs::create_dir_all(&root)?;
    run_checked(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    let moddir = root.join("lib/modules").join(&kver);
    if !moddir.is_dir() {
        // Newer packages put modules under usr/lib: give depmod/modprobe their lib/ path.
        if root.join("usr/lib/modules").join(&kver).is_dir() && !root.join("lib").exists() {
            std::os::unix::fs::symlink("usr/lib", root.join("lib"))?;
        } else {
            bail!("no lib/modules/{kver} in {}", deb.display());
        }
    }
    let depmod = ["/usr/sbin/depmod", "/sbin/depmod"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("depmod");
    run_checked(
        Command::new(depmod).arg("-b").arg(&root).arg(&kver),
        "depmod -b",
    )?;
    fs::write(staging.join("complete"), format!("{pkg} {version}\n"))?;
    let dir = cache.join(&kver);
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&staging, &dir)?;
    let _ = fs::remove_dir_all(&dl);
    eprintln!(
        "vm: kernel {kver} extracted and depmod'ed in {:.1}s into {}",
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    cached_kernel(&cache)?.ok_or_else(|| anyhow!("kernel cache in {} is incomplete", dir.display()))
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The newest complete `<cache>/<kver>` of the series.
fn cached_kernel(cache: &Path) -> Result<Option<Assets>> {
    let Ok(rd) = fs::read_dir(cache) else {
        return Ok(None);
    };
    let mut best: Option<(Vec<u64>, Assets)> = None;
    for e in rd.flatten() {
        let kver = e.file_name().to_string_lossy().into_owned();
        if !kver.starts_with(&format!("{KERNEL_SERIES}.")) || kver.contains(".partial.") {
            continue;
        }
        let dir = e.path();
        let root = dir.join("root");
        let kernel = root.join("boot").join(format!("vmlinuz-{kver}"));
        if !dir.join("complete").is_file()
            || !kernel.is_file()
            || !root
                .join("lib/modules")
                .join(&kver)
                .join("modules.dep")
                .is_file()
        {
            continue;
        }
        let key: Vec<u64> = kver
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((
                key,
                Assets {
                    kver,
                    dir,
                    root,
                    kernel,
                },
            ));
        }
    }
    Ok(best.map(|(_, a)| a))
}

/// `(linux-image-<kver>, version)` from the `linux-image-amd64` metapackage version that
/// depends on a kernel of [`KERNEL_SERIES`] (bookworm-backports today).
fn resolve_kernel_package() -> Result<Option<(String, String)>> {
    let out = Command::new("apt-cache")
        .args(["show", "linux-image-amd64"])
        .stderr(Stdio::null())
        .output()
        .context("apt-cache show linux-image-amd64")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let (Some(meta_version), Some(depends)) = (field("Version:"), field("Depends:")) else {
            continue;
        };
        for dep in depends.split(',') {
            let dep = dep.trim();
            let name = dep.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&format!("linux-image-{KERNEL_SERIES}."))
                && name.ends_with("-amd64")
            {
                // The image package has the metapackage's version (`(= 6.12.95-1~bpo12+1)`).
                let version = dep
                    .split_once("(=")
                    .map(|(_, v)| v.trim_end_matches(')').trim().to_string())
                    .unwrap_or(meta_version);
                return Ok(Some((name.to_string(), version)));
            }
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// The initramfs

fn find_busybox() -> Result<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("busybox not found (apt-get install busybox-static)"))
}

/// The modules (paths relative to lib/modules/<kver>) to insmod in stage 1, in load order.
fn stage1_modules(moddir: &Path) -> Result<Vec<String>> {
    let dep_text = fs::read_to_string(moddir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", moddir.display()))?;
    let builtin_text = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let norm = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let builtin: HashSet<String> = builtin_text.lines().map(norm).collect();
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep_text.lines() {
        let Some((m, ds)) = line.split_once(':') else {
            continue;
        };
        deps.insert(
            norm(m),
            (m.to_string(), ds.split_whitespace().map(norm).collect()),
        );
    }
    fn visit(
        name: &str,
        deps: &HashMap<String, (String, Vec<String>)>,
        builtin: &HashSet<String>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        if builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, ds) = deps
            .get(name)
            .ok_or_else(|| anyhow!("module {name} is neither built in nor in modules.dep"))?;
        for d in ds {
            visit(d, deps, builtin, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for m in STAGE1_MODULES {
        visit(m, &deps, &builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn decompress_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool: Option<(&str, &[&str])> = if name.ends_with(".xz") {
        Some(("xz", &["-dc"]))
    } else if name.ends_with(".zst") {
        Some(("zstd", &["-dc", "-q"]))
    } else if name.ends_with(".gz") {
        Some(("gzip", &["-dc"]))
    } else {
        None
    };
    match tool {
        None => Ok(fs::read(path)?),
        Some((prog, args)) => {
            let out = Command::new(prog)
                .args(args)
                .arg(path)
                .output()
                .with_context(|| format!("running {prog} on {}", path.display()))?;
            if !out.status.success() {
                bail!("{prog} -d {} failed", path.display());
            }
            Ok(out.stdout)
        }
    }
}

fn build_initramfs(assets: &Assets, out: &Path) -> Result<()> {
    let moddir = assets.root.join("lib/modules").join(&assets.kver);
    let mods = stage1_modules(&moddir)?;
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "newroot", "modules"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, &fs::read(find_busybox()?)?);
    cpio.file("init", 0o755, STAGE1.as_bytes());
    cpio.file("guest-init.sh", 0o755, STAGE2.as_bytes());
    let mut order = String::new();
    for m in &mods {
        let name = m
            .rsplit('/')
            .next()
            .unwrap_or(m)
            .split(".ko")
            .next()
            .unwrap_or(m)
            .to_string();
        cpio.file(
            &format!("modules/{name}.ko"),
            0o644,
            &decompress_module(&moddir.join(m))?,
        );
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("modules/order", 0o644, order.as_bytes());
    write_if_changed(out, &cpio.finish())
}

/// A minimal writer for the "newc" cpio format the kernel unpacks as initramfs.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len(),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() + 1,
            0, // check
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }
    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }
    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }
    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_test_args() {
        let a: Vec<String> = [
            "-p",
            "fence-bridge",
            "--test",
            "kernel_devices",
            "virtio",
            "--",
            "--nocapture",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = VmTestArgs::parse(&a).unwrap();
        assert_eq!(o.packages, ["fence-bridge"]);
        assert_eq!(o.tests, ["kernel_devices"]);
        assert_eq!(o.test_args, ["virtio", "--nocapture"]);
    }

    #[test]
    fn cpio_is_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let b = c.finish();
        assert_eq!(b.len() % 4, 0);
        assert!(b.starts_with(b"070701"));
        assert!(b.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
