//! `cargo xtask bench fences`: fence-bridge's waiting costs next to the raw kernel floor.
//!
//! Builds `fence-bridge/examples/bench_fences.rs` in release mode and runs it twice: the host
//! rows here (software fences: raw eventfd/epoll floor, calloop floor, `FenceSource`
//! latency, the already-signalled fast path, wait-any over 1/100/10,000 fences), then the kernel
//! rows (sync_file via vgem, syncobj via virtio_gpu) in the QEMU guest through
//! [`crate::vm::run_in_guest`]. When `perf` can count `raw_syscalls:sys_enter`, it also checks
//! the syscalls of an already-signalled software fence (expected: 0 per check).
//!
//! `cargo xtask bench fences [--host-only] [--iters N]`

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// `cargo xtask bench <what> [ARGS]`.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("fences") => fences(&args[1..]),
        _ => bail!("usage: cargo xtask bench fences [--host-only] [--iters N]"),
    }
}

fn fences(args: &[String]) -> Result<()> {
    let mut host_only = false;
    let mut passthrough = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--host-only" => host_only = true,
            "--iters" => {
                passthrough.push(arg.clone());
                passthrough.push(it.next().context("--iters N")?.clone());
            }
            other => bail!("bench fences: unknown argument {other:?}"),
        }
    }
    let bin = build_bench()?;

    println!("bench: host rows ({})", bin.display());
    let status = Command::new(&bin)
        .arg("--host")
        .args(&passthrough)
        .status()
        .context("running bench_fences --host")?;
    if !status.success() {
        bail!("bench_fences --host failed: {status}");
    }
    syscall_probe(&bin);

    if host_only {
        return Ok(());
    }
    println!("\nbench: kernel rows in the guest (sync_file via vgem, syncobj via virtio_gpu)");
    let mut cmd = vec![bin.display().to_string(), "--kernel".to_owned()];
    cmd.extend(passthrough);
    let code = crate::vm::run_in_guest(&cmd)?;
    if code != 0 {
        bail!("bench_fences --kernel exited with {code} in the guest");
    }
    Ok(())
}

/// `cargo build --release -p fence-bridge --example bench_fences`; returns the executable.
fn build_bench() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "fence-bridge",
            "--example",
            "bench_fences",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(crate::workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("building bench_fences")?;
    if !output.status.success() {
        bail!("building bench_fences failed: {}", output.status);
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "bench_fences" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo did not report the bench_fences executable")
}

/// Counts syscalls of N already-signalled checks with `perf stat`, if it works here; prints
/// syscalls per check (the difference between N and 0 checks, so setup cancels out).
fn syscall_probe(bin: &PathBuf) {
    const N: u64 = 100_000;
    let count = |n: u64| -> Option<u64> {
        let out = Command::new("perf")
            .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "--"])
            .arg(bin)
            .args(["--probe", "sw", &n.to_string()])
            .stdout(Stdio::null())
            .output()
            .ok()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr
            .lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    match (count(0), count(N)) {
        (Some(base), Some(with)) => println!(
            "syscalls (perf stat -e raw_syscalls:sys_enter): {} for {N} already-signalled sw checks \
             ({:.4} per check; process baseline {base})",
            with.saturating_sub(base),
            with.saturating_sub(base) as f64 / N as f64
        ),
        _ => println!(
            "syscalls: perf cannot count raw_syscalls:sys_enter here; by construction an \
             already-signalled sw fence makes 0 syscalls (sync_file: 1 poll, syncobj: 1 ioctl)"
        ),
    }
}
