//! Two processes at once, a process killed mid-step, and races of 32 processes (runs
//! and web gates of several copies of the project) round after round: the lock keeps
//! everyone else out, exactly one upgrades, and the database never shows half a step.

use std::process::Stdio;
use std::time::Duration;

use upgrader::gate::{Answer, Gate, GateOptions};

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

/// The manifest of the race: for each round a step up to 1.ROUND.0 that inserts the
/// round's row (a primary key: a second application fails) and keeps the lock a while.
pub(crate) fn racing_manifest(backend: Backend, rounds: usize) -> String {
    let mut steps = String::new();
    for round in 1..=rounds {
        steps.push_str(&format!(
            "  <step name=\"r{round}\" from=\"1.{}.0\" to=\"1.{round}.0\">\n    \
             <sql><![CDATA[INSERT INTO rounds VALUES ({round}); {}]]></sql>\n  </step>\n",
            round - 1,
            slow_sql(backend, 0.2)
        ));
    }
    format!("<upgrade project=\"test\" initial-version=\"1.0.0\">\n{steps}</upgrade>\n")
}

/// How many rounds a race runs: `UPGRADER_RACE_ROUNDS`, else a few (the full suite of
/// README's testing section runs 200).
pub(crate) fn race_rounds() -> usize {
    std::env::var("UPGRADER_RACE_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(3)
}

/// A small deterministic generator for the start offsets (xorshift64*), seeded from
/// `UPGRADER_RACE_SEED` or the clock; the seed is in every failure message.
struct Offsets(u64);

impl Offsets {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// Application servers racing: `CHECKOUTS` copies of the project (each its own lock
/// file) share one database; each round the code moves on one version and 32 processes
/// start within 300 ms of each other, at random offsets: per checkout, 6 `run`s (half
/// per step) and 2 web gates (each upgrading in a child process). Exactly one of them
/// upgrades; the step is applied once (its row's primary key would refuse a second);
/// every `run` ends current, or says an upgrade is in progress (its own checkout's lock
/// file is held); every gate ends ready; no lock file stays, every checkout is current,
/// and `after_round` finds nothing else left behind. `no_backup` passes `--no-backup`
/// (a pooler refuses backups).
pub(crate) fn race(
    first: TestProject,
    no_backup: bool,
    after_round: &dyn Fn(&TestProject),
) -> String {
    const CHECKOUTS: usize = 4;
    const RUNS: usize = 6;
    const GATES: usize = 2;
    let rounds = race_rounds();
    let started = std::time::Instant::now();
    let seed = std::env::var("UPGRADER_RACE_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mut offsets = Offsets(seed);
    // Over all rounds: runs that upgraded, saw current, were told an upgrade was in
    // progress; upgrade processes the gates started.
    let (mut by_runs, mut current, mut in_progress, mut gate_children) = (0, 0, 0, 0);
    let backend = first.backend;
    first.write("upgrade.xml", &racing_manifest(backend, rounds));
    first.write("VERSION", "1.0.0\n");
    first.sql("CREATE TABLE rounds (round INTEGER PRIMARY KEY)");
    let global: &[&str] = if no_backup { &["--no-backup"] } else { &[] };
    first
        .run(&[global, &["run"]].concat())
        .assert_code(0)
        .assert_stdout("recorded");
    let mut hosts = vec![first];
    for _ in 1..CHECKOUTS {
        let mut host = TestProject::new("1.0.0", "");
        host.share_database_of(&hosts[0]);
        hosts.push(host);
    }
    for round in 1..=rounds {
        let case = format!(
            "{} round {round} (UPGRADER_RACE_SEED={seed})",
            backend.name()
        );
        for host in &hosts {
            host.write("VERSION", &format!("1.{round}.0\n"));
        }
        let plan: Vec<(usize, Option<&str>, u64)> = (0..CHECKOUTS)
            .flat_map(|checkout| {
                let runs = (0..RUNS).map(move |index| {
                    let mode = if index % 2 == 0 { "single" } else { "per-step" };
                    (checkout, Some(mode))
                });
                let gates = (0..GATES).map(move |_| (checkout, None));
                runs.chain(gates)
            })
            .map(|(checkout, mode)| (checkout, mode, offsets.next_ms(300)))
            .collect();
        let outcomes: Vec<Result<crate::util::Run, (Answer, u64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .iter()
                .map(|&(checkout, mode, offset)| {
                    let host = &hosts[checkout];
                    scope.spawn(move || {
                        std::thread::sleep(std::time::Duration::from_millis(offset));
                        match mode {
                            Some(mode) => {
                                Ok(host.run(&[global, &["run", "--transaction", mode]].concat()))
                            }
                            None => Err(gate_until_settled(host, no_backup)),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut upgraded = 0;
        for outcome in &outcomes {
            match outcome {
                Ok(run) => {
                    assert!(
                        run.code == 0
                            || (run.code == 4 && run.stderr.contains("upgrade in progress")),
                        "{case}: exit {}\nstdout:\n{}\nstderr:\n{}",
                        run.code,
                        run.stdout,
                        run.stderr
                    );
                    upgraded += usize::from(run.stdout.contains("upgraded test"));
                    current += usize::from(run.stdout.contains("current"));
                    in_progress += usize::from(run.code == 4);
                }
                Err((answer, started)) => {
                    assert_eq!(*answer, Answer::Ready, "{case}: a gate");
                    gate_children += started;
                }
            }
        }
        assert!(upgraded <= 1, "{case}: {upgraded} runs upgraded");
        by_runs += upgraded;
        let history = hosts[0].history();
        let applications = history
            .iter()
            .filter(|row| row["name"] == format!("r{round}"))
            .count();
        assert_eq!(applications, 1, "{case}: the step's history rows");
        assert!(
            history.iter().all(|row| row["success"] == true),
            "{case}: a run failed: {history:?}"
        );
        assert_eq!(
            hosts[0].query_i64("SELECT count(*) FROM rounds"),
            round as i64,
            "{case}: each step ran once"
        );
        for host in &hosts {
            assert!(!host.lock_path().exists(), "{case}: a lock file stayed");
            host.run(&["check"]).assert_code(0);
        }
        after_round(&hosts[0]);
        // Everyone again, all at once: current.
        std::thread::scope(|scope| {
            let handles: Vec<_> = hosts
                .iter()
                .flat_map(|host| [host, host])
                .map(|host| scope.spawn(move || host.run(&[global, &["run"]].concat())))
                .collect();
            for handle in handles {
                let run = handle.join().unwrap();
                run.assert_code(0).assert_stdout("current");
            }
        });
    }
    format!(
        "{rounds} rounds in {:.1} s (UPGRADER_RACE_SEED={seed}); of the runs, {by_runs} upgraded, \
         {current} found the database current, {in_progress} were told an upgrade was in \
         progress; the gates started {gate_children} upgrade processes",
        started.elapsed().as_secs_f64()
    )
}

/// A web gate of `host`, asked as requests would until it settles: ready, or halted; and
/// how many upgrade processes it started.
fn gate_until_settled(host: &TestProject, no_backup: bool) -> (Answer, u64) {
    let options = GateOptions {
        recheck_interval: Duration::from_millis(50),
        retry_after: Duration::from_millis(100),
        program: Some(crate::util::bin().into()),
        args: if no_backup {
            vec!["--no-backup".into()]
        } else {
            Vec::new()
        },
        verify_at_start: false,
    };
    let gate = Gate::new(host.path(), host.url.clone(), options);
    let started = std::time::Instant::now();
    loop {
        match gate.check() {
            Answer::Upgrading { .. } if started.elapsed() < Duration::from_secs(120) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            answer => return (answer, gate.upgrades_started()),
        }
    }
}

fn thirty_two_processes_upgrade_once_per_round(backend: Backend) {
    let summary = race(TestProject::on(backend, "1.0.0", ""), false, &|_| {});
    crate::util::report(&format!(
        "race: {} x 32 processes: {summary}",
        backend.name()
    ));
}

on_every_backend!(
    second_run_reports_upgrade_in_progress,
    many_simultaneous_runs_apply_each_step_once,
    killed_run_leaves_old_version_and_a_stale_lock,
    thirty_two_processes_upgrade_once_per_round,
);
