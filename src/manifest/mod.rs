//! `upgrade.xml`, canonical and older format, read into a validated [`Manifest`].
//!
//! Every check that can be made without a database happens here, so that a bad manifest
//! is refused before anything is touched. Errors carry file, line and column.

pub mod fix;
mod interpret;
mod text;
pub(crate) mod xml;

pub use text::Text;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::version::Version;

/// A 1-based position in a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A manifest that cannot be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read, or is not a regular file inside the
    /// project, or is too large.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// A problem at a position in the manifest.
    #[error("{}:{pos}: {message}", file.display())]
    At {
        /// The manifest file.
        file: PathBuf,
        /// Where.
        pos: Pos,
        /// What is wrong.
        message: String,
    },
}

impl ManifestError {
    /// The position of the problem, when there is one.
    pub fn pos(&self) -> Option<Pos> {
        match self {
            ManifestError::File(_) => None,
            ManifestError::At { pos, .. } => Some(*pos),
        }
    }
}

/// Which syntax the manifest was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<step name from to>` elements.
    Canonical,
    /// `<matching>` with `<vX.Y.Z>` children.
    Legacy,
}

/// How a step relates to the run's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepTransaction {
    /// The step runs inside the run's transaction (the default).
    Shared,
    /// `transaction="none"`: the step runs alone and may leave partial work on failure.
    NoneUnsafe,
}

/// Where a SQL action's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlSource {
    /// `<sql file="…"/>`, relative to the project directory.
    File(PathBuf),
    /// Inline `<sql>…</sql>`; `pos` is where the text starts in the manifest.
    Inline {
        /// The SQL text.
        text: Text,
        /// Where the text starts.
        pos: Pos,
    },
}

/// One thing a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run SQL statements.
    Sql {
        /// The SQL.
        source: SqlSource,
        /// The `<sql>` element's position.
        pos: Pos,
    },
    /// Call `method` in the plugin library `library`.
    Plugin {
        /// Bare library name.
        library: String,
        /// Exported step name.
        method: String,
        /// The `<plugin>` element's position.
        pos: Pos,
    },
}

/// A named upgrade step from one version to the next.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique name.
    pub name: Text,
    /// The version the step starts from.
    pub from: Version,
    /// The version the step reaches.
    pub to: Version,
    /// Optional human description.
    pub description: Option<Text>,
    /// Actions, in document order.
    pub actions: Vec<Action>,
    /// Whether the step shares the run's transaction.
    pub transaction: StepTransaction,
    /// `after="PROJECT VERSION"`: the step waits until that package of the application
    /// has reached that version.
    pub after: Option<After>,
    /// Where the step is declared.
    pub pos: Pos,
}

/// A step's `after="PROJECT VERSION"`: another package of the same application that must
/// have reached a version before the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// The package's project name.
    pub project: String,
    /// The version it must have reached.
    pub version: Version,
    /// The `after` attribute's position.
    pub pos: Pos,
}

/// `<package dir="…"/>`: a package of the application, with its own `VERSION`,
/// `upgrade.xml` and project name, sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRef {
    /// Its directory, relative to the root project's.
    pub dir: PathBuf,
    /// The `<package>` element's position.
    pub pos: Pos,
}

/// The actions that create the schema of an empty database.
#[derive(Debug, Clone)]
pub struct Install {
    /// Actions in document order.
    pub actions: Vec<Action>,
    /// Where `<install>` is declared.
    pub pos: Pos,
}

/// A validated manifest: only [`Manifest::load`] and [`Manifest::parse`] make one.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Syntax of the file.
    pub format: Format,
    /// `project` attribute of the root.
    pub project: Option<String>,
    /// Where a database never upgraded by upgrader starts.
    pub initial_version: Option<Version>,
    /// Optional install actions for an empty database.
    pub install: Option<Install>,
    /// Steps, ordered by their `from` version.
    pub steps: Vec<Step>,
    /// The packages `<package>` lists, in document order (the order they run in).
    pub packages: Vec<PackageRef>,
}

impl Manifest {
    /// Reads and validates `path`; script files are looked up relative to `project_dir`.
    /// The manifest and every script must be regular files that resolve inside
    /// `project_dir`; the manifest may be at most [`crate::files::MANIFEST_LIMIT`] bytes.
    pub fn load(path: &Path, project_dir: &Path) -> Result<Manifest, ManifestError> {
        let text = crate::files::read(project_dir, path, crate::files::MANIFEST_LIMIT)?;
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or("");
                let pos = xml::LineIndex::new(prefix).pos(valid);
                return Err(ManifestError::At {
                    file: path.to_path_buf(),
                    pos,
                    message: "the manifest is not valid UTF-8".into(),
                });
            }
        };
        Self::parse(&text, path, Some(project_dir))
    }

    /// Validates manifest text. `path` names the file in errors; with `project_dir`, every
    /// referenced script must exist there.
    pub fn parse(
        text: &str,
        path: &Path,
        project_dir: Option<&Path>,
    ) -> Result<Manifest, ManifestError> {
        let error = |pos: Pos, message: String| ManifestError::At {
            file: path.to_path_buf(),
            pos,
            message,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // One copy of the whole text that every name and inline script of the manifest
        // points into, instead of one allocation each.
        let all: std::sync::Arc<str> = std::sync::Arc::from(text);
        let text = &*all;
        // A rough size for the step list (a step takes well over 100 bytes): sizing it
        // exactly would cost a search of the whole text, more than the list's growth.
        let expected_steps = text.len() / 128;
        let lines = xml::LineIndex::new(text);
        let cx = interpret::Cx::new(&error, &lines, &all);
        xml::check_controls(text, &lines, &error)?;
        let mut interpreter = interpret::Interpreter::new(path, expected_steps, cx);
        let read = match xml::parse_plain(text, &mut interpreter) {
            Ok(()) => Ok(()),
            Err(xml::Stop::Error(error)) => Err(error),
            // Read again from the start by the reader that knows all of XML.
            Err(xml::Stop::Unusual) => {
                interpreter = interpret::Interpreter::new(path, expected_steps, cx);
                xml::parse(text, &lines, &error, &mut interpreter)
            }
        };
        interpreter.log_warnings();
        read?;
        let (mut manifest, scripts) = interpreter.finish();
        validate(&mut manifest, &scripts, project_dir, &error)?;
        Ok(manifest)
    }

    /// The step that starts at `from`, if any.
    pub fn step_from(&self, from: &Version) -> Option<&Step> {
        self.steps
            .binary_search_by(|step| step.from.cmp(from))
            .ok()
            .map(|index| &self.steps[index])
    }
}

type ErrorFn<'a> = dyn Fn(Pos, String) -> ManifestError + 'a;

/// Checks that involve several steps or the file system.
fn validate(
    manifest: &mut Manifest,
    scripts: &[(PathBuf, Pos)],
    project_dir: Option<&Path>,
    error: &ErrorFn<'_>,
) -> Result<(), ManifestError> {
    // Steps are still in document order here, so "the second one" is the later one.
    // foldhash: names come from the project's own manifest, so a hasher that resists
    // chosen collisions buys nothing, and SipHash was a tenth of the parse.
    let mut by_name: std::collections::HashMap<&str, &Step, foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(
            manifest.steps.len(),
            foldhash::fast::RandomState::default(),
        );
    for step in &manifest.steps {
        if step.from >= step.to {
            return Err(error(
                step.pos,
                format!(
                    "step '{}': from {} must be below to {}",
                    step.name, step.from, step.to
                ),
            ));
        }
        if let Some(first) = by_name.insert(&step.name, step) {
            return Err(error(
                step.pos,
                format!(
                    "duplicate step name '{}' (first declared at line {})",
                    step.name, first.pos.line
                ),
            ));
        }
    }
    // A stable sort: steps starting from the same version stay in document order. It
    // is also the order the manifest keeps, and nearly free on steps already in order.
    manifest.steps.sort_by(|a, b| a.from.cmp(&b.from));
    for pair in manifest.steps.windows(2) {
        let (first, second) = (&pair[0], &pair[1]);
        let (earlier, later) = if first.pos <= second.pos {
            (first, second)
        } else {
            (second, first)
        };
        if first.from == second.from {
            return Err(error(
                later.pos,
                format!(
                    "step '{}' starts from {} like step '{}' at line {}; each version may start only one step",
                    later.name, later.from, earlier.name, earlier.pos.line
                ),
            ));
        }
        if second.from < first.to {
            return Err(error(
                later.pos,
                format!(
                    "step '{}' ({} -> {}) overlaps step '{}' ({} -> {}) at line {}",
                    later.name,
                    later.from,
                    later.to,
                    earlier.name,
                    earlier.from,
                    earlier.to,
                    earlier.pos.line
                ),
            ));
        }
    }
    if let Some(dir) = project_dir {
        let mut files = ScriptFiles::new(dir);
        for (file, pos) in scripts {
            let full = dir.join(file);
            files.check(&full).map_err(|message| {
                error(*pos, format!("script file {} {message}", full.display()))
            })?;
        }
    }
    Ok(())
}

/// Checks scripts as [`crate::files::check`] does (a regular file that resolves inside
/// the project), from one directory listing per directory instead of one `stat` per
/// script, since a manifest can name thousands of scripts in one folder; links and
/// anything unusual go the slow, exact way.
struct ScriptFiles<'a> {
    dir: &'a Path,
    /// The project directory resolved, once asked for.
    canonical_dir: Option<Result<PathBuf, String>>,
    /// Per directory: whether it resolves inside the project, and its entries.
    listings: std::collections::HashMap<PathBuf, Option<Listing>>,
}

type Listing = (
    bool,
    std::collections::HashMap<std::ffi::OsString, std::fs::FileType>,
);

impl<'a> ScriptFiles<'a> {
    fn new(dir: &'a Path) -> Self {
        ScriptFiles {
            dir,
            canonical_dir: None,
            listings: std::collections::HashMap::new(),
        }
    }

    /// `Ok` for a usable script; else what is wrong with it (without its name).
    fn check(&mut self, path: &Path) -> Result<(), String> {
        let dir = self.dir;
        let canonical_dir = self
            .canonical_dir
            .get_or_insert_with(|| {
                dir.canonicalize()
                    .map_err(|e| format!("cannot resolve the project directory: {e}"))
            })
            .clone()?;
        let exact = |path: &Path| match crate::files::check_resolved(&canonical_dir, path) {
            Ok(_) => Ok(()),
            Err(crate::files::FileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err("does not exist".to_string())
            }
            Err(crate::files::FileError::Io { source, .. }) => {
                Err(format!("cannot be read: {source}"))
            }
            Err(e) => Err(e.reason()),
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return exact(path);
        };
        let listing = self
            .listings
            .entry(parent.to_path_buf())
            .or_insert_with(|| {
                let inside = parent
                    .canonicalize()
                    .is_ok_and(|resolved| resolved.starts_with(&canonical_dir));
                std::fs::read_dir(parent).ok().map(|entries| {
                    let entries = entries
                        .filter_map(Result::ok)
                        .filter_map(|entry| Some((entry.file_name(), entry.file_type().ok()?)))
                        .collect();
                    (inside, entries)
                })
            });
        match listing {
            Some((true, entries)) => match entries.get(name) {
                Some(kind) if kind.is_file() => Ok(()),
                None => Err("does not exist".to_string()),
                // A link is judged by where it leads; anything else by what it is.
                Some(_) => exact(path),
            },
            _ => exact(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline_pos(body: &str) -> (String, Pos) {
        let text = format!(
            "<upgrade project=\"p\">\n  <step name=\"a\" from=\"1.0\" to=\"1.1\">{body}</step>\n</upgrade>"
        );
        let manifest = Manifest::parse(&text, Path::new("upgrade.xml"), None).unwrap();
        match &manifest.steps[0].actions[0] {
            Action::Sql {
                source: SqlSource::Inline { text, pos },
                ..
            } => (text.to_string(), *pos),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inline_sql_text_and_position() {
        let (text, pos) = inline_pos("<sql>SELECT 1 &lt; 2;</sql>");
        assert_eq!(text, "SELECT 1 < 2;");
        assert_eq!(
            pos,
            Pos {
                line: 2,
                column: 43
            }
        );
        let (text, pos) = inline_pos("<sql><![CDATA[SELECT 1 < 2;]]></sql>");
        assert_eq!(text, "SELECT 1 < 2;");
        assert_eq!(
            pos,
            Pos {
                line: 2,
                column: 52
            }
        );
        let (text, pos) = inline_pos("<sql>\n    SELECT 1;\n  </sql>");
        assert_eq!(text.trim(), "SELECT 1;");
        assert_eq!(pos.line, 2);
    }
}
