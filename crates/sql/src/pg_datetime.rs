//! Dates and times read from text as PostgreSQL reads them, for every way text becomes
//! one: a literal cast (`'2024-01-01 02:00'::timestamp`, or a string compared with a
//! timestamp column), a value assigned to a column, a parameter sent as text.
//!
//! Arrow's casts read ISO 8601 with seconds; PostgreSQL also reads a time without seconds
//! (`2024-01-01 02:00`), an hour of one digit, a zone after such a time (`02:00+02`,
//! `10:00 UTC`), a trailing `.`, blanks around the value, month names (`Jan 5 2024`, `5
//! January 2024`) and `epoch`. Forms read here are the ones PostgreSQL reads in its
//! default `DateStyle` (ISO, MDY); text this module does not read is left to Arrow's cast
//! (which reads `20240105` and named zones), so nothing Arrow read before is refused now.
//! `now`, `today`, `tomorrow` and `yesterday` depend on the statement's time: a literal
//! cast of one becomes the expression (`DatetimeLiterals`).

use std::sync::Arc;

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::AnalyzerRule;
use datafusion::scalar::ScalarValue;

use crate::error::SqlError;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")
}

/// The month a name or its abbreviation of three or more letters (`Jan`, `Sept`) names.
fn month_of(word: &str) -> Option<u32> {
    let word = word.trim_end_matches('.').to_ascii_lowercase();
    if word.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| m.starts_with(&word))
        .map(|i| i as u32 + 1)
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD`.
fn parse_ymd(text: &str) -> Option<NaiveDate> {
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if !digits(y) || !digits(m) || !digits(d) || m.len() > 2 || d.len() > 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// A date with a month name, `Mon D YYYY` or `D Mon YYYY` (commas ignored), and what
/// follows it (a time, a zone).
fn parse_named_month(text: &str) -> Option<(NaiveDate, String)> {
    let cleaned = text.replace(',', " ");
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let (month, day, year) = match words.as_slice() {
        [m, d, y, ..] if month_of(m).is_some() && digits(d) && digits(y) => (month_of(m)?, *d, *y),
        [d, m, y, ..] if month_of(m).is_some() && digits(d) && digits(y) => (month_of(m)?, *d, *y),
        _ => return None,
    };
    if day.len() > 2 {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year.parse().ok()?, month, day.parse().ok()?)?;
    Some((date, words[3..].join(" ")))
}

/// `date` input; a time part, as PostgreSQL allows, is ignored.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("epoch") {
        return Some(epoch());
    }
    parse_ymd(t).or_else(|| parse_timestamp(t).map(|(dt, _)| dt.date()))
}

/// Parses `YYYY-MM-DD[( |T)H[H]:MM[:SS[.fffffffff]]][zone]` (or the date with a month
/// name, or `epoch`) where zone is `Z`, `UTC`, `GMT` or `±HH[[:]MM[[:]SS]]`. Returns the
/// local date-time and the zone's offset east of UTC in seconds.
pub fn parse_timestamp(text: &str) -> Option<(NaiveDateTime, Option<i32>)> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("epoch") {
        return Some((epoch().and_time(NaiveTime::MIN), Some(0)));
    }
    let (date, rest) = match parse_named_month(t) {
        Some(named) => named,
        None => {
            let split = t.find([' ', 'T', 't']).unwrap_or(t.len());
            let date = parse_ymd(&t[..split])?;
            (
                date,
                t[split..].trim_start_matches([' ', 'T', 't']).to_string(),
            )
        }
    };
    let rest = rest.trim();
    if rest.is_empty() {
        return Some((date.and_time(NaiveTime::MIN), None));
    }
    // The time is digits, ':' and '.'; whatever follows is the zone.
    let time_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let time = parse_time(&rest[..time_end])?;
    let zone = rest[time_end..].trim();
    let offset = if zone.is_empty() {
        None
    } else {
        Some(parse_zone(zone)?)
    };
    Some((date.and_time(time), offset))
}

/// `H[H]:MM[:SS[.fffffffff]]`, a trailing `.` allowed.
pub fn parse_time(text: &str) -> Option<NaiveTime> {
    let text = text.trim();
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.split(':');
    let h: u32 = parts.next().filter(|h| digits(h))?.parse().ok()?;
    let m: u32 = parts.next().filter(|m| digits(m))?.parse().ok()?;
    let s: u32 = match parts.next() {
        Some(s) if digits(s) => s.parse().ok()?,
        Some(_) => return None,
        None if frac.is_empty() => 0,
        None => return None,
    };
    if parts.next().is_some() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Nanosecond precision; PostgreSQL keeps microseconds, the session rounds further if so.
    let mut nanos_text: String = frac.chars().take(9).collect();
    while nanos_text.len() < 9 {
        nanos_text.push('0');
    }
    let nanos: u32 = nanos_text.parse().ok()?;
    NaiveTime::from_hms_nano_opt(h, m, s, nanos)
}

/// A zone's offset east of UTC in seconds: `Z`, `UTC`, `GMT`, or `±H`, `±HH`, `±HHMM`,
/// `±HH:MM`, `±HHMMSS`, `±HH:MM:SS`.
pub fn parse_zone(zone: &str) -> Option<i32> {
    if ["z", "utc", "gmt"].contains(&zone.to_ascii_lowercase().as_str()) {
        return Some(0);
    }
    let (sign, body) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let digits: String = body.chars().filter(|c| *c != ':').collect();
    // H, HH, HHMM or HHMMSS.
    let well_formed = digits.len() == 1 || (digits.len() <= 6 && digits.len().is_multiple_of(2));
    if !well_formed || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, rest) = if digits.len() == 1 {
        (digits.as_str(), "")
    } else {
        digits.split_at(2)
    };
    let (m, s) = if rest.len() >= 2 {
        rest.split_at(2)
    } else {
        (rest, "")
    };
    let num = |s: &str| -> Option<i32> {
        if s.is_empty() {
            Some(0)
        } else {
            s.parse().ok()
        }
    };
    let (h, m, s) = (num(h)?, num(m)?, num(s)?);
    if h > 15 || m > 59 || s > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + s))
}

/// A UTC date-time as a count of `unit`s since 1970, rounding sub-unit digits half up.
pub fn timestamp_in_unit(dt: NaiveDateTime, unit: TimeUnit) -> Option<i64> {
    let utc = dt.and_utc();
    let secs = utc.timestamp();
    let nanos = i64::from(utc.timestamp_subsec_nanos());
    let (per_second, nanos_per_unit) = match unit {
        TimeUnit::Second => (1, 1_000_000_000),
        TimeUnit::Millisecond => (1_000, 1_000_000),
        TimeUnit::Microsecond => (1_000_000, 1_000),
        TimeUnit::Nanosecond => (1_000_000_000, 1),
    };
    let sub = (nanos + nanos_per_unit / 2) / nanos_per_unit;
    secs.checked_mul(per_second)?.checked_add(sub)
}

fn out_of_range(what: &str) -> SqlError {
    SqlError::new("22008", format!("{what} out of range"))
}

/// `text` as a value of `target` (a date, timestamp, time or interval type) read as
/// PostgreSQL reads it, or `None` if it is not in a form read here (Arrow's cast may still
/// read it). Out of range is 22008. Intervals are read here alone (`crate::pg_interval`):
/// text this does not read is 22007.
pub fn scalar_from_text(text: &str, target: &DataType) -> Result<Option<ScalarValue>, SqlError> {
    Ok(Some(match target {
        DataType::Date32 | DataType::Date64 => {
            let Some(date) = parse_date(text) else {
                return Ok(None);
            };
            let days = date.signed_duration_since(epoch()).num_days();
            if *target == DataType::Date64 {
                ScalarValue::Date64(Some(days * 86_400_000))
            } else {
                let days = i32::try_from(days).map_err(|_| out_of_range("date"))?;
                ScalarValue::Date32(Some(days))
            }
        }
        DataType::Timestamp(unit, tz) => {
            let Some((naive, offset)) = parse_timestamp(text) else {
                return Ok(None);
            };
            // `timestamp` ignores a zone in its input, as PostgreSQL does; `timestamptz`
            // applies it, and the session time zone (UTC) when there is none.
            let utc = match (tz, offset) {
                (Some(_), Some(offset)) => naive
                    .checked_sub_signed(Duration::seconds(offset.into()))
                    .ok_or_else(|| out_of_range("timestamp"))?,
                _ => naive,
            };
            let v = timestamp_in_unit(utc, *unit).ok_or_else(|| out_of_range("timestamp"))?;
            match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(Some(v), tz.clone()),
                TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(Some(v), tz.clone()),
                TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(Some(v), tz.clone()),
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(Some(v), tz.clone()),
            }
        }
        DataType::Time64(unit) => {
            // A zone after the time is ignored, as `time` (without time zone) does.
            let t = text.trim();
            let end = t
                .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
                .unwrap_or(t.len());
            if !t[end..].trim().is_empty() && parse_zone(t[end..].trim()).is_none() {
                return Ok(None);
            }
            let Some(time) = parse_time(&t[..end]) else {
                let shaped = t[..end].contains(':') && t[..end].split([':', '.']).all(digits);
                if shaped {
                    // `25:00`: PostgreSQL's form, a field out of range.
                    return Err(SqlError::new(
                        "22008",
                        format!("date/time field value out of range: \"{text}\""),
                    ));
                }
                return Ok(None);
            };
            let nanos = i64::from(time.num_seconds_from_midnight()) * 1_000_000_000
                + i64::from(time.nanosecond());
            match unit {
                TimeUnit::Nanosecond => ScalarValue::Time64Nanosecond(Some(nanos)),
                // Microseconds, rounding the rest half up, as PostgreSQL rounds.
                _ => ScalarValue::Time64Microsecond(Some((nanos + 500) / 1_000)),
            }
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let span = crate::pg_interval::parse_interval(text, Default::default())?;
            ScalarValue::IntervalMonthDayNano(Some(span.to_arrow()?))
        }
        _ => return Ok(None),
    }))
}

/// Whether a cast of text to `target` is read here.
fn is_datetime(target: &DataType) -> bool {
    matches!(
        target,
        DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time64(_)
            | DataType::Interval(IntervalUnit::MonthDayNano)
    )
}

/// Strings assigned to a date or timestamp column, read as PostgreSQL reads them; `None`
/// if `array` is no string array or `target` no such type. Text not read here goes to
/// Arrow's cast, and text neither reads is 22007.
pub(crate) fn from_text(array: &ArrayRef, target: &DataType) -> Result<Option<ArrayRef>, SqlError> {
    let is_string = matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    );
    if !is_string || !is_datetime(target) {
        return Ok(None);
    }
    let strings = cast_with_options(array, &DataType::Utf8, &CastOptions::default())
        .map_err(|e| crate::error::datafusion_error(e.into()))?;
    let strings = strings
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("a cast to Utf8");
    let mut values = Vec::with_capacity(strings.len());
    for text in strings.iter() {
        let value = match text {
            None => ScalarValue::try_from(target).map_err(crate::error::datafusion_error)?,
            Some(text) => match scalar_from_text(text, target)? {
                Some(v) => v,
                None => arrow_read(text, target)?,
            },
        };
        values.push(value);
    }
    if values.is_empty() {
        return Ok(Some(datafusion::arrow::array::new_empty_array(target)));
    }
    ScalarValue::iter_to_array(values)
        .map(Some)
        .map_err(crate::error::datafusion_error)
}

/// `text` read by Arrow's cast, 22007 if it cannot.
fn arrow_read(text: &str, target: &DataType) -> Result<ScalarValue, SqlError> {
    let one: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(&one, target, &options)
        .ok()
        .and_then(|a| ScalarValue::try_from_array(&a, 0).ok())
        .ok_or_else(|| {
            SqlError::new(
                "22007",
                format!(
                    "invalid input syntax for type {}: \"{text}\"",
                    crate::error::pg_type_name(target)
                ),
            )
        })
}

/// Reads the text of a literal cast to a date or timestamp (written, or made by type
/// coercion from a string compared with such a column) as PostgreSQL does; `now`,
/// `today`, `tomorrow` and `yesterday` become the statement's time, or its midnight, a
/// day either way. After type coercion, before the optimizer would fold the cast with
/// Arrow's reading.
#[derive(Debug, Default)]
pub(crate) struct DatetimeLiterals;

impl DatetimeLiterals {
    pub(crate) fn new() -> Self {
        Self
    }
}

/// The literal string a cast reads, if it reads one.
fn literal_text(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.as_str()),
        _ => None,
    }
}

/// `now()`, or its midnight moved by `days`, cast to `target`.
fn relative(word: &str, target: &DataType) -> Option<Expr> {
    let now = datafusion::functions::datetime::expr_fn::now();
    let midnight = |days: i64| {
        let day = datafusion::functions::datetime::expr_fn::date_trunc(
            Expr::Literal(ScalarValue::Utf8(Some("day".into())), None),
            now.clone(),
        );
        if days == 0 {
            day
        } else {
            let interval = ScalarValue::new_interval_mdn(0, days as i32, 0);
            datafusion::logical_expr::binary_expr(
                day,
                datafusion::logical_expr::Operator::Plus,
                Expr::Literal(interval, None),
            )
        }
    };
    let value = match word.trim().to_ascii_lowercase().as_str() {
        "now" => now,
        "today" => midnight(0),
        "tomorrow" => midnight(1),
        "yesterday" => midnight(-1),
        _ => return None,
    };
    Some(Expr::Cast(Cast::new(Box::new(value), target.clone())))
}

impl AnalyzerRule for DatetimeLiterals {
    fn name(&self) -> &str {
        "flotilla_datetime_literals"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::overflow::rewrite_expressions(plan, |x, _| {
            let (inner, target) = match &x {
                Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                    (expr, field.data_type())
                }
                _ => return Ok(Transformed::no(x)),
            };
            let Some(text) = literal_text(inner) else {
                return Ok(Transformed::no(x));
            };
            if !is_datetime(target) {
                return Ok(Transformed::no(x));
            }
            let read = scalar_from_text(text, target)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            if let Some(v) = read {
                return Ok(Transformed::yes(Expr::Literal(v, None)));
            }
            Ok(match relative(text, target) {
                Some(e) => Transformed::yes(e),
                None => Transformed::no(x),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgresql_forms_are_read_and_others_left() {
        let at = |y, mo, d, h, mi| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|d| d.and_hms_opt(h, mi, 0))
                .expect("a valid time")
        };
        for (text, want) in [
            ("2024-01-01 02:00", (at(2024, 1, 1, 2, 0), None)),
            ("2024-01-01T2:05", (at(2024, 1, 1, 2, 5), None)),
            ("  2024-01-01 02:00:00.  ", (at(2024, 1, 1, 2, 0), None)),
            (
                "2024-01-01 02:00-01:30",
                (at(2024, 1, 1, 2, 0), Some(-5400)),
            ),
            ("2024-01-01 02:00 utc", (at(2024, 1, 1, 2, 0), Some(0))),
            ("Jan 5 2024", (at(2024, 1, 5, 0, 0), None)),
            ("September 30, 2024 10:30", (at(2024, 9, 30, 10, 30), None)),
            ("5 Oct 2024 7:00+02", (at(2024, 10, 5, 7, 0), Some(7200))),
        ] {
            assert_eq!(parse_timestamp(text), Some(want), "{text}");
        }
        for not_read in [
            "",
            "x",
            "20240105",
            "2024-01-01 02",
            "2024-01-01 25:00",
            "2024-13-01",
            "Jan 32 2024",
            "Ja 5 2024",
            "2024-01-01 02:00 nowhere",
            "2024-01-01 02:00:00:00",
        ] {
            assert_eq!(parse_timestamp(not_read), None, "{not_read}");
        }
        assert_eq!(
            parse_date("2024-01-05 23:59"),
            NaiveDate::from_ymd_opt(2024, 1, 5)
        );
        assert_eq!(parse_date("epoch"), Some(epoch()));
    }
}

// ---------------------------------------------------------------------------------------------
// An interval times or divided by a number
// ---------------------------------------------------------------------------------------------

/// Plans `interval * n`, `n * interval` and `interval / n` (DataFusion refuses them) as
/// PostgreSQL computes them: see `scaled`.
#[derive(Debug, Default)]
pub(crate) struct IntervalArithmetic;

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

impl datafusion::logical_expr::planner::ExprPlanner for IntervalArithmetic {
    fn plan_binary_op(
        &self,
        expr: datafusion::logical_expr::planner::RawBinaryExpr,
        schema: &datafusion::common::DFSchema,
    ) -> DfResult<
        datafusion::logical_expr::planner::PlannerResult<
            datafusion::logical_expr::planner::RawBinaryExpr,
        >,
    > {
        use datafusion::logical_expr::ExprSchemable;
        use datafusion::logical_expr::planner::PlannerResult;
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        let type_of = |e: &Expr| e.get_type(schema).ok();
        // `date ± interval` is a timestamp in PostgreSQL (the date at midnight moved by
        // the interval); DataFusion's stays a date, dropping any time the interval adds.
        // `date - date` is an integer.
        if matches!(expr.op, BinaryOperator::Plus | BinaryOperator::Minus) {
            let date = |t: &Option<DataType>| matches!(t, Some(DataType::Date32));
            let interval = |t: &Option<DataType>| matches!(t, Some(DataType::Interval(_)));
            let (l, r) = (type_of(&expr.left), type_of(&expr.right));
            let at_midnight = |e: Expr| {
                Expr::Cast(Cast::new(
                    Box::new(e),
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                ))
            };
            return Ok(if date(&l) && interval(&r) {
                PlannerResult::Planned(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    Box::new(at_midnight(expr.left)),
                    if expr.op == BinaryOperator::Plus {
                        datafusion::logical_expr::Operator::Plus
                    } else {
                        datafusion::logical_expr::Operator::Minus
                    },
                    Box::new(expr.right),
                )))
            } else if expr.op == BinaryOperator::Minus && date(&l) && date(&r) {
                // `date - date` is PostgreSQL's `integer` of days (DataFusion's a bigint).
                PlannerResult::Planned(Expr::Cast(Cast::new(
                    Box::new(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                        Box::new(expr.left),
                        datafusion::logical_expr::Operator::Minus,
                        Box::new(expr.right),
                    ))),
                    DataType::Int32,
                )))
            } else if expr.op == BinaryOperator::Plus && interval(&l) && date(&r) {
                PlannerResult::Planned(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    Box::new(expr.left),
                    datafusion::logical_expr::Operator::Plus,
                    Box::new(at_midnight(expr.right)),
                )))
            } else {
                PlannerResult::Original(expr)
            });
        }
        let divide = match expr.op {
            BinaryOperator::Multiply => false,
            BinaryOperator::Divide => true,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let interval = |t: &Option<DataType>| matches!(t, Some(DataType::Interval(_)));
        let number = |t: &Option<DataType>| t.as_ref().is_some_and(is_number);
        // An untyped parameter beside an interval is the factor, as PostgreSQL infers.
        let untyped = |e: &Expr| matches!(e, Expr::Placeholder(p) if p.field.is_none());
        let (l, r) = (type_of(&expr.left), type_of(&expr.right));
        let (span, factor) = if interval(&l) && (number(&r) || untyped(&expr.right)) {
            (expr.left, expr.right)
        } else if !divide && (number(&l) || untyped(&expr.left)) && interval(&r) {
            (expr.right, expr.left)
        } else {
            return Ok(PlannerResult::Original(expr));
        };
        let udf = Arc::new(datafusion::logical_expr::ScalarUDF::new_from_impl(
            IntervalScale::new(divide),
        ));
        Ok(PlannerResult::Planned(udf.call(vec![
            Expr::Cast(Cast::new(
                Box::new(span),
                DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            )),
            Expr::Cast(Cast::new(Box::new(factor), DataType::Float64)),
        ])))
    }
}

/// `interval * float8` (or `/`), as PostgreSQL's `interval_mul` and `interval_div`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalScale {
    divide: bool,
    signature: datafusion::logical_expr::Signature,
}

impl IntervalScale {
    fn new(divide: bool) -> Self {
        Self {
            divide,
            signature: datafusion::logical_expr::Signature::exact(
                vec![
                    DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
                    DataType::Float64,
                ],
                datafusion::logical_expr::Volatility::Immutable,
            ),
        }
    }
}

/// Rounds to microseconds' precision, as PostgreSQL's `TSROUND`.
fn ts_round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// `months`, `days` and `micros` scaled by `f` (times, or divided by it) as PostgreSQL
/// scales an interval: the fraction of a month becomes days of 30, the fraction of a day
/// becomes time, each part truncated toward zero and the time rounded to microseconds.
/// `None` on overflow or division by zero.
pub fn scaled(
    months: i32,
    days: i32,
    micros: i64,
    f: f64,
    divide: bool,
) -> Option<(i32, i32, i64)> {
    if divide && f == 0.0 {
        return None;
    }
    let op = |x: f64| if divide { x / f } else { x * f };
    let month_total = op(f64::from(months));
    let day_total = op(f64::from(days));
    if !month_total.is_finite() || !day_total.is_finite() {
        return None;
    }
    let new_months = month_total.trunc();
    let new_days = day_total.trunc();
    if new_months.abs() > f64::from(i32::MAX) || new_days.abs() > f64::from(i32::MAX) {
        return None;
    }
    let month_remainder_days = ts_round((month_total - new_months) * 30.0);
    let mut sec_remainder = ts_round(
        (day_total - new_days + month_remainder_days - month_remainder_days.trunc()) * 86_400.0,
    );
    let mut days_out = new_days as i64 + month_remainder_days.trunc() as i64;
    if sec_remainder.abs() >= 86_400.0 {
        let whole = (sec_remainder / 86_400.0).trunc();
        days_out += whole as i64;
        sec_remainder -= whole * 86_400.0;
    }
    let time = (op(micros as f64) + sec_remainder * 1e6).round();
    if !time.is_finite() || time.abs() >= 9.2e18 {
        return None;
    }
    Some((
        new_months as i32,
        i32::try_from(days_out).ok()?,
        time as i64,
    ))
}

impl datafusion::logical_expr::ScalarUDFImpl for IntervalScale {
    fn name(&self) -> &str {
        if self.divide {
            "flotilla_interval_div"
        } else {
            "flotilla_interval_mul"
        }
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Interval(
            datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
        ))
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> DfResult<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::{AsArray, IntervalMonthDayNanoArray};
        use datafusion::arrow::datatypes::{
            Float64Type, IntervalMonthDayNano, IntervalMonthDayNanoType,
        };
        let n = args.number_rows;
        let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(&args.args)?;
        let (spans, factors) = (
            arrays[0].as_primitive::<IntervalMonthDayNanoType>(),
            arrays[1].as_primitive::<Float64Type>(),
        );
        let mut out = Vec::with_capacity(n);
        for row in 0..spans.len() {
            if spans.is_null(row) || factors.is_null(row) {
                out.push(None);
                continue;
            }
            let v = spans.value(row);
            let Some((months, days, micros)) = scaled(
                v.months,
                v.days,
                v.nanoseconds / 1_000,
                factors.value(row),
                self.divide,
            ) else {
                let e = if self.divide && factors.value(row) == 0.0 {
                    SqlError::new("22012", "division by zero")
                } else {
                    SqlError::new("22008", "interval out of range")
                };
                return Err(datafusion::error::DataFusionError::External(Box::new(e)));
            };
            out.push(Some(IntervalMonthDayNano::new(
                months,
                days,
                micros * 1_000,
            )));
        }
        let array: ArrayRef = Arc::new(IntervalMonthDayNanoArray::from(out));
        Ok(
            if args
                .args
                .iter()
                .all(|a| matches!(a, datafusion::logical_expr::ColumnarValue::Scalar(_)))
            {
                datafusion::logical_expr::ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &array, 0,
                )?)
            } else {
                datafusion::logical_expr::ColumnarValue::Array(array)
            },
        )
    }
}
