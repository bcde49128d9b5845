//! MySQL and MariaDB backups: `mariadb-dump` (or `mysqldump`) `--single-transaction`
//! with routines, triggers and events, gzip-compressed (`.sql.gz`); restored with the
//! `mariadb` (or `mysql`) client after the database is emptied.

use std::path::Path;

use crate::db::{Backend, ServerUrl};

/// Dumps the database into `dest` (a new file), compressed.
pub(crate) fn dump(url: &ServerUrl, dest: &Path) -> Result<(), String> {
    let _ = (url, dest);
    Err("backups of MySQL and MariaDB databases are not made yet".into())
}

/// Replaces the database with the backup `source`.
pub(crate) fn restore(url: &ServerUrl, db: &mut dyn Backend, source: &Path) -> Result<(), String> {
    let _ = (url, db, source);
    Err("restoring MySQL and MariaDB databases is not supported yet".into())
}
