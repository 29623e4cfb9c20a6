//! `fencegate check --json` reports: running the check, validating against the schema in docs/.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{client_bin, fencegate_bin};

/// Runs `fencegate check --json [check_args] -- CLIENT client_args`, CLIENT one of the example
/// clients: (exit status, the report, validated).
pub fn check(check_args: &[&str], client: &str, client_args: &[&str]) -> (i32, Value) {
    check_program(
        check_args,
        &client_bin(client).display().to_string(),
        client_args,
    )
}

/// [`check`] with any program (a path, or a name on PATH).
pub fn check_program(check_args: &[&str], program: &str, client_args: &[&str]) -> (i32, Value) {
    let client = program;
    let output = Command::new(fencegate_bin())
        .arg("check")
        .arg("--json")
        .args(check_args)
        .arg("--")
        .arg(program)
        .args(client_args)
        .output()
        .expect("running fencegate check");
    let status = output.status.code().expect("fencegate check exits");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|err| {
        panic!(
            "{client}: the report is not JSON ({err}); exit {status}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    validate(&report);
    (status, report)
}

/// Validates `report` against docs/src/check-report.schema.json.
pub fn validate(report: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src/check-report.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&path).expect("the schema"))
        .expect("the schema is JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("check-report.schema.json", schema)
        .expect("adding the schema");
    let index = compiler
        .compile("check-report.schema.json", &mut schemas)
        .expect("the schema compiles");
    if let Err(err) = schemas.validate(report, index) {
        panic!("the report does not match the schema: {err:#}\n{report:#}");
    }
}

/// The kinds of the report's findings, in order.
pub fn finding_kinds(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["kind"].as_str().expect("kind").to_string())
        .collect()
}
