//! The byte-level lexer behind the streaming splitter: it finds token boundaries the way
//! sqlparser's tokenizer does for the three dialects (strings, quoted identifiers,
//! comments, dollar quotes, escape strings, MySQL backslash escapes, `#` comments and
//! `/*! … */` hints), but holds no token list and allocates nothing: each call looks at
//! the bytes from one token start and says what the token is and how long it is.
//!
//! It never decides on a token it has not seen the end of: when the window ends inside a
//! token and more input may follow, it answers [`Stop::More`] and the caller calls again
//! from the same token start with more bytes (the caller grows its reads so that such
//! rescans cost at most as much again as the token itself).
//!
//! Where it knowingly differs from the tokenizer-based splitter it replaced (the
//! differential tests in `sql/mod.rs` hold it to that splitter everywhere else):
//! - PostgreSQL: an operator never swallows a following `--` or `/*` (sqlparser read
//!   `&--` as one custom operator); PostgreSQL's own lexer does the same.
//! - After a MySQL custom delimiter, reading resumes right after it (`$$SELECT` is the
//!   delimiter and `SELECT`), as the mysql client does; sqlparser dropped the rest of a
//!   token that began with the delimiter.
//! - Input that sqlparser refused although it splits fine (`1_z`, `._`, a bad escape in
//!   an `E''` string) is left to the database, which reports it with the statement.
//! - A statement that begins inside a MySQL `/*!` hint begins at the hint (the old text
//!   began one byte into it, `*!50001 CREATE …`, which the server cannot run).
//! - `DELIMITER` lines are recognised with ASCII whitespace only.

use super::Dialect;

/// What a token is, as far as splitting and classifying care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Whitespace or a comment (including the opening and closing of a MySQL `/*!` hint).
    Blank,
    /// An unquoted word (keyword or identifier).
    Word,
    /// A quoted identifier (`"x"`, `` `x` ``, `[x]`).
    Quoted,
    /// A string literal of any kind (including dollar quotes).
    Str,
    /// `;`.
    Semi,
    /// A `.` that is not part of a number.
    Period,
    /// Any other token (numbers, operators, punctuation, placeholders).
    Other,
}

/// Why the lexer did not return a token.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The window ends inside the token: call again with more bytes.
    More,
    /// The input is bad at this offset (relative to the window).
    Error(usize, String),
}

/// The lexer's memory between tokens: what the previous token was (numbers and `.` depend
/// on it in MySQL, as in sqlparser) and whether we are inside a MySQL `/*! … */` hint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lexer {
    pub(crate) dialect: Dialect,
    pub(crate) prev: Kind,
    pub(crate) hint: bool,
}

/// The bytes from the token start to the end of what is known, and whether that end is
/// the end of the input (or of the `DELIMITER` segment).
struct Window<'a> {
    s: &'a [u8],
    end: bool,
}

impl Window<'_> {
    /// The byte at `i`; `None` past the end of the input; `More` when it is not read yet.
    #[inline]
    fn at(&self, i: usize) -> Result<Option<u8>, Stop> {
        match self.s.get(i) {
            Some(&b) => Ok(Some(b)),
            None if self.end => Ok(None),
            None => Err(Stop::More),
        }
    }

    /// `Ok` when a construct left open at the end of the window is unterminated (the
    /// window is the end of the input), `More` when more input may close it.
    fn unterminated(&self) -> Result<(), Stop> {
        if self.end {
            Ok(())
        } else {
            Err(Stop::More)
        }
    }
}

/// Whitespace as sqlparser sees it, for ASCII (non-ASCII characters are identifier
/// characters in all three dialects, or `Char` tokens in SQLite, never whitespace).
#[inline]
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

/// The length of the UTF-8 sequence that starts with `lead`.
#[inline]
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

impl Lexer {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Lexer {
            dialect,
            prev: Kind::Blank,
            hint: false,
        }
    }

    #[inline]
    fn ident_start(&self, b: u8) -> bool {
        match self.dialect {
            Dialect::MySql => {
                b.is_ascii_alphabetic() || matches!(b, b'_' | b'$' | b'@') || b >= 0x80
            }
            Dialect::Postgres => b.is_ascii_alphabetic() || b == b'_' || b >= 0x80,
            // SQLite: U+007F..U+FFFF, so not the characters of four UTF-8 bytes.
            Dialect::Sqlite => {
                b.is_ascii_alphabetic() || b == b'_' || b == 0x7f || (0x80..0xf0).contains(&b)
            }
        }
    }

    #[inline]
    fn ident_part(&self, b: u8) -> bool {
        self.ident_start(b)
            || b.is_ascii_digit()
            || (b == b'$' && self.dialect == Dialect::Postgres)
    }

    /// The token at the start of `s` (which must not be empty): its kind and length.
    /// `end` says that `s` runs to the end of the input.
    pub(crate) fn lex(&mut self, s: &[u8], end: bool) -> Result<(Kind, usize), Stop> {
        let token = self.token(&Window { s, end })?;
        self.prev = token.0;
        Ok(token)
    }

    fn token(&mut self, w: &Window<'_>) -> Result<(Kind, usize), Stop> {
        let mysql = self.dialect == Dialect::MySql;
        let pg = self.dialect == Dialect::Postgres;
        let b = w.s[0];
        let token = match b {
            b if is_space(b) => (Kind::Blank, 1),
            b'-' if w.at(1)? == Some(b'-') => {
                if mysql && !self.space_at(w, 2)? {
                    (Kind::Other, 1)
                } else {
                    (Kind::Blank, self.line_comment(w, 2)?)
                }
            }
            b'#' if mysql => (Kind::Blank, self.line_comment(w, 1)?),
            b'/' if w.at(1)? == Some(b'*') => {
                if mysql && w.at(2)? == Some(b'!') {
                    // A versioned comment: MySQL runs what it holds, so it is read as code.
                    let mut j = 3;
                    while w.at(j)?.is_some_and(|b| b.is_ascii_digit()) {
                        j += 1;
                    }
                    self.hint = true;
                    (Kind::Blank, j)
                } else {
                    (Kind::Blank, block_comment(w, pg)?)
                }
            }
            b'*' if self.hint && w.at(1)? == Some(b'/') => {
                self.hint = false;
                (Kind::Blank, 2)
            }
            b'\'' => (
                Kind::Str,
                quoted(w, 0, b'\'', mysql, "Unterminated string literal")?,
            ),
            b'"' if mysql => (
                Kind::Str,
                quoted(w, 0, b'"', true, "Unterminated string literal")?,
            ),
            b'"' => (Kind::Quoted, identifier(w, b'"')?),
            b'`' if mysql || self.dialect == Dialect::Sqlite => {
                (Kind::Quoted, identifier(w, b'`')?)
            }
            b'[' if self.dialect == Dialect::Sqlite => (Kind::Quoted, identifier(w, b']')?),
            b'B' | b'b' if (mysql || pg) && matches!(w.at(1)?, Some(b'\'' | b'"')) => {
                let quote = w.s[1];
                (
                    Kind::Str,
                    quoted(w, 1, quote, false, "Unterminated string literal")?,
                )
            }
            b'N' | b'n' if w.at(1)? == Some(b'\'') => (
                Kind::Str,
                quoted(w, 1, b'\'', mysql, "Unterminated string literal")?,
            ),
            b'E' | b'e' if pg && w.at(1)? == Some(b'\'') => {
                let len = quoted(w, 1, b'\'', true, "Unterminated encoded string literal")
                    .map_err(|stop| match stop {
                        // sqlparser reports an unterminated E'' string at the E.
                        Stop::Error(_, message) => Stop::Error(0, message),
                        more => more,
                    })?;
                (Kind::Str, len)
            }
            b'U' | b'u' if pg && w.at(1)? == Some(b'&') && w.at(2)? == Some(b'\'') => {
                let len = quoted(
                    w,
                    2,
                    b'\'',
                    false,
                    "Unterminated unicode encoded string literal",
                )
                .map_err(|stop| match stop {
                    Stop::Error(_, message) => Stop::Error(w.s.len(), message),
                    more => more,
                })?;
                (Kind::Str, len)
            }
            b'X' | b'x' if w.at(1)? == Some(b'\'') => (
                Kind::Str,
                quoted(w, 1, b'\'', true, "Unterminated string literal")?,
            ),
            // Operators that take a character which would otherwise start something
            // (sqlparser reads `|/*` as `|/` and `*`, `^@x` as `^@` and `x`…).
            b'^' | b'<' if w.at(1)? == Some(b'@') => (Kind::Other, 2),
            b'|' if w.at(1)? == Some(b'/') => (Kind::Other, 2),
            b'|' if w.at(1)? == Some(b'|') && w.at(2)? == Some(b'/') => (Kind::Other, 3),
            b'#' if w.at(1)? == Some(b'-') => (Kind::Other, 2),
            b'?' if pg && matches!(w.at(1)?, Some(b'-' | b'#')) => (Kind::Other, 2),
            b'?' if pg => (Kind::Other, 1),
            b'0'..=b'9' | b'.' => self.number(w)?,
            b';' => (Kind::Semi, 1),
            b'$' if pg => dollar(w)?,
            b'$' if self.dialect == Dialect::Sqlite => {
                let mut j = 1;
                while w.at(j)?.is_some_and(|b| {
                    b.is_ascii_alphanumeric() || b >= 0x80 || matches!(b, b'_' | b'$')
                }) {
                    j += 1;
                }
                (Kind::Other, j)
            }
            b'@' if mysql => self.mysql_at(w)?,
            b'?' => {
                let mut j = 1;
                while w.at(j)?.is_some_and(|b| b.is_ascii_digit()) {
                    j += 1;
                }
                (Kind::Other, j)
            }
            b if self.ident_start(b) => (Kind::Word, self.word(w, 1)?),
            b => {
                let len = utf8_len(b);
                w.at(len - 1)?;
                (Kind::Other, len.min(w.s.len()))
            }
        };
        Ok(token)
    }

    /// Whether a whitespace character starts at `i` (MySQL wants one after `--`).
    fn space_at(&self, w: &Window<'_>, i: usize) -> Result<bool, Stop> {
        let Some(b) = w.at(i)? else {
            return Ok(false);
        };
        if b < 0x80 {
            return Ok(is_space(b));
        }
        let len = utf8_len(b);
        w.at(i + len - 1)?;
        let end = (i + len).min(w.s.len());
        Ok(std::str::from_utf8(&w.s[i..end])
            .ok()
            .and_then(|s| s.chars().next())
            .is_some_and(char::is_whitespace))
    }

    /// A comment up to (not including) the end of its line.
    fn line_comment(&self, w: &Window<'_>, from: usize) -> Result<usize, Stop> {
        let rest = &w.s[from.min(w.s.len())..];
        let found = if self.dialect == Dialect::Postgres {
            memchr::memchr2(b'\n', b'\r', rest)
        } else {
            memchr::memchr(b'\n', rest)
        };
        match found {
            Some(i) => Ok(from + i),
            None => w.unterminated().map(|()| w.s.len()),
        }
    }

    fn word(&self, w: &Window<'_>, from: usize) -> Result<usize, Stop> {
        let mut j = from;
        while w.at(j)?.is_some_and(|b| self.ident_part(b)) {
            j += 1;
        }
        Ok(j)
    }

    /// `@` in MySQL, as sqlparser reads it: `@x` and `@@x` are words (whatever character
    /// follows the `@`s, except a space or a quote).
    fn mysql_at(&self, w: &Window<'_>) -> Result<(Kind, usize), Stop> {
        Ok(match w.at(1)? {
            Some(b'>' | b'?') => (Kind::Other, 2),
            Some(b'@') => match w.at(2)? {
                None | Some(b' ') => (Kind::Other, 2),
                Some(b) => {
                    let len = utf8_len(b);
                    w.at(2 + len - 1)?;
                    (Kind::Word, self.word(w, 2 + len)?)
                }
            },
            None | Some(b' ' | b'\'' | b'"' | b'`') => (Kind::Other, 1),
            Some(b) => {
                let len = utf8_len(b);
                w.at(len)?;
                (Kind::Word, self.word(w, 1 + len)?)
            }
        })
    }

    /// A number (or a `.`), following sqlparser: in MySQL digits followed by identifier
    /// characters are a word (`1abc`).
    fn number(&self, w: &Window<'_>) -> Result<(Kind, usize), Stop> {
        let mysql = self.dialect == Dialect::MySql;
        let underscores = self.dialect != Dialect::MySql;
        let digits = |mut j: usize, hex: bool| -> Result<usize, Stop> {
            loop {
                match w.at(j)? {
                    Some(b) if b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()) => j += 1,
                    Some(b'_') if underscores && j > 0 => match w.at(j + 1)? {
                        Some(b) if b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()) => j += 2,
                        _ => return Ok(j),
                    },
                    _ => return Ok(j),
                }
            }
        };
        if w.s[0] == b'.' && w.at(1)? == Some(b'_') {
            return Ok((Kind::Period, 1));
        }
        let mut j = digits(0, false)?;
        if j == 1 && w.s[0] == b'0' && w.at(1)? == Some(b'x') {
            return Ok((Kind::Other, digits(2, true)?));
        }
        if w.at(j)? == Some(b'.') {
            j += 1;
            if j == 1 && mysql && matches!(self.prev, Kind::Word | Kind::Quoted) {
                return Ok((Kind::Period, 1));
            }
        }
        let fraction = j;
        j = digits(j, false)?;
        if j == 1 && fraction == 1 && w.s[0] == b'.' {
            return Ok((Kind::Period, 1));
        }
        // As in sqlparser, an `e` after the digits counts as an exponent attempt even when
        // no digits follow (then `1END` is the number 1 and the word END).
        let exponent = matches!(w.at(j)?, Some(b'e' | b'E'));
        if exponent {
            let mut k = j + 1;
            if matches!(w.at(k)?, Some(b'+' | b'-')) {
                k += 1;
            }
            if w.at(k)?.is_some_and(|b| b.is_ascii_digit()) {
                j = digits(k, false)?;
            }
        }
        if mysql {
            if !exponent {
                let word = self.word(w, j)?;
                if word > j {
                    return Ok((Kind::Word, word));
                }
            } else if self.prev == Kind::Period {
                return Ok((Kind::Word, j));
            }
        }
        if w.at(j)? == Some(b'L') {
            j += 1;
        }
        Ok((Kind::Other, j))
    }
}

/// A quoted string whose opening quote is at `open`: a doubled quote stays inside, and with
/// `backslash` a backslash takes the next character with it.
fn quoted(
    w: &Window<'_>,
    open: usize,
    quote: u8,
    backslash: bool,
    message: &str,
) -> Result<usize, Stop> {
    let mut i = open + 1;
    loop {
        let rest = w.s.get(i..).unwrap_or_default();
        let found = if backslash {
            memchr::memchr2(quote, b'\\', rest)
        } else {
            memchr::memchr(quote, rest)
        };
        let Some(offset) = found else {
            w.unterminated()?;
            return Err(Stop::Error(open, message.to_string()));
        };
        let j = i + offset;
        if w.s[j] == b'\\' {
            if w.at(j + 1)?.is_none() {
                return Err(Stop::Error(open, message.to_string()));
            }
            i = j + 2;
        } else if w.at(j + 1)? == Some(quote) {
            i = j + 2;
        } else {
            return Ok(j + 1);
        }
    }
}

/// A quoted identifier: the closing quote doubled stays inside.
fn identifier(w: &Window<'_>, close: u8) -> Result<usize, Stop> {
    quoted(w, 0, close, false, "").map_err(|stop| match stop {
        Stop::Error(at, _) => Stop::Error(
            at,
            format!("Expected close delimiter '{}' before EOF.", close as char),
        ),
        more => more,
    })
}

/// A block comment (nested in PostgreSQL).
fn block_comment(w: &Window<'_>, nested: bool) -> Result<usize, Stop> {
    let mut depth = 1u32;
    let mut i = 2;
    loop {
        let rest = w.s.get(i..).unwrap_or_default();
        let found = if nested {
            memchr::memchr2(b'*', b'/', rest)
        } else {
            memchr::memchr(b'*', rest)
        };
        let Some(offset) = found else {
            w.unterminated()?;
            return Err(Stop::Error(
                w.s.len(),
                "Unexpected EOF while in a multi-line comment".into(),
            ));
        };
        let j = i + offset;
        match (w.s[j], w.at(j + 1)?) {
            (b'*', Some(b'/')) => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 2);
                }
                i = j + 2;
            }
            (b'/', Some(b'*')) => {
                depth += 1;
                i = j + 2;
            }
            _ => i = j + 1,
        }
    }
}

/// `$tag$ … $tag$` (or `$$ … $$`) in PostgreSQL; `$1` is a placeholder.
fn dollar(w: &Window<'_>) -> Result<(Kind, usize), Stop> {
    let mut j = 1;
    while w
        .at(j)?
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
    {
        j += 1;
    }
    if w.at(j)? != Some(b'$') {
        return Ok((Kind::Other, j));
    }
    let delimiter = &w.s[..=j];
    let mut i = j + 1;
    loop {
        let rest = w.s.get(i..).unwrap_or_default();
        let Some(offset) = memchr::memchr(b'$', rest) else {
            w.unterminated()?;
            break;
        };
        let k = i + offset;
        w.at(k + delimiter.len() - 1)?;
        if w.s[k..].starts_with(delimiter) {
            return Ok((Kind::Str, k + delimiter.len()));
        }
        i = k + 1;
    }
    let message = if j == 1 {
        "Unterminated dollar-quoted string"
    } else {
        "Unterminated dollar-quoted, expected $"
    };
    Err(Stop::Error(w.s.len(), message.into()))
}
