//! The MySQL and MariaDB backend (mysql crate). DDL commits implicitly here, so the
//! guard refuses it inside the run's transaction, and only InnoDB tables roll back, so
//! the engine refuses statements that touch any other engine. The database-level lock
//! is `GET_LOCK`, named after the schema so that two schemas on one server do not wait
//! for each other, and held until the run's connection closes.

use mysql::consts::CapabilityFlags;
use mysql::prelude::Queryable;
use mysql::session_state_change::SessionStateChange;
use mysql::{Conn, Opts, OptsBuilder, Params};

use super::state;
use super::{
    AloneError, AloneRun, AloneStep, Backend, DbError, DbObject, ForeignTable, LockSpan, ServerUrl,
    StatementLimit, Value,
};
use crate::sql::Dialect;

mod recorded;
use recorded::{recorded_batch, server_times, times_list, At};

/// How long a second process waits for the upgrade lock before giving up; upgrades
/// can be long.
const LOCK_WAIT_SECONDS: u32 = 3600;

/// The upgrade lock's name: per schema (lock names are server-wide), within the
/// 64-character limit however long the schema's name.
const LOCK_NAME: &str = "CONCAT('upgrader:', SHA1(DATABASE()))";

/// The largest value `max_allowed_packet` can have: what the driver is told, so that it
/// does not ask the server itself (a round trip); the real value is read with the
/// session's setup.
const PROTOCOL_MAX_PACKET: usize = 1 << 30;

/// Run once per connection, in one round trip: transaction state tracking (so that every
/// OK packet says whether the session is still in a transaction) and the largest packet
/// the server accepts.
const SESSION_SETUP: &str =
    "SET SESSION session_track_transaction_info = 'STATE'; SELECT @@max_allowed_packet";

/// "Table doesn't exist".
const ER_NO_SUCH_TABLE: u16 = 1146;

/// "Unknown system variable".
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;

/// A connection to a MySQL or MariaDB schema.
pub struct MySql {
    conn: Conn,
    in_transaction: bool,
    lock_held: bool,
    /// The server's `max_allowed_packet`, read once at connect.
    max_allowed_packet: Option<u64>,
    /// Whether the server reports transaction state changes in its OK packets: known
    /// after the first `START TRANSACTION` (which must report one).
    tracking: Option<bool>,
    /// The transaction state the server last reported.
    server_in_transaction: bool,
    /// `begin` was asked for but `START TRANSACTION` not sent yet: it goes with the
    /// next statement, or with the commit and what [`MySql::held`] holds.
    begin_held: bool,
    /// Bookkeeping writes held back for the commit (see [`Backend::write_with_commit`]),
    /// each followed by `"; "`.
    held: String,
}

/// The driver's options for a URL (`mysql://` or `mariadb://`); errors never show a
/// password.
pub(crate) fn opts(url: &ServerUrl) -> Result<(Opts, bool), String> {
    let driver_url = match url.expose().split_once("://") {
        Some((_, rest)) => format!("mysql://{rest}"),
        None => url.expose().to_string(),
    };
    let opts = Opts::from_url(&driver_url).map_err(|e| url.scrub(&e.to_string()))?;
    if opts.get_db_name().is_none_or(str::is_empty) {
        return Err(
            "the URL names no database; add it as the path, e.g. mysql://user@host/app".into(),
        );
    }
    let prefer_socket = driver_url.contains("prefer_socket=true");
    Ok((opts, prefer_socket))
}

/// Checks a URL as the driver will read it (parameters it does not know are errors).
pub(super) fn check_url(url: &ServerUrl) -> Result<(), String> {
    opts(url).map(drop)
}

impl MySql {
    /// Connects (`mysql://` or `mariadb://`); the URL's password never appears in an error.
    pub fn connect(url: &ServerUrl) -> Result<MySql, DbError> {
        let fail = |message: String| {
            DbError::new(format!("cannot connect to {url}: {}", url.scrub(&message)))
        };
        let (opts, prefer_socket) = opts(url).map_err(fail)?;
        // Without CLIENT_FOUND_ROWS an UPDATE that sets a row to the values it already has
        // reports 0 rows, which `write_version` would take for a missing row. The socket
        // lookup is off unless asked for: it costs a round trip at every start and can
        // change which account the server matches.
        let asked_packet = opts.get_max_allowed_packet();
        let builder = OptsBuilder::from_opts(opts)
            .additional_capabilities(
                CapabilityFlags::CLIENT_FOUND_ROWS | CapabilityFlags::CLIENT_SESSION_TRACK,
            )
            .max_allowed_packet(Some(asked_packet.unwrap_or(PROTOCOL_MAX_PACKET)))
            .prefer_socket(prefer_socket);
        let mut conn = Conn::new(builder).map_err(|e| fail(db_error(e).message))?;
        let max_allowed_packet = match session_setup(&mut conn) {
            Ok(packet) => packet,
            Err(error) => {
                // A server without transaction tracking (before MySQL 5.7, MariaDB 10.3).
                log::debug!("session_track_transaction_info not set: {error}");
                conn.query_first::<Option<u64>, _>("SELECT @@max_allowed_packet")
                    .map_err(|e| fail(db_error(e).message))?
                    .flatten()
            }
        };
        Ok(MySql {
            conn,
            in_transaction: false,
            lock_held: false,
            max_allowed_packet,
            tracking: None,
            server_in_transaction: false,
            begin_held: false,
            held: String::new(),
        })
    }

    /// Sends what [`Backend::begin`] and [`Backend::write_with_commit`] held back: before
    /// any other statement, so that the server sees everything in the order it was asked.
    fn send_held(&mut self) -> Result<(), DbError> {
        if std::mem::take(&mut self.begin_held) {
            self.start_transaction()?;
        }
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            run_batch(&mut self.conn, &held).map_err(db_error)?;
            self.observe();
        }
        Ok(())
    }

    /// Ends the transaction with `end` (`COMMIT` or `COMMIT AND CHAIN`), sent in one round
    /// trip with the `START TRANSACTION` and the bookkeeping held back for it. When any of
    /// it fails, the transaction is rolled back (the server may still be in it).
    fn finish(&mut self, end: &str) -> Result<(), DbError> {
        let begin = std::mem::take(&mut self.begin_held);
        let held = std::mem::take(&mut self.held);
        self.in_transaction = false;
        let batch = match (begin, held.is_empty()) {
            // Nothing was sent in it: nothing to commit.
            (true, true) => return Ok(()),
            (true, false) => format!("START TRANSACTION; {held}{end}"),
            (false, false) => format!("{held}{end}"),
            (false, true) => end.to_string(),
        };
        if let Err(error) = run_batch(&mut self.conn, &batch) {
            if let Err(rollback) = self.conn.query_drop("ROLLBACK") {
                log::debug!("rollback after a failed commit: {rollback}");
            }
            self.observe();
            return Err(db_error(error));
        }
        self.observe();
        Ok(())
    }

    /// Reads the transaction state the last OK packet reports, if it reports one: whether
    /// it did.
    fn observe(&mut self) -> bool {
        let Ok(changes) = self.conn.session_state_changes() else {
            return false;
        };
        let mut reported = false;
        for change in &changes {
            if let Ok(SessionStateChange::TransactionState(state)) = change.decode() {
                // The first character: 'T' explicit transaction, 'I' implicit, '_' none.
                self.server_in_transaction = state.as_bytes().first().is_some_and(|c| *c != b'_');
                reported = true;
            }
        }
        reported
    }

    /// `START TRANSACTION`, learning on the first whether the server tracks the state.
    fn start_transaction(&mut self) -> Result<(), DbError> {
        self.conn
            .query_drop("START TRANSACTION")
            .map_err(db_error)?;
        self.in_transaction = true;
        let reported = self.observe();
        if self.tracking.is_none() {
            self.tracking = Some(reported && self.server_in_transaction);
            log::debug!("transaction state from OK packets: {:?}", self.tracking);
        }
        Ok(())
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

/// Runs [`SESSION_SETUP`]; returns `max_allowed_packet`.
fn session_setup(conn: &mut Conn) -> Result<Option<u64>, mysql::Error> {
    let mut result = conn.query_iter(SESSION_SETUP)?;
    let mut packet = None;
    while let Some(set) = result.iter() {
        for row in set {
            if let Some(value) = row?.get::<Option<u64>, _>(0) {
                packet = value;
            }
        }
    }
    Ok(packet)
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
        self.send_held()?;
        // The text protocol runs any statement; result sets are read and dropped, and an
        // error in a later one (a procedure that fails after a SELECT) is the statement's.
        run_batch(&mut self.conn, sql).map_err(db_error)?;
        self.observe();
        Ok(())
    }

    fn execute_counted(&mut self, sql: &str) -> Result<Option<u64>, DbError> {
        self.execute(sql)?;
        if super::is_select(sql) {
            return Ok(Some(0));
        }
        Ok(Some(self.conn.affected_rows()))
    }

    fn execute_params(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        self.send_held()?;
        self.conn.exec_drop(sql, params(values)).map_err(db_error)?;
        self.observe();
        Ok(self.conn.affected_rows())
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        self.send_held()?;
        let rows: Vec<mysql::Row> = self.conn.exec(sql, params(values)).map_err(db_error)?;
        self.observe();
        Ok(rows
            .into_iter()
            .map(|row| row.unwrap().into_iter().map(from_mysql).collect())
            .collect())
    }

    fn execute_alone(&mut self, statements: &[&str]) -> Result<(), (usize, DbError)> {
        self.send_held().map_err(|error| (0, error))?;
        // A new line before each `;`: a statement may end in a line comment.
        let joined = statements.join("\n;\n");
        let fits = self
            .max_allowed_packet
            .is_some_and(|packet| (joined.len() as u64) < packet);
        if !fits {
            for (index, sql) in statements.iter().enumerate() {
                self.execute(sql).map_err(|error| (index, error))?;
            }
            return Ok(());
        }
        let outcome = run_counted(&mut self.conn, &joined);
        self.observe();
        outcome
            .map(drop)
            .map_err(|(index, error)| (index, db_error(error)))
    }

    fn execute_alone_recorded(&mut self, steps: &[AloneStep<'_>]) -> AloneRun {
        if let Err(error) = self.send_held() {
            return AloneRun {
                failed: Some(AloneError::Statement(0, error)),
                ..AloneRun::default()
            };
        }
        let batch = recorded_batch(steps);
        let fits = batch.as_ref().is_some_and(|batch| {
            self.max_allowed_packet
                .is_some_and(|packet| (batch.text.len() as u64) < packet)
        });
        let Some(batch) = batch.filter(|_| fits) else {
            // Too big for one packet (or a value with no literal): a step at a time, each
            // in one round trip when it fits, and each starting when it is sent.
            if steps.len() > 1 {
                let mut run = AloneRun::default();
                for step in steps {
                    let step = AloneStep {
                        statements: step.statements.clone(),
                        row: state::HistoryRow {
                            started_at: crate::run_info::now(),
                            ..step.row.clone()
                        },
                        version: step.version.clone(),
                    };
                    let one = self.execute_alone_recorded(std::slice::from_ref(&step));
                    run.took.extend(one.took);
                    if one.failed.is_some() {
                        run.failed = one.failed;
                        break;
                    }
                }
                return run;
            }
            return super::alone_then_recorded(self, steps);
        };
        let outcome = run_counted(&mut self.conn, &batch.text);
        self.observe();
        let (index, error) = match outcome {
            Ok(last) => {
                return AloneRun {
                    took: server_times(
                        last.map(mysql::Row::unwrap).unwrap_or_default(),
                        steps.len(),
                    ),
                    ..AloneRun::default()
                }
            }
            Err(failed) => failed,
        };
        let (step, at) = batch.locate(index);
        if !matches!(error, mysql::Error::MySqlError(_)) {
            // Not the server's refusal: it may have gone on with the text.
            return AloneRun {
                took: vec![None; step],
                failed: Some(AloneError::Lost(db_error(error))),
                failed_after: None,
            };
        }
        let failed = match at {
            At::Statement(index) => AloneError::Statement(index, db_error(error)),
            At::Record => {
                // The record's transaction may be open.
                if let Err(rollback) = self.conn.query_drop("ROLLBACK") {
                    log::debug!("rollback after a failed record: {rollback}");
                }
                self.observe();
                AloneError::Record(db_error(error))
            }
            // Every step was recorded; only reading their times failed.
            At::Times => {
                log::debug!("reading the steps' times: {error}");
                return AloneRun {
                    took: vec![None; steps.len()],
                    ..AloneRun::default()
                };
            }
        };
        // The times of the steps recorded before the one that failed, and when that one
        // began, still in the session's variables.
        if step == 0 {
            return AloneRun {
                failed: Some(failed),
                ..AloneRun::default()
            };
        }
        let select = format!(
            "SELECT TIMESTAMPDIFF(MICROSECOND, @upgrader_batch, @upgrader_sent), {}",
            times_list(step)
        );
        let row = self
            .conn
            .query_first::<mysql::Row, _>(select)
            .ok()
            .flatten();
        self.observe();
        let mut values: Vec<mysql::Value> = row.map(mysql::Row::unwrap).unwrap_or_default();
        let after = match values.is_empty() {
            true => None,
            false => mysql::from_value_opt::<u64>(values.remove(0)).ok(),
        };
        AloneRun {
            took: server_times(values, step),
            failed: Some(failed),
            failed_after: after.map(std::time::Duration::from_micros),
        }
    }

    fn sends_together(&self) -> bool {
        true
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

    fn lock(&mut self, _span: LockSpan) -> Result<(), DbError> {
        if !self.lock_held {
            // A session lock whatever the span, held until `unlock` or until the connection
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
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), DbError> {
        self.send_held()?;
        if self.lock_held {
            self.conn
                .query_drop(format!("DO RELEASE_LOCK({LOCK_NAME})"))
                .map_err(db_error)?;
            self.observe();
            self.lock_held = false;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<(), DbError> {
        // Sent with the next statement's round trip, or with the commit's (a transaction
        // of bookkeeping alone then costs one round trip, not four).
        self.send_held()?;
        self.begin_held = true;
        self.in_transaction = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.finish("COMMIT")
    }

    fn lock_outlives_commit(&self) -> bool {
        // GET_LOCK is a session lock.
        true
    }

    fn commit_and_chain(&mut self) -> Result<bool, DbError> {
        // GET_LOCK is a session lock: the chained transaction still holds it.
        if self.begin_held && self.held.is_empty() {
            // Nothing sent since the begin: the transaction it opens is the next one.
            return Ok(true);
        }
        self.finish("COMMIT AND CHAIN")?;
        self.in_transaction = true;
        Ok(true)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        self.held.clear();
        if self.in_transaction {
            self.in_transaction = false;
            if !std::mem::take(&mut self.begin_held) {
                self.conn.query_drop("ROLLBACK").map_err(db_error)?;
                self.observe();
            }
        }
        Ok(())
    }

    fn resume_after_implicit_commit(&mut self) -> Result<(), DbError> {
        self.send_held()?;
        self.start_transaction()
    }

    fn still_in_transaction(&mut self) -> Result<bool, DbError> {
        self.send_held()?;
        if self.tracking == Some(true) {
            // The OK packet of the last statement said so: no round trip.
            return Ok(self.server_in_transaction);
        }
        // A server that does not track the state: ask (MariaDB; MySQL has no such
        // variable, and then only what we opened is known).
        match self
            .conn
            .query_first::<Option<i64>, _>("SELECT @@in_transaction")
        {
            Ok(answer) => Ok(answer.flatten().is_none_or(|flag| flag != 0)),
            Err(mysql::Error::MySqlError(error)) if error.code == ER_UNKNOWN_SYSTEM_VARIABLE => {
                Ok(self.in_transaction)
            }
            Err(error) => Err(db_error(error)),
        }
    }

    fn max_statement_bytes(&mut self) -> Result<Option<StatementLimit>, DbError> {
        // The packet carries a command byte before the statement.
        Ok(self.max_allowed_packet.map(|packet| StatementLimit {
            bytes: packet.saturating_sub(1),
            setting: "max_allowed_packet",
        }))
    }

    fn query_own_table(
        &mut self,
        _table: &str,
        sql: &str,
        values: &[Value],
    ) -> Result<Option<Vec<Vec<Value>>>, DbError> {
        // A failed query does not end a MySQL transaction: one round trip, whose
        // "no such table" answer means there is none.
        self.send_held()?;
        match self.conn.exec::<mysql::Row, _, _>(sql, params(values)) {
            Ok(rows) => Ok(Some(
                rows.into_iter()
                    .map(|row| row.unwrap().into_iter().map(from_mysql).collect())
                    .collect(),
            )),
            Err(mysql::Error::MySqlError(error)) if error.code == ER_NO_SUCH_TABLE => Ok(None),
            Err(error) => Err(db_error(error)),
        }
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let rows = self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
            &[Value::from(name)],
        )?;
        Ok(!rows.is_empty())
    }

    fn table_schemas(
        &mut self,
        only: Option<&[String]>,
    ) -> Result<Vec<crate::schema::TableFacts>, DbError> {
        super::catalog::mysql(self, only)
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

/// Runs `sql` (one statement or several) over the text protocol, reading every result
/// set: the driver's `query_drop` would drop an error that comes after the first.
fn run_batch(conn: &mut Conn, sql: &str) -> Result<(), mysql::Error> {
    let mut result = conn.query_iter(sql)?;
    while let Some(set) = result.iter() {
        for row in set {
            row?;
        }
    }
    Ok(())
}

/// Runs several statements in one round trip, one result each, reading every result:
/// `Err((index, error))` for the first that fails (the server runs none after it).
fn run_counted(conn: &mut Conn, sql: &str) -> Result<Option<mysql::Row>, (usize, mysql::Error)> {
    let mut result = conn.query_iter(sql).map_err(|error| (0, error))?;
    let mut index = 0;
    let mut last = None;
    while let Some(set) = result.iter() {
        for row in set {
            last = Some(row.map_err(|error| (index, error))?);
        }
        index += 1;
    }
    Ok(last)
}

/// A value as a MySQL literal: strings in hexadecimal, which no `sql_mode` or character
/// set reads differently; `false` for a float (no exact literal).
fn literal(value: &Value, out: &mut String) -> bool {
    match value {
        Value::Null => out.push_str("NULL"),
        Value::Bool(v) => out.push_str(if *v { "1" } else { "0" }),
        Value::Int(v) => out.push_str(&v.to_string()),
        Value::Float(_) => return false,
        Value::Text(text) => {
            out.push_str("_utf8mb4 X'");
            crate::hex::push(out, text.as_bytes());
            out.push('\'');
        }
        Value::Blob(bytes) => {
            out.push_str("X'");
            crate::hex::push(out, bytes);
            out.push('\'');
        }
    }
    true
}

/// The server's message with its error code, not the driver's wrapper text.
fn db_error(error: mysql::Error) -> DbError {
    match error {
        mysql::Error::MySqlError(e) => {
            let code = format!("{}/{}", e.code, e.state);
            DbError::new(format!("{} (error {})", e.message, e.code))
                .with_code(code)
                .with_source(mysql::Error::MySqlError(e))
        }
        other => DbError::new(&other).with_source(other),
    }
}
