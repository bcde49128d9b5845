//! The run's failure path: roll back what is open, say truthfully what stayed
//! committed (per-step and `transaction="none"` commits), write the failure's history
//! row outside the rolled-back work, and leave the lock failed; on MySQL, drop what a
//! failed install created (its DDL committed implicitly).

use super::runner::{Failure, Runner};
use super::{host, now, TransactionMode};
use crate::db::{state, DbObject};
use crate::error::Error;
use crate::plan::ItemKind;

impl Runner<'_> {
    /// What the database records once the open transaction is rolled back: "version X"
    /// for an application of one project, else every project's version.
    fn committed_versions(&self) -> String {
        let projects = &self.engine.app.projects;
        if projects.len() == 1 {
            return self.committed[0].as_ref().map_or_else(
                || "no version recorded".to_string(),
                |v| format!("version {v}"),
            );
        }
        projects
            .iter()
            .zip(&self.committed)
            .map(|(project, version)| match version {
                Some(version) => format!("{} {version}", project.name),
                None => format!("no version for {}", project.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rolls back, records the failure outside the rolled-back work, and leaves the lock
    /// failed.
    pub(super) fn fail(&mut self, failure: Failure) -> Error {
        // What failed had committed already (the failure came after its commit; per step,
        // the next transaction may be open, empty): nothing of it is rolled back.
        let committed_already = self.since_commit.is_empty()
            && match &self.in_flight {
                Some(flight) => self.done.last().is_some_and(|done| {
                    done.name == failure.item
                        && done.project == self.engine.app.projects[flight.package].name
                }),
                None => !self.done.is_empty(),
            };
        if self.in_transaction {
            if let Err(error) = self.db.rollback() {
                log::error!("rollback failed: {error}");
            }
            self.in_transaction = false;
        }
        let undone = self.undo_install();
        let version = self.committed_versions();
        let mut message = failure.message.clone();
        // Never claim "unchanged" when something of this run committed: a step without a
        // transaction, an implicit commit, earlier steps in per-step mode, or the very
        // commit after which the failure came.
        if failure.uncertain {
            message.push_str(&format!(
                "; the database records at least {version} (what this run knows was committed)"
            ));
        } else if failure.non_transactional {
            message.push_str(&format!(
                "; the step ran without a transaction (transaction=\"none\"), so the database may hold part of it; the database records {version}"
            ));
        } else if committed_already {
            message.push_str(&format!(
                "; it failed after its work was committed, so nothing was rolled back: the database records {version}"
            ));
        } else if let Some(origin) = &self.implicit_commit {
            message.push_str(&format!(
                "; the statement at {origin} committed the transaction implicitly, so what this run did up to it stays in the database and could not be rolled back; the database records {version}"
            ));
        } else if self.mode == TransactionMode::PerStep {
            message.push_str(&format!(
                "; this step was rolled back, steps before it stay committed, and the database records {version}"
            ));
        } else if let Some(project) = &self.committed_before_install {
            message.push_str(&format!(
                "; what ran before the install of {project} was committed before it (MySQL commits an install's DDL) and stays applied; the rest was rolled back, and the database records {version}"
            ));
        } else if let Some(step) = &self.committed_alone {
            message.push_str(&format!(
                "; the run was rolled back to where the transaction=\"none\" step '{step}' committed: it and the steps before it stay applied, and the database records {version}"
            ));
        } else if !self.done.is_empty() {
            // A commit before the failing item (ahead of a step that runs alone) made what
            // ran before it durable.
            message.push_str(&format!(
                "; this step was rolled back, what ran before it was committed and stays, and the database records {version}"
            ));
        } else {
            message.push_str(&format!(
                "; the whole run was rolled back and the database is unchanged ({version})"
            ));
        }
        if let Some(undone) = undone {
            message.push_str(&undone);
        }
        let in_flight = self.in_flight.take();
        let package = in_flight.as_ref().map_or(0, |f| f.package);
        let project = &self.engine.app.projects[package].name;
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
                None => self.committed[package].as_ref().map(ToString::to_string),
            },
            to_version: in_flight.as_ref().map_or_else(
                || self.engine.app.projects[package].code_version.to_string(),
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
            reason: None,
        };
        // What committed before the failure (per-step, `transaction="none"`) changed
        // schemas the run would have recorded at its end: recorded with the failure row,
        // at the versions that stay; if that cannot be done, the row goes alone.
        let with_schemas = !self.done.is_empty();
        if with_schemas {
            self.current.clone_from(&self.committed);
            self.schemas.at_end = true;
        }
        let mut recorded = self.write_failure(&failed_row, with_schemas);
        if with_schemas && recorded.is_err() {
            let _ = self.db.rollback();
            log::error!("could not record the schemas of what stayed committed");
            recorded = self.write_failure(&failed_row, false);
        }
        if let Err(error) = recorded {
            let _ = self.db.rollback();
            log::error!("could not record the failure in upgrader_history: {error}");
        }
        Error::StepFailed {
            project: project.clone(),
            step: failure.item,
            message,
            committed: std::mem::take(&mut self.done),
        }
    }

    /// Writes a failure's history row in a transaction of its own (with the schemas of
    /// what stayed committed, when `with_schemas`).
    fn write_failure(&mut self, row: &state::HistoryRow, with_schemas: bool) -> Result<(), Error> {
        self.db.begin()?;
        state::ensure_in_transaction(self.db, &now())?;
        if with_schemas {
            self.record_schemas()?;
        }
        state::insert_history(self.db, row)?;
        Ok(self.db.commit()?)
    }

    /// After a failed install whose DDL committed implicitly, drops what it created, so
    /// that the schema is as empty as before. Returns a sentence for the error.
    pub(super) fn undo_install(&mut self) -> Option<String> {
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
}
