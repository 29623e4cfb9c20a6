//! The guest's kernel: QEMU and friends from apt, and Debian's 6.12 image downloaded (never
//! installed), extracted and depmod'ed into the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::{DEFAULT_CACHE, KERNEL_SERIES};
use crate::packages;

pub(super) struct Assets {
    pub(super) kver: String,
    /// `<cache>/<kver>`
    pub(super) dir: PathBuf,
    /// `<cache>/<kver>/root`: the extracted package (modprobe -d / depmod -b base).
    pub(super) root: PathBuf,
    pub(super) kernel: PathBuf,
}

pub(super) fn cache_root() -> PathBuf {
    std::env::var_os("FENCEGATE_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

pub(super) fn ensure_installed() -> Result<Assets> {
    packages::ensure_versions(&[
        ("qemu-system-x86", 10),
        ("busybox-static", 0),
        ("kmod", 0),
        ("xz-utils", 0),
        // kernel_source counts the syscalls of an already-signalled fence with it.
        ("strace", 0),
        // A DRM-session compositor in the guest (tests/common/drm_session.rs): seatd-launch
        // hands it the seat, systemd-udevd + udevadm make udev enumeration see /dev/dri.
        ("seatd", 0),
        ("udev", 0),
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
