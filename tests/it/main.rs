//! The integration suite: one binary, a module per area, each test on its own temporary
//! project directory and database.

mod concurrency;
mod hostile_files;
mod lint;
mod manifest_errors;
mod mysql_rules;
mod plugins;
mod run;
mod servers;
mod util;
