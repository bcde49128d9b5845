//! PostgreSQL through PgBouncer in transaction pooling mode, where consecutive transactions
//! of one client may run on different server connections and a server connection outlives
//! its client: the workflow, many processes racing, and a killed run, as on a direct
//! connection; and afterwards nothing of a process is left on the server (no advisory
//! lock, no lease row), so the next client of a pooled connection never meets it.
//! Runs here pass `--no-backup`: pg_dump is not run through a pooler (see
//! `backups_through_pgbouncer`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{assert_nothing_held, wait_for, Backend, TestProject};

const MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <install>
    <sql>CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);</sql>
  </install>
  <step name="one" from="1.0.0" to="1.1.0">
    <sql>INSERT INTO items (id, name) VALUES (1, 'one');</sql>
  </step>
  <step name="two" from="1.1.0" to="1.2.0" transaction="none">
    <sql>CREATE INDEX CONCURRENTLY items_name ON items (name);</sql>
  </step>
  <step name="three" from="1.2.0" to="1.3.0">
    <sql>INSERT INTO items (id, name) VALUES (3, 'three');</sql>
  </step>
</upgrade>
"#;

fn pooled(version: &str, manifest: &str) -> TestProject {
    TestProject::on(Backend::Postgres, version, manifest).through_pgbouncer()
}

/// Install, then steps one at a time (single transaction, per step, a step without a
/// transaction), with every read-only command in between, all through the pool: the same
/// results as on a direct connection, and nothing left held after any command.
#[test]
fn workflow_through_pgbouncer() {
    let project = pooled("1.0.0", MANIFEST);
    let reads = |version: &str| {
        for _ in 0..3 {
            project
                .run(&["status"])
                .assert_code(0)
                .assert_stdout(version);
            project.run(&["check"]).assert_code(0);
            project
                .run(&["--no-backup", "run"])
                .assert_code(0)
                .assert_stdout("current");
            project.run(&["plan"]).assert_code(0);
            project.history();
            assert_nothing_held(&project);
        }
    };
    project
        .run(&["--no-backup", "run"])
        .assert_code(0)
        .assert_stdout("installed test");
    reads("1.0.0");
    for (version, mode) in [
        ("1.1.0", "single"),
        ("1.2.0", "per-step"),
        ("1.3.0", "single"),
    ] {
        project.write("VERSION", &format!("{version}\n"));
        project.run(&["check"]).assert_code(3);
        project
            .run(&["--no-backup", "run", "--transaction", mode])
            .assert_code(0)
            .assert_stdout("upgraded test");
        assert_nothing_held(&project);
        reads(version);
    }
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 2);
    let names: Vec<String> = project
        .history()
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["install", "one", "two", "three"]);
}

/// A failing step through the pool rolls back (single transaction) or keeps the steps
/// before it (per step), and leaves nothing held: the next run, once the manifest is
/// fixed and the lock file cleared, goes through.
#[test]
fn failures_through_pgbouncer_leave_nothing_held() {
    let project = pooled("1.0.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.3.0\n");
    let broken = MANIFEST.replace("VALUES (1, 'one')", "VALUES (1, 'one', 'extra')");
    project.write("upgrade.xml", &broken);
    project
        .run(&["--no-backup", "run"])
        .assert_code(1)
        .assert_stderr("the whole run was rolled back");
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    assert_nothing_held(&project);
    project.run(&["unlock"]).assert_code(0);
    let broken = MANIFEST.replace("VALUES (3, 'three')", "VALUES (3, 'three', 'extra')");
    project.write("upgrade.xml", &broken);
    project
        .run(&["--no-backup", "run", "--transaction", "per-step"])
        .assert_code(1)
        .assert_stderr("steps before it stay committed");
    assert_eq!(project.recorded_version().as_deref(), Some("1.2.0"));
    assert_nothing_held(&project);
    project.write("upgrade.xml", MANIFEST);
    project.run(&["unlock"]).assert_code(0);
    project
        .run(&["--no-backup", "run"])
        .assert_code(0)
        .assert_stdout("upgraded test 1.2.0 -> 1.3.0");
    assert_nothing_held(&project);
}

/// The race of `concurrency.rs` through the pool: 32 processes (runs and web gates of 4
/// copies of the project) per round, exactly one upgrade each round, and after each
/// round nothing held on the server.
#[test]
fn thirty_two_processes_from_four_copies_upgrade_once_per_round() {
    let summary =
        crate::concurrency::race(pooled("1.0.0", ""), true, &|host| assert_nothing_held(host));
    crate::util::report(&format!(
        "race: postgres through pgbouncer x 32 processes: {summary}"
    ));
}

fn project_with_slow_step(seconds: f64) -> TestProject {
    crate::concurrency::with_slow_step(
        pooled("1.3.0", crate::concurrency::SLOW_STEP_MANIFEST),
        seconds,
    )
}

/// A run killed with SIGKILL in the middle of a step, through the pool: nothing of it is
/// visible, and once the stale lock file is cleared the next run goes through at once
/// (the server connection it held is given up, its transaction-level lock with it; a
/// lease row of a process of this host that is gone is taken over without waiting).
fn killed_run_through_pgbouncer(mode: &str) {
    let project = project_with_slow_step(600.0);
    let mut child = project
        .command(&["--no-backup", "run", "--transaction", mode])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the slow step to start", || {
        project
            .lock_json()
            .is_some_and(|lock| lock["step"] == "slow")
    });
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = if mode == "per-step" {
        Some("1.1.0")
    } else {
        None
    };
    assert_eq!(project.recorded_version().as_deref(), committed);

    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["lock"]["state"], "stale");
    project
        .run(&["unlock"])
        .assert_code(0)
        .assert_stdout("removed the stale lock");
    project.write("scripts/slow.sql", "INSERT INTO first_table VALUES (2);\n");
    let started = Instant::now();
    project
        .run(&["--no-backup", "run", "--transaction", mode])
        .assert_code(0)
        .assert_stdout("upgraded test");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the next run waited {:?} for a lock nobody holds",
        started.elapsed()
    );
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM first_table"), 3);
    assert_nothing_held(&project);
}

#[test]
fn killed_single_transaction_run_through_pgbouncer() {
    killed_run_through_pgbouncer("single");
}

#[test]
fn killed_per_step_run_through_pgbouncer() {
    killed_run_through_pgbouncer("per-step");
}

/// A lease another host holds (which cannot be looked at from here) keeps a run waiting,
/// saying for whom, until it expires; then the run takes it over.
#[test]
fn a_lease_of_another_host_is_waited_for_until_it_expires() {
    let project = pooled("1.1.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.3.0\n");
    // A lease row as another host's upgrader leaves it: created by a run, so that the
    // table has upgrader's shape, then handed to "elsewhere" for three more seconds.
    project.sql(
        "CREATE TABLE IF NOT EXISTS upgrader_lock (id integer PRIMARY KEY CHECK (id = 1), \
         token text NOT NULL, host text NOT NULL, pid bigint NOT NULL, \
         acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL); \
         INSERT INTO upgrader_lock VALUES (1, 'elsewhere:1', 'elsewhere.example', 1, now(), \
         clock_timestamp() + interval '3 seconds')",
    );
    let started = Instant::now();
    project
        .run(&["--no-backup", "run", "--transaction", "per-step"])
        .assert_code(0)
        .assert_stdout("upgraded test 1.1.0 -> 1.3.0")
        .assert_stderr("held by upgrader pid 1 on host elsewhere.example");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the run did not wait for the lease"
    );
    assert_nothing_held(&project);
}

/// Through a transaction pool, a run's backup is refused before anything is sent (pg_dump
/// would leave an empty search_path on pooled server connections), saying why and what to
/// do; a restore works through it and leaves no session setting behind: the next clients
/// of the pool create tables where they always did.
#[test]
fn backups_through_pgbouncer() {
    let project = pooled("1.0.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    let before = project.snapshot();
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("connection pooler")
        .assert_stderr("--no-backup");
    assert_eq!(project.snapshot(), before);
    assert!(!project.lock_path().exists());
    assert_nothing_held(&project);
    // A backup made on the direct connection, restored through the pool.
    let mut direct = TestProject::on(Backend::Postgres, "1.0.0", MANIFEST);
    direct.share_database_of(&project);
    direct.url.clone_from(&project.direct_url);
    direct.write("VERSION", "1.1.0\n");
    direct.run(&["run"]).assert_code(0);
    let backups = direct.path().join("updates/Updates_Backups");
    let file = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .expect("a backup")
        .unwrap()
        .path();
    project
        .run(&["restore", file.to_str().unwrap(), "--yes"])
        .assert_code(0)
        .assert_stdout("1.0.0");
    assert_eq!(project.snapshot(), before);
    assert_nothing_held(&project);
    // Every pooled server connection still creates tables in `public`.
    let pool = project.url.as_deref().unwrap();
    for index in 0..8 {
        postgres::Client::connect(pool, postgres::NoTls)
            .unwrap()
            .batch_execute(&format!("CREATE TABLE after_{index} (x integer)"))
            .unwrap();
    }
    project.run(&["--no-backup", "run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
}
