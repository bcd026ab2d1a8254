//! The `json` and `jsonb` types.
//!
//! Both are text. A `json` value is what was written, checked to be JSON. A `jsonb` value
//! is kept in a canonical form, the one PostgreSQL prints: object keys unique (the last
//! one written wins) and sorted by length then bytes, numbers as `numeric` prints them,
//! strings with PostgreSQL's escapes, and `", "` and `": "` between items. Equal documents
//! are then equal bytes, so equality, grouping, DISTINCT and unique indexes work on the
//! bytes. (Numbers equal in value but not in scale, `1.0` and `1`, stay apart there, as
//! their text does; containment compares them by value.)
//!
//! In plans a `jsonb` is Arrow `LargeBinary` and a `json` `BinaryView`, holding the UTF-8
//! text. Flotilla makes no other arrays of either type (`bytea` is `Binary`), so the Arrow
//! type alone names the SQL type, in plans and on the wire; a binary type also keeps
//! DataFusion's string functions off them, as PostgreSQL has no implicit cast to text.
//!
//! - [`parse`] reads a document with serde_json, keeping each value's text as written
//!   (`json`'s `->` returns it) and each number's digits;
//! - the type planner in `types` plans `json` and `jsonb` in casts;
//! - [`JsonOperators`] plans `->`, `->>`, `#>`, `#>>`, `@>`, `<@`, `?`, `?|`, `?&` and
//!   `jsonb || jsonb` as functions of this module;
//! - [`JsonCasts`] replaces casts between text, `json` and `jsonb` with functions reading
//!   or printing the text forms;
//! - a string literal compared with a `jsonb` is read as one (`untyped`).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewBuilder, BooleanBuilder, Int32Builder, LargeBinaryBuilder,
    StringBuilder,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::BinaryOperator;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::SqlError;

/// Nesting deeper than this is refused (54001), as PostgreSQL refuses nesting deeper than
/// its stack allows: each level is read by a call of its own.
pub const NESTING_DEPTH_MAX: usize = 128;

/// Digits before the point of a `jsonb` number (PostgreSQL's `numeric` limit).
const NUMERIC_INT_DIGITS_MAX: i64 = 131_072;

/// Digits after the point of a `jsonb` number (PostgreSQL's `numeric` display limit).
const NUMERIC_SCALE_MAX: i64 = 16_383;

/// `json` or `jsonb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The text as written.
    Json,
    /// The canonical text.
    Jsonb,
}

impl Kind {
    /// The Arrow type values of this kind are planned as.
    pub const fn arrow_type(self) -> DataType {
        match self {
            Kind::Json => DataType::BinaryView,
            Kind::Jsonb => DataType::LargeBinary,
        }
    }

    /// The kind of Arrow type `data_type`, if it is one.
    pub fn of(data_type: &DataType) -> Option<Kind> {
        match data_type {
            DataType::BinaryView => Some(Kind::Json),
            DataType::LargeBinary => Some(Kind::Jsonb),
            _ => None,
        }
    }

    /// The SQL type's name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Jsonb => "jsonb",
        }
    }

    /// The text stored for `text` read as a value of this kind.
    pub fn input(self, text: &str) -> Result<String, SqlError> {
        let doc = parse(text)?;
        Ok(match self {
            Kind::Json => text.to_string(),
            Kind::Jsonb => canonical(&doc.node)?,
        })
    }
}

/// One JSON value: its text as written and what it is.
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    /// The value's text, without blanks around it.
    pub(crate) raw: &'a str,
    pub(crate) node: Node<'a>,
}

/// What a JSON value is.
#[derive(Debug, Clone)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// A number's text as written (serde_json checked its grammar).
    Number(&'a str),
    String(String),
    Array(Vec<Item<'a>>),
    /// Members in the order written, duplicates included.
    Object(Vec<(String, Item<'a>)>),
}

/// An object's members, each value's text unread.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// PostgreSQL's error for text that is not JSON (for `jsonb` too).
fn syntax_error(e: &serde_json::Error) -> SqlError {
    SqlError::new("22P02", "invalid input syntax for type json").with_detail(format!("{e}."))
}

fn too_deep() -> SqlError {
    SqlError::new("54001", "stack depth limit exceeded").with_hint(format!(
        "JSON nested deeper than {NESTING_DEPTH_MAX} levels is not supported."
    ))
}

/// Reads a JSON document (RFC 8259, as PostgreSQL's `json_in` reads it).
pub(crate) fn parse(text: &str) -> Result<Item<'_>, SqlError> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| syntax_error(&e))?;
    item(raw.get(), 0)
}

fn item(raw: &str, depth: usize) -> Result<Item<'_>, SqlError> {
    if depth > NESTING_DEPTH_MAX {
        return Err(too_deep());
    }
    let read = |e: serde_json::Error| {
        if e.to_string().contains("recursion limit") {
            too_deep()
        } else {
            syntax_error(&e)
        }
    };
    let node = match raw.as_bytes().first() {
        Some(b'{') => {
            let Members(members) = serde_json::from_str(raw).map_err(read)?;
            Node::Object(
                members
                    .into_iter()
                    .map(|(k, v)| Ok((k, item(v.get(), depth + 1)?)))
                    .collect::<Result<_, SqlError>>()?,
            )
        }
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_str(raw).map_err(read)?;
            Node::Array(
                elements
                    .into_iter()
                    .map(|v| item(v.get(), depth + 1))
                    .collect::<Result<_, SqlError>>()?,
            )
        }
        Some(b'"') => Node::String(serde_json::from_str(raw).map_err(read)?),
        Some(b't') => Node::Bool(true),
        Some(b'f') => Node::Bool(false),
        Some(b'n') => Node::Null,
        _ => Node::Number(raw),
    };
    Ok(Item { raw, node })
}

/// The canonical (`jsonb`) text of a value.
pub(crate) fn canonical(node: &Node) -> Result<String, SqlError> {
    let mut out = String::new();
    write_canonical(node, &mut out)?;
    Ok(out)
}

fn write_canonical(node: &Node, out: &mut String) -> Result<(), SqlError> {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Number(raw) => out.push_str(&numeric_text(raw)?),
        Node::String(s) => write_string(s, out)?,
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_canonical(&item.node, out)?;
            }
            out.push(']');
        }
        Node::Object(members) => {
            out.push('{');
            for (i, (key, value)) in unique_sorted(members).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(key, out)?;
                out.push_str(": ");
                write_canonical(&value.node, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// An object's members as `jsonb` keeps them: sorted by key length, then key bytes; of
/// members with the same key, the last.
fn unique_sorted<'m, 'a>(members: &'m [(String, Item<'a>)]) -> Vec<&'m (String, Item<'a>)> {
    let mut sorted: Vec<&(String, Item)> = members.iter().collect();
    // Stable: members with one key stay in the order written.
    sorted.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    let mut out: Vec<&(String, Item)> = Vec::with_capacity(sorted.len());
    for member in sorted {
        match out.last_mut() {
            Some(last) if last.0 == member.0 => *last = member,
            _ => out.push(member),
        }
    }
    out
}

/// A string as PostgreSQL's `escape_json` writes it.
pub(crate) fn write_string(s: &str, out: &mut String) -> Result<(), SqlError> {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => {
                // PostgreSQL's text cannot hold it, so neither can its jsonb.
                return Err(
                    SqlError::new("22P05", "unsupported Unicode escape sequence")
                        .with_detail("\\u0000 cannot be converted to text."),
                );
            }
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

/// A JSON number as PostgreSQL's `numeric` prints it: no exponent, as many digits after
/// the point as written less the exponent, no negative zero.
fn numeric_text(raw: &str) -> Result<String, SqlError> {
    let overflow = || SqlError::new("22003", "value overflows numeric format");
    let (negative, unsigned) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (
            &unsigned[..at],
            unsigned[at + 1..].parse::<i64>().map_err(|_| overflow())?,
        ),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    // Where the point falls among the digits, and how many digits follow it.
    let point = int.len() as i64 + exponent;
    let scale = (frac.len() as i64 - exponent).max(0);
    if point > NUMERIC_INT_DIGITS_MAX || scale > NUMERIC_SCALE_MAX {
        return Err(overflow());
    }
    let digit = |at: i64| {
        usize::try_from(at)
            .ok()
            .and_then(|at| digits.get(at))
            .map_or('0', |d| char::from(*d))
    };
    let int_part: String = (0..point.max(0)).map(digit).collect();
    let int_part = match int_part.trim_start_matches('0') {
        "" => "0",
        rest => rest,
    };
    let frac_part: String = (point..point + scale).map(digit).collect();
    let zero = digits.iter().all(|d| *d == b'0');
    let mut out = String::with_capacity(int_part.len() + frac_part.len() + 2);
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int_part);
    if scale > 0 {
        out.push('.');
        out.push_str(&frac_part);
    }
    Ok(out)
}

/// A number's value as text that is equal for equal values (`1.50` and `1.5`).
fn numeric_value(raw: &str) -> Option<String> {
    let text = numeric_text(raw).ok()?;
    Some(if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    })
}

impl<'a> Item<'a> {
    /// The value of the object member `key` (the last, if written more than once).
    pub(crate) fn member(&self, key: &str) -> Option<&Item<'a>> {
        match &self.node {
            Node::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|m| &m.1),
            _ => None,
        }
    }

    /// The array element at `index`, counted from the end if negative.
    pub(crate) fn element(&self, index: i64) -> Option<&Item<'a>> {
        let Node::Array(items) = &self.node else {
            return None;
        };
        let at = if index < 0 {
            items.len() as i64 + index
        } else {
            index
        };
        usize::try_from(at).ok().and_then(|at| items.get(at))
    }

    /// The step a `#>` path takes from here: a member, or an element by its number.
    fn step(&self, key: &str) -> Option<&Item<'a>> {
        match &self.node {
            Node::Object(_) => self.member(key),
            Node::Array(_) => key.trim().parse().ok().and_then(|i| self.element(i)),
            _ => None,
        }
    }

    /// The value as `->>` gives it: a string's contents, NULL for JSON null, the text
    /// of anything else.
    pub(crate) fn text(&self) -> Option<String> {
        match &self.node {
            Node::Null => None,
            Node::String(s) => Some(s.clone()),
            _ => Some(self.raw.to_string()),
        }
    }

    fn type_name(&self) -> &'static str {
        match self.node {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Number(_) => "number",
            Node::String(_) => "string",
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }
}

fn scalar_equal(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Null, Node::Null) => true,
        (Node::Bool(a), Node::Bool(b)) => a == b,
        (Node::String(a), Node::String(b)) => a == b,
        (Node::Number(a), Node::Number(b)) => numeric_value(a) == numeric_value(b),
        _ => false,
    }
}

/// `a @> b`, as PostgreSQL's `jsonb_contains`: an object contains the members it has (their
/// values containing the other's), an array the values one of its elements contains, a
/// scalar an equal scalar; and a top-level array contains a scalar among its elements.
fn contains(a: &Node, b: &Node, top: bool) -> bool {
    match (a, b) {
        (Node::Object(members), Node::Object(wanted)) => wanted.iter().all(|(key, value)| {
            members
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .is_some_and(|(_, have)| contains(&have.node, &value.node, false))
        }),
        (Node::Array(items), Node::Array(wanted)) => wanted.iter().all(|value| {
            items
                .iter()
                .any(|have| contains(&have.node, &value.node, false))
        }),
        (Node::Array(items), scalar) if top && !matches!(scalar, Node::Object(_)) => {
            items.iter().any(|have| scalar_equal(&have.node, scalar))
        }
        (a, b) => scalar_equal(a, b),
    }
}

/// `a ? key`: an object's key, a string element of an array, or the string itself.
fn has_key(doc: &Node, key: &str) -> bool {
    match doc {
        Node::Object(members) => members.iter().any(|(k, _)| k == key),
        Node::Array(items) => items
            .iter()
            .any(|i| matches!(&i.node, Node::String(s) if s == key)),
        Node::String(s) => s == key,
        _ => false,
    }
}

/// `a || b` of two `jsonb` values.
fn concatenate<'a>(a: Item<'a>, b: Item<'a>) -> Result<String, SqlError> {
    let node = match (a.node, b.node) {
        (Node::Object(mut first), Node::Object(second)) => {
            first.extend(second);
            Node::Object(first)
        }
        (Node::Array(mut first), Node::Array(second)) => {
            first.extend(second);
            Node::Array(first)
        }
        (Node::Array(mut first), second) => {
            first.push(Item {
                raw: b.raw,
                node: second,
            });
            Node::Array(first)
        }
        (first, Node::Array(mut second)) => {
            second.insert(
                0,
                Item {
                    raw: a.raw,
                    node: first,
                },
            );
            Node::Array(second)
        }
        (first, second) => Node::Array(vec![
            Item {
                raw: a.raw,
                node: first,
            },
            Item {
                raw: b.raw,
                node: second,
            },
        ]),
    };
    canonical(&node)
}

// ---------------------------------------------------------------------------------------------
// Values from Arrow arrays
// ---------------------------------------------------------------------------------------------

pub(crate) fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn stored_utf8(bytes: &[u8]) -> DfResult<&str> {
    std::str::from_utf8(bytes)
        .map_err(|e| DataFusionError::Internal(format!("a json value is not UTF-8: {e}")))
}

/// The texts of a `json`, `jsonb` or string array.
pub(crate) fn texts(array: &ArrayRef) -> DfResult<Vec<Option<&str>>> {
    match array.data_type() {
        DataType::LargeBinary => array
            .as_binary::<i64>()
            .iter()
            .map(|v| v.map(stored_utf8).transpose())
            .collect(),
        DataType::BinaryView => array
            .as_binary_view()
            .iter()
            .map(|v| v.map(stored_utf8).transpose())
            .collect(),
        DataType::Utf8 => Ok(array.as_string::<i32>().iter().collect()),
        DataType::LargeUtf8 => Ok(array.as_string::<i64>().iter().collect()),
        DataType::Utf8View => Ok(array.as_string_view().iter().collect()),
        DataType::Null => Ok(vec![None; array.len()]),
        other => Err(DataFusionError::Plan(format!(
            "a json function takes json, jsonb or text, not {other}"
        ))),
    }
}

/// The documents of a `json` or `jsonb` array, read.
pub(crate) fn documents(array: &ArrayRef) -> DfResult<Vec<Option<Item<'_>>>> {
    texts(array)?
        .into_iter()
        .map(|t| t.map(parse).transpose().map_err(external))
        .collect()
}

/// One step of `->`: a member's key or an element's number.
pub(crate) enum Step {
    Key(String),
    Index(i64),
}

pub(crate) fn steps(array: &ArrayRef) -> DfResult<Vec<Option<Step>>> {
    if array.data_type().is_integer() {
        let ints = datafusion::arrow::compute::cast(array, &DataType::Int64)?;
        return Ok(ints
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .iter()
            .map(|v| v.map(Step::Index))
            .collect());
    }
    Ok(texts(array)?
        .into_iter()
        .map(|t| t.map(|t| Step::Key(t.to_string())))
        .collect())
}

/// The texts of a `text[]` argument, row by row, without its NULL elements.
pub(crate) fn text_lists(array: &ArrayRef) -> DfResult<Vec<Option<Vec<String>>>> {
    Ok(path_lists(array)?
        .into_iter()
        .map(|list| list.map(|list| list.into_iter().flatten().collect()))
        .collect())
}

/// The elements of a `text[]` argument, row by row; a string is read as an array's text
/// form (`'{a,b}'`).
pub(crate) fn path_lists(array: &ArrayRef) -> DfResult<Vec<Option<Vec<Option<String>>>>> {
    match array.data_type() {
        DataType::List(_) | DataType::LargeList(_) => {
            let lists: Vec<Option<ArrayRef>> = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().iter().collect(),
                _ => array.as_list::<i64>().iter().collect(),
            };
            lists
                .into_iter()
                .map(|list| {
                    list.map(|values| {
                        let strings = datafusion::arrow::compute::cast(&values, &DataType::Utf8)?;
                        Ok(strings
                            .as_string::<i32>()
                            .iter()
                            .map(|s| s.map(str::to_string))
                            .collect())
                    })
                    .transpose()
                })
                .collect()
        }
        _ => texts(array)?
            .into_iter()
            .map(|t| {
                t.map(crate::pg_array::array_text)
                    .transpose()
                    .map_err(external)
            })
            .collect(),
    }
}

/// How `row_to_json` separates a row's fields: with `,` alone, or (`pretty`) with `,`
/// and a line break.
#[derive(Clone, Copy, PartialEq)]
enum RowLayout {
    Compact,
    Pretty,
}

/// Row `row` of a struct column as a JSON object, as PostgreSQL writes a composite: its
/// fields by name, no blanks; `None` for SQL NULL.
fn row_json(array: &ArrayRef, row: usize, layout: RowLayout) -> DfResult<Option<String>> {
    let (DataType::Struct(fields), false) = (array.data_type(), array.is_null(row)) else {
        return Ok(None);
    };
    let row_values = array.as_struct();
    let mut out = String::from("{");
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(match layout {
                RowLayout::Compact => ",",
                RowLayout::Pretty => ",\n ",
            });
        }
        write_string(field.name(), &mut out).map_err(external)?;
        out.push(':');
        out.push_str(&value_json(row_values.column(i), row)?.unwrap_or_else(|| "null".into()));
    }
    out.push('}');
    Ok(Some(out))
}

/// A value of `array`'s row as JSON text, as PostgreSQL's `to_json` writes it; `None`
/// for SQL NULL.
pub(crate) fn value_json(array: &ArrayRef, row: usize) -> DfResult<Option<String>> {
    let data_type = array.data_type();
    if array.is_null(row) || *data_type == DataType::Null {
        return Ok(None);
    }
    if let Some(kind) = Kind::of(data_type) {
        // This row's value alone: reading the whole array per row would make a
        // json_build_object over n rows cost n².
        let text = stored_utf8(match kind {
            Kind::Json => array.as_binary_view().value(row),
            Kind::Jsonb => array.as_binary::<i64>().value(row),
        })?;
        // A json value's text without the blanks written around it.
        return Ok(Some(text.trim().to_string()));
    }
    let formatted = || -> DfResult<String> {
        let options = FormatOptions::default();
        Ok(ArrayFormatter::try_new(array.as_ref(), &options)?
            .value(row)
            .to_string())
    };
    let mut out = String::new();
    match data_type {
        DataType::Boolean => out.push_str(if array.as_boolean().value(row) {
            "true"
        } else {
            "false"
        }),
        t if t.is_integer() || matches!(t, DataType::Decimal128(..)) => out.push_str(&formatted()?),
        DataType::Float32 | DataType::Float64 => {
            let text = formatted()?;
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                out.push_str(&text);
            } else {
                // PostgreSQL writes NaN and infinities as strings.
                write_string(&text, &mut out).map_err(external)?;
            }
        }
        t if crate::pg_uuid::is_uuid(t) => {
            let uuid = array.as_fixed_size_binary().value(row);
            write_string(&crate::pg_uuid::text(uuid), &mut out).map_err(external)?;
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Date32 => {
            write_string(&formatted()?, &mut out).map_err(external)?;
        }
        DataType::Timestamp(..) => {
            write_string(&timestamp_json(&formatted()?), &mut out).map_err(external)?;
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let values = match data_type {
                DataType::List(_) => array.as_list::<i32>().value(row),
                _ => array.as_list::<i64>().value(row),
            };
            out.push('[');
            for i in 0..values.len() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&value_json(&values, i)?.unwrap_or_else(|| "null".into()));
            }
            out.push(']');
        }
        // A composite, as PostgreSQL writes a row: its fields by name, no blanks.
        DataType::Struct(_) => return row_json(array, row, RowLayout::Compact),
        other => {
            return Err(external(SqlError::new(
                "0A000",
                format!(
                    "values of type {} cannot be converted to json yet",
                    crate::error::pg_type_name(other)
                ),
            )));
        }
    }
    Ok(Some(out))
}

/// A timestamp as PostgreSQL writes one in JSON, from Arrow's ISO 8601 text: the
/// fraction without trailing zeros, and the session's zone (UTC) as `+00:00`, not `Z`.
fn timestamp_json(iso: &str) -> String {
    let (time, zone) = match iso.strip_suffix('Z') {
        Some(time) => (time, "+00:00"),
        None => (iso, ""),
    };
    let time = match time.split_once('.') {
        Some((whole, fraction)) => {
            let fraction = fraction.trim_end_matches('0');
            if fraction.is_empty() {
                whole.to_string()
            } else {
                format!("{whole}.{fraction}")
            }
        }
        None => time.to_string(),
    };
    format!("{time}{zone}")
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

/// What a function of this module does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    /// Text (or the other kind) read as a value of this kind.
    In(Kind),
    /// A value's text.
    Out,
    /// `->` (`text` false) and `->>` (`text` true).
    Get { text: bool },
    /// `#>` and `#>>`.
    Path { text: bool },
    /// `@>`.
    Contains,
    /// `?`.
    HasKey,
    /// `?|` (`all` false) and `?&`.
    HasKeys { all: bool },
    /// `jsonb || jsonb`.
    Concat,
    /// A `jsonb` number (`bool` false) or boolean as text, for a cast to a number or
    /// `boolean`.
    Scalar { bool: bool },
    /// `json[b]_typeof`.
    TypeOf,
    /// `json[b]_array_length`.
    ArrayLength,
    /// `to_json[b]`.
    To(Kind),
    /// `row_to_json(record [, pretty])`.
    RowTo,
    /// `json[b]_build_object`.
    BuildObject(Kind),
    /// `json[b]_build_array`.
    BuildArray(Kind),
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonFn {
    name: &'static str,
    op: Op,
    signature: Signature,
}

impl JsonFn {
    fn udf(name: &'static str, op: Op, signature: Signature) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(JsonFn {
            name,
            op,
            signature,
        }))
    }
}

fn kind_arg(args: &[DataType], name: &str) -> DfResult<Kind> {
    args.first()
        .and_then(Kind::of)
        .ok_or_else(|| no_function(name, args))
}

/// PostgreSQL's error for a call no function of that name takes.
fn no_function(name: &str, args: &[DataType]) -> datafusion::error::DataFusionError {
    external(SqlError::new(
        "42883",
        format!(
            "function {name}({}) does not exist",
            args.iter()
                .map(crate::error::pg_type_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

impl ScalarUDFImpl for JsonFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.op {
            Op::In(kind) | Op::To(kind) | Op::BuildObject(kind) | Op::BuildArray(kind) => {
                kind.arrow_type()
            }
            Op::RowTo => match args {
                [DataType::Struct(_)] | [DataType::Struct(_), DataType::Boolean] => {
                    Kind::Json.arrow_type()
                }
                _ => return Err(no_function(self.name, args)),
            },
            Op::Get { text: false } | Op::Path { text: false } => {
                kind_arg(args, self.name)?.arrow_type()
            }
            Op::Concat => Kind::Jsonb.arrow_type(),
            Op::Out
            | Op::Get { text: true }
            | Op::Path { text: true }
            | Op::TypeOf
            | Op::Scalar { .. } => DataType::Utf8,
            Op::Contains | Op::HasKey | Op::HasKeys { .. } => DataType::Boolean,
            Op::ArrayLength => DataType::Int32,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let out: ArrayRef = match self.op {
            Op::In(kind) => {
                let values = texts(&arrays[0])?
                    .into_iter()
                    .map(|t| t.map(|t| kind.input(t)).transpose())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(external)?;
                json_array(kind, values)
            }
            Op::Out => {
                let mut out = StringBuilder::with_capacity(rows, rows * 16);
                for t in texts(&arrays[0])? {
                    out.append_option(t);
                }
                Arc::new(out.finish())
            }
            Op::Get { text } => {
                let kind = kind_arg(&[arrays[0].data_type().clone()], self.name)?;
                let docs = documents(&arrays[0])?;
                let steps = steps(&arrays[1])?;
                let found = docs
                    .iter()
                    .zip(&steps)
                    .map(|(doc, step)| match (doc, step) {
                        (Some(doc), Some(Step::Key(k))) => doc.member(k),
                        // PostgreSQL keeps a scalar jsonb as a one-element array
                        // inside, so element 0 (or -1) of one is the scalar itself.
                        (Some(doc), Some(Step::Index(0 | -1)))
                            if kind == Kind::Jsonb
                                && !matches!(doc.node, Node::Array(_) | Node::Object(_)) =>
                        {
                            Some(doc)
                        }
                        (Some(doc), Some(Step::Index(i))) => doc.element(*i),
                        _ => None,
                    });
                found_array(kind, text, found)
            }
            Op::Path { text } => {
                let kind = kind_arg(&[arrays[0].data_type().clone()], self.name)?;
                let docs = documents(&arrays[0])?;
                let paths = text_lists(&arrays[1])?;
                let found = docs.iter().zip(&paths).map(|(doc, path)| {
                    let (doc, path) = (doc.as_ref()?, path.as_ref()?);
                    path.iter().try_fold(doc, |at, key| at.step(key))
                });
                found_array(kind, text, found)
            }
            Op::Contains => {
                let (a, b) = (documents(&arrays[0])?, documents(&arrays[1])?);
                let mut out = BooleanBuilder::with_capacity(rows);
                for (a, b) in a.iter().zip(&b) {
                    out.append_option(match (a, b) {
                        (Some(a), Some(b)) => Some(contains(&a.node, &b.node, true)),
                        _ => None,
                    });
                }
                Arc::new(out.finish())
            }
            Op::HasKey => {
                let (docs, keys) = (documents(&arrays[0])?, texts(&arrays[1])?);
                let mut out = BooleanBuilder::with_capacity(rows);
                for (doc, key) in docs.iter().zip(keys) {
                    out.append_option(match (doc, key) {
                        (Some(doc), Some(key)) => Some(has_key(&doc.node, key)),
                        _ => None,
                    });
                }
                Arc::new(out.finish())
            }
            Op::HasKeys { all } => {
                let (docs, keys) = (documents(&arrays[0])?, text_lists(&arrays[1])?);
                let mut out = BooleanBuilder::with_capacity(rows);
                for (doc, keys) in docs.iter().zip(&keys) {
                    out.append_option(match (doc, keys) {
                        (Some(doc), Some(keys)) => {
                            let mut has = keys.iter().map(|k| has_key(&doc.node, k));
                            Some(if all { has.all(|h| h) } else { has.any(|h| h) })
                        }
                        _ => None,
                    });
                }
                Arc::new(out.finish())
            }
            Op::Concat => {
                let (a, b) = (documents(&arrays[0])?, documents(&arrays[1])?);
                let values = a
                    .into_iter()
                    .zip(b)
                    .map(|(a, b)| match (a, b) {
                        (Some(a), Some(b)) => concatenate(a, b).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(external)?;
                json_array(Kind::Jsonb, values)
            }
            Op::Scalar { bool } => {
                let mut out = StringBuilder::with_capacity(rows, rows * 8);
                for doc in documents(&arrays[0])? {
                    let Some(doc) = doc else {
                        out.append_null();
                        continue;
                    };
                    match (&doc.node, bool) {
                        (Node::Number(_), false) | (Node::Bool(_), true) => {
                            out.append_value(doc.raw)
                        }
                        (_, _) => {
                            return Err(external(SqlError::new(
                                "22023",
                                format!(
                                    "cannot cast jsonb {} to type {}",
                                    doc.type_name(),
                                    if bool { "boolean" } else { "a number" }
                                ),
                            )));
                        }
                    }
                }
                Arc::new(out.finish())
            }
            Op::TypeOf => {
                let mut out = StringBuilder::with_capacity(rows, rows * 8);
                for doc in documents(&arrays[0])? {
                    out.append_option(doc.map(|d| d.type_name()));
                }
                Arc::new(out.finish())
            }
            Op::ArrayLength => {
                let mut out = Int32Builder::with_capacity(rows);
                for doc in documents(&arrays[0])? {
                    match doc.as_ref().map(|d| &d.node) {
                        None => out.append_null(),
                        Some(Node::Array(items)) => out.append_value(items.len() as i32),
                        Some(Node::Object(_)) => {
                            return Err(external(SqlError::new(
                                "22023",
                                "cannot get array length of a non-array",
                            )));
                        }
                        Some(_) => {
                            return Err(external(SqlError::new(
                                "22023",
                                "cannot get array length of a scalar",
                            )));
                        }
                    }
                }
                Arc::new(out.finish())
            }
            Op::To(kind) => {
                let values = (0..rows)
                    .map(|row| {
                        value_json(&arrays[0], row)?
                            .map(|t| kind.input(&t).map_err(external))
                            .transpose()
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                json_array(kind, values)
            }
            Op::RowTo => {
                let pretty = arrays.get(1).map(|a| a.as_boolean());
                let values = (0..rows)
                    .map(|row| {
                        let layout = match pretty {
                            Some(p) if p.is_valid(row) && p.value(row) => RowLayout::Pretty,
                            _ => RowLayout::Compact,
                        };
                        row_json(&arrays[0], row, layout)
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                json_array(Kind::Json, values)
            }
            Op::BuildObject(kind) => {
                if arrays.len() % 2 != 0 {
                    return Err(external(
                        SqlError::new("22023", "argument list must have even number of elements")
                            .with_hint(format!(
                                "The arguments of {}() must consist of alternating keys and values.",
                                self.name
                            )),
                    ));
                }
                let values = (0..rows)
                    .map(|row| {
                        let mut text = String::from("{");
                        for (i, pair) in arrays.chunks(2).enumerate() {
                            let key = value_json(&pair[0], row)?.ok_or_else(|| {
                                external(SqlError::new(
                                    "22004",
                                    format!("argument {}: key must not be null", 2 * i + 1),
                                ))
                            })?;
                            if i > 0 {
                                text.push_str(", ");
                            }
                            // A key is a string, whatever its type.
                            let key = match serde_json::from_str::<String>(&key) {
                                Ok(s) => s,
                                Err(_) => key,
                            };
                            write_string(&key, &mut text).map_err(external)?;
                            text.push_str(" : ");
                            text.push_str(
                                &value_json(&pair[1], row)?.unwrap_or_else(|| "null".into()),
                            );
                        }
                        text.push('}');
                        kind.input(&text).map(Some).map_err(external)
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                json_array(kind, values)
            }
            Op::BuildArray(kind) => {
                let values = (0..rows)
                    .map(|row| {
                        let mut text = String::from("[");
                        for (i, array) in arrays.iter().enumerate() {
                            if i > 0 {
                                text.push_str(", ");
                            }
                            text.push_str(
                                &value_json(array, row)?.unwrap_or_else(|| "null".into()),
                            );
                        }
                        text.push(']');
                        kind.input(&text).map(Some).map_err(external)
                    })
                    .collect::<DfResult<Vec<_>>>()?;
                json_array(kind, values)
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// An array of `kind` values from their texts.
pub(crate) fn json_array(kind: Kind, values: Vec<Option<String>>) -> ArrayRef {
    match kind {
        Kind::Jsonb => {
            let mut out = LargeBinaryBuilder::with_capacity(values.len(), values.len() * 16);
            for v in values {
                out.append_option(v);
            }
            Arc::new(out.finish())
        }
        Kind::Json => {
            let mut out = BinaryViewBuilder::with_capacity(values.len());
            for v in values {
                out.append_option(v);
            }
            Arc::new(out.finish())
        }
    }
}

/// What `->` or `#>` found: values of `kind`, or (`->>`, `#>>`) their text.
fn found_array<'x, 'a: 'x>(
    kind: Kind,
    text: bool,
    found: impl Iterator<Item = Option<&'x Item<'a>>>,
) -> ArrayRef {
    if text {
        let mut out = StringBuilder::new();
        for item in found {
            out.append_option(item.and_then(Item::text));
        }
        Arc::new(out.finish())
    } else {
        json_array(kind, found.map(|i| i.map(|i| i.raw.to_string())).collect())
    }
}

/// The functions of this module callable by name.
pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let one = || Signature::any(1, Volatility::Immutable);
    let nullary_too = || {
        Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::VariadicAny,
                datafusion::logical_expr::TypeSignature::Nullary,
            ],
            Volatility::Immutable,
        )
    };
    vec![
        JsonFn::udf("jsonb_typeof", Op::TypeOf, one()),
        JsonFn::udf("json_typeof", Op::TypeOf, one()),
        JsonFn::udf("jsonb_array_length", Op::ArrayLength, one()),
        JsonFn::udf("json_array_length", Op::ArrayLength, one()),
        JsonFn::udf("to_jsonb", Op::To(Kind::Jsonb), one()),
        JsonFn::udf("to_json", Op::To(Kind::Json), one()),
        JsonFn::udf(
            "row_to_json",
            Op::RowTo,
            Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(1),
                    datafusion::logical_expr::TypeSignature::Any(2),
                ],
                Volatility::Immutable,
            ),
        ),
        JsonFn::udf(
            "jsonb_build_object",
            Op::BuildObject(Kind::Jsonb),
            nullary_too(),
        ),
        JsonFn::udf(
            "json_build_object",
            Op::BuildObject(Kind::Json),
            nullary_too(),
        ),
        JsonFn::udf(
            "jsonb_build_array",
            Op::BuildArray(Kind::Jsonb),
            nullary_too(),
        ),
        JsonFn::udf(
            "json_build_array",
            Op::BuildArray(Kind::Json),
            nullary_too(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------------

/// Plans the JSON operators as functions, for operands of type `json` or `jsonb`.
#[derive(Debug)]
pub(crate) struct JsonOperators {
    get: Arc<ScalarUDF>,
    get_text: Arc<ScalarUDF>,
    path: Arc<ScalarUDF>,
    path_text: Arc<ScalarUDF>,
    contains: Arc<ScalarUDF>,
    has_key: Arc<ScalarUDF>,
    has_any: Arc<ScalarUDF>,
    has_all: Arc<ScalarUDF>,
    concat: Arc<ScalarUDF>,
    delete: Arc<ScalarUDF>,
    delete_path: Arc<ScalarUDF>,
}

impl JsonOperators {
    pub(crate) fn new() -> Self {
        let two = || Signature::any(2, Volatility::Immutable);
        let (delete, delete_path) = crate::json_edit::operators();
        Self {
            get: JsonFn::udf("json_get", Op::Get { text: false }, two()),
            get_text: JsonFn::udf("json_get_text", Op::Get { text: true }, two()),
            path: JsonFn::udf("json_path", Op::Path { text: false }, two()),
            path_text: JsonFn::udf("json_path_text", Op::Path { text: true }, two()),
            contains: JsonFn::udf("jsonb_contains", Op::Contains, two()),
            has_key: JsonFn::udf("jsonb_exists", Op::HasKey, two()),
            has_any: JsonFn::udf("jsonb_exists_any", Op::HasKeys { all: false }, two()),
            has_all: JsonFn::udf("jsonb_exists_all", Op::HasKeys { all: true }, two()),
            concat: JsonFn::udf("jsonb_concat", Op::Concat, two()),
            delete,
            delete_path,
        }
    }
}

/// `expr` as a `jsonb` operand: itself if it is one; a `json` value, a string or NULL
/// literal or a parameter read as one; `Err(expr)` for anything else.
fn as_jsonb(expr: Expr, schema: &DFSchema) -> Result<Expr, Expr> {
    let cast = |e: Expr| Expr::Cast(Cast::new(Box::new(e), Kind::Jsonb.arrow_type()));
    let untyped = match &expr {
        Expr::Literal(value, _) => matches!(
            value,
            ScalarValue::Utf8(_)
                | ScalarValue::LargeUtf8(_)
                | ScalarValue::Utf8View(_)
                | ScalarValue::Null
        ),
        Expr::Placeholder(_) => true,
        _ => false,
    };
    match expr.get_type(schema).ok().as_ref().and_then(Kind::of) {
        Some(Kind::Jsonb) => Ok(expr),
        Some(Kind::Json) => Ok(cast(expr)),
        None if untyped => Ok(cast(expr)),
        None => Err(expr),
    }
}

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        let kind = |e: &Expr| e.get_type(schema).ok().and_then(|t| Kind::of(&t));
        let (left_kind, right_kind) = (kind(&expr.left), kind(&expr.right));
        let call = |udf: &Arc<ScalarUDF>, args: Vec<Expr>| {
            Ok(PlannerResult::Planned(Expr::ScalarFunction(
                ScalarFunction::new_udf(udf.clone(), args),
            )))
        };
        let RawBinaryExpr { op, left, right } = expr;
        let original =
            |op, left, right| Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
        match op {
            BinaryOperator::Arrow if left_kind.is_some() => call(&self.get, vec![left, right]),
            BinaryOperator::LongArrow if left_kind.is_some() => {
                call(&self.get_text, vec![left, right])
            }
            BinaryOperator::HashArrow if left_kind.is_some() => call(&self.path, vec![left, right]),
            BinaryOperator::HashLongArrow if left_kind.is_some() => {
                call(&self.path_text, vec![left, right])
            }
            BinaryOperator::Question if left_kind == Some(Kind::Jsonb) => {
                call(&self.has_key, vec![left, right])
            }
            BinaryOperator::QuestionPipe if left_kind == Some(Kind::Jsonb) => {
                call(&self.has_any, vec![left, right])
            }
            BinaryOperator::QuestionAnd if left_kind == Some(Kind::Jsonb) => {
                call(&self.has_all, vec![left, right])
            }
            BinaryOperator::AtArrow | BinaryOperator::ArrowAt | BinaryOperator::StringConcat
                if left_kind == Some(Kind::Jsonb) || right_kind == Some(Kind::Jsonb) =>
            {
                let (left, right) = match (as_jsonb(left, schema), as_jsonb(right, schema)) {
                    (Ok(l), Ok(r)) => (l, r),
                    (l, r) => {
                        let unwrap = |e: Result<Expr, Expr>| e.unwrap_or_else(|e| e);
                        return original(op, unwrap(l), unwrap(r));
                    }
                };
                match op {
                    BinaryOperator::AtArrow => call(&self.contains, vec![left, right]),
                    BinaryOperator::ArrowAt => call(&self.contains, vec![right, left]),
                    _ => call(&self.concat, vec![left, right]),
                }
            }
            BinaryOperator::Minus if left_kind == Some(Kind::Jsonb) => {
                call(&self.delete, vec![left, right])
            }
            BinaryOperator::HashMinus if left_kind == Some(Kind::Jsonb) => {
                call(&self.delete_path, vec![left, right])
            }
            // PostgreSQL's json has no `-` or `#-` (jsonb has).
            BinaryOperator::Minus | BinaryOperator::HashMinus if left_kind == Some(Kind::Json) => {
                let right_type = match &right {
                    Expr::Literal(value, _) if value.data_type() == DataType::Utf8 => {
                        "unknown".to_string()
                    }
                    right => right
                        .get_type(schema)
                        .map_or_else(|_| "unknown".into(), |t| crate::error::pg_type_name(&t)),
                };
                Err(no_operator(&format!("json {op} {right_type}")))
            }
            // PostgreSQL's json has no comparison operators (jsonb has).
            BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq
                if left_kind == Some(Kind::Json) && right_kind == Some(Kind::Json) =>
            {
                Err(no_operator(&format!("json {op} json")))
            }
            op => original(op, left, right),
        }
    }
}

/// PostgreSQL's error for an operator it lacks, `operator` written as `json - text`.
fn no_operator(operator: &str) -> DataFusionError {
    external(
        SqlError::new("42883", format!("operator does not exist: {operator}")).with_hint(
            "No operator matches the given name and argument types. \
             You might need to add explicit type casts.",
        ),
    )
}

/// The cast rewrite, registered after DataFusion's analyzer rules.
#[derive(Debug)]
pub(crate) struct JsonCasts {
    json_in: Arc<ScalarUDF>,
    jsonb_in: Arc<ScalarUDF>,
    out: Arc<ScalarUDF>,
    number: Arc<ScalarUDF>,
    boolean: Arc<ScalarUDF>,
}

impl JsonCasts {
    pub(crate) fn new() -> Self {
        let one = || Signature::any(1, Volatility::Immutable);
        Self {
            json_in: JsonFn::udf("json_in", Op::In(Kind::Json), one()),
            jsonb_in: JsonFn::udf("jsonb_in", Op::In(Kind::Jsonb), one()),
            out: JsonFn::udf("json_out", Op::Out, one()),
            number: JsonFn::udf("jsonb_number", Op::Scalar { bool: false }, one()),
            boolean: JsonFn::udf("jsonb_boolean", Op::Scalar { bool: true }, one()),
        }
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        let Some((inner, to, from)) = crate::types::cast_parts(&expr, schema) else {
            return Ok(Transformed::no(expr));
        };
        let (from_kind, to_kind) = (Kind::of(&from), Kind::of(to));
        let call = |udf: &Arc<ScalarUDF>| {
            Expr::ScalarFunction(ScalarFunction::new_udf(udf.clone(), vec![inner.clone()]))
        };
        let rewritten = match (from_kind, to_kind) {
            (Some(a), Some(b)) if a == b => inner.clone(),
            (_, Some(kind))
                if from_kind.is_some()
                    || crate::types::is_string(&from)
                    || from == DataType::Null =>
            {
                call(match kind {
                    Kind::Json => &self.json_in,
                    Kind::Jsonb => &self.jsonb_in,
                })
            }
            (Some(_), None) if crate::types::is_string(to) => {
                let text = call(&self.out);
                if *to == DataType::Utf8 {
                    text
                } else {
                    Expr::Cast(Cast::new(Box::new(text), to.clone()))
                }
            }
            // PostgreSQL casts a jsonb number to a number type and a jsonb boolean to
            // boolean, through their text.
            (Some(Kind::Jsonb), None) if to.is_numeric() || *to == DataType::Boolean => {
                let udf = if *to == DataType::Boolean {
                    &self.boolean
                } else {
                    &self.number
                };
                Expr::Cast(Cast::new(Box::new(call(udf)), to.clone()))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(external(SqlError::new(
                    "42846",
                    format!(
                        "cannot cast type {} to {}",
                        crate::error::pg_type_name(&from),
                        crate::error::pg_type_name(to)
                    ),
                )));
            }
            _ => return Ok(Transformed::no(expr)),
        };
        Ok(Transformed::yes(rewritten))
    }
}

impl AnalyzerRule for JsonCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::overflow::rewrite_expressions(plan, |e, schema| self.rewrite(e, schema))
    }

    fn name(&self) -> &str {
        "flotilla_json_casts"
    }
}

/// The `jsonb` a string literal stands for; `None` if `expr` is not a string literal.
pub(crate) fn jsonb_literal(expr: &Expr) -> Option<DfResult<Expr>> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let text = match value {
        ScalarValue::Utf8(t) | ScalarValue::LargeUtf8(t) | ScalarValue::Utf8View(t) => t,
        _ => return None,
    };
    let value = match text {
        None => None,
        Some(t) => match Kind::Jsonb.input(t) {
            Ok(v) => Some(v.into_bytes()),
            Err(e) => return Some(Err(external(e))),
        },
    };
    Some(Ok(Expr::Literal(ScalarValue::LargeBinary(value), None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonb(text: &str) -> String {
        Kind::Jsonb
            .input(text)
            .unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn jsonb_prints_what_postgresql_prints() {
        // Each pair checked against PostgreSQL 15's `SELECT '…'::jsonb`.
        for (input, output) in [
            (r#"{"b":1,"a":2}"#, r#"{"a": 2, "b": 1}"#),
            (r#"{"aa":1,"b":2}"#, r#"{"b": 2, "aa": 1}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a": 2}"#),
            (r#" [1, 2 ,{"x":[]}] "#, r#"[1, 2, {"x": []}]"#),
            ("1.50", "1.50"),
            ("1e2", "100"),
            ("1E-2", "0.01"),
            ("12e-1", "1.2"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("0.001e2", "0.1"),
            ("-1.5e3", "-1500"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            (r#""\u00e9\n\u0001\/""#, r#""é\n\u0001/""#),
            ("true", "true"),
            ("null", "null"),
            ("{}", "{}"),
            ("[]", "[]"),
        ] {
            assert_eq!(jsonb(input), output, "{input}");
        }
    }

    #[test]
    fn timestamps_are_written_as_postgresql_writes_them_in_json() {
        // Each pair checked against PostgreSQL 15's `to_json` (TimeZone UTC).
        for (arrow, output) in [
            ("2024-01-01T10:00:00.120Z", "2024-01-01T10:00:00.12+00:00"),
            ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00+00:00"),
            ("2024-01-01T10:00:00.000001", "2024-01-01T10:00:00.000001"),
            ("2024-01-01T10:00:00.000", "2024-01-01T10:00:00"),
        ] {
            assert_eq!(timestamp_json(arrow), output, "{arrow}");
        }
    }

    #[test]
    fn json_refuses_what_postgresql_refuses() {
        for bad in [
            "", "{", "{'a':1}", "[1,]", "01", "NaN", "{\"a\"}", "tru", "1 2",
        ] {
            let e = Kind::Json.input(bad).expect_err(bad);
            assert_eq!(e.code, "22P02", "{bad}");
        }
        assert_eq!(
            Kind::Jsonb.input(r#""\u0000""#).expect_err("nul").code,
            "22P05"
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(Kind::Jsonb.input(&deep).expect_err("deep").code, "54001");
        // json keeps the text as written.
        assert_eq!(
            Kind::Json.input(r#" {"b":1, "a":1} "#).expect("json"),
            r#" {"b":1, "a":1} "#
        );
    }

    #[test]
    fn containment_and_keys_follow_postgresql() {
        fn doc(t: &str) -> Item<'_> {
            parse(t).expect("json")
        }
        let has = |a: &str, b: &str| contains(&doc(a).node, &doc(b).node, true);
        assert!(has(r#"{"a":1,"b":{"c":[1,2]}}"#, r#"{"b":{"c":[2]}}"#));
        assert!(!has(r#"{"a":1}"#, r#"{"a":2}"#));
        assert!(has("[1,2,[3]]", "[[3],1]"));
        assert!(has("[1,2]", "1"));
        assert!(!has("[[1,2]]", "[1]"));
        assert!(has(r#"{"a":1.0}"#, r#"{"a":1}"#));
        assert!(!has("[1]", "[[1]]"));
        assert!(has_key(&doc(r#"{"a":null}"#).node, "a"));
        assert!(has_key(&doc(r#"["a",1]"#).node, "a"));
        assert!(!has_key(&doc("[1]").node, "1"));
    }
}
