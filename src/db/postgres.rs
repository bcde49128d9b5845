//! The PostgreSQL backend (postgres crate). DDL is transactional here, so a failed run
//! rolls back completely. The database-level lock is a session advisory lock, held from
//! the run's first transaction until its connection closes.

use std::str::FromStr;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::{Backend, DbError, LockSpan, ServerUrl, StatementLimit, Value};
use crate::sql::Dialect;

/// The advisory lock key every upgrader process takes on a database ("upgrader" in ASCII).
const ADVISORY_KEY: i64 = 0x7570_6772_6164_6572;

/// A connection to a PostgreSQL database.
pub struct Postgres {
    client: Client,
    in_transaction: bool,
    lock_held: bool,
    prepared: std::collections::HashMap<String, postgres::Statement>,
}

/// Should upgrader die mid-statement, the server notices within a second and rolls back,
/// instead of finishing a long statement for a client that is gone and holding the upgrade
/// lock meanwhile. A startup option: it costs no round trip (PostgreSQL 14 and later).
const CHECK_CLIENT: &str = "-c client_connection_check_interval=1000";

impl Postgres {
    /// Connects; the URL's password never appears in an error.
    pub fn connect(url: &ServerUrl) -> Result<Postgres, DbError> {
        let fail = |error: postgres::Error| {
            DbError::new(format!(
                "cannot connect to {url}: {}",
                url.scrub(&db_error(error).message)
            ))
        };
        let mut config = postgres::Config::from_str(url.expose()).map_err(|e| {
            DbError::new(format!("database URL {url}: {}", url.scrub(&e.to_string())))
        })?;
        let plain = config.clone();
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {CHECK_CLIENT}"),
            _ => CHECK_CLIENT.to_string(),
        };
        config.options(&options);
        let client = match config.connect(NoTls) {
            Ok(client) => client,
            // A server before 14 refuses the unknown setting at startup: connect without it.
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                log::debug!("client_connection_check_interval not set: {error}");
                plain.connect(NoTls).map_err(fail)?
            }
            Err(error) => return Err(fail(error)),
        };
        Ok(Postgres {
            client,
            in_transaction: false,
            lock_held: false,
            prepared: std::collections::HashMap::new(),
        })
    }
}

impl Postgres {
    /// Prepares a statement once per connection: a plugin that runs the same UPDATE for
    /// every row pays the parse round trip once.
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&numbered(sql)).map_err(db_error)?;
        if self.prepared.len() >= PREPARED_KEPT {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// How many prepared statements a connection keeps.
const PREPARED_KEPT: usize = 64;

/// Statements are written with `?` placeholders; PostgreSQL numbers them (`$1`, `$2`…).
/// A `?` inside a string, quoted name, dollar quote or comment is left alone.
fn numbered(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut index = 0;
    let mut at = 0;
    let mut copied = 0;
    while at < bytes.len() {
        let skip_to = match bytes[at] {
            b'\'' | b'"' => {
                let quote = bytes[at];
                let mut end = at + 1;
                while end < bytes.len() {
                    if bytes[end] == quote {
                        // A doubled quote is an escaped one.
                        if bytes.get(end + 1) == Some(&quote) {
                            end += 2;
                            continue;
                        }
                        break;
                    }
                    end += 1;
                }
                end + 1
            }
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                sql[at..].find('\n').map_or(bytes.len(), |n| at + n + 1)
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => sql[at + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| at + 2 + n + 2),
            b'$' => {
                // $tag$ … $tag$ (a tag is empty or an identifier; `$1` is not a quote).
                let tag_end = sql[at + 1..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map(|n| at + 1 + n);
                match tag_end {
                    Some(end)
                        if bytes[end] == b'$'
                            && !bytes.get(at + 1).is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[at..=end];
                        sql[end + 1..]
                            .find(tag)
                            .map_or(bytes.len(), |n| end + 1 + n + tag.len())
                    }
                    _ => at + 1,
                }
            }
            b'?' => {
                out.push_str(&sql[copied..at]);
                index += 1;
                out.push('$');
                out.push_str(&index.to_string());
                copied = at + 1;
                at + 1
            }
            _ => at + 1,
        };
        at = skip_to.min(bytes.len());
    }
    out.push_str(&sql[copied..]);
    out
}

/// Converts values to the types the server inferred for the statement's parameters: a
/// plugin's integer may be bound to an `integer` column, its text to a `varchar`.
fn params(types: &[Type], values: &[Value]) -> Result<Vec<Box<dyn ToSql + Sync>>, DbError> {
    if types.len() != values.len() {
        return Err(DbError::new(format!(
            "the statement has {} parameter(s) but {} value(s) were given",
            types.len(),
            values.len()
        )));
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(index, (kind, value))| {
            convert(kind, value).ok_or_else(|| {
                DbError::new(format!(
                    "parameter {}: cannot bind {} to PostgreSQL type {kind}; cast the placeholder in the SQL (for example ?::text::{kind})",
                    index + 1,
                    value.kind_name()
                ))
            })
        })
        .collect()
}

/// SQL NULL for a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(postgres::types::IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn convert(kind: &Type, value: &Value) -> Option<Box<dyn ToSql + Sync>> {
    let text_like = matches!(
        *kind,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    );
    Some(match value {
        Value::Null => Box::new(Null) as Box<dyn ToSql + Sync>,
        Value::Bool(v) => match *kind {
            Type::BOOL => Box::new(*v),
            _ => return convert(kind, &Value::Int(i64::from(*v))),
        },
        Value::Int(v) => match *kind {
            Type::INT8 => Box::new(*v),
            Type::INT4 => Box::new(i32::try_from(*v).ok()?),
            Type::INT2 => Box::new(i16::try_from(*v).ok()?),
            Type::FLOAT8 => Box::new(*v as f64),
            Type::FLOAT4 => Box::new(*v as f32),
            Type::BOOL => Box::new(*v != 0),
            _ if text_like => Box::new(v.to_string()),
            _ => return None,
        },
        Value::Float(v) => match *kind {
            Type::FLOAT8 => Box::new(*v),
            Type::FLOAT4 => Box::new(*v as f32),
            _ if text_like => Box::new(v.to_string()),
            _ => return None,
        },
        Value::Text(v) => match *kind {
            _ if text_like => Box::new(v.clone()),
            Type::INT8 => Box::new(v.trim().parse::<i64>().ok()?),
            Type::INT4 => Box::new(v.trim().parse::<i32>().ok()?),
            Type::INT2 => Box::new(v.trim().parse::<i16>().ok()?),
            Type::FLOAT8 => Box::new(v.trim().parse::<f64>().ok()?),
            Type::FLOAT4 => Box::new(v.trim().parse::<f32>().ok()?),
            Type::BOOL => Box::new(matches!(v.trim(), "t" | "true" | "1" | "yes" | "on")),
            Type::BYTEA => Box::new(v.as_bytes().to_vec()),
            _ => return None,
        },
        Value::Blob(v) => match *kind {
            Type::BYTEA => Box::new(v.clone()),
            _ if text_like => Box::new(String::from_utf8(v.clone()).ok()?),
            _ => return None,
        },
    })
}

fn read(row: &postgres::Row, index: usize) -> Result<Value, DbError> {
    let kind = row.columns()[index].type_().clone();
    let value = match kind {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map(|v| v.map(Value::Bool)),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map(|v| v.map(|v| Value::Int(v.into()))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map(|v| v.map(|v| Value::Int(v.into()))),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map(|v| v.map(Value::Int)),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map(|v| v.map(|v| Value::Float(v.into()))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map(|v| v.map(Value::Float)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(index)
            .map(|v| v.map(Value::Blob)),
        _ => row
            .try_get::<_, Option<String>>(index)
            .map(|v| v.map(Value::Text)),
    };
    Ok(value.map_err(DbError::new)?.unwrap_or(Value::Null))
}

impl Backend for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str) -> Result<(), DbError> {
        // The simple protocol runs any statement, including those that return rows.
        self.client.batch_execute(sql).map_err(db_error)
    }

    fn execute_params(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        let statement = self.prepare(sql)?;
        let boxed = params(statement.params(), values)?;
        let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
        self.client.execute(&statement, &refs).map_err(db_error)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let statement = self.prepare(sql)?;
        let boxed = params(statement.params(), values)?;
        let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
        let rows = self.client.query(&statement, &refs).map_err(db_error)?;
        rows.iter()
            .map(|row| (0..row.len()).map(|index| read(row, index)).collect())
            .collect()
    }

    fn lock(&mut self, _span: LockSpan) -> Result<(), DbError> {
        if self.lock_held {
            return Ok(());
        }
        // A session lock, held until `unlock` or until the connection closes (however the
        // process ends), across the commits of `--transaction per-step`: a second process,
        // on any host, waits here.
        let taken = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ADVISORY_KEY])
            .map_err(db_error)?
            .get::<_, bool>(0);
        if !taken {
            log::warn!("waiting for the database upgrade lock, held by another upgrader");
            self.client
                .execute("SELECT pg_advisory_lock($1)", &[&ADVISORY_KEY])
                .map_err(db_error)?;
        }
        self.lock_held = true;
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), DbError> {
        if self.lock_held {
            self.client
                .execute("SELECT pg_advisory_unlock($1)", &[&ADVISORY_KEY])
                .map_err(db_error)?;
            self.lock_held = false;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.client.batch_execute("BEGIN").map_err(db_error)?;
        self.in_transaction = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.in_transaction = false;
        self.client.batch_execute("COMMIT").map_err(db_error)
    }

    fn lock_outlives_commit(&self) -> bool {
        // The advisory lock is a session lock.
        true
    }

    fn commit_and_chain(&mut self) -> Result<bool, DbError> {
        // The advisory lock is a session lock: the chained transaction still holds it.
        self.client
            .batch_execute("COMMIT AND CHAIN")
            .map_err(db_error)?;
        self.in_transaction = true;
        Ok(true)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if !self.in_transaction {
            return Ok(());
        }
        self.in_transaction = false;
        self.client.batch_execute("ROLLBACK").map_err(db_error)
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        // A catalog look-up by name: its cost does not grow with the number of tables, as
        // information_schema's does. One round trip: no separate prepare.
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

    fn max_statement_bytes(&mut self) -> Result<Option<StatementLimit>, DbError> {
        // The server refuses a protocol message of 1 GiB or more (MaxAllocSize - 1).
        Ok(Some(StatementLimit {
            bytes: (1 << 30) - 1,
            setting: "PostgreSQL's 1 GiB query size limit",
        }))
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
fn db_error(error: postgres::Error) -> DbError {
    match error.as_db_error() {
        Some(db) => {
            let mut message = db.message().to_string();
            if let Some(detail) = db.detail() {
                message.push_str(&format!(" ({detail})"));
            }
            DbError::new(message)
        }
        None => DbError::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
