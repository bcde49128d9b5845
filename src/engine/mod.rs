//! The workflow, written once over the parts: load the project, plan, prepare every
//! statement, take the lock, run the plan in a transaction, record, unlock; and the
//! read-only reports (status, plan, history) and `unlock`.

mod checksum;
mod failure;
mod prepare;
mod project;
mod record;
mod rehearse;
mod report;
mod runner;
mod session;
#[cfg(test)]
mod tests;
mod together;
mod verify;
mod verify_text;

use std::path::PathBuf;
use std::time::Instant;

use crate::db::{state, Backend, DatabaseUrl, LockSpan, StatementLimit};
use crate::error::Error;
use crate::failpoint::failpoint;
use crate::layout::Layout;
use crate::lock::{self, LockRecord, LockState};
use crate::manifest::StepTransaction;
use crate::plan::{self, DbFacts, ItemKind, Plan, PlanItem};
use crate::sql::Dialect;
use crate::version::Version;

use prepare::install_tables;
use prepare::PreparedItem;
pub use project::{Application, Project};
pub use rehearse::{Rehearsal, RehearsalFailure, RehearsalResult, RehearsedStep, RehearsedTable};
pub use report::{
    Applied, LintFinding, LockReport, OrderedItem, PlanReport, Report, ReportItem, RunOutcome,
    RunResult, Status,
};
use runner::Runner;
use session::Session;
pub use verify::{Accepted, StepCheck, StepState, VerifyReport};

/// How the run uses transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransactionMode {
    /// The whole run is one transaction: all of it or none of it.
    #[default]
    Single,
    /// Each step commits on its own; a failure keeps the steps before it.
    PerStep,
}

/// What the engine works on: `Config::new(dir)`, then the setters.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The project directory (VERSION, upgrade.xml, scripts/).
    pub project_dir: PathBuf,
    /// The database URL; `None` means `sqlite://DIR/upgrader.db`.
    pub database_url: Option<String>,
    /// Transaction use for `run`.
    pub transaction: TransactionMode,
    /// Whether `run` backs the database up before its first statement.
    pub backup: bool,
    /// How many backups of the project `run` keeps.
    pub keep_backups: usize,
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
            .field("backup", &self.backup)
            .field("keep_backups", &self.keep_backups)
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
            backup: true,
            keep_backups: 10,
        }
    }

    /// Whether `run` backs the database up first (`--no-backup`: false).
    pub fn backup(mut self, backup: bool) -> Config {
        self.backup = backup;
        self
    }

    /// How many backups of the project `run` keeps in `updates/Updates_Backups/`.
    pub fn keep_backups(mut self, keep: usize) -> Config {
        // The backup a run has just made is always kept.
        self.keep_backups = keep.max(1);
        self
    }

    /// The database URL (`sqlite://…`, `postgres://…`, `mysql://…`); `None` for the
    /// default SQLite file in the project directory.
    pub fn database_url(mut self, url: Option<String>) -> Config {
        self.database_url = url;
        self
    }

    /// How `run` uses transactions.
    pub fn transaction(mut self, mode: TransactionMode) -> Config {
        self.transaction = mode;
        self
    }
}

/// The plan of a whole application: each project's, and the order their items run in.
#[derive(Debug, Clone)]
pub(crate) struct AppPlan {
    /// Per project (root first).
    pub(crate) plans: Vec<Plan>,
    /// `(project, item index)` in run order (see [`plan::interleave`]).
    pub(crate) order: Vec<(usize, usize)>,
}

impl AppPlan {
    /// Whether a run has anything to do for any project.
    pub(crate) fn is_needed(&self) -> bool {
        self.plans.iter().any(Plan::is_needed)
    }

    /// The items in run order, with their project.
    pub(crate) fn items(&self) -> impl Iterator<Item = (usize, &PlanItem)> + '_ {
        self.order
            .iter()
            .map(|&(package, item)| (package, &self.plans[package].items[item]))
    }

    /// The version each project reaches.
    fn targets(&self) -> Vec<Version> {
        self.plans.iter().map(|plan| plan.target.clone()).collect()
    }
}

/// What the run carries from before the lock into [`Engine::run_locked`].
struct Locked<'a> {
    /// The root project's recorded version before the lock (names the backup).
    db_version: Option<String>,
    /// The run order planned before the lock.
    order: &'a [(usize, usize)],
    span: LockSpan,
    dialect: Dialect,
    limit: Option<StatementLimit>,
    started: Instant,
}

/// What `restore` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The backup file restored.
    pub file: String,
    /// The version the database records now (the root project's).
    pub version: Option<String>,
}

/// The engine: owns the workflow for one application (a project, or a project and its
/// packages) and its database.
pub struct Engine {
    config: Config,
    app: Application,
    url: DatabaseUrl,
}

impl Engine {
    /// Loads and validates the project and its packages; touches no database.
    pub fn open(config: Config) -> Result<Engine, Error> {
        let url = match &config.database_url {
            Some(url) => DatabaseUrl::parse(url)?,
            None => DatabaseUrl::default_for(&config.project_dir),
        };
        // An install a killed process left half-done is finished or undone before
        // anything reads the project's files.
        match crate::updates::recover(&config.project_dir)? {
            crate::updates::Recovery::Nothing => {}
            crate::updates::Recovery::Done(done) => log::warn!("{done}"),
            // Its files are changing: nothing can be read from them now.
            crate::updates::Recovery::InProgress(why) => return Err(Error::Installing(why)),
        }
        let app = Application::load(&config.project_dir)?;
        Ok(Engine { config, app, url })
    }

    /// The loaded root project.
    pub fn project(&self) -> &Project {
        self.app.root()
    }

    /// The root project and its packages.
    pub fn application(&self) -> &Application {
        &self.app
    }

    /// The database URL (shown with any password hidden).
    pub fn database(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The lock file path.
    pub fn lock_path(&self) -> PathBuf {
        Layout::new(&self.project().dir).lock_file()
    }

    /// The SQL dialect of the configured database.
    pub fn dialect(&self) -> Dialect {
        match self.url {
            DatabaseUrl::Sqlite(_) => Dialect::Sqlite,
            DatabaseUrl::Postgres(_) => Dialect::Postgres,
            DatabaseUrl::MySql(_) => Dialect::MySql,
        }
    }

    /// What the database says about every project: one query for the versions.
    fn facts(&self, db: Option<&mut dyn Backend>) -> Result<Vec<DbFacts>, Error> {
        let projects = &self.app.projects;
        let Some(db) = db else {
            return Ok(vec![DbFacts::default(); projects.len()]);
        };
        let recorded = if projects.len() == 1 {
            vec![state::read_version(db, &projects[0].name)?]
        } else {
            let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
            state::read_versions(db, &names)?
        };
        let mut facts = Vec::with_capacity(projects.len());
        for (index, (project, text)) in projects.iter().zip(recorded).enumerate() {
            let version = match text {
                Some(text) => Some(Version::parse(&text).map_err(|e| {
                    Error::Config(format!(
                        "the database records {text} for project {}: {e}",
                        project.name
                    ))
                })?),
                None => None,
            };
            // Without a recorded version: the root installs into a database without
            // tables; a package added later installs when none of the tables its install
            // creates exist yet.
            let has_user_tables = match (&version, index) {
                (Some(_), _) => false,
                (None, 0) => db.user_table_count()? > 0,
                (None, _) => {
                    let tables = install_tables(project, db.dialect());
                    if tables.is_empty() {
                        // An install whose tables cannot be known (a plugin's, or no
                        // CREATE TABLE) never runs on a database that has tables: the
                        // package is adopted at its initial version instead.
                        db.user_table_count()? > 0
                    } else {
                        let mut any = false;
                        for table in tables {
                            if db.table_exists(&table)? {
                                any = true;
                                break;
                            }
                        }
                        any
                    }
                }
            };
            facts.push(DbFacts {
                version,
                has_user_tables,
            });
        }
        Ok(facts)
    }

    fn read_only_facts(&self) -> Result<Vec<DbFacts>, Error> {
        match self.url.connect_read_only()? {
            Some(mut db) => self.facts(Some(db.as_mut())),
            None => self.facts(None),
        }
    }

    /// One project's plan; a package's error names the package.
    fn plan_project(&self, index: usize, facts: &DbFacts) -> Result<Plan, Error> {
        let project = &self.app.projects[index];
        plan::plan(&project.manifest, &project.code_version, facts).map_err(|error| {
            if index == 0 {
                error.into()
            } else {
                Error::Config(format!(
                    "package {} ({}): {error}",
                    project.name,
                    project.dir.display()
                ))
            }
        })
    }

    /// The whole application's plan, its items interleaved as `after` asks.
    fn plan_app(&self, facts: &[DbFacts]) -> Result<AppPlan, Error> {
        let plans = facts
            .iter()
            .enumerate()
            .map(|(index, facts)| self.plan_project(index, facts))
            .collect::<Result<Vec<_>, _>>()?;
        let order = if plans.len() == 1 {
            (0..plans[0].items.len()).map(|item| (0, item)).collect()
        } else {
            let refs: Vec<&Plan> = plans.iter().collect();
            let waits = |package: usize, item: usize| {
                self.app.wait_of(package, &plans[package].items[item])
            };
            plan::interleave(&refs, &waits).map_err(|stuck| {
                let names: Vec<String> = stuck
                    .chain
                    .iter()
                    .map(|&(p, i)| {
                        format!("{} '{}'", self.app.projects[p].name, plans[p].items[i].name)
                    })
                    .collect();
                Error::Config(format!(
                    "the steps {} wait for each other; no order can run them",
                    names.join(", ")
                ))
            })?
        };
        Ok(AppPlan { plans, order })
    }

    /// The status report (read-only): the root project's, with its packages' in
    /// `packages`.
    pub fn status(&self) -> Result<Report, Error> {
        let lock_path = self.lock_path();
        let lock_state = lock::inspect(&lock_path)?;
        let facts = self.read_only_facts()?;
        // One lock and one database for the whole application: described once.
        let lock = LockReport::new(&lock_state, &lock_path);
        let database = self.url.to_string();
        let reports: Vec<Report> = facts
            .into_iter()
            .enumerate()
            .map(|(index, facts)| {
                let (pending, problem) = match self.plan_project(index, &facts) {
                    Ok(plan) => (plan.items.iter().map(ReportItem::from).collect(), None),
                    Err(error) => (Vec::new(), Some(error.to_string())),
                };
                let state = if lock_state != LockState::Free {
                    Status::Halted
                } else if facts.version.is_none() {
                    Status::Uninitialized
                } else if !pending.is_empty() {
                    Status::Pending
                } else {
                    Status::Current
                };
                let project = &self.app.projects[index];
                Report {
                    project: project.name.clone(),
                    code_version: project.code_version.to_string(),
                    db_version: facts.version.map(|v| v.to_string()),
                    state,
                    pending,
                    lock: lock.clone(),
                    updates_pending: match index {
                        0 => self
                            .pending_updates(None, false)
                            .into_iter()
                            .filter(crate::updates::PendingPackage::installable)
                            .map(|package| package.file)
                            .collect(),
                        _ => Vec::new(),
                    },
                    database: database.clone(),
                    problem,
                    packages: None,
                }
            })
            .collect();
        let root = nest(reports, |root, packages| root.packages = Some(packages));
        Ok(root)
    }

    /// The code update packages in `updates/Updates_Pending/`, in version order, each
    /// with the database steps it brings and what keeps it from being installed
    /// (read-only; nothing is extracted).
    pub fn updates(&self) -> Result<Vec<crate::updates::PendingPackage>, Error> {
        let facts = self.read_only_facts()?;
        Ok(self.pending_updates(Some(&facts[0]), true))
    }

    /// Installs code update packages from `updates/Updates_Pending/` (`files`: those,
    /// by path or name; none: every installable one), in version order, under the
    /// upgrade lock, after backing the project directory up; `None` when there is
    /// nothing to install. Refused, with nothing changed, when a package named cannot be
    /// installed (its problems say why).
    pub fn install_updates(
        &self,
        files: &[PathBuf],
    ) -> Result<Option<crate::updates::Installed>, Error> {
        let listed = self.pending_updates(None, false);
        let chosen: Vec<&crate::updates::PendingPackage> = if files.is_empty() {
            listed.iter().filter(|p| p.installable()).collect()
        } else {
            let mut chosen = Vec::new();
            for file in files {
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(package) = listed.iter().find(|p| Some(&p.file) == name.as_ref()) else {
                    return Err(Error::Refused(format!(
                        "{} is not a package in {}; nothing was installed",
                        file.display(),
                        Layout::new(&self.project().dir).updates_pending().display()
                    )));
                };
                if !package.installable() {
                    return Err(Error::Refused(format!(
                        "{} cannot be installed: {}; nothing was installed",
                        package.file,
                        package.problems.join("; ")
                    )));
                }
                chosen.push(package);
            }
            // Each one's `requires` met by the ones chosen before it.
            crate::updates::install_order(&self.project().code_version, chosen)?
        };
        if chosen.is_empty() {
            return Ok(None);
        }
        let pending = Layout::new(&self.project().dir).updates_pending();
        let packages: Vec<(PathBuf, crate::updates::UpdateXml)> = chosen
            .iter()
            .map(|p| {
                (
                    pending.join(&p.file),
                    p.update.clone().expect("installable packages were read"),
                )
            })
            .collect();
        let project = self.code_project();
        crate::updates::install(&project, &packages, &self.lock_path()).map(Some)
    }

    /// Restores the newest app backup (the project directory as it was before the last
    /// install), under the upgrade lock, and names the database backup that matches it.
    pub fn rollback_updates(&self) -> Result<crate::updates::RolledBack, Error> {
        crate::updates::rollback(&self.code_project(), &self.lock_path())
    }

    /// The root project as code installs see it: its files but the database's.
    fn code_project(&self) -> crate::updates::Project<'_> {
        let root = self.project();
        let mut keep_out = Vec::new();
        if let DatabaseUrl::Sqlite(sqlite) = &self.url {
            let dir = root.dir.canonicalize().unwrap_or_else(|_| root.dir.clone());
            let db = sqlite
                .path
                .parent()
                .and_then(|p| p.canonicalize().ok())
                .zip(sqlite.path.file_name())
                .map(|(parent, name)| parent.join(name));
            if let Some(relative) = db.as_ref().and_then(|db| db.strip_prefix(&dir).ok()) {
                let relative = relative.to_string_lossy().into_owned();
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    keep_out.push(format!("{relative}{suffix}"));
                }
            }
        }
        crate::updates::Project {
            dir: &root.dir,
            name: &root.name,
            version: &root.code_version,
            keep_out,
        }
    }

    fn pending_updates(
        &self,
        facts: Option<&DbFacts>,
        hash: bool,
    ) -> Vec<crate::updates::PendingPackage> {
        let root = self.project();
        let layout = Layout::new(&root.dir);
        let installed = crate::updates::InstalledCode {
            project: &root.name,
            version: &root.code_version,
            planning: facts.map(|facts| (&root.manifest, facts)),
        };
        crate::updates::list(
            &layout.updates_pending(),
            &layout.trusted_key(),
            &installed,
            hash,
        )
    }

    /// The plan `run` would execute (read-only): the root project's, with its packages'
    /// in `packages` and the order of the whole run in `order`.
    pub fn plan(&self) -> Result<PlanReport, Error> {
        let facts = self.read_only_facts()?;
        let app_plan = self.plan_app(&facts)?;
        let reports: Vec<PlanReport> = app_plan
            .plans
            .iter()
            .zip(&self.app.projects)
            .map(|(plan, project)| PlanReport {
                project: project.name.clone(),
                from: plan.start.as_ref().map(ToString::to_string),
                to: plan.target.to_string(),
                db_version: plan.db_version.as_ref().map(ToString::to_string),
                steps: plan.items.iter().map(ReportItem::from).collect(),
                packages: None,
                order: None,
            })
            .collect();
        let mut root = nest(reports, |root, packages| root.packages = Some(packages));
        if root.packages.is_some() {
            root.order = Some(
                app_plan
                    .items()
                    .map(|(package, item)| OrderedItem {
                        project: self.app.projects[package].name.clone(),
                        item: ReportItem::from(item),
                    })
                    .collect(),
            );
        }
        Ok(root)
    }

    /// The applied steps of every project, oldest first (read-only).
    pub fn history(&self) -> Result<Vec<state::HistoryRow>, Error> {
        let names: Vec<&str> = self.app.projects.iter().map(|p| p.name.as_str()).collect();
        match self.url.connect_read_only()? {
            Some(mut db) => Ok(state::read_histories(db.as_mut(), &names)?),
            None => Ok(Vec::new()),
        }
    }

    /// Removes a failed or stale lock; refuses while a live process holds it.
    pub fn unlock(&self) -> Result<LockState, Error> {
        Ok(lock::unlock(&self.lock_path())?)
    }

    /// Restores the database from a backup `backups` lists (a path, or a file name in
    /// `updates/Updates_Backups/`), holding the upgrade lock meanwhile; returns the file
    /// restored and the version the database now records. Refused, with nothing changed,
    /// while the lock is not free, and for a file that is not a backup of this database's
    /// kind.
    pub fn restore(&self, file: &std::path::Path) -> Result<Restored, Error> {
        let dir = Layout::new(&self.project().dir).updates_backups();
        let path = if file.components().count() == 1 && !file.exists() {
            dir.join(file)
        } else {
            file.to_path_buf()
        };
        let kind = crate::backup::kind_of(&self.url);
        crate::backup::check_file(&path, kind)?;
        let lock_path = self.writable_and_free()?;
        let record = LockRecord::by_this_process(lock::Operation::Restore);
        let db = self.url.connect()?;
        let mut session = Session::begin(&lock_path, record, db, LockSpan::Session)?;
        if let Err((error, partial)) = crate::backup::restore(&self.url, session.db(), &path) {
            if partial {
                // Nobody may run on a half-restored database: the lock stays failed.
                session.fail(Some("restore"), &error.to_string());
            }
            return Err(error);
        }
        let version = state::read_version(session.db(), &self.project().name)?;
        session.end();
        Ok(Restored {
            file: path.display().to_string(),
            version,
        })
    }

    /// Before an operation that writes under the lock: the database may be written (an
    /// SQLite URL opened `?mode=ro` is refused) and the lock is free (else `Halted`, which
    /// says why). Returns the lock file's path.
    pub(crate) fn writable_and_free(&self) -> Result<PathBuf, Error> {
        self.url.ensure_writable()?;
        let lock_path = self.lock_path();
        if let Some(message) = lock::inspect(&lock_path)?.explain(&lock_path) {
            return Err(Error::Halted(message));
        }
        Ok(lock_path)
    }

    /// Performs the upgrade of every project: lock, steps in a transaction, record,
    /// unlock.
    pub fn run(&self) -> Result<RunOutcome, Error> {
        self.run_on(None)
    }

    /// [`Engine::run`] on `given`, a connection made elsewhere (the unit tests' recording
    /// backend), instead of one to the configured database.
    pub(crate) fn run_on(&self, given: Option<Box<dyn Backend>>) -> Result<RunOutcome, Error> {
        let run_started = Instant::now();
        // A database opened read-only (`?mode=ro`) is refused before the lock is taken.
        let lock_path = self.writable_and_free()?;
        // A server connection made for this first look is kept for the run: a
        // PostgreSQL or MySQL connection costs a server process or thread and a login.
        // An SQLite file is only opened read-only here, so that a look creates nothing.
        let mut kept = match (given, &self.url) {
            (Some(db), _) => Some(db),
            (None, DatabaseUrl::Sqlite(_)) => None,
            (None, _) => Some(self.url.connect()?),
        };
        let facts = match kept.as_mut() {
            Some(db) => self.facts(Some(db.as_mut()))?,
            None => self.read_only_facts()?,
        };
        let app_plan = self.plan_app(&facts)?;
        if !app_plan.is_needed() {
            return Ok(self.current_outcome(&app_plan, run_started));
        }
        let dialect = kept.as_ref().map_or(self.dialect(), |db| db.dialect());
        let limit = match kept.as_mut() {
            Some(db) => db.max_statement_bytes()?,
            None => Some(crate::db::sqlite::STATEMENT_LIMIT),
        };
        let prepared = self.prepare(&app_plan, dialect, limit)?;

        let root_plan = &app_plan.plans[0];
        let record = LockRecord {
            from: root_plan.start.as_ref().map(ToString::to_string),
            to: root_plan.target.to_string(),
            ..LockRecord::by_this_process(lock::Operation::Run)
        };
        let db = match kept {
            Some(db) => db,
            None => self.url.connect()?,
        };
        let span = self.lock_span(&prepared, dialect);
        let mut session = Session::begin(&lock_path, record, db, span)?;
        // Only its order is compared with the plan made under the lock.
        let AppPlan { order, plans } = app_plan;
        drop(plans);
        let locked = Locked {
            db_version: facts[0].version.as_ref().map(ToString::to_string),
            order: &order,
            span,
            dialect,
            limit,
            started: run_started,
        };
        match self.run_locked(&mut session, &locked, prepared) {
            Ok(outcome) => {
                session.end();
                Ok(outcome)
            }
            Err(error @ Error::StepFailed { .. }) => {
                if let Error::StepFailed { step, message, .. } = &error {
                    session.fail(Some(step), message);
                }
                Err(error)
            }
            // Nothing ran: dropping the session leaves no lock behind.
            Err(error) => Err(error),
        }
    }

    /// The run, once the session holds the lock: plan again under it, then apply.
    fn run_locked(
        &self,
        session: &mut Session,
        locked: &Locked<'_>,
        prepared: Vec<PreparedItem>,
    ) -> Result<RunOutcome, Error> {
        let Locked {
            ref db_version,
            order,
            span,
            dialect,
            limit,
            started: run_started,
        } = *locked;
        if self.config.backup {
            // Under the lock, before the run's first statement: what `restore` brings back.
            // A dump tool reads through a connection of its own, so the database lock
            // must already be held (see `lock_span`); the version is read again under it.
            let version = match self.url {
                DatabaseUrl::Sqlite(_) => db_version.clone(),
                _ => state::read_version(session.db(), &self.project().name)?,
            };
            crate::backup::make(
                &self.url,
                session.db(),
                &Layout::new(&self.project().dir).updates_backups(),
                &self.project().name,
                version.as_deref(),
                self.config.keep_backups,
            )?;
            failpoint!("backup-made", crate::failpoint::db_error);
        }
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
        let app_plan = self.plan_app(&facts)?;
        if !app_plan.is_needed() {
            return Ok(self.current_outcome(&app_plan, run_started));
        }
        let unchanged = app_plan.order == order
            && app_plan
                .items()
                .zip(&prepared)
                .all(|((package, item), p)| p.package == package && p.item == *item);
        let prepared = if unchanged {
            prepared
        } else {
            let prepared = self.prepare(&app_plan, dialect, limit)?;
            if self.lock_span(&prepared, dialect) != span {
                session.widen(LockSpan::Session)?;
            }
            prepared
        };
        let committed: Vec<Option<Version>> = facts.into_iter().map(|f| f.version).collect();
        let schemas = record::SchemaWatch::start(self.app.projects.len());
        let (db, guard) = session.parts();
        let mut runner = Runner::new(self, db, guard, &app_plan, committed, schemas);
        runner.execute(&app_plan.targets(), prepared)?;
        let mut applied = std::mem::take(&mut runner.applied);
        let duration_ms = run_started.elapsed().as_millis() as u64;
        let outcomes: Vec<RunOutcome> = app_plan
            .plans
            .iter()
            .zip(&self.app.projects)
            .zip(applied.iter_mut())
            .map(|((plan, project), applied)| {
                let installed = plan
                    .items
                    .first()
                    .is_some_and(|i| i.kind == ItemKind::Install);
                let result = if !plan.is_needed() {
                    RunResult::Current
                } else if installed {
                    RunResult::Installed
                } else if plan.items.is_empty() {
                    RunResult::Recorded
                } else {
                    RunResult::Upgraded
                };
                RunOutcome {
                    project: project.name.clone(),
                    result,
                    from: match result {
                        RunResult::Recorded => None,
                        RunResult::Current => plan.db_version.as_ref().map(ToString::to_string),
                        _ => plan.start.as_ref().map(ToString::to_string),
                    },
                    to: plan.target.to_string(),
                    applied: std::mem::take(applied),
                    duration_ms,
                    packages: None,
                }
            })
            .collect();
        let root = nest(outcomes, |root, packages| root.packages = Some(packages));
        Ok(root)
    }

    /// Commits in the middle of the run (per step, around a step without a transaction,
    /// or before an install whose DDL commits on MySQL) need the database lock to hold
    /// between transactions too.
    fn lock_span(&self, prepared: &[PreparedItem], dialect: Dialect) -> LockSpan {
        let commits_between = self.config.transaction == TransactionMode::PerStep
            || prepared
                .iter()
                .any(|p| p.transaction != StepTransaction::Shared)
            || (dialect == Dialect::MySql
                && prepared
                    .iter()
                    .skip(1)
                    .any(|p| p.item.kind == ItemKind::Install));
        // A server's dump tool reads on a connection of its own before the run's first
        // transaction: the lock must be held from before the dump.
        let dumps = self.config.backup && !matches!(self.url, DatabaseUrl::Sqlite(_));
        if commits_between || dumps {
            LockSpan::Session
        } else {
            LockSpan::Transaction
        }
    }

    fn current_outcome(&self, app_plan: &AppPlan, started: Instant) -> RunOutcome {
        let duration_ms = started.elapsed().as_millis() as u64;
        let outcomes: Vec<RunOutcome> = app_plan
            .plans
            .iter()
            .zip(&self.app.projects)
            .map(|(plan, project)| RunOutcome {
                project: project.name.clone(),
                result: RunResult::Current,
                from: plan.db_version.as_ref().map(ToString::to_string),
                to: plan.target.to_string(),
                applied: Vec::new(),
                duration_ms,
                packages: None,
            })
            .collect();
        nest(outcomes, |root, packages| root.packages = Some(packages))
    }

    /// Downloads the code update packages at `url` (a package, or a JSON feed of them)
    /// that are newer than the installed code and not already pending into
    /// `updates/Updates_Pending/`, each checked before it appears there.
    pub fn fetch_updates(&self, url: &str) -> Result<crate::updates::FetchReport, Error> {
        let layout = Layout::new(&self.project().dir);
        crate::updates::fetch::fetch(
            url,
            &crate::updates::fetch::Target {
                pending: &layout.updates_pending(),
                trusted_key: &layout.trusted_key(),
                installed: &self.project().code_version,
            },
        )
    }
}

/// The root project's report with its packages' nested in it by `set` (left alone for
/// an application of one project).
fn nest<T>(mut reports: Vec<T>, set: impl FnOnce(&mut T, Vec<T>)) -> T {
    let packages = reports.split_off(1);
    let mut root = reports.pop().expect("the root project");
    if !packages.is_empty() {
        set(&mut root, packages);
    }
    root
}

/// The current time, RFC 3339 in UTC with milliseconds.
pub(crate) use crate::run_info::{host, now};
