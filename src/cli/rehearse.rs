//! `run --rehearse` on the command line: what the plan did, then that it was rolled back.

use std::io::Write;

use upgrader::engine::{Rehearsal, RehearsalResult};

/// The rehearsal's report: each item with its statements and changed rows, each table
/// the plan changed (rows, and the schema diff), and the verdict.
pub(crate) fn print_rehearsal(out: &mut impl Write, report: &Rehearsal) {
    if report.result == RehearsalResult::Current {
        let _ = writeln!(
            out,
            "{} is current at {}: nothing to rehearse",
            report.project, report.to
        );
        return;
    }
    let _ = writeln!(
        out,
        "rehearsal of {} {} -> {} (one transaction, rolled back):",
        report.project,
        report.from.as_deref().unwrap_or("(empty)"),
        report.to
    );
    for step in &report.steps {
        let rows = step
            .rows_affected
            .map_or("rows not counted".to_string(), |rows| {
                format!("{rows} rows")
            });
        let _ = writeln!(
            out,
            "  {:<12} {:<28} {} -> {}  ({} statement{}, {rows}, {} ms)",
            step.kind,
            step.name,
            step.from.as_deref().unwrap_or("(empty)"),
            step.to,
            step.statements,
            if step.statements == 1 { "" } else { "s" },
            step.duration_ms
        );
    }
    if !report.tables.is_empty() {
        let _ = writeln!(out, "tables:");
    }
    for table in &report.tables {
        let count = |rows: Option<u64>| rows.map_or("-".to_string(), |r| r.to_string());
        let _ = writeln!(
            out,
            "  {:<28} rows {} -> {} (+{} -{}), schema {}",
            table.table,
            count(table.rows_before),
            count(table.rows_after),
            table.rows_added,
            table.rows_removed,
            table.schema
        );
        if let Some(diff) = &table.diff {
            for line in diff.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    match &report.failed {
        None => {
            let _ = writeln!(
                out,
                "rehearsal passed in {} ms; everything was rolled back",
                report.duration_ms
            );
        }
        Some(failed) => {
            let _ = writeln!(
                out,
                "rehearsal failed at step '{}' of {}; everything was rolled back",
                failed.step, failed.project
            );
        }
    }
}
