//! Versions (`MAJOR.MINOR[.PATCH][-SUFFIX]`), their order, and the `VERSION` file.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::files;

/// A version that cannot be parsed, with the offending text quoted in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version \"{}\": {reason}", text.escape_debug())]
pub struct VersionError {
    /// The text as it was given.
    pub text: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// An application or database version.
///
/// Ordering follows DESIGN.md: a missing patch is 0; `ALPHAn < BETAn < RCn` (any case,
/// numbers compared numerically); other suffixes follow semver pre-release rules; a
/// version with a suffix comes before the same version without one.
#[derive(Clone)]
pub struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    /// Normalized pre-release used for ordering; empty when there is no suffix.
    pre: semver::Prerelease,
    /// The canonical text (see [`Version::as_str`]) when there is a suffix; `None` for a
    /// plain `MAJOR.MINOR.PATCH`, which spares an allocation for most versions.
    text: Option<Box<str>>,
}

impl Version {
    /// Parses a version, rejecting anything outside `MAJOR.MINOR[.PATCH][-SUFFIX]`.
    pub fn parse(input: &str) -> Result<Version, VersionError> {
        // A manifest holds two versions per step, nearly always written without
        // surrounding space: the Unicode-aware trim is only paid when an end byte could
        // be space (any byte above ASCII could start a Unicode space).
        let plain_end = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
        let text = if plain_end(input.as_bytes().first()) && plain_end(input.as_bytes().last()) {
            input
        } else {
            input.trim()
        };
        let fail = |reason| VersionError {
            text: input.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        // A byte search: '-' is ASCII, so it never splits a character.
        let (core, suffix) = match text.bytes().position(|b| b == b'-') {
            Some(dash) => (&text[..dash], Some(&text[dash + 1..])),
            None => (text, None),
        };
        // One pass over the bytes (a manifest holds two versions per step); a final '.'
        // closes the last part. Each part's checks keep the order of their messages.
        let mut numbers = [0u64; 3];
        let mut count = 0;
        let (mut value, mut digits, mut other, mut overflow) = (0u64, 0usize, false, false);
        let bytes = core.as_bytes();
        for index in 0..=bytes.len() {
            let byte = bytes.get(index).copied().unwrap_or(b'.');
            if byte != b'.' {
                let digit = byte.wrapping_sub(b'0');
                if digit < 10 {
                    digits += 1;
                    match value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(digit)))
                    {
                        Some(next) => value = next,
                        None => overflow = true,
                    }
                } else {
                    other = true;
                }
                continue;
            }
            if count == 3 {
                return Err(fail("expected at most three numbers (MAJOR.MINOR.PATCH)"));
            }
            if digits == 0 || other {
                return Err(fail("MAJOR, MINOR and PATCH must be whole numbers"));
            }
            if overflow {
                return Err(fail("a number is too large"));
            }
            numbers[count] = value;
            count += 1;
            (value, digits, other) = (0, 0, false);
        }
        if count < 2 {
            return Err(fail("expected MAJOR.MINOR[.PATCH][-SUFFIX]"));
        }
        let (pre, shown) = match suffix {
            None => (semver::Prerelease::EMPTY, None),
            Some("") => return Err(fail("the suffix after '-' is empty")),
            Some(suffix) => normalize_suffix(suffix).map_err(fail)?,
        };
        let [major, minor, patch] = numbers;
        Ok(Version {
            major,
            minor,
            patch,
            text: shown.map(|shown| format!("{major}.{minor}.{patch}-{shown}").into()),
            pre,
        })
    }

    /// The version in its one canonical spelling, the same for every way of writing
    /// an equal version: `MAJOR.MINOR.PATCH` (a missing patch shown as 0, numbers
    /// without leading zeros), then `-ALPHAn`, `-BETAn` or `-RCn` in upper case with
    /// the number as compared (`1.2-beta.01`, `1.2.0-Beta1` and `1.2.0-BETA1` are all
    /// `1.2.0-BETA1`), or `-` and any other suffix as written (semver compares those
    /// case-sensitively). This is also what is recorded in the database; versions
    /// recorded in other spellings still parse and compare equal.
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match &self.text {
            Some(text) => std::borrow::Cow::Borrowed(text),
            None => std::borrow::Cow::Owned(self.to_string()),
        }
    }
}

/// Maps `ALPHA3`/`beta-10`/`Rc.2` to the semver pre-release `alpha.3`, `beta.10`, `rc.2`,
/// whose semver order is exactly the order DESIGN.md asks for, and to the canonical
/// display (`ALPHA3`, `BETA10`, `RC2`); anything else must be a valid semver
/// pre-release and is kept as it is.
///
/// Leading zeros: semver forbids them in numeric identifiers, so `beta.01` and
/// `x.01` (semver-shaped, with a separator) are refused. The older `BETA01` form, with
/// no separator, is one word to semver and is accepted: its number is compared
/// numerically, so it equals `BETA1` and is shown as `BETA1`.
fn normalize_suffix(suffix: &str) -> Result<(semver::Prerelease, Option<String>), &'static str> {
    const LEADING_ZERO: &str =
        "a numeric part of the suffix has a leading zero, which semver forbids";
    const BAD: &str = "the suffix must be ALPHAn, BETAn, RCn or a semver pre-release";
    let lower = suffix.to_ascii_lowercase();
    for word in ["alpha", "beta", "rc"] {
        if let Some(rest) = lower.strip_prefix(word) {
            let digits = rest.trim_start_matches(['.', '-']);
            let upper = word.to_ascii_uppercase();
            if rest.is_empty() {
                let pre = semver::Prerelease::new(word).map_err(|_| BAD)?;
                return Ok((pre, Some(upper)));
            }
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                if digits.len() != rest.len() && digits.len() > 1 && digits.starts_with('0') {
                    return Err(LEADING_ZERO);
                }
                let number: u64 = digits.parse().map_err(|_| "a number is too large")?;
                let pre = semver::Prerelease::new(&format!("{word}.{number}")).map_err(|_| BAD)?;
                return Ok((pre, Some(format!("{upper}{number}"))));
            }
        }
    }
    match semver::Prerelease::new(suffix) {
        Ok(pre) => Ok((pre, Some(suffix.to_string()))),
        Err(_) if has_leading_zero(suffix) => Err(LEADING_ZERO),
        Err(_) => Err(BAD),
    }
}

/// A dot-separated numeric identifier such as `01`.
fn has_leading_zero(suffix: &str) -> bool {
    suffix.split('.').any(|part| {
        part.len() > 1 && part.starts_with('0') && part.bytes().all(|b| b.is_ascii_digit())
    })
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(text) => f.write_str(text),
            None => write!(f, "{}.{}.{}", self.major, self.minor, self.patch),
        }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

impl std::str::FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

/// The contents of a project's `VERSION` file.
#[derive(Debug, Clone)]
pub struct VersionFile {
    /// The code version.
    pub version: Version,
    /// The project name from a `PROJECT:` line, when the key-value form gives one.
    pub project: Option<String>,
}

/// A `VERSION` file that cannot be read or understood; says which file and line.
#[derive(Debug, thiserror::Error)]
pub enum VersionFileError {
    /// The file could not be read, or is not a regular file inside the project.
    #[error(transparent)]
    File(#[from] files::FileError),
    /// The file has no usable version line, or the version is invalid.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl VersionFile {
    /// Reads and parses a `VERSION` file, which must be a regular file of at most
    /// [`files::VERSION_LIMIT`] bytes that resolves inside its own directory (the project).
    pub fn load(path: &Path) -> Result<VersionFile, VersionFileError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let text = files::read_to_string(dir, path, files::VERSION_LIMIT)?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `VERSION` file; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<VersionFile, VersionFileError> {
        let invalid = |line: usize, message: String| VersionFileError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Raw control characters (NUL, ESC, ...) have no place in any line, even an
        // ignored one: they would reach terminals, logs and the database.
        if let Some(at) = text.find(is_forbidden_control) {
            let line = text[..at].matches('\n').count() + 1;
            let code = text[at..].chars().next().map_or(0, u32::from);
            return Err(invalid(
                line,
                format!("control character U+{code:04X} is not allowed"),
            ));
        }
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty())
            .collect();
        let key_value = lines.iter().any(|(_, line)| key_of(line).is_some());
        if !key_value {
            return match lines.as_slice() {
                [] => Err(invalid(
                    1,
                    "the file is empty; write the version, e.g. 1.0.0".into(),
                )),
                [(line, value)] => Version::parse(value)
                    .map(|version| VersionFile {
                        version,
                        project: None,
                    })
                    .map_err(|error| invalid(*line, error.to_string())),
                [_, (line, _), ..] => Err(invalid(
                    *line,
                    "expected one line holding the version, or `VERSION: x.y.z` lines".into(),
                )),
            };
        }
        let mut version = None;
        let mut project = None;
        for (line, text) in &lines {
            let Some((key, value)) = key_of(text) else {
                continue;
            };
            let slot = match key.as_str() {
                "VERSION" => &mut version,
                "PROJECT" => &mut project,
                _ => continue,
            };
            if slot.is_some() {
                return Err(invalid(*line, format!("{key} is given twice")));
            }
            *slot = Some((*line, value.to_string()));
        }
        let Some((version_line, version_text)) = version else {
            return Err(invalid(1, "no `VERSION:` line".into()));
        };
        let version = Version::parse(&version_text)
            .map_err(|error| invalid(version_line, error.to_string()))?;
        let project = match project {
            Some((line, name)) if name.is_empty() => {
                return Err(invalid(line, "PROJECT is empty".into()))
            }
            Some((_, name)) => Some(name),
            None => None,
        };
        Ok(VersionFile { version, project })
    }
}

/// C0 controls other than tab, line feed and carriage return: characters
/// that XML forbids and a text file should not hold.
pub(crate) fn is_forbidden_control(c: char) -> bool {
    c < ' ' && !matches!(c, '\t' | '\n' | '\r')
}

/// `KEY: value` with an upper-case-insensitive alphabetic key, as older deployments wrote.
fn key_of(line: &str) -> Option<(String, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
        return None;
    }
    Some((key.to_ascii_uppercase(), value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn missing_patch_is_zero() {
        assert_eq!(v("1.2"), v("1.2.0"));
        assert!(v("1.2") < v("1.2.1"));
    }

    #[test]
    fn numeric_suffix_order() {
        assert!(v("1.0.0-BETA10") > v("1.0.0-BETA9"));
        assert!(v("1.0.0-RC10") > v("1.0.0-RC2"));
        assert!(v("1.0.0-ALPHA2") < v("1.0.0-ALPHA11"));
    }

    #[test]
    fn alpha_beta_rc_release() {
        let ordered = [
            "1.0.0-ALPHA1",
            "1.0.0-ALPHA2",
            "1.0.0-BETA1",
            "1.0.0-BETA9",
            "1.0.0-BETA10",
            "1.0.0-RC1",
            "1.0.0-RC2",
            "1.0.0",
            "1.0.1-alpha1",
            "1.0.1",
            "1.1",
            "2.0.0-rc1",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]), "{} > {}", pair[1], pair[0]);
        }
    }

    #[test]
    fn suffix_before_release() {
        assert!(v("1.0.0-RC2") < v("1.0.0"));
        assert!(v("1.0-beta") < v("1.0"));
    }

    #[test]
    fn suffix_case_does_not_matter() {
        assert_eq!(v("1.0.0-beta2"), v("1.0.0-BETA2"));
        assert_eq!(v("1.0.0-Rc3"), v("1.0.0-RC3"));
        assert!(v("1.0.0-alpha3") < v("1.0.0-Beta1"));
        assert_eq!(v("1.0.0-rc.3"), v("1.0.0-RC3"));
    }

    #[test]
    fn other_suffixes_follow_semver() {
        assert!(v("1.0.0-x.1") < v("1.0.0-x.2"));
        assert!(v("1.0.0-x.2") < v("1.0.0-x.10"));
        assert!(v("1.0.0-x") < v("1.0.0-x.1"));
        assert!(v("1.0.0-1") < v("1.0.0-x"));
        assert!(v("1.0.0-SNAPSHOT") < v("1.0.0"));
    }

    #[test]
    fn keeps_text() {
        assert_eq!(v(" 1.4.0-BETA2 ").to_string(), "1.4.0-BETA2");
    }

    /// The fast paths of `parse` (no trim for plainly written text, a byte search for
    /// the suffix, overflow noted per part) answer as the general ones do.
    #[test]
    fn fast_paths_agree() {
        assert_eq!(v("\u{a0}1.2.3\u{2003}").to_string(), "1.2.3");
        assert_eq!(v("\t1.2\n"), v("1.2.0"));
        assert_eq!(v("1.2.3-x-y").to_string(), "1.2.3-x-y");
        assert_eq!(
            v("18446744073709551615.0").to_string(),
            "18446744073709551615.0.0"
        );
        for (bad, reason) in [
            ("18446744073709551616.0", "a number is too large"),
            ("1.99999999999999999999.0", "a number is too large"),
            ("1.2a.3", "MAJOR, MINOR and PATCH must be whole numbers"),
            (
                "1.2.3.4",
                "expected at most three numbers (MAJOR.MINOR.PATCH)",
            ),
            ("1.2-", "the suffix after '-' is empty"),
            (" \u{a0} ", "it is empty"),
        ] {
            assert_eq!(Version::parse(bad).unwrap_err().reason, reason, "{bad:?}");
        }
    }

    #[test]
    fn rejects_with_text_quoted() {
        for bad in [
            "1",
            "1.x",
            "1.2.3.4",
            "",
            "   ",
            "1.2.",
            ".1.2",
            "1..2",
            "v1.2",
            "1.2-",
            "1.2.3-beta+",
            "1.2.3+build",
            "a.b.c",
            "1.2.-3",
            "1.2.3-bé",
            "1.2.99999999999999999999",
            "1.2.3.x",
        ] {
            let error = Version::parse(bad).expect_err(bad);
            assert!(
                error.to_string().contains(&format!("\"{bad}\"")),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn equal_versions_display_the_same() {
        for (a, b) in [
            ("0.1.0-BETA1", "0.1-BETA1"),
            ("1.2", "1.2.0"),
            ("1.0.0-beta.1", "1.0.0-BETA1"),
            ("1.0.0-Rc-2", "1.0-rc2"),
            ("1.0.0-BETA01", "1.0.0-beta1"),
            ("01.2.3", "1.2.3"),
            ("1.0-alpha", "1.0.0-ALPHA"),
        ] {
            assert_eq!(v(a), v(b));
            assert_eq!(v(a).to_string(), v(b).to_string(), "{a} / {b}");
            assert_eq!(v(a).as_str(), v(b).as_str(), "{a} / {b}");
        }
        assert_eq!(v("0.1-beta1").to_string(), "0.1.0-BETA1");
        assert_eq!(v("1.2").as_str(), "1.2.0");
        assert_eq!(v("1.0-SNAPSHOT.x").to_string(), "1.0.0-SNAPSHOT.x");
    }

    #[test]
    fn semver_leading_zeros_are_refused() {
        for bad in [
            "1.0.0-beta.01",
            "1.0.0-rc-02",
            "1.0.0-x.01",
            "1.0.0-x.007.y",
        ] {
            let error = Version::parse(bad).expect_err(bad).to_string();
            assert!(error.contains(&format!("\"{bad}\"")), "{error}");
            assert!(error.contains("leading zero"), "{error}");
        }
        // The older one-word form compares its number numerically.
        assert_eq!(v("1.0.0-BETA01"), v("1.0.0-BETA1"));
        assert_eq!(v("1.0.0-x.0"), v("1.0.0-x.0"));
    }

    #[test]
    fn control_characters_are_refused_and_never_printed_raw() {
        let error = Version::parse("1.0\u{0}").unwrap_err().to_string();
        assert!(error.contains("\"1.0\\0\""), "{error}");
        for text in [
            "1.0.0\u{0}\n",
            "PROJECT: a\u{1b}\nVERSION: 1.0\n",
            "1.0\n\u{b}\n",
        ] {
            let error = VersionFile::parse(text, Path::new("VERSION")).unwrap_err();
            let message = error.to_string();
            assert!(message.contains("control character U+"), "{message}");
            assert!(!message.chars().any(|c| c.is_control()), "{message:?}");
        }
        let error = VersionFile::parse("1.0\n\u{b}\n", Path::new("VERSION")).unwrap_err();
        assert!(error.to_string().starts_with("VERSION:2: "), "{error}");
    }

    #[test]
    fn version_file_plain() {
        let file = VersionFile::parse("1.4.0\n", Path::new("VERSION")).unwrap();
        assert_eq!(file.version, v("1.4.0"));
        assert_eq!(file.project, None);
    }

    #[test]
    fn version_file_key_value() {
        let text = "PROJECT: shop\nBUILD: 77\nVERSION: 1.4.0-BETA2\n";
        let file = VersionFile::parse(text, Path::new("VERSION")).unwrap();
        assert_eq!(file.version.as_str(), "1.4.0-BETA2");
        assert_eq!(file.project.as_deref(), Some("shop"));
    }

    #[test]
    fn version_file_errors_name_line() {
        let cases = [
            ("", "VERSION:1:"),
            ("\n\n", "VERSION:1:"),
            ("PROJECT: shop\n", "no `VERSION:` line"),
            (
                "PROJECT: shop\nVERSION: 1.x\n",
                "VERSION:2: invalid version \"1.x\"",
            ),
            ("1.0\n2.0\n", "VERSION:2:"),
            (
                "VERSION: 1.0\nVERSION: 1.1\n",
                "VERSION:2: VERSION is given twice",
            ),
            ("PROJECT:\nVERSION: 1.0\n", "VERSION:1: PROJECT is empty"),
        ];
        for (text, expected) in cases {
            let error = VersionFile::parse(text, Path::new("VERSION")).unwrap_err();
            assert!(error.to_string().contains(expected), "{text:?}: {error}");
        }
    }
}
