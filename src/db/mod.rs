//! Database access: the small [`Backend`] trait every server implements, URL parsing, and
//! (in [`state`]) upgrader's own tables. Only this module knows SQL dialects.

pub mod mysql;
pub mod postgres;
pub mod sqlite;
pub mod state;

use std::fmt;
use std::path::{Path, PathBuf};

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
fn first_count(rows: &[Vec<Value>]) -> u64 {
    rows.first()
        .and_then(|row| row.first())
        .and_then(Value::as_int)
        .map_or(0, |count| count.max(0) as u64)
}

/// A database error, with the statement that caused it when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    /// The driver's message.
    pub message: String,
}

impl DbError {
    /// Wraps any driver error.
    pub fn new(error: impl fmt::Display) -> Self {
        DbError {
            message: error.to_string(),
        }
    }
}

/// The primitives the engine needs from a database. The workflow is written once, in the
/// engine, over these.
pub trait Backend {
    /// The dialect statements are split and guarded in.
    fn dialect(&self) -> Dialect;

    /// Runs one statement from a script or plugin; rows it returns are read and dropped.
    fn execute(&mut self, sql: &str) -> Result<(), DbError>;

    /// Runs one statement with bound parameters (`?` placeholders); returns rows changed.
    fn execute_params(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;

    /// Runs a query with bound parameters (`?` placeholders) and returns all its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError>;

    /// Opens a transaction; the first one of a connection also takes the database-level
    /// upgrade lock, held until the connection closes, so that only one process (on any
    /// host) upgrades at a time.
    fn begin(&mut self) -> Result<(), DbError>;

    /// Commits the open transaction.
    fn commit(&mut self) -> Result<(), DbError>;

    /// Rolls back the open transaction, if any.
    fn rollback(&mut self) -> Result<(), DbError>;

    /// Whether a table of this name exists.
    fn table_exists(&mut self, name: &str) -> Result<bool, DbError>;

    /// How many tables exist that are not upgrader's own.
    fn user_table_count(&mut self) -> Result<u64, DbError>;

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

/// Where the database is, parsed from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`.
    Postgres(String),
    /// `mysql://…` or `mariadb://…`.
    MySql(String),
}

/// A URL upgrader cannot use.
#[derive(Debug, thiserror::Error)]
#[error("database URL {shown}: {reason}")]
pub struct UrlError {
    /// The URL with any password hidden.
    pub shown: String,
    /// What is wrong.
    pub reason: String,
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `postgres://…`, `mysql://…` or `mariadb://…`.
    pub fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
        let fail = |reason: &str| UrlError {
            shown: redact(url),
            reason: reason.into(),
        };
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| fail("expected sqlite://PATH, postgres://… or mysql://…"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split('?').next().unwrap_or(path);
                if path.is_empty() {
                    return Err(fail("no file path after sqlite://"));
                }
                Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => Ok(DatabaseUrl::Postgres(url.to_string())),
            "mysql" | "mariadb" => Ok(DatabaseUrl::MySql(url.to_string())),
            _ => Err(fail(
                "unknown scheme; expected sqlite://, postgres://, mysql:// or mariadb://",
            )),
        }
    }

    /// The default for a project: `sqlite://DIR/upgrader.db`.
    pub fn default_for(project_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(project_dir.join("upgrader.db"))
    }

    /// Opens a connection for a run (creating an SQLite file if needed).
    pub fn connect(&self) -> Result<Box<dyn Backend>, DbError> {
        match self {
            DatabaseUrl::Sqlite(path) => Ok(Box::new(sqlite::Sqlite::open(path)?)),
            DatabaseUrl::Postgres(url) => Ok(Box::new(postgres::Postgres::connect(url)?)),
            DatabaseUrl::MySql(url) => Ok(Box::new(mysql::MySql::connect(url)?)),
        }
    }

    /// Opens a connection for reading only; `None` when an SQLite file does not exist yet
    /// (a database nobody has touched), so that reports never create files.
    pub fn connect_read_only(&self) -> Result<Option<Box<dyn Backend>>, DbError> {
        match self {
            DatabaseUrl::Sqlite(path) => Ok(
                sqlite::Sqlite::open_read_only(path)?.map(|db| Box::new(db) as Box<dyn Backend>)
            ),
            _ => self.connect().map(Some),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) | DatabaseUrl::MySql(url) => f.write_str(&redact(url)),
        }
    }
}

/// Removes the URL's password from a driver message, should a driver ever echo it.
pub(crate) fn scrub_password(message: &str, url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
    {
        Some((_, password)) if !password.is_empty() => message.replace(password, "***"),
        _ => message.to_string(),
    }
}

/// Hides the password in `scheme://user:password@host/…`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://rel/x.db").unwrap(),
            DatabaseUrl::Sqlite("rel/x.db".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("mariadb://u@h/db").unwrap(),
            DatabaseUrl::MySql(_)
        ));
        assert!(DatabaseUrl::parse("oracle://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact("postgres://me:secret@h:5432/db"),
            "postgres://me:***@h:5432/db"
        );
        assert_eq!(
            scrub_password("bad password s3cret", "postgres://me:s3cret@h/db"),
            "bad password ***"
        );
        let error = DatabaseUrl::parse("foo://me:secret@h/db").unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }
}
