//! `fencegate check -- CMD ARGS`: run a client under a headless fencegate and report how it
//! uses explicit and implicit sync (see [`Report`] for what is measured).
//!
//! Exit status, so it fits a client project's CI:
//! * 0: the client exited 0 and broke no rule;
//! * 1: at least one finding (a protocol error, a fence that never signalled, a buffer written
//!   while the compositor still held it);
//! * 2: no finding, but the client itself failed (a non-zero exit or a signal);
//! * 3: the check could not run.

mod report;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use fence_bridge::ChromeTraceLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, FenceTimeoutAction, OutputSize};

pub use report::{Finding, FindingKind, Report, REPORT_SCHEMA};

/// `fencegate check`.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "fencegate check",
    about = "Run a Wayland client under a headless fencegate and report its use of explicit and \
             implicit sync; exit 0 when it broke no rule, 1 when it did, 2 when it failed by \
             itself"
)]
pub struct CheckArgs {
    /// Print the report as JSON (the schema is in docs/src/check-report.schema.json) instead of
    /// the summary.
    #[arg(long)]
    pub json: bool,

    /// Also write every fence's life as a Chrome trace-event JSON file, for ui.perfetto.dev.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,

    /// How long a client fence may stay unsignalled before it is reported, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub fence_timeout: u64,

    /// The headless output's size.
    #[arg(long, default_value = "640x480")]
    pub size: OutputSize,

    /// Render with pixman instead of GLES.
    #[arg(long)]
    pub pixman: bool,

    /// The client to run, with its arguments.
    #[arg(last = true, required = true, value_name = "CMD ARGS")]
    pub command: Vec<String>,
}

/// Runs `fencegate check` with `args` (everything after `check`); returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let check = match CheckArgs::try_parse_from(
        std::iter::once("fencegate check".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(check) => check,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { 3 } else { 0 };
        }
    };
    let trace = check.trace.as_ref().map(|_| ChromeTraceLayer::new());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            // Smithay's EGL probing logs errors for every platform it tries: not the client's.
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,smithay=off")),
        );
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(trace.clone())
        .try_init();

    match run(&check, trace.as_ref()) {
        Ok(report) => {
            if check.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.summary());
            }
            report.exit_status()
        }
        Err(err) => {
            eprintln!("fencegate check: {err:#}");
            3
        }
    }
}

use tracing_subscriber::Layer as _;

/// Runs the client under a headless fencegate and builds the report.
pub fn run(check: &CheckArgs, trace: Option<&ChromeTraceLayer>) -> anyhow::Result<Report> {
    let mut config = Config::headless();
    config.size = check.size;
    config.pixman = check.pixman;
    config.fence_timeout = check.fence_timeout;
    config.fence_timeout_action = FenceTimeoutAction::Report;
    config.command = check.command.clone();
    config.quiet = true;
    // A private socket: the check needs no XDG_RUNTIME_DIR and never meets another compositor.
    let dir = tempfile_dir()?;
    config.socket = Some(dir.join("wayland-check").display().to_string());

    let started = Instant::now();
    let report = std::rc::Rc::new(std::cell::RefCell::new(None));
    let slot = report.clone();
    let command = check.command.clone();
    let setup: crate::Setup = Box::new(move |state| {
        state.core.at_exit.push(Box::new(move |state| {
            *slot.borrow_mut() = Some(Report::from_state(state, command, started.elapsed()));
        }));
        Ok(())
    });
    let client_status = crate::run(config, Some(setup));
    let _ = std::fs::remove_dir_all(&dir);
    let client_status = client_status?;
    let mut report = report
        .borrow_mut()
        .take()
        .ok_or_else(|| anyhow::anyhow!("the compositor stopped before the report was made"))?;
    report.set_client_status(client_status);
    if let (Some(path), Some(trace)) = (&check.trace, trace) {
        trace
            .trace()
            .save(path)
            .map_err(|err| anyhow::anyhow!("writing the trace to {}: {err}", path.display()))?;
        report.trace = Some(path.display().to_string());
    }
    Ok(report)
}

/// A fresh private directory for the check's socket.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fencegate-check-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|err| anyhow::anyhow!("creating {}: {err}", dir.display()))?;
    Ok(dir)
}
