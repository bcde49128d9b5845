//! The project tree as upgrader sees it: walked (files, directories, links) and zipped
//! into an app backup.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{fail, io_fail, stamp, Project};
use crate::backup::progress::Progress;
use crate::error::Error;
use crate::updates::package;

/// The files (and directories) under `root`, relative, sorted; symbolic links count as
/// files.
pub(super) struct Walked {
    pub files: Vec<String>,
    pub dirs: Vec<String>,
}

pub(super) fn walk(root: &Path) -> Result<Walked, Error> {
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
pub(super) fn backup_tree(project: &Project<'_>, suffix: &str) -> Result<String, Error> {
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
