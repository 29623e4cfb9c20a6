//! `misbehave --scenario NAME`: see [`fencegate_clients::misbehave`], which does all the work.
//! Exits 0 when the compositor answered as documented (`--list`), 1 when it did not, 2 when the
//! scenario could not run (bad arguments, no compositor, no device).

use std::process::ExitCode;

use clap::Parser;
use fencegate_clients::misbehave::{list, run, Args, NAME};

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        print!("{}", list());
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(outcome) => {
            println!("{NAME}: {outcome}");
            if outcome.as_expected {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("{NAME}: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
