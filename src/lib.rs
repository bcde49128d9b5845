//! upgrader: safe, transactional self-upgrade of database-driven applications.
//!
//! An application ships a `VERSION` file and an `upgrade.xml` manifest of named steps.
//! When the code is ahead of the database, [`Engine::run`] takes a lock, runs the planned
//! steps in one transaction, records the new version and unlocks; on failure everything
//! rolls back and the lock stays failed until a developer looks.
//!
//! ```no_run
//! use upgrader::{Config, Engine};
//! let engine = Engine::open(Config::new("."))?;
//! let outcome = engine.run()?;
//! println!("{} is at {}", outcome.project, outcome.to);
//! # Ok::<(), upgrader::Error>(())
//! ```

pub mod db;
pub mod engine;
pub mod error;
pub mod files;
pub mod gate;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod plugin;
pub mod sql;
pub mod version;

pub use engine::{Config, Engine, Project, Report, RunOutcome, TransactionMode};
pub use error::Error;
pub use version::Version;
