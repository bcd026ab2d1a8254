//! Values as text the way PostgreSQL prints them, on the wire and in casts.
//!
//! Arrow's cast of a float to a string prints `2.0` where PostgreSQL prints `2` (and
//! `1e20` as `100000000000000000000`, where PostgreSQL prints `1e+20`), and of a
//! timestamp `2024-01-02T03:04:05Z` where PostgreSQL prints `2024-01-02 03:04:05+00`. An
//! analyzer rule, run after type coercion (so implicit casts, as in `'x' || 2.0::float8`,
//! are seen too), replaces each cast of a float, date or timestamp to a string type with
//! a function printing PostgreSQL's text.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// A `double precision` as PostgreSQL prints it.
pub fn float8_text(v: f64) -> String {
    float_text(v, v.is_nan(), v.is_infinite(), v < 0.0, 15)
}

/// A `real` as PostgreSQL prints it.
pub fn float4_text(v: f32) -> String {
    float_text(v, v.is_nan(), v.is_infinite(), v < 0.0, 6)
}

/// PostgreSQL's float text (`extra_float_digits = 1`): the shortest round-trip digits, in
/// positional notation when the decimal exponent is in `[-4, max_fixed_exp)`, otherwise
/// `d.ddde+XX` like printf's `%g`. Rust's `{}` and `{:e}` both print shortest round-trip
/// digits, so only the layout needs choosing.
fn float_text<T>(v: T, is_nan: bool, is_inf: bool, negative: bool, max_fixed_exp: i32) -> String
where
    T: std::fmt::Display + std::fmt::LowerExp,
{
    if is_nan {
        return "NaN".to_owned();
    }
    if is_inf {
        return if negative { "-Infinity" } else { "Infinity" }.to_owned();
    }
    let exp_form = format!("{v:e}");
    let Some((mantissa, exp)) = exp_form.split_once('e') else {
        return format!("{v}");
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return format!("{v}");
    };
    // Zero prints as "0" / "-0" whatever its exponent form says.
    if (-4..max_fixed_exp).contains(&exp) || mantissa.trim_start_matches('-') == "0" {
        format!("{v}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// Writes `year-month-day` the way PostgreSQL does: at least four year digits, and years
/// before 1 AD as their BC number (the " BC" suffix is the caller's, as it comes last).
fn write_date(out: &mut String, date: NaiveDate) {
    use std::fmt::Write;
    let year = date.year();
    let shown = if year <= 0 { 1 - year } else { year };
    // Writing to a String cannot fail.
    let _ = write!(out, "{shown:04}-{:02}-{:02}", date.month(), date.day());
}

/// A `date` as PostgreSQL prints it (`2024-01-02`, `0044-03-15 BC`).
pub fn date_text(date: NaiveDate) -> String {
    let mut out = String::with_capacity(16);
    write_date(&mut out, date);
    if date.year() <= 0 {
        out.push_str(" BC");
    }
    out
}

/// A `timestamp` (or, `with_tz`, a `timestamptz` in UTC, the session's only time zone)
/// as PostgreSQL prints it: fractional seconds only when not zero, trailing zeros
/// trimmed, then `+00`, then ` BC` for years before 1 AD.
pub fn timestamp_text(at: NaiveDateTime, with_tz: bool) -> String {
    let mut out = String::with_capacity(32);
    write_date(&mut out, at.date());
    out.push(' ');
    write_time(&mut out, at.time());
    if with_tz {
        out.push_str("+00");
    }
    if at.year() <= 0 {
        out.push_str(" BC");
    }
    out
}

/// Writes `HH:MM:SS`, then the fraction of a second only when not zero, its trailing
/// zeros trimmed, as PostgreSQL does.
fn write_time(out: &mut String, at: NaiveTime) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        at.hour(),
        at.minute(),
        at.second()
    );
    let frac = at.nanosecond() % 1_000_000_000;
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// A `time` of `micros` microseconds since midnight as PostgreSQL prints it
/// (`10:00:01.5`), or `None` past a day.
pub fn time_text(micros: i64) -> Option<String> {
    let secs = u32::try_from(micros.div_euclid(1_000_000)).ok()?;
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1_000).ok()?;
    let at = NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?;
    let mut out = String::with_capacity(16);
    write_time(&mut out, at);
    Some(out)
}

/// PostgreSQL's text form of an interval under `IntervalStyle = postgres` (what this server
/// reports): `1 year 2 mons 3 days 04:05:06.7`, each field with its own sign, the time
/// shown when nonzero or when nothing else is, fractional seconds without trailing zeros.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    // Whether the last field printed was negative: a positive one after it says "+".
    let mut before_negative = false;
    for (value, unit) in [
        (i64::from(months / 12), "year"),
        (i64::from(months % 12), "mon"),
        (i64::from(days), "day"),
    ] {
        if value == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if before_negative && value > 0 {
            out.push('+');
        }
        let plural = if value == 1 { "" } else { "s" };
        out.push_str(&format!("{value} {unit}{plural}"));
        before_negative = value < 0;
    }
    if out.is_empty() || micros != 0 {
        if !out.is_empty() {
            out.push(' ');
        }
        if micros < 0 {
            out.push('-');
        } else if before_negative {
            out.push('+');
        }
        let abs = micros.unsigned_abs();
        let (hours, minutes) = (abs / 3_600_000_000, abs / 60_000_000 % 60);
        let (seconds, fraction) = (abs / 1_000_000 % 60, abs % 1_000_000);
        out.push_str(&format!("{hours:02}:{minutes:02}:{seconds:02}"));
        if fraction != 0 {
            let digits = format!("{fraction:06}");
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
    }
    out
}

/// The microseconds of a duration (`timestamp - timestamp`) at `row`, finer digits
/// dropped toward zero; `None` if `array` is no duration array.
pub fn duration_micros(array: &dyn Array, row: usize, unit: TimeUnit) -> Option<i64> {
    use datafusion::arrow::datatypes::{
        DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
        DurationSecondType,
    };
    Some(match unit {
        TimeUnit::Second => array
            .as_primitive_opt::<DurationSecondType>()?
            .value(row)
            .saturating_mul(1_000_000),
        TimeUnit::Millisecond => array
            .as_primitive_opt::<DurationMillisecondType>()?
            .value(row)
            .saturating_mul(1_000),
        TimeUnit::Microsecond => array
            .as_primitive_opt::<DurationMicrosecondType>()?
            .value(row),
        TimeUnit::Nanosecond => {
            array
                .as_primitive_opt::<DurationNanosecondType>()?
                .value(row)
                / 1_000
        }
    })
}

/// A duration as PostgreSQL's `timestamp - timestamp` gives it: whole days, and the rest
/// as a time of day, both of the duration's sign (`1 day 14:00:00`, `-2 days -10:00:00`).
pub fn days_and_micros(micros: i64) -> (i32, i64) {
    const DAY_MICROS: i64 = 86_400_000_000;
    let days =
        i32::try_from(micros / DAY_MICROS).unwrap_or(if micros < 0 { i32::MIN } else { i32::MAX });
    (days, micros % DAY_MICROS)
}

/// A float, date, timestamp or array as PostgreSQL's text, of string type `to`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTextUdf {
    to: DataType,
    name: String,
    signature: Signature,
}

impl ScalarUDFImpl for PgTextUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.to.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes one argument",
                self.name
            )));
        };
        let scalar = matches!(arg, ColumnarValue::Scalar(_));
        let input = arg.to_array(if scalar { 1 } else { args.number_rows })?;
        let mut result: ArrayRef = Arc::new(pg_texts(&input)?);
        if self.to != DataType::Utf8 {
            result = datafusion::arrow::compute::cast(&result, &self.to)?;
        }
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&result, 0)?)
        } else {
            ColumnarValue::Array(result)
        })
    }
}

/// The PostgreSQL text of each value of `input`: floats, dates, timestamps and arrays as
/// PostgreSQL prints them; within an array, any element type.
fn pg_texts(input: &ArrayRef) -> DfResult<StringArray> {
    let mut out = StringBuilder::with_capacity(input.len(), input.len() * 8);
    match input.data_type() {
        DataType::Float64 => {
            for v in input.as_primitive::<Float64Type>() {
                out.append_option(v.map(float8_text));
            }
        }
        DataType::Float32 => {
            for v in input.as_primitive::<Float32Type>() {
                out.append_option(v.map(float4_text));
            }
        }
        DataType::Date32 | DataType::Date64 => {
            let days = datafusion::arrow::compute::cast(&input, &DataType::Date32)?;
            for d in days.as_primitive::<datafusion::arrow::datatypes::Date32Type>() {
                let text = d
                    .map(|d| {
                        NaiveDate::default()
                            .checked_add_signed(chrono::Duration::days(i64::from(d)))
                            .map(date_text)
                            .ok_or_else(|| DataFusionError::Execution("date out of range".into()))
                    })
                    .transpose()?;
                out.append_option(text);
            }
        }
        DataType::Timestamp(_, tz) => {
            let with_tz = tz.is_some();
            let micros = datafusion::arrow::compute::cast(
                &input,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            let micros = micros
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| DataFusionError::Internal("microseconds".into()))?;
            for v in micros {
                let text = v
                    .map(|v| {
                        chrono::DateTime::from_timestamp_micros(v)
                            .map(|at| timestamp_text(at.naive_utc(), with_tz))
                            .ok_or_else(|| {
                                DataFusionError::Execution("timestamp out of range".into())
                            })
                    })
                    .transpose()?;
                out.append_option(text);
            }
        }
        DataType::Interval(_) => {
            let mdn = datafusion::arrow::compute::cast(
                &input,
                &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
            )?;
            for v in mdn.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>() {
                out.append_option(
                    v.map(|v| interval_text(v.months, v.days, v.nanoseconds / 1_000)),
                );
            }
        }
        DataType::Duration(unit) => {
            for row in 0..input.len() {
                if input.is_null(row) {
                    out.append_null();
                    continue;
                }
                let micros = duration_micros(input.as_ref(), row, *unit)
                    .ok_or_else(|| DataFusionError::Internal("a duration".into()))?;
                let (days, micros) = days_and_micros(micros);
                out.append_value(interval_text(0, days, micros));
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let micros =
                datafusion::arrow::compute::cast(&input, &DataType::Time64(TimeUnit::Microsecond))?;
            for v in micros.as_primitive::<datafusion::arrow::datatypes::Time64MicrosecondType>() {
                let text = v
                    .map(|v| {
                        time_text(v)
                            .ok_or_else(|| DataFusionError::Execution("time out of range".into()))
                    })
                    .transpose()?;
                out.append_option(text);
            }
        }
        DataType::List(_) => {
            // An array: `{...}` of its elements' texts, quoted where PostgreSQL quotes.
            let list = input.as_list::<i32>();
            let elements = pg_texts(list.values())?;
            for (row, bounds) in list.offsets().windows(2).enumerate() {
                if list.is_null(row) {
                    out.append_null();
                    continue;
                }
                let texts: Vec<String> = (bounds[0] as usize..bounds[1] as usize)
                    .map(|i| {
                        if elements.is_null(i) {
                            "NULL".to_string()
                        } else {
                            crate::pg_array::element_text(elements.value(i))
                        }
                    })
                    .collect();
                out.append_value(format!("{{{}}}", texts.join(",")));
            }
        }
        DataType::Boolean => {
            for v in input.as_boolean() {
                out.append_option(v.map(|b| if b { "t" } else { "f" }));
            }
        }
        t if crate::pg_uuid::is_uuid(t) => {
            for v in input.as_fixed_size_binary() {
                out.append_option(v.map(crate::pg_uuid::text));
            }
        }
        _ => {
            // The other element types print as Arrow casts them.
            let texts = datafusion::arrow::compute::cast(input, &DataType::Utf8)?;
            for v in texts.as_string::<i32>() {
                out.append_option(v);
            }
        }
    }
    Ok(out.finish())
}

/// The rewrite, registered after DataFusion's analyzer rules.
#[derive(Debug)]
pub(crate) struct PgText {
    utf8: Arc<ScalarUDF>,
    large_utf8: Arc<ScalarUDF>,
    utf8_view: Arc<ScalarUDF>,
}

impl PgText {
    pub(crate) fn new() -> Self {
        let udf = |to: DataType, name: &str| {
            Arc::new(ScalarUDF::new_from_impl(PgTextUdf {
                to,
                name: name.to_owned(),
                signature: Signature::any(1, Volatility::Immutable),
            }))
        };
        Self {
            utf8: udf(DataType::Utf8, "pg_text"),
            large_utf8: udf(DataType::LargeUtf8, "pg_large_text"),
            utf8_view: udf(DataType::Utf8View, "pg_text_view"),
        }
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        let (inner, to) = match &expr {
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                (expr, field.data_type())
            }
            _ => return Ok(Transformed::no(expr)),
        };
        let udf = match to {
            DataType::Utf8 => &self.utf8,
            DataType::LargeUtf8 => &self.large_utf8,
            DataType::Utf8View => &self.utf8_view,
            _ => return Ok(Transformed::no(expr)),
        };
        // Types that cannot be resolved here (e.g. outer references) keep Arrow's cast.
        match inner.get_type(schema) {
            Ok(
                DataType::Float32
                | DataType::Float64
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Time32(_)
                | DataType::Time64(_)
                | DataType::Interval(_)
                | DataType::Duration(_)
                | DataType::List(_),
            ) => {}
            _ => return Ok(Transformed::no(expr)),
        }
        let args = vec![inner.as_ref().clone()];
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf.clone(), args),
        )))
    }
}

impl AnalyzerRule for PgText {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::overflow::rewrite_expressions(plan, |e, schema| self.rewrite(e, schema))
    }

    fn name(&self) -> &str {
        "flotilla_pg_text"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_postgresql_prints_them() {
        for (v, text) in [
            (2.0, "2"),
            (2.5, "2.5"),
            (-0.0, "-0"),
            (1e20, "1e+20"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            assert_eq!(float8_text(v), text, "{v}");
        }
        assert_eq!(float4_text(0.1), "0.1");
        assert_eq!(float4_text(1e6), "1e+06");
        assert_eq!(float4_text(123456.0), "123456");
    }

    #[test]
    fn dates_and_timestamps_print_as_postgresql_prints_them() {
        let at = NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_micro_opt(3, 4, 5, 120_000)
            .unwrap();
        assert_eq!(timestamp_text(at, false), "2024-01-02 03:04:05.12");
        assert_eq!(
            timestamp_text(at.with_nanosecond(0).unwrap(), true),
            "2024-01-02 03:04:05+00"
        );
        let bc = NaiveDate::from_ymd_opt(-43, 3, 15).unwrap();
        assert_eq!(date_text(bc), "0044-03-15 BC");
        assert_eq!(
            timestamp_text(bc.and_hms_opt(0, 0, 0).unwrap(), true),
            "0044-03-15 00:00:00+00 BC"
        );
    }
}
