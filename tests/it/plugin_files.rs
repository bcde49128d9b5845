//! Files named like plugin libraries that are not libraries: a huge one is refused without
//! being read whole, a FIFO without hanging.

use std::time::Duration;

use crate::util::TestProject;

const MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (x INTEGER);</sql></install>
  <step name="plugged" from="1.0.0" to="1.1.0">
    <plugin library="huge" method="step"/>
  </step>
</upgrade>
"#;

/// `upgrader run` on `project`, under an address-space cap of `cap_mib` (`ulimit -v`),
/// failing the test if it takes longer than `limit`.
fn run_capped(project: &TestProject, cap_mib: u64, limit: Duration) -> (i32, String) {
    let mut command = project.capped_command(cap_mib, &["run"]);
    command.env_remove("UPGRADER_PLUGIN_PATH");
    let run = crate::util::run_within(command, limit);
    (run.code, run.stderr)
}

/// A project installed at 1.0.0 whose code wants 1.1.0, through the plugin step.
fn installed_project() -> TestProject {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.run(&["run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    std::fs::create_dir(project.path().join("plugins")).unwrap();
    project
}

#[test]
fn a_huge_file_named_like_a_library_is_refused_without_reading_it() {
    let project = installed_project();
    let before = project.snapshot();
    // Sparse: costs no disk. Read whole it needs 3 GiB of memory, far above the cap.
    std::fs::File::create(project.path().join("plugins/libhuge.so"))
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let (code, stderr) = run_capped(&project, 512, Duration::from_secs(20));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("plugins/libhuge.so is not a loadable library"),
        "{stderr}"
    );
    assert_eq!(project.snapshot(), before, "the run changed the database");
    assert!(!project.lock_path().exists());
}

#[test]
fn a_fifo_named_like_a_library_is_refused_without_hanging() {
    let project = installed_project();
    let before = project.snapshot();
    let status = std::process::Command::new("mkfifo")
        .arg(project.path().join("plugins/libhuge.so"))
        .status()
        .unwrap();
    assert!(status.success());
    let (code, stderr) = run_capped(&project, 512, Duration::from_secs(20));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "plugins/libhuge.so is not a loadable library: it is a FIFO, not a regular file"
        ),
        "{stderr}"
    );
    assert_eq!(project.snapshot(), before, "the run changed the database");
    assert!(!project.lock_path().exists());
}
