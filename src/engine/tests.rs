//! The runner's state machine, table-driven over the recording fake backend
//! ([`crate::db::fake`]): transaction modes × failure points × a `transaction="none"` step,
//! on each dialect's commit behaviour. Each case states the calls the run makes (in the
//! fake's short form), what the database holds afterwards, the lock file and the message.

use std::path::Path;

use super::{Config, Engine, RunResult, TransactionMode};
use crate::db::fake::{Call, Fake};
use crate::db::state::HistoryRow;
use crate::error::Error;
use crate::lock::{self, LockState};
use crate::sql::Dialect;

use Dialect::{MySql, Postgres, Sqlite};
use TransactionMode::{PerStep, Single};

/// One step of a test manifest: its name, range, statements (each names itself by a
/// quoted literal, which is how the fake's shape shows it) and whether it runs alone.
struct Step {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    statements: &'static [&'static str],
    alone: bool,
}

/// A manifest for `project`: an install that creates `table`, then `steps`.
fn manifest(project: &str, table: &str, packages: &[&str], steps: &[Step]) -> String {
    let mut xml = format!("<upgrade project=\"{project}\" initial-version=\"1.0.0\">\n");
    for dir in packages {
        xml.push_str(&format!("  <package dir=\"{dir}\"/>\n"));
    }
    xml.push_str(&format!(
        "  <install><sql>CREATE TABLE {table} (name VARCHAR(10)); INSERT INTO {table} VALUES ('i2');</sql></install>\n"
    ));
    for step in steps {
        let transaction = if step.alone {
            " transaction=\"none\""
        } else {
            ""
        };
        let sql: String = step
            .statements
            .iter()
            .map(|label| format!("INSERT INTO {table} VALUES ('{label}'); "))
            .collect();
        xml.push_str(&format!(
            "  <step name=\"{}\" from=\"{}\" to=\"{}\"{transaction}><sql>{sql}</sql></step>\n",
            step.name, step.from, step.to
        ));
    }
    xml.push_str("</upgrade>\n");
    xml
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The project `app` at code version 1.3.0: steps one (a1, a2), two (b1, b2; alone when
/// `alone`) and three (c1, c2).
fn three_steps(dir: &Path, alone: bool) {
    let steps = [
        Step {
            name: "one",
            from: "1.0.0",
            to: "1.1.0",
            statements: &["a1", "a2"],
            alone: false,
        },
        Step {
            name: "two",
            from: "1.1.0",
            to: "1.2.0",
            statements: &["b1", "b2"],
            alone,
        },
        Step {
            name: "three",
            from: "1.2.0",
            to: "1.3.0",
            statements: &["c1", "c2"],
            alone: false,
        },
    ];
    write(dir, "VERSION", "1.3.0\n");
    write(dir, "upgrade.xml", &manifest("app", "log", &[], &steps));
}

/// The versions the database records, but upgrader's own: `project=version …`.
fn versions(fake: &Fake) -> String {
    fake.durable()
        .versions
        .iter()
        .filter(|(project, _)| *project != crate::db::state::OWN_PROJECT)
        .map(|(project, version)| format!("{project}={version}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The history rows: `name` for a success, `name!from>to` for a failure (`-` for no
/// version); prefixed with `project:` when `projects`.
fn history(fake: &Fake, projects: bool) -> String {
    let show = |row: &HistoryRow| {
        let project = match projects {
            true => format!("{}:", row.project),
            false => String::new(),
        };
        match row.success {
            true => format!("{project}{}", row.name),
            false => format!(
                "{project}{}!{}>{}",
                row.name,
                row.from_version.as_deref().unwrap_or("-"),
                row.to_version
            ),
        }
    };
    fake.durable()
        .history
        .iter()
        .map(show)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The user statements that took effect, by their labels.
fn applied(fake: &Fake) -> String {
    fake.durable()
        .applied
        .iter()
        .map(|sql| sql.split('\'').nth(1).unwrap_or(sql).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn own_ddl(sql: &str) -> bool {
    crate::db::fake::is_own_ddl(sql)
}

/// What holds in every run, whatever the case: the contract of [`crate::db::Backend`]
/// kept, the database lock taken before the first transaction and released last, no
/// transaction left open, statements of a step that runs alone sent outside any
/// transaction and every other statement inside one, and after a failure its history
/// row written in a transaction of its own, after the failed work was rolled back.
fn check_protocol(case: &str, fake: &Fake, alone: &[&str], failed: bool) {
    assert_eq!(
        fake.misuse(),
        Vec::<String>::new(),
        "{case}: contract breaches"
    );
    assert!(
        !fake.in_transaction(),
        "{case}: a transaction was left open"
    );
    let calls = fake.calls();
    let first_begin = calls.iter().position(|c| *c == Call::Begin);
    let first_lock = calls.iter().position(|c| matches!(c, Call::Lock(_)));
    assert!(
        first_lock.is_some() && first_lock < first_begin,
        "{case}: the lock is taken before the first begin"
    );
    let last_unlock = calls.iter().rposition(|c| *c == Call::Unlock);
    let last_change = calls.iter().rposition(|c| {
        matches!(
            c,
            Call::Begin
                | Call::Commit
                | Call::CommitAndChain
                | Call::Rollback { open: true }
                | Call::Execute { .. }
                | Call::ExecuteParams { .. }
        )
    });
    assert!(
        last_unlock.is_some() && last_unlock > last_change,
        "{case}: the lock is released at the end"
    );
    for call in &calls {
        if let Call::Execute {
            sql,
            in_transaction,
        } = call
        {
            if own_ddl(sql) {
                continue;
            }
            let runs_alone = alone
                .iter()
                .any(|label| sql.contains(&format!("'{label}'")));
            assert_eq!(
                *in_transaction, !runs_alone,
                "{case}: `{sql}` sent inside a transaction (a step that runs alone never is, any other always)"
            );
        }
    }
    // When the failure row itself could not be written there is no row to look at.
    let row_written = fake
        .durable()
        .history
        .last()
        .is_some_and(|row| !row.success);
    if failed && row_written {
        let shape = fake.shape();
        assert!(
            shape.ends_with(" begin history(1) commit unlock")
                || shape.ends_with(" begin upgrader=1.1.0 history(1) commit unlock"),
            "{case}: the failure row is written in its own transaction at the end: {shape}"
        );
        let tokens: Vec<&str> = shape.split(' ').collect();
        let failure_row = tokens.iter().rposition(|t| *t == "begin").unwrap();
        // The failed call, else an implicit commit that stopped the run (a run can also
        // fail on what it reads: then neither).
        let failed_at = tokens.iter().position(|t| t.ends_with('!')).or_else(|| {
            tokens[..failure_row]
                .iter()
                .rposition(|t| *t == "implicit-commit")
        });
        if let Some(failed_at) = failed_at {
            assert!(failed_at < failure_row, "{case}: the failure comes first");
            let undone = tokens[failed_at + 1..failure_row]
                .iter()
                .all(|t| matches!(*t, "rollback" | "implicit-commit" | "drop"));
            assert!(
                undone,
                "{case}: nothing but undoing between the failure and its row: {shape}"
            );
        }
        // That `begin` found no transaction open, or the fake would have recorded a
        // misuse (checked above): the failed work was over before its row was written.
    }
}

/// What a failed run must leave: the lock file failed at `step`, with the error;
/// `non_transactional` when a step that ran alone failed.
fn check_failed_lock(case: &str, dir: &Path, step: &str, non_transactional: bool) {
    match lock::inspect(&dir.join(lock::LOCK_FILE)).unwrap() {
        LockState::Failed(record) => {
            assert_eq!(record.step.as_deref(), Some(step), "{case}: lock step");
            assert_eq!(
                record.non_transactional, non_transactional,
                "{case}: lock non_transactional"
            );
            assert!(record.error.is_some(), "{case}: the lock keeps the error");
        }
        other => panic!("{case}: the lock file should be failed, is {other:?}"),
    }
}

/// Runs `check` on every case, then fails naming every case that failed (each one's
/// own assertion is printed as it fails), so that one broken case hides no other.
fn every_case<T>(cases: &[T], name: impl Fn(&T) -> &'static str, check: impl Fn(&T)) {
    let failed: Vec<&str> = cases
        .iter()
        .filter(|case| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(case))).is_err()
        })
        .map(name)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed: {}",
        failed.len(),
        cases.len(),
        failed.join("; ")
    );
}

/// Runs the project in `dir` on the fake, as `upgrader run [--transaction per-step]` would.
fn run(dir: &Path, mode: TransactionMode, fake: &Fake) -> Result<super::RunOutcome, Error> {
    let mut config = Config::new(dir);
    config.transaction = mode;
    let engine = Engine::open(config).expect("the test project loads");
    engine.run_on(Some(fake.backend()))
}

/// A failure point: the fake, told where to fail.
type Fault = fn(Fake) -> Fake;

/// One case of a run of [`three_steps`] from 1.0.0.
struct Case {
    name: &'static str,
    dialect: Dialect,
    mode: TransactionMode,
    /// Step two runs alone (`transaction="none"`).
    alone: bool,
    fault: Fault,
    /// The calls, in [`Fake::shape`]'s short form.
    shape: &'static str,
    /// The versions recorded afterwards (see [`versions`]).
    versions: &'static str,
    /// The history afterwards (see [`history`]).
    history: &'static str,
    /// The user statements that stayed (see [`applied`]).
    applied: &'static str,
    /// For a failure: the step the lock file names, and what the message says stayed.
    failure: Option<(&'static str, &'static str)>,
}

const NO_FAULT: Fault = |fake| fake;
/// In `Case::failure`: the run stopped as halted (exit 4), with no failed lock or row.
const HALTED: &str = "(halted)";
const FAIL_B2: Fault = |fake| fake.fail_execute("'b2'", 1);
const FAIL_C1: Fault = |fake| fake.fail_execute("'c1'", 1);
const FAIL_C2: Fault = |fake| fake.fail_execute("'c2'", 1);
const HISTORY: &str = "INSERT INTO upgrader_history";
const WITH_HISTORY: &str = "WITH recorded AS (INSERT INTO upgrader_history";

const ALL_STEPS: &str = "a1 a2 b1 b2 c1 c2";
const ONE_BY_ONE: &str = "lock(session) begin a1 a2 history(1) app=1.1.0 commit begin b1 b2 history(1) app=1.2.0 commit begin c1 c2 history(1) app=1.3.0 commit unlock";
const TWO_ALONE: &str = "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2 begin history(1) app=1.2.0 commit begin c1 c2 history(1) app=1.3.0 commit unlock";
const WHOLE_RUN_BACK: &str =
    "the whole run was rolled back and the database is unchanged (version 1.0.0)";
const PART_OF_TWO: &str = "the step ran without a transaction (transaction=\"none\"), so the database may hold part of it; the database records version 1.1.0";
const BACK_TO_TWO: &str = "the run was rolled back to where the transaction=\"none\" step 'two' committed: it and the steps before it stay applied, and the database records version 1.2.0";
const TWO_BACK: &str =
    "this step was rolled back, steps before it stay committed, and the database records version 1.1.0";
const THREE_BACK: &str =
    "this step was rolled back, steps before it stay committed, and the database records version 1.2.0";

const CASES: &[Case] = &[
    // One transaction for the whole run.
    Case {
        name: "single, no failure",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: NO_FAULT,
        shape: "lock(tx) begin a1 a2 b1 b2 c1 c2 history(3) app=1.3.0 commit unlock",
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "single, 2nd statement of step two fails",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: FAIL_B2,
        shape: "lock(tx) begin a1 a2 b1 b2! rollback begin history(1) commit unlock",
        versions: "app=1.0.0",
        history: "two!1.1.0>1.2.0",
        applied: "",
        failure: Some(("two", WHOLE_RUN_BACK)),
    },
    Case {
        name: "single, the final commit fails",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: |fake| fake.fail_commit(1),
        shape: "lock(tx) begin a1 a2 b1 b2 c1 c2 history(3) app=1.3.0 commit! rollback begin history(1) commit unlock",
        versions: "app=1.0.0",
        // The run's own row, from the version the database holds.
        history: "commit!1.0.0>1.3.0",
        applied: "",
        failure: Some(("commit", WHOLE_RUN_BACK)),
    },
    Case {
        name: "single, the history write fails",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: |fake| fake.fail_execute(HISTORY, 1),
        shape: "lock(tx) begin a1 a2 b1 b2 c1 c2 history(3)! rollback begin history(1) commit unlock",
        versions: "app=1.0.0",
        // The same.
        history: "commit!1.0.0>1.3.0",
        applied: "",
        failure: Some(("commit", WHOLE_RUN_BACK)),
    },
    Case {
        name: "single, a step fails and so does its failure row",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: |fake| fake.fail_execute("'b2'", 1).fail_execute(HISTORY, 1),
        shape: "lock(tx) begin a1 a2 b1 b2! rollback begin history(1)! rollback unlock",
        versions: "app=1.0.0",
        history: "",
        applied: "",
        failure: Some(("two", WHOLE_RUN_BACK)),
    },
    Case {
        name: "single, PostgreSQL records history and version in one statement",
        dialect: Postgres,
        mode: Single,
        alone: false,
        fault: NO_FAULT,
        shape: "lock(tx) begin a1 a2 b1 b2 c1 c2 history(3)+app=1.3.0 commit unlock",
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "single, MySQL: a statement commits implicitly",
        dialect: MySql,
        mode: Single,
        alone: false,
        fault: |fake| fake.commit_implicitly_after("'b1'"),
        shape: "lock(tx) begin a1 a2 b1 implicit-commit begin history(1) commit unlock",
        versions: "app=1.0.0",
        history: "two!1.1.0>1.2.0",
        applied: "a1 a2 b1",
        failure: Some((
            "two",
            "committed the transaction implicitly, so what this run did up to it stays in the database and could not be rolled back; the database records version 1.0.0",
        )),
    },
    Case {
        name: "single, another process upgraded to 1.2.0 before the lock",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: |fake| fake.meanwhile(None, "app", "1.2.0"),
        shape: "lock(tx) begin c1 c2 history(1) app=1.3.0 commit unlock",
        versions: "app=1.3.0",
        history: "three",
        applied: "c1 c2",
        failure: None,
    },
    Case {
        name: "single, another process upgraded everything before the lock",
        dialect: Sqlite,
        mode: Single,
        alone: false,
        fault: |fake| fake.meanwhile(None, "app", "1.3.0"),
        shape: "lock(tx) begin rollback unlock",
        versions: "app=1.3.0",
        history: "",
        applied: "",
        failure: None,
    },
    // One transaction, step two without one.
    Case {
        name: "single + alone, no failure",
        dialect: Sqlite,
        mode: Single,
        alone: true,
        fault: NO_FAULT,
        shape: TWO_ALONE,
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "single + alone, MySQL, no failure",
        dialect: MySql,
        mode: Single,
        alone: true,
        fault: NO_FAULT,
        shape: TWO_ALONE,
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "single + alone, 2nd statement of the alone step fails",
        dialect: Sqlite,
        mode: Single,
        alone: true,
        fault: FAIL_B2,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2! begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2 b1",
        failure: Some(("two", PART_OF_TWO)),
    },
    Case {
        name: "single + alone, 1st statement of step three fails",
        dialect: Sqlite,
        mode: Single,
        alone: true,
        fault: FAIL_C1,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2 begin history(1) app=1.2.0 commit begin c1! rollback begin history(1) commit unlock",
        versions: "app=1.2.0",
        history: "one two three!1.2.0>1.3.0",
        applied: "a1 a2 b1 b2",
        failure: Some(("three", BACK_TO_TWO)),
    },
    Case {
        name: "single + alone, the final commit fails",
        dialect: Sqlite,
        mode: Single,
        alone: true,
        fault: |fake| fake.fail_commit(3),
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2 begin history(1) app=1.2.0 commit begin c1 c2 history(1) app=1.3.0 commit! rollback begin history(1) commit unlock",
        versions: "app=1.2.0",
        history: "one two commit!1.2.0>1.3.0",
        applied: "a1 a2 b1 b2",
        failure: Some(("commit", BACK_TO_TWO)),
    },
    Case {
        name: "single + alone, the alone step's history write fails",
        dialect: Sqlite,
        mode: Single,
        alone: true,
        fault: |fake| fake.fail_execute(HISTORY, 2),
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2 begin history(1)! rollback begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2 b1 b2",
        failure: Some(("two", PART_OF_TWO)),
    },
    // A transaction per step.
    Case {
        name: "per-step, no failure",
        dialect: Sqlite,
        mode: PerStep,
        alone: false,
        fault: NO_FAULT,
        shape: ONE_BY_ONE,
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "per-step, 2nd statement of step two fails",
        dialect: Sqlite,
        mode: PerStep,
        alone: false,
        fault: FAIL_B2,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit begin b1 b2! rollback begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2",
        failure: Some(("two", TWO_BACK)),
    },
    Case {
        name: "per-step, the last commit fails",
        dialect: Sqlite,
        mode: PerStep,
        alone: false,
        fault: |fake| fake.fail_commit(3),
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit begin b1 b2 history(1) app=1.2.0 commit begin c1 c2 history(1) app=1.3.0 commit! rollback begin history(1) commit unlock",
        versions: "app=1.2.0",
        history: "one two three!1.2.0>1.3.0",
        applied: "a1 a2 b1 b2",
        failure: Some(("three", THREE_BACK)),
    },
    Case {
        name: "per-step, step two's history write fails",
        dialect: Sqlite,
        mode: PerStep,
        alone: false,
        fault: |fake| fake.fail_execute(HISTORY, 2),
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit begin b1 b2 history(1)! rollback begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2",
        failure: Some(("two", TWO_BACK)),
    },
    Case {
        name: "per-step, MySQL chains the commits",
        dialect: MySql,
        mode: PerStep,
        alone: false,
        fault: NO_FAULT,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 chain b1 b2 history(1) app=1.2.0 chain c1 c2 history(1) app=1.3.0 commit unlock",
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "per-step, MySQL, 2nd statement of step two fails",
        dialect: MySql,
        mode: PerStep,
        alone: false,
        fault: FAIL_B2,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 chain b1 b2! rollback begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2",
        failure: Some(("two", TWO_BACK)),
    },
    Case {
        name: "per-step, MySQL, step two's chained commit fails",
        dialect: MySql,
        mode: PerStep,
        alone: false,
        fault: |fake| fake.fail_commit(2),
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 chain b1 b2 history(1) app=1.2.0 chain! rollback begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2",
        failure: Some(("two", TWO_BACK)),
    },
    Case {
        name: "per-step, PostgreSQL, step two's record fails",
        dialect: Postgres,
        mode: PerStep,
        alone: false,
        fault: |fake| fake.fail_execute(WITH_HISTORY, 2),
        shape: "lock(session) begin a1 a2 history(1)+app=1.1.0 chain b1 b2 history(1)! rollback begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2",
        failure: Some(("two", TWO_BACK)),
    },
    Case {
        name: "per-step, another process upgraded between two commits (SQLite)",
        dialect: Sqlite,
        mode: PerStep,
        alone: false,
        fault: |fake| fake.meanwhile(Some(1), "app", "1.2.0"),
        // Nothing failed: the other process carried on from this run's commit. The run
        // stops as one that found an upgrade in progress does (no failure row, no lock).
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit begin rollback unlock",
        versions: "app=1.2.0",
        history: "one",
        applied: "a1 a2",
        failure: Some((
            HALTED,
            "another process upgraded app to 1.2.0 while this run was between two commits (after 1.1.0); this run stopped before step 'two'",
        )),
    },
    // A transaction per step, step two without one.
    Case {
        name: "per-step + alone, no failure",
        dialect: Sqlite,
        mode: PerStep,
        alone: true,
        fault: NO_FAULT,
        shape: TWO_ALONE,
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "per-step + alone, MySQL: no chain into or out of the alone step",
        dialect: MySql,
        mode: PerStep,
        alone: true,
        fault: NO_FAULT,
        shape: TWO_ALONE,
        versions: "app=1.3.0",
        history: "one two three",
        applied: ALL_STEPS,
        failure: None,
    },
    Case {
        name: "per-step + alone, 2nd statement of the alone step fails",
        dialect: Sqlite,
        mode: PerStep,
        alone: true,
        fault: FAIL_B2,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2! begin history(1) commit unlock",
        versions: "app=1.1.0",
        history: "one two!1.1.0>1.2.0",
        applied: "a1 a2 b1",
        failure: Some(("two", PART_OF_TWO)),
    },
    Case {
        name: "per-step + alone, 2nd statement of step three fails",
        dialect: Sqlite,
        mode: PerStep,
        alone: true,
        fault: FAIL_C2,
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2 begin history(1) app=1.2.0 commit begin c1 c2! rollback begin history(1) commit unlock",
        versions: "app=1.2.0",
        history: "one two three!1.2.0>1.3.0",
        applied: "a1 a2 b1 b2",
        failure: Some(("three", THREE_BACK)),
    },
    Case {
        name: "per-step + alone, the last commit fails",
        dialect: Sqlite,
        mode: PerStep,
        alone: true,
        fault: |fake| fake.fail_commit(3),
        shape: "lock(session) begin a1 a2 history(1) app=1.1.0 commit b1 b2 begin history(1) app=1.2.0 commit begin c1 c2 history(1) app=1.3.0 commit! rollback begin history(1) commit unlock",
        versions: "app=1.2.0",
        history: "one two three!1.2.0>1.3.0",
        applied: "a1 a2 b1 b2",
        failure: Some(("three", THREE_BACK)),
    },
];

/// Every case of [`CASES`], each on a fresh project and fake.
#[test]
fn runs_of_three_steps() {
    every_case(
        CASES,
        |case| case.name,
        |case| {
            let name = case.name;
            let dir = tempfile::tempdir().unwrap();
            three_steps(dir.path(), case.alone);
            let fake = (case.fault)(Fake::new(case.dialect).with_version("app", "1.0.0"));
            let result = run(dir.path(), case.mode, &fake);

            assert_eq!(fake.shape(), case.shape, "{name}: calls");
            assert_eq!(versions(&fake), case.versions, "{name}: versions");
            assert_eq!(history(&fake, false), case.history, "{name}: history");
            assert_eq!(
                applied(&fake),
                case.applied,
                "{name}: statements that stayed"
            );
            let alone: &[&str] = if case.alone { &["b1", "b2"] } else { &[] };
            let failed = case.failure.is_some_and(|(step, _)| step != HALTED);
            check_protocol(name, &fake, alone, failed);
            // The run never used the configured database.
            assert!(
                !dir.path().join("upgrader.db").exists(),
                "{name}: upgrader.db"
            );
            match (case.failure, result) {
                (None, Ok(outcome)) => {
                    // A run that found the database current applies nothing.
                    let result = match case.history {
                        "" => RunResult::Current,
                        _ => RunResult::Upgraded,
                    };
                    assert_eq!(outcome.result, result, "{name}: result");
                    let names: Vec<&str> =
                        outcome.applied.iter().map(|a| a.name.as_str()).collect();
                    let history: Vec<&str> = case.history.split_whitespace().collect();
                    assert_eq!(names, history, "{name}: applied");
                    assert!(
                        !dir.path().join(lock::LOCK_FILE).exists(),
                        "{name}: no lock file after success"
                    );
                }
                (Some((HALTED, said)), Err(Error::Halted(message))) => {
                    assert!(message.contains(said), "{name}: {message}");
                    assert!(
                        !dir.path().join(lock::LOCK_FILE).exists(),
                        "{name}: no lock file after stopping"
                    );
                }
                (
                    Some((step, stayed)),
                    Err(Error::StepFailed {
                        step: failed,
                        message,
                        ..
                    }),
                ) => {
                    assert_eq!(failed, step, "{name}: failed step");
                    assert!(
                        message.contains(stayed),
                        "{name}: the message should say `{stayed}`:\n{message}"
                    );
                    if !stayed.contains("unchanged") {
                        assert!(!message.contains("unchanged"), "{name}: {message}");
                    }
                    let alone_failed = stayed.contains("may hold part of it");
                    check_failed_lock(name, dir.path(), step, alone_failed);
                    // The failure row (when it could be written) carries the same message.
                    let rows = fake.durable().history;
                    if let Some(row) = rows.last().filter(|row| !row.success) {
                        assert_eq!(row.error.as_deref(), Some(message.as_str()), "{name}");
                        assert_eq!(row.project, "app", "{name}: failure row project");
                    }
                }
                (expected, result) => {
                    panic!("{name}: expected failure {expected:?}, got {result:?}")
                }
            }
        },
    );
}

/// A root `app` with the packages `blog` and `pay`, every project at 1.0.0 going to 1.1.0
/// with one step each (t1, b1, p1).
fn app_with_packages(dir: &Path) {
    let step = |name, label: &'static [&'static str]| Step {
        name,
        from: "1.0.0",
        to: "1.1.0",
        statements: label,
        alone: false,
    };
    for (sub, project, table, step) in [
        ("", "app", "core", step("core-rows", &["t1"])),
        ("mods/blog/", "blog", "posts", step("blog-rows", &["b1"])),
        ("mods/pay/", "pay", "payments", step("pay-rows", &["p1"])),
    ] {
        let packages: &[&str] = if sub.is_empty() {
            &["mods/blog", "mods/pay"]
        } else {
            &[]
        };
        write(dir, &format!("{sub}VERSION"), "1.1.0\n");
        write(
            dir,
            &format!("{sub}upgrade.xml"),
            &manifest(project, table, packages, &[step]),
        );
    }
}

struct PackageCase {
    name: &'static str,
    start: fn() -> Fake,
    mode: TransactionMode,
    fault: Fault,
    shape: &'static str,
    versions: &'static str,
    history: &'static str,
    /// For a failure: the item the lock file names, and what the message says stayed.
    failure: Option<(&'static str, &'static str)>,
}

/// Every project recorded at 1.0.0.
fn all_recorded(dialect: Dialect) -> Fake {
    Fake::new(dialect)
        .with_version("app", "1.0.0")
        .with_version("blog", "1.0.0")
        .with_version("pay", "1.0.0")
}

const PACKAGE_CASES: &[PackageCase] = &[
    PackageCase {
        name: "packages, single, no failure",
        start: || all_recorded(Sqlite),
        mode: Single,
        fault: NO_FAULT,
        shape: "lock(tx) begin t1 b1 p1 history(3) app=1.1.0 blog=1.1.0 pay=1.1.0 commit unlock",
        versions: "app=1.1.0 blog=1.1.0 pay=1.1.0",
        history: "app:core-rows blog:blog-rows pay:pay-rows",
        failure: None,
    },
    PackageCase {
        name: "packages, single, the last package's step fails",
        start: || all_recorded(Sqlite),
        mode: Single,
        fault: |fake| fake.fail_execute("'p1'", 1),
        shape: "lock(tx) begin t1 b1 p1! rollback begin history(1) commit unlock",
        versions: "app=1.0.0 blog=1.0.0 pay=1.0.0",
        history: "pay:pay-rows!1.0.0>1.1.0",
        failure: Some((
            "pay-rows",
            "the whole run was rolled back and the database is unchanged (app 1.0.0, blog 1.0.0, pay 1.0.0)",
        )),
    },
    PackageCase {
        name: "packages, single, the final commit fails",
        start: || all_recorded(Postgres),
        mode: Single,
        fault: |fake| fake.fail_commit(1),
        shape: "lock(tx) begin t1 b1 p1 history(3)+app=1.1.0 blog=1.1.0 pay=1.1.0 commit! rollback begin history(1) commit unlock",
        versions: "app=1.0.0 blog=1.0.0 pay=1.0.0",
        // The run's row, filed under the root.
        history: "app:commit!1.0.0>1.1.0",
        failure: Some((
            "commit",
            "the whole run was rolled back and the database is unchanged (app 1.0.0, blog 1.0.0, pay 1.0.0)",
        )),
    },
    PackageCase {
        name: "packages, per-step, no failure",
        start: || all_recorded(Sqlite),
        mode: PerStep,
        fault: NO_FAULT,
        shape: "lock(session) begin t1 history(1) app=1.1.0 commit begin b1 history(1) blog=1.1.0 commit begin p1 history(1) pay=1.1.0 commit unlock",
        versions: "app=1.1.0 blog=1.1.0 pay=1.1.0",
        history: "app:core-rows blog:blog-rows pay:pay-rows",
        failure: None,
    },
    PackageCase {
        name: "packages, per-step, the last package's step fails",
        start: || all_recorded(Sqlite),
        mode: PerStep,
        fault: |fake| fake.fail_execute("'p1'", 1),
        shape: "lock(session) begin t1 history(1) app=1.1.0 commit begin b1 history(1) blog=1.1.0 commit begin p1! rollback begin history(1) commit unlock",
        versions: "app=1.1.0 blog=1.1.0 pay=1.0.0",
        history: "app:core-rows blog:blog-rows pay:pay-rows!1.0.0>1.1.0",
        failure: Some((
            "pay-rows",
            "steps before it stay committed, and the database records app 1.1.0, blog 1.1.0, pay 1.0.0",
        )),
    },
    PackageCase {
        name: "packages, MySQL: a module added later installs after the core's step commits",
        start: || {
            Fake::new(MySql)
                .with_version("app", "1.0.0")
                .with_version("pay", "1.0.0")
        },
        mode: Single,
        fault: NO_FAULT,
        shape: "lock(session) begin t1 history(1) app=1.1.0 commit begin CREATE TABLE posts (name VARCHAR(10)) implicit-commit resume i2 p1 history(2) blog=1.1.0 pay=1.1.0 commit unlock",
        versions: "app=1.1.0 blog=1.1.0 pay=1.1.0",
        history: "app:core-rows blog:install pay:pay-rows",
        failure: None,
    },
    PackageCase {
        name: "packages, MySQL: the added module's install fails",
        start: || {
            Fake::new(MySql)
                .with_version("app", "1.0.0")
                .with_version("pay", "1.0.0")
        },
        mode: Single,
        fault: |fake| fake.fail_execute("posts VALUES ('i2')", 1),
        shape: "lock(session) begin t1 history(1) app=1.1.0 commit begin CREATE TABLE posts (name VARCHAR(10)) implicit-commit resume i2! rollback drop begin history(1) commit unlock",
        versions: "app=1.1.0 pay=1.0.0",
        history: "app:core-rows blog:install!->1.1.0",
        failure: Some((
            "install",
            "what ran before the install of blog was committed before it (MySQL commits an install's DDL) and stays applied; the rest was rolled back, and the database records app 1.1.0, no version for blog, pay 1.0.0; upgrader dropped what the install had created (table posts)",
        )),
    },
];

/// Several packages: each project's version and history rows written for it, one
/// transaction for all of them (but where MySQL must commit before a package's install).
#[test]
fn runs_of_several_packages() {
    every_case(
        PACKAGE_CASES,
        |case| case.name,
        |case| {
            let name = case.name;
            let dir = tempfile::tempdir().unwrap();
            app_with_packages(dir.path());
            let fake = (case.fault)((case.start)());
            let result = run(dir.path(), case.mode, &fake);

            assert_eq!(fake.shape(), case.shape, "{name}: calls");
            assert_eq!(versions(&fake), case.versions, "{name}: versions");
            assert_eq!(history(&fake, true), case.history, "{name}: history");
            check_protocol(name, &fake, &[], case.failure.is_some());
            match (case.failure, result) {
                (None, Ok(outcome)) => {
                    let packages = outcome.packages.as_deref().expect("the packages' outcomes");
                    for outcome in std::iter::once(&outcome).chain(packages) {
                        let installed = format!("{}:install", outcome.project);
                        let result = match case.history.split(' ').any(|h| h == installed) {
                            true => RunResult::Installed,
                            false => RunResult::Upgraded,
                        };
                        assert_eq!(outcome.result, result, "{name}: {}", outcome.project);
                        assert_eq!(outcome.to, "1.1.0", "{name}");
                    }
                    assert!(!dir.path().join(lock::LOCK_FILE).exists(), "{name}");
                }
                (Some((item, stayed)), Err(Error::StepFailed { step, message, .. })) => {
                    assert_eq!(step, item, "{name}");
                    assert!(message.contains(stayed), "{name}: {message}");
                    check_failed_lock(name, dir.path(), item, false);
                }
                (expected, result) => {
                    panic!("{name}: expected failure {expected:?}, got {result:?}")
                }
            }
        },
    );
}

/// A database upgrader never touched: an install into an empty one creates upgrader's
/// tables in the run's transaction (when it fails they are rolled back with it, and the
/// failure row creates them again); one with tables is adopted at `initial-version`.
#[test]
fn runs_on_a_database_without_a_version() {
    struct InstallCase {
        name: &'static str,
        start: fn() -> Fake,
        fault: Fault,
        shape: &'static str,
        versions: &'static str,
        history: &'static str,
        failure: Option<&'static str>,
    }
    const CREATE: &str = "CREATE TABLE log (name VARCHAR(10))";
    let cases = [
        InstallCase {
            name: "install, no failure",
            start: || Fake::new(Sqlite),
            fault: NO_FAULT,
            shape: "lock(tx) begin upgrader=1.1.0 CREATE TABLE log (name VARCHAR(10)) i2 history(1) app=1.3.0 commit unlock",
            versions: "app=1.3.0",
            history: "install",
            failure: None,
        },
        InstallCase {
            name: "install, its 2nd statement fails",
            start: || Fake::new(Sqlite),
            fault: |fake| fake.fail_execute("'i2'", 1),
            shape: "lock(tx) begin upgrader=1.1.0 CREATE TABLE log (name VARCHAR(10)) i2! rollback begin upgrader=1.1.0 history(1) commit unlock",
            versions: "",
            history: "install!->1.3.0",
            failure: Some("the whole run was rolled back and the database is unchanged (no version recorded)"),
        },
        InstallCase {
            name: "install on MySQL: its DDL commits, the transaction is resumed",
            start: || Fake::new(MySql),
            fault: NO_FAULT,
            shape: "lock(tx) begin implicit-commit resume upgrader=1.1.0 CREATE TABLE log (name VARCHAR(10)) implicit-commit resume i2 history(1) app=1.3.0 commit unlock",
            versions: "app=1.3.0",
            history: "install",
            failure: None,
        },
        InstallCase {
            name: "install on MySQL, its 2nd statement fails: what it created is dropped",
            start: || Fake::new(MySql),
            fault: |fake| fake.fail_execute("'i2'", 1),
            shape: "lock(tx) begin implicit-commit resume upgrader=1.1.0 CREATE TABLE log (name VARCHAR(10)) implicit-commit resume i2! rollback drop begin history(1) commit unlock",
            versions: "",
            history: "install!->1.3.0",
            failure: Some("the whole run was rolled back and the database is unchanged (no version recorded); upgrader dropped what the install had created (table log)"),
        },
        InstallCase {
            name: "adopting a database that has tables but no version",
            start: || Fake::new(Sqlite).with_table("log"),
            fault: NO_FAULT,
            shape: "lock(tx) begin upgrader=1.1.0 a1 a2 b1 b2 c1 c2 history(3) app=1.3.0 commit unlock",
            versions: "app=1.3.0",
            history: "one two three",
            failure: None,
        },
    ];
    every_case(
        &cases,
        |case| case.name,
        |case| {
            let name = case.name;
            let dir = tempfile::tempdir().unwrap();
            three_steps(dir.path(), false);
            let fake = (case.fault)((case.start)());
            let result = run(dir.path(), Single, &fake);
            assert_eq!(fake.shape(), case.shape, "{name}: calls");
            assert_eq!(versions(&fake), case.versions, "{name}: versions");
            assert_eq!(history(&fake, false), case.history, "{name}: history");
            check_protocol(name, &fake, &[], case.failure.is_some());
            let tables = fake.durable().user_tables;
            match (case.failure, result) {
                (None, Ok(outcome)) if case.history == "install" => {
                    assert_eq!(outcome.result, RunResult::Installed, "{name}");
                    assert!(tables.contains("log"), "{name}: {tables:?}");
                    assert_eq!(applied(&fake), format!("{CREATE} i2"), "{name}");
                }
                (None, Ok(outcome)) => {
                    assert_eq!(outcome.result, RunResult::Upgraded, "{name}");
                    assert_eq!(outcome.from.as_deref(), Some("1.0.0"), "{name}");
                    assert_eq!(applied(&fake), ALL_STEPS, "{name}");
                }
                (Some(stayed), Err(Error::StepFailed { step, message, .. })) => {
                    assert_eq!(step, "install", "{name}");
                    assert!(message.contains(stayed), "{name}: {message}");
                    assert!(tables.is_empty(), "{name}: {tables:?}");
                    check_failed_lock(name, dir.path(), "install", false);
                }
                (expected, result) => {
                    panic!("{name}: expected failure {expected:?}, got {result:?}")
                }
            }
        },
    );
}
