//! The project's tasks (the cargo-xtask pattern): `cargo xtask demo`, `cargo xtask test`,
//! `cargo xtask vm-test`. Each installs the system packages it needs first.

mod bench;
mod demo;
mod packages;
mod test_totals;
mod vm;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::test_totals::Totals;

const USAGE: &str = "\
usage: cargo xtask <task>

  demo            install what is missing, build, run fencegate with two clients, write a screenshot
  test            install what is missing, then run every test tier (host, nested, kernel guest)
  vm-test [ARGS]  only the kernel tier: boot the QEMU guest and run the kernel_* tests there
  vm-run CMD...   boot the guest and run one command in it (the host's / is shared read-only)
  install         only install the system packages every task needs
  bench fences    fence-bridge latency vs the raw floor: host rows, then kernel rows in the guest";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(),
        Some("test") => test(),
        Some("vm-test") => vm::vm_test(&args[1..]).map(drop),
        Some("vm-run") => vm::run_in_guest(&args[1..]).map(|code| std::process::exit(code)),
        Some("install") => install_all(),
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    if let Err(err) = result {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn install_all() -> Result<()> {
    packages::ensure(&[packages::BUILD, packages::RUN, packages::TEST].concat())?;
    vm::install_packages()
}

/// Every tier, in order of cost: host tests (unit, integration, nested under Xvfb), then the
/// kernel tests inside the guest. Ends with one line counting every test of every tier.
fn test() -> Result<()> {
    install_all()?;
    let mut totals = Totals::default();
    println!("xtask: tier 1/2: host tests (cargo test --workspace)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut host = Command::new(cargo);
    host.args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(workspace_root());
    let status = totals.run(&mut host)?;
    if !status.success() {
        totals
            .cargo_failures
            .push(format!("host tests: cargo test exited with {status}"));
    }
    println!("xtask: tier 2/2: kernel tests in the guest (cargo xtask vm-test)");
    let guest = vm::vm_test(&[]);
    if let Ok(guest) = &guest {
        println!("xtask: kernel tier: {} passed in the guest", guest.passed);
    }
    let guest_error = guest.map(|guest| totals.absorb(guest)).err();
    println!(
        "total: {} passed, {} failed, {} ignored",
        totals.passed, totals.failed, totals.ignored
    );
    if let Some(err) = guest_error {
        return Err(err.context("the kernel tier failed"));
    }
    if !totals.cargo_failures.is_empty() {
        bail!("{}", totals.cargo_failures.join("; "));
    }
    println!("xtask: all test tiers passed");
    Ok(())
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
