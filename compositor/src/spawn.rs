//! `fencegate -- CMD ARGS`: the client we run, and its exit status becoming ours.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};

use anyhow::{anyhow, Context};
use smithay::reexports::calloop::channel::{self, Event};
use smithay::reexports::calloop::LoopHandle;
use tracing::info;

use crate::state::State;

/// Starts `command` with WAYLAND_DISPLAY set to `socket`; when it exits, the compositor stops
/// with the client's status (128 + signal if it was killed, as shells report it). With
/// `stdout_to_stderr` the client writes its stdout to our stderr (`fencegate check` keeps
/// stdout for its report).
pub fn spawn_client(
    command: &[String],
    socket: &str,
    stdout_to_stderr: bool,
    handle: &LoopHandle<'static, State>,
) -> anyhow::Result<()> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("WAYLAND_DISPLAY", socket)
        // A nested client must not find the host's X server instead of us.
        .env_remove("DISPLAY");
    if stdout_to_stderr {
        command.stdout(std::io::stderr());
    }
    // Our SIGINT/SIGTERM are blocked (they arrive through a signalfd) and a blocked mask is
    // inherited across exec: without this the client could not be stopped by either.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            match libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) {
                0 => Ok(()),
                errno => Err(std::io::Error::from_raw_os_error(errno)),
            }
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    info!(pid = child.id(), %program, "spawned client");

    // `wait` blocks, so it gets a thread; the loop hears of the exit through a channel.
    let (sender, receiver) = channel::channel::<std::io::Result<ExitStatus>>();
    std::thread::Builder::new()
        .name("client-wait".into())
        .spawn(move || {
            let _ = sender.send(child.wait());
        })
        .context("starting the client-wait thread")?;
    let program = program.clone();
    handle
        .insert_source(receiver, move |event, _, state| {
            if let Event::Msg(status) = event {
                let code = match status {
                    Ok(status) => exit_code(status),
                    Err(_) => 1,
                };
                info!(%program, code, "client exited");
                state.core.request_exit(code, "the spawned client exited");
            }
        })
        .map_err(|err| anyhow!("inserting the client-exit source: {err}"))?;
    Ok(())
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
