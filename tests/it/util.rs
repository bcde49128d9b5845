//! Helpers: temporary project directories, running the real binary, and reading the
//! database back to compare states.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// A temporary project directory with its own SQLite database.
pub struct TestProject {
    pub dir: tempfile::TempDir,
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
        let project = TestProject {
            dir: tempfile::tempdir().unwrap(),
        };
        project.write("VERSION", &format!("{version}\n"));
        project.write("upgrade.xml", manifest);
        project
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
        command
            .arg("--project")
            .arg(self.path())
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

    /// Runs SQL directly on the project database (for setting up or inspecting).
    pub fn sql(&self, sql: &str) {
        let connection = Connection::open(self.db_path()).unwrap();
        connection.execute_batch(sql).unwrap();
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        let connection = Connection::open(self.db_path()).unwrap();
        connection.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    pub fn recorded_version(&self) -> Option<String> {
        if !self.db_path().exists() {
            return None;
        }
        let connection = Connection::open(self.db_path()).unwrap();
        connection
            .query_row(
                "SELECT version FROM upgrader_version WHERE project = 'test'",
                [],
                |row| row.get(0),
            )
            .ok()
    }

    /// Every table, its schema and all its rows, as text: two equal snapshots mean the
    /// database holds the same tables with the same rows.
    pub fn snapshot(&self) -> String {
        self.snapshot_where("1 = 1")
    }

    /// Like [`snapshot`], but of the application's tables and its recorded version only:
    /// a run that starts creates upgrader's own tables, and a failed run records itself
    /// in `upgrader_history` by design.
    pub fn app_snapshot(&self) -> String {
        format!(
            "{}version: {:?}\n",
            self.snapshot_where("name NOT LIKE 'upgrader%' AND name NOT LIKE 'sqlite%'"),
            self.recorded_version()
        )
    }

    fn snapshot_where(&self, filter: &str) -> String {
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

/// Waits until `condition` holds, failing the test after `limit`.
#[track_caller]
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A statement that keeps SQLite busy for a while (about a second per 3 million rows).
pub fn slow_sql(rows: u64) -> String {
    format!("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) SELECT count(*) FROM c;")
}
