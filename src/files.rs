//! Reading the project's own files safely.
//!
//! DESIGN.md: `VERSION`, `upgrade.xml`, scripts and `upgrade.lock` must be regular files
//! that resolve inside the project directory. Anyone who can write the project directory
//! could otherwise point them at a FIFO (every command hangs), a device (`/dev/zero` is
//! read without end) or a file outside the project (`/proc/self/environ` printed in an
//! error). So every file is resolved first, refused unless it lies inside the project,
//! opened without following a last-moment symlink and without blocking on a FIFO, and
//! checked on the open handle to be a regular file; reads stop at a limit whatever the
//! file's metadata claims.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest `VERSION` file read: it holds one line, or a few `KEY: value` lines.
pub const VERSION_LIMIT: u64 = 64 * 1024;

/// The largest `upgrade.xml` read: generous for tens of thousands of steps.
pub const MANIFEST_LIMIT: u64 = 64 * 1024 * 1024;

/// A project file that may not be read, or could not be.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be resolved, opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file as named.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file resolves (through a symbolic link) to a place outside the project.
    #[error("{}: resolves outside the project directory {}; project files must stay inside it (a symbolic link leading out is never followed)", path.display(), dir.display())]
    Outside {
        /// The file as named.
        path: PathBuf,
        /// The project directory.
        dir: PathBuf,
    },
    /// The file is a directory, FIFO, socket or device.
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file as named.
        path: PathBuf,
        /// What it is instead, with its article ("a directory").
        kind: &'static str,
    },
    /// The file is larger than the limit for its kind.
    #[error("{}: is larger than the limit of {}", path.display(), size(*limit))]
    TooLarge {
        /// The file as named.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::Outside { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. } => path,
        }
    }

    /// What is wrong, without the file's name (for messages that name it themselves).
    pub fn reason(&self) -> String {
        match self {
            FileError::Io { source, .. } => format!("cannot read: {source}"),
            FileError::Outside { dir, .. } => format!(
                "resolves outside the project directory {}; project files must stay inside it (a symbolic link leading out is never followed)",
                dir.display()
            ),
            FileError::NotRegular { kind, .. } => format!("is {kind}, not a regular file"),
            FileError::TooLarge { limit, .. } => {
                format!("is larger than the limit of {}", size(*limit))
            }
        }
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// What a non-regular file is, for the error.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_block_device() || file_type.is_char_device() {
            return "a device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Resolves `path` (absolute, or relative to the working directory) and checks that it
/// lies inside `project_dir` and is a regular file, without opening it. Returns the
/// resolved path. Validation uses this for every script; the readers below repeat it.
pub fn check(project_dir: &Path, path: &Path) -> Result<PathBuf, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A file directly in the project directory that is not a link (VERSION, upgrade.xml)
    // is inside it whatever the directory's own path resolves to: no need to resolve
    // every component of both paths (a readlink each), which dominates reading a small
    // file. `open` still refuses a link put there meanwhile (O_NOFOLLOW).
    if is_direct_child(project_dir, path) {
        let metadata = std::fs::symlink_metadata(path).map_err(io)?;
        if metadata.is_file() {
            return Ok(path.to_path_buf());
        }
        if !metadata.file_type().is_symlink() {
            return Err(FileError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(metadata.file_type()),
            });
        }
    }
    let dir = project_dir.canonicalize().map_err(io)?;
    check_resolved(&dir, path)
}

/// [`check`] with the project directory already canonical (spares resolving it again
/// for every script of a manifest).
pub(crate) fn check_resolved(canonical_dir: &Path, path: &Path) -> Result<PathBuf, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let resolved = path.canonicalize().map_err(io)?;
    if !resolved.starts_with(canonical_dir) {
        return Err(FileError::Outside {
            path: path.to_path_buf(),
            dir: canonical_dir.to_path_buf(),
        });
    }
    let metadata = std::fs::metadata(&resolved).map_err(io)?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(metadata.file_type()),
        });
    }
    Ok(resolved)
}

/// Opens a project file for reading after the checks of [`check`]: the resolved path is
/// opened without following a symbolic link put there meanwhile and without blocking on
/// a FIFO, and the open handle must be a regular file. Returns the file and its length;
/// large files (scripts) are meant to be streamed from it.
pub fn open(project_dir: &Path, path: &Path) -> Result<(File, u64), FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A file directly in the project directory (VERSION, upgrade.xml) is opened at once:
    // O_NOFOLLOW refuses a link (which then goes the long way: it may still lead inside),
    // O_NONBLOCK keeps a FIFO from hanging the open, and the handle is checked below. A
    // command reading an application of many packages spares a `stat` per file.
    let resolved = if is_direct_child(project_dir, path) {
        match open_handle(path) {
            Ok(file) => return checked(file, path),
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => check(project_dir, path)?,
            Err(error) => return Err(io(error)),
        }
    } else {
        #[cfg(target_os = "linux")]
        if let Some(opened) = open_beneath(project_dir, path) {
            return opened;
        }
        #[cfg(target_os = "linux")]
        if let Some(opened) = open_and_locate(project_dir, path) {
            return opened;
        }
        check(project_dir, path)?
    };
    let file = open_handle(&resolved).map_err(io)?;
    checked(file, path)
}

/// A file deeper in the project (a script in `scripts/`) located by the kernel: opened
/// as a path only (`O_PATH`, which does nothing to a device or FIFO), its real place
/// read from `/proc/self/fd` and its type from the handle, and only when it is a regular
/// file inside the project opened for reading, through that handle (the same inode,
/// whatever the path names meanwhile). Five system calls instead of a `readlink` for
/// every component of both paths and three `stat`s: a manifest of 1,000 scripts made
/// 10,000 of them. `None` (the long way) for a link at the end of the path, which may
/// still lead inside, or where `/proc` cannot tell.
#[cfg(target_os = "linux")]
fn open_and_locate(project_dir: &Path, path: &Path) -> Option<Result<(File, u64), FileError>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let located = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(error) => return Some(Err(io(error))),
    };
    let handle = format!("/proc/self/fd/{}", located.as_raw_fd());
    let real = std::fs::read_link(&handle).ok()?;
    let metadata = located.metadata().ok()?;
    if metadata.file_type().is_symlink() {
        return None;
    }
    let dir = canonical_dir(project_dir)?;
    if !real.starts_with(&dir) {
        return Some(Err(FileError::Outside {
            path: path.to_path_buf(),
            dir,
        }));
    }
    if !metadata.is_file() {
        return Some(Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(metadata.file_type()),
        }));
    }
    Some(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&handle)
            .map(|file| (file, metadata.len()))
            .map_err(io),
    )
}

/// A file deeper in the project (a script in `scripts/`) opened by the kernel beneath the
/// project directory (`openat2` with `RESOLVE_BENEATH`: no `..`, absolute link or link
/// may lead out of it at any step), without following a link at its end, without
/// blocking on a FIFO, and checked on the handle to be a regular file, like a file
/// directly in the project. Nothing is cached, so a directory a deploy replaced is what
/// is read; and `/proc` is not asked (its look-ups were most of [`open_and_locate`]'s
/// cost: five system calls and two `/proc` paths for each of a manifest's scripts).
/// `None` (the longer ways, which name the problem) for a link at the end of the path
/// (which may still lead inside), a path leading out, a socket, or a kernel before 5.6.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn open_beneath(project_dir: &Path, path: &Path) -> Option<Result<(File, u64), FileError>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let relative = path.strip_prefix(project_dir).ok()?;
    if relative.as_os_str().is_empty() {
        return None;
    }
    let relative = std::ffi::CString::new(relative.as_os_str().as_bytes()).ok()?;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(project_dir)
        .ok()?;
    // SAFETY: `open_how` is plain integers, for which all zeroes is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags =
        (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_CLOEXEC)
            as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `dir` is an open directory handle, `relative` a NUL-terminated path and
    // `how` an `open_how` of the size given; the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            relative.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ELOOP | libc::EXDEV | libc::ENXIO | libc::ENOSYS | libc::EPERM) => None,
            _ => Some(Err(FileError::Io {
                path: path.to_path_buf(),
                source: error,
            })),
        };
    }
    // SAFETY: `fd` was just opened here and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd as std::os::fd::RawFd) };
    Some(checked(file, path))
}

/// `project_dir` resolved, each time: a long-lived process (the web gate) must see the
/// directory a deploy's link now names. Only the longer ways ask (a script that is a
/// link, a kernel without `openat2`); [`open_beneath`] needs no resolved path.
#[cfg(target_os = "linux")]
fn canonical_dir(project_dir: &Path) -> Option<PathBuf> {
    project_dir.canonicalize().ok()
}

/// `path` opened for reading without following a link at its end and without blocking.
fn open_handle(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK only matters for the FIFO or device refused by `checked`; reads of
        // a regular file ignore it, so it need not be cleared.
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY);
    }
    options.open(path)
}

/// `file` with its length when the open handle is a regular file.
fn checked(file: File, path: &Path) -> Result<(File, u64), FileError> {
    let metadata = file.metadata().map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(metadata.file_type()),
        });
    }
    Ok((file, metadata.len()))
}

/// Whether `path` names an entry of `project_dir` itself (not `.` or `..`).
fn is_direct_child(project_dir: &Path, path: &Path) -> bool {
    path.parent() == Some(project_dir)
        && path
            .file_name()
            .is_some_and(|name| name != "." && name != "..")
}

/// Reads a whole project file of at most `limit` bytes, opened as [`open`] does.
pub fn read(project_dir: &Path, path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let (file, len) = open(project_dir, path)?;
    read_opened(file, len, path, limit)
}

/// Reads the whole of a file [`open`] returned (`len`: the length it gave), at most
/// `limit` bytes, in one `read` when the length holds.
pub(crate) fn read_opened(
    file: File,
    len: u64,
    path: &Path,
    limit: u64,
) -> Result<Vec<u8>, FileError> {
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if len > limit {
        return Err(too_large());
    }
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Never more than limit + 1 bytes, even if the length reported lies.
    let mut reader = file.take(limit.saturating_add(1));
    // One read into room for a byte more than the file holds: a regular file that
    // fills it short by exactly that byte has been read to its end, which spares the
    // second read that would find nothing. Anything else reads on to the end.
    let mut bytes = vec![0; len as usize + 1];
    let first = match reader.read(&mut bytes) {
        Ok(read) => read,
        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => 0,
        Err(error) => return Err(io(error)),
    };
    bytes.truncate(first);
    if first as u64 != len {
        reader.read_to_end(&mut bytes).map_err(io)?;
    }
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads a whole project file of at most `limit` bytes as UTF-8 text.
pub fn read_to_string(project_dir: &Path, path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read(project_dir, path, limit)?;
    String::from_utf8(bytes).map_err(|e| FileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripts in a directory of the project are opened beneath the project: links at the
    /// end of their path still go the long way (in or out), a FIFO is still refused, a
    /// directory replaced meanwhile is read anew, and one moved out and linked back in
    /// is outside.
    #[cfg(unix)]
    #[test]
    fn scripts_in_a_directory_are_checked_like_any_project_file() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "MARKER").unwrap();
        let project = tempfile::tempdir().unwrap();
        let dir = project.path();
        let scripts = dir.join("scripts");
        std::fs::create_dir(&scripts).unwrap();
        std::fs::write(scripts.join("one.sql"), "SELECT 1").unwrap();
        std::fs::write(dir.join("shared.sql"), "SELECT 2").unwrap();
        std::os::unix::fs::symlink("../shared.sql", scripts.join("in.sql")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), scripts.join("out.sql")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(scripts.join("fifo.sql"))
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(
            read(dir, &scripts.join("one.sql"), 100).unwrap(),
            b"SELECT 1"
        );
        assert_eq!(
            read(dir, &scripts.join("in.sql"), 100).unwrap(),
            b"SELECT 2"
        );
        assert!(matches!(
            read(dir, &scripts.join("out.sql"), 100),
            Err(FileError::Outside { .. })
        ));
        assert!(matches!(
            read(dir, &scripts.join("fifo.sql"), 100),
            Err(FileError::NotRegular { kind: "a FIFO", .. })
        ));
        assert!(matches!(
            read(dir, &scripts.join("none.sql"), 100),
            Err(FileError::Io { .. })
        ));
        // A deploy that puts a new directory in the old one's place.
        std::fs::rename(&scripts, dir.join("old")).unwrap();
        std::fs::create_dir(&scripts).unwrap();
        std::fs::write(scripts.join("one.sql"), "SELECT 3").unwrap();
        assert_eq!(
            read(dir, &scripts.join("one.sql"), 100).unwrap(),
            b"SELECT 3"
        );
        // ... one that moves it out and links it back in ...
        let moved = outside.path().join("moved");
        std::fs::rename(&scripts, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &scripts).unwrap();
        assert!(matches!(
            read(dir, &scripts.join("one.sql"), 100),
            Err(FileError::Outside { .. })
        ));
        // ... and one that points it elsewhere outside.
        std::fs::remove_file(&scripts).unwrap();
        std::os::unix::fs::symlink(outside.path(), &scripts).unwrap();
        assert!(matches!(
            read(dir, &scripts.join("secret"), 100),
            Err(FileError::Outside { .. })
        ));
        // A socket is named as such.
        let socket = dir.join("sock.sql");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::remove_file(&scripts).unwrap();
        std::fs::create_dir(&scripts).unwrap();
        std::fs::rename(&socket, scripts.join("sock.sql")).unwrap();
        assert!(matches!(
            read(dir, &scripts.join("sock.sql"), 100),
            Err(FileError::NotRegular {
                kind: "a socket",
                ..
            })
        ));
    }

    /// A project whose path is a link a deploy flips (`current -> releases/N`): a script
    /// that is a link (read the longer way) is read from the release the link names now.
    #[cfg(unix)]
    #[test]
    fn a_flipped_project_link_is_followed_anew() {
        let base = tempfile::tempdir().unwrap();
        for (release, text) in [("r1", "SELECT 1"), ("r2", "SELECT 2")] {
            let scripts = base.path().join(release).join("scripts");
            std::fs::create_dir_all(&scripts).unwrap();
            std::fs::write(scripts.join("real.sql"), text).unwrap();
            std::os::unix::fs::symlink("real.sql", scripts.join("link.sql")).unwrap();
        }
        let current = base.path().join("current");
        let script = current.join("scripts").join("link.sql");
        std::os::unix::fs::symlink("r1", &current).unwrap();
        assert_eq!(read(&current, &script, 100).unwrap(), b"SELECT 1");
        std::fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("r2", &current).unwrap();
        assert_eq!(read(&current, &script, 100).unwrap(), b"SELECT 2");
    }

    #[test]
    fn refuses_links_out_fifos_directories_and_large_files() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "MARKER").unwrap();
        let project = tempfile::tempdir().unwrap();
        let dir = project.path();
        std::fs::write(dir.join("ok"), "fine").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&secret, dir.join("out")).unwrap();
            std::os::unix::fs::symlink("ok", dir.join("in")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
            let fifo = dir.join("fifo");
            let status = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(status.success());
            assert!(matches!(
                read(dir, &fifo, 10),
                Err(FileError::NotRegular { kind: "a FIFO", .. })
            ));
            assert!(matches!(
                read(dir, &dir.join("out"), 10),
                Err(FileError::Outside { .. })
            ));
            assert!(matches!(
                read(dir, &dir.join("zero"), 10),
                Err(FileError::Outside { .. })
            ));
            assert_eq!(read(dir, &dir.join("in"), 10).unwrap(), b"fine");
        }
        assert!(matches!(
            read(dir, &dir.join("sub"), 10),
            Err(FileError::NotRegular {
                kind: "a directory",
                ..
            })
        ));
        assert_eq!(read(dir, &dir.join("ok"), 4).unwrap(), b"fine");
        let error = read(dir, &dir.join("ok"), 3).unwrap_err();
        assert!(error
            .to_string()
            .ends_with("larger than the limit of 3 bytes"));
        assert!(matches!(
            read(dir, &dir.join("missing"), 3),
            Err(FileError::Io { .. })
        ));
    }
}
