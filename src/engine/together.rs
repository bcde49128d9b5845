//! Sending a `transaction="none"` step's statements together: on MySQL, where a run of
//! such steps otherwise waits on the server once per statement, its plain statements go
//! in one multi-statement round trip, and the first that fails is still named.

use super::prepare::{Prepared, PreparedItem};
use super::runner::{Runner, Sending};
use super::TransactionMode;
use crate::db::state::HistoryRow;
use crate::db::{AloneError, TogetherError};
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

    /// Sends [`Runner::together`]'s statements, and with them, when given, the step's
    /// history row and version (see [`crate::db::Backend::execute_alone_recorded`]).
    pub(super) fn send_together(
        &mut self,
        statements: &[&Prepared],
        sending: &Sending,
        sent: &mut usize,
        record: Option<(&HistoryRow, &str)>,
    ) -> Result<(), Together> {
        let texts = logged_texts(statements);
        let outcome = match record {
            Some((row, version)) => self.db.execute_alone_recorded(&texts, row, version),
            None => self
                .db
                .execute_alone(&texts)
                .map_err(|(index, error)| AloneError::Statement(index, error)),
        };
        let done = match &outcome {
            Ok(()) | Err(AloneError::Record(_)) => statements.len(),
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
        })
    }
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
