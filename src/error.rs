//! The library's error type: one enum over the areas, each carrying what and where, and
//! the exit code the command line maps it to.

use crate::db::{DbError, UrlError};
use crate::lock::LockError;
use crate::manifest::ManifestError;
use crate::plan::PlanError;
use crate::version::VersionFileError;

/// Everything that can stop upgrader.
#[derive(Debug, thiserror::Error)]
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
        /// The plan item that failed.
        step: String,
        /// The whole explanation.
        message: String,
    },
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
    /// The process exit code of DESIGN.md: 4 when halted by a lock, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Halted(_) => 4,
            _ => 1,
        }
    }
}
