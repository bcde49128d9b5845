//! `upgrader launch`: the start-up policy (update packages, then the database), then
//! `exec` of the application in the same process.

use std::process::Stdio;

use crate::update_packages::{pending, write_zip, Entry, MANIFEST, MANIFEST_1_1, UPDATE_1_1};
use crate::util::TestProject;

/// A package that takes the project to 1.1.0 (one more database step).
fn pending_package(project: &TestProject) {
    write_zip(
        &pending(project, "shop-1.1.0.zip"),
        &[
            Entry::File("update.xml", UPDATE_1_1),
            Entry::File("files/upgrade.xml", MANIFEST_1_1),
        ],
    );
}

/// `launch [policy…] -- sh -c 'echo $$ > started; exit 7'`: the exit code, and the PID
/// the application saw (None: it did not start) against the launched process's.
fn launch(project: &TestProject, policy: &[&str]) -> (i32, Option<u32>, u32, String) {
    let marker = project.path().join("started");
    let _ = std::fs::remove_file(&marker);
    let mut args = vec!["launch"];
    args.extend_from_slice(policy);
    let script = format!("echo $$ > '{}'; exit 7", marker.display());
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    let child = project
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let started = std::fs::read_to_string(&marker)
        .ok()
        .map(|text| text.trim().parse().unwrap());
    (
        output.status.code().unwrap_or(-1),
        started,
        pid,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn launch_applies_the_policy_then_becomes_the_application() {
    let project = TestProject::new("1.0.0", MANIFEST);
    // A new database: its install is pending.
    let (code, started, _, stderr) = launch(&project, &[]);
    assert_eq!((code, started), (3, None), "{stderr}");
    assert!(stderr.contains("--upgrade-database"), "{stderr}");
    let (code, started, pid, stderr) = launch(&project, &["--upgrade-database"]);
    assert_eq!(code, 7, "the application's exit status: {stderr}");
    assert_eq!(started, Some(pid), "exec: the same process");
    assert_eq!(project.version_of("shop").as_deref(), Some("1.0.0"));
    // Current: straight to the application (--no-verify accepted: no drift check yet).
    let (code, started, pid, _) = launch(&project, &[]);
    assert_eq!((code, started), (7, Some(pid)));
    let (code, started, pid, _) = launch(&project, &["--no-verify"]);
    assert_eq!((code, started), (7, Some(pid)));

    // A package pending: 6 by default, nothing changed.
    pending_package(&project);
    let (code, started, _, stderr) = launch(&project, &["--upgrade-database"]);
    assert_eq!((code, started), (6, None), "{stderr}");
    assert!(
        stderr.contains("shop-1.1.0.zip") && stderr.contains("--install-updates"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(project.path().join("VERSION")).unwrap(),
        "1.0.0\n"
    );
    // Ignored: the application starts on the old code.
    let (code, started, pid, stderr) = launch(&project, &["--ignore-updates"]);
    assert_eq!((code, started), (7, Some(pid)), "{stderr}");
    // Installed, then the database upgrade it brings is pending: 3.
    let (code, started, _, stderr) = launch(&project, &["--install-updates"]);
    assert_eq!((code, started), (3, None), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(project.path().join("VERSION")).unwrap(),
        "1.1.0\n"
    );
    assert_eq!(project.version_of("shop").as_deref(), Some("1.0.0"));
    // And with the database upgrade: the application starts on both.
    let (code, started, pid, stderr) = launch(&project, &["--upgrade-database"]);
    assert_eq!((code, started), (7, Some(pid)), "{stderr}");
    assert_eq!(project.version_of("shop").as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM orders"), 0);
}

#[test]
fn launch_halts_on_a_failed_lock_and_refuses_conflicting_flags() {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.run(&["--no-backup", "run"]).assert_code(0);
    std::fs::write(
        project.lock_path(),
        r#"{"pid":1,"host":"h","started_at":"2026-01-01T00:00:00Z","from":"1.0.0","to":"1.1.0","state":"failed","step":"s0","error":"boom"}"#,
    )
    .unwrap();
    let (code, started, _, stderr) = launch(&project, &["--upgrade-database"]);
    assert_eq!((code, started), (4, None), "{stderr}");
    assert!(stderr.contains("boom"), "{stderr}");
    std::fs::remove_file(project.lock_path()).unwrap();
    // Both update policies at once, or no command: usage errors.
    project
        .run(&[
            "launch",
            "--install-updates",
            "--ignore-updates",
            "--",
            "true",
        ])
        .assert_code(2);
    project.run(&["launch"]).assert_code(2);
    // A command that cannot start: an error, exit 1.
    project
        .run(&["launch", "--", "/nonexistent/app"])
        .assert_code(1)
        .assert_stderr("cannot start /nonexistent/app");
}
