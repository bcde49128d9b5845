//! The embedded SQLite backend (rusqlite, bundled). The database-level lock is SQLite's
//! own write lock, taken with `BEGIN IMMEDIATE`.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::url::READ_ONLY_REFUSAL;
use super::{Backend, DbError, LockSpan, SqliteMode, SqliteUrl, StatementLimit, Value};
use crate::sql::Dialect;

/// How long a second writer waits for the first before giving up; upgrades can be long.
const WRITE_WAIT: Duration = Duration::from_secs(600);

/// The bundled SQLite's longest statement (its default SQLITE_MAX_SQL_LENGTH):
/// sqlite3_limit can only lower the compile-time maximum, and nothing here lowers it.
/// Known without a connection, so that a run can refuse a longer one before it opens one.
pub const STATEMENT_LIMIT: StatementLimit = StatementLimit {
    bytes: 1_000_000_000,
    setting: "SQLITE_MAX_SQL_LENGTH",
};

/// A connection to an SQLite database file.
pub struct Sqlite {
    connection: Connection,
}

impl Sqlite {
    /// Opens the database file for a run, as the URL's `mode=` allows: created if needed
    /// (the default), an existing file only (`rw`), or not at all (`ro`: a run writes).
    pub fn open(url: &SqliteUrl) -> Result<Sqlite, DbError> {
        let path = &url.path;
        let create = match url.mode {
            SqliteMode::ReadOnly => {
                return Err(DbError::new(format!(
                    "cannot open {} for the upgrade: {READ_ONLY_REFUSAL}",
                    path.display()
                )))
            }
            SqliteMode::ReadWrite => OpenFlags::empty(),
            SqliteMode::ReadWriteCreate => OpenFlags::SQLITE_OPEN_CREATE,
        };
        // Without SQLITE_OPEN_URI: a path is a path, even one that starts with "file:".
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | create;
        let connection = Connection::open_with_flags(path, flags).map_err(|e| {
            let hint = if url.mode == SqliteMode::ReadWrite && !path.exists() {
                " (mode=rw does not create it)"
            } else {
                ""
            };
            DbError::new(format!("cannot open {}: {e}{hint}", path.display()))
        })?;
        connection.busy_timeout(WRITE_WAIT).map_err(db_error)?;
        Ok(Sqlite { connection })
    }

    /// Opens an existing database file for reading; `None` when the file does not exist.
    pub fn open_read_only(path: &Path) -> Result<Option<Sqlite>, DbError> {
        if !path.exists() {
            return Ok(None);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags)
            .map_err(|e| DbError::new(format!("cannot open {}: {e}", path.display())))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(db_error)?;
        Ok(Some(Sqlite { connection }))
    }
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Bool(v) => rusqlite::types::Value::Integer(i64::from(*v)),
        Value::Int(v) => rusqlite::types::Value::Integer(*v),
        Value::Float(v) => rusqlite::types::Value::Real(*v),
        Value::Text(v) => rusqlite::types::Value::Text(v.clone()),
        Value::Blob(v) => rusqlite::types::Value::Blob(v.clone()),
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        ValueRef::Real(v) => Value::Float(v),
        ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        ValueRef::Blob(v) => Value::Blob(v.to_vec()),
    }
}

impl Backend for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str) -> Result<(), DbError> {
        let mut statement = self.connection.prepare(sql).map_err(db_error)?;
        let mut rows = statement.raw_query();
        while rows.next().map_err(db_error)?.is_some() {}
        Ok(())
    }

    fn execute_counted(&mut self, sql: &str) -> Result<Option<u64>, DbError> {
        // The connection's running total, not `changes()`: a statement that changes no
        // rows (DDL, SELECT) leaves `changes()` at the previous statement's count.
        let before = self.connection.total_changes();
        self.execute(sql)?;
        Ok(Some(self.connection.total_changes() - before))
    }

    fn execute_params(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut statement = self.connection.prepare_cached(sql).map_err(db_error)?;
        let params: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
        let changed = statement
            .execute(rusqlite::params_from_iter(params))
            .map_err(db_error)?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let mut statement = self.connection.prepare_cached(sql).map_err(db_error)?;
        let columns = statement.column_count();
        let params: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(db_error)?;
        let mut result = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(from_sql(row.get_ref(index).map_err(db_error)?));
            }
            result.push(values);
        }
        Ok(result)
    }

    fn backup_to(
        &mut self,
        dest: &std::path::Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<bool, DbError> {
        let mut copy = rusqlite::Connection::open(dest).map_err(db_error)?;
        // A read transaction on the source for the whole copy: no other connection can
        // commit meanwhile (which would make SQLite start the copy over), and the copy is
        // one consistent state however many steps it takes.
        self.connection.execute_batch("BEGIN").map_err(db_error)?;
        if let Err(error) =
            self.connection
                .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        {
            let _ = self.connection.execute_batch("ROLLBACK");
            return Err(db_error(error));
        }
        let copied = copy_pages(&self.connection, &mut copy, progress);
        let ended = self.connection.execute_batch("COMMIT").map_err(db_error);
        copied.and(ended)?;
        Ok(true)
    }

    fn restore_from(
        &mut self,
        source: &std::path::Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<bool, DbError> {
        let backup = rusqlite::Connection::open_with_flags(
            source,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_error)?;
        copy_pages(&backup, &mut self.connection, progress)?;
        Ok(true)
    }

    fn lock(&mut self, _span: LockSpan) -> Result<(), DbError> {
        // One writer at a time is SQLite's own rule: `BEGIN IMMEDIATE` in `begin` waits for
        // it. Between two commits the upgrade lock file keeps other processes out (an
        // SQLite file is shared by the processes of one host only).
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.connection
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(db_error)
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.connection.execute_batch("COMMIT").map_err(db_error)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if self.connection.is_autocommit() {
            return Ok(());
        }
        self.connection.execute_batch("ROLLBACK").map_err(db_error)
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let rows = self.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            &[Value::from(name)],
        )?;
        Ok(!rows.is_empty())
    }

    fn query_own_table(
        &mut self,
        table: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Vec<Vec<Value>>>, DbError> {
        // A failed prepare changes nothing (not even an open transaction), so the query
        // goes first and the catalog is asked only when it fails: `check` on an
        // initialised database prepares one statement instead of two. Asking the catalog
        // rather than matching SQLite's "no such table" text keeps every other failure
        // (a damaged file, a table of another shape) an error.
        match self.query(sql, params) {
            Ok(rows) => Ok(Some(rows)),
            // Another process may have created the table between the failed query and
            // the look at the catalog: then the query is asked again, and its answer (or
            // error: a table of another shape) is the one that counts.
            Err(_) if self.table_exists(table)? => self.query(sql, params).map(Some),
            Err(_) => Ok(None),
        }
    }

    fn still_in_transaction(&mut self) -> Result<bool, DbError> {
        // SQLite knows in-process: free.
        Ok(!self.connection.is_autocommit())
    }

    fn max_statement_bytes(&mut self) -> Result<Option<StatementLimit>, DbError> {
        Ok(Some(STATEMENT_LIMIT))
    }

    fn table_schemas(
        &mut self,
        only: Option<&[String]>,
    ) -> Result<Vec<crate::schema::TableFacts>, DbError> {
        super::catalog::sqlite(self, only)
    }
    fn user_table_count(&mut self) -> Result<u64, DbError> {
        let rows = self.query(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE 'upgrader\\_%' ESCAPE '\\'",
            &[],
        )?;
        Ok(super::first_count(&rows))
    }
}

/// A driver error, with SQLite's extended result code when the database gave one.
fn db_error(error: rusqlite::Error) -> DbError {
    let code = error.sqlite_error().map(|e| e.extended_code.to_string());
    let db_error = DbError::new(&error);
    let db_error = match code {
        Some(code) => db_error.with_code(code),
        None => db_error,
    };
    db_error.with_source(error)
}

/// How long a backup or restore waits for another connection to let go.
const BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Copies every page of `from` into `into` with SQLite's online backup API, a chunk at a
/// time so that `progress` hears of it (bytes done, bytes in all).
fn copy_pages(
    from: &rusqlite::Connection,
    into: &mut rusqlite::Connection,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), DbError> {
    use rusqlite::backup::{Backup, StepResult};
    // 16 MiB of 4 KiB pages per step: few enough calls to cost nothing next to the copy.
    const PAGES_PER_STEP: std::os::raw::c_int = 4096;
    let page_size: i64 = from
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(db_error)?;
    let page_size = page_size.max(0) as u64;
    let backup = Backup::new(from, into).map_err(db_error)?;
    let started = std::time::Instant::now();
    loop {
        let step = backup.step(PAGES_PER_STEP).map_err(db_error)?;
        let state = backup.progress();
        let total = state.pagecount.max(0) as u64;
        let done = total.saturating_sub(state.remaining.max(0) as u64);
        progress(done * page_size, total * page_size);
        match step {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            // Another connection holds the destination (or the source, for a restore):
            // wait for it like SQLite's own shell does, for a while.
            _ if started.elapsed() < BUSY_FOR => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                return Err(DbError::new(format!(
                    "another connection has kept the database busy for {} s; try again when it has finished",
                    BUSY_FOR.as_secs()
                )))
            }
        }
    }
}
