//! Extracting into the staging folder: a package's `files/` (every entry checked while it
//! streams), or an app backup for a rollback.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{fail, file_name, io_fail};
use crate::backup::progress::Progress;
use crate::error::Error;
use crate::updates::package;

/// A package entry may expand at most this many times its compressed size (beyond the
/// first MiB): more is a zip bomb.
const MAX_RATIO: u64 = 200;

/// Extracts a package's `files/` into `new`, streaming, checking every entry (the CRC,
/// the real sizes against the limits, not the header's word); returns the files written
/// (relative) and whether `files/VERSION` was one.
pub(super) fn extract(
    path: &Path,
    new: &Path,
    trusted_key: &Path,
    project_dir: &Path,
) -> Result<(Vec<String>, bool), Error> {
    let shown = file_name(path);
    let refuse = |why: String| fail(format!("{shown}: {why}; nothing was installed"));
    // One handle for the signature, the central directory's checks (names, kinds,
    // duplicates) and the extraction: the package cannot be swapped between them.
    let file = crate::updates::signature::open_verified(path, trusted_key).map_err(refuse)?;
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

/// Extracts an app backup (made by [`super::tree::backup_tree`]) into `new`; returns its directories.
pub(super) fn extract_backup(path: &Path, new: &Path) -> Result<BTreeSet<String>, Error> {
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
