//! The library's error type: one enum over the areas, each carrying what and where, and
//! the exit code the command line maps it to.

use crate::db::{DbError, UrlError};
use crate::lock::LockError;
use crate::manifest::ManifestError;
use crate::plan::PlanError;
use crate::version::VersionFileError;

/// The process exit codes of DESIGN.md, shared by the command line, the library's errors
/// and reports, and the web gate (which reads its child run's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exit {
    /// Success, or nothing to do.
    Ok,
    /// An error.
    Error,
    /// A usage error (bad arguments).
    Usage,
    /// A database upgrade is pending (`check`).
    Pending,
    /// Halted by the lock (in progress, failed or stale).
    Halted,
    /// Schema drift or a checksum mismatch (`verify`).
    Drift,
    /// Code update packages are pending (`check`).
    UpdatesPending,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::Pending => 3,
            Exit::Halted => 4,
            Exit::Drift => 5,
            Exit::UpdatesPending => 6,
        }
    }

    /// The exit for a process exit code; `None` for one upgrader never uses.
    pub fn from_code(code: i32) -> Option<Exit> {
        [
            Exit::Ok,
            Exit::Error,
            Exit::Usage,
            Exit::Pending,
            Exit::Halted,
            Exit::Drift,
            Exit::UpdatesPending,
        ]
        .into_iter()
        .find(|exit| i32::from(exit.code()) == code)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// Everything that can stop upgrader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad `VERSION` file.
    #[error(transparent)]
    VersionFile(#[from] VersionFileError),
    /// A bad manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A bad database URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// No plan can be made (downgrade, no starting version, straddling step).
    #[error(transparent)]
    Plan(Box<PlanError>),
    /// The lock file could not be handled.
    #[error(transparent)]
    Lock(LockError),
    /// Upgrading is halted by the lock (in progress, failed or stale).
    #[error("{0}")]
    Halted(String),
    /// A live process is installing a code update: the project's files are changing, so
    /// nothing reads them until it ends (a run waits for it; the web gate answers 503).
    #[error("{0}")]
    Installing(String),
    /// The project is misconfigured (for example two different project names).
    #[error("{0}")]
    Config(String),
    /// A script or step refused before the run started (unreadable script, bad SQL,
    /// a statement the guard refuses, a plugin that cannot be resolved).
    #[error("{0}")]
    Refused(String),
    /// The database failed outside any step.
    #[error("database: {0}")]
    Db(#[from] DbError),
    /// A step failed during the run; the run was rolled back as far as it could be.
    #[error("{message}")]
    StepFailed {
        /// The project (the root's or a package's) whose item failed.
        project: String,
        /// The plan item that failed.
        step: String,
        /// The whole explanation.
        message: String,
        /// What stayed applied: the items committed before the failure (per step, or
        /// before a `transaction="none"` step), in run order. Empty when the whole run
        /// was rolled back.
        committed: Vec<Committed>,
    },
}

/// An item of a failed run that was committed before the failure and stays applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Committed {
    /// Its project.
    pub project: String,
    /// The step name, `install` or `version-only`.
    pub name: String,
    /// `install`, `step` or `version-only`.
    pub kind: &'static str,
    /// The version before.
    pub from: Option<String>,
    /// The version after.
    pub to: String,
}

impl From<PlanError> for Error {
    fn from(error: PlanError) -> Self {
        Error::Plan(Box::new(error))
    }
}

impl From<LockError> for Error {
    fn from(error: LockError) -> Self {
        match error {
            LockError::Halted(message) => Error::Halted(message),
            other => Error::Lock(other),
        }
    }
}

impl Error {
    /// How the command line exits on this error: [`Exit::Halted`] when halted by a lock,
    /// else [`Exit::Error`].
    pub fn exit(&self) -> Exit {
        match self {
            Error::Halted(_) | Error::Installing(_) => Exit::Halted,
            _ => Exit::Error,
        }
    }

    /// The process exit code of DESIGN.md ([`Error::exit`]'s): 4 when halted by a lock,
    /// else 1.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.exit().code())
    }
}
