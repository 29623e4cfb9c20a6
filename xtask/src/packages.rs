//! System packages: what each job needs, and installing the missing ones with apt.
//!
//! Debian 12 (bookworm) is the supported host. Mesa 25, Weston 14, libdrm and Wayland come from
//! bookworm-backports (Mesa 22 lacks what the VM tier relies on), so the backports source is
//! added when it is missing.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

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

const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/fencegate-backports.sources";

/// Installs whichever of `packages` is missing, printing what it installs.
pub fn ensure(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        println!(
            "xtask: system packages present ({} checked)",
            packages.len()
        );
        return Ok(());
    }
    println!(
        "xtask: installing {} missing package(s): {}",
        missing.len(),
        missing.join(" ")
    );
    let backports = ensure_backports_source()?;
    run_root(&["apt-get", "update", "-q"])?;
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    if backports {
        install.extend(["-t", "bookworm-backports"]);
    }
    install.extend(missing.iter().copied());
    run_root(&install)?;
    let still: Vec<&str> = missing.into_iter().filter(|p| !is_installed(p)).collect();
    if !still.is_empty() {
        bail!("apt did not install: {}", still.join(" "));
    }
    Ok(())
}

pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// Adds bookworm-backports when this is bookworm and no source names it yet. False when the
/// host is not bookworm (then packages come from whatever the host has).
pub fn ensure_backports_source() -> Result<bool> {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !os_release.contains("VERSION_CODENAME=bookworm") {
        println!("xtask: not Debian bookworm; installing from the host's own sources");
        return Ok(false);
    }
    if sources_mention("bookworm-backports") {
        return Ok(true);
    }
    println!("xtask: adding bookworm-backports ({BACKPORTS_LIST})");
    let source = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\n\
                  Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
    let tmp = std::env::temp_dir().join("fencegate-backports.sources");
    std::fs::write(&tmp, source)?;
    run_root(&[
        "install",
        "-m",
        "0644",
        tmp.to_str().unwrap(),
        BACKPORTS_LIST,
    ])?;
    Ok(true)
}

fn sources_mention(suite: &str) -> bool {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|entry| entry.path()));
    }
    files
        .iter()
        .any(|file| std::fs::read_to_string(file).is_ok_and(|text| text.contains(suite)))
}

/// Runs a command as root: directly when we are root, through sudo otherwise.
pub fn run_root(args: &[&str]) -> Result<()> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut command = if is_root {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    } else {
        let mut c = Command::new("sudo");
        c.args(args);
        c
    };
    command.env("DEBIAN_FRONTEND", "noninteractive");
    let status = command
        .status()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !status.success() {
        bail!("{} failed ({status})", args.join(" "));
    }
    Ok(())
}
