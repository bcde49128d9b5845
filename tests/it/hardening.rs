//! Hostile and oversized input met by a run: scripts too large to hold, statements larger
//! than the server accepts, steps that reach for upgrader's own tables and locks, dynamic
//! SQL on MariaDB, and database messages that would quote a whole statement.

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

const ONE_STEP: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="big" from="1.0.0" to="1.1.0">
    <sql file="scripts/big.sql"/>
  </step>
</upgrade>
"#;

/// A project adopted at 1.0.0 with a table `t`, VERSION at 1.1.0.
fn adopted(backend: Backend, manifest: &str) -> TestProject {
    let project = TestProject::on(backend, "1.0.0", manifest);
    project.write("scripts/big.sql", "SELECT 1;\n");
    project.sql("CREATE TABLE t (x INTEGER)");
    project.run(&["run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    project
}

/// A script of many small statements, larger than upgrader keeps in memory, runs
/// statement by statement in 64 MiB of address space: every statement ran (the whole
/// script split at once used to take 55 times its size).
#[test]
fn a_large_script_runs_in_little_memory() {
    let project = adopted(Backend::Sqlite, ONE_STEP);
    let statements = 150_000;
    project.write(
        "scripts/big.sql",
        &"INSERT INTO t (x) VALUES (1);\n".repeat(statements),
    );
    project
        .run_capped(64, &["run"])
        .assert_code(0)
        .assert_stdout(&format!("({statements} statements,"));
    assert_eq!(
        project.query_i64("SELECT count(*) FROM t"),
        statements as i64
    );
}

/// `lint` splits and judges an 8 MB script in 64 MiB of address space.
#[test]
fn lint_reads_a_large_script_in_little_memory() {
    let project = TestProject::new("1.1.0", ONE_STEP);
    let line = "INSERT INTO t (x) VALUES (1234567890);\n";
    let mut script = line.repeat((8 << 20) / line.len());
    script.push_str("COMMIT;\n");
    project.write("scripts/big.sql", &script);
    let lines = script.lines().count();
    drop(script);
    // The one refused statement is found at the very end, with its line.
    project
        .run_capped(64, &["lint", "--for", "sqlite"])
        .assert_code(1)
        .assert_stdout(&format!("scripts/big.sql:{lines}:1"));
}

/// A statement larger than the server accepts is refused before anything is locked or
/// sent, naming the server's limit.
#[test]
fn a_statement_larger_than_the_server_accepts_is_refused_up_front() {
    let project = adopted(Backend::MariaDb, ONE_STEP);
    let limit = project.query_i64("SELECT @@max_allowed_packet") as usize;
    let mut statement = String::with_capacity(limit + 64);
    statement.push_str("INSERT INTO t (x) VALUES (1)");
    while statement.len() <= limit {
        statement.push_str(",(1)");
    }
    statement.push_str(";\n");
    project.write("scripts/big.sql", &statement);
    let before = project.snapshot();
    let run = project.run(&["run"]);
    run.assert_code(1)
        .assert_stderr("scripts/big.sql:1:1")
        .assert_stderr("max_allowed_packet");
    assert!(
        run.stderr.len() < 2_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    assert_eq!(project.snapshot(), before, "the database changed");
    assert!(!project.lock_path().exists(), "a lock file was left");
}

/// A step that runs alone may commit, but may not touch upgrader's own tables: the run
/// is refused before anything of it is sent, and the history stays.
fn a_step_that_runs_alone_may_not_drop_upgrader_tables(backend: Backend) {
    let manifest = ONE_STEP.replace(r#"to="1.1.0">"#, r#"to="1.1.0" transaction="none">"#);
    let project = adopted(backend, &manifest);
    project.write(
        "scripts/big.sql",
        "INSERT INTO t (x) VALUES (42);\nDROP TABLE upgrader_history;\n",
    );
    let run = project.run(&["run"]);
    run.assert_code(1)
        .assert_stderr("scripts/big.sql:2:1")
        .assert_stderr("upgrader's own tables")
        .assert_stderr("it was not sent");
    assert_eq!(project.query_i64("SELECT count(*) FROM t WHERE x = 42"), 0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    let history = project.history();
    assert_eq!(history.last().unwrap()["success"], false);
    project
        .run(&["lint", "--for", backend.name()])
        .assert_code(1)
        .assert_stdout("upgrader's own tables");
}

/// Nor release upgrader's database lock.
fn a_step_may_not_release_upgrader_locks(backend: Backend) {
    let release = match backend {
        Backend::Postgres => "SELECT pg_advisory_unlock_all();",
        Backend::MariaDb => "SELECT RELEASE_ALL_LOCKS();",
        Backend::Sqlite => return,
    };
    for transaction in ["", r#" transaction="none""#] {
        let manifest = ONE_STEP.replace(r#"to="1.1.0">"#, &format!(r#"to="1.1.0"{transaction}>"#));
        let project = adopted(backend, &manifest);
        project.write(
            "scripts/big.sql",
            &format!("INSERT INTO t (x) VALUES (42);\n{release}\n"),
        );
        project
            .run(&["run"])
            .assert_code(1)
            .assert_stderr("release upgrader's lock")
            .assert_stderr("it was not sent");
        assert_eq!(project.query_i64("SELECT count(*) FROM t WHERE x = 42"), 0);
        assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    }
}

/// A database's message that quotes a 1 MB statement is cut before it reaches the
/// terminal, the lock file and the history.
fn messages_quote_at_most_a_few_hundred_characters(backend: Backend) {
    let project = adopted(backend, ONE_STEP);
    let long = "x".repeat(1 << 20);
    project.write(
        "scripts/big.sql",
        &format!("SELECT '{long}' FROM FROM WHERE;\n"),
    );
    let run = project.run(&["run"]);
    run.assert_code(1).assert_stderr("step 'big' failed");
    assert!(
        run.stderr.len() < 4_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    let lock = std::fs::read_to_string(project.lock_path()).unwrap();
    assert!(lock.len() < 4_000, "{} bytes of lock file", lock.len());
    let history = project.history();
    let error = history.last().unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.len() < 4_000,
        "{} bytes of history error",
        error.len()
    );
}

on_every_backend!(
    a_step_that_runs_alone_may_not_drop_upgrader_tables,
    a_step_may_not_release_upgrader_locks,
    messages_quote_at_most_a_few_hundred_characters,
);

/// Dynamic SQL could commit the run's transaction where no check can see it: refused in
/// a transactional step, with nothing sent.
#[test]
fn mariadb_refuses_dynamic_sql_in_a_transactional_step() {
    for dynamic in [
        "PREPARE s FROM 'COMMIT';\nEXECUTE s;",
        "EXECUTE IMMEDIATE 'COMMIT';",
        "SET @s = IF(1 = 1, 'ALTER TABLE t ADD COLUMN y INT', 'SELECT 1');\nPREPARE s FROM @s;\nEXECUTE s;",
    ] {
        let project = adopted(Backend::MariaDb, ONE_STEP);
        project.write(
            "scripts/big.sql",
            &format!("INSERT INTO t (x) VALUES (42);\n{dynamic}\nINSERT INTO nowhere VALUES (1);\n"),
        );
        let before = project.app_snapshot();
        project
            .run(&["run"])
            .assert_code(1)
            .assert_stderr("dynamic SQL")
            .assert_stderr("it was not sent");
        assert_eq!(project.app_snapshot(), before, "{dynamic}: the database changed");
        assert!(!project.column_exists("t", "y"));
        assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    }
}

/// Started with its standard error closed, upgrader gives that slot to `/dev/null`, as
/// std's own start-up does: no file or socket it opens takes it (a log line would go
/// into it), and the application `launch` becomes finds `/dev/null` there.
#[test]
fn a_closed_standard_stream_is_opened_on_dev_null() {
    // PostgreSQL: SQLite fills such a slot itself before it opens a database there.
    let project = adopted(Backend::Postgres, ONE_STEP);
    project.run(&["run"]).assert_code(0);
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec "$0" --project "$1" launch -- sh -c 'readlink /proc/self/fd/2' 2>&-"#)
        .arg(crate::util::bin())
        .arg(project.path())
        .env("DATABASE_URL", project.url.as_deref().unwrap())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "/dev/null");
}
