//! The external dump and load tools (`pg_dump`, `pg_restore`, `psql`; `mariadb-dump`,
//! `mariadb`): found on PATH, then in the server packages' own directories; run with
//! their error output kept for the message, and the bytes they write shown as progress
//! on a terminal. Passwords reach them through their environment or a private option
//! file (see the callers), never through the command line, which every local user can
//! read in `ps`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::progress::Progress;

/// Every installed copy of the tool `names` names (the first name preferred, the others
/// older aliases such as `mysqldump`), first those on PATH, then those in `dirs` in the
/// order given (callers list newer versions first).
pub(crate) fn candidates(names: &[&str], dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for dir in on_path.iter().chain(dirs) {
        for name in names {
            let candidate = dir.join(name);
            if is_executable(&candidate) && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// [`candidates`] for a PostgreSQL client tool. Debian's `/usr/bin/pg_dump` & co. are
/// links to `pg_wrapper`, a Perl script that picks the newest installed client for a
/// remote server and costs some 50 ms a call: that newest client is taken directly, the
/// wrapper kept as a last resort.
pub(crate) fn postgres_candidates(name: &str) -> Vec<PathBuf> {
    let mut found = candidates(&[name], &postgres_dirs());
    let is_wrapper = |path: &PathBuf| {
        std::fs::canonicalize(path)
            .is_ok_and(|real| real.file_name().is_some_and(|n| n == "pg_wrapper"))
    };
    let (wrappers, mut real): (Vec<PathBuf>, Vec<PathBuf>) = found.drain(..).partition(is_wrapper);
    real.extend(wrappers);
    real
}

/// `/usr/lib/postgresql/<major>/bin` (Debian, Ubuntu) and `/usr/pgsql-<major>/bin` (RPM
/// packages), newest major first.
pub(crate) fn postgres_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
    ] {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            dirs.push((version, entry.path().join(suffix)));
        }
    }
    dirs.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    dirs.into_iter().map(|(_, dir)| dir).collect()
}

/// A tool's command with a clean environment for its own variables: every variable
/// starting with `prefix` (`PG`, `MYSQL`) removed, so that the tool connects where
/// upgrader's own connection does and nowhere else.
pub(crate) fn command(program: &Path, prefix: &str) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with(prefix)) {
            command.env_remove(&name);
        }
    }
    command.stdin(std::process::Stdio::null());
    command.stderr(std::process::Stdio::piped());
    command
}

/// A running tool's error output, read on its own thread so that a chatty tool never
/// blocks on a full pipe.
pub(crate) struct Stderr(Option<JoinHandle<String>>);

impl Stderr {
    /// Starts reading `child`'s stderr (piped by [`command`]).
    pub(crate) fn of(child: &mut Child) -> Stderr {
        Stderr(child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                // The first 64 KiB say what went wrong; the rest is drained and dropped.
                let _ = (&mut pipe).take(64 * 1024).read_to_end(&mut text);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
                String::from_utf8_lossy(&text).trim().to_string()
            })
        }))
    }

    /// Everything the tool wrote to stderr.
    pub(crate) fn text(self) -> String {
        self.0
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

/// What a tool's exit means: `Ok` on success, otherwise a message with its name, its
/// status and what it said.
pub(crate) fn outcome(name: &str, status: ExitStatus, stderr: String) -> Result<(), String> {
    if status.success() {
        return Ok(());
    }
    let said = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.lines().collect::<Vec<_>>().join("; "))
    };
    Err(format!("{name} failed ({status}){said}"))
}

/// Waits for `child`, showing on a terminal how large `file` (which it writes) has
/// grown.
pub(crate) fn wait_writing(
    mut child: Child,
    file: &Path,
    message: &str,
) -> std::io::Result<(ExitStatus, String)> {
    let stderr = Stderr::of(&mut child);
    let watcher = std::io::stderr().is_terminal().then(|| {
        // Dropping the sender wakes the watcher at once: the wait never outlasts the tool.
        let (done, stop) = mpsc::channel::<()>();
        let file = file.to_path_buf();
        let message = message.to_string();
        let handle = std::thread::spawn(move || {
            let mut progress = Progress::new(&message, None);
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stop.recv_timeout(Duration::from_millis(100))
            {
                let size = std::fs::metadata(&file).map_or(0, |m| m.len());
                progress.set(size, None);
            }
        });
        (done, handle)
    });
    let status = child.wait();
    if let Some((done, handle)) = watcher {
        drop(done);
        let _ = handle.join();
    }
    Ok((status?, stderr.text()))
}

/// The message for a tool that cannot be started.
pub(crate) fn cannot_start(program: &Path, error: &std::io::Error) -> String {
    format!("cannot start {}: {error}", program.display())
}
