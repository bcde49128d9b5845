//! PostgreSQL backups: `pg_dump --format=custom` to make them; `pg_restore` piped into
//! `psql --single-transaction` to restore them, after a prelude that clears what the
//! backup does not hold, so the restore is all or nothing and leaves the database
//! exactly as it was backed up.
//!
//! The tools connect where upgrader's own connection does: the URL becomes libpq's
//! environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, …), the
//! caller's own `PG*` variables removed, and no password on the command line.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::progress::Progress;
use super::tool;
use crate::db::ServerUrl;

/// The lease table of the pooler-safe lock (`db/postgres/lease.rs`): it holds the lock
/// of whoever runs now, so a backup neither keeps nor restores it.
const LEASE_TABLE: &str = "upgrader_lock";

/// Why a database reached through a transaction-pooling pooler is not dumped.
pub(crate) const POOLED: &str = "the database URL goes through a connection pooler in \
     transaction mode (it refused startup options, as PgBouncer does), and pg_dump would \
     leave its session settings (an empty search_path) on pooled server connections that \
     the application then uses; run upgrader with --database set to the server's own \
     address to back up";

/// Dumps the database into `dest` (a new file).
pub(crate) fn dump(url: &ServerUrl, dest: &Path) -> Result<(), String> {
    let found = tool::postgres_candidates("pg_dump");
    if found.is_empty() {
        return Err(missing("pg_dump"));
    }
    let mut mismatch = None;
    for program in &found {
        // Created here, new (never through a link planted since the name was chosen),
        // and handed to pg_dump as its output.
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let written = out
            .try_clone()
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let mut command = connected(program, url)?;
        command
            .arg("--format=custom")
            .arg("--no-password")
            .arg(format!("--exclude-table=*.{LEASE_TABLE}"))
            .stdout(out);
        let child = command
            .spawn()
            .map_err(|e| tool::cannot_start(program, &e))?;
        let (status, stderr) = tool::wait_writing(child, dest, "backing up the database")
            .map_err(|e| format!("pg_dump: {e}"))?;
        if status.success() {
            // On disk before the run changes anything: the backup is what undoes it.
            return written
                .sync_all()
                .map_err(|e| format!("cannot write {}: {e}", dest.display()));
        }
        drop(written);
        if stderr.contains("server version mismatch") {
            // An older pg_dump refuses a newer server: a newer one may be installed too.
            log::debug!("{}: {stderr}", program.display());
            mismatch = Some((program.clone(), stderr));
            let _ = std::fs::remove_file(dest);
            continue;
        }
        return tool::outcome("pg_dump", status, url.scrub(&stderr));
    }
    let (program, stderr) = mismatch.expect("every candidate was refused for its version");
    Err(format!(
        "{} is older than the server ({}); install the PostgreSQL client of the server's \
         version (e.g. `apt-get install postgresql-client-<version>`)",
        program.display(),
        stderr.lines().collect::<Vec<_>>().join("; ")
    ))
}

/// The schemas a restore keeps, clearing only what is in them: `public`, those that hold
/// an extension (its objects stay, as does the extension: dropping and creating it may
/// need a superuser), and the one that holds the lock's lease table.
const KEPT_SCHEMAS: &str = "SELECT n.nspname FROM pg_catalog.pg_namespace n \
     WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
     AND (n.nspname = 'public' \
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extnamespace = n.oid) \
     OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                WHERE c.relnamespace = n.oid AND c.relname = 'upgrader_lock'))";

/// The backup's table of contents without what must not be dropped and created again:
/// extensions (and their comments) and the schemas the restore keeps.
fn filtered_toc(pg_restore: &Path, source: &Path, kept: &[String]) -> Result<String, String> {
    let listed = tool::command(pg_restore, "PG")
        .arg("--list")
        .arg(source)
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| tool::cannot_start(pg_restore, &e))?;
    tool::outcome(
        "pg_restore --list",
        listed.status,
        String::from_utf8_lossy(&listed.stderr).trim().to_string(),
    )?;
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut toc = String::with_capacity(text.len());
    for line in text.lines() {
        // `ID; CATALOG OID TYPE SCHEMA NAME OWNER`, e.g. `6; 2615 16385 SCHEMA - app me`.
        let words: Vec<&str> = line.split_whitespace().collect();
        let skip = match words.as_slice() {
            [_, _, _, "EXTENSION", ..] | [_, _, _, "COMMENT", "-", "EXTENSION", ..] => true,
            [_, _, _, "SCHEMA", "-", name, ..] => kept.iter().any(|k| k == name),
            _ => false,
        };
        if skip {
            toc.push(';');
        }
        toc.push_str(line);
        toc.push('\n');
    }
    Ok(toc)
}

/// A file only this process reads and writes, removed when dropped.
struct Private(PathBuf);

impl Private {
    fn write(text: &str) -> Result<Private, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "upgrader-restore-{}-{nanos}.list",
            std::process::id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let private = Private(path);
        file.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", private.0.display()))?;
        Ok(private)
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Replaces the database with the backup `source`, in one transaction: nothing changes
/// when any part of it fails. `db`: upgrader's connection, to see which schemas stay.
pub(crate) fn restore(
    url: &ServerUrl,
    db: &mut dyn crate::db::Backend,
    source: &Path,
) -> Result<(), String> {
    // pg_restore and psql of one installation: psql must read what pg_restore writes.
    let Some(pg_restore) = tool::postgres_candidates("pg_restore")
        .into_iter()
        .find(|p| sibling(p, "psql").is_some())
    else {
        return Err(missing("pg_restore and psql"));
    };
    let psql = sibling(&pg_restore, "psql").expect("found beside pg_restore");
    let kept: Vec<String> = db
        .query(KEPT_SCHEMAS, &[])
        .map_err(|e| e.message)?
        .into_iter()
        .filter_map(|row| row.into_iter().next()?.as_text().map(str::to_string))
        .collect();
    let toc = Private::write(&filtered_toc(&pg_restore, source, &kept)?)?;
    let mut reader = tool::command(&pg_restore, "PG");
    reader
        .arg("--clean")
        .arg("--if-exists")
        .arg("--use-list")
        .arg(&toc.0)
        .arg("--file=-")
        .arg(source)
        .stdout(Stdio::piped());
    let mut reader = reader
        .spawn()
        .map_err(|e| tool::cannot_start(&pg_restore, &e))?;
    let reader_stderr = tool::Stderr::of(&mut reader);
    let mut loader = connected(&psql, url)?;
    loader
        .args([
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "--single-transaction",
        ])
        .args(["--set", "ON_ERROR_STOP=1"])
        .arg("--command")
        .arg(CLEAR)
        .args(["--file", "-"])
        // The restore's `SET`s last beyond its transaction: behind a pooler they would
        // reach the next client of the same server connection.
        .args(["--command", "RESET ALL"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut loader = match loader.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = reader.kill();
            let _ = reader.wait();
            return Err(tool::cannot_start(&psql, &error));
        }
    };
    let loader_stderr = tool::Stderr::of(&mut loader);
    let mut from = reader.stdout.take().expect("piped");
    let mut into = loader.stdin.take().expect("piped");
    let copied = copy_with_progress(&mut from, &mut into);
    drop(into);
    drop(from);
    let read = reader.wait().map_err(|e| format!("pg_restore: {e}"))?;
    let loaded = loader.wait().map_err(|e| format!("psql: {e}"))?;
    tool::outcome("pg_restore", read, reader_stderr.text())?;
    tool::outcome("psql", loaded, url.scrub(&loader_stderr.text()))?;
    copied.map_err(|e| format!("cannot pass pg_restore's output to psql: {e}"))?;
    Ok(())
}

/// `program` with the URL's connection in its environment.
fn connected(program: &Path, url: &ServerUrl) -> Result<Command, String> {
    let config = crate::db::postgres::config(url).map_err(|e| e.message)?;
    let mut command = tool::command(program, "PG");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(dir) => dir.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        command.env("PGHOST", hosts.join(","));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        command.env("PGPORT", ports.join(","));
    }
    if let Some(user) = config.get_user() {
        command.env("PGUSER", user);
    }
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", std::ffi::OsStr::from_bytes(password));
    }
    if let Some(dbname) = config.get_dbname() {
        command.env("PGDATABASE", dbname);
    }
    if let Some(options) = config.get_options() {
        command.env("PGOPTIONS", options);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        command.env("PGCONNECT_TIMEOUT", timeout.as_secs().max(1).to_string());
    }
    let ssl = match config.get_ssl_mode() {
        postgres::config::SslMode::Disable => "disable",
        postgres::config::SslMode::Require => "require",
        _ => "prefer",
    };
    command.env("PGSSLMODE", ssl);
    command.env("PGAPPNAME", "upgrader");
    Ok(command)
}

/// The tool `name` in the directory of `program`, when there is one.
fn sibling(program: &Path, name: &str) -> Option<PathBuf> {
    let candidate = program.parent()?.join(name);
    candidate.is_file().then_some(candidate)
}

fn missing(what: &str) -> String {
    format!(
        "{what} not found on PATH nor in /usr/lib/postgresql/*/bin; install the PostgreSQL \
         client (e.g. `apt-get install postgresql-client`)"
    )
}

/// Copies the SQL text pg_restore writes into psql, counting it for the progress shown on
/// a terminal.
fn copy_with_progress(from: &mut impl Read, into: &mut impl Write) -> std::io::Result<u64> {
    if !std::io::stderr().is_terminal() {
        return std::io::copy(from, into);
    }
    let mut progress = Progress::new("restoring the database", None);
    let mut buffer = vec![0; 256 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        into.write_all(&buffer[..n])?;
        total += n as u64;
        progress.set(total, None);
    }
}

/// Run before the backup's SQL, in its transaction: drops what the backup would not
/// replace, so that what the run created after the backup goes too. A user schema goes
/// whole (the backup recreates those it holds), except the ones [`KEPT_SCHEMAS`] names:
/// those keep their owner, grants and extensions, and lose their tables, views,
/// sequences, routines and types (but the lock's lease table, and extensions' objects).
const CLEAR: &str = r#"
DO $upgrader_restore$
DECLARE
    kept oid[];
    names text[];
    name text;
BEGIN
    -- Names printed schema-qualified, whatever the caller's search path.
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);
    SELECT coalesce(array_agg(n.oid), '{}') INTO kept
    FROM pg_namespace n
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      AND (n.nspname = 'public'
           OR EXISTS (SELECT 1 FROM pg_extension e WHERE e.extnamespace = n.oid)
           OR EXISTS (SELECT 1 FROM pg_class c
                      WHERE c.relnamespace = n.oid AND c.relname = 'upgrader_lock'));
    -- Names are taken before anything is dropped: a CASCADE may drop later ones first.
    SELECT coalesce(array_agg(quote_ident(n.nspname)), '{}') INTO names
    FROM pg_namespace n
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
      AND NOT n.oid = ANY (kept)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                        AND d.deptype = 'e');
    FOREACH name IN ARRAY names LOOP
        EXECUTE 'DROP SCHEMA IF EXISTS ' || name || ' CASCADE';
    END LOOP;
    SELECT coalesce(array_agg(
               CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                              WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE'
                              ELSE 'TABLE' END
               || ' IF EXISTS ' || c.oid::regclass::text), '{}') INTO names
    FROM pg_class c
    WHERE c.relnamespace = ANY (kept)
      AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
      AND c.relname <> 'upgrader_lock'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e');
    FOREACH name IN ARRAY names LOOP
        EXECUTE 'DROP ' || name || ' CASCADE';
    END LOOP;
    SELECT coalesce(array_agg(p.oid::regprocedure::text), '{}') INTO names
    FROM pg_proc p
    WHERE p.pronamespace = ANY (kept)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'e');
    FOREACH name IN ARRAY names LOOP
        EXECUTE 'DROP ROUTINE IF EXISTS ' || name || ' CASCADE';
    END LOOP;
    SELECT coalesce(array_agg(t.oid::regtype::text), '{}') INTO names
    FROM pg_type t
    WHERE t.typnamespace = ANY (kept)
      AND (t.typtype IN ('d', 'e', 'r')
           OR (t.typtype = 'c'
               AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                        AND d.deptype = 'e');
    FOREACH name IN ARRAY names LOOP
        EXECUTE 'DROP TYPE IF EXISTS ' || name || ' CASCADE';
    END LOOP;
END
$upgrader_restore$;
"#;
