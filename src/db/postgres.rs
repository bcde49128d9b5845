//! The PostgreSQL backend (postgres crate). DDL is transactional here, so a failed run
//! rolls back completely. The database-level lock is a session advisory lock, held from
//! the run's first transaction until its connection closes.

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::{redact, scrub_password, Backend, DbError, Value};
use crate::sql::Dialect;

/// The advisory lock key every upgrader process takes on a database ("upgrader" in ASCII).
const ADVISORY_KEY: i64 = 0x7570_6772_6164_6572;

/// A connection to a PostgreSQL database.
pub struct Postgres {
    client: Client,
    in_transaction: bool,
    lock_held: bool,
}

impl Postgres {
    /// Connects; the URL's password never appears in an error.
    pub fn connect(url: &str) -> Result<Postgres, DbError> {
        let client = Client::connect(url, NoTls).map_err(|e| {
            DbError::new(format!(
                "cannot connect to {}: {}",
                redact(url),
                scrub_password(&e.to_string(), url)
            ))
        })?;
        let mut connection = Postgres {
            client,
            in_transaction: false,
            lock_held: false,
        };
        // Should upgrader die mid-statement, the server notices within a second and rolls
        // back, instead of finishing a long statement for a client that is gone and
        // holding the upgrade lock meanwhile (PostgreSQL 14 and later; older servers
        // do not know the setting).
        if let Err(error) = connection
            .client
            .batch_execute("SET client_connection_check_interval = 1000")
        {
            log::debug!("client_connection_check_interval not set: {error}");
        }
        Ok(connection)
    }
}

/// Our own SQL is written with `?` placeholders; PostgreSQL numbers them.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut index = 0;
    for ch in sql.chars() {
        if ch == '?' {
            index += 1;
            out.push('$');
            out.push_str(&index.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

fn params(values: &[Value]) -> Vec<Box<dyn ToSql + Sync>> {
    values
        .iter()
        .map(|value| -> Box<dyn ToSql + Sync> {
            match value {
                Value::Null => Box::new(None::<String>),
                Value::Bool(v) => Box::new(*v),
                Value::Int(v) => Box::new(*v),
                Value::Float(v) => Box::new(*v),
                Value::Text(v) => Box::new(v.clone()),
                Value::Blob(v) => Box::new(v.clone()),
            }
        })
        .collect()
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
        let boxed = params(values);
        let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
        self.client.execute(&numbered(sql), &refs).map_err(db_error)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let boxed = params(values);
        let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
        let rows = self.client.query(&numbered(sql), &refs).map_err(db_error)?;
        rows.iter()
            .map(|row| (0..row.len()).map(|index| read(row, index)).collect())
            .collect()
    }

    fn begin(&mut self) -> Result<(), DbError> {
        self.client.batch_execute("BEGIN").map_err(db_error)?;
        self.in_transaction = true;
        if self.lock_held {
            return Ok(());
        }
        // A session lock, held from the run's first transaction until its connection
        // closes (however the process ends), across the commits of `--transaction
        // per-step`: a second process, on any host, waits here.
        let taken: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ADVISORY_KEY])
            .and_then(|row| row.try_get(0))
            .map_err(db_error)?;
        if !taken {
            log::warn!("waiting for the database upgrade lock, held by another upgrader");
            self.client
                .execute("SELECT pg_advisory_lock($1)", &[&ADVISORY_KEY])
                .map_err(db_error)?;
        }
        self.lock_held = true;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DbError> {
        self.in_transaction = false;
        self.client.batch_execute("COMMIT").map_err(db_error)
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        if !self.in_transaction {
            return Ok(());
        }
        self.in_transaction = false;
        self.client.batch_execute("ROLLBACK").map_err(db_error)
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let rows = self.query(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
            &[Value::from(name)],
        )?;
        Ok(!rows.is_empty())
    }

    fn user_table_count(&mut self) -> Result<u64, DbError> {
        let rows = self.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() \
             AND table_name NOT LIKE 'upgrader\\_%'",
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
    }
}
