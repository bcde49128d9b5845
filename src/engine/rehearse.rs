//! `run --rehearse`: the whole plan (install, steps, plugins) in one transaction under
//! the lock, measured (each item's statements and changed rows; each table's rows and
//! schema before and after), then rolled back. The database, its history and the lock
//! are left as they were, whether the plan passes or fails: a failed rehearsal must not
//! halt the application, so it never marks the lock failed and writes no history.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::record::SchemaWatch;
use super::runner::Runner;
use super::session::Session;
use super::{now, Engine};
use crate::db::{state, Backend, DatabaseUrl, DbObject, LockSpan};
use crate::error::Error;
use crate::lock::{LockRecord, Operation};
use crate::manifest::StepTransaction;
use crate::plan::ItemKind;
use crate::schema;
use crate::sql::Dialect;

/// What a rehearsal found (`run --rehearse`, also as `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
    /// The root project.
    pub project: String,
    /// `passed`, `failed` or `current` (nothing to rehearse).
    pub result: RehearsalResult,
    /// The root's recorded version (null when none is).
    pub from: Option<String>,
    /// The root's code version.
    pub to: String,
    /// Every item that ran, in run order (up to and including a failed one's
    /// predecessors).
    pub steps: Vec<RehearsedStep>,
    /// The tables whose rows or schema the plan changed (measured only when it passed).
    pub tables: Vec<RehearsedTable>,
    /// The item that failed and why, when one did.
    pub failed: Option<RehearsalFailure>,
    /// The whole rehearsal, lock to unlock.
    pub duration_ms: u64,
}

/// How a rehearsal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RehearsalResult {
    /// Every item ran; the run would succeed (as far as one transaction can tell).
    Passed,
    /// An item failed: the run would fail there.
    Failed,
    /// The database is current: nothing to rehearse.
    Current,
}

/// One item of a rehearsal.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsedStep {
    /// The item's project.
    pub project: String,
    /// Step name, `install` or `version-only`.
    pub name: String,
    /// `install`, `step` or `version-only`.
    pub kind: &'static str,
    /// Version before.
    pub from: Option<String>,
    /// Version after.
    pub to: String,
    /// Statements sent (scripts' and plugins').
    pub statements: usize,
    /// Rows its statements inserted, updated or deleted; null when a plugin sent
    /// statements (the host does not count their rows).
    pub rows_affected: Option<u64>,
    /// How long it took.
    pub duration_ms: u64,
}

/// A table the plan changed.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsedTable {
    /// The table.
    pub table: String,
    /// Rows before the plan (null: the table did not exist).
    pub rows_before: Option<u64>,
    /// Rows after it (null: the table is gone).
    pub rows_after: Option<u64>,
    /// Net rows added (`rows_after - rows_before` when positive).
    pub rows_added: u64,
    /// Net rows removed.
    pub rows_removed: u64,
    /// `created`, `dropped`, `changed` or `unchanged`.
    pub schema: &'static str,
    /// A unified diff of the table's normalized schema, when it changed.
    pub diff: Option<String>,
}

/// The item a rehearsal stopped at.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalFailure {
    /// The item's project.
    pub project: String,
    /// The step (or `install`) that failed.
    pub step: String,
    /// What failed, as a run would report it.
    pub error: String,
}

/// Each table's rows and normalized schema at one moment of a rehearsal.
type Measure = BTreeMap<String, (u64, String)>;

fn measure(db: &mut dyn Backend, dialect: Dialect) -> Result<Measure, Error> {
    let facts = db.table_schemas(None)?;
    let names: Vec<String> = facts.iter().map(|f| f.name.clone()).collect();
    let counts = db.count_rows(&names)?;
    Ok(facts
        .iter()
        .zip(counts)
        .map(|(facts, rows)| {
            (
                facts.name.clone(),
                (rows, schema::normalize(dialect, facts)),
            )
        })
        .collect())
}

/// The tables whose rows or schema differ between `before` and `after`.
fn changed_tables(before: &Measure, after: &Measure) -> Vec<RehearsedTable> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let old = before.get(name);
            let new = after.get(name);
            let (schema_state, diff) = match (old, new) {
                (None, Some(_)) => ("created", None),
                (Some(_), None) => ("dropped", None),
                (Some((_, a)), Some((_, b))) if a != b => (
                    "changed",
                    Some(schema::unified_diff(a, b, "before", "after")),
                ),
                _ => ("unchanged", None),
            };
            let rows_before = old.map(|(rows, _)| *rows);
            let rows_after = new.map(|(rows, _)| *rows);
            if schema_state == "unchanged" && rows_before == rows_after {
                return None;
            }
            let (b, a) = (rows_before.unwrap_or(0), rows_after.unwrap_or(0));
            Some(RehearsedTable {
                table: name.clone(),
                rows_before,
                rows_after,
                rows_added: a.saturating_sub(b),
                rows_removed: b.saturating_sub(a),
                schema: schema_state,
                diff,
            })
        })
        .collect()
}

impl Engine {
    /// `run --rehearse`: see the module's documentation. `Ok` whether the plan passes or
    /// fails (the report says which); `Err` when it cannot be rehearsed at all (halted,
    /// a plan that cannot be made or prepared, MySQL work that cannot be rolled back).
    pub fn rehearse(&self) -> Result<Rehearsal, Error> {
        let started = Instant::now();
        let lock_path = self.writable_and_free()?;
        // A rehearsal on an SQLite file that does not exist yet leaves none behind.
        let created_file = match &self.url {
            DatabaseUrl::Sqlite(sqlite) if !sqlite.path.exists() => Some(sqlite.path.clone()),
            _ => None,
        };
        let mut db = self.url.connect()?;
        let facts = self.facts(Some(db.as_mut()))?;
        let app_plan = self.plan_app(&facts)?;
        let root = &app_plan.plans[0];
        let mut report = Rehearsal {
            project: self.project().name.clone(),
            result: RehearsalResult::Current,
            from: root.db_version.as_ref().map(ToString::to_string),
            to: root.target.to_string(),
            steps: Vec::new(),
            tables: Vec::new(),
            failed: None,
            duration_ms: 0,
        };
        if !app_plan.is_needed() {
            drop(db);
            remove_created(created_file.as_deref());
            report.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(report);
        }
        let dialect = db.dialect();
        let limit = db.max_statement_bytes()?;
        let prepared = self.prepare(&app_plan, dialect, limit)?;
        if dialect == Dialect::MySql {
            refuse_unrehearsable(&prepared)?;
        }
        let record = LockRecord {
            from: report.from.clone(),
            to: report.to.clone(),
            ..LockRecord::by_this_process(Operation::Rehearse)
        };
        // MySQL commits DDL, upgrader's own tables' included: what the rehearsal
        // creates for good is listed now and dropped at the end.
        let objects_before = match dialect {
            Dialect::MySql => Some(db.objects()?),
            _ => None,
        };
        let mut session = Session::begin(&lock_path, record, db, LockSpan::Transaction)?;
        let outcome = self.rehearse_locked(&mut session, &app_plan, &prepared, dialect);
        // Whatever happened: roll back (ending the session does), drop what MySQL
        // committed, release the lock.
        let _ = session.db().rollback();
        if let Some(before) = objects_before {
            drop_created(session.db(), &before);
        }
        session.end();
        remove_created(created_file.as_deref());
        let (steps, tables, failed) = outcome?;
        report.steps = steps;
        report.tables = tables;
        report.result = match failed {
            Some(_) => RehearsalResult::Failed,
            None => RehearsalResult::Passed,
        };
        report.failed = failed;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// The rehearsal proper, under the session: begin, measure, run, measure. Returns
    /// what ran, the tables it changed, and the failure if an item failed.
    #[allow(clippy::type_complexity)]
    fn rehearse_locked(
        &self,
        session: &mut Session,
        app_plan: &super::AppPlan,
        prepared: &[super::PreparedItem],
        dialect: Dialect,
    ) -> Result<
        (
            Vec<RehearsedStep>,
            Vec<RehearsedTable>,
            Option<RehearsalFailure>,
        ),
        Error,
    > {
        {
            let db = session.db();
            db.begin()?;
            state::ensure_in_transaction(db, &now())?;
        }
        // Planned again under the lock, as a run does: the plan looked at must be the
        // plan rehearsed.
        let facts = self.facts(Some(session.db()))?;
        let locked_plan = self.plan_app(&facts)?;
        if locked_plan.order != app_plan.order {
            return Err(Error::Halted(
                "another process upgraded the database while the rehearsal was starting; rehearse again".into(),
            ));
        }
        let before = measure(session.db(), dialect)?;
        let committed = facts.into_iter().map(|f| f.version).collect();
        let schemas = SchemaWatch::start(self.app.projects.len());
        let (db, guard) = session.parts();
        let mut runner = Runner::new(self, db, guard, app_plan, committed, schemas);
        runner.rehearsing = true;
        runner.mode = super::TransactionMode::Single;
        let applied = runner.apply_all(&app_plan.targets(), prepared);
        let mut steps = Vec::new();
        let mut rows = runner.item_rows.iter();
        for (package, item) in app_plan.items() {
            let project = &self.app.projects[package].name;
            let Some(done) = runner.applied[package]
                .iter()
                .find(|a| a.name == item.name && a.to == item.to.to_string())
            else {
                continue;
            };
            steps.push(RehearsedStep {
                project: project.clone(),
                name: done.name.clone(),
                kind: done.kind,
                from: done.from.clone(),
                to: done.to.clone(),
                statements: done.statements,
                rows_affected: rows.next().copied().flatten(),
                duration_ms: done.duration_ms,
            });
        }
        match applied {
            Ok(()) => {
                let after = measure(runner.db, dialect)?;
                // An install's DDL on MySQL committed: drop what it created.
                let _ = runner.db.rollback();
                runner.in_transaction = false;
                let _ = runner.undo_install();
                Ok((steps, changed_tables(&before, &after), None))
            }
            Err(failure) => {
                if runner.in_transaction {
                    let _ = runner.db.rollback();
                    runner.in_transaction = false;
                }
                let _ = runner.undo_install();
                let package = runner.in_flight.as_ref().map_or(0, |f| f.package);
                Ok((
                    steps,
                    Vec::new(),
                    Some(RehearsalFailure {
                        project: self.app.projects[package].name.clone(),
                        step: failure.item,
                        error: failure.message,
                    }),
                ))
            }
        }
    }
}

/// On MySQL, what commits for good cannot be rehearsed: a `transaction="none"` step, or
/// an install after other work (the commit before its DDL would keep that work).
fn refuse_unrehearsable(prepared: &[super::PreparedItem]) -> Result<(), Error> {
    for (index, entry) in prepared.iter().enumerate() {
        if let Some(refusal) = &entry.refusal {
            return Err(Error::Refused(format!(
                "{}: step '{}': {}: `{}`; MySQL would commit it for good, so this plan cannot be rehearsed; nothing was run",
                refusal.location, refusal.step, refusal.reason, refusal.statement
            )));
        }
        if entry.transaction == StepTransaction::NoneUnsafe {
            return Err(Error::Refused(format!(
                "step '{}' runs without a transaction (transaction=\"none\"), and MySQL keeps what it does, so this plan cannot be rehearsed; nothing was run",
                entry.item.name
            )));
        }
        if entry.item.kind == ItemKind::Install && index > 0 {
            return Err(Error::Refused(format!(
                "the install of a package comes after other work, which MySQL would commit before the install's DDL, so this plan cannot be rehearsed; nothing was run (install {})",
                entry.item.to
            )));
        }
    }
    Ok(())
}

/// Drops what exists now but not `before` (MySQL: upgrader's own tables a rehearsal
/// created on a new database; an install's tables are dropped by the runner).
fn drop_created(db: &mut dyn Backend, before: &[DbObject]) {
    match db.objects() {
        Ok(now) => {
            let created: Vec<DbObject> = now.into_iter().filter(|o| !before.contains(o)).collect();
            if !created.is_empty() {
                if let Err(error) = db.drop_objects(&created) {
                    log::warn!("the rehearsal could not drop what it created: {error}");
                }
            }
        }
        Err(error) => log::warn!("the rehearsal could not list what it created: {error}"),
    }
}

/// Removes an SQLite file (and its journals) that the rehearsal created.
fn remove_created(file: Option<&std::path::Path>) {
    let Some(file) = file else { return };
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut name = file.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}
