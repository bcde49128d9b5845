//! A session: the upgrade lock held, both of it (the `upgrade.lock` file and the
//! database-level lock), and the connection it was taken on. Operations that must run
//! under the lock (a run today; a backup, a code install, verify, a rehearsal) borrow the
//! connection and the lock record from it, so that one lock can cover several of them.

use std::path::Path;

use crate::db::{Backend, LockSpan};
use crate::error::Error;
use crate::failpoint::failpoint;
use crate::lock::{LockGuard, LockRecord};

/// The upgrade lock, held; released when the session ends (or is dropped).
pub(crate) struct Session {
    /// `None` once the session has ended.
    guard: Option<LockGuard>,
    db: Box<dyn Backend>,
    span: LockSpan,
}

impl Session {
    /// Takes the lock file (writing `record`), then the database-level lock on `db`. When
    /// the database lock cannot be taken, the lock file is removed again: nothing ran.
    pub(crate) fn begin(
        lock_path: &Path,
        record: LockRecord,
        mut db: Box<dyn Backend>,
        span: LockSpan,
    ) -> Result<Session, Error> {
        let guard = LockGuard::acquire(lock_path, record)?;
        // Dropping the guard on an error removes the file it wrote.
        failpoint!("lock-file-written", crate::failpoint::db_error);
        db.lock(span)?;
        failpoint!("database-locked", crate::failpoint::db_error);
        Ok(Session {
            guard: Some(guard),
            db,
            span,
        })
    }

    /// The connection and the lock record, lent to an operation.
    pub(crate) fn parts(&mut self) -> (&mut dyn Backend, &mut LockGuard) {
        (
            self.db.as_mut(),
            self.guard
                .as_mut()
                .expect("a session is held until it ends"),
        )
    }

    /// The connection.
    pub(crate) fn db(&mut self) -> &mut dyn Backend {
        self.db.as_mut()
    }

    /// Makes the database lock hold between transactions too (a plan made under the lock
    /// turned out to commit in the middle).
    pub(crate) fn widen(&mut self, span: LockSpan) -> Result<(), Error> {
        if span == LockSpan::Session && self.span != LockSpan::Session {
            self.db.lock(LockSpan::Session)?;
            self.span = LockSpan::Session;
        }
        Ok(())
    }

    /// Ends the session after success: the database lock is released, then the lock file
    /// removed.
    pub(crate) fn end(mut self) {
        self.release();
        failpoint!("before-lock-cleared");
        self.guard.take();
    }

    /// Ends the session after a failure: the database lock is released; the lock file
    /// stays, marked failed with the step and the error, until a developer clears it.
    pub(crate) fn fail(mut self, step: Option<&str>, error: &str) {
        self.release();
        if let Some(guard) = self.guard.take() {
            if let Err(failure) = guard.fail(step, error) {
                log::error!("could not mark the lock failed: {failure}");
            }
        }
    }

    fn release(&mut self) {
        if let Err(error) = self.db.rollback() {
            log::debug!("rolling back at the end of the session: {error}");
        }
        if let Err(error) = self.db.unlock() {
            // Closing the connection releases it anyway.
            log::debug!("releasing the database upgrade lock: {error}");
        }
    }
}

impl Drop for Session {
    /// A session abandoned without an outcome (nothing ran, or an error before the first
    /// step) leaves no lock behind.
    fn drop(&mut self) {
        if self.guard.is_some() {
            self.release();
            self.guard.take();
        }
    }
}
