//! The streaming splitter: statements read one at a time from any [`Read`], holding only
//! the statement being collected and a read buffer (never the script, never a token list).

use std::io::Read;

use super::scan::{is_space, Kind, Lexer, Stop};
use super::{Dialect, SplitError, Statement};

/// How many leading words a [`Statement`] keeps for classification.
const KEYWORDS_KEPT: usize = 6;

/// The smallest read; reads grow with the token being scanned (see [`Statements::fill`]).
const CHUNK: usize = 64 * 1024;

/// A statement at least this long that fills the buffer from its start is handed over as
/// the buffer itself rather than copied (the copy would double the peak for a huge one).
const TAKE_WHOLE: usize = 1 << 20;

/// Statements read from a script one at a time: an iterator of
/// `Result<Statement, SplitError>` that stops after the first error.
///
/// Semicolons inside strings, quoted identifiers, comments and dollar quotes do not split;
/// neither do those inside `BEGIN … END` bodies of triggers, functions and procedures. For
/// MySQL, `DELIMITER xx` lines change the delimiter as the mysql client does.
///
/// Memory: the statement being collected, plus a read buffer of 64 KiB or, while a single
/// token (a long string or comment) is being read, up to that token's length again. The
/// input must be UTF-8; an invalid byte is an error at its position.
///
/// ```
/// use upgrader::sql::{Dialect, Statements};
/// let script = "CREATE TABLE t (x INT);\nINSERT INTO t VALUES (1);";
/// let texts: Vec<String> = Statements::new(script.as_bytes(), Dialect::Sqlite)
///     .map(|statement| statement.map(|s| s.text))
///     .collect::<Result<_, _>>()
///     .unwrap();
/// assert_eq!(texts, ["CREATE TABLE t (x INT)", "INSERT INTO t VALUES (1)"]);
/// ```
pub struct Statements<R> {
    reader: R,
    lexer: Lexer,
    max: usize,
    limit_name: Option<String>,
    chunk: usize,
    /// Input from absolute offset `base` on.
    buf: Vec<u8>,
    base: usize,
    /// Where the next token starts (absolute).
    pos: usize,
    eof: bool,
    /// The input before this offset is checked UTF-8.
    valid: usize,
    /// Where the input stops being UTF-8.
    bad: Option<usize>,
    /// Line and column of absolute offset `counted`.
    counted: usize,
    line: u32,
    column: u32,
    /// The `DELIMITER` in force (`None`: `;`).
    delimiter: Option<Box<[u8]>>,
    lines: Lines,
    pending: Option<Pending>,
    /// Where an open `/*!` hint began, while no statement has begun since: a statement that
    /// begins inside it begins there.
    hint_start: Option<usize>,
    /// What [`Statements::window`] said, until input is read or a directive is applied
    /// (it is asked before every token).
    window: Option<(usize, bool)>,
    done: bool,
}

/// How far MySQL input has been looked through for `DELIMITER` lines (the mysql client
/// reads them wherever a line starts, even inside a string, and so does the splitter).
#[derive(Debug, Default)]
struct Lines {
    /// Absolute offset up to which no directive starts.
    pos: usize,
    /// `pos` is the start of a line that is not classified yet.
    at_start: bool,
    directive: Option<Directive>,
}

#[derive(Debug)]
struct Directive {
    /// Where the directive line starts (the segment before it ends there).
    start: usize,
    /// Where the line after it starts.
    next: usize,
    delimiter: Option<Box<[u8]>>,
}

/// What a line start turned out to be.
enum LineStart {
    Unknown,
    Plain,
    Directive {
        delimiter: Option<Box<[u8]>>,
        len: usize,
    },
}

impl<'a> Statements<&'a [u8]> {
    /// Statements of a script held in memory.
    pub fn from_str(script: &'a str, dialect: Dialect) -> Self {
        Statements::new(script.as_bytes(), dialect).size_hint(script.len() as u64)
    }
}

impl<R: Read> Statements<R> {
    /// Statements read from `reader` (unbuffered is fine: it is read in large pieces).
    pub fn new(reader: R, dialect: Dialect) -> Self {
        Statements {
            reader,
            lexer: Lexer::new(dialect),
            max: usize::MAX,
            limit_name: None,
            chunk: CHUNK,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            eof: false,
            valid: 0,
            bad: None,
            counted: 0,
            line: 1,
            column: 1,
            delimiter: None,
            lines: Lines {
                at_start: true,
                ..Lines::default()
            },
            pending: None,
            hint_start: None,
            window: None,
            done: false,
        }
    }

    /// Refuses a statement longer than `bytes` (its text as it would be sent), naming the
    /// limit in the error as `name` (for example "the server's max_allowed_packet"). The
    /// statement is still read to its end, without being kept, so that the error gives its
    /// size.
    pub fn max_statement(mut self, bytes: usize, name: impl Into<String>) -> Self {
        self.max = bytes;
        self.limit_name = Some(name.into()).filter(|name| !name.is_empty());
        self
    }

    /// The input is about `bytes` long (a file's length, a string's): reads are sized to
    /// it instead of the usual 64 KiB, whose buffer is zeroed before each read, which a
    /// run of a thousand small scripts paid a thousand times. A wrong hint costs only
    /// more, smaller reads.
    pub fn size_hint(mut self, bytes: u64) -> Self {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.chunk = bytes.saturating_add(1).clamp(1024, CHUNK);
        self
    }

    /// The smallest read (tests use tiny ones to cut the input everywhere).
    #[cfg(test)]
    pub(crate) fn read_size(mut self, bytes: usize) -> Self {
        self.chunk = bytes.max(1);
        self
    }

    fn error(&mut self, at: usize, message: impl Into<String>) -> SplitError {
        let (line, column) = self.position(at);
        SplitError {
            line,
            column,
            message: message.into(),
        }
    }

    /// Line and column of absolute offset `at` (which only moves forward).
    fn position(&mut self, at: usize) -> (u32, u32) {
        let from = self.counted.saturating_sub(self.base);
        let to = at.saturating_sub(self.base).clamp(from, self.buf.len());
        let bytes = &self.buf[from..to];
        let chars = |bytes: &[u8]| bytes.iter().filter(|&&b| (b as i8) >= -0x40).count() as u32;
        match memchr::memrchr(b'\n', bytes) {
            Some(last) => {
                let lines = memchr::memchr_iter(b'\n', bytes).count() as u32;
                self.line = self.line.saturating_add(lines);
                self.column = 1u32.saturating_add(chars(&bytes[last + 1..]));
            }
            None => self.column = self.column.saturating_add(chars(bytes)),
        }
        self.counted = self.base + to;
        (self.line, self.column)
    }

    /// The stretch the lexer may look at: up to where the input is read and checked, or to
    /// the next `DELIMITER` line; and whether that is a hard end (of input or segment).
    fn window(&mut self) -> (usize, bool) {
        if let Some(window) = self.window {
            return window;
        }
        let window = self.compute_window();
        self.window = Some(window);
        window
    }

    fn compute_window(&mut self) -> (usize, bool) {
        let limit = self.valid;
        let at_end = self.eof && self.bad.is_none() && limit == self.base + self.buf.len();
        if self.lexer.dialect != Dialect::MySql {
            return (limit, at_end);
        }
        while self.lines.directive.is_none() {
            let s = &self.buf[self.lines.pos - self.base..limit - self.base];
            if self.lines.at_start {
                match line_start(s, at_end) {
                    LineStart::Unknown => break,
                    LineStart::Plain => self.lines.at_start = false,
                    LineStart::Directive { delimiter, len } => {
                        self.lines.directive = Some(Directive {
                            start: self.lines.pos,
                            next: self.lines.pos + len,
                            delimiter,
                        });
                    }
                }
            } else if let Some(i) = memchr::memchr(b'\n', s) {
                self.lines.pos += i + 1;
                self.lines.at_start = true;
            } else {
                self.lines.pos = limit;
                break;
            }
        }
        match &self.lines.directive {
            Some(directive) => (directive.start, true),
            None if self.lines.at_start => (self.lines.pos, false),
            None => (limit, at_end),
        }
    }

    /// Reads more input, first dropping what no longer needs keeping. A read is at least as
    /// long as the unfinished token, so rescanning a long token costs at most twice its length.
    fn fill(&mut self) -> Result<(), SplitError> {
        self.window = None;
        if let Some(bad) = self.bad {
            return Err(self.error(bad, "invalid UTF-8"));
        }
        if self.eof {
            // Not reached: at the end of the input the window is a hard end.
            return Err(self.error(self.pos, "unexpected end of input"));
        }
        let mut keep = self.pos.min(self.valid);
        if self.lexer.dialect == Dialect::MySql {
            keep = keep.min(self.lines.pos);
        }
        if let Some(pending) = self.pending.as_ref().filter(|p| !p.oversize) {
            keep = keep.min(pending.start);
        }
        if let Some(hint) = self.hint_start {
            keep = keep.min(hint);
        }
        self.position(keep);
        if keep > self.base {
            self.buf.drain(..keep - self.base);
            self.base = keep;
        }
        let want = self.chunk.max(self.base + self.buf.len() - self.pos);
        let mut filled = self.buf.len();
        self.buf.resize(filled + want, 0);
        while filled < self.buf.len() {
            match self.reader.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(filled);
                    return Err(self.error(self.pos, format!("cannot read the script: {e}")));
                }
            }
        }
        self.buf.truncate(filled);
        let checked = &self.buf[self.valid - self.base..];
        match std::str::from_utf8(checked) {
            Ok(_) => self.valid = self.base + self.buf.len(),
            Err(e) => {
                self.valid += e.valid_up_to();
                if e.error_len().is_some() || self.eof {
                    self.bad = Some(self.valid);
                }
            }
        }
        Ok(())
    }

    fn next_statement(&mut self) -> Result<Option<Statement>, SplitError> {
        loop {
            let (limit, at_end) = self.window();
            if self.pos >= limit {
                if !at_end {
                    self.fill()?;
                    continue;
                }
                if self.lexer.hint {
                    return Err(self.error(limit, "Unexpected EOF while in a multi-line comment"));
                }
                let finished = match self.pending.take() {
                    Some(pending) => Some(self.finish(pending, limit)?),
                    None => None,
                };
                self.hint_start = None;
                self.window = None;
                match self.lines.directive.take() {
                    Some(directive) => {
                        self.delimiter = directive.delimiter;
                        self.pos = directive.next;
                        self.lines.pos = directive.next;
                        self.lines.at_start = true;
                        self.lexer = Lexer::new(self.lexer.dialect);
                        if finished.is_some() {
                            return Ok(finished);
                        }
                    }
                    None => {
                        self.done = true;
                        return Ok(finished);
                    }
                }
                continue;
            }
            let saved = self.lexer;
            let window = &self.buf[self.pos - self.base..limit - self.base];
            let (kind, len) = match self.lexer.lex(window, at_end) {
                Ok(token) => token,
                Err(Stop::More) => {
                    self.lexer = saved;
                    self.fill()?;
                    continue;
                }
                Err(Stop::Error(at, message)) => return Err(self.error(self.pos + at, message)),
            };
            let start = self.pos;
            if kind == Kind::Blank {
                if self.lexer.hint != saved.hint {
                    self.hint_start = (self.lexer.hint && self.pending.is_none()).then_some(start);
                }
                self.pos += len;
                continue;
            }
            let delimiter_len = match &self.delimiter {
                None => (kind == Kind::Semi).then_some(1),
                Some(delimiter) => {
                    if window.len() < delimiter.len() && !at_end {
                        self.lexer = saved;
                        self.fill()?;
                        continue;
                    }
                    window.starts_with(delimiter).then_some(delimiter.len())
                }
            };
            let at_depth_zero = self.pending.as_ref().is_none_or(|p| p.depth == 0);
            if let (Some(delimiter_len), true) = (delimiter_len, at_depth_zero) {
                self.pos = start + delimiter_len;
                self.lexer = saved;
                self.lexer.prev = Kind::Other;
                self.hint_start = None;
                match self.pending.take() {
                    Some(pending) => return self.finish(pending, start).map(Some),
                    None => continue,
                }
            }
            if self.pending.is_none() {
                let at = self.hint_start.take().unwrap_or(start);
                let (line, column) = self.position(at);
                self.pending = Some(Pending::new(at, line, column));
            }
            let max = self.max;
            let token = &self.buf[start - self.base..start + len - self.base];
            let pending = self.pending.as_mut().expect("just set");
            pending.see(kind, token);
            pending.last = start + len;
            if pending.last - pending.start > max {
                pending.oversize = true;
            }
            self.pos = start + len;
        }
    }

    /// The statement from `pending` to `end` (where its delimiter or segment starts).
    fn finish(&mut self, pending: Pending, end: usize) -> Result<Statement, SplitError> {
        // An oversize statement is no longer in the buffer: only its size is known.
        let len = if pending.oversize {
            pending.last - pending.start
        } else {
            // Trimmed of what the lexer calls space, and only that: a Unicode space is a
            // token to it (and to the database), so a statement of one is kept, not
            // emptied.
            let bytes = &self.buf[pending.start - self.base..end - self.base];
            bytes
                .iter()
                .rposition(|&b| !is_space(b))
                .map_or(0, |last| last + 1)
        };
        if pending.oversize || len > self.max {
            let limit = match &self.limit_name {
                Some(name) => format!("{name} ({} bytes)", self.max),
                None => format!("the limit of {} bytes", self.max),
            };
            return Err(SplitError {
                line: pending.line,
                column: pending.column,
                message: format!("statement of {len} bytes is larger than {limit}"),
            });
        }
        let text = if pending.start == self.base && len >= TAKE_WHOLE {
            self.position(end);
            let rest = self.buf.split_off(end - self.base);
            let mut whole = std::mem::replace(&mut self.buf, rest);
            self.base = end;
            whole.truncate(len);
            // Reads grow the buffer by doubling; give back the slack (cheap for a large
            // allocation, which is moved by remapping, not copying).
            whole.shrink_to_fit();
            String::from_utf8(whole)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
        } else {
            let start = pending.start - self.base;
            String::from_utf8_lossy(&self.buf[start..start + len]).into_owned()
        };
        let mut keywords = pending.keywords;
        keywords.shrink_to_fit();
        Ok(Statement {
            text,
            line: pending.line,
            column: pending.column,
            keywords,
        })
    }
}

impl<R: Read> Iterator for Statements<R> {
    type Item = Result<Statement, SplitError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_statement() {
            Ok(Some(statement)) => Some(Ok(statement)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// Whether the line at the start of `s` is a `DELIMITER xx` directive, as the mysql client
/// reads it (first word `delimiter` in any case, then the new delimiter; `;` restores the
/// default). `Unknown` when more input is needed to tell.
fn line_start(s: &[u8], end: bool) -> LineStart {
    let more = || {
        if end {
            LineStart::Plain
        } else {
            LineStart::Unknown
        }
    };
    let blank = |b: u8| is_space(b) && b != b'\n';
    let mut i = s.iter().position(|&b| !blank(b)).unwrap_or(s.len());
    if i == s.len() {
        return more();
    }
    const WORD: &[u8] = b"delimiter";
    let have = (s.len() - i).min(WORD.len());
    if !s[i..i + have].eq_ignore_ascii_case(&WORD[..have]) {
        return LineStart::Plain;
    }
    if have < WORD.len() {
        return more();
    }
    i += WORD.len();
    match s.get(i) {
        None => return more(),
        Some(&b) if blank(b) => {}
        Some(_) => return LineStart::Plain,
    }
    while s.get(i).is_some_and(|&b| blank(b)) {
        i += 1;
    }
    match s.get(i) {
        None => return more(),
        Some(b'\n') => return LineStart::Plain,
        Some(_) => {}
    }
    let word_start = i;
    while s.get(i).is_some_and(|&b| !is_space(b)) {
        i += 1;
    }
    let len = match memchr::memchr(b'\n', &s[i..]) {
        Some(newline) => i + newline + 1,
        None if end => s.len(),
        None => return LineStart::Unknown,
    };
    let word = &s[word_start..i];
    LineStart::Directive {
        delimiter: (word != b";").then(|| word.into()),
        len,
    }
}

/// A statement being collected.
struct Pending {
    start: usize,
    line: u32,
    column: u32,
    keywords: String,
    kept: usize,
    first_is_create: bool,
    /// Nesting of `BEGIN`/`CASE` … `END` inside a routine or trigger body.
    depth: u32,
    /// The statement defines a trigger, function, procedure or event, so `BEGIN` opens a body.
    body: bool,
    after_end: bool,
    /// Where its last token ends (absolute).
    last: usize,
    /// Longer than the limit: no longer kept, only read to its end.
    oversize: bool,
}

impl Pending {
    fn new(start: usize, line: u32, column: u32) -> Self {
        Pending {
            start,
            line,
            column,
            keywords: String::new(),
            kept: 0,
            first_is_create: false,
            depth: 0,
            body: false,
            after_end: false,
            last: start,
            oversize: false,
        }
    }

    fn see(&mut self, kind: Kind, token: &[u8]) {
        let after_end = std::mem::take(&mut self.after_end);
        if kind != Kind::Word {
            return;
        }
        let is = |word: &str| token.eq_ignore_ascii_case(word.as_bytes());
        if self.kept < KEYWORDS_KEPT {
            if self.first_is_create
                && (is("TRIGGER") || is("FUNCTION") || is("PROCEDURE") || is("EVENT"))
            {
                self.body = true;
            }
            if self.kept == 0 {
                self.first_is_create = is("CREATE");
            } else {
                self.keywords.push(' ');
            }
            let start = self.keywords.len();
            self.keywords.push_str(&String::from_utf8_lossy(token));
            self.keywords[start..].make_ascii_uppercase();
            self.kept += 1;
        }
        if !self.body {
            return;
        }
        if is("BEGIN") {
            self.depth += 1;
        } else if is("CASE") {
            if self.depth > 0 && !after_end {
                self.depth += 1;
            }
        } else if is("END") {
            if self.depth > 0 {
                self.depth -= 1;
                self.after_end = true;
            }
        } else if after_end && (is("IF") || is("LOOP") || is("WHILE") || is("REPEAT") || is("FOR"))
        {
            // `END IF`, `END LOOP`…: their openings were not counted, so neither is this.
            self.depth += 1;
        }
    }
}
