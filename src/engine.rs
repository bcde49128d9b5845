//! The workflow, written once over the parts: load the project, plan, prepare every
//! statement, take the lock, run the plan in a transaction, record, unlock; and the
//! read-only reports (status, plan, history) and `unlock`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{state, Backend, DatabaseUrl, DbObject, LockSpan, StatementLimit};
use crate::error::Error;
use crate::lock::{self, LockGuard, LockRecord, LockState};
use crate::manifest::{Action, Manifest, SqlSource, StepTransaction};
use crate::plan::{self, DbFacts, ItemKind, Plan, PlanItem};
use crate::plugin;
use crate::sql::{self, guard, Dialect};
use crate::version::{Version, VersionFile};

/// How the run uses transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransactionMode {
    /// The whole run is one transaction: all of it or none of it.
    #[default]
    Single,
    /// Each step commits on its own; a failure keeps the steps before it.
    PerStep,
}

/// What the engine works on.
#[derive(Clone)]
pub struct Config {
    /// The project directory (VERSION, upgrade.xml, scripts/).
    pub project_dir: PathBuf,
    /// The database URL; `None` means `sqlite://DIR/upgrader.db`.
    pub database_url: Option<String>,
    /// Transaction use for `run`.
    pub transaction: TransactionMode,
}

impl std::fmt::Debug for Config {
    // By hand: the database URL may carry a password, shown only redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("project_dir", &self.project_dir)
            .field(
                "database_url",
                &self
                    .database_url
                    .as_deref()
                    .map(|url| match DatabaseUrl::parse(url) {
                        Ok(parsed) => parsed.to_string(),
                        Err(_) => "(unparseable, hidden)".to_string(),
                    }),
            )
            .field("transaction", &self.transaction)
            .finish()
    }
}

impl Config {
    /// A configuration for `project_dir` with the default database and single transaction.
    pub fn new(project_dir: impl Into<PathBuf>) -> Config {
        Config {
            project_dir: project_dir.into(),
            database_url: None,
            transaction: TransactionMode::Single,
        }
    }
}

/// A loaded and validated project: its name, code version and manifest.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project directory.
    pub dir: PathBuf,
    /// The project name that keys its recorded version.
    pub name: String,
    /// The code version from `VERSION`.
    pub code_version: Version,
    /// The validated manifest.
    pub manifest: Manifest,
}

impl Project {
    /// Reads `VERSION` and `upgrade.xml` from `dir` and checks they agree.
    pub fn load(dir: &Path) -> Result<Project, Error> {
        let version_file = VersionFile::load(&dir.join("VERSION"))?;
        let manifest = Manifest::load(&dir.join("upgrade.xml"), dir)?;
        let name = match (&version_file.project, &manifest.project) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::Config(format!(
                    "the project is named \"{a}\" in {} but \"{b}\" in {}; make them agree",
                    dir.join("VERSION").display(),
                    manifest.path.display()
                )))
            }
            (Some(name), _) | (None, Some(name)) => name.clone(),
            (None, None) => {
                return Err(Error::Config(format!(
                    "no project name: add project=\"NAME\" to <upgrade> in {} (or a `PROJECT: NAME` line to VERSION)",
                    manifest.path.display()
                )))
            }
        };
        if name == state::OWN_PROJECT {
            return Err(Error::Config(format!(
                "the project name \"{name}\" is reserved for upgrader's own tables"
            )));
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            name,
            code_version: version_file.version,
            manifest,
        })
    }
}

/// One item of a plan as reported (`status`, `plan`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportItem {
    /// Step name, `install` or `version-only`.
    pub name: String,
    /// Version before (null for install).
    pub from: Option<String>,
    /// Version after.
    pub to: String,
    /// `install`, `step` or `version-only`.
    pub kind: &'static str,
}

impl From<&PlanItem> for ReportItem {
    fn from(item: &PlanItem) -> Self {
        ReportItem {
            name: item.name.clone(),
            from: item.from.as_ref().map(ToString::to_string),
            to: item.to.to_string(),
            kind: item.kind.name(),
        }
    }
}

/// The lock as reported.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    /// `free`, `held`, `failed` or `stale`.
    pub state: &'static str,
    /// Upgrading or failed process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When its run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The step running or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The error of a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A sentence for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The lock file.
    pub path: String,
}

impl LockReport {
    fn new(state: &LockState, path: &Path) -> LockReport {
        let record = state.record();
        LockReport {
            state: state.name(),
            pid: record.map(|r| r.pid),
            host: record.map(|r| r.host.clone()),
            started_at: record.map(|r| r.started_at.clone()),
            step: record.and_then(|r| r.step.clone()),
            error: record.and_then(|r| r.error.clone()),
            message: state.explain(path),
            path: path.display().to_string(),
        }
    }
}

/// What `status` and `check` show.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Project name.
    pub project: String,
    /// Version in `VERSION`.
    pub code_version: String,
    /// Version recorded in the database, null when none.
    pub db_version: Option<String>,
    /// `current`, `pending`, `halted` or `uninitialized`.
    pub state: &'static str,
    /// What `run` would do.
    pub pending: Vec<ReportItem>,
    /// The lock.
    pub lock: LockReport,
    /// Code update packages waiting in `updates/Updates_Pending/`.
    pub updates_pending: Vec<String>,
    /// The database, password hidden.
    pub database: String,
    /// Why no plan can be made (downgrade, no starting version), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Report {
    /// The `check` exit code: 0 current, 1 problem, 3 pending, 4 halted.
    pub fn exit_code(&self) -> i32 {
        match self.state {
            "halted" => 4,
            _ if self.problem.is_some() => 1,
            "pending" | "uninitialized" => 3,
            _ => 0,
        }
    }
}

/// What `plan` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// Project name.
    pub project: String,
    /// Where the run starts (null for an install).
    pub from: Option<String>,
    /// The code version.
    pub to: String,
    /// The version the database records now (null when none).
    pub db_version: Option<String>,
    /// The items, in order.
    pub steps: Vec<ReportItem>,
}

/// One item a run applied.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// Step name, `install` or `version-only`.
    pub name: String,
    /// `install`, `step` or `version-only`.
    pub kind: &'static str,
    /// Version before.
    pub from: Option<String>,
    /// Version after.
    pub to: String,
    /// Statements executed.
    pub statements: usize,
    /// How long it took.
    pub duration_ms: u64,
}

/// The result of `run`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Project name.
    pub project: String,
    /// `upgraded`, `installed`, `recorded` (a database without a recorded version
    /// adopted at the code version: nothing ran) or `current`.
    pub result: &'static str,
    /// The version before (null when none was recorded).
    pub from: Option<String>,
    /// The version now.
    pub to: String,
    /// What ran.
    pub applied: Vec<Applied>,
    /// Whole run, lock to unlock.
    pub duration_ms: u64,
}

/// A statement ready to send, with where it came from.
#[derive(Debug, Clone)]
struct Prepared {
    statement: sql::Statement,
    /// `file:line:column`.
    origin: String,
}

/// A plugin step resolved before the run, with the manifest position that names it.
#[derive(Debug, Clone)]
struct PreparedPlugin {
    step: plugin::ResolvedStep,
    /// `upgrade.xml:line:column` of the `<plugin>` element.
    origin: String,
}

/// Plugin steps resolved so far in one preparation: a library is looked for and checked
/// once per run, however many steps call it.
type ResolvedSteps = std::collections::HashMap<(String, String), plugin::ResolvedStep>;

/// One action of an item, ready to run.
#[derive(Debug, Clone)]
enum Work {
    Sql(Prepared),
    /// A script too large to keep in memory, read again statement by statement as it runs.
    Streamed(Streamed),
    Plugin(PreparedPlugin),
}

impl Work {
    fn sql(&self) -> Option<&Prepared> {
        match self {
            Work::Sql(prepared) => Some(prepared),
            Work::Streamed(_) | Work::Plugin(_) => None,
        }
    }
}

/// A script read, split and guarded while preparing without being kept: a run holds at
/// most one of its statements at a time. It is read again when it runs, and refused if
/// its content changed in between.
#[derive(Debug, Clone)]
struct Streamed {
    /// The script's path.
    path: PathBuf,
    /// The script as its statements' origins name it (relative to the project).
    file: String,
    /// SHA-256 of its bytes when prepared.
    sha256: Vec<u8>,
}

/// A script larger than this is streamed rather than kept (see [`Streamed`]).
const KEEP_SCRIPT_BYTES: u64 = 1 << 20;
/// Scripts are kept in memory only up to this much in all, so that a plan of many
/// scripts does not hold them all either.
const KEEP_TOTAL_BYTES: u64 = 32 << 20;

/// What preparing a plan carries from one item to the next.
struct Preparing {
    dialect: Dialect,
    /// The largest statement the database accepts; a larger one refuses the run up front.
    limit: Option<StatementLimit>,
    /// Plugin steps resolved so far.
    resolved: ResolvedSteps,
    /// Bytes of script kept in memory so far.
    kept: u64,
}

impl Preparing {
    fn new(dialect: Dialect, limit: Option<StatementLimit>) -> Preparing {
        Preparing {
            dialect,
            limit,
            resolved: ResolvedSteps::new(),
            kept: 0,
        }
    }

    /// Statements of a script, refusing any longer than the database accepts.
    fn statements<R: std::io::Read>(&self, reader: R) -> sql::Statements<R> {
        let statements = sql::Statements::new(reader, self.dialect);
        match &self.limit {
            Some(limit) => statements.max_statement(
                usize::try_from(limit.bytes).unwrap_or(usize::MAX),
                format!("the database's limit ({})", limit.setting),
            ),
            None => statements,
        }
    }
}

/// A reader that hashes what passes through it.
struct Hashing<'h, R> {
    inner: R,
    hashers: Vec<&'h mut Sha256>,
}

impl<R: std::io::Read> std::io::Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        for hasher in &mut self.hashers {
            hasher.update(&buf[..read]);
        }
        Ok(read)
    }
}

/// A statement `lint` (or a run) refuses, or a script it cannot read.
#[derive(Debug, Clone, Serialize)]
pub struct LintFinding {
    /// The install (`install`) or step.
    pub step: String,
    /// `file:line:column` of the statement; empty for a script that cannot be read.
    pub location: String,
    /// The statement, shortened.
    pub statement: String,
    /// Why it is refused.
    pub reason: String,
    /// The backend it was judged for (`sqlite`, `postgres`, `mysql`).
    pub dialect: &'static str,
    /// Marking the step `transaction="none"` would cure it: a statement of a step (not
    /// the install) that commits implicitly on MySQL. `lint --fix` marks such steps.
    pub fixed_by_transaction_none: bool,
}

impl std::fmt::Display for LintFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.is_empty() {
            return f.write_str(&self.reason);
        }
        write!(
            f,
            "{}: step '{}': statement refused on {}: {}: `{}`",
            self.location, self.step, self.dialect, self.reason, self.statement
        )
    }
}

/// How an item's statements are sent.
struct Sending {
    dialect: Dialect,
    /// An install on MySQL: its DDL commits, and the transaction is opened again after it.
    ddl_commits: bool,
    /// The step runs alone (`transaction="none"`).
    alone: bool,
    install: bool,
    transaction: StepTransaction,
}

/// At most this many characters of a database's error message are quoted (it may quote
/// a whole statement).
const QUOTED_MESSAGE_CHARS: usize = 500;

/// The guard's verdict on a statement of an install or a step.
fn judge(
    statement: &sql::Statement,
    install: bool,
    transaction: StepTransaction,
    dialect: Dialect,
) -> Result<(), guard::Refusal> {
    if transaction == StepTransaction::NoneUnsafe {
        // A step that runs alone may commit, but may still not touch upgrader's own
        // tables or locks.
        guard::check_always(statement, dialect)
    } else if install {
        guard::check_install(statement, dialect)
    } else {
        guard::check(statement, dialect)
    }
}

/// The guard's verdict on one prepared statement, as a finding.
fn guard_finding(
    step: &str,
    install: bool,
    transaction: StepTransaction,
    prepared: &Prepared,
    dialect: Dialect,
) -> Option<LintFinding> {
    let refusal = judge(&prepared.statement, install, transaction, dialect).err()?;
    Some(LintFinding {
        fixed_by_transaction_none: !install
            && transaction == StepTransaction::Shared
            && guard::commits_implicitly(&prepared.statement, dialect),
        step: step.to_string(),
        location: prepared.origin.clone(),
        statement: sql::abbreviate(&prepared.statement.text),
        reason: refusal.reason,
        dialect: dialect.name(),
    })
}

#[derive(Debug, Clone)]
struct PreparedItem {
    item: PlanItem,
    work: Vec<Work>,
    checksum: Option<String>,
    transaction: StepTransaction,
    /// The first statement the guard refuses, if any: the run fails on it before sending
    /// anything. Boxed: nearly always none, and a run holds an item per step.
    refusal: Option<Box<LintFinding>>,
}

/// The engine: owns the workflow for one project and database.
pub struct Engine {
    config: Config,
    project: Project,
    url: DatabaseUrl,
}

impl Engine {
    /// Loads and validates the project; touches no database.
    pub fn open(config: Config) -> Result<Engine, Error> {
        let url = match &config.database_url {
            Some(url) => DatabaseUrl::parse(url)?,
            None => DatabaseUrl::default_for(&config.project_dir),
        };
        let project = Project::load(&config.project_dir)?;
        Ok(Engine {
            config,
            project,
            url,
        })
    }

    /// The loaded project.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The database URL (shown with any password hidden).
    pub fn database(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The lock file path.
    pub fn lock_path(&self) -> PathBuf {
        self.project.dir.join(lock::LOCK_FILE)
    }

    /// The SQL dialect of the configured database.
    pub fn dialect(&self) -> Dialect {
        match self.url {
            DatabaseUrl::Sqlite(_) => Dialect::Sqlite,
            DatabaseUrl::Postgres(_) => Dialect::Postgres,
            DatabaseUrl::MySql(_) => Dialect::MySql,
        }
    }

    fn facts(&self, db: Option<&mut dyn Backend>) -> Result<DbFacts, Error> {
        let Some(db) = db else {
            return Ok(DbFacts::default());
        };
        let version = match state::read_version(db, &self.project.name)? {
            Some(text) => Some(Version::parse(&text).map_err(|e| {
                Error::Config(format!(
                    "the database records {} for project {}: {e}",
                    text, self.project.name
                ))
            })?),
            None => None,
        };
        let has_user_tables = version.is_none() && db.user_table_count()? > 0;
        Ok(DbFacts {
            version,
            has_user_tables,
        })
    }

    fn read_only_facts(&self) -> Result<DbFacts, Error> {
        match self.url.connect_read_only()? {
            Some(mut db) => self.facts(Some(db.as_mut())),
            None => self.facts(None),
        }
    }

    /// The status report (read-only).
    pub fn status(&self) -> Result<Report, Error> {
        let lock_path = self.lock_path();
        let lock_state = lock::inspect(&lock_path)?;
        let facts = self.read_only_facts()?;
        let (pending, problem) =
            match plan::plan(&self.project.manifest, &self.project.code_version, &facts) {
                Ok(plan) => (plan.items.iter().map(ReportItem::from).collect(), None),
                Err(error) => (Vec::new(), Some(error.to_string())),
            };
        let state = if lock_state != LockState::Free {
            "halted"
        } else if facts.version.is_none() {
            "uninitialized"
        } else if !pending.is_empty() {
            "pending"
        } else {
            "current"
        };
        Ok(Report {
            project: self.project.name.clone(),
            code_version: self.project.code_version.to_string(),
            db_version: facts.version.map(|v| v.to_string()),
            state,
            pending,
            lock: LockReport::new(&lock_state, &lock_path),
            updates_pending: Vec::new(),
            database: self.url.to_string(),
            problem,
        })
    }

    /// The plan `run` would execute (read-only).
    pub fn plan(&self) -> Result<PlanReport, Error> {
        let facts = self.read_only_facts()?;
        let plan = plan::plan(&self.project.manifest, &self.project.code_version, &facts)?;
        Ok(PlanReport {
            project: self.project.name.clone(),
            from: plan.start.as_ref().map(ToString::to_string),
            to: plan.target.to_string(),
            db_version: plan.db_version.as_ref().map(ToString::to_string),
            steps: plan.items.iter().map(ReportItem::from).collect(),
        })
    }

    /// The applied steps, oldest first (read-only).
    pub fn history(&self) -> Result<Vec<state::HistoryRow>, Error> {
        match self.url.connect_read_only()? {
            Some(mut db) => Ok(state::read_history(db.as_mut(), &self.project.name)?),
            None => Ok(Vec::new()),
        }
    }

    /// Removes a failed or stale lock; refuses while a live process holds it.
    pub fn unlock(&self) -> Result<LockState, Error> {
        Ok(lock::unlock(&self.lock_path())?)
    }

    /// The actions and transaction use of a plan item; none for a version-only bump.
    fn actions_of(&self, item: &PlanItem) -> Option<(&[Action], StepTransaction)> {
        let manifest = &self.project.manifest;
        match item.kind {
            ItemKind::Install => Some((
                &manifest
                    .install
                    .as_ref()
                    .expect("planned install exists")
                    .actions,
                StepTransaction::Shared,
            )),
            ItemKind::Step => {
                let step = &manifest.steps[item.step_index.expect("steps have an index")];
                Some((&step.actions, step.transaction))
            }
            ItemKind::VersionOnly => None,
        }
    }

    /// Reads and splits the SQL of one install or step, resolves its plugin steps (which
    /// loads their libraries), and computes its checksum. Every statement is shown to
    /// `judge`; a large script is judged as it is read and then not kept.
    fn work_of(
        &self,
        name: &str,
        actions: &[Action],
        preparing: &mut Preparing,
        judge: &mut dyn FnMut(&Prepared),
    ) -> Result<(Vec<Work>, String), Error> {
        let manifest = &self.project.manifest;
        let mut hasher = Sha256::new();
        let mut work = Vec::new();
        for action in actions {
            match action {
                Action::Sql { source, .. } => {
                    let (origin_file, line_offset, first_column) = match source {
                        SqlSource::File(file) => (file.display().to_string(), 0, 1),
                        SqlSource::Inline { pos, .. } => (
                            manifest.path.display().to_string(),
                            pos.line - 1,
                            pos.column,
                        ),
                    };
                    let place = |line: u32, column: u32| {
                        let column = if line == 1 {
                            column + first_column - 1
                        } else {
                            column
                        };
                        format!("{origin_file}:{}:{column}", line + line_offset)
                    };
                    let split_error = |e: sql::SplitError| {
                        Error::Refused(format!(
                            "{}: step '{name}': cannot split the SQL: {}",
                            place(e.line, e.column),
                            e.message
                        ))
                    };
                    hasher.update(b"sql\0");
                    let text = match source {
                        SqlSource::Inline { text, .. } => {
                            hasher.update(text.as_bytes());
                            Some(text.clone())
                        }
                        SqlSource::File(file) => {
                            let full = self.project.dir.join(file);
                            let unreadable = |reason: String| {
                                Error::Refused(format!(
                                    "{}: cannot read script for step '{name}': {reason}",
                                    full.display()
                                ))
                            };
                            let (handle, length) = crate::files::open(&self.project.dir, &full)
                                .map_err(|e| unreadable(e.reason()))?;
                            if length <= KEEP_SCRIPT_BYTES
                                && preparing.kept + length <= KEEP_TOTAL_BYTES
                            {
                                let mut text = String::new();
                                std::io::Read::read_to_string(
                                    &mut std::io::Read::take(handle, KEEP_SCRIPT_BYTES),
                                    &mut text,
                                )
                                .map_err(|e| unreadable(e.to_string()))?;
                                preparing.kept += text.len() as u64;
                                hasher.update(text.as_bytes());
                                Some(text)
                            } else {
                                let mut own = Sha256::new();
                                let reader = Hashing {
                                    inner: handle,
                                    hashers: vec![&mut hasher, &mut own],
                                };
                                for statement in preparing.statements(reader) {
                                    let statement = statement.map_err(split_error)?;
                                    judge(&Prepared {
                                        origin: place(statement.line, statement.column),
                                        statement,
                                    });
                                }
                                work.push(Work::Streamed(Streamed {
                                    path: full,
                                    file: origin_file.clone(),
                                    sha256: own.finalize().to_vec(),
                                }));
                                None
                            }
                        }
                    };
                    hasher.update(b"\0");
                    if let Some(text) = text {
                        for statement in preparing.statements(text.as_bytes()) {
                            let statement = statement.map_err(split_error)?;
                            let prepared = Prepared {
                                origin: place(statement.line, statement.column),
                                statement,
                            };
                            judge(&prepared);
                            work.push(Work::Sql(prepared));
                        }
                    }
                }
                Action::Plugin {
                    library,
                    method,
                    pos,
                } => {
                    hasher.update(b"plugin\0");
                    hasher.update(library.as_bytes());
                    hasher.update(b"\0");
                    hasher.update(method.as_bytes());
                    hasher.update(b"\0");
                    let origin = format!("{}:{}:{}", manifest.path.display(), pos.line, pos.column);
                    let key = (library.clone(), method.clone());
                    let step = match preparing.resolved.get(&key) {
                        Some(step) => step.clone(),
                        None => {
                            let step = plugin::resolve(&self.project.dir, library, method)
                                .map_err(|e| {
                                    Error::Refused(format!("{origin}: step '{name}': {e}"))
                                })?;
                            preparing.resolved.insert(key, step.clone());
                            step
                        }
                    };
                    work.push(Work::Plugin(PreparedPlugin { step, origin }));
                }
            }
        }
        Ok((work, hex(&hasher.finalize())))
    }

    /// Reads every script of the plan, splits it, guards each statement and computes each
    /// step's checksum, so that nothing unreadable is found mid-run. A script that cannot
    /// be read or split refuses the run here, before the lock; a statement the guard
    /// refuses is kept with its item, and fails the run as soon as it holds the lock.
    fn prepare(
        &self,
        plan: &Plan,
        dialect: Dialect,
        limit: Option<StatementLimit>,
    ) -> Result<Vec<PreparedItem>, Error> {
        let mut prepared = Vec::with_capacity(plan.items.len());
        let mut preparing = Preparing::new(dialect, limit);
        for item in &plan.items {
            let Some((actions, transaction)) = self.actions_of(item) else {
                prepared.push(PreparedItem {
                    item: item.clone(),
                    work: Vec::new(),
                    checksum: None,
                    transaction: StepTransaction::Shared,
                    refusal: None,
                });
                continue;
            };
            // Judged now, acted on once the run holds the lock (see `Runner::refuse_prepared`).
            let mut refusal = None;
            let install = item.kind == ItemKind::Install;
            let (work, checksum) =
                self.work_of(&item.name, actions, &mut preparing, &mut |statement| {
                    if refusal.is_none() {
                        refusal =
                            guard_finding(&item.name, install, transaction, statement, dialect)
                                .map(Box::new);
                    }
                })?;
            prepared.push(PreparedItem {
                item: item.clone(),
                work,
                checksum: Some(checksum),
                transaction,
                refusal,
            });
        }
        Ok(prepared)
    }

    /// Every statement in the manifest's SQL (install and all steps) that the guard would
    /// refuse on `dialect`, and every script that cannot be read or split. Touches no
    /// database. Steps with `transaction="none"` are judged only by the rules that hold
    /// everywhere (upgrader's own tables and locks).
    pub fn lint(&self, dialect: Dialect) -> Vec<LintFinding> {
        let manifest = &self.project.manifest;
        let install = manifest
            .install
            .iter()
            .map(|i| ("install", &i.actions[..], StepTransaction::Shared, true));
        let steps = manifest
            .steps
            .iter()
            .map(|s| (s.name.as_str(), &s.actions[..], s.transaction, false));
        let mut findings = Vec::new();
        for (name, actions, transaction, is_install) in install.chain(steps) {
            // Plugins are resolved at run time; lint reads the SQL actions only.
            let sql: Vec<Action> = actions
                .iter()
                .filter(|a| matches!(a, Action::Sql { .. }))
                .cloned()
                .collect();
            let mut preparing = Preparing::new(dialect, None);
            let mut found = Vec::new();
            let read = self.work_of(name, &sql, &mut preparing, &mut |statement| {
                found.extend(guard_finding(
                    name,
                    is_install,
                    transaction,
                    statement,
                    dialect,
                ))
            });
            findings.append(&mut found);
            match read {
                Ok(_) => {}
                Err(error) => findings.push(LintFinding {
                    step: name.to_string(),
                    location: String::new(),
                    statement: String::new(),
                    reason: error.to_string(),
                    dialect: dialect.name(),
                    fixed_by_transaction_none: false,
                }),
            }
        }
        findings
    }

    /// Performs the upgrade: lock, steps in a transaction, record, unlock.
    pub fn run(&self) -> Result<RunOutcome, Error> {
        let run_started = Instant::now();
        // A database opened read-only (`?mode=ro`) is refused before the lock is taken.
        self.url.ensure_writable()?;
        let lock_path = self.lock_path();
        if let Some(message) = lock::inspect(&lock_path)?.explain(&lock_path) {
            return Err(Error::Halted(message));
        }
        // A server connection made for this first look is kept for the run: a
        // PostgreSQL or MySQL connection costs a server process or thread and a login.
        // An SQLite file is only opened read-only here, so that a look creates nothing.
        let mut kept = match self.url {
            DatabaseUrl::Sqlite(_) => None,
            _ => Some(self.url.connect()?),
        };
        let facts = match kept.as_mut() {
            Some(db) => self.facts(Some(db.as_mut()))?,
            None => self.read_only_facts()?,
        };
        let plan = plan::plan(&self.project.manifest, &self.project.code_version, &facts)?;
        if !plan.is_needed() {
            return Ok(self.current_outcome(&plan, run_started));
        }
        let dialect = self.dialect();
        let limit = match kept.as_mut() {
            Some(db) => db.max_statement_bytes()?,
            None => Some(crate::db::sqlite::STATEMENT_LIMIT),
        };
        let prepared = self.prepare(&plan, dialect, limit)?;

        let record = LockRecord {
            pid: std::process::id(),
            host: host(),
            started_at: now(),
            from: plan.start.as_ref().map(ToString::to_string),
            to: plan.target.to_string(),
            state: "running".into(),
            step: None,
            error: None,
            non_transactional: false,
        };
        let guard = LockGuard::acquire(&lock_path, record)?;
        let mut db = match kept {
            Some(db) => db,
            None => self.url.connect()?,
        };
        // Commits in the middle of the run (per step, or around a step without a
        // transaction) need the database lock to hold between transactions too.
        let span = self.lock_span(&prepared);
        db.lock(span)?;
        let mut runner = Runner {
            engine: self,
            db: db.as_mut(),
            guard: Some(guard),
            mode: self.config.transaction,
            in_transaction: false,
            committed_version: None,
            applied: Vec::new(),
            in_flight: None,
            unrecorded: Vec::new(),
            install_objects: None,
            tables: guard::TableGuard::default(),
            committed_alone: None,
            implicit_commit: None,
        };
        runner.begin()?;
        // Created inside the run's transaction: a run that fails leaves no trace but its
        // history row (see `Runner::fail`).
        state::ensure_in_transaction(runner.db, &now())?;
        // Another host may have upgraded between our look and our lock: plan again under it.
        let facts = self.facts(Some(&mut *runner.db))?;
        runner.committed_version = facts.version.clone();
        // The plan made before the lock has served; only the one made under it counts.
        drop(plan);
        let plan = match plan::plan(&self.project.manifest, &self.project.code_version, &facts) {
            Ok(plan) => plan,
            Err(error) => {
                runner.db.rollback()?;
                return Err(error.into());
            }
        };
        if !plan.is_needed() {
            runner.db.rollback()?;
            return Ok(self.current_outcome(&plan, run_started));
        }
        let prepared = if plan.items.iter().eq(prepared.iter().map(|p| &p.item)) {
            prepared
        } else {
            match self.prepare(&plan, dialect, limit) {
                Ok(prepared) => {
                    if self.lock_span(&prepared) != span {
                        runner.db.lock(LockSpan::Session)?;
                    }
                    prepared
                }
                Err(error) => {
                    runner.db.rollback()?;
                    return Err(error);
                }
            }
        };
        runner.execute(&plan, &prepared)?;
        let installed = plan
            .items
            .first()
            .is_some_and(|i| i.kind == ItemKind::Install);
        let result = if installed {
            "installed"
        } else if plan.items.is_empty() {
            "recorded"
        } else {
            "upgraded"
        };
        Ok(RunOutcome {
            project: self.project.name.clone(),
            result,
            from: match result {
                "recorded" => None,
                _ => plan.start.as_ref().map(ToString::to_string),
            },
            to: plan.target.to_string(),
            applied: std::mem::take(&mut runner.applied),
            duration_ms: run_started.elapsed().as_millis() as u64,
        })
    }

    /// Commits in the middle of the run (per step, or around a step without a
    /// transaction) need the database lock to hold between transactions too.
    fn lock_span(&self, prepared: &[PreparedItem]) -> LockSpan {
        if self.config.transaction == TransactionMode::PerStep
            || prepared
                .iter()
                .any(|p| p.transaction != StepTransaction::Shared)
        {
            LockSpan::Session
        } else {
            LockSpan::Transaction
        }
    }

    fn current_outcome(&self, plan: &Plan, started: Instant) -> RunOutcome {
        RunOutcome {
            project: self.project.name.clone(),
            result: "current",
            from: plan.db_version.as_ref().map(ToString::to_string),
            to: plan.target.to_string(),
            applied: Vec::new(),
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// The state of one run in progress; owns the transaction bookkeeping.
struct Runner<'a> {
    engine: &'a Engine,
    db: &'a mut dyn Backend,
    guard: Option<LockGuard>,
    mode: TransactionMode,
    in_transaction: bool,
    /// The version the database holds if everything uncommitted is rolled back.
    committed_version: Option<Version>,
    applied: Vec<Applied>,
    /// The item being applied, for the history row of a failure.
    in_flight: Option<InFlight>,
    /// History rows of applied items, written in one go before the next commit.
    unrecorded: Vec<state::HistoryRow>,
    /// The schema's objects before an install whose DDL commits implicitly (MySQL), so
    /// that a failed install can drop what it created.
    install_objects: Option<Vec<DbObject>>,
    /// Tables whose engine cannot roll back, for judging plugin statements.
    tables: guard::TableGuard,
    /// The last `transaction="none"` step this run committed, if any: a later failure
    /// rolls back only to it.
    committed_alone: Option<String>,
    /// Where a statement committed the run's transaction implicitly (MySQL), if one did.
    implicit_commit: Option<String>,
}

/// What a failure's history row says about the item that failed.
struct InFlight {
    kind: ItemKind,
    /// The version the item starts from (none for an install).
    from: Option<Version>,
    to: Version,
    checksum: Option<String>,
    started_at: String,
    started: Instant,
}

/// What went wrong inside a run, before it is turned into the user's error.
struct Failure {
    item: String,
    message: String,
    non_transactional: bool,
}

impl Runner<'_> {
    fn begin(&mut self) -> Result<(), Error> {
        self.db.begin()?;
        self.in_transaction = true;
        Ok(())
    }

    fn commit(&mut self, version: &Version) -> Result<(), Error> {
        self.db.commit()?;
        self.in_transaction = false;
        self.committed_version = Some(version.clone());
        Ok(())
    }

    fn execute(&mut self, plan: &Plan, prepared: &[PreparedItem]) -> Result<(), Error> {
        match self.apply_all(plan, prepared) {
            Ok(()) => {
                // Dropping the guard removes the lock file: the run is over.
                self.guard.take();
                Ok(())
            }
            Err(failure) => Err(self.fail(failure)),
        }
    }

    /// Fails the run, before anything is sent, on the first statement of the whole plan
    /// that the guard refused while preparing.
    fn refuse_prepared(&mut self, entries: &[PreparedItem]) -> Result<(), Failure> {
        match entries.iter().find(|entry| entry.refusal.is_some()) {
            Some(entry) => {
                let finding = entry.refusal.as_deref().expect("found above");
                Err(self.refuse(entry, finding))
            }
            None => Ok(()),
        }
    }

    /// Fails the run on the first statement, from `entries` on up to the next step that
    /// runs alone, that touches a table whose engine cannot roll back (looked up now,
    /// under the lock). Nothing of it has been sent.
    fn refuse_unsafe(&mut self, entries: &[PreparedItem]) -> Result<(), Failure> {
        let dialect = self.db.dialect();
        // Only what shares the transaction before the next step that runs alone is judged
        // here; when none of it sends anything, the catalog is not asked (a run of
        // `transaction="none"` steps would otherwise read it after every step).
        let shared = entries
            .iter()
            .take_while(|entry| entry.transaction == StepTransaction::Shared);
        if !shared.clone().any(|entry| !entry.work.is_empty()) {
            self.tables = guard::TableGuard::default();
            return Ok(());
        }
        let tables = self.db.foreign_tables().map_err(|e| Failure {
            item: entries.first().map_or("run", |e| &e.item.name).to_string(),
            message: format!("cannot list the tables that cannot roll back: {e}"),
            non_transactional: false,
        })?;
        self.tables = guard::TableGuard::new(tables.iter().map(|t| {
            (
                t.schema.as_str(),
                t.name.as_str(),
                t.engine.as_str(),
                t.in_current_schema,
            )
        }));
        if self.tables.is_empty() {
            return Ok(());
        }
        let tables = &self.tables;
        let refused = shared.clone().find_map(|entry| {
            entry
                .work
                .iter()
                .filter_map(Work::sql)
                .find_map(|prepared| {
                    let refusal = tables.check(&prepared.statement, dialect).err()?;
                    Some((
                        entry,
                        LintFinding {
                            step: entry.item.name.clone(),
                            location: prepared.origin.clone(),
                            statement: sql::abbreviate(&prepared.statement.text),
                            reason: refusal.reason,
                            dialect: dialect.name(),
                            fixed_by_transaction_none: false,
                        },
                    ))
                })
        });
        if let Some((entry, finding)) = refused {
            return Err(self.refuse(entry, &finding));
        }
        // Scripts too large to keep are read once more for this, so that here too nothing
        // is sent before the refusal.
        for entry in shared {
            for work in &entry.work {
                let Work::Streamed(script) = work else {
                    continue;
                };
                if let Some(finding) = self.streamed_table_refusal(entry, script, dialect) {
                    return Err(self.refuse(entry, &finding));
                }
            }
        }
        Ok(())
    }

    /// The first statement of a streamed script that names a table whose engine cannot
    /// roll back. A script that cannot be read or split here is reported when it runs.
    fn streamed_table_refusal(
        &self,
        entry: &PreparedItem,
        script: &Streamed,
        dialect: Dialect,
    ) -> Option<LintFinding> {
        let (handle, _) = crate::files::open(&self.engine.project.dir, &script.path).ok()?;
        sql::Statements::new(handle, dialect)
            .map_while(Result::ok)
            .find_map(|statement| {
                let refusal = self.tables.check(&statement, dialect).err()?;
                Some(LintFinding {
                    step: entry.item.name.clone(),
                    location: format!("{}:{}:{}", script.file, statement.line, statement.column),
                    statement: sql::abbreviate(&statement.text),
                    reason: refusal.reason,
                    dialect: dialect.name(),
                    fixed_by_transaction_none: false,
                })
            })
    }

    /// The failure of a run refused on `finding` in `entry`, before it sent anything of it.
    fn refuse(&mut self, entry: &PreparedItem, finding: &LintFinding) -> Failure {
        self.in_flight = Some(InFlight {
            kind: entry.item.kind,
            from: entry.item.from.clone(),
            to: entry.item.to.clone(),
            checksum: entry.checksum.clone(),
            started_at: now(),
            started: Instant::now(),
        });
        Failure {
            item: entry.item.name.clone(),
            message: format!("{finding}; it was not sent"),
            non_transactional: false,
        }
    }

    fn apply_all(&mut self, plan: &Plan, prepared: &[PreparedItem]) -> Result<(), Failure> {
        let project = &self.engine.project.name;
        let failure = |item: &str, message: String| Failure {
            item: item.to_string(),
            message,
            non_transactional: false,
        };
        self.refuse_prepared(prepared)?;
        self.refuse_unsafe(prepared)?;
        let dialect = self.db.dialect();
        for (index, entry) in prepared.iter().enumerate() {
            let item = &entry.item;
            let alone = entry.transaction == StepTransaction::NoneUnsafe;
            if alone && self.in_transaction {
                let version = self.committed_or_current(item);
                self.commit_at(&version)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            }
            if !alone && !self.in_transaction {
                self.begin()
                    .map_err(|e| failure(&item.name, e.to_string()))?;
                self.check_version(item)
                    .map_err(|e| failure(&item.name, e))?;
            }
            if let Some(guard) = self.guard.as_mut() {
                guard
                    .set_step(&item.name, alone)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            }
            let started_at = now();
            let started = Instant::now();
            self.in_flight = Some(InFlight {
                kind: item.kind,
                from: item.from.clone(),
                to: item.to.clone(),
                checksum: entry.checksum.clone(),
                started_at: started_at.clone(),
                started,
            });
            let ddl_commits =
                item.kind == ItemKind::Install && dialect == crate::sql::Dialect::MySql;
            if ddl_commits {
                self.install_objects = Some(
                    self.db
                        .objects()
                        .map_err(|e| failure(&item.name, e.to_string()))?,
                );
            }
            let sending = Sending {
                dialect,
                ddl_commits,
                alone,
                install: item.kind == ItemKind::Install,
                transaction: entry.transaction,
            };
            let mut sent = 0;
            for work in &entry.work {
                let outcome = match work {
                    Work::Sql(prepared) => {
                        sent += 1;
                        self.send(&prepared.statement, &prepared.origin, &sending)
                            .map_err(|error| (prepared.origin.clone(), error))
                    }
                    Work::Streamed(script) => self.send_streamed(script, &sending, &mut sent),
                    Work::Plugin(call) => {
                        let rules = plugin::host::Rules {
                            dialect,
                            install: item.kind == ItemKind::Install,
                            alone,
                            tables: &self.tables,
                        };
                        match plugin::host::call(&call.step, self.db, &rules) {
                            plugin::host::Outcome::Done { statements } => {
                                sent += statements;
                                self.still_open_after(&call.origin, alone)
                            }
                            plugin::host::Outcome::Failed(message) => Err(message),
                        }
                        .map_err(|error| (call.origin.clone(), error))
                    }
                };
                if let Err((origin, error)) = outcome {
                    return Err(Failure {
                        item: item.name.clone(),
                        message: format!(
                            "{} '{}' failed at {}: {}",
                            item.kind.name(),
                            item.name,
                            origin,
                            // A database's message may quote the whole statement.
                            sql::clip(&error, QUOTED_MESSAGE_CHARS)
                        ),
                        non_transactional: alone,
                    });
                }
            }
            let duration = started.elapsed();
            // From here on a step that ran alone has changed the database for good: a
            // failure to record it must say so.
            let failure = |item: &str, message: String| Failure {
                item: item.to_string(),
                message,
                non_transactional: alone,
            };
            if alone {
                self.begin()
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            }
            // Written with the commit that makes the step durable (see `commit_at`), or,
            // in a long run, one full INSERT at a time inside the transaction, so that
            // memory does not grow with the number of steps.
            self.unrecorded
                .push(history_row(project, entry, &started_at, duration));
            if self.unrecorded.len() >= state::ROWS_PER_INSERT {
                state::insert_history_rows(self.db, &self.unrecorded)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
                self.unrecorded.clear();
            }
            let next_shares = prepared
                .get(index + 1)
                .is_some_and(|next| next.transaction == StepTransaction::Shared);
            if !alone && self.mode == TransactionMode::PerStep && next_shares {
                self.commit_at_and_chain(&item.to)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            } else if alone || self.mode == TransactionMode::PerStep {
                self.commit_at(&item.to)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            }
            if alone {
                self.committed_alone = Some(item.name.clone());
                // The step may have changed which tables cannot roll back.
                self.refuse_unsafe(&prepared[index + 1..])?;
            }
            self.applied.push(Applied {
                name: item.name.clone(),
                kind: item.kind.name(),
                from: item.from.as_ref().map(ToString::to_string),
                to: item.to.to_string(),
                statements: sent,
                duration_ms: duration.as_millis() as u64,
            });
        }
        if !self.in_transaction
            && self.unrecorded.is_empty()
            && self.committed_version.as_ref() == Some(&plan.target)
        {
            // The last step's commit recorded the target already.
            return Ok(());
        }
        if !self.in_transaction {
            self.begin().map_err(|e| failure("record", e.to_string()))?;
        }
        // Also records the version when nothing ran (adopting a database at exactly the
        // code version).
        self.commit_at(&plan.target)
            .map_err(|e| failure("commit", e.to_string()))
    }

    /// Records `version` and commits: the recorded version is written only when it is
    /// about to become durable, not after every step.
    fn commit_at(&mut self, version: &Version) -> Result<(), Error> {
        self.record(version)?;
        self.commit(version)?;
        self.install_objects = None;
        Ok(())
    }

    /// Like [`Runner::commit_at`], and opens the next transaction in the same round trip
    /// where the backend can (its lock outlives the commit); else commits only.
    fn commit_at_and_chain(&mut self, version: &Version) -> Result<(), Error> {
        self.record(version)?;
        if self.db.commit_and_chain()? {
            self.committed_version = Some(version.clone());
        } else {
            self.commit(version)?;
        }
        self.install_objects = None;
        Ok(())
    }

    /// Writes the queued history rows and `version`, inside the open transaction.
    fn record(&mut self, version: &Version) -> Result<(), Error> {
        state::record(
            self.db,
            &self.unrecorded,
            &self.engine.project.name,
            &version.as_str(),
            &now(),
        )?;
        self.unrecorded.clear();
        Ok(())
    }

    /// After a failed install whose DDL committed implicitly, drops what it created, so
    /// that the schema is as empty as before. Returns a sentence for the error.
    fn undo_install(&mut self) -> Option<String> {
        let before = self.install_objects.take()?;
        let created: Vec<DbObject> = match self.db.objects() {
            Ok(now) => now
                .into_iter()
                .filter(|object| !before.contains(object) && !object.name.starts_with("upgrader_"))
                .collect(),
            Err(error) => {
                return Some(format!(
                    "; upgrader could not list what the install created, so it may remain: {error}"
                ))
            }
        };
        if created.is_empty() {
            return None;
        }
        let names = created
            .iter()
            .map(|object| format!("{} {}", object.kind.to_lowercase(), object.name))
            .collect::<Vec<_>>()
            .join(", ");
        Some(match self.db.drop_objects(&created) {
            Ok(()) => format!("; upgrader dropped what the install had created ({names})"),
            Err(error) => format!(
                "; upgrader tried to drop what the install had created ({names}) but: {error}"
            ),
        })
    }

    /// Sends one statement of an item.
    fn send(
        &mut self,
        statement: &sql::Statement,
        origin: &str,
        sending: &Sending,
    ) -> Result<(), String> {
        log::debug!("{origin}: {}", statement.text);
        self.db
            .execute(&statement.text)
            .map_err(|e| e.to_string())?;
        if sending.ddl_commits && guard::commits_implicitly(statement, sending.dialect) {
            self.db
                .resume_after_implicit_commit()
                .map_err(|e| e.to_string())?;
        }
        self.still_open_after(origin, sending.alone)
    }

    /// A statement the guard did not foresee may still have committed (MySQL commits
    /// implicitly): the session is asked, which costs no round trip, so that a failure
    /// never claims to have rolled back what committed.
    fn still_open_after(&mut self, origin: &str, alone: bool) -> Result<(), String> {
        if alone || self.transaction_still_open() {
            return Ok(());
        }
        self.implicit_commit = Some(origin.to_string());
        self.in_transaction = false;
        Err("the statement committed the run's transaction implicitly; upgrader refuses to go on without a transaction (if the step must commit, mark it transaction=\"none\")".to_string())
    }

    /// Runs a script that was too large to keep, one statement at a time: its content must
    /// still be what was prepared, and each statement is judged again before it is sent.
    fn send_streamed(
        &mut self,
        script: &Streamed,
        sending: &Sending,
        sent: &mut usize,
    ) -> Result<(), (String, String)> {
        let dialect = sending.dialect;
        let at_file = |error: String| (script.file.clone(), error);
        if !self.unchanged(script).map_err(at_file)? {
            return Err(at_file(
                "the script changed after the run checked it; nothing of it was sent".into(),
            ));
        }
        let (handle, _) = crate::files::open(&self.engine.project.dir, &script.path)
            .map_err(|e| at_file(e.reason()))?;
        for statement in sql::Statements::new(handle, dialect) {
            let statement = statement.map_err(|e| {
                (
                    format!("{}:{}:{}", script.file, e.line, e.column),
                    e.message,
                )
            })?;
            let origin = format!("{}:{}:{}", script.file, statement.line, statement.column);
            let refused = judge(&statement, sending.install, sending.transaction, dialect)
                .and_then(|()| match sending.transaction {
                    StepTransaction::Shared => self.tables.check(&statement, dialect),
                    StepTransaction::NoneUnsafe => Ok(()),
                });
            if let Err(refusal) = refused {
                return Err((
                    origin,
                    format!(
                        "statement refused on {}: {}: `{}`; it was not sent",
                        dialect.name(),
                        refusal.reason,
                        sql::abbreviate(&statement.text)
                    ),
                ));
            }
            *sent += 1;
            self.send(&statement, &origin, sending)
                .map_err(|error| (origin, error))?;
        }
        Ok(())
    }

    /// Whether a streamed script's bytes are still those that were prepared.
    fn unchanged(&self, script: &Streamed) -> Result<bool, String> {
        let (handle, _) =
            crate::files::open(&self.engine.project.dir, &script.path).map_err(|e| e.reason())?;
        let mut own = Sha256::new();
        let mut reader = Hashing {
            inner: handle,
            hashers: vec![&mut own],
        };
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| e.to_string())?;
        Ok(own.finalize().as_slice() == script.sha256.as_slice())
    }

    /// Whether the run's transaction is still open after a statement (an install's DDL on
    /// MySQL has already been resumed). A backend that cannot tell is taken at its word.
    fn transaction_still_open(&mut self) -> bool {
        match self.db.still_in_transaction() {
            Ok(open) => open,
            Err(error) => {
                log::warn!("cannot tell whether the transaction is still open: {error}");
                true
            }
        }
    }

    /// The version a `transaction="none"` step finds committed before it runs.
    fn committed_or_current(&self, item: &PlanItem) -> Version {
        item.from.clone().unwrap_or_else(|| item.to.clone())
    }

    /// In per-step mode another process could slip in between two commits; make sure the
    /// database is still where this run left it.
    fn check_version(&mut self, item: &PlanItem) -> Result<(), String> {
        let Some(expected) = &self.committed_version else {
            return Ok(());
        };
        // A session lock held for the whole run (PostgreSQL, MySQL) keeps everyone out
        // between its commits; SQLite's lock is its write transaction, which ends with
        // each commit.
        if self.db.lock_outlives_commit() {
            return Ok(());
        }
        let recorded =
            state::read_version(self.db, &self.engine.project.name).map_err(|e| e.to_string())?;
        let recorded = recorded.and_then(|v| Version::parse(&v).ok());
        if recorded.as_ref() != Some(expected) {
            return Err(format!(
                "before step '{}': the database version changed to {} under this run (another process upgraded it)",
                item.name,
                recorded.map_or("none".into(), |v| v.to_string())
            ));
        }
        Ok(())
    }

    /// Rolls back, records the failure outside the rolled-back work, and leaves the lock
    /// failed.
    fn fail(&mut self, failure: Failure) -> Error {
        if self.in_transaction {
            if let Err(error) = self.db.rollback() {
                log::error!("rollback failed: {error}");
            }
            self.in_transaction = false;
        }
        let undone = self.undo_install();
        let version = self.committed_version.as_ref().map_or_else(
            || "no version recorded".to_string(),
            |v| format!("version {v}"),
        );
        let mut message = failure.message.clone();
        // Never claim "unchanged" when something of this run committed: a step without a
        // transaction, an implicit commit, or earlier steps in per-step mode.
        if failure.non_transactional {
            message.push_str(&format!(
                "; the step ran without a transaction (transaction=\"none\"), so the database may hold part of it; the database records {version}"
            ));
        } else if let Some(origin) = &self.implicit_commit {
            message.push_str(&format!(
                "; the statement at {origin} committed the transaction implicitly, so what this run did up to it stays in the database and could not be rolled back; the database records {version}"
            ));
        } else if self.mode == TransactionMode::PerStep {
            message.push_str(&format!(
                "; this step was rolled back, steps before it stay committed, and the database records {version}"
            ));
        } else if let Some(step) = &self.committed_alone {
            message.push_str(&format!(
                "; the run was rolled back to where the transaction=\"none\" step '{step}' committed: it and the steps before it stay applied, and the database records {version}"
            ));
        } else {
            message.push_str(&format!(
                "; the whole run was rolled back and the database is unchanged ({version})"
            ));
        }
        if let Some(undone) = undone {
            message.push_str(&undone);
        }
        let project = &self.engine.project.name;
        let in_flight = self.in_flight.take();
        let failed_row = state::HistoryRow {
            id: None,
            project: project.clone(),
            kind: in_flight
                .as_ref()
                .map_or(ItemKind::Step, |f| f.kind)
                .name()
                .into(),
            name: failure.item.clone(),
            // The failed item's own range; a failure outside any item (the final
            // commit) is reported from the version the database holds.
            from_version: match &in_flight {
                Some(flight) => flight.from.as_ref().map(ToString::to_string),
                None => self.committed_version.as_ref().map(ToString::to_string),
            },
            to_version: in_flight.as_ref().map_or_else(
                || self.engine.project.code_version.to_string(),
                |f| f.to.to_string(),
            ),
            checksum: in_flight.as_ref().and_then(|f| f.checksum.clone()),
            started_at: in_flight
                .as_ref()
                .map_or_else(now, |f| f.started_at.clone()),
            finished_at: now(),
            duration_ms: in_flight
                .as_ref()
                .map_or(0, |f| f.started.elapsed().as_millis() as i64),
            host: host(),
            pid: i64::from(std::process::id()),
            success: false,
            error: Some(message.clone()),
        };
        let recorded = self.db.begin().map_err(Error::from).and_then(|()| {
            state::ensure_in_transaction(self.db, &now())?;
            state::insert_history(self.db, &failed_row)?;
            Ok(self.db.commit()?)
        });
        if let Err(error) = recorded {
            let _ = self.db.rollback();
            log::error!("could not record the failure in upgrader_history: {error}");
        }
        if let Some(guard) = self.guard.take() {
            if let Err(error) = guard.fail(Some(&failure.item), &message) {
                log::error!("could not mark the lock failed: {error}");
            }
        }
        Error::StepFailed {
            step: failure.item,
            message,
        }
    }
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        if self.in_transaction {
            let _ = self.db.rollback();
        }
        if let Err(error) = self.db.unlock() {
            // Closing the connection releases it anyway.
            log::debug!("releasing the database upgrade lock: {error}");
        }
    }
}

fn history_row(
    project: &str,
    entry: &PreparedItem,
    started_at: &str,
    duration: Duration,
) -> state::HistoryRow {
    state::HistoryRow {
        id: None,
        project: project.to_string(),
        kind: entry.item.kind.name().to_string(),
        name: entry.item.name.clone(),
        from_version: entry.item.from.as_ref().map(ToString::to_string),
        to_version: entry.item.to.to_string(),
        checksum: entry.checksum.clone(),
        started_at: started_at.to_string(),
        finished_at: now(),
        duration_ms: duration.as_millis() as i64,
        host: host(),
        pid: i64::from(std::process::id()),
        success: true,
        error: None,
    }
}

/// The current time, RFC 3339 in UTC with milliseconds.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
        .clone()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}
