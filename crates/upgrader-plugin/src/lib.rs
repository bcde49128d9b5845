//! Write [upgrader](https://crates.io/crates/upgrader) step plugins in Rust.
//!
//! A plugin is a `cdylib` whose steps are plain Rust functions taking the run and
//! returning a `Result`. [`export_steps!`] exports them under the names `upgrade.xml`
//! uses, together with the ABI version and the list of step names:
//!
//! ```
//! use upgrader_plugin::{export_steps, Run, Value};
//!
//! /// Splits `customers.name` into first and last names, which SQL alone does badly.
//! fn split_names(run: &mut Run) -> upgrader_plugin::Result<()> {
//!     for row in run.query("SELECT id, name FROM customers", &[])? {
//!         let name = row[1].as_text().unwrap_or_default();
//!         let (first, last) = name.split_once(' ').unwrap_or((name, ""));
//!         run.execute_with(
//!             "UPDATE customers SET first_name = ?, last_name = ? WHERE id = ?",
//!             &[first.into(), last.into(), row[0].clone()],
//!         )?;
//!     }
//!     run.log("names split");
//!     Ok(())
//! }
//!
//! export_steps!(split_names);
//! ```
//!
//! and in `upgrade.xml`: `<plugin library="my_steps" method="split_names"/>`, with
//! `Cargo.toml` saying `[lib] name = "my_steps"` and `crate-type = ["cdylib"]`.
//!
//! Every statement runs inside the upgrade's transaction and passes the same guard as
//! script SQL; values go to the database as bound parameters (`?`). An `Err` or a
//! panic fails the step and rolls the run back; a panic is caught here and never
//! unwinds into upgrader (so do not build plugins with `panic = "abort"`).
//!
//! The [`abi`] module is the C ABI itself, for hosts and for checking other languages'
//! plugins; `include/upgrader_plugin.h` is the same ABI for C.

use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The C ABI between upgrader and a plugin library. Only borrowed views cross it: the
/// receiver copies what it keeps, so nothing is ever freed on the other side.
pub mod abi {
    use std::ffi::c_void;

    /// The ABI version this crate implements; a host refuses a library with another.
    pub const ABI_VERSION: u32 = 1;
    /// The exported `uint32_t` data symbol holding the library's ABI version. It is
    /// data, not a function, so that a host can check it without running plugin code.
    pub const ABI_SYMBOL: &str = "upgrader_plugin_abi";
    /// The exported [`StepList`] data symbol naming the library's steps.
    pub const STEPS_SYMBOL: &str = "upgrader_plugin_steps";
    /// Each step `NAME` is exported as the function `upgrader_step_NAME` ([`StepFn`]);
    /// the prefix keeps step names from colliding with other C symbols.
    pub const STEP_PREFIX: &str = "upgrader_step_";

    /// A step returned normally.
    pub const STATUS_OK: i32 = 0;
    /// A step returned an error (its message given through [`Host::fail`]).
    pub const STATUS_ERROR: i32 = 1;
    /// A step panicked (the panic message given through [`Host::fail`]).
    pub const STATUS_PANIC: i32 = 2;

    /// [`Value::kind`]: SQL NULL.
    pub const VALUE_NULL: u32 = 0;
    /// [`Value::kind`]: an integer in [`Value::int`].
    pub const VALUE_INT: u32 = 1;
    /// [`Value::kind`]: a float in [`Value::float`].
    pub const VALUE_FLOAT: u32 = 2;
    /// [`Value::kind`]: UTF-8 text in [`Value::bytes`].
    pub const VALUE_TEXT: u32 = 3;
    /// [`Value::kind`]: binary data in [`Value::bytes`].
    pub const VALUE_BLOB: u32 = 4;

    /// [`Host::log`] levels.
    pub const LOG_ERROR: u32 = 1;
    /// Warning.
    pub const LOG_WARN: u32 = 2;
    /// Information.
    pub const LOG_INFO: u32 = 3;
    /// Debugging detail.
    pub const LOG_DEBUG: u32 = 4;

    /// A borrowed run of bytes (UTF-8 where text is meant), not NUL-terminated.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct Str {
        /// First byte (may dangle when `len` is 0).
        pub ptr: *const u8,
        /// Length in bytes.
        pub len: usize,
    }

    impl Str {
        /// A view of `text`.
        pub const fn new(text: &str) -> Str {
            Str {
                ptr: text.as_ptr(),
                len: text.len(),
            }
        }

        /// A view of `bytes`.
        pub const fn bytes(bytes: &[u8]) -> Str {
            Str {
                ptr: bytes.as_ptr(),
                len: bytes.len(),
            }
        }

        /// The bytes viewed.
        ///
        /// # Safety
        /// `ptr` must point to `len` readable bytes that outlive `'a`.
        pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
            if self.len == 0 || self.ptr.is_null() {
                &[]
            } else {
                // SAFETY: the caller promises `len` readable bytes at `ptr`.
                unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
            }
        }

        /// The text viewed, with invalid UTF-8 replaced.
        ///
        /// # Safety
        /// As for [`Str::as_bytes`].
        pub unsafe fn to_string_lossy(self) -> String {
            // SAFETY: forwarded to the caller.
            String::from_utf8_lossy(unsafe { self.as_bytes() }).into_owned()
        }
    }

    /// A value bound to a statement or read from a row.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub struct Value {
        /// One of the `VALUE_*` constants.
        pub kind: u32,
        /// The integer, for `VALUE_INT`.
        pub int: i64,
        /// The float, for `VALUE_FLOAT`.
        pub float: f64,
        /// The text or bytes, for `VALUE_TEXT` and `VALUE_BLOB`.
        pub bytes: Str,
    }

    impl Value {
        fn with(kind: u32, int: i64, float: f64, bytes: Str) -> Value {
            Value {
                kind,
                int,
                float,
                bytes,
            }
        }

        /// SQL NULL.
        pub fn null() -> Value {
            Value::with(VALUE_NULL, 0, 0.0, Str::new(""))
        }

        /// An integer.
        pub fn int(value: i64) -> Value {
            Value::with(VALUE_INT, value, 0.0, Str::new(""))
        }

        /// A float.
        pub fn float(value: f64) -> Value {
            Value::with(VALUE_FLOAT, 0, value, Str::new(""))
        }

        /// A view of text.
        pub fn text(value: &str) -> Value {
            Value::with(VALUE_TEXT, 0, 0.0, Str::new(value))
        }

        /// A view of binary data.
        pub fn blob(value: &[u8]) -> Value {
            Value::with(VALUE_BLOB, 0, 0.0, Str::bytes(value))
        }
    }

    /// Receives one row of a query: `count` cells, valid only during the call.
    /// Returns 0 to go on; anything else stops the query with an error.
    pub type RowFn =
        unsafe extern "C" fn(user: *mut c_void, cells: *const Value, count: usize) -> i32;

    /// What the host offers a step: its statements run in the upgrade's transaction.
    /// Every function returns 0 on success; on failure, [`Host::last_error`] says why.
    #[repr(C)]
    #[derive(Debug)]
    pub struct Host {
        /// The host's ABI version.
        pub abi_version: u32,
        /// `sizeof(Host)` as the host built it; fields may only ever be appended.
        pub size: u32,
        /// The host's context, passed back to every function.
        pub ctx: *mut c_void,
        /// Runs one statement with `count` bound parameters (`?`); stores the number of
        /// rows changed in `*changed` when it is not null.
        pub execute: unsafe extern "C" fn(
            ctx: *mut c_void,
            sql: Str,
            params: *const Value,
            count: usize,
            changed: *mut u64,
        ) -> i32,
        /// Runs a query with bound parameters and calls `on_row` for each row.
        pub query: unsafe extern "C" fn(
            ctx: *mut c_void,
            sql: Str,
            params: *const Value,
            count: usize,
            on_row: RowFn,
            user: *mut c_void,
        ) -> i32,
        /// The message of the last failed `execute` or `query`; valid until the next call.
        pub last_error: unsafe extern "C" fn(ctx: *mut c_void) -> Str,
        /// Writes a message to upgrader's log at a `LOG_*` level.
        pub log: unsafe extern "C" fn(ctx: *mut c_void, level: u32, message: Str),
        /// Gives the step's error message, before it returns `STATUS_ERROR` or
        /// `STATUS_PANIC`.
        pub fail: unsafe extern "C" fn(ctx: *mut c_void, message: Str),
    }

    /// An exported step: `upgrader_step_NAME`.
    pub type StepFn = unsafe extern "C" fn(host: *const Host) -> i32;

    /// The exported list of step names (`upgrader_plugin_steps`).
    #[repr(C)]
    #[derive(Debug)]
    pub struct StepList {
        /// How many names.
        pub count: usize,
        /// The names.
        pub names: *const Str,
    }

    /// A [`StepList`] that may live in a `static` (it only points at other statics).
    #[doc(hidden)]
    #[repr(transparent)]
    pub struct SyncStepList(pub StepList);
    // SAFETY: the list and the names it points at are immutable statics.
    unsafe impl Sync for SyncStepList {}

    /// Names that may live in a `static` (they point at string literals).
    #[doc(hidden)]
    #[repr(transparent)]
    pub struct SyncNames<const N: usize>(pub [Str; N]);
    // SAFETY: string literals are immutable and live for the whole program.
    unsafe impl<const N: usize> Sync for SyncNames<N> {}
}

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (booleans arrive as 0 and 1).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Text(String),
    /// Binary data.
    Blob(Vec<u8>),
}

impl Value {
    /// The text, when the value is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    /// The integer, when the value is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(value) => Some(*value),
            _ => None,
        }
    }

    fn view(&self) -> abi::Value {
        match self {
            Value::Null => abi::Value::null(),
            Value::Int(v) => abi::Value::int(*v),
            Value::Float(v) => abi::Value::float(*v),
            Value::Text(v) => abi::Value::text(v),
            Value::Blob(v) => abi::Value::blob(v),
        }
    }

    /// Copies a borrowed value.
    ///
    /// # Safety
    /// `value.bytes` must be valid for text and blob values.
    unsafe fn copy(value: &abi::Value) -> Value {
        match value.kind {
            abi::VALUE_INT => Value::Int(value.int),
            abi::VALUE_FLOAT => Value::Float(value.float),
            // SAFETY: the host keeps the cells valid during the row callback.
            abi::VALUE_TEXT => Value::Text(unsafe { value.bytes.to_string_lossy() }),
            abi::VALUE_BLOB => Value::Blob(unsafe { value.bytes.as_bytes() }.to_vec()),
            _ => Value::Null,
        }
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<i32> for Value {
    fn from(value: i32) -> Self {
        Value::Int(value.into())
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(value.into())
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Blob(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// A row of a query.
pub type Row = Vec<Value>;

/// A step's error: its message is what upgrader reports and records.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error { message }
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

/// The result of a step or of one of its statements.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The run a step belongs to: its statements go through upgrader, inside the upgrade's
/// transaction, and are guarded like script SQL.
pub struct Run<'a> {
    host: &'a abi::Host,
}

impl Run<'_> {
    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&mut self, sql: &str) -> Result<u64> {
        self.execute_with(sql, &[])
    }

    /// Runs one statement with values bound to its `?` placeholders; returns how many
    /// rows it changed.
    pub fn execute_with(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let views: Vec<abi::Value> = params.iter().map(Value::view).collect();
        let mut changed = 0u64;
        // SAFETY: the host is valid for the step's call; the views borrow `params` and
        // `sql`, which outlive the call.
        let status = unsafe {
            (self.host.execute)(
                self.host.ctx,
                abi::Str::new(sql),
                views.as_ptr(),
                views.len(),
                &mut changed,
            )
        };
        if status == 0 {
            Ok(changed)
        } else {
            Err(self.last_error())
        }
    }

    /// Runs a query with values bound to its `?` placeholders and returns its rows.
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        unsafe extern "C" fn collect(
            user: *mut c_void,
            cells: *const abi::Value,
            count: usize,
        ) -> i32 {
            let copied = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `user` is the `rows` vector below; the host keeps `count`
                // cells valid during this call.
                let rows = unsafe { &mut *(user as *mut Vec<Row>) };
                let cells = if count == 0 {
                    &[][..]
                } else {
                    unsafe { std::slice::from_raw_parts(cells, count) }
                };
                rows.push(
                    cells
                        .iter()
                        .map(|cell| unsafe { Value::copy(cell) })
                        .collect(),
                );
            }));
            i32::from(copied.is_err())
        }
        let views: Vec<abi::Value> = params.iter().map(Value::view).collect();
        let mut rows: Vec<Row> = Vec::new();
        // SAFETY: as in `execute_with`; `collect` only runs during this call.
        let status = unsafe {
            (self.host.query)(
                self.host.ctx,
                abi::Str::new(sql),
                views.as_ptr(),
                views.len(),
                collect,
                &mut rows as *mut Vec<Row> as *mut c_void,
            )
        };
        if status == 0 {
            Ok(rows)
        } else {
            Err(self.last_error())
        }
    }

    /// Writes to upgrader's log (shown by default).
    pub fn log(&self, message: impl AsRef<str>) {
        self.log_at(abi::LOG_INFO, message.as_ref());
    }

    /// Writes a warning to upgrader's log.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log_at(abi::LOG_WARN, message.as_ref());
    }

    /// Writes detail to upgrader's log (shown with `RUST_LOG=debug`).
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log_at(abi::LOG_DEBUG, message.as_ref());
    }

    fn log_at(&self, level: u32, message: &str) {
        // SAFETY: the host is valid for the step's call; the view outlives the call.
        unsafe { (self.host.log)(self.host.ctx, level, abi::Str::new(message)) }
    }

    fn last_error(&self) -> Error {
        // SAFETY: the host's message stays valid until its next call; it is copied now.
        Error::new(unsafe { (self.host.last_error)(self.host.ctx).to_string_lossy() })
    }
}

thread_local! {
    /// The message and place of the last panic in a step, kept by our panic hook.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Calls a step for the exported C function: catches panics, reports errors through
/// the host, and returns a `STATUS_*` code. Used by [`export_steps!`].
///
/// # Safety
/// `host` must be null or point to a valid [`abi::Host`] for the duration of the call.
#[doc(hidden)]
pub unsafe fn __call_step(host: *const abi::Host, step: fn(&mut Run<'_>) -> Result<()>) -> i32 {
    // SAFETY: the caller passes a valid host (or null) for the duration of the call.
    let Some(host) = (unsafe { host.as_ref() }) else {
        return abi::STATUS_ERROR;
    };
    if host.abi_version != abi::ABI_VERSION
        || (host.size as usize) < std::mem::size_of::<abi::Host>()
    {
        return abi::STATUS_ERROR;
    }
    install_panic_hook();
    let fail = |message: &str| {
        // SAFETY: as above; the host copies the message.
        unsafe { (host.fail)(host.ctx, abi::Str::new(message)) }
    };
    let mut run = Run { host };
    match catch_unwind(AssertUnwindSafe(|| step(&mut run))) {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(error)) => {
            fail(error.message());
            abi::STATUS_ERROR
        }
        Err(payload) => {
            let message = PANIC
                .with(|last| last.borrow_mut().take())
                .unwrap_or_else(|| {
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".to_string())
                });
            fail(&message);
            abi::STATUS_PANIC
        }
    }
}

/// Keeps each panic's message and place for the step's error instead of printing it:
/// upgrader reports it, once, with the step that failed.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            let place = info
                .location()
                .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            PANIC.with(|last| *last.borrow_mut() = Some(format!("{message}{place}")));
        }));
    });
}

/// Exports step functions (`fn(&mut Run) -> Result<()>`) under their own names, with the
/// ABI version and the list of step names. Use it once per library.
#[macro_export]
macro_rules! export_steps {
    ($($step:ident),+ $(,)?) => {
        #[doc(hidden)]
        #[export_name = "upgrader_plugin_abi"]
        pub static UPGRADER_PLUGIN_ABI: u32 = $crate::abi::ABI_VERSION;

        #[doc(hidden)]
        pub static UPGRADER_PLUGIN_STEP_NAMES: $crate::abi::SyncNames<{ [$(stringify!($step)),+].len() }> =
            $crate::abi::SyncNames([$($crate::abi::Str::new(stringify!($step))),+]);

        #[doc(hidden)]
        #[export_name = "upgrader_plugin_steps"]
        pub static UPGRADER_PLUGIN_STEPS: $crate::abi::SyncStepList =
            $crate::abi::SyncStepList($crate::abi::StepList {
                count: [$(stringify!($step)),+].len(),
                names: &UPGRADER_PLUGIN_STEP_NAMES as *const _ as *const $crate::abi::Str,
            });

        $(
            const _: () = {
                #[export_name = concat!("upgrader_step_", stringify!($step))]
                unsafe extern "C" fn exported(host: *const $crate::abi::Host) -> i32 {
                    // SAFETY: upgrader calls this with its valid host.
                    unsafe { $crate::__call_step(host, $step) }
                }
            };
        )+
    };
}
