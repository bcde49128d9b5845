//! PostgreSQL's facts cleaned: the server's own texts (`format_type`, `pg_get_expr`,
//! `pg_get_constraintdef`, `pg_get_indexdef`, `pg_get_triggerdef`) are already canonical;
//! constraints are described by their definition (a plain primary key or unique one by
//! its columns), never by their (generated) names, and
//! an index by its name, uniqueness, method, key columns (with `DESC`, `NULLS FIRST`,
//! `INCLUDE`) and predicate; an expression index by what follows `USING` in its definition
//! (not the schema-qualified table the definition repeats).

use super::{column_line, constraint_line, index_line, squeeze, Cleaned, TableFacts};

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
        .map(|constraint| match &constraint.definition {
            Some(definition) => squeeze(definition),
            // A plain primary key or unique constraint, named by its columns.
            None => constraint_line(constraint),
        })
        .collect();
    let indexes = facts
        .indexes
        .iter()
        .filter(|index| !index.backs_constraint)
        .map(|index| match index.definition.as_deref() {
            // An expression index: the server's definition from `USING` on.
            Some(definition) => {
                let unique = if index.unique { " unique" } else { "" };
                match definition.find(" USING ") {
                    Some(at) => format!("{}{unique} {}", index.name, &definition[at + 1..]),
                    None => format!("{}{unique} {definition}", index.name),
                }
            }
            None => index_line(index, index.method.as_deref(), index.predicate.as_deref()),
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
