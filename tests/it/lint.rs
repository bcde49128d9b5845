//! `upgrader lint`: every statement the guard would refuse, with file:line:column, for a
//! chosen backend, without touching any database.

use crate::util::TestProject;

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
