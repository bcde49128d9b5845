//! Where a project keeps its files: the one place that knows their names.

use std::path::{Path, PathBuf};

/// The files and folders of a project directory (DESIGN.md "Project directory").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// The code version file's name.
    pub const VERSION: &'static str = "VERSION";
    /// The manifest's name.
    pub const MANIFEST: &'static str = "upgrade.xml";
    /// The lock file's name.
    pub const LOCK: &'static str = "upgrade.lock";
    /// The folder of step plugin libraries.
    pub const PLUGINS: &'static str = "plugins";
    /// The folder of code update packages and backups.
    pub const UPDATES: &'static str = "updates";
    /// The default SQLite database's name.
    pub const DEFAULT_DATABASE: &'static str = "upgrader.db";

    /// The layout of the project in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        Layout { dir: dir.into() }
    }

    /// The project directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `VERSION`.
    pub fn version_file(&self) -> PathBuf {
        self.dir.join(Self::VERSION)
    }

    /// `upgrade.xml`.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(Self::MANIFEST)
    }

    /// `upgrade.lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join(Self::LOCK)
    }

    /// `plugins/`.
    pub fn plugins(&self) -> PathBuf {
        self.dir.join(Self::PLUGINS)
    }

    /// `updates/trusted.pub`: the minisign public key packages must be signed with, when
    /// it exists.
    pub fn trusted_key(&self) -> PathBuf {
        self.dir.join(Self::UPDATES).join("trusted.pub")
    }

    /// `updates/Updates_Pending/`: code update packages waiting.
    pub fn updates_pending(&self) -> PathBuf {
        self.dir.join(Self::UPDATES).join("Updates_Pending")
    }

    /// `updates/Updates_Installed/`: installed packages, renamed with a timestamp.
    pub fn updates_installed(&self) -> PathBuf {
        self.dir.join(Self::UPDATES).join("Updates_Installed")
    }

    /// `updates/Updates_Backups/`: application and database backups.
    pub fn updates_backups(&self) -> PathBuf {
        self.dir.join(Self::UPDATES).join("Updates_Backups")
    }

    /// `upgrader.db`: the embedded database used when no URL is given.
    pub fn default_database(&self) -> PathBuf {
        self.dir.join(Self::DEFAULT_DATABASE)
    }
}
