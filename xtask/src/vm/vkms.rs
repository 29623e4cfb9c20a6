//! vkms, the kernel's virtual KMS driver, for the guest: built out of tree against the guest
//! kernel, cached per kernel version, carried by the initramfs and loaded by the guest's init.
//!
//! Debian's config leaves `CONFIG_DRM_VKMS` unset, but vkms has what virtio-gpu lacks: it is built
//! on the GEM atomic helpers, so a flip waits for the implicit fences of its framebuffer's
//! dma-buf (`vkms_prepare_fb()` calls `drm_gem_plane_helper_prepare_fb()`; virtio-gpu in 6.12
//! ignores them), and it has overlay planes (8 with `enable_overlay=1`) and a cursor plane.
//!
//! The build uses the guest kernel's own source and headers, at the guest kernel package's exact
//! version: `linux-source-6.12`, `linux-headers-<kver>`, `linux-headers-<abi>-common` and
//! `linux-kbuild-<abi>` are **downloaded** with `apt-get download` and extracted into a scratch
//! folder in `/dev/shm` when it has room (installing `linux-headers-<kver>` would install the
//! kernel image it depends on, and the guest kernel is never installed on the host); the
//! compiler the headers package names (`gcc-12`), `make` and `libelf1` (objtool) are installed
//! from apt. Only `drivers/gpu/drm/vkms` is unpacked from the source tarball. No BTF is
//! generated (that needs pahole; nothing in the guest uses vkms' BTF). The module is stripped of
//! debug info and cached as `<cache>/<kver>/vkms/vkms.ko` with `<cache>/<kver>/vkms/complete`
//! (what it was built from, its module dependencies): built once per guest kernel, rebuilt only
//! when missing. The scratch folder (~170 MB of packages) is removed afterwards.
//!
//! A failed build fails the task (a guest without vkms would only fail later, and less clearly),
//! with the last lines of the build log, which stays in `<cache>/<kver>/vkms-build.log`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::kernel::Assets;
use super::{write_atomic, KERNEL_SERIES};
use crate::packages::{self, Apt};

/// Module parameters the guest loads vkms with: the 8 overlay planes are off by default (the
/// cursor plane and the writeback connector are on).
const VKMS_PARAMS: &[&str] = &["enable_overlay=1"];
/// Where vkms lives in the kernel tree.
const VKMS_SRC: &str = "drivers/gpu/drm/vkms";

/// An out-of-tree module for the guest: its `.ko`, the in-tree modules it needs loaded first
/// (modinfo `depends`) and its parameters.
pub(super) struct ExtraModule {
    pub(super) name: String,
    pub(super) ko: PathBuf,
    pub(super) depends: Vec<String>,
    pub(super) params: Vec<String>,
}

/// vkms for the guest kernel: from the cache, else built (and cached). Prints one line saying
/// which.
pub(super) fn ensure_vkms(assets: &Assets) -> Result<ExtraModule> {
    let dir = assets.dir.join("vkms");
    if let Some((module, source)) = cached(&dir)? {
        eprintln!(
            "vm: vkms.ko for {}: taken from the cache ({}, built from {source})",
            assets.kver,
            module.ko.display()
        );
        return Ok(module);
    }
    let t0 = Instant::now();
    let steps = build(assets, &dir)
        .with_context(|| format!("vm: building vkms.ko for the guest kernel {}", assets.kver))?;
    let (module, source) = cached(&dir)?
        .ok_or_else(|| anyhow!("vm: vkms.ko was built but {} is incomplete", dir.display()))?;
    eprintln!(
        "vm: vkms.ko for {}: built in {:.1}s ({steps}) from {source}, cached as {}",
        assets.kver,
        t0.elapsed().as_secs_f64(),
        module.ko.display()
    );
    Ok(module)
}

/// `(module, "what it was built from")` when `<dir>/complete` and `<dir>/vkms.ko` exist.
fn cached(dir: &Path) -> Result<Option<(ExtraModule, String)>> {
    let ko = dir.join("vkms.ko");
    let Ok(stamp) = fs::read_to_string(dir.join("complete")) else {
        return Ok(None);
    };
    if !ko.is_file() {
        return Ok(None);
    }
    let field = |name: &str| {
        stamp
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::trim)
    };
    let depends = field("depends")
        .ok_or_else(|| anyhow!("no depends= in {}/complete", dir.display()))?
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    let source = field("source").unwrap_or("?").to_string();
    Ok(Some((
        ExtraModule {
            name: "vkms".into(),
            ko,
            depends,
            params: VKMS_PARAMS.iter().map(|p| p.to_string()).collect(),
        },
        source,
    )))
}

/// The guest kernel package's version (`6.12.95-1~bpo12+1`), from the kernel cache's stamp
/// (`<pkg> <version>`, written by `kernel.rs`).
fn kernel_package_version(assets: &Assets) -> Result<String> {
    let stamp = assets.dir.join("complete");
    let text =
        fs::read_to_string(&stamp).with_context(|| format!("reading {}", stamp.display()))?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no package version in {}", stamp.display()))
}

/// Where the scratch folder goes: `/dev/shm` when it has room (the ~17,000 header files unpack
/// and delete in ~1.5 s there, ~30 s on a busy ext4 disk), else the cache folder.
fn scratch_parent(assets: &Assets) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let avail_kib = Command::new("df")
        .args(["-P", "-k"])
        .arg(shm)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .nth(1)?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        });
    match avail_kib {
        // Peak use is ~250 MB (the packages, then the headers tree).
        Some(kib) if kib >= 1 << 20 => shm.to_path_buf(),
        _ => assets.dir.clone(),
    }
}

/// Builds in a scratch folder (`fencegate-vkms.<kver>.partial.<pid>`), then moves the result to
/// `dir`; returns the step timings. The scratch folder is always removed; on failure the log is kept next to
/// the cache.
fn build(assets: &Assets, dir: &Path) -> Result<String> {
    let parent = scratch_parent(assets);
    remove_stale_scratch(&parent);
    remove_stale_scratch(&assets.dir);
    let staging = parent.join(format!(
        "fencegate-vkms.{}.partial.{}",
        assets.kver,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let log_path = staging.join("build.log");
    let result = build_in(assets, &staging, &log_path, dir);
    let kept_log = assets.dir.join("vkms-build.log");
    let _ = fs::copy(&log_path, &kept_log);
    let t_cleanup = Instant::now();
    let _ = fs::remove_dir_all(&staging);
    let cleanup_s = t_cleanup.elapsed().as_secs_f64();
    result
        .map(|steps| format!("{steps}, cleanup {cleanup_s:.1}s"))
        .map_err(|err| {
            let tail = fs::read_to_string(&kept_log)
                .map(|log| {
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(25)..]
                        .iter()
                        .map(|l| format!("  | {l}\n"))
                        .collect::<String>()
                })
                .unwrap_or_default();
            anyhow!(
                "{err:#}\nthe vkms build log is {}; its last lines:\n{tail}",
                kept_log.display()
            )
        })
}

fn build_in(assets: &Assets, staging: &Path, log_path: &Path, dir: &Path) -> Result<String> {
    let kver = &assets.kver;
    let version = kernel_package_version(assets)?;
    let mut log = Log {
        file: fs::File::create(log_path)?,
        start: Instant::now(),
    };
    writeln!(log.file, "vkms for {kver} (packages at version {version})")?;

    // The headers package names the rest: its -common package, kbuild, and the compiler.
    let mut apt = Apt::default();
    let suite = apt
        .backports_suite()?
        .unwrap_or_else(|| "the host's sources".into());
    let headers = format!("linux-headers-{kver}");
    let depends = match package_depends(&headers, &version)? {
        Some(d) => d,
        None => {
            apt.update()?;
            package_depends(&headers, &version)?.ok_or_else(|| {
                anyhow!(
                    "apt knows no {headers} {version} ({suite}): the cached guest kernel is no \
                     longer offered; remove {} to move to the current one",
                    assets.dir.display()
                )
            })?
        }
    };
    let pick = |what: &str, f: &dyn Fn(&str) -> bool| {
        depends
            .iter()
            .find(|d| f(d))
            .cloned()
            .ok_or_else(|| anyhow!("{headers} {version} depends on no {what}: {depends:?}"))
    };
    let common = pick("linux-headers-*-common", &|d| {
        d.starts_with("linux-headers-") && d.ends_with("-common")
    })?;
    let kbuild = pick("linux-kbuild-*", &|d| d.starts_with("linux-kbuild-"))?;
    let gcc = pick("gcc-N", &|d| {
        d.strip_prefix("gcc-")
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    })?;
    writeln!(log.file, "{headers} depends on {common}, {kbuild}, {gcc}")?;
    packages::ensure(&[gcc.as_str(), "make", "libelf1", "binutils", "kmod"])?;
    let apt_s = log.start.elapsed().as_secs_f64();

    // Download (never install) the four packages of the guest kernel's exact version.
    let t_download = Instant::now();
    let debs = staging.join("debs");
    fs::create_dir_all(&debs)?;
    // Let apt's _apt sandbox user write there (as kernel.rs does for the image).
    let _ = Command::new("chmod").arg("0777").arg(&debs).status();
    let source_pkg = format!("linux-source-{KERNEL_SERIES}");
    let wanted: Vec<String> = [&headers, &common, &kbuild, &source_pkg]
        .iter()
        .map(|p| format!("{p}={version}"))
        .collect();
    apt.download(&wanted, &debs)?;
    let deb_of = |pkg: &str| -> Result<PathBuf> {
        fs::read_dir(&debs)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
            .ok_or_else(|| anyhow!("apt-get download left no {pkg}_*.deb in {}", debs.display()))
    };
    let download_s = t_download.elapsed().as_secs_f64();

    // The headers tree, with its Makefile pointed at the extracted -common tree (the package's
    // says `include /usr/src/linux-headers-<abi>-common/Makefile`; scripts/ and tools/ are
    // relative links into the extracted kbuild package).
    let t_extract = Instant::now();
    let root = staging.join("root");
    fs::create_dir_all(&root)?;
    for pkg in [&headers, &common, &kbuild] {
        let deb = deb_of(pkg)?;
        run_logged(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
            &mut log,
            "dpkg-deb -x",
        )?;
    }
    let hdr_dir = root.join("usr/src").join(&headers);
    let makefile = hdr_dir.join("Makefile");
    let text =
        fs::read_to_string(&makefile).with_context(|| format!("reading {}", makefile.display()))?;
    let mut fixed = String::new();
    for line in text.lines() {
        match line.strip_prefix("include /") {
            Some(path) => fixed.push_str(&format!("include {}/{path}\n", root.display())),
            None => {
                fixed.push_str(line);
                fixed.push('\n');
            }
        }
    }
    fs::write(&makefile, fixed)?;

    // Only vkms out of the source tarball (a .tar.xz inside the .deb: one pass, nothing else
    // written; Debian's tarball has many xz blocks, so xz decompresses them on every core).
    let src = staging.join("src");
    fs::create_dir_all(&src)?;
    let source_deb = deb_of(&source_pkg)?;
    let tree = format!("linux-source-{KERNEL_SERIES}");
    run_logged(
        Command::new("bash")
            .args([
                "-c",
                r#"set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$2.tar.xz" | xz -dc -T0 | tar -x -C "$3" "$2/$4""#,
                "extract-vkms",
            ])
            .arg(&source_deb)
            .arg(&tree)
            .arg(&src)
            .arg(VKMS_SRC),
        &mut log,
        "unpacking vkms from the linux-source tarball",
    )?;
    let module_dir = src.join(&tree).join(VKMS_SRC);
    if !module_dir.join("Makefile").is_file() {
        bail!("no {VKMS_SRC}/Makefile in {}", source_deb.display());
    }
    // The .debs are no longer needed: free the space before building.
    let _ = fs::remove_dir_all(&debs);
    let extract_s = t_extract.elapsed().as_secs_f64();

    // kbuild, external module mode: CONFIG_DRM_VKMS=m switches vkms on in its Makefile; an empty
    // CONFIG_DEBUG_INFO_BTF_MODULES skips the BTF step.
    let t_make = Instant::now();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_logged(
        Command::new("make")
            .arg("-C")
            .arg(&hdr_dir)
            .arg(format!("M={}", module_dir.display()))
            .args([
                "CONFIG_DRM_VKMS=m",
                "CONFIG_DEBUG_INFO_BTF_MODULES=",
                &format!("-j{jobs}"),
                "modules",
            ])
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .env_remove("KBUILD_OUTPUT"),
        &mut log,
        "make modules (vkms)",
    )?;
    let make_s = t_make.elapsed().as_secs_f64();
    let built = module_dir.join("vkms.ko");
    let vermagic = modinfo(&built, "vermagic")?;
    if vermagic.split_whitespace().next() != Some(kver.as_str()) {
        bail!("{} has vermagic {vermagic:?}, not {kver}", built.display());
    }
    let depends = modinfo(&built, "depends")?;
    writeln!(log.file, "vermagic: {vermagic}\ndepends: {depends}")?;

    // Into the cache: stripped (as Debian installs its modules), then renamed into place.
    let new = assets.dir.join(format!("vkms.new.{}", std::process::id()));
    let _ = fs::remove_dir_all(&new);
    fs::create_dir_all(&new)?;
    run_logged(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(new.join("vkms.ko"))
            .arg(&built),
        &mut log,
        "strip --strip-debug",
    )?;
    write_atomic(
        &new.join("complete"),
        format!(
            "source={source_pkg} {version} ({VKMS_SRC}), headers {headers} {version}, {gcc}\n\
             depends={depends}\nvermagic={vermagic}\n"
        )
        .as_bytes(),
    )?;
    let _ = fs::remove_dir_all(dir);
    if let Err(err) = fs::rename(&new, dir) {
        let _ = fs::remove_dir_all(&new);
        // Another xtask may have finished the same build first: its result is as good.
        if cached(dir)?.is_none() {
            return Err(err).with_context(|| format!("renaming into {}", dir.display()));
        }
    }
    Ok(format!(
        "apt {apt_s:.1}s, download {download_s:.1}s, unpack {extract_s:.1}s, make {make_s:.1}s"
    ))
}

/// Removes the scratch folders (`fencegate-vkms.*.partial.<pid>`, `vkms.new.<pid>`) of builds
/// whose process is gone (killed mid-build): on tmpfs they would hold ~250 MB of memory.
fn remove_stale_scratch(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = if name.starts_with("fencegate-vkms.") {
            name.rsplit_once(".partial.").map(|(_, pid)| pid.to_owned())
        } else {
            name.strip_prefix("vkms.new.").map(str::to_owned)
        };
        let Some(pid) = pid.filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        else {
            continue;
        };
        if !Path::new("/proc").join(&pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The package names in `Depends:` of `pkg` at `version` (alternatives flattened), or `None`
/// when apt does not know that version.
fn package_depends(pkg: &str, version: &str) -> Result<Option<Vec<String>>> {
    let out = Command::new("apt-cache")
        .args(["show", &format!("{pkg}={version}")])
        .stderr(Stdio::null())
        .output()
        .context("running apt-cache show")?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(depends) = text.lines().find_map(|l| l.strip_prefix("Depends:")) else {
        return Ok(Some(Vec::new()));
    };
    Ok(Some(
        depends
            .split([',', '|'])
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_owned)
            .collect(),
    ))
}

fn modinfo(ko: &Path, field: &str) -> Result<String> {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(ko)
        .output()
        .context("running modinfo")?;
    if !out.status.success() {
        bail!(
            "modinfo -F {field} {} failed: {}",
            ko.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The build log: every command with the time since the build started, and its output.
struct Log {
    file: fs::File,
    start: Instant,
}

/// Runs `cmd` with stdout and stderr appended to `log`; fails with `what` on a non-zero exit.
fn run_logged(cmd: &mut Command, log: &mut Log, what: &str) -> Result<()> {
    writeln!(
        log.file,
        "[+{:.1}s] $ {}",
        log.start.elapsed().as_secs_f64(),
        super::selection::render_cmd(cmd)
    )?;
    log.file.flush()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(log.file.try_clone()?)
        .stderr(log.file.try_clone()?)
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
