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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::package::{self, UpdateXml};
use crate::backup::progress::Progress;
use crate::error::Error;
use crate::failpoint::failpoint;
use crate::lock::{LockGuard, LockRecord, Operation, RecordState};
use crate::version::Version;

/// A package entry may expand at most this many times its compressed size (beyond the
/// first MiB): more is a zip bomb.
const MAX_RATIO: u64 = 200;

/// What the install or rollback changes in the project directory, and what finishing it
/// takes: written to `ops.json` before the first change.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ops {
    /// Files put in place from `new/` (`existed`: the old one moved to `old/` first).
    replace: Vec<Change>,
    /// Files moved to `old/` and not replaced.
    remove: Vec<String>,
    /// Directories made for new files, parents first.
    created_dirs: Vec<String>,
    /// Directories that go once empty (a rollback: not in the backup), when finishing.
    prune_dirs: Vec<String>,
    /// Packages moved from `Updates_Pending/` to `Updates_Installed/` (their names there).
    packages: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Change {
    path: String,
    existed: bool,
}

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
        pid: std::process::id(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        started_at: now(),
        from,
        to,
        state: RecordState::Installing,
        operation,
        ..LockRecord::default()
    }
}

fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn fail(what: impl std::fmt::Display) -> Error {
    Error::Refused(what.to_string())
}

fn io_fail<'p>(what: &str, path: &'p Path) -> impl Fn(std::io::Error) -> Error + 'p {
    let what = what.to_string();
    move |e| fail(format!("{what} {}: {e}", path.display()))
}

/// The journal: appended a line at a time, each flushed to disk before the work it
/// announces.
struct Journal {
    file: File,
}

impl Journal {
    fn create(path: &Path) -> Result<Journal, Error> {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(io_fail("cannot create the install journal", path))?;
        Ok(Journal { file })
    }

    fn note(&mut self, line: &str) -> Result<(), Error> {
        writeln!(self.file, "{} {line}", now())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| fail(format!("cannot write the install journal: {e}")))?;
        failpoint!("install-journal", fail);
        Ok(())
    }
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

/// Extracts a package's `files/` into `new`, streaming, checking every entry (the CRC,
/// the real sizes against the limits, not the header's word); returns the files written
/// (relative) and whether `files/VERSION` was one.
fn extract(
    path: &Path,
    new: &Path,
    trusted_key: &Path,
    project_dir: &Path,
) -> Result<(Vec<String>, bool), Error> {
    let shown = file_name(path);
    let refuse = |why: String| fail(format!("{shown}: {why}; nothing was installed"));
    // One handle for the signature, the central directory's checks (names, kinds,
    // duplicates) and the extraction: the package cannot be swapped between them.
    let file = super::signature::open_verified(path, trusted_key).map_err(refuse)?;
    let checked = file
        .try_clone()
        .map_err(|e| refuse(format!("cannot read it: {e}")))?;
    package::read_open(checked, path).map_err(|problem| refuse(problem.to_string()))?;
    let mut file = file;
    std::io::Seek::rewind(&mut file).map_err(|e| refuse(format!("cannot read it: {e}")))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| refuse(format!("not a zip file: {e}")))?;
    let total_size: u64 = (0..archive.len())
        .filter_map(|i| archive.by_index_data(i).ok().map(|e| e.compressed_size()))
        .sum();
    let mut progress = Progress::new(&format!("extracting {shown}"), Some(total_size));
    let mut done_compressed = 0;
    let mut written_total: u64 = 0;
    let mut files = Vec::new();
    let mut version_file = false;
    let mut buffer = vec![0; 128 * 1024];
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| refuse(format!("entry {index}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let Some(relative) = name.strip_prefix("files/") else {
            continue;
        };
        let relative = relative.trim_end_matches('/').to_string();
        if relative.is_empty() {
            continue;
        }
        let target = new.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(io_fail("cannot create", &target))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_fail("cannot create", parent))?;
        }
        let compressed = entry.compressed_size();
        // An earlier package's copy (perhaps read-only) is replaced, not written into.
        if std::fs::symlink_metadata(&target).is_ok() {
            std::fs::remove_file(&target).map_err(io_fail("cannot replace", &target))?;
        }
        let mut out = File::create(&target).map_err(io_fail("cannot write", &target))?;
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(refuse(format!("entry `{name}`: {e}"))),
            };
            written += n as u64;
            written_total += n as u64;
            if written > (1 << 20) && written > compressed.saturating_mul(MAX_RATIO) {
                return Err(refuse(format!(
                    "entry `{name}` expands more than {MAX_RATIO} times (a zip bomb?)"
                )));
            }
            if written_total > package::MAX_TOTAL_BYTES {
                return Err(refuse(format!(
                    "the files expand to more than {} GiB",
                    package::MAX_TOTAL_BYTES >> 30
                )));
            }
            out.write_all(&buffer[..n])
                .map_err(io_fail("cannot write", &target))?;
        }
        // The zip's mode when it has one (zips made on Windows have none): else the
        // replaced file's, so an executable script stays executable.
        let mode = entry.unix_mode().map(|mode| mode & 0o7777).or_else(|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(project_dir.join(&relative))
                .ok()
                .filter(std::fs::Metadata::is_file)
                .map(|meta| meta.permissions().mode() & 0o7777)
        });
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(io_fail("cannot set the permissions of", &target))?;
        }
        done_compressed += compressed;
        progress.set(done_compressed, None);
        version_file |= relative == "VERSION";
        files.push(relative);
    }
    Ok((files, version_file))
}

/// The changes that put `new/` in place and take `removed` away, each checked against
/// the tree as it is: nothing may write through a symbolic link, replace a directory with
/// a file, or a file with a directory.
fn plan_changes(
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

/// The files (and directories) under `root`, relative, sorted; symbolic links count as
/// files.
struct Walked {
    files: Vec<String>,
    dirs: Vec<String>,
}

fn walk(root: &Path) -> Result<Walked, Error> {
    let mut walked = Walked {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(io_fail("cannot read", &dir))?;
        for entry in entries {
            let entry = entry.map_err(io_fail("cannot read", &dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                return Err(fail(format!(
                    "{}: a name that is not UTF-8 cannot be kept in a zip exactly; rename it",
                    entry.path().display()
                )));
            };
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().map_err(io_fail("cannot read", &dir))?;
            if kind.is_dir() {
                walked.dirs.push(relative.clone());
                stack.push((entry.path(), relative));
            } else if kind.is_file() || kind.is_symlink() {
                walked.files.push(relative);
            } else {
                // Sockets and FIFOs belong to running processes, not to the code: neither
                // backed up nor moved (opening a FIFO would wait for a writer).
                log::debug!("left alone: {} (not a file)", entry.path().display());
            }
        }
    }
    walked.files.sort();
    walked.dirs.sort();
    Ok(walked)
}

/// Zips the project directory (but upgrader's own files) into
/// `Updates_Backups/app-<project>-<version>-<stamp><suffix>.zip`; returns its name.
fn backup_tree(project: &Project<'_>, suffix: &str) -> Result<String, Error> {
    let dir = project.updates().join("Updates_Backups");
    std::fs::create_dir_all(&dir).map_err(io_fail("cannot create", &dir))?;
    let name = format!(
        "app-{}-{}-{}{suffix}.zip",
        project.name,
        project.version,
        stamp()
    );
    let path = dir.join(&name);
    let part = dir.join(format!(".{name}.part"));
    let walked = walk(project.dir)?;
    let files: Vec<&String> = walked.files.iter().filter(|f| !project.is_own(f)).collect();
    let dirs: Vec<&String> = walked.dirs.iter().filter(|d| !project.is_own(d)).collect();
    // A backup rollback could not restore is refused before anything changes.
    for name in files.iter().chain(&dirs) {
        package::check_name(&format!("files/{name}")).map_err(|why| {
            fail(format!(
                "{name} cannot be backed up so that it restores exactly ({why}); rename it; nothing was changed"
            ))
        })?;
    }
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::symlink_metadata(project.dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new("backing up the project", Some(total));
    let out = File::create(&part).map_err(io_fail("cannot write", &part))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(out));
    let mut done = 0;
    let result = (|| -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let zip_err =
            |e: zip::result::ZipError| fail(format!("cannot write {}: {e}", part.display()));
        for relative in &dirs {
            zip.add_directory(
                format!("{relative}/"),
                zip::write::SimpleFileOptions::default(),
            )
            .map_err(zip_err)?;
        }
        for relative in &files {
            let source = project.dir.join(relative);
            let meta =
                std::fs::symlink_metadata(&source).map_err(io_fail("cannot read", &source))?;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .compression_level(Some(1))
                .unix_permissions(meta.permissions().mode() & 0o777)
                .large_file(meta.len() >= u64::from(u32::MAX));
            if meta.file_type().is_symlink() {
                let target =
                    std::fs::read_link(&source).map_err(io_fail("cannot read", &source))?;
                zip.add_symlink(relative.as_str(), target.to_string_lossy(), options)
                    .map_err(zip_err)?;
                continue;
            }
            zip.start_file(relative.as_str(), options)
                .map_err(zip_err)?;
            let mut input = File::open(&source).map_err(io_fail("cannot read", &source))?;
            done +=
                std::io::copy(&mut input, &mut zip).map_err(io_fail("cannot back up", &source))?;
            progress.set(done, None);
        }
        let mut out = zip.finish().map_err(zip_err)?;
        out.flush().map_err(io_fail("cannot write", &part))?;
        out.get_ref()
            .sync_all()
            .map_err(io_fail("cannot write", &part))?;
        Ok(())
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&part);
        return Err(error);
    }
    std::fs::rename(&part, &path).map_err(io_fail("cannot write", &path))?;
    Ok(name)
}

/// Makes the changes, after writing them down and saying so in the journal; says
/// `applied` once all are made.
fn apply(project: &Project<'_>, ops: &Ops, journal: &mut Journal) -> Result<(), Error> {
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
fn finish(project_dir: &Path, ops: &Ops) -> Result<(), Error> {
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
fn undo(project_dir: &Path, ops: &Ops) -> Result<(), Error> {
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

/// What [`recover`] found.
pub(crate) enum Recovery {
    /// No install to finish or undo.
    Nothing,
    /// One a killed process left was finished or undone: what was done, for the log.
    Done(String),
    /// A live process is installing: the project's files are changing.
    InProgress(String),
}

/// Finishes or undoes an install or rollback a killed process left, before anything else
/// reads the project: the tree ends exactly old or exactly new. Takes the lock it left
/// (state `installing`); does nothing while a live process holds the lock.
pub(crate) fn recover(project_dir: &Path) -> Result<Recovery, Error> {
    let work = work_dir(project_dir);
    let lock_path = crate::layout::Layout::new(project_dir).lock_file();
    let journal_exists = work.join("journal").exists();
    if !journal_exists {
        // An install killed after its work was cleared, before its lock was: only the
        // lock is left.
        let left = match crate::lock::inspect(&lock_path) {
            Ok(crate::lock::LockState::Stale(Some(record))) => {
                record.state == RecordState::Installing
            }
            _ => false,
        };
        if !left {
            return Ok(Recovery::Nothing);
        }
    }
    let record = record(Operation::Install, None, String::new());
    let guard = match LockGuard::take_over_install(&lock_path, record) {
        Ok(guard) => guard,
        // A live process is installing: its business; nobody reads the files meanwhile.
        Err(crate::lock::LockError::Halted(why)) if journal_exists => {
            return Ok(Recovery::InProgress(format!(
                "a code update is being installed ({why})"
            )))
        }
        Err(crate::lock::LockError::Halted(_)) => return Ok(Recovery::Nothing),
        Err(error) => return Err(error.into()),
    };
    match recover_locked(project_dir) {
        Ok(done) => {
            drop(guard);
            Ok(Recovery::Done(done))
        }
        Err(error) => {
            // Left as found for a person to look at; every command says so until then.
            guard.leave();
            Err(error)
        }
    }
}

/// [`recover`] with the lock held.
fn recover_locked(project_dir: &Path) -> Result<String, Error> {
    let work = work_dir(project_dir);
    let journal_path = work.join("journal");
    let journal = match std::fs::read_to_string(&journal_path) {
        Ok(text) => text,
        Err(_) => {
            // Staging begun before the journal: nothing outside it changed.
            if work.exists() {
                std::fs::remove_dir_all(&work).map_err(io_fail("cannot remove", &work))?;
            }
            return Ok("removed the lock of an install that had changed nothing".into());
        }
    };
    let said = |word: &str| {
        journal.lines().any(|line| {
            line.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(word))
        })
    };
    let ops: Option<Ops> = std::fs::read_to_string(work.join("ops.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    match ops {
        Some(ops) if said("applied") => {
            finish(project_dir, &ops)?;
            Ok("finished an interrupted code install".into())
        }
        Some(ops) if said("applying") => {
            undo(project_dir, &ops)?;
            Ok("undid an interrupted code install; the project is as it was".into())
        }
        None if said("applying") => Err(fail(format!(
            "an interrupted code install changed files, and its list of changes ({}) cannot be read: nothing was touched. The files it replaced are in {}, the tree before it in the newest updates/Updates_Backups/app-…zip; put the project back from them, then remove {} and {}",
            work.join("ops.json").display(),
            work.join("old").display(),
            work.display(),
            crate::layout::Layout::new(project_dir).lock_file().display()
        ))),
        // Nothing was changed yet: the staging goes.
        _ => {
            std::fs::remove_dir_all(&work).map_err(io_fail("cannot remove", &work))?;
            Ok("removed the staging of an interrupted code install; nothing had changed".into())
        }
    }
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
            if !crate::backup::is_stamp(stamp) {
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

/// Extracts an app backup (made by [`backup_tree`]) into `new`; returns its directories.
fn extract_backup(path: &Path, new: &Path) -> Result<BTreeSet<String>, Error> {
    let file = File::open(path).map_err(io_fail("cannot read", path))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| fail(format!("{}: not a zip file: {e}", path.display())))?;
    let mut dirs = BTreeSet::new();
    let mut links = BTreeMap::new();
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| fail(format!("{}: entry {index}: {e}", path.display())))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        package::check_name(&format!("files/{name}"))
            .map_err(|why| fail(format!("{}: entry `{name}`: {why}", path.display())))?;
        let relative = name.trim_end_matches('/').to_string();
        let target = new.join(&relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(io_fail("cannot create", &target))?;
            dirs.insert(relative);
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_fail("cannot create", parent))?;
        }
        if entry.is_symlink() {
            let mut link = String::new();
            entry
                .read_to_string(&mut link)
                .map_err(|e| fail(format!("{}: entry `{name}`: {e}", path.display())))?;
            links.insert(relative, link);
            continue;
        }
        let mut out = File::create(&target).map_err(io_fail("cannot write", &target))?;
        std::io::copy(&mut entry, &mut out)
            .map_err(|e| fail(format!("{}: entry `{name}`: {e}", path.display())))?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o777));
        }
    }
    for (relative, link) in links {
        std::os::unix::fs::symlink(&link, new.join(&relative))
            .map_err(io_fail("cannot create", &new.join(&relative)))?;
    }
    Ok(dirs)
}
