//! Several packages in one database: a core and its modules, each with its own VERSION,
//! upgrade.xml and recorded version, upgraded by one run under one lock.

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

/// The core: installs `core`, then steps that insert rows.
fn root_manifest(packages: &[&str], steps: &str) -> String {
    let packages: String = packages
        .iter()
        .map(|dir| format!("  <package dir=\"{dir}\"/>\n"))
        .collect();
    format!(
        "<upgrade project=\"test\" initial-version=\"1.0.0\">\n{packages}  <install><sql>CREATE TABLE core (id INTEGER PRIMARY KEY, note VARCHAR(40));</sql></install>\n{steps}</upgrade>\n"
    )
}

/// A module named `name` that installs table `table`.
fn module_manifest(name: &str, table: &str, steps: &str) -> String {
    format!(
        "<upgrade project=\"{name}\" initial-version=\"1.0.0\">\n  <install><sql>CREATE TABLE {table} (id INTEGER PRIMARY KEY, note VARCHAR(40));</sql></install>\n{steps}</upgrade>\n"
    )
}

fn step(name: &str, from: &str, to: &str, sql: &str, extra: &str) -> String {
    format!("  <step name=\"{name}\" from=\"{from}\" to=\"{to}\"{extra}><sql>{sql}</sql></step>\n")
}

/// A core with the modules blog and pay, all at 1.0.0 and installed.
fn installed_app(backend: Backend) -> TestProject {
    let project = TestProject::on(
        backend,
        "1.0.0",
        &root_manifest(&["modules/blog", "modules/pay"], ""),
    );
    project.write("modules/blog/VERSION", "1.0.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &module_manifest("blog", "posts", ""),
    );
    project.write("modules/pay/VERSION", "1.0.0\n");
    project.write(
        "modules/pay/upgrade.xml",
        &module_manifest("pay", "payments", ""),
    );
    project.run(&["run"]).assert_code(0);
    for name in ["test", "blog", "pay"] {
        assert_eq!(project.version_of(name).as_deref(), Some("1.0.0"), "{name}");
    }
    project
}

/// Version 1.1.0 of every project: each step adds a row; `pay_sql` is pay's step.
fn upgrade_all(project: &TestProject, pay_sql: &str) {
    project.write("VERSION", "1.1.0\n");
    project.write(
        "upgrade.xml",
        &root_manifest(
            &["modules/blog", "modules/pay"],
            &step(
                "core-rows",
                "1.0.0",
                "1.1.0",
                "INSERT INTO core (id, note) VALUES (1, 'core');",
                "",
            ),
        ),
    );
    project.write("modules/blog/VERSION", "1.1.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &module_manifest(
            "blog",
            "posts",
            &step(
                "blog-rows",
                "1.0.0",
                "1.1.0",
                "INSERT INTO posts (id, note) VALUES (1, 'blog');",
                "",
            ),
        ),
    );
    project.write("modules/pay/VERSION", "1.1.0\n");
    project.write(
        "modules/pay/upgrade.xml",
        &module_manifest(
            "pay",
            "payments",
            &step("pay-rows", "1.0.0", "1.1.0", pay_sql, ""),
        ),
    );
}

fn a_root_with_two_packages_upgrades_in_one_run(backend: Backend) {
    let project = installed_app(backend);
    assert_eq!(project.query_i64("SELECT count(*) FROM core"), 0);
    assert_eq!(project.query_i64("SELECT count(*) FROM posts"), 0);
    assert_eq!(project.query_i64("SELECT count(*) FROM payments"), 0);
    let status = project.run(&["status", "--json"]);
    status.assert_code(0);
    let json = status.json();
    assert_eq!(json["project"], "test");
    assert_eq!(json["state"], "current");
    let packages = json["packages"].as_array().expect("packages");
    assert_eq!(packages.len(), 2);
    assert_eq!(packages[0]["project"], "blog");
    assert_eq!(packages[1]["project"], "pay");
    assert_eq!(packages[1]["db_version"], "1.0.0");

    upgrade_all(
        &project,
        "INSERT INTO payments (id, note) VALUES (1, 'pay');",
    );
    // Every package's pending steps are reported, and check counts them all.
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["state"], "pending");
    assert_eq!(status["packages"][1]["state"], "pending");
    assert_eq!(status["packages"][1]["pending"][0]["name"], "pay-rows");
    project.run(&["check"]).assert_code(3);
    let plan = project.run(&["plan", "--json"]);
    plan.assert_code(0);
    let order: Vec<String> = plan.json()["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            format!(
                "{}:{}",
                item["project"].as_str().unwrap(),
                item["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(order, ["test:core-rows", "blog:blog-rows", "pay:pay-rows"]);

    let run = project.run(&["run", "--json"]);
    run.assert_code(0);
    let outcome = run.json();
    assert_eq!(outcome["result"], "upgraded");
    assert_eq!(outcome["packages"][0]["result"], "upgraded");
    for (name, table) in [("test", "core"), ("blog", "posts"), ("pay", "payments")] {
        assert_eq!(project.version_of(name).as_deref(), Some("1.1.0"), "{name}");
        assert_eq!(
            project.query_i64(&format!("SELECT count(*) FROM {table}")),
            1
        );
    }
    // Each project keeps its own history rows.
    let history = project.history();
    let steps: Vec<String> = history
        .iter()
        .filter(|row| row["kind"] == "step")
        .map(|row| {
            format!(
                "{}:{}",
                row["project"].as_str().unwrap(),
                row["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(steps, ["test:core-rows", "blog:blog-rows", "pay:pay-rows"]);
    project.run(&["check"]).assert_code(0);
    assert!(!project.lock_path().exists());
}

fn a_failing_step_in_the_last_package_rolls_back_all_three(backend: Backend) {
    let project = installed_app(backend);
    upgrade_all(&project, "INSERT INTO no_such_table (id) VALUES (1);");
    let before = project.app_snapshot();
    let run = project.run(&["run"]);
    run.assert_code(1)
        .assert_stderr("pay-rows")
        .assert_stderr("the whole run was rolled back");
    assert_eq!(project.app_snapshot(), before);
    for name in ["test", "blog", "pay"] {
        assert_eq!(project.version_of(name).as_deref(), Some("1.0.0"), "{name}");
    }
    assert_eq!(project.query_i64("SELECT count(*) FROM core"), 0);
    assert_eq!(project.query_i64("SELECT count(*) FROM posts"), 0);
    // The lock stays failed, naming the step; the failure row is pay's.
    assert_eq!(project.lock_json().unwrap()["state"], "failed");
    assert_eq!(project.lock_json().unwrap()["step"], "pay-rows");
    let failed: Vec<serde_json::Value> = project
        .history()
        .into_iter()
        .filter(|row| row["success"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["project"], "pay");
    assert_eq!(failed[0]["from_version"], "1.0.0");
    project.run(&["check"]).assert_code(4);
}

fn per_step_keeps_the_earlier_packages_steps(backend: Backend) {
    let project = installed_app(backend);
    upgrade_all(&project, "INSERT INTO no_such_table (id) VALUES (1);");
    project
        .run(&["run", "--transaction", "per-step"])
        .assert_code(1)
        .assert_stderr("steps before it stay committed");
    // What stayed is said as data too.
    project.run(&["unlock"]).assert_code(0);
    project.sql("UPDATE upgrader_version SET version = '1.0.0' WHERE project <> 'upgrader'");
    project.sql("DELETE FROM core");
    project.sql("DELETE FROM posts");
    let failed = project.run(&["--json", "run", "--transaction", "per-step"]);
    failed.assert_code(1);
    let body = failed.json();
    assert_eq!(body["step"], "pay-rows");
    assert_eq!(body["project"], "pay");
    let committed: Vec<String> = body["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["project"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(committed, ["test:core-rows", "blog:blog-rows"]);
    assert_eq!(project.version_of("test").as_deref(), Some("1.1.0"));
    assert_eq!(project.version_of("blog").as_deref(), Some("1.1.0"));
    assert_eq!(project.version_of("pay").as_deref(), Some("1.0.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM core"), 1);
    assert_eq!(project.query_i64("SELECT count(*) FROM posts"), 1);
    assert_eq!(project.query_i64("SELECT count(*) FROM payments"), 0);
    // Fixed and unlocked, the run goes on from where it stopped.
    project.write(
        "modules/pay/upgrade.xml",
        &module_manifest(
            "pay",
            "payments",
            &step(
                "pay-rows",
                "1.0.0",
                "1.1.0",
                "INSERT INTO payments (id, note) VALUES (1, 'pay');",
                "",
            ),
        ),
    );
    project.run(&["unlock"]).assert_code(0);
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.version_of("pay").as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM core"), 1);
    assert_eq!(project.query_i64("SELECT count(*) FROM payments"), 1);
}

fn a_module_added_later_installs_while_the_core_is_current(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &root_manifest(&[], ""));
    project.run(&["run"]).assert_code(0);
    project.sql("INSERT INTO core (id, note) VALUES (7, 'kept')");
    // The blog module arrives with the next deploy; the core's version does not move.
    project.write("upgrade.xml", &root_manifest(&["modules/blog"], ""));
    project.write("modules/blog/VERSION", "1.2.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &module_manifest(
            "blog",
            "posts",
            &step(
                "never-runs",
                "1.0.0",
                "1.2.0",
                "INSERT INTO posts (id, note) VALUES (1, 'step');",
                "",
            ),
        ),
    );
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["state"], "current");
    assert_eq!(status["packages"][0]["state"], "uninitialized");
    assert_eq!(status["packages"][0]["pending"][0]["kind"], "install");
    project.run(&["check"]).assert_code(3);
    let outcome = project.run(&["run", "--json"]);
    outcome.assert_code(0);
    let outcome = outcome.json();
    assert_eq!(outcome["result"], "current");
    assert_eq!(outcome["packages"][0]["result"], "installed");
    assert_eq!(project.version_of("blog").as_deref(), Some("1.2.0"));
    assert_eq!(project.version_of("test").as_deref(), Some("1.0.0"));
    // Installed, not stepped: the step's row is not there; the core's data is.
    assert_eq!(project.query_i64("SELECT count(*) FROM posts"), 0);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM core WHERE id = 7"),
        1
    );
    project.run(&["check"]).assert_code(0);
}

fn an_adopted_module_starts_at_its_initial_version(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &root_manifest(&[], ""));
    project.run(&["run"]).assert_code(0);
    // The module's table exists already (made by hand before upgrader knew the module).
    project.sql("CREATE TABLE posts (id INTEGER PRIMARY KEY, note VARCHAR(40))");
    project.write("upgrade.xml", &root_manifest(&["modules/blog"], ""));
    project.write("modules/blog/VERSION", "1.1.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &module_manifest(
            "blog",
            "posts",
            &step(
                "blog-rows",
                "1.0.0",
                "1.1.0",
                "INSERT INTO posts (id, note) VALUES (1, 'step');",
                "",
            ),
        ),
    );
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.version_of("blog").as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM posts"), 1);
}

fn after_interleaves_the_steps(backend: Backend) {
    let project = installed_app(backend);
    // The core's 1.2 needs the blog's 1.1; the blog's 1.1 needs the core's 1.1.
    project.write("VERSION", "1.2.0\n");
    project.write(
        "upgrade.xml",
        &root_manifest(
            &["modules/blog"],
            &(step(
                "r1",
                "1.0.0",
                "1.1.0",
                "INSERT INTO core (id, note) VALUES (1, 'r1');",
                "",
            ) + &step(
                "r2",
                "1.1.0",
                "1.2.0",
                "INSERT INTO core (id, note) SELECT 2, note FROM posts WHERE id = 1;",
                " after=\"blog 1.1.0\"",
            )),
        ),
    );
    project.write("modules/blog/VERSION", "1.2.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &module_manifest(
            "blog",
            "posts",
            &(step(
                "b1",
                "1.0.0",
                "1.1.0",
                "INSERT INTO posts (id, note) SELECT 1, note FROM core WHERE id = 1;",
                " after=\"test 1.1\"",
            ) + &step(
                "b2",
                "1.1.0",
                "1.2.0",
                "INSERT INTO posts (id, note) VALUES (2, 'b2');",
                "",
            )),
        ),
    );
    let plan = project.run(&["plan", "--json"]);
    plan.assert_code(0);
    let order: Vec<String> = plan.json()["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["r1", "b1", "r2", "b2"]);
    project.run(&["run"]).assert_code(0);
    // Each step saw what the one it waited for wrote.
    assert_eq!(
        project.query_i64("SELECT count(*) FROM core WHERE id = 2 AND note = 'r1'"),
        1
    );
    assert_eq!(
        project.query_i64("SELECT count(*) FROM posts WHERE id = 1 AND note = 'r1'"),
        1
    );
    let steps: Vec<String> = project
        .history()
        .iter()
        .filter(|row| row["kind"] == "step")
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps, ["r1", "b1", "r2", "b2"]);
    assert_eq!(project.version_of("test").as_deref(), Some("1.2.0"));
    assert_eq!(project.version_of("blog").as_deref(), Some("1.2.0"));
}

/// What a case does to a good application to break it.
type Breaks = Box<dyn Fn(&TestProject)>;

/// Each bad application is refused before anything is touched: exit 1, a message naming
/// the manifest line, no lock file, the database as it was.
fn bad_packages_are_refused_with_nothing_changed(backend: Backend) {
    let project = installed_app(backend);
    let good_root = std::fs::read_to_string(project.path().join("upgrade.xml")).unwrap();
    let blog = module_manifest("blog", "posts", "");
    let before = project.snapshot();
    let mut cases: Vec<(&str, Breaks, &str)> = vec![
        (
            "no VERSION",
            Box::new(|p: &TestProject| {
                std::fs::remove_file(p.path().join("modules/pay/VERSION")).unwrap()
            }),
            "upgrade.xml:3:3: package modules/pay has no VERSION",
        ),
        (
            "no upgrade.xml",
            Box::new(|p: &TestProject| {
                std::fs::remove_file(p.path().join("modules/pay/upgrade.xml")).unwrap()
            }),
            "upgrade.xml:3:3: package modules/pay has no upgrade.xml",
        ),
        (
            "same project name",
            Box::new(|p: &TestProject| {
                p.write(
                    "modules/pay/upgrade.xml",
                    &module_manifest("blog", "payments", ""),
                )
            }),
            "upgrade.xml:3:3: package modules/pay is project \"blog\", like the package at line 2",
        ),
        (
            "the root's name",
            Box::new(|p: &TestProject| {
                p.write(
                    "modules/pay/upgrade.xml",
                    &module_manifest("test", "payments", ""),
                )
            }),
            "like the root project",
        ),
        (
            "nested in itself",
            Box::new(|p: &TestProject| {
                p.write(
                    "modules/pay/upgrade.xml",
                    "<upgrade project=\"pay\" initial-version=\"1.0.0\">\n  <package dir=\".\"/>\n</upgrade>\n",
                )
            }),
            "modules/pay/upgrade.xml:2:",
        ),
        (
            "the project itself",
            Box::new(|p: &TestProject| {
                p.write("upgrade.xml", &root_manifest(&["modules/blog", "./"], ""))
            }),
            "upgrade.xml:3:",
        ),
        (
            "a package listing packages",
            Box::new(|p: &TestProject| {
                p.write(
                    "modules/pay/upgrade.xml",
                    "<upgrade project=\"pay\" initial-version=\"1.0.0\">\n  <package dir=\"sub\"/>\n</upgrade>\n",
                );
                p.write("modules/pay/sub/VERSION", "1.0.0\n");
                p.write(
                    "modules/pay/sub/upgrade.xml",
                    &module_manifest("sub", "subs", ""),
                );
            }),
            "modules/pay/upgrade.xml:2:3: package modules/pay lists a package of its own",
        ),
        (
            "outside by ..",
            Box::new(|p: &TestProject| {
                p.write(
                    "upgrade.xml",
                    &root_manifest(&["modules/blog", "../elsewhere"], ""),
                )
            }),
            "upgrade.xml:3:12: package dir \"../elsewhere\" must be a directory inside the project",
        ),
        (
            "outside by a link",
            Box::new(|p: &TestProject| {
                let outside = tempfile::tempdir().unwrap().keep();
                std::fs::write(outside.join("VERSION"), "1.0.0\n").unwrap();
                std::fs::write(
                    outside.join("upgrade.xml"),
                    module_manifest("far", "far", ""),
                )
                .unwrap();
                std::os::unix::fs::symlink(&outside, p.path().join("modules/far")).unwrap();
                p.write(
                    "upgrade.xml",
                    &root_manifest(&["modules/blog", "modules/far"], ""),
                );
            }),
            "upgrade.xml:3:3: package dir modules/far leads outside the project directory",
        ),
        (
            "missing dir",
            Box::new(|p: &TestProject| {
                p.write(
                    "upgrade.xml",
                    &root_manifest(&["modules/blog", "modules/gone"], ""),
                )
            }),
            "upgrade.xml:3:3: package dir modules/gone does not exist",
        ),
        (
            "after an unknown package",
            Box::new(|p: &TestProject| {
                p.write("VERSION", "1.1.0\n");
                p.write(
                    "upgrade.xml",
                    &root_manifest(
                        &["modules/blog", "modules/pay"],
                        &step("r1", "1.0.0", "1.1.0", "SELECT 1;", " after=\"shop 1.0\""),
                    ),
                );
            }),
            "step 'r1': after names project \"shop\", which is not part of this application",
        ),
        (
            "after beyond the code",
            Box::new(|p: &TestProject| {
                p.write("VERSION", "1.1.0\n");
                p.write(
                    "upgrade.xml",
                    &root_manifest(
                        &["modules/blog", "modules/pay"],
                        &step("r1", "1.0.0", "1.1.0", "SELECT 1;", " after=\"blog 3.0\""),
                    ),
                );
            }),
            "after waits for blog 3.0.0, beyond its code version 1.0.0",
        ),
        (
            "a circle",
            Box::new(|p: &TestProject| {
                p.write("VERSION", "1.1.0\n");
                p.write(
                    "upgrade.xml",
                    &root_manifest(
                        &["modules/blog", "modules/pay"],
                        &step("r1", "1.0.0", "1.1.0", "SELECT 1;", " after=\"blog 1.1\""),
                    ),
                );
                p.write("modules/blog/VERSION", "1.1.0\n");
                p.write(
                    "modules/blog/upgrade.xml",
                    &module_manifest(
                        "blog",
                        "posts",
                        &step("b1", "1.0.0", "1.1.0", "SELECT 1;", " after=\"test 1.1\""),
                    ),
                );
            }),
            "steps wait for each other in a circle",
        ),
    ];
    for (what, break_it, expected) in cases.drain(..) {
        break_it(&project);
        for command in [&["run"][..], &["status"], &["check"], &["plan"]] {
            project.run(command).assert_code(1).assert_stderr(expected);
        }
        assert!(!project.lock_path().exists(), "{what}: no lock file");
        assert_eq!(project.snapshot(), before, "{what}: database unchanged");
        // Mend it for the next case.
        let _ = std::fs::remove_file(project.path().join("modules/far"));
        let _ = std::fs::remove_dir_all(project.path().join("modules/pay/sub"));
        project.write("VERSION", "1.0.0\n");
        project.write("upgrade.xml", &good_root);
        project.write("modules/blog/VERSION", "1.0.0\n");
        project.write("modules/blog/upgrade.xml", &blog);
        project.write("modules/pay/VERSION", "1.0.0\n");
        project.write(
            "modules/pay/upgrade.xml",
            &module_manifest("pay", "payments", ""),
        );
        project.run(&["check"]).assert_code(0);
    }
}

on_every_backend!(
    a_root_with_two_packages_upgrades_in_one_run,
    a_failing_step_in_the_last_package_rolls_back_all_three,
    per_step_keeps_the_earlier_packages_steps,
    a_module_added_later_installs_while_the_core_is_current,
    an_adopted_module_starts_at_its_initial_version,
    after_interleaves_the_steps,
    bad_packages_are_refused_with_nothing_changed,
);

/// The web gate watches every package's VERSION: deploying a new version of a module
/// alone triggers the upgrade.
#[test]
fn the_gate_upgrades_when_only_a_package_changes() {
    use std::time::Duration;
    use upgrader::gate::{Answer, Gate, GateOptions};
    let project = installed_app(Backend::Sqlite);
    let options = GateOptions {
        recheck_interval: Duration::from_millis(50),
        program: Some(crate::util::bin().into()),
        ..GateOptions::default()
    };
    let gate = Gate::new(project.path(), None, options);
    crate::util::wait_for(Duration::from_secs(10), "the gate to be ready", || {
        gate.check() == Answer::Ready
    });
    project.write(
        "modules/pay/upgrade.xml",
        &module_manifest(
            "pay",
            "payments",
            &step(
                "pay-rows",
                "1.0.0",
                "1.1.0",
                "INSERT INTO payments (id, note) VALUES (1, 'pay');",
                "",
            ),
        ),
    );
    project.write("modules/pay/VERSION", "1.1.0\n");
    crate::util::wait_for(Duration::from_secs(20), "the package's upgrade", || {
        gate.check() == Answer::Ready && project.version_of("pay").as_deref() == Some("1.1.0")
    });
    assert_eq!(project.query_i64("SELECT count(*) FROM payments"), 1);
    assert_eq!(project.version_of("test").as_deref(), Some("1.0.0"));
}

/// A step may wait for a package that has only an install (no steps, no initial version):
/// such a package is at its code version once installed, so there is no circle.
#[test]
fn after_a_package_with_only_an_install() {
    let project = TestProject::new(
        "1.1.0",
        &root_manifest(
            &["modules/blog"],
            &step(
                "r1",
                "1.0.0",
                "1.1.0",
                "INSERT INTO core (id, note) SELECT 1, note FROM posts;",
                " after=\"blog 2.0\"",
            ),
        ),
    );
    project.write("modules/blog/VERSION", "2.0.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        "<upgrade project=\"blog\">\n  <install><sql>CREATE TABLE posts (id INTEGER PRIMARY KEY, note VARCHAR(40)); INSERT INTO posts VALUES (1, 'p');</sql></install>\n</upgrade>\n",
    );
    // A fresh database: the core installs at 1.1.0, then the blog; nothing waits.
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.version_of("blog").as_deref(), Some("2.0.0"));
    project.run(&["check"]).assert_code(0);
}

/// A package whose install's tables cannot be known (no CREATE TABLE in it) is adopted at
/// its initial version on a database that has tables, never installed over them.
#[test]
fn an_install_without_known_tables_is_not_run_on_a_database_with_tables() {
    let project = TestProject::new("1.0.0", &root_manifest(&[], ""));
    project.run(&["run"]).assert_code(0);
    project.write("upgrade.xml", &root_manifest(&["modules/blog"], ""));
    project.write("modules/blog/VERSION", "1.1.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &format!(
            "<upgrade project=\"blog\" initial-version=\"1.0.0\">\n  <install><sql>INSERT INTO core (id, note) VALUES (9, 'install');</sql></install>\n{}</upgrade>\n",
            step(
                "b1",
                "1.0.0",
                "1.1.0",
                "INSERT INTO core (id, note) VALUES (2, 'step');",
                ""
            )
        ),
    );
    project.run(&["run"]).assert_code(0);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM core WHERE id = 9"),
        0
    );
    assert_eq!(
        project.query_i64("SELECT count(*) FROM core WHERE id = 2"),
        1
    );
    assert_eq!(project.version_of("blog").as_deref(), Some("1.1.0"));
}

/// The gate notices a package added to the root manifest without a new root version.
#[test]
fn the_gate_installs_a_package_added_without_a_new_root_version() {
    use std::time::Duration;
    use upgrader::gate::{Answer, Gate, GateOptions};
    let project = TestProject::new("1.0.0", &root_manifest(&[], ""));
    project.run(&["run"]).assert_code(0);
    let options = GateOptions {
        recheck_interval: Duration::from_millis(50),
        program: Some(crate::util::bin().into()),
        ..GateOptions::default()
    };
    let gate = Gate::new(project.path(), None, options);
    crate::util::wait_for(Duration::from_secs(10), "the gate to be ready", || {
        gate.check() == Answer::Ready
    });
    project.write("modules/blog/VERSION", "1.0.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &module_manifest("blog", "posts", ""),
    );
    // A different length, so that the change shows even within the clock's resolution.
    project.write("upgrade.xml", &root_manifest(&["modules/blog"], ""));
    crate::util::wait_for(Duration::from_secs(20), "the package's install", || {
        gate.check() == Answer::Ready && project.version_of("blog").as_deref() == Some("1.0.0")
    });
    assert_eq!(project.query_i64("SELECT count(*) FROM posts"), 0);
}

/// `lint --for mysql --fix` marks a package's steps in the package's own manifest, and
/// a step of the same name in another package is judged on its own.
#[test]
fn lint_fix_marks_each_packages_own_manifest() {
    let ddl = "ALTER TABLE core ADD COLUMN extra INT;";
    let dml =
        "UPDATE core SET note = 'x'; ALTER TABLE core ADD COLUMN more INT; START TRANSACTION;";
    let project = TestProject::new(
        "1.1.0",
        &root_manifest(&["modules/blog"], &step("same", "1.0.0", "1.1.0", ddl, "")),
    );
    project.write("modules/blog/VERSION", "1.1.0\n");
    let blog = module_manifest("blog", "posts", &step("same", "1.0.0", "1.1.0", dml, ""));
    project.write("modules/blog/upgrade.xml", &blog);
    let lint = project.run(&["lint", "--for", "mysql", "--json"]);
    lint.assert_code(1);
    let body = lint.json();
    assert_eq!(body["needs_transaction_none"], serde_json::json!(["same"]));
    assert_eq!(body["not_fixable"][0]["project"], "blog");
    project
        .run(&["lint", "--for", "mysql", "--fix"])
        .assert_code(1)
        .assert_stdout("step 'same': marked transaction=\"none\"");
    let root = std::fs::read_to_string(project.path().join("upgrade.xml")).unwrap();
    assert!(
        root.contains("<step name=\"same\" from=\"1.0.0\" to=\"1.1.0\" transaction=\"none\">"),
        "{root}"
    );
    // The blog's step also commits implicitly but has a statement no marking cures
    // (START TRANSACTION): its manifest is left byte for byte.
    assert_eq!(
        std::fs::read_to_string(project.path().join("modules/blog/upgrade.xml")).unwrap(),
        blog
    );
}

/// A module adopted on a database where its table was made by hand with a name in mixed
/// case: the install's `CREATE TABLE Posts` names that table on every backend (PostgreSQL
/// folds it to `posts`), so the install does not run again.
fn an_adopted_module_is_found_whatever_the_case_of_its_table(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", &root_manifest(&[], ""));
    project.run(&["run"]).assert_code(0);
    project.sql("CREATE TABLE Posts (id INTEGER PRIMARY KEY, note VARCHAR(40))");
    project.write("upgrade.xml", &root_manifest(&["modules/blog"], ""));
    project.write("modules/blog/VERSION", "1.1.0\n");
    project.write(
        "modules/blog/upgrade.xml",
        &format!(
            "<upgrade project=\"blog\" initial-version=\"1.0.0\">\n  <install><sql>CREATE TABLE Posts (id INTEGER PRIMARY KEY, note VARCHAR(40));</sql></install>\n{}</upgrade>\n",
            step("b1", "1.0.0", "1.1.0", "INSERT INTO Posts (id, note) VALUES (1, 'step');", "")
        ),
    );
    let status = project.run(&["status", "--json"]).json();
    assert_eq!(status["packages"][0]["pending"][0]["name"], "b1");
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.query_i64("SELECT count(*) FROM Posts"), 1);
    assert_eq!(project.version_of("blog").as_deref(), Some("1.1.0"));
}

mod case_of_tables {
    use super::*;
    on_every_backend!(an_adopted_module_is_found_whatever_the_case_of_its_table);
}
