//! Schema records and `verify` on every backend: no false positive after installs, runs
//! and row changes; each hand-made drift found on the right table with a readable diff;
//! an older recorded version recognised and `--repair-version` both ways; an edited step
//! named while a whitespace or comment edit is not; `--accept` recorded with its reason;
//! read-only on a database upgrader never touched; `launch` stops on drift.

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

const MANIFEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<upgrade project="shop" initial-version="1.0.0">
  <install>
    <sql file="scripts/install.sql"/>
  </install>
  <step name="add-orders" from="1.0.0" to="1.1.0" transaction="none">
    <sql file="scripts/add-orders.sql"/>
  </step>
  <step name="note" from="1.1.0" to="1.2.0" transaction="none">
    <sql>ALTER TABLE orders ADD COLUMN note VARCHAR(100)</sql>
  </step>
  <step name="touch" from="1.2.0" to="1.3.0">
    <sql>UPDATE customers SET name = 'b' WHERE id = 2</sql>
  </step>
</upgrade>
"#;

const INSTALL: &str = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL, \
    email VARCHAR(100) DEFAULT 'none');\n";

const ADD_ORDERS: &str = "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, \
    total INTEGER DEFAULT 0, FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE);\n\
    CREATE INDEX orders_customer ON orders (customer_id);\n\
    CREATE INDEX orders_total ON orders (total);\n";

/// The shop installed at 1.0.0, then deployed at 1.1.0, 1.2.0 and 1.3.0, a run each (so
/// that each version's schemas are recorded).
fn shop(backend: Backend) -> TestProject {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    project.write("scripts/install.sql", INSTALL);
    project.write("scripts/add-orders.sql", ADD_ORDERS);
    project.run(&["--no-backup", "run"]).assert_code(0);
    for version in ["1.1.0", "1.2.0", "1.3.0"] {
        project.write("VERSION", &format!("{version}\n"));
        project.run(&["--no-backup", "run"]).assert_code(0);
    }
    project
}

fn verify(project: &TestProject) -> (i32, serde_json::Value) {
    let run = project.run(&["--json", "verify"]);
    assert!(
        run.code == 0 || run.code == 5,
        "verify failed: {}\n{}",
        run.stdout,
        run.stderr
    );
    (run.code, run.json())
}

/// The table entry of the root project's report.
fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

fn no_false_positive_after_install_runs_and_row_changes(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    project.write("scripts/install.sql", INSTALL);
    project.write("scripts/add-orders.sql", ADD_ORDERS);
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["recorded"], true);
    assert_eq!(table(&report, "customers")["state"], "unchanged");
    project.write("VERSION", "1.3.0\n");
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    // Recorded at the version the run reached.
    assert_eq!(table(&report, "orders")["recorded_version"], "1.3.0");
    assert_eq!(report["steps"].as_array().unwrap().len(), 3, "{report:#}");
    // One row per table whose schema is new or changed, at the version reached.
    assert_eq!(
        project.query_i64(
            "SELECT count(*) FROM upgrader_schema WHERE project = 'shop' AND table_name = 'orders'"
        ),
        1
    );
    assert_eq!(
        project.query_i64(
            "SELECT count(*) FROM upgrader_schema WHERE table_name = 'customers' AND table_version = '1.0.0'"
        ),
        1
    );
    // Rows come and go (and counters move): nothing drifts.
    project.sql(
        "INSERT INTO customers (id, name) VALUES (2, 'a'); INSERT INTO customers (id, name) VALUES (3, 'c'); \
         INSERT INTO orders (id, customer_id) VALUES (1, 2); DELETE FROM customers WHERE id = 3",
    );
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
}

/// SQL that changes `customers` as `alter` says, on SQLite by making the table again.
fn alter_customers(
    backend: Backend,
    postgres: &str,
    mariadb: &str,
    sqlite_columns: &str,
) -> String {
    match backend {
        Backend::Postgres => postgres.to_string(),
        Backend::MariaDb => mariadb.to_string(),
        Backend::Sqlite => format!(
            "CREATE TABLE customers_new ({sqlite_columns}); INSERT INTO customers_new SELECT * FROM customers; \
             DROP TABLE customers; ALTER TABLE customers_new RENAME TO customers"
        ),
    }
}

fn finds_each_hand_made_drift_with_a_readable_diff(backend: Backend) {
    let project = shop(backend);
    let drop_index = match backend {
        Backend::MariaDb => "DROP INDEX orders_total ON orders",
        _ => "DROP INDEX orders_total",
    };
    let drifts: Vec<(&str, String, &str, &[&str])> = vec![
        (
            "column added",
            "ALTER TABLE customers ADD COLUMN phone VARCHAR(20)".into(),
            "customers",
            &["+  column phone"],
        ),
        (
            "type changed",
            alter_customers(
                backend,
                "ALTER TABLE customers ALTER COLUMN name TYPE VARCHAR(80)",
                "ALTER TABLE customers MODIFY name VARCHAR(80) NOT NULL",
                "id INTEGER PRIMARY KEY, name VARCHAR(80) NOT NULL, email VARCHAR(100) DEFAULT 'none', phone VARCHAR(20)",
            ),
            "customers",
            &["-  column name", "+  column name", "80"],
        ),
        (
            "NOT NULL dropped",
            alter_customers(
                backend,
                "ALTER TABLE customers ALTER COLUMN name DROP NOT NULL",
                "ALTER TABLE customers MODIFY name VARCHAR(80) NULL",
                "id INTEGER PRIMARY KEY, name VARCHAR(80), email VARCHAR(100) DEFAULT 'none', phone VARCHAR(20)",
            ),
            "customers",
            &["-  column name", "NOT NULL\n+  column name"],
        ),
        (
            "default changed",
            alter_customers(
                backend,
                "ALTER TABLE customers ALTER COLUMN email SET DEFAULT 'unknown'",
                "ALTER TABLE customers ALTER COLUMN email SET DEFAULT 'unknown'",
                "id INTEGER PRIMARY KEY, name VARCHAR(80), email VARCHAR(100) DEFAULT 'unknown', phone VARCHAR(20)",
            ),
            "customers",
            &["-  column email", "+  column email", "unknown"],
        ),
        (
            "index added",
            "CREATE INDEX customers_name ON customers (name)".into(),
            "customers",
            &["+  index customers_name"],
        ),
        ("index dropped", drop_index.into(), "orders", &["-  index orders_total"]),
        (
            "column renamed",
            "ALTER TABLE orders RENAME COLUMN total TO amount".into(),
            "orders",
            &["-  column total", "+  column amount"],
        ),
    ];
    for (what, sql, name, needles) in drifts {
        project.sql(&sql);
        let (code, report) = verify(&project);
        assert_eq!(code, 5, "{what}: {report:#}");
        assert_eq!(report["drift"], true, "{what}");
        let changed: Vec<&str> = report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] != "unchanged")
            .map(|t| t["table"].as_str().unwrap())
            .collect();
        assert_eq!(changed, [name], "{what}: {report:#}");
        let diff = table(&report, name)["diff"].as_str().unwrap();
        for needle in needles {
            assert!(diff.contains(needle), "{what}: `{needle}` not in\n{diff}");
        }
        // The human report names the table and shows the diff.
        let human = project.run(&["verify"]);
        human.assert_code(5);
        human.assert_stdout(&format!("changed  {name}"));
        human.assert_stdout(needles[0]);
        // Accepted: recorded as it is now, with the reason.
        project
            .run(&[
                "verify",
                "--accept",
                name,
                "--reason",
                &format!("{what} on purpose"),
            ])
            .assert_code(0);
        let (code, report) = verify(&project);
        assert_eq!(code, 0, "{what}, after --accept: {report:#}");
    }
    // A table dropped: missing; accepted as dropped, nothing to report.
    project.sql("DROP TABLE orders");
    let (code, report) = verify(&project);
    assert_eq!(code, 5, "{report:#}");
    assert_eq!(table(&report, "orders")["state"], "missing");
    project
        .run(&["verify"])
        .assert_code(5)
        .assert_stdout("missing  orders");
    project
        .run(&[
            "verify",
            "--accept",
            "orders",
            "--reason",
            "orders moved to another service",
        ])
        .assert_code(0);
    assert_eq!(verify(&project).0, 0);
    assert_eq!(
        project.query_i64(
            "SELECT count(*) FROM upgrader_schema WHERE table_name = 'orders' AND schema_text IS NULL"
        ),
        1
    );
    // The history keeps every acceptance with its reason.
    let accepts: Vec<serde_json::Value> = project
        .history()
        .into_iter()
        .filter(|row| row["kind"] == "accept")
        .collect();
    assert_eq!(accepts.len(), 8, "{accepts:#?}");
    assert_eq!(accepts[7]["name"], "table:orders");
    assert_eq!(accepts[7]["reason"], "orders moved to another service");
    assert!(accepts
        .iter()
        .all(|row| row["host"].as_str().is_some_and(|h| !h.is_empty())));
}

fn recognises_an_older_version_and_repairs_it_or_says_why_not(backend: Backend) {
    let project = shop(backend);
    // orders restored from a backup of 1.1.0: without the column 1.2.0 added.
    project.sql("ALTER TABLE orders DROP COLUMN note");
    let (code, report) = verify(&project);
    assert_eq!(code, 5, "{report:#}");
    assert_eq!(table(&report, "orders")["matches_version"], "1.1.0");
    project
        .run(&["verify"])
        .assert_code(5)
        .assert_stdout("orders matches its 1.1.0 schema; the database records 1.3.0");
    // Another table changed by hand besides: no one version fits, nothing changes.
    project.sql("ALTER TABLE customers ADD COLUMN phone VARCHAR(20)");
    let refused = project.run(&["verify", "--repair-version", "--reason", "restored"]);
    refused
        .assert_code(1)
        .assert_stderr("customers matches no recorded version");
    assert_eq!(project.version_of("shop").as_deref(), Some("1.3.0"));
    project.run(&["--json", "status"]).assert_code(0);
    // Without the reason: a usage error.
    project.run(&["verify", "--repair-version"]).assert_code(2);
    // With customers as recorded again, every table fits 1.1.0: recorded, and the next
    // run upgrades from there.
    project.sql("ALTER TABLE customers DROP COLUMN phone");
    project
        .run(&[
            "verify",
            "--repair-version",
            "--reason",
            "orders restored from the 1.1.0 backup",
        ])
        .assert_code(0)
        .assert_stdout("version 1.1.0 recorded instead of 1.3.0");
    assert_eq!(project.version_of("shop").as_deref(), Some("1.1.0"));
    let row = project
        .history()
        .into_iter()
        .rfind(|row| row["kind"] == "accept")
        .unwrap();
    assert_eq!(row["name"], "version:1.1.0");
    assert_eq!(row["reason"], "orders restored from the 1.1.0 backup");
    assert_eq!(verify(&project).0, 0);
    project.run(&["--no-backup", "run"]).assert_code(0);
    assert_eq!(project.version_of("shop").as_deref(), Some("1.3.0"));
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
}

fn names_an_edited_step_but_not_a_whitespace_edit(backend: Backend) {
    let project = shop(backend);
    // Layout and comments only: the same step.
    project.write(
        "scripts/add-orders.sql",
        &format!(
            "-- orders, as shipped in 1.1.0\n\n{}\n  /* end */\n",
            ADD_ORDERS.replace(", ", ",\n    ")
        ),
    );
    project.write(
        "upgrade.xml",
        &MANIFEST.replace(
            "UPDATE customers SET name = 'b' WHERE id = 2",
            "UPDATE customers\n      SET name = 'b'   -- the second customer\n      WHERE id = 2;",
        ),
    );
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    // A real edit: named.
    project.write(
        "upgrade.xml",
        &MANIFEST.replace("SET name = 'b' WHERE id = 2", "SET name = 'c' WHERE id = 2"),
    );
    let (code, report) = verify(&project);
    assert_eq!(code, 5, "{report:#}");
    let edited: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "changed")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(edited, ["touch"]);
    project
        .run(&["verify"])
        .assert_code(5)
        .assert_stdout("step 'touch'");
    project
        .run(&[
            "verify",
            "--accept",
            "touch",
            "--reason",
            "typo in the name fixed",
        ])
        .assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    let row = project
        .history()
        .into_iter()
        .rfind(|row| row["kind"] == "accept")
        .unwrap();
    assert_eq!(row["name"], "step:touch");
    assert_eq!(row["reason"], "typo in the name fixed");
    // Something that is neither a table nor an applied step: refused, nothing recorded.
    project
        .run(&["verify", "--accept", "nothing-such", "--reason", "x"])
        .assert_code(1)
        .assert_stderr("neither a table");
}

fn reads_only_and_needs_nothing_recorded(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    project.write("scripts/install.sql", INSTALL);
    project.write("scripts/add-orders.sql", ADD_ORDERS);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["recorded"], false);
    project
        .run(&["verify"])
        .assert_code(0)
        .assert_stdout("no table schema recorded yet");
    assert!(!project.lock_path().exists());
    match backend {
        Backend::Sqlite => assert!(!project.db_path().exists(), "verify created the database"),
        Backend::Postgres => assert_eq!(
            project.query_i64(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ),
            0,
            "verify created tables"
        ),
        Backend::MariaDb => assert_eq!(
            project.query_i64(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
            ),
            0,
            "verify created tables"
        ),
    }
    assert_eq!(project.version_of("shop"), None);
}

fn launch_stops_on_drift_unless_told_not_to(backend: Backend) {
    let project = shop(backend);
    project.run(&["launch", "--", "true"]).assert_code(0);
    project.sql("CREATE INDEX customers_name ON customers (name)");
    project
        .run(&["launch", "--", "true"])
        .assert_code(5)
        .assert_stderr("changed  customers");
    project
        .run(&["launch", "--no-verify", "--", "true"])
        .assert_code(0);
}

fn a_run_records_what_it_changed_and_never_a_change_made_by_hand(backend: Backend) {
    let project = shop(backend);
    project.sql("CREATE INDEX customers_name ON customers (name)");
    project.write(
        "upgrade.xml",
        &MANIFEST.replace(
            "</upgrade>",
            "  <step name=\"extra\" from=\"1.3.0\" to=\"1.4.0\" transaction=\"none\">\n    \
             <sql>ALTER TABLE orders ADD COLUMN extra INTEGER</sql>\n  </step>\n</upgrade>",
        ),
    );
    project.write("VERSION", "1.4.0\n");
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 5, "{report:#}");
    assert_eq!(table(&report, "orders")["state"], "unchanged");
    assert_eq!(table(&report, "orders")["recorded_version"], "1.4.0");
    assert_eq!(table(&report, "customers")["state"], "changed");
    assert_eq!(table(&report, "customers")["recorded_version"], "1.0.0");
}

fn a_per_step_run_that_fails_records_what_stayed_committed(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    project.write("scripts/install.sql", INSTALL);
    project.write("scripts/add-orders.sql", ADD_ORDERS);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write(
        "upgrade.xml",
        &MANIFEST.replace("UPDATE customers SET", "UPDATE no_such_table SET"),
    );
    project.write("VERSION", "1.3.0\n");
    project
        .run(&["--no-backup", "--transaction", "per-step", "run"])
        .assert_code(1);
    assert_eq!(project.version_of("shop").as_deref(), Some("1.2.0"));
    project.run(&["unlock"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(table(&report, "orders")["recorded_version"], "1.2.0");
}

/// Each package's tables are its own: recorded under its project, reported in `packages`.
fn verifies_every_package_of_the_application(backend: Backend) {
    let root = r#"<upgrade project="core" initial-version="1.0.0">
  <package dir="modules/blog"/>
  <install><sql>CREATE TABLE core_items (id INTEGER PRIMARY KEY)</sql></install>
</upgrade>
"#;
    let project = TestProject::on(backend, "1.0.0", root);
    project.write("modules/blog/VERSION", "1.0.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        r#"<upgrade project="blog" initial-version="1.0.0">
  <install><sql>CREATE TABLE posts (id INTEGER PRIMARY KEY, title VARCHAR(40))</sql></install>
</upgrade>
"#,
    );
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["project"], "core");
    let blog = &report["packages"][0];
    assert_eq!(blog["project"], "blog");
    assert_eq!(table(blog, "posts")["state"], "unchanged");
    assert!(report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["table"] != "posts"));
    project.sql("ALTER TABLE posts ADD COLUMN body TEXT");
    let (code, report) = verify(&project);
    assert_eq!(code, 5, "{report:#}");
    assert_eq!(report["drift"], false);
    assert_eq!(report["packages"][0]["drift"], true);
    assert_eq!(table(&report["packages"][0], "posts")["state"], "changed");
}

/// With `verify_at_start`, the web gate halts on drift, the diff in its reason.
#[test]
fn the_gate_can_halt_on_drift_at_start() {
    use std::time::Duration;
    use upgrader::gate::{Answer, Gate, GateOptions};
    let project = shop(Backend::Sqlite);
    project.sql("ALTER TABLE orders ADD COLUMN coupon VARCHAR(10)");
    let gate = |verify_at_start| {
        Gate::new(
            project.path(),
            None,
            GateOptions {
                recheck_interval: Duration::from_millis(50),
                verify_at_start,
                ..GateOptions::default()
            },
        )
    };
    let ignoring = gate(false);
    crate::util::wait_for(Duration::from_secs(10), "the gate to serve", || {
        ignoring.check() == Answer::Ready
    });
    let verifying = gate(true);
    let mut answer = verifying.check();
    crate::util::wait_for(Duration::from_secs(10), "the gate to halt", || {
        answer = verifying.check();
        matches!(answer, Answer::Halted { .. })
    });
    let Answer::Halted { reason } = answer else {
        unreachable!()
    };
    assert!(reason.contains("schema drift"), "{reason}");
    assert!(reason.contains("+  column coupon VARCHAR(10)"), "{reason}");
}

/// Auto-increment counters, sequences and statistics move with rows: never drift.
fn counters_moving_are_not_drift(backend: Backend) {
    let table = match backend {
        Backend::Sqlite => {
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, what VARCHAR(20))"
        }
        Backend::Postgres => "CREATE TABLE events (id SERIAL PRIMARY KEY, what VARCHAR(20))",
        Backend::MariaDb => {
            "CREATE TABLE events (id INTEGER AUTO_INCREMENT PRIMARY KEY, what VARCHAR(20))"
        }
    };
    let manifest = format!(
        "<upgrade project=\"shop\" initial-version=\"1.0.0\">\n  <install><sql>{table};\n    \
         CREATE INDEX events_what ON events (what)</sql></install>\n</upgrade>\n"
    );
    let project = TestProject::on(backend, "1.0.0", &manifest);
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    for round in 0..50 {
        project.sql(&format!("INSERT INTO events (what) VALUES ('e{round}')"));
    }
    project.sql("DELETE FROM events WHERE what = 'e7'");
    if backend == Backend::Postgres {
        project.sql("ANALYZE events");
    }
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(table_state(&report, "events"), "unchanged");
}

/// A foreign key is part of the recorded schema, with its action: dropping it by hand
/// is drift.
fn records_foreign_keys_with_their_actions(backend: Backend) {
    let project = shop(backend);
    let count = |condition: &str| {
        project.query_i64(&format!(
            "SELECT count(*) FROM upgrader_schema WHERE table_name = 'orders' AND {condition}"
        ))
    };
    assert!(count("schema_text LIKE '%customer_id%CASCADE%'") > 0);
    assert_eq!(
        count("schema_text IS NOT NULL AND schema_text NOT LIKE '%customer_id%CASCADE%'"),
        0,
        "every orders schema records its foreign key and its ON DELETE action"
    );
}

/// Tables named in another case than they were made in, or quoted with capitals (which
/// PostgreSQL keeps as written), are recorded when a run alters or drops them.
fn names_in_any_case_are_recorded(backend: Backend) {
    let (quoted, items) = match backend {
        // MariaDB quotes with backticks, and names tables in the case they were made in.
        Backend::MariaDb => ("`Orders`", "Items"),
        _ => ("\"Orders\"", "ITEMS"),
    };
    let manifest = format!(
        r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql>CREATE TABLE {quoted} (id INTEGER PRIMARY KEY);
CREATE TABLE Items (id INTEGER PRIMARY KEY)</sql></install>
  <step name="alter" from="1.0.0" to="1.1.0" transaction="none">
    <sql>ALTER TABLE {quoted} ADD COLUMN note VARCHAR(10);
ALTER TABLE {items} ADD COLUMN note VARCHAR(10)</sql>
  </step>
  <step name="drop" from="1.1.0" to="1.2.0" transaction="none">
    <sql>DROP TABLE {quoted}</sql>
  </step>
</upgrade>
"#
    );
    let project = TestProject::on(backend, "1.0.0", &manifest);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    let items = if backend == Backend::Postgres {
        "items"
    } else {
        "Items"
    };
    for name in ["Orders", items] {
        assert_eq!(
            table(&report, name)["recorded_version"],
            "1.1.0",
            "{report:#}"
        );
    }
    project.write("VERSION", "1.2.0\n");
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["table"] != "Orders"),
        "{report:#}"
    );
    assert_eq!(
        project.query_i64(
            "SELECT COUNT(*) FROM upgrader_schema WHERE table_name = 'Orders' \
             AND table_version = '1.2.0' AND schema_text IS NULL"
        ),
        1
    );
}

/// A run that names more tables than it reads at a time, each in two spellings (which
/// fall into different batches), records each table once.
#[test]
fn many_tables_named_twice_are_recorded_once() {
    let tables = 600;
    let create: String = (0..tables)
        .map(|i| format!("CREATE TABLE t{i} (id INTEGER PRIMARY KEY);\n"))
        .collect();
    let alter: String = (0..tables)
        .map(|i| format!("ALTER TABLE T{i} ADD COLUMN note TEXT;\n"))
        .collect();
    let manifest = r#"<upgrade project="shop" initial-version="1.0.0">
  <install><sql file="scripts/create.sql"/></install>
  <step name="alter" from="1.0.0" to="1.1.0"><sql file="scripts/alter.sql"/></step>
</upgrade>
"#;
    let project = TestProject::new("1.0.0", manifest);
    project.write("scripts/create.sql", &create);
    project.write("scripts/alter.sql", &alter);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    project.run(&["--no-backup", "run"]).assert_code(0);
    let (code, report) = verify(&project);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        project.query_i64("SELECT COUNT(*) FROM upgrader_schema WHERE table_version = '1.1.0'"),
        tables
    );
}

fn table_state(report: &serde_json::Value, name: &str) -> String {
    table(report, name)["state"].as_str().unwrap().to_string()
}

on_every_backend!(
    records_foreign_keys_with_their_actions,
    names_in_any_case_are_recorded,
    counters_moving_are_not_drift,
    verifies_every_package_of_the_application,
    a_run_records_what_it_changed_and_never_a_change_made_by_hand,
    a_per_step_run_that_fails_records_what_stayed_committed,
    no_false_positive_after_install_runs_and_row_changes,
    finds_each_hand_made_drift_with_a_readable_diff,
    recognises_an_older_version_and_repairs_it_or_says_why_not,
    names_an_edited_step_but_not_a_whitespace_edit,
    reads_only_and_needs_nothing_recorded,
    launch_stops_on_drift_unless_told_not_to,
);
