//! Preparing a plan before the lock: every script read, split and judged by the guard,
//! every plugin step resolved, every step's checksum computed; and `lint`, which is the
//! same reading without a database.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::checksum::{LegacyChecksum, StepChecksum};
use super::{AppPlan, Engine, LintFinding, Project};
use crate::db::StatementLimit;
use crate::error::Error;
use crate::manifest::{Action, SqlSource, StepTransaction};
use crate::plan::{ItemKind, PlanItem};
use crate::plugin;
use crate::sql::{self, guard, Dialect};

/// A statement ready to send, with where it came from.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub(super) statement: sql::Statement,
    /// `file:line:column`.
    pub(super) origin: String,
}

/// A plugin step resolved before the run, with the manifest position that names it.
#[derive(Debug, Clone)]
pub(super) struct PreparedPlugin {
    pub(super) step: plugin::ResolvedStep,
    /// `upgrade.xml:line:column` of the `<plugin>` element.
    pub(super) origin: String,
}

/// Plugin steps resolved so far in one preparation: a library is looked for and checked
/// once per run, however many steps call it.
pub(super) type ResolvedSteps = std::collections::HashMap<(String, String), plugin::ResolvedStep>;

/// One action of an item, ready to run.
#[derive(Debug, Clone)]
pub(super) enum Work {
    Sql(Prepared),
    /// A script too large to keep in memory, read again statement by statement as it runs.
    Streamed(Streamed),
    Plugin(PreparedPlugin),
}

impl Work {
    pub(super) fn sql(&self) -> Option<&Prepared> {
        match self {
            Work::Sql(prepared) => Some(prepared),
            Work::Streamed(_) | Work::Plugin(_) => None,
        }
    }
}

/// A script read, split and guarded while preparing without being kept: a run holds at
/// most one of its statements at a time. It is read again when it runs, and refused if
/// its content changed in between.
#[derive(Debug, Clone)]
pub(super) struct Streamed {
    /// The directory of the script's project (which it must stay inside).
    pub(super) dir: PathBuf,
    /// The script's path.
    pub(super) path: PathBuf,
    /// The script as its statements' origins name it (relative to the project).
    pub(super) file: String,
    /// SHA-256 of its bytes when prepared.
    pub(super) sha256: Vec<u8>,
}

/// A script larger than this is streamed rather than kept (see [`Streamed`]).
pub(super) const KEEP_SCRIPT_BYTES: u64 = 1 << 20;
/// Scripts are kept in memory only up to this much in all, so that a plan of many
/// scripts does not hold them all either.
pub(super) const KEEP_TOTAL_BYTES: u64 = 32 << 20;

/// What preparing a plan carries from one item to the next.
pub(super) struct Preparing {
    pub(super) dialect: Dialect,
    /// The largest statement the database accepts; a larger one refuses the run up front.
    pub(super) limit: Option<StatementLimit>,
    /// Plugin steps resolved so far.
    pub(super) resolved: ResolvedSteps,
    /// Bytes of script kept in memory so far.
    pub(super) kept: u64,
    /// Whether plugin steps are resolved (loading their libraries); `verify` only needs
    /// their checksums.
    pub(super) resolve_plugins: bool,
}

/// A step's checksums: the one runs record now, and the one earlier runs recorded (see
/// [`super::checksum`]).
#[derive(Debug, Clone)]
pub(super) struct Checksums {
    pub(super) tokens: String,
    pub(super) legacy: String,
}

impl Preparing {
    pub(super) fn new(dialect: Dialect, limit: Option<StatementLimit>) -> Preparing {
        Preparing {
            dialect,
            limit,
            resolved: ResolvedSteps::new(),
            kept: 0,
            resolve_plugins: true,
        }
    }

    /// Statements of a script about `length` bytes long, refusing any longer than the
    /// database accepts.
    pub(super) fn statements<R: std::io::Read>(
        &self,
        reader: R,
        length: u64,
    ) -> sql::Statements<R> {
        let statements = sql::Statements::new(reader, self.dialect).size_hint(length);
        match &self.limit {
            Some(limit) => statements.max_statement(
                usize::try_from(limit.bytes).unwrap_or(usize::MAX),
                format!("the database's limit ({})", limit.setting),
            ),
            None => statements,
        }
    }
}

/// A reader that hashes what passes through it.
pub(super) struct Hashing<'h, R> {
    pub(super) inner: R,
    /// The script's own SHA-256 (to notice it changed before it runs).
    pub(super) own: &'h mut Sha256,
    /// The step's legacy checksum, when it is being computed.
    pub(super) step: Option<&'h mut LegacyChecksum>,
}

impl<R: std::io::Read> std::io::Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.own.update(&buf[..read]);
        if let Some(step) = self.step.as_mut() {
            step.sql_text(&buf[..read]);
        }
        Ok(read)
    }
}

/// The guard's verdict on a statement of an install or a step.
pub(super) fn judge(
    statement: &sql::Statement,
    install: bool,
    transaction: StepTransaction,
    dialect: Dialect,
) -> Result<(), guard::Refusal> {
    if transaction == StepTransaction::NoneUnsafe {
        // A step that runs alone may commit, but may still not touch upgrader's own
        // tables or locks.
        guard::check_always(statement, dialect)
    } else if install {
        guard::check_install(statement, dialect)
    } else {
        guard::check(statement, dialect)
    }
}

/// The guard's verdict on one prepared statement, as a finding.
pub(super) fn guard_finding(
    project: &str,
    step: &str,
    install: bool,
    transaction: StepTransaction,
    prepared: &Prepared,
    dialect: Dialect,
) -> Option<LintFinding> {
    let refusal = judge(&prepared.statement, install, transaction, dialect).err()?;
    Some(LintFinding {
        project: project.to_string(),
        fixed_by_transaction_none: !install
            && transaction == StepTransaction::Shared
            && guard::commits_implicitly(&prepared.statement, dialect),
        step: step.to_string(),
        location: prepared.origin.clone(),
        statement: sql::abbreviate(&prepared.statement.text),
        reason: refusal.reason,
        dialect: dialect.name(),
    })
}

#[derive(Debug, Clone)]
pub(super) struct PreparedItem {
    /// The item's project: an index into the application's projects.
    pub(super) package: usize,
    pub(super) item: PlanItem,
    pub(super) work: Vec<Work>,
    pub(super) checksum: Option<String>,
    pub(super) transaction: StepTransaction,
    /// The first statement the guard refuses, if any: the run fails on it before sending
    /// anything. Boxed: nearly always none, and a run holds an item per step.
    pub(super) refusal: Option<Box<LintFinding>>,
}

impl Engine {
    /// The actions and transaction use of a plan item; none for a version-only bump.
    pub(super) fn actions_of<'p>(
        project: &'p Project,
        item: &PlanItem,
    ) -> Option<(&'p [Action], StepTransaction)> {
        let manifest = &project.manifest;
        match item.kind {
            ItemKind::Install => Some((
                &manifest
                    .install
                    .as_ref()
                    .expect("planned install exists")
                    .actions,
                StepTransaction::Shared,
            )),
            ItemKind::Step => {
                let step = &manifest.steps[item.step_index.expect("steps have an index")];
                Some((&step.actions, step.transaction))
            }
            ItemKind::VersionOnly => None,
        }
    }

    /// Reads and splits the SQL of one install or step, resolves its plugin steps (which
    /// loads their libraries), and computes its checksum. Every statement is shown to
    /// `judge`; a large script is judged as it is read and then not kept.
    pub(super) fn work_of(
        project: &Project,
        name: &str,
        range: Option<(&str, &str)>,
        actions: &[Action],
        preparing: &mut Preparing,
        judge: &mut dyn FnMut(&Prepared),
    ) -> Result<(Vec<Work>, Checksums), Error> {
        let manifest = &project.manifest;
        let dialect = preparing.dialect;
        let mut checksum = LegacyChecksum::default();
        let mut tokens = StepChecksum::new(name, range);
        let mut work = Vec::new();
        for action in actions {
            match action {
                Action::Sql { source, .. } => {
                    let (origin_file, line_offset, first_column) = match source {
                        SqlSource::File(file) => (file.display().to_string(), 0, 1),
                        SqlSource::Inline { pos, .. } => (
                            manifest.path.display().to_string(),
                            pos.line - 1,
                            pos.column,
                        ),
                    };
                    let place = |line: u32, column: u32| {
                        let column = if line == 1 {
                            column + first_column - 1
                        } else {
                            column
                        };
                        format!("{origin_file}:{}:{column}", line + line_offset)
                    };
                    let split_error = |e: sql::SplitError| {
                        Error::Refused(format!(
                            "{}: step '{name}': cannot split the SQL: {}",
                            place(e.line, e.column),
                            e.message
                        ))
                    };
                    checksum.begin_sql();
                    let text = match source {
                        SqlSource::Inline { text, .. } => {
                            checksum.sql_text(text.as_bytes());
                            Some(text.to_string())
                        }
                        SqlSource::File(file) => {
                            let full = project.dir.join(file);
                            let unreadable = |reason: String| {
                                Error::Refused(format!(
                                    "{}: cannot read script for step '{name}': {reason}",
                                    full.display()
                                ))
                            };
                            let (handle, length) = crate::files::open(&project.dir, &full)
                                .map_err(|e| unreadable(e.reason()))?;
                            if length <= KEEP_SCRIPT_BYTES
                                && preparing.kept + length <= KEEP_TOTAL_BYTES
                            {
                                let bytes = crate::files::read_opened(
                                    handle,
                                    length,
                                    &full,
                                    KEEP_SCRIPT_BYTES,
                                )
                                .map_err(|e| unreadable(e.reason()))?;
                                let text = String::from_utf8(bytes).map_err(|e| {
                                    unreadable(format!("not UTF-8 text: {}", e.utf8_error()))
                                })?;
                                preparing.kept += text.len() as u64;
                                checksum.sql_text(text.as_bytes());
                                Some(text)
                            } else {
                                let mut own = Sha256::new();
                                let reader = Hashing {
                                    inner: handle,
                                    own: &mut own,
                                    step: Some(&mut checksum),
                                };
                                for statement in preparing.statements(reader, length) {
                                    let statement = statement.map_err(split_error)?;
                                    tokens.statement(&statement.text, dialect);
                                    judge(&Prepared {
                                        origin: place(statement.line, statement.column),
                                        statement,
                                    });
                                }
                                work.push(Work::Streamed(Streamed {
                                    dir: project.dir.clone(),
                                    path: full,
                                    file: origin_file.clone(),
                                    sha256: own.finalize().to_vec(),
                                }));
                                None
                            }
                        }
                    };
                    checksum.end_sql();
                    if let Some(text) = text {
                        for statement in preparing.statements(text.as_bytes(), text.len() as u64) {
                            let statement = statement.map_err(split_error)?;
                            tokens.statement(&statement.text, dialect);
                            let prepared = Prepared {
                                origin: place(statement.line, statement.column),
                                statement,
                            };
                            judge(&prepared);
                            work.push(Work::Sql(prepared));
                        }
                    }
                }
                Action::Plugin {
                    library,
                    method,
                    pos,
                } => {
                    checksum.plugin(library, method);
                    tokens.plugin(library, method);
                    if !preparing.resolve_plugins {
                        continue;
                    }
                    let origin = format!("{}:{}:{}", manifest.path.display(), pos.line, pos.column);
                    let key = (library.clone(), method.clone());
                    let step = match preparing.resolved.get(&key) {
                        Some(step) => step.clone(),
                        None => {
                            let step =
                                plugin::resolve(&project.dir, library, method).map_err(|e| {
                                    Error::Refused(format!("{origin}: step '{name}': {e}"))
                                })?;
                            preparing.resolved.insert(key, step.clone());
                            step
                        }
                    };
                    work.push(Work::Plugin(PreparedPlugin { step, origin }));
                }
            }
        }
        // Most items have one or two statements, and a run holds an item per step.
        work.shrink_to_fit();
        Ok((
            work,
            Checksums {
                tokens: tokens.finish(),
                legacy: checksum.finish(),
            },
        ))
    }

    /// Reads every script of the plan, splits it, guards each statement and computes each
    /// step's checksum, so that nothing unreadable is found mid-run. A script that cannot
    /// be read or split refuses the run here, before the lock; a statement the guard
    /// refuses is kept with its item, and fails the run as soon as it holds the lock.
    pub(super) fn prepare(
        &self,
        plan: &AppPlan,
        dialect: Dialect,
        limit: Option<StatementLimit>,
    ) -> Result<Vec<PreparedItem>, Error> {
        let mut prepared = Vec::with_capacity(plan.order.len());
        let mut preparing = Preparing::new(dialect, limit);
        for (package, item) in plan.items() {
            let project = &self.app.projects[package];
            let Some((actions, transaction)) = Self::actions_of(project, item) else {
                prepared.push(PreparedItem {
                    package,
                    item: item.clone(),
                    work: Vec::new(),
                    checksum: None,
                    transaction: StepTransaction::Shared,
                    refusal: None,
                });
                continue;
            };
            // Judged now, acted on once the run holds the lock (see `Runner::refuse_prepared`).
            let mut refusal = None;
            let install = item.kind == ItemKind::Install;
            let (from, to) = (
                item.from.as_ref().map(ToString::to_string),
                item.to.to_string(),
            );
            let range = match (install, &from) {
                (false, Some(from)) => Some((from.as_str(), to.as_str())),
                _ => None,
            };
            let (work, checksum) = Self::work_of(
                project,
                &item.name,
                range,
                actions,
                &mut preparing,
                &mut |statement| {
                    if refusal.is_none() {
                        refusal = guard_finding(
                            &project.name,
                            &item.name,
                            install,
                            transaction,
                            statement,
                            dialect,
                        )
                        .map(Box::new);
                    }
                },
            )?;
            prepared.push(PreparedItem {
                package,
                item: item.clone(),
                work,
                checksum: Some(checksum.tokens),
                transaction,
                refusal,
            });
        }
        Ok(prepared)
    }

    /// Every statement in the manifest's SQL (install and all steps) that the guard would
    /// refuse on `dialect`, and every script that cannot be read or split. Touches no
    /// database. Steps with `transaction="none"` are judged only by the rules that hold
    /// everywhere (upgrader's own tables and locks).
    pub fn lint(&self, dialect: Dialect) -> Vec<LintFinding> {
        self.app
            .projects
            .iter()
            .flat_map(|project| Self::lint_project(project, dialect))
            .collect()
    }

    fn lint_project(project: &Project, dialect: Dialect) -> Vec<LintFinding> {
        let manifest = &project.manifest;
        let install = manifest
            .install
            .iter()
            .map(|i| ("install", &i.actions[..], StepTransaction::Shared, true));
        let steps = manifest
            .steps
            .iter()
            .map(|s| (s.name.as_str(), &s.actions[..], s.transaction, false));
        let mut findings = Vec::new();
        for (name, actions, transaction, is_install) in install.chain(steps) {
            // Plugins are resolved at run time; lint reads the SQL actions only.
            let sql: Vec<Action> = actions
                .iter()
                .filter(|a| matches!(a, Action::Sql { .. }))
                .cloned()
                .collect();
            let mut preparing = Preparing::new(dialect, None);
            let mut found = Vec::new();
            let read = Self::work_of(
                project,
                name,
                None,
                &sql,
                &mut preparing,
                &mut |statement| {
                    found.extend(guard_finding(
                        &project.name,
                        name,
                        is_install,
                        transaction,
                        statement,
                        dialect,
                    ))
                },
            );
            findings.append(&mut found);
            match read {
                Ok(_) => {}
                Err(error) => findings.push(LintFinding {
                    project: project.name.clone(),
                    step: name.to_string(),
                    location: String::new(),
                    statement: String::new(),
                    reason: error.to_string(),
                    dialect: dialect.name(),
                    fixed_by_transaction_none: false,
                }),
            }
        }
        findings
    }
}

/// The tables a project's `<install>` creates (`CREATE TABLE` in its SQL; a plugin's are
/// unknown): a package without a recorded version installs only when none of them exist.
pub(super) fn install_tables(project: &Project, dialect: Dialect) -> Vec<String> {
    let Some(install) = &project.manifest.install else {
        return Vec::new();
    };
    let mut tables = Vec::new();
    for action in &install.actions {
        let Action::Sql { source, .. } = action else {
            continue;
        };
        let text = match source {
            SqlSource::Inline { text, .. } => text.to_string(),
            SqlSource::File(file) => {
                let full = project.dir.join(file);
                // Unreadable here, the run reports it when it prepares the install.
                match crate::files::read(&project.dir, &full, crate::files::MANIFEST_LIMIT) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Err(_) => continue,
                }
            }
        };
        for statement in sql::Statements::from_str(&text, dialect).map_while(Result::ok) {
            if let Some(table) = sql::created_table(&statement.text, dialect) {
                tables.push(table);
            }
        }
    }
    tables
}
