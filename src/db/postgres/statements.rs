//! How statements with parameters go to the server: their parameter types described
//! once per connection ([`Postgres::describe`]); and upgrader's own statements sent again
//! and again within one transaction (a long run's history INSERT every 50 steps, the
//! schema records' catalog query and INSERT for each batch of tables) prepared on their
//! second use and kept until the transaction ends, so that the server parses and
//! analyses each once, not once per use ([`Repeated`]).
//!
//! Kept only inside a transaction, and closed before it ends: dropping a statement
//! sends its close ahead of the next message, so behind a transaction-pooling pooler
//! the close reaches the server connection the prepare did, and no named statement is
//! left on a server connection another client gets next.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use postgres::types::{ToSql, Type};
use postgres::{Client, Statement};

use super::values::{has_placeholder, numbered, params, DESCRIBED_KEPT};
use super::{db_error, Postgres};
use crate::db::{DbError, Value};

/// A statement's placeholders numbered for PostgreSQL and the types the server inferred
/// for them.
pub(super) struct Described {
    numbered: String,
    types: Vec<Type>,
}

impl Postgres {
    /// The parameter types the server infers for a statement, asked once per connection:
    /// a plugin that runs the same UPDATE for every row pays the round trip once. The
    /// statement is prepared and closed inside one transaction, so that behind a pooler
    /// the close reaches the server connection the prepare did, and no named statement
    /// is left on a server connection another client gets next.
    pub(super) fn describe(&mut self, sql: &str) -> Result<Arc<Described>, DbError> {
        if let Some(described) = self.described.get(sql) {
            return Ok(described.clone());
        }
        let numbered = numbered(sql);
        let own_transaction = !self.in_transaction;
        if own_transaction {
            self.client.batch_execute("BEGIN").map_err(db_error)?;
        }
        let prepared = self.client.prepare(&numbered);
        // Dropping the statement sends its close, ahead of anything sent after it.
        let types = prepared.map(|statement| statement.params().to_vec());
        if own_transaction {
            // The statement ran nothing: nothing to commit.
            self.client.batch_execute("ROLLBACK").map_err(db_error)?;
        }
        let described = Arc::new(Described {
            numbered,
            types: types.map_err(db_error)?,
        });
        if self.described.len() >= DESCRIBED_KEPT {
            self.described.clear();
        }
        self.described.insert(sql.to_string(), described.clone());
        Ok(described)
    }

    /// A statement of a step or plugin that drops prepared statements (`DEALLOCATE`):
    /// upgrader's are closed first, and prepared anew when used again.
    pub(super) fn forget_if_deallocated(&mut self, sql: &str) {
        let first = crate::sql::significant_tokens(sql, crate::sql::Dialect::Postgres).next();
        if first.is_some_and(|word| word.eq_ignore_ascii_case("DEALLOCATE")) {
            self.repeated.end();
        }
    }

    /// Sends a statement as an unnamed one, with its values converted to the types the
    /// server inferred.
    pub(super) fn run_typed<T>(
        &mut self,
        sql: &str,
        values: &[Value],
        own: bool,
        send: impl FnOnce(
            &mut Client,
            Send<'_>,
            &str,
            &[(&(dyn ToSql + Sync), Type)],
        ) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        self.send_held()?;
        if values.is_empty() && !has_placeholder(sql) {
            return send(&mut self.client, Send::Once, sql, &[]).map_err(db_error);
        }
        let described = self.describe(sql)?;
        let boxed = params(&described.types, values)?;
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = boxed
            .iter()
            .zip(&described.types)
            .map(|(value, kind)| (value.as_ref() as &(dyn ToSql + Sync), kind.clone()))
            .collect();
        // Only upgrader's own statements are kept prepared: a plugin's may meet a table a
        // step altered meanwhile (a prepared SELECT * then fails), or want a plan for
        // each value.
        let how = self
            .repeated
            .send(
                &mut self.client,
                self.in_transaction && own,
                &described.numbered,
                &described.types,
            )
            .map_err(db_error)?;
        send(&mut self.client, how, &described.numbered, &typed).map_err(db_error)
    }
}

/// At most this many texts are remembered, and this many statements kept prepared, in a
/// transaction (upgrader repeats a handful).
const MOST_SEEN: usize = 64;
const MOST_PREPARED: usize = 16;

/// The statements of the open transaction: seen once, or prepared.
#[derive(Default)]
pub(super) struct Repeated {
    seen: HashSet<String>,
    prepared: HashMap<String, Statement>,
}

/// How a statement goes to the server.
pub(super) enum Send<'a> {
    /// As an unnamed statement, parsed for this use.
    Once,
    /// Bound to this statement, prepared in the open transaction.
    Prepared(&'a Statement),
}

impl Repeated {
    /// How `numbered` (with parameters of `types`) goes to the server: where it may be
    /// kept (`keep`: upgrader's own, in an open transaction), the first time once and
    /// from the second on prepared; else once.
    pub(super) fn send(
        &mut self,
        client: &mut Client,
        keep: bool,
        numbered: &str,
        types: &[Type],
    ) -> Result<Send<'_>, postgres::Error> {
        if !keep {
            return Ok(Send::Once);
        }
        if !self.prepared.contains_key(numbered) {
            if self.seen.len() >= MOST_SEEN || self.prepared.len() >= MOST_PREPARED {
                // Texts that change (a list of names of each length): start again.
                self.end();
            }
            if self.seen.insert(numbered.to_string()) {
                return Ok(Send::Once);
            }
            let statement = client.prepare_typed(numbered, types)?;
            self.prepared.insert(numbered.to_string(), statement);
        }
        Ok(Send::Prepared(&self.prepared[numbered]))
    }

    /// The transaction ends (or begins): every statement is closed.
    pub(super) fn end(&mut self) {
        self.seen.clear();
        self.prepared.clear();
    }
}

/// `typed`'s values, as a prepared statement's parameters.
pub(super) fn values<'v>(typed: &[(&'v (dyn ToSql + Sync), Type)]) -> Vec<&'v (dyn ToSql + Sync)> {
    typed.iter().map(|(value, _)| *value).collect()
}
