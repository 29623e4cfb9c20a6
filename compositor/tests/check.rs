//! `fencegate check` on any machine (no kernel needed): an shm client runs clean and its report
//! matches the schema in docs/; the exit status tells a client that failed by itself from a
//! clean run; a check without a client is a usage error. The kernel clients and every misbehave
//! scenario are in kernel_check.rs.

mod common;

use std::process::Command;

use common::check_report::{check, check_program, finding_kinds};
use common::fencegate_bin;

#[test]
fn an_shm_client_runs_clean_and_the_report_matches_the_schema() {
    let (status, r) = check(&[], "shm-client", &["--frames", "3"]);
    assert_eq!((status, finding_kinds(&r)), (0, vec![]), "{r:#}");
    assert_eq!(r["client_exit_status"], 0);
    assert!(r["commits"]["shm"].as_u64().unwrap() >= 3, "{r:#}");
    assert_eq!(r["connections"], 1, "{r:#}");
}

#[test]
fn a_client_that_fails_by_itself_exits_2_with_its_status_in_the_report() {
    let (status, r) = check_program(&[], "false", &[]);
    assert_eq!(status, 2, "{r:#}");
    assert_eq!(r["client_exit_status"], 1);
    assert!(finding_kinds(&r).is_empty());
}

#[test]
fn a_check_without_a_client_is_a_usage_error() {
    let output = Command::new(fencegate_bin())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CMD ARGS"), "{stderr}");
}
