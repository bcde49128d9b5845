//! The statement guard: decides, before a statement is sent, whether it may run inside
//! the run's transaction on a given backend. Pure: keywords in, verdict out.

use super::{Dialect, Statement};

/// Why a statement may not run inside the run's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short explanation, starting lower-case.
    pub reason: String,
}

/// Checks a statement that is to run inside the shared transaction.
///
/// Transaction control is refused everywhere, because upgrader owns the transaction and a
/// script's `COMMIT` would make the rest of the run impossible to roll back.
pub fn check(statement: &Statement, dialect: Dialect) -> Result<(), Refusal> {
    let words: Vec<&str> = statement.keywords.iter().map(String::as_str).collect();
    let refuse = |reason: String| Err(Refusal { reason });
    match words.as_slice() {
        ["BEGIN", rest @ ..] if !matches!(rest.first(), Some(&"ATOMIC")) => {
            refuse("transaction control (BEGIN): upgrader runs steps in its own transaction".into())
        }
        ["START", "TRANSACTION", ..] | ["COMMIT", ..] | ["END", ..] => refuse(format!(
            "transaction control ({}): upgrader runs steps in its own transaction",
            words[0]
        )),
        ["ROLLBACK", rest @ ..] if !rest.contains(&"TO") => refuse(
            "transaction control (ROLLBACK): upgrader runs steps in its own transaction".into(),
        ),
        ["VACUUM", ..] if dialect == Dialect::Sqlite => {
            refuse("VACUUM cannot run inside a transaction".into())
        }
        ["PRAGMA", rest @ ..]
            if dialect == Dialect::Sqlite
                && rest.first().is_some_and(|p| {
                    p.ends_with("JOURNAL_MODE") || p.ends_with("FOREIGN_KEYS")
                }) =>
        {
            refuse(format!(
                "PRAGMA {} has no effect inside a transaction",
                rest[0].to_ascii_lowercase()
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::split;

    fn verdict(sql: &str) -> Result<(), Refusal> {
        let statements = split(sql, Dialect::Sqlite).unwrap();
        check(&statements[0], Dialect::Sqlite)
    }

    #[test]
    fn transaction_control_is_refused() {
        for sql in [
            "BEGIN",
            "begin transaction",
            "Begin Immediate",
            "COMMIT",
            "commit;",
            "END TRANSACTION",
            "ROLLBACK",
            "START TRANSACTION",
            "VACUUM",
            "PRAGMA journal_mode = WAL",
            "pragma foreign_keys=off",
            "-- leading comment\n  COMMIT",
        ] {
            assert!(verdict(sql).is_err(), "{sql} should be refused");
        }
    }

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT 'COMMIT'",
            "INSERT INTO t VALUES ('BEGIN')",
            "ROLLBACK TO SAVEPOINT a",
            "SAVEPOINT a",
            "CREATE TABLE t (x int)",
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END",
            "PRAGMA user_version = 3",
            "/* COMMIT */ UPDATE t SET x = 1",
        ] {
            assert_eq!(verdict(sql), Ok(()), "{sql}");
        }
    }
}
