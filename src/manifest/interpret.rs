//! Reads the element tree as a canonical or older-format manifest, checking names,
//! attributes and values element by element.

use std::path::{Path, PathBuf};

use super::xml::{Attr, Element, Visitor};
use super::{
    Action, After, ErrorFn, Format, Install, Manifest, ManifestError, PackageRef, Pos, SqlSource,
    Step, StepTransaction,
};
use crate::version::Version;

fn is(element: &Element<'_>, name: &str) -> bool {
    element.name.eq_ignore_ascii_case(name)
}

/// Checks that an element has only `allowed` attributes and returns a lookup.
struct Attrs<'a> {
    element: &'a Element<'a>,
}

impl<'a> Attrs<'a> {
    fn check(
        element: &'a Element<'a>,
        allowed: &[&str],
        error: &ErrorFn<'_>,
    ) -> Result<Self, ManifestError> {
        for attr in &element.attrs {
            if !allowed.contains(&&*attr.name) {
                let expected = if allowed.is_empty() {
                    "it takes no attributes".to_string()
                } else {
                    format!("expected {}", list(allowed))
                };
                return Err(error(
                    attr.pos,
                    format!(
                        "unknown attribute `{}` on <{}>; {expected}",
                        attr.name, element.name
                    ),
                ));
            }
        }
        Ok(Attrs { element })
    }

    fn get(&self, name: &str) -> Option<&'a Attr<'a>> {
        self.element.attrs.iter().find(|a| a.name == name)
    }

    fn required(&self, name: &str, error: &ErrorFn<'_>) -> Result<&'a Attr<'a>, ManifestError> {
        let attr = self.get(name).ok_or_else(|| {
            error(
                self.element.pos,
                format!("<{}> needs a `{name}` attribute", self.element.name),
            )
        })?;
        if attr.value.trim().is_empty() {
            return Err(error(attr.pos, format!("attribute `{name}` is empty")));
        }
        Ok(attr)
    }

    fn version(&self, name: &str, error: &ErrorFn<'_>) -> Result<Version, ManifestError> {
        let attr = self.required(name, error)?;
        Version::parse(&attr.value).map_err(|e| error(attr.pos, format!("attribute `{name}`: {e}")))
    }
}

fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn no_text(element: &Element<'_>, error: &ErrorFn<'_>) -> Result<(), ManifestError> {
    match element.text_pos {
        Some(pos) => Err(error(
            pos,
            format!("unexpected text inside <{}>", element.name),
        )),
        None => Ok(()),
    }
}

fn no_children(element: &Element<'_>, error: &ErrorFn<'_>) -> Result<(), ManifestError> {
    match element.children.first() {
        Some(child) => Err(error(
            child.pos,
            format!(
                "unexpected element <{}> inside <{}>",
                child.name, element.name
            ),
        )),
        None => Ok(()),
    }
}

fn text_version(element: &Element<'_>, error: &ErrorFn<'_>) -> Result<Version, ManifestError> {
    no_children(element, error)?;
    Attrs::check(element, &[], error)?;
    let pos = element.text_pos.unwrap_or(element.pos);
    Version::parse(&element.text).map_err(|e| error(pos, format!("<{}>: {e}", element.name)))
}

fn text_value(element: &Element<'_>, error: &ErrorFn<'_>) -> Result<String, ManifestError> {
    no_children(element, error)?;
    Attrs::check(element, &[], error)?;
    let value = element.text.trim();
    if value.is_empty() {
        return Err(error(element.pos, format!("<{}> is empty", element.name)));
    }
    Ok(value.to_string())
}

/// Builds a [`Manifest`] from the root and its children as the parser hands them over.
pub(super) struct Interpreter<'e, 'f> {
    error: &'e ErrorFn<'f>,
    manifest: Manifest,
    initial_version: Option<(Version, Pos)>,
    /// Which format the children seen so far commit to: `<step>` and `<install>` are
    /// canonical, `<matching>` is the older format; `None` until one of them appears.
    decided: Option<Format>,
    /// Unknown children of the root met before the format was decided: an error in the
    /// canonical format, a warning in the older one (as the original system ignored them).
    unknown: Vec<(String, Pos)>,
    /// Every `<sql file>` in document order, with the `file` attribute's position.
    scripts: Vec<(PathBuf, Pos)>,
}

impl<'e, 'f> Interpreter<'e, 'f> {
    /// `expected_steps` sizes the step list up front.
    pub(super) fn new(path: &Path, expected_steps: usize, error: &'e ErrorFn<'f>) -> Self {
        Interpreter {
            error,
            manifest: Manifest {
                path: path.to_path_buf(),
                format: Format::Canonical,
                project: None,
                initial_version: None,
                install: None,
                steps: Vec::with_capacity(expected_steps),
                packages: Vec::new(),
            },
            initial_version: None,
            decided: None,
            unknown: Vec::new(),
            scripts: Vec::new(),
        }
    }

    /// Commits to `format`: unknown children met so far become an error (canonical) or
    /// warnings (older format).
    fn decide(&mut self, format: Format) -> Result<(), ManifestError> {
        if self.decided.is_some() {
            return Ok(());
        }
        self.decided = Some(format);
        let unknown = std::mem::take(&mut self.unknown);
        match format {
            Format::Canonical => match unknown.into_iter().next() {
                Some((name, pos)) => Err(unknown_child(&name, pos, self.error)),
                None => Ok(()),
            },
            Format::Legacy => {
                for (name, pos) in unknown {
                    self.warn_ignored(&name, pos);
                }
                Ok(())
            }
        }
    }

    fn warn_ignored(&self, name: &str, pos: Pos) {
        log::warn!(
            "{}:{pos}: ignoring <{name}> in the older-format <upgrade>: like the original system, upgrader reads only <initialversion> and <matching> there",
            self.manifest.path.display()
        );
    }

    /// The manifest, and every script it names with the `file` attribute's position.
    pub(super) fn finish(mut self) -> (Manifest, Vec<(PathBuf, Pos)>) {
        self.manifest.initial_version = self.initial_version.map(|(version, _)| version);
        (self.manifest, self.scripts)
    }
}

impl Visitor for Interpreter<'_, '_> {
    fn root(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
        let error = self.error;
        if !is(root, "upgrade") {
            return Err(error(
                root.pos,
                format!("the root element is <{}>; expected <upgrade>", root.name),
            ));
        }
        let attrs = Attrs::check(root, &["project", "initial-version"], error)?;
        if let Some(attr) = attrs.get("project") {
            let name = attrs.required("project", error)?.value.trim().to_string();
            check_project_name(&name, attr.pos, error)?;
            self.manifest.project = Some(name);
        }
        if attrs.get("initial-version").is_some() {
            self.initial_version = Some((attrs.version("initial-version", error)?, root.pos));
        }
        Ok(())
    }

    fn root_end(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
        no_text(root, self.error)?;
        // Neither format was named (no step, install or matching): unknown children are
        // errors, as in the canonical format.
        self.decide(Format::Canonical)
    }

    fn child(&mut self, child: &Element<'_>) -> Result<(), ManifestError> {
        let error = self.error;
        // `<step>` is by far the most common child, so it is recognised first and once.
        let is_step = is(child, "step");
        if is_step || is(child, "install") || is(child, "package") {
            self.decide(Format::Canonical)?;
        } else if is(child, "matching") {
            self.decide(Format::Legacy)?;
        }
        let manifest = &mut self.manifest;
        if is_step {
            manifest.steps.push(step(child, &mut self.scripts, error)?);
        } else if is(child, "initialversion") {
            let version = text_version(child, error)?;
            if let Some((_, first)) = self.initial_version {
                return Err(error(
                    child.pos,
                    format!(
                        "the initial version is given twice (first at line {})",
                        first.line
                    ),
                ));
            }
            self.initial_version = Some((version, child.pos));
        } else if is(child, "install") {
            if let Some(first) = &manifest.install {
                return Err(error(
                    child.pos,
                    format!(
                        "a second <install> (the first is at line {})",
                        first.pos.line
                    ),
                ));
            }
            Attrs::check(child, &[], error)?;
            no_text(child, error)?;
            let actions = actions(child, &mut [], &mut self.scripts, error)?;
            manifest.install = Some(Install {
                actions,
                pos: child.pos,
            });
        } else if is(child, "matching") {
            manifest.format = Format::Legacy;
            Attrs::check(child, &[], error)?;
            no_text(child, error)?;
            for entry in &child.children {
                if let Some(step) = legacy_step(entry, error)? {
                    manifest.steps.push(step);
                }
            }
        } else if is(child, "package") {
            manifest.packages.push(package(child, error)?);
        } else if is(child, "system_note") {
            // Older deployments kept free-form notes here; they mean nothing to upgrader.
        } else {
            match self.decided {
                Some(Format::Canonical) => {
                    return Err(unknown_child(&child.name, child.pos, error))
                }
                Some(Format::Legacy) => self.warn_ignored(&child.name, child.pos),
                None => self.unknown.push((child.name.to_string(), child.pos)),
            }
        }
        Ok(())
    }
}

fn unknown_child(name: &str, pos: Pos, error: &ErrorFn<'_>) -> ManifestError {
    error(
        pos,
        format!(
            "unknown element <{name}> in <upgrade>; expected <install>, <step>, <package>, <initialversion> or <matching>"
        ),
    )
}

fn check_project_name(name: &str, pos: Pos, error: &ErrorFn<'_>) -> Result<(), ManifestError> {
    if name.chars().any(|c| c.is_control()) || name.len() > 200 {
        return Err(error(
            pos,
            format!("project name {name:?} must be printable and at most 200 bytes"),
        ));
    }
    Ok(())
}

fn step(
    element: &Element<'_>,
    scripts: &mut Vec<(PathBuf, Pos)>,
    error: &ErrorFn<'_>,
) -> Result<Step, ManifestError> {
    let attrs = Attrs::check(
        element,
        &["name", "from", "to", "transaction", "after"],
        error,
    )?;
    no_text(element, error)?;
    let name = attrs.required("name", error)?.value.trim().to_string();
    let from = attrs.version("from", error)?;
    let to = attrs.version("to", error)?;
    let transaction = match attrs.get("transaction") {
        None => StepTransaction::Shared,
        Some(attr) => match attr.value.trim() {
            "shared" => StepTransaction::Shared,
            "none" => StepTransaction::NoneUnsafe,
            other => {
                return Err(error(
                    attr.pos,
                    format!(
                        "attribute `transaction` is \"{other}\"; expected \"none\" or \"shared\""
                    ),
                ))
            }
        },
    };
    let after = match attrs.get("after") {
        None => None,
        Some(attr) => Some(after(attr, error)?),
    };
    let mut description = None;
    let actions = actions(
        element,
        &mut [("description", &mut description)],
        scripts,
        error,
    )?;
    Ok(Step {
        name,
        from,
        to,
        description,
        actions,
        transaction,
        after,
        pos: element.pos,
    })
}

/// `after="PROJECT VERSION"`.
fn after(attr: &Attr<'_>, error: &ErrorFn<'_>) -> Result<After, ManifestError> {
    let mut words = attr.value.split_whitespace();
    let (Some(project), Some(version), None) = (words.next(), words.next(), words.next()) else {
        return Err(error(
            attr.pos,
            format!(
                "attribute `after` is {:?}; expected a package's project name and a version, as in after=\"shop 2.0.0\"",
                attr.value
            ),
        ));
    };
    check_project_name(project, attr.pos, error)?;
    let version =
        Version::parse(version).map_err(|e| error(attr.pos, format!("attribute `after`: {e}")))?;
    Ok(After {
        project: project.to_string(),
        version,
        pos: attr.pos,
    })
}

/// `<package dir="…"/>`: a relative directory that stays inside the project (checked on
/// the file system when the application is loaded).
fn package(element: &Element<'_>, error: &ErrorFn<'_>) -> Result<PackageRef, ManifestError> {
    let attrs = Attrs::check(element, &["dir"], error)?;
    no_children(element, error)?;
    no_text(element, error)?;
    let attr = attrs.required("dir", error)?;
    let dir = PathBuf::from(attr.value.trim());
    if dir.is_absolute()
        || dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(error(
            attr.pos,
            format!(
                "package dir {:?} must be a directory inside the project, given relative to it without `..`",
                attr.value
            ),
        ));
    }
    if dir
        .components()
        .all(|c| matches!(c, std::path::Component::CurDir))
    {
        return Err(error(
            attr.pos,
            "package dir names the project itself; a package is a subdirectory with its own VERSION and upgrade.xml".to_string(),
        ));
    }
    Ok(PackageRef {
        dir,
        pos: element.pos,
    })
}

/// Reads `<sql>` and `<plugin>` children; `extra` names text-only children that may appear
/// once (such as `<description>`).
fn actions(
    parent: &Element<'_>,
    extra: &mut [(&str, &mut Option<String>)],
    scripts: &mut Vec<(PathBuf, Pos)>,
    error: &ErrorFn<'_>,
) -> Result<Vec<Action>, ManifestError> {
    // Sized once: growing from empty costs a reallocation per step of a large manifest.
    let mut actions = Vec::with_capacity(parent.children.len());
    'children: for child in &parent.children {
        for (name, slot) in extra.iter_mut() {
            if child.name == *name {
                if slot.is_some() {
                    return Err(error(
                        child.pos,
                        format!("a second <{name}> in <{}>", parent.name),
                    ));
                }
                **slot = Some(text_value(child, error)?);
                continue 'children;
            }
        }
        if child.name == "sql" {
            actions.push(sql_action(child, scripts, error)?);
        } else if child.name == "plugin" {
            let attrs = Attrs::check(child, &["library", "method"], error)?;
            no_children(child, error)?;
            no_text(child, error)?;
            let library = attrs.required("library", error)?;
            let method = attrs.required("method", error)?;
            check_library(&library.value, library.pos, error)?;
            check_method(&method.value, method.pos, error)?;
            actions.push(Action::Plugin {
                library: library.value.to_string(),
                method: method.value.to_string(),
                pos: child.pos,
            });
        } else {
            let mut expected: Vec<String> = extra.iter().map(|(n, _)| format!("<{n}>")).collect();
            expected.extend(["<sql>".to_string(), "<plugin>".to_string()]);
            return Err(error(
                child.pos,
                format!(
                    "unknown element <{}> in <{}>; expected {}",
                    child.name,
                    parent.name,
                    expected.join(", ")
                ),
            ));
        }
    }
    if actions.is_empty() {
        return Err(error(
            parent.pos,
            format!("<{}> has no actions; add <sql> or <plugin>", parent.name),
        ));
    }
    Ok(actions)
}

fn sql_action(
    element: &Element<'_>,
    scripts: &mut Vec<(PathBuf, Pos)>,
    error: &ErrorFn<'_>,
) -> Result<Action, ManifestError> {
    let attrs = Attrs::check(element, &["file"], error)?;
    no_children(element, error)?;
    let source = match (attrs.get("file"), element.text_pos) {
        (Some(file), None) => {
            let file = attrs.required("file", error).map(|_| file)?;
            let path = PathBuf::from(file.value.trim());
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(error(
                    file.pos,
                    format!(
                        "script path {:?} must be relative to the project and stay inside it",
                        file.value
                    ),
                ));
            }
            scripts.push((path.clone(), file.pos));
            SqlSource::File(path)
        }
        (Some(_), Some(text_pos)) => {
            return Err(error(
                text_pos,
                "<sql> has both a `file` attribute and inline text; use one".into(),
            ))
        }
        (None, Some(_)) => SqlSource::Inline {
            text: element.text.to_string(),
            pos: element.text_start,
        },
        (None, None) => {
            return Err(error(
                element.pos,
                "<sql> is empty; give a `file` attribute or inline SQL".into(),
            ))
        }
    };
    Ok(Action::Sql {
        source,
        pos: element.pos,
    })
}

/// A bare library name: no directory separators, no `..`, nothing the loader would read
/// as a path.
pub(crate) fn check_library(
    name: &str,
    pos: Pos,
    error: &ErrorFn<'_>,
) -> Result<(), ManifestError> {
    if crate::plugin::is_bare_library_name(name) {
        Ok(())
    } else {
        Err(error(
            pos,
            format!(
                "plugin library \"{name}\" must be a bare name (letters, digits, '_', '-', '.'; no path separators or '..')"
            ),
        ))
    }
}

fn check_method(name: &str, pos: Pos, error: &ErrorFn<'_>) -> Result<(), ManifestError> {
    if crate::plugin::is_method_name(name) {
        Ok(())
    } else {
        Err(error(
            pos,
            format!("plugin method \"{name}\" must be an identifier (letters, digits, '_')"),
        ))
    }
}

/// One `<vX.Y.Z>` entry of `<matching>`. An entry without `script_name` only moves the
/// version, which the plan's version-only bumps already do, so it yields no step.
fn legacy_step(entry: &Element<'_>, error: &ErrorFn<'_>) -> Result<Option<Step>, ManifestError> {
    let from_text = entry
        .name
        .strip_prefix(['v', 'V'])
        .ok_or_else(|| {
            error(
                entry.pos,
                format!(
                    "unknown element <{}> in <matching>; entries are named after their from-version, like <v1.2.0>",
                    entry.name
                ),
            )
        })?;
    let from = Version::parse(from_text)
        .map_err(|e| error(entry.pos, format!("<{}>: {e}", entry.name)))?;
    Attrs::check(entry, &[], error)?;
    no_text(entry, error)?;
    let mut fields: [(&str, Option<(String, Pos)>); 4] = [
        ("target_version", None),
        ("script_name", None),
        ("class_name", None),
        ("call_method", None),
    ];
    for child in &entry.children {
        let Some(slot) = fields.iter_mut().find(|(name, _)| is(child, name)) else {
            return Err(error(
                child.pos,
                format!(
                    "unknown element <{}> in <{}>; expected <target_version>, <script_name>, <class_name> or <call_method>",
                    child.name, entry.name
                ),
            ));
        };
        if slot.1.is_some() {
            return Err(error(
                child.pos,
                format!("a second <{}> in <{}>", child.name, entry.name),
            ));
        }
        slot.1 = Some((
            text_value(child, error)?,
            child.text_pos.unwrap_or(child.pos),
        ));
    }
    let [(_, target), (_, script), (_, class), (_, method)] = fields;
    let (target, target_pos) = target.ok_or_else(|| {
        error(
            entry.pos,
            format!("<{}> needs a <target_version>", entry.name),
        )
    })?;
    let to =
        Version::parse(&target).map_err(|e| error(target_pos, format!("<target_version>: {e}")))?;
    let Some((script, script_pos)) = script else {
        return Ok(None);
    };
    let (method, method_pos) = method.ok_or_else(|| {
        error(
            entry.pos,
            format!("<{}> has a <script_name> but no <call_method>", entry.name),
        )
    })?;
    let library = match script.rsplit_once('.') {
        Some((stem, _extension)) if !stem.is_empty() => stem.to_string(),
        _ => script.clone(),
    };
    check_library(&library, script_pos, error)?;
    check_method(&method, method_pos, error)?;
    let name = class.map_or_else(|| format!("v{from}"), |(class, _)| class);
    Ok(Some(Step {
        name,
        from,
        to,
        description: None,
        actions: vec![Action::Plugin {
            library,
            method,
            pos: entry.pos,
        }],
        after: None,
        transaction: StepTransaction::Shared,
        pos: entry.pos,
    }))
}
