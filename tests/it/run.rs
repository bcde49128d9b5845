//! The upgrade workflow end to end through the real binary: install, adoption, gap
//! filling, failures and rollback, per-step transactions, downgrade.

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

const MANIFEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<upgrade project="test" initial-version="1.0.0">
  <install>
    <sql file="scripts/install.sql"/>
  </install>
  <step name="one" from="1.0.0" to="1.1.0">
    <sql file="scripts/one.sql"/>
  </step>
  <step name="two" from="1.2.0" to="1.3.0">
    <sql file="scripts/two.sql"/>
  </step>
  <step name="three" from="1.3.0" to="1.4.0">
    <sql>INSERT INTO items (id, name) VALUES (2, 'from three; inline');</sql>
  </step>
</upgrade>
"#;

fn project(backend: Backend, version: &str) -> TestProject {
    let project = TestProject::on(backend, version, MANIFEST);
    project.write(
        "scripts/install.sql",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, size INTEGER);\n\
         INSERT INTO items (id, name) VALUES (1, 'installed');\n",
    );
    project.write(
        "scripts/one.sql",
        "INSERT INTO items (id, name) VALUES (1, 'one; with a semicolon');\n",
    );
    project.write("scripts/two.sql", "UPDATE items SET size = 2;\n");
    project
}

/// A database that exists but was never upgraded by upgrader. Its tables exist before
/// the steps run, so that the steps are plain DML that every backend can roll back
/// (MySQL refuses DDL in the shared transaction).
fn legacy_database(project: &TestProject) {
    project.sql(
        "CREATE TABLE legacy (x INTEGER); INSERT INTO legacy VALUES (7); \
         CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, size INTEGER)",
    );
}

fn install_on_empty_database(backend: Backend) {
    let project = project(backend, "1.4.0");
    project
        .run(&["run"])
        .assert_code(0)
        .assert_stdout("installed test");
    assert_eq!(project.recorded_version().as_deref(), Some("1.4.0"));
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE name = 'installed'"),
        1
    );
    let history = project.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["kind"], "install");
    assert_eq!(history[0]["to_version"], "1.4.0");
    assert_eq!(history[0]["success"], true);
    assert_eq!(history[0]["from_version"], serde_json::Value::Null);
    assert_eq!(history[0]["checksum"].as_str().unwrap().len(), 64);
    assert!(history[0]["pid"].as_i64().is_some());
    assert!(!history[0]["host"].as_str().unwrap().is_empty());
    assert!(!project.lock_path().exists());

    project
        .run(&["run"])
        .assert_code(0)
        .assert_stdout("current at 1.4.0");
    assert_eq!(project.history().len(), 1);
    project.run(&["check"]).assert_code(0);
}

fn adopts_existing_database_and_fills_gaps(backend: Backend) {
    let project = project(backend, "1.5.0");
    legacy_database(&project);
    let plan = project.run(&["plan", "--json"]);
    plan.assert_code(0);
    let plan = plan.json();
    assert_eq!(plan["from"], "1.0.0");
    assert_eq!(plan["to"], "1.5.0");
    let kinds: Vec<(String, String, String, String)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                s["from"].as_str().unwrap().to_string(),
                s["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("one", "step", "1.0.0", "1.1.0"),
        ("version-only", "version-only", "1.1.0", "1.2.0"),
        ("two", "step", "1.2.0", "1.3.0"),
        ("three", "step", "1.3.0", "1.4.0"),
        ("version-only", "version-only", "1.4.0", "1.5.0"),
    ]
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()));
    assert_eq!(kinds, expected);
    // plan executes nothing
    assert_eq!(project.recorded_version(), None);

    project.run(&["check"]).assert_code(3);
    project
        .run(&["run"])
        .assert_code(0)
        .assert_stdout("upgraded test 1.0.0 -> 1.5.0");
    assert_eq!(project.recorded_version().as_deref(), Some("1.5.0"));
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE size = 2"),
        1
    );
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 2);
    assert_eq!(project.query_i64("SELECT count(*) FROM legacy"), 1);
    let history = project.history();
    let rows: Vec<(String, String)> = history
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().into(),
                r["to_version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("step", "1.1.0"),
            ("version-only", "1.2.0"),
            ("step", "1.3.0"),
            ("step", "1.4.0"),
            ("version-only", "1.5.0")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(history.iter().all(|r| r["success"] == true));
    assert_eq!(history[1]["checksum"], serde_json::Value::Null);
    project.run(&["check"]).assert_code(0);
}

fn failure_mid_run_rolls_everything_back_and_halts(backend: Backend) {
    let project = project(backend, "1.4.0");
    legacy_database(&project);
    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2;\nUPDATE no_such_table SET size = 2;\n",
    );
    let before = project.app_snapshot();
    let failed = project.run(&["run"]);
    failed
        .assert_code(1)
        .assert_stderr("step 'two' failed at scripts/two.sql:2:1")
        .assert_stderr("no_such_table")
        .assert_stderr("rolled back");
    assert_eq!(project.app_snapshot(), before, "the database changed");
    assert_eq!(project.recorded_version(), None);

    let lock = project.lock_json().expect("the lock file stays");
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["step"], "two");
    assert!(lock["error"].as_str().unwrap().contains("no_such_table"));

    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["state"], "halted");
    assert_eq!(status["lock"]["state"], "failed");
    assert_eq!(status["lock"]["step"], "two");

    project
        .run(&["run"])
        .assert_code(4)
        .assert_stderr("failed at step 'two'");
    project.run(&["check"]).assert_code(4);

    // The failure is recorded outside the rolled-back transaction.
    let history = project.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["success"], false);
    assert_eq!(history[0]["name"], "two");
    assert_eq!(history[0]["kind"], "step");
    // The failed step's own range, not the version the run started from (none here).
    assert_eq!(history[0]["from_version"], "1.2.0");
    assert_eq!(history[0]["to_version"], "1.3.0");
    assert_eq!(history[0]["checksum"].as_str().unwrap().len(), 64);
    assert!(history[0]["error"]
        .as_str()
        .unwrap()
        .contains("no_such_table"));

    project.write("scripts/two.sql", "UPDATE items SET size = 2;\n");
    project
        .run(&["unlock"])
        .assert_code(0)
        .assert_stdout("removed the failed lock");
    assert!(!project.lock_path().exists());
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.4.0"));
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE size = 2"),
        1
    );
}

fn failure_per_step_keeps_earlier_steps(backend: Backend) {
    let project = project(backend, "1.4.0");
    legacy_database(&project);
    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2;\nSELECT * FROM nowhere;\n",
    );
    project
        .run(&["run", "--transaction", "per-step"])
        .assert_code(1)
        .assert_stderr("steps before it stay committed")
        .assert_stderr("version 1.2.0");
    // Step one and the gap bump committed; step two rolled back.
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 1);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE size = 2"),
        0
    );
    assert_eq!(project.lock_json().unwrap()["state"], "failed");
    let history = project.history();
    let ok: Vec<&str> = history
        .iter()
        .filter(|r| r["success"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(ok, ["one", "version-only"]);

    project.write("scripts/two.sql", "UPDATE items SET size = 2;\n");
    project.run(&["unlock"]).assert_code(0);
    project
        .run(&["--transaction", "per-step", "run"])
        .assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.4.0"));
}

fn install_failure_leaves_empty_database(backend: Backend) {
    let project = project(backend, "1.4.0");
    project.write(
        "scripts/install.sql",
        "CREATE TABLE items (id INTEGER PRIMARY KEY);\nINSERT INTO items VALUES (1);\nINSERT INTO items VALUES (1);\n",
    );
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("install 'install' failed at scripts/install.sql:3:1");
    assert_eq!(project.app_table_count(), 0);
    assert_eq!(project.recorded_version(), None);
    let history = project.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["kind"], "install");
    assert_eq!(history[0]["success"], false);
    assert_eq!(project.lock_json().unwrap()["step"], "install");
}

fn downgrade_is_refused(backend: Backend) {
    let project = project(backend, "1.4.0");
    project.run(&["run"]).assert_code(0);
    project.write("VERSION", "1.3.0\n");
    let before = project.snapshot();
    project.run(&["run"]).assert_code(1).assert_stderr(
        "refusing to downgrade: the database is at 1.4.0 but the code (VERSION) is at 1.3.0",
    );
    assert_eq!(project.snapshot(), before);
    assert!(!project.lock_path().exists());
    project.run(&["check"]).assert_code(1);
    let status = project.run(&["status", "--json"]).json();
    assert!(status["problem"].as_str().unwrap().contains("downgrade"));
}

/// A statement the guard refuses fails the run as soon as it holds the lock, before
/// anything is sent: the database is as before, the failure is recorded and the lock
/// stays failed until a developer has looked.
fn refused_statement_touches_nothing(backend: Backend) {
    let project = project(backend, "1.4.0");
    legacy_database(&project);
    project.write(
        "scripts/two.sql",
        "UPDATE items SET name = 'x';\n  COMMIT;\n",
    );
    let before = project.app_snapshot();
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr(&format!(
            "scripts/two.sql:2:3: step 'two': statement refused on {}: transaction control (COMMIT)",
            backend.name()
        ))
        .assert_stderr("it was not sent");
    assert_eq!(project.app_snapshot(), before);
    let lock = project.lock_json().unwrap();
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["step"], "two");
    let history = project.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["success"], false);
    assert_eq!(history[0]["name"], "two");
    project.run(&["run"]).assert_code(4);
}

fn bad_sql_position_inside_inline_sql(backend: Backend) {
    let project = project(backend, "1.4.0");
    let manifest = MANIFEST.replace(
        "<sql>INSERT INTO items (id, name) VALUES (2, 'from three; inline');</sql>",
        "<sql>\n      SELECT 1;\n      SELECT 'unterminated;\n    </sql>",
    );
    project.write("upgrade.xml", &manifest);
    legacy_database(&project);
    let before = project.snapshot();
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("upgrade.xml:15:14: step 'three': cannot split the SQL");
    assert_eq!(project.snapshot(), before);
}

fn status_json_has_the_contract_keys(backend: Backend) {
    let project = project(backend, "1.4.0");
    let status = project.run(&["status", "--json"]);
    status.assert_code(0);
    let status = status.json();
    for key in [
        "project",
        "code_version",
        "db_version",
        "state",
        "pending",
        "lock",
        "updates_pending",
    ] {
        assert!(status.get(key).is_some(), "missing {key}: {status}");
    }
    assert_eq!(status["project"], "test");
    assert_eq!(status["code_version"], "1.4.0");
    assert_eq!(status["db_version"], serde_json::Value::Null);
    assert_eq!(status["state"], "uninitialized");
    assert_eq!(status["lock"]["state"], "free");
    assert_eq!(status["pending"][0]["kind"], "install");
    assert_eq!(status["pending"][0]["name"], "install");
    assert!(status["updates_pending"].as_array().unwrap().is_empty());
    // Reports never create the database, nor any table.
    match backend {
        Backend::Sqlite => assert!(!project.db_path().exists()),
        Backend::Postgres | Backend::MariaDb => assert_eq!(project.snapshot(), ""),
    }
    project.run(&["check"]).assert_code(3);

    project.run(&["run"]).assert_code(0);
    project.write("VERSION", "1.5.0\n");
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["state"], "pending");
    assert_eq!(status["db_version"], "1.4.0");
    assert_eq!(status["pending"][0]["kind"], "version-only");
    project.run(&["check"]).assert_code(3);
}

#[test]
fn options_after_the_command_and_database_url() {
    let project = project(Backend::Sqlite, "1.4.0");
    let other = project.path().join("elsewhere.db");
    let url = format!("sqlite://{}", other.display());
    project
        .run(&["run", "--database", &url, "--json"])
        .assert_code(0);
    assert!(other.exists());
    assert!(!project.db_path().exists());
    let status = project
        .command(&["status", "--json"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["db_version"], "1.4.0");
}

#[test]
fn usage_errors_exit_2() {
    let project = project(Backend::Sqlite, "1.4.0");
    project.run(&["frobnicate"]).assert_code(2);
    project
        .run(&["run", "--transaction", "sometimes"])
        .assert_code(2);
}

fn transaction_none_step_runs_alone(backend: Backend) {
    let project = project(backend, "1.4.0");
    let manifest = MANIFEST.replace(
        r#"<step name="two" from="1.2.0" to="1.3.0">"#,
        r#"<step name="two" from="1.2.0" to="1.3.0" transaction="none">"#,
    );
    project.write("upgrade.xml", &manifest);
    project.write(
        "scripts/two.sql",
        "ALTER TABLE items ADD COLUMN extra INTEGER; -- ends; in a comment\n\
         UPDATE nowhere SET size = 1;\n\
         ALTER TABLE items ADD COLUMN never INTEGER;\n",
    );
    legacy_database(&project);
    // On MySQL the three statements go in one round trip: the failure must still name
    // the second, and the third must not have run.
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("scripts/two.sql:2:1")
        .assert_stderr("may hold part of it");
    // The steps before it committed; its first statement stayed.
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert!(project.column_exists("items", "extra"));
    assert!(!project.column_exists("items", "never"));
    let lock = project.lock_json().unwrap();
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["non_transactional"], true);
    project
        .run(&["status"])
        .assert_code(0)
        .assert_stdout("may hold part of it");
}

/// A failure after a `transaction="none"` step committed must not claim the database is
/// unchanged: the run rolls back only to where that step left it.
fn failure_after_a_step_that_ran_alone_says_what_stayed(backend: Backend) {
    let project = project(backend, "1.4.0");
    let manifest = MANIFEST
        .replace(
            r#"<step name="two" from="1.2.0" to="1.3.0">"#,
            r#"<step name="two" from="1.2.0" to="1.3.0" transaction="none">"#,
        )
        .replace(
            "INSERT INTO items (id, name) VALUES (2, 'from three; inline');",
            "INSERT INTO nowhere (id) VALUES (2);",
        );
    project.write("upgrade.xml", &manifest);
    project.write(
        "scripts/two.sql",
        "ALTER TABLE items ADD COLUMN extra INTEGER;\n",
    );
    legacy_database(&project);
    let run = project.run(&["run"]);
    run.assert_code(1)
        .assert_stderr("step 'three' failed")
        .assert_stderr(
            "rolled back to where the transaction=\"none\" step 'two' committed: it and the steps before it stay applied, and the database records version 1.3.0",
        );
    assert!(
        !run.stderr.contains("unchanged"),
        "a run that committed a step must not say unchanged:\n{}",
        run.stderr
    );
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert!(project.column_exists("items", "extra"));
    let history = project.history();
    let failed = history.last().unwrap();
    assert_eq!(failed["success"], false);
    assert_eq!(failed["name"], "three");
    assert_eq!(failed["from_version"], "1.3.0");
    assert_eq!(failed["to_version"], "1.4.0");
}

/// A database without a recorded version whose initial-version is already the code
/// version is adopted by recording that version: the output says so, not "upgraded
/// 1.0.0 -> 1.0.0".
fn adopting_at_the_code_version_is_reported_as_recorded(backend: Backend) {
    let project = project(backend, "1.0.0");
    legacy_database(&project);
    project
        .run(&["plan"])
        .assert_code(0)
        .assert_stdout("plan for test: record version 1.0.0 (the database records no version yet; no steps to run)");
    let plan = project.run(&["plan", "--json"]).json();
    assert_eq!(plan["db_version"], serde_json::Value::Null);
    assert_eq!(plan["steps"].as_array().unwrap().len(), 0);
    let run = project.run(&["run", "--json"]);
    run.assert_code(0);
    let outcome = run.json();
    assert_eq!(outcome["result"], "recorded");
    assert_eq!(outcome["from"], serde_json::Value::Null);
    assert_eq!(outcome["to"], "1.0.0");
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    project.run(&["check"]).assert_code(0);

    let other = self::project(backend, "1.0.0");
    legacy_database(&other);
    let run = other.run(&["run"]);
    run.assert_code(0)
        .assert_stdout("recorded version 1.0.0 for test (the database had none; no steps to run)");
    assert!(!run.stdout.contains("upgraded"), "{}", run.stdout);
}

/// The run's summary counts statements in good English.
fn run_summary_counts_statements(backend: Backend) {
    let project = project(backend, "1.1.0");
    legacy_database(&project);
    let run = project.run(&["run"]);
    run.assert_code(0).assert_stdout("(1 statement, ");
    assert!(!run.stdout.contains("1 statements"), "{}", run.stdout);
}

/// upgrader's own tables are made whole again on every run: a history table dropped by
/// hand does not make every later run fail.
fn own_tables_are_recreated_when_missing(backend: Backend) {
    let project = project(backend, "1.1.0");
    legacy_database(&project);
    project.run(&["run"]).assert_code(0);
    project.sql("DROP TABLE upgrader_history");
    project.write("VERSION", "1.4.0\n");
    project
        .run(&["run"])
        .assert_code(0)
        .assert_stderr("upgrader_history was missing");
    assert_eq!(project.recorded_version().as_deref(), Some("1.4.0"));
    let history = project.history();
    assert!(
        history
            .iter()
            .any(|row| row["name"] == "three" && row["success"] == true),
        "{history:?}"
    );
}

on_every_backend!(
    install_on_empty_database,
    adopts_existing_database_and_fills_gaps,
    failure_mid_run_rolls_everything_back_and_halts,
    failure_per_step_keeps_earlier_steps,
    install_failure_leaves_empty_database,
    downgrade_is_refused,
    refused_statement_touches_nothing,
    bad_sql_position_inside_inline_sql,
    transaction_none_step_runs_alone,
    status_json_has_the_contract_keys,
    failure_after_a_step_that_ran_alone_says_what_stayed,
    adopting_at_the_code_version_is_reported_as_recorded,
    run_summary_counts_statements,
    own_tables_are_recreated_when_missing,
);

#[test]
fn postgres_password_never_shown() {
    let project = project(Backend::Postgres, "1.4.0");
    let url = project.url.clone().unwrap();
    let with_password = url.replace("postgres://upgrader@", "postgres://upgrader:s3cret-pw@");
    let status = project.run(&["status", "--json", "--database", &with_password]);
    status.assert_code(0);
    assert_eq!(
        status.json()["database"],
        url.replace("upgrader@", "upgrader:***@")
    );
    project
        .run(&["run", "--database", &with_password])
        .assert_code(0);
    let unreachable = with_password.replace("127.0.0.1:", "127.0.0.1:1");
    let failed = project.run(&["status", "--database", &unreachable]);
    // "cannot connect to …", or, when the port is out of range, "database URL …: invalid".
    failed
        .assert_code(1)
        .assert_stderr("postgres://upgrader:***@");
    for output in [
        &status.stdout,
        &status.stderr,
        &failed.stdout,
        &failed.stderr,
    ] {
        assert!(!output.contains("s3cret-pw"), "{output}");
    }
    assert!(
        !std::fs::read_dir(project.path())
            .unwrap()
            .any(|e| std::fs::read_to_string(e.unwrap().path())
                .is_ok_and(|t| t.contains("s3cret-pw")))
    );
}

#[test]
fn postgres_refuses_statements_outside_transactions_unless_the_step_opts_out() {
    let project = project(Backend::Postgres, "1.4.0");
    legacy_database(&project);
    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 3;\nCREATE INDEX CONCURRENTLY items_size ON items (size);\n",
    );
    let before = project.app_snapshot();
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("scripts/two.sql:2:1: step 'two': statement refused on postgres: CREATE ... CONCURRENTLY cannot run inside a transaction block");
    assert_eq!(project.app_snapshot(), before);
    assert_eq!(project.lock_json().unwrap()["state"], "failed");
    project.run(&["unlock"]).assert_code(0);

    // Opting out runs the step alone, where PostgreSQL accepts it.
    let manifest = MANIFEST.replace(
        r#"<step name="two" from="1.2.0" to="1.3.0">"#,
        r#"<step name="two" from="1.2.0" to="1.3.0" transaction="none">"#,
    );
    project.write("upgrade.xml", &manifest);
    project.run(&["run"]).assert_code(0);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM pg_indexes WHERE indexname = 'items_size'"),
        1
    );
    assert_eq!(project.recorded_version().as_deref(), Some("1.4.0"));
}

/// Statements with trailing comments and DO blocks run as written, and a failure in a
/// step of several statements is reported at the statement that failed.
#[test]
fn postgres_multi_statement_step_reports_the_failing_statement() {
    let project = project(Backend::Postgres, "1.4.0");
    legacy_database(&project);
    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2; -- trailing comment\n\
         DO $$ BEGIN UPDATE items SET size = size + 1; END $$;\n\
         UPDATE items SET size = size * 10 -- comment at the very end",
    );
    project.run(&["run"]).assert_code(0);
    assert_eq!(
        project.query_i64("SELECT sum(size) FROM items WHERE id = 1"),
        30
    );

    let other = self::project(Backend::Postgres, "1.4.0");
    legacy_database(&other);
    other.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2;\nUPDATE items SET size = 3;\nUPDATE items SET nope = 1;\n",
    );
    let before = other.app_snapshot();
    other
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("step 'two' failed at scripts/two.sql:3:1")
        .assert_stderr("nope");
    assert_eq!(other.app_snapshot(), before);
}

const ALONE_MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="one" from="1.0.0" to="1.1.0" transaction="none"><sql>
    CREATE TABLE a (id INT PRIMARY KEY);
    INSERT INTO a (id) SELECT 1 FROM (SELECT SLEEP(0.3)) s;
  </sql></step>
  <step name="two" from="1.1.0" to="1.2.0" transaction="none"><sql>
    CREATE TABLE b (id INT PRIMARY KEY);
    INSERT INTO b (id) VALUES (1);
  </sql></step>
  <step name="three" from="1.2.0" to="1.3.0" transaction="none"><sql>
    CREATE TABLE c (id INT PRIMARY KEY);
    INSERT INTO c (id) VALUES (1);
  </sql></step>
</upgrade>
"#;

fn rfc3339(value: &serde_json::Value) -> std::time::SystemTime {
    let text = value.as_str().unwrap();
    assert_eq!(text.len(), "2026-12-02T17:28:26.487Z".len(), "{text}");
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// On MySQL a step that runs alone is recorded in its statements' round trip, its time
/// measured by the server: the history must still say when it started and ended, in
/// this host's terms, and how long it took.
#[test]
fn mariadb_steps_that_run_alone_are_recorded_with_their_times() {
    let project = TestProject::on(Backend::MariaDb, "1.3.0", ALONE_MANIFEST);
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    let history = project.history();
    let steps: Vec<_> = history.iter().filter(|row| row["kind"] == "step").collect();
    assert_eq!(
        steps
            .iter()
            .map(|row| row["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    for row in &steps {
        assert_eq!(row["success"], true);
        let (started, finished) = (rfc3339(&row["started_at"]), rfc3339(&row["finished_at"]));
        let span = finished.duration_since(started).unwrap().as_millis() as i64;
        let duration = row["duration_ms"].as_i64().unwrap();
        assert!((span - duration).abs() <= 1, "{row}");
    }
    assert!(
        steps[0]["duration_ms"].as_i64().unwrap() >= 300,
        "{}",
        steps[0]
    );
    // Each step starts after the one before it finished.
    for pair in steps.windows(2) {
        assert!(rfc3339(&pair[1]["started_at"]) >= rfc3339(&pair[0]["finished_at"]));
    }
}

/// A trigger that refuses `step`'s history row when it succeeded ("history refused").
fn refuse_history_row(project: &TestProject, step: &str) {
    use mysql::prelude::Queryable;
    project
        .my()
        .query_drop(format!(
            "CREATE TRIGGER refuse_{step} BEFORE INSERT ON upgrader_history FOR EACH ROW \
             BEGIN IF NEW.name = '{step}' AND NEW.success = 1 THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'history refused'; END IF; END"
        ))
        .unwrap();
}

/// When the record that goes with a step's statements fails, the step's changes stay
/// (it ran alone) and the run says so: nothing after it runs, and the version stays.
#[test]
fn mariadb_a_step_that_ran_alone_but_could_not_be_recorded_halts_the_run() {
    let project = TestProject::on(Backend::MariaDb, "1.1.0", ALONE_MANIFEST);
    project.run(&["run"]).assert_code(0);
    refuse_history_row(&project, "two");
    project.write("VERSION", "1.3.0\n");
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("step 'two' could not be recorded and committed")
        .assert_stderr("history refused");
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM b"), 1);
    assert_eq!(
        project.query_i64(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'c'"
        ),
        0
    );
    let lock = project.lock_json().unwrap();
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["non_transactional"], true);
    let last = project.history().pop().unwrap();
    assert_eq!(
        (last["name"].as_str(), last["success"].as_bool()),
        (Some("two"), Some(false))
    );
}

/// On MySQL the steps that run alone go to the server together, each recorded right
/// after its statements: a failure in the middle must keep exactly the steps before it
/// (recorded, with the version), the part of the failing step that ran, and nothing
/// after it; a record that fails there stops the run the same way.
#[test]
fn mariadb_a_failure_among_steps_sent_together_keeps_exactly_the_steps_before_it() {
    use mysql::prelude::Queryable;
    let step = |n: usize, body: &str| {
        format!(
            "  <step name=\"s{n}\" from=\"1.{}.0\" to=\"1.{n}.0\" transaction=\"none\"><sql>{body}</sql></step>\n",
            n - 1
        )
    };
    let mut manifest = String::from("<upgrade project=\"test\" initial-version=\"1.0.0\">\n");
    for n in 1..=6 {
        let body = match n {
            3 => "CREATE TABLE t3 (id INT PRIMARY KEY);\nINSERT INTO t3 (id) SELECT 1 FROM (SELECT SLEEP(0.3)) s;\nINSERT INTO nowhere (id) VALUES (1);\nCREATE TABLE t3b (id INT);".to_string(),
            _ => format!("CREATE TABLE t{n} (id INT PRIMARY KEY);\nINSERT INTO t{n} (id) VALUES ({n});"),
        };
        manifest.push_str(&step(n, &body));
    }
    manifest.push_str("</upgrade>\n");
    let project = TestProject::on(Backend::MariaDb, "1.6.0", &manifest);
    let table = |name: &str| {
        project.query_i64(&format!(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '{name}'"
        ))
    };
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("step 's3' failed at ")
        .assert_stderr("upgrade.xml:8:1: ")
        .assert_stderr("nowhere")
        .assert_stderr("version 1.2.0");
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert_eq!(
        [
            table("t1"),
            table("t2"),
            table("t3"),
            table("t3b"),
            table("t4")
        ],
        [1, 1, 1, 0, 0]
    );
    assert_eq!(project.query_i64("SELECT count(*) FROM t2"), 1);
    let history = project.history();
    let names: Vec<_> = history
        .iter()
        .map(|row| (row["name"].as_str().unwrap(), row["success"] == true))
        .filter(|(name, _)| name.starts_with('s'))
        .collect();
    assert_eq!(names, [("s1", true), ("s2", true), ("s3", false)]);
    // The failed step's row spans its own work (sent with s1 and s2, it began when the
    // server reached it, not when the run looked at it).
    let failed = &history[history.len() - 1];
    assert!(failed["duration_ms"].as_i64().unwrap() >= 300, "{failed}");
    assert!(
        rfc3339(&failed["started_at"]) >= rfc3339(&history[history.len() - 2]["finished_at"]),
        "{failed}"
    );
    let lock = project.lock_json().unwrap();
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["non_transactional"], true);

    // Fixed, the run goes on from 1.2.0; a record refused in the middle of the steps
    // sent together stops it after that step's statements.
    project.write(
        "upgrade.xml",
        &manifest.replace(
            "INSERT INTO nowhere (id) VALUES (1);\nCREATE TABLE t3b",
            "CREATE TABLE t3b",
        ),
    );
    project.my().query_drop("DROP TABLE t3").unwrap();
    refuse_history_row(&project, "s4");
    project.run(&["unlock"]).assert_code(0);
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("step 's4' could not be recorded and committed")
        .assert_stderr("history refused");
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert_eq!([table("t3b"), table("t4"), table("t5")], [1, 1, 0]);
    let last = project.history().pop().unwrap();
    assert_eq!(
        (last["name"].as_str(), last["success"].as_bool()),
        (Some("s4"), Some(false))
    );
}

/// Per step, a PostgreSQL step's plain statements go in one round trip: a failure must
/// still name the statement that failed, leave nothing of the step, and keep the steps
/// before it; a step that passes runs every statement.
#[test]
fn postgres_per_step_statements_sent_together_name_the_one_that_fails() {
    let project = project(Backend::Postgres, "1.4.0");
    legacy_database(&project);
    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2;\n\
         INSERT INTO items (id, name) VALUES (1, 'a second one');\n\
         UPDATE items SET size = 3;\n",
    );
    project
        .run(&["run", "--transaction", "per-step"])
        .assert_code(1)
        .assert_stderr("step 'two' failed at scripts/two.sql:2:1")
        .assert_stderr("duplicate key");
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE size IS NOT NULL"),
        0
    );

    // A statement that does not parse: the server refuses the whole text before running
    // any of it, and the error is still the statement's own.
    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2;\n\
         UPDATE items SET size = 3;\n\
         CREATE TABEL later (id INTEGER);\n",
    );
    project.run(&["unlock"]).assert_code(0);
    project
        .run(&["run", "--transaction", "per-step"])
        .assert_code(1)
        .assert_stderr("step 'two' failed at scripts/two.sql:3:1")
        .assert_stderr("syntax error");
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE size IS NOT NULL"),
        0
    );

    project.write(
        "scripts/two.sql",
        "UPDATE items SET size = 2; -- a comment; with a semicolon\n\
         INSERT INTO items (id, name) VALUES (5, 'five');\n\
         UPDATE items SET size = size * 10 -- no semicolon at the end",
    );
    project.run(&["unlock"]).assert_code(0);
    project
        .run(&["run", "--transaction", "per-step"])
        .assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.4.0"));
    assert_eq!(project.query_i64("SELECT size FROM items WHERE id = 1"), 20);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE id = 5 AND size IS NULL"),
        1
    );
}
