//! Reads the element tree as a canonical or older-format manifest, checking names,
//! attributes and values element by element.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::xml::{Attr, Element, LineIndex, Visitor};
use super::{
    Action, After, ErrorFn, Format, Install, Manifest, ManifestError, PackageRef, Pos, SqlSource,
    Step, StepTransaction, Text,
};
use crate::version::Version;

/// How places become positions and errors: elements carry byte offsets, and only the
/// positions a manifest keeps or an error reports are counted out in lines.
#[derive(Clone, Copy)]
pub(super) struct Cx<'e> {
    error: &'e ErrorFn<'e>,
    lines: &'e LineIndex<'e>,
    /// The whole text, which the manifest's [`Text`]s share.
    all: &'e Arc<str>,
}

impl<'e> Cx<'e> {
    pub(super) fn new(error: &'e ErrorFn<'e>, lines: &'e LineIndex<'e>, all: &'e Arc<str>) -> Self {
        Cx { error, lines, all }
    }

    /// `part` of the text (or text the reader built) as the manifest keeps it.
    fn text(&self, part: &str) -> Text {
        Text::from_part(self.all, part)
    }

    fn pos(&self, at: usize) -> Pos {
        self.lines.pos(at)
    }

    fn err(&self, at: usize, message: String) -> ManifestError {
        (self.error)(self.pos(at), message)
    }
}

/// `text` without surrounding whitespace; text with none (nearly every name and value)
/// skips the Unicode-aware trim.
fn trim(text: &str) -> &str {
    let plain = |b: Option<&u8>| b.is_some_and(u8::is_ascii_graphic);
    if plain(text.as_bytes().first()) && plain(text.as_bytes().last()) {
        text
    } else {
        text.trim()
    }
}

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
        cx: Cx<'_>,
    ) -> Result<Self, ManifestError> {
        for attr in &element.attrs {
            if !allowed.contains(&attr.name) {
                let expected = if allowed.is_empty() {
                    "it takes no attributes".to_string()
                } else {
                    format!("expected {}", list(allowed))
                };
                return Err(cx.err(
                    attr.at,
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

    fn required(&self, name: &str, cx: Cx<'_>) -> Result<&'a Attr<'a>, ManifestError> {
        let attr = self.get(name).ok_or_else(|| {
            cx.err(
                self.element.at,
                format!("<{}> needs a `{name}` attribute", self.element.name),
            )
        })?;
        if trim(&attr.value).is_empty() {
            return Err(cx.err(attr.at, format!("attribute `{name}` is empty")));
        }
        Ok(attr)
    }

    fn version(&self, name: &str, cx: Cx<'_>) -> Result<Version, ManifestError> {
        let attr = self.required(name, cx)?;
        parse_version(&attr.value, attr.at, name, cx)
    }
}

fn parse_version(text: &str, at: usize, name: &str, cx: Cx<'_>) -> Result<Version, ManifestError> {
    Version::parse(text).map_err(|e| cx.err(at, format!("attribute `{name}`: {e}")))
}

fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn no_text(element: &Element<'_>, cx: Cx<'_>) -> Result<(), ManifestError> {
    match element.text_at {
        Some(at) => Err(cx.err(at, format!("unexpected text inside <{}>", element.name))),
        None => Ok(()),
    }
}

fn no_children(element: &Element<'_>, cx: Cx<'_>) -> Result<(), ManifestError> {
    match element.children.first() {
        Some(child) => Err(cx.err(
            child.at,
            format!(
                "unexpected element <{}> inside <{}>",
                child.name, element.name
            ),
        )),
        None => Ok(()),
    }
}

fn text_version(element: &Element<'_>, cx: Cx<'_>) -> Result<Version, ManifestError> {
    no_children(element, cx)?;
    Attrs::check(element, &[], cx)?;
    let at = element.text_at.unwrap_or(element.at);
    Version::parse(&element.text).map_err(|e| cx.err(at, format!("<{}>: {e}", element.name)))
}

fn text_value(element: &Element<'_>, cx: Cx<'_>) -> Result<Text, ManifestError> {
    no_children(element, cx)?;
    Attrs::check(element, &[], cx)?;
    let value = trim(&element.text);
    if value.is_empty() {
        return Err(cx.err(element.at, format!("<{}> is empty", element.name)));
    }
    Ok(cx.text(value))
}

/// The `to` version of the step read last, with its text: in a chain of steps each
/// `from` repeats the previous `to`, so half the versions need no parsing.
#[derive(Default)]
struct LastVersion {
    text: String,
    version: Option<Version>,
}

impl LastVersion {
    /// `attr`'s version, taken from the last one when the text is the same.
    fn get(&self, attrs: &Attrs<'_>, name: &str, cx: Cx<'_>) -> Result<Version, ManifestError> {
        let attr = attrs.required(name, cx)?;
        match &self.version {
            Some(version) if self.text == attr.value => Ok(version.clone()),
            _ => parse_version(&attr.value, attr.at, name, cx),
        }
    }

    fn set(&mut self, text: &str, version: &Version) {
        self.text.clear();
        self.text.push_str(text);
        self.version = Some(version.clone());
    }
}

/// Builds a [`Manifest`] from the root and its children as the parser hands them over.
pub(super) struct Interpreter<'e> {
    cx: Cx<'e>,
    manifest: Manifest,
    initial_version: Option<(Version, Pos)>,
    /// Which format the children seen so far commit to: `<step>` and `<install>` are
    /// canonical, `<matching>` is the older format; `None` until one of them appears.
    decided: Option<Format>,
    /// Unknown children of the root met before the format was decided: an error in the
    /// canonical format, a warning in the older one (as the original system ignored them).
    unknown: Vec<(String, usize)>,
    /// Every `<sql file>` in document order, with the `file` attribute's position.
    scripts: Vec<(PathBuf, Pos)>,
    last_to: LastVersion,
    /// Warnings not yet logged (see [`Interpreter::log_warnings`]).
    warnings: Vec<String>,
}

impl<'e> Interpreter<'e> {
    /// `expected_steps` sizes the step list up front.
    pub(super) fn new(path: &Path, expected_steps: usize, cx: Cx<'e>) -> Self {
        Interpreter {
            cx,
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
            last_to: LastVersion::default(),
            warnings: Vec::new(),
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
                Some((name, at)) => Err(unknown_child(&name, at, self.cx)),
                None => Ok(()),
            },
            Format::Legacy => {
                for (name, at) in unknown {
                    self.warn_ignored(&name, at);
                }
                Ok(())
            }
        }
    }

    fn warn_ignored(&mut self, name: &str, at: usize) {
        self.warnings.push(format!(
            "{}:{}: ignoring <{name}> in the older-format <upgrade>: like the original system, upgrader reads only <initialversion> and <matching> there",
            self.manifest.path.display(),
            self.cx.pos(at)
        ));
    }

    /// Logs the warnings so far. They wait until the reading is over, since a manifest
    /// the plain reader leaves half-way is read again from the start.
    pub(super) fn log_warnings(&mut self) {
        for warning in self.warnings.drain(..) {
            log::warn!("{warning}");
        }
    }

    /// The manifest, and every script it names with the `file` attribute's position.
    pub(super) fn finish(mut self) -> (Manifest, Vec<(PathBuf, Pos)>) {
        self.manifest.initial_version = self.initial_version.map(|(version, _)| version);
        (self.manifest, self.scripts)
    }
}

impl Visitor for Interpreter<'_> {
    fn root(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
        let cx = self.cx;
        if !is(root, "upgrade") {
            return Err(cx.err(
                root.at,
                format!("the root element is <{}>; expected <upgrade>", root.name),
            ));
        }
        let attrs = Attrs::check(root, &["project", "initial-version"], cx)?;
        if let Some(attr) = attrs.get("project") {
            let name = attrs.required("project", cx)?.value.trim().to_string();
            check_project_name(&name, attr.at, cx)?;
            self.manifest.project = Some(name);
        }
        if attrs.get("initial-version").is_some() {
            self.initial_version = Some((attrs.version("initial-version", cx)?, cx.pos(root.at)));
        }
        Ok(())
    }

    fn root_end(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
        no_text(root, self.cx)?;
        // Neither format was named (no step, install or matching): unknown children are
        // errors, as in the canonical format.
        self.decide(Format::Canonical)
    }

    fn child(&mut self, child: &Element<'_>) -> Result<(), ManifestError> {
        let cx = self.cx;
        // `<step>` is by far the most common child, so it is recognised first and once.
        let is_step = is(child, "step");
        if is_step || is(child, "install") || is(child, "package") {
            self.decide(Format::Canonical)?;
        } else if is(child, "matching") {
            self.decide(Format::Legacy)?;
        }
        let manifest = &mut self.manifest;
        if is_step {
            manifest
                .steps
                .push(step(child, &mut self.scripts, &mut self.last_to, cx)?);
        } else if is(child, "initialversion") {
            let version = text_version(child, cx)?;
            if let Some((_, first)) = self.initial_version {
                return Err(cx.err(
                    child.at,
                    format!(
                        "the initial version is given twice (first at line {})",
                        first.line
                    ),
                ));
            }
            self.initial_version = Some((version, cx.pos(child.at)));
        } else if is(child, "install") {
            if let Some(first) = &manifest.install {
                return Err(cx.err(
                    child.at,
                    format!(
                        "a second <install> (the first is at line {})",
                        first.pos.line
                    ),
                ));
            }
            Attrs::check(child, &[], cx)?;
            no_text(child, cx)?;
            let pos = cx.pos(child.at);
            let actions = actions(child, &mut [], &mut self.scripts, cx)?;
            manifest.install = Some(Install { actions, pos });
        } else if is(child, "matching") {
            manifest.format = Format::Legacy;
            Attrs::check(child, &[], cx)?;
            no_text(child, cx)?;
            for entry in &child.children {
                if let Some(step) = legacy_step(entry, cx)? {
                    manifest.steps.push(step);
                }
            }
        } else if is(child, "package") {
            manifest.packages.push(package(child, cx)?);
        } else if is(child, "system_note") {
            // Older deployments kept free-form notes here; they mean nothing to upgrader.
        } else {
            match self.decided {
                Some(Format::Canonical) => return Err(unknown_child(child.name, child.at, cx)),
                Some(Format::Legacy) => self.warn_ignored(child.name, child.at),
                None => self.unknown.push((child.name.to_string(), child.at)),
            }
        }
        Ok(())
    }
}

fn unknown_child(name: &str, at: usize, cx: Cx<'_>) -> ManifestError {
    cx.err(
        at,
        format!(
            "unknown element <{name}> in <upgrade>; expected <install>, <step>, <package>, <initialversion> or <matching>"
        ),
    )
}

fn check_project_name(name: &str, at: usize, cx: Cx<'_>) -> Result<(), ManifestError> {
    if name.chars().any(|c| c.is_control()) || name.len() > 200 {
        return Err(cx.err(
            at,
            format!("project name {name:?} must be printable and at most 200 bytes"),
        ));
    }
    Ok(())
}

fn step(
    element: &Element<'_>,
    scripts: &mut Vec<(PathBuf, Pos)>,
    last_to: &mut LastVersion,
    cx: Cx<'_>,
) -> Result<Step, ManifestError> {
    let attrs = Attrs::check(element, &["name", "from", "to", "transaction", "after"], cx)?;
    no_text(element, cx)?;
    let name = cx.text(trim(&attrs.required("name", cx)?.value));
    let from = last_to.get(&attrs, "from", cx)?;
    let to_attr = attrs.required("to", cx)?;
    let to = parse_version(&to_attr.value, to_attr.at, "to", cx)?;
    last_to.set(&to_attr.value, &to);
    let transaction = match attrs.get("transaction") {
        None => StepTransaction::Shared,
        Some(attr) => match attr.value.trim() {
            "shared" => StepTransaction::Shared,
            "none" => StepTransaction::NoneUnsafe,
            other => {
                return Err(cx.err(
                    attr.at,
                    format!(
                        "attribute `transaction` is \"{other}\"; expected \"none\" or \"shared\""
                    ),
                ))
            }
        },
    };
    // Counted before the attributes' and children's positions: the line index walks
    // forward.
    let pos = cx.pos(element.at);
    let after = match attrs.get("after") {
        None => None,
        Some(attr) => Some(after(attr, cx)?),
    };
    let mut description = None;
    let actions = actions(
        element,
        &mut [("description", &mut description)],
        scripts,
        cx,
    )?;
    Ok(Step {
        name,
        from,
        to,
        description,
        actions,
        transaction,
        after,
        pos,
    })
}

/// `after="PROJECT VERSION"`.
fn after(attr: &Attr<'_>, cx: Cx<'_>) -> Result<After, ManifestError> {
    let mut words = attr.value.split_whitespace();
    let (Some(project), Some(version), None) = (words.next(), words.next(), words.next()) else {
        return Err(cx.err(
            attr.at,
            format!(
                "attribute `after` is {:?}; expected a package's project name and a version, as in after=\"shop 2.0.0\"",
                attr.value
            ),
        ));
    };
    check_project_name(project, attr.at, cx)?;
    let version =
        Version::parse(version).map_err(|e| cx.err(attr.at, format!("attribute `after`: {e}")))?;
    Ok(After {
        project: project.to_string(),
        version,
        pos: cx.pos(attr.at),
    })
}

/// `<package dir="…"/>`: a relative directory that stays inside the project (checked on
/// the file system when the application is loaded).
fn package(element: &Element<'_>, cx: Cx<'_>) -> Result<PackageRef, ManifestError> {
    let pos = cx.pos(element.at);
    let attrs = Attrs::check(element, &["dir"], cx)?;
    no_children(element, cx)?;
    no_text(element, cx)?;
    let attr = attrs.required("dir", cx)?;
    let dir = PathBuf::from(attr.value.trim());
    if dir.is_absolute()
        || dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(cx.err(
            attr.at,
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
        return Err(cx.err(
            attr.at,
            "package dir names the project itself; a package is a subdirectory with its own VERSION and upgrade.xml".to_string(),
        ));
    }
    Ok(PackageRef { dir, pos })
}

/// Reads `<sql>` and `<plugin>` children; `extra` names text-only children that may appear
/// once (such as `<description>`).
fn actions(
    parent: &Element<'_>,
    extra: &mut [(&str, &mut Option<Text>)],
    scripts: &mut Vec<(PathBuf, Pos)>,
    cx: Cx<'_>,
) -> Result<Vec<Action>, ManifestError> {
    // Sized once: growing from empty costs a reallocation per step of a large manifest.
    let mut actions = Vec::with_capacity(parent.children.len());
    'children: for child in &parent.children {
        for (name, slot) in extra.iter_mut() {
            if child.name == *name {
                if slot.is_some() {
                    return Err(cx.err(child.at, format!("a second <{name}> in <{}>", parent.name)));
                }
                **slot = Some(text_value(child, cx)?);
                continue 'children;
            }
        }
        if child.name == "sql" {
            actions.push(sql_action(child, scripts, cx)?);
        } else if child.name == "plugin" {
            let attrs = Attrs::check(child, &["library", "method"], cx)?;
            no_children(child, cx)?;
            no_text(child, cx)?;
            let library = attrs.required("library", cx)?;
            let method = attrs.required("method", cx)?;
            check_library(&library.value, library.at, cx)?;
            check_method(&method.value, method.at, cx)?;
            actions.push(Action::Plugin {
                library: library.value.to_string(),
                method: method.value.to_string(),
                pos: cx.pos(child.at),
            });
        } else {
            let mut expected: Vec<String> = extra.iter().map(|(n, _)| format!("<{n}>")).collect();
            expected.extend(["<sql>".to_string(), "<plugin>".to_string()]);
            return Err(cx.err(
                child.at,
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
        return Err(cx.err(
            parent.at,
            format!("<{}> has no actions; add <sql> or <plugin>", parent.name),
        ));
    }
    Ok(actions)
}

fn sql_action(
    element: &Element<'_>,
    scripts: &mut Vec<(PathBuf, Pos)>,
    cx: Cx<'_>,
) -> Result<Action, ManifestError> {
    let attrs = Attrs::check(element, &["file"], cx)?;
    no_children(element, cx)?;
    let pos = cx.pos(element.at);
    let source = match (attrs.get("file"), element.text_at) {
        (Some(file), None) => {
            let file = attrs.required("file", cx).map(|_| file)?;
            let path = PathBuf::from(file.value.trim());
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(cx.err(
                    file.at,
                    format!(
                        "script path {:?} must be relative to the project and stay inside it",
                        file.value
                    ),
                ));
            }
            scripts.push((path.clone(), cx.pos(file.at)));
            SqlSource::File(path)
        }
        (Some(_), Some(text_at)) => {
            return Err(cx.err(
                text_at,
                "<sql> has both a `file` attribute and inline text; use one".into(),
            ))
        }
        (None, Some(_)) => SqlSource::Inline {
            text: cx.text(&element.text),
            pos: cx.pos(element.text_start),
        },
        (None, None) => {
            return Err(cx.err(
                element.at,
                "<sql> is empty; give a `file` attribute or inline SQL".into(),
            ))
        }
    };
    Ok(Action::Sql { source, pos })
}

/// A bare library name: no directory separators, no `..`, nothing the loader would read
/// as a path.
fn check_library(name: &str, at: usize, cx: Cx<'_>) -> Result<(), ManifestError> {
    if crate::plugin::is_bare_library_name(name) {
        Ok(())
    } else {
        Err(cx.err(
            at,
            format!(
                "plugin library \"{name}\" must be a bare name (letters, digits, '_', '-', '.'; no path separators or '..')"
            ),
        ))
    }
}

fn check_method(name: &str, at: usize, cx: Cx<'_>) -> Result<(), ManifestError> {
    if crate::plugin::is_method_name(name) {
        Ok(())
    } else {
        Err(cx.err(
            at,
            format!("plugin method \"{name}\" must be an identifier (letters, digits, '_')"),
        ))
    }
}

/// One `<vX.Y.Z>` entry of `<matching>`. An entry without `script_name` only moves the
/// version, which the plan's version-only bumps already do, so it yields no step.
fn legacy_step(entry: &Element<'_>, cx: Cx<'_>) -> Result<Option<Step>, ManifestError> {
    let from_text = entry.name.strip_prefix(['v', 'V']).ok_or_else(|| {
        cx.err(
            entry.at,
            format!(
                "unknown element <{}> in <matching>; entries are named after their from-version, like <v1.2.0>",
                entry.name
            ),
        )
    })?;
    let from = Version::parse(from_text)
        .map_err(|e| cx.err(entry.at, format!("<{}>: {e}", entry.name)))?;
    Attrs::check(entry, &[], cx)?;
    no_text(entry, cx)?;
    let pos = cx.pos(entry.at);
    let mut fields: [(&str, Option<(Text, usize)>); 4] = [
        ("target_version", None),
        ("script_name", None),
        ("class_name", None),
        ("call_method", None),
    ];
    for child in &entry.children {
        let Some(slot) = fields.iter_mut().find(|(name, _)| is(child, name)) else {
            return Err(cx.err(
                child.at,
                format!(
                    "unknown element <{}> in <{}>; expected <target_version>, <script_name>, <class_name> or <call_method>",
                    child.name, entry.name
                ),
            ));
        };
        if slot.1.is_some() {
            return Err(cx.err(
                child.at,
                format!("a second <{}> in <{}>", child.name, entry.name),
            ));
        }
        slot.1 = Some((text_value(child, cx)?, child.text_at.unwrap_or(child.at)));
    }
    let [(_, target), (_, script), (_, class), (_, method)] = fields;
    let (target, target_at) = target.ok_or_else(|| {
        cx.err(
            entry.at,
            format!("<{}> needs a <target_version>", entry.name),
        )
    })?;
    let to =
        Version::parse(&target).map_err(|e| cx.err(target_at, format!("<target_version>: {e}")))?;
    let Some((script, script_at)) = script else {
        return Ok(None);
    };
    let (method, method_at) = method.ok_or_else(|| {
        cx.err(
            entry.at,
            format!("<{}> has a <script_name> but no <call_method>", entry.name),
        )
    })?;
    let library = match script.rsplit_once('.') {
        Some((stem, _extension)) if !stem.is_empty() => stem.to_string(),
        _ => script.to_string(),
    };
    check_library(&library, script_at, cx)?;
    check_method(&method, method_at, cx)?;
    let name = class.map_or_else(|| Text::from(format!("v{from}")), |(class, _)| class);
    Ok(Some(Step {
        name,
        from,
        to,
        description: None,
        actions: vec![Action::Plugin {
            library,
            method: method.to_string(),
            pos,
        }],
        after: None,
        transaction: StepTransaction::Shared,
        pos,
    }))
}
