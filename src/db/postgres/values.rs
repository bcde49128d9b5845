//! Statements and values: `?` placeholders numbered for PostgreSQL, and values converted
//! to and from the types the server uses.

use postgres::types::{ToSql, Type};

use super::{DbError, Value};

/// How many statements' parameter types a connection keeps.
pub(super) const DESCRIBED_KEPT: usize = 64;

/// Whether a statement has a `?` placeholder (outside strings, names and comments).
pub(super) fn has_placeholder(sql: &str) -> bool {
    sql.contains('?') && numbered(sql) != sql
}

/// Statements are written with `?` placeholders; PostgreSQL numbers them (`$1`, `$2`…).
/// A `?` inside a string, quoted name, dollar quote or comment is left alone.
pub(super) fn numbered(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut index = 0;
    let mut at = 0;
    let mut copied = 0;
    while at < bytes.len() {
        let skip_to = match bytes[at] {
            b'\'' | b'"' => {
                let quote = bytes[at];
                let mut end = at + 1;
                while end < bytes.len() {
                    if bytes[end] == quote {
                        // A doubled quote is an escaped one.
                        if bytes.get(end + 1) == Some(&quote) {
                            end += 2;
                            continue;
                        }
                        break;
                    }
                    end += 1;
                }
                end + 1
            }
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                sql[at..].find('\n').map_or(bytes.len(), |n| at + n + 1)
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => sql[at + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| at + 2 + n + 2),
            b'$' => {
                // $tag$ … $tag$ (a tag is empty or an identifier; `$1` is not a quote).
                let tag_end = sql[at + 1..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .map(|n| at + 1 + n);
                match tag_end {
                    Some(end)
                        if bytes[end] == b'$'
                            && !bytes.get(at + 1).is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &sql[at..=end];
                        sql[end + 1..]
                            .find(tag)
                            .map_or(bytes.len(), |n| end + 1 + n + tag.len())
                    }
                    _ => at + 1,
                }
            }
            b'?' => {
                out.push_str(&sql[copied..at]);
                index += 1;
                out.push('$');
                out.push_str(&index.to_string());
                copied = at + 1;
                at + 1
            }
            _ => at + 1,
        };
        at = skip_to.min(bytes.len());
    }
    out.push_str(&sql[copied..]);
    out
}

/// Converts values to the types the server inferred for the statement's parameters: a
/// plugin's integer may be bound to an `integer` column, its text to a `varchar`.
pub(super) fn params(
    types: &[Type],
    values: &[Value],
) -> Result<Vec<Box<dyn ToSql + Sync>>, DbError> {
    if types.len() != values.len() {
        return Err(DbError::new(format!(
            "the statement has {} parameter(s) but {} value(s) were given",
            types.len(),
            values.len()
        )));
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(index, (kind, value))| {
            convert(kind, value).ok_or_else(|| {
                DbError::new(format!(
                    "parameter {}: cannot bind {} to PostgreSQL type {kind}; cast the placeholder in the SQL (for example ?::text::{kind})",
                    index + 1,
                    value.kind_name()
                ))
            })
        })
        .collect()
}

/// SQL NULL for a parameter of any type.
#[derive(Debug)]
pub(super) struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(postgres::types::IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

pub(super) fn convert(kind: &Type, value: &Value) -> Option<Box<dyn ToSql + Sync>> {
    let text_like = matches!(
        *kind,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    );
    Some(match value {
        Value::Null => Box::new(Null) as Box<dyn ToSql + Sync>,
        Value::Bool(v) => match *kind {
            Type::BOOL => Box::new(*v),
            _ => return convert(kind, &Value::Int(i64::from(*v))),
        },
        Value::Int(v) => match *kind {
            Type::INT8 => Box::new(*v),
            Type::INT4 => Box::new(i32::try_from(*v).ok()?),
            Type::INT2 => Box::new(i16::try_from(*v).ok()?),
            Type::FLOAT8 => Box::new(*v as f64),
            Type::FLOAT4 => Box::new(*v as f32),
            Type::BOOL => Box::new(*v != 0),
            _ if text_like => Box::new(v.to_string()),
            _ => return None,
        },
        Value::Float(v) => match *kind {
            Type::FLOAT8 => Box::new(*v),
            Type::FLOAT4 => Box::new(*v as f32),
            _ if text_like => Box::new(v.to_string()),
            _ => return None,
        },
        Value::Text(v) => match *kind {
            _ if text_like => Box::new(v.clone()),
            Type::INT8 => Box::new(v.trim().parse::<i64>().ok()?),
            Type::INT4 => Box::new(v.trim().parse::<i32>().ok()?),
            Type::INT2 => Box::new(v.trim().parse::<i16>().ok()?),
            Type::FLOAT8 => Box::new(v.trim().parse::<f64>().ok()?),
            Type::FLOAT4 => Box::new(v.trim().parse::<f32>().ok()?),
            Type::BOOL => Box::new(matches!(v.trim(), "t" | "true" | "1" | "yes" | "on")),
            Type::BYTEA => Box::new(v.as_bytes().to_vec()),
            _ => return None,
        },
        Value::Blob(v) => match *kind {
            Type::BYTEA => Box::new(v.clone()),
            _ if text_like => Box::new(String::from_utf8(v.clone()).ok()?),
            _ => return None,
        },
    })
}

pub(super) fn read(row: &postgres::Row, index: usize) -> Result<Value, DbError> {
    let kind = row.columns()[index].type_().clone();
    let value = match kind {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map(|v| v.map(Value::Bool)),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map(|v| v.map(|v| Value::Int(v.into()))),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map(|v| v.map(|v| Value::Int(v.into()))),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map(|v| v.map(Value::Int)),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map(|v| v.map(|v| Value::Float(v.into()))),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map(|v| v.map(Value::Float)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(index)
            .map(|v| v.map(Value::Blob)),
        _ => row
            .try_get::<_, Option<String>>(index)
            .map(|v| v.map(Value::Text)),
    };
    Ok(value.map_err(DbError::new)?.unwrap_or(Value::Null))
}
