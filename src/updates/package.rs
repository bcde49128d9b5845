//! One code update package, read without extracting anything: the zip's central
//! directory (every entry's name and kind checked) and `update.xml` (read with the
//! manifest's XML reader, so its errors carry file:line:column).

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::manifest::xml::{self, Attr, Element, LineIndex, Visitor};
use crate::manifest::{ManifestError, Pos};
use crate::version::Version;

/// The most entries a package may hold.
pub(crate) const MAX_ENTRIES: usize = 100_000;
/// The most bytes a package's files may take once extracted.
pub(crate) const MAX_TOTAL_BYTES: u64 = 8 << 30;
/// The largest `update.xml` (and `files/upgrade.xml`, `files/VERSION`) read.
const MAX_TEXT_BYTES: u64 = 16 << 20;

/// What `update.xml` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateXml {
    /// The project the package is for.
    pub project: String,
    /// The code version it installs.
    pub version: Version,
    /// The lowest installed version it applies to.
    pub requires: Option<Version>,
    /// What is new, for people.
    pub notes: Option<String>,
    /// Files it removes, relative to the project directory.
    pub removes: Vec<String>,
}

/// A package as read from its zip.
#[derive(Debug)]
pub(crate) struct Package {
    pub update: UpdateXml,
    /// `files/upgrade.xml`, when the package carries a manifest.
    pub manifest: Option<String>,
    /// `files/VERSION`, when the package carries one.
    pub version_file: Option<String>,
}

/// Why a package cannot be used.
#[derive(Debug)]
pub(crate) enum Problem {
    /// Not a complete zip yet (still being copied): listed, retried later.
    Incomplete(String),
    /// Wrong in a way that will not fix itself.
    Refused(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Incomplete(why) | Problem::Refused(why) => f.write_str(why),
        }
    }
}

/// Reads the package at `path` (central directory, `update.xml`, and the small texts
/// planning needs), checking every entry's name and kind; extracts nothing.
pub(crate) fn read(path: &Path) -> Result<Package, Problem> {
    let file =
        std::fs::File::open(path).map_err(|e| Problem::Refused(format!("cannot read it: {e}")))?;
    read_open(file, path)
}

/// [`read`] of the package open as `file` (`path`: for messages), so that the bytes
/// checked are those the caller reads next.
pub(crate) fn read_open(file: std::fs::File, path: &Path) -> Result<Package, Problem> {
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        Problem::Incomplete(format!(
            "not a complete zip file (still being copied?): {e}"
        ))
    })?;
    if archive.len() > MAX_ENTRIES {
        return Err(Problem::Refused(format!(
            "{} entries, more than the {MAX_ENTRIES} a package may hold",
            archive.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut total: u64 = 0;
    let mut has_update_xml = false;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_data(index)
            .map_err(|e| Problem::Refused(format!("entry {index}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let refuse = |why: &str| Problem::Refused(format!("entry `{name}`: {why}"));
        if entry.encrypted() {
            return Err(refuse("encrypted entries are not accepted"));
        }
        if entry.is_symlink() {
            return Err(refuse("symbolic links are not accepted"));
        }
        if let Some(mode) = entry.unix_mode() {
            let kind = mode & 0o170000;
            if kind != 0 && kind != 0o100000 && kind != 0o040000 {
                return Err(refuse("device, FIFO and socket entries are not accepted"));
            }
        }
        check_name(&name).map_err(|why| refuse(&why))?;
        if !seen.insert(name.trim_end_matches('/').to_lowercase()) {
            return Err(refuse(
                "a second entry of this name (names may not differ only in case)",
            ));
        }
        total = total.saturating_add(entry.size());
        if total > MAX_TOTAL_BYTES {
            return Err(refuse(&format!(
                "the package's files take more than {} GiB",
                MAX_TOTAL_BYTES >> 30
            )));
        }
        has_update_xml |= name == "update.xml";
    }
    if !has_update_xml {
        return Err(Problem::Refused(
            "no update.xml at the top of the zip".into(),
        ));
    }
    let shown = PathBuf::from(format!("{}!update.xml", path.display()));
    let text = read_text(&mut archive, "update.xml")?.expect("listed above");
    let update = parse_update_xml(&text, &shown).map_err(|e| Problem::Refused(e.to_string()))?;
    let manifest = read_text(&mut archive, "files/upgrade.xml")?;
    let version_file = read_text(&mut archive, "files/VERSION")?;
    Ok(Package {
        update,
        manifest,
        version_file,
    })
}

/// A small text entry, read in full (bounded), or `None` when the zip has no such entry.
fn read_text<R: std::io::Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Option<String>, Problem> {
    let Some(index) = archive.index_for_name(name) else {
        return Ok(None);
    };
    let entry = archive
        .by_index(index)
        .map_err(|e| Problem::Refused(format!("entry `{name}`: {e}")))?;
    let mut bytes = Vec::new();
    entry
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::Refused(format!("entry `{name}`: {e}")))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(Problem::Refused(format!(
            "entry `{name}` is larger than {} MiB",
            MAX_TEXT_BYTES >> 20
        )));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| Problem::Refused(format!("entry `{name}` is not UTF-8 text")))
}

/// Refuses names that could write outside the project or into upgrader's own files.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".into());
    }
    if name.contains('\\') {
        return Err("backslashes are not accepted in names".into());
    }
    if name.starts_with('/') {
        return Err("absolute paths are not accepted".into());
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err("drive letters are not accepted".into());
    }
    if name.chars().any(char::is_control) {
        return Err("control characters are not accepted in names".into());
    }
    let trimmed = name.trim_end_matches('/');
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("`..`, `.` and empty path parts are not accepted".into());
    }
    if trimmed == "update.xml" || trimmed == "files" {
        return Ok(());
    }
    let Some(relative) = trimmed.strip_prefix("files/") else {
        return Err("only update.xml and files/… belong in a package".into());
    };
    let lower = relative.to_lowercase();
    if lower == "updates" || lower.starts_with("updates/") {
        return Err("a package may not write into updates/".into());
    }
    if lower == "upgrade.lock" {
        return Err("a package may not write upgrade.lock".into());
    }
    Ok(())
}

/// Reads `update.xml`: `<update project version [requires]>` with an optional
/// `<notes>` and any number of `<remove path>`.
pub fn parse_update_xml(text: &str, path: &Path) -> Result<UpdateXml, ManifestError> {
    let error = |pos: Pos, message: String| ManifestError::At {
        file: path.to_path_buf(),
        pos,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex::new(text);
    xml::check_controls(text, &lines, &error)?;
    let mut reader = UpdateReader {
        lines: &lines,
        error: &error,
        root: None,
        notes: None,
        removes: Vec::new(),
    };
    xml::parse(text, &lines, &error, &mut reader)?;
    let (project, version, requires) = reader.root.expect("a root element was read");
    Ok(UpdateXml {
        project,
        version,
        requires,
        notes: reader.notes,
        removes: reader.removes,
    })
}

type Root = (String, Version, Option<Version>);

struct UpdateReader<'a> {
    lines: &'a LineIndex<'a>,
    error: &'a dyn Fn(Pos, String) -> ManifestError,
    root: Option<Root>,
    notes: Option<String>,
    removes: Vec<String>,
}

impl UpdateReader<'_> {
    fn err(&self, at: usize, message: String) -> ManifestError {
        (self.error)(self.lines.pos(at), message)
    }

    fn attrs<'e>(
        &self,
        element: &'e Element<'_>,
        allowed: &[&str],
    ) -> Result<Vec<&'e Attr<'e>>, ManifestError> {
        let mut found = Vec::new();
        for attr in &element.attrs {
            if !allowed.contains(&attr.name) {
                return Err(self.err(
                    attr.at,
                    format!(
                        "unknown attribute `{}` on <{}>; expected {}",
                        attr.name,
                        element.name,
                        allowed.join(", ")
                    ),
                ));
            }
            found.push(attr);
        }
        Ok(found)
    }

    fn version(&self, value: &str, at: usize, name: &str) -> Result<Version, ManifestError> {
        Version::parse(value.trim())
            .map_err(|e| self.err(at, format!("`{name}` is not a version: {e}")))
    }
}

impl Visitor for UpdateReader<'_> {
    fn root(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
        if root.name != "update" {
            return Err(self.err(
                root.at,
                format!("the root element is <{}>; expected <update>", root.name),
            ));
        }
        let (mut project, mut version, mut requires) = (None, None, None);
        for attr in self.attrs(root, &["project", "version", "requires"])? {
            let (name, value, at) = (attr.name, &attr.value, attr.at);
            match name {
                "project" if !value.trim().is_empty() => project = Some(value.trim().to_string()),
                "project" => return Err(self.err(at, "`project` is empty".into())),
                "version" => version = Some(self.version(value, at, name)?),
                _ => requires = Some(self.version(value, at, name)?),
            }
        }
        let missing =
            |what: &str| self.err(root.at, format!("<update> needs a `{what}` attribute"));
        let project = project.ok_or_else(|| missing("project"))?;
        let version = version.ok_or_else(|| missing("version"))?;
        if let Some(requires) = &requires {
            if *requires >= version {
                return Err(self.err(
                    root.at,
                    format!("`requires` ({requires}) must be lower than `version` ({version})"),
                ));
            }
        }
        self.root = Some((project, version, requires));
        Ok(())
    }

    fn child(&mut self, child: &Element<'_>) -> Result<(), ManifestError> {
        match child.name {
            "notes" => {
                self.attrs(child, &[])?;
                if self.notes.is_some() {
                    return Err(self.err(child.at, "a second <notes>".into()));
                }
                if let Some(inner) = child.children.first() {
                    return Err(self.err(inner.at, "<notes> holds text only".into()));
                }
                let notes = child.text.trim();
                self.notes = (!notes.is_empty()).then(|| notes.to_string());
            }
            "remove" => {
                let attrs = self.attrs(child, &["path"])?;
                let Some(Attr {
                    value: path, at, ..
                }) = attrs.first()
                else {
                    return Err(self.err(child.at, "<remove> needs a `path` attribute".into()));
                };
                let path = path.trim();
                check_name(&format!("files/{path}"))
                    .map_err(|why| self.err(*at, format!("`path` {path:?}: {why}")))?;
                self.removes.push(path.to_string());
            }
            other => {
                return Err(self.err(
                    child.at,
                    format!("unknown element <{other}> in <update>; expected <notes> or <remove>"),
                ))
            }
        }
        Ok(())
    }

    fn root_end(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
        if !root.text.trim().is_empty() {
            return Err(self.err(
                root.text_at.unwrap_or(root.at),
                "text directly in <update>; put it in <notes>".into(),
            ));
        }
        Ok(())
    }
}
