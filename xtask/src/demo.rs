//! `cargo xtask demo`: build, start fencegate, run two real clients, write a screenshot, summarise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::{cargo, packages, workspace_root};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const SCREENSHOT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run() -> Result<()> {
    packages::ensure(&[packages::BUILD, packages::RUN].concat())?;
    println!("xtask: building the workspace (debug)");
    cargo(&["build", "--workspace", "--bins"])?;

    let root = workspace_root();
    let out_dir = root.join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let screenshot = out_dir.join("fencegate-demo.png");
    let _ = std::fs::remove_file(&screenshot);
    let log_path = out_dir.join("fencegate-demo.log");
    let log = std::fs::File::create(&log_path)?;
    let (runtime_dir, made_runtime_dir) = runtime_dir()?;
    let nested = ["WAYLAND_DISPLAY", "DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let backend = if nested { "winit" } else { "headless" };
    let socket = format!("fencegate-demo-{}", std::process::id());

    let bin = root.join("target/debug");
    let started = Instant::now();
    let mut compositor = Command::new(bin.join("fencegate"))
        .args([
            "--backend",
            backend,
            "--socket",
            &socket,
            "--size",
            "800x600",
        ])
        .args([
            "--screenshot",
            screenshot.to_str().unwrap(),
            "--screenshot-windows",
            "2",
        ])
        .args(["--screenshot-after-frames", "30"])
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        .spawn()
        .context("starting fencegate")?;
    let lines = forward_lines(compositor.stdout.take().unwrap());
    let listening = wait_line(&lines, "listening on", STARTUP_TIMEOUT)
        .with_context(|| format!("fencegate did not start; its log: {}", log_path.display()))?;

    let client = |program: &Path, args: &[&str]| -> Result<Child> {
        Command::new(program)
            .args(args)
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("WAYLAND_DISPLAY", &socket)
            .env_remove("DISPLAY")
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))
    };
    let mut clients = Clients(vec![
        (
            "shm-client (example-clients)",
            client(
                &bin.join("shm-client"),
                &["--title", "fencegate shm-client"],
            )?,
        ),
        (
            "weston-simple-shm (Debian)",
            client(Path::new("weston-simple-shm"), &[])?,
        ),
    ]);

    let written = wait_line(&lines, "screenshot written", SCREENSHOT_TIMEOUT);
    // Clients first, so none of them reports its compositor vanishing; then fencegate, the way
    // a user stops it.
    clients.stop();
    let _ = Command::new("kill")
        .args(["-TERM", &compositor.id().to_string()])
        .status();
    let status = wait_child(&mut compositor, STARTUP_TIMEOUT)?;
    if made_runtime_dir {
        let _ = std::fs::remove_dir_all(&runtime_dir);
    }
    if let Err(err) = written {
        bail!(
            "fencegate did not write {} ({err:#}); its log: {}",
            screenshot.display(),
            log_path.display()
        );
    }
    if !status.success() {
        bail!(
            "fencegate ended with {status}; its log: {}",
            log_path.display()
        );
    }
    summary(
        &listening,
        &clients,
        &screenshot,
        &log_path,
        started.elapsed(),
    );
    Ok(())
}

fn summary(listening: &str, clients: &Clients, screenshot: &Path, log: &Path, took: Duration) {
    println!();
    println!("fencegate demo");
    println!(
        "  compositor  {}",
        listening.trim_start_matches("fencegate: ")
    );
    println!("              (nested when WAYLAND_DISPLAY or DISPLAY is set, else headless)");
    for (name, _) in &clients.0 {
        println!("  client      {name}");
    }
    println!("  screenshot  {}", screenshot.display());
    println!("  log         {}", log.display());
    println!("  took        {:.1} s", took.as_secs_f64());
    println!();
    println!(
        "Open the screenshot to see both clients' windows, cascaded from the top-left corner."
    );
    println!("Run it yourself:  target/debug/fencegate -- target/debug/shm-client");
}

/// Clients are killed when the demo ends, however it ends.
struct Clients(Vec<(&'static str, Child)>);

impl Clients {
    fn stop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop();
    }
}

/// $XDG_RUNTIME_DIR, or a private one made for the demo (true: remove it afterwards).
fn runtime_dir() -> Result<(PathBuf, bool)> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Ok((dir.into(), false));
    }
    // A root shell on a fresh machine has no session: make a private runtime dir like logind would.
    let dir = std::env::temp_dir().join(format!("fencegate-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok((dir, true))
}

/// Hands a child's stdout to the caller line by line.
fn forward_lines(stdout: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(line),
            Ok(_) => {}
            Err(_) => bail!("no line containing {needle:?} within {timeout:?}"),
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(anyhow!("fencegate did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
