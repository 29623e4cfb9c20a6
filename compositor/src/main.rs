//! The `fencegate` binary: parse the command line, log, run, exit with the right status.

use std::process::ExitCode;

use clap::Parser;
use fencegate::Config;
use smithay::reexports::calloop::signals::{Signal, Signals};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("check") {
        let status = fencegate::check::main(&args[2..]);
        return ExitCode::from(status.clamp(0, 255) as u8);
    }
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,smithay=warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    // SIGINT/SIGTERM stop the loop cleanly so the socket is removed. The signal source must be
    // created before any thread exists, so every thread has the signals blocked.
    let signals = match Signals::new(&[Signal::SIGINT, Signal::SIGTERM]) {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("fencegate: cannot watch SIGINT/SIGTERM: {err}");
            return ExitCode::FAILURE;
        }
    };
    let setup: fencegate::Setup = Box::new(move |state| {
        state
            .core
            .loop_handle
            .insert_source(signals, |event, _, state| {
                // A requested shutdown that completes cleanly is a success.
                tracing::info!(signal = ?event.signal(), "termination signal");
                state.core.request_exit(0, "received a termination signal");
            })
            .map_err(|err| anyhow::anyhow!("inserting the signal source: {err}"))?;
        Ok(())
    });

    match fencegate::run(config, Some(setup)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => {
            eprintln!("fencegate: {err:#}");
            ExitCode::FAILURE
        }
    }
}
