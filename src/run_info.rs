//! Who and when, as upgrader writes them down: this host's name and the time in lock
//! records, history rows and journals, and the stamp in backup file names. Parts and the
//! engine alike take them from here.

use std::time::SystemTime;

/// The current time, RFC 3339 in UTC with milliseconds.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// This host's name (looked up once per process).
pub(crate) fn host() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
        .clone()
}

/// This process's id, asked once (glibc asks the kernel every time): a run writes it in
/// every history row.
pub(crate) fn pid() -> i64 {
    static PID: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *PID.get_or_init(|| i64::from(std::process::id()))
}

/// `20261202T045722Z`: `at` to the second, sortable, and a valid file name everywhere.
pub(crate) fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
}

/// Whether `part` is a [`stamp`].
pub(crate) fn is_stamp(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit)
}
