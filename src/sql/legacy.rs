//! The tokenizer-based splitter that the streaming one replaced, kept for the tests only:
//! the differential tests hold the new splitter to its results.

use sqlparser::tokenizer::{Token, Tokenizer};

use super::{Dialect, SplitError, Statement};

/// How many leading words a [`Statement`] keeps for classification.
const KEYWORDS_KEPT: usize = 6;

/// Splits a script into statements.
///
/// Semicolons inside strings, quoted identifiers, comments and dollar quotes do not split;
/// neither do those inside `BEGIN … END` bodies of triggers, functions and procedures. For
/// MySQL, `DELIMITER xx` lines change the delimiter as the mysql client does.
pub(crate) fn split(script: &str, dialect: Dialect) -> Result<Vec<Statement>, SplitError> {
    let parser = dialect.parser();
    let mut statements = Vec::new();
    for segment in segments(script, dialect) {
        let text = &script[segment.start..segment.end];
        let tokens = Tokenizer::new(parser.as_ref(), text)
            .with_unescape(false)
            .tokenize_with_location()
            .map_err(|e| SplitError {
                line: e.location.line as u32 + segment.line - 1,
                column: e.location.column as u32,
                message: e.message,
            })?;
        let mut cursor = Cursor::new(text);
        let mut current: Option<Pending> = None;
        let mut skip_until = 0usize;
        for token in &tokens {
            let offset = cursor.offset(token.span.start.line, token.span.start.column);
            if offset < skip_until {
                continue;
            }
            let is_blank = matches!(token.token, Token::Whitespace(_) | Token::EOF);
            let ends = match segment.delimiter {
                None => matches!(token.token, Token::SemiColon),
                Some(delimiter) => !is_blank && text[offset..].starts_with(delimiter),
            };
            let at_depth_zero = current.as_ref().is_none_or(|p| p.depth == 0);
            if ends && at_depth_zero {
                if let Some(pending) = current.take() {
                    statements.push(pending.finish(text, offset, &segment));
                }
                skip_until = offset + segment.delimiter.map_or(1, str::len);
                continue;
            }
            if is_blank {
                continue;
            }
            let pending = current.get_or_insert_with(|| Pending {
                start: offset,
                line: token.span.start.line as u32,
                column: token.span.start.column as u32,
                keywords: String::new(),
                kept: 0,
                depth: 0,
                body: false,
                after_end: false,
            });
            pending.see(&token.token);
        }
        if let Some(pending) = current.take() {
            statements.push(pending.finish(text, text.len(), &segment));
        }
    }
    Ok(statements)
}

/// A statement being collected.
struct Pending {
    start: usize,
    line: u32,
    column: u32,
    keywords: String,
    kept: usize,
    /// Nesting of `BEGIN`/`CASE` … `END` inside a routine or trigger body.
    depth: u32,
    /// The statement defines a trigger, function, procedure or event, so `BEGIN` opens a body.
    body: bool,
    after_end: bool,
}

impl Pending {
    fn see(&mut self, token: &Token) {
        let word = match token {
            Token::Word(word) if word.quote_style.is_none() => {
                Some(word.value.to_ascii_uppercase())
            }
            _ => None,
        };
        let after_end = std::mem::take(&mut self.after_end);
        let Some(word) = word else {
            return;
        };
        if self.kept < KEYWORDS_KEPT {
            if self.keywords.split(' ').next() == Some("CREATE")
                && matches!(
                    word.as_str(),
                    "TRIGGER" | "FUNCTION" | "PROCEDURE" | "EVENT"
                )
            {
                self.body = true;
            }
            if self.kept > 0 {
                self.keywords.push(' ');
            }
            self.keywords.push_str(&word);
            self.kept += 1;
        }
        if !self.body {
            return;
        }
        match word.as_str() {
            "BEGIN" => self.depth += 1,
            "CASE" if self.depth > 0 && !after_end => self.depth += 1,
            "END" if self.depth > 0 => {
                self.depth -= 1;
                self.after_end = true;
            }
            // `END IF`, `END LOOP`…: their openings were not counted, so neither is this.
            "IF" | "LOOP" | "WHILE" | "REPEAT" | "FOR" if after_end => self.depth += 1,
            _ => {}
        }
    }

    fn finish(self, text: &str, end: usize, segment: &Segment<'_>) -> Statement {
        Statement {
            text: text[self.start..end].trim_end().to_string(),
            line: self.line + segment.line - 1,
            column: self.column,
            keywords: {
                let mut keywords = self.keywords;
                keywords.shrink_to_fit();
                keywords
            },
        }
    }
}

/// Turns tokenizer line/column positions (which only move forward) into byte offsets.
struct Cursor<'a> {
    text: &'a str,
    line: u64,
    column: u64,
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            text,
            line: 1,
            column: 1,
            offset: 0,
        }
    }

    fn offset(&mut self, line: u64, column: u64) -> usize {
        if line == 0 {
            return self.text.len();
        }
        let mut chars = self.text[self.offset..].chars();
        while (self.line, self.column) < (line, column) {
            let Some(ch) = chars.next() else {
                break;
            };
            self.offset += ch.len_utf8();
            if ch == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.offset
    }
}

/// A stretch of the script with one delimiter (`None` is the ordinary `;`).
struct Segment<'a> {
    start: usize,
    end: usize,
    /// The 1-based line of the script where the segment starts.
    line: u32,
    delimiter: Option<&'a str>,
}

/// Cuts the script at MySQL `DELIMITER` lines; other dialects have one segment.
fn segments(script: &str, dialect: Dialect) -> Vec<Segment<'_>> {
    let whole = Segment {
        start: 0,
        end: script.len(),
        line: 1,
        delimiter: None,
    };
    if dialect != Dialect::MySql || !contains_ignore_case(script, "delimiter") {
        return vec![whole];
    }
    let mut segments = Vec::new();
    let mut current = Segment { end: 0, ..whole };
    let mut offset = 0;
    for (index, line) in script.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        let is_directive = words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("delimiter"));
        let next_offset = offset + line.len();
        if is_directive {
            if let Some(delimiter) = words.next() {
                current.end = offset;
                segments.push(current);
                current = Segment {
                    start: next_offset,
                    end: next_offset,
                    line: index as u32 + 2,
                    delimiter: (delimiter != ";").then_some(delimiter),
                };
            }
        }
        offset = next_offset;
    }
    current.end = script.len();
    segments.push(current);
    segments
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}
