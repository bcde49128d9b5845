//! Live tables against what runs recorded: per table unchanged, changed (with a unified
//! diff and the earlier recorded version it matches, if any) or missing; and the one
//! earlier version every table of a project matches (`verify --repair-version`). Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::TableSchema;
use crate::version::Version;

/// One row of `upgrader_schema`: a table's text at a version; no text for a table that
/// was dropped at that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The table.
    pub table: String,
    /// The version it was recorded at.
    pub version: Version,
    /// SHA-256 of its text; `None` when it was dropped.
    pub fingerprint: Option<String>,
    /// Its normalized text (when read with the texts); `None` when it was dropped.
    pub text: Option<String>,
}

/// What `verify` found for a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableState {
    /// As recorded.
    Unchanged,
    /// Different from what was recorded (or there again after being recorded dropped).
    Changed,
    /// Recorded, but not in the database.
    Missing,
}

/// One table's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    /// The table.
    pub table: String,
    /// Unchanged, changed or missing.
    pub state: TableState,
    /// The version whose record it was compared with.
    pub recorded_version: String,
    /// For a changed table: a unified diff from the recorded text to the live one.
    pub diff: Option<String>,
    /// For a changed table: the newest other recorded version it matches exactly.
    pub matches_version: Option<String>,
}

/// Records grouped by table, each table's oldest first.
fn by_table(records: &[Recorded]) -> BTreeMap<&str, Vec<&Recorded>> {
    let mut tables: BTreeMap<&str, Vec<&Recorded>> = BTreeMap::new();
    for record in records {
        tables.entry(&record.table).or_default().push(record);
    }
    for list in tables.values_mut() {
        list.sort_by(|a, b| a.version.cmp(&b.version));
    }
    tables
}

/// The record that holds at `version`: the newest at or below it (`None`: the newest).
fn effective<'r>(list: &[&'r Recorded], version: Option<&Version>) -> Option<&'r Recorded> {
    list.iter()
        .rev()
        .find(|record| version.is_none_or(|v| record.version <= *v))
        .copied()
}

/// Every recorded table of a project compared with the live tables, the records holding
/// at `db_version` (the version the database records for the project) as the reference.
/// Tables recorded only above that version, and tables recorded as dropped that are still
/// gone, are not listed.
pub fn compare(
    db_version: Option<&Version>,
    records: &[Recorded],
    live: &[TableSchema],
) -> Vec<TableCheck> {
    let live_text = |table: &str| {
        live.iter()
            .find(|t| t.name == table)
            .map(|t| t.text.as_str())
    };
    let mut checks = Vec::new();
    for (table, list) in by_table(records) {
        let Some(reference) = effective(&list, db_version) else {
            continue;
        };
        let now = live_text(table);
        let state = match (&reference.text, now) {
            (None, None) => continue,
            (Some(_), None) => TableState::Missing,
            (Some(text), Some(now)) if text == now => TableState::Unchanged,
            _ => TableState::Changed,
        };
        let (diff, matches_version) = match (state, now) {
            (TableState::Changed, Some(now)) => (
                Some(unified_diff(
                    reference.text.as_deref().unwrap_or_default(),
                    now,
                    &format!("{table} (recorded at {})", reference.version),
                    &format!("{table} (in the database)"),
                )),
                list.iter()
                    .rev()
                    .find(|r| r.version != reference.version && r.text.as_deref() == Some(now))
                    .map(|r| r.version.to_string()),
            ),
            _ => (None, None),
        };
        checks.push(TableCheck {
            table: table.to_string(),
            state,
            recorded_version: reference.version.to_string(),
            diff,
            matches_version,
        });
    }
    checks
}

/// A unified diff of two schema texts, with three lines of context.
pub fn unified_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

/// The newest version below `db_version` at which every recorded table of the project is
/// exactly as it is now (present with the same text, or absent), for
/// `verify --repair-version`; else why there is none, in words.
pub fn consistent_version(
    db_version: &Version,
    records: &[Recorded],
    live: &[TableSchema],
) -> Result<Version, String> {
    let tables = by_table(records);
    let live_text = |table: &str| {
        live.iter()
            .find(|t| t.name == table)
            .map(|t| t.text.as_str())
    };
    let matches_at = |list: &[&Recorded], table: &str, version: &Version| {
        effective(list, Some(version)).and_then(|r| r.text.as_deref()) == live_text(table)
    };
    if tables.is_empty() {
        return Err("no table of the project has a recorded schema".to_string());
    }
    if tables
        .iter()
        .all(|(table, list)| matches_at(list, table, db_version))
    {
        return Err(format!(
            "every table matches the schema recorded for {db_version}, the version the database records: nothing to repair"
        ));
    }
    let mut candidates: Vec<&Version> = records
        .iter()
        .map(|r| &r.version)
        .filter(|v| *v < db_version)
        .collect();
    candidates.sort();
    candidates.dedup();
    if let Some(found) = candidates.iter().rev().find(|v| {
        tables
            .iter()
            .all(|(table, list)| matches_at(list, table, v))
    }) {
        return Ok((*found).clone());
    }
    // Why not: each table that differs now, and the versions it alone would match.
    let mut unmatched = Vec::new();
    let mut matched = Vec::new();
    for (table, list) in &tables {
        if matches_at(list, table, db_version) {
            continue;
        }
        let versions: Vec<String> = candidates
            .iter()
            .filter(|v| matches_at(list, table, v))
            .map(ToString::to_string)
            .collect();
        if versions.is_empty() {
            unmatched.push(table.to_string());
        } else {
            matched.push(format!("{table} matches {}", versions.join(", ")));
        }
    }
    Err(if !unmatched.is_empty() {
        format!(
            "{} {} no recorded version",
            unmatched.join(", "),
            if unmatched.len() == 1 {
                "matches"
            } else {
                "match"
            }
        )
    } else {
        format!(
            "the tables disagree: {}; no one earlier version fits them all",
            matched.join("; ")
        )
    })
}
