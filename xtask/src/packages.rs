//! System packages: what each job needs, and installing the missing ones with apt.
//!
//! Debian 12 (bookworm) is the supported host. Mesa 25, Weston 14, libdrm, Wayland and QEMU 10
//! come from `<codename>-backports`, which is added (with the machine's own Debian mirror) when
//! no apt source names it. `apt-get update` runs only when something must be installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// To build the workspace.
pub const BUILD: &[&str] = &[
    "pkg-config",
    "libwayland-dev",
    "libxkbcommon-dev",
    "libudev-dev",
    "libinput-dev",
    "libseat-dev",
    "libdrm-dev",
    "libgbm-dev",
    "libegl-dev",
    "libgles-dev",
    "libpixman-1-dev",
];

/// To run fencegate and the demo's clients: Mesa's EGL/GBM (llvmpipe where there is no GPU),
/// the XKB keymaps, Weston's demo clients and wayland-info.
pub const RUN: &[&str] = &[
    "libegl-mesa0",
    "libgl1-mesa-dri",
    "libgbm1",
    "xkb-data",
    "weston",
    "wayland-utils",
];

/// For the nested (winit under Xvfb) tests.
pub const TEST: &[&str] = &["xvfb"];

/// Installs whichever of `packages` is missing, printing what it installs.
pub fn ensure(packages: &[&str]) -> Result<()> {
    let wanted: Vec<(&str, u32)> = packages.iter().map(|p| (*p, 0)).collect();
    ensure_versions(&wanted)
}

/// Like [`ensure`], with a minimum upstream major version per package (0: any); a package
/// that is too old is upgraded from backports.
pub fn ensure_versions(wanted: &[(&str, u32)]) -> Result<()> {
    let mut missing = Vec::new();
    for &(package, min_major) in wanted {
        match installed_version(package)? {
            Some(version) if upstream_major(&version).unwrap_or(0) >= min_major => {}
            Some(version) => {
                eprintln!("xtask: {package} {version} is too old (need {min_major}.x)");
                missing.push(package);
            }
            None => missing.push(package),
        }
    }
    if missing.is_empty() {
        eprintln!("xtask: system packages present ({} checked)", wanted.len());
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}: run as root (apt-get needs it) or install them",
            missing.join(" ")
        );
    }
    eprintln!(
        "xtask: installing {} missing package(s): {}",
        missing.len(),
        missing.join(" ")
    );
    let mut apt = Apt::default();
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    let suite = apt.backports_suite()?;
    if let Some(suite) = &suite {
        install.extend(["-t", suite.as_str()]);
    }
    install.extend(missing.iter().copied());
    apt.update()?;
    apt.run(&install)?;
    let still: Vec<&str> = missing
        .into_iter()
        .filter(|p| installed_version(p).ok().flatten().is_none())
        .collect();
    if !still.is_empty() {
        bail!("apt did not install: {}", still.join(" "));
    }
    Ok(())
}

/// apt-get, with `update` run at most once and the backports source added at most once.
#[derive(Default)]
pub struct Apt {
    updated: bool,
    sources_checked: bool,
}

impl Apt {
    pub fn run(&mut self, args: &[&str]) -> Result<()> {
        eprintln!("xtask: apt-get {}", args.join(" "));
        // Progress on stderr: stdout belongs to what the task reports (and to guest commands).
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::io::stderr())
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    pub fn update(&mut self) -> Result<()> {
        if !self.updated {
            self.run(&["update", "-q"])?;
            self.updated = true;
        }
        Ok(())
    }

    /// `apt-get download` of `packages` (`name=version`) into `dir`: nothing is installed.
    /// When it fails (stale lists name a version the mirror no longer has), `apt-get update`
    /// runs once and it is retried. `dir` must be writable by apt's `_apt` user to avoid an
    /// "unsandboxed" warning.
    pub fn download(&mut self, packages: &[String], dir: &Path) -> Result<()> {
        loop {
            eprintln!("xtask: apt-get download {}", packages.join(" "));
            let status = Command::new("apt-get")
                .args(["download", "-q"])
                .args(packages)
                .current_dir(dir)
                .stdout(std::io::stderr())
                .status()
                .context("running apt-get download")?;
            if status.success() {
                return Ok(());
            }
            if self.updated {
                bail!("apt-get download {} failed ({status})", packages.join(" "));
            }
            self.update()?;
        }
    }

    /// `<codename>-backports`, added to apt's sources first if missing; None off Debian 12.
    pub fn backports_suite(&mut self) -> Result<Option<String>> {
        let codename = os_codename()?;
        if codename != "bookworm" {
            eprintln!(
                "xtask: not Debian bookworm ({codename}); installing from the host's own sources"
            );
            return Ok(None);
        }
        if !self.sources_checked {
            self.sources_checked = true;
            if ensure_backports_source(Path::new("/etc/apt"), &codename)? {
                self.updated = false;
            }
        }
        Ok(Some(format!("{codename}-backports")))
    }
}

/// Upstream major version of a Debian version string (`1:10.0.2+ds-2` -> 10).
pub fn upstream_major(version: &str) -> Option<u32> {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// `Some(version)` when the package is installed.
pub fn installed_version(pkg: &str) -> Result<Option<String>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}|${Version}", pkg])
        .stderr(Stdio::null())
        .output()
        .context("running dpkg-query (is this Debian?)")?;
    let s = String::from_utf8_lossy(&out.stdout);
    match s.split_once('|') {
        Some((status, ver)) if out.status.success() && status.starts_with("ii") => {
            Ok(Some(ver.to_string()))
        }
        _ => Ok(None),
    }
}

pub fn is_root() -> bool {
    // The effective uid from /proc, to avoid a libc dependency.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn os_codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("no VERSION_CODENAME in /etc/os-release"))
}

fn apt_source_files(etc_apt: &Path) -> Vec<PathBuf> {
    let mut files = vec![etc_apt.join("sources.list")];
    if let Ok(rd) = fs::read_dir(etc_apt.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// Adds `<codename>-backports` to apt's sources when no source names it yet, with the machine's
/// own Debian mirror. Returns true when it wrote the file (apt-get update is then needed).
fn ensure_backports_source(etc_apt: &Path, codename: &str) -> Result<bool> {
    let suite = format!("{codename}-backports");
    let mut mirror: Option<String> = None;
    for f in apt_source_files(etc_apt) {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.iter().any(|w| *w == suite) {
                return Ok(false);
            }
            // `URIs: http://X/debian` or `deb [opts] http://X/debian suite ...`.
            for w in &words {
                let w = w.trim_end_matches('/');
                if (w.starts_with("http://") || w.starts_with("https://"))
                    && w.ends_with("/debian")
                    && mirror.is_none()
                {
                    mirror = Some(w.to_string());
                }
            }
        }
    }
    let mirror = mirror.unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let mut text = format!(
        "# added by fencegate's xtask (xtask/src/packages.rs): Mesa 25, Weston 14, QEMU 10, Linux 6.12\n\
         Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n"
    );
    if Path::new(keyring).exists() {
        text.push_str(&format!("Signed-By: {keyring}\n"));
    }
    let path = etc_apt.join("sources.list.d/fencegate-backports.sources");
    eprintln!(
        "xtask: adding {suite} ({mirror}) to apt: {}",
        path.display()
    );
    fs::write(&path, text).with_context(|| format!("writing {} (needs root)", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_major_versions() {
        assert_eq!(upstream_major("1:10.0.2+ds-2+deb13u1~bpo12+1"), Some(10));
        assert_eq!(upstream_major("1:7.2+dfsg-7"), Some(7));
        assert_eq!(upstream_major("30+20221128-1"), Some(30));
    }

    #[test]
    fn adds_backports_source_only_when_missing() {
        let dir =
            std::env::temp_dir().join(format!("fencegate-vm-apt-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sources.list.d")).unwrap();
        fs::write(
            dir.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n\
             Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
             URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
        )
        .unwrap();
        assert!(ensure_backports_source(&dir, "bookworm").unwrap());
        let added =
            fs::read_to_string(dir.join("sources.list.d/fencegate-backports.sources")).unwrap();
        assert!(
            added.contains("URIs: http://deb.debian.org/debian\n"),
            "{added}"
        );
        assert!(added.contains("Suites: bookworm-backports\n"), "{added}");
        // Second call: already there.
        assert!(!ensure_backports_source(&dir, "bookworm").unwrap());
        // A one-line-style source naming backports counts too.
        fs::remove_file(dir.join("sources.list.d/fencegate-backports.sources")).unwrap();
        fs::write(
            dir.join("sources.list"),
            "deb http://ftp.example/debian bookworm-backports main\n",
        )
        .unwrap();
        assert!(!ensure_backports_source(&dir, "bookworm").unwrap());
        let _ = fs::remove_dir_all(&dir);
    }
}
