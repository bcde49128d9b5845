//! What the engine reports: status, plan, run outcome, lint findings. Serialized as the
//! JSON keys of DESIGN.md.

use std::path::Path;

use serde::Serialize;

use crate::error::Exit;
use crate::lock::{LockKind, LockState};
use crate::plan::PlanItem;

/// One item of a plan as reported (`status`, `plan`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportItem {
    /// Step name, `install` or `version-only`.
    pub name: String,
    /// Version before (null for install).
    pub from: Option<String>,
    /// Version after.
    pub to: String,
    /// `install`, `step` or `version-only`.
    pub kind: &'static str,
}

impl From<&PlanItem> for ReportItem {
    fn from(item: &PlanItem) -> Self {
        ReportItem {
            name: item.name.clone(),
            from: item.from.as_ref().map(ToString::to_string),
            to: item.to.to_string(),
            kind: item.kind.name(),
        }
    }
}

/// The lock as reported.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    /// Which of the four states.
    pub state: LockKind,
    /// Upgrading or failed process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When its run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The step running or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The error of a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A sentence for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The lock file.
    pub path: String,
}

impl LockReport {
    pub(crate) fn new(state: &LockState, path: &Path) -> LockReport {
        let record = state.record();
        LockReport {
            state: state.kind(),
            pid: record.map(|r| r.pid),
            host: record.map(|r| r.host.clone()),
            started_at: record.map(|r| r.started_at.clone()),
            step: record.and_then(|r| r.step.clone()),
            error: record.and_then(|r| r.error.clone()),
            message: state.explain(path),
            path: path.display().to_string(),
        }
    }
}

/// What `status` and `check` show.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Project name.
    pub project: String,
    /// Version in `VERSION`.
    pub code_version: String,
    /// Version recorded in the database, null when none.
    pub db_version: Option<String>,
    /// What upgrading this project needs.
    pub state: Status,
    /// What `run` would do.
    pub pending: Vec<ReportItem>,
    /// The lock.
    pub lock: LockReport,
    /// Code update packages waiting in `updates/Updates_Pending/`.
    pub updates_pending: Vec<String>,
    /// The database, password hidden.
    pub database: String,
    /// Why no plan can be made (downgrade, no starting version), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The root's report only, when the application has packages: theirs, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<Report>>,
}

/// A project's `state` in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The database is at the code version.
    Current,
    /// Steps (or version bumps) are pending.
    Pending,
    /// The lock stops upgrading (in progress, failed or stale).
    Halted,
    /// The database records no version for the project yet.
    Uninitialized,
}

impl Status {
    /// The name `--json` shows.
    pub fn name(self) -> &'static str {
        match self {
            Status::Current => "current",
            Status::Pending => "pending",
            Status::Halted => "halted",
            Status::Uninitialized => "uninitialized",
        }
    }
}

impl Report {
    /// The root's report and its packages'.
    pub fn all(&self) -> impl Iterator<Item = &Report> {
        std::iter::once(self).chain(self.packages.iter().flatten())
    }

    /// How `check` exits, over the whole application: halted, then a problem, then
    /// pending (or uninitialized), then update packages pending, else ok.
    pub fn exit(&self) -> Exit {
        if self.state == Status::Halted {
            Exit::Halted
        } else if self.all().any(|r| r.problem.is_some()) {
            Exit::Error
        } else if self
            .all()
            .any(|r| matches!(r.state, Status::Pending | Status::Uninitialized))
        {
            Exit::Pending
        } else if !self.updates_pending.is_empty() {
            Exit::UpdatesPending
        } else {
            Exit::Ok
        }
    }

    /// [`Report::exit`] as a process exit code.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.exit().code())
    }
}

/// What `plan` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// Project name.
    pub project: String,
    /// Where the run starts (null for an install).
    pub from: Option<String>,
    /// The code version.
    pub to: String,
    /// The version the database records now (null when none).
    pub db_version: Option<String>,
    /// The items, in order.
    pub steps: Vec<ReportItem>,
    /// The root's plan only, when the application has packages: theirs, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<PlanReport>>,
    /// The root's plan only, when the application has packages: every project's items
    /// in the order the run takes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<OrderedItem>>,
}

/// An item of the whole application's run, with its project.
#[derive(Debug, Clone, Serialize)]
pub struct OrderedItem {
    /// The project the item belongs to.
    pub project: String,
    /// The item.
    #[serde(flatten)]
    pub item: ReportItem,
}

/// One item a run applied.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Step name, `install` or `version-only`.
    pub name: String,
    /// `install`, `step` or `version-only`.
    pub kind: &'static str,
    /// Version before.
    pub from: Option<String>,
    /// Version after.
    pub to: String,
    /// Statements executed.
    pub statements: usize,
    /// How long it took.
    pub duration_ms: u64,
}

/// What a run did (`result` in `run --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Steps (or version-only bumps) ran.
    Upgraded,
    /// The install ran.
    Installed,
    /// A database without a recorded version was adopted at the code version: nothing
    /// ran, the version was recorded.
    Recorded,
    /// Nothing to do.
    Current,
}

impl RunResult {
    /// The name `--json` shows.
    pub fn name(self) -> &'static str {
        match self {
            RunResult::Upgraded => "upgraded",
            RunResult::Installed => "installed",
            RunResult::Recorded => "recorded",
            RunResult::Current => "current",
        }
    }
}

/// The result of `run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Project name.
    pub project: String,
    /// What the run did.
    pub result: RunResult,
    /// The version before (null when none was recorded).
    pub from: Option<String>,
    /// The version now.
    pub to: String,
    /// What ran.
    pub applied: Vec<Applied>,
    /// Whole run, lock to unlock.
    pub duration_ms: u64,
    /// The root's outcome only, when the application has packages: theirs, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<RunOutcome>>,
}

/// A statement `lint` (or a run) refuses, or a script it cannot read.
#[derive(Debug, Clone, Serialize)]
pub struct LintFinding {
    /// The project (the root's, or a package's) whose manifest holds the step.
    pub project: String,
    /// The install (`install`) or step.
    pub step: String,
    /// `file:line:column` of the statement; empty for a script that cannot be read.
    pub location: String,
    /// The statement, shortened.
    pub statement: String,
    /// Why it is refused.
    pub reason: String,
    /// The backend it was judged for (`sqlite`, `postgres`, `mysql`).
    pub dialect: &'static str,
    /// Marking the step `transaction="none"` would cure it: a statement of a step (not
    /// the install) that commits implicitly on MySQL. `lint --fix` marks such steps.
    pub fixed_by_transaction_none: bool,
}

impl std::fmt::Display for LintFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.is_empty() {
            return f.write_str(&self.reason);
        }
        write!(
            f,
            "{}: step '{}': statement refused on {}: {}: `{}`",
            self.location, self.step, self.dialect, self.reason, self.statement
        )
    }
}
