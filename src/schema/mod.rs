//! What a table really is: the catalog facts a backend reads ([`TableFacts`]), turned into
//! one normalized, dialect-specific text per table ([`normalize`]) and its SHA-256
//! fingerprint, and the comparison of live tables with what runs recorded ([`compare`]).
//! Pure: the facts come from `db/*` (which alone knows the catalog queries); nothing here
//! talks to a database.
//!
//! The text is meant to be read in a diff: one line per column (in table order), then the
//! constraints, indexes, foreign keys and triggers, each sorted, so that the same table
//! always gives the same text. Nothing volatile goes in: no counters, statistics, OIDs,
//! sequence positions, and no names the server makes up for constraints.

mod compare;
mod mysql;
mod postgres;
mod sqlite;
mod sqlite_columns;

pub use compare::{compare, consistent_version, unified_diff, Recorded, TableCheck, TableState};
pub(crate) use sqlite_columns::defined_columns;

use crate::sql::Dialect;

/// One table's catalog facts, as the backend read them (not yet normalized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFacts {
    /// The table's name.
    pub name: String,
    /// Its columns, in table order.
    pub columns: Vec<ColumnFacts>,
    /// Primary key, unique, check, foreign key and exclusion constraints.
    pub constraints: Vec<ConstraintFacts>,
    /// Its indexes, including those that back a constraint (`backs_constraint`).
    pub indexes: Vec<IndexFacts>,
    /// Its triggers.
    pub triggers: Vec<TriggerFacts>,
    /// Table options worth comparing (MySQL's storage engine).
    pub options: Vec<String>,
    /// The table's own definition where the catalog keeps only that (SQLite's `CREATE
    /// TABLE` text, for its check constraints).
    pub definition: Option<String>,
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnFacts {
    /// Its name.
    pub name: String,
    /// Its type as the catalog spells it.
    pub data_type: String,
    /// Whether it accepts NULL.
    pub nullable: bool,
    /// Its default expression, as the catalog spells it.
    pub default: Option<String>,
    /// Anything else that changes what it does: identity, generated, auto-increment.
    pub extra: Option<String>,
}

/// What kind of constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConstraintKind {
    /// `PRIMARY KEY`.
    PrimaryKey,
    /// `UNIQUE`.
    Unique,
    /// `CHECK`.
    Check,
    /// `FOREIGN KEY`.
    ForeignKey,
    /// PostgreSQL's `EXCLUDE`.
    Exclusion,
}

/// One constraint, described by what it does, never by a name the server may make up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintFacts {
    /// Its kind.
    pub kind: ConstraintKind,
    /// The columns it covers, in key order (none when `definition` says it all).
    pub columns: Vec<String>,
    /// The server's own text for it (PostgreSQL's `pg_get_constraintdef`, a check's
    /// expression).
    pub definition: Option<String>,
    /// A foreign key's referenced table and columns.
    pub references: Option<(String, Vec<String>)>,
    /// A foreign key's `ON UPDATE` action.
    pub on_update: Option<String>,
    /// A foreign key's `ON DELETE` action.
    pub on_delete: Option<String>,
}

impl ConstraintFacts {
    /// A constraint of `kind` over `columns`.
    pub fn new(kind: ConstraintKind, columns: Vec<String>) -> Self {
        ConstraintFacts {
            kind,
            columns,
            definition: None,
            references: None,
            on_update: None,
            on_delete: None,
        }
    }
}

/// One index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFacts {
    /// Its name.
    pub name: String,
    /// Whether it is unique.
    pub unique: bool,
    /// Its access method (`btree`, `BTREE`, `HASH`, `gin`, …) where the catalog says.
    pub method: Option<String>,
    /// Its key parts in order: a column or expression, with ` DESC` or a prefix length.
    pub columns: Vec<String>,
    /// A partial index's predicate.
    pub predicate: Option<String>,
    /// The server's own definition (PostgreSQL's `pg_get_indexdef`, SQLite's `CREATE
    /// INDEX` text).
    pub definition: Option<String>,
    /// Whether it exists for a constraint (and so is described by the constraint).
    pub backs_constraint: bool,
}

/// One trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerFacts {
    /// Its name.
    pub name: String,
    /// Its whole definition, or its timing, event and statement.
    pub definition: String,
}

/// A table's normalized schema text and its SHA-256 fingerprint (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// The table's name.
    pub name: String,
    /// The normalized text.
    pub text: String,
    /// SHA-256 of `text`.
    pub fingerprint: String,
}

/// The normalized text of a table (see the module's documentation), in `dialect`.
pub fn normalize(dialect: Dialect, facts: &TableFacts) -> String {
    let cleaned = match dialect {
        Dialect::Sqlite => sqlite::clean(facts),
        Dialect::Postgres => postgres::clean(facts),
        Dialect::MySql => mysql::clean(facts),
    };
    render(&cleaned)
}

/// A table's [`TableSchema`].
pub fn schema_of(dialect: Dialect, facts: &TableFacts) -> TableSchema {
    let text = normalize(dialect, facts);
    TableSchema {
        name: facts.name.clone(),
        fingerprint: fingerprint(&text),
        text,
    }
}

/// SHA-256 of a schema text, as lower-case hex.
pub fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    crate::hex::hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// Whether a table is one of upgrader's own, which are never recorded or compared.
pub fn is_own_table(name: &str) -> bool {
    name.len() >= 9 && name[..9].eq_ignore_ascii_case("upgrader_")
}

/// A table's lines once a dialect has cleaned its facts: columns in table order, every
/// other section sorted when rendered.
#[derive(Debug, Default)]
struct Cleaned {
    name: String,
    columns: Vec<String>,
    constraints: Vec<String>,
    indexes: Vec<String>,
    triggers: Vec<String>,
    options: Vec<String>,
}

fn render(cleaned: &Cleaned) -> String {
    // Sized once: a run that made a thousand tables renders a thousand texts, and
    // growing each line by line cost more than the rest of the rendering.
    let lines = [
        &cleaned.columns,
        &cleaned.constraints,
        &cleaned.indexes,
        &cleaned.triggers,
        &cleaned.options,
    ];
    let size = "table \n".len()
        + cleaned.name.len()
        + lines
            .iter()
            .flat_map(|lines| lines.iter())
            .map(|line| line.len() + "  trigger \n".len())
            .sum::<usize>();
    let mut text = String::with_capacity(size);
    text.push_str("table ");
    text.push_str(&cleaned.name);
    text.push('\n');
    for column in &cleaned.columns {
        text.push_str("  column ");
        text.push_str(column);
        text.push('\n');
    }
    for (label, lines) in [
        ("", &cleaned.constraints),
        ("index ", &cleaned.indexes),
        ("trigger ", &cleaned.triggers),
        ("option ", &cleaned.options),
    ] {
        let mut sorted: Vec<&String> = lines.iter().collect();
        sorted.sort();
        sorted.dedup();
        for line in sorted {
            text.push_str("  ");
            text.push_str(label);
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// Whitespace runs made single spaces, and the ends trimmed: catalogs keep some texts as
/// written (SQLite's definitions, MySQL's trigger bodies), where only the tokens matter.
fn squeeze(text: &str) -> String {
    let mut squeezed = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !squeezed.is_empty() {
            squeezed.push(' ');
        }
        squeezed.push_str(word);
    }
    squeezed
}

/// A column's line: `name type [NOT NULL] [DEFAULT …] [extra]`.
fn column_line(
    name: &str,
    data_type: &str,
    nullable: bool,
    default: Option<&str>,
    extra: Option<&str>,
) -> String {
    let mut line = format!("{name} {data_type}");
    if !nullable {
        line.push_str(" NOT NULL");
    }
    if let Some(default) = default {
        line.push_str(" DEFAULT ");
        line.push_str(default);
    }
    if let Some(extra) = extra.filter(|e| !e.is_empty()) {
        line.push(' ');
        line.push_str(extra);
    }
    line
}

/// A constraint's line from its parts (backends that give no definition text).
fn constraint_line(constraint: &ConstraintFacts) -> String {
    let columns = constraint.columns.join(", ");
    match constraint.kind {
        ConstraintKind::PrimaryKey => format!("primary key ({columns})"),
        ConstraintKind::Unique => format!("unique ({columns})"),
        ConstraintKind::Check => format!(
            "check ({})",
            squeeze(constraint.definition.as_deref().unwrap_or_default())
        ),
        ConstraintKind::Exclusion => format!(
            "exclude {}",
            squeeze(constraint.definition.as_deref().unwrap_or_default())
        ),
        ConstraintKind::ForeignKey => {
            let mut line = format!("foreign key ({columns})");
            if let Some((table, columns)) = &constraint.references {
                line.push_str(&format!(" references {table} ({})", columns.join(", ")));
            }
            for (label, action) in [
                ("on update", &constraint.on_update),
                ("on delete", &constraint.on_delete),
            ] {
                let action = action
                    .as_deref()
                    .unwrap_or("NO ACTION")
                    .to_ascii_uppercase();
                line.push_str(&format!(" {label} {action}"));
            }
            line
        }
    }
}

/// An index's line from its parts: `name [unique] [method] (parts) [where …]`.
fn index_line(index: &IndexFacts, method: Option<&str>, predicate: Option<&str>) -> String {
    let mut line = index.name.clone();
    if index.unique {
        line.push_str(" unique");
    }
    if let Some(method) = method {
        line.push(' ');
        line.push_str(method);
    }
    line.push_str(&format!(" ({})", index.columns.join(", ")));
    if let Some(predicate) = predicate {
        line.push_str(" where ");
        line.push_str(&squeeze(predicate));
    }
    line
}

#[cfg(test)]
mod tests;
