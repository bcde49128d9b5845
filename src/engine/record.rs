//! Schema records written by a run: just before a commit that makes a version durable,
//! one `upgrader_schema` row per project table whose normalized text is new or changed
//! (a row without text for a dropped table), in the same transaction.
//!
//! Which tables are a project's: those it has records for (the newest with text), plus
//! the tables nobody owns that the run made: given to the project whose `CREATE TABLE`
//! named them (read by the SQL lexer), else, for a table the run's DDL named or after a
//! plugin (a rename's new name, a plugin's table), to the first project that ran
//! anything. A root project with no records yet (a database adopted at its initial
//! version, or recorded before this existed) also takes every table no other project
//! has: what was there before upgrader. Tables nobody claims (made by hand) are left
//! alone.
//!
//! When: with the run's last commit, once per run, whatever the transaction mode. A run
//! that commits along the way (`--transaction per-step`, `transaction="none"` steps) and
//! then fails records what stayed committed with its failure row; a run killed between
//! two commits leaves those tables to the next run's recording.
//!
//! Cost: one query reads the records' fingerprints of the tables that can get a row
//! (those the run created or whose DDL named them; every table when adopting, or after a
//! plugin or a `DO` block) and whether the root has any; then the catalog of those
//! tables only, a batch at a time (read, normalized, written, dropped), so that a run
//! that alters one table of a thousand reads one table's catalog in one statement, a run
//! of data-only steps none, and a run that made a thousand tables on a server never
//! holds more than a hundred tables' facts.

use std::collections::{HashMap, HashSet};

use super::now;
use super::runner::Runner;
use crate::db::state::{self, SchemaRow};
use crate::db::DbError;
use crate::schema::{self, Recorded, TableSchema};
use crate::sql::{self, Dialect, Statement};
use crate::version::Version;

/// What a run has seen since it last recorded schemas.
#[derive(Debug, Default)]
pub(super) struct SchemaWatch {
    /// Whether something since the last recording may have changed a schema.
    pub(super) dirty: bool,
    /// Per project: tables its statements created since the last recording (lower-cased).
    pub(super) created: Vec<HashSet<String>>,
    /// Per project: whether it applied anything since the last recording.
    pub(super) touched: Vec<bool>,
    /// Tables named by DDL the run sent (lower-cased): only these (and tables new, gone or
    /// adopted) are recorded anew, so that a run never records a hand-made change to a
    /// table it did not touch as its own (`verify` goes on reporting it).
    pub(super) altered: HashSet<String>,
    /// The same tables' names as the DDL spelled them (unquoted, in their case):
    /// PostgreSQL's catalog and records are searched by exact name, and a name is one of
    /// these or its lower case.
    pub(super) spelled: HashSet<String>,
    /// Whether the run may have changed any table (a plugin ran, an install, DDL whose
    /// tables could not be read).
    pub(super) altered_all: bool,
    /// Set for the run's last commit (or the record of a failure after commits): schemas
    /// are recorded then only.
    pub(super) at_end: bool,
}

impl SchemaWatch {
    /// At the start of a run of `projects` projects. Nothing is read: the catalog is
    /// read once, when the run records (a first look at a server's catalog costs it as
    /// much as the rest of the recording).
    pub(super) fn start(projects: usize) -> SchemaWatch {
        SchemaWatch {
            dirty: true,
            created: vec![HashSet::new(); projects],
            touched: vec![false; projects],
            altered: HashSet::new(),
            spelled: HashSet::new(),
            altered_all: false,
            at_end: false,
        }
    }

    /// A statement of `project` was sent: DDL makes the next commit record schemas.
    pub(super) fn sent(&mut self, project: usize, statement: &Statement, dialect: sql::Dialect) {
        self.touched[project] = true;
        let first = statement.keywords.split(' ').next().unwrap_or_default();
        // Code that may run DDL of its own (a PostgreSQL `DO` block, a procedure, dynamic
        // SQL): any table may have changed.
        if ["DO", "CALL", "EXECUTE"].contains(&first) {
            self.dirty = true;
            self.altered_all = true;
            return;
        }
        if !["CREATE", "ALTER", "DROP", "RENAME"].contains(&first) {
            return;
        }
        self.dirty = true;
        if first == "CREATE" {
            if let Some(table) = sql::created_table(&statement.text, dialect) {
                self.created[project].insert(table.to_lowercase());
                self.spelled.insert(table);
                return;
            }
        }
        // A rename's new name may not be among the relations the parser reports.
        let renames = sql::find_word(&statement.text, dialect, |word| {
            word.eq_ignore_ascii_case("RENAME").then_some(())
        })
        .is_some();
        match sql::relations(&statement.text, dialect) {
            Some(relations) if !relations.is_empty() && !renames => {
                for name in relations {
                    if let Some(table) = name.last() {
                        self.altered.insert(table.to_lowercase());
                        self.spelled.insert(table.clone());
                    }
                }
            }
            _ => self.altered_all = true,
        }
    }

    /// `project` ran something whose statements upgrader does not see one by one (a
    /// plugin): the next commit records schemas.
    pub(super) fn opaque(&mut self, project: usize) {
        self.touched[project] = true;
        self.dirty = true;
        self.altered_all = true;
    }
}

/// A project's records by table.
type ByTable<'r> = HashMap<&'r str, Vec<&'r Recorded>>;

/// The record of `table` that holds at `version`: the newest at or below it.
fn holding<'r>(records: &ByTable<'r>, table: &str, version: &Version) -> Option<&'r Recorded> {
    records
        .get(table)?
        .iter()
        .filter(|r| r.version <= *version)
        .max_by(|a, b| a.version.cmp(&b.version))
        .copied()
}

/// How many tables' facts a run reads, normalizes and writes at a time: their catalog
/// rows and texts are what a run holds at its peak, and a batch keeps that small however
/// many tables a run made (a hundred tables' catalog costs PostgreSQL little more per
/// table than a thousand: a planning and a round trip per batch). SQLite's catalog is in
/// the process, but each batch scans all of `sqlite_schema`; and MariaDB lists the
/// database's directory for each `information_schema` query (six per batch): bigger
/// batches (1,000 tables in batches of 100 cost 110 ms there, in one batch 35 ms).
fn tables_per_batch(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite | Dialect::MySql => 1000,
        Dialect::Postgres => 100,
    }
}

/// `names` in batches of `size` (`Some` each: those tables only).
fn batches(names: Vec<String>, size: usize) -> Vec<Option<Vec<String>>> {
    names.chunks(size).map(|c| Some(c.to_vec())).collect()
}

impl Runner<'_> {
    /// Records the schema of every project's tables that changed, at the version each
    /// project has reached in the open transaction (see the module's documentation).
    pub(super) fn record_schemas(&mut self) -> Result<(), DbError> {
        if !self.schemas.dirty {
            return Ok(());
        }
        let watch = &self.schemas;
        // The tables this run made or named by their DDL, as spelled and in lower case
        // (what PostgreSQL folds an unquoted name to).
        let mut named: Vec<String> = watch
            .altered
            .iter()
            .chain(watch.created.iter().flatten())
            .chain(&watch.spelled)
            .cloned()
            .collect();
        named.sort_unstable();
        named.dedup();
        let projects = &self.engine.app.projects;
        let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
        let root = names[0];
        let dialect = self.db.dialect();
        let batch = tables_per_batch(dialect);
        // Every record when every table is read, or when the run named more tables than
        // a batch (their names would cost more to send than the records to read).
        let (mut all, mut adopting) = if watch.altered_all || named.len() >= batch {
            let (all, _) = state::read_run_records(self.db, &names, root, None)?;
            let adopting = !all.iter().any(|(project, _)| project == root);
            (all, adopting)
        } else {
            let (all, root_has) = state::read_run_records(self.db, &names, root, Some(&named))?;
            (all, !root_has)
        };
        if named.is_empty() && !watch.altered_all && !adopting {
            // No table can have changed but by hand (which must stay drift), and there is
            // nothing to adopt.
            self.schemas.touched.iter_mut().for_each(|t| *t = false);
            self.schemas.dirty = false;
            return Ok(());
        }
        if adopting && !watch.altered_all && named.len() < batch && names.len() > 1 {
            // Adopting reads every table, and so every project's records (once per
            // database: from then on the root has records; a root alone, without any,
            // has none to read).
            all = state::read_run_records(self.db, &names, root, None)?.0;
            adopting = !all.iter().any(|(project, _)| project == root);
        }
        let mut records: Vec<ByTable> = vec![HashMap::new(); projects.len()];
        for (project, record) in &all {
            if let Some(index) = names.iter().position(|n| n == project) {
                records[index]
                    .entry(record.table.as_str())
                    .or_default()
                    .push(record);
            }
        }
        // Owner of each table: the project whose newest record of it has text.
        let mut owner: HashMap<String, usize> = HashMap::new();
        for (index, tables) in records.iter().enumerate() {
            for (table, list) in tables {
                let newest = list.iter().max_by(|a, b| a.version.cmp(&b.version));
                if newest.is_some_and(|r| r.fingerprint.is_some()) {
                    owner.entry(table.to_lowercase()).or_insert(index);
                }
            }
        }
        // Every table is read when adopting or after something that may have changed
        // any (SQLite's all at once: its catalog is in the process, and asking for a
        // thousand names costs more than reading them), else only the tables named.
        let every = adopting || watch.altered_all;
        let lookup: Vec<Option<Vec<String>>> = match (every, dialect) {
            (true, Dialect::Sqlite) => vec![None],
            (true, _) => {
                let names = self.db.table_names()?;
                match names.len() <= batch {
                    // One batch of all: no list of names to send and match.
                    true => vec![None],
                    false => batches(names, batch),
                }
            }
            (false, _) => batches(named, batch),
        };
        let now = now();
        let fallback = watch.touched.iter().position(|t| *t);
        // Tables found live (lower-cased), for the records of tables gone; and as named
        // (two spellings of one name, in two batches, find it twice on SQLite and MySQL).
        let mut present: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        for tables in lookup {
            let mut rows: Vec<Vec<SchemaRow>> = vec![Vec::new(); projects.len()];
            for facts in self.db.table_schemas(tables.as_deref())? {
                if !seen.insert(facts.name.clone()) {
                    continue;
                }
                let watch = &self.schemas;
                let key = facts.name.to_lowercase();
                // A table nobody owns that this run made or named: created by a
                // project's statement, else the first project that ran anything (a
                // plugin's table, a rename's new name); when adopting, the root.
                let by_create = || watch.created.iter().position(|c| c.contains(&key));
                let named = watch.altered_all || watch.altered.contains(&key);
                let Some(index) = owner
                    .get(&key)
                    .copied()
                    .or_else(by_create)
                    .or(fallback.filter(|_| named))
                    .or(adopting.then_some(0))
                else {
                    present.insert(key);
                    continue;
                };
                let Some(version) = &self.current[index] else {
                    present.insert(key);
                    continue;
                };
                let holds = holding(&records[index], &facts.name, version);
                let recorded = holds.and_then(|r| r.fingerprint.as_deref());
                // A recorded table this run did not alter keeps its record, however it
                // looks now: a change made by hand stays drift.
                let altered = watch.altered_all
                    || watch.altered.contains(&key)
                    || watch.created.iter().any(|c| c.contains(&key))
                    || (index == 0 && adopting);
                present.insert(key);
                if recorded.is_some() && !altered {
                    continue;
                }
                let table: TableSchema = schema::schema_of(dialect, &facts);
                if recorded != Some(table.fingerprint.as_str()) {
                    rows[index].push(SchemaRow {
                        table: table.name,
                        text: Some(table.text),
                        fingerprint: Some(table.fingerprint),
                    });
                }
            }
            self.write_rows(&names, &records, rows, &now)?;
        }
        // Recorded with text, gone now: dropped (or renamed) by this run.
        let mut rows: Vec<Vec<SchemaRow>> = vec![Vec::new(); projects.len()];
        for (index, list) in records.iter().enumerate() {
            let Some(version) = &self.current[index] else {
                continue;
            };
            let mut gone: Vec<&str> = list
                .keys()
                .copied()
                .filter(|t| !present.contains(&t.to_lowercase()))
                .collect();
            gone.sort_unstable();
            for table in gone {
                let key = table.to_lowercase();
                let altered = self.schemas.altered_all || self.schemas.altered.contains(&key);
                if altered && holding(list, table, version).is_some_and(|r| r.fingerprint.is_some())
                {
                    rows[index].push(SchemaRow {
                        table: table.to_string(),
                        text: None,
                        fingerprint: None,
                    });
                }
            }
        }
        self.write_rows(&names, &records, rows, &now)?;
        let watch = &mut self.schemas;
        watch.created.iter_mut().for_each(HashSet::clear);
        watch.touched.iter_mut().for_each(|t| *t = false);
        watch.altered.clear();
        watch.spelled.clear();
        watch.altered_all = false;
        watch.dirty = false;
        Ok(())
    }

    /// Writes each project's `rows` at the version it reached; rows already recorded at
    /// that very version are replaced.
    fn write_rows(
        &mut self,
        names: &[&str],
        records: &[ByTable],
        rows: Vec<Vec<SchemaRow>>,
        now: &str,
    ) -> Result<(), DbError> {
        for (index, rows) in rows.into_iter().enumerate() {
            let Some(version) = self.current[index].as_ref().filter(|_| !rows.is_empty()) else {
                continue;
            };
            let replacing = rows.iter().any(|row| {
                records[index]
                    .get(row.table.as_str())
                    .is_some_and(|l| l.iter().any(|r| r.version == *version))
            });
            state::write_schema_rows(
                self.db,
                names[index],
                &version.as_str(),
                &rows,
                now,
                replacing,
            )?;
        }
        Ok(())
    }
}
