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
//!   PostgreSQL rounds it (Arrow's cast truncates). Intervals compare as PostgreSQL's do: a month as 30 days, a day as
//!   24 hours (`interval '1 day' = interval '24 hours'`).
//! - Functions of their own: `age`, `justify_days`, `justify_hours`, `justify_interval`,
//!   `make_timestamp`, `quote_ident`, `quote_literal`, `quote_nullable`,
//!   `regexp_split_to_array`, and `current_setting` (built per statement from the
//!   session's settings).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
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
    FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName, OrderBy, OrderByExpr,
    OrderByKind, Query, SelectItem, SetExpr, Statement, TableFactor, TimezoneInfo, Value,
    visit_expressions_mut,
};

use crate::error::SqlError;
use crate::sql_ast::{arg, call, object_name};

// ---------------------------------------------------------------------------------------------
// Before planning: calls under DataFusion's names
// ---------------------------------------------------------------------------------------------

/// Rewrites the calls named in the module's description.
pub(crate) fn rewrite_calls(statement: &mut Statement) -> Result<(), SqlError> {
    let outcome = visit_expressions_mut(statement, |e| {
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

/// The built-in function `name` calls: unqualified or in `pg_catalog`, folded.
fn builtin_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(crate::sql_ast::folded))
        .collect();
    match parts.as_slice() {
        [last] => Some(last.clone()),
        [schema, last] if schema == "pg_catalog" => Some(last.clone()),
        _ => None,
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
        ("variance", [_]) => renamed("var_samp"),
        ("every", [_]) => renamed("bool_and"),
        ("array_remove", [_, _]) => renamed("array_remove_all"),
        ("to_timestamp", [_, _]) => renamed(TO_TIMESTAMP),
        ("to_date", [_, _]) => renamed(TO_DATE),
        ("transaction_timestamp", []) => renamed("now"),
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

/// The names `to_timestamp(text, template)` and `to_date(text, template)` are planned under.
const TO_TIMESTAMP: &str = "flotilla_to_timestamp";
const TO_DATE: &str = "flotilla_to_date";

// ---------------------------------------------------------------------------------------------
// Functions computed a row at a time
// ---------------------------------------------------------------------------------------------

/// One row's value from its arguments (cast as the function asks), or an error to report.
type Eval = fn(&[ScalarValue]) -> Result<ScalarValue, SqlError>;

/// A function computed a row at a time from its arguments' values: for functions whose
/// work per row dwarfs the cost of taking the row apart (parsing, formatting, calendar
/// arithmetic). Any NULL argument makes the result NULL, unless `null_in` says otherwise.
#[derive(Debug)]
struct RowFunction {
    name: &'static str,
    signature: Signature,
    /// The types the arguments are cast to before `eval` (by position; the last repeats).
    arg_types: Vec<DataType>,
    returns: DataType,
    eval: Eval,
    /// Whether `eval` sees NULL arguments (otherwise they give NULL).
    null_in: bool,
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
    fn new(
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

    fn udf(self) -> Arc<ScalarUDF> {
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

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

fn interval() -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.as_deref(),
        _ => None,
    }
}

fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampMicrosecond(t, _) => *t,
        _ => None,
    }
}

fn span(v: &ScalarValue) -> Option<IntervalMonthDayNano> {
    match v {
        ScalarValue::IntervalMonthDayNano(i) => *i,
        _ => None,
    }
}

fn wrong_argument(function: &str) -> SqlError {
    SqlError::internal(format!(
        "{function} was called with an argument of a wrong type"
    ))
}

fn out_of_range(what: &str) -> SqlError {
    SqlError::new("22008", format!("{what} out of range"))
}

fn naive(micros: i64) -> Result<NaiveDateTime, SqlError> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.naive_utc())
        .ok_or_else(|| out_of_range("timestamp"))
}

fn days_in_month(year: i32, month: u32) -> i32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    match (
        NaiveDate::from_ymd_opt(year, month, 1),
        NaiveDate::from_ymd_opt(next_year, next_month, 1),
    ) {
        (Some(first), Some(next)) => (next - first).num_days() as i32,
        _ => 30,
    }
}

const NANOS_PER_MICRO: i64 = 1_000;
const MICROS_PER_DAY: i64 = 86_400_000_000;
const NANOS_PER_DAY: i64 = MICROS_PER_DAY * NANOS_PER_MICRO;
const DAYS_PER_MONTH: i32 = 30;

/// `age(a, b)`: `a - b` as years, months and days counted on the calendar (PostgreSQL's
/// `timestamp_age`): each field subtracted, negative ones borrowed from the next larger,
/// a day borrowed as the days of the earlier timestamp's month.
fn age(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (Some(a), Some(b)) = (micros(&args[0]), micros(&args[1])) else {
        return Err(wrong_argument("age"));
    };
    let (t1, t2) = (naive(a)?, naive(b)?);
    let fields = |t: &NaiveDateTime| {
        [
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
            t.minute() as i64,
            t.second() as i64,
            (t.nanosecond() / 1_000) as i64,
        ]
    };
    let (f1, f2) = (fields(&t1), fields(&t2));
    let mut d: Vec<i64> = f1.iter().zip(f2.iter()).map(|(x, y)| x - y).collect();
    let flip = a < b;
    if flip {
        d.iter_mut().for_each(|v| *v = -*v);
    }
    let [year, month, day, hour, minute, second, micro] = d.as_mut_slice() else {
        unreachable!("seven fields");
    };
    while *micro < 0 {
        *micro += 1_000_000;
        *second -= 1;
    }
    while *second < 0 {
        *second += 60;
        *minute -= 1;
    }
    while *minute < 0 {
        *minute += 60;
        *hour -= 1;
    }
    while *hour < 0 {
        *hour += 24;
        *day -= 1;
    }
    // The earlier timestamp's month lends its days.
    let lender = if flip { &t1 } else { &t2 };
    while *day < 0 {
        *day += days_in_month(lender.year(), lender.month()) as i64;
        *month -= 1;
    }
    while *month < 0 {
        *month += 12;
        *year -= 1;
    }
    let sign = if flip { -1 } else { 1 };
    let months = sign * (*year * 12 + *month);
    let days = sign * *day;
    let time_micros = sign * (((*hour * 60 + *minute) * 60 + *second) * 1_000_000 + *micro);
    let months = i32::try_from(months).map_err(|_| out_of_range("interval"))?;
    let days = i32::try_from(days).map_err(|_| out_of_range("interval"))?;
    Ok(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano::new(months, days, time_micros * NANOS_PER_MICRO),
    )))
}

fn interval_value(months: i64, days: i64, nanos: i64) -> Result<ScalarValue, SqlError> {
    let months = i32::try_from(months).map_err(|_| out_of_range("interval"))?;
    let days = i32::try_from(days).map_err(|_| out_of_range("interval"))?;
    Ok(ScalarValue::IntervalMonthDayNano(Some(
        IntervalMonthDayNano::new(months, days, nanos),
    )))
}

/// `justify_days`: each 30 days as a month (PostgreSQL's `interval_justify_days`).
fn justify_days(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let i = span(&args[0]).ok_or_else(|| wrong_argument("justify_days"))?;
    let (mut months, mut days) = (i.months as i64, i.days as i64);
    months += days / DAYS_PER_MONTH as i64;
    days %= DAYS_PER_MONTH as i64;
    if months > 0 && days < 0 {
        days += DAYS_PER_MONTH as i64;
        months -= 1;
    } else if months < 0 && days > 0 {
        days -= DAYS_PER_MONTH as i64;
        months += 1;
    }
    interval_value(months, days, i.nanoseconds)
}

/// `justify_hours`: each 24 hours as a day (PostgreSQL's `interval_justify_hours`).
fn justify_hours(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let i = span(&args[0]).ok_or_else(|| wrong_argument("justify_hours"))?;
    let mut days = i.days as i64 + i.nanoseconds / NANOS_PER_DAY;
    let mut nanos = i.nanoseconds % NANOS_PER_DAY;
    if days > 0 && nanos < 0 {
        nanos += NANOS_PER_DAY;
        days -= 1;
    } else if days < 0 && nanos > 0 {
        nanos -= NANOS_PER_DAY;
        days += 1;
    }
    interval_value(i.months as i64, days, nanos)
}

/// `justify_interval`: both, with the signs of the parts made to agree (PostgreSQL's
/// `interval_justify_interval`).
fn justify_interval(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let i = span(&args[0]).ok_or_else(|| wrong_argument("justify_interval"))?;
    let per_month = DAYS_PER_MONTH as i64;
    let (mut months, mut days, mut nanos) = (i.months as i64, i.days as i64, i.nanoseconds);
    if (days > 0 && nanos > 0) || (days < 0 && nanos < 0) {
        months += days / per_month;
        days %= per_month;
    }
    days += nanos / NANOS_PER_DAY;
    nanos %= NANOS_PER_DAY;
    months += days / per_month;
    days %= per_month;
    if months > 0 && (days < 0 || (days == 0 && nanos < 0)) {
        days += per_month;
        months -= 1;
    } else if months < 0 && (days > 0 || (days == 0 && nanos > 0)) {
        days -= per_month;
        months += 1;
    }
    if days > 0 && nanos < 0 {
        nanos += NANOS_PER_DAY;
        days -= 1;
    } else if days < 0 && nanos > 0 {
        nanos -= NANOS_PER_DAY;
        days += 1;
    }
    interval_value(months, days, nanos)
}

/// `make_timestamp(year, month, day, hour, min, sec)`.
fn make_timestamp(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let int = |v: &ScalarValue| match v {
        ScalarValue::Int64(Some(n)) => Ok(*n),
        _ => Err(wrong_argument("make_timestamp")),
    };
    let (year, month, day, hour, minute) = (
        int(&args[0])?,
        int(&args[1])?,
        int(&args[2])?,
        int(&args[3])?,
        int(&args[4])?,
    );
    let ScalarValue::Float64(Some(seconds)) = args[5] else {
        return Err(wrong_argument("make_timestamp"));
    };
    let date = i32::try_from(year)
        .ok()
        .filter(|y| *y > 0)
        .and_then(|y| {
            NaiveDate::from_ymd_opt(y, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
        })
        .ok_or_else(|| {
            SqlError::new(
                "22008",
                format!("date field value out of range: {year}-{month:02}-{day:02}"),
            )
        })?;
    let whole = seconds.trunc();
    let time = (0..=59)
        .contains(&(whole as i64))
        .then(|| {
            NaiveTime::from_hms_micro_opt(
                u32::try_from(hour).ok()?,
                u32::try_from(minute).ok()?,
                whole as u32,
                ((seconds - whole) * 1e6).round() as u32,
            )
        })
        .flatten()
        .filter(|_| seconds >= 0.0)
        .ok_or_else(|| {
            SqlError::new(
                "22008",
                format!("time field value out of range: {hour}:{minute:02}:{seconds}"),
            )
        })?;
    Ok(ScalarValue::TimestampMicrosecond(
        Some(NaiveDateTime::new(date, time).and_utc().timestamp_micros()),
        None,
    ))
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
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !QUOTED_KEYWORDS.contains(&name);
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

// ---------------------------------------------------------------------------------------------
// to_timestamp(text, template) and to_date(text, template)
// ---------------------------------------------------------------------------------------------

/// PostgreSQL's template patterns and chrono's for reading them, longest first so `HH24`
/// is not read as `HH` and `24`.
const TEMPLATE_PATTERNS: &[(&str, &str)] = &[
    ("HH24", "%H"),
    ("HH12", "%I"),
    ("YYYY", "%Y"),
    ("MONTH", "%B"),
    ("Month", "%B"),
    ("month", "%B"),
    ("A.M.", "%p"),
    ("P.M.", "%p"),
    ("a.m.", "%p"),
    ("p.m.", "%p"),
    ("DDD", "%j"),
    ("MON", "%b"),
    ("Mon", "%b"),
    ("mon", "%b"),
    ("DAY", "%A"),
    ("Day", "%A"),
    ("day", "%A"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%I"),
    ("MI", "%M"),
    ("SS", "%S"),
    ("MS", "%3f"),
    ("US", "%6f"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("am", "%p"),
    ("pm", "%p"),
    ("DY", "%a"),
    ("Dy", "%a"),
    ("dy", "%a"),
];

/// A PostgreSQL template as chrono's format: patterns translated, `FM` and `FX` dropped
/// (chrono reads numbers of any width), double-quoted text and other characters as
/// themselves.
fn chrono_format(template: &str) -> Result<String, SqlError> {
    let mut out = String::new();
    let mut rest = template;
    'outer: while !rest.is_empty() {
        for prefix in ["FM", "FX", "fm", "fx"] {
            if let Some(after) = rest.strip_prefix(prefix) {
                rest = after;
                continue 'outer;
            }
        }
        for (pattern, format) in TEMPLATE_PATTERNS {
            if let Some(after) = rest.strip_prefix(pattern) {
                out.push_str(format);
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        let c = chars.next().expect("not empty");
        rest = chars.as_str();
        match c {
            '"' => {
                let Some(end) = rest.find('"') else {
                    return Err(SqlError::new(
                        "22007",
                        format!("unterminated quoted text in the template \"{template}\""),
                    ));
                };
                out.push_str(&rest[..end].replace('%', "%%"));
                rest = &rest[end + 1..];
            }
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Reads `text` by `template` into a date and a time (midnight if it has none); fields the
/// template lacks are those of 0001-01-01 00:00:00, as in PostgreSQL.
fn read_by_template(text: &str, template: &str) -> Result<NaiveDateTime, SqlError> {
    let format = chrono_format(template)?;
    let invalid = |why: String| {
        SqlError::new(
            "22007",
            format!("invalid value \"{text}\" for the template \"{template}\": {why}"),
        )
    };
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(
        &mut parsed,
        text.trim(),
        chrono::format::StrftimeItems::new(&format),
    )
    .map_err(|e| invalid(e.to_string()))?;
    let year = match (parsed.year(), parsed.year_mod_100()) {
        (Some(y), _) => y,
        // Two digits: the year nearest 2020, as PostgreSQL.
        (None, Some(y)) if y < 70 => 2000 + y,
        (None, Some(y)) => 1900 + y,
        (None, None) => 1,
    };
    let out_of_range = || {
        SqlError::new(
            "22008",
            format!("date/time field value out of range: \"{text}\""),
        )
    };
    let date = match parsed.ordinal() {
        Some(ordinal) if parsed.month().is_none() => NaiveDate::from_yo_opt(year, ordinal),
        _ => NaiveDate::from_ymd_opt(year, parsed.month().unwrap_or(1), parsed.day().unwrap_or(1)),
    }
    .ok_or_else(out_of_range)?;
    let hour = parsed.hour_div_12().unwrap_or(0) * 12 + parsed.hour_mod_12().unwrap_or(0);
    let time = NaiveTime::from_hms_nano_opt(
        hour,
        parsed.minute().unwrap_or(0),
        parsed.second().unwrap_or(0),
        parsed.nanosecond().unwrap_or(0),
    )
    .ok_or_else(out_of_range)?;
    Ok(NaiveDateTime::new(date, time))
}

fn to_timestamp(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (Some(t), Some(template)) = (text(&args[0]), text(&args[1])) else {
        return Err(wrong_argument("to_timestamp"));
    };
    let at = read_by_template(t, template)?;
    Ok(ScalarValue::TimestampMicrosecond(
        Some(at.and_utc().timestamp_micros()),
        Some(crate::types::UTC.into()),
    ))
}

fn to_date(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let (Some(t), Some(template)) = (text(&args[0]), text(&args[1])) else {
        return Err(wrong_argument("to_date"));
    };
    let at = read_by_template(t, template)?;
    let days = (at.date() - NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")).num_days();
    Ok(ScalarValue::Date32(Some(
        i32::try_from(days).map_err(|_| out_of_range("date"))?,
    )))
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
        RowFunction::new("age", &[2], vec![timestamp()], interval(), age).udf(),
        RowFunction::new(
            "justify_days",
            &[1],
            vec![interval()],
            interval(),
            justify_days,
        )
        .udf(),
        RowFunction::new(
            "justify_hours",
            &[1],
            vec![interval()],
            interval(),
            justify_hours,
        )
        .udf(),
        RowFunction::new(
            "justify_interval",
            &[1],
            vec![interval()],
            interval(),
            justify_interval,
        )
        .udf(),
        RowFunction::new(
            "make_timestamp",
            &[6],
            vec![
                DataType::Int64,
                DataType::Int64,
                DataType::Int64,
                DataType::Int64,
                DataType::Int64,
                DataType::Float64,
            ],
            timestamp(),
            make_timestamp,
        )
        .udf(),
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
        RowFunction::new(
            TO_TIMESTAMP,
            &[2],
            text_type(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(crate::types::UTC.into())),
            to_timestamp,
        )
        .udf(),
        RowFunction::new(TO_DATE, &[2], text_type(), DataType::Date32, to_date).udf(),
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
            && matches!(
                op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            )
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

impl AnalyzerRule for PgBuiltins {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::overflow::rewrite_expressions(plan, |e, schema| self.rewrite(e, schema))
    }

    fn name(&self) -> &str {
        "flotilla_pg_builtins"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> ScalarValue {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("a timestamp");
        ScalarValue::TimestampMicrosecond(Some(t.and_utc().timestamp_micros()), None)
    }

    fn parts(v: ScalarValue) -> (i32, i32, i64) {
        let i = span(&v).expect("an interval");
        (i.months, i.days, i.nanoseconds / NANOS_PER_MICRO)
    }

    #[test]
    fn age_counts_the_calendar_as_postgresql_does() {
        // Expected values are PostgreSQL 15's.
        let hour = 3_600_000_000;
        for (a, b, want) in [
            ("2024-03-01 00:00:00", "2023-01-15 00:00:00", (13, 17, 0)),
            ("2023-01-15 00:00:00", "2024-03-01 00:00:00", (-13, -17, 0)),
            (
                "2024-03-31 00:00:00",
                "2024-02-29 10:00:00",
                (1, 1, 14 * hour),
            ),
            ("2024-01-01 00:00:00", "2024-01-01 00:00:00", (0, 0, 0)),
        ] {
            let got = parts(age(&[ts(a), ts(b)]).expect("computed"));
            assert_eq!(got, want, "age({a}, {b})");
        }
    }

    #[test]
    fn justify_moves_days_and_hours_as_postgresql_does() {
        let iv = |m, d, us: i64| {
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(
                m,
                d,
                us * NANOS_PER_MICRO,
            )))
        };
        let hour = 3_600_000_000;
        assert_eq!(parts(justify_days(&[iv(0, 35, 0)]).unwrap()), (1, 5, 0));
        assert_eq!(parts(justify_days(&[iv(1, -5, 0)]).unwrap()), (0, 25, 0));
        assert_eq!(
            parts(justify_hours(&[iv(0, 0, 50 * hour)]).unwrap()),
            (0, 2, 2 * hour)
        );
        assert_eq!(
            parts(justify_hours(&[iv(0, 1, -2 * hour)]).unwrap()),
            (0, 0, 22 * hour)
        );
        assert_eq!(
            parts(justify_interval(&[iv(1, 0, -hour)]).unwrap()),
            (0, 29, 23 * hour)
        );
    }

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

    #[test]
    fn templates_read_as_postgresql_reads_them() {
        let read = |t: &str, f: &str| read_by_template(t, f).map(|d| d.to_string());
        assert_eq!(
            read("2024-03-05", "YYYY-MM-DD").unwrap(),
            "2024-03-05 00:00:00"
        );
        assert_eq!(
            read("2024-3-5 7:08", "YYYY-MM-DD HH24:MI").unwrap(),
            "2024-03-05 07:08:00"
        );
        assert_eq!(
            read("05 Mar 2024 03:04:05 PM", "DD Mon YYYY HH12:MI:SS AM").unwrap(),
            "2024-03-05 15:04:05"
        );
        assert_eq!(read("24/12/31", "YY/MM/DD").unwrap(), "2024-12-31 00:00:00");
        assert_eq!(
            read("at 2024", "\"at\" YYYY").unwrap(),
            "2024-01-01 00:00:00"
        );
        assert_eq!(read("2024-02-30", "YYYY-MM-DD").unwrap_err().code, "22008");
        assert_eq!(read("March", "YYYY").unwrap_err().code, "22007");
    }
}
