//! What MySQL and MariaDB cannot roll back, refused on a real MariaDB server: implicit
//! commits, tables whose engine is not InnoDB, and a failed install's DDL (dropped
//! again). Also where PostgreSQL and SQLite do roll DDL back.

use crate::util::{Backend, TestProject};

const MANIFEST: &str = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="move" from="1.0.0" to="1.1.0">
    <sql file="scripts/move.sql"/>
  </step>
</upgrade>
"#;

/// A MariaDB database adopted at 1.0.0 with InnoDB accounts, a MyISAM table of hits and
/// an audit table, and VERSION moved on to 1.1.0.
fn adopted_mariadb() -> TestProject {
    let project = TestProject::on(Backend::MariaDb, "1.0.0", MANIFEST);
    project.write("scripts/move.sql", "SELECT 1;\n");
    project.sql(
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB; \
         INSERT INTO accounts VALUES (1, 100), (2, 50); \
         CREATE TABLE audit (id INT PRIMARY KEY, what VARCHAR(50)) ENGINE=InnoDB; \
         INSERT INTO audit VALUES (1, 'opened'); \
         CREATE TABLE hits (n INT) ENGINE=MyISAM; \
         INSERT INTO hits VALUES (1), (2), (3)",
    );
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    project.write("VERSION", "1.1.0\n");
    project
}

/// Runs `run`, expects a refusal mentioning `needle`, and checks that every table (rows,
/// definition, CHECKSUM TABLE), the recorded version and the lock say nothing happened
/// but a failed run.
#[track_caller]
fn assert_refused_without_trace(project: &TestProject, needles: &[&str]) {
    let before = project.app_snapshot();
    assert!(before.contains("checksum: Some("), "{before}");
    let run = project.run(&["run"]);
    run.assert_code(1).assert_stderr("it was not sent");
    for needle in needles {
        run.assert_stderr(needle);
    }
    assert_eq!(project.app_snapshot(), before, "a table changed");
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    let lock = project.lock_json().expect("the lock stays");
    assert_eq!(lock["state"], "failed");
    assert_eq!(lock["step"], "move");
    let history = project.history();
    let last = history.last().unwrap();
    assert_eq!(last["success"], false);
    assert_eq!(last["name"], "move");
    project.run(&["check"]).assert_code(4);
}

#[test]
fn mariadb_refuses_a_ddl_statement_before_sending_it() {
    let project = adopted_mariadb();
    project.write(
        "scripts/move.sql",
        "UPDATE accounts SET balance = balance - 10 WHERE id = 1;\n\
         UPDATE accounts SET balance = balance + 10 WHERE id = 2;\n\
         ALTER TABLE accounts ADD COLUMN note TEXT;\n\
         INSERT INTO audit VALUES (2, 'moved');\n",
    );
    assert_refused_without_trace(
        &project,
        &["scripts/move.sql:3:1: step 'move': statement refused on mysql: ALTER TABLE causes an implicit commit"],
    );
    assert!(!project.column_exists("accounts", "note"));
}

#[test]
fn mariadb_refuses_statements_that_touch_a_myisam_table() {
    let project = adopted_mariadb();
    let database = project.url.as_deref().unwrap().rsplit('/').next().unwrap();
    for (script, line) in [
        ("INSERT INTO hits VALUES (4);".to_string(), 2),
        (
            "UPDATE accounts SET balance = (SELECT count(*) FROM HITS) WHERE id = 1;".to_string(),
            2,
        ),
        (format!("DELETE FROM `{database}`.`hits`;"), 2),
        (
            "UPDATE accounts a JOIN hits h ON h.n = a.id SET a.balance = 0;".to_string(),
            2,
        ),
    ] {
        project.write(
            "scripts/move.sql",
            &format!("UPDATE accounts SET balance = 1 WHERE id = 2;\n{script}\n"),
        );
        assert_refused_without_trace(
            &project,
            &[
                &format!("scripts/move.sql:{line}:1: step 'move': statement refused on mysql"),
                "uses the MyISAM storage engine, which cannot roll back",
            ],
        );
        project.run(&["unlock"]).assert_code(0);
    }

    // The remedy the message gives: convert the table in a step of its own first.
    project.write(
        "upgrade.xml",
        r#"<upgrade project="test" initial-version="1.0.0">
  <step name="convert" from="1.0.0" to="1.0.1" transaction="none">
    <sql>ALTER TABLE hits ENGINE=InnoDB;</sql>
  </step>
  <step name="move" from="1.0.1" to="1.1.0">
    <sql file="scripts/move.sql"/>
  </step>
</upgrade>
"#,
    );
    project.write("scripts/move.sql", "INSERT INTO hits VALUES (4);\n");
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
    assert_eq!(project.query_i64("SELECT count(*) FROM hits"), 4);
}

#[test]
fn mariadb_failed_install_drops_what_it_created() {
    let manifest = r#"<upgrade project="test">
  <install><sql file="scripts/install.sql"/></install>
</upgrade>
"#;
    let project = TestProject::on(Backend::MariaDb, "1.0.0", manifest);
    project.write(
        "scripts/install.sql",
        "CREATE TABLE parents (id INT PRIMARY KEY);\n\
         CREATE TABLE children (id INT PRIMARY KEY, parent INT, FOREIGN KEY (parent) REFERENCES parents (id));\n\
         CREATE VIEW parent_ids AS SELECT id FROM parents;\n\
         INSERT INTO parents VALUES (1);\n\
         INSERT INTO children VALUES (1, 1);\n\
         INSERT INTO children VALUES (1, 1);\n",
    );
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("install 'install' failed at scripts/install.sql:6:1")
        .assert_stderr("upgrader dropped what the install had created");
    assert_eq!(project.app_table_count(), 0);
    assert_eq!(project.recorded_version(), None);
    assert_eq!(project.lock_json().unwrap()["state"], "failed");

    // Fixed, it installs on the schema left empty.
    project.write(
        "scripts/install.sql",
        "CREATE TABLE parents (id INT PRIMARY KEY);\nINSERT INTO parents VALUES (1);\n",
    );
    project.run(&["unlock"]).assert_code(0);
    project.run(&["run"]).assert_code(0);
    assert_eq!(project.query_i64("SELECT count(*) FROM parents"), 1);
    assert_eq!(project.app_table_count(), 1);
}

#[test]
fn mariadb_install_may_not_create_tables_that_cannot_roll_back() {
    let manifest = r#"<upgrade project="test">
  <install><sql>CREATE TABLE t (x INT) ENGINE = MyISAM;</sql></install>
</upgrade>
"#;
    let project = TestProject::on(Backend::MariaDb, "1.0.0", manifest);
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("ENGINE=MyISAM makes a table that cannot roll back");
    assert_eq!(project.app_table_count(), 0);
    project
        .run(&["lint", "--for", "mysql"])
        .assert_code(1)
        .assert_stdout("ENGINE=MyISAM");
}

#[test]
fn mariadb_password_never_shown() {
    let project = adopted_mariadb();
    let url = project.url.clone().unwrap();
    let password = crate::servers::MARIADB_PASSWORD;
    assert!(url.contains(password));
    // The mariadb:// spelling works too.
    let mariadb_url = url.replace("mysql://", "mariadb://");
    let status = project.run(&["status", "--json", "--database", &mariadb_url]);
    status.assert_code(0);
    assert_eq!(
        status.json()["database"],
        mariadb_url.replace(password, "***")
    );
    project.write("scripts/move.sql", "INSERT INTO nowhere VALUES (1);\n");
    let failed_run = project.run(&["run"]);
    failed_run.assert_code(1).assert_stderr("nowhere");
    let wrong = project.run(&["status", "--database", &url.replace(password, "wrong-pw")]);
    wrong
        .assert_code(1)
        .assert_stderr("cannot connect to mysql://upgrader:***@");
    let unreachable = url.replace("127.0.0.1:", "127.0.0.1:1");
    let gone = project.run(&["status", "--database", &unreachable]);
    // "cannot connect to …", or, when the port is out of range, "database URL …".
    gone.assert_code(1).assert_stderr("mysql://upgrader:***@");
    for run in [&status, &failed_run, &wrong, &gone] {
        for output in [&run.stdout, &run.stderr] {
            assert!(!output.contains(password), "{output}");
        }
    }
    let lock = std::fs::read_to_string(project.lock_path()).unwrap();
    assert!(!lock.contains(password), "{lock}");
}

/// PostgreSQL and SQLite roll DDL back with everything else.
fn ddl_rolls_back_with_the_run(backend: Backend) {
    let manifest = r#"<upgrade project="test" initial-version="1.0.0">
  <step name="create" from="1.0.0" to="1.1.0">
    <sql>CREATE TABLE created (x INTEGER); INSERT INTO created VALUES (1);</sql>
  </step>
  <step name="fail" from="1.1.0" to="1.2.0">
    <sql>INSERT INTO created VALUES (2); INSERT INTO nowhere VALUES (3);</sql>
  </step>
</upgrade>
"#;
    let project = TestProject::on(backend, "1.2.0", manifest);
    project.sql("CREATE TABLE existing (x INTEGER)");
    project
        .run(&["run"])
        .assert_code(1)
        .assert_stderr("step 'fail' failed");
    assert_eq!(project.app_table_count(), 1, "the created table survived");
    assert!(!project.column_exists("created", "x"));
    assert_eq!(project.recorded_version(), None);
}

#[test]
fn postgres_ddl_rolls_back_with_the_run() {
    ddl_rolls_back_with_the_run(Backend::Postgres);
}

#[test]
fn sqlite_ddl_rolls_back_with_the_run() {
    ddl_rolls_back_with_the_run(Backend::Sqlite);
}

/// A commit the guard cannot see (a procedure that commits, called from a transactional
/// step) is noticed from the session's state right after the statement: the run stops
/// there and says that what ran before it committed, never "rolled back … unchanged".
#[test]
fn mariadb_reports_a_commit_it_could_not_foresee() {
    let project = adopted_mariadb();
    mysql::prelude::Queryable::query_drop(
        &mut project.my(),
        "CREATE PROCEDURE sneaky_commit() BEGIN INSERT INTO audit VALUES (3, 'sneaky'); COMMIT; END",
    )
    .unwrap();
    project.write(
        "scripts/move.sql",
        "INSERT INTO audit VALUES (2, 'before the call');\n\
         CALL sneaky_commit();\n\
         UPDATE accounts SET balance = 0;\n",
    );
    let run = project.run(&["run"]);
    run.assert_code(1)
        .assert_stderr("scripts/move.sql:2:1")
        .assert_stderr("committed the run's transaction implicitly")
        .assert_stderr("what this run did up to it stays in the database")
        .assert_stderr("the database records version 1.0.0");
    assert!(!run.stderr.contains("unchanged"), "{}", run.stderr);
    // What ran before the call committed; what came after it never ran.
    assert_eq!(project.query_i64("SELECT count(*) FROM audit"), 3);
    assert_eq!(
        project.query_i64("SELECT count(*) FROM accounts WHERE balance = 0"),
        0
    );
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    let lock = project.lock_json().expect("the lock stays");
    assert_eq!(lock["state"], "failed");
    project.run(&["check"]).assert_code(4);
}

/// A procedure that returns rows and then fails: the failure comes in the second
/// result of the statement, which must fail the step and roll the run back, not be
/// dropped with the rows.
#[test]
fn mariadb_a_procedure_that_fails_after_returning_rows_fails_the_step() {
    let project = adopted_mariadb();
    mysql::prelude::Queryable::query_drop(
        &mut project.my(),
        "CREATE PROCEDURE rows_then_boom() BEGIN SELECT id FROM accounts; \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom after rows'; END",
    )
    .unwrap();
    project.write(
        "scripts/move.sql",
        "UPDATE accounts SET balance = balance + 1;\n\
         CALL rows_then_boom();\n\
         INSERT INTO audit VALUES (2, 'after the call');\n",
    );
    let run = project.run(&["run"]);
    run.assert_code(1)
        .assert_stderr("scripts/move.sql:2:1")
        .assert_stderr("boom after rows");
    assert_eq!(
        project.query_i64("SELECT sum(balance) FROM accounts"),
        150,
        "the run was rolled back"
    );
    assert_eq!(project.query_i64("SELECT count(*) FROM audit"), 1);
    assert_eq!(project.recorded_version().as_deref(), Some("1.0.0"));
    assert_eq!(
        project.lock_json().expect("the lock stays")["state"],
        "failed"
    );
}
