//! The PostgreSQL backend (postgres crate). DDL is transactional here, so a failed run
//! rolls back completely.
//!
//! Nothing this backend leaves on the server outlives the process, even behind a
//! transaction-pooling connection pooler (PgBouncer), where consecutive transactions of one
//! client may run on different server connections and a server connection outlives its
//! client: statements are unnamed (or prepared and closed inside one transaction), and the
//! database-level lock is a transaction-level advisory lock, taken in every transaction
//! while the lock is held, plus, for a lock that must hold between commits, a lease row in
//! `upgrader_lock` that a heartbeat renews (see [`LeaseRow`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, SimpleQueryMessage};

mod lease;
mod statements;
mod values;

use lease::*;
use statements::{Described, Repeated, Send};
use values::*;

use super::{Backend, DbError, LockSpan, ServerUrl, StatementLimit, TogetherError, Value};
use crate::sql::Dialect;

/// Takes the transaction-level upgrade lock if it is free, saying whether it did.
const XACT_TRY_LOCK: &str = "SELECT pg_try_advisory_xact_lock(8462377440787064178)";

/// Takes the transaction-level upgrade lock: released by the server when the transaction
/// ends, however it ends, so a pooled server connection never keeps it.
const XACT_LOCK: &str = "SELECT pg_advisory_xact_lock(8462377440787064178)";

/// A connection to a PostgreSQL database.
pub struct Postgres {
    client: Client,
    url: ServerUrl,
    in_transaction: bool,
    /// How long the database-level lock must hold, while it is held.
    span: Option<LockSpan>,
    /// The lease of a [`LockSpan::Session`] lock.
    lease: Option<Lease>,
    /// Parameter types the server inferred, per statement (as written, with `?`).
    described: HashMap<String, Arc<Described>>,
    /// Whether `upgrader_lock` is known to exist (it is never dropped by upgrader).
    lease_table: bool,
    /// How each locked transaction asks the server to watch for a dead client.
    client_check: ClientCheck,
    /// Whether the connection goes through a transaction-pooling pooler (it refused the
    /// startup options, as PgBouncer does).
    pooled: bool,
    /// Bookkeeping writes held back for the commit's round trip (see
    /// [`Backend::write_with_commit`]), each followed by `"; "`.
    held: String,
    /// upgrader's own statements of the open transaction, prepared once repeated.
    repeated: Repeated,
}

/// How a transaction that holds the upgrade lock asks the server to abort its statement
/// should its client die. The startup option does that for a direct connection; behind a
/// pooler the server connection is not the client's (PgBouncer refuses the option, or
/// drops it when told to ignore it), yet inside a transaction it is: so there it is set
/// in each locked transaction, in the round trip that begins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientCheck {
    /// Nothing to add: the startup option set it, or the server has no such setting
    /// (before 14).
    Done,
    /// Not known yet: the first locked transaction finds out (and sets it).
    Unknown,
    /// Set with `SET LOCAL`.
    SetLocal,
}

impl ClientCheck {
    /// The statements (each ending in `; `) that set it for the transaction just begun.
    fn sql(self) -> &'static str {
        match self {
            ClientCheck::Done => "",
            // The value before, and set: no error on a server without the setting.
            ClientCheck::Unknown => {
                "SELECT setting, set_config(name, '1000', true) FROM pg_catalog.pg_settings \
                 WHERE name = 'client_connection_check_interval'; "
            }
            ClientCheck::SetLocal => "SET LOCAL client_connection_check_interval = 1000; ",
        }
    }
}

/// Should upgrader die mid-statement, the server notices within a second and rolls back,
/// instead of finishing a long statement for a client that is gone and holding the upgrade
/// lock meanwhile. A startup option: it costs no round trip (PostgreSQL 14 and later).
const CHECK_CLIENT: &str = "-c client_connection_check_interval=1000";

/// The driver's configuration for a URL; the password never appears in an error.
pub(crate) fn config(url: &ServerUrl) -> Result<postgres::Config, DbError> {
    postgres::Config::from_str(url.expose())
        .map_err(|e| DbError::new(format!("database URL {url}: {}", url.scrub(&e.to_string()))))
}

/// A pooler (PgBouncer) refuses startup parameters it does not know, `options` among them.
fn refused_startup_option(error: &postgres::Error) -> bool {
    error.code() == Some(&SqlState::PROTOCOL_VIOLATION)
        && error
            .as_db_error()
            .is_some_and(|db| db.message().contains("startup parameter"))
}

impl Postgres {
    /// Connects; the URL's password never appears in an error.
    pub fn connect(url: &ServerUrl) -> Result<Postgres, DbError> {
        let fail = |error: postgres::Error| {
            DbError::new(format!(
                "cannot connect to {url}: {}",
                url.scrub(&db_error(error).message)
            ))
        };
        let mut config = config(url)?;
        let plain = config.clone();
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {CHECK_CLIENT}"),
            _ => CHECK_CLIENT.to_string(),
        };
        config.options(&options);
        let (client, client_check, pooled) = match config.connect(NoTls) {
            Ok(client) => (client, ClientCheck::Unknown, false),
            // A server before 14 refuses the unknown setting at startup: connect without it.
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                log::debug!("client_connection_check_interval not set: {error}");
                (
                    plain.connect(NoTls).map_err(fail)?,
                    ClientCheck::Done,
                    false,
                )
            }
            // A pooler: the locked transactions set it (see `ClientCheck`).
            Err(error) if refused_startup_option(&error) => {
                log::debug!("startup options refused (a connection pooler): {error}");
                (
                    plain.connect(NoTls).map_err(fail)?,
                    ClientCheck::Unknown,
                    true,
                )
            }
            Err(error) => return Err(fail(error)),
        };
        Ok(Postgres {
            client,
            url: url.clone(),
            in_transaction: false,
            span: None,
            lease: None,
            described: HashMap::new(),
            lease_table: false,
            client_check,
            pooled,
            held: String::new(),
            repeated: Repeated::default(),
        })
    }
}

impl Postgres {
    /// Sends the bookkeeping writes held back for the commit, before anything else is
    /// sent: the server sees everything in the order it was asked. A failure aborts the
    /// open transaction, which the caller's failure path rolls back.
    fn send_held(&mut self) -> Result<(), DbError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        self.client.batch_execute(&held).map_err(db_error)
    }

    /// Opens a transaction and takes the transaction-level upgrade lock in it, in one
    /// round trip when nobody holds it; when `read_lease` is asked for, the same round
    /// trip also reads the lease row (whose table must then exist). When another
    /// transaction holds the lock, `block` waits for it (a holder, whom others keep out
    /// only for a moment), else the answer is [`Look::Busy`], with the transaction open:
    /// a waiter must not sit on a pooled server connection the holder may need.
    fn begin_locked(&mut self, read_lease: bool, block: bool) -> Result<Look, DbError> {
        let check = self.client_check.sql();
        let sql = if read_lease {
            format!("BEGIN; {check}{XACT_TRY_LOCK}; {LEASE_ROW}")
        } else {
            format!("BEGIN; {check}{XACT_TRY_LOCK}")
        };
        // Whatever fails from here on leaves a transaction to roll back.
        self.in_transaction = true;
        let messages = self.client.simple_query(&sql).map_err(db_error)?;
        self.learn_client_check(&messages);
        let taken = messages.iter().any(|message| {
            matches!(message, SimpleQueryMessage::Row(row)
                if row.columns().first().is_some_and(|c| c.name() == "pg_try_advisory_xact_lock")
                    && row.get(0) == Some("t"))
        });
        if taken {
            return Ok(Look::Free(if read_lease {
                lease_row(&messages)
            } else {
                None
            }));
        }
        if !block {
            return Ok(Look::Busy);
        }
        self.client.batch_execute(XACT_LOCK).map_err(db_error)?;
        // What was read before the wait is out of date.
        Ok(Look::Free(if read_lease {
            self.read_lease()?
        } else {
            None
        }))
    }

    /// After the first locked transaction set the client check through pg_settings:
    /// whether the startup option had set it (or the server lacks it), or each locked
    /// transaction has to.
    fn learn_client_check(&mut self, messages: &[SimpleQueryMessage]) {
        if self.client_check != ClientCheck::Unknown {
            return;
        }
        let before = messages.iter().find_map(|message| match message {
            SimpleQueryMessage::Row(row)
                if row.columns().first().is_some_and(|c| c.name() == "setting") =>
            {
                Some(row.get(0).unwrap_or_default().to_string())
            }
            _ => None,
        });
        self.client_check = match before.as_deref() {
            Some("1000") | None => ClientCheck::Done,
            Some(_) => ClientCheck::SetLocal,
        };
    }

    /// Whether `upgrader_lock` exists (remembered once it does), inside the transaction.
    fn lease_table_exists(&mut self) -> Result<bool, DbError> {
        if !self.lease_table {
            self.lease_table = self.table_exists("upgrader_lock")?;
        }
        Ok(self.lease_table)
    }

    /// The lease row, inside a transaction holding the transaction-level lock.
    fn read_lease(&mut self) -> Result<Option<LeaseRow>, DbError> {
        if !self.lease_table_exists()? {
            return Ok(None);
        }
        let messages = self.client.simple_query(LEASE_ROW).map_err(db_error)?;
        Ok(lease_row(&messages))
    }

    /// Inside a transaction holding the transaction-level lock: writes this process's
    /// lease row (creating the table when needed), unless another live holder has one,
    /// which is returned.
    fn claim(&mut self, token: &str) -> Result<Option<LeaseRow>, DbError> {
        if !self.lease_table_exists()? {
            // Under the transaction-level lock: nobody creates it at the same time.
            self.client
                .batch_execute(CREATE_LEASE_TABLE)
                .map_err(db_error)?;
            self.lease_table = true;
        }
        if let Some(row) = self.read_lease()? {
            if row.blocks(Some(token)) {
                return Ok(Some(row));
            }
            if row.token != token {
                log::warn!(
                    "taking over the database upgrade lock of upgrader pid {} on host {}: {}",
                    row.pid,
                    row.host,
                    if row.expired {
                        "its lease expired"
                    } else {
                        "the process is gone"
                    }
                );
            }
        }
        self.client
            .execute_typed(
                "INSERT INTO upgrader_lock (id, token, host, pid, acquired_at, expires_at) \
                 VALUES (1, $1, $2, $3, clock_timestamp(), clock_timestamp() + $4 * interval '1 second') \
                 ON CONFLICT (id) DO UPDATE SET token = excluded.token, host = excluded.host, \
                 pid = excluded.pid, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
                &[
                    (&token, Type::TEXT),
                    (&this_host(), Type::TEXT),
                    (&i64::from(std::process::id()), Type::INT8),
                    (&LEASE.as_secs_f64(), Type::FLOAT8),
                ],
            )
            .map_err(db_error)?;
        Ok(None)
    }

    /// Ends the transaction a held lock was found in, says once per holder that it waits
    /// and for whom, and pauses before the next look (longer each time, up to a second).
    fn wait_for(
        &mut self,
        holder: Option<&LeaseRow>,
        waiting: &mut Waiting,
    ) -> Result<(), DbError> {
        self.rollback_quietly()?;
        let whom = holder.map_or(String::new(), |row| row.token.clone());
        if waiting.told.as_ref() != Some(&whom) {
            match holder {
                Some(row) => log::warn!(
                    "waiting for the database upgrade lock, held by upgrader pid {} on host {} since {}",
                    row.pid,
                    row.host,
                    row.since
                ),
                None => log::warn!(
                    "waiting for the database upgrade lock, held by another upgrader's transaction"
                ),
            }
            waiting.told = Some(whom);
        }
        waiting.pause = (waiting.pause * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
        std::thread::sleep(waiting.pause);
        Ok(())
    }

    /// Rolls back whatever is open; a lease row the transaction wrote is gone with it.
    fn rollback_quietly(&mut self) -> Result<(), DbError> {
        self.in_transaction = false;
        self.repeated.end();
        // `upgrader_lock` may have been created by the transaction rolled back: look again.
        self.lease_table = false;
        if let Some(lease) = self.lease.as_mut() {
            if lease.state == LeaseState::Pending {
                lease.state = LeaseState::Unclaimed;
            }
        }
        self.client.batch_execute("ROLLBACK").map_err(db_error)
    }

    /// The error for a lease the heartbeat could not keep.
    fn check_lease(&self) -> Result<(), DbError> {
        match &self.lease {
            Some(Lease {
                heartbeat: Some(heartbeat),
                ..
            }) if heartbeat.lost() => Err(DbError::new(
                "the database upgrade lock was lost: its lease in upgrader_lock could not be renewed in time (see the log)",
            )),
            _ => Ok(()),
        }
    }

    /// Once a lease row is committed: others wait for it, and the heartbeat keeps it.
    fn lease_committed(&mut self) {
        if let Some(lease) = self.lease.as_mut() {
            if lease.state == LeaseState::Pending {
                lease.state = LeaseState::Held;
                if lease.heartbeat.is_none() {
                    lease.heartbeat = Some(Heartbeat::start(self.url.clone(), lease.token.clone()));
                }
            }
        }
    }

    /// Before a commit makes a pending lease row durable: its lease counts from now, not
    /// from when the transaction wrote it.
    fn renew_pending(&mut self) -> Result<(), DbError> {
        if let Some(lease) = &self.lease {
            if lease.state == LeaseState::Pending {
                let token = lease.token.clone();
                self.client
                    .execute_typed(
                        "UPDATE upgrader_lock SET expires_at = clock_timestamp() + $2 * interval '1 second' \
                         WHERE token = $1",
                        &[(&token, Type::TEXT), (&LEASE.as_secs_f64(), Type::FLOAT8)],
                    )
                    .map_err(db_error)?;
            }
        }
        Ok(())
    }
}

impl Backend for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str) -> Result<(), DbError> {
        self.send_held()?;
        self.forget_if_deallocated(sql);
        // The simple protocol runs any statement, including those that return rows.
        self.client.batch_execute(sql).map_err(db_error)
    }

    fn execute_counted(&mut self, sql: &str) -> Result<Option<u64>, DbError> {
        // The simple protocol's command tags carry the counts (rows a statement returns
        // are held until it ends: a rehearsal's statements rarely return many).
        self.send_held()?;
        self.forget_if_deallocated(sql);
        let messages = self.client.simple_query(sql).map_err(db_error)?;
        if super::is_select(sql) {
            return Ok(Some(0));
        }
        let mut counted = None;
        for message in messages {
            if let postgres::SimpleQueryMessage::CommandComplete(rows) = message {
                *counted.get_or_insert(0) += rows;
            }
        }
        Ok(counted)
    }

    fn execute_params(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        self.forget_if_deallocated(sql);
        self.run_typed(sql, values, false, |client, _, sql, typed| {
            client.execute_typed(sql, typed)
        })
    }

    fn execute_own(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        self.run_typed(sql, values, true, |client, how, sql, typed| match how {
            Send::Once => client.execute_typed(sql, typed),
            Send::Prepared(statement) => client.execute(statement, &statements::values(typed)),
        })
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        self.forget_if_deallocated(sql);
        let rows = self.run_typed(sql, values, false, |client, _, sql, typed| {
            client.query_typed(sql, typed)
        })?;
        rows.iter()
            .map(|row| (0..row.len()).map(|index| read(row, index)).collect())
            .collect()
    }

    fn query_texts(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let texts: Option<Vec<Option<&str>>> = values
            .iter()
            .map(|value| match value {
                Value::Text(text) => Some(Some(text.as_str())),
                Value::Null => Some(None),
                _ => None,
            })
            .collect();
        let Some(texts) = texts else {
            return self.query(sql, values);
        };
        self.send_held()?;
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = texts
            .iter()
            .map(|text| (text as &(dyn ToSql + Sync), Type::TEXT))
            .collect();
        let numbered = numbered(sql);
        let how = self
            .repeated
            .send(
                &mut self.client,
                self.in_transaction,
                &numbered,
                &vec![Type::TEXT; typed.len()],
            )
            .map_err(db_error)?;
        let rows = match how {
            Send::Once => self.client.query_typed(&numbered, &typed),
            Send::Prepared(statement) => self.client.query(statement, &statements::values(&typed)),
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|row| (0..row.len()).map(|index| read(row, index)).collect())
            .collect()
    }

    fn execute_together(&mut self, statements: &[&str]) -> Result<(), TogetherError> {
        const SAVEPOINT: &str = "SAVEPOINT upgrader_together;\n";
        // A new line before each `;`: a statement may end in a line comment.
        const BETWEEN: &str = "\n;\n";
        self.send_held()
            .map_err(|error| TogetherError::Failed(error, None))?;
        for sql in statements {
            self.forget_if_deallocated(sql);
        }
        let batch = format!("{SAVEPOINT}{}", statements.join(BETWEEN));
        let Err(error) = self.client.batch_execute(&batch) else {
            return Ok(());
        };
        let position = error.as_db_error().and_then(|db| match db.position() {
            Some(postgres::error::ErrorPosition::Original(at)) => Some(*at as usize),
            _ => None,
        });
        let error = db_error(error);
        if self
            .client
            .batch_execute("ROLLBACK TO SAVEPOINT upgrader_together")
            .is_ok()
        {
            return Err(TogetherError::Undone(error));
        }
        // No savepoint: the server refused the whole text before running any of it (a
        // statement that does not parse). Its position (in characters, from 1) says which.
        let at = position.and_then(|position| {
            let mut start = SAVEPOINT.chars().count();
            statements.iter().position(|sql| {
                let end = start + sql.chars().count() + BETWEEN.len();
                let inside = (start..end).contains(&(position - 1));
                start = end;
                inside
            })
        });
        Err(TogetherError::Failed(error, at))
    }

    fn sends_shared_together(&self) -> bool {
        true
    }

    fn execute_texts(&mut self, sql: &str, values: &[Value]) -> Result<(), DbError> {
        self.query_texts(sql, values).map(drop)
    }

    fn write_with_commit(&mut self, sql: &str, values: &[Value]) -> Result<(), DbError> {
        match super::holding(&self.held, self.in_transaction, sql, values, literal) {
            super::Holding::Now => self.execute_params(sql, values).map(drop),
            super::Holding::AfterSending(text) => {
                self.send_held()?;
                self.held = text;
                Ok(())
            }
            super::Holding::Append(text) => {
                self.held.push_str(&text);
                Ok(())
            }
        }
    }

    fn lock(&mut self, span: LockSpan) -> Result<(), DbError> {
        self.send_held()?;
        match (self.span, span) {
            (Some(LockSpan::Session), _) | (Some(LockSpan::Transaction), LockSpan::Transaction) => {
                return Ok(())
            }
            (None, LockSpan::Transaction) => {
                if self.in_transaction {
                    // The open transaction takes it now; later ones in `begin`.
                    self.client.batch_execute(XACT_LOCK).map_err(db_error)?;
                    if let Some(holder) = self.read_lease()?.filter(|row| row.blocks(None)) {
                        return Err(held_by(&holder));
                    }
                }
                self.span = Some(LockSpan::Transaction);
                return Ok(());
            }
            _ => {}
        }
        // A lock that outlives commits: a lease row, written under the transaction-level
        // lock (so nobody else writes or reads it meanwhile) and renewed by a heartbeat.
        let token = new_token();
        if self.in_transaction {
            // Widening: this transaction holds the transaction-level lock already when the
            // span was Transaction (and `begin` found no other holder); take it otherwise.
            if self.span.is_none() {
                self.client.batch_execute(XACT_LOCK).map_err(db_error)?;
            }
            if let Some(holder) = self.claim(&token)? {
                return Err(held_by(&holder));
            }
            self.lease = Some(Lease {
                token,
                state: LeaseState::Pending,
                heartbeat: None,
            });
            self.span = Some(LockSpan::Session);
            return Ok(());
        }
        let mut waiting = Waiting::default();
        loop {
            let look = self.begin_locked(false, false);
            let claimed = match look {
                Ok(Look::Free(_)) => self.claim(&token),
                Ok(Look::Busy) => {
                    self.wait_for(None, &mut waiting)?;
                    continue;
                }
                Err(error) => Err(error),
            };
            match claimed {
                Ok(None) => break,
                Ok(Some(holder)) => self.wait_for(Some(&holder), &mut waiting)?,
                Err(error) => {
                    let _ = self.rollback_quietly();
                    return Err(error);
                }
            }
        }
        self.lease = Some(Lease {
            token,
            state: LeaseState::Pending,
            heartbeat: None,
        });
        self.span = Some(LockSpan::Session);
        self.in_transaction = false;
        self.repeated.end();
        if let Err(error) = self.client.batch_execute("COMMIT") {
            self.lease = None;
            self.span = None;
            return Err(db_error(error));
        }
        self.lease_committed();
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), DbError> {
        self.send_held()?;
        self.span = None;
        let Some(mut lease) = self.lease.take() else {
            return Ok(());
        };
        // Stopped first, so that no renewal races the delete.
        drop(lease.heartbeat.take());
        if lease.state == LeaseState::Unclaimed {
            return Ok(());
        }
        self.client
            .execute_typed(
                "DELETE FROM upgrader_lock WHERE token = $1",
                &[(&lease.token, Type::TEXT)],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.send_held()?;
        self.repeated.end();
        let Some(span) = self.span else {
            self.in_transaction = true;
            return self.client.batch_execute("BEGIN").map_err(db_error);
        };
        self.check_lease()?;
        let mut waiting = Waiting::default();
        loop {
            let unclaimed = self
                .lease
                .as_ref()
                .map(|lease| (lease.state == LeaseState::Unclaimed).then(|| lease.token.clone()));
            let result = match (span, unclaimed) {
                // This process's committed lease keeps other holders out; the
                // transaction-level lock keeps out those who only take that, and they
                // only ever hold it for a moment.
                (LockSpan::Session, Some(None)) => self.begin_locked(false, true).map(|_| None),
                // Its lease row was rolled back with the transaction that wrote it.
                (LockSpan::Session, Some(Some(token))) => match self.begin_locked(false, false) {
                    Ok(Look::Free(_)) => {
                        let claimed = self.claim(&token);
                        if let (Ok(None), Some(lease)) = (&claimed, self.lease.as_mut()) {
                            lease.state = LeaseState::Pending;
                        }
                        claimed.map(|holder| holder.map(Some))
                    }
                    Ok(Look::Busy) => Ok(Some(None)),
                    Err(error) => Err(error),
                },
                // A transaction-long lock: nobody may hold a lease meanwhile.
                _ => {
                    let known = self.lease_table;
                    match self.begin_locked(known, false) {
                        Ok(Look::Free(row)) => if known { Ok(row) } else { self.read_lease() }
                            .map(|row| row.filter(|row| row.blocks(None)).map(Some)),
                        Ok(Look::Busy) => Ok(Some(None)),
                        Err(error) => Err(error),
                    }
                }
            };
            match result {
                Ok(None) => return Ok(()),
                Ok(Some(holder)) => self.wait_for(holder.as_ref(), &mut waiting)?,
                Err(error) => {
                    let _ = self.rollback_quietly();
                    return Err(error);
                }
            }
        }
    }

    fn commit(&mut self) -> Result<(), DbError> {
        if let Err(error) = self.renew_pending() {
            let _ = self.rollback();
            return Err(error);
        }
        self.in_transaction = false;
        self.repeated.end();
        // The held bookkeeping goes in the commit's round trip.
        let held = std::mem::take(&mut self.held);
        let sent = if held.is_empty() {
            self.client.batch_execute("COMMIT")
        } else {
            self.client.batch_execute(&format!("{held}COMMIT"))
        };
        if let Err(error) = sent {
            if !held.is_empty() {
                // A held write failed: the transaction is aborted but still open.
                if let Err(rollback) = self.client.batch_execute("ROLLBACK") {
                    log::debug!("rollback after a failed commit: {rollback}");
                }
            }
            // A lease row the transaction wrote did not commit with it.
            if let Some(lease) = self.lease.as_mut() {
                if lease.state == LeaseState::Pending {
                    lease.state = LeaseState::Unclaimed;
                }
            }
            return Err(db_error(error));
        }
        self.lease_committed();
        Ok(())
    }

    fn lock_outlives_commit(&self) -> bool {
        // Held by a lease row between transactions (a transaction-long lock is not).
        self.span != Some(LockSpan::Transaction)
    }

    fn commit_and_chain(&mut self) -> Result<bool, DbError> {
        if self.span != Some(LockSpan::Session)
            || self.lease.as_ref().map(|l| l.state) != Some(LeaseState::Held)
        {
            // The next transaction has to look for a lease or write its own: see `begin`.
            return Ok(false);
        }
        self.check_lease()?;
        // The lease keeps other holders out between the two transactions; the chained
        // one takes the transaction-level lock again, in the same round trip.
        let check = self.client_check.sql();
        // A held write that fails leaves the transaction open (aborted): the caller's
        // failure path rolls it back.
        let held = std::mem::take(&mut self.held);
        self.repeated.end();
        self.client
            .batch_execute(&format!("{held}COMMIT AND CHAIN; {check}{XACT_LOCK}"))
            .map_err(db_error)?;
        self.in_transaction = true;
        Ok(true)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        self.held.clear();
        if !self.in_transaction {
            return Ok(());
        }
        self.rollback_quietly()
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        // A catalog look-up by name: its cost does not grow with the number of tables, as
        // information_schema's does. One round trip: no separate prepare.
        self.send_held()?;
        let rows = self
            .client
            .query_typed(
                "SELECT to_regclass(quote_ident(current_schema()) || '.' || quote_ident($1)) IS NOT NULL",
                &[(&name, Type::TEXT)],
            )
            .map_err(db_error)?;
        Ok(rows
            .first()
            .and_then(|row| row.try_get::<_, bool>(0).ok())
            .unwrap_or(false))
    }

    fn query_own_table(
        &mut self,
        table: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Vec<Vec<Value>>>, DbError> {
        if self.in_transaction {
            // A failed query would abort the transaction: ask first.
            if !self.table_exists(table)? {
                return Ok(None);
            }
            return self.query(sql, params).map(Some);
        }
        // Outside a transaction a failed query costs nothing: one round trip, whose
        // "undefined table" answer means there is none. Typed text parameters spare the
        // prepare round trip of a statement sent once per process.
        self.send_held()?;
        let texts: Vec<Option<&str>> = params
            .iter()
            .map(|value| match value {
                Value::Text(text) => Ok(Some(text.as_str())),
                Value::Null => Ok(None),
                other => Err(DbError::new(format!(
                    "query_own_table binds text only, not {}",
                    other.kind_name()
                ))),
            })
            .collect::<Result<_, _>>()?;
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = texts
            .iter()
            .map(|text| (text as &(dyn ToSql + Sync), Type::TEXT))
            .collect();
        match self.client.query_typed(&numbered(sql), &typed) {
            Ok(rows) => rows
                .iter()
                .map(|row| (0..row.len()).map(|index| read(row, index)).collect())
                .collect::<Result<_, _>>()
                .map(Some),
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
            Err(error) => Err(db_error(error)),
        }
    }

    fn still_in_transaction(&mut self) -> Result<bool, DbError> {
        // PostgreSQL never commits implicitly inside a transaction block: COMMIT in a DO
        // block or a procedure called inside one is an error, and the guard refuses
        // transaction control in scripts. What we opened is still open.
        Ok(self.in_transaction)
    }

    fn pooled(&self) -> bool {
        self.pooled
    }

    fn max_statement_bytes(&mut self) -> Result<Option<StatementLimit>, DbError> {
        // The server refuses a protocol message of 1 GiB or more (MaxAllocSize - 1).
        Ok(Some(StatementLimit {
            bytes: (1 << 30) - 1,
            setting: "PostgreSQL's 1 GiB query size limit",
        }))
    }

    fn table_schemas(
        &mut self,
        only: Option<&[String]>,
    ) -> Result<Vec<crate::schema::TableFacts>, DbError> {
        crate::db::catalog::postgres(self, only)
    }
    fn user_table_count(&mut self) -> Result<u64, DbError> {
        // The relation kinds information_schema.tables lists: tables, partitioned
        // tables, views, foreign tables.
        let rows = self.query(
            "SELECT count(*) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'f') \
             AND c.relname NOT LIKE 'upgrader\\_%'",
            &[],
        )?;
        Ok(super::first_count(&rows))
    }
}

/// The server's own message (with detail and position when it gives them), not the
/// driver's generic "db error".
/// A value as a PostgreSQL literal: strings as escape strings (`E'…'`, read the same
/// whatever `standard_conforming_strings` says); `false` for what has no exact literal
/// here (floats, bytes).
fn literal(value: &Value, out: &mut String) -> bool {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Bool(v) => out.push_str(if *v { "TRUE" } else { "FALSE" }),
        Value::Int(v) => out.push_str(&v.to_string()),
        Value::Float(_) | Value::Blob(_) => return false,
        Value::Text(text) => {
            out.push_str("E'");
            for c in text.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('\'');
        }
    }
    true
}

fn db_error(error: postgres::Error) -> DbError {
    match error.as_db_error() {
        Some(db) => {
            let mut message = db.message().to_string();
            if let Some(detail) = db.detail() {
                message.push_str(&format!(" ({detail})"));
            }
            let code = db.code().code().to_string();
            DbError::new(message).with_code(code).with_source(error)
        }
        None => DbError::new(&error).with_source(error),
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A lock still held when the connection goes (an error path that skipped
        // `unlock`): free it now rather than when its lease runs out.
        if self.lease.is_some() {
            if self.in_transaction {
                let _ = self.rollback_quietly();
            }
            if let Err(error) = self.unlock() {
                log::debug!("releasing the database upgrade lock: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, pid: i64, expired: bool) -> LeaseRow {
        LeaseRow {
            token: "theirs".into(),
            host: host.into(),
            pid,
            since: "2026-01-01 00:00:00+00".into(),
            expired,
        }
    }

    /// Who waits for a lease row: anyone but its holder, until it expires or (on the same
    /// host) its process is gone.
    #[test]
    fn a_lease_blocks_until_it_expires_or_its_process_is_gone() {
        let me = i64::from(std::process::id());
        let gone = i64::from(u32::MAX); // above any pid_max
        assert!(row("elsewhere", me, false).blocks(None));
        assert!(row("elsewhere", gone, false).blocks(Some("mine")));
        assert!(!row("elsewhere", me, true).blocks(None));
        assert!(row(this_host(), me, false).blocks(None));
        assert!(!row(this_host(), gone, false).blocks(None));
        assert!(!row(this_host(), me, false).blocks(Some("theirs")));
        assert!(process_alive(me));
    }

    #[test]
    fn finds_placeholders_outside_quotes() {
        assert!(has_placeholder("SELECT ?"));
        assert!(!has_placeholder("SELECT '?', \"?\" -- ?\n"));
        assert!(!has_placeholder("SELECT 1"));
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(new_token(), new_token());
    }

    /// The advisory lock key every upgrader process takes ("upgrader" in ASCII), as the
    /// lock statements spell it.
    #[test]
    fn the_lock_statements_take_the_advisory_key() {
        let key: i64 = 0x7570_6772_6164_6572;
        assert!(XACT_LOCK.ends_with(&format!("({key})")));
        assert!(XACT_TRY_LOCK.ends_with(&format!("({key})")));
    }

    #[test]
    fn numbers_placeholders() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = ? WHERE c = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE c = $3"
        );
        assert_eq!(
            numbered("SELECT '?', \"a?\", 'it''s ?', ? -- ?\n, $$ ? $$, $x$ ? $x$, /* ? */ ?, $1"),
            "SELECT '?', \"a?\", 'it''s ?', $1 -- ?\n, $$ ? $$, $x$ ? $x$, /* ? */ $2, $1"
        );
        assert_eq!(numbered("ünï ? 'ö?'"), "ünï $1 'ö?'");
    }
}
