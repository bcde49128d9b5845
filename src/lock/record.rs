//! What the lock file says (`LockRecord`, its `state` and `operation`) and what a look at
//! it finds (`LockState`, `LockKind`), with the sentence that explains a halt.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the lock file says about a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Process id of the upgrading process.
    pub pid: u32,
    /// Host it runs on.
    pub host: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Database version when the run started (null for an install).
    pub from: Option<String>,
    /// The version the run aims for.
    pub to: String,
    /// What the holder is doing, or that it failed.
    pub state: RecordState,
    /// The step running, or the one that failed.
    pub step: Option<String>,
    /// The error of a failed run.
    pub error: Option<String>,
    /// Set while a `transaction="none"` step runs, and kept if it fails: the database may
    /// then hold part of that step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_transactional: bool,
    /// The operation that holds (or held) the lock. Records written before it existed
    /// were always runs.
    #[serde(default)]
    pub operation: Operation,
}

impl LockRecord {
    /// The record of `operation` begun now by this process on this host (state
    /// `running`; `from`, `to` and the rest for the caller to fill in).
    pub fn by_this_process(operation: Operation) -> LockRecord {
        LockRecord {
            pid: std::process::id(),
            host: crate::run_info::host(),
            started_at: crate::run_info::now(),
            operation,
            ..LockRecord::default()
        }
    }
}

/// The `state` of a lock record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// A database upgrade (or another operation on the database) is in progress.
    #[default]
    Running,
    /// A code update package is being installed.
    Installing,
    /// The operation failed; the lock stays until a developer clears it.
    Failed,
    /// A state a later upgrader wrote that this one does not know: held if its holder
    /// lives, else stale, like `running`.
    #[serde(other)]
    Other,
}

/// What holds the upgrade lock, as its record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// `upgrader run`.
    #[default]
    Run,
    /// `upgrader restore`.
    Restore,
    /// `upgrader updates install` (or finishing or undoing one that was interrupted).
    Install,
    /// `upgrader updates rollback`.
    Rollback,
    /// `upgrader run --rehearse`.
    Rehearse,
    /// `upgrader verify --accept` or `--repair-version`.
    Verify,
    /// Anything a later upgrader does under the lock that this one does not know.
    #[serde(other)]
    Other,
}

/// Which of the four states the lock is in (`lock.state` in `status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// No lock file.
    Free,
    /// A live process holds it.
    Held,
    /// A run failed and left it.
    Failed,
    /// Its holder died.
    Stale,
}

impl LockKind {
    /// `free`, `held`, `failed` or `stale`.
    pub fn name(self) -> &'static str {
        match self {
            LockKind::Free => "free",
            LockKind::Held => "held",
            LockKind::Failed => "failed",
            LockKind::Stale => "stale",
        }
    }
}

impl std::fmt::Display for LockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The lock as found by someone who does not hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No lock file.
    Free,
    /// A live process holds the OS lock: an upgrade is in progress.
    Held(Option<LockRecord>),
    /// A run failed and left the lock for a developer to look at.
    Failed(LockRecord),
    /// The file says running but nobody holds it: the upgrading process died.
    Stale(Option<LockRecord>),
}

impl LockState {
    /// Which state, without the record.
    pub fn kind(&self) -> LockKind {
        match self {
            LockState::Free => LockKind::Free,
            LockState::Held(_) => LockKind::Held,
            LockState::Failed(_) => LockKind::Failed,
            LockState::Stale(_) => LockKind::Stale,
        }
    }

    /// `free`, `held`, `failed` or `stale`, as in `status --json`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The state of a lock file nobody holds whose record is `record`: failed when it says
    /// so, else stale (its holder died).
    pub(super) fn unheld(record: Option<LockRecord>) -> LockState {
        match record {
            Some(record) if record.state == RecordState::Failed => LockState::Failed(record),
            other => LockState::Stale(other),
        }
    }

    /// The record in the file, when it could be read.
    pub fn record(&self) -> Option<&LockRecord> {
        match self {
            LockState::Free => None,
            LockState::Held(record) | LockState::Stale(record) => record.as_ref(),
            LockState::Failed(record) => Some(record),
        }
    }

    /// A sentence for a person saying why upgrading is halted; `None` when free.
    pub fn explain(&self, lock_path: &Path) -> Option<String> {
        let shown = lock_path.display();
        let who = |r: &LockRecord| format!("pid {} on {}", r.pid, r.host);
        match self {
            LockState::Free => None,
            LockState::Held(record) => Some(format!(
                "upgrade in progress ({}); try again when it has finished",
                record
                    .as_ref()
                    .map_or_else(|| "another process".into(), who)
            )),
            LockState::Failed(record) => {
                let mut text = format!(
                    "the last upgrade failed at step '{}': {}",
                    record.step.as_deref().unwrap_or("?"),
                    record.error.as_deref().unwrap_or("unknown error")
                );
                if record.non_transactional {
                    text.push_str(
                        "; the step ran without a transaction (transaction=\"none\"), so the database may hold part of it",
                    );
                }
                text.push_str(&format!(
                    ". Fix the cause, then run `upgrader unlock` to remove {shown}"
                ));
                Some(text)
            }
            LockState::Stale(record) => {
                let mut text = match record {
                    Some(r) => format!(
                        "the upgrading process is gone ({}, step '{}'); what it had not committed was rolled back",
                        who(r),
                        r.step.as_deref().unwrap_or("?")
                    ),
                    None => "the upgrading process is gone; what it had not committed was rolled back"
                        .into(),
                };
                if record.as_ref().is_some_and(|r| r.non_transactional) {
                    text = text.replace(
                        "what it had not committed was rolled back",
                        "it was running a step without a transaction (transaction=\"none\"), so the database may hold part of it",
                    );
                }
                text.push_str(&format!(". Run `upgrader unlock` to remove {shown}"));
                Some(text)
            }
        }
    }
}

/// How much of a failed run's error the record keeps: enough to act on, and a record
/// always stays below [`super::MAX_RECORD_BYTES`].
pub(super) const MAX_ERROR_BYTES: usize = 16 * 1024;

/// How much of a step name the record keeps.
pub(super) const MAX_STEP_BYTES: usize = 4 * 1024;

pub(super) fn parse_record(bytes: &[u8]) -> Option<LockRecord> {
    serde_json::from_slice(bytes).ok()
}

pub(super) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}
