//! SQLite's facts cleaned: declared types upper-cased (SQLite keeps them as written), the
//! indexes SQLite makes for `UNIQUE`/`PRIMARY KEY` (`sqlite_autoindex_*`, named by their
//! order in the table) described by their constraints instead, and check constraints and
//! partial-index predicates read from the definitions with the SQL lexer (SQLite's catalog
//! keeps no other trace of them), token by token so that layout never counts.

use super::{
    column_line, constraint_line, index_line, squeeze, Cleaned, ConstraintKind, TableFacts,
};
use crate::sql::{significant_tokens, token_text, Dialect};

pub(super) fn clean(facts: &TableFacts) -> Cleaned {
    let columns = facts
        .columns
        .iter()
        .map(|column| {
            column_line(
                &column.name,
                &squeeze(&column.data_type).to_ascii_uppercase(),
                column.nullable,
                column
                    .default
                    .as_deref()
                    .map(|d| token_text(d, Dialect::Sqlite))
                    .as_deref(),
                column.extra.as_deref(),
            )
        })
        .collect();
    let mut constraints: Vec<String> = facts
        .constraints
        .iter()
        .filter(|c| c.kind != ConstraintKind::Check)
        .map(constraint_line)
        .collect();
    // Lexing a definition costs more than the rest of its table: only one that says
    // CHECK somewhere has a check to find.
    let may_check = |d: &&String| {
        d.as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"check"))
    };
    if let Some(definition) = facts.definition.as_ref().filter(may_check) {
        constraints.extend(
            checks(definition)
                .into_iter()
                .map(|check| format!("check ({check})")),
        );
    }
    let indexes = facts
        .indexes
        .iter()
        .filter(|index| !index.backs_constraint)
        .map(|index| {
            let predicate = index.definition.as_deref().and_then(predicate);
            index_line(index, None, predicate.as_deref())
        })
        .collect();
    let triggers = facts
        .triggers
        .iter()
        .map(|trigger| token_text(&trigger.definition, Dialect::Sqlite))
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

/// The expressions of every `CHECK (…)` in a `CREATE TABLE` text, tokens joined by spaces.
pub(super) fn checks(definition: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut tokens = significant_tokens(definition, Dialect::Sqlite).peekable();
    while let Some(token) = tokens.next() {
        if !token.eq_ignore_ascii_case("CHECK") || tokens.peek() != Some(&"(") {
            continue;
        }
        tokens.next();
        let mut depth = 1usize;
        let mut expression = Vec::new();
        for token in tokens.by_ref() {
            match token {
                "(" => depth += 1,
                ")" => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            expression.push(token);
        }
        found.push(expression.join(" "));
    }
    found
}

/// A `CREATE INDEX … WHERE predicate` text's predicate, tokens joined by spaces.
pub(super) fn predicate(definition: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut tokens = significant_tokens(definition, Dialect::Sqlite);
    for token in tokens.by_ref() {
        match token {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            word if depth == 0 && word.eq_ignore_ascii_case("WHERE") => {
                return Some(tokens.collect::<Vec<_>>().join(" "));
            }
            _ => {}
        }
    }
    None
}
