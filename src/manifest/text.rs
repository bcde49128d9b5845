//! [`Text`]: a string taken from a manifest, shared with the manifest's own copy of its
//! file instead of copied out of it.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A string from a manifest (a step's name, its description, inline SQL). Every `Text`
/// of one manifest points into one shared copy of the file, so a manifest of 10,000
/// steps costs no allocation per name or script, and cloning one costs a reference
/// count. Text the XML reader had to build (entity references, normalized line ends)
/// is held on its own. It reads as a `str` (`Deref`), compares and hashes as one.
#[derive(Clone)]
pub struct Text {
    all: Arc<str>,
    // `u32`: a manifest is at most 64 MiB (`files::MANIFEST_LIMIT`).
    start: u32,
    end: u32,
}

impl Text {
    /// `range` of `all`, which must lie on character boundaries.
    pub(crate) fn shared(all: &Arc<str>, range: Range<usize>) -> Text {
        debug_assert!(all.get(range.clone()).is_some());
        match (u32::try_from(range.start), u32::try_from(range.end)) {
            (Ok(start), Ok(end)) => Text {
                all: Arc::clone(all),
                start,
                end,
            },
            _ => Text::from(&all[range]),
        }
    }

    /// `part` as a [`Text`]: shared when it is a slice of `all` (as text the plain XML
    /// reader hands out always is), copied otherwise.
    pub(crate) fn from_part(all: &Arc<str>, part: &str) -> Text {
        let offset = (part.as_ptr() as usize).wrapping_sub(all.as_ptr() as usize);
        if offset <= all.len() && part.len() <= all.len() - offset {
            Text::shared(all, offset..offset + part.len())
        } else {
            Text::from(part)
        }
    }

    /// The text as a `str`.
    pub fn as_str(&self) -> &str {
        &self.all[self.start as usize..self.end as usize]
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        let all: Arc<str> = Arc::from(text);
        let end = u32::try_from(all.len()).expect("a manifest's text is at most 64 MiB");
        Text { all, start: 0, end }
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text::from(text.as_str())
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.as_str().to_string()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_of_the_whole_is_shared_and_anything_else_copied() {
        let all: Arc<str> = Arc::from("<step name=\"a\">é</step>");
        let name = Text::from_part(&all, &all[12..13]);
        assert_eq!(name, "a");
        assert!(Arc::ptr_eq(&name.all, &all));
        let other = String::from("a");
        let copied = Text::from_part(&all, &other);
        assert_eq!(copied, name);
        assert!(!Arc::ptr_eq(&copied.all, &all));
        let accented = Text::from_part(&all, &all[15..17]);
        assert_eq!(accented.as_str(), "é");
        assert_eq!(format!("{accented} {accented:?}"), "é \"é\"");
    }

    #[test]
    fn it_hashes_and_compares_as_its_str() {
        use std::collections::HashSet;
        let all: Arc<str> = Arc::from("xx name yy");
        let text = Text::shared(&all, 3..7);
        let set: HashSet<Text> = [text.clone()].into_iter().collect();
        assert!(set.contains("name"));
        assert_eq!(String::from(text.clone()), "name");
        let owned = String::from("name");
        assert!("name" == text);
        assert!(text == *"name");
        assert!(text == owned);
        assert!(owned == text);
    }
}
