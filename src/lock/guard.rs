//! `LockGuard`: the lock held by this process, its record kept in memory and written in
//! place (deferred steps by a ticker thread), released (or left, or marked failed) at the
//! end.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::file::{
    io, open_lock, read_bounded, same_file, try_lock_patiently, write_at_start, Access,
};
use super::record::{clip, parse_record, MAX_ERROR_BYTES, MAX_STEP_BYTES};
use super::{inspect, LockError, LockRecord, LockState, RecordState, LOOK_AGAIN};

/// step would cost a system call per step; a run of many small steps is written at most
/// this often, while a step that starts after a quiet spell is written at once.
const LOCK_LAG: Duration = Duration::from_millis(20);

/// The lock file and its record, shared with the thread that writes deferred updates.
#[derive(Debug)]
struct Shared {
    file: File,
    record: LockRecord,
    /// Bytes of the record on disk.
    written: usize,
    /// The record has changed since it was last written.
    dirty: bool,
    last_write: Instant,
}

impl Shared {
    fn write(&mut self) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(&self.record).expect("lock record serializes");
        // Pad to the previous length so that one positioned write replaces the record
        // (JSON allows trailing white space).
        let body_len = text.len() + 1;
        if body_len < self.written {
            text.extend(std::iter::repeat_n(' ', self.written - body_len));
        }
        text.push('\n');
        self.written = text.len();
        self.dirty = false;
        self.last_write = Instant::now();
        write_at_start(&mut self.file, text.as_bytes())
    }
}

/// The thread that writes deferred lock updates; stops when `stop` is dropped.
#[derive(Debug)]
struct Ticker {
    stop: mpsc::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

/// The lock, held by this process; released when dropped. A failed run calls
/// [`LockGuard::fail`] so that the file stays behind.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
    shared: Arc<Mutex<Shared>>,
    keep: bool,
    ticker: Option<Ticker>,
}

impl LockGuard {
    /// Takes the lock for a run described by `record`, or says why it cannot.
    pub fn acquire(path: &Path, record: LockRecord) -> Result<LockGuard, LockError> {
        Self::acquire_with(path, record, false)
    }

    /// Takes the lock that a code install left when its process died (state
    /// `installing`, nobody holding it) or takes a free lock, so as to finish or undo that
    /// install; like [`LockGuard::acquire`] otherwise (halted by a live holder or a
    /// failed run).
    pub fn take_over_install(path: &Path, record: LockRecord) -> Result<LockGuard, LockError> {
        Self::acquire_with(path, record, true)
    }

    fn acquire_with(
        path: &Path,
        record: LockRecord,
        take_over_install: bool,
    ) -> Result<LockGuard, LockError> {
        for _ in 0..LOOK_AGAIN {
            let mut file = open_lock(path, Access::Create)?.expect("created when missing");
            match try_lock_patiently(&file) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let state = match inspect(path)? {
                        LockState::Free => continue,
                        other => other,
                    };
                    return Err(LockError::Halted(
                        state
                            .explain(path)
                            .unwrap_or_else(|| "upgrade in progress".into()),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(io(path)(e)),
            }
            // The holder before us may have removed the file after we opened it; a lock
            // on a removed file protects nothing, so start again with the new one.
            if !same_file(&file, path) {
                let _ = file.unlock();
                continue;
            }
            let bytes = match read_bounded(&mut file, path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    let _ = file.unlock();
                    return Err(error);
                }
            };
            let interrupted_install = take_over_install
                && parse_record(&bytes).is_some_and(|r| r.state == RecordState::Installing);
            if !bytes.trim_ascii().is_empty() && !interrupted_install {
                let state = LockState::unheld(parse_record(&bytes));
                let _ = file.unlock();
                // Leave the file exactly as it was for the developer to read.
                return Err(LockError::Halted(state.explain(path).unwrap_or_default()));
            }
            let mut shared = Shared {
                file,
                record,
                // A record taken over is padded over in full.
                written: bytes.len(),
                dirty: true,
                last_write: Instant::now(),
            };
            if let Err(error) = shared.write() {
                let _ = std::fs::remove_file(path);
                let _ = shared.file.unlock();
                return Err(io(path)(error));
            }
            return Ok(LockGuard {
                path: path.to_path_buf(),
                shared: Arc::new(Mutex::new(shared)),
                keep: false,
                ticker: None,
            });
        }
        Err(LockError::Halted(
            "upgrade in progress (runs keep starting and finishing); try again when they have finished".into(),
        ))
    }

    /// The record as it stands (possibly not yet written).
    pub fn record(&self) -> LockRecord {
        self.lock().record.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records which step is running (and whether it runs without a transaction). A step
    /// without a transaction is written before it starts, so that a crash during it is
    /// reported as possibly partial; other steps within [`LOCK_LAG`].
    pub fn set_step(&mut self, step: &str, non_transactional: bool) -> Result<(), LockError> {
        let path = self.path.clone();
        let deferred = {
            let mut shared = self.lock();
            shared.record.step = Some(clip(step, MAX_STEP_BYTES));
            shared.record.non_transactional = non_transactional;
            shared.dirty = true;
            if non_transactional || shared.last_write.elapsed() >= LOCK_LAG {
                shared.write().map_err(io(&path))?;
                false
            } else {
                true
            }
        };
        if deferred && self.ticker.is_none() {
            self.ticker = Some(self.start_ticker());
        }
        Ok(())
    }

    fn start_ticker(&self) -> Ticker {
        let (stop, wake) = mpsc::channel::<()>();
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = wake.recv_timeout(LOCK_LAG) {
                let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                if shared.dirty {
                    if let Err(error) = shared.write() {
                        log::warn!("cannot update the lock file: {error}");
                    }
                }
            }
        });
        Ticker { stop, handle }
    }

    fn stop_ticker(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            drop(ticker.stop);
            let _ = ticker.handle.join();
        }
    }

    /// Releases the OS lock but leaves the file as it stands (a code install that could
    /// not be finished or undone: state `installing`), so that the next command tries
    /// again instead of a live process holding it for as long as it runs.
    pub fn leave(mut self) {
        self.stop_ticker();
        self.keep = true;
    }

    /// Marks the run failed; the file stays after the guard is dropped.
    pub fn fail(mut self, step: Option<&str>, error: &str) -> Result<(), LockError> {
        self.stop_ticker();
        self.keep = true;
        let path = self.path.clone();
        let mut shared = self.lock();
        shared.record.state = RecordState::Failed;
        if let Some(step) = step {
            shared.record.step = Some(clip(step, MAX_STEP_BYTES));
        }
        shared.record.error = Some(clip(error, MAX_ERROR_BYTES));
        shared.write().map_err(io(&path))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_ticker();
        let shared = self.lock();
        // Removing before unlocking means nobody can take a lock on a file about to vanish
        // without noticing (see `same_file`).
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = shared.file.unlock();
    }
}
