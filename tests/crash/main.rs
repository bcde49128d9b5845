//! The crash matrix: the real binary, built with the `failpoints` feature, killed (as by
//! `kill -9`) at every failpoint of a run, on every backend, in every transaction mode,
//! and at every failpoint of a code install; after each crash the state must be one the
//! design allows, `status` must say so, and `unlock` + `run` (or any command, for an
//! install) must complete without applying anything twice.
//!
//! This target needs `--features failpoints` (`required-features` in Cargo.toml), so it
//! cannot silently lose its points: `tools/test-all` builds the suite with it.

#[allow(dead_code)]
#[path = "../it/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "../it/update_packages.rs"]
mod update_packages;
#[allow(dead_code)]
#[path = "../it/util.rs"]
mod util;

mod installs;
mod runs;

pub use util::report;

/// The failpoint spec that acts at the `n`th time the process reaches `point`.
pub fn at(point: &str, n: u64, action: &str) -> String {
    format!("{point}#{n}={action}")
}

/// Whether a command's stderr says the failpoint acted (and so the process died there).
pub fn acted(stderr: &str, point: &str, n: u64) -> bool {
    stderr.contains(&format!("upgrader: failpoint {point}#{n}:"))
}
