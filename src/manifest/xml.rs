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
/// asked for mostly in increasing order, so it walks forward from the last answer, a
/// line at a time: one newline search per line of the text, and a count of characters
/// only from the start of the offset's line.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// The line of the last answer: where it starts, its number, and where it ends (the
    /// offset of its newline, or the text's length).
    cursor: Cell<Line>,
}

#[derive(Clone, Copy)]
struct Line {
    start: usize,
    number: u32,
    end: usize,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let index = LineIndex {
            text,
            cursor: Cell::new(Line {
                start: 0,
                number: 1,
                end: 0,
            }),
        };
        index.cursor.set(index.line_from(0, 1));
        index
    }

    fn line_from(&self, start: usize, number: u32) -> Line {
        let bytes = &self.text.as_bytes()[start..];
        let end = memchr::memchr(b'\n', bytes).map_or(self.text.len(), |found| start + found);
        Line { start, number, end }
    }

    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let mut line = self.cursor.get();
        if offset < line.start {
            line = self.line_from(0, 1);
        }
        // An offset at a newline belongs to the line the newline ends.
        while offset > line.end {
            line = self.line_from(line.end + 1, line.number + 1);
        }
        self.cursor.set(line);
        // Characters are the bytes that do not continue a UTF-8 sequence.
        let before = &self.text.as_bytes()[line.start..offset];
        let column = 1 + before.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u32;
        Pos {
            line: line.number,
            column,
        }
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

/// Refuses the first raw character XML forbids, before either reader looks at the text.
pub(crate) fn check_controls(
    text: &str,
    lines: &LineIndex<'_>,
    error: &dyn Fn(Pos, String) -> ManifestError,
) -> Result<(), ManifestError> {
    match forbidden_control(text) {
        Some(at) => Err(error(
            lines.pos(at),
            format!(
                "control character U+{:04X} is not allowed in XML; remove it or write it out",
                text.as_bytes()[at]
            ),
        )),
        None => Ok(()),
    }
}

/// Parses the document, handing the root and each of its children to `visitor`: any
/// XML, with every error of syntax reported where it is. `error` is given line:column
/// through `lines`, which must index `text`; `text` must have passed [`check_controls`].
pub(crate) fn parse(
    text: &str,
    lines: &LineIndex<'_>,
    error: &dyn Fn(Pos, String) -> ManifestError,
    visitor: &mut dyn Visitor,
) -> Result<(), ManifestError> {
    let error = |at: usize, message: String| error(lines.pos(at), message);
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

/// Why [`parse_plain`] stopped before the end.
pub(crate) enum Stop {
    /// The text has something the plain reader leaves to [`parse`]: any error of XML
    /// syntax, or a construct it does not read itself.
    Unusual,
    /// The visitor refused an element.
    Error(ManifestError),
}

impl From<ManifestError> for Stop {
    fn from(error: ManifestError) -> Self {
        Stop::Error(error)
    }
}

/// Reads the plain XML nearly every manifest is written in, handing the root and each
/// of its children to `visitor` exactly as [`parse`] does, at a fraction of its cost
/// (a 10,000-step manifest is read once, byte by byte, without copying or checking
/// UTF-8 again). It reads elements, attributes in quotes after a space, text, CDATA,
/// comments and processing instructions; at anything else (references, carriage
/// returns, a DOCTYPE, unusual spacing or names, and every error of syntax) it stops
/// with [`Stop::Unusual`] and the caller reads the text again with [`parse`], with a
/// fresh visitor, which then says exactly what is wrong and where. Everything it
/// accepts, [`parse`] accepts with the same elements (tested against it).
///
/// `text` must have passed [`check_controls`].
pub(crate) fn parse_plain(text: &str, visitor: &mut dyn Visitor) -> Result<(), Stop> {
    let bytes = text.as_bytes();
    // Line ends would need normalizing; left to the full reader.
    if memchr::memchr(b'\r', bytes).is_some() {
        return Err(Stop::Unusual);
    }
    let end = bytes.len();
    let mut stack: Vec<Element> = Vec::new();
    let mut pools = Pools::default();
    let mut root_seen = false;
    let mut at = 0;
    loop {
        // One search for the markup ahead and for a reference in the text before it.
        let next = memchr::memchr2(b'<', b'&', &bytes[at..]).map_or(end, |found| at + found);
        if bytes.get(next) == Some(&b'&') {
            return Err(Stop::Unusual);
        }
        if next > at {
            let content = &text[at..next];
            let blank = content.bytes().all(|b| b.is_ascii_whitespace());
            if !(blank && stack.last().is_none_or(|e| e.text.is_empty())) {
                if stack.is_empty() {
                    return Err(Stop::Unusual);
                }
                add_text(&mut stack, Cow::Borrowed(content), at, &|_, _| {
                    unreachable!("text inside an element")
                })?;
            }
        }
        if next == end {
            break;
        }
        at = next;
        match bytes.get(at + 1) {
            Some(b'/') => {
                let end_name = name_end(bytes, at + 2).ok_or(Stop::Unusual)?;
                let close_at = skip_space(bytes, end_name);
                if bytes.get(close_at) != Some(&b'>')
                    || stack
                        .last()
                        .is_none_or(|open| open.name != &text[at + 2..end_name])
                {
                    return Err(Stop::Unusual);
                }
                let element = stack.pop().expect("just looked");
                close(element, &mut stack, &mut pools, visitor)?;
                at = close_at + 1;
            }
            Some(b'!') if bytes[at..].starts_with(b"<!--") => {
                let body = at + 4;
                let close_at = memchr::memmem::find(&bytes[body..], b"-->")
                    .map(|found| body + found)
                    .ok_or(Stop::Unusual)?;
                // Dashes next to the delimiters are read differently by XML readers.
                if matches!(bytes[body], b'-' | b'>') || bytes[..close_at].ends_with(b"-") {
                    return Err(Stop::Unusual);
                }
                at = close_at + 3;
            }
            Some(b'!') if bytes[at..].starts_with(b"<![CDATA[") => {
                let data = at + "<![CDATA[".len();
                let close_at = memchr::memmem::find(&bytes[data..], b"]]>")
                    .map(|found| data + found)
                    .ok_or(Stop::Unusual)?;
                if stack.is_empty() {
                    return Err(Stop::Unusual);
                }
                add_text(
                    &mut stack,
                    Cow::Borrowed(&text[data..close_at]),
                    data,
                    &|_, _| unreachable!("CDATA inside an element"),
                )?;
                at = close_at + 3;
            }
            // A declaration (`<?xml …?>`) only where it belongs, at the very start.
            Some(b'?')
                if bytes.get(at + 2).is_some_and(u8::is_ascii_alphabetic)
                    && (at == 0 || !bytes[at + 2..].starts_with(b"xml")) =>
            {
                let close_at = memchr::memmem::find(&bytes[at + 2..], b"?>")
                    .map(|found| at + 2 + found)
                    .ok_or(Stop::Unusual)?;
                at = close_at + 2;
            }
            _ => {
                if root_seen && stack.is_empty() || stack.len() >= MAX_DEPTH {
                    return Err(Stop::Unusual);
                }
                let tag_name_end = name_end(bytes, at + 1).ok_or(Stop::Unusual)?;
                let mut attrs = Vec::new();
                let mut cursor = tag_name_end;
                let empty = loop {
                    let spaced = skip_space(bytes, cursor);
                    match bytes.get(spaced) {
                        Some(b'>') => {
                            cursor = spaced + 1;
                            break false;
                        }
                        Some(b'/') if bytes.get(spaced + 1) == Some(&b'>') => {
                            cursor = spaced + 2;
                            break true;
                        }
                        Some(_) if spaced > cursor => {
                            let key_end = name_end(bytes, spaced).ok_or(Stop::Unusual)?;
                            let quote = match bytes.get(key_end..key_end + 2) {
                                Some([b'=', quote @ (b'"' | b'\'')]) => *quote,
                                _ => return Err(Stop::Unusual),
                            };
                            let value_at = key_end + 2;
                            // Values are short: one pass finds the closing quote and
                            // anything that would need normalizing.
                            let value_len = bytes[value_at..]
                                .iter()
                                .position(|&b| {
                                    b == quote || matches!(b, b'&' | b'<' | b'>' | b'\t' | b'\n')
                                })
                                .ok_or(Stop::Unusual)?;
                            let value_end = value_at + value_len;
                            let value = &text[value_at..value_end];
                            let key = &text[spaced..key_end];
                            if bytes[value_end] != quote
                                || attrs.iter().any(|attr: &Attr| attr.name == key)
                            {
                                return Err(Stop::Unusual);
                            }
                            if attrs.capacity() == 0 {
                                attrs = pools.attrs.pop().unwrap_or_default();
                            }
                            attrs.push(Attr {
                                name: key,
                                value: Cow::Borrowed(value),
                                at: spaced,
                            });
                            cursor = value_end + 1;
                        }
                        _ => return Err(Stop::Unusual),
                    }
                };
                let element = Element {
                    name: &text[at + 1..tag_name_end],
                    at,
                    attrs,
                    ..Element::default()
                };
                if stack.is_empty() {
                    root_seen = true;
                    visitor.root(&element)?;
                }
                if empty {
                    close(element, &mut stack, &mut pools, visitor)?;
                } else {
                    stack.push(element);
                }
                at = cursor;
            }
        }
    }
    if !stack.is_empty() || !root_seen {
        return Err(Stop::Unusual);
    }
    Ok(())
}

/// The end of the plain name (ASCII letters, digits, `_`, `-`, `.`, `:`, starting with
/// a letter or `_`) that starts at `from`, when one does and is followed by
/// a space, `=`, `/` or `>`.
fn name_end(bytes: &[u8], from: usize) -> Option<usize> {
    /// Which bytes may continue a plain name: a table, as names are read byte by byte.
    const NAME: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            let b = byte as u8;
            table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':');
            byte += 1;
        }
        table
    };
    let first = *bytes.get(from)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let len = bytes[from..].iter().position(|&b| !NAME[usize::from(b)])?;
    match bytes[from + len] {
        b' ' | b'\t' | b'\n' | b'=' | b'/' | b'>' => Some(from + len),
        _ => None,
    }
}

/// The first offset from `from` that is not a space, tab or line feed.
fn skip_space(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\n'))
        .map_or(bytes.len(), |found| from + found)
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
        // Only vectors that hold memory are worth keeping; most elements have no
        // children, and many no attributes.
        if attrs.capacity() > 0 {
            attrs.clear();
            self.attrs.push(attrs);
        }
        if children.capacity() > 0 {
            for child in children.drain(..) {
                self.recycle(child);
            }
            self.elements.push(children);
        }
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
            if parent.children.capacity() == 0 {
                parent.children = pools.elements.pop().unwrap_or_default();
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes down everything a visitor is shown, positions included.
    #[derive(Default)]
    struct Record(Vec<String>);

    impl Visitor for Record {
        fn root(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
            self.0.push(format!("root {root:?}"));
            Ok(())
        }
        fn child(&mut self, child: &Element<'_>) -> Result<(), ManifestError> {
            self.0.push(format!("child {child:?}"));
            Ok(())
        }
        fn root_end(&mut self, root: &Element<'_>) -> Result<(), ManifestError> {
            self.0.push(format!("end {root:?}"));
            Ok(())
        }
    }

    /// `Some(record)` when the plain reader reads `text` to the end, after checking that
    /// the full reader shows the visitor exactly the same; `None` when it leaves the text
    /// to the full reader.
    fn plain_as_full(text: &str) -> Option<Vec<String>> {
        let error = |pos: Pos, message: String| ManifestError::At {
            file: "upgrade.xml".into(),
            pos,
            message,
        };
        let lines = LineIndex::new(text);
        check_controls(text, &lines, &error).ok()?;
        let mut plain = Record::default();
        match parse_plain(text, &mut plain) {
            Ok(()) => {}
            Err(Stop::Unusual) => return None,
            Err(Stop::Error(e)) => panic!("the record refuses nothing: {e}"),
        }
        let mut full = Record::default();
        if let Err(e) = parse(text, &lines, &error, &mut full) {
            panic!("the plain reader accepted what the full one refuses ({e}):\n{text}");
        }
        assert_eq!(plain.0, full.0, "read differently:\n{text}");
        Some(plain.0)
    }

    #[test]
    fn line_index_answers_as_counting_from_the_start() {
        let text = "ab\nçd\n\n  é\r\nx\n";
        let naive = |offset: usize| {
            let before = &text[..offset];
            let line = before.matches('\n').count() as u32 + 1;
            let column = before.rsplit('\n').next().unwrap().chars().count() as u32 + 1;
            Pos { line, column }
        };
        let offsets: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        let index = LineIndex::new(text);
        // Forward, backward and jumping about, as errors after a plain read ask.
        let order = offsets
            .iter()
            .chain(offsets.iter().rev())
            .chain(offsets.iter().step_by(3))
            .chain(offsets.iter().rev().step_by(2));
        for &offset in order {
            assert_eq!(index.pos(offset), naive(offset), "offset {offset}");
        }
        assert_eq!(index.pos(text.len() + 5), naive(text.len()));
        assert_eq!(LineIndex::new("").pos(0), Pos { line: 1, column: 1 });
        // Jumps of many lines, forward and back.
        let long: String = (0..60).map(|i| format!("l{i} é\n")).collect();
        let naive = |offset: usize| {
            let before = &long[..offset];
            let line = before.matches('\n').count() as u32 + 1;
            let column = before.rsplit('\n').next().unwrap().chars().count() as u32 + 1;
            Pos { line, column }
        };
        let index = LineIndex::new(&long);
        let offsets: Vec<usize> = (0..=long.len())
            .filter(|&i| long.is_char_boundary(i))
            .collect();
        for &offset in offsets
            .iter()
            .step_by(37)
            .chain(offsets.iter().rev().step_by(41))
            .chain(offsets.iter().step_by(5))
        {
            assert_eq!(index.pos(offset), naive(offset), "offset {offset}");
        }
    }

    const CANONICAL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- upgrades -->\n<upgrade project=\"p\" initial-version='1.0.0'>\n  <install>\n    <sql file=\"scripts/a.sql\" />\n  </install>\n  <step name=\"a\" from=\"1.0.0\" to=\"1.1.0\" transaction=\"none\">\n    <description>First, ünïcode</description>\n    <sql>SELECT 1;\n SELECT 2;</sql>\n    <sql><![CDATA[SELECT 1 < 2;]]></sql>\n    <?pi data?>\n    <plugin library=\"demo\" method=\"go\"/>\n  </step>\n</upgrade>\n";

    const LEGACY: &str = "<upgrade>\n  <initialversion>1.0.0</initialversion>\n  <matching>\n    <v1.0.0>\n      <target_version>1.1.0</target_version>\n      <script_name>demo.php</script_name>\n      <call_method>go</call_method>\n    </v1.0.0>\n  </matching>\n  <examples/>\n</upgrade>\n";

    #[test]
    fn plain_manifests_are_read_by_the_plain_reader_as_by_the_full_one() {
        for text in [CANONICAL, LEGACY] {
            assert!(plain_as_full(text).is_some(), "{text}");
        }
        let mut many = String::from("<upgrade>\n");
        for index in 0..50 {
            many.push_str(&format!(
                "  <step name=\"s{index}\" from=\"1.{index}\" to=\"1.{}\">\n    <description>Step {index}</description>\n    <sql>INSERT INTO t VALUES ({index});</sql>\n  </step>\n",
                index + 1
            ));
        }
        many.push_str("</upgrade>\n");
        assert_eq!(plain_as_full(&many).map(|record| record.len()), Some(52));
    }

    #[test]
    fn the_fixtures_are_read_alike_or_left_to_the_full_reader() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "xml") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    plain_as_full(&text);
                }
            }
        }
    }

    /// Every small damage to a plain manifest (a byte removed, a markup character or
    /// a space put in anywhere) is either read exactly as the full reader reads it or
    /// left to the full reader, which says what is wrong.
    #[test]
    fn damaged_manifests_are_read_alike_or_left_to_the_full_reader() {
        const PIECES: [&str; 20] = [
            "<",
            ">",
            "/",
            "\"",
            "'",
            "=",
            " ",
            "\n",
            "\r",
            "\t",
            "&",
            "&amp;",
            "!",
            "?",
            "-",
            "]]>",
            "<!--",
            "<![CDATA[",
            "<a>",
            "é",
        ];
        let mut plain = 0;
        let mut total = 0;
        for base in [CANONICAL, LEGACY] {
            let boundaries: Vec<usize> = (0..=base.len())
                .filter(|&i| base.is_char_boundary(i))
                .collect();
            for &at in &boundaries {
                let mut variants = Vec::new();
                for piece in PIECES {
                    variants.push(format!("{}{piece}{}", &base[..at], &base[at..]));
                }
                if let Some(next) = base[at..].chars().next() {
                    let rest = &base[at + next.len_utf8()..];
                    variants.push(format!("{}{rest}", &base[..at]));
                }
                for text in variants {
                    total += 1;
                    plain += usize::from(plain_as_full(&text).is_some());
                }
            }
        }
        // Most damage is refused or left alone; enough is still read plainly (spaces and
        // characters in text and values) that the comparison means something.
        assert!(plain * 10 > total, "{plain} of {total} read plainly");
    }

    #[test]
    fn unusual_constructs_are_left_to_the_full_reader() {
        for text in [
            "<upgrade a=\"1\"b=\"2\"/>",
            "<upgrade a = \"1\"/>",
            "<upgrade a=\"x&amp;y\"/>",
            "<upgrade>&lt;</upgrade>",
            "<!DOCTYPE upgrade><upgrade/>",
            "<upgrade/><upgrade/>",
            "<upgrade/>x",
            "<upgrade></upgrade x>",
            "<upgrade><a></b></upgrade>",
            "<upgrade>",
            "",
            "<upgrade a=\"1\" a=\"2\"/>",
            "<upgrade><!-- a ---></upgrade>",
            "<upgrade><?xml version=\"1.0\"?></upgrade>",
            "<upgrade>\r\n</upgrade>",
        ] {
            assert!(plain_as_full(text).is_none(), "{text}");
        }
        let deep = format!(
            "<upgrade>{}{}</upgrade>",
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert!(plain_as_full(&deep).is_none());
    }
}
