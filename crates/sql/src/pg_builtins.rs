//! PostgreSQL's built-in functions and operators that DataFusion lacks, names otherwise,
//! or answers differently.
//!
//! - Before planning, [`rewrite_calls`] renames calls DataFusion knows under another name
//!   or computes differently: `mod(a, b)` is `a % b`, `sign` is `signum`, `variance` is
//!   `var_samp`, `every` is `bool_and`, `array_remove` removes every match (DataFusion's
//!   removes the first), `to_timestamp(text, template)` and `to_date(text, template)`
//!   read PostgreSQL's templates (DataFusion's take chrono's `%Y`), `age(t)` is
//!   `age(current_date, t)`, and `t AT TIME ZONE z` is `timezone(z, t)`.
//! - After type coercion, [`PgBuiltins`] makes `SIMILAR TO` match as PostgreSQL's
//!   (DataFusion's reads the pattern as a regular expression, so `'abc' SIMILAR TO 'a%'`
//!   was false), and reads a string cast to bytea as PostgreSQL's text forms of bytea
//!   (`'\x4142'::bytea` is two bytes, not five), so comparing a bytea column with a
//!   literal is right. A `numeric` or float cast to an integer type is rounded first, as
//!   PostgreSQL rounds it (Arrow's cast truncates). Intervals compare as PostgreSQL's
//!   do: a month as 30 days, a day as 24 hours (`interval '1 day' = interval '24 hours'`).
//! - Functions of their own: `quote_ident`, `quote_literal`, `quote_nullable`, `format`,
//!   `regexp_split_to_array`, `regexp_matches`, `array_dims`, `isfinite`, and
//!   `current_setting` (built per statement from the session's settings); the date and
//!   time ones are `crate::pg_date_functions`'. `RowFunction` computes those that work a
//!   value at a time.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DataType as AstType, Expr as AstExpr, Function, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, OrderBy, OrderByExpr, OrderByKind,
    Query, SelectItem, SetExpr, Statement, TableFactor, TimezoneInfo, Value, VisitMut, VisitorMut,
    visit_expressions_mut,
};

use crate::error::SqlError;
use crate::pg_date_functions::{DAYS_PER_MONTH, NANOS_PER_DAY};
use crate::sql_ast::{arg, builtin_name, call, object_name};

// ---------------------------------------------------------------------------------------------
// Before planning: calls under DataFusion's names
// ---------------------------------------------------------------------------------------------

/// Rewrites the calls named in the module's description.
pub(crate) fn rewrite_calls(statement: &mut Statement) -> Result<(), SqlError> {
    let _ = statement.visit(&mut SeriesInFrom);
    let outcome = visit_expressions_mut(statement, |e| {
        if let AstExpr::Function(f) = e
            && builtin_name(&f.name).as_deref() == Some("generate_series")
            && let FunctionArguments::List(list) = &mut f.args
        {
            type_series_arguments(&mut list.args);
        }
        if let AstExpr::Function(f) = e
            && builtin_name(&f.name).as_deref() == Some("array")
            && let FunctionArguments::Subquery(query) = &f.args
        {
            match array_of(query) {
                Ok(array) => *e = array,
                Err(error) => return ControlFlow::Break(error),
            }
        }
        if let AstExpr::Function(f) = e
            && builtin_name(&f.name).as_deref() == Some("make_interval")
            && let Some(call) = crate::pg_date_functions::make_interval_call(f)
        {
            *e = call;
        }
        if let AstExpr::Function(f) = e
            && let Some(rewritten) = rewritten(f)
        {
            *e = rewritten;
        }
        // Text compares byte by byte here, which is collation "C": naming it (or the
        // default) changes nothing; any other would be ignored, so it is refused.
        if let AstExpr::Collate { expr, collation } = e {
            let name = collation
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.clone())
                .unwrap_or_default();
            if !["C", "POSIX", "default", "ucs_basic"].contains(&name.as_str()) {
                return ControlFlow::Break(
                    SqlError::new("0A000", format!("collation \"{name}\" is not supported"))
                        .with_hint(
                            "Text compares and sorts byte by byte (collation \"C\"), the only \
                         collation there is.",
                        ),
                );
            }
            *e = AstExpr::Nested(Box::new((**expr).clone()));
        }
        // `substring(s from 'pattern')`: a pattern, not a position (only a literal is
        // known to be text before planning).
        if let AstExpr::Substring {
            expr,
            substring_from: Some(from),
            substring_for: None,
            ..
        } = e
            && matches!(
                from.as_ref(),
                AstExpr::Value(v) if matches!(
                    v.value,
                    Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_)
                )
            )
        {
            *e = call(
                SUBSTRING_REGEX,
                [arg((**expr).clone()), arg((**from).clone())],
            );
        }
        // PostgreSQL's meaning (`crate::pg_date_functions`), not DataFusion's relabelling.
        if let AstExpr::AtTimeZone {
            timestamp,
            time_zone,
        } = e
        {
            *e = call(
                "timezone",
                [arg((**time_zone).clone()), arg((**timestamp).clone())],
            );
        }
        ControlFlow::Continue(())
    });
    match outcome {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `generate_series(...)` called in a FROM clause, typed as in a select list.
struct SeriesInFrom;

impl VisitorMut for SeriesInFrom {
    type Break = ();

    fn pre_visit_table_factor(&mut self, table: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = table
            && builtin_name(name).as_deref() == Some("generate_series")
        {
            type_series_arguments(&mut args.args);
        }
        ControlFlow::Continue(())
    }
}

/// `generate_series(start, stop [, step])` with an untyped literal beside a typed bound:
/// the literal takes the bound's type (a step, an interval), as PostgreSQL resolves it;
/// DataFusion's signature would refuse it as text. Two untyped bounds with an interval
/// step are `timestamptz`, PostgreSQL's choice.
fn type_series_arguments(args: &mut [FunctionArg]) {
    let mut exprs: Vec<&mut AstExpr> = args
        .iter_mut()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    if !(2..=3).contains(&exprs.len()) {
        return;
    }
    fn declared(e: &AstExpr) -> Option<&AstType> {
        match e {
            AstExpr::Cast { data_type, .. } => Some(data_type),
            AstExpr::TypedString(t) => Some(&t.data_type),
            AstExpr::Nested(inner) => declared(inner),
            _ => None,
        }
    }
    let untyped = |e: &AstExpr| {
        matches!(
            e,
            AstExpr::Value(v) if matches!(
                v.value,
                Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_)
            )
        )
    };
    let moment = |t: &AstType| matches!(t, AstType::Timestamp(..) | AstType::Date);
    let interval_step = exprs.get(2).is_some_and(|step| {
        matches!(step, AstExpr::Interval(_))
            || declared(step).is_some_and(|t| matches!(t, AstType::Interval { .. }))
    });
    let bound_type = declared(exprs[0])
        .or_else(|| declared(exprs[1]))
        .filter(|t| moment(t))
        .cloned()
        .or_else(|| {
            (untyped(exprs[0]) && untyped(exprs[1]) && interval_step)
                .then_some(AstType::Timestamp(None, TimezoneInfo::WithTimeZone))
        });
    let Some(bound_type) = bound_type else {
        return;
    };
    let cast = |e: &mut AstExpr, to: AstType| {
        let literal = std::mem::replace(e, AstExpr::value(Value::Null));
        *e = AstExpr::Cast {
            kind: CastKind::DoubleColon,
            expr: Box::new(literal),
            data_type: to,
            array: false,
            format: None,
        };
    };
    for (i, e) in exprs.iter_mut().enumerate() {
        if untyped(e) {
            let to = if i < 2 {
                bound_type.clone()
            } else {
                AstType::Interval {
                    fields: None,
                    precision: None,
                }
            };
            cast(e, to);
        }
    }
}

/// `ARRAY(subquery)`: the subquery's one column as an array, in the subquery's order,
/// empty (not NULL) for no rows.
///
/// A plain select (no grouping, aggregates, DISTINCT, LIMIT or OFFSET) becomes itself
/// aggregated: `SELECT coalesce(array_agg(e ORDER BY ...), '{}') FROM ... WHERE ...`, so a
/// correlated one stays correlated as written. Any other is aggregated as a derived table;
/// DataFusion drops an ORDER BY there, so its keys travel as columns `array_agg` orders
/// by.
fn array_of(query: &Query) -> Result<AstExpr, SqlError> {
    let mut query = query.clone();
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(AstExpr::Subquery(unordered_array_of(query)));
    };
    let (element, alias) = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] => (e.clone(), None),
        [SelectItem::ExprWithAlias { expr, alias }] => (expr.clone(), Some(alias.clone())),
        _ => {
            return Err(SqlError::new(
                "42601",
                "subquery must return only one column",
            ));
        }
    };
    // The order, with the output column named or numbered as the element itself.
    let mut order: Vec<OrderByExpr> = match &query.order_by {
        Some(OrderBy {
            kind: OrderByKind::Expressions(order),
            ..
        }) => order.clone(),
        _ => Vec::new(),
    };
    for o in &mut order {
        let is_element = match &o.expr {
            AstExpr::Identifier(id) => alias.as_ref().is_some_and(|a| a.value == id.value),
            AstExpr::Value(v) => matches!(&v.value, Value::Number(n, _) if n == "1"),
            _ => false,
        };
        if is_element {
            o.expr = element.clone();
        }
    }
    let plain = query.limit_clause.is_none()
        && query.fetch.is_none()
        && select.distinct.is_none()
        && select.having.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        && !aggregates(&element)
        && !order.iter().any(|o| aggregates(&o.expr));
    if plain {
        let order = order_text(order.iter().map(|o| o.to_string()));
        select.projection = vec![SelectItem::UnnamedExpr(expression(&format!(
            "coalesce(array_agg(({element}){order}), make_array())"
        )))];
        query.order_by = None;
        return Ok(AstExpr::Subquery(Box::new(query)));
    }
    // As a derived table: the element and each order key as columns.
    let mut keys = Vec::new();
    let mut projection = vec![SelectItem::ExprWithAlias {
        expr: element,
        alias: Ident::new(ELEMENT),
    }];
    for (i, o) in order.iter().enumerate() {
        let key = format!("__flotilla_key_{i}");
        projection.push(SelectItem::ExprWithAlias {
            expr: o.expr.clone(),
            alias: Ident::new(&key),
        });
        let mut by = o.clone();
        by.expr = AstExpr::Identifier(Ident::new(key));
        keys.push(by.to_string());
    }
    select.projection = projection;
    // The subquery's own ORDER BY stays (LIMIT takes the first rows by it), by the
    // expressions it named: the output column is now named apart.
    if let Some(OrderBy {
        kind: OrderByKind::Expressions(own),
        ..
    }) = &mut query.order_by
    {
        for (o, rewritten) in own.iter_mut().zip(&order) {
            o.expr = rewritten.expr.clone();
        }
    }
    let order = order_text(keys.into_iter());
    let mut outer = crate::sql_ast::fixed_query(&format!(
        "SELECT coalesce(array_agg({ELEMENT}{order}), make_array()) FROM (SELECT 1) AS {SUBQUERY}"
    ));
    put_subquery(&mut outer, query);
    Ok(AstExpr::Subquery(outer))
}

/// ` ORDER BY a, b`, or nothing for no keys.
fn order_text(keys: impl Iterator<Item = String>) -> String {
    let keys: Vec<String> = keys.collect();
    if keys.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", keys.join(", "))
    }
}

/// An expression written here, from parts printed back from a parsed statement: it
/// always parses.
fn expression(sql: &str) -> AstExpr {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|e| panic!("the expression {sql} does not parse: {e}"))
}

/// PostgreSQL's aggregate functions a select list may call.
const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bool_and",
    "bool_or",
    "count",
    "every",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "max",
    "min",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    "regr_count",
];

/// Whether `e` calls an aggregate or window function outside a subquery.
fn aggregates(e: &AstExpr) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |e| {
        if let AstExpr::Function(f) = e
            && (f.over.is_some()
                || builtin_name(&f.name).is_some_and(|n| AGGREGATES.contains(&n.as_str())))
        {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// The column and alias names `array_of` plans under: names no query writes, so a
/// correlated reference (`c.id`) is never read as one of them.
const ELEMENT: &str = "__flotilla_element";
const SUBQUERY: &str = "__flotilla_array";

/// `ARRAY(subquery)` of a subquery that is not one select of one column: in no order.
fn unordered_array_of(query: Query) -> Box<Query> {
    let mut outer = crate::sql_ast::fixed_query(&format!(
        "SELECT coalesce(array_agg({ELEMENT}), make_array()) \
         FROM (SELECT 1) AS {SUBQUERY} ({ELEMENT})"
    ));
    put_subquery(&mut outer, query);
    outer
}

/// Puts `query` in place of the `(SELECT 1)` in the FROM of the template `outer`.
fn put_subquery(outer: &mut Query, query: Query) {
    if let Some(select) = crate::sql_ast::selects(&mut outer.body).into_iter().next()
        && let Some(from) = select.from.first_mut()
        && let TableFactor::Derived { subquery, .. } = &mut from.relation
    {
        **subquery = query;
    }
}

fn rewritten(f: &Function) -> Option<AstExpr> {
    let name = builtin_name(&f.name)?;
    let args: Vec<&AstExpr> = match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect::<Option<_>>()?,
        FunctionArguments::None => Vec::new(),
        FunctionArguments::Subquery(_) => return None,
    };
    let renamed = |to: &str| {
        let mut f = f.clone();
        f.name = object_name(to);
        Some(AstExpr::Function(f))
    };
    let nested = |e: &AstExpr| Box::new(AstExpr::Nested(Box::new(e.clone())));
    match (name.as_str(), args.as_slice()) {
        ("mod", [a, b]) => Some(AstExpr::Nested(Box::new(AstExpr::BinaryOp {
            left: nested(a),
            op: BinaryOperator::Modulo,
            right: nested(b),
        }))),
        ("sign", [_]) => renamed("signum"),
        // DataFusion's divides natural logarithms (`log(1000)` was 2.9999999999999996).
        ("log", [_]) => renamed("log10"),
        ("variance", [_]) => renamed("var_samp"),
        ("every", [_]) => renamed("bool_and"),
        ("array_remove", [_, _]) => renamed("array_remove_all"),
        ("to_timestamp", [_, _]) => renamed(crate::pg_date_functions::TO_TIMESTAMP),
        ("to_date", [_, _]) => renamed(crate::pg_date_functions::TO_DATE),
        ("transaction_timestamp", []) => renamed("now"),
        // The text read as bytes first: DataFusion's `decode` takes binary, and the cast
        // type coercion would add is read as json here. PostgreSQL's `escape` format is
        // bytea's own text form; its base64 skips blanks and line breaks.
        ("decode", [text, format]) => {
            let text = if literal_is(format, "base64") {
                call(
                    "translate",
                    [
                        arg((*text).clone()),
                        arg(crate::sql_ast::string(" \t\n\r")),
                        arg(crate::sql_ast::string("")),
                    ],
                )
            } else {
                (*text).clone()
            };
            let bytes = as_bytea(text);
            if literal_is(format, "escape") {
                return Some(bytes);
            }
            Some(call("decode", [arg(bytes), arg((*format).clone())]))
        }
        // An untyped literal is a bytea, as PostgreSQL reads it. PostgreSQL's base64
        // breaks lines at 76 characters.
        ("encode", [bytes, format]) => {
            let bytes = as_bytea((*bytes).clone());
            if literal_is(format, "escape") {
                return Some(call(ENCODE_ESCAPE, [arg(bytes)]));
            }
            if literal_is(format, "base64") {
                // DataFusion's `base64` leaves out the padding PostgreSQL writes.
                let padded = call(
                    "encode",
                    [arg(bytes), arg(crate::sql_ast::string("base64pad"))],
                );
                return Some(call(BASE64_LINES, [arg(padded)]));
            }
            Some(call("encode", [arg(bytes), arg((*format).clone())]))
        }
        // The statement's time of day, as a `time`.
        ("localtime", []) if matches!(f.args, FunctionArguments::None) => Some(AstExpr::Cast {
            kind: CastKind::DoubleColon,
            expr: Box::new(call("localtimestamp", [])),
            data_type: AstType::Time(None, TimezoneInfo::None),
            array: false,
            format: None,
        }),
        // Each argument as PostgreSQL's text of it (`crate::pg_text` prints the casts).
        ("format", [template, values @ ..]) => Some(call(
            FORMAT,
            std::iter::once(arg((*template).clone())).chain(values.iter().map(|v| {
                arg(AstExpr::Cast {
                    kind: CastKind::DoubleColon,
                    expr: Box::new((*v).clone()),
                    data_type: AstType::Text,
                    array: false,
                    format: None,
                })
            })),
        )),
        ("age", [t]) => {
            // Midnight of today, as PostgreSQL's `age(timestamp)`.
            let today = AstExpr::Cast {
                kind: CastKind::DoubleColon,
                expr: Box::new(call("current_date", [])),
                data_type: AstType::Timestamp(None, TimezoneInfo::None),
                array: false,
                format: None,
            };
            Some(call("age", [arg(today), arg((*t).clone())]))
        }
        _ => None,
    }
}

/// The name `format(template, ...)` is planned under, its values cast to text.
const FORMAT: &str = "flotilla_format";

/// The name `encode(bytes, 'escape')` is planned under.
const ENCODE_ESCAPE: &str = "flotilla_encode_escape";

/// The name of the base64 text broken into PostgreSQL's lines.
const BASE64_LINES: &str = "flotilla_base64_lines";

/// Characters of a line of PostgreSQL's base64 (`encode(..., 'base64')`).
const BASE64_LINE_CHARS: usize = 76;

/// `e` cast to bytea.
fn as_bytea(e: AstExpr) -> AstExpr {
    AstExpr::Cast {
        kind: CastKind::DoubleColon,
        expr: Box::new(e),
        data_type: AstType::Bytea,
        array: false,
        format: None,
    }
}

/// Base64 text with a line break after every 76 characters, as PostgreSQL writes it.
fn base64_lines(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let ScalarValue::Utf8(Some(text)) = &args[0] else {
        return Err(wrong_argument("encode"));
    };
    let mut out = String::with_capacity(text.len() + text.len() / BASE64_LINE_CHARS);
    // After every full line, the last one too.
    for (i, c) in text.chars().enumerate() {
        out.push(c);
        if (i + 1) % BASE64_LINE_CHARS == 0 {
            out.push('\n');
        }
    }
    Ok(ScalarValue::Utf8(Some(out)))
}

/// Whether `e` is the string literal `word` (in any case).
fn literal_is(e: &AstExpr, word: &str) -> bool {
    matches!(
        e,
        AstExpr::Value(v) if matches!(
            &v.value,
            Value::SingleQuotedString(s) if s.eq_ignore_ascii_case(word)
        )
    )
}

/// `encode(bytes, 'escape')`: PostgreSQL's escape format, a zero byte, a byte with the
/// high bit set and a backslash escaped (`\000`, `\377`, `\\`).
fn encode_escape(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let ScalarValue::Binary(Some(bytes)) = &args[0] else {
        return Err(wrong_argument("encode"));
    };
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0 | 0x80..=0xff => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(char::from(b)),
        }
    }
    Ok(ScalarValue::Utf8(Some(out)))
}

/// A bound of `width_bucket`: exact (an unscaled integer and its scale) or a float.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Exact(i128, i8),
    Float(f64),
}

fn bound_of(v: &ScalarValue) -> Result<Bound, SqlError> {
    let exact = |v: &ScalarValue| match v {
        ScalarValue::Decimal128(Some(x), _, s) => Some(Bound::Exact(*x, *s)),
        _ => None,
    };
    let t = v.data_type();
    if matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64) {
        return match v.cast_to(&DataType::Float64) {
            Ok(ScalarValue::Float64(Some(f))) => Ok(Bound::Float(f)),
            _ => Err(wrong_argument("width_bucket")),
        };
    }
    if let Some(b) = exact(v) {
        return Ok(b);
    }
    // Integers exactly; text (an untyped literal) as a numeric of 10 places.
    let target = if t.is_integer() {
        DataType::Decimal128(38, 0)
    } else {
        DataType::Decimal128(38, 10)
    };
    v.cast_to(&target)
        .ok()
        .as_ref()
        .and_then(exact)
        .ok_or_else(|| {
            SqlError::new(
                "22P02",
                format!("invalid input syntax for type numeric: \"{v}\""),
            )
        })
}

/// `width_bucket(operand, low, high, count)`: the bucket of `count` equal ones between
/// the bounds that holds the operand, 0 below them and `count + 1` above (the bounds may
/// be given high first). Exact for integers and numerics, in floating point where one is a
/// float, as PostgreSQL computes each.
fn width_bucket(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let bucket_error = |m: &str| SqlError::new("2201G", m.to_string());
    let count = match args[3].cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(c))) => c,
        _ => return Err(wrong_argument("width_bucket")),
    };
    if count <= 0 {
        return Err(bucket_error("count must be greater than zero"));
    }
    let bounds = [
        bound_of(&args[0])?,
        bound_of(&args[1])?,
        bound_of(&args[2])?,
    ];
    let floats = bounds.iter().any(|b| matches!(b, Bound::Float(_)));
    let bucket = if floats {
        let f = |b: Bound| match b {
            Bound::Float(f) => f,
            Bound::Exact(v, s) => v as f64 / 10f64.powi(i32::from(s)),
        };
        let [operand, low, high] = bounds.map(f);
        if operand.is_nan() || low.is_nan() || high.is_nan() {
            return Err(bucket_error(
                "operand, lower bound, and upper bound cannot be NaN",
            ));
        }
        if low.is_infinite() || high.is_infinite() {
            return Err(bucket_error("lower and upper bounds must be finite"));
        }
        if low == high {
            return Err(bucket_error("lower bound cannot equal upper bound"));
        }
        let (below, above, share) = if low < high {
            (
                operand < low,
                operand >= high,
                (operand - low) / (high - low),
            )
        } else {
            (
                operand > low,
                operand <= high,
                (low - operand) / (low - high),
            )
        };
        if below {
            0
        } else if above {
            count + 1
        } else {
            (count as f64 * share) as i64 + 1
        }
    } else {
        let scale = bounds
            .iter()
            .map(|b| match b {
                Bound::Exact(_, s) => *s,
                Bound::Float(_) => 0,
            })
            .max()
            .unwrap_or(0);
        let numeric_overflow = || SqlError::new("22003", "numeric value out of range");
        let aligned = |b: Bound| -> Result<i128, SqlError> {
            let Bound::Exact(v, s) = b else {
                return Err(wrong_argument("width_bucket"));
            };
            10i128
                .checked_pow(u32::try_from(scale - s).map_err(|_| numeric_overflow())?)
                .and_then(|m| v.checked_mul(m))
                .ok_or_else(numeric_overflow)
        };
        let [operand, low, high] = [
            aligned(bounds[0])?,
            aligned(bounds[1])?,
            aligned(bounds[2])?,
        ];
        if low == high {
            return Err(bucket_error("lower bound cannot equal upper bound"));
        }
        let (below, above, part, whole) = if low < high {
            (operand < low, operand >= high, operand - low, high - low)
        } else {
            (operand > low, operand <= high, low - operand, low - high)
        };
        if below {
            0
        } else if above {
            count + 1
        } else {
            // Both positive: the quotient is its floor.
            let scaled = part
                .checked_mul(i128::from(count))
                .ok_or_else(numeric_overflow)?;
            i64::try_from(scaled / whole).map_err(|_| numeric_overflow())? + 1
        }
    };
    i32::try_from(bucket)
        .map(|b| ScalarValue::Int32(Some(b)))
        .map_err(|_| SqlError::new("22003", "integer out of range"))
}

// ---------------------------------------------------------------------------------------------
// Functions computed a row at a time
// ---------------------------------------------------------------------------------------------

/// One row's value from its arguments (cast as the function asks), or an error to report.
pub(crate) type Eval = fn(&[ScalarValue]) -> Result<ScalarValue, SqlError>;

/// A function computed a row at a time from its arguments' values: for functions whose
/// work per row dwarfs the cost of taking the row apart (parsing, formatting, calendar
/// arithmetic). Any NULL argument makes the result NULL, unless `null_in` says otherwise.
#[derive(Debug)]
pub(crate) struct RowFunction {
    name: &'static str,
    signature: Signature,
    /// The types the arguments are cast to before `eval` (by position; the last repeats).
    arg_types: Vec<DataType>,
    returns: DataType,
    eval: Eval,
    /// Whether `eval` sees NULL arguments (otherwise they give NULL).
    pub(crate) null_in: bool,
}

// By name: each is registered once under its own.
impl PartialEq for RowFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RowFunction {}

impl std::hash::Hash for RowFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl RowFunction {
    pub(crate) fn new(
        name: &'static str,
        args: &[usize],
        arg_types: Vec<DataType>,
        returns: DataType,
        eval: Eval,
    ) -> Self {
        let signature = Signature::one_of(
            args.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Immutable,
        );
        Self {
            name,
            signature,
            arg_types,
            returns,
            eval,
            null_in: false,
        }
    }

    pub(crate) fn udf(self) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(self))
    }
}

impl ScalarUDFImpl for RowFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let columns = args
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let array = a.to_array(rows)?;
                match self.arg_types.get(i).or(self.arg_types.last()) {
                    Some(to) if array.data_type() != to => Ok(cast(&array, to)?),
                    _ => Ok(array),
                }
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let values = columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<DfResult<Vec<_>>>()?;
            let value = if !self.null_in && values.iter().any(ScalarValue::is_null) {
                ScalarValue::try_from(&self.returns)?
            } else {
                (self.eval)(&values).map_err(|e| DataFusionError::External(Box::new(e)))?
            };
            out.push(value);
        }
        if scalar {
            return Ok(ColumnarValue::Scalar(out.pop().ok_or_else(|| {
                DataFusionError::Internal(format!("{} computed no value", self.name))
            })?));
        }
        if out.is_empty() {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_empty_array(&self.returns),
            ));
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

pub(crate) fn interval() -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

pub(crate) fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.as_deref(),
        _ => None,
    }
}

pub(crate) fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMicrosecond(t, _) => *t,
        _ => None,
    }
}

pub(crate) fn span(v: &ScalarValue) -> Option<IntervalMonthDayNano> {
    match v {
        ScalarValue::IntervalMonthDayNano(i) => *i,
        _ => None,
    }
}

pub(crate) fn wrong_argument(function: &str) -> SqlError {
    SqlError::internal(format!(
        "{function} was called with an argument of a wrong type"
    ))
}

pub(crate) fn out_of_range(what: &str) -> SqlError {
    SqlError::new("22008", format!("{what} out of range"))
}

/// PostgreSQL's keywords that `quote_ident` quotes: all but the unreserved ones.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// `quote_ident`: the name as written in SQL, quoted unless it is lower case letters,
/// digits and underscores not starting with a digit and not a keyword.
fn quote_ident(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let name = text(&args[0]).ok_or_else(|| wrong_argument("quote_ident"))?;
    let plain = crate::dml::reads_back_unquoted(name) && !QUOTED_KEYWORDS.contains(&name);
    Ok(ScalarValue::Utf8(Some(if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    })))
}

/// A string as a SQL literal: quotes doubled, and as `E'...'` with backslashes doubled
/// if it has any (PostgreSQL's `quote_literal`).
fn literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

fn quote_literal(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let s = text(&args[0]).ok_or_else(|| wrong_argument("quote_literal"))?;
    Ok(ScalarValue::Utf8(Some(literal(s))))
}

/// `quote_literal`, or `NULL` (the word) for NULL.
fn quote_nullable(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    Ok(ScalarValue::Utf8(Some(match text(&args[0]) {
        Some(s) => literal(s),
        None => "NULL".into(),
    })))
}

fn invalid_regex(e: regex::Error) -> SqlError {
    SqlError::new("2201B", format!("invalid regular expression: {e}"))
}

/// `regexp_split_to_array(string, pattern)`.
fn regexp_split_to_array(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (Some(s), Some(pattern)) = (text(&args[0]), text(&args[1])) else {
        return Err(wrong_argument("regexp_split_to_array"));
    };
    let (re, _) = regex_with_flags(pattern, "")?;
    let parts: Vec<ScalarValue> = if s.is_empty() {
        vec![ScalarValue::Utf8(Some(String::new()))]
    } else if re.is_match("") {
        // A pattern that matches nothing splits between every character, as PostgreSQL's.
        s.chars()
            .map(|c| ScalarValue::Utf8(Some(c.to_string())))
            .collect()
    } else {
        re.split(s)
            .map(|p| ScalarValue::Utf8(Some(p.to_string())))
            .collect()
    };
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(
        &parts,
        &DataType::Utf8,
    )))
}

/// A regular expression with PostgreSQL's flags: `g` (every match; reported apart),
/// `i` (case-insensitive), `c` (case-sensitive, the default), `q` (the pattern is
/// literal text), `x` (blanks and `#` comments in the pattern ignored). Others are 22023.
/// As in PostgreSQL, `.` matches a newline too.
fn regex_with_flags(pattern: &str, flags: &str) -> Result<(regex::Regex, bool), SqlError> {
    let mut global = false;
    let mut insensitive = false;
    let mut literal = false;
    let mut expanded = false;
    for f in flags.chars() {
        match f {
            'g' => global = true,
            'i' => insensitive = true,
            'c' => insensitive = false,
            'q' => literal = true,
            'x' => expanded = true,
            other => {
                return Err(SqlError::new(
                    "22023",
                    format!("invalid regular expression option: \"{other}\""),
                ));
            }
        }
    }
    let pattern = if literal {
        regex::escape(pattern)
    } else {
        pattern.to_string()
    };
    let re = regex::RegexBuilder::new(&pattern)
        .case_insensitive(insensitive)
        .ignore_whitespace(expanded && !literal)
        .dot_matches_new_line(true)
        .build()
        .map_err(invalid_regex)?;
    Ok((re, global))
}

/// The type `regexp_matches` yields its rows as: a list of each match's texts.
fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// `regexp_matches(string, pattern [, flags])` as one list of its rows (`unnest` makes
/// them rows; `json_sets::expand_in`): each match as the texts its parenthesized
/// groups caught (NULL for a group that caught nothing), or as its whole text if the
/// pattern has no groups; the first match only, or every match with the flag `g`.
fn regexp_matches_list(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (Some(s), Some(pattern)) = (text(&args[0]), text(&args[1])) else {
        return Err(wrong_argument("regexp_matches"));
    };
    let flags = args.get(2).and_then(text).unwrap_or("");
    let (re, global) = regex_with_flags(pattern, flags)?;
    let mut rows = Vec::new();
    for caps in re.captures_iter(s) {
        let texts: Vec<ScalarValue> = if caps.len() > 1 {
            (1..caps.len())
                .map(|i| ScalarValue::Utf8(caps.get(i).map(|m| m.as_str().to_string())))
                .collect()
        } else {
            vec![ScalarValue::Utf8(Some(caps[0].to_string()))]
        };
        rows.push(ScalarValue::List(ScalarValue::new_list_nullable(
            &texts,
            &DataType::Utf8,
        )));
        if !global {
            break;
        }
    }
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(
        &rows,
        &text_list(),
    )))
}

/// `substring(string from pattern)`: the first match's text, or of its first
/// parenthesized group if the pattern has one; NULL for no match.
fn substring_regex(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (Some(s), Some(pattern)) = (text(&args[0]), text(&args[1])) else {
        return Err(wrong_argument("substring"));
    };
    let (re, _) = regex_with_flags(pattern, "")?;
    Ok(ScalarValue::Utf8(re.captures(s).and_then(|caps| {
        caps.get(if caps.len() > 1 { 1 } else { 0 })
            .map(|m| m.as_str().to_string())
    })))
}

/// The names `regexp_matches` and `substring(string from pattern)` are planned under.
pub(crate) const REGEXP_MATCHES_LIST: &str = "flotilla_regexp_matches_list";
const SUBSTRING_REGEX: &str = "flotilla_substring_regex";

/// A `SIMILAR TO` pattern as a regular expression matching the whole string (PostgreSQL's
/// `similar_to_escape`): `%` any text, `_` any character, `|`, `*`, `+`, `?`, `{m,n}`,
/// parentheses and brackets as in a regular expression, anything else (`.` included)
/// itself, and the escape character (by default `\`) making the next one itself.
pub(crate) fn similar_to_regex(pattern: &str, escape: Option<char>) -> Result<String, SqlError> {
    let mut out = String::from("(?s)^(?:");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(next) => out.push_str(&regex::escape(&next.to_string())),
                None => {
                    return Err(SqlError::new(
                        "2201B",
                        "invalid escape sequence in a SIMILAR TO pattern: it ends with the \
                         escape character",
                    ));
                }
            }
            continue;
        }
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '[' => {
                // A bracket expression, copied to its closing bracket (a `]` first in it,
                // after any `^`, is a member).
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
                loop {
                    match chars.next() {
                        Some(']') => {
                            out.push(']');
                            break;
                        }
                        Some('\\') => out.push_str("\\\\"),
                        Some('[') => out.push_str("\\["),
                        Some(other) => out.push(other),
                        None => {
                            return Err(SqlError::new(
                                "2201B",
                                "invalid regular expression: brackets [] not balanced",
                            ));
                        }
                    }
                }
            }
            '.' | '^' | '$' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out.push_str(")$");
    Ok(out)
}

/// `flotilla_similar_regex(pattern, escape)`: the pattern as `similar_to_regex` writes it.
fn similar_regex(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let pattern = text(&args[0]).ok_or_else(|| wrong_argument("SIMILAR TO"))?;
    let escape = match text(&args[1]) {
        Some("") => None,
        Some(e) => {
            let mut chars = e.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => {
                    return Err(SqlError::new("22019", "invalid escape string")
                        .with_hint("Escape string must be empty or one character."));
                }
            }
        }
        None => Some('\\'),
    };
    let regex = similar_to_regex(pattern, escape)?;
    // Checked here, so a bad pattern is reported as PostgreSQL reports it.
    regex::Regex::new(&regex).map_err(invalid_regex)?;
    Ok(ScalarValue::Utf8(Some(regex)))
}

/// `'...'::bytea`: PostgreSQL's text forms of bytea, hex (`\x4142`) or escaped (`a\\b`).
fn bytea_in(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let s = text(&args[0]).ok_or_else(|| wrong_argument("bytea_in"))?;
    let strings = datafusion::arrow::array::StringArray::from(vec![s]);
    let bytes = crate::types::bytea_from_text(&strings)?;
    ScalarValue::try_from_array(&bytes, 0).map_err(crate::error::datafusion_error)
}

/// `bytea::text`: PostgreSQL's hex form (`\x4142`).
fn bytea_out(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (ScalarValue::Binary(Some(bytes)) | ScalarValue::LargeBinary(Some(bytes))) = &args[0]
    else {
        return Err(wrong_argument("bytea_out"));
    };
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(ScalarValue::Utf8(Some(out)))
}

/// An interval's place in PostgreSQL's order (`interval_cmp_value`): its months as 30
/// days and its days as 24 hours, in nanoseconds. So `'1 day' = '24 hours'`, which Arrow,
/// comparing months, days and nanoseconds apart, says are not.
fn interval_key(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let i = span(&args[0]).ok_or_else(|| wrong_argument("interval_key"))?;
    let nanos = (i.months as i128 * DAYS_PER_MONTH as i128 + i.days as i128)
        * NANOS_PER_DAY as i128
        + i.nanoseconds as i128;
    Ok(ScalarValue::Decimal128(
        Some(nanos),
        INTERVAL_KEY_PRECISION,
        0,
    ))
}

/// Digits of an interval's key: its nanoseconds fit in 30.
const INTERVAL_KEY_PRECISION: u8 = 38;

/// `format(template, text...)` (PostgreSQL's `text_format`): `%s` a value as text (NULL
/// as nothing), `%I` as an identifier (`quote_ident`), `%L` as a literal
/// (`quote_nullable`), `%%` a percent sign; each may take its argument by position
/// (`%2$s`) and a width (`%10s`, `%-10s` to pad on the right).
fn format(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let Some(template) = text(&args[0]) else {
        return Ok(ScalarValue::Utf8(None));
    };
    let values = &args[1..];
    let bad = |why: String| SqlError::new("22023", why);
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let digits = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            n
        };
        // `n$` (a position) or the width, whichever the digits turn out to be.
        let mut position = None;
        let mut left = false;
        let first = digits(&mut chars);
        let mut width = first.clone();
        if !first.is_empty() && chars.peek() == Some(&'$') {
            chars.next();
            let n: usize = first
                .parse()
                .map_err(|_| bad("argument number is out of range".into()))?;
            if n == 0 {
                return Err(bad(
                    "format specifies argument 0, but arguments are numbered from 1".into(),
                ));
            }
            position = Some(n - 1);
            width = String::new();
        }
        if width.is_empty() {
            if chars.peek() == Some(&'-') {
                chars.next();
                left = true;
            }
            if chars.peek() == Some(&'*') {
                return Err(SqlError::new(
                    "0A000",
                    "format() widths taken from an argument (*) are not supported",
                ));
            }
            width = digits(&mut chars);
        }
        let kind = chars
            .next()
            .ok_or_else(|| bad("unterminated format() type specifier".into()))?;
        let index = position.unwrap_or(next);
        next = index + 1;
        let value = values
            .get(index)
            .ok_or_else(|| bad("too few arguments for format()".into()))?;
        let piece = match kind {
            's' => text(value).unwrap_or("").to_string(),
            'I' => match text(value) {
                Some(_) => match quote_ident(std::slice::from_ref(value))? {
                    ScalarValue::Utf8(Some(s)) => s,
                    _ => String::new(),
                },
                None => {
                    return Err(SqlError::new(
                        "22004",
                        "null values cannot be formatted as an SQL identifier",
                    ));
                }
            },
            'L' => match text(value) {
                Some(s) => literal(s),
                None => "NULL".into(),
            },
            other => {
                return Err(
                    bad(format!("unrecognized format() type specifier \"{other}\""))
                        .with_hint("For a single \"%\" use \"%%\"."),
                );
            }
        };
        let width: usize = if width.is_empty() {
            0
        } else {
            width
                .parse()
                .map_err(|_| bad("number is out of range".into()))?
        };
        let pad = width.saturating_sub(piece.chars().count());
        if left {
            out.push_str(&piece);
            out.extend(std::iter::repeat_n(' ', pad));
        } else {
            out.extend(std::iter::repeat_n(' ', pad));
            out.push_str(&piece);
        }
    }
    Ok(ScalarValue::Utf8(Some(out)))
}

/// `isfinite(date | timestamp)`: true; there are no infinite dates or timestamps here.
fn isfinite(_args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    Ok(ScalarValue::Boolean(Some(true)))
}

/// `array_dims(array)`: PostgreSQL's text of its bounds (`[1:3]`, `[1:2][1:3]`), NULL for
/// an empty array.
fn array_dims(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let mut out = String::new();
    let mut value = args[0].clone();
    loop {
        let list = match &value {
            ScalarValue::List(l) => l.value(0),
            ScalarValue::LargeList(l) => l.value(0),
            ScalarValue::FixedSizeList(l) => l.value(0),
            _ => break,
        };
        if list.is_empty() {
            break;
        }
        out.push_str(&format!("[1:{}]", list.len()));
        value = ScalarValue::try_from_array(&list, 0).map_err(crate::error::datafusion_error)?;
    }
    Ok(ScalarValue::Utf8((!out.is_empty()).then_some(out)))
}

/// The names `similar_regex`, `bytea_in`, `bytea_out` and `interval_key` are planned under.
const INTERVAL_KEY: &str = "flotilla_interval_key";
const SIMILAR_REGEX: &str = "flotilla_similar_regex";
const BYTEA_IN: &str = "flotilla_bytea_in";
const BYTEA_OUT: &str = "flotilla_bytea_out";

/// The functions of this module to register in every statement's context.
pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let text_type = || vec![DataType::Utf8];
    vec![
        RowFunction::new(
            "quote_ident",
            &[1],
            text_type(),
            DataType::Utf8,
            quote_ident,
        )
        .udf(),
        RowFunction::new(
            "quote_literal",
            &[1],
            text_type(),
            DataType::Utf8,
            quote_literal,
        )
        .udf(),
        RowFunction {
            null_in: true,
            ..RowFunction::new(
                "quote_nullable",
                &[1],
                text_type(),
                DataType::Utf8,
                quote_nullable,
            )
        }
        .udf(),
        RowFunction::new(
            "regexp_split_to_array",
            &[2],
            text_type(),
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            regexp_split_to_array,
        )
        .udf(),
        RowFunction::new(
            REGEXP_MATCHES_LIST,
            &[2, 3],
            text_type(),
            DataType::List(Arc::new(Field::new_list_field(text_list(), true))),
            regexp_matches_list,
        )
        .udf(),
        RowFunction::new(
            SUBSTRING_REGEX,
            &[2],
            text_type(),
            DataType::Utf8,
            substring_regex,
        )
        .udf(),
        RowFunction {
            null_in: true,
            ..RowFunction::new(
                SIMILAR_REGEX,
                &[2],
                text_type(),
                DataType::Utf8,
                similar_regex,
            )
        }
        .udf(),
        RowFunction::new(BYTEA_IN, &[1], text_type(), DataType::Binary, bytea_in).udf(),
        RowFunction::new(
            BYTEA_OUT,
            &[1],
            vec![DataType::Binary],
            DataType::Utf8,
            bytea_out,
        )
        .udf(),
        RowFunction {
            null_in: true,
            signature: Signature::variadic_any(Volatility::Immutable),
            ..RowFunction::new(FORMAT, &[1], text_type(), DataType::Utf8, format)
        }
        .udf(),
        RowFunction::new("isfinite", &[1], vec![], DataType::Boolean, isfinite).udf(),
        RowFunction::new(
            ENCODE_ESCAPE,
            &[1],
            vec![DataType::Binary],
            DataType::Utf8,
            encode_escape,
        )
        .udf(),
        RowFunction::new("width_bucket", &[4], vec![], DataType::Int32, width_bucket).udf(),
        RowFunction::new(
            BASE64_LINES,
            &[1],
            text_type(),
            DataType::Utf8,
            base64_lines,
        )
        .udf(),
        RowFunction::new("array_dims", &[1], vec![], DataType::Utf8, array_dims).udf(),
        RowFunction::new(
            INTERVAL_KEY,
            &[1],
            vec![interval()],
            DataType::Decimal128(INTERVAL_KEY_PRECISION, 0),
            interval_key,
        )
        .udf(),
    ]
}

/// `current_setting(name [, missing_ok])`: the session's settings as `SHOW` gives them,
/// taken when the statement starts. An unknown name is 42704, or NULL if `missing_ok`.
pub(crate) fn current_setting(settings: HashMap<String, String>) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(CurrentSetting {
        settings: settings.into_iter().collect(),
        signature: Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Stable,
        ),
    }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    /// (lower-case name, value), sorted.
    settings: std::collections::BTreeMap<String, String>,
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let names = cast(&args.args[0].to_array(rows)?, &DataType::Utf8)?;
        let names = names
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>();
        let missing_ok = match args.args.get(1) {
            Some(a) => Some(cast(&a.to_array(rows)?, &DataType::Boolean)?),
            None => None,
        };
        let missing_ok = missing_ok.as_ref().and_then(|a| {
            a.as_any()
                .downcast_ref::<datafusion::arrow::array::BooleanArray>()
        });
        let names = names.ok_or_else(|| DataFusionError::Internal("names not text".into()))?;
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..names.len() {
            if names.is_null(row) {
                out.append_null();
                continue;
            }
            let name = names.value(row).to_ascii_lowercase();
            match self.settings.get(&name) {
                Some(v) => out.append_value(v),
                None if missing_ok.is_some_and(|m| m.is_valid(row) && m.value(row)) => {
                    out.append_null()
                }
                None => {
                    return Err(DataFusionError::External(Box::new(SqlError::new(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    ))));
                }
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(
            match args
                .args
                .iter()
                .all(|a| matches!(a, ColumnarValue::Scalar(_)))
            {
                true => ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?),
                false => ColumnarValue::Array(array),
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Casts of fractions to integers
// ---------------------------------------------------------------------------------------------

/// A `numeric` or float rounded to a whole number as PostgreSQL rounds it on the way to
/// an integer type: a numeric half away from zero (`12.5::int` is 13), a float half to
/// even (`2.5::float8::int` is 2, as `rint`). Arrow's cast truncates (`12.5` would be 12).
#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundForInteger {
    signature: Signature,
}

const ROUND_FOR_INTEGER: &str = "flotilla_round_for_integer";

impl ScalarUDFImpl for RoundForInteger {
    fn name(&self) -> &str {
        ROUND_FOR_INTEGER
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let round = round_for_integer;
        Ok(match &args.args[0] {
            ColumnarValue::Array(a) => ColumnarValue::Array(round(a)?),
            ColumnarValue::Scalar(s) => {
                let out = round(&s.to_array()?)?;
                ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
            }
        })
    }
}

/// Each number rounded as `RoundForInteger` says (other types unchanged): for a cast,
/// and for a value assigned to an integer column (`types::cast_to_column`).
pub(crate) fn round_for_integer(array: &ArrayRef) -> DfResult<ArrayRef> {
    use datafusion::arrow::array::{AsArray, PrimitiveArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Float32Type, Float64Type};
    Ok(match array.data_type() {
        DataType::Decimal128(p, s) if *s > 0 => {
            let unit = 10i128.pow(*s as u32);
            let half = unit / 2;
            let rounded: PrimitiveArray<Decimal128Type> =
                array.as_primitive::<Decimal128Type>().unary(|v| {
                    let whole = v / unit;
                    let rest = v % unit;
                    let whole = if rest >= half {
                        whole + 1
                    } else if rest <= -half {
                        whole - 1
                    } else {
                        whole
                    };
                    whole * unit
                });
            Arc::new(rounded.with_precision_and_scale(*p, *s)?)
        }
        DataType::Float64 => Arc::new(
            array
                .as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(f64::round_ties_even),
        ),
        DataType::Float32 => Arc::new(
            array
                .as_primitive::<Float32Type>()
                .unary::<_, Float32Type>(f32::round_ties_even),
        ),
        _ => array.clone(),
    })
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    )
}

fn is_fraction(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Decimal128(..) | DataType::Float32 | DataType::Float64
    )
}

// ---------------------------------------------------------------------------------------------
// After type coercion: SIMILAR TO and casts of strings to bytea
// ---------------------------------------------------------------------------------------------

/// The analyzer rule described in the module's description.
#[derive(Debug)]
pub(crate) struct PgBuiltins {
    similar_regex: Arc<ScalarUDF>,
    bytea_in: Arc<ScalarUDF>,
    bytea_out: Arc<ScalarUDF>,
    interval_key: Arc<ScalarUDF>,
    round_for_integer: Arc<ScalarUDF>,
}

impl PgBuiltins {
    pub(crate) fn new() -> Self {
        let find = |name: &str| {
            functions()
                .into_iter()
                .find(|f| f.name() == name)
                .expect("defined above")
        };
        Self {
            similar_regex: find(SIMILAR_REGEX),
            bytea_in: find(BYTEA_IN),
            bytea_out: find(BYTEA_OUT),
            interval_key: find(INTERVAL_KEY),
            round_for_integer: Arc::new(ScalarUDF::new_from_impl(RoundForInteger {
                signature: Signature::any(1, Volatility::Immutable),
            })),
        }
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        if let Expr::SimilarTo(Like {
            negated,
            expr: text,
            pattern,
            escape_char,
            case_insensitive,
        }) = expr
        {
            let escape = Expr::Literal(
                ScalarValue::Utf8(Some(escape_char.map(String::from).unwrap_or("\\".into()))),
                None,
            );
            let op = match (negated, case_insensitive) {
                (false, false) => Operator::RegexMatch,
                (true, false) => Operator::RegexNotMatch,
                (false, true) => Operator::RegexIMatch,
                (true, true) => Operator::RegexNotIMatch,
            };
            let regex = Expr::ScalarFunction(ScalarFunction::new_udf(
                self.similar_regex.clone(),
                vec![*pattern, escape],
            ));
            return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                text,
                op,
                Box::new(regex),
            ))));
        }
        if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr
            && crate::bpchar::compares(*op)
        {
            use datafusion::logical_expr::ExprSchemable;
            let is_interval = |e: &Expr| {
                matches!(
                    e.get_type(schema),
                    Ok(DataType::Interval(IntervalUnit::MonthDayNano))
                )
            };
            if is_interval(left) && is_interval(right) {
                let key = |e: &Expr| {
                    Box::new(Expr::ScalarFunction(ScalarFunction::new_udf(
                        self.interval_key.clone(),
                        vec![e.clone()],
                    )))
                };
                return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                    key(left),
                    *op,
                    key(right),
                ))));
            }
        }
        if let Some(rewritten) = self.rounding(&expr, schema) {
            return Ok(Transformed::yes(rewritten));
        }
        let Some((inner, to, from)) = crate::types::cast_parts(&expr, schema) else {
            return Ok(Transformed::no(expr));
        };
        if is_integer(to) && is_fraction(&from) {
            let rounded = matches!(inner, Expr::ScalarFunction(f) if f.name() == ROUND_FOR_INTEGER);
            if rounded {
                return Ok(Transformed::no(expr));
            }
            let rounded = Expr::ScalarFunction(ScalarFunction::new_udf(
                self.round_for_integer.clone(),
                vec![inner.clone()],
            ));
            let to = to.clone();
            return Ok(Transformed::yes(match expr {
                Expr::TryCast(_) => Expr::TryCast(datafusion::logical_expr::TryCast::new(
                    Box::new(rounded),
                    to,
                )),
                _ => Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(rounded), to)),
            }));
        }
        let udf = if *to == DataType::Binary && crate::types::is_string(&from) {
            &self.bytea_in
        } else if *to == DataType::Utf8 && from == DataType::Binary {
            &self.bytea_out
        } else {
            return Ok(Transformed::no(expr));
        };
        let inner = inner.clone();
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf.clone(), vec![inner]),
        )))
    }
}

impl PgBuiltins {
    /// `round(float8)` rounds half to even (PostgreSQL's `rint`; DataFusion's rounds
    /// half away from zero), and `ceil`, `floor` and `trunc` of a numeric have the scale
    /// PostgreSQL gives them (none, or `trunc`'s places: `trunc(12.345, 1)` is `12.3`,
    /// not `12.300`).
    fn rounding(&self, expr: &Expr, schema: &DFSchema) -> Option<Expr> {
        use datafusion::logical_expr::ExprSchemable;
        let Expr::ScalarFunction(f) = expr else {
            return None;
        };
        let name = f.name();
        let first = f.args.first()?.get_type(schema).ok()?;
        match (name, &first, f.args.len()) {
            ("round", DataType::Float64 | DataType::Float32, 1) => Some(Expr::ScalarFunction(
                ScalarFunction::new_udf(self.round_for_integer.clone(), f.args.clone()),
            )),
            ("ceil" | "floor" | "trunc", DataType::Decimal128(p, s), _) => {
                fn literal_int(e: &Expr) -> Option<i64> {
                    match e {
                        Expr::Literal(ScalarValue::Int64(Some(n)), _) => Some(*n),
                        Expr::Literal(ScalarValue::Int32(Some(n)), _) => Some(*n as i64),
                        Expr::Cast(c) => literal_int(&c.expr),
                        Expr::TryCast(c) => literal_int(&c.expr),
                        _ => None,
                    }
                }
                let places: i8 = match f.args.get(1) {
                    None => 0,
                    Some(e) => literal_int(e)?.clamp(0, 38) as i8,
                };
                // Done already: the argument was widened (below).
                let widened = DataType::Decimal128((*p + 1).min(38), *s);
                if *p == 38
                    || matches!(&f.args[0], Expr::Cast(c) if *c.field.data_type() == widened)
                {
                    return None;
                }
                // One more integer digit: `floor(-0.5)` is -1, which DataFusion would
                // compute in the argument's precision (1) and overflow.
                let mut args = f.args.clone();
                args[0] = Expr::Cast(datafusion::logical_expr::Cast::new(
                    Box::new(args[0].clone()),
                    widened,
                ));
                let integer_digits = (*p as i16 - *s as i16 + 1).max(1);
                let precision = (integer_digits + places as i16).clamp(1, 38) as u8;
                Some(Expr::Cast(datafusion::logical_expr::Cast::new(
                    Box::new(Expr::ScalarFunction(ScalarFunction::new_udf(
                        f.func.clone(),
                        args,
                    ))),
                    DataType::Decimal128(precision, places),
                )))
            }
            _ => None,
        }
    }
}

impl PgBuiltins {
    /// ORDER BY an interval sorts by its place in PostgreSQL's order (`interval_key`: a
    /// month as 30 days), as comparisons do; Arrow's order of its fields would put `1
    /// mon` after `40 days`.
    fn intervals_sorted_by_key(&self, plan: LogicalPlan) -> DfResult<LogicalPlan> {
        use datafusion::logical_expr::ExprSchemable;
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::Sort(mut sort) = node else {
                return Ok(Transformed::no(node));
            };
            let schema = sort.input.schema().clone();
            let mut keyed = false;
            for order in sort.expr.iter_mut() {
                if matches!(
                    order.expr.get_type(&schema),
                    Ok(DataType::Interval(IntervalUnit::MonthDayNano))
                ) {
                    order.expr = Expr::ScalarFunction(ScalarFunction::new_udf(
                        self.interval_key.clone(),
                        vec![order.expr.clone()],
                    ));
                    keyed = true;
                }
            }
            Ok(Transformed::new_transformed(LogicalPlan::Sort(sort), keyed))
        })
        .map(|t| t.data)
    }
}

impl AnalyzerRule for PgBuiltins {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let retyped = std::cell::Cell::new(false);
        let plan = crate::overflow::rewrite_expressions(plan, |e, schema| {
            let rewritten = self.rewrite(e, schema)?;
            if rewritten.transformed && matches!(rewritten.data, Expr::Cast(_)) {
                retyped.set(true);
            }
            Ok(rewritten)
        })?;
        let plan = self.intervals_sorted_by_key(plan)?;
        if !retyped.get() {
            return Ok(plan);
        }
        // A numeric's new scale changes its column's type: every node's schema follows.
        plan.transform_up_with_subqueries(|node| node.recompute_schema().map(Transformed::yes))
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "flotilla_pg_builtins"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_to_patterns_become_anchored_regular_expressions() {
        let matches = |text: &str, pattern: &str| {
            let re = similar_to_regex(pattern, Some('\\')).expect("a pattern");
            regex::Regex::new(&re).expect("a regex").is_match(text)
        };
        assert!(matches("abc", "a%"));
        assert!(matches("abc", "(a|b)%"));
        assert!(!matches("abc", "b%"));
        assert!(matches("a.c", "a.c"));
        assert!(!matches("abc", "a.c"));
        assert!(matches("abc", "a_c"));
        assert!(matches("a%", "a\\%"));
        assert!(!matches("ab", "a\\%"));
        assert!(matches("x]y", "x[]]y"));
        assert!(matches("line\nbreak", "line%"));
        assert!(similar_to_regex("a\\", Some('\\')).is_err());
        assert!(similar_to_regex("[ab", Some('\\')).is_err());
    }
}
