//! Project files that are not what they seem (issue 9, points 1-4): FIFOs, devices,
//! directories, huge files, symbolic links leading out of the project, and absurdly
//! nested manifests. Every command refuses them quickly with exit 1, never reads what a
//! link leading out names, and leaves no lock file and the database untouched.

use std::os::unix::fs::symlink;
use std::path::Path;

use std::time::Duration;

use crate::on_every_backend;
use crate::util::{Backend, Run, TestProject};

const MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="a" from="1.0.0" to="1.1.0">
    <sql file="scripts/a.sql"/>
  </step>
</upgrade>
"#;

/// What a link leading out of the project must never reveal.
const MARKER: &str = "HOSTILE-MARKER-5f1d3c";

const COMMANDS: [&[&str]; 5] = [&["run"], &["plan"], &["status"], &["check"], &["lint"]];

/// Runs a command with a deadline, so that a command hanging on a FIFO fails the test
/// instead of hanging it.
fn run_quickly(project: &TestProject, args: &[&str]) -> Run {
    let mut command = project.command(args);
    command.env("HOSTILE_MARKER", MARKER);
    crate::util::run_within(command, Duration::from_secs(30))
}

/// Every command exits 1 quickly with `expected` in its error, prints nothing of the
/// marker, writes no lock file and changes no database.
fn refused_everywhere(project: &TestProject, expected: &str) {
    let before = project.snapshot();
    for command in COMMANDS {
        let run = run_quickly(project, command);
        assert_eq!(run.code, 1, "{command:?}: {run:?}");
        assert!(
            run.stderr.contains(expected),
            "{command:?}: wanted {expected:?} in {:?}",
            run.stderr
        );
        assert!(
            !run.stdout.contains(MARKER) && !run.stderr.contains(MARKER),
            "{command:?} printed what a link leading out names: {run:?}"
        );
        assert!(
            !project.lock_path().exists(),
            "{command:?} left a lock file"
        );
    }
    assert_eq!(project.snapshot(), before, "the database changed");
    if project.backend == Backend::Sqlite {
        assert!(!project.db_path().exists(), "a database file was created");
    }
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn replace_with_link(project: &TestProject, name: &str, target: &Path) {
    let path = project.path().join(name);
    let _ = std::fs::remove_file(&path);
    symlink(target, path).unwrap();
}

fn project() -> TestProject {
    let project = TestProject::new("1.1.0", MANIFEST);
    project.write("scripts/a.sql", "CREATE TABLE a (x INTEGER);\n");
    project
}

#[test]
fn version_or_manifest_as_a_fifo_is_refused_without_hanging() {
    for name in ["VERSION", "upgrade.xml"] {
        let project = project();
        mkfifo(&project.path().join(name));
        refused_everywhere(&project, &format!("{name}: is a FIFO, not a regular file"));
    }
}

#[test]
fn version_or_manifest_linked_to_dev_zero_is_refused_unread() {
    for name in ["VERSION", "upgrade.xml"] {
        let project = project();
        replace_with_link(&project, name, Path::new("/dev/zero"));
        refused_everywhere(&project, &format!("{name}: resolves outside the project"));
    }
}

#[test]
fn version_or_manifest_as_a_directory_is_refused() {
    for name in ["VERSION", "upgrade.xml"] {
        let project = project();
        let path = project.path().join(name);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        refused_everywhere(
            &project,
            &format!("{name}: is a directory, not a regular file"),
        );
    }
}

#[test]
fn version_or_manifest_linked_outside_is_refused_unread() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, format!("{MARKER}\n")).unwrap();
    for name in ["VERSION", "upgrade.xml"] {
        let project = project();
        replace_with_link(&project, name, &secret);
        refused_everywhere(&project, &format!("{name}: resolves outside the project"));
    }
}

#[test]
fn oversized_version_or_manifest_is_refused_with_the_limit() {
    let project = project();
    // Sparse: the length alone must refuse it, nothing is read.
    let file = std::fs::File::create(project.path().join("upgrade.xml")).unwrap();
    file.set_len(64 * 1024 * 1024 + 1).unwrap();
    refused_everywhere(&project, "upgrade.xml: is larger than the limit of 64 MiB");
    let project = project_with_version(&format!("{}1.1.0\n", " ".repeat(70 * 1024)));
    refused_everywhere(&project, "VERSION: is larger than the limit of 64 KiB");
}

fn project_with_version(version: &str) -> TestProject {
    let project = project();
    std::fs::write(project.path().join("VERSION"), version).unwrap();
    project
}

/// A project whose step script is whatever `make` puts at `scripts/evil.sql`.
fn evil_script_project(backend: Backend) -> TestProject {
    // MariaDB commits DDL implicitly: the step must say so to pass the guard.
    let transaction = match backend {
        Backend::MariaDb => r#" transaction="none""#,
        _ => "",
    };
    let project = TestProject::on(
        backend,
        "1.1.0",
        &format!(
            r#"<upgrade project="test" initial-version="1.0.0">
  <step name="a" from="1.0.0" to="1.1.0"{transaction}>
    <sql file="scripts/evil.sql"/>
  </step>
</upgrade>
"#
        ),
    );
    project.write("scripts/keep.sql", "CREATE TABLE kept (x INTEGER);\n");
    project
}

fn hostile_scripts_are_manifest_errors_never_read(backend: Backend) {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.sql");
    std::fs::write(
        &secret,
        format!("CREATE TABLE stolen (x INTEGER); -- {MARKER}\n"),
    )
    .unwrap();
    let position = "upgrade.xml:3:10: script file";
    // The environment holds the marker (run_quickly sets it).
    let project = evil_script_project(backend);
    replace_with_link(
        &project,
        "scripts/evil.sql",
        Path::new("/proc/self/environ"),
    );
    refused_everywhere(&project, position);
    refused_everywhere(&project, "resolves outside the project directory");

    let project = evil_script_project(backend);
    replace_with_link(&project, "scripts/evil.sql", &secret);
    refused_everywhere(&project, position);
    refused_everywhere(&project, "resolves outside the project directory");

    // A directory of scripts that is itself a link leading out.
    let project = evil_script_project(backend);
    std::fs::remove_dir_all(project.path().join("scripts")).unwrap();
    std::fs::rename(&secret, outside.path().join("evil.sql")).unwrap();
    symlink(outside.path(), project.path().join("scripts")).unwrap();
    refused_everywhere(&project, "resolves outside the project directory");

    let project = evil_script_project(backend);
    mkfifo(&project.path().join("scripts/evil.sql"));
    refused_everywhere(&project, "is a FIFO, not a regular file");

    let project = evil_script_project(backend);
    std::fs::create_dir(project.path().join("scripts/evil.sql")).unwrap();
    refused_everywhere(&project, "is a directory, not a regular file");

    let project = evil_script_project(backend);
    replace_with_link(&project, "scripts/evil.sql", Path::new("/dev/null"));
    refused_everywhere(&project, "resolves outside the project directory");
}

fn script_linked_inside_the_project_runs(backend: Backend) {
    let project = evil_script_project(backend);
    replace_with_link(&project, "scripts/evil.sql", Path::new("keep.sql"));
    for command in [&["check"][..], &["lint"], &["plan"]] {
        let run = run_quickly(&project, command);
        assert_ne!(run.code, 1, "{command:?}: {run:?}");
    }
    run_quickly(&project, &["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT COUNT(*) FROM kept"), 0);
}

on_every_backend!(
    hostile_scripts_are_manifest_errors_never_read,
    script_linked_inside_the_project_runs
);

#[test]
fn deeply_nested_manifest_is_refused_without_overflowing() {
    let depth = 150_000;
    let mut text = String::from("<upgrade project=\"test\" initial-version=\"1.0.0\">\n");
    text.push_str(&"<a>".repeat(depth));
    text.push_str(&"</a>".repeat(depth));
    text.push_str("\n</upgrade>\n");
    let project = TestProject::new("1.1.0", &text);
    refused_everywhere(
        &project,
        "upgrade.xml:2:94: <a> is nested more than 32 elements deep",
    );
    // Unclosed as well: the error comes before the end is looked for.
    let project = TestProject::new("1.1.0", &text[..text.len() / 2]);
    refused_everywhere(&project, "is nested more than 32 elements deep");
}

/// A script that is not UTF-8 text (a Latin-1 file, say) is refused before anything
/// runs, naming the file and what is wrong, with no lock left and nothing applied.
#[test]
fn a_script_that_is_not_utf8_is_refused_before_anything_runs() {
    let project = evil_script_project(Backend::Sqlite);
    std::fs::write(
        project.path().join("scripts/evil.sql"),
        b"INSERT INTO kept VALUES (1); -- caf\xe9\n",
    )
    .unwrap();
    let before = project.snapshot();
    let run = run_quickly(&project, &["run"]);
    run.assert_code(1)
        .assert_stderr("scripts/evil.sql")
        .assert_stderr("not UTF-8");
    assert!(!project.lock_path().exists(), "a lock file was left");
    assert_eq!(project.snapshot(), before, "the database changed");
}
