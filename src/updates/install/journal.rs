//! The changes an install or rollback makes, planned against the tree as it is, written
//! to `ops.json`, announced in the journal, made by renames, then finished or undone.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{fail, io_fail, tree::walk, work_dir, Project};
use crate::error::Error;
use crate::failpoint::failpoint;
use crate::run_info::now;

/// What the install or rollback changes in the project directory, and what finishing it
/// takes: written to `ops.json` before the first change.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Ops {
    /// Files put in place from `new/` (`existed`: the old one moved to `old/` first).
    pub replace: Vec<Change>,
    /// Files moved to `old/` and not replaced.
    pub remove: Vec<String>,
    /// Directories made for new files, parents first.
    pub created_dirs: Vec<String>,
    /// Directories that go once empty (a rollback: not in the backup), when finishing.
    pub prune_dirs: Vec<String>,
    /// Packages moved from `Updates_Pending/` to `Updates_Installed/` (their names there).
    pub packages: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Change {
    path: String,
    existed: bool,
}

/// The journal: appended a line at a time, each flushed to disk before the work it
/// announces.
pub(super) struct Journal {
    file: File,
}

impl Journal {
    pub(super) fn create(path: &Path) -> Result<Journal, Error> {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(io_fail("cannot create the install journal", path))?;
        Ok(Journal { file })
    }

    pub(super) fn note(&mut self, line: &str) -> Result<(), Error> {
        writeln!(self.file, "{} {line}", now())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| fail(format!("cannot write the install journal: {e}")))?;
        failpoint!("install-journal", fail);
        Ok(())
    }
}

/// The changes that put `new/` in place and take `removed` away, each checked against
/// the tree as it is: nothing may write through a symbolic link, replace a directory with
/// a file, or a file with a directory.
pub(super) fn plan_changes(
    project: &Project<'_>,
    new: &Path,
    removed: &BTreeSet<String>,
) -> Result<Ops, Error> {
    let mut ops = Ops::default();
    let mut created = BTreeSet::new();
    for relative in walk(new)?.files {
        check_target(project, &relative)?;
        let target = project.dir.join(&relative);
        let existed = match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => {
                return Err(fail(format!(
                    "the package's file {relative} would replace the directory {}; nothing was installed",
                    target.display()
                )))
            }
            Ok(_) => true,
            Err(_) => false,
        };
        let mut parent = Path::new(&relative).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            if !project.dir.join(dir).exists() {
                created.insert(dir.to_string_lossy().into_owned());
            }
            parent = dir.parent();
        }
        ops.replace.push(Change {
            path: relative,
            existed,
        });
    }
    for relative in removed {
        if ops.replace.iter().any(|c| &c.path == relative) {
            continue;
        }
        check_target(project, relative)?;
        let target = project.dir.join(relative);
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => {
                return Err(fail(format!(
                    "<remove path=\"{relative}\"> names a directory; only files are removed; nothing was installed"
                )))
            }
            Ok(_) => ops.remove.push(relative.clone()),
            Err(_) => {}
        }
    }
    // Parents before children: BTreeSet order puts "a" before "a/b".
    ops.created_dirs = created.into_iter().collect();
    Ok(ops)
}

/// Refuses a target upgrader owns, or one reached through a symbolic link or a file.
fn check_target(project: &Project<'_>, relative: &str) -> Result<(), Error> {
    if project.is_own(relative) {
        return Err(fail(format!(
            "a package may not write {relative}; nothing was installed"
        )));
    }
    let mut dir = project.dir.to_path_buf();
    let parts: Vec<&str> = relative.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(fail(format!(
                "{relative} would be written through the symbolic link {}; nothing was installed",
                dir.display()
            )))
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(fail(format!(
                "{relative} needs {} to be a directory, and it is a file; nothing was installed",
                dir.display()
            )))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Makes the changes, after writing them down and saying so in the journal; says
/// `applied` once all are made.
pub(super) fn apply(project: &Project<'_>, ops: &Ops, journal: &mut Journal) -> Result<(), Error> {
    let work = project.work();
    let ops_path = work.join("ops.json");
    let text = serde_json::to_string(ops).expect("ops serialize");
    std::fs::write(&ops_path, text)
        .and_then(|()| File::open(&ops_path)?.sync_all())
        .map_err(io_fail("cannot write", &ops_path))?;
    journal.note(&format!(
        "applying {} files and {} removals (listed in updates/.install/ops.json); until the line \"applied\", the next upgrader command undoes them",
        ops.replace.len(),
        ops.remove.len()
    ))?;
    let (new, old) = (work.join("new"), work.join("old"));
    for dir in &ops.created_dirs {
        let path = project.dir.join(dir);
        std::fs::create_dir(&path)
            .or_else(|e| if path.is_dir() { Ok(()) } else { Err(e) })
            .map_err(io_fail("cannot create", &path))?;
        failpoint!("install-move", fail);
    }
    for change in &ops.replace {
        let target = project.dir.join(&change.path);
        if change.existed {
            move_to(&target, &old.join(&change.path))?;
        }
        move_to(&new.join(&change.path), &target)?;
    }
    for relative in &ops.remove {
        move_to(&project.dir.join(relative), &old.join(relative))?;
    }
    // The moves on disk before the journal says they are made: after a power loss the
    // journal never claims a change the directories do not hold.
    let parents: BTreeSet<&Path> = ops
        .replace
        .iter()
        .map(|change| change.path.as_str())
        .chain(ops.remove.iter().map(String::as_str))
        .filter_map(|relative| Path::new(relative).parent())
        .collect();
    for parent in parents {
        let dir = project.dir.join(parent);
        File::open(&dir)
            .and_then(|handle| handle.sync_all())
            .map_err(io_fail("cannot sync", &dir))?;
    }
    journal.note("applied; the next upgrader command finishes the install if this one does not")?;
    Ok(())
}

fn move_to(from: &Path, to: &Path) -> Result<(), Error> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_fail("cannot create", parent))?;
    }
    std::fs::rename(from, to).map_err(|e| {
        fail(format!(
            "cannot move {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })?;
    failpoint!("install-move", fail);
    Ok(())
}

/// After `applied`: moves the packages to `Updates_Installed/`, removes directories a
/// rollback emptied, and the work folder. Each part is skipped when already done, so
/// finishing again after a crash is safe.
pub(super) fn finish(project_dir: &Path, ops: &Ops) -> Result<(), Error> {
    let updates = project_dir.join(crate::layout::Layout::UPDATES);
    let (pending, installed) = (
        updates.join("Updates_Pending"),
        updates.join("Updates_Installed"),
    );
    for (file, installed_as) in &ops.packages {
        let from = pending.join(file);
        if from.exists() {
            move_to(&from, &installed.join(installed_as))?;
        }
        let signature = pending.join(format!("{file}.minisig"));
        if signature.exists() {
            move_to(
                &signature,
                &installed.join(format!("{installed_as}.minisig")),
            )?;
        }
    }
    for dir in ops.prune_dirs.iter().rev() {
        let _ = std::fs::remove_dir(project_dir.join(dir));
    }
    let work = work_dir(project_dir);
    std::fs::remove_dir_all(&work).map_err(io_fail("cannot remove", &work))
}

/// Undoes the changes of an install or rollback that did not get to `applied`, newest
/// first: files put in place are taken away, the old ones moved back, the directories
/// made for them removed. Safe to run again after a crash during it.
pub(super) fn undo(project_dir: &Path, ops: &Ops) -> Result<(), Error> {
    let work = work_dir(project_dir);
    let (new, old) = (work.join("new"), work.join("old"));
    for relative in ops.remove.iter().rev() {
        let aside = old.join(relative);
        let target = project_dir.join(relative);
        if std::fs::symlink_metadata(&aside).is_ok() && std::fs::symlink_metadata(&target).is_err()
        {
            move_to(&aside, &target)?;
        }
    }
    for change in ops.replace.iter().rev() {
        let target = project_dir.join(&change.path);
        let staged = new.join(&change.path);
        let aside = old.join(&change.path);
        // Each move is undone by the opposite move, never by deleting, so that undoing
        // again after a crash part-way through finds every file where it can tell it.
        let present = |path: &Path| std::fs::symlink_metadata(path).is_ok();
        if !present(&staged) && present(&target) && (!change.existed || present(&aside)) {
            // The new file was moved in: it goes back to the staging.
            move_to(&target, &staged)?;
        }
        if change.existed && present(&aside) && !present(&target) {
            move_to(&aside, &target)?;
        }
    }
    for dir in ops.created_dirs.iter().rev() {
        let _ = std::fs::remove_dir(project_dir.join(dir));
    }
    std::fs::remove_dir_all(&work).map_err(io_fail("cannot remove", &work))
}
