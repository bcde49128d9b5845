//! Every catalogued bad manifest and VERSION file (tests/fixtures/invalid/) is refused
//! with its file:line:column, and leaves the database and the lock exactly as they were.

use std::path::{Path, PathBuf};

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

const VALID_MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="a" from="1.0.0" to="1.1.0"><sql file="scripts/a.sql"/></step>
</upgrade>
"#;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("xml" | "VERSION")
            )
        })
        .collect();
    files.sort();
    files
}

fn every_invalid_fixture_is_refused_with_its_position_and_touches_nothing(backend: Backend) {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 20, "only {} fixtures", fixtures.len());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let expected_path = fixture.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no .expected file", fixture.display()));
        let expected = expected.trim();
        let content = std::fs::read_to_string(fixture).unwrap();
        let is_version = fixture.extension().unwrap() == "VERSION";
        let project = if is_version {
            let project = TestProject::on(backend, "1.2.0", VALID_MANIFEST);
            project.write("VERSION", &content);
            project
        } else {
            TestProject::on(backend, "1.2.0", &content)
        };
        project.write("scripts/a.sql", "CREATE TABLE a (x INTEGER);\n");
        project.sql("CREATE TABLE keep (x INTEGER); INSERT INTO keep VALUES (1), (2);");
        let before = project.snapshot();
        for command in [&["run"][..], &["status"], &["plan"], &["check"]] {
            let run = project.run(command);
            let name = fixture.file_name().unwrap().to_string_lossy();
            if run.code != 1 || !run.stderr.contains(expected) {
                failures.push(format!(
                    "{name} ({}): exit {}, wanted 1 and {expected:?}; stderr: {}",
                    command[0],
                    run.code,
                    run.stderr.trim()
                ));
            }
        }
        assert_eq!(
            project.snapshot(),
            before,
            "{} changed the database",
            fixture.display()
        );
        assert!(
            !project.lock_path().exists(),
            "{} left a lock file",
            fixture.display()
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

on_every_backend!(every_invalid_fixture_is_refused_with_its_position_and_touches_nothing);

#[test]
fn fixtures_are_catalogued() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/README.md"),
    )
    .unwrap();
    for fixture in fixtures() {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md does not list {name}"
        );
    }
}

#[test]
fn legacy_manifest_plans_like_the_canonical_one() {
    let legacy = r#"<?xml version="1.0"?>
<UPGRADE>
  <INITIALVERSION>1.0.0</INITIALVERSION>
  <System_Note>deployed by hand in 2011</System_Note>
  <Matching>
    <v1.0.0>
      <Target_Version>1.1.0</Target_Version>
      <Script_Name>shop_steps.php</Script_Name>
      <Class_Name>AddOrders</Class_Name>
      <Call_Method>run</Call_Method>
    </v1.0.0>
    <v1.2.0-ALPHA1>
      <target_version>1.2.0</target_version>
      <script_name>shop_steps.php</script_name>
      <call_method>finish</call_method>
    </v1.2.0-ALPHA1>
    <v1.2.0>
      <target_version>1.3.0</target_version>
    </v1.2.0>
  </Matching>
</UPGRADE>
"#;
    let canonical = r#"<upgrade initial-version="1.0.0">
  <step name="AddOrders" from="1.0.0" to="1.1.0"><plugin library="shop_steps" method="run"/></step>
  <step name="v1.2.0-ALPHA1" from="1.2.0-ALPHA1" to="1.2.0"><plugin library="shop_steps" method="finish"/></step>
</upgrade>
"#;
    let mut plans = Vec::new();
    for manifest in [legacy, canonical] {
        let project = TestProject::new("PROJECT: test\nVERSION: 1.3.0", manifest);
        project.sql("CREATE TABLE existing (x INTEGER);");
        let plan = project.run(&["plan", "--json"]);
        plan.assert_code(0);
        plans.push(plan.json());
    }
    assert_eq!(plans[0], plans[1]);
    let names: Vec<&str> = plans[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["AddOrders", "version-only", "v1.2.0-ALPHA1", "version-only"]
    );
}

/// Real manifests of the original system carry children it never read; a legacy
/// `<upgrade>` ignores them with a warning naming each, and plans as without them.
#[test]
fn legacy_manifest_ignores_unread_children_with_a_warning() {
    let entries = r#"  <matching>
    <v1.0.0>
      <target_version>1.1.0</target_version>
      <script_name>shop_steps.php</script_name>
      <class_name>AddOrders</class_name>
      <call_method>run</call_method>
    </v1.0.0>
  </matching>
"#;
    let extra = r#"  <examples>
    <v0.9.0><target_version>nonsense</target_version><any><thing/></any></v0.9.0>
  </examples>
  <Example_InitialVersion>0.0.1</Example_InitialVersion>
  <current_version>7</current_version>
"#;
    let xmatching =
        "  <xmatching><v1.0.0><target_version>9.9</target_version></v1.0.0></xmatching>\n";
    let plain =
        format!("<upgrade>\n  <initialversion>1.0.0</initialversion>\n{entries}</upgrade>\n");
    let real = format!(
        "<upgrade>\n{extra}  <initialversion>1.0.0</initialversion>\n{entries}{xmatching}</upgrade>\n"
    );
    let mut plans = Vec::new();
    for manifest in [&plain, &real] {
        let project = TestProject::new("PROJECT: test\nVERSION: 1.1.0", manifest);
        project.sql("CREATE TABLE existing (x INTEGER);");
        let plan = project.run(&["plan", "--json"]);
        plan.assert_code(0);
        plans.push(plan.json());
        if manifest == &real {
            for command in [&["plan"][..], &["status"], &["run"]] {
                let run = project.run(command);
                for (name, at) in [
                    ("examples", "2:3"),
                    ("Example_InitialVersion", "5:3"),
                    ("current_version", "6:3"),
                    ("xmatching", "16:3"),
                ] {
                    run.assert_stderr(&format!(
                        "upgrade.xml:{at}: ignoring <{name}> in the older-format <upgrade>"
                    ));
                }
            }
        } else {
            assert!(!plan.stderr.contains("ignoring"), "{}", plan.stderr);
        }
    }
    assert_eq!(plans[0], plans[1]);
}

/// Two spellings of one version show the same way (issue 9, point 14).
#[test]
fn equal_versions_are_shown_alike() {
    let project = TestProject::new(
        "0.1-BETA1",
        r#"<upgrade project="test" initial-version="0.1.0-beta.1"><step name="a" from="0.1.0-beta1" to="0.1-RC1"><sql>SELECT 1;</sql></step></upgrade>"#,
    );
    let plan = project.run(&["plan"]);
    plan.assert_code(0);
    assert!(!plan.stdout.contains("0.1-BETA1"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("beta"), "{}", plan.stdout);
}
