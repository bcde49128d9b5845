//! Database URLs: a password reaches no output in any form the URL can carry it, however
//! the command ends; SQLite's URL parameters are honoured or refused by name.

use crate::on_every_backend;
use crate::util::{Backend, Run, TestProject};

const MANIFEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<upgrade project="test" initial-version="1.0.0">
  <install>
    <sql>CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)</sql>
  </install>
  <step name="one" from="1.0.0" to="1.1.0">
    <sql>INSERT INTO items (id, name) VALUES (1, 'one')</sql>
  </step>
</upgrade>
"#;

/// The password of the PostgreSQL URLs (the test server trusts every login, so any
/// password connects); MariaDB's is the server's real one.
const PG_MARK: &str = "pg-S3cretMark";

/// Every command that reads the database, as a user would type it.
const COMMANDS: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["check"],
    &["check", "--json"],
    &["plan"],
    &["plan", "--json"],
    &["history"],
    &["history", "--json"],
    &["run"],
    &["run", "--json"],
];

#[track_caller]
fn assert_hidden(run: &Run, mark: &str, what: &str) {
    assert!(
        !run.stdout.contains(mark) && !run.stderr.contains(mark),
        "{what} shows the password:\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

/// The project's URL with its password moved into the userinfo, or into a `password=`
/// query parameter: the same database, two spellings; plus the password itself.
fn password_urls(project: &TestProject) -> (Vec<String>, &'static str) {
    let url = project.url.clone().unwrap();
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, location) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    let mark = match project.backend {
        Backend::Postgres => PG_MARK,
        _ => crate::servers::MARIADB_PASSWORD,
    };
    (
        vec![
            format!("{scheme}://{user}:{mark}@{location}"),
            format!("{scheme}://{user}@{location}?password={mark}"),
        ],
        mark,
    )
}

/// Successful commands, human and JSON, with debug logging on: the URL is shown, its
/// password never.
fn password_never_shown(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let mut project = TestProject::on(backend, "1.0.0", MANIFEST);
    let (urls, mark) = password_urls(&project);
    for (index, url) in urls.iter().enumerate() {
        project.url = Some(url.clone());
        if index == 0 {
            let run = project.run(&["run"]);
            run.assert_code(0);
            assert_hidden(&run, mark, "run");
            project.write("VERSION", "1.1.0\n");
        }
        for args in COMMANDS {
            let run = project.run(args);
            assert!(run.code == 0 || run.code == 3, "{args:?}: {run:?}");
            assert_hidden(&run, mark, &format!("{args:?} with {url}"));
        }
        let status = project.run(&["status", "--json"]).json();
        let shown = status["database"].as_str().unwrap();
        assert!(shown.contains("***"), "{shown}");
        let logged = project
            .command(&["status", "--json"])
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let logged = String::from_utf8_lossy(&logged.stderr);
        assert!(
            !logged.contains(mark),
            "the debug log shows the password:\n{logged}"
        );
    }
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
}

/// A server that refuses the connection, or refuses the password: the error names the
/// URL with the password hidden, exit 1, and nothing is written.
fn password_hidden_in_connection_errors(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let mut project = TestProject::on(backend, "1.1.0", MANIFEST);
    let (urls, mark) = password_urls(&project);
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut failing: Vec<String> = urls
        .iter()
        .map(|url| {
            let (before, after) = url.split_once("127.0.0.1:").unwrap();
            let path = &after[after.find('/').unwrap()..];
            format!("{before}127.0.0.1:{closed_port}{path}")
        })
        .collect();
    if backend == Backend::MariaDb {
        // The right server, a wrong password: "access denied".
        let wrong = format!("{mark}-wrong");
        failing.extend(urls.iter().map(|url| url.replace(mark, &wrong)));
    }
    for url in &failing {
        project.url = Some(url.clone());
        for args in COMMANDS {
            let run = project.run(args);
            run.assert_code(1);
            assert_hidden(&run, mark, &format!("{args:?} with {url}"));
            assert!(
                run.stderr.contains("***") || run.stdout.contains("***"),
                "{args:?}: the URL is not shown: {run:?}"
            );
        }
        assert!(!project.lock_path().exists());
    }
}

/// URLs that cannot be parsed are not quoted (any part may be the password): exit 1, what
/// is wrong, nothing written, the same on every command.
#[test]
fn unparseable_urls_are_not_quoted() {
    const MARK: &str = "Pw-S3cretMark";
    let mut project = TestProject::new("1.0.0", MANIFEST);
    let cases = [
        (
            format!("postgres:/app:{MARK}@h/db"),
            "database URL postgres:: no // after the scheme",
        ),
        (
            format!("mysql:app:{MARK}@h/db"),
            "database URL mysql:: no // after the scheme",
        ),
        (
            format!("app:{MARK}@host/db"),
            "database URL: no // after the scheme",
        ),
        (
            format!("host=h user=app password={MARK}"),
            "database URL: key=value connection strings are not accepted",
        ),
        (
            format!("host=h password='{MARK} x' dbname=app"),
            "database URL: key=value connection strings are not accepted",
        ),
        (format!("{MARK}@h/db"), "database URL: no scheme"),
        (
            format!("postgres://app:{MARK}@h:port/db"),
            "database URL postgres://app:***@h:port/db: invalid",
        ),
        (
            format!("mysql://app:{MARK}@h/db?frobnicate=1"),
            "frobnicate",
        ),
        (
            format!("oracle://app:{MARK}@h/db"),
            "database URL oracle://…: unknown scheme",
        ),
    ];
    for (url, expected) in &cases {
        project.url = Some(url.clone());
        for args in COMMANDS {
            let run = project.run(args);
            run.assert_code(1);
            assert_hidden(&run, MARK, &format!("{args:?} with {url}"));
            let said = format!("{}{}", run.stdout, run.stderr);
            assert!(said.contains(expected), "{args:?} with {url}: {said}");
        }
    }
    assert!(!project.db_path().exists());
    assert!(!project.lock_path().exists());
}

/// `?mode=ro`: reports read the database; `run` is refused before anything is written,
/// and the file is byte for byte what it was.
#[test]
fn sqlite_read_only_url_is_honoured() {
    let project = TestProject::new("1.0.0", MANIFEST);
    project.run(&["run"]).assert_code(0);
    project.write("VERSION", "1.1.0\n");
    let before = std::fs::read(project.db_path()).unwrap();
    let url = format!("sqlite://{}?mode=ro", project.db_path().display());
    let status = project
        .run(&["status", "--json", "--database", &url])
        .json();
    assert_eq!(status["state"], "pending");
    assert_eq!(status["db_version"], "1.0.0");
    assert_eq!(status["database"], url.as_str());
    project.run(&["check", "--database", &url]).assert_code(3);
    project
        .run(&["run", "--database", &url])
        .assert_code(1)
        .assert_stderr("mode=ro opens the database read-only, and an upgrade writes to it");
    assert_eq!(std::fs::read(project.db_path()).unwrap(), before);
    assert!(!project.lock_path().exists());
    assert!(!project.path().join("upgrader.db-journal").exists());
    assert!(!project.path().join("upgrader.db-wal").exists());
    // Without the parameter the same database upgrades.
    let url = format!("sqlite://{}?mode=rw", project.db_path().display());
    project.run(&["run", "--database", &url]).assert_code(0);
    assert_eq!(project.recorded_version().as_deref(), Some("1.1.0"));
}

/// `?mode=rw` does not create a missing file; unknown parameters are refused by name.
#[test]
fn sqlite_url_parameters_are_checked() {
    let project = TestProject::new("1.0.0", MANIFEST);
    let missing = project.path().join("missing.db");
    let url = format!("sqlite://{}?mode=rw", missing.display());
    project
        .run(&["run", "--database", &url])
        .assert_code(1)
        .assert_stderr("mode=rw does not create it");
    assert!(!missing.exists());
    for (query, expected) in [
        ("cache=shared", "unknown parameter cache;"),
        ("mode=memory", "parameter mode: expected ro, rw or rwc"),
        ("immutable=1&mode=ro", "unknown parameter immutable;"),
    ] {
        let url = format!("sqlite://{}?{query}", project.db_path().display());
        for args in [&["status"][..], &["run"]] {
            let mut all = args.to_vec();
            all.extend(["--database", &url]);
            project.run(&all).assert_code(1).assert_stderr(expected);
        }
    }
    assert!(!project.db_path().exists());
    assert!(!project.lock_path().exists());
}

on_every_backend!(password_never_shown, password_hidden_in_connection_errors);
