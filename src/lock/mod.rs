//! `upgrade.lock`: a JSON record of the run held with an OS file lock for the run's whole
//! life. Its four states (free, held, failed, stale) decide whether anyone may upgrade.
//!
//! The path is hostile ground (anyone who can write the project directory can put a link,
//! a FIFO or a huge file there): it is never followed, never blocks, and only a regular
//! file of at most [`MAX_RECORD_BYTES`] is read. A look at the lock that locked a file a
//! finishing run had just removed starts over, so it never reports a finished run as dead.
//!
//! Here: the looks (`inspect`, `unlock`); `record.rs` what the file says, `file.rs` the
//! OS file handling, `guard.rs` the lock held by this process.

mod file;
mod guard;
mod record;
#[cfg(test)]
mod tests;

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use file::{io, open_lock, read_bounded, same_file, Access};
use record::parse_record;

pub use guard::LockGuard;
pub use record::{LockKind, LockRecord, LockState, Operation, RecordState};

/// The file name, in the project directory.
pub const LOCK_FILE: &str = crate::layout::Layout::LOCK;

/// The most a lock record may take on disk. The writer keeps every record well below it
/// (long errors are clipped), so a larger file is not a lock record: it is corrupt.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// Lock file errors.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else is upgrading, or a previous run left the lock.
    #[error("{0}")]
    Halted(String),
    /// The lock path names something other than a regular file (a FIFO, a directory, a
    /// symbolic link…). It is never opened for reading or writing through, nor removed:
    /// a person must look at it.
    #[error(
        "{} is {what}, not a regular file: remove it (upgrader neither follows nor removes it)",
        path.display()
    )]
    NotRegular {
        /// The lock file.
        path: PathBuf,
        /// What it is, with its article: `a FIFO`, `a directory`, `a symbolic link`…
        what: &'static str,
    },
    /// A regular file too large to be a lock record.
    #[error(
        "{} is {size} bytes, more than any lock record ({MAX_RECORD_BYTES} bytes): it is corrupt; look at it, then run `upgrader unlock` to remove it",
        path.display()
    )]
    Corrupt {
        /// The lock file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// File system trouble.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How often a look at the lock starts over because the file it opened was removed or
/// replaced before it could lock it. Each start-over means a run ended or began in the
/// meantime, so running out means runs keep coming: an upgrade is in progress.
const LOOK_AGAIN: usize = 100;

/// Test-only: `UPGRADER_TEST_ONLY_LOCK_PAUSE_MS` makes a look at the lock (`inspect`,
/// `unlock`) sleep between opening the file and locking it, which widens the window in
/// which a finishing run removes the file. Compiled into debug builds only.
fn test_only_pause() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var_os("UPGRADER_TEST_ONLY_LOCK_PAUSE_MS")
        .and_then(|v| v.to_str().and_then(|v| v.parse::<u64>().ok()))
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Looks at the lock without taking it.
pub fn inspect(path: &Path) -> Result<LockState, LockError> {
    inspect_with(path, &mut test_only_pause)
}

/// [`inspect`], calling `between_open_and_lock` where a race with a finishing run opens.
fn inspect_with(
    path: &Path,
    between_open_and_lock: &mut dyn FnMut(),
) -> Result<LockState, LockError> {
    for _ in 0..LOOK_AGAIN {
        let Some(mut file) = open_lock(path, Access::Read)? else {
            return Ok(LockState::Free);
        };
        between_open_and_lock();
        // A shared lock is enough to learn whether a runner holds its exclusive one.
        let held = match file.try_lock_shared() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(e)) => return Err(io(path)(e)),
        };
        // A finishing run removes the file, then releases it: a file no longer at the
        // path says nothing about now (its `running` record would read as a dead run).
        if !same_file(&file, path) {
            if !held {
                let _ = file.unlock();
            }
            continue;
        }
        let state = state_of(&mut file, path, held);
        if !held {
            let _ = file.unlock();
        }
        return state;
    }
    Ok(LockState::Held(None))
}

/// The state of the lock file `file`, opened at `path` and found held or not.
fn state_of(file: &mut File, path: &Path, held: bool) -> Result<LockState, LockError> {
    let bytes = match read_bounded(file, path) {
        Ok(bytes) => bytes,
        // A live holder's record is only informative; the holder is what matters.
        Err(LockError::Corrupt { .. }) if held => return Ok(LockState::Held(None)),
        Err(error) => return Err(error),
    };
    if !held && bytes.is_empty() {
        // A runner that died between creating the file and writing it had touched nothing.
        return Ok(LockState::Free);
    }
    let record = parse_record(&bytes);
    Ok(match held {
        true => LockState::Held(record),
        false => LockState::unheld(record),
    })
}

/// Removes a failed or stale lock (or a corrupt one); refuses while a live process holds
/// it, and refuses anything but a regular file. Returns the state that was cleared.
pub fn unlock(path: &Path) -> Result<LockState, LockError> {
    unlock_with(path, &mut test_only_pause)
}

/// [`unlock`], calling `between_open_and_lock` where a race with other runs opens.
fn unlock_with(
    path: &Path,
    between_open_and_lock: &mut dyn FnMut(),
) -> Result<LockState, LockError> {
    for _ in 0..LOOK_AGAIN {
        let Some(mut file) = open_lock(path, Access::Read)? else {
            return Ok(LockState::Free);
        };
        between_open_and_lock();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let state = inspect(path)?;
                if state == LockState::Free {
                    continue;
                }
                return Err(LockError::Halted(format!(
                    "refusing to unlock: {}",
                    state
                        .explain(path)
                        .unwrap_or_else(|| "a live process holds the lock".into())
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io(path)(e)),
        }
        // What we locked must be what the path names: the file we opened may have been
        // removed by a finishing run, and the path may now name a newer run's live lock.
        if !same_file(&file, path) {
            let _ = file.unlock();
            continue;
        }
        // A corrupt file is cleared like a stale one: nobody holds it.
        let record = read_bounded(&mut file, path)
            .ok()
            .and_then(|bytes| parse_record(&bytes));
        let state = LockState::unheld(record);
        crate::failpoint::failpoint!("unlock-before-remove", LockError::Halted);
        std::fs::remove_file(path).map_err(io(path))?;
        crate::failpoint::failpoint!("unlock-after-remove", LockError::Halted);
        let _ = file.unlock();
        return Ok(state);
    }
    Err(LockError::Halted(
        "refusing to unlock: upgrade in progress (runs keep starting and finishing)".into(),
    ))
}
