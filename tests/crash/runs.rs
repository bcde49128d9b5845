//! Runs killed at every failpoint, on every backend, in each transaction mode: one run
//! transaction (`single`), a commit per step (`per-step`), and one transaction with a
//! `transaction="none"` step in the middle (`none`).
//!
//! Every step inserts rows into a table whose primary key is the row's name, so a step
//! applied twice cannot go unnoticed: its second application fails.

use std::time::{Duration, Instant};

use crate::util::{run_within, wait_for, Backend, TestProject};
use crate::{acted, at, report};

/// The transaction modes of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    PerStep,
    /// Single, with step `two` marked `transaction="none"`.
    NoneStep,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::PerStep => "per-step",
            Mode::NoneStep => "none",
        }
    }

    fn transaction(self) -> &'static str {
        match self {
            Mode::PerStep => "per-step",
            Mode::Single | Mode::NoneStep => "single",
        }
    }
}

/// Where the database is: a backend, reached directly or (PostgreSQL) through PgBouncer
/// in transaction pooling mode.
#[derive(Debug, Clone, Copy)]
struct Db {
    backend: Backend,
    pooled: bool,
}

impl Db {
    fn name(self) -> &'static str {
        if self.pooled {
            "postgres through pgbouncer"
        } else {
            self.backend.name()
        }
    }
}

/// The steps: (name, the version it reaches, the rows it inserts).
const STEPS: [(&str, &str, &[&str]); 3] = [
    ("one", "1.1.0", &["one", "one-b"]),
    ("two", "1.2.0", &["two"]),
    ("three", "1.3.0", &["three"]),
];

/// Every row the steps insert, in order.
const ROWS: [&str; 4] = ["one", "one-b", "two", "three"];

fn manifest(mode: Mode) -> String {
    let mut text = String::from("<upgrade project=\"test\" initial-version=\"1.0.0\">\n");
    let mut from = "1.0.0";
    for (name, to, rows) in STEPS {
        let alone = if mode == Mode::NoneStep && name == "two" {
            " transaction=\"none\""
        } else {
            ""
        };
        text.push_str(&format!(
            "  <step name=\"{name}\" from=\"{from}\" to=\"{to}\"{alone}>\n    <sql>"
        ));
        for row in rows {
            text.push_str(&format!("INSERT INTO applied (step) VALUES ('{row}'); "));
        }
        text.push_str("</sql>\n  </step>\n");
        from = to;
    }
    text.push_str("</upgrade>\n");
    text
}

/// The failpoints a run reaches, in order.
const RUN_POINTS: [&str; 9] = [
    "lock-file-written",
    "database-locked",
    "backup-made",
    "before-statement",
    "after-statement",
    "after-step",
    "before-commit",
    "after-commit",
    "before-lock-cleared",
];

fn project(db: Db, mode: Mode) -> TestProject {
    let mut project = TestProject::on(db.backend, "1.3.0", &manifest(mode));
    if db.pooled {
        project = project.through_pgbouncer();
    }
    project.sql("CREATE TABLE applied (step VARCHAR(20) PRIMARY KEY)");
    project
}

/// `upgrader run` in `mode` with `failpoints` set; a backup only where the point needs
/// one (the other points are the same with or without it, and a dump costs time).
fn run_command(
    project: &TestProject,
    mode: Mode,
    point: &str,
    failpoints: &str,
) -> crate::util::Run {
    let mut args = vec!["run", "--transaction", mode.transaction()];
    // Through a pooler, a backup is refused (pg_dump is not run through one).
    if point != "backup-made" || project.direct_url.is_some() {
        args.insert(0, "--no-backup");
    }
    let mut command = project.command(&args);
    command.env("UPGRADER_FAILPOINTS", failpoints);
    run_within(command, Duration::from_secs(120))
}

/// Which of [`ROWS`] the database holds.
fn rows(project: &TestProject) -> Vec<&'static str> {
    ROWS.into_iter()
        .filter(|row| {
            project.query_i64(&format!(
                "SELECT count(*) FROM applied WHERE step = '{row}'"
            )) == 1
        })
        .collect()
}

/// The rows of the steps up to `version`, and those steps' names.
fn up_to(version: Option<&str>) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut rows = Vec::new();
    let mut steps = Vec::new();
    for (name, to, inserted) in STEPS {
        if version.is_some_and(|v| v >= to) {
            rows.extend_from_slice(inserted);
            steps.push(name);
        }
    }
    (rows, steps)
}

/// The names of the successful history rows, in order.
fn applied_steps(project: &TestProject) -> Vec<String> {
    project
        .history()
        .iter()
        .filter(|row| row["success"] == true)
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect()
}

/// What a failpoint does in a case of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// The process dies there, as by `kill -9`.
    Abort,
    /// The call there fails.
    Error,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Error => "error",
        }
    }
}

/// The database after a crash or a failure: at a version the mode allows, holding exactly
/// the rows of the steps up to it (or, for a `transaction="none"` step, possibly its rows
/// too, which the lock must then call possibly partial); history matching; the lock stale
/// (after a crash) or failed (after a failure) and `status` saying so. Returns whether
/// the database holds part of an unrecorded step.
#[track_caller]
fn check_after(project: &TestProject, mode: Mode, case: &str, action: Action) -> bool {
    let version = project.recorded_version();
    let allowed: &[Option<&str>] = match mode {
        Mode::Single => &[None, Some("1.3.0")],
        Mode::PerStep => &[None, Some("1.1.0"), Some("1.2.0"), Some("1.3.0")],
        Mode::NoneStep => &[None, Some("1.1.0"), Some("1.2.0"), Some("1.3.0")],
    };
    assert!(
        allowed.contains(&version.as_deref()),
        "{case}: at {version:?}, not at a boundary {mode:?} allows"
    );
    let (expected_rows, expected_steps) = up_to(version.as_deref());
    let found = rows(project);
    let lock = match (project.lock_json(), action) {
        (Some(lock), _) => lock,
        // A failure before the first step (taking the locks, the backup) leaves no lock:
        // nothing ran.
        (None, Action::Error) => {
            assert_eq!(version, None, "{case}: no lock, yet a version");
            assert!(found.is_empty(), "{case}: no lock, yet rows {found:?}");
            assert!(applied_steps(project).is_empty(), "{case}");
            return false;
        }
        (None, Action::Abort) => panic!("{case}: no lock file"),
    };
    let partial = found != expected_rows;
    if partial {
        // Only the step that runs alone may have left rows the version does not record,
        // and then the lock says so.
        assert_eq!(
            mode,
            Mode::NoneStep,
            "{case}: rows {found:?} at {version:?}"
        );
        assert_eq!(version.as_deref(), Some("1.1.0"), "{case}: rows {found:?}");
        assert_eq!(found, ["one", "one-b", "two"], "{case}");
        assert_eq!(lock["step"], "two", "{case}: {lock}");
        assert_eq!(lock["non_transactional"], true, "{case}: {lock}");
    }
    assert_eq!(applied_steps(project), expected_steps, "{case}: history");
    let status = project.run(&["status", "--json"]);
    status.assert_code(0);
    let status = status.json();
    assert_eq!(status["db_version"].as_str(), version.as_deref(), "{case}");
    assert_eq!(status["code_version"], "1.3.0", "{case}");
    assert_eq!(status["state"], "halted", "{case}");
    let (state, says) = match action {
        Action::Abort => ("stale", "the upgrading process is gone"),
        Action::Error => ("failed", "the last upgrade failed"),
    };
    assert_eq!(status["lock"]["state"], state, "{case}");
    let message = status["lock"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{case}: {message}");
    // Never "the database was rolled back" where a commit of the run went through.
    assert!(
        !message.contains("database was rolled back"),
        "{case}: {message}"
    );
    if lock["non_transactional"] == true {
        assert!(message.contains("may hold part of it"), "{case}: {message}");
    }
    if let Some(step) = lock["step"].as_str() {
        // The step named is one of the run's (the lock notes a shared step within a few
        // milliseconds, so it may still name the one before; a failure names where it
        // failed, `commit` for the final commit).
        assert!(
            STEPS.iter().any(|(name, ..)| *name == step) || step == "commit",
            "{case}: {lock}"
        );
    }
    project.run(&["check"]).assert_code(4);
    project
        .run(&["--no-backup", "run"])
        .assert_code(4)
        .assert_stderr(says);
    partial
}

/// The step that was running when the `n`th hit of `point` came: the statements run in
/// [`ROWS`]' order, one per row; `None` where the point is not inside a step.
fn step_at(point: &str, n: u64) -> Option<usize> {
    let statement_step = |n: u64| {
        let row = ROWS[n as usize - 1];
        STEPS.iter().position(|(_, _, rows)| rows.contains(&row))
    };
    match point {
        "before-statement" | "after-statement" => statement_step(n),
        "after-step" => Some(n as usize - 1),
        _ => None,
    }
}

/// The lock names the right step: none before the first one starts; after a failure,
/// exactly the step that failed; after a crash, the step that was running, or (the lock
/// notes a shared step within a few milliseconds) one before it, and a step without a
/// transaction always exactly, since it is written down before the step starts.
#[track_caller]
fn check_lock_step(
    project: &TestProject,
    mode: Mode,
    point: &str,
    n: u64,
    action: Action,
    case: &str,
) {
    let Some(lock) = project.lock_json() else {
        return;
    };
    let named = lock["step"]
        .as_str()
        .map(|step| STEPS.iter().position(|s| s.0 == step));
    if ["lock-file-written", "database-locked", "backup-made"].contains(&point) {
        assert_eq!(named, None, "{case}: a step before any ran: {lock}");
        return;
    }
    let Some(running) = step_at(point, n) else {
        return;
    };
    let alone = mode == Mode::NoneStep && STEPS[running].0 == "two";
    match action {
        Action::Error => assert_eq!(named, Some(Some(running)), "{case}: {lock}"),
        Action::Abort if alone => {
            assert_eq!(named, Some(Some(running)), "{case}: {lock}");
            assert_eq!(lock["non_transactional"], true, "{case}: {lock}");
        }
        Action::Abort => assert!(
            named.is_none_or(|step| step.is_some_and(|step| step <= running)),
            "{case}: the lock names a step after the running one: {lock}"
        ),
    }
}

/// After the developer has looked: `unlock` (when a lock stayed) then `run` finish the
/// upgrade, every step applied exactly once.
#[track_caller]
fn unlock_and_finish(project: &TestProject, mode: Mode, partial: bool, case: &str) {
    if partial {
        // What a developer does after a step without a transaction died part-way: undo
        // what it did (here, all of it) before running it again.
        project.sql("DELETE FROM applied WHERE step = 'two'");
    }
    if project.lock_path().exists() {
        project
            .run(&["unlock"])
            .assert_code(0)
            .assert_stdout("removed the");
    }
    let run = project.run(&["--no-backup", "run", "--transaction", mode.transaction()]);
    run.assert_code(0);
    check_finished(project, case);
}

#[track_caller]
fn check_finished(project: &TestProject, case: &str) {
    assert_eq!(
        project.recorded_version().as_deref(),
        Some("1.3.0"),
        "{case}"
    );
    assert_eq!(rows(project), ROWS, "{case}");
    assert_eq!(applied_steps(project), ["one", "two", "three"], "{case}");
    assert!(!project.lock_path().exists(), "{case}: a lock file stayed");
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["state"], "current", "{case}");
    if project.direct_url.is_some() {
        // Through a pooler, no process's lock stays held on the server. A lease row may
        // stay (a run killed after its last step, when nothing has needed the lock since),
        // but only a dead holder's: the next run on this host takes it over at once, and
        // one elsewhere once it expires, at most 30 s on.
        assert_eq!(
            project.query_i64(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND \
                 database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            0,
            "{case}: an advisory lock outlived its process"
        );
        let leases = "SELECT count(*) FROM pg_class WHERE relname = 'upgrader_lock'";
        if project.query_i64(leases) > 0
            && project.query_i64("SELECT count(*) FROM upgrader_lock") > 0
        {
            let pid = project.query_i64("SELECT pid FROM upgrader_lock");
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{case}: the lease of a live process {pid} stayed"
            );
            assert_eq!(
                project.query_i64(
                    "SELECT count(*) FROM upgrader_lock \
                     WHERE expires_at <= clock_timestamp() + interval '30 seconds'"
                ),
                1,
                "{case}: a lease that outlives its expiry"
            );
        }
    }
}

/// Kills (or fails) a run at every hit of every failpoint, then checks and recovers.
/// Returns the number of cases.
fn every_run_point(db: Db, mode: Mode, action: Action) -> usize {
    let mut cases = 0;
    let mut partial_cases = 0;
    for point in RUN_POINTS {
        if db.pooled && point == "backup-made" {
            continue;
        }
        for n in 1.. {
            let case = format!(
                "{} {} {point}#{n}={}",
                db.name(),
                mode.name(),
                action.name()
            );
            let project = project(db, mode);
            let run = run_command(&project, mode, point, &at(point, n, action.name()));
            if !acted(&run.stderr, point, n) {
                // The run never reached the point that many times: it went through.
                run.assert_code(0);
                check_finished(&project, &case);
                assert!(n > 1, "{case}: the run never reaches {point}");
                break;
            }
            cases += 1;
            if action == Action::Error && point == "before-lock-cleared" {
                // Nothing can fail there: the run has ended.
                run.assert_code(0);
                check_finished(&project, &case);
                continue;
            }
            match action {
                Action::Abort => {
                    assert_ne!(run.code, 0, "{case}: survived its abort\n{}", run.stderr)
                }
                Action::Error => {
                    run.assert_code(1).assert_stderr("failpoint");
                    // A failed run says what the database holds: never "unchanged"
                    // when part of the run stayed.
                    if let Some(lock) = project.lock_json() {
                        let version = project.recorded_version();
                        let holds = match &version {
                            Some(version) => format!("version {version}"),
                            None => "no version recorded".into(),
                        };
                        run.assert_stderr(&holds);
                        // What failed after its own commit is not called rolled back.
                        let reached = match lock["step"].as_str() {
                            Some("commit") => Some("1.3.0"),
                            Some(step) => STEPS.iter().find(|s| s.0 == step).map(|s| s.1),
                            None => None,
                        };
                        let committed = reached.is_some_and(|to| version.as_deref() >= Some(to));
                        if committed && lock["non_transactional"] != true {
                            run.assert_stderr("nothing was rolled back");
                        }
                        if version.is_some() {
                            assert!(!run.stderr.contains("unchanged"), "{case}: {}", run.stderr);
                        }
                    }
                }
            }
            if db.pooled {
                // The pooler drops the dead client's server connection, and its
                // transaction's advisory lock with it.
                wait_for(Duration::from_secs(10), "the advisory lock to go", || {
                    project.query_i64(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND \
                         database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    ) == 0
                });
            }
            check_lock_step(&project, mode, point, n, action, &case);
            let partial = check_after(&project, mode, &case, action);
            unlock_and_finish(&project, mode, partial, &case);
            partial_cases += usize::from(partial);
        }
    }
    // The step without a transaction is caught part-way (after its statement, before its
    // version is recorded) at least once; nothing else ever is.
    assert_eq!(
        partial_cases > 0,
        mode == Mode::NoneStep,
        "{} {} {}: {partial_cases} partial cases",
        db.name(),
        mode.name(),
        action.name()
    );
    cases
}

/// `unlock` killed (or failing) before and after it removes a stale lock: the lock is
/// still there and still stale, or gone; either way the next `unlock` and `run` complete.
fn killed_unlocks(db: Db, mode: Mode) -> usize {
    let points = ["unlock-before-remove", "unlock-after-remove"];
    let actions = [Action::Abort, Action::Error];
    for point in points {
        for action in actions {
            let case = format!("{} {} {point}={}", db.name(), mode.name(), action.name());
            let project = project(db, mode);
            let crashed = run_command(&project, mode, "", &at("after-statement", 1, "abort"));
            assert!(acted(&crashed.stderr, "after-statement", 1), "{case}");
            let partial = check_after(&project, mode, &case, Action::Abort);
            let mut unlock = project.command(&["unlock"]);
            unlock.env("UPGRADER_FAILPOINTS", at(point, 1, action.name()));
            let stopped = run_within(unlock, Duration::from_secs(60));
            assert!(
                acted(&stopped.stderr, point, 1),
                "{case}: {}",
                stopped.stderr
            );
            assert_ne!(stopped.code, 0, "{case}: {}", stopped.stderr);
            if point == "unlock-before-remove" {
                check_after(&project, mode, &case, Action::Abort);
                unlock_and_finish(&project, mode, partial, &case);
            } else {
                assert!(!project.lock_path().exists(), "{case}");
                project
                    .run(&["unlock"])
                    .assert_code(0)
                    .assert_stdout("no lock to clear");
                unlock_and_finish(&project, mode, partial, &case);
            }
        }
    }
    points.len() * actions.len()
}

fn matrix(db: Db, mode: Mode) {
    let started = Instant::now();
    let cases = every_run_point(db, mode, Action::Abort)
        + killed_unlocks(db, mode)
        + every_run_point(db, mode, Action::Error);
    report(&format!(
        "crash matrix: {} x {}: {cases} cases (failpoint hits: abort, then error) in {:.1} s",
        db.name(),
        mode.name(),
        started.elapsed().as_secs_f64()
    ));
}

fn direct(backend: Backend) -> Db {
    Db {
        backend,
        pooled: false,
    }
}

fn single(backend: Backend) {
    matrix(direct(backend), Mode::Single);
}

fn per_step(backend: Backend) {
    matrix(direct(backend), Mode::PerStep);
}

fn transaction_none(backend: Backend) {
    matrix(direct(backend), Mode::NoneStep);
}

crate::on_every_backend!(single, per_step, transaction_none);

/// PostgreSQL through PgBouncer in transaction pooling mode, where a server connection
/// outlives its client: however the run is killed, once its client is gone no
/// transaction-level lock stays on the server, and after `unlock` + `run` nothing does.
mod pgbouncer {
    use super::*;

    const POOLED: Db = Db {
        backend: Backend::Postgres,
        pooled: true,
    };

    #[test]
    fn single() {
        matrix(POOLED, Mode::Single);
    }

    #[test]
    fn per_step() {
        matrix(POOLED, Mode::PerStep);
    }

    #[test]
    fn transaction_none() {
        matrix(POOLED, Mode::NoneStep);
    }
}
