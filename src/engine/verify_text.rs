//! `verify`'s report in words: per project, each table and applied step that differs
//! (with its diff and the version it matches), then what to do about it. The command line
//! prints it; the web gate halts with it.

use std::fmt::Write;

use super::verify::{StepState, VerifyReport};
use crate::schema::TableState;

impl VerifyReport {
    /// The report of this project and its packages in words, with the diffs; ends with
    /// what to do when anything drifted.
    pub fn text(&self) -> String {
        let mut out = String::new();
        write_report(&mut out, self);
        out
    }
}

fn write_report(out: &mut String, report: &VerifyReport) {
    for project in report.all() {
        print_project(out, project);
    }
    if report.any_drift() {
        let _ = writeln!(
            out,
            "drift found. If the database is right, record it as it is: upgrader verify --accept NAME… --reason \"why\"; if a table was restored from an older version: upgrader verify --repair-version --reason \"why\""
        );
    }
}

fn print_project(out: &mut String, report: &VerifyReport) {
    let version = report.db_version.as_deref().unwrap_or("no version");
    let count = |state: TableState| report.tables.iter().filter(|t| t.state == state).count();
    let edited = report
        .steps
        .iter()
        .filter(|s| s.state == StepState::Changed)
        .count();
    if !report.recorded {
        let _ = writeln!(
            out,
            "{} ({version}): no table schema recorded yet (the next run records them); {} applied step(s) checked, {edited} edited",
            report.project,
            report.steps.len()
        );
    } else {
        let _ = writeln!(
            out,
            "{} ({version}): {} table(s) unchanged, {} changed, {} missing; {} applied step(s) checked, {edited} edited",
            report.project,
            count(TableState::Unchanged),
            count(TableState::Changed),
            count(TableState::Missing),
            report.steps.len()
        );
    }
    for table in &report.tables {
        match table.state {
            TableState::Unchanged => {}
            TableState::Missing => {
                let _ = writeln!(
                    out,
                    "  missing  {}: recorded at {}, not in the database",
                    table.table, table.recorded_version
                );
            }
            TableState::Changed => {
                let matches = match &table.matches_version {
                    Some(matched) => format!(
                        "{} matches its {matched} schema; the database records {version}",
                        table.table
                    ),
                    None => format!(
                        "{} differs from its schema recorded at {} and matches no recorded version",
                        table.table, table.recorded_version
                    ),
                };
                let _ = writeln!(out, "  changed  {}: {matches}", table.table);
                for line in table.diff.as_deref().unwrap_or_default().lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    for step in &report.steps {
        match step.state {
            StepState::Unchanged => {}
            StepState::Changed => {
                let _ = writeln!(
                    out,
                    "  edited   step '{}': its SQL or plugin calls differ from what was applied (checksum {} recorded, {} now)",
                    step.name,
                    short(&step.recorded),
                    short(step.manifest.as_deref().unwrap_or_default())
                );
            }
            StepState::Removed => {
                let _ = writeln!(
                    out,
                    "  note     step '{}' was applied but is no longer in the manifest",
                    step.name
                );
            }
        }
    }
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}
