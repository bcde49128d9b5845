//! Throwaway database servers for the suite: one PostgreSQL cluster (initdb + pg_ctl) and
//! one MariaDB server (mariadb-install-db + mariadbd) per test binary, made from the
//! installed server binaries in a temporary directory, listening on a free loopback port,
//! and removed when the test process ends (a watchdog process stops them even if the
//! tests panic). Each test gets a database of its own. A PgBouncer in transaction pooling
//! mode can stand in front of the PostgreSQL server ([`through_pgbouncer`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const INSTALL_HINT: &str = "install the PostgreSQL server with `apt-get install -y postgresql` \
     (tools/test-all does this), or put initdb and pg_ctl on PATH";

const MARIADB_HINT: &str = "install the MariaDB server with `apt-get install -y mariadb-server` \
     (tools/test-all does this), or put mariadb-install-db and mariadbd on PATH";

/// The test server's account; a password, so that every MariaDB test also checks that
/// it never shows.
pub const MARIADB_PASSWORD: &str = "mdb-s3cret";

struct PgServer {
    port: u16,
}

static POSTGRES: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A program on PATH, or in /usr/sbin and /usr/bin, which are not on every PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A server binary: on PATH, or in Debian's /usr/lib/postgresql/VERSION/bin (newest first).
fn pg_binary(name: &str) -> Option<PathBuf> {
    if let Some(found) = on_path(name) {
        return Some(found);
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

/// Servers refuse to run as root, so as root they run as their own account (`postgres`,
/// `mysql`), or `nobody` where there is no such account.
fn server_user(account: &'static str) -> Option<&'static str> {
    if !is_root() {
        return None;
    }
    let exists = Command::new("id")
        .arg(account)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    Some(if exists { account } else { "nobody" })
}

/// Gives the server's account its directory.
fn chown(user: Option<&str>, dir: &Path) -> Result<(), String> {
    let Some(user) = user else {
        return Ok(());
    };
    let owned = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !owned.success() {
        return Err(format!("chown of {} to {user} failed", dir.display()));
    }
    Ok(())
}

/// A database name no other test (or test process) uses.
fn database_name() -> String {
    format!(
        "t{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::SeqCst)
    )
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
    let user = server_user("postgres");
    let base = tempfile::Builder::new()
        .prefix("upgrader-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = base.join("data");
    std::fs::create_dir(&data).map_err(|e| e.to_string())?;
    chown(user, &base)?;
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
    let stop = match user {
        Some(user) => format!("runuser -u {user} -- '{}'", pg_ctl.display()),
        None => format!("'{}'", pg_ctl.display()),
    };
    start_watchdog(&format!(
        "{stop} -D '{}' -m immediate stop >/dev/null 2>&1; rm -rf '{}'",
        data.display(),
        base.display()
    ))?;
    Ok(PgServer { port })
}

/// Runs `cleanup` (a shell command) once this test process is gone, however it ended.
fn start_watchdog(cleanup: &str) -> Result<(), String> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {cleanup}",
        pid = std::process::id(),
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
    Ok(())
}

struct MariaDbServer {
    port: u16,
}

static MARIADB: OnceLock<Result<MariaDbServer, String>> = OnceLock::new();

fn start_mariadb() -> Result<MariaDbServer, String> {
    let install_db = on_path("mariadb-install-db")
        .ok_or_else(|| format!("mariadb-install-db not found: {MARIADB_HINT}"))?;
    let mariadbd = on_path("mariadbd")
        .or_else(|| on_path("mysqld"))
        .ok_or_else(|| format!("mariadbd not found: {MARIADB_HINT}"))?;
    // As root, the server switches to an unprivileged account (`--user`).
    let user = server_user("mysql");
    let base = tempfile::Builder::new()
        .prefix("upgrader-mariadb-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = base.join("data");
    let init = base.join("init.sql");
    std::fs::write(
        &init,
        format!(
            "CREATE USER IF NOT EXISTS 'upgrader'@'127.0.0.1' IDENTIFIED BY '{MARIADB_PASSWORD}';\n\
             GRANT ALL ON *.* TO 'upgrader'@'127.0.0.1' WITH GRANT OPTION;\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    chown(user, &base)?;
    let mut install = Command::new(&install_db);
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]);
    if let Some(user) = user {
        install.arg(format!("--user={user}"));
    }
    let out = install
        .output()
        .map_err(|e| format!("cannot run mariadb-install-db: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let mut server = Command::new(&mariadbd);
    server
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", base.join("mariadb.sock").display()))
        .arg(format!("--pid-file={}", base.join("mariadb.pid").display()))
        .arg(format!("--log-error={}", base.join("server.log").display()))
        .arg(format!("--init-file={}", init.display()))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-buffer-pool-size=128M",
            "--max-connections=500",
        ]);
    if let Some(user) = user {
        server.arg(format!("--user={user}"));
    }
    let mut child = server
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mariadbd: {e}"))?;
    start_watchdog(&format!(
        "kill -9 {} 2>/dev/null; sleep 0.5; rm -rf '{}'",
        child.id(),
        base.display()
    ))?;
    let url = format!("mysql://upgrader:{MARIADB_PASSWORD}@127.0.0.1:{port}/mysql");
    let started = std::time::Instant::now();
    loop {
        if mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).is_ok() {
            return Ok(MariaDbServer { port });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(base.join("server.log")).unwrap_or_default();
            return Err(format!("mariadbd exited ({status}): {log}"));
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let log = std::fs::read_to_string(base.join("server.log")).unwrap_or_default();
            return Err(format!(
                "mariadbd did not accept connections within 60 s: {log}"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A new, empty database on the shared throwaway MariaDB server; panics with the install
/// command when the server binaries are missing.
pub fn mariadb_database() -> String {
    let server = match MARIADB.get_or_init(start_mariadb) {
        Ok(server) => server,
        Err(message) => panic!("MariaDB tests need a server: {message}"),
    };
    let name = database_name();
    let base = format!(
        "mysql://upgrader:{MARIADB_PASSWORD}@127.0.0.1:{}",
        server.port
    );
    let mut admin = mysql::Conn::new(mysql::Opts::from_url(&format!("{base}/mysql")).unwrap())
        .unwrap_or_else(|e| panic!("cannot reach the test MariaDB server: {e}"));
    mysql::prelude::Queryable::query_drop(&mut admin, format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    format!("{base}/{name}")
}

/// A new, empty database on the shared throwaway PostgreSQL server; panics with the
/// install command when the server binaries are missing.
pub fn postgres_database() -> String {
    let server = match POSTGRES.get_or_init(start_postgres) {
        Ok(server) => server,
        Err(message) => panic!("PostgreSQL tests need a server: {message}"),
    };
    let name = database_name();
    let admin = format!("postgres://upgrader@127.0.0.1:{}/postgres", server.port);
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    format!("postgres://upgrader@127.0.0.1:{}/{name}", server.port)
}

const PGBOUNCER_HINT: &str = "install PgBouncer with `apt-get install -y pgbouncer` \
     (tools/test-all does this), or put pgbouncer on PATH";

struct PgBouncer {
    port: u16,
}

static PGBOUNCER: OnceLock<Result<PgBouncer, String>> = OnceLock::new();

/// How many server connections PgBouncer keeps per database and user: few, so that
/// concurrent clients share them, as they do in production.
pub const PGBOUNCER_POOL_SIZE: usize = 4;

/// A throwaway PgBouncer in transaction pooling mode in front of the throwaway PostgreSQL
/// server, for any of its databases (`* =`), trusting the same account.
fn start_pgbouncer(postgres_port: u16) -> Result<PgBouncer, String> {
    let pgbouncer =
        on_path("pgbouncer").ok_or_else(|| format!("pgbouncer not found: {PGBOUNCER_HINT}"))?;
    // It refuses to run as root, like the servers.
    let user = server_user("postgres");
    let base = tempfile::Builder::new()
        .prefix("upgrader-pgbouncer-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let port = free_port();
    let config = base.join("pgbouncer.ini");
    std::fs::write(base.join("users.txt"), "\"upgrader\" \"\"\n").map_err(|e| e.to_string())?;
    std::fs::write(
        &config,
        format!(
            "[databases]\n\
             * = host=127.0.0.1 port={postgres_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {base}/users.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {PGBOUNCER_POOL_SIZE}\n\
             max_client_conn = 1000\n\
             logfile = {base}/pgbouncer.log\n\
             pidfile = {base}/pgbouncer.pid\n",
            base = base.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    chown(user, &base)?;
    let mut child = as_server_user(user, &pgbouncer)
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start pgbouncer: {e}"))?;
    start_watchdog(&format!(
        "kill -9 $(cat '{base}/pgbouncer.pid' 2>/dev/null) {pid} 2>/dev/null; rm -rf '{base}'",
        base = base.display(),
        pid = child.id()
    ))?;
    let started = std::time::Instant::now();
    loop {
        let url = format!("postgres://upgrader@127.0.0.1:{port}/postgres");
        if let Ok(mut client) = postgres::Client::connect(&url, postgres::NoTls) {
            if client.simple_query("SELECT 1").is_ok() {
                return Ok(PgBouncer { port });
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            let log = std::fs::read_to_string(base.join("pgbouncer.log")).unwrap_or_default();
            return Err(format!("pgbouncer exited ({status}): {stderr}{log}"));
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let log = std::fs::read_to_string(base.join("pgbouncer.log")).unwrap_or_default();
            return Err(format!(
                "pgbouncer did not accept connections within 30 s: {log}"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The URL of `database_url` (a database of the throwaway PostgreSQL server) through the
/// throwaway PgBouncer; panics with the install command when pgbouncer is missing.
pub fn through_pgbouncer(database_url: &str) -> String {
    let postgres = match POSTGRES.get_or_init(start_postgres) {
        Ok(server) => server,
        Err(message) => panic!("PostgreSQL tests need a server: {message}"),
    };
    let bouncer = match PGBOUNCER.get_or_init(|| start_pgbouncer(postgres.port)) {
        Ok(bouncer) => bouncer,
        Err(message) => panic!("PgBouncer tests need pgbouncer: {message}"),
    };
    let direct = format!("127.0.0.1:{}/", postgres.port);
    assert!(
        database_url.contains(&direct),
        "{database_url} is not on the test server"
    );
    database_url.replace(&direct, &format!("127.0.0.1:{}/", bouncer.port))
}
