//! Catalog reading against hand-made catalogs.

use super::{index_parts, quote_name, sqlite_read};
use crate::db::sqlite::Sqlite;
use crate::db::{Backend, SqliteMode, SqliteUrl};
use crate::schema::{defined_columns, normalize};
use crate::sql::Dialect;
use proptest::prelude::*;

fn memory() -> Sqlite {
    Sqlite::open(&SqliteUrl {
        path: ":memory:".into(),
        mode: SqliteMode::ReadWriteCreate,
    })
    .unwrap()
}

/// The normalized texts of every table, their columns read from the definitions and
/// asked of SQLite.
fn both_ways(db: &mut Sqlite) -> (Vec<String>, Vec<String>) {
    let mut texts = |read| -> Vec<String> {
        sqlite_read(db, None, read)
            .unwrap()
            .iter()
            .map(|facts| normalize(Dialect::Sqlite, facts))
            .collect()
    };
    let read = texts(true);
    (read, texts(false))
}

/// Tables SQLite accepts, each read from its definition as SQLite reads it.
const TABLES: &[&str] = &[
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
    "CREATE TABLE t (a, b)",
    "CREATE TABLE IF NOT EXISTS main.\"T x\" (\"a\"\"b\" int, [c d] VARCHAR ( 40 ), `e` numeric(10, 2), 'f' TEXT)",
    "CREATE TEMP TABLE t (a)",
    "CREATE TABLE t (id integer primary key autoincrement, n int not null on conflict ignore unique)",
    "CREATE TABLE t (a INTEGER PRIMARY KEY DESC, b DOUBLE PRECISION DEFAULT -1.5)",
    "CREATE TABLE t (a DEFAULT 'it''s', b DEFAULT (1 + 2), c DEFAULT ( 'x' ), d DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE t (a DEFAULT X'0F', b DEFAULT \"id\", c DEFAULT TRUE, d DEFAULT - 1, e DEFAULT +2)",
    "CREATE TABLE t (a TEXT COLLATE NOCASE CHECK (length(a) > 0) CONSTRAINT x NOT NULL, b INT /* c */ (10))",
    "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE t (a INT REFERENCES p (id) ON DELETE CASCADE ON UPDATE SET NULL MATCH FULL NOT DEFERRABLE INITIALLY IMMEDIATE, b REFERENCES p DEFERRABLE)",
    "CREATE TABLE t (a INT, b INT GENERATED ALWAYS AS (a * 2) STORED, c AS (a + 1) VIRTUAL, d AS (3))",
    "CREATE TABLE t (a, b, c, PRIMARY KEY (c, a DESC), UNIQUE (b) ON CONFLICT REPLACE CHECK (a > 0) CONSTRAINT k FOREIGN KEY (b) REFERENCES t (c))",
    "CREATE TABLE t (a INT, b TEXT, CONSTRAINT pk PRIMARY KEY (b COLLATE NOCASE ASC))",
    "CREATE TABLE t (a INT -- the key\n PRIMARY KEY, b TEXT) STRICT",
    "CREATE TABLE t (a INTEGER NOT NULL PRIMARY KEY, b) WITHOUT ROWID",
    "CREATE TABLE t (a TEXT PRIMARY KEY, b) WITHOUT ROWID",
    "CREATE TABLE t (a \"INT\", b 'TEXT')",
    "CREATE TABLE t (a INT GENERATED, b INT KEY, c DATETIME ALWAYS)",
    "CREATE TABLE t (a INT); CREATE TABLE u AS SELECT a, a + 1 AS b, 'x' AS \"c d\" FROM t",
    "CREATE TABLE t (a INT); ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x' NOT NULL; ALTER TABLE t RENAME TO \"u v\"",
    "CREATE TABLE t (a INT); ALTER TABLE t RENAME COLUMN a TO \"b c\"",
    "CREATE TABLE t (a TEXT DEFAULT 'x), (' /* ), ( */ CHECK (a <> ')'), -- ), b\n b INT DEFAULT 1e-3, c DEFAULT .5, d DEFAULT 0x1F)",
    "CREATE TABLE \"a \"\"b\"\"\" ([c d] VARCHAR(1,2), `d``e` TEXT, \"é\" ñ)",
    "CREATE VIRTUAL TABLE t USING fts4(a, b)",
];

#[test]
fn sqlite_columns_read_from_definitions_as_sqlite_reads_them() {
    let mut asked = Vec::new();
    for sql in TABLES {
        let mut db = memory();
        for statement in sql.split("; ") {
            db.execute(statement)
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let (read, asked_of_sqlite) = both_ways(&mut db);
        assert_eq!(read, asked_of_sqlite, "{sql}");
        let definitions = db
            .query("SELECT sql FROM sqlite_schema WHERE type = 'table'", &[])
            .unwrap();
        asked.extend(
            definitions
                .iter()
                .filter_map(|row| row[0].as_text())
                .filter(|sql| defined_columns(sql).is_none())
                .map(|sql| sql.to_string()),
        );
    }
    // Left to SQLite: WITHOUT ROWID, STRICT, quoted types, GENERATED or ALWAYS in a
    // type, a virtual table.
    let markers = [
        "WITHOUT ROWID",
        "STRICT",
        "\"INT\"",
        "ALWAYS)",
        "VIRTUAL TABLE",
    ];
    assert_eq!(asked.len(), 6, "{asked:#?}");
    for sql in &asked {
        assert!(markers.iter().any(|m| sql.contains(m)), "{sql}");
    }
}

/// A column's type and constraints (its name is given by its place).
fn column_definition() -> impl Strategy<Value = String> {
    let types = prop::sample::select(vec![
        "",
        "INTEGER",
        "int",
        "VARCHAR(40)",
        "varchar ( 40 )",
        "numeric(10, 2)",
        "DOUBLE PRECISION",
        "unsigned big int",
        "TEXT /* c */",
        "character varying(+5)",
        "decimal(-1.5, 2)",
        "\"INT\"",
        "BLOB",
        "real",
    ]);
    let constraints = prop::collection::vec(
        prop::sample::select(vec![
            "NOT NULL",
            "NULL",
            "PRIMARY KEY",
            "PRIMARY KEY DESC",
            "PRIMARY KEY ASC AUTOINCREMENT",
            "UNIQUE",
            "CHECK (1)",
            "DEFAULT 0",
            "DEFAULT -1",
            "DEFAULT 'a''b'",
            "DEFAULT (1 + 2)",
            "DEFAULT ( 'x' )",
            "DEFAULT CURRENT_TIMESTAMP",
            "DEFAULT X'0F'",
            "DEFAULT \"q\"",
            "DEFAULT TRUE",
            "COLLATE NOCASE",
            "REFERENCES p (id) ON DELETE CASCADE",
            "REFERENCES p",
            "CONSTRAINT c1 NOT NULL",
            "NOT NULL ON CONFLICT IGNORE",
            "GENERATED ALWAYS AS (1) STORED",
            "AS (2)",
            "-- note\n",
            "/* x */",
            "DEFAULT 'x)('",
            "CHECK ('(' <> ')')",
            "/* ( */",
            "DEFAULT 1e-3",
        ]),
        0..4,
    );
    (types, constraints).prop_map(|(kind, constraints)| format!("{kind} {}", constraints.join(" ")))
}

/// Column names, each spelled another way, given in this order.
const NAMES: [&str; 4] = ["a", "key", "\"Mixed\"", "[d e]"];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_global_rejects: 20_000,
        ..ProptestConfig::default()
    })]
    #[test]
    fn any_sqlite_table_reads_the_same_from_its_definition(
        columns in prop::collection::vec(column_definition(), 1..=4),
        constraint in prop::sample::select(vec![
            "", ", PRIMARY KEY (a)", ", UNIQUE (a, key)", ", CHECK (1)",
            ", FOREIGN KEY (a) REFERENCES p (id)", ", CONSTRAINT k PRIMARY KEY (key DESC) UNIQUE (a)",
        ]),
        options in prop::sample::select(vec!["", " STRICT", " WITHOUT ROWID"]),
    ) {
        let mut db = memory();
        let columns: Vec<String> = columns
            .iter()
            .zip(NAMES)
            .map(|(definition, name)| format!("{name} {definition}"))
            .collect();
        let sql = format!("CREATE TABLE t ({}{constraint}){options}", columns.join(", "));
        // Whatever SQLite refuses is no table to read.
        prop_assume!(db.execute(&sql).is_ok());
        let (read, asked) = both_ways(&mut db);
        prop_assert_eq!(read, asked, "{}", sql);
    }
}

#[test]
fn postgres_index_parts_from_the_key_vectors() {
    let columns = vec![
        (1, "id".to_string()),
        (2, "Name".to_string()),
        (4, "note".into()),
    ];
    let parts = |keys: &str| index_parts(keys.split('/'), Some(&columns));
    assert_eq!(
        parts("2/2 1 4/3 0").as_deref(),
        Some("\"Name\" DESC NULLS FIRST, id, note INCLUDE")
    );
    // An expression (0) is left out; an index of expressions only has no parts.
    assert_eq!(parts("2/0 4/2 1").as_deref(), Some("note DESC"));
    assert_eq!(parts("1/0/0"), None);
    assert_eq!(index_parts("1/1/0".split('/'), None), None);
}

#[test]
fn names_quoted_unless_plain() {
    assert_eq!(quote_name("order_id"), "order_id");
    assert_eq!(quote_name("_x1"), "_x1");
    assert_eq!(quote_name("1x"), "\"1x\"");
    assert_eq!(quote_name("Mixed"), "\"Mixed\"");
    assert_eq!(quote_name("a \"b\""), "\"a \"\"b\"\"\"");
}
