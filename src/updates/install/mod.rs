//! Installing code update packages, and rolling back to an app backup, journaled so that a
//! process killed at any moment leaves a project directory that the next command returns
//! to exactly the old tree or exactly the new one.
//!
//! While it works, everything lives in `updates/.install/`, on the project's own file
//! system so that every move is a rename:
//! - `journal`: what happened, a line each, for people (and for recovery: until it says
//!   `applied`, the changes are undone; after, they are finished);
//! - `new/`: the files to put in place (the packages extracted, in order);
//! - `old/`: the files they replace or remove, moved aside;
//! - `ops.json`: every change, written before the first is made.
//!
//! This file is the install itself; `extract.rs` stages packages and app backups,
//! `tree.rs` walks and zips the project tree, `journal.rs` plans, applies, finishes and
//! undoes the changes, `recover.rs` finishes or undoes what a killed process left, and
//! `rollback.rs` puts the newest app backup back.

mod extract;
mod journal;
mod recover;
mod rollback;
mod tree;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::package::UpdateXml;
use crate::error::Error;
use crate::lock::{LockGuard, LockRecord, Operation, RecordState};
use crate::version::Version;
use extract::extract;
use journal::{apply, finish, plan_changes, Journal};
use recover::recover_locked;
use tree::backup_tree;

pub(crate) use recover::{recover, Recovery};
pub(crate) use rollback::rollback;
pub use rollback::RolledBack;

/// What an install did.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    /// The code version before.
    pub from: String,
    /// The code version now.
    pub to: String,
    /// The packages installed, in order: their file in `Updates_Pending/` and the name
    /// they have in `Updates_Installed/` now.
    pub packages: Vec<InstalledPackage>,
    /// The app backup made first (in `updates/Updates_Backups/`).
    pub backup: String,
}

/// One package installed.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledPackage {
    /// Its file name in `Updates_Pending/`.
    pub file: String,
    /// The version it installed.
    pub version: String,
    /// Its name in `Updates_Installed/`.
    pub installed_as: String,
}

/// The project a package install or rollback works on.
pub(crate) struct Project<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub version: &'a Version,
    /// Files of the project directory that are neither backed up nor touched (the
    /// SQLite database and its companions), relative to it.
    pub keep_out: Vec<String>,
}

impl Project<'_> {
    fn updates(&self) -> PathBuf {
        self.dir.join(crate::layout::Layout::UPDATES)
    }

    fn work(&self) -> PathBuf {
        work_dir(self.dir)
    }

    /// Whether a path relative to the project belongs to upgrader, not to the tree.
    fn is_own(&self, relative: &str) -> bool {
        let first = relative.split('/').next().unwrap_or("");
        first == crate::layout::Layout::UPDATES
            || relative == crate::layout::Layout::LOCK
            || self.keep_out.iter().any(|k| k == relative)
    }
}

/// `updates/.install/`.
pub(crate) fn work_dir(project_dir: &Path) -> PathBuf {
    project_dir
        .join(crate::layout::Layout::UPDATES)
        .join(".install")
}

/// The lock record of a code install or rollback by this process.
fn record(operation: Operation, from: Option<String>, to: String) -> LockRecord {
    LockRecord {
        from,
        to,
        state: RecordState::Installing,
        ..LockRecord::by_this_process(operation)
    }
}

/// The stamp of the files an install or rollback names now.
fn stamp() -> String {
    crate::run_info::stamp(std::time::SystemTime::now())
}

fn fail(what: impl std::fmt::Display) -> Error {
    Error::Refused(what.to_string())
}

fn io_fail<'p>(what: &str, path: &'p Path) -> impl Fn(std::io::Error) -> Error + 'p {
    let what = what.to_string();
    move |e| fail(format!("{what} {}: {e}", path.display()))
}

/// Installs `packages` (paths in `Updates_Pending/`, already listed as installable, in
/// version order, each one's `requires` met by the one before) under the upgrade lock
/// (state `installing`): every package extracted and checked before anything changes,
/// the project backed up to `Updates_Backups/app-…zip`, the files put in place, the
/// packages moved to `Updates_Installed/`.
pub(crate) fn install(
    project: &Project<'_>,
    packages: &[(PathBuf, UpdateXml)],
    lock_path: &Path,
) -> Result<Installed, Error> {
    let last = packages
        .last()
        .ok_or_else(|| fail("no package to install"))?;
    let to = last.1.version.clone();
    let record = record(
        Operation::Install,
        Some(project.version.to_string()),
        to.to_string(),
    );
    let guard = LockGuard::acquire(lock_path, record)?;
    // Another install may have changed the code between the listing and the lock.
    let installed_now =
        crate::version::VersionFile::load(&crate::layout::Layout::new(project.dir).version_file())
            .map(|file| file.version)
            .map_err(|e| fail(e.to_string()))?;
    if installed_now != *project.version {
        return Err(fail(format!(
            "the code changed to version {installed_now} since the packages were checked (another install?); nothing was installed, look again with `upgrader updates list`"
        )));
    }
    let work = project.work();
    if work.exists() {
        // Left by an install that recovery could not clear: never mixed with this one.
        return Err(fail(format!(
            "{} exists (an earlier install's work); remove it and try again",
            work.display()
        )));
    }
    let result = stage_and_apply(project, packages, &to, &work);
    match result {
        Ok(installed) => {
            drop(guard);
            Ok(installed)
        }
        Err(error) => {
            // Nothing was applied unless the journal says so: recovery decides.
            if let Err(undo) = recover_locked(project.dir) {
                log::error!("could not undo the install: {undo}");
                // The lock file stays (installing): the next command tries again.
                guard.leave();
            }
            Err(error)
        }
    }
}

fn stage_and_apply(
    project: &Project<'_>,
    packages: &[(PathBuf, UpdateXml)],
    to: &Version,
    work: &Path,
) -> Result<Installed, Error> {
    let new = work.join("new");
    std::fs::create_dir_all(&new).map_err(io_fail("cannot create", &new))?;
    let mut journal = Journal::create(&work.join("journal"))?;
    let names: Vec<String> = packages
        .iter()
        .map(|(path, update)| format!("{} ({})", file_name(path), update.version))
        .collect();
    journal.note(&format!(
        "install of {} into {} (code {} -> {to}) by pid {}",
        names.join(", "),
        project.dir.display(),
        project.version,
        std::process::id()
    ))?;
    // Every package extracted (and so checked: CRC, sizes, ratio) before anything changes.
    let trusted_key = crate::layout::Layout::new(project.dir).trusted_key();
    let mut removed = BTreeSet::new();
    for (path, update) in packages {
        let (files, version_file) = extract(path, &new, &trusted_key, project.dir)?;
        if !version_file {
            // A package without `files/VERSION` installs its version all the same.
            let text = version_text(project.dir, &update.version);
            let path = new.join(crate::layout::Layout::VERSION);
            std::fs::write(&path, text).map_err(io_fail("cannot write", &path))?;
        }
        for path in &files {
            removed.remove(path);
        }
        for path in &update.removes {
            let staged = new.join(path);
            if staged.is_file() {
                std::fs::remove_file(&staged).map_err(io_fail("cannot remove", &staged))?;
            }
            removed.insert(path.clone());
        }
    }
    journal.note("staged every package's files in updates/.install/new")?;
    let mut ops = plan_changes(project, &new, &removed)?;
    let installed_dir = project.updates().join("Updates_Installed");
    let stamp = stamp();
    let mut listed = Vec::new();
    for (path, update) in packages {
        let file = file_name(path);
        let stem = file.strip_suffix(".zip").unwrap_or(&file).to_string();
        let installed_as = format!("{stem}-{stamp}.zip");
        ops.packages.push((file.clone(), installed_as.clone()));
        listed.push(InstalledPackage {
            file,
            version: update.version.to_string(),
            installed_as,
        });
    }
    std::fs::create_dir_all(&installed_dir).map_err(io_fail("cannot create", &installed_dir))?;
    let backup = backup_tree(project, "")?;
    journal.note(&format!(
        "backed up the project to updates/Updates_Backups/{backup}"
    ))?;
    apply(project, &ops, &mut journal)?;
    finish(project.dir, &ops)?;
    Ok(Installed {
        from: project.version.to_string(),
        to: to.to_string(),
        packages: listed,
        backup,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `VERSION` for `version`, in the form the installed file uses.
fn version_text(dir: &Path, version: &Version) -> String {
    let path = crate::layout::Layout::new(dir).version_file();
    match crate::version::VersionFile::load(&path) {
        Ok(crate::version::VersionFile {
            project: Some(name),
            ..
        }) => format!("PROJECT: {name}\nVERSION: {version}\n"),
        _ => format!("{version}\n"),
    }
}
