//! Database backups before a run (SQLite so far): made under the lock before the first
//! statement, skipped by `--no-backup`, pruned to `--keep-backups`, listed by `backups`.

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

fn manifest(steps: usize) -> String {
    let mut text = String::from(
        "<upgrade project=\"test\" initial-version=\"1.0.0\">\n  <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY);</sql></install>\n",
    );
    for index in 0..steps {
        text.push_str(&format!(
            "  <step name=\"s{index}\" from=\"1.{index}.0\" to=\"1.{}.0\"><sql>INSERT INTO t (id) VALUES ({index});</sql></step>\n",
            index + 1
        ));
    }
    text.push_str("</upgrade>\n");
    text
}

fn backups_dir(project: &TestProject) -> std::path::PathBuf {
    project.path().join("updates/Updates_Backups")
}

fn backup_files(project: &TestProject) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(backups_dir(project))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Installed at 1.0.0, then upgraded to 1.1.0: the backup holds the database as it was
/// before the run (its rows and its recorded version), and `backups` lists it.
#[test]
fn a_run_backs_up_the_database_as_it_was() {
    let project = TestProject::new("1.0.0", &manifest(1));
    project.run(&["run"]).assert_code(0);
    project.sql("INSERT INTO t (id) VALUES (100)");
    let installed_backups = backup_files(&project);
    project.write("VERSION", "1.1.0\n");
    project.run(&["run"]).assert_code(0);
    let files = backup_files(&project);
    assert_eq!(files.len(), installed_backups.len() + 1, "{files:?}");
    let newest = files
        .iter()
        .find(|f| f.starts_with("db-test-1.0.0-") && f.ends_with(".sqlite"))
        .expect("a backup named after the project and the version it holds");
    let backup = rusqlite::Connection::open(backups_dir(&project).join(newest)).unwrap();
    let version: String = backup
        .query_row(
            "SELECT version FROM upgrader_version WHERE project = 'test'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(version, "1.0.0");
    let rows: i64 = backup
        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 1, "the row added before the run, not the step's");
    let listed = project.run(&["backups", "--json"]);
    listed.assert_code(0);
    let listed = listed.json();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["file"] == newest.as_str())
        .expect("listed");
    assert_eq!(entry["project"], "test");
    assert_eq!(entry["version"], "1.0.0");
    assert_eq!(entry["backend"], "sqlite");
    assert!(entry["size"].as_u64().unwrap() > 0);
    assert!(entry["created"].as_str().unwrap().ends_with('Z'));
}

/// Nothing to do, or `--no-backup` (before or after the command): no backup.
#[test]
fn no_op_runs_and_no_backup_make_none() {
    let project = TestProject::new("1.0.0", &manifest(2));
    project.run(&["--no-backup", "run"]).assert_code(0);
    assert!(backup_files(&project).is_empty());
    project.run(&["run"]).assert_code(0);
    assert!(
        backup_files(&project).is_empty(),
        "a no-op run backs nothing up"
    );
    project.write("VERSION", "1.1.0\n");
    project.run(&["run", "--no-backup"]).assert_code(0);
    assert!(backup_files(&project).is_empty());
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
}

/// `--keep-backups N` keeps the newest N.
#[test]
fn retention_keeps_the_newest() {
    let project = TestProject::new("1.0.0", &manifest(3));
    project.run(&["--no-backup", "run"]).assert_code(0);
    for version in ["1.1.0", "1.2.0", "1.3.0"] {
        project.write("VERSION", &format!("{version}\n"));
        project.run(&["run", "--keep-backups", "2"]).assert_code(0);
    }
    let files = backup_files(&project);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].starts_with("db-test-1.1.0-"), "{files:?}");
    assert!(files[1].starts_with("db-test-1.2.0-"), "{files:?}");
}

/// A backup that cannot be made fails the run before anything is sent: the message names
/// the folder and `--no-backup`, the database is as it was, and no lock is left.
#[test]
fn a_backup_that_cannot_be_made_fails_the_run_with_nothing_changed() {
    let project = TestProject::new("1.0.0", &manifest(1));
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    // A file where the folder should be.
    project.write("updates/Updates_Backups", "not a folder");
    let before = project.snapshot();
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("Updates_Backups")
        .assert_stderr("--no-backup");
    assert_eq!(project.snapshot(), before);
    assert!(!project.lock_path().exists());
    project.run(&["run", "--no-backup"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
}

/// The options are accepted on every backend and before or after the command.
fn backup_options_are_accepted(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(1));
    project
        .run(&["--no-backup", "--keep-backups", "3", "run"])
        .assert_code(0);
    project.write("VERSION", "1.1.0\n");
    project.run(&["run", "--no-backup"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    assert!(backup_files(&project).is_empty());
    project.run(&["backups"]).assert_code(0);
}

on_every_backend!(backup_options_are_accepted);

/// Round trip: data in several tables, a run that changes them (backup made), `restore`
/// of that backup: tables, rows and upgrader's own tables exactly as before the run; the
/// old version recorded; a second run upgrades again.
#[test]
fn restore_brings_back_the_database_as_it_was_before_the_run() {
    let project = TestProject::new("1.0.0", &manifest(1));
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.sql("CREATE TABLE other (x TEXT); INSERT INTO other VALUES ('kept'); INSERT INTO t (id) VALUES (100)");
    let before = project.snapshot();
    project.write("VERSION", "1.1.0\n");
    project.run(&["run"]).assert_code(0);
    project.sql("DELETE FROM other");
    assert_ne!(project.snapshot(), before);
    let file = backup_files(&project).pop().expect("a backup");
    let restored = project.run(&["restore", &file, "--yes", "--json"]);
    restored.assert_code(0);
    assert_eq!(restored.json()["version"], "1.0.0");
    assert_eq!(project.snapshot(), before);
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    assert!(!project.lock_path().exists());
    project.run(&["run", "--no-backup"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM t"), 2);
}

/// Without --yes on a non-terminal, for a file that is not a backup, for another
/// backend's backup, and while a live run holds the lock: refused, nothing changed.
#[test]
fn restore_refusals_change_nothing() {
    let project = TestProject::new("1.0.0", &manifest(1));
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    project.run(&["run"]).assert_code(0);
    let file = backup_files(&project).pop().expect("a backup");
    let after = project.snapshot();
    project
        .run(&["restore", &file])
        .assert_code(1)
        .assert_stderr("pass --yes");
    project.write("notes.txt", "hello");
    let notes = project.path().join("notes.txt");
    project
        .run(&["restore", notes.to_str().unwrap(), "--yes"])
        .assert_code(1)
        .assert_stderr("not a database backup");
    project.write(
        "updates/Updates_Backups/db-test-1.0.0-20261202T000000Z.pgdump",
        "PGDMP",
    );
    project
        .run(&["restore", "db-test-1.0.0-20261202T000000Z.pgdump", "--yes"])
        .assert_code(1)
        .assert_stderr("a backup of a postgres database, and this project's database is sqlite");
    project.write(
        "updates/Updates_Backups/db-test-1.0.0-20261202T000001Z.sqlite",
        "not sqlite at all, just text that is long enough to look like a header....",
    );
    project
        .run(&["restore", "db-test-1.0.0-20261202T000001Z.sqlite", "--yes"])
        .assert_code(1)
        .assert_stderr("not an SQLite database");
    // A failed run's lock: restore refuses like run does (exit 4), the lock untouched.
    std::fs::write(
        project.lock_path(),
        r#"{"pid":1,"host":"h","started_at":"2026-01-01T00:00:00Z","from":"1.0.0","to":"1.1.0","state":"failed","step":"s0","error":"boom"}"#,
    )
    .unwrap();
    project.run(&["restore", &file, "--yes"]).assert_code(4);
    assert_eq!(project.lock_json().unwrap()["state"], "failed");
    assert_eq!(project.snapshot(), after);
}
