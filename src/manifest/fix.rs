//! `lint --fix`: marks steps `transaction="none"` in `upgrade.xml` by editing the text of
//! their start tags only, so that everything else in the file (comments, spacing,
//! attribute order, quotes, line endings) stays byte for byte as the developer wrote it.
//!
//! The edit is a pure function of the text and the start tags' spans
//! ([`mark_transaction_none`]); [`mark_steps`] finds the spans from the positions the
//! validated manifest records and writes the file atomically.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Format, Manifest, Pos};

/// Why the manifest cannot be fixed.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The manifest does not validate, or does not say what it said when linted.
    #[error(transparent)]
    Manifest(#[from] super::ManifestError),
    /// Something other than what `--fix` can edit.
    #[error("{}:{pos}: {message}", path.display())]
    At {
        /// The manifest.
        path: PathBuf,
        /// Where.
        pos: Pos,
        /// What is wrong.
        message: String,
    },
    /// A file `--fix` will not edit: a link, one changed since it was linted, or an edit
    /// that would change more than the steps' transaction.
    #[error("{}: {message}", path.display())]
    Refused {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The older `<matching>` format has no `transaction` attribute to set.
    #[error(
        "{}: lint --fix edits manifests in the canonical <step> format only; this one uses the older <matching> format, which has no transaction=\"none\": convert it to <step> elements first",
        path.display()
    )]
    Legacy {
        /// The manifest.
        path: PathBuf,
    },
}

/// A step `--fix` marked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Marked {
    /// The step's name.
    pub step: String,
    /// `upgrade.xml:line:column` of its start tag.
    pub location: String,
}

/// The byte offset of a 1-based line and column (columns count characters, as in
/// [`Pos`]), if the text has that position.
pub fn offset_of(text: &str, pos: Pos) -> Option<usize> {
    let line_start = if pos.line <= 1 {
        0
    } else {
        memchr::memchr_iter(b'\n', text.as_bytes())
            .nth(pos.line as usize - 2)
            .map(|newline| newline + 1)?
    };
    let rest = &text[line_start..];
    let line = &rest[..memchr::memchr(b'\n', rest.as_bytes()).unwrap_or(rest.len())];
    let column = pos.column.checked_sub(1)? as usize;
    match line.char_indices().nth(column) {
        Some((at, _)) => Some(line_start + at),
        None if line.chars().count() == column => Some(line_start + line.len()),
        None => None,
    }
}

/// One attribute of a start tag, as byte ranges into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribute {
    name: Range<usize>,
    /// The value without its quotes.
    value: Range<usize>,
    quote: u8,
}

/// A `<step …>` start tag: its span (from `<` to just after `>`), its attributes, and
/// where its last attribute ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StartTag {
    span: Range<usize>,
    attributes: Vec<Attribute>,
    /// Just after the last attribute's closing quote (or the element name).
    content_end: usize,
}

/// Reads the `<step` start tag at `start`, or says why it is not one. Quoted values may
/// hold `>` and the other quote.
fn start_tag(text: &str, start: usize) -> Result<StartTag, String> {
    let bytes = text.as_bytes();
    let name_end = start + "<step".len();
    if !text[start..].starts_with("<step")
        || !bytes
            .get(name_end)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
    {
        return Err("expected a <step> start tag here".into());
    }
    let mut at = name_end;
    let mut content_end = name_end;
    let mut attributes = Vec::new();
    let skip_space = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    loop {
        at = skip_space(at);
        match bytes.get(at) {
            None => return Err("the <step> start tag does not end".into()),
            Some(b'>') => {
                return Ok(StartTag {
                    span: start..at + 1,
                    attributes,
                    content_end,
                })
            }
            Some(b'/') if bytes.get(at + 1) == Some(&b'>') => {
                return Ok(StartTag {
                    span: start..at + 2,
                    attributes,
                    content_end,
                })
            }
            Some(_) => {}
        }
        let name_start = at;
        while bytes
            .get(at)
            .is_some_and(|b| !b.is_ascii_whitespace() && !matches!(b, b'=' | b'>' | b'/'))
        {
            at += 1;
        }
        let name = name_start..at;
        at = skip_space(at);
        if name.is_empty() || bytes.get(at) != Some(&b'=') {
            return Err("cannot read the attributes of this <step> start tag".into());
        }
        at = skip_space(at + 1);
        let quote = match bytes.get(at) {
            Some(&quote @ (b'"' | b'\'')) => quote,
            _ => return Err("an attribute value of this <step> start tag is not quoted".into()),
        };
        let value_start = at + 1;
        let value_end = memchr::memchr(quote, &bytes[value_start..])
            .map(|length| value_start + length)
            .ok_or("an attribute value of this <step> start tag does not end")?;
        attributes.push(Attribute {
            name,
            value: value_start..value_end,
            quote,
        });
        at = value_end + 1;
        content_end = at;
    }
}

/// The text with each `<step>` start tag beginning at one of `starts` (byte offsets of
/// its `<`) marked `transaction="none"`: an existing `transaction` attribute gets the
/// value `none` (its quotes kept); otherwise ` transaction="none"` goes right after the
/// last attribute, quoted like the tag's first attribute. Nothing else changes.
pub fn mark_transaction_none(text: &str, starts: &[usize]) -> Result<String, (usize, String)> {
    let mut starts = starts.to_vec();
    starts.sort_unstable();
    starts.dedup();
    let mut out = String::with_capacity(text.len() + starts.len() * 20);
    let mut copied = 0;
    for start in starts {
        if start < copied {
            return Err((start, "overlapping <step> start tags".into()));
        }
        let tag = start_tag(text, start).map_err(|message| (start, message))?;
        let existing = tag
            .attributes
            .iter()
            .find(|attribute| &text[attribute.name.clone()] == "transaction");
        match existing {
            Some(attribute) => {
                out.push_str(&text[copied..attribute.value.start]);
                out.push_str("none");
                copied = attribute.value.end;
            }
            None => {
                let quote = tag.attributes.first().map_or('"', |a| char::from(a.quote));
                out.push_str(&text[copied..tag.content_end]);
                out.push_str(&format!(" transaction={quote}none{quote}"));
                copied = tag.content_end;
            }
        }
        out.push_str(&text[copied..tag.span.end]);
        copied = tag.span.end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// Marks the named steps `transaction="none"` in the manifest at `path` (a project's
/// `upgrade.xml`, scripts relative to `project_dir`), writing it atomically (a temporary
/// file in the same directory, with the same permissions, renamed over it) and only if
/// anything changes. The result is validated before it is written, and must say what the
/// file said except for those steps' transaction. Returns the steps marked.
pub fn mark_steps(
    path: &Path,
    project_dir: &Path,
    steps: &[&str],
) -> Result<Vec<Marked>, FixError> {
    let io = |source| FixError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Renaming over a link would replace the link, not edit the file it names.
    if std::fs::symlink_metadata(path)
        .map_err(io)?
        .file_type()
        .is_symlink()
    {
        return Err(FixError::Refused {
            path: path.to_path_buf(),
            message: "is a symbolic link; lint --fix edits a regular file only: run it where the file itself is, or edit it by hand".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let manifest = Manifest::parse(&text, path, Some(project_dir))?;
    if manifest.format == Format::Legacy {
        return Err(FixError::Legacy {
            path: path.to_path_buf(),
        });
    }
    // Positions count from after a byte order mark, which validation skips.
    let base = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let mut starts = Vec::new();
    let mut marked = Vec::new();
    for name in steps {
        let Some(step) = manifest.steps.iter().find(|step| step.name == *name) else {
            return Err(FixError::Refused {
                path: path.to_path_buf(),
                message: format!("no step named '{name}' (was the file changed meanwhile?)"),
            });
        };
        if step.transaction == super::StepTransaction::NoneUnsafe {
            continue;
        }
        let start = offset_of(&text[base..], step.pos)
            .map(|offset| offset + base)
            .ok_or_else(|| FixError::At {
                path: path.to_path_buf(),
                pos: step.pos,
                message: format!("step '{name}': no such position in the file"),
            })?;
        starts.push(start);
        marked.push(Marked {
            step: step.name.to_string(),
            location: format!("{}:{}", path.display(), step.pos),
        });
    }
    if starts.is_empty() {
        return Ok(marked);
    }
    let fixed =
        mark_transaction_none(&text, &starts).map_err(|(offset, message)| FixError::At {
            path: path.to_path_buf(),
            pos: super::xml::LineIndex::new(&text[base..]).pos(offset.saturating_sub(base)),
            message,
        })?;
    // The fixed text must validate and differ only in the marked steps' transaction.
    let after = Manifest::parse(&fixed, path, Some(project_dir))?;
    let same = after.steps.len() == manifest.steps.len()
        && after.steps.iter().zip(&manifest.steps).all(|(a, b)| {
            a.name == b.name
                && a.from == b.from
                && a.to == b.to
                && same_actions(&a.actions, &b.actions)
                && (a.transaction == b.transaction
                    || (a.transaction == super::StepTransaction::NoneUnsafe
                        && steps.contains(&a.name.as_str())))
        });
    if !same {
        return Err(FixError::Refused {
            path: path.to_path_buf(),
            message: "the edit would change more than the steps' transaction; nothing was written"
                .into(),
        });
    }
    write_atomically(path, fixed.as_bytes()).map_err(io)?;
    Ok(marked)
}

/// The same actions, positions aside (a longer start tag moves what follows on its line).
fn same_actions(a: &[super::Action], b: &[super::Action]) -> bool {
    use super::{Action, SqlSource};
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Action::Sql { source: x, .. }, Action::Sql { source: y, .. }) => match (x, y) {
                (SqlSource::File(x), SqlSource::File(y)) => x == y,
                (SqlSource::Inline { text: x, .. }, SqlSource::Inline { text: y, .. }) => x == y,
                _ => false,
            },
            (
                Action::Plugin {
                    library: x,
                    method: m,
                    ..
                },
                Action::Plugin {
                    library: y,
                    method: n,
                    ..
                },
            ) => x == y && m == n,
            _ => false,
        })
}

/// Writes `bytes` to a temporary file beside `path` with `path`'s permissions (and owner,
/// where allowed), then
/// renames it over `path`: a reader sees the old file or the new one, never half.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let metadata = std::fs::metadata(path)?;
    let mut temporary = tempfile_in(dir)?;
    let result = (|| {
        temporary.1.write_all(bytes)?;
        temporary.1.set_permissions(metadata.permissions())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // Keep the owner too (run as root on a deployer's file); allowed only to root
            // or to the owner already, so a refusal changes nothing and is not an error.
            let _ =
                std::os::unix::fs::fchown(&temporary.1, Some(metadata.uid()), Some(metadata.gid()));
        }
        temporary.1.sync_all()?;
        std::fs::rename(&temporary.0, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary.0);
    }
    result
}

/// A new file `.upgrade.xml.fix-PID-N` in `dir`, created exclusively.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut attempt = 0u32;
    loop {
        let path = dir.join(format!(".upgrade.xml.fix-{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(text: &str, tags: &[&str]) -> String {
        let starts: Vec<usize> = tags
            .iter()
            .map(|tag| text.find(tag).expect("tag in text"))
            .collect();
        mark_transaction_none(text, &starts).unwrap()
    }

    #[test]
    fn adds_the_attribute_after_the_last_one_keeping_everything_else() {
        let text = "<!-- a <step> in a comment -->\r\n<upgrade>\r\n  <step name=\"a\" from=\"1\"   to=\"2\">\r\n    <sql>x</sql>\r\n  </step>\r\n</upgrade>\r\n";
        assert_eq!(
            mark(text, &["<step name=\"a\""]),
            text.replace("to=\"2\">", "to=\"2\" transaction=\"none\">")
        );
    }

    #[test]
    fn multi_line_self_closing_and_single_quoted_tags() {
        let text = "<step\n   name='a'\n   to='2'\n   />";
        assert_eq!(
            mark(text, &["<step"]),
            "<step\n   name='a'\n   to='2' transaction='none'\n   />"
        );
        let text = "<step name=\"a\"/><step name=\"b\" >";
        assert_eq!(
            mark(text, &["<step name=\"a\"", "<step name=\"b\""]),
            "<step name=\"a\" transaction=\"none\"/><step name=\"b\" transaction=\"none\" >"
        );
    }

    #[test]
    fn quoted_values_may_hold_angle_brackets_and_the_other_quote() {
        let text = "<step name=\"a>b\" note='it\"s > 1' to=\"2\">";
        assert_eq!(
            mark(text, &["<step"]),
            "<step name=\"a>b\" note='it\"s > 1' to=\"2\" transaction=\"none\">"
        );
    }

    #[test]
    fn an_existing_transaction_attribute_is_replaced_not_duplicated() {
        let text = "<step transaction = 'shared' name=\"a\">";
        assert_eq!(
            mark(text, &["<step"]),
            "<step transaction = 'none' name=\"a\">"
        );
    }

    #[test]
    fn only_the_given_tags_change_in_any_order() {
        let text = "<step name=\"a\"></step>\n<step name=\"b\"></step>\n<step name=\"c\"></step>";
        assert_eq!(
            mark(text, &["<step name=\"c\"", "<step name=\"a\""]),
            "<step name=\"a\" transaction=\"none\"></step>\n<step name=\"b\"></step>\n<step name=\"c\" transaction=\"none\"></step>"
        );
        assert_eq!(mark_transaction_none(text, &[]).unwrap(), text);
    }

    #[test]
    fn anything_but_a_step_start_tag_is_refused() {
        for (text, at) in [
            ("<steps name=\"a\">", 0),
            ("x <step name=\"a\">", 0),
            ("<step name=\"a\"", 0),
            ("<step name=a>", 0),
            ("<step name=\"a>", 0),
        ] {
            assert!(mark_transaction_none(text, &[at]).is_err(), "{text}");
        }
    }

    #[test]
    fn offsets_of_positions_count_characters() {
        let text = "ab\r\nçd<step\n<x";
        assert_eq!(offset_of(text, Pos { line: 1, column: 1 }), Some(0));
        assert_eq!(offset_of(text, Pos { line: 2, column: 3 }), Some(7));
        assert_eq!(&text[7..12], "<step");
        assert_eq!(offset_of(text, Pos { line: 3, column: 1 }), Some(13));
        assert_eq!(offset_of(text, Pos { line: 3, column: 3 }), Some(15));
        assert_eq!(offset_of(text, Pos { line: 3, column: 4 }), None);
        assert_eq!(offset_of(text, Pos { line: 4, column: 1 }), None);
    }

    #[test]
    fn marks_steps_of_a_file_in_place_and_refuses_the_legacy_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.xml");
        let text = "\u{feff}<upgrade project=\"p\" initial-version=\"1.0.0\">\n  <step name=\"a\" from=\"1.0.0\" to=\"1.1.0\"><sql>ALTER TABLE t ADD y INT;</sql></step>\n  <!-- keep -->\n  <step name='b' from='1.1.0' to='1.2.0' transaction='shared'><sql>SELECT 1;</sql></step>\n</upgrade>\n";
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let marked = mark_steps(&path, dir.path(), &["a", "b"]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["upgrade.xml"], "a temporary file was left");
        assert_eq!(
            marked.iter().map(|m| m.step.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(marked[0].location, format!("{}:2:3", path.display()));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text.replace("to=\"1.1.0\">", "to=\"1.1.0\" transaction=\"none\">")
                .replace("transaction='shared'", "transaction='none'")
        );
        // Nothing to change: the file is not written again.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        mark_steps(&path, dir.path(), &["a"]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );

        let link = dir.path().join("linked.xml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let error = mark_steps(&link, dir.path(), &["a"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("is a symbolic link"), "{error}");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());

        let legacy = "<upgrade>\n  <initialversion>1.0.0</initialversion>\n  <matching>\n    <v1.0.0>\n      <target_version>1.1.0</target_version>\n      <script_name>steps.php</script_name>\n      <class_name>S</class_name>\n      <call_method>run</call_method>\n    </v1.0.0>\n  </matching>\n</upgrade>\n";
        std::fs::write(&path, legacy).unwrap();
        let error = mark_steps(&path, dir.path(), &[]).unwrap_err().to_string();
        assert!(error.contains("canonical <step> format only"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), legacy);
    }
}
