//! Sending a `transaction="none"` step's statements together: on MySQL, where a run of
//! such steps otherwise waits on the server once per statement, its plain statements go
//! in one multi-statement round trip, and the first that fails is still named.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use super::prepare::{Prepared, PreparedItem};
use super::runner::{history_row, Runner, Sending};
use super::TransactionMode;
use crate::db::state::HistoryRow;
use crate::db::{AloneError, AloneStep, DbError, TogetherError};
use crate::manifest::StepTransaction;
use crate::plan::ItemKind;
use crate::sql::{self, Dialect};

impl Runner<'_> {
    /// The statements of a step that runs alone, when they can go to the server in one
    /// round trip (MySQL; a step of several plain DDL and DML statements): a run of
    /// `transaction="none"` steps then waits on the server once per step for them, as the
    /// `mysql` client does, not once per statement. Not under failpoints (the crash tests
    /// stop between statements) nor for a rehearsal or an install.
    pub(super) fn together<'p>(
        &self,
        entry: &'p PreparedItem,
        sending: &Sending,
    ) -> Option<Vec<&'p Prepared>> {
        if !sending.alone
            || sending.install
            || self.rehearsing
            || entry.work.len() < 2
            || !self.db.sends_together()
            || crate::failpoint::armed()
        {
            return None;
        }
        entry
            .work
            .iter()
            .map(|work| {
                work.sql()
                    .filter(|p| one_result(&p.statement.text, sending.dialect))
            })
            .collect()
    }

    /// Sends [`Runner::together`]'s statements of the item at `index`, and with them,
    /// when given, the step's history row and version: then the steps after it that can
    /// be sent the same way go with it (see [`Runner::send_recorded`]). An item sent with
    /// an earlier one takes the outcome the server gave it then. Returns the step's time
    /// when the backend measured it.
    pub(super) fn send_together(
        &mut self,
        prepared: &[PreparedItem],
        index: usize,
        statements: &[&Prepared],
        sending: &Sending,
        sent: &mut usize,
        record: Option<(HistoryRow, String)>,
    ) -> Result<Option<Duration>, Together> {
        let outcome = match (self.sent_before(index), record) {
            (true, _) => match self.batched.pop_front() {
                Some(batched) => {
                    if let (Some(flight), Some((at, instant))) =
                        (self.in_flight.as_mut(), batched.started)
                    {
                        // A step that failed began when the server says, not now.
                        flight.started_at = at;
                        flight.started = instant;
                    }
                    batched.outcome
                }
                None => Ok(None),
            },
            (false, Some((row, version))) => {
                self.send_recorded(prepared, index, statements, row, version)
            }
            (false, None) => self
                .db
                .execute_alone(&logged_texts(statements))
                .map(|()| None)
                .map_err(|(index, error)| AloneError::Statement(index, error)),
        };
        let done = match &outcome {
            Ok(_) | Err(AloneError::Record(_) | AloneError::Lost(_)) => statements.len(),
            Err(AloneError::Statement(index, _)) => *index,
        };
        *sent += statements.len().min(done + 1);
        for prepared in &statements[..done] {
            self.schemas
                .sent(sending.package, &prepared.statement, sending.dialect);
        }
        outcome.map_err(|failed| match failed {
            AloneError::Statement(index, error) => {
                Together::Statement(statements[index].origin.clone(), error.to_string())
            }
            AloneError::Record(error) => Together::Record(error.to_string()),
            AloneError::Lost(error) => Together::Lost(error.to_string()),
        })
    }

    /// Whether the item at `index` went to the server with an earlier one.
    pub(super) fn sent_before(&self, index: usize) -> bool {
        self.batched.front().is_some_and(|b| b.index == index)
    }

    /// Sends the step at `index`, recorded, and with it the steps after it that run
    /// alone and can be sent together, each recorded, up to the run's last (whose commit
    /// records the schemas): one round trip for them all on MySQL, where the server runs
    /// them in order, commits each one's record right after it and stops at the first
    /// failure. The outcomes of the steps after the first wait in `batched` for the items'
    /// turn; the lock file names the steps in flight.
    fn send_recorded(
        &mut self,
        prepared: &[PreparedItem],
        index: usize,
        statements: &[&Prepared],
        row: HistoryRow,
        version: String,
    ) -> Result<Option<Duration>, AloneError> {
        /// Past these, a round trip saved is nothing beside the steps' own work.
        const MOST_STEPS: usize = 64;
        const MOST_BYTES: usize = 1 << 20;
        let mut bytes = text_bytes(statements);
        let started_at = row.started_at.clone();
        let mut steps = vec![AloneStep {
            statements: logged_texts(statements),
            row,
            version,
        }];
        let projects = &self.engine.app.projects;
        for (at, entry) in prepared.iter().enumerate().skip(index + 1) {
            if at + 1 == prepared.len()
                || steps.len() == MOST_STEPS
                || entry.transaction != StepTransaction::NoneUnsafe
            {
                break;
            }
            let sending = Sending {
                dialect: self.db.dialect(),
                ddl_commits: false,
                alone: true,
                install: entry.item.kind == ItemKind::Install,
                transaction: entry.transaction,
                package: entry.package,
            };
            let Some(more) = self.together(entry, &sending) else {
                break;
            };
            bytes += text_bytes(&more);
            if bytes > MOST_BYTES {
                break;
            }
            let project = &projects[entry.package].name;
            steps.push(AloneStep {
                statements: logged_texts(&more),
                row: history_row(project, entry, &started_at, Duration::ZERO),
                version: entry.item.to.as_str().into_owned(),
            });
        }
        if steps.len() > 1 {
            let last = &prepared[index + steps.len() - 1].item.name;
            let label = format!("{} … {last}", prepared[index].item.name);
            if let Err(error) = self.guard.set_step(&label, true) {
                // The lock names the first step only: send that one alone.
                log::warn!("cannot update the lock file: {error}");
                steps.truncate(1);
            }
        }
        let sent = (SystemTime::now(), Instant::now());
        let run = self.db.execute_alone_recorded(&steps);
        let failed_at = index + run.took.len();
        let failed = run.failed.map(|failed| match failed {
            AloneError::Lost(error) if steps.len() > 1 => AloneError::Lost(DbError::new(format!(
                "{error}; the steps from '{}' to '{}' were sent together, so the server may have run and recorded any of them: upgrader_version and upgrader_history say how far it went",
                prepared[failed_at].item.name,
                prepared[index + steps.len() - 1].item.name
            ))),
            failed => failed,
        });
        let mut outcomes: VecDeque<Batched> = run
            .took
            .into_iter()
            .map(Ok)
            .chain(failed.map(Err))
            .enumerate()
            .map(|(k, outcome)| Batched {
                index: index + k,
                started: match (outcome.is_err(), run.failed_after) {
                    (true, Some(after)) => {
                        let at = humantime::format_rfc3339_millis(sent.0 + after).to_string();
                        Some((at, sent.1 + after))
                    }
                    _ => None,
                },
                outcome,
            })
            .collect();
        let first = outcomes
            .pop_front()
            .map_or(Ok(None), |batched| batched.outcome);
        self.batched = outcomes;
        first
    }
}

/// The outcome of an item sent with an earlier one, for its turn (see
/// [`Runner::send_recorded`]).
pub(super) struct Batched {
    /// The item's index in the run.
    index: usize,
    /// Its time, or how it failed.
    outcome: Result<Option<Duration>, AloneError>,
    /// When it began (this host's clock, and as an instant), for a step that failed.
    started: Option<(String, Instant)>,
}

/// The bytes of `statements`' texts.
fn text_bytes(statements: &[&Prepared]) -> usize {
    statements.iter().map(|p| p.statement.text.len()).sum()
}

impl Runner<'_> {
    /// The statements of a step that shares the transaction, when they can go to the
    /// server in one round trip: PostgreSQL, per-step runs (the step's transaction holds
    /// that step alone, see [`crate::db::Backend::execute_together`]), a step of several
    /// plain statements. A per-step run then waits on the server once per step for them,
    /// not once per statement. Not under failpoints nor for a rehearsal or an install.
    pub(super) fn together_shared<'p>(
        &self,
        entry: &'p PreparedItem,
        sending: &Sending,
    ) -> Option<Vec<&'p Prepared>> {
        /// Beyond this, a round trip saved is nothing beside the statements' own size.
        const MOST_BYTES: usize = 1 << 20;
        if sending.alone
            || sending.install
            || self.rehearsing
            || self.mode != TransactionMode::PerStep
            || entry.work.len() < 2
            || !self.db.sends_shared_together()
            || crate::failpoint::armed()
        {
            return None;
        }
        let statements: Vec<&Prepared> = entry
            .work
            .iter()
            .map(|work| {
                work.sql()
                    .filter(|p| one_result(&p.statement.text, sending.dialect))
            })
            .collect::<Option<_>>()?;
        let bytes: usize = statements.iter().map(|p| p.statement.text.len()).sum();
        (bytes <= MOST_BYTES).then_some(statements)
    }

    /// Sends [`Runner::together_shared`]'s statements; when they fail, sends them again
    /// one at a time (nothing of them remained), so that the one that fails is named.
    pub(super) fn send_shared_together(
        &mut self,
        statements: &[&Prepared],
        sending: &Sending,
        sent: &mut usize,
    ) -> Result<(), (String, String)> {
        let texts = logged_texts(statements);
        let undone = match self.db.execute_together(&texts) {
            Ok(()) => {
                *sent += statements.len();
                for prepared in statements {
                    self.schemas
                        .sent(sending.package, &prepared.statement, sending.dialect);
                }
                let last = &statements[statements.len() - 1].origin;
                return self
                    .still_open_after(last, false)
                    .map_err(|error| (last.clone(), error));
            }
            Err(TogetherError::Failed(error, at)) => {
                let index = at.unwrap_or(0);
                *sent += index + 1;
                return Err((statements[index].origin.clone(), error.to_string()));
            }
            Err(TogetherError::Undone(error)) => error,
        };
        for prepared in statements {
            *sent += 1;
            self.send(&prepared.statement, &prepared.origin, sending)
                .map_err(|error| (prepared.origin.clone(), error))?;
        }
        // One at a time they ran (an error that comes and goes, a limit on the whole
        // text): what the database holds is what a run of them one at a time leaves.
        log::warn!(
            "{}: the step's statements failed when sent together ({undone}) and ran when sent one at a time",
            statements[0].origin
        );
        Ok(())
    }
}

/// How [`Runner::send_together`] failed.
pub(super) enum Together {
    /// The statement from this origin failed, with this message; those before it ran.
    Statement(String, String),
    /// Every statement ran, and recording the step failed.
    Record(String),
    /// The connection failed under way: the server may have gone on.
    Lost(String),
}

/// The statements' texts, each logged (at debug level) with its origin as it is sent.
fn logged_texts<'p>(statements: &[&'p Prepared]) -> Vec<&'p str> {
    statements
        .iter()
        .map(|prepared| {
            log::debug!("{}: {}", prepared.origin, prepared.statement.text);
            prepared.statement.text.as_str()
        })
        .collect()
}

/// Whether a statement may share a round trip with others (see [`Runner::together`]):
/// its first word is a plain DDL or DML keyword, so it gives one result (never a
/// procedure's several), and no `;` stands between its tokens (no compound body the
/// server would read differently from the splitter).
fn one_result(text: &str, dialect: Dialect) -> bool {
    const PLAIN: [&str; 9] = [
        "CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "INSERT", "UPDATE", "DELETE", "REPLACE",
    ];
    let mut tokens = sql::significant_tokens(text, dialect);
    tokens
        .next()
        .is_some_and(|first| PLAIN.iter().any(|word| first.eq_ignore_ascii_case(word)))
        && tokens.all(|token| token != ";")
}

#[cfg(test)]
mod tests {
    use super::one_result;
    use crate::sql::Dialect::MySql;

    #[test]
    fn only_plain_statements_of_one_result_go_together() {
        assert!(one_result("CREATE TABLE t (id INT)", MySql));
        assert!(one_result("insert into t values ('a; b')", MySql));
        assert!(one_result(
            "-- a note; with a semicolon\nALTER TABLE t ADD c INT",
            MySql
        ));
        assert!(!one_result("CALL fill()", MySql));
        assert!(!one_result("SELECT 1", MySql));
        assert!(!one_result("EXECUTE s", MySql));
        assert!(!one_result(
            "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END",
            MySql
        ));
        assert!(!one_result("", MySql));
    }
}
