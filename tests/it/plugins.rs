//! Step plugins through the real binary: Rust plugins built against the SDK crate with
//! rustc, C plugins built against upgrader_plugin.h with cc, on every backend.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn check(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SDK crate compiled as an rlib, once per test process.
fn sdk() -> &'static PathBuf {
    static SDK: OnceLock<PathBuf> = OnceLock::new();
    SDK.get_or_init(|| {
        let dir = work_dir(&format!("plugin-sdk-{}", std::process::id()));
        check(
            Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
                .args(["--edition", "2021", "--crate-type", "rlib", "--crate-name"])
                .arg("upgrader_plugin")
                .arg(repo().join("crates/upgrader-plugin/src/lib.rs"))
                .arg("--out-dir")
                .arg(&dir),
        );
        dir
    })
}

/// A Rust plugin library `lib{name}.so` built from `source` (which may use the SDK).
pub fn rust_plugin(name: &str, source: &str) -> PathBuf {
    let sdk = sdk();
    let dir = work_dir(&format!("plugins-{}-{name}", std::process::id()));
    let file = dir.join(format!("{name}.rs"));
    std::fs::write(&file, source).unwrap();
    check(
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "--crate-type",
                "cdylib",
                "--crate-name",
                name,
            ])
            .arg("--extern")
            .arg(format!(
                "upgrader_plugin={}",
                sdk.join("libupgrader_plugin.rlib").display()
            ))
            .arg("-L")
            .arg(sdk)
            .arg(&file)
            .arg("--out-dir")
            .arg(&dir),
    );
    dir.join(format!("lib{name}.so"))
}

/// A C plugin library `lib{name}.so` built from `source` against upgrader_plugin.h.
pub fn c_plugin(name: &str, source: &str) -> PathBuf {
    let dir = work_dir(&format!("plugins-{}-{name}", std::process::id()));
    let file = dir.join(format!("{name}.c"));
    std::fs::write(&file, source).unwrap();
    let library = dir.join(format!("lib{name}.so"));
    check(
        Command::new("cc")
            .args(["-Wall", "-Werror", "-shared", "-fPIC", "-I"])
            .arg(repo().join("crates/upgrader-plugin/include"))
            .arg(&file)
            .arg("-o")
            .arg(&library),
    );
    library
}

/// The test plugin every backend test uses, built once per process.
fn test_steps() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| rust_plugin("test_steps", TEST_STEPS))
}

const TEST_STEPS: &str = r#"
use upgrader_plugin::{export_steps, Error, Result, Run, Value};

fn insert_row(run: &mut Run) -> Result<()> {
    run.execute_with(
        "INSERT INTO items (id, name) VALUES (?, ?)",
        &[Value::from(2), Value::from("from the plugin; it's \"quoted\" and has a ?")],
    )?;
    let rows = run.query("SELECT count(*) FROM items WHERE id <= ?", &[Value::from(2)])?;
    if rows[0][0].as_int() != Some(2) {
        return Err(Error::new(format!("expected 2 rows, read {:?}", rows)));
    }
    run.log("inserted row 2");
    Ok(())
}

fn fail_with_error(run: &mut Run) -> Result<()> {
    run.execute("UPDATE items SET name = 'changed by the plugin'")?;
    Err(Error::new("the plugin says no: bad data in items"))
}

fn panic_step(run: &mut Run) -> Result<()> {
    run.execute("UPDATE items SET name = 'changed by the plugin'")?;
    let empty: Vec<i32> = Vec::new();
    if empty.is_empty() {
        panic!("plugin panic: nothing to index");
    }
    Ok(())
}

fn ddl_step(run: &mut Run) -> Result<()> {
    run.execute("UPDATE items SET name = 'changed by the plugin'")?;
    run.execute("ALTER TABLE items ADD COLUMN extra INTEGER")?;
    Ok(())
}

fn swallow_refusal(run: &mut Run) -> Result<()> {
    // Ignoring the error does not help: a refused statement fails the step.
    let _ = run.execute("TRUNCATE items");
    Ok(())
}

fn noop(_run: &mut Run) -> Result<()> {
    Ok(())
}

fn values_round_trip(run: &mut Run) -> Result<()> {
    let text = "ünïcödé; 'single' \"double\" ? $1";
    run.execute_with(
        "INSERT INTO items (id, name, size) VALUES (?, ?, ?)",
        &[Value::from(7), Value::from(text), Value::Null],
    )?;
    let rows = run.query("SELECT name, size FROM items WHERE id = ?", &[Value::from(7)])?;
    match rows.as_slice() {
        [row] if row[0].as_text() == Some(text) && row[1] == Value::Null => Ok(()),
        other => Err(Error::new(format!("read back {other:?}"))),
    }
}

/// Records the open file descriptors and how many times this library is mapped.
fn count_resources(run: &mut Run) -> Result<()> {
    let fds = std::fs::read_dir("/proc/self/fd").map_err(|e| e.to_string())?.count() as i64;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let mut inodes: Vec<&str> = maps
        .lines()
        .filter(|line| line.ends_with("libtest_steps.so"))
        .filter_map(|line| line.split_whitespace().nth(4))
        .collect();
    inodes.dedup();
    run.execute_with(
        "INSERT INTO resources (fds, mapped) VALUES (?, ?)",
        &[Value::from(fds), Value::from(inodes.len() as i64)],
    )?;
    Ok(())
}

export_steps!(
    insert_row,
    fail_with_error,
    panic_step,
    ddl_step,
    swallow_refusal,
    noop,
    values_round_trip,
    count_resources,
);
"#;

/// A project whose steps are `sql`, then the plugin `method`, then `sql` again, with the
/// test plugin in its plugins/ directory and an `items` table holding row 1.
pub(crate) fn project(backend: Backend, method: &str) -> TestProject {
    let manifest = format!(
        r#"<upgrade project="test" initial-version="1.0.0">
  <step name="before" from="1.0.0" to="1.1.0">
    <sql>INSERT INTO items (id, name) VALUES (1, 'from SQL before');</sql>
  </step>
  <step name="plugged" from="1.1.0" to="1.2.0">
    <plugin library="test_steps" method="{method}"/>
  </step>
  <step name="after" from="1.2.0" to="1.3.0">
    <sql>INSERT INTO items (id, name) VALUES (3, 'from SQL after');</sql>
  </step>
</upgrade>
"#
    );
    let project = TestProject::on(backend, "1.3.0", &manifest);
    project.sql(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, size INTEGER)",
    );
    install_plugin(&project, test_steps());
    project
}

fn install_plugin(project: &TestProject, library: &Path) {
    std::fs::create_dir_all(project.path().join("plugins")).unwrap();
    std::fs::copy(
        library,
        project
            .path()
            .join("plugins")
            .join(library.file_name().unwrap()),
    )
    .unwrap();
}

fn sql_plugin_sql_commits_all_three(backend: Backend) {
    let project = project(backend, "insert_row");
    project
        .run(&["run"])
        .assert_code(0)
        .assert_stderr("test_steps::insert_row: inserted row 2");
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 3);
    assert_eq!(
        project.query_i64(
            "SELECT count(*) FROM items WHERE id = 2 AND name = 'from the plugin; it''s \"quoted\" and has a ?'"
        ),
        1
    );
    let history = project.history();
    let names: Vec<&str> = history
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before", "plugged", "after"]);
    assert_eq!(history[1]["checksum"].as_str().unwrap().len(), 64);
}

/// The plugin fails after SQL earlier in the run (and its own statement) changed rows:
/// all of it rolls back.
#[track_caller]
fn assert_plugin_failure_rolls_back(backend: Backend, method: &str, message: &str) {
    let project = project(backend, method);
    let before = project.app_snapshot();
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("step 'plugged' failed at ")
        .assert_stderr(message)
        .assert_stderr("rolled back");
    assert_eq!(project.app_snapshot(), before, "the database changed");
    assert_eq!(project.recorded_version(), None);
    let lock = project.lock_json().expect("the lock stays");
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["step"], "plugged");
    assert!(lock["error"].as_str().unwrap().contains(message), "{lock}");
    let history = project.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["success"], false);
}

fn plugin_error_rolls_back_the_run(backend: Backend) {
    assert_plugin_failure_rolls_back(
        backend,
        "fail_with_error",
        "plugin step test_steps::fail_with_error failed: the plugin says no: bad data in items",
    );
}

fn plugin_panic_rolls_back_the_run(backend: Backend) {
    assert_plugin_failure_rolls_back(
        backend,
        "panic_step",
        "plugin step test_steps::panic_step panicked: plugin panic: nothing to index at ",
    );
}

fn plugin_values_round_trip_as_bound_parameters(backend: Backend) {
    let project = project(backend, "values_round_trip");
    project.run(&["run"]).assert_code(0);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE id = 7"),
        1
    );
}

#[test]
fn mariadb_refuses_ddl_from_a_plugin_like_from_a_script() {
    for method in ["ddl_step", "swallow_refusal"] {
        let project = project(Backend::MariaDb, method);
        let before = project.app_snapshot();
        let run = project.run(&["run"]);
        run.assert_code(1)
            .assert_stderr(&format!(
                "plugin step test_steps::{method}: statement refused on mysql"
            ))
            .assert_stderr("causes an implicit commit")
            .assert_stderr("it was not sent");
        assert_eq!(
            project.app_snapshot(),
            before,
            "{method} changed the database"
        );
        assert!(!project.column_exists("items", "extra"));
        assert_eq!(project.lock_json().unwrap()["state"], "failed");
    }
}

#[test]
fn postgres_runs_plugin_ddl_in_the_transaction() {
    // PostgreSQL's DDL is transactional, so the guard lets it through.
    let project = project(Backend::Postgres, "ddl_step");
    project.run(&["run"]).assert_code(0);
    assert!(project.column_exists("items", "extra"));
}

/// A refused run: exit 1, the message, and nothing touched (no lock file, no table,
/// upgrader's own included).
#[track_caller]
fn assert_refused_before_start(project: &TestProject, needles: &[&str]) {
    let before = project.snapshot();
    let run = project.run(&["run"]);
    run.assert_code(1);
    for needle in needles {
        run.assert_stderr(needle);
    }
    assert_eq!(project.snapshot(), before, "the database changed");
    assert!(!project.lock_path().exists(), "a lock file was left");
}

#[test]
fn missing_library_is_refused_before_anything_is_touched() {
    let project = project(Backend::Sqlite, "insert_row");
    std::fs::remove_dir_all(project.path().join("plugins")).unwrap();
    let plugins = project.path().join("plugins").display().to_string();
    assert_refused_before_start(
        &project,
        &[
            "upgrade.xml:6:5: step 'plugged': plugin library 'test_steps' not found: looked for libtest_steps.so in ",
            &plugins,
        ],
    );
}

#[test]
fn missing_method_is_refused_with_the_steps_the_library_exports() {
    let project = project(Backend::Sqlite, "no_such_step");
    assert_refused_before_start(
        &project,
        &[
            "step 'plugged': plugin library 'test_steps'",
            "has no step 'no_such_step'",
            "it exports: insert_row, fail_with_error, panic_step, ddl_step, swallow_refusal, noop, values_round_trip, count_resources",
        ],
    );
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let project = project(Backend::Sqlite, "insert_row");
    project.write(
        "plugins/libtest_steps.so",
        "#!/bin/sh\necho not a library\n",
    );
    assert_refused_before_start(&project, &["libtest_steps.so is not a loadable library"]);
}

#[test]
fn a_library_without_the_plugin_abi_is_refused() {
    let project = project(Backend::Sqlite, "insert_row");
    let library = c_plugin(
        "test_steps_plain",
        "int upgrader_step_insert_row(void) { return 0; }\n",
    );
    std::fs::copy(library, project.path().join("plugins/libtest_steps.so")).unwrap();
    assert_refused_before_start(
        &project,
        &["is not an upgrader plugin: it does not export `upgrader_plugin_abi`"],
    );
}

/// A C plugin declaring ABI version `abi`, with a step `insert_row` that does nothing and
/// a constructor that creates `marker`: its code ran if (and only if) the file exists.
fn marking_c_plugin(name: &str, abi: &str, marker: &Path) -> PathBuf {
    let source = format!(
        r#"#include <stdio.h>
#include "upgrader_plugin.h"
const uint32_t upgrader_plugin_abi = {abi};
static const upgrader_str names[] = {{UPGRADER_STR("insert_row")}};
const upgrader_step_list upgrader_plugin_steps = {{1, names}};
__attribute__((constructor)) static void loaded(void) {{
    FILE *f = fopen("{}", "w");
    if (f) fclose(f);
}}
int32_t upgrader_step_insert_row(const upgrader_host *host) {{ (void)host; return 0; }}
"#,
        marker.display()
    );
    c_plugin(name, &source)
}

/// A library for another ABI version is refused before any of its code runs: its
/// constructor, which would run when it is loaded, leaves no mark.
#[test]
fn a_library_for_another_abi_version_is_refused_before_its_code_runs() {
    let project = project(Backend::Sqlite, "insert_row");
    let marker = project.path().join("constructor-ran");
    let library = marking_c_plugin("test_steps_abi999", "999", &marker);
    std::fs::copy(library, project.path().join("plugins/libtest_steps.so")).unwrap();
    assert_refused_before_start(
        &project,
        &["was built for plugin ABI version 999, but this upgrader uses version 1"],
    );
    assert!(!marker.exists(), "the library's code ran");
}

/// `plan`, `status` and `check` never load a library (loading runs its code); `run` does.
#[test]
fn reports_never_load_a_library() {
    let project = project(Backend::Sqlite, "insert_row");
    let marker = project.path().join("constructor-ran");
    let library = marking_c_plugin("test_steps_marked", "UPGRADER_PLUGIN_ABI_VERSION", &marker);
    std::fs::copy(library, project.path().join("plugins/libtest_steps.so")).unwrap();
    project.run(&["plan"]).assert_code(0);
    project.run(&["status"]).assert_code(0);
    project.run(&["check"]).assert_code(3);
    project.run(&["lint"]).assert_code(0);
    assert!(!marker.exists(), "a report loaded the library");
    project.run(&["run"]).assert_code(0);
    assert!(marker.exists(), "run did not load the library");
}

/// The C example plugin of the SDK, built with cc, runs its steps on every backend.
fn c_example_plugin_runs(backend: Backend) {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let library = BUILT.get_or_init(|| {
        c_plugin(
            "c_steps",
            &std::fs::read_to_string(repo().join("crates/upgrader-plugin/examples/c_steps.c"))
                .unwrap(),
        )
    });
    let manifest = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="count" from="1.0.0" to="1.1.0">
    <sql>INSERT INTO items (id, name) VALUES (1, 'a'), (2, 'b');</sql>
    <plugin library="c_steps" method="count_items"/>
  </step>
</upgrade>
"#;
    let project = TestProject::on(backend, "1.1.0", manifest);
    project.sql(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL); \
         CREATE TABLE item_counts (label VARCHAR(100) NOT NULL, n INTEGER NOT NULL)",
    );
    install_plugin(&project, library);
    project
        .run(&["run"])
        .assert_code(0)
        .assert_stderr("c_steps::count_items: counted 2 items");
    assert_eq!(
        project.query_i64("SELECT n FROM item_counts WHERE label = 'from C; it''s \"quoted\"'"),
        2
    );

    project.write("VERSION", "1.2.0\n");
    project.write(
        "upgrade.xml",
        &manifest.replace(
            "</upgrade>",
            r#"  <step name="refuse" from="1.1.0" to="1.2.0">
    <sql>DELETE FROM items;</sql>
    <plugin library="c_steps" method="refuse"/>
  </step>
</upgrade>"#,
        ),
    );
    project.run(&["run"]).assert_code(1).assert_stderr(
        "plugin step c_steps::refuse failed: the C step refuses: items are not ready",
    );
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 2);
}

on_every_backend!(
    sql_plugin_sql_commits_all_three,
    plugin_error_rolls_back_the_run,
    plugin_panic_rolls_back_the_run,
    plugin_values_round_trip_as_bound_parameters,
    c_example_plugin_runs,
);

/// 1,000 steps calling the same plugin: the library is mapped once, and the process's
/// open file descriptors stay the same from the first step to the last.
#[test]
fn a_thousand_plugin_steps_map_the_library_once_and_leak_no_descriptor() {
    let mut manifest = String::from(r#"<upgrade project="test" initial-version="1.0.0">"#);
    for index in 0..1000 {
        manifest.push_str(&format!(
            "\n  <step name=\"s{index}\" from=\"1.{index}.0\" to=\"1.{}.0\"><plugin library=\"test_steps\" method=\"count_resources\"/></step>",
            index + 1
        ));
    }
    manifest.push_str("\n</upgrade>\n");
    let project = TestProject::new("1.1000.0", &manifest);
    project.sql("CREATE TABLE resources (fds INTEGER NOT NULL, mapped INTEGER NOT NULL)");
    install_plugin(&project, test_steps());
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.query_i64("SELECT count(*) FROM resources"), 1000);
    assert_eq!(
        project.query_i64("SELECT count(DISTINCT fds) FROM resources"),
        1
    );
    assert_eq!(project.query_i64("SELECT min(mapped) FROM resources"), 1);
    assert_eq!(project.query_i64("SELECT max(mapped) FROM resources"), 1);
}

/// The older format's scripted steps are plugin steps: library = script_name without
/// its extension, method = call_method.
#[test]
fn legacy_scripted_steps_call_plugins() {
    let legacy = r#"<upgrade>
  <initialversion>1.0.0</initialversion>
  <matching>
    <v1.0.0>
      <target_version>1.1.0</target_version>
      <script_name>test_steps.php</script_name>
      <class_name>InsertRow</class_name>
      <call_method>insert_row</call_method>
    </v1.0.0>
  </matching>
</upgrade>
"#;
    let project = TestProject::new("PROJECT: test\nVERSION: 1.1.0", legacy);
    project.sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, size INTEGER); INSERT INTO items VALUES (1, 'x', NULL);");
    install_plugin(&project, test_steps());
    project.run(&["run"]).assert_code(0);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM items WHERE id = 2"),
        1
    );
    assert_eq!(project.history()[0]["name"], "InsertRow");
}

/// Within one process a library name maps to one file: a different file under the same
/// name is refused, since the first can never be unloaded.
#[test]
fn a_second_file_for_a_loaded_library_name_is_refused() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    for dir in [first.path(), second.path()] {
        std::fs::create_dir(dir.join("plugins")).unwrap();
    }
    let library = rust_plugin(
        "reloaded",
        "upgrader_plugin::export_steps!(noop);\nfn noop(_: &mut upgrader_plugin::Run) -> upgrader_plugin::Result<()> { Ok(()) }\n",
    );
    std::fs::copy(&library, first.path().join("plugins/libreloaded.so")).unwrap();
    std::fs::copy(c_plugin("reloaded_c", "#include \"upgrader_plugin.h\"\nconst uint32_t upgrader_plugin_abi = UPGRADER_PLUGIN_ABI_VERSION;\nint32_t upgrader_step_noop(const upgrader_host *h) { (void)h; return 0; }\n"), second.path().join("plugins/libreloaded.so")).unwrap();
    let step = upgrader::plugin::resolve(first.path(), "reloaded", "noop").unwrap();
    assert_eq!(step.library.steps, ["noop"]);
    // The same file again is the library already loaded.
    let again = upgrader::plugin::resolve(first.path(), "reloaded", "noop").unwrap();
    assert!(std::ptr::eq(step.library, again.library));
    let error = upgrader::plugin::resolve(second.path(), "reloaded", "noop")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is already loaded in this process from"),
        "{error}"
    );
    assert!(
        error.contains("refusing to load a different file"),
        "{error}"
    );
}

/// upgrader_plugin.h and the Rust definitions agree: sizes, field offsets, constants.
#[test]
fn the_c_header_matches_the_rust_abi() {
    use std::mem::{offset_of, size_of};
    use upgrader::plugin::abi;
    let program = r#"#include <stdio.h>
#include <stddef.h>
#include "upgrader_plugin.h"
#define S(t) printf(#t " size %zu\n", sizeof(t))
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(t, f))
int main(void) {
    printf("abi %d\n", UPGRADER_PLUGIN_ABI_VERSION);
    printf("status %d %d %d\n", UPGRADER_STATUS_OK, UPGRADER_STATUS_ERROR, UPGRADER_STATUS_PANIC);
    printf("kinds %d %d %d %d %d\n", UPGRADER_VALUE_NULL, UPGRADER_VALUE_INT, UPGRADER_VALUE_FLOAT, UPGRADER_VALUE_TEXT, UPGRADER_VALUE_BLOB);
    printf("log %d %d %d %d\n", UPGRADER_LOG_ERROR, UPGRADER_LOG_WARN, UPGRADER_LOG_INFO, UPGRADER_LOG_DEBUG);
    S(upgrader_str); O(upgrader_str, ptr); O(upgrader_str, len);
    S(upgrader_value); O(upgrader_value, kind); O(upgrader_value, int_value); O(upgrader_value, float_value); O(upgrader_value, bytes);
    S(upgrader_host); O(upgrader_host, abi_version); O(upgrader_host, size); O(upgrader_host, ctx); O(upgrader_host, execute); O(upgrader_host, query); O(upgrader_host, last_error); O(upgrader_host, log); O(upgrader_host, fail);
    S(upgrader_step_list); O(upgrader_step_list, count); O(upgrader_step_list, names);
    return 0;
}
"#;
    let dir = work_dir(&format!("header-{}", std::process::id()));
    std::fs::write(dir.join("layout.c"), program).unwrap();
    check(
        Command::new("cc")
            .args(["-Wall", "-Werror", "-I"])
            .arg(repo().join("crates/upgrader-plugin/include"))
            .arg(dir.join("layout.c"))
            .arg("-o")
            .arg(dir.join("layout")),
    );
    let out = Command::new(dir.join("layout")).output().unwrap();
    let c = String::from_utf8(out.stdout).unwrap();
    let rust = [
        format!("abi {}", abi::ABI_VERSION),
        format!(
            "status {} {} {}",
            abi::STATUS_OK,
            abi::STATUS_ERROR,
            abi::STATUS_PANIC
        ),
        format!(
            "kinds {} {} {} {} {}",
            abi::VALUE_NULL,
            abi::VALUE_INT,
            abi::VALUE_FLOAT,
            abi::VALUE_TEXT,
            abi::VALUE_BLOB
        ),
        format!(
            "log {} {} {} {}",
            abi::LOG_ERROR,
            abi::LOG_WARN,
            abi::LOG_INFO,
            abi::LOG_DEBUG
        ),
        format!("upgrader_str size {}", size_of::<abi::Str>()),
        format!("upgrader_str.ptr {}", offset_of!(abi::Str, ptr)),
        format!("upgrader_str.len {}", offset_of!(abi::Str, len)),
        format!("upgrader_value size {}", size_of::<abi::Value>()),
        format!("upgrader_value.kind {}", offset_of!(abi::Value, kind)),
        format!("upgrader_value.int_value {}", offset_of!(abi::Value, int)),
        format!(
            "upgrader_value.float_value {}",
            offset_of!(abi::Value, float)
        ),
        format!("upgrader_value.bytes {}", offset_of!(abi::Value, bytes)),
        format!("upgrader_host size {}", size_of::<abi::Host>()),
        format!(
            "upgrader_host.abi_version {}",
            offset_of!(abi::Host, abi_version)
        ),
        format!("upgrader_host.size {}", offset_of!(abi::Host, size)),
        format!("upgrader_host.ctx {}", offset_of!(abi::Host, ctx)),
        format!("upgrader_host.execute {}", offset_of!(abi::Host, execute)),
        format!("upgrader_host.query {}", offset_of!(abi::Host, query)),
        format!(
            "upgrader_host.last_error {}",
            offset_of!(abi::Host, last_error)
        ),
        format!("upgrader_host.log {}", offset_of!(abi::Host, log)),
        format!("upgrader_host.fail {}", offset_of!(abi::Host, fail)),
        format!("upgrader_step_list size {}", size_of::<abi::StepList>()),
        format!(
            "upgrader_step_list.count {}",
            offset_of!(abi::StepList, count)
        ),
        format!(
            "upgrader_step_list.names {}",
            offset_of!(abi::StepList, names)
        ),
    ];
    assert_eq!(c.lines().collect::<Vec<_>>(), rust);
}
