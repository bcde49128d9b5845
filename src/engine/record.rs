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
//! Cost: the records' fingerprints and the tables' names are read, and the catalog only
//! of the tables that can get a row (those the run created or whose DDL named them;
//! every table when adopting, or after a plugin or a `DO` block): a run that alters one
//! table of a thousand reads one table's catalog, a run of data-only steps none.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::now;
use super::runner::Runner;
use crate::db::state::{self, SchemaRow};
use crate::db::DbError;
use crate::schema::{self, Recorded, TableSchema};
use crate::sql::{self, Statement};
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

impl Runner<'_> {
    /// Records the schema of every project's tables that changed, at the version each
    /// project has reached in the open transaction (see the module's documentation).
    pub(super) fn record_schemas(&mut self) -> Result<(), DbError> {
        if !self.schemas.dirty {
            return Ok(());
        }
        let watch = &self.schemas;
        // The tables this run made or named by their DDL (lower-cased).
        let mut named: Vec<String> = watch
            .altered
            .iter()
            .chain(watch.created.iter().flatten())
            .cloned()
            .collect();
        named.sort_unstable();
        named.dedup();
        let adopting = !state::has_schema_records(self.db, &self.engine.app.projects[0].name)?;
        if named.is_empty() && !watch.altered_all && !adopting {
            // No table can have changed but by hand (which must stay drift), and there is
            // nothing to adopt.
            self.schemas.touched.iter_mut().for_each(|t| *t = false);
            self.schemas.dirty = false;
            return Ok(());
        }
        // Every table is read when adopting or after something that may have changed
        // any; else only the tables named.
        let only = match adopting || watch.altered_all {
            true => None,
            false => Some(named.as_slice()),
        };
        let dialect = self.db.dialect();
        let projects = &self.engine.app.projects;
        let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
        let all = state::read_schema_records(self.db, &names, false, only)?;
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
        let mut owner: BTreeMap<String, usize> = BTreeMap::new();
        for (index, tables) in records.iter().enumerate() {
            for (table, list) in tables {
                let newest = list.iter().max_by(|a, b| a.version.cmp(&b.version));
                if newest.is_some_and(|r| r.fingerprint.is_some()) {
                    owner.entry(table.to_lowercase()).or_insert(index);
                }
            }
        }
        let watch = &self.schemas;
        let live: Vec<TableSchema> = self
            .db
            .table_schemas(only)?
            .iter()
            .map(|facts| schema::schema_of(dialect, facts))
            .collect();
        let present: HashSet<String> = live.iter().map(|t| t.name.to_lowercase()).collect();
        let fallback = watch.touched.iter().position(|t| *t);
        for table in &live {
            let key = table.name.to_lowercase();
            if owner.contains_key(&key) {
                continue;
            }
            // A table nobody owns that this run made or named: created by a project's
            // statement, else the first project that ran anything (a plugin's table, a
            // rename's new name).
            let by_create = watch.created.iter().position(|c| c.contains(&key));
            let named = watch.altered_all || watch.altered.contains(&key);
            if let Some(index) = by_create.or(fallback.filter(|_| named)) {
                owner.insert(key, index);
            }
        }
        if adopting {
            for table in &live {
                owner.entry(table.name.to_lowercase()).or_insert(0);
            }
        }
        let now = now();
        for (index, list) in records.iter().enumerate() {
            let Some(version) = self.current[index].clone() else {
                continue;
            };
            let mut rows = Vec::new();
            for table in &live {
                if owner.get(&table.name.to_lowercase()) != Some(&index) {
                    continue;
                }
                let holds = holding(list, &table.name, &version);
                let recorded = holds.and_then(|r| r.fingerprint.as_deref());
                let key = table.name.to_lowercase();
                // A recorded table this run did not alter keeps its record, however it
                // looks now: a change made by hand stays drift.
                let altered = watch.altered_all
                    || watch.altered.contains(&key)
                    || watch.created.iter().any(|c| c.contains(&key))
                    || (index == 0 && adopting);
                if recorded.is_some() && !altered {
                    continue;
                }
                if recorded != Some(table.fingerprint.as_str()) {
                    rows.push(SchemaRow {
                        table: table.name.clone(),
                        text: Some(table.text.clone()),
                        fingerprint: Some(table.fingerprint.clone()),
                    });
                }
            }
            // Recorded with text, gone now: dropped (or renamed) by this run.
            let mut gone: Vec<&str> = list
                .keys()
                .copied()
                .filter(|t| !present.contains(&t.to_lowercase()))
                .collect();
            gone.sort_unstable();
            for table in gone {
                let key = table.to_lowercase();
                let altered = watch.altered_all || watch.altered.contains(&key);
                if altered
                    && holding(list, table, &version).is_some_and(|r| r.fingerprint.is_some())
                {
                    rows.push(SchemaRow {
                        table: table.to_string(),
                        text: None,
                        fingerprint: None,
                    });
                }
            }
            if !rows.is_empty() {
                // Rows already recorded at this very version are replaced.
                let replacing = rows.iter().any(|row| {
                    list.get(row.table.as_str())
                        .is_some_and(|l| l.iter().any(|r| r.version == version))
                });
                state::write_schema_rows(
                    self.db,
                    names[index],
                    &version.as_str(),
                    &rows,
                    &now,
                    replacing,
                )?;
            }
        }
        let watch = &mut self.schemas;
        watch.created.iter_mut().for_each(HashSet::clear);
        watch.touched.iter_mut().for_each(|t| *t = false);
        watch.altered.clear();
        watch.altered_all = false;
        watch.dirty = false;
        Ok(())
    }
}
