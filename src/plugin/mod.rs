//! Step plugins: finding a library by its bare name, checking its ABI, loading it once
//! per process, and resolving the steps a plan calls. [`host`] runs a resolved step.
//!
//! Loading a library runs its code (constructors), so nothing here is reached from
//! `plan`, `status` or `check`; `run` resolves every plugin step of its plan before it
//! takes the lock. The ABI version is read from the file itself, before it is loaded,
//! so a library built for another ABI is refused without running any of its code.

// This module and `host` are where upgrader meets foreign code: loading libraries and
// calling them through raw function pointers cannot be done in safe Rust.
#![allow(unsafe_code)]

pub mod host;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use object::{Object, ObjectSection, ObjectSymbol};
pub use upgrader_plugin::abi;

/// The environment variable with more directories to search (`:`-separated).
pub const PATH_VARIABLE: &str = "UPGRADER_PLUGIN_PATH";

/// A plugin problem found while resolving; the run is refused before it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

/// A library loaded into this process: never unloaded (unloading Rust libraries that
/// use thread-local storage is unsound), so references to it live as long as the process.
#[derive(Debug)]
pub struct Library {
    /// The bare name from the manifest.
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The steps it exports.
    pub steps: Vec<String>,
    identity: FileIdentity,
    library: libloading::Library,
}

/// A step of a loaded library, ready to call.
#[derive(Clone)]
pub struct ResolvedStep {
    /// The library.
    pub library: &'static Library,
    /// The step (method) name.
    pub method: String,
    function: abi::StepFn,
}

impl std::fmt::Debug for ResolvedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedStep")
            .field("library", &self.library.name)
            .field("path", &self.library.path)
            .field("method", &self.method)
            .finish()
    }
}

/// Which file a path named when it was loaded: a different file at the same path later
/// is not the library this process has mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    canonical: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let metadata = std::fs::metadata(path)?;
        Ok(FileIdentity {
            canonical: std::fs::canonicalize(path)?,
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            inode: {
                use std::os::unix::fs::MetadataExt;
                (metadata.dev(), metadata.ino())
            },
        })
    }
}

/// The platform's file name for a library: `libNAME.so`, `libNAME.dylib` or `NAME.dll`.
pub fn file_name(library: &str) -> String {
    format!(
        "{}{library}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Where libraries are looked for, in order: the project's `plugins/` directory, the
/// directories in `$UPGRADER_PLUGIN_PATH`, then, for development, the cargo target
/// directories (`target/{debug,release}` and `target/plugins/{debug,release}` of the
/// project, of `$CARGO_TARGET_DIR`, and of the target directory this executable runs from).
pub fn search_path(project_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![crate::layout::Layout::new(project_dir).plugins()];
    if let Some(extra) = std::env::var_os(PATH_VARIABLE) {
        dirs.extend(std::env::split_paths(&extra).filter(|d| !d.as_os_str().is_empty()));
    }
    let mut targets = vec![project_dir.join("target")];
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.push(PathBuf::from(dir));
    }
    // target/debug/upgrader -> target
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
    {
        if target.file_name().is_some_and(|name| name == "target") {
            targets.push(target);
        }
    }
    for target in targets {
        for sub in ["debug", "release", "plugins/debug", "plugins/release"] {
            let dir = target.join(sub);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

/// Finds the library's file on the search path.
pub fn find(project_dir: &Path, library: &str) -> Result<PathBuf, PluginError> {
    check_name(library)?;
    let wanted = file_name(library);
    let dirs = search_path(project_dir);
    dirs.iter()
        .map(|dir| dir.join(&wanted))
        // Anything there counts, so that a FIFO or a directory by that name is refused
        // with what it is rather than skipped in silence.
        .find(|path| path.metadata().is_ok())
        .ok_or_else(|| {
            PluginError(format!(
                "plugin library '{library}' not found: looked for {wanted} in {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The rule for a plugin library's name, the only one (the manifest checks it, and so
/// does every lookup): a bare name (letters, digits, `_`, `-`, `.`; not starting with `.`,
/// no `..`), so that a manifest cannot reach outside the plugin search path.
pub fn is_bare_library_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The rule for a plugin step's (method's) name: an identifier (letters, digits, `_`;
/// not starting with a digit), since it becomes part of an exported symbol's name.
pub fn is_method_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Only bare names: a manifest must not reach outside the search path.
fn check_name(library: &str) -> Result<(), PluginError> {
    if !is_bare_library_name(library) {
        return Err(PluginError(format!(
            "plugin library name '{library}' must be a bare name (letters, digits, '_', '-', '.'; no path separators or '..')"
        )));
    }
    Ok(())
}

fn registry() -> &'static Mutex<HashMap<String, &'static Library>> {
    static LOADED: OnceLock<Mutex<HashMap<String, &'static Library>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Finds, checks and loads a library (once per process), or returns the one loaded.
pub fn load(project_dir: &Path, library: &str) -> Result<&'static Library, PluginError> {
    let path = find(project_dir, library)?;
    let identity =
        FileIdentity::of(&path).map_err(|e| PluginError(format!("{}: {e}", path.display())))?;
    let mut loaded = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(existing) = loaded.get(library) {
        if existing.identity == identity {
            return Ok(existing);
        }
        return Err(PluginError(format!(
            "plugin library '{library}' is already loaded in this process from {}; refusing to load a different file, {} (libraries are never unloaded: restart the process to use the new one)",
            existing.path.display(),
            path.display()
        )));
    }
    check_abi(&path)?;
    // SAFETY: loading runs the library's initialisers; the file has just been checked to
    // carry upgrader's plugin ABI, which is as far as a host can vouch for foreign code.
    let handle = unsafe { libloading::Library::new(&path) }
        .map_err(|e| PluginError(format!("{} is not a loadable library: {e}", path.display())))?;
    let steps = exported_steps(&handle);
    let library_ref: &'static Library = Box::leak(Box::new(Library {
        name: library.to_string(),
        path,
        steps,
        identity,
        library: handle,
    }));
    log::debug!(
        "loaded plugin library {} from {}",
        library,
        library_ref.path.display()
    );
    loaded.insert(library.to_string(), library_ref);
    Ok(library_ref)
}

/// At most this much of a library is read to find its ABI version: the headers, the
/// section table and the symbol tables of a real library are far smaller, and a file
/// that claims more (a huge or hostile one) is refused instead of read.
const ABI_READ_BUDGET: u64 = 64 << 20;

/// A [`ReadRef`](object::ReadRef) over a file that reads lazily (only the ranges the
/// parser asks for, through [`object::read::ReadCache`]) and refuses to read more than
/// [`ABI_READ_BUDGET`] in all.
#[derive(Clone, Copy)]
struct Budgeted<'a> {
    cache: &'a object::read::ReadCache<std::fs::File>,
    left: &'a std::cell::Cell<u64>,
}

impl<'a> object::ReadRef<'a> for Budgeted<'a> {
    fn len(self) -> Result<u64, ()> {
        self.cache.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        self.spend(size)?;
        self.cache.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> Result<&'a [u8], ()> {
        let bytes = self.cache.read_bytes_at_until(range, delimiter)?;
        self.spend(bytes.len() as u64)?;
        Ok(bytes)
    }
}

impl Budgeted<'_> {
    /// Takes `size` bytes from the budget; once it is overdrawn, nothing more is read.
    fn spend(self, size: u64) -> Result<(), ()> {
        match self.left.get().checked_sub(size) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.left.set(0);
                Err(())
            }
        }
    }

    /// Whether a read was refused for want of budget.
    fn overdrawn(self) -> bool {
        self.left.get() == 0
    }
}

/// Opens a library file to read it: never blocking (a FIFO would wait for a writer),
/// and only a regular file (a link to one is fine: libraries are often links).
fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| e.to_string())?;
    let file_type = file.metadata().map_err(|e| e.to_string())?.file_type();
    if file_type.is_file() {
        return Ok(file);
    }
    let what = if file_type.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_fifo() {
                "a FIFO"
            } else if file_type.is_socket() {
                "a socket"
            } else if file_type.is_char_device() || file_type.is_block_device() {
                "a device"
            } else {
                "a special file"
            }
        }
        #[cfg(not(unix))]
        "a special file"
    };
    Err(format!("it is {what}, not a regular file"))
}

/// Reads the `upgrader_plugin_abi` data symbol from the file, without loading it, and
/// reading only the parts of the file the check needs.
fn check_abi(path: &Path) -> Result<(), PluginError> {
    let not_loadable = |why: String| {
        PluginError(format!(
            "{} is not a loadable library: {why}",
            path.display()
        ))
    };
    let cache = object::read::ReadCache::new(open_regular(path).map_err(not_loadable)?);
    let left = std::cell::Cell::new(ABI_READ_BUDGET);
    let data = Budgeted {
        cache: &cache,
        left: &left,
    };
    let file = object::File::parse(data).map_err(|e| {
        not_loadable(if data.overdrawn() {
            format!("its headers claim more than {} MiB", ABI_READ_BUDGET >> 20)
        } else {
            e.to_string()
        })
    })?;
    let symbol = file
        .dynamic_symbols()
        .chain(file.symbols())
        .find(|symbol| {
            symbol
                .name()
                .is_ok_and(|name| name.trim_start_matches('_') == abi::ABI_SYMBOL.trim_start_matches('_'))
                && symbol.is_definition()
        })
        .ok_or_else(|| {
            PluginError(format!(
                "{} is not an upgrader plugin: it does not export `{}` (build it with the upgrader-plugin crate's export_steps!, or for C see upgrader_plugin.h)",
                path.display(),
                abi::ABI_SYMBOL
            ))
        })?;
    let value = symbol
        .section_index()
        .and_then(|index| file.section_by_index(index).ok())
        .and_then(|section| section.data_range(symbol.address(), 4).ok().flatten())
        .map(|data| {
            let array: [u8; 4] = data.try_into().expect("four bytes");
            if file.is_little_endian() {
                u32::from_le_bytes(array)
            } else {
                u32::from_be_bytes(array)
            }
        })
        .ok_or_else(|| {
            PluginError(format!(
                "{}: cannot read the value of `{}`",
                path.display(),
                abi::ABI_SYMBOL
            ))
        })?;
    if value != abi::ABI_VERSION {
        return Err(PluginError(format!(
            "{} was built for plugin ABI version {value}, but this upgrader uses version {}; rebuild it against upgrader-plugin {} (or upgrader_plugin.h of this release)",
            path.display(),
            abi::ABI_VERSION,
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}

/// The names in the library's `upgrader_plugin_steps` list (empty when it has none).
fn exported_steps(library: &libloading::Library) -> Vec<String> {
    // SAFETY: the symbol is the `StepList` static of the ABI (its version was checked);
    // its names point at static strings of the library, which is never unloaded.
    unsafe {
        let Ok(list) = library.get::<*const abi::StepList>(abi::STEPS_SYMBOL.as_bytes()) else {
            return Vec::new();
        };
        let Some(list) = list.as_ref() else {
            return Vec::new();
        };
        if list.names.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(list.names, list.count)
            .iter()
            .map(|name| name.to_string_lossy())
            .collect()
    }
}

impl Library {
    /// Looks up a step by name.
    pub fn step(&'static self, method: &str) -> Result<ResolvedStep, PluginError> {
        let symbol = format!("{}{method}", abi::STEP_PREFIX);
        let valid_name = !method.is_empty()
            && method
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        // SAFETY: a symbol with the step prefix is a `StepFn` by the ABI's definition.
        let found = valid_name
            .then(|| unsafe { self.library.get::<abi::StepFn>(symbol.as_bytes()) }.ok())
            .flatten()
            .map(|function| *function);
        match found {
            Some(function) => Ok(ResolvedStep {
                library: self,
                method: method.to_string(),
                function,
            }),
            None => Err(PluginError(format!(
                "plugin library '{}' ({}) has no step '{method}' (no exported symbol {symbol}); it exports: {}",
                self.name,
                self.path.display(),
                if self.steps.is_empty() {
                    "(none)".to_string()
                } else {
                    self.steps.join(", ")
                }
            ))),
        }
    }
}

/// Loads the library and finds the step: everything `run` checks before it starts.
pub fn resolve(
    project_dir: &Path,
    library: &str,
    method: &str,
) -> Result<ResolvedStep, PluginError> {
    load(project_dir, library)?.step(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_names() {
        for bad in [
            "", "../x", "a/b", "a\\b", "..", "x..y", "c:x", ".hidden", "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["demo_steps", "shop-steps", "x1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn missing_library_lists_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let error = find(dir.path(), "nothing_here").unwrap_err().0;
        assert!(error.contains(&file_name("nothing_here")), "{error}");
        assert!(
            error.contains(&dir.path().join("plugins").display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_refused_before_loading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(
            dir.path().join("plugins").join(file_name("junk")),
            "not ELF",
        )
        .unwrap();
        let error = load(dir.path(), "junk").unwrap_err().0;
        assert!(error.contains("is not a loadable library"), "{error}");
    }
}
