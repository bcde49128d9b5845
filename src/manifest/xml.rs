//! The only XML-aware code: turns manifest text into a small element tree whose every
//! element, attribute and text carries its line and column.

use std::borrow::Cow;
use std::cell::Cell;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{ManifestError, Pos};

/// An XML element; names are kept as written. Places are byte offsets into the text
/// ([`LineIndex`] turns them into line:column), so that only the places a caller keeps or
/// reports cost the line count.
#[derive(Debug, Default)]
pub(crate) struct Element<'a> {
    pub name: &'a str,
    /// Where the start tag's `<` is.
    pub at: usize,
    pub attrs: Vec<Attr<'a>>,
    pub children: Vec<Element<'a>>,
    /// Text and CDATA content with references resolved, concatenated.
    pub text: Cow<'a, str>,
    /// Where the first non-whitespace text starts.
    pub text_at: Option<usize>,
    /// Where `text` starts (leading whitespace-only text before the first content is
    /// dropped, so this is the start of the first text that has content).
    pub text_start: usize,
}

/// An attribute with the place of its name.
#[derive(Debug)]
pub(crate) struct Attr<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
    pub at: usize,
}

/// Maps byte offsets to 1-based line and column (columns count characters). Offsets are
/// asked for mostly in increasing order, so it walks forward from the last answer.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// (offset, line, column) of the last answer.
    cursor: Cell<(usize, u32, u32)>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            cursor: Cell::new((0, 1, 1)),
        }
    }

    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let (mut from, mut line, mut column) = self.cursor.get();
        if offset < from {
            (from, line, column) = (0, 1, 1);
        }
        // Lines found with memchr; characters counted (bytes that do not continue a
        // UTF-8 sequence) only after the gap's last newline.
        let gap = &self.text.as_bytes()[from..offset];
        let chars = |bytes: &[u8]| bytes.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u32;
        match memchr::memrchr(b'\n', gap) {
            None => column += chars(gap),
            Some(last) => {
                line += memchr::memchr_iter(b'\n', &gap[..=last]).count() as u32;
                column = 1 + chars(&gap[last + 1..]);
            }
        }
        self.cursor.set((offset, line, column));
        Pos { line, column }
    }
}

/// `part` as a slice of `whole` when it borrows from it (the reader hands out slices of
/// the text), so the tree can borrow the text without copying or checking it again.
fn borrow<'a>(whole: &'a str, part: &str) -> Cow<'a, str> {
    match offset_in(whole, part) {
        Some(offset) => Cow::Borrowed(&whole[offset..offset + part.len()]),
        None => Cow::Owned(part.to_string()),
    }
}

/// Like [`borrow`], for a name: the reader always takes names from the text.
fn borrow_name<'a>(whole: &'a str, part: &str) -> &'a str {
    match offset_in(whole, part) {
        Some(offset) => &whole[offset..offset + part.len()],
        None => unreachable!("quick-xml reading a &str hands out slices of it"),
    }
}

/// Receives the document as it is parsed, so that the root's children never pile up in
/// one large tree (a manifest may have many thousands of steps).
pub(crate) trait Visitor {
    /// The root element's start tag (no children or text yet).
    fn root(&mut self, root: &Element<'_>) -> Result<(), ManifestError>;
    /// A complete child of the root, in document order.
    fn child(&mut self, child: &Element<'_>) -> Result<(), ManifestError>;
    /// The root element once closed (its text, without its children).
    fn root_end(&mut self, root: &Element<'_>) -> Result<(), ManifestError>;
}

/// The deepest nesting of elements accepted, the root being level 1. A real manifest
/// needs four (`<upgrade>`, `<matching>`, `<v1.0.0>`, `<target_version>`); the limit
/// keeps a hostile file of 150,000 nested elements from exhausting memory or any stack.
pub(crate) const MAX_DEPTH: usize = 32;

/// The first raw character XML forbids (C0 controls other than tab, LF, CR), as a byte
/// offset. Checked over the whole text at once, so it covers text, attribute values,
/// CDATA and comments alike, and costs well under a millisecond for megabytes.
pub(crate) fn forbidden_control(text: &str) -> Option<usize> {
    const CHUNK: usize = 64;
    let bad = |b: u8| b < 0x20 && b != b'\t' && b != b'\n' && b != b'\r';
    let bytes = text.as_bytes();
    for (index, chunk) in bytes.chunks(CHUNK).enumerate() {
        // Branch-free over the chunk so that the common clean case vectorizes.
        if chunk.iter().fold(false, |any, &b| any | bad(b)) {
            let within = chunk.iter().position(|&b| bad(b))?;
            return Some(index * CHUNK + within);
        }
    }
    None
}

/// Parses the document, handing the root and each of its children to `visitor`.
/// `error` is given line:column through `lines`, which must index `text`.
pub(crate) fn parse(
    text: &str,
    lines: &LineIndex<'_>,
    error: &dyn Fn(Pos, String) -> ManifestError,
    visitor: &mut dyn Visitor,
) -> Result<(), ManifestError> {
    let error = |at: usize, message: String| error(lines.pos(at), message);
    if let Some(at) = forbidden_control(text) {
        return Err(error(
            at,
            format!(
                "control character U+{:04X} is not allowed in XML; remove it or write it out",
                text.as_bytes()[at]
            ),
        ));
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut pools = Pools::default();
    let mut root_seen = false;
    loop {
        let start = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let at = reader.error_position() as usize;
                return Err(error(at, format!("malformed XML: {e}")));
            }
        };
        match event {
            Event::Start(tag) | Event::Empty(tag) if root_seen && stack.is_empty() => {
                let _ = tag;
                return Err(error(
                    start,
                    "malformed XML: a second root element; the manifest has one <upgrade> root"
                        .into(),
                ));
            }
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let name = borrow_name(text, tag.name().as_ref());
                if stack.len() >= MAX_DEPTH {
                    return Err(error(
                        start,
                        format!(
                            "<{name}> is nested more than {MAX_DEPTH} elements deep; a manifest needs only a few levels"
                        ),
                    ));
                }
                let mut attrs = pools.attrs.pop().unwrap_or_default();
                for attr in tag.attributes().with_checks(true) {
                    let attr =
                        attr.map_err(|e| error(start, format!("malformed XML attribute: {e}")))?;
                    let key = borrow_name(text, attr.key.as_ref());
                    // Normalization (references, tab and line breaks to spaces) changes
                    // nothing in a value without those, which is nearly every value.
                    let plain = !attr
                        .value
                        .bytes()
                        .any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'));
                    let value = if plain {
                        borrow(text, &attr.value)
                    } else {
                        let value = attr
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| error(start, format!("attribute `{key}`: {e}")))?;
                        borrow(text, &value)
                    };
                    attrs.push(Attr {
                        // The key borrows from the text, so its address is its place.
                        at: offset_in(text, key).unwrap_or(start),
                        name: key,
                        value,
                    });
                }
                let element = Element {
                    name,
                    at: start,
                    attrs,
                    children: pools.elements.pop().unwrap_or_default(),
                    ..Element::default()
                };
                if stack.is_empty() {
                    root_seen = true;
                    visitor.root(&element)?;
                }
                if matches!(event, Event::Empty(_)) {
                    close(element, &mut stack, &mut pools, visitor)?;
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().expect("quick-xml checks end names");
                close(element, &mut stack, &mut pools, visitor)?;
            }
            Event::Text(content) => {
                // Indentation between elements is by far the most common text; it means
                // nothing until an element has real text.
                let blank = content.bytes().all(|b| b.is_ascii_whitespace());
                if blank && stack.last().is_none_or(|e| e.text.is_empty()) {
                    continue;
                }
                // Line ends need normalizing only where there is a carriage return.
                let content = if content.as_bytes().contains(&b'\r') {
                    borrow(text, &content.xml10_content())
                } else {
                    borrow(text, &content)
                };
                add_text(&mut stack, content, start, &error)?;
            }
            Event::CData(data) => {
                let data = borrow(text, &data.xml10_content());
                // The content starts after `<![CDATA[`.
                add_text(&mut stack, data, start + "<![CDATA[".len(), &error)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(ch)) if crate::version::is_forbidden_control(ch) => {
                        return Err(error(
                            start,
                            format!(
                                "character reference &{}; names control character U+{:04X}, which XML does not allow",
                                &*reference,
                                u32::from(ch)
                            ),
                        ))
                    }
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => quick_xml::escape::resolve_predefined_entity(&reference)
                        .map(str::to_string)
                        .ok_or_else(|| error(start, format!("unknown entity &{};", &*reference)))?,
                    Err(e) => {
                        return Err(error(start, format!("bad character reference: {e}")))
                    }
                };
                add_text(&mut stack, Cow::Owned(resolved), start, &error)?;
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(error(
            open.at,
            format!("malformed XML: <{}> is never closed", open.name),
        ));
    }
    if !root_seen {
        return Err(error(
            text.len(),
            "malformed XML: the document has no root element".into(),
        ));
    }
    Ok(())
}

/// Emptied vectors of finished elements, reused for the next ones: a manifest of
/// thousands of steps then builds each step's small tree without allocating.
#[derive(Default)]
struct Pools<'a> {
    attrs: Vec<Vec<Attr<'a>>>,
    elements: Vec<Vec<Element<'a>>>,
}

impl<'a> Pools<'a> {
    /// Takes a finished tree apart into the pools. Its depth is at most [`MAX_DEPTH`],
    /// so the recursion is bounded.
    fn recycle(&mut self, element: Element<'a>) {
        let Element {
            mut attrs,
            mut children,
            ..
        } = element;
        attrs.clear();
        self.attrs.push(attrs);
        for child in children.drain(..) {
            self.recycle(child);
        }
        self.elements.push(children);
    }
}

fn close<'a>(
    element: Element<'a>,
    stack: &mut [Element<'a>],
    pools: &mut Pools<'a>,
    visitor: &mut dyn Visitor,
) -> Result<(), ManifestError> {
    match stack {
        [] => visitor.root_end(&element),
        [_root] => {
            visitor.child(&element)?;
            pools.recycle(element);
            Ok(())
        }
        [.., parent] => {
            parent.children.push(element);
            Ok(())
        }
    }
}

fn add_text<'a>(
    stack: &mut [Element<'a>],
    content: Cow<'a, str>,
    start: usize,
    error: &dyn Fn(usize, String) -> ManifestError,
) -> Result<(), ManifestError> {
    match stack.last_mut() {
        Some(element) => {
            if element.text_at.is_none() {
                // ASCII first, as nearly all text is; any other character the slow way.
                // (U+000B is the one ASCII space `is_ascii_whitespace` leaves out.)
                let first = match content
                    .bytes()
                    .position(|b| !(b.is_ascii_whitespace() || b == 0x0B))
                {
                    Some(index) if content.as_bytes()[index].is_ascii() => Some(index),
                    Some(index) => content[index..]
                        .find(|c: char| !c.is_whitespace())
                        .map(|within| index + within),
                    None => None,
                };
                if let Some(first) = first {
                    element.text_at = Some(start + first);
                }
            }
            if element.text.is_empty() {
                element.text_start = start;
                element.text = content;
            } else {
                element.text.to_mut().push_str(&content);
            }
            Ok(())
        }
        None if content.trim().is_empty() => Ok(()),
        None => Err(error(
            start,
            "malformed XML: text outside the root element".into(),
        )),
    }
}

/// Byte offset of `part` inside `whole`, when `part` borrows from it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (offset + part.len() <= whole.len()).then_some(offset)
}
