//! A step's checksum, recorded in `upgrader_history.checksum` and compared by `verify`:
//! SHA-256 over the step's name and range and then, in order, the tokens of its
//! statements (as the SQL lexer reads them, so whitespace and comments never count) and
//! its plugin calls (library and method). Every field is tagged and length-prefixed, so
//! no two different steps hash alike. Pure: it sees only what it is fed.
//!
//! Databases recorded before checksums were token-based hold [`legacy_checksum`]s (over
//! the raw text): `verify` accepts a step whose recorded checksum is either.

use sha2::{Digest, Sha256};

use crate::sql::{self, Dialect};

/// Builds one step's checksum: [`StepChecksum::new`], then its statements and plugin
/// calls in order.
pub(crate) struct StepChecksum {
    hasher: Sha256,
}

impl StepChecksum {
    /// A step's checksum, starting from its name and its `from`/`to` range (none for an
    /// install, whose range is only the code version it installs).
    pub(crate) fn new(name: &str, range: Option<(&str, &str)>) -> StepChecksum {
        let mut checksum = StepChecksum {
            hasher: Sha256::new(),
        };
        checksum.field(b'n', name.as_bytes());
        if let Some((from, to)) = range {
            checksum.field(b'f', from.as_bytes());
            checksum.field(b't', to.as_bytes());
        }
        checksum
    }

    fn field(&mut self, tag: u8, bytes: &[u8]) {
        self.hasher.update([tag]);
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// One statement of an SQL action: its tokens.
    pub(crate) fn statement(&mut self, text: &str, dialect: Dialect) {
        for token in sql::significant_tokens(text, dialect) {
            self.field(b'k', token.as_bytes());
        }
        self.hasher.update([b';']);
    }

    /// A plugin action.
    pub(crate) fn plugin(&mut self, library: &str, method: &str) {
        self.field(b'l', library.as_bytes());
        self.field(b'm', method.as_bytes());
    }

    /// The checksum, as lower-case hex.
    pub(crate) fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

/// The checksum earlier databases recorded: SHA-256 over the actions' raw text
/// (`sql\0<text>\0`, `plugin\0<library>\0<method>\0`).
#[derive(Default)]
pub(crate) struct LegacyChecksum {
    hasher: Sha256,
}

impl LegacyChecksum {
    /// Starts an SQL action; its text follows through [`LegacyChecksum::sql_text`].
    pub(crate) fn begin_sql(&mut self) {
        self.hasher.update(b"sql\0");
    }

    /// Some of the SQL action's text, in order.
    pub(crate) fn sql_text(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Ends an SQL action.
    pub(crate) fn end_sql(&mut self) {
        self.hasher.update(b"\0");
    }

    /// A plugin action.
    pub(crate) fn plugin(&mut self, library: &str, method: &str) {
        self.hasher.update(b"plugin\0");
        self.hasher.update(library.as_bytes());
        self.hasher.update(b"\0");
        self.hasher.update(method.as_bytes());
        self.hasher.update(b"\0");
    }

    /// The checksum, as lower-case hex.
    pub(crate) fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

use crate::hex::hex;

#[cfg(test)]
mod tests {
    use super::*;

    fn of(name: &str, range: Option<(&str, &str)>, script: &str, plugin: bool) -> String {
        let mut checksum = StepChecksum::new(name, range);
        for statement in sql::split(script, Dialect::Postgres).unwrap() {
            checksum.statement(&statement.text, Dialect::Postgres);
        }
        if plugin {
            checksum.plugin("steps", "fill");
        }
        checksum.finish()
    }

    #[test]
    fn whitespace_and_comments_do_not_count_but_everything_else_does() {
        let range = Some(("1.0.0", "1.1.0"));
        let base = of("add", range, "UPDATE t SET a = 1;\nSELECT 'x  y';", false);
        assert_eq!(base.len(), 64);
        for same in [
            "UPDATE t SET a = 1;\nSELECT 'x  y';\n\n",
            "-- a comment\nUPDATE  t\n  SET a=1 ; /* why */ SELECT 'x  y'",
            "UPDATE t SET a = 1;SELECT 'x  y';",
        ] {
            assert_eq!(of("add", range, same, false), base, "{same:?}");
        }
        for different in [
            "UPDATE t SET a = 2;\nSELECT 'x  y';",
            "UPDATE t SET a = 1;\nSELECT 'x y';",
            "update t SET a = 1;\nSELECT 'x  y';",
            "UPDATE t SET a = 1 SELECT 'x  y';",
        ] {
            assert_ne!(of("add", range, different, false), base, "{different:?}");
        }
        let script = "UPDATE t SET a = 1;\nSELECT 'x  y';";
        assert_ne!(of("other", range, script, false), base, "the name counts");
        assert_ne!(
            of("add", Some(("1.0.0", "1.2.0")), script, false),
            base,
            "the range counts"
        );
        assert_ne!(of("add", None, script, false), base);
        assert_ne!(of("add", range, script, true), base, "a plugin call counts");
        // Tokens are framed: moving characters from one token to the next counts.
        assert_ne!(
            of("s", None, "SELECT ab, c", false),
            of("s", None, "SELECT a, bc", false)
        );
    }

    #[test]
    fn legacy_checksums_are_the_ones_recorded_before() {
        // Recorded in databases: this value must never change.
        let mut legacy = LegacyChecksum::default();
        legacy.begin_sql();
        for piece in [&b"UPDATE t "[..], b"SET a = 1;"] {
            legacy.sql_text(piece);
        }
        legacy.end_sql();
        legacy.plugin("steps", "fill");
        assert_eq!(
            legacy.finish(),
            hex(&Sha256::digest(
                b"sql\0UPDATE t SET a = 1;\0plugin\0steps\0fill\0"
            ))
        );
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
