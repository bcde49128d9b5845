//! The project as loaded from its directory: name, code version, manifest.

use std::path::{Path, PathBuf};

use crate::db::state;
use crate::error::Error;
use crate::layout::Layout;
use crate::manifest::{Manifest, ManifestError, Pos, Step};
use crate::plan::{self, DbFacts, Plan, PlanItem};
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
        let layout = Layout::new(dir);
        let version_file = VersionFile::load(&layout.version_file())?;
        let manifest = Manifest::load(&layout.manifest(), dir)?;
        let name = match (&version_file.project, &manifest.project) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::Config(format!(
                    "the project is named \"{a}\" in {} but \"{b}\" in {}; make them agree",
                    layout.version_file().display(),
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

/// The application: the root project and the packages its manifest lists (in that
/// order), sharing one database. A project without `<package>` is an application of one.
#[derive(Debug, Clone)]
pub struct Application {
    /// The root project first, then each package in the order `<package>` lists them.
    pub projects: Vec<Project>,
}

impl Application {
    /// Loads the root project and its packages, and checks what involves several of them:
    /// package directories, project names, and steps' `after`. Every error names the
    /// manifest line it comes from.
    pub fn load(dir: &Path) -> Result<Application, Error> {
        let root = Project::load(dir)?;
        let mut projects = Vec::with_capacity(1 + root.manifest.packages.len());
        let packages = root.manifest.packages.clone();
        let root_manifest = root.manifest.path.clone();
        projects.push(root);
        let at = |pos: Pos, message: String| {
            Error::Manifest(ManifestError::At {
                file: root_manifest.clone(),
                pos,
                message,
            })
        };
        if packages.is_empty() {
            check_waits(&projects, &root_manifest)?;
            return Ok(Application { projects });
        }
        let canonical_root = dir
            .canonicalize()
            .map_err(|e| Error::Config(format!("cannot resolve {}: {e}", dir.display())))?;
        let mut dirs = PackageDirs::default();
        // Where each package is, checked in order before any is read.
        let mut found: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(packages.len());
        for package in &packages {
            let shown = package.dir.display();
            let full = dir.join(&package.dir);
            let (resolved, is_dir) = match dirs.resolve(dir, &canonical_root, &package.dir) {
                Ok(resolved) => resolved,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(at(
                        package.pos,
                        format!("package dir {shown} does not exist ({})", full.display()),
                    ))
                }
                Err(e) => {
                    return Err(at(
                        package.pos,
                        format!("package dir {shown} cannot be read: {e}"),
                    ))
                }
            };
            if !resolved.starts_with(&canonical_root) {
                return Err(at(
                    package.pos,
                    format!(
                        "package dir {shown} leads outside the project directory (to {})",
                        resolved.display()
                    ),
                ));
            }
            if resolved == canonical_root {
                return Err(at(
                    package.pos,
                    format!("package dir {shown} is the project directory itself; a package is a subdirectory with its own VERSION and upgrade.xml"),
                ));
            }
            if !is_dir {
                return Err(at(
                    package.pos,
                    format!("package dir {shown} is not a directory"),
                ));
            }
            if let Some(first) = found.iter().position(|(other, _)| *other == resolved) {
                return Err(at(
                    package.pos,
                    format!(
                        "package dir {shown} is listed twice (first at line {})",
                        packages[first].pos.line
                    ),
                ));
            }
            found.push((resolved, full));
        }
        for ((package, (_, full)), index) in packages.iter().zip(&found).zip(1..) {
            let shown = package.dir.display();
            // A missing file is told as the package's problem, at its `<package>` line.
            let project = Project::load(full).map_err(|e| match missing_file(&e) {
                Some(file) => at(
                    package.pos,
                    format!(
                        "package {shown} has no {file} ({}); every package has its own VERSION and upgrade.xml",
                        full.join(file).display()
                    ),
                ),
                None => e,
            })?;
            if let Some(nested) = project.manifest.packages.first() {
                return Err(Error::Manifest(ManifestError::At {
                    file: project.manifest.path.clone(),
                    pos: nested.pos,
                    message: format!(
                        "package {shown} lists a package of its own; list every package in the root manifest ({}:{})",
                        root_manifest.display(),
                        package.pos
                    ),
                }));
            }
            if let Some(index) = projects.iter().position(|p| p.name == project.name) {
                let first = match index {
                    0 => "the root project".to_string(),
                    n => format!("the package at line {}", packages[n - 1].pos.line),
                };
                return Err(at(
                    package.pos,
                    format!(
                        "package {shown} is project \"{}\", like {first}; every package needs its own project name",
                        project.name
                    ),
                ));
            }
            debug_assert_eq!(projects.len(), index);
            projects.push(project);
        }
        check_waits(&projects, &root_manifest)?;
        Ok(Application { projects })
    }

    /// The root project.
    pub fn root(&self) -> &Project {
        &self.projects[0]
    }

    /// The index of the project of that name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.projects.iter().position(|p| p.name == name)
    }

    /// What item `item` of `plan` (package `package`'s) waits for (see
    /// [`plan::interleave`]).
    pub(crate) fn wait_of(&self, package: usize, item: &PlanItem) -> plan::Wait {
        let step = &self.projects[package].manifest.steps[item.step_index?];
        let after = step.after.as_ref()?;
        Some((self.index_of(&after.project)?, after.version.clone()))
    }
}

/// Checks every step's `after`: a package of this application other than the step's
/// own, at a version its code reaches; and that no steps wait for each other in a circle
/// (tried on the whole manifests, from each package's first version).
fn check_waits(projects: &[Project], root_manifest: &Path) -> Result<(), Error> {
    let names = || {
        projects
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (index, project) in projects.iter().enumerate() {
        for step in &project.manifest.steps {
            let Some(after) = &step.after else { continue };
            let at = |message: String| {
                Error::Manifest(ManifestError::At {
                    file: project.manifest.path.clone(),
                    pos: after.pos,
                    message: format!("step '{}': {message}", step.name),
                })
            };
            let Some(other) = projects.iter().position(|p| p.name == after.project) else {
                return Err(at(format!(
                    "after names project \"{}\", which is not part of this application (its projects, listed in {}: {})",
                    after.project,
                    root_manifest.display(),
                    names()
                )));
            };
            if other == index {
                return Err(at(format!(
                    "after names the step's own project \"{}\"; steps of one project already run in version order",
                    after.project
                )));
            }
            let code = &projects[other].code_version;
            if after.version > *code {
                return Err(at(format!(
                    "after waits for {} {}, beyond its code version {code} ({})",
                    after.project,
                    after.version,
                    Layout::new(&projects[other].dir).version_file().display()
                )));
            }
        }
    }
    if projects
        .iter()
        .all(|p| p.manifest.steps.iter().all(|s| s.after.is_none()))
    {
        return Ok(());
    }
    // Every step, from each project's first version: if these can be ordered, so can any
    // run, which only starts later (and so waits less).
    // A project without steps to try (only an install, or a plan that cannot be made from
    // its first version) counts as at its code version: it waits for nobody.
    let plans: Vec<Plan> = projects
        .iter()
        .map(|project| {
            let manifest = &project.manifest;
            let first = manifest.steps.first().map(|s| s.from.clone());
            let start = match (&manifest.initial_version, first) {
                (Some(initial), Some(first)) => Some(initial.clone().min(first)),
                (initial, first) => initial.clone().or(first),
            };
            start
                .and_then(|start| {
                    let facts = DbFacts {
                        version: Some(start),
                        has_user_tables: true,
                    };
                    plan::plan(manifest, &project.code_version, &facts).ok()
                })
                .unwrap_or_else(|| Plan::settled(&project.code_version))
        })
        .collect();
    let refs: Vec<&Plan> = plans.iter().collect();
    let step_of = |package: usize, item: usize| -> Option<&Step> {
        let index = refs[package].items[item].step_index?;
        Some(&projects[package].manifest.steps[index])
    };
    let waits = |package: usize, item: usize| -> plan::Wait {
        let after = step_of(package, item)?.after.as_ref()?;
        Some((
            projects.iter().position(|p| p.name == after.project)?,
            after.version.clone(),
        ))
    };
    let Err(stuck) = plan::interleave(&refs, &waits) else {
        return Ok(());
    };
    let described: Vec<String> = stuck
        .chain
        .iter()
        .map(|&(package, item)| {
            let project = &projects[package];
            let plan_item = &refs[package].items[item];
            match step_of(package, item).and_then(|s| s.after.as_ref().map(|a| (s, a))) {
                Some((step, after)) => format!(
                    "step '{}' of {} ({}:{}) waits for {} {}",
                    step.name,
                    project.name,
                    project.manifest.path.display(),
                    after.pos,
                    after.project,
                    after.version
                ),
                None => format!(
                    "{} {} of {}",
                    plan_item.kind.name(),
                    plan_item.name,
                    project.name
                ),
            }
        })
        .collect();
    let (package, item) = stuck.chain[0];
    let step = step_of(package, item).expect("a waiting item is a step");
    Err(Error::Manifest(ManifestError::At {
        file: projects[package].manifest.path.clone(),
        pos: step.after.as_ref().map_or(step.pos, |a| a.pos),
        message: format!(
            "steps wait for each other in a circle: {}, which waits for the first",
            described.join(", which needs ")
        ),
    }))
}

/// Which of a project's own files `error` says is missing, if that is what it says.
fn missing_file(error: &Error) -> Option<&'static str> {
    let (file, name) = match error {
        Error::VersionFile(crate::version::VersionFileError::File(file)) => (file, Layout::VERSION),
        Error::Manifest(ManifestError::File(file)) => (file, Layout::MANIFEST),
        _ => return None,
    };
    match file {
        crate::files::FileError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Some(name)
        }
        _ => None,
    }
}

/// Resolves package directories the cheap way where it is exact: a path of plain names
/// none of which is a symbolic link resolves to the canonical root joined with those
/// names, which one `lstat` per directory tells (each shared parent looked at once),
/// instead of `realpath`'s `getcwd` and `readlink` of every component of every package.
/// Anything else (a link, `..`, an absolute path) is resolved in full.
#[derive(Default)]
struct PackageDirs {
    /// Directories already seen to be real directories, not links.
    plain: std::collections::HashSet<PathBuf>,
}

impl PackageDirs {
    /// The package directory `relative` (to `root`, whose canonical form is
    /// `canonical_root`) resolved, and whether it is a directory.
    fn resolve(
        &mut self,
        root: &Path,
        canonical_root: &Path,
        relative: &Path,
    ) -> std::io::Result<(PathBuf, bool)> {
        use std::path::Component;
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if plain {
            let mut path = root.to_path_buf();
            let mut resolved = canonical_root.to_path_buf();
            let mut is_dir = true;
            let mut linked = false;
            for component in relative.components() {
                let Component::Normal(name) = component else {
                    continue;
                };
                path.push(name);
                resolved.push(name);
                if self.plain.contains(&path) {
                    continue;
                }
                let file_type = std::fs::symlink_metadata(&path)?.file_type();
                if file_type.is_symlink() {
                    linked = true;
                    break;
                }
                is_dir = file_type.is_dir();
                if !is_dir {
                    break;
                }
                self.plain.insert(path.clone());
            }
            if !linked {
                return Ok((resolved, is_dir));
            }
        }
        let resolved = root.join(relative).canonicalize()?;
        let is_dir = resolved.is_dir();
        Ok((resolved, is_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheap resolution answers as `canonicalize` does, links or not.
    #[test]
    fn package_dirs_resolve_as_canonicalize_does() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("app");
        for dir in ["app/modules/blog", "app/mods/pay", "outside/far"] {
            std::fs::create_dir_all(tmp.path().join(dir)).unwrap();
        }
        std::fs::write(root.join("modules/file"), "").unwrap();
        std::os::unix::fs::symlink(root.join("mods"), root.join("modules/linked")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("away")).unwrap();
        let canonical_root = root.canonicalize().unwrap();
        let mut dirs = PackageDirs::default();
        for relative in [
            "modules/blog",
            "./modules/blog",
            "modules/linked/pay",
            "away/far",
            "modules/../mods/pay",
            "modules/file",
        ] {
            let (resolved, is_dir) = dirs
                .resolve(&root, &canonical_root, Path::new(relative))
                .unwrap();
            let expected = root.join(relative).canonicalize().unwrap();
            assert_eq!(resolved, expected, "{relative}");
            assert_eq!(is_dir, expected.is_dir(), "{relative}");
        }
        let missing = dirs.resolve(&root, &canonical_root, Path::new("modules/none"));
        assert_eq!(missing.unwrap_err().kind(), std::io::ErrorKind::NotFound);
    }
}
