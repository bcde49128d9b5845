//! Recovery: an install or rollback a killed process left is finished (its journal says
//! `applied`) or undone (it does not), before anything else reads the project.

use std::path::Path;

use super::journal::{finish, undo, Ops};
use super::{fail, io_fail, record, work_dir};
use crate::error::Error;
use crate::lock::{LockGuard, Operation, RecordState};

/// What [`recover`] found.
pub(crate) enum Recovery {
    /// No install to finish or undo.
    Nothing,
    /// One a killed process left was finished or undone: what was done, for the log.
    Done(String),
    /// A live process is installing: the project's files are changing.
    InProgress(String),
}

/// Finishes or undoes an install or rollback a killed process left, before anything else
/// reads the project: the tree ends exactly old or exactly new. Takes the lock it left
/// (state `installing`); does nothing while a live process holds the lock.
pub(crate) fn recover(project_dir: &Path) -> Result<Recovery, Error> {
    let work = work_dir(project_dir);
    let lock_path = crate::layout::Layout::new(project_dir).lock_file();
    let journal_exists = work.join("journal").exists();
    if !journal_exists {
        // An install killed after its work was cleared, before its lock was: only the
        // lock is left.
        let left = match crate::lock::inspect(&lock_path) {
            Ok(crate::lock::LockState::Stale(Some(record))) => {
                record.state == RecordState::Installing
            }
            _ => false,
        };
        if !left {
            return Ok(Recovery::Nothing);
        }
    }
    let record = record(Operation::Install, None, String::new());
    let guard = match LockGuard::take_over_install(&lock_path, record) {
        Ok(guard) => guard,
        // A live process is installing: its business; nobody reads the files meanwhile.
        Err(crate::lock::LockError::Halted(why)) if journal_exists => {
            return Ok(Recovery::InProgress(format!(
                "a code update is being installed ({why})"
            )))
        }
        Err(crate::lock::LockError::Halted(_)) => return Ok(Recovery::Nothing),
        Err(error) => return Err(error.into()),
    };
    match recover_locked(project_dir) {
        Ok(done) => {
            drop(guard);
            Ok(Recovery::Done(done))
        }
        Err(error) => {
            // Left as found for a person to look at; every command says so until then.
            guard.leave();
            Err(error)
        }
    }
}

/// [`recover`] with the lock held.
pub(super) fn recover_locked(project_dir: &Path) -> Result<String, Error> {
    let work = work_dir(project_dir);
    let journal_path = work.join("journal");
    let journal = match std::fs::read_to_string(&journal_path) {
        Ok(text) => text,
        Err(_) => {
            // Staging begun before the journal: nothing outside it changed.
            if work.exists() {
                std::fs::remove_dir_all(&work).map_err(io_fail("cannot remove", &work))?;
            }
            return Ok("removed the lock of an install that had changed nothing".into());
        }
    };
    let said = |word: &str| {
        journal.lines().any(|line| {
            line.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(word))
        })
    };
    let ops: Option<Ops> = std::fs::read_to_string(work.join("ops.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    match ops {
        Some(ops) if said("applied") => {
            finish(project_dir, &ops)?;
            Ok("finished an interrupted code install".into())
        }
        Some(ops) if said("applying") => {
            undo(project_dir, &ops)?;
            Ok("undid an interrupted code install; the project is as it was".into())
        }
        None if said("applying") => Err(fail(format!(
            "an interrupted code install changed files, and its list of changes ({}) cannot be read: nothing was touched. The files it replaced are in {}, the tree before it in the newest updates/Updates_Backups/app-…zip; put the project back from them, then remove {} and {}",
            work.join("ops.json").display(),
            work.join("old").display(),
            work.display(),
            crate::layout::Layout::new(project_dir).lock_file().display()
        ))),
        // Nothing was changed yet: the staging goes.
        _ => {
            std::fs::remove_dir_all(&work).map_err(io_fail("cannot remove", &work))?;
            Ok("removed the staging of an interrupted code install; nothing had changed".into())
        }
    }
}
