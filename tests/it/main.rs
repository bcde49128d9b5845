//! The integration suite: one binary, a module per area, each test on its own temporary
//! project directory and database.

mod backends;
mod backups;
mod concurrency;
mod fuzz_regressions;
mod hardening;
mod hostile_files;
mod launch;
mod lint;
mod lock_file;
mod manifest_errors;
mod mysql_rules;
mod packages;
mod pgbouncer;
mod plugin_files;
mod plugins;
mod rehearse;
mod run;
mod servers;
mod update_packages;
mod updates;
mod updates_fetch;
mod urls;
mod util;
mod verify;
