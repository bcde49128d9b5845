//! Normalization per dialect and the comparison, without a database.

use super::*;
use crate::version::Version;

fn column(name: &str, data_type: &str, nullable: bool, default: Option<&str>) -> ColumnFacts {
    ColumnFacts {
        name: name.into(),
        data_type: data_type.into(),
        nullable,
        default: default.map(Into::into),
        extra: None,
    }
}

fn orders() -> TableFacts {
    TableFacts {
        name: "orders".into(),
        columns: vec![
            column("id", "integer", false, None),
            column("total", "numeric(10,2)", true, Some("0")),
        ],
        constraints: vec![ConstraintFacts::new(
            ConstraintKind::PrimaryKey,
            vec!["id".into()],
        )],
        ..TableFacts::default()
    }
}

#[test]
fn sqlite_text_reads_checks_and_predicates_from_definitions_ignoring_layout() {
    let mut facts = orders();
    facts.definition = Some(
        "CREATE TABLE orders (id integer PRIMARY KEY, total numeric(10,2) DEFAULT 0 CHECK (total >= 0), -- note\n  CHECK(id   > 0))".into(),
    );
    facts.indexes = vec![
        IndexFacts {
            name: "orders_total".into(),
            columns: vec!["total DESC".into()],
            definition: Some(
                "CREATE INDEX orders_total ON orders (total DESC) WHERE total > (1)".into(),
            ),
            ..IndexFacts::default()
        },
        IndexFacts {
            name: "sqlite_autoindex_orders_1".into(),
            unique: true,
            columns: vec!["total".into()],
            backs_constraint: true,
            ..IndexFacts::default()
        },
    ];
    let text = normalize(Dialect::Sqlite, &facts);
    assert_eq!(
        text,
        "table orders\n  column id INTEGER NOT NULL\n  column total NUMERIC(10,2) DEFAULT 0\n  \
         check (id > 0)\n  check (total > = 0)\n  primary key (id)\n  \
         index orders_total (total DESC) where total > ( 1 )\n"
    );
    // The same table written with other spacing and comments gives the same text.
    let mut again = facts.clone();
    again.definition = Some(
        "CREATE TABLE orders(id integer PRIMARY KEY,total numeric(10,2) DEFAULT 0 CHECK(total>=0),CHECK(id>0))".into(),
    );
    again.columns[1].data_type = "NUMERIC(10,2)".into();
    assert_eq!(normalize(Dialect::Sqlite, &again), text);
    assert_eq!(
        schema_of(Dialect::Sqlite, &again).fingerprint,
        fingerprint(&text)
    );
    assert_eq!(fingerprint(&text).len(), 64);
}

#[test]
fn postgres_text_uses_definitions_without_names_or_schema() {
    let mut facts = orders();
    facts.constraints = vec![
        ConstraintFacts {
            definition: Some("PRIMARY KEY (id)".into()),
            ..ConstraintFacts::new(ConstraintKind::PrimaryKey, vec![])
        },
        ConstraintFacts {
            definition: Some(
                "FOREIGN KEY (customer) REFERENCES customers(id) ON DELETE CASCADE".into(),
            ),
            ..ConstraintFacts::new(ConstraintKind::ForeignKey, vec![])
        },
    ];
    facts.indexes = vec![
        IndexFacts {
            name: "orders_pkey".into(),
            backs_constraint: true,
            definition: Some(
                "CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)".into(),
            ),
            ..IndexFacts::default()
        },
        IndexFacts {
            name: "orders_recent".into(),
            unique: true,
            method: Some("btree".into()),
            columns: vec!["total DESC".into()],
            predicate: Some("(total > (0)::numeric)".into()),
            ..IndexFacts::default()
        },
        IndexFacts {
            name: "orders_lower".into(),
            unique: true,
            definition: Some(
                "CREATE UNIQUE INDEX orders_lower ON public.orders USING btree (lower(note))"
                    .into(),
            ),
            ..IndexFacts::default()
        },
    ];
    facts.triggers = vec![TriggerFacts {
        name: "audit".into(),
        definition:
            "CREATE TRIGGER audit BEFORE INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION f()"
                .into(),
    }];
    let text = normalize(Dialect::Postgres, &facts);
    assert!(
        text.contains("  FOREIGN KEY (customer) REFERENCES customers(id) ON DELETE CASCADE\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  index orders_recent unique btree (total DESC) where (total > (0)::numeric)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  index orders_lower unique USING btree (lower(note))\n"),
        "{text}"
    );
    assert!(!text.contains("orders_pkey"), "{text}");
    assert!(
        text.contains("  trigger CREATE TRIGGER audit BEFORE INSERT"),
        "{text}"
    );
    // Sections are sorted: the order the catalog answered in does not matter.
    let mut shuffled = facts.clone();
    shuffled.constraints.reverse();
    shuffled.indexes.reverse();
    assert_eq!(normalize(Dialect::Postgres, &shuffled), text);
}

#[test]
fn mysql_text_drops_what_the_server_spells_differently() {
    let mut facts = orders();
    facts.columns[0].extra = Some("auto_increment".into());
    facts.columns[1].default = Some("NULL".into());
    facts.columns.push(ColumnFacts {
        extra: Some("DEFAULT_GENERATED".into()),
        ..column("at", "timestamp", false, Some("current_timestamp()"))
    });
    facts.constraints.push(ConstraintFacts {
        references: Some(("customers".into(), vec!["id".into()])),
        on_delete: Some("CASCADE".into()),
        ..ConstraintFacts::new(ConstraintKind::ForeignKey, vec!["customer".into()])
    });
    facts.indexes = vec![IndexFacts {
        name: "by_total".into(),
        method: Some("BTREE".into()),
        columns: vec!["total".into(), "at DESC".into()],
        ..IndexFacts::default()
    }];
    facts.options = vec!["engine InnoDB".into()];
    assert_eq!(
        normalize(Dialect::MySql, &facts),
        "table orders\n  column id integer NOT NULL auto_increment\n  column total numeric(10,2)\n  \
         column at timestamp NOT NULL DEFAULT current_timestamp()\n  \
         foreign key (customer) references customers (id) on update NO ACTION on delete CASCADE\n  \
         primary key (id)\n  index by_total BTREE (total, at DESC)\n  option engine InnoDB\n"
    );
}

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn record(table: &str, version: &str, text: Option<&str>) -> Recorded {
    Recorded {
        table: table.into(),
        version: v(version),
        fingerprint: text.map(fingerprint),
        text: text.map(Into::into),
    }
}

fn live(table: &str, text: &str) -> TableSchema {
    TableSchema {
        name: table.into(),
        text: text.into(),
        fingerprint: fingerprint(text),
    }
}

#[test]
fn compare_finds_each_state_and_the_version_a_table_matches() {
    let records = vec![
        record("orders", "1.2.0", Some("a\n")),
        record("orders", "1.4.0", Some("a\nb\n")),
        record("items", "1.0.0", Some("i\n")),
        record("gone", "1.0.0", Some("g\n")),
        record("old", "1.0.0", Some("o\n")),
        record("old", "1.3.0", None),
        record("later", "2.0.0", Some("l\n")),
    ];
    let checks = compare(
        Some(&v("1.4.0")),
        &records,
        &[live("orders", "a\n"), live("items", "i\n")],
    );
    let states: Vec<(&str, TableState)> =
        checks.iter().map(|c| (c.table.as_str(), c.state)).collect();
    assert_eq!(
        states,
        [
            ("gone", TableState::Missing),
            ("items", TableState::Unchanged),
            ("orders", TableState::Changed)
        ]
    );
    let orders = &checks[2];
    assert_eq!(orders.recorded_version, "1.4.0");
    assert_eq!(orders.matches_version.as_deref(), Some("1.2.0"));
    let diff = orders.diff.as_deref().unwrap();
    assert!(diff.contains("--- orders (recorded at 1.4.0)"), "{diff}");
    assert!(diff.contains("\n-b\n"), "{diff}");
    // A table recorded as dropped that is back is a change.
    let back = compare(Some(&v("1.4.0")), &records, &[live("old", "o\n")]);
    let old = back.iter().find(|c| c.table == "old").unwrap();
    assert_eq!(
        (old.state, old.matches_version.as_deref()),
        (TableState::Changed, Some("1.0.0"))
    );
}

#[test]
fn consistent_version_finds_one_version_or_says_why_not() {
    let records = vec![
        record("orders", "1.0.0", Some("o1\n")),
        record("orders", "1.4.0", Some("o4\n")),
        record("items", "1.0.0", Some("i1\n")),
        record("items", "1.2.0", Some("i2\n")),
        record("notes", "1.3.0", Some("n\n")),
    ];
    // orders and items as at 1.2.0 (orders unchanged from 1.0.0 to 1.2.0), notes absent.
    let at_12 = [live("orders", "o1\n"), live("items", "i2\n")];
    assert_eq!(
        consistent_version(&v("1.4.0"), &records, &at_12),
        Ok(v("1.2.0"))
    );
    // All three as at 1.3.0.
    let at_13 = [
        live("orders", "o1\n"),
        live("items", "i2\n"),
        live("notes", "n\n"),
    ];
    assert_eq!(
        consistent_version(&v("1.4.0"), &records, &at_13),
        Ok(v("1.3.0"))
    );
    // items as at 1.0.0 but notes (from 1.3.0) there: no one version fits.
    let mixed = [
        live("orders", "o1\n"),
        live("items", "i1\n"),
        live("notes", "n\n"),
    ];
    let why = consistent_version(&v("1.4.0"), &records, &mixed).unwrap_err();
    assert!(why.contains("disagree"), "{why}");
    // A table that matches nothing.
    let odd = [
        live("orders", "x\n"),
        live("items", "i2\n"),
        live("notes", "n\n"),
    ];
    let why = consistent_version(&v("1.4.0"), &records, &odd).unwrap_err();
    assert_eq!(why, "orders matches no recorded version");
    // Nothing to repair.
    let now = [
        live("orders", "o4\n"),
        live("items", "i2\n"),
        live("notes", "n\n"),
    ];
    assert!(consistent_version(&v("1.4.0"), &records, &now)
        .unwrap_err()
        .contains("nothing to repair"));
}
