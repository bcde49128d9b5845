//! PostgreSQL's facts cleaned: the server's own texts (`format_type`, `pg_get_expr`,
//! `pg_get_constraintdef`, `pg_get_indexdef`, `pg_get_triggerdef`) are already canonical;
//! constraints are described by their definition, never by their (generated) names, and
//! an index by its name and what follows `USING` (its method, keys and predicate), not by
//! the schema-qualified table its definition repeats.

use super::{column_line, squeeze, Cleaned, TableFacts};

pub(super) fn clean(facts: &TableFacts) -> Cleaned {
    let columns = facts
        .columns
        .iter()
        .map(|column| {
            column_line(
                &column.name,
                &column.data_type,
                column.nullable,
                column.default.as_deref(),
                column.extra.as_deref(),
            )
        })
        .collect();
    let constraints = facts
        .constraints
        .iter()
        .map(|constraint| squeeze(constraint.definition.as_deref().unwrap_or_default()))
        .collect();
    let indexes = facts
        .indexes
        .iter()
        .filter(|index| !index.backs_constraint)
        .map(|index| {
            let definition = index.definition.as_deref().unwrap_or_default();
            let unique = if definition.starts_with("CREATE UNIQUE") {
                " unique"
            } else {
                ""
            };
            match definition.find(" USING ") {
                Some(at) => format!("{}{unique} {}", index.name, &definition[at + 1..]),
                None => format!("{}{unique} {definition}", index.name),
            }
        })
        .collect();
    let triggers = facts
        .triggers
        .iter()
        .map(|trigger| squeeze(&trigger.definition))
        .collect();
    Cleaned {
        name: facts.name.clone(),
        columns,
        constraints,
        indexes,
        triggers,
        options: facts.options.clone(),
    }
}
