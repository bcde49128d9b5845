//! Named failpoints for the crash tests, compiled only with the `failpoints` feature:
//! without it [`failpoint!`](crate::failpoint!) expands to nothing and this module is
//! empty.
//!
//! `UPGRADER_FAILPOINTS` says which points act and how: `;`-separated `NAME[#N]=ACTION`,
//! where `#N` acts at the Nth time the process reaches the point (counted from 1; every
//! time without it) and ACTION is
//! - `abort`: the process dies on the spot (`std::process::abort`): no destructor runs,
//!   nothing is flushed, the operating system drops its file locks and connections, as
//!   after `kill -9`;
//! - `error`: the point returns an error (`failpoint NAME`), as a failing call there
//!   would (at a point where nothing can fail, it is ignored);
//! - `pause(MS)`: the process sleeps MS milliseconds there.
//!
//! A point that acts says so on stderr first (`upgrader: failpoint NAME#N: ACTION`), so
//! a test can tell that the process died where it meant it to.
//!
//! Not the `fail` crate: it has no action that ends the process without unwinding (its
//! `panic` runs destructors, the lock guard's among them, which `kill -9` never does).
//!
//! The points (see ARCHITECTURE.md for where each sits in a run): `lock-file-written`,
//! `database-locked`, `backup-made`, `before-statement`, `after-statement`, `after-step`,
//! `before-commit`, `after-commit`, `before-lock-cleared`, `unlock-before-remove`,
//! `unlock-after-remove`, and in code installs (and their recovery) `install-journal`
//! (after each journal record) and `install-move` (after each file moved or directory
//! made).

/// Reaches the failpoint `$name`: with `UPGRADER_FAILPOINTS` naming it, aborts, pauses,
/// or returns `Err($error(message))` from the enclosing function. Without the
/// `failpoints` feature, nothing.
macro_rules! failpoint {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        {
            let _ = $crate::failpoint::hit($name);
        }
    };
    ($name:expr, $error:expr) => {
        #[cfg(feature = "failpoints")]
        {
            if let Err(message) = $crate::failpoint::hit($name) {
                return Err(($error)(message));
            }
        }
    };
}
pub(crate) use failpoint;

#[cfg(feature = "failpoints")]
pub use enabled::{hit, NAMES};

/// Whether any failpoint is set: the crash tests count statements, so a run under them
/// sends each statement on its own.
#[cfg(feature = "failpoints")]
pub(crate) fn armed() -> bool {
    enabled::armed()
}

/// Without the `failpoints` feature, no failpoint is ever set.
#[cfg(not(feature = "failpoints"))]
pub(crate) fn armed() -> bool {
    false
}

/// The error a failpoint returns where the database would have failed.
#[cfg(feature = "failpoints")]
pub(crate) fn db_error(message: String) -> crate::error::Error {
    crate::error::Error::Db(crate::db::DbError::new(message))
}

#[cfg(feature = "failpoints")]
mod enabled {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    /// Every failpoint, in the order a run or an install reaches them.
    pub const NAMES: &[&str] = &[
        "lock-file-written",
        "database-locked",
        "backup-made",
        "before-statement",
        "after-statement",
        "after-step",
        "before-commit",
        "after-commit",
        "before-lock-cleared",
        "unlock-before-remove",
        "unlock-after-remove",
        "install-journal",
        "install-move",
    ];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Action {
        Abort,
        Error,
        Pause(u64),
    }

    struct Rule {
        name: String,
        /// Acts only at this hit of the point.
        at: Option<u64>,
        action: Action,
    }

    struct Points {
        rules: Vec<Rule>,
        /// How often each point of [`NAMES`] was reached.
        hits: Vec<AtomicU64>,
    }

    pub fn armed() -> bool {
        !points().rules.is_empty()
    }

    fn points() -> &'static Points {
        static POINTS: OnceLock<Points> = OnceLock::new();
        POINTS.get_or_init(|| {
            let spec = std::env::var("UPGRADER_FAILPOINTS").unwrap_or_default();
            let rules = parse(&spec).unwrap_or_else(|error| {
                eprintln!("upgrader: UPGRADER_FAILPOINTS: {error}");
                std::process::exit(2)
            });
            Points {
                rules,
                hits: NAMES.iter().map(|_| AtomicU64::new(0)).collect(),
            }
        })
    }

    fn parse(spec: &str) -> Result<Vec<Rule>, String> {
        let mut rules = Vec::new();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (point, action) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected NAME[#N]=ACTION"))?;
            let (name, at) = match point.split_once('#') {
                Some((name, at)) => {
                    let at = at
                        .parse::<u64>()
                        .ok()
                        .filter(|&at| at > 0)
                        .ok_or_else(|| format!("`{part}`: #N must be a number from 1"))?;
                    (name, Some(at))
                }
                None => (point, None),
            };
            if !NAMES.contains(&name) {
                return Err(format!(
                    "`{part}`: no failpoint `{name}` (there are: {})",
                    NAMES.join(", ")
                ));
            }
            let action = match action {
                "abort" => Action::Abort,
                "error" => Action::Error,
                _ => action
                    .strip_prefix("pause(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|ms| ms.parse().ok())
                    .map(Action::Pause)
                    .ok_or_else(|| format!("`{part}`: the action is abort, error or pause(MS)"))?,
            };
            rules.push(Rule {
                name: name.to_string(),
                at,
                action,
            });
        }
        Ok(rules)
    }

    /// Reaches the point `name`: `Err` when a rule says `error` here. Aborts or pauses
    /// when a rule says so.
    pub fn hit(name: &str) -> Result<(), String> {
        let points = points();
        let index = NAMES
            .iter()
            .position(|known| *known == name)
            .unwrap_or_else(|| panic!("failpoint `{name}` is not in NAMES"));
        if points.rules.is_empty() {
            return Ok(());
        }
        let count = points.hits[index].fetch_add(1, Ordering::Relaxed) + 1;
        for rule in &points.rules {
            if rule.name != name || rule.at.is_some_and(|at| at != count) {
                continue;
            }
            eprintln!("upgrader: failpoint {name}#{count}: {:?}", rule.action);
            match rule.action {
                Action::Abort => std::process::abort(),
                Action::Error => return Err(format!("failpoint {name}")),
                Action::Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_rules_and_refuses_what_it_does_not_know() {
            let rules =
                parse("before-commit#2=abort; after-step=pause(15);install-move=error").unwrap();
            let seen: Vec<(&str, Option<u64>, Action)> = rules
                .iter()
                .map(|r| (r.name.as_str(), r.at, r.action))
                .collect();
            assert_eq!(
                seen,
                [
                    ("before-commit", Some(2), Action::Abort),
                    ("after-step", None, Action::Pause(15)),
                    ("install-move", None, Action::Error),
                ]
            );
            for (spec, says) in [
                ("nowhere=abort", "no failpoint `nowhere`"),
                ("before-commit=explode", "abort, error or pause(MS)"),
                ("before-commit#0=abort", "#N must be a number"),
                ("before-commit", "expected NAME[#N]=ACTION"),
            ] {
                let error = parse(spec).err().unwrap();
                assert!(error.contains(says), "{spec}: {error}");
            }
        }
    }
}
