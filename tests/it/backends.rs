//! The backends through the library's `Backend` trait, on real servers: whether a
//! transaction is still open after a statement that commits behind the guard's back, the
//! largest statement each server accepts, upgrader's own tables read whether or not
//! they exist, and PostgreSQL's database lock between two connections (directly and
//! through PgBouncer).

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

/// A database error keeps the server's code for it and the driver's error as its source.
fn errors_keep_the_servers_code(backend: Backend) {
    let project = TestProject::on(backend, "1.0.0", MANIFEST);
    let mut db = connect(&project);
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        .unwrap();
    db.execute("INSERT INTO items (id) VALUES (1)").unwrap();
    let error = db.execute("INSERT INTO items (id) VALUES (1)").unwrap_err();
    let expected = match backend {
        // SQLITE_CONSTRAINT_PRIMARYKEY.
        Backend::Sqlite => "1555",
        Backend::Postgres => "23505",
        Backend::MariaDb => "1062/23000",
    };
    assert_eq!(error.code.as_deref(), Some(expected), "{error}");
    assert!(std::error::Error::source(&error).is_some(), "{error:?}");
}

on_every_backend!(
    errors_keep_the_servers_code,
    knows_whether_still_in_transaction,
    names_the_largest_statement,
    reads_own_tables_whether_or_not_they_exist,
    own_version_table_of_another_shape_is_an_error,
);

/// A PostgreSQL project, reached directly or through the test PgBouncer.
fn postgres_project(pooled: bool) -> TestProject {
    let project = TestProject::on(Backend::Postgres, "1.0.0", MANIFEST);
    project.sql("CREATE TABLE items (id INTEGER PRIMARY KEY)");
    if pooled {
        project.through_pgbouncer()
    } else {
        project
    }
}

/// Takes the database lock on a connection of its own, in a thread, and reports when it
/// has it (and, for a transaction-long lock, a transaction under it).
fn lock_in_thread(
    url: String,
    span: upgrader::db::LockSpan,
) -> (std::sync::mpsc::Receiver<()>, std::thread::JoinHandle<()>) {
    let (taken, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut db = DatabaseUrl::parse(&url).unwrap().connect().unwrap();
        db.lock(span).unwrap();
        db.begin().unwrap();
        db.execute("INSERT INTO items (id) SELECT coalesce(max(id), 0) + 1 FROM items")
            .unwrap();
        db.commit().unwrap();
        taken.send(()).unwrap();
        db.unlock().unwrap();
    });
    (receiver, thread)
}

/// Still waiting after a while: the lock keeps it out.
#[track_caller]
fn assert_still_waiting(receiver: &std::sync::mpsc::Receiver<()>) {
    assert!(
        receiver
            .recv_timeout(std::time::Duration::from_millis(700))
            .is_err(),
        "got the lock while another connection held it"
    );
}

/// A session-long lock holds across commits: another connection's lock, of either span,
/// waits until it is released, then gets it.
fn postgres_session_lock_holds_across_commits(pooled: bool) {
    use upgrader::db::LockSpan;
    let project = postgres_project(pooled);
    let mut a = connect(&project);
    a.lock(LockSpan::Session).unwrap();
    a.begin().unwrap();
    a.execute("INSERT INTO items (id) VALUES (1)").unwrap();
    a.commit().unwrap();
    let url = project.url.clone().unwrap();
    let (session, session_thread) = lock_in_thread(url.clone(), LockSpan::Session);
    let (transaction, transaction_thread) = lock_in_thread(url, LockSpan::Transaction);
    assert_still_waiting(&session);
    assert_still_waiting(&transaction);
    // Between two more of its own transactions, the holder is still the only one.
    a.begin().unwrap();
    assert!(a.commit_and_chain().unwrap());
    a.commit().unwrap();
    assert_still_waiting(&session);
    assert_still_waiting(&transaction);
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 1);
    a.unlock().unwrap();
    let limit = std::time::Duration::from_secs(20);
    session
        .recv_timeout(limit)
        .expect("the waiter got the lock");
    transaction
        .recv_timeout(limit)
        .expect("the waiter got the lock");
    session_thread.join().unwrap();
    transaction_thread.join().unwrap();
    assert_eq!(
        project.query_i64("SELECT count(*) FROM upgrader_lock"),
        0,
        "unlock leaves no lease row"
    );
}

/// A session-long lock whose process dies (SIGKILL, in the middle of a step of a per-step
/// run) is taken over at once by a waiter on the same host: nobody waits for its lease.
fn postgres_session_lock_of_a_dead_process_is_taken_over(pooled: bool) {
    use upgrader::db::LockSpan;
    let project = postgres_project(pooled);
    project.write(
        "upgrade.xml",
        r#"<upgrade project="test" initial-version="1.0.0">
  <step name="slow" from="1.0.0" to="1.1.0">
    <sql>INSERT INTO items (id) VALUES (1); SELECT pg_sleep(600);</sql>
  </step>
</upgrade>
"#,
    );
    project.write("VERSION", "1.1.0\n");
    // No backup: pg_dump is not run through a pooler (tests/it/pgbouncer.rs).
    let mut child = project
        .command(&["--no-backup", "run", "--transaction", "per-step"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::util::wait_for(
        std::time::Duration::from_secs(30),
        "the slow step to start",
        || {
            project
                .lock_json()
                .is_some_and(|lock| lock["step"] == "slow")
        },
    );
    let (session, thread) = lock_in_thread(project.url.clone().unwrap(), LockSpan::Session);
    assert_still_waiting(&session);
    child.kill().unwrap();
    child.wait().unwrap();
    session
        .recv_timeout(std::time::Duration::from_secs(15))
        .expect("the waiter took over the lock of the dead process");
    thread.join().unwrap();
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 1);
}

#[test]
fn postgres_session_lock_holds_across_commits_direct() {
    postgres_session_lock_holds_across_commits(false);
}

#[test]
fn postgres_session_lock_holds_across_commits_through_pgbouncer() {
    postgres_session_lock_holds_across_commits(true);
}

#[test]
fn postgres_session_lock_of_a_dead_process_is_taken_over_direct() {
    postgres_session_lock_of_a_dead_process_is_taken_over(false);
}

#[test]
fn postgres_session_lock_of_a_dead_process_is_taken_over_through_pgbouncer() {
    postgres_session_lock_of_a_dead_process_is_taken_over(true);
}

/// Through PgBouncer, which refuses the startup option, every transaction that holds the
/// upgrade lock still asks the server to watch for a dead client (the first finds out
/// how, the later ones just do it), and nothing of it outlives the transaction.
#[test]
fn postgres_locked_transactions_check_for_a_dead_client_through_pgbouncer() {
    use upgrader::db::LockSpan;
    let project = postgres_project(true);
    let mut db = connect(&project);
    let setting = |db: &mut Box<dyn upgrader::db::Backend>| {
        db.query(
            "SELECT current_setting('client_connection_check_interval')",
            &[],
        )
        .unwrap()[0][0]
            .as_text()
            .map(str::to_string)
    };
    db.lock(LockSpan::Transaction).unwrap();
    for _ in 0..2 {
        db.begin().unwrap();
        assert_eq!(setting(&mut db).as_deref(), Some("1s"));
        db.commit().unwrap();
    }
    db.unlock().unwrap();
    assert_eq!(setting(&mut db).as_deref(), Some("0"));
}

/// upgrader's own statements sent again in a transaction are kept prepared for the rest
/// of it, and only they: none outlives the transaction (directly or through PgBouncer),
/// a step's `DEALLOCATE ALL` does not break the next one, and a plugin's statement used
/// again after a step altered its table is parsed anew (a prepared `SELECT *` would fail
/// with "cached plan must not change result type").
fn postgres_repeated_statements_stay_inside_the_transaction(pooled: bool) {
    use upgrader::db::Value;
    let project = postgres_project(pooled);
    let mut db = connect(&project);
    let prepared = |db: &mut Box<dyn upgrader::db::Backend>| {
        let rows = db
            .query("SELECT count(*) FROM pg_prepared_statements", &[])
            .unwrap();
        rows[0][0].as_int().unwrap()
    };
    db.begin().unwrap();
    for id in 1..=3 {
        db.execute_own("INSERT INTO items (id) VALUES (?)", &[Value::Int(id)])
            .unwrap();
        db.query_texts("SELECT id FROM items WHERE id::text = ?", &["1".into()])
            .unwrap();
    }
    assert_eq!(prepared(&mut db), 2, "kept prepared once used again");
    db.execute("DEALLOCATE ALL").unwrap();
    for id in 4..=6 {
        db.execute_own("INSERT INTO items (id) VALUES (?)", &[Value::Int(id)])
            .unwrap();
    }
    for _ in 0..3 {
        assert_eq!(
            db.query("SELECT * FROM items WHERE id > ?", &[Value::Int(0)])
                .unwrap()[0]
                .len(),
            1
        );
    }
    db.execute("ALTER TABLE items ADD COLUMN note TEXT")
        .unwrap();
    let rows = db
        .query("SELECT * FROM items WHERE id > ?", &[Value::Int(0)])
        .unwrap();
    assert_eq!((rows.len(), rows[0].len()), (6, 2));
    db.commit().unwrap();
    assert_eq!(prepared(&mut db), 0, "none outlives the transaction");
    drop(db);
    assert_eq!(project.query_i64("SELECT count(*) FROM items"), 6);
}

#[test]
fn postgres_repeated_statements_stay_inside_the_transaction_direct() {
    postgres_repeated_statements_stay_inside_the_transaction(false);
}

#[test]
fn postgres_repeated_statements_stay_inside_the_transaction_through_pgbouncer() {
    postgres_repeated_statements_stay_inside_the_transaction(true);
}
