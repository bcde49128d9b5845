//! `run --rehearse`: the whole plan in one transaction, measured, then rolled back. The
//! database, its history and the lock are as before, whether the plan passes or fails.

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

/// An application at 1.0.0 with `items` holding rows 1 and 2, whose code is at 1.2.0:
/// `add` inserts three rows, `prune` deletes row 1 (then `extra` is the body of a third
/// step, if any, up to 1.3.0).
fn pending(backend: Backend, extra: Option<&str>) -> TestProject {
    let third = extra.map_or(String::new(), |sql| {
        format!("  <step name=\"extra\" from=\"1.2.0\" to=\"1.3.0\"><sql>{sql}</sql></step>\n")
    });
    let manifest = format!(
        "<upgrade project=\"test\" initial-version=\"1.0.0\">\n  <install><sql>CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40));\nINSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two');</sql></install>\n  <step name=\"add\" from=\"1.0.0\" to=\"1.1.0\"><sql>INSERT INTO items (id, name) VALUES (3, 'three'), (4, 'four'), (5, 'five');</sql></step>\n  <step name=\"prune\" from=\"1.1.0\" to=\"1.2.0\"><sql>DELETE FROM items WHERE id = 1;\nUPDATE items SET name = 'TWO' WHERE id = 2;</sql></step>\n{third}</upgrade>\n"
    );
    let project = TestProject::on(backend, "1.0.0", &manifest);
    project.run(&["run", "--no-backup"]).assert_code(0);
    let version = if extra.is_some() { "1.3.0" } else { "1.2.0" };
    project.write("VERSION", &format!("{version}\n"));
    project
}

/// Everything a rehearsal must leave as it was: every table with its rows (upgrader's
/// own included, so its history), and the lock file.
fn state(project: &TestProject) -> (String, bool) {
    (project.snapshot(), project.lock_path().exists())
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"))
}

fn a_passing_plan_is_measured_and_leaves_everything_as_it_was(backend: Backend) {
    let project = pending(backend, None);
    let before = state(&project);
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["result"], "passed", "{report}");
    assert_eq!(report["from"], "1.0.0");
    assert_eq!(report["to"], "1.2.0");
    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["add", "prune"]);
    assert_eq!(steps[0]["statements"], 1);
    assert_eq!(steps[0]["rows_affected"], 3);
    assert_eq!(steps[1]["statements"], 2);
    assert_eq!(steps[1]["rows_affected"], 2);
    let items = table(&report, "items");
    assert_eq!(items["rows_before"], 2);
    assert_eq!(items["rows_after"], 4);
    assert_eq!(items["rows_added"], 2);
    assert_eq!(items["rows_removed"], 0);
    assert_eq!(
        state(&project),
        before,
        "a rehearsal changed the database or the lock"
    );
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));

    // The human report says the same, and the real run still does everything.
    project
        .run(&["run", "--rehearse"])
        .assert_code(0)
        .assert_stdout("rehearsal passed")
        .assert_stdout("add")
        .assert_stdout("items");
    assert_eq!(state(&project), before);
    project.run(&["run", "--no-backup"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 4);
}

fn a_failing_plan_names_the_step_and_leaves_everything_as_it_was(backend: Backend) {
    // Row 3 exists once `add` has run: the third step fails on its key.
    let project = pending(
        backend,
        Some("INSERT INTO items (id, name) VALUES (3, 'again');"),
    );
    let before = state(&project);
    let history = project.history().len();
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(1);
    let report = run.json();
    assert_eq!(report["result"], "failed", "{report}");
    assert_eq!(report["failed"]["step"], "extra");
    assert!(
        report["failed"]["error"]
            .as_str()
            .unwrap()
            .contains("step 'extra' failed"),
        "{report}"
    );
    // What ran before the failure is reported too.
    assert_eq!(report["steps"].as_array().unwrap().len(), 2);
    assert_eq!(state(&project), before);
    assert_eq!(
        project.history().len(),
        history,
        "a rehearsal wrote history"
    );
    project
        .run(&["run", "--rehearse"])
        .assert_code(1)
        .assert_stderr("step 'extra'")
        .assert_stderr("rehearsal");
    // The lock is free: the application is not halted by a rehearsal.
    project.run(&["check"]).assert_code(3);
}

fn a_current_database_has_nothing_to_rehearse(backend: Backend) {
    let project = pending(backend, None);
    project.run(&["run", "--no-backup"]).assert_code(0);
    let before = state(&project);
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(0);
    assert_eq!(run.json()["result"], "current");
    assert_eq!(state(&project), before);
}

fn a_halted_application_is_not_rehearsed(backend: Backend) {
    let project = pending(backend, None);
    std::fs::write(
        project.lock_path(),
        r#"{"pid":1,"host":"elsewhere","started_at":"2026-01-01T00:00:00Z","from":"1.0.0","to":"1.2.0","state":"failed","step":"add","error":"boom"}"#,
    )
    .unwrap();
    let before = state(&project);
    project.run(&["run", "--rehearse"]).assert_code(4);
    assert_eq!(state(&project), before);
}

on_every_backend!(
    a_passing_plan_is_measured_and_leaves_everything_as_it_was,
    a_failing_plan_names_the_step_and_leaves_everything_as_it_was,
    a_current_database_has_nothing_to_rehearse,
    a_halted_application_is_not_rehearsed,
);

/// The schema diff: a column added and a table created show in the report, and are gone
/// afterwards (DDL rolls back on SQLite and PostgreSQL).
fn schema_changes_are_reported_and_rolled_back(backend: Backend) {
    let project = pending(
        backend,
        Some("ALTER TABLE items ADD COLUMN size INTEGER;\nCREATE TABLE extra (id INTEGER PRIMARY KEY);"),
    );
    let before = state(&project);
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(0);
    let report = run.json();
    let items = table(&report, "items");
    assert_eq!(items["schema"], "changed", "{report}");
    assert!(items["diff"].as_str().unwrap().contains("size"), "{report}");
    assert_eq!(table(&report, "extra")["schema"], "created");
    assert_eq!(state(&project), before);
    assert!(!project.column_exists("items", "size"));
}

#[test]
fn sqlite_schema_changes_are_reported_and_rolled_back() {
    schema_changes_are_reported_and_rolled_back(Backend::Sqlite);
}

#[test]
fn postgres_schema_changes_are_reported_and_rolled_back() {
    schema_changes_are_reported_and_rolled_back(Backend::Postgres);
}

/// MySQL commits DDL and `transaction="none"` steps for good: such a plan cannot be
/// rehearsed, and is refused before anything runs.
#[test]
fn mariadb_refuses_a_plan_it_cannot_roll_back() {
    let project = pending(Backend::MariaDb, None);
    project.write(
        "upgrade.xml",
        &std::fs::read_to_string(project.path().join("upgrade.xml"))
            .unwrap()
            .replace(
                "<step name=\"prune\" from=\"1.1.0\" to=\"1.2.0\">",
                "<step name=\"prune\" from=\"1.1.0\" to=\"1.2.0\" transaction=\"none\">",
            ),
    );
    let before = state(&project);
    project
        .run(&["run", "--rehearse"])
        .assert_code(1)
        .assert_stderr("prune")
        .assert_stderr("cannot be rehearsed");
    assert_eq!(state(&project), before);
}

/// On MySQL an install's DDL commits, but an install runs on an empty schema: what it
/// created is dropped again, so a new database can be rehearsed too.
#[test]
fn mariadb_rehearses_an_install_and_drops_what_it_created() {
    let project = TestProject::on(
        Backend::MariaDb,
        "1.1.0",
        "<upgrade project=\"test\">\n  <install><sql>CREATE TABLE items (id INTEGER PRIMARY KEY);\nINSERT INTO items (id) VALUES (1);</sql></install>\n  <step name=\"add\" from=\"1.0.0\" to=\"1.1.0\"><sql>INSERT INTO items (id) VALUES (2);</sql></step>\n</upgrade>\n",
    );
    let before = state(&project);
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(0);
    let report = run.json();
    assert_eq!(report["result"], "passed", "{report}");
    assert_eq!(table(&report, "items")["schema"], "created");
    // An install reaches the code version itself: the step is not part of the plan.
    assert_eq!(report["steps"].as_array().unwrap().len(), 1);
    assert_eq!(report["steps"][0]["kind"], "install");
    assert_eq!(report["steps"][0]["rows_affected"], 1);
    assert_eq!(table(&report, "items")["rows_after"], 1);
    assert_eq!(project.app_table_count(), 0, "the install's table stayed");
    assert_eq!(project.recorded_version(), None);
    // upgrader's own tables, which MySQL created for good, are gone too.
    assert_eq!(state(&project), before);
}

/// A plugin step that writes rows is rehearsed with the rest and rolled back with it.
fn a_plugin_that_writes_rows_is_rolled_back(backend: Backend) {
    let project = crate::plugins::project(backend, "insert_row");
    let before = state(&project);
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(0);
    let report = run.json();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[1]["name"], "plugged");
    assert_eq!(steps[1]["statements"], 2);
    let items = table(&report, "items");
    assert_eq!(items["rows_before"], 0);
    assert_eq!(items["rows_after"], 3);
    assert_eq!(state(&project), before);
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 0);
}

mod plugin {
    use super::*;

    #[test]
    fn sqlite() {
        a_plugin_that_writes_rows_is_rolled_back(Backend::Sqlite);
    }

    #[test]
    fn postgres() {
        a_plugin_that_writes_rows_is_rolled_back(Backend::Postgres);
    }

    #[test]
    fn mariadb() {
        a_plugin_that_writes_rows_is_rolled_back(Backend::MariaDb);
    }
}

/// A rehearsal on an SQLite database that does not exist yet leaves no file behind.
#[test]
fn sqlite_rehearsal_of_a_new_database_creates_no_file() {
    let project = TestProject::new(
        "1.0.0",
        "<upgrade project=\"test\">\n  <install><sql>CREATE TABLE items (id INTEGER PRIMARY KEY);</sql></install>\n</upgrade>\n",
    );
    assert!(!project.db_path().exists());
    let run = project.run(&["--json", "run", "--rehearse"]);
    run.assert_code(0);
    assert_eq!(run.json()["result"], "passed");
    assert_eq!(table(&run.json(), "items")["schema"], "created");
    assert!(
        !project.db_path().exists(),
        "the rehearsal left a database file"
    );
    assert!(!project.lock_path().exists());
    project.run(&["check"]).assert_code(3);
}
