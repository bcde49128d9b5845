//! The lock path on the file system: opened without following links or blocking, checked
//! on the handle to be a regular file, read bounded, written in place, compared by device
//! and inode.

use std::fs::{File, OpenOptions, TryLockError};
#[cfg(not(unix))]
use std::io::Write;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{LockError, MAX_RECORD_BYTES};

pub(super) fn io(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a file type is, for a person; `None` for a regular file.
fn irregular(file_type: &std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        return None;
    }
    if file_type.is_dir() {
        return Some("a directory");
    }
    if file_type.is_symlink() {
        return Some("a symbolic link");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Some("a FIFO");
        }
        if file_type.is_socket() {
            return Some("a socket");
        }
        if file_type.is_char_device() {
            return Some("a character device");
        }
        if file_type.is_block_device() {
            return Some("a block device");
        }
    }
    Some("a special file")
}

fn require_regular(path: &Path, file_type: &std::fs::FileType) -> Result<(), LockError> {
    match irregular(file_type) {
        None => Ok(()),
        Some(what) => Err(LockError::NotRegular {
            path: path.to_path_buf(),
            what,
        }),
    }
}

/// How [`open_lock`] opens the lock path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Read an existing file.
    Read,
    /// Read and write, creating the file when there is none.
    Create,
}

/// Opens the lock path as a regular file, or finds none (`Ok(None)`, never for
/// [`Access::Create`]). A symbolic link is never followed (`O_NOFOLLOW`, so nothing is
/// created or written at its target) and nothing blocks (`O_NONBLOCK`: a FIFO would
/// otherwise wait for a writer forever); what is opened is checked on the handle itself,
/// so a file swapped in after the first look is refused too.
pub(super) fn open_lock(path: &Path, access: Access) -> Result<Option<File>, LockError> {
    // Looking first means a FIFO or a device is refused without being opened at all.
    match std::fs::symlink_metadata(path) {
        Ok(meta) => require_regular(path, &meta.file_type())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if access == Access::Read {
                return Ok(None);
            }
        }
        Err(e) => return Err(io(path)(e)),
    }
    let mut options = OpenOptions::new();
    options.read(true);
    if access == Access::Create {
        options.write(true).create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && access == Access::Read => {
            return Ok(None)
        }
        Err(e) => {
            // Swapped for a link or a directory since the look above: say what it is.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                require_regular(path, &meta.file_type())?;
            }
            return Err(io(path)(e));
        }
    };
    let meta = file.metadata().map_err(io(path))?;
    require_regular(path, &meta.file_type())?;
    Ok(Some(file))
}

/// Reads the whole file from its start, refusing one larger than any record.
pub(super) fn read_bounded(file: &mut File, path: &Path) -> Result<Vec<u8>, LockError> {
    let corrupt = |size| LockError::Corrupt {
        path: path.to_path_buf(),
        size,
    };
    let size = file.metadata().map_err(io(path))?.len();
    if size > MAX_RECORD_BYTES {
        return Err(corrupt(size));
    }
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(corrupt(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(unix)]
pub(super) fn write_at_start(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, 0)
}

#[cfg(not(unix))]
pub(super) fn write_at_start(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(bytes)
}

/// `status` probes the lock with a brief shared lock; a runner that meets such a probe
/// tries again for a moment instead of reporting a run in progress that is not there.
pub(super) fn try_lock_patiently(file: &File) -> Result<(), TryLockError> {
    for _ in 0..20 {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => return other,
        }
    }
    file.try_lock()
}

/// Whether `path` still names `file` (and not a file created there since, or nothing).
#[cfg(unix)]
pub(super) fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
pub(super) fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}
