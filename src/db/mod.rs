//! Database access: the small [`Backend`] trait every server implements, URL parsing, and
//! (in [`state`]) upgrader's own tables. Only this module knows SQL dialects.

pub(crate) mod catalog;
#[cfg(test)]
pub(crate) mod fake;
pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod state;
mod url;

use std::fmt;

pub use url::{DatabaseUrl, Secret, ServerUrl, SqliteMode, SqliteUrl, UrlError};

use crate::sql::Dialect;

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean (an integer 0/1 where the database has no boolean type).
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Binary data.
    Blob(Vec<u8>),
}

impl Value {
    /// The text, when the value is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The kind of value, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Text(_) => "text",
            Value::Blob(_) => "binary data",
        }
    }

    /// The integer, when the value is an integer or boolean.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(value) => Some(*value),
            Value::Bool(value) => Some(i64::from(*value)),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// The first column of the first row as a count (0 when there is none).
/// `name` quoted as an identifier of `dialect` (its quote character doubled inside).
pub(crate) fn quote_identifier(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::MySql => format!("`{}`", name.replace('`', "``")),
        Dialect::Sqlite | Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Whether a statement is a plain `SELECT`, whose count (PostgreSQL's command tag,
/// MySQL's affected rows) is of the rows it returned, not of rows it changed.
fn is_select(sql: &str) -> bool {
    let first_word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next();
    first_word.is_some_and(|word| word.eq_ignore_ascii_case("select"))
}

/// The most bookkeeping text a backend holds back for one commit: far below any server's
/// limit on a statement.
const HELD_BYTES: usize = 512 * 1024;

/// What a backend does with a [`Backend::write_with_commit`].
enum Holding {
    /// Send it now, with its values bound (outside a transaction, or no literal for a
    /// value).
    Now,
    /// Append this text (values inlined, `"; "` after) to what is held.
    Append(String),
    /// Send what is held first (it would grow too large), then hold this text.
    AfterSending(String),
}

/// Decides [`Holding`] for a write of `sql` with `values`, given the text held already.
fn holding(
    held: &str,
    in_transaction: bool,
    sql: &str,
    values: &[Value],
    literal: impl Fn(&Value, &mut String) -> bool,
) -> Holding {
    let Some(mut text) = in_transaction
        .then(|| inline_values(sql, values, literal))
        .flatten()
        .filter(|text| text.len() < HELD_BYTES)
    else {
        return Holding::Now;
    };
    text.push_str("; ");
    if held.len() + text.len() > HELD_BYTES {
        Holding::AfterSending(text)
    } else {
        Holding::Append(text)
    }
}

/// `sql` with each `?` replaced by its value as a literal, written by `literal` (which
/// says `false` for a value it has no exact literal for): a bookkeeping write held back
/// to go with a commit's round trip (see [`Backend::write_with_commit`]) is sent as text.
/// `None` when a value has no literal or the counts differ. Only for upgrader's own
/// statements, which have no `?` inside their literals.
fn inline_values(
    sql: &str,
    values: &[Value],
    literal: impl Fn(&Value, &mut String) -> bool,
) -> Option<String> {
    let mut out = String::with_capacity(sql.len() + values.len() * 24);
    let mut values = values.iter();
    let mut rest = sql;
    while let Some(at) = rest.find('?') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if !literal(values.next()?, &mut out) {
            return None;
        }
    }
    if values.next().is_some() {
        return None;
    }
    out.push_str(rest);
    Some(out)
}

fn first_count(rows: &[Vec<Value>]) -> u64 {
    rows.first()
        .and_then(|row| row.first())
        .and_then(Value::as_int)
        .map_or(0, |count| count.max(0) as u64)
}

/// [`Backend::execute_alone_recorded`] one step at a time, each in two round trips or
/// more: the statements, then the record with the times measured here.
fn alone_then_recorded<B: Backend + ?Sized>(db: &mut B, steps: &[AloneStep<'_>]) -> AloneRun {
    let mut run = AloneRun::default();
    for step in steps {
        match one_then_recorded(db, step) {
            Ok(took) => run.took.push(Some(took)),
            Err(error) => {
                run.failed = Some(error);
                break;
            }
        }
    }
    run
}

fn one_then_recorded<B: Backend + ?Sized>(
    db: &mut B,
    step: &AloneStep<'_>,
) -> Result<std::time::Duration, AloneError> {
    let started_at = crate::run_info::now();
    let started = std::time::Instant::now();
    db.execute_alone(&step.statements)
        .map_err(|(index, error)| AloneError::Statement(index, error))?;
    let took = started.elapsed();
    let finished = crate::run_info::now();
    let row = state::HistoryRow {
        started_at,
        finished_at: finished.clone(),
        duration_ms: took.as_millis() as i64,
        ..step.row.clone()
    };
    let mut record = || -> Result<(), DbError> {
        db.begin()?;
        state::record(
            db,
            std::slice::from_ref(&row),
            &row.project,
            &step.version,
            &finished,
        )?;
        db.commit()
    };
    if let Err(error) = record() {
        // A write may have gone out before the one that failed.
        if let Err(rollback) = db.rollback() {
            log::debug!("rollback after a failed record: {rollback}");
        }
        return Err(AloneError::Record(error));
    }
    Ok(took)
}

/// A step that runs alone, for [`Backend::execute_alone_recorded`]: its statements, its
/// history row (whose times the backend fills in) and the version it records.
pub struct AloneStep<'a> {
    /// The statements, each returning one result and holding no `;`.
    pub statements: Vec<&'a str>,
    /// The step's history row; `started_at` is when this host sent the steps.
    pub row: state::HistoryRow,
    /// The version the step's project reaches.
    pub version: String,
}

/// What [`Backend::execute_alone_recorded`] did: the steps that ran and were recorded, in
/// order, with each one's time when known, and how the next one failed, if one did
/// (those after it were not sent or did not run).
#[derive(Debug, Default)]
pub struct AloneRun {
    /// Each recorded step's time (the server's measure on MySQL; `None` when it could
    /// not be read back).
    pub took: Vec<Option<std::time::Duration>>,
    /// How the step after them failed.
    pub failed: Option<AloneError>,
    /// When the step that failed began, after the start of the round trip that sent it
    /// (the server's measure), when it was not the first sent.
    pub failed_after: Option<std::time::Duration>,
}

/// How [`Backend::execute_together`] failed.
#[derive(Debug)]
pub enum TogetherError {
    /// Nothing of the statements remains (rolled back to a savepoint set before them),
    /// and the error does not say which failed: send them again one at a time to learn it.
    Undone(DbError),
    /// A statement failed (the one at this index, when known; PostgreSQL refuses the
    /// whole text before running any of it when one statement does not parse), and the
    /// transaction is as a failed statement leaves it.
    Failed(DbError, Option<usize>),
}

/// How [`Backend::execute_alone_recorded`] failed.
#[derive(Debug)]
pub enum AloneError {
    /// The statement at this index failed: those before it ran, none after it, and
    /// nothing was recorded.
    Statement(usize, DbError),
    /// Every statement ran, and recording the step failed (its transaction rolled back).
    Record(DbError),
    /// The connection failed while the step's statements or record were under way: the
    /// server may have run, and recorded, this step and those sent with it after it.
    Lost(DbError),
}

/// A database error: the driver's message, the server's code for it when there is one,
/// and the driver's error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct DbError {
    /// The driver's message.
    pub message: String,
    /// The server's code: PostgreSQL's SQLSTATE (`23505`), MySQL's error number and
    /// SQLSTATE (`1062/23000`), SQLite's extended result code (`2067`).
    pub code: Option<String>,
    /// The driver's own error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl DbError {
    /// An error with this message and no code.
    pub fn new(error: impl fmt::Display) -> Self {
        DbError {
            message: error.to_string(),
            code: None,
            source: None,
        }
    }

    /// The same error, with the server's code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The same error, with the driver's error as its source.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// The primitives the engine needs from a database. The workflow is written once, in the
/// engine, over these.
pub trait Backend {
    /// The dialect statements are split and guarded in.
    fn dialect(&self) -> Dialect;

    /// Runs one statement from a script or plugin; rows it returns are read and dropped.
    fn execute(&mut self, sql: &str) -> Result<(), DbError>;

    /// [`Backend::execute`], and the rows the statement inserted, updated or deleted, where
    /// the backend can tell (`run --rehearse` reports them per step).
    fn execute_counted(&mut self, sql: &str) -> Result<Option<u64>, DbError> {
        self.execute(sql).map(|()| None)
    }

    /// Runs one statement with bound parameters (`?` placeholders); returns rows changed.
    fn execute_params(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;

    /// Runs a query with bound parameters (`?` placeholders) and returns all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError>;

    /// [`Backend::query`] of upgrader's own statement whose every parameter is text (or
    /// NULL) and is read as text (`?::name` where another type is meant): PostgreSQL
    /// binds them as `text` without asking the server for their types, a round trip
    /// and a parse of its own for a statement a process sends once (1.5 ms for the
    /// catalog's). Any other value: as [`Backend::query`].
    fn query_texts(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        self.query(sql, params)
    }

    /// [`Backend::execute_params`] of upgrader's own write, sent again and again in a run
    /// (the history INSERT of a long run): a backend may keep it prepared for the rest of
    /// the transaction (PostgreSQL), which a plugin's statement must not be.
    fn execute_own(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        self.execute_params(sql, values)
    }

    /// [`Backend::execute_params`] of upgrader's own write whose every parameter is text
    /// (see [`Backend::query_texts`]).
    fn execute_texts(&mut self, sql: &str, params: &[Value]) -> Result<(), DbError> {
        self.execute_params(sql, params).map(drop)
    }

    /// Sends the statements of a step that runs alone (`transaction="none"`), in order,
    /// stopping at the first that fails: `Err((its index, the error))`. A backend may send
    /// them in one round trip; the caller asks only for statements that return one result
    /// each and hold no `;` (no compound bodies).
    fn execute_alone(&mut self, statements: &[&str]) -> Result<(), (usize, DbError)> {
        for (index, sql) in statements.iter().enumerate() {
            self.execute(sql).map_err(|error| (index, error))?;
        }
        Ok(())
    }

    /// Like [`Backend::execute_alone`] for each of `steps` in order, and after each whose
    /// every statement succeeded, records it in a transaction of its own: its row
    /// appended to the history (with its times, measured by the backend) and its project
    /// recorded at its version; stops at the first step that fails. A backend that sends
    /// statements together sends the steps and their records in one round trip (MySQL: a
    /// run of `transaction="none"` steps then waits on the server once, not once per
    /// statement, and the server commits each record right after its step's statements,
    /// and stops at the first failure, whatever happens to this process meanwhile).
    fn execute_alone_recorded(&mut self, steps: &[AloneStep<'_>]) -> AloneRun {
        alone_then_recorded(self, steps)
    }

    /// Sends several statements of a step that shares the open transaction in one round
    /// trip, stopping at the first that fails: see [`TogetherError`] for what a failure
    /// leaves. Asked only where [`Backend::sends_shared_together`] says so, and only of a
    /// transaction that holds one step (PostgreSQL: a savepoint per step of a long
    /// transaction would overflow its cache of subtransactions, which slows every other
    /// session).
    fn execute_together(&mut self, statements: &[&str]) -> Result<(), TogetherError> {
        for (index, sql) in statements.iter().enumerate() {
            self.execute(sql)
                .map_err(|error| TogetherError::Failed(error, Some(index)))?;
        }
        Ok(())
    }

    /// Whether [`Backend::execute_together`] sends statements in one round trip.
    fn sends_shared_together(&self) -> bool {
        false
    }

    /// Whether [`Backend::execute_alone`] sends several statements in one round trip
    /// (else the caller sends them one at a time, as any other step's).
    fn sends_together(&self) -> bool {
        false
    }

    /// One of upgrader's own bookkeeping writes (`?` placeholders, none inside its
    /// literals) in the open transaction. A backend may hold it back and send it with the
    /// commit, in one round trip (MySQL: a run of `transaction="none"` steps spent four
    /// round trips per step on bookkeeping); its error then comes from the commit, and
    /// the transaction is rolled back. Anything else sent meanwhile sends it first.
    fn write_with_commit(&mut self, sql: &str, params: &[Value]) -> Result<(), DbError> {
        self.execute_params(sql, params).map(drop)
    }

    /// Takes the database-level upgrade lock, waiting for another holder, so that only one
    /// process (on any host) upgrades this database at a time. From here until
    /// [`Backend::unlock`], every transaction [`Backend::begin`] opens is exclusive among
    /// upgraders; with [`LockSpan::Session`] nobody else gets in between two of them
    /// either. The lock never outlives the process, however it ends, even behind a
    /// transaction-pooling connection pooler. Called again with [`LockSpan::Session`]
    /// (inside a transaction), it widens a transaction-long lock.
    fn lock(&mut self, span: LockSpan) -> Result<(), DbError>;

    /// Releases the lock [`Backend::lock`] took (a no-op when none is held). Outside a
    /// transaction.
    fn unlock(&mut self) -> Result<(), DbError>;

    /// Opens a transaction.
    fn begin(&mut self) -> Result<(), DbError>;

    /// Commits the open transaction.
    fn commit(&mut self) -> Result<(), DbError>;

    /// Rolls back the open transaction, if any.
    fn rollback(&mut self) -> Result<(), DbError>;

    /// Whether the database-level lock, once taken, is held until the connection closes
    /// (a session lock) rather than ending with each commit: then nobody can upgrade
    /// between two of the run's commits.
    fn lock_outlives_commit(&self) -> bool {
        false
    }

    /// Commits and opens the next transaction in one round trip (`COMMIT AND CHAIN`),
    /// returning `true`; `false` when the backend cannot, and has neither committed nor
    /// begun: the caller then commits and begins as usual. Only for a backend whose
    /// database-level lock outlives a commit (the next transaction needs no new lock).
    fn commit_and_chain(&mut self) -> Result<bool, DbError> {
        Ok(false)
    }

    /// Whether a table of this name exists.
    fn table_exists(&mut self, name: &str) -> Result<bool, DbError>;

    /// How many tables exist that are not upgrader's own.
    fn user_table_count(&mut self) -> Result<u64, DbError>;

    /// The catalog facts of every table but upgrader's own (`only`: of those named), read
    /// in a few queries whatever their number (schema records and `verify`); none where
    /// the backend cannot tell.
    fn table_schemas(
        &mut self,
        only: Option<&[String]>,
    ) -> Result<Vec<crate::schema::TableFacts>, DbError> {
        let _ = only;
        Ok(Vec::new())
    }

    /// The names of every table but upgrader's own, as [`Backend::table_schemas`] gives
    /// them (on MySQL views' names too): a run that records every table reads their facts
    /// a batch at a time.
    fn table_names(&mut self) -> Result<Vec<String>, DbError> {
        catalog::table_names(self)
    }

    /// The number of rows in each of `tables` (names as [`Backend::table_schemas`] gives
    /// them), a hundred tables to a query.
    fn count_rows(&mut self, tables: &[String]) -> Result<Vec<u64>, DbError> {
        let dialect = self.dialect();
        let mut counts = Vec::with_capacity(tables.len());
        for batch in tables.chunks(100) {
            let sql = batch
                .iter()
                .enumerate()
                .map(|(index, table)| {
                    format!(
                        "SELECT {index}, COUNT(*) FROM {}",
                        quote_identifier(dialect, table)
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let mut rows = self.query(&sql, &[])?;
            rows.sort_by_key(|row| row.first().and_then(Value::as_int));
            counts.extend(
                rows.iter()
                    .map(|row| row.get(1).and_then(Value::as_int).unwrap_or(0) as u64),
            );
        }
        Ok(counts)
    }

    /// Opens the run's transaction again after a statement committed it implicitly
    /// (MySQL DDL in `<install>`), keeping the database-level lock.
    fn resume_after_implicit_commit(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    /// Tables whose storage engine cannot roll back (MySQL's MyISAM, MEMORY, Aria, …);
    /// none on backends where every table is transactional.
    fn foreign_tables(&mut self) -> Result<Vec<ForeignTable>, DbError> {
        Ok(Vec::new())
    }

    /// The tables, views, routines and events of the current schema, for undoing a
    /// failed install where DDL cannot be rolled back. Empty where it can.
    fn objects(&mut self) -> Result<Vec<DbObject>, DbError> {
        Ok(Vec::new())
    }

    /// Drops the given objects (see [`Backend::objects`]).
    fn drop_objects(&mut self, objects: &[DbObject]) -> Result<(), DbError> {
        let _ = objects;
        Ok(())
    }

    /// Runs a query on one of upgrader's own tables, which may not exist yet: `None` when
    /// `table` does not exist. Backends answer in one round trip where a failed query
    /// costs nothing (it would abort an open PostgreSQL transaction).
    fn query_own_table(
        &mut self,
        table: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Vec<Vec<Value>>>, DbError> {
        if !self.table_exists(table)? {
            return Ok(None);
        }
        self.query(sql, params).map(Some)
    }

    /// Whether the session is still inside the transaction [`Backend::begin`] opened:
    /// `false` after a statement committed it anyway (on MySQL, an implicit commit the
    /// guard did not foresee, such as `EXECUTE` of a prepared `COMMIT`). Call it after
    /// each statement of a transactional step; it costs no round trip where the driver
    /// knows the answer. `true` on backends where no statement can end the transaction
    /// unnoticed.
    fn still_in_transaction(&mut self) -> Result<bool, DbError> {
        Ok(true)
    }

    /// Copies the whole database as it is now, upgrader's own tables included, into the
    /// new file `dest`, telling `progress` the bytes copied and the total; `Ok(false)`
    /// when this backend is backed up by an external dump tool instead (see `backup`).
    /// Outside a transaction, under the upgrade lock.
    fn backup_to(
        &mut self,
        dest: &std::path::Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<bool, DbError> {
        let _ = (dest, progress);
        Ok(false)
    }

    /// Replaces the whole database with the copy in `source` (made by
    /// [`Backend::backup_to`]), telling `progress` the bytes copied and the total;
    /// `Ok(false)` when this backend restores with an external tool instead. Outside a
    /// transaction, under the upgrade lock.
    fn restore_from(
        &mut self,
        source: &std::path::Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<bool, DbError> {
        let _ = (source, progress);
        Ok(false)
    }

    /// Whether this connection goes through a transaction-pooling connection pooler
    /// (PgBouncer), where session settings left by one client reach the next: a dump tool
    /// must not connect through it.
    fn pooled(&self) -> bool {
        false
    }

    /// The largest statement the server accepts, and the setting that says so; `None`
    /// when there is no limit worth checking. A longer statement is refused before the
    /// run starts, naming the setting.
    fn max_statement_bytes(&mut self) -> Result<Option<StatementLimit>, DbError> {
        Ok(None)
    }
}

/// How long the database-level upgrade lock must keep others out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockSpan {
    /// Only while a transaction is open: everything the holder writes is in transactions
    /// that re-read what they depend on (one run transaction; a failure row).
    Transaction,
    /// From `lock` to `unlock`, across commits: per-step runs, `transaction="none"` steps,
    /// and operations outside any transaction (backups, code installs).
    Session,
}

/// The largest statement a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimit {
    /// The largest statement, in bytes of SQL text.
    pub bytes: u64,
    /// The server setting or limit that sets it, for messages: `max_allowed_packet`, ….
    pub setting: &'static str,
}

/// A table whose storage engine does not take part in transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignTable {
    /// Its schema (database).
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its storage engine, as the server names it.
    pub engine: String,
    /// Whether the schema is the connection's own, so that unqualified names mean it.
    pub in_current_schema: bool,
}

/// A schema object that a failed install may have to drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DbObject {
    /// `TABLE`, `VIEW`, `SEQUENCE`, `PROCEDURE`, `FUNCTION` or `EVENT`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

impl DatabaseUrl {
    /// Opens a connection for a run (creating an SQLite file if the URL allows it).
    pub fn connect(&self) -> Result<Box<dyn Backend>, DbError> {
        match self {
            DatabaseUrl::Sqlite(sqlite) => Ok(Box::new(sqlite::Sqlite::open(sqlite)?)),
            DatabaseUrl::Postgres(url) => Ok(Box::new(postgres::Postgres::connect(url)?)),
            DatabaseUrl::MySql(url) => Ok(Box::new(mysql::MySql::connect(url)?)),
        }
    }

    /// Opens a connection for reading only; `None` when an SQLite file does not exist yet
    /// (a database nobody has touched), so that reports never create files.
    pub fn connect_read_only(&self) -> Result<Option<Box<dyn Backend>>, DbError> {
        match self {
            DatabaseUrl::Sqlite(sqlite) => Ok(sqlite::Sqlite::open_read_only(&sqlite.path)?
                .map(|db| Box::new(db) as Box<dyn Backend>)),
            _ => self.connect().map(Some),
        }
    }
}
