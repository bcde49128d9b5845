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
    crate::util::names_in(&backups_dir(project))
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
        <step name=\"change\" from=\"1.0.0\" to=\"1.1.0\" transaction=\"none\"><sql>\
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

    /// PostgreSQL with an extension in its own schema and the application's tables in a
    /// schema of their own (where the lock's lease table lives too, as its search path
    /// puts it there): restore drops what came after the backup in every schema, keeps
    /// the extension working, and brings back exactly the tables and rows.
    #[test]
    fn postgres_restore_keeps_extensions_and_other_schemas() {
        let manifest = "<upgrade project=\"test\" initial-version=\"1.0.0\">\n\
            <install><sql>CREATE TABLE t (id INTEGER PRIMARY KEY, h TEXT);</sql></install>\n\
            <step name=\"more\" from=\"1.0.0\" to=\"1.1.0\"><sql>\
            CREATE TABLE added (y INTEGER); INSERT INTO t (id, h) VALUES (2, 'two');</sql></step>\n\
            </upgrade>\n";
        let mut project = TestProject::on(Backend::Postgres, "1.0.0", manifest);
        project.sql(
            "CREATE SCHEMA app; CREATE SCHEMA ext; CREATE EXTENSION pgcrypto SCHEMA ext; \
             CREATE TABLE public.kept (x TEXT); INSERT INTO public.kept VALUES ('k')",
        );
        // The application works in schema `app`.
        let url = project.url.clone().unwrap();
        let joiner = if url.contains('?') { '&' } else { '?' };
        project.url = Some(format!("{url}{joiner}options=-csearch_path%3Dapp"));
        project.run(&["--no-backup", "run"]).assert_code(0);
        project
            .sql("INSERT INTO app.t (id, h) VALUES (1, encode(ext.digest('a', 'sha256'), 'hex'))");
        let tables = |project: &TestProject| {
            project.query_i64(
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema IN ('app', 'public') AND table_name <> 'upgrader_lock'",
            )
        };
        let before_tables = tables(&project);
        let before_rows = project.query_i64("SELECT count(*) FROM app.t");
        project.write("VERSION", "1.1.0\n");
        project.run(&["run"]).assert_code(0);
        project.sql("CREATE TABLE public.later (z INTEGER); CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'");
        assert_eq!(project.query_i64("SELECT count(*) FROM app.added"), 0);
        let file = backup_files(&project).pop().expect("a backup");
        project
            .run(&["restore", &file, "--yes"])
            .assert_code(0)
            .assert_stdout("1.0.0");
        assert_eq!(tables(&project), before_tables);
        assert_eq!(project.query_i64("SELECT count(*) FROM app.t"), before_rows);
        assert_eq!(
            project.query_i64("SELECT count(*) FROM pg_proc WHERE proname = 'f'"),
            0,
            "a function made after the backup is gone"
        );
        assert_eq!(
            project.query_i64("SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'"),
            1
        );
        assert_eq!(
            project.query_i64("SELECT length(encode(ext.digest('a', 'sha256'), 'hex'))"),
            64
        );
        assert_eq!(project.query_i64("SELECT count(*) FROM public.kept"), 1);
        project.run(&["run", "--no-backup"]).assert_code(0);
        assert_eq!(project.query_i64("SELECT count(*) FROM app.added"), 0);
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

/// MariaDB's restore in detail: what it drops and brings back, the password kept out of
/// files, damaged backups refused, and a client that fails.
mod mariadb_only {
    use super::*;
    use crate::util::{mariadb_table, mariadb_tables};
    use mysql::prelude::Queryable;
    use std::io::{Read, Write};

    /// Every table, view, routine, trigger and event `information_schema` lists, with
    /// its definition.
    fn catalog(project: &TestProject) -> Vec<String> {
        let mut conn = project.my();
        let mut found: Vec<String> = conn
            .query(
                "SELECT CONCAT(table_type, ' ', table_name) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() \
                 UNION ALL SELECT CONCAT('VIEW ', table_name, ': ', view_definition) \
                 FROM information_schema.views WHERE table_schema = DATABASE() \
                 UNION ALL SELECT CONCAT(routine_type, ' ', routine_name, ': ', \
                     COALESCE(routine_definition, '?')) \
                 FROM information_schema.routines WHERE routine_schema = DATABASE() \
                 UNION ALL SELECT CONCAT('TRIGGER ', trigger_name, ': ', action_statement) \
                 FROM information_schema.triggers WHERE trigger_schema = DATABASE() \
                 UNION ALL SELECT CONCAT('EVENT ', event_name, ': ', event_definition) \
                 FROM information_schema.events WHERE event_schema = DATABASE()",
            )
            .unwrap();
        found.sort();
        found
    }

    /// [`catalog`], then each table's definition and rows (`snapshot` reads no views).
    fn state(project: &TestProject) -> String {
        let mut out = catalog(project).join("\n");
        let mut conn = project.my();
        for name in mariadb_tables(&mut conn, "table_type = 'BASE TABLE'") {
            let (create, rows) = mariadb_table(&mut conn, &name);
            out.push_str(&format!("\n{create}\n{rows}"));
        }
        out
    }

    fn exists(project: &TestProject, sql: &str) -> bool {
        project.query_i64(&format!("SELECT count(*) FROM {sql}")) > 0
    }

    const MANIFEST: &str = "<upgrade project=\"test\" initial-version=\"1.0.0\">\n\
        <install><sql>CREATE TABLE parent (id INTEGER PRIMARY KEY, note VARCHAR(40)); \
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER, \
            FOREIGN KEY (parent_id) REFERENCES parent (id)); \
        CREATE TABLE dropped_later (x VARBINARY(10), s VARCHAR(20) CHARACTER SET utf8mb4);</sql></install>\n\
        <step name=\"s0\" from=\"1.0.0\" to=\"1.1.0\"><sql>INSERT INTO parent (id, note) VALUES (2, 'two');</sql></step>\n\
        </upgrade>\n";

    /// A database at 1.0.0 with rows (binary bytes, a character beyond the BMP), a view,
    /// a procedure whose body holds comments and CRLF line ends, a trigger and an event.
    fn installed() -> TestProject {
        let project = TestProject::on(Backend::MariaDb, "1.0.0", MANIFEST);
        project.run(&["--no-backup", "run"]).assert_code(0);
        project.sql(
            "INSERT INTO parent VALUES (1, 'one'); INSERT INTO child VALUES (1, 1); \
             INSERT INTO dropped_later VALUES (0x00ff27225c0d0a, '\u{1F600} it''s')",
        );
        project.sql(
            "CREATE VIEW v_before AS SELECT id FROM parent; \
             CREATE PROCEDURE p_before() SELECT 1\r\n-- why it is here\r\n+ 1 /* kept */; \
             CREATE TRIGGER t_before BEFORE INSERT ON parent FOR EACH ROW \
                 SET NEW.note = UPPER(NEW.note); \
             CREATE EVENT e_before ON SCHEDULE EVERY 1 DAY DISABLE \
                 DO DELETE FROM parent WHERE id < 0",
        );
        project
    }

    fn newest_backup(project: &TestProject) -> std::path::PathBuf {
        backups_dir(project).join(backup_files(project).pop().expect("a backup"))
    }

    /// The restore removes the table, view, procedure, event and sequence made after the
    /// backup (a new table referencing a backed-up one too) and brings back the table and
    /// procedure dropped after it, with their rows and definitions exactly.
    #[test]
    fn restore_leaves_exactly_what_the_backup_holds() {
        let project = installed();
        let before = state(&project);
        let catalog_before = catalog(&project);
        assert!(catalog_before
            .iter()
            .any(|o| o.contains("-- why it is here")));
        project.write("VERSION", "1.1.0\n");
        project.run(&["run"]).assert_code(0);
        project.sql(
            "CREATE TABLE later (id INTEGER); \
             CREATE TABLE later_child (id INTEGER, parent_id INTEGER, \
                 FOREIGN KEY (parent_id) REFERENCES parent (id)); \
             INSERT INTO later_child VALUES (1, 1); \
             CREATE VIEW v_later AS SELECT 1 AS x; \
             CREATE PROCEDURE p_later() SELECT 2; \
             CREATE EVENT e_later ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1; \
             CREATE SEQUENCE s_later; \
             DROP TABLE dropped_later; \
             DROP PROCEDURE p_before",
        );
        assert_ne!(catalog(&project), catalog_before);
        let file = newest_backup(&project);
        project
            .run(&["restore", file.to_str().unwrap(), "--yes"])
            .assert_code(0)
            .assert_stdout("1.0.0");
        let gone = [
            "information_schema.tables WHERE table_schema = DATABASE() AND table_name IN ('later', 'later_child', 'v_later', 's_later')",
            "information_schema.routines WHERE routine_schema = DATABASE() AND routine_name = 'p_later'",
            "information_schema.events WHERE event_schema = DATABASE() AND event_name = 'e_later'",
        ];
        for what in gone {
            assert!(!exists(&project, what), "{what}");
        }
        assert!(exists(
            &project,
            "information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'dropped_later'"
        ));
        assert!(exists(
            &project,
            "information_schema.routines WHERE routine_schema = DATABASE() AND routine_name = 'p_before' \
             AND routine_definition = 'SELECT 1\r\n-- why it is here\r\n+ 1 /* kept */'"
        ));
        assert_eq!(catalog(&project), catalog_before);
        assert_eq!(state(&project), before);
        let (bytes, text): (Vec<u8>, String) = project
            .my()
            .query_first("SELECT x, s FROM dropped_later")
            .unwrap()
            .unwrap();
        assert_eq!(bytes, b"\x00\xff\x27\x22\x5c\x0d\x0a");
        assert_eq!(text, "\u{1F600} it's");
        assert_eq!(project.query_i64("SELECT count(*) FROM child"), 1);
        // The trigger came back and works.
        project.sql("INSERT INTO parent VALUES (3, 'three')");
        assert_eq!(
            project.query_i64("SELECT count(*) FROM parent WHERE note = 'THREE'"),
            1
        );
    }

    fn decompressed(path: &std::path::Path) -> Vec<u8> {
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        text
    }

    /// The password reaches the tools through a private option file only: the backup
    /// does not hold it, and the temporary folder is left as it was, by the backup and
    /// by the restore.
    #[test]
    fn the_password_stays_out_of_the_backup_and_no_option_file_is_left() {
        let project = installed();
        project.write("VERSION", "1.1.0\n");
        let tmp = tempfile::tempdir().unwrap();
        let mut command = project.command(&["run"]);
        command.env("TMPDIR", tmp.path());
        run_within(command, std::time::Duration::from_secs(60)).assert_code(0);
        let file = newest_backup(&project);
        let text = decompressed(&file);
        let password = crate::servers::MARIADB_PASSWORD.as_bytes();
        assert!(!text.windows(password.len()).any(|w| w == password));
        assert!(String::from_utf8_lossy(&text).contains("CREATE TABLE `parent`"));
        let mut command = project.command(&["restore", file.to_str().unwrap(), "--yes"]);
        command.env("TMPDIR", tmp.path());
        run_within(command, std::time::Duration::from_secs(60)).assert_code(0);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A password with every character an option file treats specially, a user name with
    /// a space, and a connect timeout (which only the client takes): the tools log in
    /// with them as the URL gives them.
    #[test]
    fn an_odd_password_reaches_the_tools_exactly() {
        let project = TestProject::on(Backend::MariaDb, "1.0.0", MANIFEST);
        let mut conn = project.my();
        let (database, port): (String, u16) = conn
            .query_first("SELECT DATABASE(), @@port")
            .unwrap()
            .unwrap();
        let user = format!("odd user {}", std::process::id());
        let password = "p#a\"s\\s w'; x\\n";
        let literal = password.replace('\\', "\\\\").replace('\'', "''");
        conn.query_drop(format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{literal}'"
        ))
        .unwrap();
        conn.query_drop(format!(
            "GRANT ALL ON `{database}`.* TO '{user}'@'127.0.0.1'"
        ))
        .unwrap();
        let encode = |text: &str| -> String {
            text.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let url = format!(
            "mysql://{}:{}@127.0.0.1:{port}/{database}?tcp_connect_timeout_ms=5000",
            encode(&user),
            encode(password)
        );
        // The same database, reached as the odd user.
        let mut odd = TestProject::on(Backend::Sqlite, "1.0.0", MANIFEST);
        odd.backend = Backend::MariaDb;
        odd.url = Some(url);
        odd.run(&["--no-backup", "run"]).assert_code(0);
        project.sql("INSERT INTO dropped_later VALUES (0x00, 'kept')");
        odd.write("VERSION", "1.1.0\n");
        odd.run(&["run"]).assert_code(0);
        let file = newest_backup(&odd);
        let text = decompressed(&file);
        assert!(!text
            .windows(password.len())
            .any(|w| w == password.as_bytes()));
        project.sql("DROP TABLE dropped_later");
        odd.run(&["restore", file.to_str().unwrap(), "--yes"])
            .assert_code(0)
            .assert_stdout("1.0.0");
        assert_eq!(project.query_i64("SELECT count(*) FROM dropped_later"), 1);
        conn.query_drop(format!("DROP USER '{user}'@'127.0.0.1'"))
            .unwrap();
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap()
    }

    /// A cut backup, a damaged one and one whose dump never completed are refused before
    /// anything is touched.
    #[test]
    fn damaged_backups_are_refused_with_nothing_changed() {
        let project = installed();
        project.write("VERSION", "1.1.0\n");
        project.run(&["run"]).assert_code(0);
        let bytes = std::fs::read(newest_backup(&project)).unwrap();
        let text = decompressed(&newest_backup(&project));
        let after = state(&project);
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        let unfinished = String::from_utf8_lossy(&text).replace("-- Dump completed", "--");
        let cases: [(&str, Vec<u8>, &str); 3] = [
            ("cut", bytes[..bytes.len() / 2].to_vec(), "not a whole"),
            ("flipped", flipped, "not a whole"),
            ("unfinished", gzip(unfinished.as_bytes()), "incomplete dump"),
        ];
        for (n, (what, content, said)) in cases.into_iter().enumerate() {
            let name = format!("db-test-1.0.0-20261202T00000{n}Z.sql.gz");
            std::fs::write(backups_dir(&project).join(&name), content).unwrap();
            project
                .run(&["restore", &name, "--yes"])
                .assert_code(1)
                .assert_stderr(said)
                .assert_stderr("nothing was changed");
            assert_eq!(state(&project), after, "{what}");
            assert!(!project.lock_path().exists());
        }
    }

    /// A statement of the backup fails: the client's error, and plainly that the database
    /// may be partly restored and to restore again; a missing client names what to
    /// install, with nothing changed.
    #[test]
    fn a_failing_or_missing_client_is_reported() {
        let project = installed();
        let before = state(&project);
        project.write("VERSION", "1.1.0\n");
        project.run(&["run"]).assert_code(0);
        let after = state(&project);
        let empty = tempfile::tempdir().unwrap();
        let file = newest_backup(&project);
        run_with_path(
            &project,
            &["restore", file.to_str().unwrap(), "--yes"],
            empty.path(),
            true,
        )
        .assert_code(1)
        .assert_stderr("mariadb")
        .assert_stderr("apt-get install mariadb-client")
        .assert_stderr("nothing was changed");
        assert_eq!(state(&project), after);
        let bad = "-- MariaDB dump 10.19\nCREATE TABLE broken (;\n-- Dump completed\n";
        let name = "db-test-1.0.0-20261202T000009Z.sql.gz";
        std::fs::write(backups_dir(&project).join(name), gzip(bad.as_bytes())).unwrap();
        let failed = project.run(&["restore", name, "--yes"]);
        failed
            .assert_code(1)
            .assert_stderr("ERROR 1064")
            .assert_stderr("may be partly restored")
            .assert_stderr("restore again");
        assert!(
            !failed.stderr.contains(crate::servers::MARIADB_PASSWORD),
            "{}",
            failed.stderr
        );
        // Nobody may run on a half-restored database: the lock stays failed, naming it.
        let lock = project.lock_json().expect("the lock stays");
        assert_eq!(lock["state"], "failed");
        assert_eq!(lock["operation"], "restore");
        project.run(&["run"]).assert_code(4);
        project.run(&["unlock"]).assert_code(0);
        project
            .run(&["restore", file.to_str().unwrap(), "--yes"])
            .assert_code(0);
        assert_eq!(state(&project), before);
    }

    /// A folder with wrappers named `names` that write their arguments to `<name>.args`
    /// and run the real `/usr/bin/<real>`; `version` is what they print for `--version`
    /// (the real tool's, unrecorded, when empty). MySQL's options are dropped before the real MariaDB tool
    /// sees them.
    fn recording_tools(names: &[(&str, &str)], version: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (name, real) in names {
            let path = dir.path().join(name);
            let version = match version {
                "" => format!("if [ \"$2\" = --version ]; then exec /usr/bin/{real} \"$@\"; fi\n"),
                v => format!("if [ \"$2\" = --version ]; then echo '{v}'; exit 0; fi\n"),
            };
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\n{version}printf '%s\\n' \"$@\" >> \"$0.args\"\n\
                     for a; do shift; case \"$a\" in --set-gtid-purged=OFF|--column-statistics=0) ;; \
                     *) set -- \"$@\" \"$a\";; esac; done\nexec /usr/bin/{real} \"$@\"\n"
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    /// The tools' command lines: the option file first, no password; MySQL's mysqldump
    /// (told apart by its `--version`) also gets the options that keep its dump loadable
    /// (no GTID_PURGED, no MySQL 8 statistics table).
    #[test]
    fn the_tools_command_lines_hold_no_password_and_fit_the_tool() {
        let project = installed();
        let password = crate::servers::MARIADB_PASSWORD;
        let mariadb = recording_tools(
            &[("mariadb-dump", "mariadb-dump"), ("mariadb", "mariadb")],
            "",
        );
        project.write("VERSION", "1.1.0\n");
        run_with_path(&project, &["run"], mariadb.path(), false).assert_code(0);
        let file = newest_backup(&project);
        run_with_path(
            &project,
            &["restore", file.to_str().unwrap(), "--yes"],
            mariadb.path(),
            false,
        )
        .assert_code(0);
        for tool in ["mariadb-dump", "mariadb"] {
            let args = std::fs::read_to_string(mariadb.path().join(format!("{tool}.args")))
                .unwrap_or_else(|e| panic!("{tool} was not run: {e}"));
            assert!(args.starts_with("--defaults-file="), "{tool}: {args}");
            assert!(!args.contains(password), "{tool}: {args}");
            assert!(!args.contains("--set-gtid-purged"), "{tool}: {args}");
        }
        let mysql = recording_tools(
            &[("mysqldump", "mariadb-dump")],
            "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)",
        );
        // Back at 1.0.0, so that the run backs up again.
        project
            .run(&["restore", file.to_str().unwrap(), "--yes"])
            .assert_code(0);
        run_with_path(&project, &["run"], mysql.path(), false).assert_code(0);
        assert_eq!(backup_files(&project).len(), 2);
        let args = std::fs::read_to_string(mysql.path().join("mysqldump.args")).unwrap();
        assert!(args.starts_with("--defaults-file="), "{args}");
        assert!(!args.contains(password), "{args}");
        for option in [
            "--set-gtid-purged=OFF",
            "--column-statistics=0",
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
        ] {
            assert!(args.lines().any(|line| line == option), "{option}: {args}");
        }
    }
}

/// `upgrader --project DIR ARGS` (`args`: words for the shell) run on a pseudo-terminal
/// by `script`: how it ended, and what it drew.
fn on_a_terminal(project: &TestProject, args: &str) -> (std::process::ExitStatus, String) {
    let line = format!(
        "{} --project {} {args}",
        crate::util::bin(),
        project.path().display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("UPGRADER_TEST_ONLY_PROGRESS_AT_ONCE", "1")
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    let drawn = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status, drawn)
}

/// On a terminal a backup and a restore show their progress (bytes); with stderr not a
/// terminal nothing extra is printed.
#[test]
fn progress_shows_on_a_terminal_only() {
    let project = TestProject::new("1.0.0", &manifest(1));
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    let (status, drawn) = on_a_terminal(&project, "run");
    assert!(status.success(), "{drawn}");
    assert!(drawn.contains("backing up the database"), "{drawn}");
    let file = backup_files(&project).pop().unwrap();
    let (_, drawn) = on_a_terminal(&project, &format!("restore {file} --yes"));
    assert!(drawn.contains("restoring the database"), "{drawn}");
    // Not a terminal: the same commands print no progress.
    project.write("VERSION", "1.1.0\n");
    let mut command = project.command(&["restore", &file, "--yes"]);
    command.env("UPGRADER_TEST_ONLY_PROGRESS_AT_ONCE", "1");
    let quiet = crate::util::run_within(command, std::time::Duration::from_secs(60));
    quiet.assert_code(0);
    assert!(
        !quiet.stderr.contains("restoring the database"),
        "{}",
        quiet.stderr
    );
    assert!(quiet.stderr.is_empty(), "{}", quiet.stderr);
}
