//! Database backups in `updates/Updates_Backups/`: made under the upgrade lock before a
//! run sends its first statement, named `db-<project>-<db version>-<UTC stamp>.<ext>`,
//! the newest `keep` of a project kept; and the listing `upgrader backups` shows.
//!
//! SQLite is copied with its online backup API (`.sqlite`), PostgreSQL dumped with
//! `pg_dump --format=custom` (`.pgdump`, [`postgres`]), MySQL and MariaDB with
//! `mariadb-dump --single-transaction` (`.sql.gz`, [`mysql`]).

mod mysql;
mod postgres;
pub(crate) mod progress;
mod tool;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::db::{Backend, DatabaseUrl};
use crate::error::Error;
use crate::run_info::{is_stamp, stamp};
use progress::Progress;

/// One backup file as `upgrader backups` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackupFile {
    /// The file name (in `updates/Updates_Backups/`).
    pub file: String,
    /// The project it was made for (the application's root project).
    pub project: String,
    /// The version the database recorded (`none` before any).
    pub version: String,
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: &'static str,
    /// Its size in bytes.
    pub size: u64,
    /// When it was made, RFC 3339 in UTC.
    pub created: String,
}

/// `sqlite`, `postgres` or `mysql`: the kind of database a URL names.
pub fn kind_of(url: &DatabaseUrl) -> &'static str {
    match url {
        DatabaseUrl::Sqlite(_) => "sqlite",
        DatabaseUrl::Postgres(_) => "postgres",
        DatabaseUrl::MySql(_) => "mysql",
    }
}

/// Refuses, before anything is touched, a file that is not a backup of a `kind`
/// database: by its name, and by its content (an SQLite file, pg_dump's magic, a whole
/// mariadb-dump file).
pub(crate) fn check_file(path: &Path, kind: &str) -> Result<(), Error> {
    let refuse =
        |why: String| Error::Refused(format!("{}: {why}; nothing was changed", path.display()));
    let metadata = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read it: {e}")))?;
    if !metadata.is_file() {
        return Err(refuse("not a file".into()));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let Some((_, backend)) = parse_name(name) else {
        return Err(refuse(
            "not a database backup (upgrader names them db-<project>-<version>-<stamp>.<sqlite|pgdump|sql.gz>)".into(),
        ));
    };
    if backend != kind {
        return Err(refuse(format!(
            "a backup of a {backend} database, and this project's database is {kind}"
        )));
    }
    match kind {
        "sqlite" => {
            let valid = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .and_then(|db| {
                db.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
                    row.get::<_, i64>(0)
                })
            });
            if let Err(error) = valid {
                return Err(refuse(format!("not an SQLite database: {error}")));
            }
        }
        "postgres" => {
            // pg_dump's custom format starts with its magic.
            if !starts_with(path, b"PGDMP") {
                return Err(refuse("not a pg_dump archive (custom format)".into()));
            }
        }
        _ => {
            // The whole file: a damaged or cut one is found before the database is
            // emptied for it.
            mysql::check(path).map_err(refuse)?;
        }
    }
    Ok(())
}

fn starts_with(path: &Path, magic: &[u8]) -> bool {
    let mut head = vec![0; magic.len()];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut head))
        .is_ok()
        && head == magic
}

/// The extension of a backup of this database.
fn extension(url: &DatabaseUrl) -> &'static str {
    match url {
        DatabaseUrl::Sqlite(_) => "sqlite",
        DatabaseUrl::Postgres(_) => "pgdump",
        DatabaseUrl::MySql(_) => "sql.gz",
    }
}

/// The backend a backup's file name says it holds, and the name without the extension.
fn backend_of(name: &str) -> Option<(&str, &'static str)> {
    [
        (".sqlite", "sqlite"),
        (".pgdump", "postgres"),
        (".sql.gz", "mysql"),
    ]
    .into_iter()
    .find_map(|(extension, backend)| Some((name.strip_suffix(extension)?, backend)))
}

/// Backs the database up into `dir` before a run; `None` when this connection cannot be
/// backed up (the unit tests' recording backend). An error says what failed and that
/// `--no-backup` skips it; nothing was changed.
pub(crate) fn make(
    url: &DatabaseUrl,
    db: &mut dyn Backend,
    dir: &Path,
    project: &str,
    version: Option<&str>,
    keep: usize,
) -> Result<Option<PathBuf>, Error> {
    let refuse = |what: String| {
        Error::Refused(format!(
            "{what}; nothing was changed (pass --no-backup to upgrade without a backup)"
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        refuse(format!(
            "cannot create the backup folder {}: {e}",
            dir.display()
        ))
    })?;
    let base = format!(
        "db-{project}-{}-{}",
        version.unwrap_or("none"),
        stamp(std::time::SystemTime::now())
    );
    let ext = extension(url);
    // Two runs in one second get distinct names; a file is never overwritten.
    let mut path = dir.join(format!("{base}.{ext}"));
    let mut n = 2;
    while std::fs::symlink_metadata(&path).is_ok() {
        path = dir.join(format!("{base}-{n}.{ext}"));
        n += 1;
    }
    let made = match url {
        DatabaseUrl::Sqlite(_) => {
            let mut progress = Progress::new("backing up the database", None);
            db.backup_to(&path, &mut |done, total| progress.set(done, Some(total)))
                .map_err(|e| e.to_string())
        }
        DatabaseUrl::Postgres(_) if db.pooled() => Err(postgres::POOLED.into()),
        DatabaseUrl::Postgres(server) => postgres::dump(server, &path).map(|()| true),
        DatabaseUrl::MySql(server) => mysql::dump(server, &path).map(|()| true),
    };
    let made = made.map_err(|e| {
        let _ = std::fs::remove_file(&path);
        refuse(format!(
            "cannot back up the database to {}: {e}",
            path.display()
        ))
    })?;
    if !made {
        return Ok(None);
    }
    log::info!("backed up the database to {}", path.display());
    prune(dir, project, keep);
    Ok(Some(path))
}

/// Why a restore failed, and whether the database may have changed.
pub(crate) enum RestoreError {
    /// Nothing was changed (PostgreSQL restores in one transaction; SQLite's copy is
    /// atomic; a MySQL client that could not start).
    Unchanged(String),
    /// The database may be partly restored (MySQL commits every DDL statement): the
    /// lock stays failed until someone looks.
    Partial(String),
}

/// Replaces the whole database with the backup at `path` (checked by [`check_file`]),
/// under the upgrade lock the caller holds on `db`. An error says what failed; `true`
/// with it: the database may be partly restored.
pub(crate) fn restore(
    url: &DatabaseUrl,
    db: &mut dyn Backend,
    path: &Path,
) -> Result<(), (Error, bool)> {
    let fail = |e: String| {
        (
            Error::Refused(format!("cannot restore {}: {e}", path.display())),
            false,
        )
    };
    match url {
        DatabaseUrl::Sqlite(_) => {
            let mut progress = Progress::new("restoring the database", None);
            let restored = db
                .restore_from(path, &mut |done, total| progress.set(done, Some(total)))
                .map_err(|e| fail(e.to_string()))?;
            if !restored {
                return Err(fail("this connection cannot restore a backup".into()));
            }
            Ok(())
        }
        DatabaseUrl::Postgres(server) => postgres::restore(server, db, path).map_err(fail),
        DatabaseUrl::MySql(server) => mysql::restore(server, db, path).map_err(|e| match e {
            RestoreError::Unchanged(e) => fail(e),
            RestoreError::Partial(e) => (fail(e).0, true),
        }),
    }
}

/// Keeps the newest `keep` backups of `project` (by the stamp in their names).
fn prune(dir: &Path, project: &str, keep: usize) {
    let mut mine: Vec<BackupFile> = list(dir)
        .into_iter()
        .filter(|backup| backup.project == project)
        .collect();
    mine.sort_by(newest_first);
    for old in mine.iter().skip(keep) {
        if let Err(error) = std::fs::remove_file(dir.join(&old.file)) {
            log::warn!("cannot remove the old backup {}: {error}", old.file);
        }
    }
}

/// The backups in `dir`, newest first; files that are not backups are left out.
pub fn list(dir: &Path) -> Vec<BackupFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut backups: Vec<BackupFile> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (parsed, backend) = parse_name(&name)?;
            let metadata = entry.metadata().ok()?;
            metadata.is_file().then(|| BackupFile {
                file: name.clone(),
                project: parsed.0,
                version: parsed.1,
                backend,
                size: metadata.len(),
                created: parsed.2,
            })
        })
        .collect();
    backups.sort_by(newest_first);
    backups
}

/// Newest first: by the stamp, then within one second by the `-n` that a second backup
/// of that second gets (none counts as 1).
fn newest_first(a: &BackupFile, b: &BackupFile) -> std::cmp::Ordering {
    b.created
        .cmp(&a.created)
        .then(counter(&b.file).cmp(&counter(&a.file)))
        .then(b.file.cmp(&a.file))
}

/// The `-n` after the stamp in a backup's name; 1 when there is none.
fn counter(file: &str) -> u32 {
    let stem = backend_of(file.strip_prefix("db-").unwrap_or(file)).map_or(file, |(stem, _)| stem);
    match stem.rsplit_once('-') {
        Some((before, n)) if before.rsplit('-').next().is_some_and(is_stamp) => {
            n.parse().unwrap_or(1)
        }
        _ => 1,
    }
}

/// `db-<project>-<version>-<stamp>[-n].<ext>` → ((project, version, created), backend).
/// The project may hold dashes, the version one (a suffix); the stamp has none.
fn parse_name(name: &str) -> Option<((String, String, String), &'static str)> {
    let rest = name.strip_prefix("db-")?;
    let (stem, backend) = backend_of(rest)?;
    let parts: Vec<&str> = stem.split('-').collect();
    // The stamp is the last part that looks like one (a `-n` counter may follow).
    let at = parts.iter().rposition(|part| is_stamp(part))?;
    if at < 2 {
        return None;
    }
    let stamp = parts[at];
    // The version is the part before the stamp, with its suffix if that part is one.
    let (project_end, version) = if at >= 3
        && !parts[at - 1].starts_with(|c: char| c.is_ascii_digit())
        && parts[at - 1] != "none"
    {
        (at - 2, format!("{}-{}", parts[at - 2], parts[at - 1]))
    } else {
        (at - 1, parts[at - 1].to_string())
    };
    if project_end == 0 {
        return None;
    }
    let project = parts[..project_end].join("-");
    let created = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    Some(((project, version, created), backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_back() {
        let cases = [
            (
                "db-shop-1.4.0-20261202T045722Z.sqlite",
                Some(("shop", "1.4.0", "2026-12-02T04:57:22Z", "sqlite")),
            ),
            (
                "db-demo-shop-1.0.0-RC2-20261202T045722Z-2.pgdump",
                Some(("demo-shop", "1.0.0-RC2", "2026-12-02T04:57:22Z", "postgres")),
            ),
            (
                "db-shop-none-20261202T045722Z.sql.gz",
                Some(("shop", "none", "2026-12-02T04:57:22Z", "mysql")),
            ),
            ("db-shop-1.4.0-20261202T045722Z.zip", None),
            ("db-shop-1.4.0-20261202T045722Z.sql", None),
            ("app-shop-1.4.0-20261202T045722Z.sqlite", None),
            ("db-1.4.0-20261202T045722Z.sqlite", None),
            ("notes.txt", None),
        ];
        for (name, expected) in cases {
            let parsed = parse_name(name).map(|((p, v, c), b)| (p, v, c, b));
            let expected =
                expected.map(|(p, v, c, b)| (p.to_string(), v.to_string(), c.to_string(), b));
            assert_eq!(parsed, expected, "{name}");
        }
        let backup = |file: &str| BackupFile {
            file: file.into(),
            project: "shop".into(),
            version: "1.0.0".into(),
            backend: "sqlite",
            size: 1,
            created: "2026-12-02T04:57:22Z".into(),
        };
        let mut same_second = [
            backup("db-shop-1.0.0-20261202T045722Z.sqlite"),
            backup("db-shop-1.0.0-20261202T045722Z-10.sqlite"),
            backup("db-shop-1.0.0-20261202T045722Z-2.sqlite"),
        ];
        same_second.sort_by(newest_first);
        let order: Vec<&str> = same_second.iter().map(|b| b.file.as_str()).collect();
        assert_eq!(
            order,
            [
                "db-shop-1.0.0-20261202T045722Z-10.sqlite",
                "db-shop-1.0.0-20261202T045722Z-2.sqlite",
                "db-shop-1.0.0-20261202T045722Z.sqlite"
            ]
        );
        let made = stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_186_242));
        assert!(is_stamp(&made), "{made}");
    }
}
