//! SQL scripts split into statements with sqlparser's tokenizer (strings, comments,
//! dollar quotes, trigger bodies and MySQL `DELIMITER` respected), and the guard that
//! inspects each statement before it is sent. Pure: no database here.

pub mod guard;

use sqlparser::dialect::{
    Dialect as ParserDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect,
};
use sqlparser::tokenizer::{Token, Tokenizer};

/// The SQL dialect a statement is read and judged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    MySql,
}

impl Dialect {
    /// The lower-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    fn parser(self) -> Box<dyn ParserDialect> {
        match self {
            Dialect::Sqlite => Box::new(SQLiteDialect {}),
            Dialect::Postgres => Box::new(PostgreSqlDialect {}),
            Dialect::MySql => Box::new(MySqlDialect {}),
        }
    }
}

/// One statement of a script, as written, with where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement text without its delimiter, trimmed.
    pub text: String,
    /// 1-based line in the script where the statement starts.
    pub line: u32,
    /// 1-based column (characters) where the statement starts.
    pub column: u32,
    /// The first significant words, upper-cased and separated by single spaces, for
    /// classification (one string rather than a list: a run holds every statement of its
    /// plan, and this keeps each small).
    pub keywords: String,
}

/// A script that cannot be split (for example an unterminated string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct SplitError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What the tokenizer said.
    pub message: String,
}

/// The tables (and other relations) a statement names, each as its name parts
/// (`["shop", "orders"]` for `shop.orders`); `None` when the parser cannot read the
/// statement, so that callers fall back to a cruder look at its words.
pub fn relations(text: &str, dialect: Dialect) -> Option<Vec<Vec<String>>> {
    use std::ops::ControlFlow;
    let parsed = sqlparser::parser::Parser::parse_sql(dialect.parser().as_ref(), text).ok()?;
    let mut found = Vec::new();
    let _ = sqlparser::ast::visit_relations(&parsed, |name| {
        found.push(
            name.0
                .iter()
                .filter_map(|part| part.as_ident().map(|ident| ident.value.clone()))
                .collect(),
        );
        ControlFlow::<()>::Continue(())
    });
    Some(found)
}

/// Every word and quoted identifier of a statement, unquoted (empty when it cannot be
/// tokenized).
pub fn words(text: &str, dialect: Dialect) -> Vec<String> {
    let parser = dialect.parser();
    Tokenizer::new(parser.as_ref(), text)
        .tokenize()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|token| match token {
            Token::Word(word) => Some(word.value),
            _ => None,
        })
        .collect()
}

/// The `ENGINE = name` table option of a MySQL `CREATE`/`ALTER TABLE` (outside the
/// column list, so a column called `engine` is not taken for it).
pub fn mysql_engine_option(text: &str) -> Option<String> {
    let tokens = Tokenizer::new(&MySqlDialect {}, text).tokenize().ok()?;
    let mut significant = tokens
        .into_iter()
        .filter(|token| !matches!(token, Token::Whitespace(_)));
    let mut depth = 0usize;
    while let Some(token) = significant.next() {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(word) if depth == 0 && word.value.eq_ignore_ascii_case("ENGINE") => {
                let value = match significant.next()? {
                    Token::Eq => significant.next()?,
                    other => other,
                };
                return match value {
                    Token::Word(word) => Some(word.value),
                    Token::SingleQuotedString(name) => Some(name),
                    _ => None,
                };
            }
            _ => {}
        }
    }
    None
}

/// How many leading words a [`Statement`] keeps for classification.
const KEYWORDS_KEPT: usize = 6;

/// Splits a script into statements.
///
/// Semicolons inside strings, quoted identifiers, comments and dollar quotes do not split;
/// neither do those inside `BEGIN … END` bodies of triggers, functions and procedures. For
/// MySQL, `DELIMITER xx` lines change the delimiter as the mysql client does.
pub fn split(script: &str, dialect: Dialect) -> Result<Vec<Statement>, SplitError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str, dialect: Dialect) -> Vec<String> {
        split(script, dialect)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn semicolons_in_strings_and_comments() {
        let script = "INSERT INTO t VALUES ('a;b'); -- c;d\n/* e; f */ SELECT \"x;y\";\nSELECT 1";
        assert_eq!(
            texts(script, Dialect::Sqlite),
            ["INSERT INTO t VALUES ('a;b')", "SELECT \"x;y\"", "SELECT 1"]
        );
    }

    #[test]
    fn positions() {
        let script = "\n  SELECT 1;\n\nSELECT\n 2;";
        let statements = split(script, Dialect::Sqlite).unwrap();
        assert_eq!((statements[0].line, statements[0].column), (2, 3));
        assert_eq!((statements[1].line, statements[1].column), (4, 1));
        assert_eq!(statements[1].text, "SELECT\n 2");
    }

    #[test]
    fn sqlite_trigger_body() {
        let script = "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE b SET n = n + 1; \
                      UPDATE c SET m = CASE WHEN 1 THEN 2 ELSE 3 END; END;\nSELECT 1;";
        let statements = texts(script, Dialect::Sqlite);
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert!(statements[0].ends_with("END; END"));
    }

    #[test]
    fn begin_transaction_is_not_a_body() {
        assert_eq!(texts("BEGIN; SELECT 1; COMMIT;", Dialect::Sqlite).len(), 3);
    }

    #[test]
    fn postgres_dollar_quotes() {
        let script =
            "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\nSELECT 2;";
        assert_eq!(texts(script, Dialect::Postgres).len(), 2);
    }

    #[test]
    fn mysql_delimiter() {
        let script = "CREATE TABLE a (x int);\nDELIMITER $$\nCREATE PROCEDURE p() BEGIN\n  IF 1 THEN SELECT 1; END IF;\n  SELECT ';';\nEND $$\nDELIMITER ;\nSELECT 3;";
        let statements = split(script, Dialect::MySql).unwrap();
        assert_eq!(statements.len(), 3, "{statements:?}");
        assert!(statements[1].text.starts_with("CREATE PROCEDURE"));
        assert!(statements[1].text.ends_with("END"));
        assert_eq!(statements[1].line, 3);
        assert_eq!(statements[2].line, 8);
    }

    #[test]
    fn mysql_procedure_without_delimiter() {
        let script =
            "CREATE PROCEDURE p() BEGIN IF 1 THEN SELECT 1; END IF; SELECT 2; END; SELECT 3;";
        assert_eq!(texts(script, Dialect::MySql).len(), 2);
    }

    #[test]
    fn only_comments_is_empty() {
        assert!(split("-- nothing\n/* here */\n", Dialect::Sqlite)
            .unwrap()
            .is_empty());
        assert!(split(";;", Dialect::Sqlite).unwrap().is_empty());
    }

    #[test]
    fn unterminated_string_reports_position() {
        let error = split("SELECT 1;\nSELECT 'abc", Dialect::Sqlite).unwrap_err();
        assert_eq!((error.line, error.column), (2, 8));
    }

    #[test]
    fn keywords_are_kept() {
        let statements = split("  create temp table x(a)", Dialect::Sqlite).unwrap();
        assert!(statements[0].keywords.starts_with("CREATE TEMP TABLE "));
    }
}
