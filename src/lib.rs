//! upgrader: safe, transactional self-upgrade of database-driven applications.
//!
//! An application ships a `VERSION` file and an `upgrade.xml` manifest of named steps.
//! When the code is ahead of the database, [`Engine::run`] takes a lock, runs the planned
//! steps in one transaction, records the new version and unlocks; on failure everything
//! rolls back and the lock stays failed until a developer looks. An application may be a
//! core and its packages (`<package dir="…"/>`), each with its own version, upgraded by
//! one run.
//!
//! ```no_run
//! use upgrader::{Config, Engine, TransactionMode};
//! let config = Config::new(".")
//!     .database_url(Some("postgres://app@localhost/shop".into()))
//!     .transaction(TransactionMode::Single);
//! let engine = Engine::open(config)?;
//! let outcome = engine.run()?;
//! println!("{} is at {}", outcome.project, outcome.to);
//! # Ok::<(), upgrader::Error>(())
//! ```
//!
//! Web applications put a [`gate::Gate`] in front of their handlers: the first request
//! after a deploy starts the upgrade in a child process, the others are told to retry.
//!
//! The surface is what this page re-exports, plus [`gate`], [`engine`] (the reports) and
//! [`error`]. The other modules are public only for upgrader's own command line, tests
//! and benchmarks; they are not part of the stable API.

pub mod backup;
pub mod engine;
pub mod error;
pub mod gate;
pub mod layout;
pub mod updates;

#[doc(hidden)]
pub mod db;
#[doc(hidden)]
pub mod failpoint;
#[doc(hidden)]
pub mod files;
mod hex;
#[doc(hidden)]
pub mod lock;
#[doc(hidden)]
pub mod manifest;
#[doc(hidden)]
pub mod plan;
#[doc(hidden)]
pub mod plugin;
mod run_info;
#[doc(hidden)]
pub mod schema;
#[doc(hidden)]
pub mod sql;
#[doc(hidden)]
pub mod version;

pub use db::DatabaseUrl;
pub use engine::{
    Application, Config, Engine, PlanReport, Project, Report, RunOutcome, RunResult, Status,
    TransactionMode,
};
pub use error::{Error, Exit};
pub use layout::Layout;
pub use lock::{LockKind, LockState};
pub use sql::Dialect;
pub use version::Version;
