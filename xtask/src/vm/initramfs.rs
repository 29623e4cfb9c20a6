//! The guest's initramfs: busybox, the two init stages, the modules that mount the host's
//! root, and the out-of-tree modules stage 2 loads (vkms), written as a newc cpio archive.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::kernel::Assets;
use super::vkms::ExtraModule;
use super::{write_if_changed, STAGE1, STAGE1_MODULES, STAGE2};

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

/// Writes the initramfs to `out` (only when its content changed). `extra` modules go to
/// `/extra/<name>.ko`, listed in `/extra/order` one per line as `<name> <deps,comma,separated or
/// -> [params...]`: stage 1 copies `/extra` to `/run/fencegate/extra`, stage 2 loads the deps
/// with modprobe from the kernel tree and then the module with insmod, and stops the guest if
/// any of it fails.
pub(super) fn build_initramfs(assets: &Assets, extra: &[ExtraModule], out: &Path) -> Result<()> {
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
    if !extra.is_empty() {
        cpio.dir("extra");
        let mut order = String::new();
        for m in extra {
            let ko = fs::read(&m.ko).with_context(|| format!("reading {}", m.ko.display()))?;
            cpio.file(&format!("extra/{}.ko", m.name), 0o644, &ko);
            let deps = if m.depends.is_empty() {
                "-".to_string()
            } else {
                m.depends.join(",")
            };
            order.push_str(&format!("{} {deps}", m.name));
            for p in &m.params {
                order.push(' ');
                order.push_str(p);
            }
            order.push('\n');
        }
        cpio.file("extra/order", 0o644, order.as_bytes());
    }
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
