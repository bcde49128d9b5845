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
    /// The package in `file`, before anything of it is read.
    fn unread(file: String) -> PendingPackage {
        PendingPackage {
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
        }
    }

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
        match follows(&current, &update) {
            Ok(()) => {}
            Err(ChainBreak::NotNewer) => package.problems.insert(
                0,
                match current == *installed.version {
                    true => format!("not newer than the installed version {current}"),
                    false => {
                        format!("not newer than {current}, which the packages before it install")
                    }
                },
            ),
            Err(ChainBreak::Requires(requires)) => package.problems.insert(
                0,
                format!("it requires version {requires} installed first, and {current} would be"),
            ),
        }
        if package.problems.is_empty() {
            current = update.version;
        }
    }
    packages
}

/// Why a package cannot be installed next, over the code version the installed code or
/// the packages before it leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// It installs that version or an older one.
    NotNewer,
    /// It requires this version installed first, newer than that one.
    Requires(Version),
}

/// Whether `update` can be installed over the code version `current` (the installed
/// one, or the one the packages installed before it in the same go leave): newer than
/// it, with its `requires` met. The one rule for both the listing and an install's
/// choice of packages.
pub fn follows(current: &Version, update: &UpdateXml) -> Result<(), ChainBreak> {
    if update.version <= *current {
        return Err(ChainBreak::NotNewer);
    }
    match &update.requires {
        Some(requires) if requires > current => Err(ChainBreak::Requires(requires.clone())),
        _ => Ok(()),
    }
}

/// The packages an install was asked for (each already listed as installable), in
/// version order, each one's `requires` met by the code `installed` or the ones before
/// it; else a refusal naming the first that is not (nothing was installed).
///
/// The check `Engine::install_updates` makes for packages named on the command line,
/// built on the listing's rule ([`follows`]).
pub fn install_order<'a>(
    installed: &Version,
    mut chosen: Vec<&'a PendingPackage>,
) -> Result<Vec<&'a PendingPackage>, crate::error::Error> {
    chosen.sort_by(|a, b| {
        let version = |p: &PendingPackage| p.update.as_ref().map(|u| u.version.clone());
        version(a).cmp(&version(b))
    });
    let mut current = installed.clone();
    for package in &chosen {
        let Some(update) = package.update.as_ref() else {
            return Err(crate::error::Error::Refused(format!(
                "{} cannot be read; nothing was installed",
                package.file
            )));
        };
        let why = match follows(&current, update) {
            Ok(()) => {
                current = update.version.clone();
                continue;
            }
            Err(ChainBreak::Requires(requires)) => format!(
                "requires version {requires} installed first; install the packages before it too"
            ),
            Err(ChainBreak::NotNewer) => format!(
                "is not newer than {current}, which the installed code or the packages before it leave"
            ),
        };
        return Err(crate::error::Error::Refused(format!(
            "{} {why}; nothing was installed",
            package.file
        )));
    }
    Ok(chosen)
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
    let mut listed = PendingPackage::unread(file);
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
    Ok(crate::hex::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn update(version: &str, requires: Option<&str>) -> UpdateXml {
        UpdateXml {
            project: "shop".into(),
            version: v(version),
            requires: requires.map(v),
            notes: None,
            removes: Vec::new(),
        }
    }

    fn pending(file: &str, version: &str, requires: Option<&str>) -> PendingPackage {
        PendingPackage {
            update: Some(update(version, requires)),
            ..PendingPackage::unread(file.into())
        }
    }

    #[test]
    fn a_package_follows_an_older_version_that_meets_its_requires() {
        let current = v("1.1.0");
        assert_eq!(follows(&current, &update("1.2.0", None)), Ok(()));
        assert_eq!(follows(&current, &update("1.2.0", Some("1.1.0"))), Ok(()));
        assert_eq!(follows(&current, &update("1.2.0", Some("1.0.0"))), Ok(()));
        assert_eq!(
            follows(&current, &update("1.2.0", Some("1.1.5"))),
            Err(ChainBreak::Requires(v("1.1.5")))
        );
        assert_eq!(
            follows(&current, &update("1.1.0", None)),
            Err(ChainBreak::NotNewer)
        );
        assert_eq!(
            follows(&current, &update("1.0.9", Some("1.5.0"))),
            Err(ChainBreak::NotNewer)
        );
    }

    #[test]
    fn chosen_packages_are_put_in_version_order_each_requires_met_by_those_before() {
        let (a, b, c) = (
            pending("a.zip", "1.1.0", Some("1.0.0")),
            pending("b.zip", "1.2.0", Some("1.1.0")),
            pending("c.zip", "1.3.0", Some("1.2.0")),
        );
        let ordered = install_order(&v("1.0.0"), vec![&c, &a, &b]).unwrap();
        let files: Vec<&str> = ordered.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["a.zip", "b.zip", "c.zip"]);

        // Without b, c's requires is not met: refused, naming c.
        let error = install_order(&v("1.0.0"), vec![&c, &a]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "c.zip requires version 1.2.0 installed first; install the packages before it too; nothing was installed"
        );
        // Nothing to install is no error.
        assert!(install_order(&v("1.0.0"), Vec::new()).unwrap().is_empty());
    }
}
