//! Calls a resolved step with a host interface whose statements go through the run's
//! connection, transaction and guard, exactly as script statements do.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{abi, ResolvedStep};
use crate::db::{Backend, Value};
use crate::sql::{self, guard, Dialect};

/// What a plugin step's statements are judged by.
pub struct Rules<'a> {
    /// The run's dialect.
    pub dialect: Dialect,
    /// Whether the step is the install (DDL allowed on MySQL).
    pub install: bool,
    /// Whether the step runs outside the shared transaction (`transaction="none"`).
    pub alone: bool,
    /// Tables whose engine cannot roll back.
    pub tables: &'a guard::TableGuard,
}

/// How a plugin step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned success.
    Done {
        /// Statements it sent.
        statements: usize,
    },
    /// It failed: its error, its panic, or a statement the guard refused (which fails the
    /// step even if the plugin carried on).
    Failed(String),
}

struct Context<'a> {
    db: &'a mut dyn Backend,
    rules: &'a Rules<'a>,
    step: &'a ResolvedStep,
    /// The message of the last failed call, for `last_error`.
    last_error: String,
    /// The step's own error message (`fail`).
    failure: Option<String>,
    /// A statement the guard refused.
    refused: Option<String>,
    statements: usize,
}

/// Runs the step.
pub fn call(step: &ResolvedStep, db: &mut dyn Backend, rules: &Rules<'_>) -> Outcome {
    let mut context = Context {
        db,
        rules,
        step,
        last_error: String::new(),
        failure: None,
        refused: None,
        statements: 0,
    };
    let host = abi::Host {
        abi_version: abi::ABI_VERSION,
        size: std::mem::size_of::<abi::Host>() as u32,
        ctx: &mut context as *mut Context<'_> as *mut c_void,
        execute,
        query,
        last_error,
        log,
        fail,
    };
    // SAFETY: the function is the library's exported step (resolved by name with the
    // ABI's prefix, ABI version checked); `host` and the context it points at outlive
    // the call, and the callbacks only touch them during it.
    let status = unsafe { (step.function)(&host) };
    let name = format!("{}::{}", step.library.name, step.method);
    if let Some(refused) = context.refused {
        return Outcome::Failed(refused);
    }
    match status {
        abi::STATUS_OK => Outcome::Done {
            statements: context.statements,
        },
        abi::STATUS_PANIC => Outcome::Failed(format!(
            "plugin step {name} panicked: {}",
            context.failure.as_deref().unwrap_or("(no message)")
        )),
        code => Outcome::Failed(format!(
            "plugin step {name} failed: {}",
            context
                .failure
                .unwrap_or_else(|| format!("it returned error code {code} without a message"))
        )),
    }
}

/// Runs `body` with the context, turning a panic in upgrader's own code into an error
/// instead of unwinding into the plugin.
unsafe fn with_context(
    ctx: *mut c_void,
    body: impl FnOnce(&mut Context<'_>) -> Result<(), String>,
) -> i32 {
    // SAFETY: `ctx` is the `Context` of `call`, alive for the step's call; no other
    // reference to it is live while a callback runs (rows are handed to the plugin
    // only after this borrow ends).
    let context = unsafe { &mut *(ctx as *mut Context<'_>) };
    let result = catch_unwind(AssertUnwindSafe(|| body(context)))
        .unwrap_or_else(|_| Err("upgrader failed internally while running the statement".into()));
    match result {
        Ok(()) => 0,
        Err(message) => {
            context.last_error = message;
            1
        }
    }
}

/// Judges a plugin's statement as a script's would be (a refusal fails the step), and
/// counts it as sent.
fn admit(context: &mut Context<'_>, sql: &str) -> Result<(), String> {
    judge(context, sql)?;
    context.statements += 1;
    log::debug!(
        "plugin {}::{}: {sql}",
        context.step.library.name,
        context.step.method
    );
    Ok(())
}

fn judge(context: &mut Context<'_>, sql: &str) -> Result<(), String> {
    let rules = context.rules;
    let statements =
        sql::split(sql, rules.dialect).map_err(|e| format!("cannot read the statement: {e}"))?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err("empty statement".into()),
        _ => {
            return Err(format!(
                "{} statements in one call; send one statement per call",
                statements.len()
            ))
        }
    };
    let verdict = if rules.alone {
        // A step that runs alone may commit, but may still not touch upgrader's own
        // tables or locks.
        guard::check_always(statement, rules.dialect)
    } else if rules.install {
        guard::check_install(statement, rules.dialect)
    } else {
        guard::check(statement, rules.dialect)
    }
    .and_then(|()| {
        if rules.alone {
            Ok(())
        } else {
            rules.tables.check(statement, rules.dialect)
        }
    });
    if let Err(refusal) = verdict {
        let message = format!(
            "plugin step {}::{}: statement refused on {}: {}: `{}`; it was not sent",
            context.step.library.name,
            context.step.method,
            rules.dialect.name(),
            refusal.reason,
            sql::abbreviate(sql)
        );
        context.refused.get_or_insert(message.clone());
        return Err(message);
    }
    Ok(())
}

/// Copies the plugin's borrowed parameters.
unsafe fn params(values: *const abi::Value, count: usize) -> Vec<Value> {
    if values.is_null() || count == 0 {
        return Vec::new();
    }
    // SAFETY: the plugin passes `count` values valid for the call.
    let values = unsafe { std::slice::from_raw_parts(values, count) };
    values
        .iter()
        .map(|value| match value.kind {
            abi::VALUE_INT => Value::Int(value.int),
            abi::VALUE_FLOAT => Value::Float(value.float),
            // SAFETY: text and blob views are valid for the call.
            abi::VALUE_TEXT => Value::Text(unsafe { value.bytes.to_string_lossy() }),
            abi::VALUE_BLOB => Value::Blob(unsafe { value.bytes.as_bytes() }.to_vec()),
            _ => Value::Null,
        })
        .collect()
}

unsafe extern "C" fn execute(
    ctx: *mut c_void,
    sql: abi::Str,
    values: *const abi::Value,
    count: usize,
    changed: *mut u64,
) -> i32 {
    // SAFETY: views valid for the call (ABI contract).
    let sql = unsafe { sql.to_string_lossy() };
    let values = unsafe { params(values, count) };
    unsafe {
        with_context(ctx, |context| {
            admit(context, &sql)?;
            let rows = context
                .db
                .execute_params(&sql, &values)
                .map_err(|e| e.to_string())?;
            resume_if_committed(context, &sql)?;
            if !changed.is_null() {
                // SAFETY: the plugin passed a writable `u64` or null.
                *changed = rows;
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn query(
    ctx: *mut c_void,
    sql: abi::Str,
    values: *const abi::Value,
    count: usize,
    on_row: abi::RowFn,
    user: *mut c_void,
) -> i32 {
    // SAFETY: views valid for the call (ABI contract).
    let sql = unsafe { sql.to_string_lossy() };
    let values = unsafe { params(values, count) };
    let mut rows = Vec::new();
    let status = unsafe {
        with_context(ctx, |context| {
            admit(context, &sql)?;
            rows = context.db.query(&sql, &values).map_err(|e| e.to_string())?;
            Ok(())
        })
    };
    if status != 0 {
        return status;
    }
    for row in &rows {
        let cells: Vec<abi::Value> = row.iter().map(view).collect();
        // SAFETY: the cells borrow `row`, alive during the callback, which may call
        // back into the host (no borrow of the context is live here).
        let stopped = unsafe { on_row(user, cells.as_ptr(), cells.len()) };
        if stopped != 0 {
            // SAFETY: as in `with_context`.
            let context = unsafe { &mut *(ctx as *mut Context<'_>) };
            context.last_error = format!("the row callback stopped the query (code {stopped})");
            return 1;
        }
    }
    0
}

/// On MySQL an install's DDL commits implicitly: the run's transaction is opened again,
/// as for script statements.
fn resume_if_committed(context: &mut Context<'_>, sql: &str) -> Result<(), String> {
    let rules = context.rules;
    if rules.install && !rules.alone && rules.dialect == Dialect::MySql {
        let committed = sql::split(sql, rules.dialect)
            .ok()
            .and_then(|statements| statements.into_iter().next())
            .is_some_and(|statement| guard::commits_implicitly(&statement, rules.dialect));
        if committed {
            context
                .db
                .resume_after_implicit_commit()
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn view(value: &Value) -> abi::Value {
    match value {
        Value::Null => abi::Value::null(),
        Value::Bool(v) => abi::Value::int(i64::from(*v)),
        Value::Int(v) => abi::Value::int(*v),
        Value::Float(v) => abi::Value::float(*v),
        Value::Text(v) => abi::Value::text(v),
        Value::Blob(v) => abi::Value::blob(v),
    }
}

unsafe extern "C" fn last_error(ctx: *mut c_void) -> abi::Str {
    // SAFETY: `ctx` is the live context; the view stays valid until the next call.
    let context = unsafe { &*(ctx as *const Context<'_>) };
    abi::Str::new(&context.last_error)
}

unsafe extern "C" fn log(ctx: *mut c_void, level: u32, message: abi::Str) {
    // SAFETY: as above; the message is copied.
    let context = unsafe { &*(ctx as *const Context<'_>) };
    let message = unsafe { message.to_string_lossy() };
    let level = match level {
        abi::LOG_ERROR => log::Level::Error,
        abi::LOG_WARN => log::Level::Warn,
        abi::LOG_INFO => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(
        target: "plugin",
        level,
        "{}::{}: {message}",
        context.step.library.name,
        context.step.method
    );
}

unsafe extern "C" fn fail(ctx: *mut c_void, message: abi::Str) {
    // SAFETY: as above; the message is copied.
    let context = unsafe { &mut *(ctx as *mut Context<'_>) };
    context.failure = Some(unsafe { message.to_string_lossy() });
}
