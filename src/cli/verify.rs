//! `verify`'s output on the command line: the library's words for the report, and what
//! `--accept` or `--repair-version` recorded.

use std::io::Write;

use upgrader::engine::{Accepted, VerifyReport};

/// The report of every project, root first.
pub(crate) fn print_verify(out: &mut impl Write, report: &VerifyReport) {
    let _ = out.write_all(report.text().as_bytes());
}

/// What `--accept` or `--repair-version` recorded.
pub(crate) fn print_accepted(out: &mut impl Write, accepted: &Accepted) {
    for line in &accepted.accepted {
        let _ = writeln!(out, "accepted {line}");
    }
    let _ = writeln!(out, "reason recorded in the history: {}", accepted.reason);
}
