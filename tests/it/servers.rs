//! Throwaway database servers for the suite: one PostgreSQL cluster per test binary, made
//! with initdb from the installed server binaries in a temporary directory, listening on
//! a free loopback port, and removed when the test process ends (a watchdog process
//! stops it even if the tests panic). Each test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const INSTALL_HINT: &str = "install the PostgreSQL server with `apt-get install -y postgresql` \
     (tools/test-all does this), or put initdb and pg_ctl on PATH";

struct PgServer {
    port: u16,
}

static POSTGRES: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A server binary: on PATH, or in Debian's /usr/lib/postgresql/VERSION/bin (newest first).
fn pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin").join(name)))
        .filter(|path| path.is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// PostgreSQL refuses to run as root, so as root the server runs as `postgres` (or
/// `nobody` where there is no such user).
fn server_user() -> Option<&'static str> {
    if !is_root() {
        return None;
    }
    let exists = |user: &str| {
        Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    Some(if exists("postgres") {
        "postgres"
    } else {
        "nobody"
    })
}

fn as_server_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", user, "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn start_postgres() -> Result<PgServer, String> {
    let initdb = pg_binary("initdb").ok_or_else(|| format!("initdb not found: {INSTALL_HINT}"))?;
    let pg_ctl = pg_binary("pg_ctl").ok_or_else(|| format!("pg_ctl not found: {INSTALL_HINT}"))?;
    let user = server_user();
    let base = tempfile::Builder::new()
        .prefix("upgrader-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = base.join("data");
    std::fs::create_dir(&data).map_err(|e| e.to_string())?;
    if let Some(user) = user {
        let owned = Command::new("chown")
            .args(["-R", &format!("{user}:")])
            .arg(&base)
            .status()
            .map_err(|e| e.to_string())?;
        if !owned.success() {
            return Err(format!("chown of {} to {user} failed", base.display()));
        }
    }
    let out = as_server_user(user, &initdb)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "upgrader",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=300",
        base.display()
    );
    let out = as_server_user(user, &pg_ctl)
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(base.join("server.log"))
        .args(["-w", "-t", "60", "-o", &options, "start"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
    if !out.status.success() {
        let log = std::fs::read_to_string(base.join("server.log")).unwrap_or_default();
        return Err(format!(
            "pg_ctl start failed: {}{log}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The watchdog outlives nothing but this process: when it is gone, however it ended,
    // the server is stopped and its directory removed.
    let stop = match user {
        Some(user) => format!("runuser -u {user} -- '{}'", pg_ctl.display()),
        None => format!("'{}'", pg_ctl.display()),
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{base}'",
        pid = std::process::id(),
        data = data.display(),
        base = base.display()
    );
    // In a session of its own, so that killing the test's process group (a CI time-out)
    // does not kill the watchdog before it has cleaned up.
    let mut watchdog = if Path::new("/usr/bin/setsid").exists() {
        let mut command = Command::new("/usr/bin/setsid");
        command.arg("sh");
        command
    } else {
        Command::new("sh")
    };
    watchdog
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cleanup watchdog: {e}"))?;
    Ok(PgServer { port })
}

/// A new, empty database on the shared throwaway PostgreSQL server; panics with the
/// install command when the server binaries are missing.
pub fn postgres_database() -> String {
    let server = match POSTGRES.get_or_init(start_postgres) {
        Ok(server) => server,
        Err(message) => panic!("PostgreSQL tests need a server: {message}"),
    };
    let name = format!(
        "t{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::SeqCst)
    );
    let admin = format!("postgres://upgrader@127.0.0.1:{}/postgres", server.port);
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    format!("postgres://upgrader@127.0.0.1:{}/{name}", server.port)
}
