//! upgrader's own statements sent again and again within one transaction (a long run's
//! history INSERT every 50 steps, the schema records' catalog query and INSERT for each
//! batch of tables): prepared on their second use and kept until the transaction ends,
//! so that the server parses and analyses each once, not once per use.
//!
//! Kept only inside a transaction, and closed before it ends: dropping a statement
//! sends its close ahead of the next message, so behind a transaction-pooling pooler
//! the close reaches the server connection the prepare did, and no named statement is
//! left on a server connection another client gets next.

use std::collections::{HashMap, HashSet};

use postgres::types::{ToSql, Type};
use postgres::{Client, Statement};

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
    /// How `numbered` (with parameters of `types`) goes to the server in the open
    /// transaction: the first time once, from the second on prepared.
    pub(super) fn send(
        &mut self,
        client: &mut Client,
        numbered: &str,
        types: &[Type],
    ) -> Result<Send<'_>, postgres::Error> {
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
