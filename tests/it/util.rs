//! Helpers: temporary project directories, running the real binary, and reading the
//! database back to compare states.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use rusqlite::Connection;

/// The database servers a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

impl Backend {
    /// The name the guard uses in its messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MariaDb => "mysql",
        }
    }
}

/// Runs `fn name(backend: Backend)` as one test per backend, in modules named after them.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::util::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::util::Backend::Postgres) } )*
        }
        mod mariadb {
            $( #[test] fn $name() { super::$name($crate::util::Backend::MariaDb) } )*
        }
    };
}

/// A temporary project directory with its own database: an SQLite file in the project,
/// or a fresh database on the shared PostgreSQL or MariaDB test server.
pub struct TestProject {
    pub dir: tempfile::TempDir,
    pub backend: Backend,
    /// The `--database` URL given to every command (none: the SQLite default).
    pub url: Option<String>,
    /// Where the test itself reads the database when `url` goes through a pooler
    /// ([`TestProject::through_pgbouncer`]): the server, directly.
    pub direct_url: Option<String>,
}

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}\nstdout:\n{}",
            self.stderr,
            self.stdout
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_upgrader")
}

impl TestProject {
    /// A project with `VERSION` and `upgrade.xml` and no scripts yet.
    pub fn new(version: &str, manifest: &str) -> TestProject {
        TestProject::on(Backend::Sqlite, version, manifest)
    }

    /// A project whose database is on `backend`.
    pub fn on(backend: Backend, version: &str, manifest: &str) -> TestProject {
        let url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(crate::servers::postgres_database()),
            Backend::MariaDb => Some(crate::servers::mariadb_database()),
        };
        let project = TestProject {
            dir: tempfile::tempdir().unwrap(),
            backend,
            url,
            direct_url: None,
        };
        project.write("VERSION", &format!("{version}\n"));
        project.write("upgrade.xml", manifest);
        project
    }

    /// Makes this project a copy of `other` (same VERSION, manifest and scripts) that
    /// uses the same database: another application server of the same deployment.
    pub fn share_database_of(&mut self, other: &TestProject) {
        for name in ["VERSION", "upgrade.xml"] {
            std::fs::copy(other.path().join(name), self.path().join(name)).unwrap();
        }
        let scripts = other.path().join("scripts");
        if scripts.is_dir() {
            for entry in std::fs::read_dir(scripts).unwrap() {
                let entry = entry.unwrap();
                self.write(
                    &format!("scripts/{}", entry.file_name().to_string_lossy()),
                    &std::fs::read_to_string(entry.path()).unwrap(),
                );
            }
        }
        self.backend = other.backend;
        self.direct_url = other.direct_url.clone();
        self.url = Some(match &other.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", other.db_path().display()),
        });
    }

    /// Makes every command reach this project's PostgreSQL database through the test
    /// PgBouncer (transaction pooling); the test's own reads still go to the server.
    pub fn through_pgbouncer(mut self) -> TestProject {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "PgBouncer pools PostgreSQL only"
        );
        let direct = self.url.clone().expect("a PostgreSQL URL");
        self.url = Some(crate::servers::through_pgbouncer(&direct));
        self.direct_url = Some(direct);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }

    pub fn db_path(&self) -> PathBuf {
        self.path().join("upgrader.db")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path().join("upgrade.lock")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin());
        command.arg("--project").arg(self.path());
        if let Some(url) = &self.url {
            command.arg("--database").arg(url);
        }
        command
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output: Output = self.command(args).output().unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn pg(&self) -> postgres::Client {
        let url = self.direct_url.as_deref().or(self.url.as_deref()).unwrap();
        postgres::Client::connect(url, postgres::NoTls).unwrap()
    }

    pub fn my(&self) -> mysql::Conn {
        mysql::Conn::new(mysql::Opts::from_url(self.url.as_deref().unwrap()).unwrap()).unwrap()
    }

    /// Runs SQL directly on the project database (for setting up or inspecting).
    pub fn sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let connection = Connection::open(self.db_path()).unwrap();
                connection.execute_batch(sql).unwrap();
            }
            Backend::Postgres => self.pg().batch_execute(sql).unwrap(),
            Backend::MariaDb => {
                let mut conn = self.my();
                for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
                    conn.query_drop(statement)
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
            }
        }
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let connection = Connection::open(self.db_path()).unwrap();
                connection.query_row(sql, [], |row| row.get(0)).unwrap()
            }
            Backend::Postgres => {
                let row = self.pg().query_one(sql, &[]).unwrap();
                row.try_get::<_, i64>(0)
                    .or_else(|_| row.try_get::<_, i32>(0).map(i64::from))
                    .unwrap()
            }
            Backend::MariaDb => self
                .my()
                .query_first::<i64, _>(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .unwrap(),
        }
    }

    /// Whether `table` has a column `column`.
    pub fn column_exists(&self, table: &str, column: &str) -> bool {
        let sql = match self.backend {
            Backend::Sqlite => {
                format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = '{column}'")
            }
            Backend::Postgres => format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' \
                 AND table_name = '{table}' AND column_name = '{column}'"
            ),
            Backend::MariaDb => format!(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = DATABASE() \
                 AND table_name = '{table}' AND column_name = '{column}'"
            ),
        };
        self.query_i64(&sql) == 1
    }

    /// How many tables exist that are not upgrader's own.
    pub fn app_table_count(&self) -> i64 {
        self.query_i64(match self.backend {
            Backend::Sqlite => {
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
                AND name NOT LIKE 'upgrader%' AND name NOT LIKE 'sqlite%'"
            }
            Backend::Postgres => {
                "SELECT count(*) FROM information_schema.tables \
                WHERE table_schema = 'public' AND table_name NOT LIKE 'upgrader%'"
            }
            Backend::MariaDb => {
                "SELECT count(*) FROM information_schema.tables \
                WHERE table_schema = DATABASE() AND table_name NOT LIKE 'upgrader%'"
            }
        })
    }

    pub fn recorded_version(&self) -> Option<String> {
        self.version_of("test")
    }

    /// The version recorded for `project` (a package of the application, say).
    pub fn version_of(&self, project: &str) -> Option<String> {
        let sql = &format!("SELECT version FROM upgrader_version WHERE project = '{project}'");
        match self.backend {
            Backend::Sqlite => {
                if !self.db_path().exists() {
                    return None;
                }
                let connection = Connection::open(self.db_path()).unwrap();
                connection.query_row(sql, [], |row| row.get(0)).ok()
            }
            Backend::Postgres => self
                .pg()
                .query_opt(sql, &[])
                .ok()
                .flatten()
                .map(|row| row.get(0)),
            Backend::MariaDb => self.my().query_first(sql).ok().flatten(),
        }
    }

    /// Every table, its schema and all its rows, as text: two equal snapshots mean the
    /// database holds the same tables with the same rows.
    pub fn snapshot(&self) -> String {
        self.snapshot_where("1 = 1", "1 = 1")
    }

    /// Like [`snapshot`], but of the application's tables and its recorded version only:
    /// a run that starts creates upgrader's own tables, and a failed run records itself
    /// in `upgrader_history` by design.
    pub fn app_snapshot(&self) -> String {
        format!(
            "{}version: {:?}\n",
            self.snapshot_where(
                "name NOT LIKE 'upgrader%' AND name NOT LIKE 'sqlite%'",
                "table_name NOT LIKE 'upgrader%'"
            ),
            self.recorded_version()
        )
    }

    fn snapshot_where(&self, filter: &str, pg_filter: &str) -> String {
        match self.backend {
            Backend::Postgres => return self.pg_snapshot(pg_filter),
            Backend::MariaDb => return self.mariadb_snapshot(pg_filter),
            Backend::Sqlite => {}
        }
        if !self.db_path().exists() {
            return "(no database file)".into();
        }
        let connection = Connection::open(self.db_path()).unwrap();
        let mut out = String::new();
        let mut tables = connection
            .prepare(&format!(
                "SELECT name, sql FROM sqlite_master WHERE {filter} ORDER BY name"
            ))
            .unwrap();
        let tables: Vec<(String, Option<String>)> = tables
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (name, sql) in tables {
            out.push_str(&format!("{name}: {}\n", sql.unwrap_or_default()));
            let kind: String = connection
                .query_row(
                    "SELECT type FROM sqlite_master WHERE name = ?",
                    [&name],
                    |r| r.get(0),
                )
                .unwrap();
            if kind != "table" || name.starts_with("sqlite_") {
                continue;
            }
            let mut rows = connection
                .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY 1"))
                .unwrap();
            let columns = rows.column_count();
            let mut cursor = rows.query([]).unwrap();
            while let Some(row) = cursor.next().unwrap() {
                let values: Vec<String> = (0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect();
                out.push_str(&format!("  {}\n", values.join(" | ")));
            }
        }
        out
    }

    /// `upgrader_lock` is left out: like the lock file, it is the lock, not the data (a
    /// lock held across commits creates it, and a backup neither keeps nor restores it).
    fn pg_snapshot(&self, filter: &str) -> String {
        let mut client = self.pg();
        let mut out = String::new();
        let tables = client
            .query(
                &format!(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public' AND {filter} \
                     AND table_name <> 'upgrader_lock' ORDER BY 1"
                ),
                &[],
            )
            .unwrap();
        for table in tables {
            let name: String = table.get(0);
            let columns = client
                .query(
                    "SELECT column_name::text, data_type::text, is_nullable::text \
                     FROM information_schema.columns WHERE table_schema = 'public' \
                     AND table_name = $1 ORDER BY ordinal_position",
                    &[&name],
                )
                .unwrap();
            let columns: Vec<String> = columns
                .iter()
                .map(|c| {
                    format!(
                        "{} {} {}",
                        c.get::<_, String>(0),
                        c.get::<_, String>(1),
                        c.get::<_, String>(2)
                    )
                })
                .collect();
            out.push_str(&format!("{name}: {}\n", columns.join(", ")));
            for row in client
                .query(&format!("SELECT t::text FROM \"{name}\" t ORDER BY 1"), &[])
                .unwrap()
            {
                out.push_str(&format!("  {}\n", row.get::<_, String>(0)));
            }
        }
        out
    }

    /// Each table's definition, rows, row count and `CHECKSUM TABLE`.
    fn mariadb_snapshot(&self, filter: &str) -> String {
        let mut conn = self.my();
        let mut out = String::new();
        for name in mariadb_tables(&mut conn, filter) {
            let (create, rows) = mariadb_table(&mut conn, &name);
            // AUTO_INCREMENT counters move on even when a transaction rolls back.
            let create: String = create
                .split_whitespace()
                .filter(|word| !word.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" ");
            let count: i64 = conn
                .query_first(format!("SELECT count(*) FROM `{name}`"))
                .unwrap()
                .unwrap();
            let checksum: Option<(String, Option<i64>)> = conn
                .query_first(format!("CHECKSUM TABLE `{name}`"))
                .unwrap();
            out.push_str(&format!(
                "{create}\n  rows: {count}, checksum: {:?}\n",
                checksum.and_then(|c| c.1)
            ));
            out.push_str(&rows);
        }
        out
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        let run = self.run(&["history", "--json"]);
        run.assert_code(0);
        run.json().as_array().unwrap().clone()
    }

    /// Reads the lock file's JSON.
    pub fn lock_json(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.lock_path()).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The MariaDB schema's tables that `filter` (SQL over `information_schema.tables`)
/// keeps, by name.
pub fn mariadb_tables(conn: &mut mysql::Conn, filter: &str) -> Vec<String> {
    conn.query(format!(
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND {filter} ORDER BY 1"
    ))
    .unwrap()
}

/// A MariaDB table's `SHOW CREATE TABLE`, and its rows ordered by the first column, a
/// line each (`  a | b`), the values as SQL literals.
pub fn mariadb_table(conn: &mut mysql::Conn, name: &str) -> (String, String) {
    let (_, create): (String, String) = conn
        .query_first(format!("SHOW CREATE TABLE `{name}`"))
        .unwrap()
        .unwrap();
    let rows: Vec<mysql::Row> = conn
        .query(format!("SELECT * FROM `{name}` ORDER BY 1"))
        .unwrap();
    let mut out = String::new();
    for row in rows {
        let values: Vec<String> = row.unwrap().into_iter().map(|v| v.as_sql(true)).collect();
        out.push_str(&format!("  {}\n", values.join(" | ")));
    }
    (create, out)
}

/// No advisory lock on the project's PostgreSQL database and no lease row: nothing a
/// process took outlived it (PgBouncer keeps server connections past their clients).
#[track_caller]
pub fn assert_nothing_held(project: &TestProject) {
    assert_eq!(
        project.query_i64(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        0,
        "an advisory lock outlived its process"
    );
    if project.query_i64("SELECT count(*) FROM pg_class WHERE relname = 'upgrader_lock'") > 0 {
        assert_eq!(
            project.query_i64("SELECT count(*) FROM upgrader_lock"),
            0,
            "a lease row outlived its process"
        );
    }
}

/// Prints a line past the test harness's output capture (which takes only `print!` and
/// `eprint!`): the long suites (the crash matrix, the races) report their size and time
/// even when they pass.
pub fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Waits until `condition` holds, failing the test after `limit`.
#[track_caller]
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A statement that keeps the database busy for about `seconds`.
pub fn slow_sql(backend: Backend, seconds: f64) -> String {
    match backend {
        // About three million rows a second with the optimised bundled SQLite.
        Backend::Sqlite => format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {}) SELECT count(*) FROM c;",
            (seconds * 3_000_000.0) as u64
        ),
        Backend::Postgres => format!("SELECT pg_sleep({seconds});"),
        Backend::MariaDb => format!("SELECT SLEEP({seconds});"),
    }
}

/// Runs `command` to its end, failing the test if it takes longer than `limit` (a FIFO
/// used to hang every command for ever).
#[track_caller]
pub fn run_within(mut command: Command, limit: Duration) -> Run {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl TestProject {
    /// The binary as [`TestProject::command`] makes it, under an address-space cap of
    /// `cap_mib` (`ulimit -v`): a command that needs more fails to allocate (a peak
    /// resident size measured with `wait4` would count the test process's own memory,
    /// which the child shares until it execs).
    pub fn capped_command(&self, cap_mib: u64, args: &[&str]) -> Command {
        let command = self.command(args);
        let mut capped = Command::new("sh");
        capped
            .arg("-c")
            .arg(format!("ulimit -v {}; exec \"$0\" \"$@\"", cap_mib * 1024))
            .arg(command.get_program())
            .args(command.get_args())
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        capped
    }

    /// Runs [`TestProject::capped_command`] to its end.
    pub fn run_capped(&self, cap_mib: u64, args: &[&str]) -> Run {
        run_within(self.capped_command(cap_mib, args), Duration::from_secs(300))
    }
}

/// The names in `dir`, sorted (hidden ones included); none when it does not exist.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every file under `dir` but the SQLite database, by its path relative to `dir`, with
/// its bytes: equal trees mean nothing was extracted, moved or written.
pub fn file_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() != "upgrader.db" {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}
