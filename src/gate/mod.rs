//! The web gate: a web application asks it, per request, whether to serve. Once the
//! database is current the answer is one atomic load. The first request after a new
//! `VERSION` is deployed starts the upgrade in the background, in a child process (so a
//! plugin that crashes cannot take the server down, and no plugin library is ever
//! mapped into it); requests meanwhile are told to retry, and a refused or failed
//! upgrade halts the application with its reason until the deployed files (or the
//! lock) change.
//!
//! ```no_run
//! use upgrader::gate::{Answer, Gate, GateOptions};
//! let gate = Gate::new("/srv/shop", Some("postgres://shop@db/shop".into()), GateOptions::default());
//! match gate.check() {
//!     Answer::Ready => { /* serve */ }
//!     Answer::Upgrading { retry_after } => { /* 503, Retry-After: retry_after */ }
//!     Answer::Halted { reason } => { /* 503 maintenance page */ }
//! }
//! ```

#[cfg(feature = "tower")]
pub mod tower;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use crate::engine::{Config, Engine};
use crate::error::Exit;
use crate::layout::Layout;
use crate::lock::LockKind;

/// What a request should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The database is current: serve.
    Ready,
    /// An upgrade is running (or about to): answer 503 and ask to retry.
    Upgrading {
        /// When to try again.
        retry_after: Duration,
    },
    /// Upgrading is halted (failed or stale lock, refused run, downgrade…): show the
    /// maintenance page. The reason is for operators and the admin page.
    Halted {
        /// Why, in a sentence.
        reason: Arc<str>,
    },
}

/// How the gate behaves.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// How often deployed files are looked at (one file metadata read per interval while
    /// the database is current). Default 1 s.
    pub recheck_interval: Duration,
    /// The `Retry-After` given while upgrading. Default 2 s.
    pub retry_after: Duration,
    /// The program run for an upgrade, with `args` before upgrader's own arguments.
    /// Default: `$UPGRADER_BIN`, else an `upgrader` next to the current executable, else
    /// `upgrader` on `PATH`. An application that re-executes itself in an upgrade mode
    /// names itself here, with the argument that selects that mode.
    pub program: Option<PathBuf>,
    /// Arguments before upgrader's own (`--project DIR run`).
    pub args: Vec<OsString>,
    /// Whether each look at a current database (at start, and after a deploy) also runs
    /// `verify`, halting on drift with the report (and its diffs) as the reason, which an
    /// admin page shows. Off by default. Once halted so, the gate looks again when the
    /// deployed files change (or the application restarts), e.g. after `upgrader verify
    /// --accept`.
    pub verify_at_start: bool,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            recheck_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(2),
            program: None,
            args: Vec::new(),
            verify_at_start: false,
        }
    }
}

const STALE: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;
const HALTED: u8 = 3;

/// The gate; cheap to clone (clones share one state).
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    state: AtomicU8,
    reason: RwLock<Arc<str>>,
    /// Why the gate halted: by the lock (then a removed lock file re-opens it) or by
    /// the deployed files (then only a change to them does).
    halted_by_lock: AtomicBool,
    /// The deployed files changed while the worker was busy: evaluate again.
    dirty: AtomicBool,
    project_dir: PathBuf,
    database_url: Option<String>,
    options: GateOptions,
    stamps: Mutex<Stamps>,
    upgrades_started: std::sync::atomic::AtomicU64,
}

/// The deployed files the watcher compares, each with its last stamp: the `VERSION` and
/// `upgrade.xml` of the root project and of every package (learnt at each look).
#[derive(Default, Clone, PartialEq, Eq)]
struct Stamps {
    versions: Vec<(PathBuf, Option<FileStamp>)>,
    manifests: Vec<(PathBuf, Option<FileStamp>)>,
}

impl Stamps {
    /// The files of the projects in `dirs` (root first), keeping the stamps of those
    /// already watched, so that a change not yet seen is still seen.
    fn watch(&mut self, dirs: &[PathBuf]) {
        let keep = |old: &[(PathBuf, Option<FileStamp>)], path: PathBuf| {
            let stamp = match old.iter().find(|(known, _)| *known == path) {
                Some((_, known)) => known.clone(),
                None => stamp(&path),
            };
            (path, stamp)
        };
        self.versions = dirs
            .iter()
            .map(|dir| keep(&self.versions, Layout::new(dir).version_file()))
            .collect();
        self.manifests = dirs
            .iter()
            .map(|dir| keep(&self.manifests, Layout::new(dir).manifest()))
            .collect();
    }
}

/// Stamps each file again; whether any changed.
fn restamp(files: &mut [(PathBuf, Option<FileStamp>)]) -> bool {
    let mut changed = false;
    for (path, known) in files {
        let now = stamp(path);
        changed |= now != *known;
        *known = now;
    }
    changed
}

#[derive(Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&metadata),
    })
}

impl Gate {
    /// A gate for the project in `project_dir` and its database (`None`: the default
    /// `sqlite://DIR/upgrader.db`). Nothing is checked until the first request; a
    /// watcher thread looks at the deployed files once per `recheck_interval`.
    pub fn new(
        project_dir: impl Into<PathBuf>,
        database_url: Option<String>,
        options: GateOptions,
    ) -> Gate {
        let project_dir = project_dir.into();
        let mut stamps = Stamps::default();
        stamps.watch(std::slice::from_ref(&project_dir));
        let inner = Arc::new(Inner {
            state: AtomicU8::new(STALE),
            reason: RwLock::new(Arc::from("")),
            halted_by_lock: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            project_dir,
            database_url,
            options,
            stamps: Mutex::new(stamps),
            upgrades_started: Default::default(),
        });
        let weak = Arc::downgrade(&inner);
        let interval = inner.options.recheck_interval;
        std::thread::Builder::new()
            .name("upgrader-gate-watch".into())
            .spawn(move || watch(weak, interval))
            .expect("a thread for the gate's watcher");
        Gate { inner }
    }

    /// The answer for one request. When the database is current this is one atomic load.
    #[inline]
    pub fn check(&self) -> Answer {
        let state = self.inner.state.load(Ordering::Acquire);
        if state != STALE {
            return self.answer(state);
        }
        // The first request to see a stale state starts the evaluation; the others see
        // BUSY.
        if self
            .inner
            .state
            .compare_exchange(STALE, BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name("upgrader-gate-upgrade".into())
                .spawn(move || inner.evaluate())
                .expect("a thread for the gate's upgrade");
        }
        self.answer(self.inner.state.load(Ordering::Acquire))
    }

    fn answer(&self, state: u8) -> Answer {
        match state {
            READY => Answer::Ready,
            HALTED => Answer::Halted {
                reason: self.inner.reason(),
            },
            _ => self.upgrading(),
        }
    }

    fn upgrading(&self) -> Answer {
        Answer::Upgrading {
            retry_after: self.inner.options.retry_after,
        }
    }

    /// The project directory.
    pub fn project_dir(&self) -> &Path {
        &self.inner.project_dir
    }

    /// An engine for read-only reports (status, history) for an admin page. It never
    /// loads a plugin.
    pub fn engine(&self) -> Result<Engine, crate::Error> {
        Engine::open(self.inner.config())
    }

    /// How many upgrade processes this gate has started (for tests and metrics).
    pub fn upgrades_started(&self) -> u64 {
        self.inner.upgrades_started.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("project_dir", &self.inner.project_dir)
            .field(
                "answer",
                &self.answer(self.inner.state.load(Ordering::Acquire)),
            )
            .finish()
    }
}

/// What one look at the project and database says.
enum Verdict {
    Ready,
    Halted {
        reason: String,
        by_lock: bool,
    },
    /// Another process (this host or another) holds the lock: wait and look again.
    Wait,
    Upgrade,
}

impl Inner {
    fn reason(&self) -> Arc<str> {
        self.reason
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn config(&self) -> Config {
        Config::new(self.project_dir.clone()).database_url(self.database_url.clone())
    }

    fn halt(&self, reason: String, by_lock: bool) {
        log::error!("upgrader gate: halted: {reason}");
        // The manifests as they are now are what was judged; a later change re-opens the
        // gate.
        restamp(
            &mut self
                .stamps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .manifests,
        );
        *self.reason.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(reason);
        self.halted_by_lock.store(by_lock, Ordering::Release);
        self.state.store(HALTED, Ordering::Release);
    }

    fn look(&self) -> Verdict {
        let engine = match Engine::open(self.config()) {
            Ok(engine) => {
                // Every package's VERSION is watched from now on.
                let dirs: Vec<PathBuf> = engine
                    .application()
                    .projects
                    .iter()
                    .map(|project| project.dir.clone())
                    .collect();
                self.stamps
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .watch(&dirs);
                engine
            }
            // A code install is under way: its files change; ask again shortly.
            Err(crate::Error::Installing(why)) => {
                log::info!("upgrader gate: {why}");
                return Verdict::Wait;
            }
            Err(error) => {
                return Verdict::Halted {
                    reason: format!("the deployed project cannot be upgraded: {error}"),
                    by_lock: false,
                }
            }
        };
        let report = match engine.status() {
            Ok(report) => report,
            // A lock file that is not a regular file or is corrupt stays so until someone
            // removes it: halt (and watch the lock path) instead of asking every client
            // to retry for ever.
            Err(
                error @ crate::Error::Lock(
                    crate::lock::LockError::NotRegular { .. }
                    | crate::lock::LockError::Corrupt { .. },
                ),
            ) => {
                return Verdict::Halted {
                    reason: error.to_string(),
                    by_lock: true,
                }
            }
            Err(error) => {
                // The database may be briefly unreachable: not a reason to halt for good.
                log::warn!("upgrader gate: cannot read the database state: {error}");
                return Verdict::Wait;
            }
        };
        match report.lock.state {
            LockKind::Held => return Verdict::Wait,
            LockKind::Failed | LockKind::Stale => {
                return Verdict::Halted {
                    reason: report
                        .lock
                        .message
                        .unwrap_or_else(|| format!("the upgrade lock is {}", report.lock.state)),
                    by_lock: true,
                }
            }
            LockKind::Free => {}
        }
        // Every package counts: one pending is an upgrade for the whole application.
        if let Some(problem) = report.all().find_map(|r| r.problem.clone()) {
            return Verdict::Halted {
                reason: problem,
                by_lock: false,
            };
        }
        // Only a database upgrade is the gate's business (update packages are not).
        if report.exit() == Exit::Pending {
            return Verdict::Upgrade;
        }
        if self.options.verify_at_start {
            match engine.verify() {
                Ok(drift) if drift.any_drift() => {
                    return Verdict::Halted {
                        reason: format!(
                            "schema drift: the database differs from what upgrader recorded\n{}",
                            drift.text()
                        ),
                        by_lock: false,
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    log::warn!("upgrader gate: cannot verify the database: {error}");
                    return Verdict::Wait;
                }
            }
        }
        Verdict::Ready
    }

    /// Runs in the background: looks, upgrades in a child process when needed, and
    /// settles the state.
    fn evaluate(self: Arc<Self>) {
        let mut upgrades = 0;
        loop {
            self.dirty.store(false, Ordering::Release);
            match self.look() {
                Verdict::Ready => {
                    self.state.store(READY, Ordering::Release);
                }
                Verdict::Halted { reason, by_lock } => self.halt(reason, by_lock),
                Verdict::Wait => {
                    std::thread::sleep(self.options.retry_after.min(Duration::from_millis(500)));
                    continue;
                }
                Verdict::Upgrade if upgrades >= 3 => self.halt(
                    "the database is still not current after three upgrade runs".into(),
                    false,
                ),
                Verdict::Upgrade => {
                    upgrades += 1;
                    match self.upgrade() {
                        Ok(()) => continue,
                        Err(reason) => {
                            // A failed run leaves the lock failed; one killed leaves it
                            // stale. Either way, the lock says what happened.
                            let by_lock =
                                matches!(self.look(), Verdict::Halted { by_lock: true, .. });
                            self.halt(reason, by_lock);
                        }
                    }
                }
            }
            // Files that changed while this ran call for another look.
            if self.dirty.swap(false, Ordering::AcqRel)
                && self
                    .state
                    .compare_exchange(READY, BUSY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                continue;
            }
            return;
        }
    }

    fn program(&self) -> PathBuf {
        if let Some(program) = &self.options.program {
            return program.clone();
        }
        if let Some(program) = std::env::var_os("UPGRADER_BIN") {
            return program.into();
        }
        let sibling = std::env::current_exe().ok().and_then(|exe| {
            Some(
                exe.parent()?
                    .join(format!("upgrader{}", std::env::consts::EXE_SUFFIX)),
            )
        });
        match sibling {
            Some(path) if path.is_file() => path,
            _ => PathBuf::from("upgrader"),
        }
    }

    /// Runs `upgrader run` in a child process; `Err` with the reason when it did not end
    /// with the database upgraded.
    fn upgrade(&self) -> Result<(), String> {
        let program = self.program();
        self.upgrades_started.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "upgrader gate: upgrading {} with {}",
            self.project_dir.display(),
            program.display()
        );
        let mut command = Command::new(&program);
        command
            .args(&self.options.args)
            .arg("--project")
            .arg(&self.project_dir)
            .arg("--json")
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Through the environment, not the command line, where other users could read
        // a password.
        match &self.database_url {
            Some(url) => command.env("DATABASE_URL", url),
            None => command.env_remove("DATABASE_URL"),
        };
        let output = command
            .output()
            .map_err(|e| format!("cannot start the upgrade ({}): {e}", program.display()))?;
        // The child's result is its `--json` document: the run's outcome, or
        // `{"error", "exit_code"}`. What it logged on stderr is passed on to our log.
        let stderr = String::from_utf8_lossy(&output.stderr);
        for line in stderr.lines().filter(|line| !line.trim().is_empty()) {
            log::info!("upgrader gate: child: {line}");
        }
        let result: Option<serde_json::Value> = serde_json::from_slice(&output.stdout).ok();
        let said = result
            .as_ref()
            .and_then(|result| result.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| stderr.trim().to_string());
        match output.status.code().map(Exit::from_code) {
            Some(Some(Exit::Ok)) => {
                if let Some(result) = &result {
                    // The root's outcome and every package's: a package alone may have
                    // upgraded while the root was current.
                    let outcomes: Vec<String> = std::iter::once(result)
                        .chain(result["packages"].as_array().into_iter().flatten())
                        .map(|outcome| {
                            format!(
                                "{} {}",
                                outcome["project"].as_str().unwrap_or("?"),
                                outcome["result"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    log::info!("upgrader gate: {}", outcomes.join(", "));
                }
                Ok(())
            }
            // Halted by the lock: someone else is upgrading (look again) or it failed.
            Some(Some(Exit::Halted)) => Ok(()),
            Some(_) => Err(if said.is_empty() {
                format!(
                    "the upgrade exited with code {}",
                    output.status.code().unwrap_or(-1)
                )
            } else {
                said
            }),
            None => Err(format!(
                "the upgrade process died ({}); what it had not committed was rolled back{}",
                describe_signal(&output.status),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                }
            )),
        }
    }
}

fn describe_signal(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    format!("{status}")
}

/// The watcher: one file metadata read per project per interval while the gate is ready
/// (each VERSION, the file a deploy changes, and the root's upgrade.xml, where a package
/// is added); while halted, also every upgrade.xml and the lock file, since fixing a
/// manifest or removing a failed lock re-opens the gate.
fn watch(inner: Weak<Inner>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let dir = &inner.project_dir;
        let state = inner.state.load(Ordering::Acquire);
        let mut stamps = inner.stamps.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = restamp(&mut stamps.versions);
        // The root manifest too, even while ready: a package can be added without a new
        // root version.
        let root_manifest = if stamps.manifests.is_empty() { 0 } else { 1 };
        changed |= restamp(&mut stamps.manifests[..root_manifest]);
        if state == HALTED {
            changed |= restamp(&mut stamps.manifests[root_manifest..]);
            if inner.halted_by_lock.load(Ordering::Acquire)
                && std::fs::symlink_metadata(Layout::new(dir).lock_file()).is_err()
            {
                changed = true;
            }
        }
        drop(stamps);
        if !changed {
            continue;
        }
        match state {
            BUSY => inner.dirty.store(true, Ordering::Release),
            READY | HALTED => {
                let _ =
                    inner
                        .state
                        .compare_exchange(state, STALE, Ordering::AcqRel, Ordering::Acquire);
            }
            _ => {}
        }
    }
}
