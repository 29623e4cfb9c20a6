//! `cargo xtask vm-test` arguments, and which kernel test targets they select.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::KERNEL_TEST_PREFIX;

#[derive(Default, Debug)]
pub(super) struct VmTestArgs {
    pub(super) packages: Vec<String>,
    pub(super) tests: Vec<String>,
    pub(super) release: bool,
    /// Extra cargo flags passed through (e.g. `--features x`, `-j1`).
    pub(super) cargo_extra: Vec<String>,
    /// Test-name filters and libtest arguments (after `--`).
    pub(super) test_args: Vec<String>,
}

impl VmTestArgs {
    pub(super) fn parse(args: &[String]) -> Result<Self> {
        let mut o = VmTestArgs::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| anyhow!("vm-test: {flag} needs a value"))
            };
            match a.as_str() {
                "--" => {
                    o.test_args.extend(it.by_ref().cloned());
                    break;
                }
                "-p" | "--package" => o.packages.push(value(a)?),
                "--test" => o.tests.push(value(a)?),
                "--release" => o.release = true,
                "-F" | "--features" | "-j" | "--jobs" | "--profile" => {
                    let v = value(a)?;
                    o.cargo_extra.push(a.clone());
                    o.cargo_extra.push(v);
                }
                "--all-features"
                | "--no-default-features"
                | "--locked"
                | "--offline"
                | "--frozen" => o.cargo_extra.push(a.clone()),
                "-h" | "--help" => {
                    println!(
                        "cargo xtask vm-test [-p PKG]... [--test kernel_NAME]... [--release] \
                         [cargo flags] [FILTER]... [-- LIBTEST-ARGS]\n\
                         Runs the workspace's kernel test binaries (tests/kernel_*.rs) in QEMU guests."
                    );
                    std::process::exit(0);
                }
                s if s.starts_with("--package=") => o.packages.push(s["--package=".len()..].into()),
                s if s.starts_with("--test=") => o.tests.push(s["--test=".len()..].into()),
                s if s.starts_with("-p") && s.len() > 2 => o.packages.push(s[2..].into()),
                s if s.starts_with("--features=") || s.starts_with("--profile=") => {
                    o.cargo_extra.push(s.into())
                }
                s if s.starts_with('-') => {
                    bail!("vm-test: unknown option {s} (libtest options go after `--`)")
                }
                _ => o.test_args.push(a.clone()),
            }
        }
        Ok(o)
    }
}

/// The kernel test targets of one package, and the features they require.
#[derive(Default, Debug)]
pub(super) struct KernelTests {
    pub(super) tests: Vec<String>,
    /// Union of the targets' `required-features` (enabled by `vm-test`, so that a feature-gated
    /// kernel test is built and run, never skipped).
    pub(super) features: BTreeSet<String>,
}

/// package name -> kernel test targets, from `cargo metadata`.
pub(super) fn select_kernel_tests(opts: &VmTestArgs) -> Result<BTreeMap<String, KernelTests>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut found: BTreeMap<String, KernelTests> = BTreeMap::new();
    let mut all_tests: Vec<(String, String)> = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let pname = pkg["name"].as_str().unwrap_or_default().to_string();
        for t in pkg["targets"].as_array().into_iter().flatten() {
            let is_test = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if !is_test {
                continue;
            }
            let tname = t["name"].as_str().unwrap_or_default().to_string();
            all_tests.push((pname.clone(), tname.clone()));
            let wanted_pkg = opts.packages.is_empty() || opts.packages.contains(&pname);
            let wanted_test = if opts.tests.is_empty() {
                tname.starts_with(KERNEL_TEST_PREFIX)
            } else {
                opts.tests.contains(&tname)
            };
            if wanted_pkg && wanted_test {
                let entry = found.entry(pname.clone()).or_default();
                entry.tests.push(tname);
                entry.features.extend(
                    t["required-features"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.as_str().map(str::to_owned)),
                );
            }
        }
    }
    for p in &opts.packages {
        if !meta["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|pkg| pkg["name"] == p.as_str())
        {
            bail!("vm-test: no workspace member named {p}");
        }
    }
    for t in &opts.tests {
        if !found.values().flat_map(|k| &k.tests).any(|x| x == t) {
            bail!("vm-test: no test target named {t} in the selected packages");
        }
    }
    if found.is_empty() {
        bail!(
            "vm-test: no kernel test targets (tests/{KERNEL_TEST_PREFIX}*.rs) in the selected packages; \
             test targets seen: {all_tests:?}"
        );
    }
    Ok(found)
}

pub(super) fn render_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_test_args() {
        let a: Vec<String> = [
            "-p",
            "fence-bridge",
            "--test",
            "kernel_devices",
            "virtio",
            "--",
            "--nocapture",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = VmTestArgs::parse(&a).unwrap();
        assert_eq!(o.packages, ["fence-bridge"]);
        assert_eq!(o.tests, ["kernel_devices"]);
        assert_eq!(o.test_args, ["virtio", "--nocapture"]);
    }
}
