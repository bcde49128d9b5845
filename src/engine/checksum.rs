//! A step's checksum, recorded in `upgrader_history.checksum`: SHA-256 over its actions in
//! order, each framed so that no two different steps hash alike (`sql\0<text>\0`,
//! `plugin\0<library>\0<method>\0`). Pure: it sees only what it is fed, and a script too
//! large to keep is fed as it is read.

use sha2::{Digest, Sha256};

/// Builds one step's checksum, action by action.
#[derive(Default)]
pub(crate) struct StepChecksum {
    hasher: Sha256,
}

impl StepChecksum {
    /// Starts an SQL action; its text follows through [`StepChecksum::sql_text`] (once or
    /// in pieces), then [`StepChecksum::end_sql`].
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

/// The checksum of a step whose actions are all known: SQL texts and plugin calls (what
/// `verify` will compare a recorded checksum with).
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "verify (issue 13) is its first caller")
)]
pub(crate) fn step_checksum<'a>(actions: impl IntoIterator<Item = Part<'a>>) -> String {
    let mut checksum = StepChecksum::default();
    for action in actions {
        match action {
            Part::Sql(text) => {
                checksum.begin_sql();
                checksum.sql_text(text);
                checksum.end_sql();
            }
            Part::Plugin { library, method } => checksum.plugin(library, method),
        }
    }
    checksum.finish()
}

/// One action as the checksum sees it.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "verify (issue 13) is its first user")
)]
pub(crate) enum Part<'a> {
    /// An SQL action's whole text (a file's bytes, or the inline text).
    Sql(&'a [u8]),
    /// A plugin call.
    Plugin {
        /// The library's bare name.
        library: &'a str,
        /// The step's name in it.
        method: &'a str,
    },
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_stable_and_framed() {
        // Recorded in databases: this value must never change.
        assert_eq!(
            step_checksum([Part::Sql(b"SELECT 1;")]),
            hex(&Sha256::digest(b"sql\0SELECT 1;\0"))
        );
        let both = step_checksum([
            Part::Sql(b"UPDATE t SET a = 1;"),
            Part::Plugin {
                library: "steps",
                method: "fill",
            },
        ]);
        assert_eq!(
            both,
            hex(&Sha256::digest(
                b"sql\0UPDATE t SET a = 1;\0plugin\0steps\0fill\0"
            ))
        );
        // Framing: moving bytes from one action to the next changes the checksum.
        assert_ne!(
            step_checksum([Part::Sql(b"ab"), Part::Sql(b"c")]),
            step_checksum([Part::Sql(b"a"), Part::Sql(b"bc")])
        );
        // Fed in pieces, the same as fed whole.
        let mut pieces = StepChecksum::default();
        pieces.begin_sql();
        for piece in [&b"SELECT"[..], b" 1", b";"] {
            pieces.sql_text(piece);
        }
        pieces.end_sql();
        assert_eq!(pieces.finish(), step_checksum([Part::Sql(b"SELECT 1;")]));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
