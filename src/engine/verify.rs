//! `verify`: every project's recorded table schemas and applied steps' checksums against
//! the live database and the manifest (read-only: no lock file, no write, upgrader's
//! tables never created); `verify --accept` and `--repair-version`, which write under the
//! lock with a history row of kind `accept` that keeps the reason.
//!
//! Accept rows are named after what they accept: `table:NAME` (checksum: the accepted
//! fingerprint, none for an accepted drop), `step:NAME` (checksum: the step's checksum
//! as the manifest has it now, which later comparisons use), `version:V` (a repaired
//! version). The reason is kept in the row's `error` column and shown as `reason`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::prepare::{Checksums, Preparing};
use super::session::Session;
use super::{host, nest, now, Engine, Project};
use crate::db::state::{self, HistoryRow, SchemaRow};
use crate::db::{Backend, LockSpan};
use crate::error::Error;
use crate::lock::{self, LockRecord};
use crate::schema::{self, Recorded, TableCheck, TableSchema, TableState};
use crate::version::Version;

/// What `verify` found for one project (the root's report carries its packages' in
/// `packages`, as `status` does).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The project.
    pub project: String,
    /// The version the database records for it.
    pub db_version: Option<String>,
    /// Whether any schema of the project is recorded (false: nothing to compare yet).
    pub recorded: bool,
    /// Whether anything differs: a table changed or missing, an applied step edited.
    pub drift: bool,
    /// Every recorded table: unchanged, changed (with a diff) or missing.
    pub tables: Vec<TableCheck>,
    /// Every applied step whose checksum was recorded.
    pub steps: Vec<StepCheck>,
    /// The packages' reports (root only, when there are packages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<VerifyReport>>,
}

impl VerifyReport {
    /// Whether this project or any of its packages drifted.
    pub fn any_drift(&self) -> bool {
        self.drift || self.packages.iter().flatten().any(VerifyReport::any_drift)
    }

    /// This report and its packages', root first.
    pub fn all(&self) -> Vec<&VerifyReport> {
        let mut all = vec![self];
        all.extend(self.packages.iter().flatten());
        all
    }
}

/// An applied step's recorded checksum against the manifest's.
#[derive(Debug, Clone, Serialize)]
pub struct StepCheck {
    /// The step's name.
    pub name: String,
    /// Unchanged, changed (edited since it was applied) or removed (no longer in the
    /// manifest; reported, not drift).
    pub state: StepState,
    /// The checksum recorded when it was applied (or accepted).
    pub recorded: String,
    /// The checksum of the step as the manifest has it now.
    pub manifest: Option<String>,
}

/// What `verify` found for a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// As applied.
    Unchanged,
    /// Edited since it was applied.
    Changed,
    /// Applied, but no longer in the manifest.
    Removed,
}

/// What `verify --accept` or `--repair-version` recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    /// One line per thing accepted: `table orders of shop at 1.4.0`, ….
    pub accepted: Vec<String>,
    /// The reason recorded with it.
    pub reason: String,
}

/// What the database holds that verify compares: read once for every project.
struct Observed {
    versions: Vec<Option<Version>>,
    /// Per project.
    records: Vec<Vec<Recorded>>,
    live: Vec<TableSchema>,
    history: Vec<HistoryRow>,
}

impl Engine {
    fn observe(&self, db: &mut dyn Backend) -> Result<Observed, Error> {
        let projects = &self.app.projects;
        let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
        let mut versions = Vec::with_capacity(names.len());
        for (project, text) in names.iter().zip(state::read_versions(db, &names)?) {
            versions.push(match text {
                Some(text) => Some(Version::parse(&text).map_err(|e| {
                    Error::Config(format!(
                        "the database records {text} for project {project}: {e}"
                    ))
                })?),
                None => None,
            });
        }
        let mut records = vec![Vec::new(); names.len()];
        for (project, record) in state::read_schema_records(db, &names, true, None)? {
            if let Some(index) = names.iter().position(|n| *n == project) {
                records[index].push(record);
            }
        }
        let dialect = db.dialect();
        let facts = db.table_schemas(None)?;
        let live = facts
            .iter()
            .map(|facts| schema::schema_of(dialect, facts))
            .collect();
        let history = state::read_histories(db, &names)?;
        Ok(Observed {
            versions,
            records,
            live,
            history,
        })
    }

    /// Compares every project's recorded schemas and applied steps with the database and
    /// the manifest (read-only: no lock file, no write; a database without upgrader's
    /// tables has nothing recorded).
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let reports = match self.url.connect_read_only()? {
            Some(mut db) => {
                let observed = self.observe(db.as_mut())?;
                let dialect = db.dialect();
                (0..self.app.projects.len())
                    .map(|index| self.verify_project(index, &observed, dialect))
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => self
                .app
                .projects
                .iter()
                .map(|project| VerifyReport {
                    project: project.name.clone(),
                    db_version: None,
                    recorded: false,
                    drift: false,
                    tables: Vec::new(),
                    steps: Vec::new(),
                    packages: None,
                })
                .collect(),
        };
        Ok(nest(reports, |root, packages| {
            root.packages = Some(packages)
        }))
    }

    fn verify_project(
        &self,
        index: usize,
        observed: &Observed,
        dialect: crate::sql::Dialect,
    ) -> Result<VerifyReport, Error> {
        let project = &self.app.projects[index];
        let db_version = observed.versions[index].as_ref();
        let tables = schema::compare(db_version, &observed.records[index], &observed.live);
        let steps = self.check_steps(project, &observed.history, dialect)?;
        let drift = tables.iter().any(|t| t.state != TableState::Unchanged)
            || steps.iter().any(|s| s.state == StepState::Changed);
        Ok(VerifyReport {
            project: project.name.clone(),
            db_version: db_version.map(ToString::to_string),
            recorded: !observed.records[index].is_empty(),
            drift,
            tables,
            steps,
            packages: None,
        })
    }

    /// The checksum each applied step of `project` is held to: its newest successful
    /// `step` row's, or a newer `accept` row's.
    fn applied_checksums<'h>(
        project: &str,
        history: &'h [HistoryRow],
    ) -> BTreeMap<String, &'h str> {
        let mut applied = BTreeMap::new();
        for row in history.iter().filter(|r| r.project == project && r.success) {
            let name = match row.kind.as_str() {
                "step" => row.name.as_str(),
                "accept" => match row.name.strip_prefix("step:") {
                    Some(name) => name,
                    None => continue,
                },
                _ => continue,
            };
            if let Some(checksum) = &row.checksum {
                applied.insert(name.to_string(), checksum.as_str());
            }
        }
        applied
    }

    fn check_steps(
        &self,
        project: &Project,
        history: &[HistoryRow],
        dialect: crate::sql::Dialect,
    ) -> Result<Vec<StepCheck>, Error> {
        let mut checks = Vec::new();
        for (name, recorded) in Self::applied_checksums(&project.name, history) {
            let Some(now) = Self::manifest_checksums(project, &name, dialect)? else {
                checks.push(StepCheck {
                    name,
                    state: StepState::Removed,
                    recorded: recorded.to_string(),
                    manifest: None,
                });
                continue;
            };
            let state = if recorded == now.tokens || recorded == now.legacy {
                StepState::Unchanged
            } else {
                StepState::Changed
            };
            checks.push(StepCheck {
                name,
                state,
                recorded: recorded.to_string(),
                manifest: Some(now.tokens),
            });
        }
        Ok(checks)
    }

    /// The checksums of the manifest's step `name` as it is now (its scripts read and
    /// split, plugins never loaded); `None` when the manifest has no such step.
    fn manifest_checksums(
        project: &Project,
        name: &str,
        dialect: crate::sql::Dialect,
    ) -> Result<Option<Checksums>, Error> {
        let Some(step) = project.manifest.steps.iter().find(|s| s.name == name) else {
            return Ok(None);
        };
        let mut preparing = Preparing::new(dialect, None);
        preparing.resolve_plugins = false;
        let (from, to) = (step.from.to_string(), step.to.to_string());
        let (_, checksums) = Self::work_of(
            project,
            name,
            Some((&from, &to)),
            &step.actions,
            &mut preparing,
            &mut |_| {},
        )?;
        Ok(Some(checksums))
    }

    /// Takes the upgrade lock for `verify --accept`/`--repair-version` (refused while it
    /// is not free) and opens a transaction with upgrader's tables in it.
    fn accept_session(&self) -> Result<Session, Error> {
        let lock_path = self.writable_and_free()?;
        let record = LockRecord::by_this_process(lock::Operation::Verify);
        let mut session = Session::begin(
            &lock_path,
            record,
            self.url.connect()?,
            LockSpan::Transaction,
        )?;
        let db = session.db();
        db.begin()?;
        state::ensure_in_transaction(db, &now())?;
        Ok(session)
    }

    /// An `accept` history row for `project`.
    fn accept_row(
        project: &str,
        name: String,
        version: &str,
        checksum: Option<String>,
        reason: &str,
    ) -> HistoryRow {
        let at = now();
        HistoryRow {
            id: None,
            project: project.to_string(),
            kind: "accept".into(),
            name,
            from_version: Some(version.to_string()),
            to_version: version.to_string(),
            checksum,
            started_at: at.clone(),
            finished_at: at,
            duration_ms: 0,
            host: host(),
            pid: i64::from(std::process::id()),
            success: true,
            error: Some(reason.to_string()),
            reason: None,
        }
    }

    /// `verify --accept NAME… --reason TEXT`: each NAME is a table (its live schema is
    /// recorded at its project's version; a missing one is recorded as dropped) or an
    /// applied step (its checksum as the manifest has it now becomes the one compared),
    /// each with an `accept` history row keeping the reason. Under the lock, in one
    /// transaction; a NAME that is neither refuses the whole and changes nothing.
    pub fn accept(&self, names: &[String], reason: &str) -> Result<Accepted, Error> {
        let reason = given_reason(reason, "the change is accepted")?;
        let mut session = self.accept_session()?;
        let db = session.db();
        let observed = self.observe(db)?;
        let dialect = db.dialect();
        let mut rows = Vec::new();
        let mut schema_rows: Vec<(usize, SchemaRow)> = Vec::new();
        let mut accepted = Vec::new();
        for name in names {
            let table_owner = observed
                .records
                .iter()
                .position(|list| list.iter().any(|r| r.table == *name));
            let live = observed.live.iter().find(|t| t.name == *name);
            let step_owner = self.app.projects.iter().position(|p| {
                Self::applied_checksums(&p.name, &observed.history).contains_key(name.as_str())
            });
            let (index, what) = match (table_owner, live, step_owner) {
                (Some(index), _, _) => (index, "table"),
                (None, Some(_), None) => (0, "table"),
                (None, _, Some(index)) => (index, "step"),
                (None, None, None) => {
                    return Err(Error::Refused(format!(
                        "{name} is neither a table of the database nor an applied step of the application; nothing was accepted"
                    )))
                }
            };
            let project = &self.app.projects[index];
            let Some(version) = observed.versions[index].as_ref().map(ToString::to_string) else {
                return Err(Error::Refused(format!(
                    "the database records no version for {}; run it first; nothing was accepted",
                    project.name
                )));
            };
            if what == "table" {
                schema_rows.push((
                    index,
                    SchemaRow {
                        table: name.clone(),
                        text: live.map(|t| t.text.clone()),
                        fingerprint: live.map(|t| t.fingerprint.clone()),
                    },
                ));
                rows.push(Self::accept_row(
                    &project.name,
                    format!("table:{name}"),
                    &version,
                    live.map(|t| t.fingerprint.clone()),
                    reason,
                ));
                accepted.push(format!("table {name} of {} at {version}", project.name));
            } else {
                let Some(now) = Self::manifest_checksums(project, name, dialect)? else {
                    return Err(Error::Refused(format!(
                        "step {name} of {} is no longer in the manifest; there is no new checksum to accept; nothing was accepted",
                        project.name
                    )));
                };
                rows.push(Self::accept_row(
                    &project.name,
                    format!("step:{name}"),
                    &version,
                    Some(now.tokens),
                    reason,
                ));
                accepted.push(format!("step {name} of {}", project.name));
            }
        }
        let stamp = now();
        for (index, row) in schema_rows {
            let version = observed.versions[index]
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            state::write_schema_rows(
                db,
                &self.app.projects[index].name,
                &version,
                &[row],
                &stamp,
                true,
            )?;
        }
        state::insert_history_rows(db, &rows)?;
        db.commit()?;
        session.end();
        Ok(Accepted {
            accepted,
            reason: reason.to_string(),
        })
    }

    /// `verify --repair-version --reason TEXT`: for each project whose tables all match
    /// the schemas recorded at one earlier version V (a table restored from an old
    /// backup) while the database records a later one, records V, with an `accept` row
    /// keeping the reason, so that the next `run` upgrades from V. Refused, saying why,
    /// when no project can be repaired (its tables disagree, or match no recorded
    /// version); then nothing changes.
    pub fn repair_version(&self, reason: &str) -> Result<Accepted, Error> {
        let reason = given_reason(reason, "the version is corrected")?;
        let mut session = self.accept_session()?;
        let db = session.db();
        let observed = self.observe(db)?;
        let mut repairs = Vec::new();
        let mut refusals = Vec::new();
        for (index, project) in self.app.projects.iter().enumerate() {
            let Some(version) = &observed.versions[index] else {
                continue;
            };
            let tables = schema::compare(Some(version), &observed.records[index], &observed.live);
            if tables.iter().all(|t| t.state == TableState::Unchanged) {
                continue;
            }
            match schema::consistent_version(version, &observed.records[index], &observed.live) {
                Ok(found) => repairs.push((index, version.clone(), found)),
                Err(why) => refusals.push(format!("{}: {why}", project.name)),
            }
        }
        if !refusals.is_empty() || repairs.is_empty() {
            let why = if refusals.is_empty() {
                "every table matches the schema recorded for the version the database records: nothing to repair".to_string()
            } else {
                refusals.join("; ")
            };
            return Err(Error::Refused(format!(
                "cannot repair the recorded version: {why}; nothing was changed"
            )));
        }
        let stamp = now();
        let mut accepted = Vec::new();
        let mut rows = Vec::new();
        for (index, from, to) in repairs {
            let name = &self.app.projects[index].name;
            state::write_version(db, name, &to.to_string(), &stamp)?;
            let mut row =
                Self::accept_row(name, format!("version:{to}"), &to.to_string(), None, reason);
            row.from_version = Some(from.to_string());
            rows.push(row);
            accepted.push(format!("{name}: version {to} recorded instead of {from}"));
        }
        state::insert_history_rows(db, &rows)?;
        db.commit()?;
        session.end();
        Ok(Accepted {
            accepted,
            reason: reason.to_string(),
        })
    }
}

/// `--reason` trimmed, refused when empty: `accept` and `repair_version` keep it in the
/// history, so it must say why `what`.
fn given_reason<'r>(reason: &'r str, what: &str) -> Result<&'r str, Error> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::Config(format!("--reason must say why {what}")));
    }
    Ok(reason)
}
