//! Code update packages (DESIGN.md "Code update packages"): zips an admin drops into
//! `updates/Updates_Pending/`, each an `update.xml` and a `files/` overlay. This part
//! reads them without extracting anything: `updates list`, and the pending packages that
//! `status` and `check` report.

pub(crate) mod fetch;
mod install;
mod package;
pub(crate) mod signature;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

pub use fetch::{FetchReport, Fetched, Skipped};
pub(crate) use install::{install, recover, rollback, Project, Recovery};
pub use install::{Installed, InstalledPackage, RolledBack};
pub use package::{parse_update_xml, UpdateXml};

/// The zip entry name check, for the fuzz targets: `Err` says why `name` is refused.
#[doc(hidden)]
pub fn check_entry_name(name: &str) -> Result<(), String> {
    package::check_name(name)
}

/// The package reader over an open file, for the fuzz targets (`path`: for messages).
#[doc(hidden)]
pub fn read_package_file(file: std::fs::File, path: &Path) -> Result<UpdateXml, String> {
    package::read_open(file, path)
        .map(|package| package.update)
        .map_err(|problem| problem.to_string())
}

use crate::engine::ReportItem;
use crate::version::Version;

/// A package in `Updates_Pending/` as `updates list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PendingPackage {
    /// The file name in `updates/Updates_Pending/`.
    pub file: String,
    /// The project `update.xml` names (null when it cannot be read).
    pub project: Option<String>,
    /// The code version it installs.
    pub version: Option<String>,
    /// The lowest installed version it applies to.
    pub requires: Option<String>,
    /// What is new, for people.
    pub notes: Option<String>,
    /// Whether its signature was checked against `updates/trusted.pub`.
    pub signed: bool,
    /// SHA-256 of the zip file, hex (only from `updates list`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The database steps installing it brings: planned from the database's version to
    /// the package's, with the manifest it carries (or the installed one).
    pub database_steps: Vec<ReportItem>,
    /// Why it cannot be installed; empty when it can.
    pub problems: Vec<String>,
    /// It is not a complete zip yet (still being copied): retried later.
    pub incomplete: bool,
    /// What its update.xml says, when it could be read.
    #[serde(skip)]
    pub(crate) update: Option<UpdateXml>,
}

impl PendingPackage {
    /// Whether it can be installed now.
    pub fn installable(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a listing compares each package with.
pub(crate) struct InstalledCode<'a> {
    /// The project's name.
    pub project: &'a str,
    /// The code version installed (`VERSION`).
    pub version: &'a Version,
    /// The installed manifest and the database's facts, to plan each package's steps
    /// (none: steps not computed).
    pub planning: Option<(&'a crate::manifest::Manifest, &'a crate::plan::DbFacts)>,
}

/// The packages in `pending` (a folder), in version order (unreadable ones last, by
/// name), each with its problems. Hidden files (downloads in progress) and signatures are
/// not packages. `hash`: compute each one's SHA-256 (reads every byte).
pub(crate) fn list(
    pending: &Path,
    trusted_key: &Path,
    installed: &InstalledCode<'_>,
    hash: bool,
) -> Vec<PendingPackage> {
    let Ok(entries) = std::fs::read_dir(pending) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".zip")
        })
        .collect();
    paths.sort();
    // Anything at the key's path (even a dangling link) means signatures are required:
    // a key that cannot be read refuses every package rather than trusting them all.
    let key = std::fs::symlink_metadata(trusted_key)
        .is_ok()
        .then(|| signature::TrustedKey::load(trusted_key));
    let mut packages: Vec<PendingPackage> = paths
        .iter()
        .map(|path| describe(path, key.as_ref(), installed, hash))
        .collect();
    packages.sort_by(|a, b| {
        let version = |p: &PendingPackage| p.update.as_ref().map(|u| u.version.clone());
        match (version(a), version(b)) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.file.cmp(&b.file)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.file.cmp(&b.file),
        }
    });
    // In version order, each package's `requires` may be met by the ones before it.
    let mut current = installed.version.clone();
    for package in &mut packages {
        let Some(update) = package.update.clone() else {
            continue;
        };
        if update.version <= current {
            package.problems.insert(
                0,
                match current == *installed.version {
                    true => format!("not newer than the installed version {current}"),
                    false => {
                        format!("not newer than {current}, which the packages before it install")
                    }
                },
            );
        } else if let Some(requires) = update.requires.as_ref().filter(|r| **r > current) {
            package.problems.insert(
                0,
                format!("it requires version {requires} installed first, and {current} would be"),
            );
        }
        if package.problems.is_empty() {
            current = update.version;
        }
    }
    packages
}

fn describe(
    path: &Path,
    key: Option<&Result<signature::TrustedKey, String>>,
    installed: &InstalledCode<'_>,
    hash: bool,
) -> PendingPackage {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut listed = PendingPackage {
        file,
        project: None,
        version: None,
        requires: None,
        notes: None,
        signed: false,
        sha256: None,
        database_steps: Vec::new(),
        problems: Vec::new(),
        incomplete: false,
        update: None,
    };
    // The signature is checked before anything else reads the zip, and in the same pass
    // as the hash: one read of every byte.
    let mut signature_problem = None;
    match key {
        Some(Ok(key)) => {
            let mut digest = String::new();
            let checked = std::fs::File::open(path)
                .map_err(|e| format!("cannot read it: {e}"))
                .and_then(|mut file| {
                    signature::verify_open(&mut file, path, key, hash.then_some(&mut digest))
                });
            match checked {
                Ok(()) => listed.signed = true,
                Err(problem) => signature_problem = Some(problem),
            }
            if hash && !digest.is_empty() {
                listed.sha256 = Some(digest);
            }
        }
        Some(Err(problem)) => signature_problem = Some(problem.clone()),
        None => {}
    }
    if hash && listed.sha256.is_none() {
        match sha256_of(path) {
            Ok(digest) => listed.sha256 = Some(digest),
            Err(error) => listed.problems.push(format!("cannot read it: {error}")),
        }
    }
    listed.problems.extend(signature_problem);
    let package = match package::read(path) {
        Ok(package) => package,
        Err(problem) => {
            listed.incomplete = matches!(problem, package::Problem::Incomplete(_));
            listed.problems.push(problem.to_string());
            return listed;
        }
    };
    let update = &package.update;
    listed.project = Some(update.project.clone());
    listed.version = Some(update.version.to_string());
    listed.requires = update.requires.as_ref().map(ToString::to_string);
    listed.notes.clone_from(&update.notes);
    if update.project != installed.project {
        listed.problems.push(format!(
            "it is for project {}, and this is {}",
            update.project, installed.project
        ));
    }
    if let Some(text) = &package.version_file {
        match crate::version::VersionFile::parse(text, Path::new("files/VERSION")) {
            Ok(file) if file.version == update.version => {}
            Ok(file) => listed.problems.push(format!(
                "files/VERSION says {}, and update.xml says {}",
                file.version, update.version
            )),
            Err(error) => listed.problems.push(error.to_string()),
        }
    }
    if let Some((manifest, facts)) = installed.planning {
        match steps_of(&package, manifest, facts) {
            Ok(steps) => listed.database_steps = steps,
            Err(error) => listed
                .problems
                .push(format!("its database steps cannot be planned: {error}")),
        }
    }
    listed.update = Some(package.update);
    listed
}

/// The database steps from the database's version to the package's version, with the
/// manifest the package carries, else the installed one.
fn steps_of(
    package: &package::Package,
    installed: &crate::manifest::Manifest,
    facts: &crate::plan::DbFacts,
) -> Result<Vec<ReportItem>, String> {
    let carried;
    let manifest = match &package.manifest {
        Some(text) => {
            carried = crate::manifest::Manifest::parse(text, Path::new("files/upgrade.xml"), None)
                .map_err(|e| e.to_string())?;
            &carried
        }
        None => installed,
    };
    let plan =
        crate::plan::plan(manifest, &package.update.version, facts).map_err(|e| e.to_string())?;
    Ok(plan.items.iter().map(ReportItem::from).collect())
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(signature::hex(&hasher.finalize()))
}
