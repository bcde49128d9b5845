//! The project as loaded from its directory: name, code version, manifest.

use std::path::{Path, PathBuf};

use crate::db::state;
use crate::error::Error;
use crate::manifest::Manifest;
use crate::version::{Version, VersionFile};

/// A loaded and validated project: its name, code version and manifest.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project directory.
    pub dir: PathBuf,
    /// The project name that keys its recorded version.
    pub name: String,
    /// The code version from `VERSION`.
    pub code_version: Version,
    /// The validated manifest.
    pub manifest: Manifest,
}

impl Project {
    /// Reads `VERSION` and `upgrade.xml` from `dir` and checks they agree.
    pub fn load(dir: &Path) -> Result<Project, Error> {
        let version_file = VersionFile::load(&dir.join("VERSION"))?;
        let manifest = Manifest::load(&dir.join("upgrade.xml"), dir)?;
        let name = match (&version_file.project, &manifest.project) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::Config(format!(
                    "the project is named \"{a}\" in {} but \"{b}\" in {}; make them agree",
                    dir.join("VERSION").display(),
                    manifest.path.display()
                )))
            }
            (Some(name), _) | (None, Some(name)) => name.clone(),
            (None, None) => {
                return Err(Error::Config(format!(
                    "no project name: add project=\"NAME\" to <upgrade> in {} (or a `PROJECT: NAME` line to VERSION)",
                    manifest.path.display()
                )))
            }
        };
        if name == state::OWN_PROJECT {
            return Err(Error::Config(format!(
                "the project name \"{name}\" is reserved for upgrader's own tables"
            )));
        }
        Ok(Project {
            dir: dir.to_path_buf(),
            name,
            code_version: version_file.version,
            manifest,
        })
    }
}
