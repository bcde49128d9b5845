//! The backends through the library's `Backend` trait, on real servers: whether a
//! transaction is still open after a statement that commits behind the guard's back, the
//! largest statement each server accepts, and upgrader's own tables read whether or not
//! they exist.

use upgrader::db::DatabaseUrl;

use crate::on_every_backend;
use crate::util::{Backend, TestProject};

const MANIFEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<upgrade project="test" initial-version="1.0.0">
  <install>
    <sql>CREATE TABLE items (id INTEGER PRIMARY KEY)</sql>
  </install>
</upgrade>
"#;

fn connect(project: &TestProject) -> Box<dyn upgrader::db::Backend> {
    let url = match &project.url {
        Some(url) => DatabaseUrl::parse(url).unwrap(),
        None => DatabaseUrl::default_for(project.path()),
    };
    url.connect().unwrap()
}

/// A transaction is reported open after ordinary statements, and closed after a commit
/// nobody asked the backend for: on MariaDB a prepared `COMMIT` (the guard's blind spot),
/// on SQLite a plain one.
fn knows_whether_still_in_transaction(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    let mut db = connect(&project);
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        .unwrap();
    db.begin().unwrap();
    assert!(db.still_in_transaction().unwrap());
    db.execute("INSERT INTO items (id) VALUES (1)").unwrap();
    assert!(db.still_in_transaction().unwrap());
    db.query("SELECT id FROM items", &[]).unwrap();
    assert!(db.still_in_transaction().unwrap());
    match backend {
        Backend::MariaDb => {
            db.execute("PREPARE s FROM 'COMMIT'").unwrap();
            assert!(db.still_in_transaction().unwrap());
            db.execute("EXECUTE s").unwrap();
            assert!(!db.still_in_transaction().unwrap());
            // And again after the run's transaction is opened again.
            db.resume_after_implicit_commit().unwrap();
            assert!(db.still_in_transaction().unwrap());
            db.execute("EXECUTE IMMEDIATE 'COMMIT'").unwrap();
            assert!(!db.still_in_transaction().unwrap());
            db.resume_after_implicit_commit().unwrap();
            db.execute("CREATE TABLE other (id INTEGER)").unwrap();
            assert!(
                !db.still_in_transaction().unwrap(),
                "DDL commits implicitly"
            );
        }
        Backend::Sqlite => {
            db.execute("COMMIT").unwrap();
            assert!(!db.still_in_transaction().unwrap());
        }
        Backend::Postgres => {
            // Nothing commits inside a transaction block unnoticed: COMMIT in a DO block
            // is an error there.
            assert!(db.execute("DO $$ BEGIN COMMIT; END $$").is_err());
        }
    }
    db.rollback().unwrap();
}

/// Each server's limit on one statement, named for the message.
fn names_the_largest_statement(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    let mut db = connect(&project);
    let limit = db.max_statement_bytes().unwrap().expect("a limit");
    match backend {
        Backend::MariaDb => {
            let packet = project.query_i64("SELECT @@max_allowed_packet");
            assert_eq!(limit.bytes, packet as u64 - 1);
            assert_eq!(limit.setting, "max_allowed_packet");
        }
        Backend::Postgres => assert_eq!(limit.bytes, (1 << 30) - 1),
        Backend::Sqlite => assert_eq!(limit.bytes, 1_000_000_000),
    }
}

/// upgrader's version table read before it exists (no error, in or out of a transaction,
/// and a transaction still usable afterwards), and after.
fn reads_own_tables_whether_or_not_they_exist(backend: Backend) {
    use upgrader::db::state;
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    let mut db = connect(&project);
    assert_eq!(state::read_version(db.as_mut(), "test").unwrap(), None);
    db.begin().unwrap();
    assert_eq!(state::read_version(db.as_mut(), "test").unwrap(), None);
    assert!(!db.table_exists("upgrader_version").unwrap());
    state::ensure_in_transaction(db.as_mut(), "2026-01-01T00:00:00Z").unwrap();
    state::write_version(db.as_mut(), "test", "1.2.3", "2026-01-01T00:00:00Z").unwrap();
    assert!(db.table_exists("upgrader_version").unwrap());
    assert_eq!(
        state::read_version(db.as_mut(), "test").unwrap().as_deref(),
        Some("1.2.3")
    );
    db.commit().unwrap();
    assert_eq!(
        state::read_version(db.as_mut(), "test").unwrap().as_deref(),
        Some("1.2.3")
    );
    assert_eq!(state::read_version(db.as_mut(), "other").unwrap(), None);
    assert_eq!(db.user_table_count().unwrap(), 0);
}

/// A version table of another shape (no `version` column) is an error that names the
/// column, never taken for a database nobody has upgraded: `status` and `check` (which
/// read it in one query where the backend can) exit 1, and neither changes the database.
fn own_version_table_of_another_shape_is_an_error(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    project.sql("CREATE TABLE upgrader_version (project VARCHAR(200) PRIMARY KEY)");
    let before = project.snapshot();
    let missing_column = match backend {
        Backend::Sqlite => "no such column: version",
        Backend::Postgres => "column \"version\" does not exist",
        Backend::MariaDb => "Unknown column 'version'",
    };
    for command in ["check", "status"] {
        project
            .run(&[command])
            .assert_code(1)
            .assert_stderr(missing_column);
    }
    let mut db = connect(&project);
    let error = upgrader::db::state::read_version(db.as_mut(), "test").unwrap_err();
    assert!(error.message.contains(missing_column), "{error}");
    drop(db);
    assert_eq!(project.snapshot(), before);
}

/// PostgreSQL: the client check is set as a startup option (no `SET` round trip).
#[test]
fn postgres_session_checks_for_a_dead_client() {
    let project = TestProject::on(Backend::Postgres, "1.0.0", MANIFEST);
    let mut db = connect(&project);
    let rows = db
        .query(
            "SELECT current_setting('client_connection_check_interval')",
            &[],
        )
        .unwrap();
    assert_eq!(rows[0][0].as_text(), Some("1s"));
}

on_every_backend!(
    knows_whether_still_in_transaction,
    names_the_largest_statement,
    reads_own_tables_whether_or_not_they_exist,
    own_version_table_of_another_shape_is_an_error,
);
