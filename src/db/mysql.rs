//! The MySQL and MariaDB backend (mysql crate). DDL commits implicitly here, so the
//! guard refuses it inside the run's transaction, and only InnoDB tables roll back, so
//! the engine refuses statements that touch any other engine. The database-level lock
//! is `GET_LOCK`, named after the schema so that two schemas on one server do not wait
//! for each other, and held until the run's connection closes.

use mysql::consts::CapabilityFlags;
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, Params};

use super::{redact, scrub_password, Backend, DbError, DbObject, ForeignTable, Value};
use crate::sql::Dialect;

/// How long a second process waits for the upgrade lock before giving up; upgrades
/// can be long.
const LOCK_WAIT_SECONDS: u32 = 3600;

/// The upgrade lock's name: per schema (lock names are server-wide), within the
/// 64-character limit however long the schema's name.
const LOCK_NAME: &str = "CONCAT('upgrader:', SHA1(DATABASE()))";

/// A connection to a MySQL or MariaDB schema.
pub struct MySql {
    conn: Conn,
    in_transaction: bool,
    lock_held: bool,
}

impl MySql {
    /// Connects (`mysql://` or `mariadb://`); the URL's password never appears in an error.
    pub fn connect(url: &str) -> Result<MySql, DbError> {
        let fail = |message: String| {
            DbError::new(format!(
                "cannot connect to {}: {}",
                redact(url),
                scrub_password(&message, url)
            ))
        };
        let driver_url = match url.split_once("://") {
            Some((_, rest)) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let opts = Opts::from_url(&driver_url).map_err(|e| fail(e.to_string()))?;
        if opts.get_db_name().is_none_or(str::is_empty) {
            return Err(fail(
                "the URL names no database; add it as the path, e.g. mysql://user@host/app".into(),
            ));
        }
        // Without CLIENT_FOUND_ROWS an UPDATE that sets a row to the values it already has
        // reports 0 rows, which `write_version` would take for a missing row. The socket
        // lookup is off unless asked for: it costs a round trip at every start and can
        // change which account the server matches.
        let prefer_socket = driver_url.contains("prefer_socket=true");
        let builder = OptsBuilder::from_opts(opts)
            .additional_capabilities(CapabilityFlags::CLIENT_FOUND_ROWS)
            .prefer_socket(prefer_socket);
        let conn = Conn::new(builder).map_err(|e| fail(e.to_string()))?;
        Ok(MySql {
            conn,
            in_transaction: false,
            lock_held: false,
        })
    }

    /// `GET_LOCK`'s answer: 1 taken, 0 timed out, none on error.
    fn get_lock(&mut self, wait_seconds: u32) -> Result<Option<i64>, DbError> {
        let rows = self.query(
            &format!("SELECT GET_LOCK({LOCK_NAME}, {wait_seconds})"),
            &[],
        )?;
        Ok(rows
            .first()
            .and_then(|row| row.first())
            .and_then(Value::as_int))
    }
}

fn to_mysql(value: &Value) -> mysql::Value {
    match value {
        Value::Null => mysql::Value::NULL,
        Value::Bool(v) => mysql::Value::Int(i64::from(*v)),
        Value::Int(v) => mysql::Value::Int(*v),
        Value::Float(v) => mysql::Value::Double(*v),
        Value::Text(v) => mysql::Value::Bytes(v.as_bytes().to_vec()),
        Value::Blob(v) => mysql::Value::Bytes(v.clone()),
    }
}

fn from_mysql(value: mysql::Value) -> Value {
    match value {
        mysql::Value::NULL => Value::Null,
        mysql::Value::Bytes(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Value::Text(text),
            Err(error) => Value::Blob(error.into_bytes()),
        },
        mysql::Value::Int(v) => Value::Int(v),
        mysql::Value::UInt(v) => Value::Int(i64::try_from(v).unwrap_or(i64::MAX)),
        mysql::Value::Float(v) => Value::Float(v.into()),
        mysql::Value::Double(v) => Value::Float(v),
        other => Value::Text(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

fn params(values: &[Value]) -> Params {
    if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values.iter().map(to_mysql).collect())
    }
}

impl Backend for MySql {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }

    fn execute(&mut self, sql: &str) -> Result<(), DbError> {
        // The text protocol runs any statement; result sets are read and dropped.
        self.conn.query_drop(sql).map_err(db_error)
    }

    fn execute_params(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        self.conn.exec_drop(sql, params(values)).map_err(db_error)?;
        Ok(self.conn.affected_rows())
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let rows: Vec<mysql::Row> = self.conn.exec(sql, params(values)).map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|row| row.unwrap().into_iter().map(from_mysql).collect())
            .collect())
    }

    fn begin(&mut self) -> Result<(), DbError> {
        if !self.lock_held {
            // A session lock, held from the run's first transaction until its connection
            // closes (however the process ends): across the implicit commits of an
            // install's DDL and the commits of `--transaction per-step`.
            if self.get_lock(0)? != Some(1) {
                let holder = self.query(&format!("SELECT IS_USED_LOCK({LOCK_NAME})"), &[])?;
                log::warn!(
                    "waiting for the database upgrade lock, held by connection {} (another upgrader;                      or one that was killed, whose last statement the server is still finishing)",
                    holder
                        .first()
                        .and_then(|row| row.first())
                        .and_then(Value::as_int)
                        .map_or_else(|| "?".to_string(), |id| id.to_string())
                );
                match self.get_lock(LOCK_WAIT_SECONDS)? {
                    Some(1) => {}
                    Some(_) => {
                        return Err(DbError::new(format!(
                            "another process has held the upgrade lock on this database for over {LOCK_WAIT_SECONDS} s"
                        )))
                    }
                    None => return Err(DbError::new("GET_LOCK failed for the upgrade lock")),
                }
            }
            self.lock_held = true;
        }
        self.conn
            .query_drop("START TRANSACTION")
            .map_err(db_error)?;
        self.in_transaction = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.in_transaction = false;
        self.conn.query_drop("COMMIT").map_err(db_error)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if self.in_transaction {
            self.in_transaction = false;
            self.conn.query_drop("ROLLBACK").map_err(db_error)?;
        }
        Ok(())
    }

    fn resume_after_implicit_commit(&mut self) -> Result<(), DbError> {
        self.conn
            .query_drop("START TRANSACTION")
            .map_err(db_error)?;
        self.in_transaction = true;
        Ok(())
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let rows = self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
            &[Value::from(name)],
        )?;
        Ok(!rows.is_empty())
    }

    fn user_table_count(&mut self) -> Result<u64, DbError> {
        let rows = self.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() \
             AND table_name NOT LIKE 'upgrader\\_%'",
            &[],
        )?;
        Ok(super::first_count(&rows))
    }

    fn foreign_tables(&mut self) -> Result<Vec<ForeignTable>, DbError> {
        let rows = self.query(
            "SELECT table_schema, table_name, engine, table_schema = DATABASE() \
             FROM information_schema.tables WHERE table_type = 'BASE TABLE' \
             AND engine IS NOT NULL AND engine <> 'InnoDB' \
             AND table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = |index: usize| row[index].as_text().unwrap_or_default().to_string();
                ForeignTable {
                    schema: text(0),
                    name: text(1),
                    engine: text(2),
                    in_current_schema: row[3].as_int() == Some(1),
                }
            })
            .collect())
    }

    fn objects(&mut self) -> Result<Vec<DbObject>, DbError> {
        let rows = self.query(
            "SELECT CASE table_type WHEN 'VIEW' THEN 'VIEW' WHEN 'SEQUENCE' THEN 'SEQUENCE' \
             ELSE 'TABLE' END, table_name FROM information_schema.tables \
             WHERE table_schema = DATABASE() \
             UNION ALL SELECT routine_type, routine_name FROM information_schema.routines \
             WHERE routine_schema = DATABASE() \
             UNION ALL SELECT 'EVENT', event_name FROM information_schema.events \
             WHERE event_schema = DATABASE()",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|row| DbObject {
                kind: row[0].as_text().unwrap_or_default().to_string(),
                name: row[1].as_text().unwrap_or_default().to_string(),
            })
            .collect())
    }

    fn drop_objects(&mut self, objects: &[DbObject]) -> Result<(), DbError> {
        // Foreign keys between the dropped tables would otherwise decide the order.
        self.execute("SET SESSION foreign_key_checks = 0")?;
        let mut result = Ok(());
        // Views first: they may name the tables.
        let mut ordered: Vec<&DbObject> = objects.iter().collect();
        ordered.sort_by_key(|object| object.kind != "VIEW");
        for object in ordered {
            let sql = format!(
                "DROP {} IF EXISTS `{}`",
                object.kind,
                object.name.replace('`', "``")
            );
            if let Err(error) = self.execute(&sql) {
                result = Err(DbError::new(format!("{sql}: {error}")));
            }
        }
        self.execute("SET SESSION foreign_key_checks = 1")?;
        result
    }
}

/// The server's message with its error code, not the driver's wrapper text.
fn db_error(error: mysql::Error) -> DbError {
    match error {
        mysql::Error::MySqlError(e) => DbError::new(format!("{} (error {})", e.message, e.code)),
        other => DbError::new(other),
    }
}
