//! The statement guard: decides, before a statement is sent, whether it may run inside
//! the run's transaction on a given backend. Pure: keywords in, verdict out.
//!
//! On MySQL and MariaDB a statement that commits implicitly ends the run's transaction
//! without telling anyone, so everything after it could no longer be rolled back; on
//! PostgreSQL some statements refuse to run inside a transaction block at all. Both are
//! refused before anything is sent. The lists follow the MySQL 8 and MariaDB 10.11
//! reference pages on implicit commits; where a statement's effect is unclear, the guard
//! refuses (a step can opt out with `transaction="none"`).

use std::collections::HashMap;

use super::scan::Kind;
use super::{Dialect, Statement};

/// Why a statement may not run inside the run's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short explanation, starting lower-case.
    pub reason: String,
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        reason: reason.into(),
    })
}

/// Checks a statement that is to run inside the shared transaction.
///
/// Transaction control is refused everywhere, because upgrader owns the transaction and a
/// script's `COMMIT` would make the rest of the run impossible to roll back.
///
/// Includes [`check_always`]; on MySQL, dynamic SQL is refused too (see [`check_install`]).
pub fn check(statement: &Statement, dialect: Dialect) -> Result<(), Refusal> {
    check_always(statement, dialect)?;
    let words: Vec<&str> = statement.keywords.split_whitespace().collect();
    transaction_control(&words)?;
    match dialect {
        Dialect::Sqlite => sqlite(&words),
        Dialect::Postgres => postgres(&words),
        Dialect::MySql => dynamic_sql(&words).and_then(|()| mysql(&words)),
    }
}

/// Checks a statement of `<install>`. On MySQL the install runs against an empty schema
/// and upgrader drops what it created if it fails, so DDL is allowed there; transaction
/// control, tables that cannot roll back and dynamic SQL (which hides what runs) are not,
/// and the other backends judge install statements as any other. Includes [`check_always`].
pub fn check_install(statement: &Statement, dialect: Dialect) -> Result<(), Refusal> {
    if dialect == Dialect::MySql {
        check_always(statement, dialect)?;
        let words: Vec<&str> = statement.keywords.split_whitespace().collect();
        transaction_control(&words)?;
        dynamic_sql(&words)?;
        return non_transactional_engine(statement, &words);
    }
    check(statement, dialect)
}

/// The rules that hold for every statement upgrader sends, in any step (including
/// `transaction="none"` steps and plugin SQL) and in the install, on every dialect: a
/// statement may not touch upgrader's own tables (any name starting `upgrader_`, present
/// or future) and may not release upgrader's locks (`pg_advisory_unlock_all()`,
/// `pg_advisory_unlock(…)`, `RELEASE_ALL_LOCKS()`, `RELEASE_LOCK(…)`).
///
/// What counts:
/// - A name is found in the statement's code (quoted or not, any case, schema-qualified),
///   never in its string literals or comments. It is let through only where the parser
///   shows it is a column (`ALTER TABLE t ADD upgrader_note INT`, `SELECT upgrader_note
///   FROM t`); anywhere else it is taken for a table. A statement that does not parse
///   (or is longer than [`super::PARSE_LIMIT`]) is refused on the name alone.
/// - A call is a function name followed by `(`, anywhere in the statement's code,
///   including routine bodies written as code (MySQL procedures, triggers, `BEGIN ATOMIC`).
/// - String literals are data, except where a statement runs one at once: the body of a
///   PostgreSQL `DO` block and MySQL `PREPARE … FROM '…'` / `EXECUTE IMMEDIATE '…'`; their
///   text is looked through for the names and calls above. A PostgreSQL function body
///   (`AS $$ … $$`) is not: creating the function runs nothing, and applications do
///   create functions that take and release their own advisory locks.
pub fn check_always(statement: &Statement, dialect: Dialect) -> Result<(), Refusal> {
    let mut own = Vec::new();
    let mut run_later = Vec::new();
    let runs_strings = matches!(
        statement.keywords.split(' ').next(),
        Some("DO" | "PREPARE" | "EXECUTE")
    );
    scan_code(&statement.text, dialect, &mut own, |kind, token| {
        if runs_strings && kind == Kind::Str {
            run_later.push(string_body(token).to_string());
        }
    })?;
    for body in &run_later {
        let mut names = Vec::new();
        scan_code(body, dialect, &mut names, |_, _| {})?;
        if let Some(name) = names.first() {
            return refuse(own_table(name));
        }
    }
    if own.is_empty() {
        return Ok(());
    }
    let Some(parsed) = (statement.text.len() <= super::PARSE_LIMIT)
        .then(|| {
            sqlparser::parser::Parser::parse_sql(dialect.parser().as_ref(), &statement.text).ok()
        })
        .flatten()
    else {
        return refuse(own_table(&own[0]));
    };
    let mut columns: HashMap<String, usize> = HashMap::new();
    for name in column_names(&parsed) {
        *columns.entry(name.to_lowercase()).or_default() += 1;
    }
    for name in &own {
        match columns.get_mut(&name.to_lowercase()) {
            Some(count) if *count > 0 => *count -= 1,
            _ => return refuse(own_table(name)),
        }
    }
    Ok(())
}

/// Looks through a statement's code: names starting `upgrader_` go to `own`, calls that
/// release upgrader's locks are refused, and every other token is shown to `each`.
fn scan_code(
    text: &str,
    dialect: Dialect,
    own: &mut Vec<String>,
    mut each: impl FnMut(Kind, &str),
) -> Result<(), Refusal> {
    const UNLOCKS: &[&str] = &[
        "pg_advisory_unlock_all",
        "pg_advisory_unlock",
        "release_all_locks",
        "release_lock",
    ];
    let mut function: Option<String> = None;
    for (kind, token) in super::tokens(text, dialect) {
        if let Some(name) = function.take() {
            if token == "(" {
                return refuse(format!(
                    "{name}() would release upgrader's lock on the database, which it holds for the whole run; \
                     a step may not release it"
                ));
            }
        }
        let name = match kind {
            Kind::Word => std::borrow::Cow::Borrowed(token),
            Kind::Quoted => std::borrow::Cow::Owned(super::unquote(token)),
            _ => {
                each(kind, token);
                continue;
            }
        };
        if name
            .get(..9)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("upgrader_"))
        {
            own.push(name.to_string());
        } else if UNLOCKS
            .iter()
            .any(|unlock| name.eq_ignore_ascii_case(unlock))
        {
            function = Some(name.to_ascii_uppercase());
        }
    }
    Ok(())
}

fn own_table(name: &str) -> String {
    format!(
        "`{name}` is named like upgrader's own tables (upgrader_*), which hold its record of the database; \
         a step may not touch them"
    )
}

/// The text inside a string literal token (`'…'`, `E'…'`, `$tag$…$tag$`), as written.
fn string_body(token: &str) -> &str {
    if let Some(rest) = token.strip_prefix('$') {
        let Some(tag_end) = rest.find('$') else {
            return "";
        };
        let tag = &token[..tag_end + 2];
        return token[tag.len()..].strip_suffix(tag).unwrap_or_default();
    }
    match token.find(['\'', '"']) {
        Some(open) => token
            .get(open + 1..token.len().saturating_sub(1))
            .unwrap_or_default(),
        None => "",
    }
}

/// Every name the parsed statements use as a column: in expressions (the last part of
/// `t.c`), column definitions, `ALTER TABLE` column operations, `INSERT` column lists and
/// `UPDATE` targets.
#[allow(clippy::ptr_arg)] // `Visit` is implemented for `Vec`, not for slices
fn column_names(parsed: &Vec<sqlparser::ast::Statement>) -> Vec<String> {
    use sqlparser::ast::{AlterTableOperation as Op, AssignmentTarget, Expr, ObjectName};
    use std::ops::ControlFlow;
    let mut names = Vec::new();
    let last = |name: &ObjectName| {
        name.0
            .last()
            .and_then(|part| part.as_ident())
            .map(|ident| ident.value.clone())
    };
    let _ = sqlparser::ast::visit_expressions(parsed, |expr| {
        match expr {
            Expr::Identifier(ident) => names.push(ident.value.clone()),
            Expr::CompoundIdentifier(parts) => {
                names.extend(parts.last().map(|ident| ident.value.clone()))
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    for statement in parsed {
        match statement {
            sqlparser::ast::Statement::CreateTable(create) => {
                names.extend(create.columns.iter().map(|c| c.name.value.clone()))
            }
            sqlparser::ast::Statement::AlterTable(alter) => {
                for operation in &alter.operations {
                    match operation {
                        Op::AddColumn { column_def, .. } => {
                            names.push(column_def.name.value.clone())
                        }
                        Op::DropColumn { column_names, .. } => {
                            names.extend(column_names.iter().map(|c| c.value.clone()))
                        }
                        Op::RenameColumn {
                            old_column_name,
                            new_column_name,
                        } => {
                            names.push(old_column_name.value.clone());
                            names.push(new_column_name.value.clone());
                        }
                        Op::ChangeColumn {
                            old_name, new_name, ..
                        } => {
                            names.push(old_name.value.clone());
                            names.push(new_name.value.clone());
                        }
                        Op::ModifyColumn { col_name, .. } => names.push(col_name.value.clone()),
                        Op::AlterColumn { column_name, .. } => {
                            names.push(column_name.value.clone())
                        }
                        _ => {}
                    }
                }
            }
            sqlparser::ast::Statement::Insert(insert) => {
                names.extend(insert.columns.iter().filter_map(last))
            }
            sqlparser::ast::Statement::Update(update) => {
                for assignment in &update.assignments {
                    match &assignment.target {
                        AssignmentTarget::ColumnName(name) => names.extend(last(name)),
                        AssignmentTarget::Tuple(tuple) => {
                            names.extend(tuple.iter().filter_map(last))
                        }
                    }
                }
            }
            _ => {}
        }
    }
    names
}

/// MySQL dynamic SQL runs a statement that only exists at run time, so nothing here can
/// tell whether it commits (`PREPARE s FROM 'COMMIT'; EXECUTE s`). `DEALLOCATE PREPARE`
/// runs nothing and is let through.
fn dynamic_sql(words: &[&str]) -> Result<(), Refusal> {
    let what = match words {
        ["PREPARE", ..] => "PREPARE",
        ["EXECUTE", "IMMEDIATE", ..] => "EXECUTE IMMEDIATE",
        ["EXECUTE", ..] => "EXECUTE",
        _ => return Ok(()),
    };
    refuse(format!(
        "dynamic SQL ({what}) cannot be checked before it runs, and what it runs could commit the run's transaction; \
         put it in a step with transaction=\"none\""
    ))
}

/// Whether the statement commits implicitly on `dialect` (MySQL DDL and the like), so
/// that whoever runs it must open the transaction again afterwards.
pub fn commits_implicitly(statement: &Statement, dialect: Dialect) -> bool {
    dialect == Dialect::MySql && {
        let words: Vec<&str> = statement.keywords.split_whitespace().collect();
        mysql(&words).is_err()
    }
}

/// `CREATE TABLE … ENGINE = MyISAM` and the like: a table that could never be rolled back.
fn non_transactional_engine(statement: &Statement, words: &[&str]) -> Result<(), Refusal> {
    if !matches!(words, ["CREATE" | "ALTER", ..]) {
        return Ok(());
    }
    match super::mysql_engine_option(&statement.text) {
        Some(engine) if !engine.eq_ignore_ascii_case("InnoDB") => refuse(format!(
            "ENGINE={engine} makes a table that cannot roll back; use InnoDB, or create it in a step with transaction=\"none\""
        )),
        _ => Ok(()),
    }
}

/// Refuses statements that touch a table whose storage engine cannot roll back. Built
/// once per run from the database's list of such tables.
#[derive(Debug, Default)]
pub struct TableGuard {
    /// Lower-case name in the connection's schema -> (name, engine).
    current: HashMap<String, (String, String)>,
    /// Lower-case `schema.name` -> (`schema.name`, engine).
    qualified: HashMap<String, (String, String)>,
}

impl TableGuard {
    /// A guard for these tables: `(schema, name, engine, in the connection's schema)`.
    pub fn new<'a>(tables: impl IntoIterator<Item = (&'a str, &'a str, &'a str, bool)>) -> Self {
        let mut guard = TableGuard::default();
        for (schema, name, engine, current) in tables {
            if current {
                guard
                    .current
                    .insert(name.to_lowercase(), (name.to_string(), engine.to_string()));
            }
            guard.qualified.insert(
                format!("{schema}.{name}").to_lowercase(),
                (format!("{schema}.{name}"), engine.to_string()),
            );
        }
        guard
    }

    /// Whether there is no such table at all (then nothing needs parsing).
    pub fn is_empty(&self) -> bool {
        self.qualified.is_empty()
    }

    /// Refuses the statement when it names one of the tables.
    pub fn check(&self, statement: &Statement, dialect: Dialect) -> Result<(), Refusal> {
        if self.is_empty() {
            return Ok(());
        }
        let found = match super::relations(&statement.text, dialect) {
            Some(relations) => relations.iter().find_map(|parts| match parts.as_slice() {
                [name] => self.current.get(&name.to_lowercase()),
                [.., schema, name] => self
                    .qualified
                    .get(&format!("{schema}.{name}").to_lowercase()),
                [] => None,
            }),
            // Unparsable, or too long to parse: any word that names such a table is
            // enough to refuse (read without parsing, so any length is fine).
            None => super::find_word(&statement.text, dialect, |word| {
                self.current.get(&word.to_lowercase())
            }),
        };
        match found {
            Some((name, engine)) => refuse(format!(
                "table `{name}` uses the {engine} storage engine, which cannot roll back; \
                 convert it first (ALTER TABLE {name} ENGINE=InnoDB) in a step with transaction=\"none\", \
                 or move this statement to such a step"
            )),
            None => Ok(()),
        }
    }
}

fn transaction_control(words: &[&str]) -> Result<(), Refusal> {
    let owned = "upgrader runs steps in its own transaction";
    match words {
        ["BEGIN", rest @ ..] if rest.first() != Some(&"ATOMIC") => {
            refuse(format!("transaction control (BEGIN): {owned}"))
        }
        ["START", "TRANSACTION", ..] => {
            refuse(format!("transaction control (START TRANSACTION): {owned}"))
        }
        [word @ ("COMMIT" | "END" | "ABORT"), ..] => {
            refuse(format!("transaction control ({word}): {owned}"))
        }
        ["ROLLBACK", rest @ ..] if !rest.contains(&"TO") => {
            refuse(format!("transaction control (ROLLBACK): {owned}"))
        }
        ["XA", ..] => refuse(format!("XA transaction control: {owned}")),
        ["PREPARE", "TRANSACTION", ..] => {
            refuse(format!("two-phase commit (PREPARE TRANSACTION): {owned}"))
        }
        _ => Ok(()),
    }
}

fn sqlite(words: &[&str]) -> Result<(), Refusal> {
    match words {
        ["VACUUM", ..] => refuse("VACUUM cannot run inside a transaction"),
        ["PRAGMA", pragma, ..]
            if pragma.ends_with("JOURNAL_MODE") || pragma.ends_with("FOREIGN_KEYS") =>
        {
            refuse(format!(
                "PRAGMA {} has no effect inside a transaction",
                pragma.to_ascii_lowercase()
            ))
        }
        _ => Ok(()),
    }
}

fn postgres(words: &[&str]) -> Result<(), Refusal> {
    let reason = |what: &str| format!("{what} cannot run inside a transaction block on PostgreSQL");
    let concurrently = words.contains(&"CONCURRENTLY");
    match words {
        [first @ ("CREATE" | "DROP" | "REINDEX"), ..]
            if concurrently && (*first == "REINDEX" || words.contains(&"INDEX")) =>
        {
            refuse(reason(&format!("{first} ... CONCURRENTLY")))
        }
        ["VACUUM", ..] => refuse(reason("VACUUM")),
        ["CREATE" | "DROP", "DATABASE" | "TABLESPACE", ..] => {
            refuse(reason(&format!("{} {}", words[0], words[1])))
        }
        ["ALTER", "SYSTEM", ..] => refuse(reason("ALTER SYSTEM")),
        ["REINDEX", "DATABASE" | "SYSTEM", ..] => refuse(reason(&format!("REINDEX {}", words[1]))),
        ["CLUSTER"] => refuse(reason("CLUSTER without a table")),
        ["DISCARD", "ALL", ..] => refuse(reason("DISCARD ALL")),
        ["COMMIT" | "ROLLBACK", "PREPARED", ..] => {
            refuse(reason(&format!("{} PREPARED", words[0])))
        }
        ["CREATE" | "DROP" | "ALTER", "SUBSCRIPTION", ..] => {
            refuse(reason(&format!("{} SUBSCRIPTION", words[0])))
        }
        _ => Ok(()),
    }
}

fn mysql(words: &[&str]) -> Result<(), Refusal> {
    let commits = |what: String| {
        refuse(format!(
            "{what} causes an implicit commit on MySQL/MariaDB, which would end the run's transaction; \
             move it to a step with transaction=\"none\" or to <install>"
        ))
    };
    let first_two = || words.iter().take(2).copied().collect::<Vec<_>>().join(" ");
    match words {
        // Temporary tables are the documented exception: creating or dropping one does
        // not commit.
        ["CREATE", rest @ ..] if is_temporary_table(rest) => Ok(()),
        ["DROP", "TEMPORARY", ..] => Ok(()),
        // Forgets a prepared statement; commits nothing.
        ["DROP", "PREPARE", ..] => Ok(()),
        ["CREATE" | "ALTER" | "DROP", rest @ ..] => {
            commits(format!("{} {}", words[0], object_kind(rest)))
        }
        ["RENAME", "TABLE" | "TABLES" | "USER", ..] => commits(first_two()),
        ["TRUNCATE", ..] => commits("TRUNCATE".into()),
        ["LOCK", "TABLE" | "TABLES" | "INSTANCE", ..]
        | ["UNLOCK", "TABLE" | "TABLES" | "INSTANCE", ..] => commits(first_two()),
        ["GRANT" | "REVOKE", ..] => commits(words[0].to_string()),
        ["SET", "PASSWORD", ..] | ["SET", "DEFAULT", "ROLE", ..] => commits(first_two()),
        ["SET", rest @ ..] if sets_autocommit(rest) => commits("SET autocommit".into()),
        ["ANALYZE" | "CHECK" | "OPTIMIZE" | "REPAIR", rest @ ..]
            if rest
                .iter()
                .take(3)
                .any(|w| matches!(*w, "TABLE" | "TABLES")) =>
        {
            commits(format!("{} TABLE", words[0]))
        }
        ["CACHE", "INDEX", ..] => commits("CACHE INDEX".into()),
        ["LOAD", "INDEX", ..] => commits("LOAD INDEX INTO CACHE".into()),
        ["FLUSH" | "RESET" | "SHUTDOWN" | "RESTART", ..] => commits(words[0].to_string()),
        ["INSTALL" | "UNINSTALL", ..] => commits(first_two()),
        ["IMPORT", "TABLE", ..] => commits("IMPORT TABLE".into()),
        ["START" | "STOP", "SLAVE" | "REPLICA" | "GROUP_REPLICATION" | "ALL", ..] => {
            commits(first_two())
        }
        ["CHANGE", "MASTER" | "REPLICATION", ..] => commits(first_two()),
        ["PURGE", "BINARY" | "MASTER", ..] => commits("PURGE BINARY LOGS".into()),
        _ => Ok(()),
    }
}

/// `CREATE [OR REPLACE] TEMPORARY TABLE`, after `CREATE`.
fn is_temporary_table(rest: &[&str]) -> bool {
    let rest = match rest {
        ["OR", "REPLACE", rest @ ..] => rest,
        rest => rest,
    };
    matches!(rest, ["TEMPORARY", "TABLE", ..])
}

/// The kind of object a DDL statement names, for the message (`TABLE`, `INDEX`, …).
fn object_kind(rest: &[&str]) -> String {
    const KINDS: &[&str] = &[
        "TABLE",
        "INDEX",
        "VIEW",
        "PROCEDURE",
        "FUNCTION",
        "TRIGGER",
        "EVENT",
        "DATABASE",
        "SCHEMA",
        "USER",
        "ROLE",
        "SERVER",
        "TABLESPACE",
        "SEQUENCE",
        "LOGFILE",
        "INSTANCE",
        "PACKAGE",
        "SPATIAL",
        "RESOURCE",
    ];
    rest.iter()
        .find(|word| KINDS.contains(word))
        .map_or_else(|| "(DDL)".to_string(), |kind| kind.to_string())
}

/// `SET [SESSION|GLOBAL|@@…] autocommit = …`: turning autocommit on commits, and changing
/// it at all would take the transaction out of upgrader's hands.
fn sets_autocommit(rest: &[&str]) -> bool {
    rest.iter().take(3).any(|word| {
        let word = word.trim_start_matches('@');
        let word = word
            .strip_prefix("SESSION.")
            .or_else(|| word.strip_prefix("LOCAL."))
            .or_else(|| word.strip_prefix("GLOBAL."))
            .unwrap_or(word);
        word == "AUTOCOMMIT"
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sql::split;

    /// Every statement of `sql` judged on `dialect`; true where refused.
    fn refused(sql: &str, dialect: Dialect) -> Vec<bool> {
        split(sql, dialect)
            .unwrap()
            .iter()
            .map(|statement| check(statement, dialect).is_err())
            .collect()
    }

    /// (statement, refused on MySQL)
    pub(in crate::sql) const MYSQL: &[(&str, bool)] = &[
        // DDL on every kind of object
        ("CREATE TABLE t (id INT PRIMARY KEY)", true),
        ("create table t (id int)", true),
        ("Create Table IF NOT EXISTS t (x int)", true),
        ("CREATE TABLE t2 AS SELECT * FROM t", true),
        ("ALTER TABLE t ADD COLUMN y INT", true),
        ("alter table t drop column y", true),
        ("DROP TABLE t", true),
        ("DROP TABLE IF EXISTS t", true),
        ("CREATE INDEX i ON t (x)", true),
        ("CREATE UNIQUE INDEX i ON t (x)", true),
        ("DROP INDEX i ON t", true),
        ("CREATE VIEW v AS SELECT 1", true),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", true),
        ("ALTER VIEW v AS SELECT 2", true),
        ("DROP VIEW v", true),
        ("CREATE DATABASE d", true),
        ("CREATE SCHEMA d", true),
        ("ALTER DATABASE d CHARACTER SET utf8mb4", true),
        ("DROP DATABASE d", true),
        (
            "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t",
            true,
        ),
        ("ALTER EVENT e DISABLE", true),
        ("DROP EVENT e", true),
        (
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.x = 1",
            true,
        ),
        ("DROP TRIGGER tr", true),
        (
            "CREATE FUNCTION f() RETURNS INT DETERMINISTIC RETURN 1",
            true,
        ),
        ("DROP FUNCTION f", true),
        ("ALTER PROCEDURE p COMMENT 'x'", true),
        ("DROP PROCEDURE IF EXISTS p", true),
        (
            "CREATE DEFINER=`root`@`localhost` PROCEDURE p() SELECT 1",
            true,
        ),
        ("CREATE USER 'u'@'%' IDENTIFIED BY 'p'", true),
        ("ALTER USER 'u'@'%' ACCOUNT LOCK", true),
        ("DROP USER 'u'@'%'", true),
        ("CREATE ROLE r", true),
        ("DROP ROLE r", true),
        ("CREATE SEQUENCE s", true),
        (
            "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'h')",
            true,
        ),
        ("CREATE TABLESPACE ts ADD DATAFILE 'ts.ibd'", true),
        ("ALTER TABLE tmp ADD COLUMN z INT", true),
        ("CREATE INDEX i ON tmp_table (x)", true),
        // renames, truncation, locks
        ("RENAME TABLE a TO b", true),
        ("rename user 'a'@'%' to 'b'@'%'", true),
        ("TRUNCATE TABLE t", true),
        ("TRUNCATE t", true),
        ("LOCK TABLES t WRITE", true),
        ("LOCK TABLE t READ", true),
        ("UNLOCK TABLES", true),
        // accounts
        ("GRANT SELECT ON d.* TO 'u'@'%'", true),
        ("REVOKE SELECT ON d.* FROM 'u'@'%'", true),
        ("SET PASSWORD FOR 'u'@'%' = 'x'", true),
        ("SET DEFAULT ROLE r TO 'u'@'%'", true),
        // administration
        ("ANALYZE TABLE t", true),
        ("ANALYZE NO_WRITE_TO_BINLOG TABLE t", true),
        ("CHECK TABLE t", true),
        ("OPTIMIZE TABLE t", true),
        ("OPTIMIZE LOCAL TABLE t", true),
        ("REPAIR TABLE t", true),
        ("CACHE INDEX t IN hot", true),
        ("LOAD INDEX INTO CACHE t", true),
        ("FLUSH PRIVILEGES", true),
        ("flush tables", true),
        ("RESET QUERY CACHE", true),
        ("INSTALL PLUGIN p SONAME 'p.so'", true),
        ("UNINSTALL PLUGIN p", true),
        ("INSTALL COMPONENT 'file://x'", true),
        // transaction control and autocommit
        ("BEGIN", true),
        ("BEGIN WORK", true),
        ("START TRANSACTION", true),
        ("start transaction read only", true),
        ("COMMIT", true),
        ("COMMIT WORK", true),
        ("ROLLBACK", true),
        ("SET autocommit = 1", true),
        ("set AUTOCOMMIT=ON", true),
        ("SET @@autocommit = 1", true),
        ("SET SESSION autocommit = 1", true),
        ("SET @@session.autocommit = 0", true),
        ("XA START 'x'", true),
        // replication
        ("START SLAVE", true),
        ("STOP REPLICA", true),
        ("CHANGE MASTER TO MASTER_HOST = 'h'", true),
        ("CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'h'", true),
        ("RESET MASTER", true),
        ("PURGE BINARY LOGS TO 'b.01'", true),
        // leading comments and whitespace do not hide a statement
        ("-- note\n  CREATE TABLE t (x INT)", true),
        ("/* c */ DROP TABLE t", true),
        ("# mysql comment\nTRUNCATE t", true),
        // versioned comments are executed by MySQL, so they are read
        (
            "/*!50001 CREATE ALGORITHM=UNDEFINED VIEW v AS SELECT 1 */",
            true,
        ),
        ("/*!40000 ALTER TABLE t DISABLE KEYS */", true),
        // allowed: temporary tables, data changes, savepoints
        ("CREATE TEMPORARY TABLE tmp (x INT)", false),
        ("create temporary table if not exists tmp (x int)", false),
        ("CREATE OR REPLACE TEMPORARY TABLE tmp (x INT)", false),
        ("DROP TEMPORARY TABLE tmp", false),
        ("DROP TEMPORARY TABLE IF EXISTS tmp", false),
        ("INSERT INTO t VALUES (1)", false),
        ("UPDATE t SET x = 'CREATE TABLE y'", false),
        ("DELETE FROM t WHERE note = 'DROP TABLE t; COMMIT'", false),
        ("SELECT 'GRANT ALL' AS g", false),
        ("REPLACE INTO t VALUES (1)", false),
        ("INSERT INTO t SELECT * FROM u", false),
        ("SAVEPOINT s", false),
        ("ROLLBACK TO SAVEPOINT s", false),
        ("RELEASE SAVEPOINT s", false),
        ("SET NAMES utf8mb4", false),
        ("SET @x = 1", false),
        ("SET foreign_key_checks = 0", false),
        ("/*!40101 SET NAMES utf8 */", false),
        ("CALL p()", false),
        ("DO SLEEP(0)", false),
        ("LOAD DATA INFILE 'x' INTO TABLE t", false),
        ("WITH c AS (SELECT 1) SELECT * FROM c", false),
        ("-- CREATE TABLE t (x INT)\nSELECT 1", false),
        ("/* DROP TABLE t */ SELECT 1", false),
        ("SELECT `create` FROM `drop`", false),
    ];

    #[test]
    fn mysql_implicit_commit_classifier() {
        assert!(MYSQL.len() >= 80, "{} cases", MYSQL.len());
        let mut wrong = Vec::new();
        for (sql, expected) in MYSQL {
            let verdict = refused(sql, Dialect::MySql);
            if verdict != [*expected] {
                wrong.push(format!("{sql:?}: refused {verdict:?}, expected {expected}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn mysql_delimiter_blocks_with_procedure_bodies() {
        let script = "INSERT INTO t VALUES (1);\nDELIMITER //\n\
                      CREATE PROCEDURE p() BEGIN\n  INSERT INTO t VALUES (2);\n  COMMIT;\nEND //\n\
                      DELIMITER ;\nUPDATE t SET x = 2;";
        assert_eq!(refused(script, Dialect::MySql), [false, true, false]);
    }

    #[test]
    fn install_allows_ddl_on_mysql_only() {
        let create = &split("CREATE TABLE t (x INT)", Dialect::MySql).unwrap()[0];
        assert!(check_install(create, Dialect::MySql).is_ok());
        let commit = &split("COMMIT", Dialect::MySql).unwrap()[0];
        assert!(check_install(commit, Dialect::MySql).is_err());
        let vacuum = &split("VACUUM", Dialect::Postgres).unwrap()[0];
        assert!(check_install(vacuum, Dialect::Postgres).is_err());
    }

    #[test]
    fn refusal_names_the_statement_kind() {
        let statement = &split("ALTER TABLE t ADD x INT", Dialect::MySql).unwrap()[0];
        let refusal = check(statement, Dialect::MySql).unwrap_err();
        assert!(
            refusal
                .reason
                .starts_with("ALTER TABLE causes an implicit commit"),
            "{}",
            refusal.reason
        );
        assert!(refusal.reason.contains("transaction=\"none\""));
    }

    #[test]
    fn postgres_statements_outside_transactions() {
        let cases: &[(&str, bool)] = &[
            ("CREATE INDEX CONCURRENTLY i ON t (x)", true),
            (
                "create unique index concurrently if not exists i on t (x)",
                true,
            ),
            ("DROP INDEX CONCURRENTLY i", true),
            ("REINDEX INDEX CONCURRENTLY i", true),
            ("REINDEX DATABASE d", true),
            ("VACUUM", true),
            ("vacuum analyze t", true),
            ("CREATE DATABASE d", true),
            ("DROP DATABASE d", true),
            ("CREATE TABLESPACE ts LOCATION '/x'", true),
            ("ALTER SYSTEM SET work_mem = '1MB'", true),
            ("COMMIT PREPARED 'x'", true),
            ("PREPARE TRANSACTION 'x'", true),
            ("DISCARD ALL", true),
            ("CREATE SUBSCRIPTION s CONNECTION 'c' PUBLICATION p", true),
            ("COMMIT", true),
            ("BEGIN", true),
            ("CREATE TABLE t (x int)", false),
            ("CREATE INDEX i ON t (x)", false),
            ("ALTER TABLE t ADD COLUMN y int", false),
            ("DROP TABLE t", false),
            ("TRUNCATE t", false),
            ("REFRESH MATERIALIZED VIEW CONCURRENTLY v", false),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
                false,
            ),
            (
                "CREATE FUNCTION f() RETURNS int AS $$ BEGIN; COMMIT; $$ LANGUAGE plpgsql",
                false,
            ),
            ("SELECT 'VACUUM'", false),
            ("ANALYZE t", false),
            ("CLUSTER t USING i", false),
        ];
        for (sql, expected) in cases {
            assert_eq!(refused(sql, Dialect::Postgres), [*expected], "{sql}");
        }
    }

    #[test]
    fn sqlite_rules() {
        for sql in [
            "BEGIN",
            "begin transaction",
            "Begin Immediate",
            "COMMIT",
            "END TRANSACTION",
            "ROLLBACK",
            "VACUUM",
            "PRAGMA journal_mode = WAL",
            "pragma foreign_keys=off",
            "-- leading comment\n  COMMIT",
        ] {
            assert_eq!(
                refused(sql, Dialect::Sqlite),
                [true],
                "{sql} should be refused"
            );
        }
        for sql in [
            "SELECT 'COMMIT'",
            "INSERT INTO t VALUES ('BEGIN')",
            "ROLLBACK TO SAVEPOINT a",
            "SAVEPOINT a",
            "CREATE TABLE t (x int)",
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END",
            "PRAGMA user_version = 3",
            "/* COMMIT */ UPDATE t SET x = 1",
            "DROP TABLE t",
        ] {
            assert_eq!(refused(sql, Dialect::Sqlite), [false], "{sql}");
        }
    }

    #[test]
    fn install_refuses_tables_that_cannot_roll_back() {
        let judge =
            |sql: &str| check_install(&split(sql, Dialect::MySql).unwrap()[0], Dialect::MySql);
        for sql in [
            "CREATE TABLE t (x INT) ENGINE=MyISAM",
            "create table t (x int) engine = memory",
            "CREATE TABLE t (x INT) ENGINE `Aria` DEFAULT CHARSET=utf8mb4",
        ] {
            let refusal = judge(sql).unwrap_err();
            assert!(refusal.reason.contains("cannot roll back"), "{sql}");
        }
        for sql in [
            "CREATE TABLE t (x INT) ENGINE=InnoDB",
            "CREATE TABLE t (engine VARCHAR(10))",
            "INSERT INTO t VALUES ('ENGINE=MyISAM')",
        ] {
            assert_eq!(judge(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn table_guard_finds_tables_wherever_a_statement_names_them() {
        let guard = TableGuard::new([
            ("app", "hits", "MyISAM", true),
            ("other", "cache", "MEMORY", false),
        ]);
        let judge =
            |sql: &str| guard.check(&split(sql, Dialect::MySql).unwrap()[0], Dialect::MySql);
        for sql in [
            "INSERT INTO hits VALUES (1)",
            "insert into `HITS` (n) select 1",
            "UPDATE accounts SET x = (SELECT count(*) FROM hits)",
            "DELETE FROM app.hits WHERE n > 1",
            "UPDATE a JOIN hits h ON h.n = a.id SET a.x = 0",
            "SELECT * FROM other.cache",
            "REPLACE INTO hits VALUES (2)",
            // Unparsable: any word naming the table is enough.
            "FROBNICATE hits NOW",
        ] {
            let refusal = judge(sql).unwrap_err();
            assert!(refusal.reason.contains("storage engine"), "{sql}");
        }
        for sql in [
            "SELECT hits FROM accounts",
            "UPDATE accounts SET note = 'hits'",
            "SELECT * FROM cache",
            "INSERT INTO other.hits VALUES (1)",
        ] {
            assert_eq!(judge(sql), Ok(()), "{sql}");
        }
        assert!(TableGuard::new([]).is_empty());
    }

    fn always(sql: &str, dialect: Dialect) -> Result<(), Refusal> {
        let statements = split(sql, dialect).unwrap();
        assert_eq!(statements.len(), 1, "{sql}");
        check_always(&statements[0], dialect)
    }

    #[test]
    fn own_tables_are_refused_in_every_dialect() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            for sql in [
                "DROP TABLE upgrader_history",
                "drop table if exists UPGRADER_HISTORY",
                "DROP TABLE t, upgrader_version",
                "DELETE FROM upgrader_history WHERE id > 3",
                "UPDATE upgrader_version SET version = '9.9.9'",
                "INSERT INTO upgrader_history (id) VALUES (1)",
                "ALTER TABLE upgrader_schema ADD x INT",
                "ALTER TABLE t RENAME TO upgrader_version",
                "CREATE TABLE upgrader_future (x INT)",
                "CREATE INDEX i ON upgrader_history (id)",
                "SELECT * FROM t JOIN upgrader_history h ON h.id = t.id",
                "SELECT (SELECT count(*) FROM upgrader_history)",
                "CREATE VIEW v AS SELECT * FROM upgrader_version",
                "SELECT upgrader_history.id FROM t",
                // unparsable: the name alone is enough
                "FROBNICATE upgrader_history NOW",
            ] {
                let refusal = always(sql, dialect).unwrap_err();
                assert!(
                    refusal.reason.contains("upgrader's own tables"),
                    "{dialect:?} {sql}: {}",
                    refusal.reason
                );
            }
        }
        for (sql, dialect) in [
            ("DROP TABLE \"upgrader_history\"", Dialect::Postgres),
            ("DROP TABLE public.upgrader_history", Dialect::Postgres),
            (
                "DROP TABLE \"public\".\"Upgrader_History\"",
                Dialect::Postgres,
            ),
            ("DROP TABLE `app`.`upgrader_history`", Dialect::MySql),
            ("RENAME TABLE upgrader_history TO h", Dialect::MySql),
            ("TRUNCATE upgrader_history", Dialect::Postgres),
            ("CREATE TABLE t LIKE upgrader_history", Dialect::MySql),
            (
                "CREATE TABLE t (a INT REFERENCES upgrader_history (id))",
                Dialect::Postgres,
            ),
            ("LOCK TABLES upgrader_history WRITE", Dialect::MySql),
            (
                "COMMENT ON TABLE upgrader_history IS 'x'",
                Dialect::Postgres,
            ),
            ("DROP TABLE [upgrader_history]", Dialect::Sqlite),
            (
                "DO $$ BEGIN DROP TABLE upgrader_history; END $$",
                Dialect::Postgres,
            ),
            (
                "DO LANGUAGE plpgsql 'BEGIN DELETE FROM upgrader_version; END'",
                Dialect::Postgres,
            ),
            (
                "PREPARE s FROM 'DROP TABLE upgrader_history'",
                Dialect::MySql,
            ),
            (
                "EXECUTE IMMEDIATE 'DELETE FROM upgrader_version'",
                Dialect::MySql,
            ),
        ] {
            let refusal = always(sql, dialect).unwrap_err();
            assert!(
                refusal.reason.contains("upgrader's own tables"),
                "{dialect:?} {sql}: {}",
                refusal.reason
            );
        }
    }

    #[test]
    fn other_uses_of_the_prefix_pass() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            for sql in [
                // columns named upgrader_x
                "ALTER TABLE t ADD COLUMN upgrader_note INT",
                "CREATE TABLE t (id INT, upgrader_note TEXT)",
                "SELECT upgrader_note FROM t WHERE upgrader_note IS NOT NULL",
                "UPDATE t SET upgrader_note = 'x'",
                "INSERT INTO t (id, upgrader_note) VALUES (1, 'x')",
                "SELECT t.upgrader_note FROM t",
                "CREATE INDEX i ON t (upgrader_note)",
                // strings and comments
                "INSERT INTO t VALUES ('upgrader_history')",
                "SELECT 1 -- DROP TABLE upgrader_history",
                "/* upgrader_version */ SELECT 1",
                "SELECT 'pg_advisory_unlock_all()'",
                // other names
                "DROP TABLE my_upgrader_history",
                "CREATE TABLE upgraders (x INT)",
                "SELECT count(*) FROM history",
            ] {
                assert_eq!(always(sql, dialect), Ok(()), "{dialect:?} {sql}");
            }
        }
        // A function body is not run by creating the function.
        assert_eq!(
            always(
                "CREATE FUNCTION f() RETURNS void AS $$ SELECT pg_advisory_unlock_all() $$ LANGUAGE sql",
                Dialect::Postgres
            ),
            Ok(())
        );
    }

    #[test]
    fn releasing_upgraders_locks_is_refused() {
        for (sql, dialect) in [
            ("SELECT pg_advisory_unlock_all()", Dialect::Postgres),
            ("select PG_ADVISORY_UNLOCK_ALL ()", Dialect::Postgres),
            (
                "SELECT pg_catalog.pg_advisory_unlock(42)",
                Dialect::Postgres,
            ),
            ("SELECT \"pg_advisory_unlock\"(1, 2)", Dialect::Postgres),
            (
                "SELECT x FROM t WHERE pg_advisory_unlock(1)",
                Dialect::Postgres,
            ),
            (
                "DO $$ BEGIN PERFORM pg_advisory_unlock_all(); END $$",
                Dialect::Postgres,
            ),
            ("SELECT RELEASE_ALL_LOCKS()", Dialect::MySql),
            ("DO RELEASE_LOCK('upgrader')", Dialect::MySql),
            ("SET @x = release_lock('app')", Dialect::MySql),
            (
                "EXECUTE IMMEDIATE 'SELECT RELEASE_ALL_LOCKS()'",
                Dialect::MySql,
            ),
            (
                "CREATE PROCEDURE p() BEGIN DO RELEASE_ALL_LOCKS(); END",
                Dialect::MySql,
            ),
        ] {
            let refusal = always(sql, dialect).unwrap_err();
            assert!(
                refusal.reason.contains("release upgrader's lock"),
                "{sql}: {}",
                refusal.reason
            );
        }
        for (sql, dialect) in [
            ("SELECT pg_advisory_lock(1)", Dialect::Postgres),
            ("SELECT pg_advisory_xact_lock(1)", Dialect::Postgres),
            ("SELECT pg_advisory_unlock_all FROM t", Dialect::Postgres),
            ("SELECT GET_LOCK('x', 1)", Dialect::MySql),
            ("SELECT IS_USED_LOCK('x')", Dialect::MySql),
        ] {
            assert_eq!(always(sql, dialect), Ok(()), "{sql}");
        }
    }

    #[test]
    fn always_rules_are_part_of_check_and_check_install() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let statement = &split("DELETE FROM upgrader_history", dialect).unwrap()[0];
            assert!(check(statement, dialect).is_err());
            assert!(check_install(statement, dialect).is_err());
        }
    }

    #[test]
    fn mysql_dynamic_sql_is_refused() {
        for sql in [
            "PREPARE s FROM 'COMMIT'",
            "prepare s from @s",
            "EXECUTE s",
            "EXECUTE s USING @a, @b",
            "EXECUTE IMMEDIATE 'COMMIT'",
            "execute immediate concat('ALTER TABLE t ', 'ADD x INT')",
        ] {
            let statement = &split(sql, Dialect::MySql).unwrap()[0];
            for verdict in [
                check(statement, Dialect::MySql),
                check_install(statement, Dialect::MySql),
            ] {
                let refusal = verdict.unwrap_err();
                assert!(
                    refusal.reason.starts_with("dynamic SQL ("),
                    "{sql}: {}",
                    refusal.reason
                );
                assert!(refusal.reason.contains("transaction=\"none\""), "{sql}");
            }
            // Outside MySQL's transaction rules it is the always-on rules only.
            assert_eq!(check_always(statement, Dialect::MySql), Ok(()), "{sql}");
        }
        // The common pattern: every statement of it that runs something is refused.
        let script = "SET @s = IF(1, 'ALTER TABLE t ADD x INT', 'SELECT 1');\nPREPARE s FROM @s;\nEXECUTE s;\nDEALLOCATE PREPARE s;";
        assert_eq!(refused(script, Dialect::MySql), [false, true, true, false]);
        // Forgetting a prepared statement runs nothing and commits nothing.
        assert_eq!(refused("DROP PREPARE s", Dialect::MySql), [false]);
        // PostgreSQL's PREPARE/EXECUTE run a statement visible at PREPARE time, which
        // cannot be a COMMIT: not dynamic SQL in this sense.
        assert_eq!(
            refused("PREPARE q AS SELECT 1; EXECUTE q", Dialect::Postgres),
            [false, false]
        );
    }

    #[test]
    fn huge_statements_are_judged_without_parsing() {
        let mut sql = String::from("INSERT INTO hits VALUES (1)");
        while sql.len() <= crate::sql::PARSE_LIMIT {
            sql.push_str(",(1)");
        }
        let statement = &split(&sql, Dialect::MySql).unwrap()[0];
        let guard = TableGuard::new([("app", "hits", "MyISAM", true)]);
        assert!(guard.check(statement, Dialect::MySql).is_err());
        assert_eq!(check(statement, Dialect::MySql), Ok(()));
        let own = sql.replacen("hits", "upgrader_history", 1);
        let statement = &split(&own, Dialect::MySql).unwrap()[0];
        assert!(check_always(statement, Dialect::MySql).is_err());
    }
}
