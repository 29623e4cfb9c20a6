//! Counting what libtest ran, across every `cargo test` of every tier, so a run ends with one
//! honest total.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

#[derive(Default, Debug)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    pub binaries: u64,
    pub cargo_failures: Vec<String>,
}

impl Totals {
    /// Runs `cmd` (a `cargo test`), echoing its stdout while counting its result lines.
    pub fn run(&mut self, cmd: &mut Command) -> Result<ExitStatus> {
        cmd.stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            self.add_line(&line);
            writeln!(out, "{line}").ok();
            out.flush().ok();
        }
        Ok(child.wait()?)
    }

    /// Reads libtest's `test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; ...`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim_start().strip_prefix("test result: ") else {
            return;
        };
        let Some((_, counts)) = rest.split_once(". ") else {
            return;
        };
        self.binaries += 1;
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    pub fn absorb(&mut self, other: Totals) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.binaries += other.binaries;
        self.cargo_failures.extend(other.cargo_failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summaries() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s");
        t.add_line("running 2 tests");
        assert_eq!((t.passed, t.failed, t.ignored, t.binaries), (3, 2, 1, 2));
    }
}
