//! MySQL and MariaDB backups: `mariadb-dump` (or `mysqldump`) `--single-transaction`
//! with routines, triggers and events, its output gzip-compressed by us (`.sql.gz`);
//! restored with the `mariadb` (or `mysql`) client after the database is emptied.
//!
//! The tools connect where upgrader's own connection does: the URL becomes a private
//! option file (mode 0600 in a directory of mode 0700, removed afterwards) read with
//! `--defaults-file`, so the password never reaches the command line and neither the
//! caller's option files nor their `MYSQL*` variables can send the tool elsewhere.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::progress::Progress;
use super::tool;
use super::RestoreError;
use crate::db::{Backend, ServerUrl, Value};

/// The dump tool's names, newest first.
const DUMPERS: &[&str] = &["mariadb-dump", "mysqldump"];

/// The client's names, newest first.
const CLIENTS: &[&str] = &["mariadb", "mysql"];

/// What to install when a tool is missing.
const INSTALL: &str =
    "install the MariaDB client (e.g. `apt-get install mariadb-client`), which has both";

/// The largest statement either tool sends or reads (the server's own limit still
/// applies): a row with a large BLOB is one `INSERT`, and the tools' defaults (16 MiB,
/// 24 MiB) are lower than what the server may hold.
const MAX_PACKET: &str = "--max-allowed-packet=1G";

/// How much of a dump's start and end [`check`] looks at.
const EDGE: usize = 512;

/// Chunks passed between the tools and the files.
const CHUNK: usize = 256 * 1024;

/// Dumps the database into `dest` (a new file), compressed.
pub(crate) fn dump(url: &ServerUrl, dest: &Path) -> Result<(), String> {
    let Some(program) = tool::candidates(DUMPERS, &[]).into_iter().next() else {
        return Err(format!(
            "mariadb-dump (or mysqldump) not found on PATH; {INSTALL}"
        ));
    };
    let name = file_name(&program);
    let connection = Connection::new(url)?;
    let mut command = connection.command(&program);
    command.args([
        // One consistent snapshot of InnoDB tables, without LOCK TABLES (which needs a
        // privilege of its own and would block the application meanwhile).
        "--single-transaction",
        "--skip-lock-tables",
        "--routines",
        "--triggers",
        "--events",
        // Exact bytes: binary columns as hex literals, text in a character set that
        // holds every character.
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--add-drop-table",
        // Tablespace statements need the PROCESS privilege on MySQL 8 and are not the
        // database's.
        "--no-tablespaces",
        MAX_PACKET,
    ]);
    if !is_mariadb(&program) {
        // MySQL's own mysqldump: no `SET @@GLOBAL.GTID_PURGED` (which fails on a server
        // that has executed transactions, and needs FLUSH TABLES WITH READ LOCK), and no
        // query of a MySQL 8 table that MariaDB servers lack.
        command.args(["--set-gtid-purged=OFF", "--column-statistics=0"]);
    }
    // The database alone, without `--databases`: no `CREATE DATABASE`/`USE`, so the
    // restore goes where its URL says.
    command
        .arg("--")
        .arg(&connection.database)
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| tool::cannot_start(&program, &e))?;
    let stderr = tool::Stderr::of(&mut child);
    let output = child.stdout.take().expect("piped");
    let written = compress(output, dest);
    if written.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("{name}: {e}"))?;
    let said = url.scrub(&stderr.text());
    drop(connection);
    written.map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    tool::outcome(&name, status, said)
}

/// Replaces the database with the backup `source` (checked by [`check`]): every table,
/// view, sequence, routine and event of the database is dropped, then the dump is fed
/// to the client. Not transactional (MySQL commits every DDL statement): an error after
/// the client started says the database may be partly restored.
pub(crate) fn restore(
    url: &ServerUrl,
    db: &mut dyn Backend,
    source: &Path,
) -> Result<(), RestoreError> {
    let unchanged = RestoreError::Unchanged;
    let Some(program) = tool::candidates(CLIENTS, &[]).into_iter().next() else {
        return Err(unchanged(format!(
            "mariadb (or mysql), the client, not found on PATH; {INSTALL}; nothing was changed"
        )));
    };
    let name = file_name(&program);
    let size = std::fs::metadata(source)
        .map_err(|e| unchanged(format!("cannot read it: {e}; nothing was changed")))?
        .len();
    let file = std::fs::File::open(source)
        .map_err(|e| unchanged(format!("cannot read it: {e}; nothing was changed")))?;
    // Dropped by the client, in the stream it reads: one that cannot connect leaves
    // the database as it was.
    let prelude = clearing(db).map_err(|e| unchanged(format!("{e}; nothing was changed")))?;
    let connection = Connection::new(url).map_err(unchanged)?;
    let mut command = connection.command(&program);
    command
        .args([
            "--batch",
            // The dump's bytes as they are: no `\r\n` made `\n` in routine bodies.
            "--binary-mode",
            // Comments inside routine and trigger bodies are part of them.
            "--comments",
            "--default-character-set=utf8mb4",
            MAX_PACKET,
        ])
        .arg(arg("--database=", connection.database.as_ref()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = command.spawn().map_err(|e| {
        unchanged(format!(
            "{}; nothing was changed",
            tool::cannot_start(&program, &e)
        ))
    })?;
    let stderr = tool::Stderr::of(&mut child);
    let mut input = child.stdin.take().expect("piped");
    let fed = feed(&prelude, file, size, &mut input);
    drop(input);
    let partly = |what: String| {
        RestoreError::Partial(format!(
            "{what}; the database may be partly restored (MySQL and MariaDB cannot undo \
             table changes): run restore again, with this backup or another"
        ))
    };
    if let Err(FeedError::Read(error)) = &fed {
        // Stopped before the client sees the end of input and carries on.
        let _ = child.kill();
        let _ = child.wait();
        return Err(partly(format!("cannot read {}: {error}", source.display())));
    }
    let status = child.wait().map_err(|e| partly(format!("{name}: {e}")))?;
    drop(connection);
    tool::outcome(&name, status, url.scrub(&stderr.text())).map_err(partly)?;
    if let Err(FeedError::Write(error)) = fed {
        return Err(partly(format!("cannot pass the backup to {name}: {error}")));
    }
    Ok(())
}

/// Checks, before anything is touched, that `path` is a whole gzip-compressed dump:
/// every byte decompresses (the gzip checksum holds), its text starts with a
/// `mariadb-dump`/`mysqldump` header and ends with the line the tool writes when it
/// completed.
pub(crate) fn check(path: &Path) -> Result<(), String> {
    let damaged = |e: std::io::Error| format!("not a whole gzip-compressed dump: {e}");
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let size = file.metadata().map_err(damaged)?.len();
    let mut decoder = MultiGzDecoder::new(Counting::new(file));
    let mut progress = Progress::new("checking the backup", Some(size));
    let mut buffer = vec![0; CHUNK];
    let mut head: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(damaged(error)),
        };
        let chunk = &buffer[..n];
        if head.len() < EDGE {
            let wanted = (EDGE - head.len()).min(n);
            head.extend_from_slice(&chunk[..wanted]);
        }
        tail.extend_from_slice(&chunk[n.saturating_sub(EDGE)..]);
        if tail.len() > EDGE {
            tail.drain(..tail.len() - EDGE);
        }
        progress.set(decoder.get_ref().count, None);
    }
    let head = String::from_utf8_lossy(&head);
    if !(head.contains("MariaDB dump") || head.contains("MySQL dump")) {
        return Err("not a gzip-compressed mariadb-dump or mysqldump file".into());
    }
    if !String::from_utf8_lossy(&tail).contains("-- Dump completed") {
        return Err(
            "an incomplete dump (it lacks the `-- Dump completed` line the tool writes last)"
                .into(),
        );
    }
    Ok(())
}

/// The statements that empty the database upgrader is connected to: its tables,
/// views, sequences, routines and events (triggers go with their tables), the foreign
/// keys between tables not checked.
fn clearing(db: &mut dyn Backend) -> Result<String, String> {
    let rows = db
        .query(
            "SELECT 'table', table_type, table_name FROM information_schema.tables \
             WHERE table_schema = DATABASE() \
             UNION ALL SELECT 'routine', routine_type, routine_name \
             FROM information_schema.routines WHERE routine_schema = DATABASE() \
             UNION ALL SELECT 'event', 'EVENT', event_name \
             FROM information_schema.events WHERE event_schema = DATABASE()",
            &[],
        )
        .map_err(|e| format!("cannot list what the database holds: {}", e.message))?;
    let (mut tables, mut views, mut sequences, mut rest) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        let text = |i: usize| row.get(i).and_then(Value::as_text).unwrap_or_default();
        let (kind, subtype, name) = (text(0), text(1), quoted_name(text(2)));
        match (kind, subtype) {
            ("table", "VIEW") => views.push(name),
            ("table", "SEQUENCE") => sequences.push(name),
            // The session's own temporary tables (MariaDB 11.2 lists them) are not the
            // database's; the listing session has none anyway.
            ("table", "TEMPORARY" | "SYSTEM VIEW") => {}
            ("table", _) => tables.push(name),
            ("routine", "PROCEDURE" | "FUNCTION") | ("event", _) => {
                rest.push(format!("DROP {subtype} IF EXISTS {name};\n"));
            }
            _ => log::debug!("left before a restore: {kind} {subtype} {name}"),
        }
    }
    let mut sql = String::from("SET FOREIGN_KEY_CHECKS = 0;\n");
    for (what, names) in [("VIEW", views), ("TABLE", tables), ("SEQUENCE", sequences)] {
        if !names.is_empty() {
            sql.push_str(&format!("DROP {what} IF EXISTS {};\n", names.join(", ")));
        }
    }
    sql.extend(rest);
    Ok(sql)
}

/// `name` as an identifier.
fn quoted_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Why feeding the client stopped.
enum FeedError {
    /// The backup could not be read.
    Read(std::io::Error),
    /// The client stopped reading (it failed; its exit says why).
    Write(std::io::Error),
}

/// Writes `prelude`, then the decompressed dump, into the client, showing on a terminal
/// how much of the file (`size` bytes) was read.
fn feed(
    prelude: &str,
    file: std::fs::File,
    size: u64,
    into: &mut impl Write,
) -> Result<(), FeedError> {
    into.write_all(prelude.as_bytes())
        .map_err(FeedError::Write)?;
    let mut decoder = MultiGzDecoder::new(Counting::new(file));
    let mut progress = Progress::new("restoring the database", Some(size));
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = match decoder.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(FeedError::Read(error)),
        };
        into.write_all(&buffer[..n]).map_err(FeedError::Write)?;
        progress.set(decoder.get_ref().count, None);
    }
}

/// Compresses everything `from` gives into the new file `dest`, showing on a terminal
/// how large it has grown; flushed to disk, as `pg_dump` does, since the run about to
/// change the database counts on it.
fn compress(mut from: impl Read, dest: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    let mut encoder = GzEncoder::new(Counting::new(file), Compression::fast());
    let mut progress = Progress::new("backing up the database", None);
    let mut buffer = vec![0; CHUNK];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        encoder.write_all(&buffer[..n])?;
        progress.set(encoder.get_ref().count, None);
    }
    let file = encoder.finish()?.inner;
    file.sync_all()
}

/// A reader or writer that counts the bytes through it.
struct Counting<T> {
    inner: T,
    count: u64,
}

impl<T> Counting<T> {
    fn new(inner: T) -> Counting<T> {
        Counting { inner, count: 0 }
    }
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where and how the tools connect: an option file in a private directory, both
/// removed when this is dropped.
struct Connection {
    dir: PrivateDir,
    options: PathBuf,
    database: String,
}

impl Connection {
    /// The URL's connection as an option file.
    fn new(url: &ServerUrl) -> Result<Connection, String> {
        let (opts, _) = crate::db::mysql::opts(url)?;
        let database = opts.get_db_name().unwrap_or_default().to_string();
        let mut text = String::from("[client]\n");
        let mut option = |name: &str, value: &str| {
            text.push_str(&format!("{name}={}\n", option_value(value)));
        };
        // As the driver does: the socket when the URL names one, TCP otherwise (the
        // clients would take `localhost` for the default socket).
        match opts.get_socket() {
            Some(socket) => {
                option("protocol", "socket");
                option("socket", socket);
            }
            None => {
                let host = opts.get_ip_or_hostname();
                option("protocol", "tcp");
                option("host", host.trim_start_matches('[').trim_end_matches(']'));
                option("port", &opts.get_tcp_port().to_string());
            }
        }
        if let Some(user) = opts.get_user() {
            option("user", user);
        }
        if let Some(password) = opts.get_pass() {
            option("password", password);
        }
        if let Some(timeout) = opts.get_tcp_connect_timeout() {
            // In the clients' own group: the dump tools do not know the option, and
            // one they do not know in `[client]` stops them.
            text.push_str("[mysql]\n");
            text.push_str(&format!("connect-timeout={}\n", timeout.as_secs().max(1)));
        }
        let cannot = |e: std::io::Error| format!("cannot write the tools' option file: {e}");
        let dir = PrivateDir::new().map_err(cannot)?;
        let options = dir.0.join("client.cnf");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&options)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(cannot)?;
        Ok(Connection {
            dir,
            options,
            database,
        })
    }

    /// `program` reading this connection's option file, and only that one.
    fn command(&self, program: &Path) -> Command {
        let mut command = tool::command(program, "MYSQL");
        // Must be the first argument.
        command.arg(arg("--defaults-file=", self.options.as_os_str()));
        // MySQL's clients read the login-path file even then, after the option file.
        command.env("MYSQL_TEST_LOGIN_FILE", self.dir.0.join("none"));
        command
    }
}

/// `value` as an option file reads it back exactly: quoted (so `#` starts no comment
/// and spaces stay), backslashes and quotes escaped.
fn option_value(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `--name=` followed by `value`.
fn arg(name: &str, value: &std::ffi::OsStr) -> OsString {
    let mut arg = OsString::from(name);
    arg.push(value);
    arg
}

/// A tool's file name, as its messages name it.
fn file_name(program: &Path) -> String {
    program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// Whether `program` is MariaDB's (its `mysqldump` too): MySQL's takes other options.
/// One that cannot tell is taken for MariaDB's, whose options MySQL's mostly shares.
fn is_mariadb(program: &Path) -> bool {
    let Ok(output) = tool::command(program, "MYSQL")
        .arg("--no-defaults")
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
    else {
        return true;
    };
    let version = String::from_utf8_lossy(&output.stdout);
    !output.status.success() || version.contains("MariaDB") || !version.contains("Ver ")
}

/// A new directory only the current user can enter, removed with what it holds when
/// dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<PrivateDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        let mut attempt = 0;
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!(
                "upgrader-{}-{}-{nanos:x}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            // `mkdir` fails on anything already there, a symbolic link included.
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir(path)),
                Err(error)
                    if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            log::warn!("cannot remove {}: {error}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values_are_read_back_exactly() {
        assert_eq!(option_value("plain"), "\"plain\"");
        assert_eq!(option_value("a#b\"c\\d e\n"), "\"a#b\\\"c\\\\d e\\n\"",);
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quoted_name("t"), "`t`");
        assert_eq!(quoted_name("a`b"), "`a``b`");
    }
}
