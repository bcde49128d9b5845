//! upgrader's own tables (`upgrader_version`, `upgrader_history`, `upgrader_schema`):
//! created on first contact and versioned as the project `upgrader`, so that later
//! releases can change them with the same safety as any application.

use serde::Serialize;

use super::{Backend, DbError, Value};
use crate::sql::Dialect;

/// The project name under which upgrader records the version of its own tables.
pub const OWN_PROJECT: &str = "upgrader";

/// One change to upgrader's own tables.
struct OwnStep {
    to: &'static str,
    statements: fn(Dialect) -> Vec<String>,
}

/// upgrader's own upgrades, oldest first; a later release appends, never edits.
const OWN_STEPS: &[OwnStep] = &[
    OwnStep {
        to: "1.0.0",
        statements: schema_v1,
    },
    OwnStep {
        to: "1.1.0",
        statements: schema_v1_1,
    },
];

/// Column types that differ between dialects.
struct Types {
    id: &'static str,
    key: &'static str,
    text: &'static str,
    boolean: &'static str,
}

fn types(dialect: Dialect) -> Types {
    match dialect {
        Dialect::Sqlite => Types {
            // Without AUTOINCREMENT: rows are never deleted, so ids still only grow, and each
            // insert skips a write to sqlite_sequence.
            id: "INTEGER PRIMARY KEY",
            key: "TEXT",
            text: "TEXT",
            boolean: "INTEGER",
        },
        Dialect::Postgres => Types {
            id: "BIGSERIAL PRIMARY KEY",
            key: "VARCHAR(200)",
            text: "TEXT",
            boolean: "BOOLEAN",
        },
        Dialect::MySql => Types {
            id: "BIGINT AUTO_INCREMENT PRIMARY KEY",
            key: "VARCHAR(200)",
            text: "TEXT",
            boolean: "BOOLEAN",
        },
    }
}

fn schema_v1(dialect: Dialect) -> Vec<String> {
    let Types {
        id,
        key,
        text,
        boolean,
    } = types(dialect);
    let engine = if dialect == Dialect::MySql {
        " ENGINE=InnoDB"
    } else {
        ""
    };
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS upgrader_version (project {key} PRIMARY KEY, \
             version {key} NOT NULL, updated_at {key} NOT NULL){engine}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS upgrader_history (id {id}, project {key} NOT NULL, \
             kind {key} NOT NULL, name {key} NOT NULL, from_version {key}, to_version {key} NOT NULL, \
             checksum {key}, started_at {key} NOT NULL, finished_at {key} NOT NULL, \
             duration_ms BIGINT NOT NULL, host {key} NOT NULL, pid BIGINT NOT NULL, \
             success {boolean} NOT NULL, error {text}){engine}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS upgrader_schema (project {key} NOT NULL, \
             table_name {key} NOT NULL, table_version {key} NOT NULL, schema_text {text} NOT NULL, \
             fingerprint {key} NOT NULL, recorded_at {key} NOT NULL, \
             PRIMARY KEY (project, table_name, table_version)){engine}"
        ),
    ]
}

/// `upgrader_schema` as 1.1.0 has it: a dropped table's row has no text (and so no
/// fingerprint), and MySQL keeps texts of up to 16 MiB. Made again rather than altered:
/// 1.0.0 created it but never wrote to it, and SQLite cannot drop a NOT NULL.
fn schema_table(dialect: Dialect) -> String {
    let Types { key, .. } = types(dialect);
    let (long_text, engine) = match dialect {
        Dialect::MySql => ("MEDIUMTEXT", " ENGINE=InnoDB"),
        _ => ("TEXT", ""),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS upgrader_schema (project {key} NOT NULL, \
         table_name {key} NOT NULL, table_version {key} NOT NULL, schema_text {long_text}, \
         fingerprint {key}, recorded_at {key} NOT NULL, \
         PRIMARY KEY (project, table_name, table_version)){engine}"
    )
}

fn schema_v1_1(dialect: Dialect) -> Vec<String> {
    vec![
        "DROP TABLE IF EXISTS upgrader_schema".to_string(),
        schema_table(dialect),
    ]
}

/// upgrader's own tables, all of which the newest schema has.
const OWN_TABLES: [&str; 3] = ["upgrader_version", "upgrader_history", "upgrader_schema"];

/// `CREATE TABLE IF NOT EXISTS` statements of the newest shape of every own table: a
/// release that changes one must change this too (OWN_STEPS bring older databases there).
fn latest_schema(dialect: Dialect) -> Vec<String> {
    let mut statements = schema_v1(dialect);
    statements.truncate(2);
    statements.push(schema_table(dialect));
    statements
}

/// The newest version of upgrader's own tables this build knows.
pub fn own_version() -> &'static str {
    OWN_STEPS.last().map_or("0.0.0", |step| step.to)
}

/// Creates or upgrades upgrader's own tables inside the caller's open transaction.
pub fn ensure_in_transaction(db: &mut dyn Backend, now: &str) -> Result<(), DbError> {
    let current = read_version(db, OWN_PROJECT)?;
    if current.as_deref() == Some(own_version()) {
        // Recorded as current, yet a table may have been dropped by hand (or by a step
        // of an older release, before the guard refused it): recreate what is missing,
        // so that a run can always record what it did.
        for table in OWN_TABLES {
            if !db.table_exists(table)? {
                log::warn!("upgrader's table {table} was missing; it is created again");
                for statement in latest_schema(db.dialect()) {
                    db.execute(&statement)?;
                }
                db.resume_after_implicit_commit()?;
                break;
            }
        }
        return Ok(());
    }
    if current.is_none() && !db.table_exists("upgrader_schema")? {
        // A database upgrader has not touched: its tables made as this release has them,
        // not as 1.0.0 had them and then changed (each change is DDL a fresh database
        // would pay for on its first run).
        for statement in latest_schema(db.dialect()) {
            db.execute(&statement)?;
        }
        db.resume_after_implicit_commit()?;
        return write_version(db, OWN_PROJECT, own_version(), now);
    }
    let current = current
        .as_deref()
        .and_then(|v| crate::version::Version::parse(v).ok());
    for step in OWN_STEPS {
        let to = crate::version::Version::parse(step.to).expect("own versions are valid");
        if current.as_ref().is_some_and(|current| *current >= to) {
            continue;
        }
        for statement in (step.statements)(db.dialect()) {
            db.execute(&statement)?;
        }
        // On MySQL that DDL committed; the caller's transaction goes on.
        db.resume_after_implicit_commit()?;
        write_version(db, OWN_PROJECT, step.to, now)?;
    }
    Ok(())
}

/// The version recorded for a project; `None` when there is none or the tables do not exist.
pub fn read_version(db: &mut dyn Backend, project: &str) -> Result<Option<String>, DbError> {
    // One round trip where the backend can tell a missing table from the answer.
    let Some(rows) = db.query_own_table(
        "upgrader_version",
        "SELECT version FROM upgrader_version WHERE project = ?",
        &[Value::from(project)],
    )?
    else {
        return Ok(None);
    };
    Ok(rows
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next())
        .and_then(|value| value.as_text().map(str::to_string)))
}

/// The versions recorded for several projects, in one query: `None` for a project with
/// none (or when the tables do not exist).
pub fn read_versions(
    db: &mut dyn Backend,
    projects: &[&str],
) -> Result<Vec<Option<String>>, DbError> {
    let placeholders = vec!["?"; projects.len()].join(", ");
    let params: Vec<Value> = projects.iter().map(|p| Value::from(*p)).collect();
    let Some(rows) = db.query_own_table(
        "upgrader_version",
        &format!("SELECT project, version FROM upgrader_version WHERE project IN ({placeholders})"),
        &params,
    )?
    else {
        return Ok(vec![None; projects.len()]);
    };
    let mut versions = vec![None; projects.len()];
    for row in rows {
        let (Some(project), Some(version)) = (
            row.first().and_then(Value::as_text),
            row.get(1).and_then(Value::as_text),
        ) else {
            continue;
        };
        if let Some(index) = projects.iter().position(|p| *p == project) {
            versions[index] = Some(version.to_string());
        }
    }
    Ok(versions)
}

/// Records a project's version.
pub fn write_version<B: Backend + ?Sized>(
    db: &mut B,
    project: &str,
    version: &str,
    now: &str,
) -> Result<(), DbError> {
    let changed = db.execute_params(
        "UPDATE upgrader_version SET version = ?, updated_at = ? WHERE project = ?",
        &[version.into(), now.into(), project.into()],
    )?;
    if changed == 0 {
        db.execute_params(
            "INSERT INTO upgrader_version (project, version, updated_at) VALUES (?, ?, ?)",
            &[project.into(), version.into(), now.into()],
        )?;
    }
    Ok(())
}

/// One row of `upgrader_history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    /// Row id (assigned by the database).
    pub id: Option<i64>,
    /// The project upgraded.
    pub project: String,
    /// `install`, `step`, `version-only` or `accept`.
    pub kind: String,
    /// Step name (`install` for the install, `version-only` for a bump).
    pub name: String,
    /// The version before; none for an install.
    pub from_version: Option<String>,
    /// The version after.
    pub to_version: String,
    /// SHA-256 of the step's content; none for a version-only bump.
    pub checksum: Option<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Wall-clock duration.
    pub duration_ms: i64,
    /// Host that ran it.
    pub host: String,
    /// Process that ran it.
    pub pid: i64,
    /// Whether it was applied.
    pub success: bool,
    /// The error, for a failed run; for an `accept` row, the reason given.
    pub error: Option<String>,
    /// For an `accept` row: the reason given (the `error` column, named for what it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Appends a history row.
pub fn insert_history(db: &mut dyn Backend, row: &HistoryRow) -> Result<(), DbError> {
    insert_history_rows(db, std::slice::from_ref(row))
}

/// How many rows one INSERT carries: 13 parameters each stays far below every backend's
/// limit on bound parameters, and a driver keeps a buffer the size of the largest
/// message it sent (PostgreSQL: 150 KB for 200 rows) for the rest of the run.
pub const ROWS_PER_INSERT: usize = 50;

/// Appends history rows in as few statements as possible: a run of many small steps
/// would otherwise spend a round trip per step on bookkeeping.
pub fn insert_history_rows<B: Backend + ?Sized>(
    db: &mut B,
    rows: &[HistoryRow],
) -> Result<(), DbError> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let (sql, values) = history_insert(chunk);
        db.execute_own(&sql, &values)?;
    }
    Ok(())
}

/// Appends history rows and records a project's version, in the open transaction. On
/// the server backends this costs no round trip of its own: the writes go with the
/// commit's (see [`Backend::write_with_commit`]), so that recording a step of a long
/// per-step or `transaction="none"` run adds server work but no waiting.
pub fn record<B: Backend + ?Sized>(
    db: &mut B,
    rows: &[HistoryRow],
    project: &str,
    version: &str,
    now: &str,
) -> Result<(), DbError> {
    let dialect = db.dialect();
    if dialect == Dialect::Sqlite {
        insert_history_rows(db, rows)?;
        return write_version(db, project, version, now);
    }
    let (upsert, mut values): (&str, Vec<Value>) = match dialect {
        Dialect::MySql => (
            "INSERT INTO upgrader_version (project, version, updated_at) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE version = ?, updated_at = ?",
            vec![
                project.into(),
                version.into(),
                now.into(),
                version.into(),
                now.into(),
            ],
        ),
        _ => (
            "INSERT INTO upgrader_version (project, version, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (project) DO UPDATE SET version = EXCLUDED.version, \
             updated_at = EXCLUDED.updated_at",
            vec![project.into(), version.into(), now.into()],
        ),
    };
    let mut chunks = rows.chunks(ROWS_PER_INSERT);
    let last = chunks.next_back();
    for chunk in chunks {
        let (sql, values) = history_insert(chunk);
        db.write_with_commit(&sql, &values)?;
    }
    match last {
        // PostgreSQL: one statement for both (a data-modifying `WITH`).
        Some(chunk) if dialect == Dialect::Postgres => {
            let (insert, mut first) = history_insert(chunk);
            first.append(&mut values);
            db.write_with_commit(&format!("WITH recorded AS ({insert}) {upsert}"), &first)
        }
        Some(chunk) => {
            let (sql, history) = history_insert(chunk);
            db.write_with_commit(&sql, &history)?;
            db.write_with_commit(upsert, &values)
        }
        None => db.write_with_commit(upsert, &values),
    }
}

/// Where [`history_insert`] puts a row's `finished_at` among its 13 values
/// (`duration_ms` follows).
pub(crate) const HISTORY_FINISHED_AT: usize = 7;

/// One multi-row INSERT of history rows (at most [`ROWS_PER_INSERT`]) and its values.
pub(crate) fn history_insert(rows: &[HistoryRow]) -> (String, Vec<Value>) {
    const COLUMNS: &str = "INSERT INTO upgrader_history (project, kind, name, from_version, \
        to_version, checksum, started_at, finished_at, duration_ms, host, pid, success, error) VALUES ";
    const ONE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::with_capacity(COLUMNS.len() + rows.len() * (ONE_ROW.len() + 2));
    sql.push_str(COLUMNS);
    let mut values = Vec::with_capacity(rows.len() * 13 + 3);
    for (index, row) in rows.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ONE_ROW);
        values.extend([
            row.project.as_str().into(),
            row.kind.as_str().into(),
            row.name.as_str().into(),
            row.from_version.clone().into(),
            row.to_version.as_str().into(),
            row.checksum.clone().into(),
            row.started_at.as_str().into(),
            row.finished_at.as_str().into(),
            row.duration_ms.into(),
            row.host.as_str().into(),
            row.pid.into(),
            row.success.into(),
            row.error.clone().into(),
        ]);
    }
    (sql, values)
}

/// A project's history, oldest first; empty when the tables do not exist.
pub fn read_history(db: &mut dyn Backend, project: &str) -> Result<Vec<HistoryRow>, DbError> {
    read_histories(db, &[project])
}

/// The history of several projects, oldest first, interleaved as it happened; empty when
/// the tables do not exist.
pub fn read_histories(db: &mut dyn Backend, projects: &[&str]) -> Result<Vec<HistoryRow>, DbError> {
    if !db.table_exists("upgrader_history")? {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; projects.len()].join(", ");
    let params: Vec<Value> = projects.iter().map(|p| Value::from(*p)).collect();
    let rows = db.query(
        &format!(
            "SELECT id, project, kind, name, from_version, to_version, checksum, started_at, \
             finished_at, duration_ms, host, pid, success, error FROM upgrader_history \
             WHERE project IN ({placeholders}) ORDER BY id"
        ),
        &params,
    )?;
    let text = |value: &Value| value.as_text().map(str::to_string);
    Ok(rows
        .iter()
        .map(|row| HistoryRow {
            id: row[0].as_int(),
            project: text(&row[1]).unwrap_or_default(),
            kind: text(&row[2]).unwrap_or_default(),
            name: text(&row[3]).unwrap_or_default(),
            from_version: text(&row[4]),
            to_version: text(&row[5]).unwrap_or_default(),
            checksum: text(&row[6]),
            started_at: text(&row[7]).unwrap_or_default(),
            finished_at: text(&row[8]).unwrap_or_default(),
            duration_ms: row[9].as_int().unwrap_or(0),
            host: text(&row[10]).unwrap_or_default(),
            pid: row[11].as_int().unwrap_or(0),
            success: row[12].as_int().unwrap_or(0) != 0,
            error: text(&row[13]),
            reason: match text(&row[2]).as_deref() {
                Some("accept") => text(&row[13]),
                _ => None,
            },
        })
        .collect())
}

/// One row of `upgrader_schema` to write: a table's text at the version its project
/// reached (`None`: the table was dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRow {
    /// The table.
    pub table: String,
    /// Its normalized text; `None` for a dropped table.
    pub text: Option<String>,
    /// SHA-256 of the text.
    pub fingerprint: Option<String>,
}

/// Every schema record of these projects (`tables`: of those tables only, named in any
/// case), as `(project, record)`, with their texts when
/// `texts` (a run compares fingerprints only: a thousand texts cost more to read than
/// the rest of its recording); none when the table does not exist (a database no run
/// has recorded yet).
pub fn read_schema_records(
    db: &mut dyn Backend,
    projects: &[&str],
    texts: bool,
    tables: Option<&[String]>,
) -> Result<Vec<(String, crate::schema::Recorded)>, DbError> {
    let placeholders = vec!["?"; projects.len()].join(", ");
    let mut params: Vec<Value> = projects.iter().map(|p| Value::from(*p)).collect();
    let only = match tables {
        None => String::new(),
        Some(tables) => {
            params.extend(tables.iter().map(|t| Value::from(t.to_lowercase())));
            format!(
                " AND lower(table_name) IN ({})",
                vec!["?"; tables.len()].join(", ")
            )
        }
    };
    let Some(rows) = db.query_own_table(
        "upgrader_schema",
        &format!(
            "SELECT project, table_name, table_version, fingerprint{} FROM upgrader_schema \
             WHERE project IN ({placeholders}){only}",
            if texts { ", schema_text" } else { "" }
        ),
        &params,
    )?
    else {
        return Ok(Vec::new());
    };
    rows.iter()
        .map(|row| record_of(row, texts.then_some(4)))
        .collect()
}

/// What a run reads of the records before it records schemas, in one query: the records
/// (fingerprints, not texts) of these projects (`tables`: of those tables only, each
/// named as the run's DDL spelled it and in lower case), and whether `root` has any
/// record at all. Only inside the run's transaction, once upgrader's tables are ensured
/// (`ensure_in_transaction`): it does not ask whether `upgrader_schema` exists.
pub fn read_run_records(
    db: &mut dyn Backend,
    projects: &[&str],
    root: &str,
    tables: Option<&[String]>,
) -> Result<(Vec<(String, crate::schema::Recorded)>, bool), DbError> {
    if tables.is_some_and(<[String]>::is_empty) {
        let any = db.query_texts(
            "SELECT project, table_name, table_version, fingerprint FROM upgrader_schema \
             WHERE project IN (?) LIMIT 1",
            &[root.into()],
        )?;
        return Ok((Vec::new(), !any.is_empty()));
    }
    let mut sql = format!(
        "SELECT project, table_name, table_version, fingerprint FROM upgrader_schema \
         WHERE project IN ({})",
        vec!["?"; projects.len()].join(", ")
    );
    let mut params: Vec<Value> = projects.iter().map(|p| Value::from(*p)).collect();
    if let Some(tables) = tables {
        // PostgreSQL keeps names as written (or folded to lower case): an exact match
        // uses the primary key. Elsewhere names match in any case (SQLite's in ASCII, as
        // SQLite matches them).
        let (column, names): (&str, Vec<String>) = match db.dialect() {
            Dialect::Postgres => ("table_name", tables.to_vec()),
            Dialect::Sqlite => ("table_name COLLATE NOCASE", tables.to_vec()),
            Dialect::MySql => {
                let mut lower: Vec<String> = tables.iter().map(|t| t.to_lowercase()).collect();
                lower.sort_unstable();
                lower.dedup();
                ("lower(table_name)", lower)
            }
        };
        sql.push_str(&format!(
            " AND {column} IN ({})",
            vec!["?"; names.len()].join(", ")
        ));
        params.extend(names.into_iter().map(Value::from));
        // One row (without a table) when the root has records of other tables.
        sql.push_str(
            " UNION ALL SELECT project, NULL, NULL, NULL FROM \
             (SELECT project FROM upgrader_schema WHERE project = ? LIMIT 1) root",
        );
        params.push(root.into());
    }
    let rows = db.query_texts(&sql, &params)?;
    let mut root_has = false;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let text = |index: usize| row.get(index).and_then(Value::as_text);
        root_has |= text(0) == Some(root);
        if text(1).is_none() {
            continue;
        }
        records.push(record_of(&row, None)?);
    }
    Ok((records, root_has))
}

/// One `(project, record)` of a row `project, table_name, table_version, fingerprint`
/// (and `schema_text` at `text`).
fn record_of(
    row: &[Value],
    text_at: Option<usize>,
) -> Result<(String, crate::schema::Recorded), DbError> {
    let text = |index: usize| row.get(index).and_then(Value::as_text);
    let (Some(project), Some(table), Some(version)) = (text(0), text(1), text(2)) else {
        return Err(DbError::new(
            "upgrader_schema has a row without its project, table or version",
        ));
    };
    let version = crate::version::Version::parse(version).map_err(|e| {
        DbError::new(format!(
            "upgrader_schema records {table} of {project} at {version}: {e}"
        ))
    })?;
    Ok((
        project.to_string(),
        crate::schema::Recorded {
            table: table.to_string(),
            version,
            fingerprint: text(3).map(str::to_string),
            text: text_at.and_then(text).map(str::to_string),
        },
    ))
}

/// How many schema rows one INSERT carries: a run records a hundred tables at a time,
/// and a statement of a thousand rows' texts and values would be most of its memory.
const SCHEMA_ROWS_PER_INSERT: usize = 100;

/// Writes `rows` for `project` at `version`, in a few statements whatever their number;
/// `replacing`: first deletes what was recorded for those tables at that version (a
/// version reached again after `verify --repair-version`, a table accepted as it is).
pub fn write_schema_rows(
    db: &mut dyn Backend,
    project: &str,
    version: &str,
    rows: &[SchemaRow],
    now: &str,
    replacing: bool,
) -> Result<(), DbError> {
    for chunk in rows.chunks(SCHEMA_ROWS_PER_INSERT) {
        if replacing {
            let mut params: Vec<Value> = vec![project.into(), version.into()];
            params.extend(chunk.iter().map(|row| Value::from(row.table.as_str())));
            db.execute_texts(
                &format!(
                    "DELETE FROM upgrader_schema WHERE project = ? AND table_version = ? \
                     AND table_name IN ({})",
                    vec!["?"; chunk.len()].join(", ")
                ),
                &params,
            )?;
        }
        let mut sql = String::from(
            "INSERT INTO upgrader_schema (project, table_name, table_version, schema_text, \
             fingerprint, recorded_at) VALUES ",
        );
        let mut values = Vec::with_capacity(chunk.len() * 6);
        for (index, row) in chunk.iter().enumerate() {
            if index > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?)");
            values.extend([
                project.into(),
                row.table.as_str().into(),
                version.into(),
                row.text.clone().into(),
                row.fingerprint.clone().into(),
                now.into(),
            ]);
        }
        db.execute_texts(&sql, &values)?;
    }
    Ok(())
}
