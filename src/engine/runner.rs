//! Running a prepared plan under the lock: the transaction bookkeeping, sending each
//! statement, recording versions and history, and turning a failure into a truthful
//! message, a history row and a failed lock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::prepare::{judge, Hashing, PreparedItem, Streamed, Work};
use super::together::Together;
use super::Applied;
use super::{host, now, Engine, LintFinding, TransactionMode};
use crate::db::{state, Backend, DbObject};
use crate::error::Committed;
use crate::error::Error;
use crate::failpoint::failpoint;
use crate::lock::LockGuard;
use crate::manifest::StepTransaction;
use crate::plan::{ItemKind, PlanItem};
use crate::plugin;
use crate::sql::{self, guard, Dialect};
use crate::version::Version;

/// How an item's statements are sent.
pub(super) struct Sending {
    pub(super) dialect: Dialect,
    /// An install on MySQL: its DDL commits, and the transaction is opened again after it.
    pub(super) ddl_commits: bool,
    /// The step runs alone (`transaction="none"`).
    pub(super) alone: bool,
    pub(super) install: bool,
    pub(super) transaction: StepTransaction,
    /// The item's project (index into the application's projects).
    pub(super) package: usize,
}

/// At most this many characters of a database's error message are quoted (it may quote
/// a whole statement).
pub(super) const QUOTED_MESSAGE_CHARS: usize = 500;

/// The state of one run in progress; owns the transaction bookkeeping.
pub(super) struct Runner<'a> {
    pub(super) engine: &'a Engine,
    pub(super) db: &'a mut dyn Backend,
    pub(super) guard: &'a mut LockGuard,
    pub(super) mode: TransactionMode,
    pub(super) in_transaction: bool,
    /// Per project of the application: the version the database holds if everything
    /// uncommitted is rolled back.
    pub(super) committed: Vec<Option<Version>>,
    /// Per project: the version it has reached in the open transaction (written to
    /// `upgrader_version` only when it is about to become durable).
    pub(super) current: Vec<Option<Version>>,
    /// Per project: what the run applied.
    pub(super) applied: Vec<Vec<Applied>>,
    /// Items applied in the open transaction, in run order.
    pub(super) since_commit: Vec<Committed>,
    /// Items committed for good, in run order: what a failure leaves applied.
    pub(super) done: Vec<Committed>,
    /// Set when another process carried the database past this run between two of its
    /// commits (SQLite): the run stops without failing (see [`Runner::execute`]).
    pub(super) overtaken: Option<String>,
    /// The item being applied, for the history row of a failure.
    pub(super) in_flight: Option<InFlight>,
    /// History rows of applied items, written in one go before the next commit.
    pub(super) unrecorded: Vec<state::HistoryRow>,
    /// The schema's objects before an install whose DDL commits implicitly (MySQL), so
    /// that a failed install can drop what it created.
    pub(super) install_objects: Option<Vec<DbObject>>,
    /// Tables whose engine cannot roll back, for judging plugin statements.
    pub(super) tables: guard::TableGuard,
    /// The last `transaction="none"` step this run committed, if any: a later failure
    /// rolls back only to it.
    pub(super) committed_alone: Option<String>,
    /// Where a statement committed the run's transaction implicitly (MySQL), if one did.
    pub(super) implicit_commit: Option<String>,
    /// The outcomes of items (by index) that went to the server with an earlier one
    /// (see [`Runner::send_together`]), for their turn.
    pub(super) batched: VecDeque<super::together::Batched>,
    /// The project whose install, not the run's first item, was preceded by a commit
    /// (MySQL commits an install's DDL), if one was.
    pub(super) committed_before_install: Option<String>,
    /// What may have changed schemas since they were last recorded (see `record`).
    pub(super) schemas: super::record::SchemaWatch,
    /// `run --rehearse`: one transaction whatever the steps say, rows counted, and the
    /// end left open for the caller to measure and roll back (never committed).
    pub(super) rehearsing: bool,
    /// Rehearsing: the rows the current item's statements changed so far (none when a
    /// backend or a plugin cannot tell).
    pub(super) rows: Option<u64>,
    /// Rehearsing: the rows each applied item changed, in run order.
    pub(super) item_rows: Vec<Option<u64>>,
}

/// What a failure's history row says about the item that failed.
pub(super) struct InFlight {
    pub(super) kind: ItemKind,
    /// The item's project (index into the application's projects).
    pub(super) package: usize,
    /// The version the item starts from (none for an install).
    pub(super) from: Option<Version>,
    pub(super) to: Version,
    pub(super) checksum: Option<String>,
    pub(super) started_at: String,
    pub(super) started: Instant,
}

/// What went wrong inside a run, before it is turned into the user's error.
pub(super) struct Failure {
    pub(super) item: String,
    pub(super) message: String,
    pub(super) non_transactional: bool,
    /// The connection failed under way: the server may have gone past what this run
    /// knows it committed.
    pub(super) uncertain: bool,
}

impl<'a> Runner<'a> {
    /// A runner for `app_plan` on `db` (a transaction open), the lock record `guard` at
    /// hand; `committed`: each project's version as the database records it.
    pub(super) fn new(
        engine: &'a Engine,
        db: &'a mut dyn Backend,
        guard: &'a mut LockGuard,
        app_plan: &super::AppPlan,
        committed: Vec<Option<Version>>,
        schemas: super::record::SchemaWatch,
    ) -> Runner<'a> {
        Runner {
            engine,
            db,
            guard,
            mode: engine.config.transaction,
            in_transaction: true,
            // A project with nothing to do stays at what it has recorded: a failure
            // message must not say it has no version.
            current: app_plan
                .plans
                .iter()
                .zip(&committed)
                .map(|(plan, committed)| match plan.items.is_empty() {
                    true => committed.clone(),
                    false => plan.start.clone(),
                })
                .collect(),
            committed,
            applied: vec![Vec::new(); engine.app.projects.len()],
            since_commit: Vec::new(),
            done: Vec::new(),
            overtaken: None,
            in_flight: None,
            unrecorded: Vec::new(),
            install_objects: None,
            tables: guard::TableGuard::default(),
            committed_alone: None,
            implicit_commit: None,
            batched: VecDeque::new(),
            committed_before_install: None,
            schemas,
            rehearsing: false,
            rows: None,
            item_rows: Vec::new(),
        }
    }

    pub(super) fn begin(&mut self) -> Result<(), Error> {
        self.db.begin()?;
        self.in_transaction = true;
        Ok(())
    }

    pub(super) fn commit(&mut self) -> Result<(), Error> {
        failpoint!("before-commit", crate::failpoint::db_error);
        self.commit_now()
    }

    fn commit_now(&mut self) -> Result<(), Error> {
        self.db.commit()?;
        self.in_transaction = false;
        self.now_committed();
        failpoint!("after-commit", crate::failpoint::db_error);
        Ok(())
    }

    /// What the open transaction did is durable now.
    fn now_committed(&mut self) {
        self.committed.clone_from(&self.current);
        self.done.append(&mut self.since_commit);
    }

    /// Runs `prepared` (in run order), then records every project at its `targets`.
    pub(super) fn execute(
        &mut self,
        targets: &[Version],
        prepared: Vec<PreparedItem>,
    ) -> Result<(), Error> {
        let applied = self.apply_items(&prepared).and_then(|()| {
            // The items' statements are done with: the catalog rows and schema texts
            // that the last commit records take their place in memory instead of adding
            // to it (a run's peak).
            drop(prepared);
            self.finish_items(targets)
        });
        match applied {
            Ok(()) => Ok(()),
            Err(_) if self.overtaken.is_some() => {
                // Nothing failed: someone else did the rest. Roll back the empty
                // transaction and stop as a run that found an upgrade in progress does.
                if self.in_transaction {
                    self.db.rollback()?;
                    self.in_transaction = false;
                }
                Err(Error::Halted(self.overtaken.take().expect("checked")))
            }
            Err(failure) => Err(self.fail(failure)),
        }
    }

    /// Fails the run, before anything is sent, on the first statement of the whole plan
    /// that the guard refused while preparing.
    pub(super) fn refuse_prepared(&mut self, entries: &[PreparedItem]) -> Result<(), Failure> {
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
    pub(super) fn refuse_unsafe(&mut self, entries: &[PreparedItem]) -> Result<(), Failure> {
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
            uncertain: false,
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
                            project: self.engine.app.projects[entry.package].name.clone(),
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
    pub(super) fn streamed_table_refusal(
        &self,
        entry: &PreparedItem,
        script: &Streamed,
        dialect: Dialect,
    ) -> Option<LintFinding> {
        let dir = &self.engine.app.projects[entry.package].dir;
        let (handle, _) = crate::files::open(dir, &script.path).ok()?;
        sql::Statements::new(handle, dialect)
            .map_while(Result::ok)
            .find_map(|statement| {
                let refusal = self.tables.check(&statement, dialect).err()?;
                Some(LintFinding {
                    project: self.engine.app.projects[entry.package].name.clone(),
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
    pub(super) fn refuse(&mut self, entry: &PreparedItem, finding: &LintFinding) -> Failure {
        self.in_flight = Some(InFlight {
            kind: entry.item.kind,
            package: entry.package,
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
            uncertain: false,
        }
    }

    /// Runs `prepared` (in run order), then records every project at its `targets`.
    pub(super) fn apply_all(
        &mut self,
        targets: &[Version],
        prepared: &[PreparedItem],
    ) -> Result<(), Failure> {
        self.apply_items(prepared)?;
        self.finish_items(targets)
    }

    /// Runs `prepared`, in run order, each committed as its transaction mode says.
    fn apply_items(&mut self, prepared: &[PreparedItem]) -> Result<(), Failure> {
        let failure = |item: &str, message: String| Failure {
            item: item.to_string(),
            message,
            non_transactional: false,
            uncertain: false,
        };
        self.refuse_prepared(prepared)?;
        self.refuse_unsafe(prepared)?;
        let dialect = self.db.dialect();
        for (index, entry) in prepared.iter().enumerate() {
            let item = &entry.item;
            let package = entry.package;
            let project = &self.engine.app.projects[package].name;
            // A rehearsal runs every step in its one transaction (MySQL, where that cannot
            // hold, refuses such a plan before it starts).
            let alone = entry.transaction == StepTransaction::NoneUnsafe && !self.rehearsing;
            let ddl_commits =
                item.kind == ItemKind::Install && dialect == crate::sql::Dialect::MySql;
            // From here a failure is this item's, even before its first statement (the
            // commit before it, the version check after another host's commit).
            self.in_flight = Some(InFlight {
                kind: item.kind,
                package,
                from: item.from.clone(),
                to: item.to.clone(),
                checksum: entry.checksum.clone(),
                started_at: now(),
                started: Instant::now(),
            });
            if (alone || (ddl_commits && index > 0)) && self.in_transaction {
                // What ran before is committed first: a step that runs alone must not
                // take it along, and an install's DDL would commit it implicitly anyway.
                self.commit_at()
                    .map_err(|e| failure(&item.name, e.to_string()))?;
                if ddl_commits {
                    self.committed_before_install = Some(project.clone());
                }
            }
            if !alone && !self.in_transaction {
                self.begin()
                    .map_err(|e| failure(&item.name, e.to_string()))?;
                self.check_version(package, item)
                    .map_err(|e| failure(&item.name, e))?;
            }
            if !self.sent_before(index) {
                self.guard
                    .set_step(&item.name, alone)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            }
            // The item's own time starts after the commit before it.
            let started_at = now();
            let started = Instant::now();
            if let Some(flight) = self.in_flight.as_mut() {
                flight.started_at.clone_from(&started_at);
                flight.started = started;
            }
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
                package,
            };
            let mut sent = 0;
            self.rows = Some(0);
            let failed_at = |origin: String, error: String| Failure {
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
                uncertain: false,
            };
            let together = self.together(entry, &sending);
            // Recorded in the statements' round trip, where nothing else waits to be
            // recorded and the run goes on after it (the run's last commit records the
            // schemas).
            let recorded = self.sent_before(index)
                || together.is_some()
                    && index + 1 < prepared.len()
                    && !self.in_transaction
                    && self.unrecorded.is_empty()
                    && self.committed == self.current;
            let mut measured = None;
            if let Some(statements) = &together {
                let row =
                    recorded.then(|| history_row(project, entry, &started_at, Duration::ZERO));
                let record = row.map(|row| (row, item.to.as_str().into_owned()));
                measured = self
                    .send_together(prepared, index, statements, &sending, &mut sent, record)
                    .map_err(|failed| {
                        let (what, error, uncertain) = match failed {
                            Together::Statement(origin, error) => return failed_at(origin, error),
                            Together::Lost(error) => (
                                ": the connection to the database failed while it ran alone:",
                                error,
                                true,
                            ),
                            Together::Record(error) => {
                                (" could not be recorded and committed:", error, false)
                            }
                        };
                        Failure {
                            item: item.name.clone(),
                            message: format!("{} '{}'{what} {error}", item.kind.name(), item.name),
                            non_transactional: true,
                            uncertain,
                        }
                    })?;
            }
            let shared = match together {
                None => self.together_shared(entry, &sending),
                Some(_) => None,
            };
            if let Some(statements) = &shared {
                self.send_shared_together(statements, &sending, &mut sent)
                    .map_err(|(origin, error)| failed_at(origin, error))?;
            }
            let works: &[Work] = match together.is_some() || shared.is_some() {
                true => &[],
                false => &entry.work,
            };
            for work in works {
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
                        self.schemas.opaque(package);
                        match plugin::host::call(&call.step, self.db, &rules) {
                            plugin::host::Outcome::Done { statements } => {
                                sent += statements;
                                if statements > 0 {
                                    // The host does not count a plugin's changed rows.
                                    self.rows = None;
                                }
                                self.still_open_after(&call.origin, alone)
                            }
                            plugin::host::Outcome::Failed(message) => Err(message),
                        }
                        .map_err(|error| (call.origin.clone(), error))
                    }
                };
                if let Err((origin, error)) = outcome {
                    return Err(failed_at(origin, error));
                }
            }
            let duration = measured.unwrap_or_else(|| started.elapsed());
            // From here on a step that ran alone has changed the database for good: a
            // failure to record it must say so.
            let failure = |item: &str, message: String| Failure {
                item: item.to_string(),
                message,
                non_transactional: alone,
                uncertain: false,
            };
            if alone && !recorded {
                self.begin()
                    .map_err(|e| failure(&item.name, e.to_string()))?;
            }
            // Written with the commit that makes the step durable (see `commit_at`), or,
            // in a long run, one full INSERT at a time inside the transaction, so that
            // memory does not grow with the number of steps.
            if !recorded {
                self.unrecorded
                    .push(history_row(project, entry, &started_at, duration));
            }
            self.current[package] = Some(item.to.clone());
            if self.unrecorded.len() >= rows_held(dialect) {
                state::insert_history_rows(self.db, &self.unrecorded)
                    .map_err(|e| failure(&item.name, e.to_string()))?;
                self.unrecorded.clear();
            }
            let applied = Applied {
                name: item.name.clone(),
                kind: item.kind.name(),
                from: item.from.as_ref().map(ToString::to_string),
                to: item.to.to_string(),
                statements: sent,
                duration_ms: duration.as_millis() as u64,
            };
            self.since_commit.push(Committed {
                project: project.clone(),
                name: applied.name.clone(),
                kind: applied.kind,
                from: applied.from.clone(),
                to: applied.to.clone(),
            });
            self.applied[package].push(applied);
            if self.rehearsing {
                self.item_rows.push(self.rows);
            }
            let next_shares = prepared
                .get(index + 1)
                .is_some_and(|next| next.transaction == StepTransaction::Shared);
            let not_committed = |e: Error| {
                failure(
                    &item.name,
                    format!(
                        "{} '{}' could not be recorded and committed: {e}",
                        item.kind.name(),
                        item.name
                    ),
                )
            };
            if index + 1 == prepared.len() {
                // This item's commit, if it commits, is the run's last (see `record`).
                self.schemas.at_end = true;
            }
            if recorded {
                self.now_committed();
            } else if !alone && self.mode == TransactionMode::PerStep && next_shares {
                self.commit_at_and_chain().map_err(not_committed)?;
            } else if alone || self.mode == TransactionMode::PerStep {
                self.commit_at().map_err(not_committed)?;
            }
            if alone {
                self.committed_alone = Some(item.name.clone());
                // The step may have changed which tables cannot roll back.
                self.refuse_unsafe(&prepared[index + 1..])?;
            }
            failpoint!("after-step", |m| failure(&item.name, m));
        }
        Ok(())
    }

    /// After every item ran: records every project at its `targets` and commits what is
    /// still open (a rehearsal leaves it open).
    fn finish_items(&mut self, targets: &[Version]) -> Result<(), Failure> {
        let failure = |item: &str, message: String| Failure {
            item: item.to_string(),
            message,
            non_transactional: false,
            uncertain: false,
        };
        for (current, target) in self.current.iter_mut().zip(targets) {
            *current = Some(target.clone());
        }
        // Every item is done: a failure from here on (recording, the final commit) is
        // the run's, reported from the versions the database holds, not the last item's.
        self.in_flight = None;
        if self.rehearsing {
            // Left open: the rehearsal measures what the plan did, then rolls it back.
            return Ok(());
        }
        // Schemas are recorded with the run's last commit (see `record`).
        self.schemas.at_end = true;
        if !self.in_transaction
            && self.unrecorded.is_empty()
            && self.committed == self.current
            && !self.schemas.dirty
        {
            // The last step's commit recorded the targets already.
            return Ok(());
        }
        if !self.in_transaction {
            self.begin().map_err(|e| failure("record", e.to_string()))?;
        }
        // Also records the version when nothing ran (adopting a database at exactly the
        // code version).
        self.commit_at().map_err(|e| {
            failure(
                "commit",
                format!("the run could not be recorded and committed: {e}"),
            )
        })
    }

    /// Records the versions reached and commits: a recorded version is written only when
    /// it is about to become durable, not after every step.
    pub(super) fn commit_at(&mut self) -> Result<(), Error> {
        self.record()?;
        self.commit()?;
        self.install_objects = None;
        Ok(())
    }

    /// Like [`Runner::commit_at`], and opens the next transaction in the same round trip
    /// where the backend can (its lock outlives the commit); else commits only.
    pub(super) fn commit_at_and_chain(&mut self) -> Result<(), Error> {
        self.record()?;
        failpoint!("before-commit", crate::failpoint::db_error);
        if self.db.commit_and_chain()? {
            self.now_committed();
            failpoint!("after-commit", crate::failpoint::db_error);
        } else {
            self.commit_now()?;
        }
        self.install_objects = None;
        Ok(())
    }

    /// Writes the queued history rows and the version of every project that moved since
    /// the last commit, inside the open transaction.
    pub(super) fn record(&mut self) -> Result<(), Error> {
        let now = now();
        let mut rows = Some(&self.unrecorded[..]);
        for (package, current) in self.current.iter().enumerate() {
            let Some(version) = current else { continue };
            if self.committed[package].as_ref() == Some(version) {
                continue;
            }
            let project = &self.engine.app.projects[package].name;
            // History rows go with the first version written (one statement on
            // PostgreSQL).
            state::record(
                self.db,
                rows.take().unwrap_or_default(),
                project,
                &version.as_str(),
                &now,
            )?;
        }
        if let Some(rows) = rows.filter(|rows| !rows.is_empty()) {
            state::insert_history_rows(self.db, rows)?;
        }
        self.unrecorded.clear();
        if self.schemas.at_end {
            self.record_schemas()?;
        }
        Ok(())
    }

    /// Sends one statement of an item.
    pub(super) fn send(
        &mut self,
        statement: &sql::Statement,
        origin: &str,
        sending: &Sending,
    ) -> Result<(), String> {
        log::debug!("{origin}: {}", statement.text);
        failpoint!("before-statement", |m| m);
        if self.rehearsing {
            let changed = self
                .db
                .execute_counted(&statement.text)
                .map_err(|e| e.to_string())?;
            self.rows = self.rows.zip(changed).map(|(sum, rows)| sum + rows);
        } else {
            self.db
                .execute(&statement.text)
                .map_err(|e| e.to_string())?;
        }
        failpoint!("after-statement", |m| m);
        self.schemas
            .sent(sending.package, statement, sending.dialect);
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
    pub(super) fn still_open_after(&mut self, origin: &str, alone: bool) -> Result<(), String> {
        if alone || self.transaction_still_open() {
            return Ok(());
        }
        self.implicit_commit = Some(origin.to_string());
        self.in_transaction = false;
        Err("the statement committed the run's transaction implicitly; upgrader refuses to go on without a transaction (if the step must commit, mark it transaction=\"none\")".to_string())
    }

    /// Runs a script that was too large to keep, one statement at a time: its content must
    /// still be what was prepared, and each statement is judged again before it is sent.
    pub(super) fn send_streamed(
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
        let (handle, _) =
            crate::files::open(&script.dir, &script.path).map_err(|e| at_file(e.reason()))?;
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
    pub(super) fn unchanged(&self, script: &Streamed) -> Result<bool, String> {
        let (handle, _) = crate::files::open(&script.dir, &script.path).map_err(|e| e.reason())?;
        let mut own = Sha256::new();
        let mut reader = Hashing {
            inner: handle,
            own: &mut own,
            step: None,
        };
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| e.to_string())?;
        Ok(own.finalize().as_slice() == script.sha256.as_slice())
    }

    /// Whether the run's transaction is still open after a statement (an install's DDL on
    /// MySQL has already been resumed). A backend that cannot tell is taken at its word.
    pub(super) fn transaction_still_open(&mut self) -> bool {
        match self.db.still_in_transaction() {
            Ok(open) => open,
            Err(error) => {
                log::warn!("cannot tell whether the transaction is still open: {error}");
                true
            }
        }
    }

    /// In per-step mode another process could slip in between two commits; make sure the
    /// database is still where this run left it.
    pub(super) fn check_version(&mut self, package: usize, item: &PlanItem) -> Result<(), String> {
        let Some(expected) = &self.committed[package] else {
            return Ok(());
        };
        // A session lock held for the whole run (PostgreSQL, MySQL) keeps everyone out
        // between its commits; SQLite's lock is its write transaction, which ends with
        // each commit.
        if self.db.lock_outlives_commit() {
            return Ok(());
        }
        let project = &self.engine.app.projects[package].name;
        let recorded = state::read_version(self.db, project).map_err(|e| e.to_string())?;
        let recorded = recorded.and_then(|v| Version::parse(&v).ok());
        if recorded.as_ref() != Some(expected) {
            if recorded
                .as_ref()
                .is_some_and(|recorded| recorded > expected)
            {
                // Another process carried on from where this run committed: what is left
                // is done or being done, and nothing of this run failed.
                self.overtaken = Some(format!(
                    "another process upgraded {project} to {} while this run was between two commits (after {expected}); this run stopped before step '{}' with nothing left open: run again to see it current",
                    recorded.as_ref().expect("checked"),
                    item.name
                ));
            }
            // The failure message says what the database records: another process's version.
            self.committed[package].clone_from(&recorded);
            return Err(format!(
                "before step '{}': the database version changed to {} under this run (another process upgraded it)",
                item.name,
                recorded.map_or("none".into(), |v| v.to_string())
            ));
        }
        Ok(())
    }
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        if self.in_transaction {
            let _ = self.db.rollback();
        }
    }
}

/// How many history rows a run holds before writing them inside its transaction (the
/// commit writes the rest): a full INSERT's worth, so that memory does not grow with
/// the number of steps; on SQLite, up to a thousand (about 400 KB), because SQLite
/// prepares a cached statement again after every schema change, and an INSERT written
/// between a run's DDL statements is parsed anew each time (a third of the history's
/// cost in a run of a thousand CREATE TABLE steps).
fn rows_held(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 1000,
        Dialect::Postgres | Dialect::MySql => state::ROWS_PER_INSERT,
    }
}

pub(super) fn history_row(
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
        pid: crate::run_info::pid(),
        success: true,
        error: None,
        reason: None,
    }
}
