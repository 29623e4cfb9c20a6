//! `dmabuf-implicit`: see [`fencegate_clients::dmabuf_implicit`], which does all the work (so tests run the same
//! logic in-process). Prints each frame as it is shown and a summary; exits 0 after `--frames`,
//! 1 on any error, 2 on bad arguments.

use std::process::ExitCode;

use clap::Parser;
use fencegate_clients::dmabuf_implicit::{run, Args, NAME};

fn main() -> ExitCode {
    let args = Args::parse();
    let result = run(&args, &mut |shown| {
        println!("{NAME}: {shown}");
        Ok(())
    });
    match result {
        Ok(report) => {
            println!("{NAME}: done: {report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{NAME}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
