//! The workflow, written once over the parts: load the project, plan, prepare every
//! statement, take the lock, run the plan in a transaction, record, unlock; and the
//! read-only reports (status, plan, history) and `unlock`.

mod prepare;
mod project;
mod report;
mod runner;
mod session;

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::db::{state, Backend, DatabaseUrl, LockSpan, StatementLimit};
use crate::error::Error;
use crate::lock::{self, LockRecord, LockState};
use crate::manifest::StepTransaction;
use crate::plan::{self, DbFacts, ItemKind, Plan};
use crate::sql::{guard, Dialect};
use crate::version::Version;

use prepare::PreparedItem;
pub use project::Project;
pub use report::{
    Applied, LintFinding, LockReport, PlanReport, Report, ReportItem, RunOutcome, RunResult,
};
use runner::Runner;
use session::Session;

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
            ..LockRecord::default()
        };
        let db = match kept {
            Some(db) => db,
            None => self.url.connect()?,
        };
        let span = self.lock_span(&prepared);
        let mut session = Session::begin(&lock_path, record, db, span)?;
        drop(plan);
        match self.run_locked(&mut session, prepared, span, limit, run_started) {
            Ok(outcome) => {
                session.end();
                Ok(outcome)
            }
            Err(Error::StepFailed { step, message }) => {
                session.fail(Some(&step), &message);
                Err(Error::StepFailed { step, message })
            }
            // Nothing ran: dropping the session leaves no lock behind.
            Err(error) => Err(error),
        }
    }

    /// The run, once the session holds the lock: plan again under it, then apply.
    fn run_locked(
        &self,
        session: &mut Session,
        prepared: Vec<PreparedItem>,
        span: LockSpan,
        limit: Option<StatementLimit>,
        run_started: Instant,
    ) -> Result<RunOutcome, Error> {
        let dialect = self.dialect();
        {
            let db = session.db();
            db.begin()?;
            // Created inside the run's transaction: a run that fails leaves no trace but
            // its history row (see `Runner::fail`).
            state::ensure_in_transaction(db, &now())?;
        }
        // Another host may have upgraded between our look and our lock: plan again under
        // it. The plan made before the lock has served; only the one made under it counts.
        let facts = self.facts(Some(session.db()))?;
        let plan = plan::plan(&self.project.manifest, &self.project.code_version, &facts)?;
        if !plan.is_needed() {
            return Ok(self.current_outcome(&plan, run_started));
        }
        let prepared = if plan.items.iter().eq(prepared.iter().map(|p| &p.item)) {
            prepared
        } else {
            let prepared = self.prepare(&plan, dialect, limit)?;
            if self.lock_span(&prepared) != span {
                session.widen(LockSpan::Session)?;
            }
            prepared
        };
        let (db, guard) = session.parts();
        let mut runner = Runner {
            engine: self,
            db,
            guard,
            mode: self.config.transaction,
            in_transaction: true,
            committed_version: facts.version.clone(),
            applied: Vec::new(),
            in_flight: None,
            unrecorded: Vec::new(),
            install_objects: None,
            tables: guard::TableGuard::default(),
            committed_alone: None,
            implicit_commit: None,
        };
        runner.execute(&plan, &prepared)?;
        let installed = plan
            .items
            .first()
            .is_some_and(|i| i.kind == ItemKind::Install);
        let result = if installed {
            RunResult::Installed
        } else if plan.items.is_empty() {
            RunResult::Recorded
        } else {
            RunResult::Upgraded
        };
        Ok(RunOutcome {
            project: self.project.name.clone(),
            result,
            from: match result {
                RunResult::Recorded => None,
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
            result: RunResult::Current,
            from: plan.db_version.as_ref().map(ToString::to_string),
            to: plan.target.to_string(),
            applied: Vec::new(),
            duration_ms: started.elapsed().as_millis() as u64,
        }
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
