//! `explicit-sync-v1-client`: see [`fencegate_clients::explicit_sync_v1_client`], which does all the work (so tests run the same
//! logic in-process). Prints each frame as it is shown and a summary; exits 0 after `--frames`,
//! 1 on any error, 2 on bad arguments.

use std::process::ExitCode;

use fencegate_clients::dmabuf_window::binary_main;
use fencegate_clients::explicit_sync_v1_client::{run, Args, NAME};

fn main() -> ExitCode {
    binary_main::<Args, _>(NAME, run)
}
