//! What each fuzz target checks, shared by the cargo-fuzz targets (`fuzz_targets/*.rs`)
//! and the stable test that replays `fuzz/regressions/` (`tests/it/fuzz_regressions.rs`),
//! so that a regression input is replayed through exactly the code that found it.
//!
//! Every check takes arbitrary bytes and panics only when a property fails (or the code
//! under test panics); errors returned by the parsers are fine.

use std::cmp::Ordering;
use std::io::{Read, Seek, Write};
use std::path::Path;

use upgrader::manifest::Manifest;
use upgrader::sql::guard::{self, TableGuard};
use upgrader::sql::{self, Dialect, Statement, Statements};
use upgrader::version::{Version, VersionFile};

/// One target's check.
#[allow(dead_code)]
pub type Check = fn(&[u8]);

/// The checks by target name, for the replay test.
#[allow(dead_code)]
pub const TARGETS: &[(&str, Check)] = &[
    ("manifest", manifest),
    ("version", version),
    ("sql", sql),
    ("update_xml", update_xml),
    ("zip_paths", zip_paths),
    ("zip_package", zip_package),
];

/// `upgrade.xml` in either format: never panics.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Manifest::parse(text, Path::new("upgrade.xml"), None);
}

/// `VERSION` files and versions: parsing never panics, the canonical text reads back as
/// the same version, and the order of any three versions is total.
pub fn version(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = VersionFile::parse(text, Path::new("VERSION")) {
        round_trip(&file.version);
    }
    // The first three lines are three versions.
    let versions: Vec<Version> = text
        .split('\n')
        .take(3)
        .filter_map(|line| Version::parse(line).ok())
        .collect();
    for v in &versions {
        round_trip(v);
    }
    for a in &versions {
        assert_eq!(a.cmp(a), Ordering::Equal, "{a} is not equal to itself");
        for b in &versions {
            let ab = a.cmp(b);
            assert_eq!(ab, b.cmp(a).reverse(), "{a} vs {b}: not antisymmetric");
            assert_eq!(
                a == b,
                ab == Ordering::Equal,
                "{a} vs {b}: == disagrees with cmp"
            );
            assert_eq!(a.partial_cmp(b), Some(ab), "{a} vs {b}: partial_cmp");
            for c in &versions {
                let bc = b.cmp(c);
                if ab == bc {
                    assert_eq!(a.cmp(c), ab, "{a}, {b}, {c}: not transitive");
                }
                if ab == Ordering::Equal {
                    assert_eq!(a.cmp(c), bc, "{a} == {b} but they compare unlike with {c}");
                }
            }
        }
    }
}

fn round_trip(v: &Version) {
    let text = v.to_string();
    let again = Version::parse(&text).unwrap_or_else(|e| panic!("{text} does not parse: {e}"));
    assert_eq!(
        again.cmp(v),
        Ordering::Equal,
        "{text} reads back as {again}"
    );
    assert_eq!(again.to_string(), text, "{text} is not canonical");
}

/// The splitter and the guard, for the dialect the first byte picks (the rest is the
/// script). Never panics; every statement's text is the script's own text where its
/// line:column says it starts, statements come in order without overlapping, and what lies
/// between them holds no token: only whitespace, comments, delimiters (and, for MySQL,
/// `DELIMITER` lines and the ends of `/*! */` hints). The same statements come out when the
/// script trickles in a few bytes per read; bytes that are not UTF-8 are an error.
pub fn sql(data: &[u8]) {
    let Some((&first, script)) = data.split_first() else {
        return;
    };
    let dialect = [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql][usize::from(first % 3)];
    let trickle = usize::from(first / 3) % 16 + 1;
    let streamed: Result<Vec<Statement>, _> = Statements::new(
        Trickle {
            data: script,
            step: trickle,
        },
        dialect,
    )
    .collect();
    let Ok(text) = std::str::from_utf8(script) else {
        assert!(streamed.is_err(), "bytes that are not UTF-8 were split");
        return;
    };
    let split = sql::split(text, dialect);
    assert_eq!(split, streamed, "reading {trickle} bytes at a time differs");
    let Ok(statements) = split else {
        return;
    };
    // Where a MySQL `DELIMITER` line may first be (the word anywhere is enough).
    let delimiter_from = text
        .to_ascii_lowercase()
        .find("delimiter")
        .unwrap_or(usize::MAX);
    let mut end = 0;
    for statement in &statements {
        let start = offset(text, statement.line, statement.column).unwrap_or_else(|| {
            panic!(
                "{}:{} is outside the script",
                statement.line, statement.column
            )
        });
        assert!(
            start >= end,
            "statements overlap at {}:{}",
            statement.line,
            statement.column
        );
        assert!(!statement.text.is_empty(), "an empty statement");
        assert!(
            text[start..].starts_with(&statement.text),
            "the statement at {}:{} is not the script's text",
            statement.line,
            statement.column
        );
        gap_has_no_token(&text[end..start], dialect, delimiter_from < start);
        end = start + statement.text.len();
        judge(statement, dialect);
    }
    gap_has_no_token(&text[end..], dialect, delimiter_from < text.len());
}

/// Every guard over one statement: none may panic.
fn judge(statement: &Statement, dialect: Dialect) {
    let _ = guard::check(statement, dialect);
    let _ = guard::check_install(statement, dialect);
    let _ = guard::check_always(statement, dialect);
    let _ = guard::commits_implicitly(statement, dialect);
    let tables = TableGuard::new([
        ("shop", "log", "MyISAM", true),
        ("other", "t", "Aria", false),
    ]);
    let _ = tables.check(statement, dialect);
    let _ = sql::words(&statement.text, dialect);
    let _ = sql::created_table(&statement.text, dialect);
    let _ = sql::mysql_engine_option(&statement.text);
    let short = sql::abbreviate(&statement.text);
    let cut = format!("… ({} bytes)", statement.text.len());
    let quoted = if short.chars().count() > sql::QUOTED_CHARS {
        short
            .strip_suffix(&cut)
            .expect("a long abbreviation ends with the length")
    } else {
        &short
    };
    assert!(
        quoted.chars().count() <= sql::QUOTED_CHARS,
        "abbreviate quoted {} characters",
        quoted.chars().count()
    );
    let clipped = sql::clip(&statement.text, 50);
    let quoted = clipped.strip_suffix(&cut).unwrap_or(&clipped);
    assert!(
        quoted.chars().count() <= 50,
        "clip kept {} characters",
        quoted.chars().count()
    );
}

/// The byte offset of a 1-based line and column (columns in characters, lines on `\n`).
fn offset(text: &str, line: u32, column: u32) -> Option<usize> {
    let mut at = 0;
    for _ in 1..line {
        at += text[at..].find('\n')? + 1;
    }
    let mut chars = text[at..]
        .char_indices()
        .map(|(i, _)| at + i)
        .chain([text.len()]);
    chars.nth(usize::try_from(column).ok()?.checked_sub(1)?)
}

/// Asserts that `gap` (text between statements) holds only whitespace, comments and
/// delimiters.
fn gap_has_no_token(gap: &str, dialect: Dialect, custom_delimiter: bool) {
    if dialect == Dialect::MySql && custom_delimiter {
        // After a `DELIMITER` line any text may be a delimiter: not checked.
        return;
    }
    let mut rest = gap;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() || c == ';' {
            rest = &rest[c.len_utf8()..];
        } else if rest.starts_with("--") || (dialect == Dialect::MySql && c == '#') {
            rest = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if rest.starts_with("/*") {
            rest = skip_block_comment(rest, dialect);
        } else if dialect == Dialect::MySql && rest.starts_with("*/") {
            // The end of a `/*! … */` hint whose statement ended inside it.
            rest = &rest[2..];
        } else {
            panic!("a token was dropped between statements: {gap:?}");
        }
    }
}

/// The text after the block comment `text` starts with (PostgreSQL's nest); all of it
/// when the comment is not closed.
fn skip_block_comment(text: &str, dialect: Dialect) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') if depth == 0 || dialect == Dialect::Postgres => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &text[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

/// A reader that gives at most `step` bytes per read, so statements and tokens are cut
/// at every place a read can end.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A package's `update.xml`: never panics.
pub fn update_xml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = upgrader::updates::parse_update_xml(text, Path::new("update.xml"));
}

/// A zip entry name the package reader accepts never reaches outside the project nor
/// into upgrader's own files.
pub fn zip_paths(data: &[u8]) {
    let name = String::from_utf8_lossy(data);
    if upgrader::updates::check_entry_name(&name).is_err() {
        return;
    }
    let lower = name.to_lowercase();
    assert!(!name.starts_with('/'), "absolute path accepted: {name:?}");
    assert!(!name.contains('\\'), "backslash accepted: {name:?}");
    assert!(
        !(name.len() >= 2
            && name.as_bytes()[1] == b':'
            && name.as_bytes()[0].is_ascii_alphabetic()),
        "drive letter accepted: {name:?}"
    );
    assert!(
        !name.split('/').any(|part| part == ".."),
        "`..` accepted: {name:?}"
    );
    assert!(
        !name.chars().any(char::is_control),
        "control character accepted: {name:?}"
    );
    assert!(
        !lower.starts_with("files/updates/") && lower.trim_end_matches('/') != "files/updates",
        "a name inside updates/ accepted: {name:?}"
    );
    assert!(
        lower.trim_end_matches('/') != "files/upgrade.lock",
        "upgrade.lock accepted: {name:?}"
    );
    assert!(
        lower.trim_end_matches('/') == "update.xml"
            || lower.trim_end_matches('/') == "files"
            || lower.starts_with("files/"),
        "a name outside files/ accepted: {name:?}"
    );
}

/// Arbitrary bytes as a package file: the reader never panics.
pub fn zip_package(data: &[u8]) {
    thread_local! {
        // One unlinked file per thread, rewritten for each input: creating and removing a
        // file per input took most of the time.
        static FILE: std::fs::File = {
            let path = std::env::temp_dir().join(format!(
                "upgrader-fuzz-{}-{:?}.zip",
                std::process::id(),
                std::thread::current().id()
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .expect("a temporary file");
            let _ = std::fs::remove_file(&path);
            file
        };
    }
    let file = FILE.with(|file| {
        let mut file = file.try_clone().expect("a second handle");
        file.set_len(0).expect("truncated");
        file.rewind().expect("rewound");
        file.write_all(data).expect("written");
        file.rewind().expect("rewound");
        file
    });
    let _ = upgrader::updates::read_package_file(file, Path::new("package.zip"));
}
