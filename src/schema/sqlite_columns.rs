//! The columns of an SQLite `CREATE TABLE` text, read with the SQL lexer exactly as
//! SQLite's `pragma_table_xinfo` reports them: asking SQLite prepares a `PRAGMA`
//! statement per table, which is most of what recording a thousand new tables costs.
//! Only the grammar SQLite stores is read (it keeps the text it accepted, or one it made
//! itself); anything this reading does not cover gives `None`, and the caller asks
//! SQLite: virtual tables, `WITHOUT ROWID` and `STRICT` tables (whose key columns
//! SQLite makes NOT NULL), types spelled with quotes or with the words
//! `GENERATED`/`ALWAYS` (which SQLite trims from a type), a column named twice in the
//! primary key, any token out of place.

use super::ColumnFacts;

/// A column as `pragma_table_xinfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DefinedColumn {
    /// Name, declared type (the text as written), NOT NULL, the default's text, and
    /// `GENERATED VIRTUAL`/`GENERATED STORED` in `extra`.
    pub(crate) facts: ColumnFacts,
    /// Its place in the primary key, from 1; 0 when it is not in it.
    pub(crate) key: usize,
}

/// The columns of `definition` (an `sqlite_schema.sql` text of a table), or `None` (see
/// the module's documentation).
pub(crate) fn defined_columns(definition: &str) -> Option<Vec<DefinedColumn>> {
    let mut reader = Reader {
        text: definition,
        tokens: tokens(definition)?,
        at: 0,
    };
    reader.head()?;
    let mut columns = Vec::new();
    loop {
        if TABLE_CONSTRAINTS.iter().any(|k| reader.peek_is(k)) {
            break;
        }
        columns.push(reader.column()?);
        match reader.next()? {
            "," => continue,
            ")" => return reader.options().then_some(columns),
            _ => return None,
        }
    }
    loop {
        reader.table_constraint(&mut columns)?;
        // SQLite lets table constraints follow each other without a comma.
        match reader.peek()? {
            "," => reader.at += 1,
            ")" => {
                reader.at += 1;
                return reader.options().then_some(columns);
            }
            _ => {}
        }
    }
}

/// The words a table constraint starts with (none can name a column unquoted).
const TABLE_CONSTRAINTS: [&str; 5] = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];

/// The words that end a column's type: each starts a column constraint, and none can be
/// part of a type name in SQLite's grammar.
const TYPE_ENDS: [&str; 10] = [
    "CONSTRAINT",
    "PRIMARY",
    "NOT",
    "NULL",
    "UNIQUE",
    "CHECK",
    "DEFAULT",
    "COLLATE",
    "REFERENCES",
    "AS",
];

struct Reader<'a> {
    text: &'a str,
    tokens: Vec<&'a str>,
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.at).copied()
    }

    fn peek_is(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn next(&mut self) -> Option<&'a str> {
        let token = self.peek()?;
        self.at += 1;
        Some(token)
    }

    /// The next token, which must be `word` (in any case) or this punctuation.
    fn expect(&mut self, word: &str) -> Option<()> {
        self.next()?.eq_ignore_ascii_case(word).then_some(())
    }

    /// Skips `word` if it comes next.
    fn skip(&mut self, word: &str) -> bool {
        let found = self.peek_is(word);
        if found {
            self.at += 1;
        }
        found
    }

    /// Where `token` (a slice of the text) starts and ends in the text.
    fn span(&self, token: &str) -> (usize, usize) {
        let start = token.as_ptr() as usize - self.text.as_ptr() as usize;
        (start, start + token.len())
    }

    /// `CREATE [TEMP] TABLE [IF NOT EXISTS] [schema.]name (`.
    fn head(&mut self) -> Option<()> {
        self.expect("CREATE")?;
        let _ = self.skip("TEMP") || self.skip("TEMPORARY");
        self.expect("TABLE")?;
        if self.skip("IF") {
            self.expect("NOT")?;
            self.expect("EXISTS")?;
        }
        self.name()?;
        if self.skip(".") {
            self.name()?;
        }
        self.expect("(")
    }

    /// A name: a word, a quoted identifier or a string, unquoted.
    fn name(&mut self) -> Option<String> {
        let token = self.next()?;
        let first = token.chars().next()?;
        if first.is_alphabetic() || first == '_' {
            return Some(token.to_string());
        }
        let close = match first {
            '"' => '"',
            '\'' => '\'',
            '`' => '`',
            '[' => ']',
            _ => return None,
        };
        let inner = token.get(1..token.len().checked_sub(1)?)?;
        if !token.ends_with(close) {
            return None;
        }
        Some(match close {
            ']' => inner.to_string(),
            _ => inner.replace(&format!("{close}{close}"), &close.to_string()),
        })
    }

    /// A column definition: its name, type and constraints, up to the `,` or `)` after it.
    fn column(&mut self) -> Option<DefinedColumn> {
        let name = self.name()?;
        let mut data_type: Option<(usize, usize)> = None;
        while let Some(token) = self.peek() {
            if !is_word(token) || TYPE_ENDS.iter().any(|end| token.eq_ignore_ascii_case(end)) {
                break;
            }
            if token.eq_ignore_ascii_case("GENERATED") || token.eq_ignore_ascii_case("ALWAYS") {
                // SQLite's parser takes `GENERATED ALWAYS` before `AS` for type words,
                // then trims them off the type; anywhere else they stay in it.
                if !self.generated_always(data_type.map(|(_, end)| end)) {
                    return None;
                }
                break;
            }
            let (start, end) = self.span(token);
            data_type = Some((data_type.map_or(start, |(s, _)| s), end));
            self.at += 1;
        }
        if let Some((start, _)) = data_type.filter(|_| self.peek() == Some("(")) {
            self.at += 1;
            self.signed_number()?;
            if self.skip(",") {
                self.signed_number()?;
            }
            let close = self.next().filter(|t| *t == ")")?;
            data_type = Some((start, self.span(close).1));
        }
        let mut facts = ColumnFacts {
            name,
            data_type: data_type.map_or(String::new(), |(s, e)| self.text[s..e].to_string()),
            nullable: true,
            default: None,
            extra: None,
        };
        let mut key = 0;
        loop {
            let token = self.peek()?;
            if token == "," || token == ")" {
                break;
            }
            self.at += 1;
            match token.to_ascii_uppercase().as_str() {
                "CONSTRAINT" => {
                    self.name()?;
                }
                "PRIMARY" => {
                    self.expect("KEY")?;
                    let _ = self.skip("ASC") || self.skip("DESC");
                    self.conflict()?;
                    self.skip("AUTOINCREMENT");
                    if key != 0 {
                        return None;
                    }
                    key = 1;
                }
                "NOT" => {
                    self.expect("NULL")?;
                    self.conflict()?;
                    facts.nullable = false;
                }
                "NULL" | "UNIQUE" => self.conflict()?,
                "CHECK" => self.parenthesized()?,
                "DEFAULT" if facts.default.is_none() && facts.extra.is_none() => {
                    facts.default = Some(self.default()?);
                }
                "COLLATE" => {
                    self.name()?;
                }
                "REFERENCES" => self.references()?,
                "GENERATED" | "AS" if facts.extra.is_none() && facts.default.is_none() => {
                    if token.eq_ignore_ascii_case("GENERATED") {
                        self.expect("ALWAYS")?;
                        self.expect("AS")?;
                    }
                    self.parenthesized()?;
                    let stored = self.skip("STORED");
                    if !stored {
                        self.skip("VIRTUAL");
                    }
                    facts.extra = Some(
                        match stored {
                            true => "GENERATED STORED",
                            false => "GENERATED VIRTUAL",
                        }
                        .into(),
                    );
                }
                _ => return None,
            }
        }
        Some(DefinedColumn { facts, key })
    }

    /// Whether `GENERATED ALWAYS AS` comes next, its words apart by spaces only (and
    /// from the type's end, `after_type`), as SQLite trims them from a type.
    fn generated_always(&self, after_type: Option<usize>) -> bool {
        let words = ["GENERATED", "ALWAYS", "AS"];
        let Some(tokens) = self.tokens.get(self.at..self.at + 3) else {
            return false;
        };
        if !tokens
            .iter()
            .zip(words)
            .all(|(t, w)| t.eq_ignore_ascii_case(w))
        {
            return false;
        }
        let (generated, generated_end) = self.span(tokens[0]);
        let (always, _) = self.span(tokens[1]);
        let blank = |from: usize, to: usize| self.text[from..to].chars().all(char::is_whitespace);
        blank(generated_end, always) && after_type.is_none_or(|end| blank(end, generated))
    }

    /// `[+|-] number`, as a type's size.
    fn signed_number(&mut self) -> Option<()> {
        let _ = self.skip("+") || self.skip("-");
        self.next()?
            .starts_with(|c: char| c.is_ascii_digit() || c == '.')
            .then_some(())
    }

    /// `ON CONFLICT <resolution>`, if it comes next.
    fn conflict(&mut self) -> Option<()> {
        if self.peek_is("ON")
            && self
                .tokens
                .get(self.at + 1)?
                .eq_ignore_ascii_case("CONFLICT")
        {
            self.at += 2;
            self.next()?;
        }
        Some(())
    }

    /// `( … )` with whatever is inside, up to its closing parenthesis; the text inside.
    fn parenthesized(&mut self) -> Option<()> {
        self.inside().map(|_| ())
    }

    /// Reads `( … )`; the text between the parentheses.
    fn inside(&mut self) -> Option<&'a str> {
        let open = self.next().filter(|t| *t == "(")?;
        let mut depth = 1usize;
        loop {
            let token = self.next()?;
            match token {
                "(" => depth += 1,
                ")" => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&self.text[self.span(open).1..self.span(token).0]);
                    }
                }
                _ => {}
            }
        }
    }

    /// A default's text as SQLite keeps it: the expression inside `( … )`, a signed
    /// term, or one literal or name, as written.
    fn default(&mut self) -> Option<String> {
        if self.peek() == Some("(") {
            return Some(self.inside()?.trim().to_string());
        }
        let first = self.next()?;
        let last = match first {
            "+" | "-" => self.next()?,
            _ => first,
        };
        if last == "(" || last == ")" || last == "," {
            return None;
        }
        Some(self.text[self.span(first).0..self.span(last).1].to_string())
    }

    /// A foreign key's `REFERENCES table [(columns)]` and its actions and deferral.
    fn references(&mut self) -> Option<()> {
        self.name()?;
        if self.peek() == Some("(") {
            self.parenthesized()?;
        }
        loop {
            if self.skip("ON") {
                self.next()?; // DELETE, UPDATE or INSERT
                if self.skip("SET") || self.skip("NO") {
                    self.next()?; // NULL, DEFAULT; ACTION
                } else {
                    self.next()?; // CASCADE, RESTRICT
                }
            } else if self.skip("MATCH") {
                self.name()?;
            } else if self.peek_is("NOT")
                && self
                    .tokens
                    .get(self.at + 1)
                    .is_some_and(|t| t.eq_ignore_ascii_case("DEFERRABLE"))
            {
                self.at += 2;
                self.initially()?;
            } else if self.skip("DEFERRABLE") {
                self.initially()?;
            } else {
                return Some(());
            }
        }
    }

    /// `[INITIALLY DEFERRED|IMMEDIATE]`.
    fn initially(&mut self) -> Option<()> {
        if self.skip("INITIALLY") {
            self.next()?;
        }
        Some(())
    }

    /// A table constraint; a primary key puts its columns' places in `columns`.
    fn table_constraint(&mut self, columns: &mut [DefinedColumn]) -> Option<()> {
        if self.skip("CONSTRAINT") {
            self.name()?;
        }
        match self.next()?.to_ascii_uppercase().as_str() {
            "PRIMARY" => {
                self.expect("KEY")?;
                self.expect("(")?;
                if columns.iter().any(|c| c.key != 0) {
                    return None;
                }
                let mut place = 0;
                loop {
                    let name = self.name()?;
                    if self.skip("COLLATE") {
                        self.name()?;
                    }
                    let _ = self.skip("ASC") || self.skip("DESC");
                    let column = columns
                        .iter_mut()
                        .find(|c| c.facts.name.eq_ignore_ascii_case(&name))?;
                    if column.key != 0 {
                        return None;
                    }
                    place += 1;
                    column.key = place;
                    match self.next()? {
                        "," => continue,
                        ")" => break,
                        _ => return None,
                    }
                }
                self.conflict()
            }
            "UNIQUE" | "CHECK" => {
                self.parenthesized()?;
                self.conflict()
            }
            "FOREIGN" => {
                self.expect("KEY")?;
                self.parenthesized()?;
                self.expect("REFERENCES")?;
                self.references()
            }
            _ => None,
        }
    }

    /// Whether nothing follows the column list (`WITHOUT ROWID` and `STRICT` are left to
    /// SQLite: they make key columns NOT NULL without saying so).
    fn options(&mut self) -> bool {
        self.peek().is_none()
    }
}

/// Whether a token is an unquoted word.
fn is_word(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The tokens of a definition as far as reading its columns needs them: words, quoted
/// names, strings and blobs, numbers, and every other character alone (an operator of
/// two characters is two tokens: only parentheses, commas, dots and signs are read).
/// `None` when a quote or comment is not closed. (The SQL lexer would do, at several
/// times the cost: a definition is read for every table recorded.)
fn tokens(text: &str) -> Option<Vec<&str>> {
    let bytes = text.as_bytes();
    let mut found = Vec::with_capacity(bytes.len() / 4);
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let start = at;
        at += 1;
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => continue,
            b'-' if bytes.get(at) == Some(&b'-') => {
                at = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |end| at + end);
                continue;
            }
            b'/' if bytes.get(at) == Some(&b'*') => {
                let end = bytes[at + 1..].windows(2).position(|w| w == b"*/")?;
                at += 1 + end + 2;
                continue;
            }
            b'\'' | b'"' | b'`' => at = closed(bytes, at, byte)?,
            b'[' => at += bytes[at..].iter().position(|&b| b == b']')? + 1,
            b'x' | b'X' if bytes.get(at) == Some(&b'\'') => at = closed(bytes, at + 1, b'\'')?,
            b'0'..=b'9' => at = number_end(bytes, at),
            b'.' if bytes.get(at).is_some_and(u8::is_ascii_digit) => at = number_end(bytes, at),
            b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                while bytes.get(at).is_some_and(|&b| {
                    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
                }) {
                    at += 1;
                }
            }
            _ => {}
        }
        // Tokens end at ASCII bytes or the end: always on character boundaries.
        found.push(text.get(start..at)?);
    }
    Some(found)
}

/// Where a quoted token that opened just before `at` ends (a doubled quote is one
/// quote character inside it).
fn closed(bytes: &[u8], mut at: usize, quote: u8) -> Option<usize> {
    loop {
        at += bytes[at..].iter().position(|&b| b == quote)? + 1;
        if bytes.get(at) != Some(&quote) {
            return Some(at);
        }
        at += 1;
    }
}

/// Where a number that started before `at` ends: digits, letters (hex, exponents), `_`,
/// `.`, and a sign right after an exponent's `e`.
fn number_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&b) = bytes.get(at) {
        let signed = (b == b'+' || b == b'-') && matches!(bytes[at - 1], b'e' | b'E');
        if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || signed) {
            break;
        }
        at += 1;
    }
    at
}
