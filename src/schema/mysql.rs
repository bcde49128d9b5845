//! MySQL's and MariaDB's facts cleaned: MariaDB spells "no default" of a nullable column
//! as the text `NULL`; `DEFAULT_GENERATED` (MySQL 8) only says the default is an
//! expression; foreign keys and checks are described by what they do, not by their
//! generated names (`orders_ibfk_1`, `CONSTRAINT_1`); trigger bodies token by token.
//! Index names stay: the server derives them from the DDL, the same every time.

use super::{column_line, constraint_line, index_line, Cleaned, TableFacts};
use crate::sql::{token_text, Dialect};

pub(super) fn clean(facts: &TableFacts) -> Cleaned {
    let columns = facts
        .columns
        .iter()
        .map(|column| {
            let default = column
                .default
                .as_deref()
                .filter(|d| !(column.nullable && d.eq_ignore_ascii_case("NULL")));
            let extra = column.extra.as_deref().map(|extra| {
                extra
                    .split_whitespace()
                    .filter(|word| !word.eq_ignore_ascii_case("DEFAULT_GENERATED"))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_ascii_lowercase()
            });
            column_line(
                &column.name,
                &column.data_type.to_ascii_lowercase(),
                column.nullable,
                default,
                extra.as_deref(),
            )
        })
        .collect();
    let constraints = facts.constraints.iter().map(constraint_line).collect();
    let indexes = facts
        .indexes
        .iter()
        .filter(|index| !index.backs_constraint)
        .map(|index| index_line(index, index.method.as_deref(), index.predicate.as_deref()))
        .collect();
    let triggers = facts
        .triggers
        .iter()
        .map(|trigger| {
            format!(
                "{} {}",
                trigger.name,
                token_text(&trigger.definition, Dialect::MySql)
            )
        })
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
