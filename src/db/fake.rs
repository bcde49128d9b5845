//! A recording fake [`Backend`] for unit tests of the runner's state machine: an
//! in-memory model of upgrader's own tables (answering the statements [`super::state`]
//! sends, matched on their SQL text), user statements kept as a list of what took
//! effect, transactions that really roll that model back (and, as MySQL, DDL that
//! commits them implicitly), injected failures, and a log
//! of every call the engine made. The log and the model live behind an `Rc`, so a test
//! keeps a handle after handing the engine its `Box<dyn Backend>`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::state::{self, HistoryRow};
use super::{Backend, DbError, DbObject, ForeignTable, LockSpan, StatementLimit, Value};
use crate::sql::Dialect;

/// One call the engine made on the fake, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    /// [`Backend::lock`].
    Lock(LockSpan),
    /// [`Backend::unlock`].
    Unlock,
    /// [`Backend::begin`].
    Begin,
    /// [`Backend::commit`].
    Commit,
    /// [`Backend::commit_and_chain`] (only recorded where the dialect chains).
    CommitAndChain,
    /// [`Backend::rollback`]; `open` says whether there was a transaction to roll back.
    Rollback {
        /// A transaction was open.
        open: bool,
    },
    /// [`Backend::execute`] of a statement, and whether a transaction was open.
    Execute {
        /// The statement.
        sql: String,
        /// A transaction was open when it was sent.
        in_transaction: bool,
    },
    /// [`Backend::execute_params`] (upgrader's own bookkeeping).
    ExecuteParams {
        /// The statement.
        sql: String,
        /// Its bound values.
        params: Vec<Value>,
        /// Rows it changed.
        changed: u64,
    },
    /// [`Backend::query`] or [`Backend::query_own_table`].
    Query(String),
    /// [`Backend::table_exists`].
    TableExists(String),
    /// [`Backend::user_table_count`].
    UserTableCount,
    /// [`Backend::still_in_transaction`] and its answer.
    StillInTransaction(bool),
    /// A statement committed the open transaction implicitly: DDL on MySQL, or see
    /// [`Fake::commit_implicitly_after`].
    ImplicitCommit,
    /// [`Backend::resume_after_implicit_commit`]; `opened` says whether it began a
    /// transaction (MySQL, after its DDL committed the last one).
    ResumeAfterImplicitCommit {
        /// A transaction was begun.
        opened: bool,
    },
    /// [`Backend::foreign_tables`].
    ForeignTables,
    /// [`Backend::objects`].
    Objects,
    /// [`Backend::drop_objects`].
    DropObjects,
    /// [`Backend::max_statement_bytes`].
    MaxStatementBytes,
    /// The call before this one failed with this message (injected, or refused by the
    /// model: an unknown query, a duplicate key).
    Failed(String),
    /// A call broke the [`Backend`] contract (a `begin` inside a transaction, a `commit`
    /// outside one, an `unlock` inside one, work before `lock`): the engine's bug.
    Misuse(String),
}

/// What the database holds: the part a transaction can roll back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Data {
    /// upgrader's own tables that exist.
    pub(crate) own_tables: BTreeSet<String>,
    /// Other tables, created by `CREATE TABLE` statements (for `user_table_count`).
    pub(crate) user_tables: BTreeSet<String>,
    /// `upgrader_version`: project → version.
    pub(crate) versions: BTreeMap<String, String>,
    /// `upgrader_history`, in insertion order.
    pub(crate) history: Vec<HistoryRow>,
    /// Every user statement that took effect, in order.
    pub(crate) applied: Vec<String>,
    /// `upgrader_schema`: (project, table, version, text).
    pub(crate) schema: Vec<(String, String, String, Option<String>)>,
}

/// Where the fake fails on purpose.
#[derive(Debug, Default)]
struct Faults {
    /// Fail the `nth` (from 1) statement, of `execute` or `execute_params`, whose text
    /// contains the pattern; with the number seen so far.
    statements: Vec<(String, usize, usize)>,
    /// Fail the nth commit (`commit` and `commit_and_chain` counted together).
    commit: Option<usize>,
    /// After a statement containing this text, the open transaction has committed.
    implicit_commit: Option<String>,
    /// Another process records (project, version): when the lock is taken (`None`) or
    /// right after the nth commit.
    meanwhile: Option<(Option<usize>, String, String)>,
}

#[derive(Debug)]
struct State {
    dialect: Dialect,
    data: Data,
    /// What the database held when the open transaction began: `Some` while one is open.
    before: Option<Data>,
    locked: Option<LockSpan>,
    log: Vec<Call>,
    faults: Faults,
    commits: usize,
    next_id: i64,
}

/// The fake backend. Clones share one database and one log: give the engine
/// [`Fake::backend`], keep the `Fake` to look afterwards.
#[derive(Debug, Clone)]
pub(crate) struct Fake {
    state: Rc<RefCell<State>>,
}

const VERSION_TABLE: &str = "upgrader_version";
const HISTORY_TABLE: &str = "upgrader_history";
const OWN_TABLES: [&str; 3] = [VERSION_TABLE, HISTORY_TABLE, "upgrader_schema"];

const SELECT_VERSION: &str = "SELECT version FROM upgrader_version WHERE project = ?";
const SELECT_VERSIONS: &str = "SELECT project, version FROM upgrader_version WHERE project IN (";
const SELECT_HISTORY: &str = "SELECT id, project, kind, name, from_version, to_version,";
const UPDATE_VERSION: &str =
    "UPDATE upgrader_version SET version = ?, updated_at = ? WHERE project = ?";
const INSERT_VERSION: &str =
    "INSERT INTO upgrader_version (project, version, updated_at) VALUES (?, ?, ?)";
const INSERT_HISTORY: &str = "INSERT INTO upgrader_history (";
/// What follows [`INSERT_VERSION`] in an upsert (PostgreSQL, MySQL).
const UPSERT: [&str; 2] = [" ON CONFLICT (project)", " ON DUPLICATE KEY UPDATE"];
const WITH_HISTORY: &str = "WITH recorded AS (INSERT INTO upgrader_history (";
const CREATE_OWN: &str = "CREATE TABLE IF NOT EXISTS upgrader_";
const DROP_OWN: &str = "DROP TABLE IF EXISTS upgrader_";
const SELECT_SCHEMA: &str = "SELECT project, table_name, table_version, fingerprint";
const DELETE_SCHEMA: &str = "DELETE FROM upgrader_schema ";
const INSERT_SCHEMA: &str = "INSERT INTO upgrader_schema (";

/// Whether a statement is upgrader's own DDL (creating or re-creating its tables).
pub(crate) fn is_own_ddl(sql: &str) -> bool {
    sql.starts_with(CREATE_OWN) || sql.starts_with(DROP_OWN)
}

impl Fake {
    /// An empty database (no table at all) of `dialect`. MySQL and PostgreSQL behave as
    /// their backends do: the lock outlives a commit and `COMMIT AND CHAIN` works;
    /// SQLite's does neither.
    pub(crate) fn new(dialect: Dialect) -> Fake {
        Fake {
            state: Rc::new(RefCell::new(State {
                dialect,
                data: Data::default(),
                before: None,
                locked: None,
                log: Vec::new(),
                faults: Faults::default(),
                commits: 0,
                next_id: 1,
            })),
        }
    }

    /// A database upgrader has already worked on: its own tables exist at this build's
    /// version, and `project` is recorded at `version`.
    pub(crate) fn with_version(self, project: &str, version: &str) -> Fake {
        {
            let mut state = self.state.borrow_mut();
            let data = &mut state.data;
            data.own_tables
                .extend(OWN_TABLES.iter().map(|t| t.to_string()));
            data.versions
                .insert(state::OWN_PROJECT.into(), state::own_version().into());
            data.versions.insert(project.into(), version.into());
        }
        self
    }

    /// A user table that exists before the run.
    pub(crate) fn with_table(self, name: &str) -> Fake {
        self.state.borrow_mut().data.user_tables.insert(name.into());
        self
    }

    /// Fails the `nth` (counting from 1) statement sent with `execute` or
    /// `execute_params` whose text contains `pattern`.
    pub(crate) fn fail_execute(self, pattern: &str, nth: usize) -> Fake {
        self.state
            .borrow_mut()
            .faults
            .statements
            .push((pattern.into(), nth, 0));
        self
    }

    /// Fails the `nth` commit (counting from 1; `commit_and_chain` counts as one). The
    /// transaction stays open, as when the commit never reached the server.
    pub(crate) fn fail_commit(self, nth: usize) -> Fake {
        self.state.borrow_mut().faults.commit = Some(nth);
        self
    }

    /// The first statement containing `pattern` commits the open transaction, as MySQL
    /// does implicitly; `still_in_transaction` then says `false`.
    pub(crate) fn commit_implicitly_after(self, pattern: &str) -> Fake {
        self.state.borrow_mut().faults.implicit_commit = Some(pattern.into());
        self
    }

    /// Another process records `project` at `version` while the run is not looking: just
    /// before the lock is granted (`after_commit` `None`), or right after the run's nth
    /// commit (another host slipping in between two commits).
    pub(crate) fn meanwhile(
        self,
        after_commit: Option<usize>,
        project: &str,
        version: &str,
    ) -> Fake {
        self.state.borrow_mut().faults.meanwhile =
            Some((after_commit, project.into(), version.into()));
        self
    }

    /// A connection to this database for the engine.
    pub(crate) fn backend(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }

    /// Every call so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state.borrow().log.clone()
    }

    /// The contract breaches recorded so far.
    pub(crate) fn misuse(&self) -> Vec<String> {
        self.state
            .borrow()
            .log
            .iter()
            .filter_map(|call| match call {
                Call::Misuse(what) => Some(what.clone()),
                _ => None,
            })
            .collect()
    }

    /// What the database holds durably: the open transaction, if any, left out.
    pub(crate) fn durable(&self) -> Data {
        let state = self.state.borrow();
        state.before.clone().unwrap_or_else(|| state.data.clone())
    }

    /// Whether a transaction is open now.
    pub(crate) fn in_transaction(&self) -> bool {
        self.state.borrow().before.is_some()
    }

    /// The log in short, one token per call that changes something, separated by spaces:
    /// `lock(tx)`/`lock(session)`, `begin`, `commit`, `chain`, `rollback` (only when a
    /// transaction was open), `unlock`, `implicit-commit`; a user statement by its first
    /// quoted literal (tests name their statements so), else its text; `history(N)` for
    /// N history rows, `PROJECT=VERSION` for a version written (an UPDATE that changed
    /// nothing is left out), `+` joining what one statement did; `!` after a call that
    /// failed. Reads, upgrader's own DDL and questions are left out, unless they fail:
    /// then they are shown as `Call`'s `Debug` with `!`.
    pub(crate) fn shape(&self) -> String {
        let mut tokens: Vec<String> = Vec::new();
        // The last call, when it was left out: shown after all if it fails.
        let mut unshown: Option<&Call> = None;
        let state = self.state.borrow();
        for call in &state.log {
            let token = match call {
                Call::Lock(LockSpan::Transaction) => "lock(tx)".to_string(),
                Call::Lock(LockSpan::Session) => "lock(session)".to_string(),
                Call::Unlock => "unlock".into(),
                Call::Begin => "begin".into(),
                Call::Commit => "commit".into(),
                Call::CommitAndChain => "chain".into(),
                Call::Rollback { open: true } => "rollback".into(),
                Call::ImplicitCommit => "implicit-commit".into(),
                Call::ResumeAfterImplicitCommit { opened: true } => "resume".into(),
                Call::DropObjects => "drop".into(),
                Call::Execute { sql, .. } if !is_own_ddl(sql) => label(sql),
                Call::ExecuteParams {
                    sql,
                    params,
                    changed,
                } => match bookkeeping_label(sql, params, *changed) {
                    Some(token) => token,
                    None => {
                        unshown = Some(call);
                        continue;
                    }
                },
                Call::Failed(_) => {
                    match (unshown.take(), tokens.last_mut()) {
                        (Some(quiet), _) => tokens.push(format!("{quiet:?}!")),
                        (None, Some(last)) => last.push('!'),
                        (None, None) => tokens.push("!".into()),
                    }
                    continue;
                }
                Call::Misuse(what) => format!("MISUSE({what})"),
                quiet => {
                    unshown = Some(quiet);
                    continue;
                }
            };
            unshown = None;
            tokens.push(token);
        }
        tokens.join(" ")
    }
}

/// Whether a statement is DDL, which MySQL commits implicitly.
fn is_ddl(sql: &str) -> bool {
    let first = sql.split_whitespace().next().unwrap_or_default();
    ["CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE"]
        .iter()
        .any(|ddl| first.eq_ignore_ascii_case(ddl))
}

/// A user statement's name in [`Fake::shape`]: its first single-quoted literal.
fn label(sql: &str) -> String {
    let mut parts = sql.split('\'');
    match (parts.next(), parts.next()) {
        (Some(_), Some(literal)) if parts.next().is_some() => literal.to_string(),
        _ => sql.to_string(),
    }
}

/// A bookkeeping statement's token in [`Fake::shape`].
fn bookkeeping_label(sql: &str, params: &[Value], changed: u64) -> Option<String> {
    let text = |value: Option<&Value>| value.and_then(Value::as_text).unwrap_or("?").to_string();
    if sql.starts_with(UPDATE_VERSION) {
        (changed > 0).then(|| format!("{}={}", text(params.get(2)), text(params.first())))
    } else if sql.starts_with(INSERT_VERSION) {
        Some(format!("{}={}", text(params.first()), text(params.get(1))))
    } else if sql.starts_with(INSERT_HISTORY) {
        Some(format!("history({})", params.len() / 13))
    } else if sql.starts_with(WITH_HISTORY) {
        // History rows, then the upsert's (project, version, now).
        let rows = (params.len() - 3) / 13;
        let tail = &params[params.len() - 3..];
        let version = match changed {
            0 => String::new(),
            _ => format!("+{}={}", text(tail.first()), text(tail.get(1))),
        };
        Some(format!("history({rows}){version}"))
    } else {
        None
    }
}

impl State {
    /// Another process's committed write, if one is due at this moment.
    fn interfere(&mut self, after_commit: Option<usize>) {
        if self
            .faults
            .meanwhile
            .as_ref()
            .is_some_and(|(when, _, _)| *when == after_commit)
        {
            let (_, project, version) = self.faults.meanwhile.take().expect("checked above");
            self.data.versions.insert(project, version);
        }
    }

    fn misuse(&mut self, what: &str) {
        self.log.push(Call::Misuse(what.into()));
    }

    /// Records a failure of the last call.
    fn fail(&mut self, message: String) -> DbError {
        self.log.push(Call::Failed(message.clone()));
        DbError::new(message)
    }

    fn require_lock(&mut self, what: &str) {
        if self.locked.is_none() {
            self.misuse(&format!("{what} before lock"));
        }
    }

    /// Whether an injected failure hits this statement.
    fn injected(&mut self, sql: &str) -> bool {
        let mut hit = false;
        for (pattern, nth, seen) in &mut self.faults.statements {
            if sql.contains(pattern.as_str()) {
                *seen += 1;
                hit |= *seen == *nth;
            }
        }
        hit
    }

    fn own_table(&mut self, table: &str) -> Result<(), DbError> {
        if self.data.own_tables.contains(table) {
            Ok(())
        } else {
            Err(self.fail(format!("no such table: {table}")))
        }
    }

    fn version_rows(&self, projects: &[Value]) -> Vec<Vec<Value>> {
        projects
            .iter()
            .filter_map(|project| {
                let name = project.as_text()?;
                let version = self.data.versions.get(name)?;
                Some(vec![Value::from(name), Value::from(version.as_str())])
            })
            .collect()
    }

    fn history_rows(&self, projects: &[Value]) -> Vec<Vec<Value>> {
        let wanted: Vec<&str> = projects.iter().filter_map(Value::as_text).collect();
        self.data
            .history
            .iter()
            .filter(|row| wanted.contains(&row.project.as_str()))
            .map(|row| {
                vec![
                    row.id.into(),
                    row.project.as_str().into(),
                    row.kind.as_str().into(),
                    row.name.as_str().into(),
                    row.from_version.clone().into(),
                    row.to_version.as_str().into(),
                    row.checksum.clone().into(),
                    row.started_at.as_str().into(),
                    row.finished_at.as_str().into(),
                    row.duration_ms.into(),
                    row.host.as_str().into(),
                    row.pid.into(),
                    row.success.into(),
                    row.error.clone().into(),
                ]
            })
            .collect()
    }

    fn answer(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        if sql.starts_with(SELECT_VERSION) {
            self.own_table(VERSION_TABLE)?;
            Ok(self
                .version_rows(params)
                .into_iter()
                .map(|row| vec![row[1].clone()])
                .collect())
        } else if sql.starts_with(SELECT_VERSIONS) {
            self.own_table(VERSION_TABLE)?;
            Ok(self.version_rows(params))
        } else if sql.starts_with(SELECT_HISTORY) {
            self.own_table(HISTORY_TABLE)?;
            Ok(self.history_rows(params))
        } else if sql.starts_with(SELECT_SCHEMA) {
            self.own_table("upgrader_schema")?;
            let projects: Vec<&str> = params.iter().filter_map(Value::as_text).collect();
            Ok(self
                .data
                .schema
                .iter()
                .filter(|row| projects.contains(&row.0.as_str()))
                .map(|(project, table, version, text)| {
                    let mut row = vec![
                        project.as_str().into(),
                        table.as_str().into(),
                        version.as_str().into(),
                        text.as_deref().map(crate::schema::fingerprint).into(),
                    ];
                    if sql.contains("schema_text") {
                        row.push(text.clone().into());
                    }
                    row
                })
                .collect())
        } else {
            Err(self.fail(format!("the fake backend does not know this query: {sql}")))
        }
    }

    /// Appends history rows from the values of a multi-row INSERT (13 per row).
    fn insert_history(&mut self, values: &[Value]) -> Result<(), DbError> {
        self.own_table(HISTORY_TABLE)?;
        let text = |value: &Value| value.as_text().map(str::to_string);
        for row in values.chunks(13) {
            let row = HistoryRow {
                id: Some(self.next_id),
                project: text(&row[0]).unwrap_or_default(),
                kind: text(&row[1]).unwrap_or_default(),
                name: text(&row[2]).unwrap_or_default(),
                from_version: text(&row[3]),
                to_version: text(&row[4]).unwrap_or_default(),
                checksum: text(&row[5]),
                started_at: text(&row[6]).unwrap_or_default(),
                finished_at: text(&row[7]).unwrap_or_default(),
                duration_ms: row[8].as_int().unwrap_or(0),
                host: text(&row[9]).unwrap_or_default(),
                pid: row[10].as_int().unwrap_or(0),
                success: row[11].as_int().unwrap_or(0) != 0,
                error: text(&row[12]),
                reason: None,
            };
            self.next_id += 1;
            self.data.history.push(row);
        }
        Ok(())
    }

    /// `INSERT INTO upgrader_version …` with (project, version, …): an upsert replaces
    /// the row, a plain insert of a project already there fails.
    fn insert_version(&mut self, params: &[Value], upsert: bool) -> Result<u64, DbError> {
        self.own_table(VERSION_TABLE)?;
        let (Some(project), Some(version)) = (params[0].as_text(), params[1].as_text()) else {
            return Err(self.fail("version and project must be text".into()));
        };
        if !upsert && self.data.versions.contains_key(project) {
            return Err(self.fail(format!(
                "duplicate key: upgrader_version already has {project}"
            )));
        }
        self.data.versions.insert(project.into(), version.into());
        Ok(1)
    }

    /// `UPDATE upgrader_version …` with (version, now, project): rows changed.
    fn update_version(&mut self, values: &[Value]) -> Result<u64, DbError> {
        self.own_table(VERSION_TABLE)?;
        let (Some(version), Some(project)) = (values[0].as_text(), values[2].as_text()) else {
            return Err(self.fail("version and project must be text".into()));
        };
        match self.data.versions.get_mut(project) {
            Some(recorded) => {
                *recorded = version.to_string();
                Ok(1)
            }
            None => Ok(0),
        }
    }

    fn bookkeeping(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        if sql.starts_with(UPDATE_VERSION) {
            self.update_version(params)
        } else if let Some(rest) = sql.strip_prefix(INSERT_VERSION) {
            let upsert = UPSERT.iter().any(|clause| rest.starts_with(clause));
            self.insert_version(params, upsert)
        } else if sql.starts_with(INSERT_HISTORY) {
            self.insert_history(params)?;
            Ok((params.len() / 13) as u64)
        } else if sql.starts_with(WITH_HISTORY) {
            let (rows, version) = params.split_at(params.len() - 3);
            self.insert_history(rows)?;
            self.insert_version(version, true)
        } else if sql.starts_with(DELETE_SCHEMA) {
            self.own_table("upgrader_schema")?;
            let text = |value: &Value| value.as_text().unwrap_or_default().to_string();
            let (project, version) = (text(&params[0]), text(&params[1]));
            let tables: Vec<String> = params[2..].iter().map(text).collect();
            let before = self.data.schema.len();
            self.data
                .schema
                .retain(|row| !(row.0 == project && row.2 == version && tables.contains(&row.1)));
            Ok((before - self.data.schema.len()) as u64)
        } else if sql.starts_with(INSERT_SCHEMA) {
            self.own_table("upgrader_schema")?;
            let text = |value: &Value| value.as_text().map(str::to_string);
            for row in params.chunks(6) {
                self.data.schema.push((
                    text(&row[0]).unwrap_or_default(),
                    text(&row[1]).unwrap_or_default(),
                    text(&row[2]).unwrap_or_default(),
                    text(&row[3]),
                ));
            }
            Ok((params.len() / 6) as u64)
        } else {
            Err(self.fail(format!(
                "the fake backend does not know this statement: {sql}"
            )))
        }
    }

    /// A statement of a script or of upgrader's own DDL takes effect.
    fn apply(&mut self, sql: &str) {
        if let Some(rest) = sql.strip_prefix(CREATE_OWN) {
            let name = rest.split_whitespace().next().unwrap_or_default();
            self.data.own_tables.insert(format!("upgrader_{name}"));
            return;
        }
        if let Some(rest) = sql.strip_prefix(DROP_OWN) {
            let name = rest.split_whitespace().next().unwrap_or_default();
            self.data.own_tables.remove(&format!("upgrader_{name}"));
            self.data.schema.clear();
            return;
        }
        let words: Vec<&str> = sql.split_whitespace().collect();
        if let [create, table, name, ..] = words[..] {
            if create.eq_ignore_ascii_case("CREATE") && table.eq_ignore_ascii_case("TABLE") {
                let name = name.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_');
                self.data.user_tables.insert(name.to_string());
            }
        }
        self.data.applied.push(sql.to_string());
    }
}

impl Backend for Fake {
    fn dialect(&self) -> Dialect {
        self.state.borrow().dialect
    }

    fn execute(&mut self, sql: &str) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        let in_transaction = state.before.is_some();
        state.log.push(Call::Execute {
            sql: sql.into(),
            in_transaction,
        });
        state.require_lock("execute");
        if state.injected(sql) {
            return Err(state.fail(format!("injected failure of `{sql}`")));
        }
        state.apply(sql);
        let injected = state
            .faults
            .implicit_commit
            .as_deref()
            .is_some_and(|pattern| sql.contains(pattern));
        if injected {
            state.faults.implicit_commit = None;
        }
        if (injected || (state.dialect == Dialect::MySql && is_ddl(sql))) && state.before.is_some()
        {
            state.before = None;
            state.log.push(Call::ImplicitCommit);
        }
        Ok(())
    }

    fn execute_params(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut state = self.state.borrow_mut();
        let at = state.log.len();
        state.log.push(Call::ExecuteParams {
            sql: sql.into(),
            params: params.to_vec(),
            changed: 0,
        });
        state.require_lock("execute_params");
        if state.injected(sql) {
            return Err(state.fail(format!("injected failure of `{sql}`")));
        }
        let changed = state.bookkeeping(sql, params)?;
        if let Call::ExecuteParams {
            changed: logged, ..
        } = &mut state.log[at]
        {
            *logged = changed;
        }
        Ok(changed)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Query(sql.into()));
        state.answer(sql, params)
    }

    fn query_own_table(
        &mut self,
        table: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Vec<Vec<Value>>>, DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Query(sql.into()));
        if !state.data.own_tables.contains(table) {
            return Ok(None);
        }
        state.answer(sql, params).map(Some)
    }

    fn lock(&mut self, span: LockSpan) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Lock(span));
        if span == LockSpan::Transaction && state.locked == Some(LockSpan::Session) {
            state.misuse("lock(transaction) narrows a session lock");
        }
        if state.locked.is_none() {
            state.interfere(None);
        }
        state.locked = Some(span);
        Ok(())
    }

    fn unlock(&mut self) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Unlock);
        if state.before.is_some() {
            state.misuse("unlock inside a transaction");
        }
        state.locked = None;
        Ok(())
    }

    fn begin(&mut self) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Begin);
        state.require_lock("begin");
        if state.before.is_some() {
            state.misuse("begin inside a transaction");
            return Err(state.fail("there is already a transaction in progress".into()));
        }
        state.before = Some(state.data.clone());
        Ok(())
    }

    fn commit(&mut self) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Commit);
        if state.before.is_none() {
            state.misuse("commit outside a transaction");
            return Err(state.fail("cannot commit: no transaction is active".into()));
        }
        state.commits += 1;
        if state.faults.commit == Some(state.commits) {
            return Err(state.fail("injected failure of the commit".into()));
        }
        state.before = None;
        let commits = state.commits;
        state.interfere(Some(commits));
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        let before = state.before.take();
        state.log.push(Call::Rollback {
            open: before.is_some(),
        });
        if let Some(before) = before {
            state.data = before;
        }
        Ok(())
    }

    fn lock_outlives_commit(&self) -> bool {
        self.state.borrow().dialect != Dialect::Sqlite
    }

    fn commit_and_chain(&mut self) -> Result<bool, DbError> {
        let mut state = self.state.borrow_mut();
        if state.dialect == Dialect::Sqlite {
            return Ok(false);
        }
        state.log.push(Call::CommitAndChain);
        if state.before.is_none() {
            state.misuse("commit and chain outside a transaction");
            return Err(state.fail("cannot commit: no transaction is active".into()));
        }
        if state.locked != Some(LockSpan::Session) {
            state.misuse("commit and chain without a session lock");
        }
        state.commits += 1;
        if state.faults.commit == Some(state.commits) {
            return Err(state.fail("injected failure of the commit".into()));
        }
        let commits = state.commits;
        state.interfere(Some(commits));
        state.before = Some(state.data.clone());
        Ok(true)
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::TableExists(name.into()));
        Ok(state.data.own_tables.contains(name) || state.data.user_tables.contains(name))
    }

    fn table_names(&mut self) -> Result<Vec<String>, DbError> {
        Ok(self
            .state
            .borrow()
            .data
            .user_tables
            .iter()
            .cloned()
            .collect())
    }

    fn user_table_count(&mut self) -> Result<u64, DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::UserTableCount);
        Ok(state.data.user_tables.len() as u64)
    }

    fn resume_after_implicit_commit(&mut self) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        // MySQL's starts a transaction again (its DDL committed the last one); elsewhere
        // DDL did not commit, and there is nothing to resume.
        let opened = state.dialect == Dialect::MySql && state.before.is_none();
        state.log.push(Call::ResumeAfterImplicitCommit { opened });
        if opened {
            state.before = Some(state.data.clone());
        }
        Ok(())
    }

    fn foreign_tables(&mut self) -> Result<Vec<ForeignTable>, DbError> {
        self.state.borrow_mut().log.push(Call::ForeignTables);
        Ok(Vec::new())
    }

    fn objects(&mut self) -> Result<Vec<DbObject>, DbError> {
        let mut state = self.state.borrow_mut();
        state.log.push(Call::Objects);
        if state.dialect != Dialect::MySql {
            return Ok(Vec::new());
        }
        let data = &state.data;
        Ok(data
            .own_tables
            .iter()
            .chain(&data.user_tables)
            .map(|name| DbObject {
                kind: "TABLE".into(),
                name: name.clone(),
            })
            .collect())
    }

    fn drop_objects(&mut self, objects: &[DbObject]) -> Result<(), DbError> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        state.log.push(Call::DropObjects);
        for object in objects {
            // DDL: for good, whatever transaction is open.
            let sql = format!("DROP {} {}", object.kind, object.name);
            for data in std::iter::once(&mut state.data).chain(state.before.as_mut()) {
                data.user_tables.remove(&object.name);
                data.own_tables.remove(&object.name);
                data.applied.push(sql.clone());
            }
        }
        Ok(())
    }

    fn still_in_transaction(&mut self) -> Result<bool, DbError> {
        let mut state = self.state.borrow_mut();
        let open = state.before.is_some();
        state.log.push(Call::StillInTransaction(open));
        Ok(open)
    }

    fn max_statement_bytes(&mut self) -> Result<Option<StatementLimit>, DbError> {
        self.state.borrow_mut().log.push(Call::MaxStatementBytes);
        Ok(None)
    }
}

/// The fake against what [`super::state`] sends: when state.rs changes its SQL, this
/// says so here rather than through the runner's tests. (This whole file is test-only.)
mod tests {
    use super::*;

    fn row(project: &str, name: &str) -> HistoryRow {
        HistoryRow {
            id: None,
            project: project.into(),
            kind: "step".into(),
            name: name.into(),
            from_version: Some("1.0.0".into()),
            to_version: "1.1.0".into(),
            checksum: None,
            started_at: "t0".into(),
            finished_at: "t1".into(),
            duration_ms: 1,
            host: "h".into(),
            pid: 1,
            success: true,
            error: None,
            reason: None,
        }
    }

    #[test]
    fn keeps_schema_rows_as_state_writes_them() {
        let fake = Fake::new(Dialect::Sqlite).with_version("app", "1.0.0");
        let mut db = fake.backend();
        let db = db.as_mut();
        db.lock(LockSpan::Transaction).unwrap();
        let row = |table: &str, text: Option<&str>| state::SchemaRow {
            table: table.into(),
            text: text.map(Into::into),
            fingerprint: text.map(crate::schema::fingerprint),
        };
        state::write_schema_rows(
            db,
            "app",
            "1.0.0",
            &[row("a", Some("x")), row("b", None)],
            "t",
            false,
        )
        .unwrap();
        // Written again at the same version: replaced, not added.
        state::write_schema_rows(db, "app", "1.0.0", &[row("a", Some("y"))], "t", true).unwrap();
        let records = state::read_schema_records(db, &["app"], true, None).unwrap();
        let seen: Vec<(&str, Option<&str>)> = records
            .iter()
            .map(|(_, r)| (r.table.as_str(), r.text.as_deref()))
            .collect();
        assert_eq!(seen, [("b", None), ("a", Some("y"))]);
        assert!(state::read_schema_records(db, &["other"], false, None)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn answers_what_state_sends_and_rolls_back() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let fake = Fake::new(dialect);
            let mut db = fake.backend();
            let db = db.as_mut();
            assert_eq!(state::read_version(db, "app").unwrap(), None, "{dialect:?}");
            db.lock(LockSpan::Transaction).unwrap();
            db.begin().unwrap();
            state::ensure_in_transaction(db, "now").unwrap();
            state::record(
                db,
                &[row("app", "one"), row("mod", "m")],
                "app",
                "1.1.0",
                "now",
            )
            .unwrap();
            state::write_version(db, "mod", "2.0.0", "now").unwrap();
            db.execute("INSERT INTO t VALUES ('x')").unwrap();
            assert_eq!(
                state::read_versions(db, &["mod", "app", "none"]).unwrap(),
                [Some("2.0.0".into()), Some("1.1.0".into()), None],
                "{dialect:?}"
            );
            let names: Vec<String> = state::read_histories(db, &["app", "mod"])
                .unwrap()
                .into_iter()
                .map(|row| format!("{}:{}:{:?}", row.project, row.name, row.id))
                .collect();
            assert_eq!(names, ["app:one:Some(1)", "mod:m:Some(2)"], "{dialect:?}");
            db.rollback().unwrap();
            db.unlock().unwrap();
            // MySQL committed upgrader's tables with their DDL; nothing else stayed.
            let data = fake.durable();
            assert!(!data.versions.contains_key("app"), "{dialect:?}");
            assert!(
                data.history.is_empty() && data.applied.is_empty(),
                "{dialect:?}"
            );
            assert_eq!(fake.misuse(), Vec::<String>::new(), "{dialect:?}");
        }
    }

    #[test]
    fn shows_injected_and_unexpected_failures() {
        let fake = Fake::new(Dialect::Sqlite)
            .with_version("app", "1.0.0")
            .fail_execute("'b'", 2)
            .fail_commit(1);
        let mut db = fake.backend();
        db.lock(LockSpan::Session).unwrap();
        db.begin().unwrap();
        db.execute("INSERT INTO t VALUES ('b')").unwrap();
        assert!(db.execute("UPDATE t SET v = 'b'").is_err());
        assert!(db.commit().is_err());
        assert!(db.query("SELECT 1", &[]).is_err());
        db.rollback().unwrap();
        db.unlock().unwrap();
        assert!(db.commit().is_err());
        assert_eq!(
            fake.shape(),
            "lock(session) begin b b! commit! Query(\"SELECT 1\")! rollback unlock commit \
             MISUSE(commit outside a transaction)!"
        );
        assert_eq!(fake.misuse(), ["commit outside a transaction"]);
    }
}
