//! The text that sends steps that run alone, each followed by its record, in one
//! round trip (see [`crate::db::Backend::execute_alone_recorded`]), and where each
//! step's statements are in it.

use super::literal;
use crate::db::state;
use crate::db::AloneStep;

/// Steps that run alone and their records, as one multi-statement text (see
/// [`Backend::execute_alone_recorded`]), and where each step's statements are in it.
pub(super) struct RecordedBatch {
    pub(super) text: String,
    /// For each step: the index of its first statement among the text's results (its
    /// `SET @upgrader_sent`), and how many statements of its own follow.
    steps: Vec<(usize, usize)>,
}

/// Where a failed result of a [`RecordedBatch`] is.
#[derive(Debug, PartialEq)]
pub(super) enum At {
    /// The step's own statement at this index (0 also when nothing of it ran).
    Statement(usize),
    /// The step's record.
    Record,
    /// The closing `SELECT` of the steps' times.
    Times,
}

impl RecordedBatch {
    /// The step and the place in it of the result at `index`.
    pub(super) fn locate(&self, index: usize) -> (usize, At) {
        for (step, &(first, own)) in self.steps.iter().enumerate().rev() {
            if index >= first {
                return match index - first {
                    0 => (step, At::Statement(0)),
                    at if at <= own => (step, At::Statement(at - 1)),
                    // A record is 5 results: times, START, history, version, COMMIT.
                    at if at <= own + 5 => (step, At::Record),
                    _ => (self.steps.len(), At::Times),
                };
            }
        }
        (0, At::Statement(0))
    }
}

/// `@upgrader_ms0, @upgrader_ms1, …` for the first `steps` steps.
pub(super) fn times_list(steps: usize) -> String {
    (0..steps)
        .map(|k| format!("@upgrader_ms{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The steps' times, in milliseconds, from the values of [`times_list`].
pub(super) fn server_times(
    values: Vec<mysql::Value>,
    steps: usize,
) -> Vec<Option<std::time::Duration>> {
    (0..steps)
        .map(|k| {
            values
                .get(k)
                .cloned()
                .and_then(|v| mysql::from_value_opt::<u64>(v).ok())
                .map(std::time::Duration::from_millis)
        })
        .collect()
}

/// The multi-statement text of steps that run alone, each followed by its record, and a
/// closing `SELECT` of the steps' times; `None` when a value has no literal.
///
/// The server measures every time: `@upgrader_batch` when it starts on the text, and
/// `@upgrader_sent` when it starts on a step. A row's `started_at` and `finished_at` are
/// the first step's `started_at` (this host's clock, as every other row's) plus the
/// server's time from the text's start; its `duration_ms` is the step's own time.
pub(super) fn recorded_batch(steps: &[AloneStep<'_>]) -> Option<RecordedBatch> {
    // `2026-12-02T17:28:26.487Z` as a DATETIME literal: no string function mixes an
    // introduced literal with the connection's collation (error 1270 under any other
    // than utf8mb4's default, as MySQL 8's is against the driver's).
    let host = steps
        .first()?
        .row
        .started_at
        .replacen('T', " ", 1)
        .replacen('Z', "", 1);
    if !host
        .bytes()
        .all(|b| b.is_ascii_digit() || b" -:.".contains(&b))
    {
        return None;
    }
    // UTC both times: a daylight-saving change cannot make a step's time negative.
    let on_host = |at: &str| {
        format!(
            "CONCAT(LEFT(DATE_FORMAT(TIMESTAMP'{host}' \
             + INTERVAL TIMESTAMPDIFF(MICROSECOND, @upgrader_batch, {at}) MICROSECOND, \
             '%Y-%m-%dT%H:%i:%s.%f'), 23), 'Z')"
        )
    };
    let started = on_host("@upgrader_sent");
    let finished = on_host("UTC_TIMESTAMP(6)");
    let mut text = String::new();
    let mut layout = Vec::with_capacity(steps.len());
    let mut results = 0;
    for (k, step) in steps.iter().enumerate() {
        let (insert, values) = state::history_insert(std::slice::from_ref(&step.row));
        let position = std::cell::Cell::new(0);
        let insert = crate::db::inline_values(&insert, &values, |value, out| {
            let at = position.replace(position.get() + 1);
            match at {
                _ if at + 1 == state::HISTORY_FINISHED_AT => out.push_str("@upgrader_started"),
                _ if at == state::HISTORY_FINISHED_AT => out.push_str("@upgrader_finished"),
                _ if at == state::HISTORY_FINISHED_AT + 1 => {
                    out.push_str(&format!("@upgrader_ms{k}"));
                }
                _ => return literal(value, out),
            }
            true
        })?;
        let mut project = String::new();
        let mut to = String::new();
        literal(&step.row.project.as_str().into(), &mut project);
        literal(&step.version.as_str().into(), &mut to);
        match k {
            0 => text.push_str(
                "SET @upgrader_batch = UTC_TIMESTAMP(6), @upgrader_sent = UTC_TIMESTAMP(6);\n",
            ),
            _ => text.push_str("SET @upgrader_sent = UTC_TIMESTAMP(6);\n"),
        }
        layout.push((results, step.statements.len()));
        results += step.statements.len() + 6;
        // A new line before each `;`: a statement may end in a line comment.
        for statement in &step.statements {
            text.push_str(statement);
            text.push_str("\n;\n");
        }
        text.push_str(&format!(
            "SET @upgrader_ms{k} = TIMESTAMPDIFF(MICROSECOND, @upgrader_sent, UTC_TIMESTAMP(6)) DIV 1000, \
             @upgrader_started = {started}, @upgrader_finished = {finished};\n\
             START TRANSACTION;\n{insert};\n\
             INSERT INTO upgrader_version (project, version, updated_at) \
             VALUES ({project}, {to}, @upgrader_finished) \
             ON DUPLICATE KEY UPDATE version = {to}, updated_at = @upgrader_finished;\n\
             COMMIT;\n"
        ));
    }
    text.push_str("SELECT ");
    text.push_str(&times_list(steps.len()));
    Some(RecordedBatch {
        text,
        steps: layout,
    })
}

#[cfg(test)]
mod tests {
    use super::{recorded_batch, At};
    use crate::db::state::HistoryRow;
    use crate::db::AloneStep;

    fn step<'a>(started_at: &str, statements: Vec<&'a str>) -> AloneStep<'a> {
        AloneStep {
            statements,
            row: HistoryRow {
                id: None,
                project: "shop".into(),
                kind: "step".into(),
                name: "one".into(),
                from_version: Some("1.0.0".into()),
                to_version: "1.1.0".into(),
                checksum: None,
                started_at: started_at.into(),
                finished_at: String::new(),
                duration_ms: 0,
                host: "h".into(),
                pid: 1,
                success: true,
                error: None,
                reason: None,
            },
            version: "1.1.0".into(),
        }
    }

    #[test]
    fn the_start_is_a_datetime_literal_and_no_string_function_mixes_collations() {
        let steps = [step(
            "2026-12-02T17:28:26.487Z",
            vec!["CREATE TABLE t (id INT)"],
        )];
        let text = recorded_batch(&steps).unwrap().text;
        assert!(
            text.contains("TIMESTAMP'2026-12-02 17:28:26.487'"),
            "{text}"
        );
        assert!(!text.contains("REPLACE("), "{text}");
        assert!(
            text.contains("@upgrader_started, @upgrader_finished, @upgrader_ms0"),
            "{text}"
        );
        assert!(text.ends_with("COMMIT;\nSELECT @upgrader_ms0"), "{text}");
    }

    #[test]
    fn a_start_that_is_not_upgraders_own_timestamp_is_not_inlined() {
        assert!(recorded_batch(&[step("2026-12-02'; DROP", vec!["DO 1"])]).is_none());
    }

    #[test]
    fn a_failed_result_is_placed_in_its_step() {
        let steps = [
            step(
                "2026-12-02T17:28:26.487Z",
                vec!["CREATE TABLE a (id INT)", "DO 1"],
            ),
            step("2026-12-02T17:28:26.487Z", vec!["CREATE TABLE b (id INT)"]),
        ];
        let batch = recorded_batch(&steps).unwrap();
        // Results: 0 SET, 1-2 statements, 3-7 record; 8 SET, 9 statement, 10-14 record;
        // 15 the times.
        assert_eq!(batch.text.matches(';').count(), 15);
        assert_eq!(batch.locate(0), (0, At::Statement(0)));
        assert_eq!(batch.locate(2), (0, At::Statement(1)));
        assert_eq!(batch.locate(3), (0, At::Record));
        assert_eq!(batch.locate(7), (0, At::Record));
        assert_eq!(batch.locate(8), (1, At::Statement(0)));
        assert_eq!(batch.locate(9), (1, At::Statement(0)));
        assert_eq!(batch.locate(14), (1, At::Record));
        assert_eq!(batch.locate(15), (2, At::Times));
    }
}
