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
    let runtime_dir = runtime_dir()?;
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
        .args(["--screenshot-after-frames", "30", "--exit-after-screenshot"])
        .env("XDG_RUNTIME_DIR", &runtime_dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting fencegate")?;
    let lines = forward_lines(compositor.stdout.take().unwrap());
    let listening =
        wait_line(&lines, "listening on", STARTUP_TIMEOUT).context("fencegate did not start")?;
    println!("{listening}");

    let client_env = |c: &mut Command| {
        c.env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("WAYLAND_DISPLAY", &socket)
            .env_remove("DISPLAY");
    };
    let mut ours = Command::new(bin.join("shm-client"));
    ours.args(["--title", "fencegate shm-client"]);
    client_env(&mut ours);
    let mut theirs = Command::new("weston-simple-shm");
    client_env(&mut theirs);
    let mut clients = Clients(vec![
        (
            "shm-client (example-clients)",
            ours.spawn().context("starting shm-client")?,
        ),
        (
            "weston-simple-shm (Debian)",
            theirs.spawn().context("starting weston-simple-shm")?,
        ),
    ]);

    let status = wait_child(&mut compositor, SCREENSHOT_TIMEOUT)?;
    let written = lines
        .try_iter()
        .any(|line| line.contains("screenshot written"));
    clients.stop();
    if !status.success() || !written || !screenshot.exists() {
        bail!(
            "fencegate ended with {status} without writing {}",
            screenshot.display()
        );
    }
    summary(backend, &socket, &clients, &screenshot, started.elapsed());
    Ok(())
}

fn summary(backend: &str, socket: &str, clients: &Clients, screenshot: &Path, took: Duration) {
    println!();
    println!("fencegate demo");
    println!(
        "  backend     {backend} (nested when WAYLAND_DISPLAY or DISPLAY is set, else headless)"
    );
    println!("  socket      {socket}");
    for (name, _) in &clients.0 {
        println!("  client      {name}");
    }
    println!("  screenshot  {}", screenshot.display());
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

fn runtime_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Ok(dir.into());
    }
    // A root shell on a fresh machine has no session: make a private runtime dir like logind would.
    let dir = std::env::temp_dir().join(format!("fencegate-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Prints a child's stdout as it comes and hands each line to the caller too.
fn forward_lines(stdout: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("  | {line}");
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
