//! Catalog facts of every table at once (`sqlite_schema` and its pragmas, `pg_catalog`,
//! `information_schema`), for schema records and `verify`: a handful of queries per
//! database, whatever the number of tables, never one per table. upgrader's own tables
//! are left out. The facts are normalized by `crate::schema`; only the SQL lives here.

use std::collections::BTreeMap;

use super::{Backend, DbError, Value};
use crate::schema::{
    self, ColumnFacts, ConstraintFacts, ConstraintKind, IndexFacts, TableFacts, TriggerFacts,
};
use crate::sql::Dialect;

/// The text of a value (numbers and booleans spelled out); `None` for NULL.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Text(text) => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Float(number) => Some(number.to_string()),
        Value::Blob(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
    }
}

/// Column `index` of a catalog row as text (`""` for NULL, where the catalog never has one).
fn at(row: &[Value], index: usize) -> String {
    row.get(index).and_then(text).unwrap_or_default()
}

/// Column `index` as text, `None` for NULL.
fn opt(row: &[Value], index: usize) -> Option<String> {
    row.get(index).and_then(text)
}

/// Column `index` as borrowed text, where it is only compared.
fn text_at(row: &[Value], index: usize) -> Option<&str> {
    row.get(index).and_then(Value::as_text)
}

/// Column `index` as a flag (`1`, `true`, `YES`).
fn flag(row: &[Value], index: usize) -> bool {
    match row.get(index) {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::Int(number)) => *number != 0,
        Some(value) => text(value).is_some_and(|t| {
            ["1", "t", "true", "yes"]
                .iter()
                .any(|yes| t.eq_ignore_ascii_case(yes))
        }),
        None => false,
    }
}

/// Which tables to read: all (`None`), or only those named.
#[derive(Clone, Copy)]
struct Only<'a>(Option<&'a [String]>);

impl Only<'_> {
    /// ` AND lower(column) IN (?, …)` with its values (names match in any case); nothing
    /// when every table is read.
    fn clause(self, column: &str) -> (String, Vec<Value>) {
        self.list(
            |names| {
                let mut lower: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
                lower.sort_unstable();
                lower.dedup();
                lower
            },
            |list| format!(" AND lower({column}) IN ({list})"),
            "?",
        )
    }

    /// `column COLLATE NOCASE IN (?, …) AND ` with its values: SQLite's names match in
    /// any case of ASCII letters, as SQLite matches them, and no name is lowered per row.
    fn sqlite_clause(self, column: &str) -> (String, Vec<Value>) {
        self.list(
            <[String]>::to_vec,
            |list| format!("{column} COLLATE NOCASE IN ({list}) AND "),
            "?",
        )
    }

    /// ` AND c.relname IN (?::name, …)`: PostgreSQL's names exactly as stored, bound as
    /// text (see [`Backend::query_texts`]) and compared as `name`, so that `pg_class`'s
    /// index answers.
    fn postgres_clause(self) -> (String, Vec<Value>) {
        self.list(
            <[String]>::to_vec,
            |list| format!(" AND c.relname IN ({list})"),
            "?::name",
        )
    }

    /// The clause `write` makes of a list of `placeholder`s, one for each of the names
    /// `names` gives, and those names as values; nothing when every table is read.
    fn list(
        self,
        names: impl FnOnce(&[String]) -> Vec<String>,
        write: impl FnOnce(&str) -> String,
        placeholder: &str,
    ) -> (String, Vec<Value>) {
        let Some(given) = self.0 else {
            return (String::new(), Vec::new());
        };
        let names = names(given);
        (
            write(&vec![placeholder; names.len()].join(", ")),
            names.into_iter().map(Value::from).collect(),
        )
    }
}

/// Tables by name, as the queries fill them in.
#[derive(Default)]
struct Tables(BTreeMap<String, TableFacts>);

impl Tables {
    fn add(&mut self, name: String) -> &mut TableFacts {
        self.0.entry(name.clone()).or_insert_with(|| TableFacts {
            name,
            ..TableFacts::default()
        })
    }

    /// A table the first query listed; facts about anything else (a view's columns) are
    /// dropped.
    fn get(&mut self, name: &str) -> Option<&mut TableFacts> {
        self.0.get_mut(name)
    }

    fn done(self) -> Vec<TableFacts> {
        self.0.into_values().collect()
    }
}

/// The names of every table but upgrader's own (as the facts name them), for a caller
/// that reads the facts of all of them a batch at a time.
pub(crate) fn table_names<B: Backend + ?Sized>(db: &mut B) -> Result<Vec<String>, DbError> {
    let sql = match db.dialect() {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE 'upgrader\\_%' ESCAPE '\\'"
        }
        Dialect::Postgres => {
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relnamespace = to_regnamespace(quote_ident(current_schema())) \
             AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'upgrader\\_%'"
        }
        // Views too: asking for TABLE_TYPE makes MariaDB open every table's definition
        // (5 to 13 ms for 1,000 tables, against 1 ms for the directory's names), and a
        // view's name in a batch only finds nothing.
        Dialect::MySql => {
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME NOT LIKE 'upgrader\\_%'"
        }
    };
    Ok(db.query(sql, &[])?.iter().map(|row| at(row, 0)).collect())
}

/// SQLite: one scan of `sqlite_schema` for the tables' definitions, their indexes and
/// triggers; the columns read from each definition (`schema::defined_columns`, exactly
/// as `pragma_table_xinfo` gives them, which SQLite would prepare a statement per table
/// for), the pragma asked only where that reading gives up; the index and foreign key
/// pragmas asked only of tables that have an index (every index, automatic ones
/// included, is in `sqlite_schema`) or whose definition says `REFERENCES` (SQLite keeps
/// foreign keys nowhere else).
pub(crate) fn sqlite(
    db: &mut dyn Backend,
    only: Option<&[String]>,
) -> Result<Vec<TableFacts>, DbError> {
    sqlite_read(db, only, true)
}

/// [`sqlite`], with the columns read from the definitions or (`read_definitions` false,
/// for the tests that hold the two to each other) all asked of SQLite.
fn sqlite_read(
    db: &mut dyn Backend,
    only: Option<&[String]>,
    read_definitions: bool,
) -> Result<Vec<TableFacts>, DbError> {
    let (only, names) = Only(only).sqlite_clause("m.tbl_name");
    let rows = db.query(
        &format!(
            "SELECT m.type, m.name, m.tbl_name, m.sql FROM sqlite_schema m \
             WHERE {only}m.type IN ('table', 'index', 'trigger') \
             AND m.tbl_name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND m.tbl_name NOT LIKE 'upgrader\\_%' ESCAPE '\\'"
        ),
        &names,
    )?;
    let mut tables = Tables::default();
    let mut ask_columns = Vec::new();
    let mut with_keys = Vec::new();
    for row in rows.iter().filter(|row| text_at(row, 0) == Some("table")) {
        let definition = opt(row, 3);
        let table = tables.add(at(row, 1));
        let defined = definition
            .as_deref()
            .filter(|_| read_definitions)
            .and_then(schema::defined_columns);
        match defined {
            Some(columns) => {
                let columns = columns.into_iter().map(|c| (c.key as i64, c.facts));
                add_columns(table, columns);
            }
            None => ask_columns.push(Value::from(table.name.as_str())),
        }
        let says = |d: &str, word: &[u8]| {
            d.as_bytes()
                .windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word))
        };
        if definition
            .as_deref()
            .is_some_and(|d| says(d, b"references"))
        {
            with_keys.push(Value::from(table.name.as_str()));
        }
        table.definition = definition;
    }
    let mut with_index = Vec::new();
    for row in rows.iter().filter(|row| text_at(row, 0) != Some("table")) {
        let Some(table) = tables.get(text_at(row, 2).unwrap_or_default()) else {
            continue;
        };
        match text_at(row, 0).unwrap_or_default() {
            "index" if with_index.last() != Some(&table.name) => {
                with_index.push(table.name.clone());
            }
            "trigger" => table.triggers.push(TriggerFacts {
                name: at(row, 1),
                definition: at(row, 3),
            }),
            _ => {}
        }
    }
    with_index.dedup();
    let in_list = |values: &[Value]| vec!["?"; values.len()].join(", ");
    if !ask_columns.is_empty() {
        let columns = db.query(
            &format!(
                "SELECT m.name, p.name, p.type, p.\"notnull\", p.dflt_value, p.pk, p.hidden \
                 FROM sqlite_schema m JOIN pragma_table_xinfo(m.name) p \
                 WHERE m.type = 'table' AND m.name IN ({})",
                in_list(&ask_columns)
            ),
            &ask_columns,
        )?;
        let mut by_table: BTreeMap<String, Vec<(i64, ColumnFacts)>> = BTreeMap::new();
        for row in &columns {
            let hidden = row.get(6).and_then(Value::as_int).unwrap_or(0);
            if hidden == 1 {
                continue;
            }
            by_table.entry(at(row, 0)).or_default().push((
                row.get(5).and_then(Value::as_int).unwrap_or(0),
                ColumnFacts {
                    name: at(row, 1),
                    data_type: at(row, 2),
                    nullable: !flag(row, 3),
                    default: opt(row, 4),
                    extra: match hidden {
                        2 => Some("GENERATED VIRTUAL".into()),
                        3 => Some("GENERATED STORED".into()),
                        _ => None,
                    },
                },
            ));
        }
        for (name, columns) in by_table {
            if let Some(table) = tables.get(&name) {
                add_columns(table, columns);
            }
        }
    }
    if !with_index.is_empty() {
        let with_index: Vec<Value> = with_index.into_iter().map(Value::from).collect();
        let indexes = db.query(
            &format!(
                "SELECT m.name, il.name, il.\"unique\", il.origin, s.sql, ii.name, ii.\"desc\", ii.coll \
                 FROM sqlite_schema m JOIN pragma_index_list(m.name) il \
                 JOIN pragma_index_xinfo(il.name) ii \
                 LEFT JOIN sqlite_schema s ON s.type = 'index' AND s.name = il.name \
                 WHERE m.type = 'table' AND ii.key = 1 AND m.name IN ({}) \
                 ORDER BY m.name, il.name, ii.seqno",
                in_list(&with_index)
            ),
            &with_index,
        )?;
        sqlite_indexes(&mut tables, &indexes);
    }
    if !with_keys.is_empty() {
        let keys = db.query(
            &format!(
                "SELECT m.name, f.id, f.\"table\", f.\"from\", f.\"to\", f.on_update, f.on_delete \
                 FROM sqlite_schema m JOIN pragma_foreign_key_list(m.name) f \
                 WHERE m.type = 'table' AND m.name IN ({}) ORDER BY m.name, f.id, f.seq",
                in_list(&with_keys)
            ),
            &with_keys,
        )?;
        sqlite_keys(&mut tables, &keys);
    }
    Ok(tables.done())
}

/// A table's columns, given with their places in the primary key (0: not in it), and
/// its primary key.
fn add_columns(table: &mut TableFacts, columns: impl IntoIterator<Item = (i64, ColumnFacts)>) {
    let mut keys = Vec::new();
    for (place, column) in columns {
        if place > 0 {
            keys.push((place, column.name.clone()));
        }
        table.columns.push(column);
    }
    if !keys.is_empty() {
        keys.sort();
        table.constraints.push(ConstraintFacts::new(
            ConstraintKind::PrimaryKey,
            keys.into_iter().map(|(_, column)| column).collect(),
        ));
    }
}

/// SQLite's indexes from `pragma_index_list`/`index_xinfo` rows (table, index, unique,
/// origin, definition, column, desc, collation; in index order).
fn sqlite_indexes(tables: &mut Tables, indexes: &[Vec<Value>]) {
    let mut current: Option<(String, String)> = None;
    for row in indexes {
        let (table_name, index_name) = (at(row, 0), at(row, 1));
        let Some(table) = tables.get(&table_name) else {
            continue;
        };
        let origin = at(row, 3);
        let part = match opt(row, 5) {
            Some(column) => column,
            None => "(expression)".to_string(),
        };
        let part = if flag(row, 6) {
            format!("{part} DESC")
        } else {
            part
        };
        let part = match opt(row, 7).filter(|c| !c.eq_ignore_ascii_case("BINARY")) {
            Some(collation) => format!("{part} COLLATE {collation}"),
            None => part,
        };
        let same = current.as_ref() == Some(&(table_name.clone(), index_name.clone()));
        if same {
            if origin == "u" {
                if let Some(unique) = table.constraints.last_mut() {
                    unique.columns.push(part);
                }
            } else if let Some(index) = table.indexes.last_mut() {
                index.columns.push(part);
            }
            continue;
        }
        current = Some((table_name, index_name.clone()));
        match origin.as_str() {
            // The primary key's own index: described by the primary key.
            "pk" => {}
            // A UNIQUE constraint's index, named `sqlite_autoindex_<table>_<n>` by its
            // place in the table: described by the constraint.
            "u" => table
                .constraints
                .push(ConstraintFacts::new(ConstraintKind::Unique, vec![part])),
            _ => table.indexes.push(IndexFacts {
                name: index_name,
                unique: flag(row, 2),
                columns: vec![part],
                definition: opt(row, 4),
                ..IndexFacts::default()
            }),
        }
    }
}

/// SQLite's foreign keys from `pragma_foreign_key_list` rows (table, id, referenced
/// table, from, to, on update, on delete; in key order).
fn sqlite_keys(tables: &mut Tables, keys: &[Vec<Value>]) {
    let mut current: Option<(String, String)> = None;
    for row in keys {
        let (table_name, id) = (at(row, 0), at(row, 1));
        let Some(table) = tables.get(&table_name) else {
            continue;
        };
        // `to` is NULL when the key names only the table (its primary key).
        let to = opt(row, 4).unwrap_or_else(|| "(primary key)".into());
        if current.as_ref() == Some(&(table_name.clone(), id.clone())) {
            if let Some(key) = table.constraints.last_mut() {
                key.columns.push(at(row, 3));
                if let Some((_, columns)) = key.references.as_mut() {
                    columns.push(to);
                }
            }
            continue;
        }
        current = Some((table_name, id));
        table.constraints.push(ConstraintFacts {
            references: Some((at(row, 2), vec![to])),
            on_update: opt(row, 5),
            on_delete: opt(row, 6),
            ..ConstraintFacts::new(ConstraintKind::ForeignKey, vec![at(row, 3)])
        });
    }
}

/// PostgreSQL: `pg_catalog` of the current schema, in one statement (one planning, one
/// round trip: on a connection's first look at the catalog, planning costs the server
/// more than reading), through the server's own `pg_get_*def` functions where only
/// deparsing will do (defaults, checks, foreign keys, triggers, expression indexes).
/// Tables named in `only` are found by exact name, through `pg_class`'s index: the
/// caller passes each name as its DDL spelled it and in lower case (what PostgreSQL
/// folds an unquoted name to). A default cannot refer to a column, so it is deparsed
/// without the table's context, which halves what the columns cost the server.
pub(crate) fn postgres(
    db: &mut dyn Backend,
    only: Option<&[String]>,
) -> Result<Vec<TableFacts>, DbError> {
    let (only, names) = Only(only).postgres_clause();
    // Every branch gives (table, kind, number, a, b, c, d, e, f) as text: a table
    // (`t`), a column (`col`, by number), a constraint (its `contype`), an index (`i`),
    // a trigger (`g`). A column's default is read only where it has one (a join with
    // `pg_attrdef` costs every run's planning more than the subquery costs those).
    let rows = db.query_texts(
        &format!(
            "WITH t AS MATERIALIZED (SELECT c.oid, c.relname::text AS name FROM pg_class c \
             WHERE c.relnamespace = to_regnamespace(quote_ident(current_schema())) \
             AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'upgrader\\_%'{only}) \
             SELECT t.name, 't', 0, NULL, NULL, NULL, NULL, NULL, NULL FROM t \
             UNION ALL SELECT t.name, 'col', a.attnum, a.attname::text, \
             format_type(a.atttypid, a.atttypmod), (NOT a.attnotnull)::text, \
             CASE WHEN a.atthasdef THEN (SELECT pg_get_expr(d.adbin, \
               CASE WHEN a.attgenerated = '' THEN 0 ELSE d.adrelid END) FROM pg_attrdef d \
               WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum) END, \
             CASE WHEN a.attcollation <> 0 AND a.attcollation <> \
               (SELECT y.typcollation FROM pg_type y WHERE y.oid = a.atttypid) \
               THEN a.attcollation::regcollation::text END, \
             a.attidentity::text || a.attgenerated::text \
             FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 \
             AND NOT a.attisdropped \
             UNION ALL SELECT t.name, k.contype::text, 0, \
             CASE WHEN k.contype IN ('p', 'u') AND NOT k.condeferrable THEN NULL \
               ELSE pg_get_constraintdef(k.oid) END, \
             array_to_string(k.conkey, ','), k.conindid::text, NULL, NULL, NULL \
             FROM t JOIN pg_constraint k ON k.conrelid = t.oid \
             AND k.contype IN ('p', 'u', 'c', 'f', 'x') \
             UNION ALL SELECT t.name, 'i', 0, i.relname::text, x.indisunique::text, \
             (SELECT am.amname::text FROM pg_am am WHERE am.oid = i.relam), \
             CASE WHEN x.indexprs IS NOT NULL THEN pg_get_indexdef(x.indexrelid) END, \
             concat_ws('/', x.indexrelid, x.indnkeyatts, x.indkey, x.indoption), \
             pg_get_expr(x.indpred, x.indrelid) \
             FROM t JOIN pg_index x ON x.indrelid = t.oid JOIN pg_class i ON i.oid = x.indexrelid \
             UNION ALL SELECT t.name, 'g', 0, g.tgname::text, pg_get_triggerdef(g.oid), \
             NULL, NULL, NULL, NULL \
             FROM t JOIN pg_trigger g ON g.tgrelid = t.oid AND NOT g.tgisinternal"
        ),
        &names,
    )?;
    let mut tables = Tables::default();
    for row in rows.iter().filter(|row| at(row, 1) == "t") {
        tables.add(at(row, 0));
    }
    // Columns by number, put in order once all are in; constraints name their keys by
    // these numbers (named here rather than deparsed by the server, one call each).
    let mut columns: BTreeMap<String, Vec<(i64, ColumnFacts)>> = BTreeMap::new();
    for row in rows.iter().filter(|row| at(row, 1) == "col") {
        // The expression is a default, or (`s`) what a generated column stores.
        let expression = opt(row, 6);
        let kind = text_at(row, 8).unwrap_or_default();
        let extra: Vec<String> = [
            match kind {
                "a" => Some("GENERATED ALWAYS AS IDENTITY".to_string()),
                "d" => Some("GENERATED BY DEFAULT AS IDENTITY".to_string()),
                "s" => Some(format!(
                    "GENERATED ALWAYS AS ({})",
                    expression.as_deref().unwrap_or_default()
                )),
                _ => None,
            },
            opt(row, 7).map(|collation| format!("COLLATE {collation}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        columns.entry(at(row, 0)).or_default().push((
            row.get(2).and_then(Value::as_int).unwrap_or(0),
            ColumnFacts {
                name: at(row, 3),
                data_type: at(row, 4),
                nullable: flag(row, 5),
                default: expression.filter(|_| kind != "s"),
                extra: (!extra.is_empty()).then(|| extra.join(" ")),
            },
        ));
    }
    // The indexes of constraints: described by their constraint.
    let backing: std::collections::HashSet<String> = rows
        .iter()
        .filter(|row| ["p", "u", "x"].contains(&at(row, 1).as_str()))
        .filter_map(|row| opt(row, 5))
        .collect();
    let mut numbered: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for (name, mut list) in columns {
        list.sort_by_key(|(number, _)| *number);
        let Some(table) = tables.get(&name) else {
            continue;
        };
        let names = numbered.entry(name).or_default();
        for (number, column) in list {
            names.push((number, column.name.clone()));
            table.columns.push(column);
        }
    }
    for row in &rows {
        let table_name = at(row, 0);
        let kind = match at(row, 1).as_str() {
            "p" => ConstraintKind::PrimaryKey,
            "u" => ConstraintKind::Unique,
            "c" => ConstraintKind::Check,
            "f" => ConstraintKind::ForeignKey,
            "x" => ConstraintKind::Exclusion,
            "i" => {
                let keys = at(row, 7);
                let mut keys = keys.split('/');
                if keys.next().is_some_and(|oid| backing.contains(oid)) {
                    continue;
                }
                let parts = index_parts(keys, numbered.get(&table_name));
                if let Some(table) = tables.get(&table_name) {
                    table.indexes.push(IndexFacts {
                        name: at(row, 3),
                        unique: flag(row, 4),
                        method: opt(row, 5),
                        definition: opt(row, 6),
                        columns: parts.into_iter().collect(),
                        predicate: opt(row, 8),
                        backs_constraint: false,
                    });
                }
                continue;
            }
            "g" => {
                if let Some(table) = tables.get(&table_name) {
                    table.triggers.push(TriggerFacts {
                        name: at(row, 3),
                        definition: at(row, 4),
                    });
                }
                continue;
            }
            _ => continue,
        };
        let names = numbered.get(&table_name);
        let columns: Vec<String> = at(row, 4)
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|number| {
                let named = number.parse::<i64>().ok().and_then(|number| {
                    let names = names?;
                    let found = names.binary_search_by_key(&number, |(n, _)| *n).ok()?;
                    Some(names[found].1.clone())
                });
                named.unwrap_or_else(|| format!("#{number}"))
            })
            .collect();
        if let Some(table) = tables.get(&table_name) {
            table.constraints.push(ConstraintFacts {
                definition: opt(row, 3),
                ..ConstraintFacts::new(kind, columns)
            });
        }
    }
    Ok(tables.done())
}

/// A PostgreSQL index's key columns, from `indnkeyatts/indkey/indoption` (numbers, the
/// vectors space-separated) and the table's column names by number: `name [DESC] [NULLS
/// FIRST]` for a key, `name INCLUDE` for an included column, joined by `, `;
/// expressions are left out (their index is described by its definition). `None` when no
/// part is a column.
fn index_parts<'a>(
    mut keys: impl Iterator<Item = &'a str>,
    columns: Option<&Vec<(i64, String)>>,
) -> Option<String> {
    let key_count: usize = keys.next()?.parse().ok()?;
    let numbers = keys.next()?.split(' ');
    let options: Vec<i64> = keys
        .next()
        .unwrap_or_default()
        .split(' ')
        .filter_map(|o| o.parse().ok())
        .collect();
    let mut parts = Vec::new();
    for (position, number) in numbers.enumerate() {
        let Ok(number) = number.parse::<i64>() else {
            continue;
        };
        let Some(name) = columns.and_then(|columns| {
            let found = columns.binary_search_by_key(&number, |(n, _)| *n).ok()?;
            Some(&columns[found].1)
        }) else {
            continue;
        };
        let mut part = quote_name(name);
        if position >= key_count {
            part.push_str(" INCLUDE");
        }
        let option = options.get(position).copied().unwrap_or(0);
        if option & 1 == 1 {
            part.push_str(" DESC");
        }
        if option & 2 == 2 {
            part.push_str(" NULLS FIRST");
        }
        parts.push(part);
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A PostgreSQL name as an index's parts show it: as it is when it is a plain lower-case
/// identifier, else double-quoted (keywords are not quoted: in a list of column names
/// they are not ambiguous).
fn quote_name(name: &str) -> String {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match plain {
        true => name.to_string(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// MySQL and MariaDB: `information_schema` of the connection's database.
pub(crate) fn mysql(
    db: &mut dyn Backend,
    only: Option<&[String]>,
) -> Result<Vec<TableFacts>, DbError> {
    // Every query is limited to the tables asked for, the schema-wide ones too: a run
    // reads its tables a batch at a time, and each unlimited query would read all of
    // them again for every batch.
    let table_names = only;
    let (only, names) = Only(only).clause("TABLE_NAME");
    let mut tables = Tables::default();
    for row in db.query(
        &format!(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_NAME NOT LIKE 'upgrader\\_%'{only}"
        ),
        &names,
    )? {
        let table = tables.add(at(&row, 0));
        if let Some(engine) = opt(&row, 1) {
            table.options.push(format!("engine {engine}"));
        }
    }
    for row in db.query(
        &format!(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, \
             GENERATION_EXPRESSION FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE(){only} ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ),
        &names,
    )? {
        if let Some(table) = tables.get(&at(&row, 0)) {
            let extra = match (opt(&row, 5), opt(&row, 6).filter(|g| !g.is_empty())) {
                (extra, Some(generated)) => {
                    Some(format!("{} AS ({generated})", extra.unwrap_or_default()))
                }
                (extra, None) => extra.filter(|e| !e.is_empty()),
            };
            table.columns.push(ColumnFacts {
                name: at(&row, 1),
                data_type: at(&row, 2),
                nullable: flag(&row, 3),
                default: opt(&row, 4),
                extra,
            });
        }
    }
    let mut current: Option<(String, String)> = None;
    for row in db.query(
        &format!(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE, \
             COLLATION FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE(){only} \
             ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX"
        ),
        &names,
    )? {
        let (table_name, index_name) = (at(&row, 0), at(&row, 1));
        let Some(table) = tables.get(&table_name) else {
            continue;
        };
        let mut part = at(&row, 3);
        if let Some(length) = opt(&row, 4) {
            part = format!("{part}({length})");
        }
        if at(&row, 6) == "D" {
            part.push_str(" DESC");
        }
        let primary = index_name == "PRIMARY";
        if current.as_ref() == Some(&(table_name.clone(), index_name.clone())) {
            if primary {
                if let Some(key) = table
                    .constraints
                    .iter_mut()
                    .find(|c| c.kind == ConstraintKind::PrimaryKey)
                {
                    key.columns.push(part);
                }
            } else if let Some(index) = table.indexes.last_mut() {
                index.columns.push(part);
            }
            continue;
        }
        current = Some((table_name, index_name.clone()));
        if primary {
            table
                .constraints
                .push(ConstraintFacts::new(ConstraintKind::PrimaryKey, vec![part]));
        } else {
            table.indexes.push(IndexFacts {
                name: index_name,
                unique: !flag(&row, 2),
                method: opt(&row, 5),
                columns: vec![part],
                ..IndexFacts::default()
            });
        }
    }
    // The foreign keys' actions and their columns in two queries, joined here: MariaDB
    // runs the join of the two information_schema views as a nested loop that reads
    // every schema's tables again for each row (130 ms against 10 ms + 8 ms on a server
    // holding 4,000 tables).
    let mut rules: BTreeMap<(String, String), (Option<String>, Option<String>)> = BTreeMap::new();
    for row in db.query(
        &format!(
            "SELECT TABLE_NAME, CONSTRAINT_NAME, UPDATE_RULE, DELETE_RULE \
             FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE(){only}"
        ),
        &names,
    )? {
        rules.insert((at(&row, 0), at(&row, 1)), (opt(&row, 2), opt(&row, 3)));
    }
    let mut current: Option<(String, String)> = None;
    let keys = if rules.is_empty() {
        Vec::new()
    } else {
        db.query(
            &format!(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, \
                 REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_NAME IS NOT NULL{only} \
                 ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION"
            ),
            &names,
        )?
    };
    for row in keys {
        let (table_name, name) = (at(&row, 0), at(&row, 1));
        let Some((on_update, on_delete)) = rules.get(&(table_name.clone(), name.clone())).cloned()
        else {
            continue;
        };
        let Some(table) = tables.get(&table_name) else {
            continue;
        };
        if current.as_ref() == Some(&(table_name.clone(), name.clone())) {
            if let Some(key) = table.constraints.last_mut() {
                key.columns.push(at(&row, 2));
                if let Some((_, columns)) = key.references.as_mut() {
                    columns.push(at(&row, 4));
                }
            }
            continue;
        }
        current = Some((table_name, name));
        table.constraints.push(ConstraintFacts {
            references: Some((at(&row, 3), vec![at(&row, 4)])),
            on_update,
            on_delete,
            ..ConstraintFacts::new(ConstraintKind::ForeignKey, vec![at(&row, 2)])
        });
    }
    // MariaDB names each check's table; MySQL 8 only through TABLE_CONSTRAINTS.
    let checks = db
        .query(
            &format!(
                "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = DATABASE(){only}"
            ),
            &names,
        )
        .or_else(|_| {
            let (only, names) = Only(table_names).clause("t.TABLE_NAME");
            db.query(
                &format!(
                    "SELECT t.TABLE_NAME, c.CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS c \
                     JOIN information_schema.TABLE_CONSTRAINTS t \
                     ON t.CONSTRAINT_SCHEMA = c.CONSTRAINT_SCHEMA \
                     AND t.CONSTRAINT_NAME = c.CONSTRAINT_NAME AND t.CONSTRAINT_TYPE = 'CHECK' \
                     WHERE c.CONSTRAINT_SCHEMA = DATABASE(){only}"
                ),
                &names,
            )
        })?;
    for row in &checks {
        if let Some(table) = tables.get(&at(row, 0)) {
            table.constraints.push(ConstraintFacts {
                definition: opt(row, 1),
                ..ConstraintFacts::new(ConstraintKind::Check, Vec::new())
            });
        }
    }
    // By EVENT_OBJECT_SCHEMA, not TRIGGER_SCHEMA (always the same): only the former lets
    // MariaDB open one database's trigger files instead of every database's (75 ms
    // against 3 ms on a server holding 32,000 tables).
    let (only_triggers, _) = Only(table_names).clause("EVENT_OBJECT_TABLE");
    for row in db.query(
        &format!(
            "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, \
             ACTION_STATEMENT FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = DATABASE(){only_triggers}"
        ),
        &names,
    )? {
        if let Some(table) = tables.get(&at(&row, 0)) {
            table.triggers.push(TriggerFacts {
                name: at(&row, 1),
                definition: format!("{} {} {}", at(&row, 2), at(&row, 3), at(&row, 4)),
            });
        }
    }
    Ok(tables.done())
}

#[cfg(test)]
mod tests;
