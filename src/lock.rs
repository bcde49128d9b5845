//! `upgrade.lock`: a JSON record of the run held with an OS file lock for the run's whole
//! life. Its four states (free, held, failed, stale) decide whether anyone may upgrade.

use std::fs::{File, OpenOptions, TryLockError};
#[cfg(not(unix))]
use std::io::Write;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The file name, in the project directory.
pub const LOCK_FILE: &str = "upgrade.lock";

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
    /// `running` or `failed`.
    pub state: String,
    /// The step running, or the one that failed.
    pub step: Option<String>,
    /// The error of a failed run.
    pub error: Option<String>,
    /// Set while a `transaction="none"` step runs, and kept if it fails: the database may
    /// then hold part of that step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_transactional: bool,
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
    /// `free`, `held`, `failed` or `stale`, as in `status --json`.
    pub fn name(&self) -> &'static str {
        match self {
            LockState::Free => "free",
            LockState::Held(_) => "held",
            LockState::Failed(_) => "failed",
            LockState::Stale(_) => "stale",
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
                        "the upgrading process is gone ({}, step '{}'); the database was rolled back",
                        who(r),
                        r.step.as_deref().unwrap_or("?")
                    ),
                    None => "the upgrading process is gone; the database was rolled back".into(),
                };
                if record.as_ref().is_some_and(|r| r.non_transactional) {
                    text = text.replace(
                        "the database was rolled back",
                        "it was running a step without a transaction (transaction=\"none\"), so the database may hold part of it",
                    );
                }
                text.push_str(&format!(". Run `upgrader unlock` to remove {shown}"));
                Some(text)
            }
        }
    }
}

/// Lock file errors.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else is upgrading, or a previous run left the lock.
    #[error("{0}")]
    Halted(String),
    /// File system trouble.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_record(file: &mut File) -> Option<LockRecord> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Looks at the lock without taking it.
pub fn inspect(path: &Path) -> Result<LockState, LockError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
        Err(e) => return Err(io(path)(e)),
    };
    // A shared lock is enough to learn whether a runner holds its exclusive one.
    let held = match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(e)) => return Err(io(path)(e)),
    };
    let record = read_record(&mut file);
    let empty = file.metadata().is_ok_and(|m| m.len() == 0);
    let _ = file.unlock();
    if !held && empty {
        // A runner that died between creating the file and writing it had touched nothing.
        return Ok(LockState::Free);
    }
    Ok(match (held, record) {
        (true, record) => LockState::Held(record),
        (false, Some(record)) if record.state == "failed" => LockState::Failed(record),
        (false, record) => LockState::Stale(record),
    })
}

/// How far the lock file may lag behind the step that is running. Writing it at every
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
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io(path))?;
            match try_lock_patiently(&file) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let state = inspect(path)?;
                    let state = match state {
                        LockState::Free => continue,
                        held @ LockState::Held(_) => held,
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
                continue;
            }
            let mut text = String::new();
            let read = file.read_to_string(&mut text).map_err(io(path));
            if let Err(error) = read {
                let _ = file.unlock();
                return Err(error);
            }
            if !text.trim().is_empty() {
                let state = match serde_json::from_str::<LockRecord>(&text).ok() {
                    Some(record) if record.state == "failed" => LockState::Failed(record),
                    other => LockState::Stale(other),
                };
                let _ = file.unlock();
                // Leave the file exactly as it was for the developer to read.
                return Err(LockError::Halted(state.explain(path).unwrap_or_default()));
            }
            let mut shared = Shared {
                file,
                record,
                written: 0,
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
            shared.record.step = Some(step.to_string());
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

    /// Marks the run failed; the file stays after the guard is dropped.
    pub fn fail(mut self, step: Option<&str>, error: &str) -> Result<(), LockError> {
        self.stop_ticker();
        self.keep = true;
        let path = self.path.clone();
        let mut shared = self.lock();
        shared.record.state = "failed".into();
        if let Some(step) = step {
            shared.record.step = Some(step.to_string());
        }
        shared.record.error = Some(error.to_string());
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

#[cfg(unix)]
fn write_at_start(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, 0)
}

#[cfg(not(unix))]
fn write_at_start(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytes)
}

/// `status` probes the lock with a brief shared lock; a runner that meets such a probe
/// tries again for a moment instead of reporting a run in progress that is not there.
fn try_lock_patiently(file: &File) -> Result<(), TryLockError> {
    for _ in 0..20 {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => return other,
        }
    }
    file.try_lock()
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Removes a failed or stale lock; refuses while a live process holds it.
/// Returns the state that was cleared.
pub fn unlock(path: &Path) -> Result<LockState, LockError> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Free),
        Err(e) => return Err(io(path)(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let state = inspect(path)?;
            return Err(LockError::Halted(format!(
                "refusing to unlock: {}",
                state
                    .explain(path)
                    .unwrap_or_else(|| "a live process holds the lock".into())
            )));
        }
        Err(TryLockError::Error(e)) => return Err(io(path)(e)),
    }
    let mut file = file;
    let record = read_record(&mut file);
    let state = match record {
        Some(record) if record.state == "failed" => LockState::Failed(record),
        other => LockState::Stale(other),
    };
    std::fs::remove_file(path).map_err(io(path))?;
    let _ = file.unlock();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LockRecord {
        LockRecord {
            pid: 1,
            host: "h".into(),
            started_at: "t".into(),
            from: Some("1.0.0".into()),
            to: "1.1.0".into(),
            state: "running".into(),
            ..LockRecord::default()
        }
    }

    #[test]
    fn free_held_failed_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        assert_eq!(inspect(&path).unwrap(), LockState::Free);
        let guard = LockGuard::acquire(&path, record()).unwrap();
        assert!(matches!(inspect(&path).unwrap(), LockState::Held(Some(_))));
        let second = LockGuard::acquire(&path, record()).unwrap_err();
        assert!(
            second.to_string().contains("upgrade in progress"),
            "{second}"
        );
        assert!(unlock(&path).is_err());
        guard.fail(Some("s"), "boom").unwrap();
        let state = inspect(&path).unwrap();
        assert!(matches!(&state, LockState::Failed(r) if r.error.as_deref() == Some("boom")));
        let again = LockGuard::acquire(&path, record()).unwrap_err();
        assert!(
            again.to_string().contains("failed at step 's': boom"),
            "{again}"
        );
        assert!(matches!(unlock(&path).unwrap(), LockState::Failed(_)));
        assert_eq!(inspect(&path).unwrap(), LockState::Free);

        std::fs::write(&path, serde_json::to_string(&record()).unwrap()).unwrap();
        assert!(matches!(inspect(&path).unwrap(), LockState::Stale(Some(_))));
        let stale = LockGuard::acquire(&path, record()).unwrap_err();
        assert!(stale.to_string().contains("process is gone"), "{stale}");
    }

    #[test]
    fn empty_unheld_file_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, "").unwrap();
        assert_eq!(inspect(&path).unwrap(), LockState::Free);
        drop(LockGuard::acquire(&path, record()).unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        drop(LockGuard::acquire(&path, record()).unwrap());
        assert!(!path.exists());
        assert_eq!(inspect(&path).unwrap(), LockState::Free);
    }
}
