//! `updates rollback`: the newest app backup put back in place, journaled like an install.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use super::extract::extract_backup;
use super::journal::{apply, finish, plan_changes, Journal};
use super::recover::recover_locked;
use super::tree::{backup_tree, walk};
use super::{fail, io_fail, record, Project};
use crate::error::Error;
use crate::lock::{LockGuard, Operation};

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    /// The app backup restored.
    pub backup: String,
    /// The code version it holds.
    pub version: String,
    /// The database backup of that version, when there is one: what `restore` brings
    /// back to match the code.
    pub database_backup: Option<String>,
    /// The copy of the tree as it was before the rollback (`…-before-rollback.zip` in
    /// `updates/Updates_Backups/`): what it replaced or removed is in it.
    pub before: String,
}

/// Restores the newest app backup of the project: the tree exactly as it was then
/// (files added since removed), journaled like an install.
pub(crate) fn rollback(project: &Project<'_>, lock_path: &Path) -> Result<RolledBack, Error> {
    let backups_dir = project.updates().join("Updates_Backups");
    let prefix = format!("app-{}-", project.name);
    let newest = std::fs::read_dir(&backups_dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".zip"))
        .filter_map(|n| {
            let stem = n.strip_suffix(".zip")?;
            let (rest, stamp) = stem.rsplit_once('-')?;
            // Only the backups installs make (not the copies rollbacks keep).
            if !crate::run_info::is_stamp(stamp) {
                return None;
            }
            let version = rest.strip_prefix(&prefix)?.to_string();
            Some((stamp.to_string(), version, n.clone()))
        })
        .max();
    let Some((_, version, name)) = newest else {
        return Err(fail(format!(
            "no app backup of {} in {}; nothing was changed",
            project.name,
            backups_dir.display()
        )));
    };
    let record = record(
        Operation::Rollback,
        Some(project.version.to_string()),
        version.clone(),
    );
    let guard = LockGuard::acquire(lock_path, record)?;
    let work = project.work();
    if work.exists() {
        return Err(fail(format!(
            "{} exists (an earlier install's work); remove it and try again",
            work.display()
        )));
    }
    let result = (|| -> Result<String, Error> {
        let new = work.join("new");
        std::fs::create_dir_all(&new).map_err(io_fail("cannot create", &new))?;
        let mut journal = Journal::create(&work.join("journal"))?;
        journal.note(&format!(
            "rollback of {} to the app backup {name} (code {} -> {version}) by pid {}",
            project.dir.display(),
            project.version,
            std::process::id()
        ))?;
        let kept = extract_backup(&backups_dir.join(&name), &new)?;
        journal.note("staged the backup's files in updates/.install/new")?;
        // What the rollback replaces or removes (uploads, logs, edits made since the
        // install among them) is kept too, never only deleted.
        let before = backup_tree(project, "-before-rollback")?;
        journal.note(&format!(
            "kept the tree as it is in updates/Updates_Backups/{before}"
        ))?;
        let now_tree = walk(project.dir)?;
        let removed: BTreeSet<String> = now_tree
            .files
            .iter()
            .filter(|f| !project.is_own(f))
            .cloned()
            .collect();
        let mut ops = plan_changes(project, &new, &removed)?;
        for dir in kept.iter() {
            let path = project.dir.join(dir);
            if !path.exists() && !ops.created_dirs.contains(dir) {
                ops.created_dirs.push(dir.clone());
            }
        }
        ops.created_dirs.sort();
        ops.prune_dirs = now_tree
            .dirs
            .iter()
            .filter(|d| !project.is_own(d) && !kept.contains(*d))
            .cloned()
            .collect();
        apply(project, &ops, &mut journal)?;
        finish(project.dir, &ops)?;
        Ok(before)
    })();
    let before = match result {
        Ok(before) => before,
        Err(error) => {
            if let Err(undo) = recover_locked(project.dir) {
                log::error!("could not undo the rollback: {undo}");
                guard.leave();
            }
            return Err(error);
        }
    };
    drop(guard);
    // The run that upgraded the database past this code version backed it up first, at
    // this version: the newest such backup is the one that matches the code again.
    let database_backup = crate::backup::list(&backups_dir)
        .into_iter()
        .find(|b| b.project == project.name && b.version == version)
        .map(|b| b.file);
    Ok(RolledBack {
        backup: name,
        version,
        database_backup,
        before,
    })
}
