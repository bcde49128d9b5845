//! Database backups before a run, on every backend: made under the lock before the first
//! statement (SQLite's backup API, the real `pg_dump` and `mariadb-dump`), skipped by
//! `--no-backup`, pruned to `--keep-backups`, listed by `backups`, and brought back by
//! `restore`.

use crate::on_every_backend;
use crate::util::{run_within, Backend, Run, TestProject};

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

/// The extension of this backend's backups.
fn extension(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => ".sqlite",
        Backend::Postgres => ".pgdump",
        Backend::MariaDb => ".sql.gz",
    }
}

/// The project's command with `dir` in front of PATH (a fake or old tool there), or with
/// PATH holding only `dir` when `only`.
fn run_with_path(project: &TestProject, args: &[&str], dir: &std::path::Path, only: bool) -> Run {
    let path = match only {
        true => dir.display().to_string(),
        false => format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    };
    let mut command = project.command(args);
    command.env("PATH", path);
    run_within(command, std::time::Duration::from_secs(60))
}

/// A folder holding executable scripts `names` that print `said` and exit 1.
fn failing_tools(names: &[&str], said: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{said}' >&2\nexit 1\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Installed at 1.0.0, then upgraded to 1.1.0: the backup is named after the project and
/// the version it holds, and `backups` lists it (its content: see the round trip).
fn a_run_backs_up_the_database_as_it_was(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(1));
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.sql("INSERT INTO t (id) VALUES (100)");
    project.write("VERSION", "1.1.0\n");
    project.run(&["run"]).assert_code(0);
    let files = backup_files(&project);
    assert_eq!(files.len(), 1, "{files:?}");
    let newest = &files[0];
    assert!(
        newest.starts_with("db-test-1.0.0-") && newest.ends_with(extension(backend)),
        "{newest}"
    );
    if backend == Backend::Sqlite {
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
    }
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
    let kind = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::MariaDb => "mysql",
    };
    assert_eq!(entry["backend"], kind);
    assert!(entry["size"].as_u64().unwrap() > 0);
    assert!(entry["created"].as_str().unwrap().ends_with('Z'));
    project
        .run(&["backups"])
        .assert_code(0)
        .assert_stdout(newest);
}

/// Nothing to do, or `--no-backup` (before or after the command): no backup.
fn no_op_runs_and_no_backup_make_none(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(2));
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
fn retention_keeps_the_newest(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(3));
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
fn a_backup_folder_that_cannot_be_made_fails_the_run_with_nothing_changed(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(1));
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

/// The dump tool fails (a broken one first on PATH): the run fails before any statement,
/// naming the tool, what it said and `--no-backup`; nothing changed, no lock, no file.
fn a_failing_dump_tool_fails_the_run_with_nothing_changed(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(1));
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    let (tools, named): (&[&str], &str) = match backend {
        Backend::Postgres => (&["pg_dump"], "pg_dump"),
        _ => (&["mariadb-dump", "mysqldump"], "mariadb-dump"),
    };
    let broken = failing_tools(tools, "disk quota exceeded");
    let before = project.snapshot();
    run_with_path(&project, &["run"], broken.path(), false)
        .assert_code(1)
        .assert_stderr(named)
        .assert_stderr("disk quota exceeded")
        .assert_stderr("--no-backup");
    assert_eq!(project.snapshot(), before);
    assert!(!project.lock_path().exists());
    assert!(
        backup_files(&project).is_empty(),
        "{:?}",
        backup_files(&project)
    );
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
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

/// Round trip: data in several tables, a run that changes them (a column added, a table
/// created, rows changed; backup made), `restore` of that backup: tables, rows and
/// upgrader's own tables exactly as before the run; the old version recorded; a second
/// run upgrades again.
fn restore_brings_back_the_database_as_it_was_before_the_run(backend: Backend) {
    let manifest = "<upgrade project=\"test\" initial-version=\"1.0.0\">\n\
        <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE TABLE other (x VARCHAR(20));</sql></install>\n\
        <step name=\"change\" from=\"1.0.0\" to=\"1.1.0\"><sql>\
        ALTER TABLE t ADD COLUMN note VARCHAR(20); UPDATE t SET note = 'changed'; \
        CREATE TABLE added (y INTEGER); INSERT INTO added (y) VALUES (1); \
        DELETE FROM other WHERE x = 'gone';</sql></step>\n</upgrade>\n";
    let project = TestProject::on(backend, "1.0.0", manifest);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.sql("INSERT INTO other (x) VALUES ('kept'); INSERT INTO other (x) VALUES ('gone'); INSERT INTO t (id) VALUES (100)");
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
    let human = project.run(&["restore", &file, "--yes"]);
    human.assert_code(0).assert_stdout("1.0.0");
    assert_eq!(project.snapshot(), before);
    project.run(&["run", "--no-backup"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM added"), 1);
}

/// Without --yes on a non-terminal, for a file that is not a backup, for another
/// backend's backup, for a file that only has a backup's name, and while a failed run
/// holds the lock: refused, nothing changed.
fn restore_refusals_change_nothing(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &manifest(1));
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
    let (other, other_kind) = match backend {
        Backend::Postgres => ("db-test-1.0.0-20261202T000000Z.sqlite", "sqlite"),
        _ => ("db-test-1.0.0-20261202T000000Z.pgdump", "postgres"),
    };
    project.write(&format!("updates/Updates_Backups/{other}"), "PGDMP");
    project
        .run(&["restore", other, "--yes"])
        .assert_code(1)
        .assert_stderr(&format!("a backup of a {other_kind} database"));
    let fake = format!("db-test-1.0.0-20261202T000001Z{}", extension(backend));
    project.write(
        &format!("updates/Updates_Backups/{fake}"),
        "not a backup at all, just text that is long enough to look like a header....",
    );
    project
        .run(&["restore", &fake, "--yes"])
        .assert_code(1)
        .assert_stderr("not a");
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

on_every_backend!(
    a_run_backs_up_the_database_as_it_was,
    no_op_runs_and_no_backup_make_none,
    retention_keeps_the_newest,
    a_backup_folder_that_cannot_be_made_fails_the_run_with_nothing_changed,
    backup_options_are_accepted,
    restore_brings_back_the_database_as_it_was_before_the_run,
    restore_refusals_change_nothing,
);

mod servers {
    use super::*;

    #[test]
    fn postgres_a_failing_pg_dump_fails_the_run_with_nothing_changed() {
        a_failing_dump_tool_fails_the_run_with_nothing_changed(Backend::Postgres);
    }

    #[test]
    fn mariadb_a_failing_mariadb_dump_fails_the_run_with_nothing_changed() {
        a_failing_dump_tool_fails_the_run_with_nothing_changed(Backend::MariaDb);
    }

    /// A pg_dump on PATH older than the server gives way to the server's own, found in
    /// /usr/lib/postgresql/<version>/bin.
    #[test]
    fn postgres_an_old_pg_dump_on_path_gives_way_to_a_newer_one() {
        let project = TestProject::on(Backend::Postgres, "1.0.0", &manifest(1));
        project.run(&["--no-backup", "run"]).assert_code(0);
        project.write("VERSION", "1.1.0\n");
        let old = failing_tools(
            &["pg_dump"],
            "pg_dump: error: aborting because of server version mismatch",
        );
        run_with_path(&project, &["run"], old.path(), false).assert_code(0);
        assert_eq!(backup_files(&project).len(), 1);
        assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    }

    /// No mariadb-dump nor mysqldump anywhere: the run fails naming the tool to install and
    /// `--no-backup`, with nothing changed.
    #[test]
    fn mariadb_a_missing_dump_tool_fails_the_run_with_nothing_changed() {
        let project = TestProject::on(Backend::MariaDb, "1.0.0", &manifest(1));
        project.run(&["--no-backup", "run"]).assert_code(0);
        project.write("VERSION", "1.1.0\n");
        let empty = tempfile::tempdir().unwrap();
        let before = project.snapshot();
        run_with_path(&project, &["run"], empty.path(), true)
            .assert_code(1)
            .assert_stderr("mariadb-dump")
            .assert_stderr("--no-backup");
        assert_eq!(project.snapshot(), before);
        assert!(!project.lock_path().exists());
        assert!(backup_files(&project).is_empty());
    }
}
