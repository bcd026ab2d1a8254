//! PostgreSQL's date and time functions that DataFusion answers differently:
//!
//! - `EXTRACT(field FROM v)` is `numeric` and `date_part('field', v)` is `double
//!   precision`, both keeping fractions of a second (DataFusion's `date_part` gave
//!   `extract(second from '10:30:15.5')` as 15), over timestamps, dates, times and
//!   intervals, with PostgreSQL's fields (`epoch`, `dow`, `isodow`, `doy`, `week`,
//!   `isoyear`, `quarter`, `decade`, `century`, `millennium`, `milliseconds`,
//!   `microseconds`, ...).
//! - `age`, `justify_days`, `justify_hours`, `justify_interval`, `make_timestamp`, and
//!   `to_timestamp(text, template)` / `to_date(text, template)` with PostgreSQL's
//!   template patterns.
//! - `v AT TIME ZONE zone` and `timezone(zone, v)`: a `timestamptz` becomes the wall-clock
//!   `timestamp` in the zone, a `timestamp` is read as wall-clock time in the zone and
//!   becomes a `timestamptz`. Zones are names of the tz database, case-insensitive
//!   (`Europe/Paris`), `UTC`, or POSIX offsets (`+02` is two hours *west*, as in
//!   PostgreSQL). DataFusion's kept the instant and relabelled it, so the value printed
//!   was unchanged.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike};
use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, IntervalMonthDayNano, IntervalUnit, TimeUnit,
};
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::scalar::ScalarValue;

use crate::error::SqlError;
use crate::pg_builtins::{
    RowFunction, interval, micros, out_of_range, span, text, timestamp, wrong_argument,
};
use crate::pg_json::external;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

// ---------------------------------------------------------------------------------------------
// EXTRACT and date_part
// ---------------------------------------------------------------------------------------------

/// What a date/time value is, for the fields it has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Timestamp,
    Date,
    Time,
    Interval,
}

impl Input {
    fn of(t: &DataType) -> Option<Self> {
        Some(match t {
            DataType::Timestamp(..) => Input::Timestamp,
            DataType::Date32 | DataType::Date64 => Input::Date,
            DataType::Time32(_) | DataType::Time64(_) => Input::Time,
            DataType::Interval(_) | DataType::Duration(_) => Input::Interval,
            // An untyped literal (`extract(year from '2024-01-01')`) is a timestamp.
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                Input::Timestamp
            }
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Input::Timestamp => "timestamp",
            Input::Date => "date",
            Input::Time => "time",
            Input::Interval => "interval",
        }
    }
}

/// The fields PostgreSQL extracts, by the names it reads (lower case, plural or short
/// forms as it accepts them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Millennium,
    Century,
    Decade,
    Year,
    IsoYear,
    Quarter,
    Month,
    Week,
    Day,
    Dow,
    IsoDow,
    Doy,
    Hour,
    Minute,
    Second,
    Milliseconds,
    Microseconds,
    Epoch,
    Timezone,
    TimezoneHour,
    TimezoneMinute,
}

impl Part {
    fn parse(name: &str, input: Input) -> Result<Part, SqlError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "millennium" | "millennia" | "mil" | "mils" => Part::Millennium,
            "century" | "centuries" | "c" | "cent" => Part::Century,
            "decade" | "decades" | "dec" | "decs" => Part::Decade,
            "year" | "years" | "y" | "yr" | "yrs" => Part::Year,
            "isoyear" => Part::IsoYear,
            "quarter" | "qtr" => Part::Quarter,
            "month" | "months" | "mon" | "mons" => Part::Month,
            "week" | "weeks" | "w" => Part::Week,
            "day" | "days" | "d" => Part::Day,
            "dow" => Part::Dow,
            "isodow" => Part::IsoDow,
            "doy" => Part::Doy,
            "hour" | "hours" | "h" | "hr" | "hrs" => Part::Hour,
            "minute" | "minutes" | "m" | "min" | "mins" => Part::Minute,
            "second" | "seconds" | "s" | "sec" | "secs" => Part::Second,
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => Part::Milliseconds,
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" => Part::Microseconds,
            "epoch" => Part::Epoch,
            "timezone" => Part::Timezone,
            "timezone_hour" => Part::TimezoneHour,
            "timezone_minute" => Part::TimezoneMinute,
            other => {
                return Err(SqlError::new(
                    "22023",
                    format!("unit \"{other}\" not recognized for type {}", input.name()),
                ));
            }
        })
    }

    /// Decimal places of the numeric `EXTRACT` gives for it (PostgreSQL 14 on).
    fn scale(self, input: Input) -> i8 {
        match (self, input) {
            (Part::Epoch, Input::Date) => 0,
            (Part::Second | Part::Epoch, _) => 6,
            (Part::Milliseconds, _) => 3,
            _ => 0,
        }
    }

    /// Whether a value of `input` has this field, as PostgreSQL answers.
    fn of(self, input: Input) -> bool {
        use Part::*;
        match input {
            Input::Timestamp => true,
            Input::Date => !matches!(
                self,
                Hour | Minute
                    | Second
                    | Milliseconds
                    | Microseconds
                    | Timezone
                    | TimezoneHour
                    | TimezoneMinute
            ),
            Input::Time => matches!(
                self,
                Hour | Minute | Second | Milliseconds | Microseconds | Epoch
            ),
            Input::Interval => !matches!(
                self,
                Week | Dow | IsoDow | Doy | IsoYear | Timezone | TimezoneHour | TimezoneMinute
            ),
        }
    }
}

/// The field's value, unscaled at `part.scale(...)` decimal places.
fn part_of_timestamp(part: Part, t: NaiveDateTime, epoch_micros: i64) -> i128 {
    let year = t.year() as i128;
    let second_micros =
        (t.second() as i64 * MICROS_PER_SECOND + (t.nanosecond() / 1_000) as i64) as i128;
    match part {
        Part::Millennium => {
            if year > 0 {
                (year + 999) / 1000
            } else {
                -((999 - (year - 1)) / 1000)
            }
        }
        Part::Century => {
            if year > 0 {
                (year + 99) / 100
            } else {
                -((99 - (year - 1)) / 100)
            }
        }
        Part::Decade => year.div_euclid(10),
        Part::Year => year,
        Part::IsoYear => t.iso_week().year() as i128,
        Part::Quarter => ((t.month() - 1) / 3 + 1) as i128,
        Part::Month => t.month() as i128,
        Part::Week => t.iso_week().week() as i128,
        Part::Day => t.day() as i128,
        Part::Dow => t.weekday().num_days_from_sunday() as i128,
        Part::IsoDow => t.weekday().number_from_monday() as i128,
        Part::Doy => t.ordinal() as i128,
        Part::Hour => t.hour() as i128,
        Part::Minute => t.minute() as i128,
        Part::Second | Part::Milliseconds | Part::Microseconds => second_micros,
        Part::Epoch => epoch_micros as i128,
        Part::Timezone | Part::TimezoneHour | Part::TimezoneMinute => 0,
    }
}

fn part_of_time(part: Part, micros: i64) -> i128 {
    match part {
        Part::Hour => (micros / (3600 * MICROS_PER_SECOND)) as i128,
        Part::Minute => (micros / (60 * MICROS_PER_SECOND) % 60) as i128,
        Part::Second | Part::Milliseconds | Part::Microseconds => {
            (micros % (60 * MICROS_PER_SECOND)) as i128
        }
        // Seconds since midnight.
        _ => micros as i128,
    }
}

/// PostgreSQL's `interval_part`: a year of months is 365.25 days for the epoch, a month
/// 30 days.
fn part_of_interval(part: Part, months: i64, days: i64, micros: i64) -> i128 {
    let year = (months / 12) as i128;
    match part {
        Part::Millennium => year / 1000,
        Part::Century => year / 100,
        Part::Decade => year / 10,
        Part::Year => year,
        Part::Quarter => ((months % 12) / 3 + 1) as i128,
        Part::Month => (months % 12) as i128,
        Part::Day => days as i128,
        Part::Hour => (micros / (3600 * MICROS_PER_SECOND)) as i128,
        Part::Minute => (micros / (60 * MICROS_PER_SECOND) % 60) as i128,
        Part::Second | Part::Milliseconds | Part::Microseconds => {
            (micros % (60 * MICROS_PER_SECOND)) as i128
        }
        Part::Epoch => {
            // 365.25 days a year, in micros: exact in quarter days.
            let year_micros = (MICROS_PER_DAY as i128 * 1461) / 4;
            year * year_micros
                + ((months % 12) as i128) * 30 * MICROS_PER_DAY as i128
                + days as i128 * MICROS_PER_DAY as i128
                + micros as i128
        }
        _ => 0,
    }
}

/// `EXTRACT` (numeric) or `date_part` (double precision).
#[derive(Debug, PartialEq, Eq, Hash)]
struct DatePart {
    numeric: bool,
    signature: Signature,
}

/// Precision of the numeric `EXTRACT` gives.
const EXTRACT_PRECISION: u8 = 38;

impl DatePart {
    fn field(args: &[Option<&ScalarValue>], input: Input) -> Result<Option<Part>, SqlError> {
        match args.first().copied().flatten() {
            Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)))
            | Some(ScalarValue::LargeUtf8(Some(s))) => Part::parse(s, input).map(Some),
            _ => Ok(None),
        }
    }
}

impl ScalarUDFImpl for DatePart {
    fn name(&self) -> &str {
        if self.numeric { "extract" } else { "date_part" }
    }

    fn aliases(&self) -> &[String] {
        &[]
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Err(DataFusionError::Internal(
            "date_part's type is given by return_field_from_args".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let input = args
            .arg_fields
            .get(1)
            .and_then(|f| Input::of(f.data_type()))
            .ok_or_else(|| {
                external(SqlError::new(
                    "42883",
                    format!(
                        "function {}(unknown, {}) does not exist",
                        self.name(),
                        args.arg_fields
                            .get(1)
                            .map(|f| crate::error::pg_type_name(f.data_type()))
                            .unwrap_or_default()
                    ),
                ))
            })?;
        let part = Self::field(args.scalar_arguments, input).map_err(external)?;
        let data_type = match (self.numeric, part) {
            (true, Some(part)) => DataType::Decimal128(EXTRACT_PRECISION, part.scale(input)),
            (true, None) => {
                return Err(external(SqlError::new(
                    "0A000",
                    "EXTRACT's field must be written out, not computed",
                )));
            }
            (false, _) => DataType::Float64,
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let n = if scalar { 1 } else { rows };
        let fields = cast(&args.args[0].to_array(n)?, &DataType::Utf8)?;
        let fields = fields
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .ok_or_else(|| DataFusionError::Internal("fields are not text".into()))?;
        let values = args.args[1].to_array(n)?;
        let input = Input::of(values.data_type()).ok_or_else(|| {
            DataFusionError::Internal(format!("date_part of {}", values.data_type()))
        })?;
        // Every input as micros: timestamps since the epoch, times since midnight; dates
        // as timestamps at midnight; intervals apart.
        let values = match values.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?
            }
            DataType::Date32 | DataType::Date64 => {
                cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?
            }
            DataType::Timestamp(unit, _) if *unit != TimeUnit::Microsecond => {
                cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?
            }
            DataType::Time32(_) | DataType::Time64(TimeUnit::Nanosecond) => {
                cast(&values, &DataType::Time64(TimeUnit::Microsecond))?
            }
            DataType::Duration(_) => cast(&values, &DataType::Duration(TimeUnit::Microsecond))?,
            DataType::Interval(unit) if *unit != IntervalUnit::MonthDayNano => {
                cast(&values, &DataType::Interval(IntervalUnit::MonthDayNano))?
            }
            _ => values,
        };
        // Unscaled values at each row's part's scale: `Second`, `Milliseconds` and
        // `Microseconds` share one count of micros, read at 6, 3 and 0 places.
        let mut out: Vec<Option<(i128, i8)>> = Vec::with_capacity(n);
        let mut parts: Option<(String, Part)> = None;
        for row in 0..n {
            if fields.is_null(row) || values.is_null(row) {
                out.push(None);
                continue;
            }
            let name = fields.value(row);
            let part = match &parts {
                Some((n, p)) if n == name => *p,
                _ => {
                    let p = Part::parse(name, input).map_err(external)?;
                    parts = Some((name.to_string(), p));
                    p
                }
            };
            if !part.of(input) {
                return Err(external(SqlError::new(
                    "0A000",
                    format!(
                        "unit \"{}\" not supported for type {}",
                        name.to_ascii_lowercase(),
                        input.name()
                    ),
                )));
            }
            let unscaled = match ScalarValue::try_from_array(&values, row)? {
                ScalarValue::TimestampMicrosecond(Some(us), _) => {
                    let t = chrono::DateTime::from_timestamp_micros(us)
                        .ok_or_else(|| external(SqlError::new("22008", "timestamp out of range")))?
                        .naive_utc();
                    let v = part_of_timestamp(part, t, us);
                    if input == Input::Date && part == Part::Epoch {
                        v / MICROS_PER_SECOND as i128
                    } else {
                        v
                    }
                }
                ScalarValue::Time64Microsecond(Some(us)) => part_of_time(part, us),
                ScalarValue::IntervalMonthDayNano(Some(i)) => {
                    part_of_interval(part, i.months as i64, i.days as i64, i.nanoseconds / 1_000)
                }
                ScalarValue::DurationMicrosecond(Some(us)) => {
                    part_of_interval(part, 0, us / MICROS_PER_DAY, us % MICROS_PER_DAY)
                }
                other => {
                    return Err(DataFusionError::Internal(format!("date_part of {other:?}")));
                }
            };
            out.push(Some((unscaled, part.scale(input))));
        }
        let array: ArrayRef = if self.numeric {
            // One field, written out (see `return_field_from_args`): one scale.
            let scale = parts.map(|(_, p)| p.scale(input)).unwrap_or(0);
            Arc::new(
                datafusion::arrow::array::Decimal128Array::from(
                    out.into_iter()
                        .map(|v| v.map(|(v, _)| v))
                        .collect::<Vec<_>>(),
                )
                .with_precision_and_scale(EXTRACT_PRECISION, scale)?,
            )
        } else {
            Arc::new(datafusion::arrow::array::Float64Array::from(
                out.into_iter()
                    .map(|v| v.map(|(v, scale)| v as f64 / 10f64.powi(scale as i32)))
                    .collect::<Vec<_>>(),
            ))
        };
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    }
}

fn date_part_udf(numeric: bool) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(DatePart {
        numeric,
        signature: Signature::any(2, Volatility::Immutable),
    }))
}

/// Plans `EXTRACT(field FROM v)` as PostgreSQL's numeric `extract`.
#[derive(Debug)]
pub(crate) struct ExtractPlanner;

impl ExprPlanner for ExtractPlanner {
    fn plan_extract(&self, args: Vec<Expr>) -> DfResult<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(date_part_udf(true), args),
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// AT TIME ZONE
// ---------------------------------------------------------------------------------------------

/// A zone `AT TIME ZONE` names.
enum Zone {
    Named(chrono_tz::Tz),
    /// Seconds east of UTC.
    Fixed(i32),
}

impl Zone {
    fn parse(text: &str) -> Result<Zone, SqlError> {
        let trimmed = text.trim();
        if let Some(east) = crate::pg_datetime::parse_zone(trimmed) {
            // A bare offset is POSIX's, hours west of UTC, as PostgreSQL reads it.
            let posix = trimmed.starts_with(['+', '-']);
            return Ok(Zone::Fixed(if posix { -east } else { east }));
        }
        trimmed
            .parse::<chrono_tz::Tz>()
            .ok()
            .or_else(|| {
                chrono_tz::TZ_VARIANTS
                    .iter()
                    .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
                    .copied()
            })
            .map(Zone::Named)
            .ok_or_else(|| SqlError::new("22023", format!("time zone \"{text}\" not recognized")))
    }

    /// The zone's offset east of UTC, in seconds, at the instant `utc`.
    fn offset_at_utc(&self, utc: NaiveDateTime) -> i64 {
        match self {
            Zone::Fixed(s) => *s as i64,
            Zone::Named(tz) => tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64,
        }
    }

    /// The instant the wall-clock time `local` in this zone is. An hour that happens twice
    /// (clocks going back) is its later, standard-time one; an hour skipped (clocks going
    /// forward) is read with the offset before the change, as PostgreSQL does.
    fn utc_of_local(&self, local: NaiveDateTime) -> NaiveDateTime {
        let offset = match self {
            Zone::Fixed(s) => *s as i64,
            Zone::Named(tz) => match tz.offset_from_local_datetime(&local) {
                chrono::LocalResult::Single(o) => o.fix().local_minus_utc() as i64,
                chrono::LocalResult::Ambiguous(a, b) => {
                    (a.fix().local_minus_utc() as i64).min(b.fix().local_minus_utc() as i64)
                }
                chrono::LocalResult::None => {
                    let before = local - chrono::Duration::hours(3);
                    match tz.offset_from_local_datetime(&before) {
                        chrono::LocalResult::Single(o) | chrono::LocalResult::Ambiguous(o, _) => {
                            o.fix().local_minus_utc() as i64
                        }
                        chrono::LocalResult::None => 0,
                    }
                }
            },
        };
        local - chrono::Duration::seconds(offset)
    }
}

/// `timezone(zone, v)`, which `v AT TIME ZONE zone` is.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AtTimeZone {
    signature: Signature,
}

fn with_zone(t: &DataType) -> bool {
    matches!(t, DataType::Timestamp(_, Some(_)))
}

impl ScalarUDFImpl for AtTimeZone {
    fn name(&self) -> &str {
        "timezone"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        // A timestamp gives the timestamptz; a timestamptz gives the wall-clock timestamp,
        // and so do text and a date, which PostgreSQL reads as a timestamptz (its
        // preferred type), a date as its midnight in the session's zone (UTC).
        Ok(match &args[1] {
            DataType::Timestamp(_, None) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(crate::types::UTC.into()))
            }
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let n = if scalar { 1 } else { args.number_rows };
        let zones = cast(&args.args[0].to_array(n)?, &DataType::Utf8)?;
        let zones = zones
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .ok_or_else(|| DataFusionError::Internal("zones are not text".into()))?;
        let values = args.args[1].to_array(n)?;
        let to_local = !matches!(values.data_type(), DataType::Timestamp(_, None));
        let values = cast(
            &values,
            &DataType::Timestamp(
                TimeUnit::Microsecond,
                with_zone(values.data_type()).then(|| crate::types::UTC.into()),
            ),
        )?;
        let values = cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let values = values
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
            .ok_or_else(|| DataFusionError::Internal("timestamps are not micros".into()))?;
        let mut out: Vec<Option<i64>> = Vec::with_capacity(n);
        let mut zone: Option<(String, Zone)> = None;
        for row in 0..n {
            if zones.is_null(row) || values.is_null(row) {
                out.push(None);
                continue;
            }
            let name = zones.value(row);
            if zone.as_ref().is_none_or(|(n, _)| n != name) {
                zone = Some((name.to_string(), Zone::parse(name).map_err(external)?));
            }
            let z = &zone.as_ref().expect("set above").1;
            let us = values.value(row);
            let t = chrono::DateTime::from_timestamp_micros(us)
                .ok_or_else(|| external(SqlError::new("22008", "timestamp out of range")))?
                .naive_utc();
            let moved = if to_local {
                t + chrono::Duration::seconds(z.offset_at_utc(t))
            } else {
                z.utc_of_local(t)
            };
            out.push(Some(moved.and_utc().timestamp_micros()));
        }
        let array = datafusion::arrow::array::TimestampMicrosecondArray::from(out);
        let array: ArrayRef = if to_local {
            Arc::new(array)
        } else {
            Arc::new(array.with_timezone(crate::types::UTC))
        };
        Ok(if scalar {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Calendar arithmetic and templates: age, justify_*, make_timestamp, to_timestamp, to_date
// ---------------------------------------------------------------------------------------------

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
pub(crate) const NANOS_PER_DAY: i64 = MICROS_PER_DAY * NANOS_PER_MICRO;
/// Days in a month where PostgreSQL counts a month as days (`justify_days`, interval
/// order).
pub(crate) const DAYS_PER_MONTH: i32 = 30;

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
/// `make_interval`'s parameters, in order; each defaults to 0.
const MAKE_INTERVAL_PARAMETERS: [&str; 7] =
    ["years", "months", "weeks", "days", "hours", "mins", "secs"];

/// `make_interval(...)` with its arguments given by position or by name (`days => 3`)
/// as a call of all seven by position, the ones left out 0. `None` for a call this does
/// not read (an unknown or repeated name, a position after a name), left to planning,
/// which refuses it.
pub(crate) fn make_interval_call(
    f: &datafusion::sql::sqlparser::ast::Function,
) -> Option<datafusion::sql::sqlparser::ast::Expr> {
    use datafusion::sql::sqlparser::ast::{
        Expr as AstExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    };
    let args = match &f.args {
        FunctionArguments::List(list) => list.args.as_slice(),
        FunctionArguments::None => &[],
        FunctionArguments::Subquery(_) => return None,
    };
    let mut values: [Option<AstExpr>; 7] = Default::default();
    let mut named = false;
    for (position, a) in args.iter().enumerate() {
        let (slot, value) = match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if !named => (position, e),
            FunctionArg::Named {
                name,
                arg: FunctionArgExpr::Expr(e),
                ..
            }
            | FunctionArg::ExprNamed {
                name: AstExpr::Identifier(name),
                arg: FunctionArgExpr::Expr(e),
                ..
            } => {
                named = true;
                let name = crate::sql_ast::folded(name);
                (MAKE_INTERVAL_PARAMETERS.iter().position(|p| *p == name)?, e)
            }
            _ => return None,
        };
        let held = values.get_mut(slot)?;
        if held.is_some() {
            return None;
        }
        *held = Some(value.clone());
    }
    let zero = || {
        AstExpr::value(datafusion::sql::sqlparser::ast::Value::Number(
            "0".into(),
            false,
        ))
    };
    Some(crate::sql_ast::call(
        "make_interval",
        values
            .into_iter()
            .map(|v| crate::sql_ast::arg(v.unwrap_or_else(zero))),
    ))
}

/// `make_interval(years, months, weeks, days, hours, mins, secs)`: PostgreSQL's, seconds
/// rounded to microseconds half to even; past an interval's range, 22008.
fn make_interval(args: &[ScalarValue]) -> Result<ScalarValue, SqlError> {
    let int = |v: &ScalarValue| match v {
        ScalarValue::Int64(Some(n)) => Ok(i128::from(*n)),
        _ => Err(wrong_argument("make_interval")),
    };
    let ScalarValue::Float64(Some(secs)) = args[6] else {
        return Err(wrong_argument("make_interval"));
    };
    if !secs.is_finite() {
        return Err(out_of_range("interval"));
    }
    let months = int(&args[0])? * 12 + int(&args[1])?;
    let days = int(&args[2])? * 7 + int(&args[3])?;
    let micros = int(&args[4])? * 3_600 * i128::from(MICROS_PER_SECOND)
        + int(&args[5])? * 60 * i128::from(MICROS_PER_SECOND)
        + (secs * MICROS_PER_SECOND as f64).round_ties_even() as i128;
    let fits = |v: i128| i64::try_from(v).map_err(|_| out_of_range("interval"));
    let nanos = micros
        .checked_mul(i128::from(NANOS_PER_MICRO))
        .ok_or_else(|| out_of_range("interval"))?;
    interval_value(fits(months)?, fits(days)?, fits(nanos)?)
}

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

/// The names `to_timestamp(text, template)` and `to_date(text, template)` are planned under.
pub(crate) const TO_TIMESTAMP: &str = "flotilla_to_timestamp";
pub(crate) const TO_DATE: &str = "flotilla_to_date";

/// Argument types of `make_interval` and `make_timestamp`: `whole` bigints, then seconds
/// as a float.
fn whole_numbers_then_seconds(whole: usize) -> Vec<DataType> {
    let mut types = vec![DataType::Int64; whole];
    types.push(DataType::Float64);
    types
}

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
            "make_interval",
            &[7],
            whole_numbers_then_seconds(6),
            interval(),
            make_interval,
        )
        .udf(),
        RowFunction::new(
            "make_timestamp",
            &[6],
            whole_numbers_then_seconds(5),
            timestamp(),
            make_timestamp,
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
        date_part_udf(false),
        Arc::new(ScalarUDF::new_from_impl(AtTimeZone {
            signature: Signature::any(2, Volatility::Immutable),
        })),
    ]
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

    #[test]
    fn zones_read_as_postgresql_reads_them() {
        let t = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        assert_eq!(Zone::parse("Europe/Paris").unwrap().offset_at_utc(t), 3600);
        assert_eq!(Zone::parse("europe/paris").unwrap().offset_at_utc(t), 3600);
        assert_eq!(Zone::parse("UTC").unwrap().offset_at_utc(t), 0);
        // POSIX: +02 is west.
        assert_eq!(Zone::parse("+02").unwrap().offset_at_utc(t), -7200);
        assert_eq!(Zone::parse("Mars/Olympus").err().unwrap().code, "22023");
        // New York's clocks went back at 02:00 on 2024-11-03: 01:30 happened twice, and
        // is read as the later (standard time, UTC-5).
        let ny = Zone::parse("America/New_York").unwrap();
        let twice = chrono::NaiveDate::from_ymd_opt(2024, 11, 3)
            .unwrap()
            .and_hms_opt(1, 30, 0)
            .unwrap();
        assert_eq!(ny.utc_of_local(twice).hour(), 6);
        // And forward at 02:00 on 2024-03-10: 02:30 never happened; read at UTC-5.
        let skipped = chrono::NaiveDate::from_ymd_opt(2024, 3, 10)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(ny.utc_of_local(skipped).hour(), 7);
    }
}
