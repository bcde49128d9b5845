//! `upgrade.lock`: a JSON record of the run held with an OS file lock for the run's whole
//! life. Its four states (free, held, failed, stale) decide whether anyone may upgrade.
//!
//! The path is hostile ground (anyone who can write the project directory can put a link,
//! a FIFO or a huge file there): it is never followed, never blocks, and only a regular
//! file of at most [`MAX_RECORD_BYTES`] is read. A look at the lock that locked a file a
//! finishing run had just removed starts over, so it never reports a finished run as dead.

use std::fs::{File, OpenOptions, TryLockError};
#[cfg(not(unix))]
use std::io::Write;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The file name, in the project directory.
pub const LOCK_FILE: &str = crate::layout::Layout::LOCK;

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

/// The most a lock record may take on disk. The writer keeps every record well below it
/// (long errors are clipped), so a larger file is not a lock record: it is corrupt.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// How much of a failed run's error the record keeps: enough to act on, and a record
/// always stays below [`MAX_RECORD_BYTES`].
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// How much of a step name the record keeps.
const MAX_STEP_BYTES: usize = 4 * 1024;

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

fn io(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a file type is, for a person; `None` for a regular file.
fn irregular(file_type: &std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        return None;
    }
    if file_type.is_dir() {
        return Some("a directory");
    }
    if file_type.is_symlink() {
        return Some("a symbolic link");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Some("a FIFO");
        }
        if file_type.is_socket() {
            return Some("a socket");
        }
        if file_type.is_char_device() {
            return Some("a character device");
        }
        if file_type.is_block_device() {
            return Some("a block device");
        }
    }
    Some("a special file")
}

fn require_regular(path: &Path, file_type: &std::fs::FileType) -> Result<(), LockError> {
    match irregular(file_type) {
        None => Ok(()),
        Some(what) => Err(LockError::NotRegular {
            path: path.to_path_buf(),
            what,
        }),
    }
}

/// How [`open_lock`] opens the lock path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read an existing file.
    Read,
    /// Read and write, creating the file when there is none.
    Create,
}

/// Opens the lock path as a regular file, or finds none (`Ok(None)`, never for
/// [`Access::Create`]). A symbolic link is never followed (`O_NOFOLLOW`, so nothing is
/// created or written at its target) and nothing blocks (`O_NONBLOCK`: a FIFO would
/// otherwise wait for a writer forever); what is opened is checked on the handle itself,
/// so a file swapped in after the first look is refused too.
fn open_lock(path: &Path, access: Access) -> Result<Option<File>, LockError> {
    // Looking first means a FIFO or a device is refused without being opened at all.
    match std::fs::symlink_metadata(path) {
        Ok(meta) => require_regular(path, &meta.file_type())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if access == Access::Read {
                return Ok(None);
            }
        }
        Err(e) => return Err(io(path)(e)),
    }
    let mut options = OpenOptions::new();
    options.read(true);
    if access == Access::Create {
        options.write(true).create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && access == Access::Read => {
            return Ok(None)
        }
        Err(e) => {
            // Swapped for a link or a directory since the look above: say what it is.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                require_regular(path, &meta.file_type())?;
            }
            return Err(io(path)(e));
        }
    };
    let meta = file.metadata().map_err(io(path))?;
    require_regular(path, &meta.file_type())?;
    Ok(Some(file))
}

/// Reads the whole file from its start, refusing one larger than any record.
fn read_bounded(file: &mut File, path: &Path) -> Result<Vec<u8>, LockError> {
    let corrupt = |size| LockError::Corrupt {
        path: path.to_path_buf(),
        size,
    };
    let size = file.metadata().map_err(io(path))?.len();
    if size > MAX_RECORD_BYTES {
        return Err(corrupt(size));
    }
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(corrupt(bytes.len() as u64));
    }
    Ok(bytes)
}

fn parse_record(bytes: &[u8]) -> Option<LockRecord> {
    serde_json::from_slice(bytes).ok()
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
        std::thread::sleep(Duration::from_millis(ms));
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
    Ok(match (held, parse_record(&bytes)) {
        (true, record) => LockState::Held(record),
        (false, Some(record)) if record.state == RecordState::Failed => LockState::Failed(record),
        (false, record) => LockState::Stale(record),
    })
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
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
                let state = match parse_record(&bytes) {
                    Some(record) if record.state == RecordState::Failed => {
                        LockState::Failed(record)
                    }
                    other => LockState::Stale(other),
                };
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

/// Whether `path` still names `file` (and not a file created there since, or nothing).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
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
        let state = match record {
            Some(record) if record.state == RecordState::Failed => LockState::Failed(record),
            other => LockState::Stale(other),
        };
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
            state: RecordState::Running,
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

    fn not_regular(result: Result<impl std::fmt::Debug, LockError>, what: &str) {
        match result {
            Err(error @ LockError::NotRegular { .. }) => {
                let text = error.to_string();
                assert!(
                    text.contains(&format!(
                        "upgrade.lock is {what}, not a regular file: remove it"
                    )),
                    "{text}"
                );
            }
            other => panic!("expected {what} to be refused, got {other:?}"),
        }
    }

    #[test]
    fn special_files_are_refused_never_opened_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        // Would block forever on a FIFO without O_NONBLOCK.
        not_regular(inspect(&path), "a FIFO");
        not_regular(LockGuard::acquire(&path, record()), "a FIFO");
        not_regular(unlock(&path), "a FIFO");
        std::fs::remove_file(&path).unwrap();

        std::fs::create_dir(&path).unwrap();
        not_regular(inspect(&path), "a directory");
        not_regular(LockGuard::acquire(&path, record()), "a directory");
        not_regular(unlock(&path), "a directory");
        assert!(path.is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let dangling = outside.path().join("created-by-upgrader");
        std::os::unix::fs::symlink(&dangling, &path).unwrap();
        not_regular(inspect(&path), "a symbolic link");
        not_regular(LockGuard::acquire(&path, record()), "a symbolic link");
        not_regular(unlock(&path), "a symbolic link");
        assert!(!dangling.exists(), "the link's target was created");
        std::fs::remove_file(&path).unwrap();

        let empty = outside.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        std::os::unix::fs::symlink(&empty, &path).unwrap();
        not_regular(inspect(&path), "a symbolic link");
        not_regular(LockGuard::acquire(&path, record()), "a symbolic link");
        not_regular(unlock(&path), "a symbolic link");
        assert_eq!(std::fs::read(&empty).unwrap(), b"");
        assert!(path.symlink_metadata().unwrap().file_type().is_symlink());
        std::fs::remove_file(&path).unwrap();

        // Followed, it would be read without end.
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        not_regular(inspect(&path), "a symbolic link");
        not_regular(LockGuard::acquire(&path, record()), "a symbolic link");
        not_regular(unlock(&path), "a symbolic link");
    }

    #[test]
    fn a_file_larger_than_any_record_is_corrupt_and_unlock_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        // Sparse: costs no disk, and must not be read whole.
        File::create(&path).unwrap().set_len(3 << 30).unwrap();
        for error in [
            inspect(&path).unwrap_err(),
            LockGuard::acquire(&path, record()).unwrap_err(),
        ] {
            assert!(matches!(error, LockError::Corrupt { size, .. } if size == 3 << 30));
            let text = error.to_string();
            assert!(text.contains("is 3221225472 bytes, more than any lock record (65536 bytes): it is corrupt; look at it, then run `upgrader unlock` to remove it"), "{text}");
        }
        assert_eq!(unlock(&path).unwrap(), LockState::Stale(None));
        assert!(!path.exists());
    }

    #[test]
    fn a_long_error_is_clipped_so_the_record_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let guard = LockGuard::acquire(&path, record()).unwrap();
        guard.fail(Some("s"), &"x".repeat(1 << 20)).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < MAX_RECORD_BYTES);
        let LockState::Failed(found) = inspect(&path).unwrap() else {
            panic!("not failed")
        };
        assert!(found.error.unwrap().ends_with("… (1048576 bytes in all)"));
    }

    #[test]
    fn a_look_that_opened_a_file_a_finishing_run_removed_finds_the_lock_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let mut running = Some(LockGuard::acquire(&path, record()).unwrap());
        // The run finishes (removes the file, then releases it) between our open and lock.
        let state = inspect_with(&path, &mut || drop(running.take())).unwrap();
        assert_eq!(state, LockState::Free);
        assert!(running.is_none());
    }

    #[test]
    fn unlock_never_removes_a_newer_runs_live_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, serde_json::to_string(&record()).unwrap()).unwrap();
        let mut newer = None;
        // Between unlock's open and lock: someone clears the stale file and a new run starts.
        let error = unlock_with(&path, &mut || {
            if newer.is_none() {
                std::fs::remove_file(&path).unwrap();
                newer = Some(LockGuard::acquire(&path, record()).unwrap());
            }
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("refusing to unlock: upgrade in progress"),
            "{error}"
        );
        assert!(path.exists());
        assert!(matches!(inspect(&path).unwrap(), LockState::Held(Some(_))));
        drop(newer);
        assert_eq!(inspect(&path).unwrap(), LockState::Free);
    }
}
