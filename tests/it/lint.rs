//! `upgrader lint`: every statement the guard would refuse, with file:line:column, for a
//! chosen backend, without touching any database.

use crate::util::{Backend, TestProject};

const MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <install>
    <sql file="scripts/install.sql"/>
  </install>
  <step name="data" from="1.0.0" to="1.1.0">
    <sql file="scripts/data.sql"/>
  </step>
  <step name="schema" from="1.1.0" to="1.2.0">
    <sql>
      UPDATE t SET x = 'DROP TABLE t';
      ALTER TABLE t ADD COLUMN y INT;
    </sql>
  </step>
  <step name="alone" from="1.2.0" to="1.3.0" transaction="none">
    <sql>CREATE INDEX i ON t (x);</sql>
  </step>
  <step name="index" from="1.3.0" to="1.4.0">
    <sql>CREATE INDEX CONCURRENTLY j ON t (x);</sql>
  </step>
</upgrade>
"#;

fn project() -> TestProject {
    let project = TestProject::new("1.4.0", MANIFEST);
    project.write("scripts/install.sql", "CREATE TABLE t (x INT);\n");
    project.write(
        "scripts/data.sql",
        "-- TRUNCATE t;\nINSERT INTO t VALUES (1);\n\n  TRUNCATE t;\nCREATE TEMPORARY TABLE tmp (x INT);\n",
    );
    project
}

#[test]
fn mysql_findings_with_positions() {
    let project = project();
    let run = project.run(&["lint", "--for", "mysql"]);
    run.assert_code(1)
        .assert_stdout("scripts/data.sql:4:3: step 'data': statement refused on mysql: TRUNCATE causes an implicit commit")
        .assert_stdout("upgrade.xml:11:7: step 'schema': statement refused on mysql: ALTER TABLE causes an implicit commit")
        .assert_stdout("upgrade.xml:18:10: step 'index': statement refused on mysql: CREATE INDEX causes")
        .assert_stdout("3 statement(s) would be refused on mysql");
    // Install DDL is allowed on MySQL; transaction="none" steps are not guarded; the
    // comment, the string and the temporary table are not statements that commit.
    assert!(!run.stdout.contains("install.sql"), "{}", run.stdout);
    assert!(!run.stdout.contains("'alone'"), "{}", run.stdout);
    assert!(!project.db_path().exists());
    assert!(!project.lock_path().exists());
}

#[test]
fn postgres_and_sqlite_findings() {
    let project = project();
    let postgres = project.run(&["lint", "--for", "postgres", "--json"]);
    postgres.assert_code(1);
    let json = postgres.json();
    assert_eq!(json["backend"], "postgres");
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{json}");
    assert_eq!(findings[0]["step"], "index");
    assert_eq!(
        findings[0]["location"],
        format!("{}:18:10", project.path().join("upgrade.xml").display())
    );
    assert!(findings[0]["reason"]
        .as_str()
        .unwrap()
        .contains("CONCURRENTLY"));

    // The default backend is the configured database: SQLite here.
    project
        .run(&["lint"])
        .assert_code(0)
        .assert_stdout("no statement would be refused on sqlite");
    assert!(!project.db_path().exists());
}

#[test]
fn unreadable_sql_is_a_finding() {
    let project = project();
    project.write("scripts/data.sql", "SELECT 'unterminated;\n");
    project
        .run(&["lint", "--for", "sqlite"])
        .assert_code(1)
        .assert_stdout("scripts/data.sql:1:8: step 'data': cannot split the SQL");
}

/// Written as people write: CRLF line endings, comments, single quotes, a tag over several
/// lines, attributes in any order, an explicit transaction="shared".
const MYSQL_HISTORY: &str = "<?xml version=\"1.0\"?>\r\n<!-- history imported from the old tool -->\r\n<upgrade project=\"test\" initial-version=\"1.0.0\">\r\n  <install><sql>CREATE TABLE t (x INT);</sql></install>\r\n  <step name=\"add-y\" from=\"1.0.0\" to=\"1.1.0\"><sql>ALTER TABLE t ADD COLUMN y INT;</sql></step>\r\n  <step to='1.2.0' name='fill'   from='1.1.0'>\r\n    <sql>UPDATE t SET y = 1;</sql>\r\n  </step>\r\n  <step\r\n      name=\"index\"\r\n      from=\"1.2.0\"\r\n      to=\"1.3.0\"\r\n      transaction=\"shared\"\r\n  ><!-- index it -->\r\n    <sql>CREATE INDEX i ON t (y);</sql>\r\n  </step>\r\n  <step name=\"mixed\" from=\"1.3.0\" to=\"1.4.0\"><sql>TRUNCATE t; COMMIT;</sql></step>\r\n  <step name=\"commits\" from=\"1.4.0\" to=\"1.5.0\"><sql>INSERT INTO t VALUES (1, 1); COMMIT;</sql></step>\r\n</upgrade>\r\n";

#[test]
fn fix_marks_exactly_the_steps_that_need_transaction_none() {
    let project = TestProject::new("1.5.0", MYSQL_HISTORY);
    let manifest = project.path().join("upgrade.xml");

    let before = project.run(&["lint", "--for", "mysql"]);
    before
        .assert_code(1)
        .assert_stdout("5 statement(s) would be refused on mysql")
        .assert_stdout("2 step(s) need transaction=\"none\" on mysql: run `upgrader lint --for mysql --fix` to mark them")
        .assert_stdout("step 'mixed' was not marked transaction=\"none\": transaction=\"none\" would not cure `COMMIT` at ");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), MYSQL_HISTORY);

    let fixed = project.run(&["lint", "--for", "mysql", "--fix"]);
    // COMMIT is refused in any step: the findings it leaves keep the exit code at 1.
    fixed
        .assert_code(1)
        .assert_stdout(&format!(
            "{}:5:3: step 'add-y': marked transaction=\"none\"",
            manifest.display()
        ))
        .assert_stdout(&format!(
            "{}:9:3: step 'index': marked transaction=\"none\"",
            manifest.display()
        ))
        .assert_stdout("marked 2 step(s) transaction=\"none\"")
        .assert_stdout(
            "step 'mixed': statement refused on mysql: TRUNCATE causes an implicit commit",
        )
        .assert_stdout("step 'mixed' was not marked transaction=\"none\"")
        .assert_stdout("step 'commits': statement refused on mysql: transaction control (COMMIT)")
        .assert_stdout("3 statement(s) would be refused on mysql")
        .assert_stdout("2 of them transaction=\"none\" would not cure");
    let expected = MYSQL_HISTORY
        .replace(
            "to=\"1.1.0\"><sql>ALTER",
            "to=\"1.1.0\" transaction=\"none\"><sql>ALTER",
        )
        .replace(
            "transaction=\"shared\"\r\n  ><!--",
            "transaction=\"none\"\r\n  ><!--",
        );
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), expected);

    // The manifest still validates, and only what --fix cannot cure is left.
    project.run(&["plan"]).assert_code(0);
    let after = project.run(&["lint", "--for", "mysql", "--json"]);
    after.assert_code(1);
    let json = after.json();
    let steps: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["mixed", "mixed", "commits"], "{json}");
    assert_eq!(json["needs_transaction_none"], serde_json::json!([]));
    assert_eq!(json["not_fixable"][0]["step"], "mixed");
    assert!(!project.path().join("upgrader.db").exists());
}

const ALL_FIXABLE: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <install><sql>CREATE TABLE t (x INT);</sql></install>
  <step name="add-y" from="1.0.0" to="1.1.0">
    <sql>ALTER TABLE t ADD COLUMN y INT;</sql>
  </step>
  <step name="data" from="1.1.0" to="1.2.0">
    <sql>INSERT INTO t VALUES (1, 2);</sql>
  </step>
  <step name="index" from="1.2.0" to="1.3.0">
    <sql>INSERT INTO t VALUES (2, 3); CREATE INDEX i ON t (y);</sql>
  </step>
</upgrade>
"#;

#[test]
fn after_fix_mariadb_runs_what_it_refused_and_lint_is_clean() {
    let project = TestProject::on(Backend::MariaDb, "1.0.0", ALL_FIXABLE);
    project.run(&["run"]).assert_code(0);
    project.write("VERSION", "1.3.0\n");
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("causes an implicit commit");

    let fixed = project.run(&["lint", "--for", "mysql", "--fix", "--json"]);
    fixed.assert_code(0);
    let json = fixed.json();
    let marked: Vec<&str> = json["marked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_str().unwrap())
        .collect();
    assert_eq!(marked, ["add-y", "index"], "{json}");
    assert_eq!(json["findings"], serde_json::json!([]));
    let text = std::fs::read_to_string(project.path().join("upgrade.xml")).unwrap();
    assert_eq!(text.matches("transaction=\"none\"").count(), 2, "{text}");

    project
        .run(&["lint", "--for", "mysql"])
        .assert_code(0)
        .assert_stdout("no statement would be refused on mysql");
    // Nothing left to do: the file is not written again.
    let modified = std::fs::metadata(project.path().join("upgrade.xml"))
        .unwrap()
        .modified()
        .unwrap();
    project
        .run(&["lint", "--for", "mysql", "--fix"])
        .assert_code(0)
        .assert_stdout("marked 0 step(s)");
    assert_eq!(
        std::fs::metadata(project.path().join("upgrade.xml"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    // The refused run left its failed lock for a person to look at, as always.
    project.run(&["unlock"]).assert_code(0);
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.3.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM t"), 2);
}

#[test]
fn fix_is_refused_for_other_backends_and_the_older_format() {
    let project = TestProject::new("1.3.0", ALL_FIXABLE);
    project
        .run(&["lint", "--for", "postgres", "--fix"])
        .assert_code(1)
        .assert_stderr("it has nothing to fix on postgres: use --for mysql");
    assert_eq!(
        std::fs::read_to_string(project.path().join("upgrade.xml")).unwrap(),
        ALL_FIXABLE
    );

    let legacy = "<upgrade>\n  <initialversion>1.0.0</initialversion>\n  <matching>\n    <v1.0.0>\n      <target_version>1.1.0</target_version>\n      <script_name>steps.php</script_name>\n      <class_name>S</class_name>\n      <call_method>run</call_method>\n    </v1.0.0>\n  </matching>\n</upgrade>\n";
    let project = TestProject::new("PROJECT: test\nVERSION: 1.1.0", legacy);
    project
        .run(&["lint", "--for", "mysql", "--fix"])
        .assert_code(1)
        .assert_stderr("lint --fix edits manifests in the canonical <step> format only");
    assert_eq!(
        std::fs::read_to_string(project.path().join("upgrade.xml")).unwrap(),
        legacy
    );
}
