//! Database URLs: parsed once, here, and shown only with every password hidden. The one
//! place that knows where a URL keeps its secrets (the userinfo password, `password=`-like
//! query parameters) and scrubs them from driver messages.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A password or other secret: `Debug` and `Display` show `***`, never the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself: for a driver, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the database is, parsed from a URL. `Debug` and `Display` hide every password.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH[?mode=ro|rw|rwc]`.
    Sqlite(SqliteUrl),
    /// `postgres://…` or `postgresql://…`.
    Postgres(ServerUrl),
    /// `mysql://…` or `mariadb://…`.
    MySql(ServerUrl),
}

/// An SQLite database file and how it may be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteUrl {
    /// The database file.
    pub path: PathBuf,
    /// `?mode=`: whether the file may be written or created.
    pub mode: SqliteMode,
}

/// SQLite's `mode=` URL parameter, with SQLite's own meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteMode {
    /// `ro`: read only; `run` refuses before it writes anything.
    ReadOnly,
    /// `rw`: read and write an existing file; a missing file is an error, not created.
    ReadWrite,
    /// `rwc` (the default): read and write, creating the file if needed.
    #[default]
    ReadWriteCreate,
}

impl SqliteMode {
    fn name(self) -> &'static str {
        match self {
            SqliteMode::ReadOnly => "ro",
            SqliteMode::ReadWrite => "rw",
            SqliteMode::ReadWriteCreate => "rwc",
        }
    }
}

/// A PostgreSQL or MySQL URL: the text a driver connects with (password included), and
/// the text shown to people (every password replaced by `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    full: Secret,
    shown: String,
    /// Every password the URL holds, as written and percent-decoded, longest first.
    secrets: Vec<Secret>,
}

impl ServerUrl {
    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        self.full.expose()
    }

    /// `message` with every password of this URL replaced by `***`: for driver
    /// messages, which may echo the URL or a part of it.
    pub fn scrub(&self, message: &str) -> String {
        let mut message = message.to_string();
        for secret in &self.secrets {
            if message.contains(secret.expose()) {
                message = message.replace(secret.expose(), "***");
            }
        }
        message
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServerUrl").field(&self.shown).finish()
    }
}

/// A URL upgrader cannot use. Never holds a password: `shown` is the URL with passwords
/// hidden, only its scheme, or nothing when even that cannot be told apart.
#[derive(Debug, thiserror::Error)]
#[error("database URL{}{shown}: {reason}", if shown.is_empty() { "" } else { " " })]
pub struct UrlError {
    /// The URL with any password hidden (possibly only its scheme, or empty).
    pub shown: String,
    /// What is wrong.
    pub reason: String,
}

/// What a URL should look like, for messages.
const EXPECTED: &str = "expected sqlite://PATH, postgres://USER@HOST[:PORT]/DATABASE or \
                        mysql://USER@HOST[:PORT]/DATABASE";

impl DatabaseUrl {
    /// Parses `sqlite://PATH[?mode=…]`, `postgres://…`, `postgresql://…`, `mysql://…` or
    /// `mariadb://…`. Errors never quote a password, nor anything that might be one.
    pub fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
        let nothing_shown = |reason: String| UrlError {
            shown: String::new(),
            reason,
        };
        if url.trim().is_empty() {
            return Err(nothing_shown(format!("it is empty; {EXPECTED}")));
        }
        // Only text before "://" is certainly a scheme: in `app:S@host/db` or a libpq
        // `host=h password=S`, what precedes the first ':' may be a user or a password.
        let Some((scheme, rest)) = url.split_once(':').filter(|(scheme, _)| is_scheme(scheme))
        else {
            let reason = if looks_like_key_value(url) {
                format!(
                    "key=value connection strings are not accepted (it is not quoted here, as it may hold a password); {EXPECTED}"
                )
            } else {
                format!("no scheme (it is not quoted here, as it may hold a password); {EXPECTED}")
            };
            return Err(nothing_shown(reason));
        };
        let kind = scheme.to_ascii_lowercase();
        if kind == "sqlite" {
            // `sqlite:PATH` is accepted too, as it always was; it holds no password.
            return parse_sqlite(rest.strip_prefix("//").unwrap_or(rest)).map(DatabaseUrl::Sqlite);
        }
        let Some(rest) = rest.strip_prefix("//") else {
            let shown = if is_known(&kind) {
                format!("{scheme}:")
            } else {
                String::new()
            };
            return Err(UrlError {
                shown,
                reason: format!("no // after the scheme; {EXPECTED}"),
            });
        };
        match kind.as_str() {
            "postgres" | "postgresql" => {
                let server = parse_server(url, scheme, rest);
                if let Err(error) = postgres::Config::from_str(url) {
                    return Err(UrlError {
                        reason: server.scrub(&with_causes(&error)),
                        shown: server.shown,
                    });
                }
                Ok(DatabaseUrl::Postgres(server))
            }
            "mysql" | "mariadb" => {
                let server = parse_server(url, scheme, rest);
                if let Err(reason) = super::mysql::check_url(&server) {
                    return Err(UrlError {
                        reason,
                        shown: server.shown,
                    });
                }
                Ok(DatabaseUrl::MySql(server))
            }
            _ => Err(UrlError {
                shown: format!("{scheme}://…"),
                reason: format!("unknown scheme; {EXPECTED}"),
            }),
        }
    }

    /// The default for a project: `sqlite://DIR/upgrader.db`.
    pub fn default_for(project_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(SqliteUrl {
            path: crate::layout::Layout::new(project_dir).default_database(),
            mode: SqliteMode::default(),
        })
    }

    /// Refuses a URL that forbids writing (`sqlite://…?mode=ro`), for commands that write:
    /// `run` calls it before it takes the lock or touches anything.
    pub fn ensure_writable(&self) -> Result<(), UrlError> {
        match self {
            DatabaseUrl::Sqlite(sqlite) if sqlite.mode == SqliteMode::ReadOnly => Err(UrlError {
                shown: self.to_string(),
                reason: READ_ONLY_REFUSAL.into(),
            }),
            _ => Ok(()),
        }
    }
}

/// Why a read-only SQLite URL cannot be upgraded.
pub(super) const READ_ONLY_REFUSAL: &str =
    "mode=ro opens the database read-only, and an upgrade writes to it; remove ?mode=ro to upgrade";

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(sqlite) => {
                write!(f, "sqlite://{}", sqlite.path.display())?;
                if sqlite.mode != SqliteMode::default() {
                    write!(f, "?mode={}", sqlite.mode.name())?;
                }
                Ok(())
            }
            DatabaseUrl::Postgres(server) | DatabaseUrl::MySql(server) => server.fmt(f),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// An error with its causes ("invalid connection string: unknown option `x`").
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    message
}

fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_known(scheme: &str) -> bool {
    matches!(
        scheme,
        "sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb"
    )
}

/// `host=h password=S`: libpq's other connection-string form.
fn looks_like_key_value(text: &str) -> bool {
    let text = text.trim_start();
    let key_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    key_len > 0 && text[key_len..].trim_start().starts_with('=')
}

fn parse_sqlite(rest: &str) -> Result<SqliteUrl, UrlError> {
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let shown = format!("sqlite://{path}");
    let fail = |reason: String| UrlError {
        shown: shown.clone(),
        reason,
    };
    if path.is_empty() {
        return Err(fail("no file path after sqlite://".into()));
    }
    let mut mode = SqliteMode::default();
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key).as_str() {
            "mode" => {
                mode = match decode(value).as_str() {
                    "ro" => SqliteMode::ReadOnly,
                    "rw" => SqliteMode::ReadWrite,
                    "rwc" => SqliteMode::ReadWriteCreate,
                    // The value is not quoted: whatever it is, it is not a mode, and it
                    // might be something misplaced that should stay private.
                    _ => return Err(fail("parameter mode: expected ro, rw or rwc".into())),
                }
            }
            _ => {
                return Err(fail(format!(
                "unknown parameter {}; the only one upgrader knows for SQLite is mode=ro|rw|rwc",
                shown_key(key)
            )))
            }
        }
    }
    Ok(SqliteUrl {
        path: PathBuf::from(path),
        mode,
    })
}

/// A query parameter's name, for a message (a name is never a secret; control
/// characters are escaped).
fn shown_key(key: &str) -> String {
    decode(key).escape_debug().to_string()
}

/// Query parameters whose value is a secret: `password`, `pass`, `pkcs12_pass`,
/// `sslpassword`, … in any case and percent-encoding.
fn is_secret_key(key: &str) -> bool {
    let key = decode(key).to_ascii_lowercase();
    ["pass", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

/// Splits `scheme://[user[:password]@]host…[?query]` just enough to hide its secrets.
/// The userinfo ends at the *last* '@': a password may hold an unencoded '/', '?', '#' or
/// '@', and a later '@' (in the query) then hides more than needed, never less.
fn parse_server(full: &str, scheme: &str, rest: &str) -> ServerUrl {
    let mut secrets = Vec::new();
    let mut shown = format!("{scheme}://");
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    add_secret(&mut secrets, password);
                    shown.push_str(user);
                    shown.push_str(":***@");
                }
                None => {
                    shown.push_str(userinfo);
                    shown.push('@');
                }
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let (before_query, query) = match after_userinfo.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (after_userinfo, None),
    };
    shown.push_str(before_query);
    if let Some(query) = query {
        shown.push('?');
        for (index, pair) in query.split('&').enumerate() {
            if index > 0 {
                shown.push('&');
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if is_secret_key(key) {
                add_secret(&mut secrets, value);
                shown.push_str(key);
                shown.push_str("=***");
            } else {
                shown.push_str(pair);
            }
        }
    }
    secrets.sort_by_key(|secret: &Secret| std::cmp::Reverse(secret.expose().len()));
    secrets.dedup();
    let mut url = ServerUrl {
        full: Secret::new(full),
        shown,
        secrets,
    };
    // The password may appear elsewhere too (as a parameter's value, say).
    let after_scheme = scheme.len() + 3;
    url.shown = format!(
        "{}{}",
        &url.shown[..after_scheme],
        url.scrub(&url.shown[after_scheme..])
    );
    url
}

/// Keeps a secret as written and as decoded (a driver may echo either).
fn add_secret(secrets: &mut Vec<Secret>, raw: &str) {
    for form in [raw.to_string(), decode(raw), decode(&raw.replace('+', " "))] {
        if !form.is_empty() {
            secrets.push(Secret::new(form));
        }
    }
}

/// Percent-decoding; invalid escapes and invalid UTF-8 are kept as they are.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |index: usize| {
            bytes
                .get(index)
                .and_then(|b| (*b as char).to_digit(16))
                .map(|d| d as u8)
        };
        match (bytes[at], hex(at + 1), hex(at + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(high * 16 + low);
                at += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "S3cr3tMark";

    fn sqlite(url: &str) -> SqliteUrl {
        match DatabaseUrl::parse(url).unwrap() {
            DatabaseUrl::Sqlite(sqlite) => sqlite,
            other => panic!("not SQLite: {other}"),
        }
    }

    #[test]
    fn parses_sqlite_urls() {
        assert_eq!(
            sqlite("sqlite:///tmp/x.db").path,
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(sqlite("sqlite://rel/x.db").path, PathBuf::from("rel/x.db"));
        assert_eq!(sqlite("sqlite:rel/x.db").path, PathBuf::from("rel/x.db"));
        assert_eq!(sqlite("sqlite://x.db").mode, SqliteMode::ReadWriteCreate);
        assert_eq!(sqlite("sqlite://x.db?mode=ro").mode, SqliteMode::ReadOnly);
        assert_eq!(sqlite("sqlite://x.db?mode=rw").mode, SqliteMode::ReadWrite);
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db?mode=ro")
                .unwrap()
                .to_string(),
            "sqlite://x.db?mode=ro"
        );
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("sqlite://?mode=ro").is_err());
    }

    #[test]
    fn refuses_unknown_sqlite_parameters_by_name() {
        let error = DatabaseUrl::parse("sqlite:///x.db?cache=shared")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "database URL sqlite:///x.db: unknown parameter cache; the only one upgrader knows for SQLite is mode=ro|rw|rwc"
        );
        let error = DatabaseUrl::parse("sqlite:///x.db?mode=memory")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("parameter mode: expected ro, rw or rwc"),
            "{error}"
        );
        let error = DatabaseUrl::parse(&format!("sqlite:///x.db?password={MARK}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown parameter password"), "{error}");
        assert!(!error.contains(MARK), "{error}");
    }

    #[test]
    fn read_only_sqlite_is_not_writable() {
        let url = DatabaseUrl::parse("sqlite:///x.db?mode=ro").unwrap();
        let error = url.ensure_writable().unwrap_err().to_string();
        assert!(
            error.starts_with("database URL sqlite:///x.db?mode=ro: mode=ro"),
            "{error}"
        );
        assert!(DatabaseUrl::parse("sqlite:///x.db?mode=rw")
            .unwrap()
            .ensure_writable()
            .is_ok());
    }

    #[test]
    fn parses_server_urls() {
        assert!(matches!(
            DatabaseUrl::parse("mariadb://u@h/db").unwrap(),
            DatabaseUrl::MySql(_)
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://u@h:5433/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(DatabaseUrl::parse("oracle://x").is_err());
        let error = DatabaseUrl::parse("postgres://u@h/db?frobnicate=1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("frobnicate"), "{error}");
    }

    /// Every way a password reaches a URL, and every path by which a URL is shown.
    #[test]
    fn never_shows_a_password() {
        let valid = [
            format!("postgres://me:{MARK}@h:5432/db"),
            format!("postgres://me@h/db?password={MARK}"),
            format!("postgres://me@h/db?sslmode=disable&password={MARK}"),
            format!("postgres://me@h/db?%70assword={MARK}"),
            format!("postgresql://me:{MARK}%40x@h/db"),
            format!("postgres://me:{MARK}/x?y@h/db"),
            format!("mysql://me:{MARK}@h:3306/db"),
            format!("mysql://me@h/db?password={MARK}"),
        ];
        for url in &valid {
            let parsed = DatabaseUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            for shown in [parsed.to_string(), format!("{parsed:?}")] {
                assert!(!shown.contains(MARK), "{url} shown as {shown}");
                assert!(shown.contains("***"), "{url} shown as {shown}");
            }
            if let DatabaseUrl::Postgres(server) | DatabaseUrl::MySql(server) = &parsed {
                // A driver may echo the URL as written or decoded.
                let echoed = format!("failed for {url} ({})", decode(url));
                assert!(!server.scrub(&echoed).contains(MARK), "{url}");
                assert!(server.expose().contains(MARK));
            }
        }
        let invalid = [
            format!("postgres:/app:{MARK}@h/db"),
            format!("postgres:app:{MARK}@h/db"),
            format!("app:{MARK}@host/db"),
            format!("host=h user=app password={MARK}"),
            format!("host=h password='{MARK} x'"),
            MARK.to_string(),
            format!("mysql://me:{MARK}@h:notaport/db"),
            format!("mysql://me:{MARK}@h/db?frobnicate={MARK}"),
            format!("postgres://me:{MARK}@h:notaport/db"),
            format!("postgres://me@h/db?password={MARK}&port=x{MARK}"),
            format!("sqlite:///x.db?password={MARK}"),
            format!("sqlite:///x.db?mode={MARK}"),
            format!("oracle://me:{MARK}@h/db"),
            format!("mariadb://me@h/db?pass={MARK}"),
        ];
        for url in &invalid {
            let error = DatabaseUrl::parse(url).expect_err(url).to_string();
            assert!(!error.contains(MARK), "{url}: {error}");
            assert!(error.starts_with("database URL"), "{url}: {error}");
        }
        let error = DatabaseUrl::parse(&format!("host=h password={MARK}"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("key=value connection strings are not accepted"),
            "{error}"
        );
        let error = DatabaseUrl::parse(&format!("postgres:/app:{MARK}@h/db"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("database URL postgres:: no // after the scheme"),
            "{error}"
        );
        let error = DatabaseUrl::parse(&format!("app:{MARK}@host/db"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("database URL: no // after the scheme"),
            "{error}"
        );
    }

    #[test]
    fn shows_the_rest_of_the_url() {
        let url =
            DatabaseUrl::parse("postgres://me:pw@h:5432/db?sslmode=disable&password=x").unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://me:***@h:5432/db?sslmode=disable&password=***"
        );
        // Drivers know `password` only, but any spelling is hidden.
        let server = parse_server(
            "mysql://h/db?PassWord=xyzzy&PKCS12_PASS=plugh",
            "mysql",
            "h/db?PassWord=xyzzy&PKCS12_PASS=plugh",
        );
        assert_eq!(
            server.to_string(),
            "mysql://h/db?PassWord=***&PKCS12_PASS=***"
        );
        assert_eq!(format!("{}", Secret::new("x")), "***");
        assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(decode("a%40b%2"), "a@b%2");
        assert_eq!(decode("%zz"), "%zz");
    }
}
