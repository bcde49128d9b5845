//! Two processes at once, and a process killed mid-step: the lock keeps everyone else
//! out, and the database never shows half a step.

use std::process::Stdio;
use std::time::Duration;

use crate::on_every_backend;
use crate::util::{slow_sql, wait_for, Backend, TestProject};

fn project_with_slow_step(backend: Backend, seconds: f64) -> TestProject {
    let project = with_slow_step(
        TestProject::on(backend, "1.3.0", SLOW_STEP_MANIFEST),
        seconds,
    );
    project.sql("CREATE TABLE existing (x INTEGER); INSERT INTO existing VALUES (42)");
    project
}

/// Three steps, the second of which runs `scripts/slow.sql` (see [`with_slow_step`]).
pub(crate) const SLOW_STEP_MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="first" from="1.0.0" to="1.1.0">
    <sql>INSERT INTO first_table VALUES (1);</sql>
  </step>
  <step name="slow" from="1.1.0" to="1.2.0">
    <sql file="scripts/slow.sql"/>
  </step>
  <step name="last" from="1.2.0" to="1.3.0">
    <sql>INSERT INTO first_table VALUES (3);</sql>
  </step>
</upgrade>
"#;

/// Writes the slow script (a row, then `seconds` of sleep) and the table the steps fill.
pub(crate) fn with_slow_step(project: TestProject, seconds: f64) -> TestProject {
    project.write(
        "scripts/slow.sql",
        &format!(
            "INSERT INTO first_table VALUES (2);\n{}\n",
            slow_sql(project.backend, seconds)
        ),
    );
    project.sql("CREATE TABLE first_table (x INTEGER)");
    project
}

/// The run reached 1.3.0 and every step ran exactly once.
#[track_caller]
fn assert_each_step_applied_once(project: &TestProject) {
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    let history = project.history();
    let names: Vec<&str> = history
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "slow", "last"]);
    assert_eq!(project.query_i64("SELECT count(*) FROM first_table"), 3);
}

fn lock_step(project: &TestProject) -> Option<String> {
    project.lock_json()?["step"].as_str().map(str::to_string)
}

fn second_run_reports_upgrade_in_progress(backend: Backend) {
    let project = project_with_slow_step(backend, 2.0);
    let first = project
        .command(&["run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the slow step to start", || {
        lock_step(&project).as_deref() == Some("slow")
    });
    let second = project.run(&["run"]);
    second.assert_code(4).assert_stderr("upgrade in progress");
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["lock"]["state"], "held");
    assert_eq!(status["state"], "halted");
    project.run(&["check"]).assert_code(4);
    project
        .run(&["unlock"])
        .assert_code(4)
        .assert_stderr("refusing to unlock");

    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "first run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_each_step_applied_once(&project);
    project
        .run(&["run"])
        .assert_code(0)
        .assert_stdout("current");
}

fn many_simultaneous_runs_apply_each_step_once(backend: Backend) {
    let project = project_with_slow_step(backend, 0.3);
    let children: Vec<_> = (0..6)
        .map(|_| {
            project
                .command(&["run"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut codes = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let code = output.status.code().unwrap();
        assert!(
            code == 0 || code == 4,
            "exit {code}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        codes.push(code);
    }
    assert!(codes.contains(&0), "{codes:?}");
    assert_each_step_applied_once(&project);
    assert!(!project.lock_path().exists());
}

fn killed_run_leaves_old_version_and_a_stale_lock(backend: Backend) {
    // MariaDB finishes a statement before it notices its client is gone, and only then
    // rolls back and frees the upgrade lock; a long sleep would hold up the rerun below.
    let seconds = if backend == Backend::MariaDb {
        5.0
    } else {
        600.0
    };
    let project = project_with_slow_step(backend, seconds);
    let before = project.app_snapshot();
    let mut child = project
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the slow step to start", || {
        lock_step(&project).as_deref() == Some("slow")
    });
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();

    // SQLite rolls the interrupted transaction back when the database is next opened;
    // PostgreSQL when the connection drops; MariaDB when the running statement ends.
    // Until then, nobody sees uncommitted work.
    assert_eq!(project.app_snapshot(), before, "part of the run is visible");
    assert_eq!(project.recorded_version(), None);
    assert_eq!(project.app_table_count(), 2);

    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["lock"]["state"], "stale");
    assert_eq!(status["state"], "halted");
    assert_eq!(status["lock"]["step"], "slow");
    project
        .run(&["run"])
        .assert_code(4)
        .assert_stderr("the upgrading process is gone");
    project.run(&["check"]).assert_code(4);

    project.write("scripts/slow.sql", "INSERT INTO first_table VALUES (2);\n");
    project
        .run(&["unlock"])
        .assert_code(0)
        .assert_stdout("removed the stale lock");
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM first_table"), 3);
}

/// Several application servers, each with its own project directory (and so its own lock
/// file), share one database: the database-level lock lets exactly one of them upgrade.
fn hosts_sharing_one_database_upgrade_once(backend: Backend) {
    let first = project_with_slow_step(backend, 0.5);
    let mut hosts = vec![first];
    for _ in 1..16 {
        // Each host starts from a plain project and takes over the first one's files.
        let mut host = TestProject::new("1.3.0", "");
        host.share_database_of(&hosts[0]);
        hosts.push(host);
    }
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(hosts.len()));
    let codes: Vec<(i32, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let barrier = barrier.clone();
                // Half of them commit per step: the database lock must cover the gaps.
                let mode = if index % 2 == 0 { "single" } else { "per-step" };
                scope.spawn(move || {
                    barrier.wait();
                    let run = host.run(&["run", "--transaction", mode]);
                    (run.code, run.stderr)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, stderr) in &codes {
        assert!(*code == 0 || *code == 4, "exit {code}: {stderr}");
    }
    assert_each_step_applied_once(&hosts[0]);
    for host in &hosts {
        assert!(
            !host.lock_path().exists(),
            "{} kept a lock",
            host.path().display()
        );
    }
}

on_every_backend!(
    second_run_reports_upgrade_in_progress,
    many_simultaneous_runs_apply_each_step_once,
    killed_run_leaves_old_version_and_a_stale_lock,
    hosts_sharing_one_database_upgrade_once,
);
