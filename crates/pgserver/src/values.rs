//! Conversions between Arrow values and PostgreSQL's wire formats: the Arrow→PostgreSQL type
//! map, result encoding (text and binary), and parameter decoding (text and binary).
//!
//! Everything here is pure and synchronous so it can be tested without a session or socket.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Field,
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, Schema,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::scalar::ScalarValue;
use flotilla_sql::SqlError;
use flotilla_sql::pg_json::Kind;
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400 * 1_000_000;
/// `VARHDRSZ`, which PostgreSQL adds to a numeric's packed precision and scale.
const VARHDRSZ: i32 = 4;
/// Binary numeric sign words.
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;

fn sql_error(code: &'static str, message: String) -> SqlError {
    SqlError {
        code,
        message,
        position: None,
        hint: None,
        detail: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Type mapping
// ---------------------------------------------------------------------------------------------

/// The PostgreSQL type a column or parameter of Arrow type `data_type` is presented as.
pub fn pg_type_of(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        // Narrower and unsigned integers widen to the smallest PostgreSQL type that holds them.
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            Type::NUMERIC
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        t if flotilla_sql::pg_uuid::is_uuid(t) => Type::UUID,
        DataType::LargeBinary => Type::JSONB,
        DataType::BinaryView => Type::JSON,
        DataType::Binary | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        DataType::List(element)
        | DataType::LargeList(element)
        | DataType::FixedSizeList(element, _) => {
            array_type_of(element.data_type()).unwrap_or(Type::TEXT)
        }
        _ => Type::TEXT,
    }
}

/// The PostgreSQL array type of a one-dimensional list of `element`s, if they have a
/// PostgreSQL type of their own. (A list of lists is sent as `text` in the array's text
/// form.)
fn array_type_of(element: &DataType) -> Option<Type> {
    if matches!(
        element,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
    ) || !is_native(element)
    {
        return None;
    }
    let element = pg_type_of(element);
    ARRAY_TYPES
        .iter()
        .find(|(e, _)| *e == element)
        .map(|(_, array)| array.clone())
}

/// Each element type with its array type. Arrays of `varchar` and `bpchar` come last:
/// results present strings as `text`, but a client may declare a parameter of them.
const ARRAY_TYPES: [(Type, Type); 19] = [
    (Type::BOOL, Type::BOOL_ARRAY),
    (Type::INT2, Type::INT2_ARRAY),
    (Type::INT4, Type::INT4_ARRAY),
    (Type::INT8, Type::INT8_ARRAY),
    (Type::FLOAT4, Type::FLOAT4_ARRAY),
    (Type::FLOAT8, Type::FLOAT8_ARRAY),
    (Type::NUMERIC, Type::NUMERIC_ARRAY),
    (Type::TEXT, Type::TEXT_ARRAY),
    (Type::BYTEA, Type::BYTEA_ARRAY),
    (Type::DATE, Type::DATE_ARRAY),
    (Type::TIME, Type::TIME_ARRAY),
    (Type::TIMESTAMP, Type::TIMESTAMP_ARRAY),
    (Type::TIMESTAMPTZ, Type::TIMESTAMPTZ_ARRAY),
    (Type::INTERVAL, Type::INTERVAL_ARRAY),
    (Type::UUID, Type::UUID_ARRAY),
    (Type::JSON, Type::JSON_ARRAY),
    (Type::JSONB, Type::JSONB_ARRAY),
    (Type::VARCHAR, Type::VARCHAR_ARRAY),
    (Type::BPCHAR, Type::BPCHAR_ARRAY),
];

/// The element type of an array type.
fn element_type_of(array: &Type) -> Option<&'static Type> {
    ARRAY_TYPES.iter().find(|(_, a)| a == array).map(|(e, _)| e)
}

/// The Arrow type for a parameter type a client declared in Parse; `None` lets the server
/// infer it (unspecified, or a type whose Arrow shape depends on context such as `numeric`).
pub fn arrow_type_of(pg_type: &Type) -> Option<DataType> {
    let data_type = match *pg_type {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::BYTEA => DataType::Binary,
        Type::UUID => flotilla_sql::pg_uuid::ARROW_TYPE,
        Type::JSON => Kind::Json.arrow_type(),
        Type::JSONB => Kind::Jsonb.arrow_type(),
        Type::DATE => DataType::Date32,
        Type::TIME => DataType::Time64(TimeUnit::Microsecond),
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ref array if let Some(element) = element_type_of(array) => DataType::List(Arc::new(
            Field::new_list_field(arrow_type_of(element)?, true),
        )),
        _ => return None,
    };
    Some(data_type)
}

/// `pg_type.typlen` of the type `data_type` is presented as (-1 = variable width).
fn type_size(pg_type: &Type) -> i16 {
    match *pg_type {
        Type::BOOL => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIME | Type::TIMESTAMP | Type::TIMESTAMPTZ => 8,
        Type::INTERVAL | Type::UUID => 16,
        _ => -1,
    }
}

/// `atttypmod` for a column: numeric precision and scale, as clients derive display from it.
fn type_modifier(data_type: &DataType) -> i32 {
    let (precision, scale) = match data_type {
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            (*p, *s)
        }
        _ => return -1,
    };
    // A negative scale has no PostgreSQL 15 typmod clients understand; report "unconstrained".
    if scale < 0 {
        return -1;
    }
    ((i32::from(precision) << 16) | i32::from(scale)) + VARHDRSZ
}

/// Row description entries for `schema`, each column in the format the client asked for.
pub fn field_infos(schema: &Schema, formats: &[FieldFormat]) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(idx, field)| {
            let pg_type = pg_type_of(field.data_type());
            let format = formats.get(idx).copied().unwrap_or(FieldFormat::Text);
            let size = type_size(&pg_type);
            FieldInfo::new(field.name().clone(), None, None, pg_type, format)
                .with_type_size(size)
                .with_type_modifier(type_modifier(field.data_type()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Result encoding
// ---------------------------------------------------------------------------------------------

/// One non-null cell, in the shape PostgreSQL encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue<'a> {
    /// `bool`.
    Bool(bool),
    /// `int2`.
    Int2(i16),
    /// `int4`.
    Int4(i32),
    /// `int8`.
    Int8(i64),
    /// `float4`.
    Float4(f32),
    /// `float8`.
    Float8(f64),
    /// `numeric`: unscaled value and scale (digits after the point; negative = trailing zeros).
    Numeric(i128, i8),
    /// `text`.
    Text(&'a str),
    /// `bytea`.
    Bytes(&'a [u8]),
    /// `uuid`: 16 bytes.
    Uuid(&'a [u8]),
    /// `json`: the text as written.
    Json(&'a str),
    /// `jsonb`: the canonical text.
    Jsonb(&'a str),
    /// `date`, as days since 1970-01-01.
    Date(i64),
    /// `time`, as microseconds since midnight.
    Time(i64),
    /// `timestamp`, as seconds and nanoseconds since 1970-01-01.
    Timestamp(i64, u32),
    /// `timestamptz` in UTC, as seconds and nanoseconds since 1970-01-01.
    TimestampTz(i64, u32),
    /// `interval`: months, days and microseconds, each with its own sign, as PostgreSQL
    /// keeps them (a month is not a fixed number of days, nor a day of hours).
    Interval {
        /// Months (a year is 12).
        months: i32,
        /// Days.
        days: i32,
        /// Time of day part, in microseconds.
        micros: i64,
    },
}

/// Splits a timestamp in `unit` into whole seconds and nanoseconds (floor, so pre-1970 works).
fn split_timestamp(value: i64, unit: TimeUnit) -> (i64, u32) {
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let nanos_per_unit = 1_000_000_000 / per_second;
    let secs = value.div_euclid(per_second);
    // `rem_euclid` is in [0, per_second), so the product stays below 1e9.
    let nanos = (value.rem_euclid(per_second) * nanos_per_unit) as u32;
    (secs, nanos)
}

/// Reads one cell of a column the encoder understands natively; `None` for a column type that
/// falls back to Arrow's display formatting.
fn cell(array: &dyn Array, row: usize) -> Option<PgValue<'_>> {
    let value = match array.data_type() {
        DataType::Boolean => PgValue::Bool(array.as_boolean_opt()?.value(row)),
        DataType::Int8 => PgValue::Int2(array.as_primitive_opt::<Int8Type>()?.value(row).into()),
        DataType::Int16 => PgValue::Int2(array.as_primitive_opt::<Int16Type>()?.value(row)),
        DataType::UInt8 => PgValue::Int2(array.as_primitive_opt::<UInt8Type>()?.value(row).into()),
        DataType::Int32 => PgValue::Int4(array.as_primitive_opt::<Int32Type>()?.value(row)),
        DataType::UInt16 => {
            PgValue::Int4(array.as_primitive_opt::<UInt16Type>()?.value(row).into())
        }
        DataType::Int64 => PgValue::Int8(array.as_primitive_opt::<Int64Type>()?.value(row)),
        DataType::UInt32 => {
            PgValue::Int8(array.as_primitive_opt::<UInt32Type>()?.value(row).into())
        }
        DataType::UInt64 => {
            PgValue::Numeric(array.as_primitive_opt::<UInt64Type>()?.value(row).into(), 0)
        }
        DataType::Float16 => {
            PgValue::Float4(array.as_primitive_opt::<Float16Type>()?.value(row).to_f32())
        }
        DataType::Float32 => PgValue::Float4(array.as_primitive_opt::<Float32Type>()?.value(row)),
        DataType::Float64 => PgValue::Float8(array.as_primitive_opt::<Float64Type>()?.value(row)),
        DataType::Decimal32(_, s) => PgValue::Numeric(
            array.as_primitive_opt::<Decimal32Type>()?.value(row).into(),
            *s,
        ),
        DataType::Decimal64(_, s) => PgValue::Numeric(
            array.as_primitive_opt::<Decimal64Type>()?.value(row).into(),
            *s,
        ),
        DataType::Decimal128(_, s) => {
            PgValue::Numeric(array.as_primitive_opt::<Decimal128Type>()?.value(row), *s)
        }
        DataType::Utf8 => PgValue::Text(array.as_string_opt::<i32>()?.value(row)),
        DataType::LargeUtf8 => PgValue::Text(array.as_string_opt::<i64>()?.value(row)),
        DataType::Utf8View => PgValue::Text(array.as_string_view_opt()?.value(row)),
        DataType::Binary => PgValue::Bytes(array.as_binary_opt::<i32>()?.value(row)),
        // json and jsonb values hold UTF-8 text (the sql layer writes no other).
        DataType::LargeBinary => {
            PgValue::Jsonb(std::str::from_utf8(array.as_binary_opt::<i64>()?.value(row)).ok()?)
        }
        DataType::BinaryView => {
            PgValue::Json(std::str::from_utf8(array.as_binary_view_opt()?.value(row)).ok()?)
        }
        t if flotilla_sql::pg_uuid::is_uuid(t) => {
            PgValue::Uuid(array.as_fixed_size_binary_opt()?.value(row))
        }
        DataType::FixedSizeBinary(_) => {
            PgValue::Bytes(array.as_fixed_size_binary_opt()?.value(row))
        }
        DataType::Date32 => {
            PgValue::Date(array.as_primitive_opt::<Date32Type>()?.value(row).into())
        }
        DataType::Date64 => PgValue::Date(
            array
                .as_primitive_opt::<Date64Type>()?
                .value(row)
                .div_euclid(86_400_000),
        ),
        DataType::Time64(TimeUnit::Microsecond) => PgValue::Time(
            array
                .as_primitive_opt::<Time64MicrosecondType>()?
                .value(row),
        ),
        DataType::Time64(TimeUnit::Nanosecond) => {
            PgValue::Time(array.as_primitive_opt::<Time64NanosecondType>()?.value(row) / 1_000)
        }
        DataType::Time32(TimeUnit::Second) => PgValue::Time(
            i64::from(array.as_primitive_opt::<Time32SecondType>()?.value(row)) * 1_000_000,
        ),
        DataType::Time32(TimeUnit::Millisecond) => PgValue::Time(
            i64::from(
                array
                    .as_primitive_opt::<Time32MillisecondType>()?
                    .value(row),
            ) * 1_000,
        ),
        DataType::Timestamp(unit, tz) => {
            let raw = match unit {
                TimeUnit::Second => array.as_primitive_opt::<TimestampSecondType>()?.value(row),
                TimeUnit::Millisecond => array
                    .as_primitive_opt::<TimestampMillisecondType>()?
                    .value(row),
                TimeUnit::Microsecond => array
                    .as_primitive_opt::<TimestampMicrosecondType>()?
                    .value(row),
                TimeUnit::Nanosecond => array
                    .as_primitive_opt::<TimestampNanosecondType>()?
                    .value(row),
            };
            let (secs, nanos) = split_timestamp(raw, *unit);
            if tz.is_some() {
                PgValue::TimestampTz(secs, nanos)
            } else {
                PgValue::Timestamp(secs, nanos)
            }
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = array
                .as_primitive_opt::<IntervalMonthDayNanoType>()?
                .value(row);
            PgValue::Interval {
                months: v.months,
                days: v.days,
                // PostgreSQL keeps microseconds; finer digits are dropped toward zero.
                micros: v.nanoseconds / 1_000,
            }
        }
        DataType::Duration(unit) => {
            // `timestamp - timestamp`: PostgreSQL's interval of days and a time of day.
            let micros = flotilla_sql::pg_text::duration_micros(array, row, *unit)?;
            let (days, micros) = flotilla_sql::pg_text::days_and_micros(micros);
            PgValue::Interval {
                months: 0,
                days,
                micros,
            }
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = array.as_primitive_opt::<IntervalDayTimeType>()?.value(row);
            PgValue::Interval {
                months: 0,
                days: v.days,
                micros: i64::from(v.milliseconds) * 1_000,
            }
        }
        DataType::Interval(IntervalUnit::YearMonth) => PgValue::Interval {
            months: array
                .as_primitive_opt::<IntervalYearMonthType>()?
                .value(row),
            days: 0,
            micros: 0,
        },
        _ => return None,
    };
    Some(value)
}

fn date_of_days(days: i64) -> Result<NaiveDate, SqlError> {
    days.checked_mul(86_400)
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .map(|dt| dt.date_naive())
        .ok_or_else(|| sql_error("22008", "date out of range".to_owned()))
}

fn datetime_of(secs: i64, nanos: u32) -> Result<NaiveDateTime, SqlError> {
    DateTime::from_timestamp(secs, nanos)
        .map(|dt| dt.naive_utc())
        .ok_or_else(|| sql_error("22008", "timestamp out of range".to_owned()))
}

/// PostgreSQL's text form of a timestamp (`flotilla_sql::timestamp_text`).
fn timestamp_text(secs: i64, nanos: u32, with_tz: bool) -> Result<String, SqlError> {
    Ok(flotilla_sql::timestamp_text(
        datetime_of(secs, nanos)?,
        with_tz,
    ))
}

fn date_text(days: i64) -> Result<String, SqlError> {
    Ok(flotilla_sql::date_text(date_of_days(days)?))
}

/// Text of a numeric with exactly `scale` digits after the point (PostgreSQL keeps the scale).
fn numeric_text(unscaled: i128, scale: i8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale <= 0 {
        if unscaled == 0 {
            return "0".to_owned();
        }
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return format!("{sign}{digits}{zeros}");
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    format!("{sign}{int_part}.{frac_part}")
}

/// PostgreSQL's binary numeric: ndigits, weight, sign, dscale, then base-10000 digits.
fn numeric_binary(unscaled: i128, scale: i8, out: &mut Vec<u8>) {
    let dscale = u16::from(scale.max(0).unsigned_abs());
    let mut digits = unscaled.unsigned_abs().to_string();
    let frac_len = if scale >= 0 {
        usize::from(scale.unsigned_abs())
    } else {
        digits.push_str(&"0".repeat(usize::from(scale.unsigned_abs())));
        0
    };
    if unscaled == 0 {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&NUMERIC_POS.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        return;
    }
    if digits.len() < frac_len {
        digits = format!("{}{digits}", "0".repeat(frac_len - digits.len()));
    }
    let (int_part, frac_part) = digits.split_at(digits.len() - frac_len);
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let int_padded = format!("{}{int_part}", "0".repeat(int_pad));
    let frac_padded = format!("{frac_part}{}", "0".repeat(frac_pad));
    let group = |chunk: &[u8]| -> i16 {
        chunk
            .iter()
            .fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'))
    };
    let int_groups: Vec<i16> = int_padded.as_bytes().chunks(4).map(group).collect();
    let frac_groups: Vec<i16> = frac_padded.as_bytes().chunks(4).map(group).collect();
    // At most 39 decimal digits plus 127 zeros: the group count always fits an i16.
    let mut weight = int_groups.len() as i16 - 1;
    let mut groups: Vec<i16> = int_groups.into_iter().chain(frac_groups).collect();
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let sign = if unscaled < 0 {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// Appends `value` in PostgreSQL's text format.
pub fn encode_text(value: &PgValue<'_>, out: &mut Vec<u8>) -> Result<(), SqlError> {
    match value {
        PgValue::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        PgValue::Int2(v) => out.extend_from_slice(v.to_string().as_bytes()),
        PgValue::Int4(v) => out.extend_from_slice(v.to_string().as_bytes()),
        PgValue::Int8(v) => out.extend_from_slice(v.to_string().as_bytes()),
        PgValue::Float4(v) => out.extend_from_slice(flotilla_sql::float4_text(*v).as_bytes()),
        PgValue::Float8(v) => out.extend_from_slice(flotilla_sql::float8_text(*v).as_bytes()),
        PgValue::Numeric(v, s) => out.extend_from_slice(numeric_text(*v, *s).as_bytes()),
        PgValue::Text(s) | PgValue::Json(s) | PgValue::Jsonb(s) => {
            out.extend_from_slice(s.as_bytes())
        }
        PgValue::Bytes(b) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.reserve(2 + b.len() * 2);
            out.extend_from_slice(b"\\x");
            for byte in b.iter() {
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0x0f)]);
            }
        }
        PgValue::Uuid(b) => out.extend_from_slice(flotilla_sql::pg_uuid::text(b).as_bytes()),
        PgValue::Date(days) => out.extend_from_slice(date_text(*days)?.as_bytes()),
        PgValue::Time(micros) => out.extend_from_slice(
            flotilla_sql::pg_text::time_text(*micros)
                .ok_or_else(|| sql_error("22008", "time out of range".to_owned()))?
                .as_bytes(),
        ),
        PgValue::Timestamp(secs, nanos) => {
            out.extend_from_slice(timestamp_text(*secs, *nanos, false)?.as_bytes())
        }
        PgValue::TimestampTz(secs, nanos) => {
            out.extend_from_slice(timestamp_text(*secs, *nanos, true)?.as_bytes())
        }
        PgValue::Interval {
            months,
            days,
            micros,
        } => out.extend_from_slice(
            flotilla_sql::pg_text::interval_text(*months, *days, *micros).as_bytes(),
        ),
    }
    Ok(())
}

/// Appends `value` in PostgreSQL's binary format.
pub fn encode_binary(value: &PgValue<'_>, out: &mut Vec<u8>) -> Result<(), SqlError> {
    match value {
        PgValue::Bool(b) => out.push(u8::from(*b)),
        PgValue::Int2(v) => out.extend_from_slice(&v.to_be_bytes()),
        PgValue::Int4(v) => out.extend_from_slice(&v.to_be_bytes()),
        PgValue::Int8(v) => out.extend_from_slice(&v.to_be_bytes()),
        PgValue::Float4(v) => out.extend_from_slice(&v.to_be_bytes()),
        PgValue::Float8(v) => out.extend_from_slice(&v.to_be_bytes()),
        PgValue::Numeric(v, s) => numeric_binary(*v, *s, out),
        PgValue::Text(s) | PgValue::Json(s) => out.extend_from_slice(s.as_bytes()),
        PgValue::Jsonb(s) => {
            out.push(JSONB_VERSION);
            out.extend_from_slice(s.as_bytes());
        }
        PgValue::Bytes(b) | PgValue::Uuid(b) => out.extend_from_slice(b),
        PgValue::Date(days) => {
            let pg_days = days
                .checked_sub(PG_EPOCH_DAYS)
                .and_then(|d| i32::try_from(d).ok())
                .ok_or_else(|| sql_error("22008", "date out of range".to_owned()))?;
            out.extend_from_slice(&pg_days.to_be_bytes());
        }
        PgValue::Time(micros) => out.extend_from_slice(&micros.to_be_bytes()),
        PgValue::Timestamp(secs, nanos) | PgValue::TimestampTz(secs, nanos) => {
            let micros = secs
                .checked_mul(1_000_000)
                .and_then(|m| m.checked_add(i64::from(nanos / 1_000)))
                .and_then(|m| m.checked_sub(PG_EPOCH_MICROS))
                .ok_or_else(|| sql_error("22008", "timestamp out of range".to_owned()))?;
            out.extend_from_slice(&micros.to_be_bytes());
        }
        PgValue::Interval {
            months,
            days,
            micros,
        } => {
            out.extend_from_slice(&micros.to_be_bytes());
            out.extend_from_slice(&days.to_be_bytes());
            out.extend_from_slice(&months.to_be_bytes());
        }
    }
    Ok(())
}

/// One column of a batch, ready to encode cell by cell.
struct ColumnEncoder<'a> {
    array: &'a dyn Array,
    nulls: Option<NullBuffer>,
    /// Arrow's display formatting, for column types without a native PostgreSQL encoding.
    fallback: Option<ArrayFormatter<'a>>,
    binary: bool,
}

impl ColumnEncoder<'_> {
    /// Appends the cell's length word and bytes (length -1 for NULL).
    fn write(&self, row: usize, scratch: &mut Vec<u8>, out: &mut DataRow) -> Result<(), SqlError> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(row)) {
            out.data.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        scratch.clear();
        if self.binary && array_binary(self.array, row, scratch)? {
            // A one-dimensional array, in PostgreSQL's binary form.
        } else if array_text(self.array, row, scratch)? || record_text(self.array, row, scratch)? {
            // An array in PostgreSQL's text form (one of more dimensions is described as
            // `text`, so binary is the same bytes), or a row value, described as `text`.
        } else if let Some(formatter) = &self.fallback {
            // Text and binary agree for `text`, the type these columns are described as.
            use std::fmt::Write;
            let mut s = String::new();
            write!(s, "{}", formatter.value(row))
                .map_err(|e| sql_error("XX000", format!("cannot format value: {e}")))?;
            scratch.extend_from_slice(s.as_bytes());
        } else {
            let value = cell(self.array, row).ok_or_else(|| {
                sql_error(
                    "XX000",
                    format!(
                        "column data does not match its type {}",
                        self.array.data_type()
                    ),
                )
            })?;
            if self.binary {
                encode_binary(&value, scratch)?;
            } else {
                encode_text(&value, scratch)?;
            }
        }
        let len = i32::try_from(scratch.len())
            .map_err(|_| sql_error("54000", "result value too large".to_owned()))?;
        out.data.extend_from_slice(&len.to_be_bytes());
        out.data.extend_from_slice(scratch);
        Ok(())
    }
}

/// Writes row `row` of a one-dimensional list column in PostgreSQL's binary array form:
/// dimensions, a has-NULLs flag, the element type's OID, each dimension's length and
/// lower bound (1), then each element's length word (-1 for NULL) and binary bytes. False
/// if the column is no such list.
fn array_binary(list: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<bool, SqlError> {
    let (values, element): (ArrayRef, &DataType) = match list.data_type() {
        DataType::List(f) => (list.as_list::<i32>().value(row), f.data_type()),
        DataType::LargeList(f) => (list.as_list::<i64>().value(row), f.data_type()),
        DataType::FixedSizeList(f, _) => (list.as_fixed_size_list().value(row), f.data_type()),
        _ => return Ok(false),
    };
    if array_type_of(element).is_none() {
        return Ok(false);
    }
    let too_long = || sql_error("54000", "array too large".to_owned());
    let count = i32::try_from(values.len()).map_err(|_| too_long())?;
    let has_nulls = values.null_count() > 0;
    // An empty array has no dimensions, as PostgreSQL sends it.
    out.extend_from_slice(&i32::from(count > 0).to_be_bytes());
    out.extend_from_slice(&i32::from(has_nulls).to_be_bytes());
    out.extend_from_slice(&pg_type_of(element).oid().to_be_bytes());
    if count > 0 {
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    let mut item = Vec::new();
    for i in 0..values.len() {
        if values.is_null(i) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let value = cell(values.as_ref(), i).ok_or_else(|| {
            sql_error(
                "XX000",
                format!("array element does not match its type {element}"),
            )
        })?;
        item.clear();
        encode_binary(&value, &mut item)?;
        let len = i32::try_from(item.len()).map_err(|_| too_long())?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&item);
    }
    Ok(true)
}

/// Writes row `row` of a list column as PostgreSQL writes an array (`{1,2,NULL}`,
/// `{"a b",c}`, `{{1,2},{3,4}}`), elements in their PostgreSQL text; false if the column
/// is no list.
fn array_text(list: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<bool, SqlError> {
    let values: ArrayRef = match list.data_type() {
        DataType::List(_) => list.as_list::<i32>().value(row),
        DataType::LargeList(_) => list.as_list::<i64>().value(row),
        DataType::FixedSizeList(..) => list.as_fixed_size_list().value(row),
        _ => return Ok(false),
    };
    out.push(b'{');
    let mut element = Vec::new();
    for i in 0..values.len() {
        if i > 0 {
            out.push(b',');
        }
        if values.is_null(i) {
            out.extend_from_slice(b"NULL");
            continue;
        }
        // An inner list is a further dimension, written bare.
        if array_text(values.as_ref(), i, out)? {
            continue;
        }
        element.clear();
        nested_text(values.as_ref(), i, &mut element)?;
        let quote = element.is_empty()
            || element.eq_ignore_ascii_case(b"NULL")
            || element
                .iter()
                .any(|b| b"{}\",\\ \t\n\r\x0b\x0c".contains(b));
        write_quoted(&element, quote, Escape::Backslash, out);
    }
    out.push(b'}');
    Ok(true)
}

/// Writes row `row` of a struct column as PostgreSQL writes a row value (`(1,x)`,
/// `(2,"y z",)`): fields in their PostgreSQL text, NULL as nothing; false if the column
/// is no struct.
fn record_text(record: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<bool, SqlError> {
    let Some(fields) = record.as_struct_opt() else {
        return Ok(false);
    };
    out.push(b'(');
    let mut field = Vec::new();
    for (i, column) in fields.columns().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if column.is_null(row) {
            continue;
        }
        field.clear();
        nested_text(column.as_ref(), row, &mut field)?;
        // record_out's rule: an empty string is quoted so it differs from NULL.
        let quote = field.is_empty()
            || field
                .iter()
                .any(|b| b"\"\\(),".contains(b) || b.is_ascii_whitespace());
        write_quoted(&field, quote, Escape::Doubled, out);
    }
    out.push(b')');
    Ok(true)
}

/// The PostgreSQL text of the non-NULL value at `row` of `values`, an array element or a
/// row's field: an array, a row, or a scalar in its own text form.
fn nested_text(values: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<(), SqlError> {
    if array_text(values, row, out)? || record_text(values, row, out)? {
        return Ok(());
    }
    match cell(values, row) {
        Some(v) => encode_text(&v, out),
        None => {
            let formatter = ArrayFormatter::try_new(values, &FormatOptions::default())
                .map_err(|e| sql_error("XX000", format!("cannot format value: {e}")))?;
            out.extend_from_slice(formatter.value(row).to_string().as_bytes());
            Ok(())
        }
    }
}

/// How a quote or backslash is written inside a quoted element: array_out escapes it
/// with a backslash, record_out doubles it.
#[derive(Clone, Copy)]
enum Escape {
    Backslash,
    Doubled,
}

/// Writes `text`, in double quotes when `quote`, a quote or backslash inside them
/// written as `escape` says.
fn write_quoted(text: &[u8], quote: bool, escape: Escape, out: &mut Vec<u8>) {
    if !quote {
        out.extend_from_slice(text);
        return;
    }
    out.push(b'"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push(match escape {
                Escape::Backslash => b'\\',
                Escape::Doubled => b,
            });
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Whether the encoder handles `data_type` natively (otherwise it is sent as display text).
fn is_native(data_type: &DataType) -> bool {
    !matches!(pg_type_of(data_type), Type::TEXT)
        || matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
}

/// Encodes `batches` as DataRow messages, column `i` in `formats[i]` (text when absent).
pub fn encode_batches(
    batches: &[RecordBatch],
    formats: &[FieldFormat],
) -> Result<Vec<DataRow>, SqlError> {
    let options = FormatOptions::default();
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let mut scratch = Vec::with_capacity(64);
    for batch in batches {
        let field_count = i16::try_from(batch.num_columns())
            .map_err(|_| sql_error("54011", "too many result columns".to_owned()))?;
        let columns = batch
            .columns()
            .iter()
            .enumerate()
            .map(|(idx, array)| {
                let array: &dyn Array = array.as_ref();
                let fallback =
                    if is_native(array.data_type()) {
                        None
                    } else {
                        Some(ArrayFormatter::try_new(array, &options).map_err(|e| {
                            sql_error("XX000", format!("cannot format column: {e}"))
                        })?)
                    };
                Ok(ColumnEncoder {
                    array,
                    // Logical nulls also cover Null-typed, dictionary and run-end columns.
                    nulls: array.logical_nulls(),
                    fallback,
                    binary: formats.get(idx) == Some(&FieldFormat::Binary),
                })
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        for row in 0..batch.num_rows() {
            let mut data_row = DataRow::default();
            data_row.field_count = field_count;
            for column in &columns {
                column.write(row, &mut scratch, &mut data_row)?;
            }
            rows.push(data_row);
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Parameter decoding
// ---------------------------------------------------------------------------------------------

/// PostgreSQL's name for a type, as its error messages spell it.
fn pg_type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "numeric",
        t if flotilla_sql::pg_uuid::is_uuid(t) => "uuid",
        DataType::LargeBinary => "jsonb",
        DataType::BinaryView => "json",
        DataType::Binary | DataType::FixedSizeBinary(_) => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Interval(_) => "interval",
        _ => "text",
    }
}

fn invalid_syntax(data_type: &DataType, text: &str) -> SqlError {
    let code = match data_type {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => "22007",
        _ => "22P02",
    };
    sql_error(
        code,
        format!(
            "invalid input syntax for type {}: \"{text}\"",
            pg_type_name(data_type)
        ),
    )
}

fn out_of_range(data_type: &DataType, text: &str) -> SqlError {
    sql_error(
        "22003",
        format!(
            "value \"{text}\" is out of range for type {}",
            pg_type_name(data_type)
        ),
    )
}

/// Decodes one Bind parameter into a `ScalarValue` of the statement's parameter type `target`.
///
/// `raw` is `None` for SQL NULL. Binary input is in the encoding of the type the client
/// declared (`declared`), or of the type the server described when it declared none.
/// `index` is the 0-based parameter number, for error messages.
pub fn decode_param(
    raw: Option<&[u8]>,
    binary: bool,
    declared: Option<&Type>,
    target: &DataType,
    index: usize,
) -> Result<ScalarValue, SqlError> {
    let Some(raw) = raw else {
        // A typed NULL where Arrow has one, else an untyped NULL the planner can coerce.
        return Ok(ScalarValue::try_from(target).unwrap_or(ScalarValue::Null));
    };
    if binary {
        let pg_type = declared.cloned().unwrap_or_else(|| pg_type_of(target));
        decode_binary(raw, &pg_type, target, index)
    } else {
        decode_utf8(raw, target)
    }
}

/// Converts a decoded value to the statement's parameter type when the client's type differed.
fn coerce(value: ScalarValue, target: &DataType, index: usize) -> Result<ScalarValue, SqlError> {
    if value.data_type() == *target || matches!(target, DataType::Null) {
        return Ok(value);
    }
    // A uuid for a string: its text, as PostgreSQL's assignment cast gives (Arrow's cast
    // has none).
    if let ScalarValue::FixedSizeBinary(_, Some(bytes)) = &value
        && flotilla_sql::pg_uuid::is_uuid(&value.data_type())
        && matches!(
            target,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    {
        return decode_text(&flotilla_sql::pg_uuid::text(bytes), target);
    }
    value.cast_to(target).map_err(|e| {
        sql_error(
            "42804",
            format!(
                "parameter ${} cannot be converted to type {}: {e}",
                index + 1,
                pg_type_name(target)
            ),
        )
    })
}

fn bad_binary(index: usize) -> SqlError {
    sql_error(
        "22P03",
        format!(
            "incorrect binary data format in bind parameter {}",
            index + 1
        ),
    )
}

/// The version byte that starts jsonb's binary form.
const JSONB_VERSION: u8 = 1;

/// A parameter sent as text (or as json's binary form, which is text): read for the
/// statement's type.
fn decode_utf8(raw: &[u8], target: &DataType) -> Result<ScalarValue, SqlError> {
    let text = std::str::from_utf8(raw).map_err(|_| {
        sql_error(
            "22021",
            "invalid byte sequence for encoding \"UTF8\"".to_owned(),
        )
    })?;
    decode_text(text, target)
}

fn fixed<const N: usize>(raw: &[u8], index: usize) -> Result<[u8; N], SqlError> {
    raw.try_into().map_err(|_| bad_binary(index))
}

fn decode_binary(
    raw: &[u8],
    pg_type: &Type,
    target: &DataType,
    index: usize,
) -> Result<ScalarValue, SqlError> {
    let value = match *pg_type {
        Type::BOOL => ScalarValue::Boolean(Some(fixed::<1>(raw, index)?[0] != 0)),
        Type::INT2 => ScalarValue::Int16(Some(i16::from_be_bytes(fixed(raw, index)?))),
        Type::INT4 => ScalarValue::Int32(Some(i32::from_be_bytes(fixed(raw, index)?))),
        Type::INT8 => ScalarValue::Int64(Some(i64::from_be_bytes(fixed(raw, index)?))),
        Type::FLOAT4 => ScalarValue::Float32(Some(f32::from_be_bytes(fixed(raw, index)?))),
        Type::FLOAT8 => ScalarValue::Float64(Some(f64::from_be_bytes(fixed(raw, index)?))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            let text = std::str::from_utf8(raw).map_err(|_| {
                sql_error(
                    "22021",
                    "invalid byte sequence for encoding \"UTF8\"".to_owned(),
                )
            })?;
            // A string parameter for a non-string target parses like text input would.
            if matches!(
                target,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                ScalarValue::Utf8(Some(text.to_owned()))
            } else {
                return decode_text(text, target);
            }
        }
        Type::BYTEA => ScalarValue::Binary(Some(raw.to_vec())),
        // jsonb's binary form is a version byte, then the text.
        Type::JSONB => match raw.split_first() {
            Some((&JSONB_VERSION, text)) => return decode_utf8(text, target),
            _ => {
                return Err(sql_error(
                    "22P03",
                    "unsupported jsonb version number".to_owned(),
                ));
            }
        },
        Type::JSON => return decode_utf8(raw, target),
        Type::UUID => ScalarValue::FixedSizeBinary(
            flotilla_sql::pg_uuid::UUID_BYTES as i32,
            Some(fixed::<{ flotilla_sql::pg_uuid::UUID_BYTES }>(raw, index)?.to_vec()),
        ),
        Type::DATE => {
            let pg_days = i32::from_be_bytes(fixed(raw, index)?);
            let days = i64::from(pg_days) + PG_EPOCH_DAYS;
            let days = i32::try_from(days)
                .map_err(|_| sql_error("22008", "date out of range".to_owned()))?;
            ScalarValue::Date32(Some(days))
        }
        Type::TIME => {
            let micros = i64::from_be_bytes(fixed(raw, index)?);
            if !(0..=86_400_000_000).contains(&micros) {
                return Err(sql_error("22008", "time out of range".to_owned()));
            }
            ScalarValue::Time64Microsecond(Some(micros))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let pg_micros = i64::from_be_bytes(fixed(raw, index)?);
            let micros = pg_micros
                .checked_add(PG_EPOCH_MICROS)
                .ok_or_else(|| sql_error("22008", "timestamp out of range".to_owned()))?;
            let tz = (*pg_type == Type::TIMESTAMPTZ).then(|| Arc::from("UTC"));
            ScalarValue::TimestampMicrosecond(Some(micros), tz)
        }
        ref array if let Some(element) = element_type_of(array) => {
            return decode_binary_array(raw, element, target, index);
        }
        Type::NUMERIC => {
            let text = numeric_binary_to_text(raw).ok_or_else(|| bad_binary(index))?;
            let decimal_target = match target {
                DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
                    target.clone()
                }
                // Unconstrained: keep every digit the client sent (up to Arrow's 38).
                _ => {
                    let scale = text
                        .split_once('.')
                        .map_or(0, |(_, frac)| frac.len().min(38));
                    DataType::Decimal128(38, scale as i8)
                }
            };
            decode_text(&text, &decimal_target)?
        }
        _ => {
            return Err(sql_error(
                "0A000",
                format!(
                    "binary format for parameter ${} of type {} is not supported",
                    index + 1,
                    pg_type.name()
                ),
            ));
        }
    };
    coerce(value, target, index)
}

/// Decodes PostgreSQL's binary numeric into plain decimal text; `None` if malformed or a
/// special value (NaN, ±Infinity) Arrow decimals cannot hold.
fn numeric_binary_to_text(raw: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<[u8; 2]> { raw.get(i * 2..i * 2 + 2)?.try_into().ok() };
    let ndigits = i16::from_be_bytes(word(0)?);
    let weight = i64::from(i16::from_be_bytes(word(1)?));
    let sign = u16::from_be_bytes(word(2)?);
    let dscale = u16::from_be_bytes(word(3)?);
    let ndigits = usize::try_from(ndigits).ok()?;
    if raw.len() != 8 + ndigits * 2 || (sign != NUMERIC_POS && sign != NUMERIC_NEG) {
        return None;
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        let d = i16::from_be_bytes(word(4 + i)?);
        if !(0..10_000).contains(&d) {
            return None;
        }
        digits.push(d);
    }
    // Group exponents run from `weight` down; the integer part is groups with exponent >= 0.
    let lowest = (weight - ndigits as i64 + 1).min(-1);
    let highest = weight.max(0);
    let mut int_part = String::new();
    let mut frac_part = String::new();
    let mut exp = highest;
    while exp >= lowest {
        let idx = weight - exp;
        let group = if idx >= 0 && (idx as usize) < ndigits {
            digits[idx as usize]
        } else {
            0
        };
        if exp >= 0 {
            int_part.push_str(&format!("{group:04}"));
        } else {
            frac_part.push_str(&format!("{group:04}"));
        }
        exp -= 1;
    }
    // Show at least `dscale` fraction digits, dropping padding beyond that when it is zero.
    let keep = usize::from(dscale).max(frac_part.trim_end_matches('0').len());
    frac_part.truncate(keep.min(frac_part.len()));
    let int_part = int_part.trim_start_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let sign = if sign == NUMERIC_NEG { "-" } else { "" };
    if frac_part.is_empty() {
        Some(format!("{sign}{int_part}"))
    } else {
        Some(format!("{sign}{int_part}.{frac_part}"))
    }
}

/// Parses a parameter's text form as PostgreSQL's input function for `target` would.
pub fn decode_text(text: &str, target: &DataType) -> Result<ScalarValue, SqlError> {
    let value = match target {
        DataType::Null => ScalarValue::Null,
        DataType::Boolean => ScalarValue::Boolean(Some(
            parse_bool(text).ok_or_else(|| invalid_syntax(target, text))?,
        )),
        DataType::Int8 => ScalarValue::Int8(Some(parse_int(text, target)?)),
        DataType::Int16 => ScalarValue::Int16(Some(parse_int(text, target)?)),
        DataType::Int32 => ScalarValue::Int32(Some(parse_int(text, target)?)),
        DataType::Int64 => ScalarValue::Int64(Some(parse_int(text, target)?)),
        DataType::UInt8 => ScalarValue::UInt8(Some(parse_int(text, target)?)),
        DataType::UInt16 => ScalarValue::UInt16(Some(parse_int(text, target)?)),
        DataType::UInt32 => ScalarValue::UInt32(Some(parse_int(text, target)?)),
        DataType::UInt64 => ScalarValue::UInt64(Some(parse_int(text, target)?)),
        DataType::Float32 => ScalarValue::Float32(Some(parse_float::<f32>(text, target)?)),
        DataType::Float64 => ScalarValue::Float64(Some(parse_float::<f64>(text, target)?)),
        DataType::Decimal32(p, s) => {
            let v = parse_numeric(text, *p, *s, target)?;
            ScalarValue::Decimal32(Some(v as i32), *p, *s)
        }
        DataType::Decimal64(p, s) => {
            let v = parse_numeric(text, *p, *s, target)?;
            ScalarValue::Decimal64(Some(v as i64), *p, *s)
        }
        DataType::Decimal128(p, s) => {
            ScalarValue::Decimal128(Some(parse_numeric(text, *p, *s, target)?), *p, *s)
        }
        DataType::Utf8 => ScalarValue::Utf8(Some(text.to_owned())),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(text.to_owned())),
        DataType::Utf8View => ScalarValue::Utf8View(Some(text.to_owned())),
        DataType::Binary => ScalarValue::Binary(Some(parse_bytea(text, target)?)),
        DataType::LargeBinary => {
            ScalarValue::LargeBinary(Some(Kind::Jsonb.input(text)?.into_bytes()))
        }
        DataType::BinaryView => ScalarValue::BinaryView(Some(Kind::Json.input(text)?.into_bytes())),
        t if flotilla_sql::pg_uuid::is_uuid(t) => {
            let bytes =
                flotilla_sql::pg_uuid::parse(text).ok_or_else(|| invalid_syntax(t, text))?;
            ScalarValue::FixedSizeBinary(
                flotilla_sql::pg_uuid::UUID_BYTES as i32,
                Some(bytes.to_vec()),
            )
        }
        DataType::FixedSizeBinary(len) => {
            let bytes = parse_bytea(text, target)?;
            if usize::try_from(*len).ok() != Some(bytes.len()) {
                return Err(invalid_syntax(target, text));
            }
            ScalarValue::FixedSizeBinary(*len, Some(bytes))
        }
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(_, _)
        | DataType::Time64(_)
        | DataType::Interval(IntervalUnit::MonthDayNano) => {
            flotilla_sql::pg_datetime::scalar_from_text(text, target)?
                .ok_or_else(|| invalid_syntax(target, text))?
        }
        DataType::List(field) => {
            let mut elements = Vec::new();
            for element in flotilla_sql::pg_array::array_text(text)? {
                elements.push(match element {
                    Some(e) => decode_text(&e, field.data_type())?,
                    None => null_of(field.data_type()),
                });
            }
            list_of(&elements, field.data_type())
        }
        _ => ScalarValue::try_from_string(text.to_owned(), target)
            .map_err(|_| invalid_syntax(target, text))?,
    };
    Ok(value)
}

/// A NULL of `data_type`, or an untyped one where Arrow has none.
fn null_of(data_type: &DataType) -> ScalarValue {
    ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null)
}

/// A list scalar of `elements`, each of `element_type`.
fn list_of(elements: &[ScalarValue], element_type: &DataType) -> ScalarValue {
    ScalarValue::List(ScalarValue::new_list_nullable(elements, element_type))
}

/// Decodes an array's binary form: dimensions, then each element (its length, -1 for
/// NULL, and its bytes in its type's binary form). One dimension only.
fn decode_binary_array(
    raw: &[u8],
    element_pg_type: &Type,
    target: &DataType,
    index: usize,
) -> Result<ScalarValue, SqlError> {
    let DataType::List(field) = target else {
        return Err(sql_error(
            "42804",
            format!(
                "parameter ${} is an array but the statement expects {}",
                index + 1,
                pg_type_name(target)
            ),
        ));
    };
    let mut input = raw;
    let int = |input: &mut &[u8]| -> Result<i32, SqlError> {
        let (head, rest) = input
            .split_first_chunk::<4>()
            .ok_or_else(|| bad_binary(index))?;
        *input = rest;
        Ok(i32::from_be_bytes(*head))
    };
    let dimensions = int(&mut input)?;
    let _has_nulls = int(&mut input)?;
    let _element_oid = int(&mut input)?;
    let len = match dimensions {
        0 => 0,
        1 => {
            let len = int(&mut input)?;
            let _lower_bound = int(&mut input)?;
            usize::try_from(len).map_err(|_| bad_binary(index))?
        }
        _ => {
            return Err(sql_error(
                "0A000",
                format!(
                    "parameter ${}: multidimensional arrays are not supported",
                    index + 1
                ),
            ));
        }
    };
    // Each element takes at least its 4-byte length: a larger count is malformed.
    if len > input.len() / 4 {
        return Err(bad_binary(index));
    }
    let mut elements = Vec::with_capacity(len);
    for _ in 0..len {
        let element_len = int(&mut input)?;
        if element_len < 0 {
            elements.push(null_of(field.data_type()));
            continue;
        }
        let element_len = element_len as usize;
        if element_len > input.len() {
            return Err(bad_binary(index));
        }
        let (bytes, rest) = input.split_at(element_len);
        input = rest;
        elements.push(decode_binary(
            bytes,
            element_pg_type,
            field.data_type(),
            index,
        )?);
    }
    if !input.is_empty() {
        return Err(bad_binary(index));
    }
    Ok(list_of(&elements, field.data_type()))
}

/// PostgreSQL's boolean input: t/true/y/yes/on/1 and f/false/n/no/off/0, any unique prefix,
/// case-insensitive, surrounding whitespace ignored.
fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    let is_prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if t.is_empty() {
        None
    } else if is_prefix_of("true", 1) || is_prefix_of("yes", 1) || t == "on" || t == "1" {
        Some(true)
    } else if is_prefix_of("false", 1)
        || is_prefix_of("no", 1)
        || is_prefix_of("off", 2)
        || t == "0"
    {
        Some(false)
    } else {
        None
    }
}

fn parse_int<T: TryFrom<i128>>(text: &str, target: &DataType) -> Result<T, SqlError> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_syntax(target, text));
    }
    // Well-formed but too long for i128 is simply out of range.
    let wide: i128 = t.parse().map_err(|_| out_of_range(target, text))?;
    T::try_from(wide).map_err(|_| out_of_range(target, text))
}

trait PgFloat: std::str::FromStr + Copy {
    fn is_infinite(self) -> bool;
}

impl PgFloat for f32 {
    fn is_infinite(self) -> bool {
        f32::is_infinite(self)
    }
}

impl PgFloat for f64 {
    fn is_infinite(self) -> bool {
        f64::is_infinite(self)
    }
}

fn parse_float<T: PgFloat>(text: &str, target: &DataType) -> Result<T, SqlError> {
    let t = text.trim();
    let v: T = t.parse().map_err(|_| invalid_syntax(target, text))?;
    // Rust rounds "1e400" to infinity; PostgreSQL calls it out of range.
    if v.is_infinite() && !t.to_ascii_lowercase().contains("inf") {
        return Err(sql_error(
            "22003",
            format!(
                "\"{text}\" is out of range for type {}",
                pg_type_name(target)
            ),
        ));
    }
    Ok(v)
}

/// Parses decimal text (optionally with an exponent) to an unscaled value with `scale`
/// digits after the point, rounding half away from zero like PostgreSQL's numeric input.
fn parse_numeric(
    text: &str,
    precision: u8,
    scale: i8,
    target: &DataType,
) -> Result<i128, SqlError> {
    let t = text.trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(pos) => {
            let exp: i64 = body[pos + 1..]
                .parse()
                .map_err(|_| invalid_syntax(target, text))?;
            (&body[..pos], exp)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid_syntax(target, text));
    }
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    // The decimal point sits after `point` digits; keep the digits left of it once the value
    // is multiplied by 10^scale.
    let point = (int_part.len() as i64).saturating_add(exponent);
    let keep = point.saturating_add(i64::from(scale));
    let overflow = || {
        let integer_digits = i32::from(precision) - i32::from(scale);
        SqlError {
            code: "22003",
            message: "numeric field overflow".to_owned(),
            position: None,
            hint: Some(format!(
                "A field with precision {precision}, scale {scale} must round to an absolute value less than 10^{integer_digits}."
            )),
            detail: None,
        }
    };
    // Digits kept from the input, then zeros for an exponent reaching past them; `keep` can
    // be astronomically large ("0e999999999999"), so the zeros are one power, not a loop.
    let kept = usize::try_from(keep.max(0)).unwrap_or(usize::MAX);
    let mut unscaled: i128 = 0;
    for &d in digits.iter().take(kept) {
        unscaled = unscaled
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(d)))
            .ok_or_else(overflow)?;
    }
    let zeros = kept.saturating_sub(digits.len());
    if unscaled != 0 && zeros > 0 {
        let factor = u32::try_from(zeros)
            .ok()
            .and_then(|z| 10i128.checked_pow(z))
            .ok_or_else(overflow)?;
        unscaled = unscaled.checked_mul(factor).ok_or_else(overflow)?;
    }
    let next = usize::try_from(keep)
        .ok()
        .and_then(|i| digits.get(i))
        .copied()
        .unwrap_or(0);
    if keep >= 0 && next >= 5 {
        unscaled = unscaled.checked_add(1).ok_or_else(overflow)?;
    }
    let limit = 10i128
        .checked_pow(u32::from(precision))
        .unwrap_or(i128::MAX);
    if unscaled >= limit {
        return Err(overflow());
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// `bytea` input: hex (`\x0a0b`, whitespace between pairs allowed) or escape format
/// (`\\` and `\ooo` octal escapes, other bytes literal).
fn parse_bytea(text: &str, target: &DataType) -> Result<Vec<u8>, SqlError> {
    let bad = || invalid_syntax(target, text);
    if let Some(hex) = text.strip_prefix("\\x") {
        let nibbles: Vec<u8> = hex
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|b| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                b'A'..=b'F' => Some(b - b'A' + 10),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        if !nibbles.len().is_multiple_of(2) {
            return Err(bad());
        }
        return Ok(nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4).ok_or_else(bad)?;
            let valid = (b'0'..=b'3').contains(&octal[0])
                && octal[1..].iter().all(|b| (b'0'..=b'7').contains(b));
            if !valid {
                return Err(bad());
            }
            out.push(((octal[0] - b'0') << 6) | ((octal[1] - b'0') << 3) | (octal[2] - b'0'));
            i += 4;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
        Float64Array, Int16Array, Int32Array, Int64Array, LargeStringArray, ListArray, NullArray,
        StringArray, StringViewArray, StructArray, TimestampMicrosecondArray,
        TimestampNanosecondArray, TimestampSecondArray,
    };
    use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
    use datafusion::arrow::datatypes::{Field, Fields};
    use pgwire::api::results::DataRowEncoder;
    use pgwire::types::format::FormatOptions as PgFormatOptions;
    use rust_decimal::Decimal;

    fn text(value: PgValue<'_>) -> String {
        let mut out = Vec::new();
        encode_text(&value, &mut out).expect("encodes");
        String::from_utf8(out).expect("utf8")
    }

    fn binary(value: PgValue<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_binary(&value, &mut out).expect("encodes");
        out
    }

    /// The bytes postgres-types (via pgwire's encoder) writes for a value: the reference
    /// binary encoding our hand-written encoders are checked against.
    fn reference_binary<T: postgres_types_shim::Value>(value: T, ty: &Type) -> Vec<u8> {
        let fields = Arc::new(vec![FieldInfo::new(
            "c".into(),
            None,
            None,
            ty.clone(),
            FieldFormat::Binary,
        )]);
        let mut encoder = DataRowEncoder::new(fields);
        value.encode(&mut encoder, ty);
        let row = encoder.take_row();
        row.data[4..].to_vec()
    }

    /// pgwire's encoder wants `ToSql`, which this crate cannot name without depending on
    /// postgres-types; a small trait keeps the reference values concrete instead.
    mod postgres_types_shim {
        use super::*;

        pub trait Value {
            fn encode(self, encoder: &mut DataRowEncoder, ty: &Type);
        }

        macro_rules! value {
            ($($t:ty),*) => {$(
                impl Value for $t {
                    fn encode(self, encoder: &mut DataRowEncoder, ty: &Type) {
                        encoder
                            .encode_field_with_type_and_format(
                                &self,
                                ty,
                                FieldFormat::Binary,
                                &PgFormatOptions::default(),
                            )
                            .expect("reference encodes");
                    }
                }
            )*};
        }

        value!(
            bool,
            i16,
            i32,
            i64,
            f32,
            f64,
            Decimal,
            NaiveDate,
            NaiveDateTime,
            DateTime<chrono::Utc>,
            String,
            Vec<u8>
        );
    }

    fn ts(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("test timestamp")
    }

    fn secs_nanos(dt: NaiveDateTime) -> (i64, u32) {
        let utc = dt.and_utc();
        (utc.timestamp(), utc.timestamp_subsec_nanos())
    }

    // ---- type map ----

    #[test]
    fn arrow_types_map_to_pg_types() {
        assert_eq!(pg_type_of(&DataType::Boolean), Type::BOOL);
        assert_eq!(pg_type_of(&DataType::Int16), Type::INT2);
        assert_eq!(pg_type_of(&DataType::Int32), Type::INT4);
        assert_eq!(pg_type_of(&DataType::Int64), Type::INT8);
        assert_eq!(pg_type_of(&DataType::Float32), Type::FLOAT4);
        assert_eq!(pg_type_of(&DataType::Float64), Type::FLOAT8);
        assert_eq!(pg_type_of(&DataType::Decimal128(10, 2)), Type::NUMERIC);
        assert_eq!(pg_type_of(&DataType::Utf8), Type::TEXT);
        assert_eq!(pg_type_of(&DataType::LargeUtf8), Type::TEXT);
        assert_eq!(pg_type_of(&DataType::Utf8View), Type::TEXT);
        assert_eq!(pg_type_of(&DataType::Binary), Type::BYTEA);
        // LargeBinary and BinaryView are jsonb and json (see flotilla_sql::pg_json).
        assert_eq!(pg_type_of(&DataType::LargeBinary), Type::JSONB);
        assert_eq!(pg_type_of(&DataType::Date32), Type::DATE);
        assert_eq!(
            pg_type_of(&DataType::Timestamp(TimeUnit::Microsecond, None)),
            Type::TIMESTAMP
        );
        assert_eq!(
            pg_type_of(&DataType::Timestamp(TimeUnit::Second, None)),
            Type::TIMESTAMP
        );
        assert_eq!(
            pg_type_of(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("UTC".into())
            )),
            Type::TIMESTAMPTZ
        );
        assert_eq!(pg_type_of(&DataType::Null), Type::TEXT);
        assert_eq!(
            pg_type_of(&DataType::Time64(TimeUnit::Microsecond)),
            Type::TIME
        );
    }

    #[test]
    fn declared_pg_types_map_to_arrow_types() {
        assert_eq!(arrow_type_of(&Type::INT4), Some(DataType::Int32));
        assert_eq!(arrow_type_of(&Type::INT8), Some(DataType::Int64));
        assert_eq!(arrow_type_of(&Type::VARCHAR), Some(DataType::Utf8));
        assert_eq!(arrow_type_of(&Type::BYTEA), Some(DataType::Binary));
        assert_eq!(arrow_type_of(&Type::NUMERIC), None);
        assert_eq!(arrow_type_of(&Type::UNKNOWN), None);
        for dt in [
            DataType::Boolean,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::Float32,
            DataType::Float64,
            DataType::Utf8,
            DataType::Binary,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ] {
            assert_eq!(arrow_type_of(&pg_type_of(&dt)), Some(dt.clone()), "{dt}");
        }
    }

    #[test]
    fn field_infos_carry_numeric_typmod_and_formats() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Decimal128(10, 2), true),
            Field::new("b", DataType::Int32, true),
        ]);
        let infos = field_infos(&schema, &[FieldFormat::Text, FieldFormat::Binary]);
        assert_eq!(infos[0].type_modifier(), (10 << 16 | 2) + 4);
        assert_eq!(infos[0].type_size(), -1);
        assert_eq!(infos[1].type_modifier(), -1);
        assert_eq!(infos[1].type_size(), 4);
        assert_eq!(infos[1].format(), FieldFormat::Binary);
        // Missing format entries default to text.
        let infos = field_infos(&schema, &[]);
        assert_eq!(infos[1].format(), FieldFormat::Text);
    }

    // ---- text encoding ----

    #[test]
    fn bool_and_integers_text() {
        assert_eq!(text(PgValue::Bool(true)), "t");
        assert_eq!(text(PgValue::Bool(false)), "f");
        assert_eq!(text(PgValue::Int2(-7)), "-7");
        assert_eq!(text(PgValue::Int4(123)), "123");
        assert_eq!(text(PgValue::Int8(i64::MIN)), "-9223372036854775808");
    }

    #[test]
    fn floats_text_like_postgres() {
        assert_eq!(text(PgValue::Float8(1.5)), "1.5");
        assert_eq!(text(PgValue::Float8(100.0)), "100");
        assert_eq!(text(PgValue::Float8(0.1)), "0.1");
        assert_eq!(text(PgValue::Float8(f64::NAN)), "NaN");
        assert_eq!(text(PgValue::Float8(f64::INFINITY)), "Infinity");
        assert_eq!(text(PgValue::Float8(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(text(PgValue::Float8(0.0)), "0");
        assert_eq!(text(PgValue::Float8(-0.0)), "-0");
        assert_eq!(text(PgValue::Float8(1e15)), "1e+15");
        assert_eq!(text(PgValue::Float8(123456789012345.0)), "123456789012345");
        assert_eq!(text(PgValue::Float8(0.0001)), "0.0001");
        assert_eq!(text(PgValue::Float8(0.00001)), "1e-05");
        assert_eq!(text(PgValue::Float8(1.5e-300)), "1.5e-300");
        assert_eq!(
            text(PgValue::Float8(std::f64::consts::PI)),
            "3.141592653589793"
        );
        assert_eq!(text(PgValue::Float4(1.5)), "1.5");
        assert_eq!(text(PgValue::Float4(0.1)), "0.1");
        assert_eq!(text(PgValue::Float4(123456.0)), "123456");
        assert_eq!(text(PgValue::Float4(1234567.0)), "1.234567e+06");
        assert_eq!(text(PgValue::Float4(f32::NAN)), "NaN");
        assert_eq!(text(PgValue::Float4(f32::NEG_INFINITY)), "-Infinity");
    }

    #[test]
    fn numeric_text_keeps_scale() {
        assert_eq!(text(PgValue::Numeric(1230, 2)), "12.30");
        assert_eq!(text(PgValue::Numeric(-5, 2)), "-0.05");
        assert_eq!(text(PgValue::Numeric(0, 2)), "0.00");
        assert_eq!(text(PgValue::Numeric(42, 0)), "42");
        assert_eq!(text(PgValue::Numeric(42, -2)), "4200");
        assert_eq!(text(PgValue::Numeric(0, -2)), "0");
        assert_eq!(
            text(PgValue::Numeric(i128::MAX, 38)),
            "1.70141183460469231731687303715884105727"
        );
    }

    #[test]
    fn intervals_read_as_postgres_style_shows_them() {
        let iv = |months, days, micros| {
            text(PgValue::Interval {
                months,
                days,
                micros,
            })
        };
        // Each of these is what PostgreSQL 15 prints for the same interval.
        assert_eq!(iv(0, 1, 7_200_000_000), "1 day 02:00:00");
        assert_eq!(iv(1, 15, 0), "1 mon 15 days");
        assert_eq!(iv(14, 0, 0), "1 year 2 mons");
        assert_eq!(iv(-14, 0, 0), "-1 years -2 mons");
        assert_eq!(iv(0, -15, 0), "-15 days");
        assert_eq!(iv(0, 0, 0), "00:00:00");
        assert_eq!(iv(0, 0, 1_800_000_000), "00:30:00");
        assert_eq!(iv(0, 1, -3_600_000_000), "1 day -01:00:00");
        assert_eq!(iv(0, -1, 3_600_000_000), "-1 days +01:00:00");
        assert_eq!(iv(1, 4, 37_028_546_743), "1 mon 4 days 10:17:08.546743");
        assert_eq!(iv(0, 0, 90_000_500_000), "25:00:00.5");
        let mut out = Vec::new();
        encode_binary(
            &PgValue::Interval {
                months: 2,
                days: -3,
                micros: 5,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            [
                5i64.to_be_bytes().as_slice(),
                &(-3i32).to_be_bytes(),
                &2i32.to_be_bytes()
            ]
            .concat()
        );
    }

    #[test]
    fn durations_and_times_go_out_as_postgresql_types() {
        use datafusion::arrow::array::{DurationNanosecondArray, Time64MicrosecondArray};
        // `timestamp - timestamp` is a duration here, an interval of days and a time of
        // day in PostgreSQL (15 prints these for the same differences).
        let durations = DurationNanosecondArray::from(vec![
            136_800_000_000_000,
            -208_800_500_000_000,
            5_400_000_000_000,
        ]);
        assert_eq!(pg_type_of(durations.data_type()), Type::INTERVAL);
        let texts: Vec<String> = (0..3)
            .map(|row| text(cell(&durations, row).expect("a duration")))
            .collect();
        assert_eq!(texts, ["1 day 14:00:00", "-2 days -10:00:00.5", "01:30:00"]);
        let times = Time64MicrosecondArray::from(vec![0, 45_015_250_000, 86_399_999_999]);
        assert_eq!(pg_type_of(times.data_type()), Type::TIME);
        let texts: Vec<String> = (0..3)
            .map(|row| text(cell(&times, row).expect("a time")))
            .collect();
        assert_eq!(texts, ["00:00:00", "12:30:15.25", "23:59:59.999999"]);
        let mut out = Vec::new();
        encode_binary(&cell(&times, 1).expect("a time"), &mut out).unwrap();
        assert_eq!(out, 45_015_250_000i64.to_be_bytes());
    }

    #[test]
    fn text_bytea_date_timestamp() {
        assert_eq!(text(PgValue::Text("héllo")), "héllo");
        assert_eq!(text(PgValue::Bytes(&[0x0a, 0x0b, 0xff])), "\\x0a0bff");
        assert_eq!(text(PgValue::Bytes(&[])), "\\x");
        assert_eq!(text(PgValue::Date(19_753)), "2024-01-31");
        assert_eq!(text(PgValue::Date(0)), "1970-01-01");
        assert_eq!(text(PgValue::Date(-719_528)), "0001-01-01 BC");
        let (s, n) = secs_nanos(ts("2024-01-31 12:00:00"));
        assert_eq!(text(PgValue::Timestamp(s, n)), "2024-01-31 12:00:00");
        assert_eq!(text(PgValue::TimestampTz(s, n)), "2024-01-31 12:00:00+00");
        let (s, n) = secs_nanos(ts("2024-01-31 12:00:00.5"));
        assert_eq!(text(PgValue::Timestamp(s, n)), "2024-01-31 12:00:00.5");
        let (s, n) = secs_nanos(ts("1960-06-01 01:02:03.123456"));
        assert_eq!(text(PgValue::Timestamp(s, n)), "1960-06-01 01:02:03.123456");
        assert_eq!(
            text(PgValue::TimestampTz(s, n)),
            "1960-06-01 01:02:03.123456+00"
        );
    }

    // ---- binary encoding, checked against postgres-types ----

    #[test]
    fn scalar_binary_matches_reference() {
        assert_eq!(
            binary(PgValue::Bool(true)),
            reference_binary(true, &Type::BOOL)
        );
        assert_eq!(
            binary(PgValue::Int2(-2)),
            reference_binary(-2i16, &Type::INT2)
        );
        assert_eq!(
            binary(PgValue::Int4(70_000)),
            reference_binary(70_000i32, &Type::INT4)
        );
        assert_eq!(
            binary(PgValue::Int8(-1)),
            reference_binary(-1i64, &Type::INT8)
        );
        assert_eq!(
            binary(PgValue::Float4(1.5)),
            reference_binary(1.5f32, &Type::FLOAT4)
        );
        assert_eq!(
            binary(PgValue::Float8(-2.25)),
            reference_binary(-2.25f64, &Type::FLOAT8)
        );
        assert_eq!(
            binary(PgValue::Text("abc")),
            reference_binary("abc".to_owned(), &Type::TEXT)
        );
        assert_eq!(
            binary(PgValue::Bytes(&[1, 2, 3])),
            reference_binary(vec![1u8, 2, 3], &Type::BYTEA)
        );
    }

    #[test]
    fn date_and_timestamp_binary_match_reference() {
        let date = NaiveDate::from_ymd_opt(2024, 1, 31).expect("date");
        assert_eq!(
            binary(PgValue::Date(19_753)),
            reference_binary(date, &Type::DATE)
        );
        let old = NaiveDate::from_ymd_opt(1901, 3, 4).expect("date");
        let old_days = old.signed_duration_since(NaiveDate::default()).num_days();
        assert_eq!(
            binary(PgValue::Date(old_days)),
            reference_binary(old, &Type::DATE)
        );
        for s in [
            "2024-01-31 12:00:00",
            "1969-12-31 23:59:59.999999",
            "2000-01-01 00:00:00.000001",
        ] {
            let dt = ts(s);
            let (secs, nanos) = secs_nanos(dt);
            assert_eq!(
                binary(PgValue::Timestamp(secs, nanos)),
                reference_binary(dt, &Type::TIMESTAMP),
                "{s}"
            );
            assert_eq!(
                binary(PgValue::TimestampTz(secs, nanos)),
                reference_binary(dt.and_utc(), &Type::TIMESTAMPTZ),
                "{s}"
            );
        }
    }

    #[test]
    fn numeric_binary_matches_reference() {
        for (unscaled, scale) in [
            (0i128, 0i8),
            (1230, 2),
            (-1230, 2),
            (5, 1),
            (1, 4),
            (1, 5),
            (123_456_789, 0),
            (-99_999_999_999, 3),
            (12_345_678_901_234_567_890_123_456, 10),
            (7, 9),
        ] {
            let reference = Decimal::from_i128_with_scale(unscaled, scale as u32);
            assert_eq!(
                binary(PgValue::Numeric(unscaled, scale)),
                reference_binary(reference, &Type::NUMERIC),
                "{unscaled} scale {scale}"
            );
        }
    }

    #[test]
    fn numeric_binary_zero_keeps_display_scale() {
        // PostgreSQL strips trailing zero groups: 100000000 is one digit with weight 2
        // (rust_decimal keeps them; both decode alike).
        assert_eq!(
            binary(PgValue::Numeric(100_000_000, 0)),
            vec![0, 1, 0, 2, 0, 0, 0, 0, 0, 1]
        );
        // PostgreSQL sends 0.00 as no digits with dscale 2 (rust_decimal drops the scale).
        assert_eq!(binary(PgValue::Numeric(0, 2)), vec![0, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn numeric_binary_round_trips_beyond_rust_decimal() {
        for (unscaled, scale) in [
            (i128::MAX / 10, 38i8),
            (-(10i128.pow(37)) + 1, 0),
            (42, -3),
            (-1, 20),
        ] {
            let encoded = binary(PgValue::Numeric(unscaled, scale));
            let target = DataType::Decimal128(38, scale.max(0));
            let expect_unscaled = if scale < 0 {
                unscaled * 10i128.pow(u32::from(scale.unsigned_abs()))
            } else {
                unscaled
            };
            assert_eq!(
                decode_param(Some(&encoded), true, Some(&Type::NUMERIC), &target, 0)
                    .expect("decodes"),
                ScalarValue::Decimal128(Some(expect_unscaled), 38, scale.max(0)),
                "{unscaled} scale {scale}"
            );
        }
    }

    // ---- batch encoding ----

    fn row_fields(row: &DataRow) -> Vec<Option<Vec<u8>>> {
        let mut data: &[u8] = &row.data;
        let mut fields = Vec::new();
        for _ in 0..row.field_count {
            let len = i32::from_be_bytes(data[..4].try_into().expect("len"));
            data = &data[4..];
            if len < 0 {
                fields.push(None);
            } else {
                let len = len as usize;
                fields.push(Some(data[..len].to_vec()));
                data = &data[len..];
            }
        }
        assert!(data.is_empty());
        fields
    }

    fn text_cells(array: ArrayRef) -> Vec<Option<String>> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "c",
            array.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![array]).expect("batch");
        encode_batches(&[batch], &[FieldFormat::Text])
            .expect("encodes")
            .iter()
            .map(|r| {
                row_fields(r)
                    .remove(0)
                    .map(|b| String::from_utf8(b).expect("utf8"))
            })
            .collect()
    }

    fn binary_cells(array: ArrayRef) -> Vec<Option<Vec<u8>>> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "c",
            array.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(schema, vec![array]).expect("batch");
        encode_batches(&[batch], &[FieldFormat::Binary])
            .expect("encodes")
            .iter()
            .map(|r| row_fields(r).remove(0))
            .collect()
    }

    /// A row value is sent as record_out writes it: fields in their text, NULL as
    /// nothing, and a field quoted (quotes and backslashes doubled) when it is empty or
    /// holds a separator, parenthesis, quote, backslash or blank.
    #[test]
    fn rows_encode_as_postgresql_record_text() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            Some("x"),
            Some("y z"),
            Some(""),
            Some(r#"q"b\c"#),
            None,
            Some("a(b),c"),
        ]));
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            Some(vec![Some(1), None]),
            Some(vec![]),
            None,
            Some(vec![Some(2)]),
            Some(vec![Some(3)]),
        ]));
        let ids: ArrayRef = Arc::new(Int32Array::from(vec![
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            None,
            Some(6),
        ]));
        let fields = Fields::from(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("t", DataType::Utf8, true),
            Field::new("l", list.data_type().clone(), true),
        ]);
        let rows = StructArray::new(
            fields,
            vec![ids, text, list],
            Some(NullBuffer::from(vec![true, true, true, true, true, false])),
        );
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            text_cells(Arc::new(rows.clone())),
            vec![
                s("(1,x,{1})"),
                s(r#"(2,"y z","{1,NULL}")"#),
                s(r#"(3,"",{})"#),
                s(r#"(4,"q""b\\c",)"#),
                s("(,,{2})"),
                None,
            ]
        );
        // In an array a row is an element like any other, quoted by array_out's rule.
        let offsets = OffsetBuffer::from_lengths([2]);
        let nested = ListArray::new(
            Arc::new(Field::new("item", rows.data_type().clone(), true)),
            offsets,
            Arc::new(rows.slice(0, 2)),
            None,
        );
        assert_eq!(
            text_cells(Arc::new(nested)),
            vec![s(r#"{"(1,x,{1})","(2,\"y z\",\"{1,NULL}\")"}"#)]
        );
    }

    #[test]
    fn arrays_encode_as_text_with_nulls() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            text_cells(Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false)
            ]))),
            vec![s("t"), None, s("f")]
        );
        assert_eq!(
            text_cells(Arc::new(Int16Array::from(vec![Some(1), None]))),
            vec![s("1"), None]
        );
        assert_eq!(
            text_cells(Arc::new(Int32Array::from(vec![Some(-5)]))),
            vec![s("-5")]
        );
        assert_eq!(
            text_cells(Arc::new(Int64Array::from(vec![Some(1 << 40)]))),
            vec![s("1099511627776")]
        );
        assert_eq!(
            text_cells(Arc::new(Float32Array::from(vec![Some(1.5)]))),
            vec![s("1.5")]
        );
        assert_eq!(
            text_cells(Arc::new(Float64Array::from(vec![
                Some(f64::NAN),
                Some(2.0)
            ]))),
            vec![s("NaN"), s("2")]
        );
        let decimals = Decimal128Array::from(vec![Some(1230), None, Some(-1)])
            .with_precision_and_scale(10, 2)
            .expect("decimal");
        assert_eq!(
            text_cells(Arc::new(decimals)),
            vec![s("12.30"), None, s("-0.01")]
        );
        assert_eq!(
            text_cells(Arc::new(StringArray::from(vec![Some("a"), None]))),
            vec![s("a"), None]
        );
        assert_eq!(
            text_cells(Arc::new(LargeStringArray::from(vec![Some("big")]))),
            vec![s("big")]
        );
        assert_eq!(
            text_cells(Arc::new(StringViewArray::from(vec![Some("view")]))),
            vec![s("view")]
        );
        assert_eq!(
            text_cells(Arc::new(BinaryArray::from(vec![
                Some(&[10u8, 11][..]),
                None
            ]))),
            vec![s("\\x0a0b"), None]
        );
        assert_eq!(
            text_cells(Arc::new(Date32Array::from(vec![Some(19_753)]))),
            vec![s("2024-01-31")]
        );
        let (secs, _) = secs_nanos(ts("2024-01-31 12:00:00"));
        assert_eq!(
            text_cells(Arc::new(TimestampMicrosecondArray::from(vec![
                Some(secs * 1_000_000),
                Some(secs * 1_000_000 + 250_000),
            ]))),
            vec![s("2024-01-31 12:00:00"), s("2024-01-31 12:00:00.25")]
        );
        assert_eq!(
            text_cells(Arc::new(TimestampSecondArray::from(vec![Some(secs)]))),
            vec![s("2024-01-31 12:00:00")]
        );
        assert_eq!(
            text_cells(Arc::new(
                TimestampNanosecondArray::from(vec![Some(secs * 1_000_000_000 + 1)])
                    .with_timezone("UTC")
            )),
            vec![s("2024-01-31 12:00:00.000000001+00")]
        );
        assert_eq!(text_cells(Arc::new(NullArray::new(2))), vec![None, None]);
    }

    #[test]
    fn unknown_arrow_types_fall_back_to_display_text() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        assert_eq!(
            text_cells(Arc::new(list.clone())),
            vec![Some("{1,2}".to_owned()), None]
        );
        // Described as int4[], and sent in the array's binary form when asked.
        assert_eq!(pg_type_of(list.data_type()), Type::INT4_ARRAY);
        let binary: Vec<u8> = [1i32, 0, 23, 2, 1, 4, 1, 4, 2]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        assert_eq!(binary_cells(Arc::new(list)), vec![Some(binary), None]);
        // Elements that need it are quoted and escaped; nested lists nest; NULLs stay.
        let mut strings = datafusion::arrow::array::ListBuilder::new(
            datafusion::arrow::array::StringBuilder::new(),
        );
        for v in [
            Some("a b"),
            None,
            Some(""),
            Some("null"),
            Some("q\"\\"),
            Some("plain"),
        ] {
            strings.values().append_option(v);
        }
        strings.append(true);
        assert_eq!(
            text_cells(Arc::new(strings.finish())),
            vec![Some(r#"{"a b",NULL,"","null","q\"\\",plain}"#.to_owned())]
        );
        let nested = ListArray::new(
            Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                DataType::List(Arc::new(
                    datafusion::arrow::datatypes::Field::new_list_field(DataType::Float64, true),
                )),
                true,
            )),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([2]),
            Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<
                datafusion::arrow::datatypes::Float64Type,
                _,
                _,
            >(vec![
                Some(vec![Some(1.0), Some(2.5)]),
                Some(vec![Some(3.0)]),
            ])),
            None,
        );
        assert_eq!(
            text_cells(Arc::new(nested)),
            vec![Some("{{1,2.5},{3}}".to_owned())]
        );
    }

    #[test]
    fn arrays_encode_as_binary() {
        assert_eq!(
            binary_cells(Arc::new(Int32Array::from(vec![Some(7), None]))),
            vec![Some(7i32.to_be_bytes().to_vec()), None]
        );
        assert_eq!(
            binary_cells(Arc::new(Float64Array::from(vec![Some(1.5)]))),
            vec![Some(1.5f64.to_be_bytes().to_vec())]
        );
        assert_eq!(
            binary_cells(Arc::new(Date32Array::from(vec![Some(
                PG_EPOCH_DAYS as i32
            )]))),
            vec![Some(0i32.to_be_bytes().to_vec())]
        );
        assert_eq!(
            binary_cells(Arc::new(TimestampMicrosecondArray::from(vec![Some(
                PG_EPOCH_MICROS + 1
            )]))),
            vec![Some(1i64.to_be_bytes().to_vec())]
        );
        let decimals = Decimal128Array::from(vec![Some(1230)])
            .with_precision_and_scale(10, 2)
            .expect("decimal");
        assert_eq!(
            binary_cells(Arc::new(decimals)),
            vec![Some(reference_binary(
                Decimal::new(1230, 2),
                &Type::NUMERIC
            ))]
        );
    }

    #[test]
    fn multi_column_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![None, Some("x")])),
            ],
        )
        .expect("batch");
        let rows = encode_batches(&[batch.clone(), batch], &[FieldFormat::Binary]).expect("rows");
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].field_count, 2);
        assert_eq!(
            row_fields(&rows[0]),
            vec![Some(1i32.to_be_bytes().to_vec()), None]
        );
        // Column 1 has no format entry: text.
        assert_eq!(row_fields(&rows[1]), vec![None, Some(b"x".to_vec())]);
    }

    // ---- text parameter decoding ----

    fn param(text: &str, target: &DataType) -> Result<ScalarValue, SqlError> {
        decode_param(Some(text.as_bytes()), false, None, target, 0)
    }

    #[test]
    fn text_params_integers() {
        assert_eq!(
            param("123", &DataType::Int32).ok(),
            Some(ScalarValue::Int32(Some(123)))
        );
        assert_eq!(
            param(" -7 ", &DataType::Int16).ok(),
            Some(ScalarValue::Int16(Some(-7)))
        );
        assert_eq!(
            param("+9", &DataType::Int64).ok(),
            Some(ScalarValue::Int64(Some(9)))
        );
        let err = param("abc", &DataType::Int32).expect_err("invalid");
        assert_eq!(err.code, "22P02");
        assert_eq!(
            err.message,
            "invalid input syntax for type integer: \"abc\""
        );
        let err = param("1.5", &DataType::Int64).expect_err("invalid");
        assert_eq!(err.message, "invalid input syntax for type bigint: \"1.5\"");
        let err = param("99999", &DataType::Int16).expect_err("range");
        assert_eq!(err.code, "22003");
        assert_eq!(
            err.message,
            "value \"99999\" is out of range for type smallint"
        );
        let err = param("", &DataType::Int32).expect_err("empty");
        assert_eq!(err.code, "22P02");
    }

    #[test]
    fn text_params_floats_and_bools() {
        assert_eq!(
            param("1.5", &DataType::Float64).ok(),
            Some(ScalarValue::Float64(Some(1.5)))
        );
        assert_eq!(
            param("1e3", &DataType::Float32).ok(),
            Some(ScalarValue::Float32(Some(1000.0)))
        );
        assert_eq!(
            param("-Infinity", &DataType::Float64).ok(),
            Some(ScalarValue::Float64(Some(f64::NEG_INFINITY)))
        );
        assert!(matches!(
            param("NaN", &DataType::Float64),
            Ok(ScalarValue::Float64(Some(v))) if v.is_nan()
        ));
        assert_eq!(
            param("1e400", &DataType::Float64).expect_err("range").code,
            "22003"
        );
        assert_eq!(
            param("x", &DataType::Float64).expect_err("bad").code,
            "22P02"
        );
        for (input, expected) in [
            ("t", true),
            ("true", true),
            ("TRUE", true),
            (" yes ", true),
            ("on", true),
            ("1", true),
            ("f", false),
            ("false", false),
            ("no", false),
            ("off", false),
            ("0", false),
        ] {
            assert_eq!(
                param(input, &DataType::Boolean).ok(),
                Some(ScalarValue::Boolean(Some(expected))),
                "{input}"
            );
        }
        let err = param("maybe", &DataType::Boolean).expect_err("bad");
        assert_eq!(
            err.message,
            "invalid input syntax for type boolean: \"maybe\""
        );
        assert!(param("o", &DataType::Boolean).is_err());
    }

    #[test]
    fn text_params_numeric() {
        let d = DataType::Decimal128(10, 2);
        let dec = |v: i128| Some(ScalarValue::Decimal128(Some(v), 10, 2));
        assert_eq!(param("12.3", &d).ok(), dec(1230));
        assert_eq!(param("12.345", &d).ok(), dec(1235));
        assert_eq!(param("-12.345", &d).ok(), dec(-1235));
        assert_eq!(param("12.344", &d).ok(), dec(1234));
        assert_eq!(param("5", &d).ok(), dec(500));
        assert_eq!(param(".5", &d).ok(), dec(50));
        assert_eq!(param("1.5e2", &d).ok(), dec(15000));
        assert_eq!(param("15E-3", &d).ok(), dec(2));
        assert_eq!(param("0.004", &d).ok(), dec(0));
        assert_eq!(param("00000000000000000000001", &d).ok(), dec(100));
        let err = param("123456789", &d).expect_err("overflow");
        assert_eq!(err.code, "22003");
        assert_eq!(err.message, "numeric field overflow");
        assert_eq!(param("abc", &d).expect_err("bad").code, "22P02");
        assert_eq!(param("1.2.3", &d).expect_err("bad").code, "22P02");
        assert_eq!(param("-", &d).expect_err("bad").code, "22P02");
        let wide = DataType::Decimal128(38, 0);
        assert_eq!(
            param("99999999999999999999999999999999999999", &wide).ok(),
            Some(ScalarValue::Decimal128(Some(10i128.pow(38) - 1), 38, 0))
        );
        assert_eq!(
            param("100000000000000000000000000000000000000", &wide)
                .expect_err("overflow")
                .code,
            "22003"
        );
        assert_eq!(
            param("0e99999999999999", &wide).ok(),
            Some(ScalarValue::Decimal128(Some(0), 38, 0))
        );
        assert_eq!(param("1e-99999999999999", &d).ok(), dec(0));
        assert_eq!(
            param("1e99999999999999", &wide).expect_err("overflow").code,
            "22003"
        );
    }

    #[test]
    fn uuids_travel_as_postgres_sends_them() {
        let uuid = flotilla_sql::pg_uuid::ARROW_TYPE;
        assert_eq!(pg_type_of(&uuid), Type::UUID);
        assert_eq!(pg_type_of(&DataType::FixedSizeBinary(8)), Type::BYTEA);
        assert_eq!(arrow_type_of(&Type::UUID), Some(uuid.clone()));
        assert_eq!(type_size(&Type::UUID), 16);
        let bytes: Vec<u8> = (0..16u8).map(|b| b * 17).collect();
        let canonical = "00112233-4455-6677-8899-aabbccddeeff";
        assert_eq!(text(PgValue::Uuid(&bytes)), canonical);
        assert_eq!(binary(PgValue::Uuid(&bytes)), bytes);
        let value = ScalarValue::FixedSizeBinary(16, Some(bytes.clone()));
        assert_eq!(param(canonical, &uuid).ok(), Some(value.clone()));
        assert_eq!(
            param("{00112233445566778899AABBCCDDEEFF}", &uuid).ok(),
            Some(value.clone())
        );
        let e = param("00112233", &uuid).expect_err("short");
        assert_eq!(e.code, "22P02");
        assert_eq!(
            e.message,
            "invalid input syntax for type uuid: \"00112233\""
        );
        let binary_param = |raw: &[u8]| decode_param(Some(raw), true, Some(&Type::UUID), &uuid, 0);
        assert_eq!(binary_param(&bytes).ok(), Some(value));
        assert_eq!(
            binary_param(&bytes[..15]).expect_err("15 bytes").code,
            "22P03"
        );
    }

    #[test]
    fn json_and_jsonb_travel_as_postgres_sends_them() {
        let (json, jsonb) = (Kind::Json.arrow_type(), Kind::Jsonb.arrow_type());
        assert_eq!(pg_type_of(&json), Type::JSON);
        assert_eq!(pg_type_of(&jsonb), Type::JSONB);
        assert_eq!(arrow_type_of(&Type::JSONB), Some(jsonb.clone()));
        assert_eq!(array_type_of(&jsonb), Some(Type::JSONB_ARRAY));
        let doc = r#"{"a": 1}"#;
        assert_eq!(text(PgValue::Jsonb(doc)), doc);
        // jsonb's binary form is version 1, then the text; json's is the text.
        assert_eq!(
            binary(PgValue::Jsonb(doc)),
            [&[1u8][..], doc.as_bytes()].concat()
        );
        assert_eq!(binary(PgValue::Json(doc)), doc.as_bytes());
        // Parameters: jsonb is read into its canonical form, json kept as sent.
        let canonical = ScalarValue::LargeBinary(Some(doc.as_bytes().to_vec()));
        assert_eq!(param(r#"{ "a":1 }"#, &jsonb).ok(), Some(canonical.clone()));
        assert_eq!(
            param(r#"{ "a":1 }"#, &json).ok(),
            Some(ScalarValue::BinaryView(Some(br#"{ "a":1 }"#.to_vec())))
        );
        assert_eq!(param("{", &jsonb).expect_err("not json").code, "22P02");
        let binary_param =
            |raw: &[u8]| decode_param(Some(raw), true, Some(&Type::JSONB), &jsonb, 0);
        assert_eq!(binary_param(b"\x01{\"a\":1}").ok(), Some(canonical));
        assert_eq!(binary_param(b"\x02{}").expect_err("version").code, "22P03");
        // A jsonb parameter for a text target is its text.
        assert_eq!(
            binary_param(b"\x01[1]").ok().map(|v| v.data_type()),
            Some(jsonb.clone())
        );
        assert_eq!(
            decode_param(
                Some(b"\x01[1]"),
                true,
                Some(&Type::JSONB),
                &DataType::Utf8,
                0
            )
            .ok(),
            Some(ScalarValue::Utf8(Some("[1]".into())))
        );
    }

    #[test]
    fn text_params_strings_and_bytea() {
        assert_eq!(
            param("héllo", &DataType::Utf8).ok(),
            Some(ScalarValue::Utf8(Some("héllo".into())))
        );
        assert_eq!(
            param("v", &DataType::Utf8View).ok(),
            Some(ScalarValue::Utf8View(Some("v".into())))
        );
        assert_eq!(
            param("\\x0a0B", &DataType::Binary).ok(),
            Some(ScalarValue::Binary(Some(vec![10, 11])))
        );
        assert_eq!(
            param("\\x", &DataType::Binary).ok(),
            Some(ScalarValue::Binary(Some(vec![])))
        );
        assert_eq!(
            param("a\\\\b\\001", &DataType::Binary).ok(),
            Some(ScalarValue::Binary(Some(vec![b'a', b'\\', b'b', 1])))
        );
        assert_eq!(
            param("\\x0", &DataType::Binary).expect_err("odd").code,
            "22P02"
        );
        assert_eq!(
            param("\\xzz", &DataType::Binary).expect_err("hex").code,
            "22P02"
        );
        assert_eq!(
            param("\\9", &DataType::Binary).expect_err("esc").code,
            "22P02"
        );
        let err =
            decode_param(Some(&[0xff, 0xfe]), false, None, &DataType::Utf8, 0).expect_err("utf8");
        assert_eq!(err.code, "22021");
    }

    #[test]
    fn text_params_dates_and_timestamps() {
        // A zone that moves the time past chrono's last date is out of range, not a panic.
        let tstz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let err = param("262142-12-31 23:00:00-10", &tstz).expect_err("past the last date");
        assert_eq!(err.code, "22008", "{}", err.message);
        assert_eq!(
            param("2024-01-31", &DataType::Date32).ok(),
            Some(ScalarValue::Date32(Some(19_753)))
        );
        assert_eq!(
            param("2024-01-31 10:00:00", &DataType::Date32).ok(),
            Some(ScalarValue::Date32(Some(19_753)))
        );
        let err = param("2024-02-30", &DataType::Date32).expect_err("bad");
        assert_eq!(err.code, "22007");
        assert_eq!(
            err.message,
            "invalid input syntax for type date: \"2024-02-30\""
        );

        let micros = |s: &str| {
            let (secs, nanos) = secs_nanos(ts(s));
            secs * 1_000_000 + i64::from(nanos / 1_000)
        };
        let plain = DataType::Timestamp(TimeUnit::Microsecond, None);
        let tstz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let at = |v: i64| Some(ScalarValue::TimestampMicrosecond(Some(v), None));
        let at_tz = |v: i64| {
            Some(ScalarValue::TimestampMicrosecond(
                Some(v),
                Some("UTC".into()),
            ))
        };
        assert_eq!(
            param("2024-01-31 12:00:00", &plain).ok(),
            at(micros("2024-01-31 12:00:00"))
        );
        assert_eq!(
            param("2024-01-31T12:00:00", &plain).ok(),
            at(micros("2024-01-31 12:00:00"))
        );
        assert_eq!(
            param("2024-01-31", &plain).ok(),
            at(micros("2024-01-31 00:00:00"))
        );
        assert_eq!(
            param("2024-01-31 12:00:00.123456", &plain).ok(),
            at(micros("2024-01-31 12:00:00.123456"))
        );
        // `timestamp` ignores a zone; `timestamptz` applies it.
        assert_eq!(
            param("2024-01-31 12:00:00+02", &plain).ok(),
            at(micros("2024-01-31 12:00:00"))
        );
        assert_eq!(
            param("2024-01-31 12:00:00+02", &tstz).ok(),
            at_tz(micros("2024-01-31 10:00:00"))
        );
        assert_eq!(
            param("2024-01-31 12:00:00.5-05:30", &tstz).ok(),
            at_tz(micros("2024-01-31 17:30:00.5"))
        );
        assert_eq!(
            param("2024-01-31 12:00:00+00", &tstz).ok(),
            at_tz(micros("2024-01-31 12:00:00"))
        );
        assert_eq!(
            param("2024-01-31 12:00:00Z", &tstz).ok(),
            at_tz(micros("2024-01-31 12:00:00"))
        );
        assert_eq!(
            param("2024-01-31 12:00:00", &tstz).ok(),
            at_tz(micros("2024-01-31 12:00:00"))
        );
        let secs = DataType::Timestamp(TimeUnit::Second, None);
        assert_eq!(
            param("2024-01-31 12:00:00", &secs).ok(),
            Some(ScalarValue::TimestampSecond(
                Some(micros("2024-01-31 12:00:00") / 1_000_000),
                None
            ))
        );
        assert_eq!(
            param("yesterday-ish", &plain).expect_err("bad").code,
            "22007"
        );
        assert_eq!(
            param("2024-01-31 25:00:00", &plain).expect_err("bad").code,
            "22007"
        );
        assert_eq!(
            param("2024-01-31 12:00:00 +99", &tstz)
                .expect_err("bad")
                .code,
            "22007"
        );
    }

    #[test]
    fn null_params_are_typed_nulls() {
        assert_eq!(
            decode_param(None, false, None, &DataType::Int32, 0).ok(),
            Some(ScalarValue::Int32(None))
        );
        assert_eq!(
            decode_param(None, true, None, &DataType::Decimal128(10, 2), 0).ok(),
            Some(ScalarValue::Decimal128(None, 10, 2))
        );
        assert_eq!(
            decode_param(None, false, None, &DataType::Utf8, 0).ok(),
            Some(ScalarValue::Utf8(None))
        );
    }

    #[test]
    fn other_targets_parse_through_datafusion() {
        assert_eq!(
            param("12:30:00", &DataType::Time64(TimeUnit::Microsecond)).ok(),
            Some(ScalarValue::Time64Microsecond(Some(45_000_000_000)))
        );
    }

    // ---- binary parameter decoding ----

    fn bin(
        raw: &[u8],
        declared: Option<&Type>,
        target: &DataType,
    ) -> Result<ScalarValue, SqlError> {
        decode_param(Some(raw), true, declared, target, 0)
    }

    #[test]
    fn binary_params_scalars() {
        assert_eq!(
            bin(&[1], None, &DataType::Boolean).ok(),
            Some(ScalarValue::Boolean(Some(true)))
        );
        assert_eq!(
            bin(&[0], None, &DataType::Boolean).ok(),
            Some(ScalarValue::Boolean(Some(false)))
        );
        assert_eq!(
            bin(&(-3i16).to_be_bytes(), None, &DataType::Int16).ok(),
            Some(ScalarValue::Int16(Some(-3)))
        );
        assert_eq!(
            bin(&5i32.to_be_bytes(), None, &DataType::Int32).ok(),
            Some(ScalarValue::Int32(Some(5)))
        );
        assert_eq!(
            bin(&(1i64 << 40).to_be_bytes(), None, &DataType::Int64).ok(),
            Some(ScalarValue::Int64(Some(1 << 40)))
        );
        assert_eq!(
            bin(&1.5f32.to_be_bytes(), None, &DataType::Float32).ok(),
            Some(ScalarValue::Float32(Some(1.5)))
        );
        assert_eq!(
            bin(&2.5f64.to_be_bytes(), None, &DataType::Float64).ok(),
            Some(ScalarValue::Float64(Some(2.5)))
        );
        assert_eq!(
            bin(b"abc", None, &DataType::Utf8).ok(),
            Some(ScalarValue::Utf8(Some("abc".into())))
        );
        assert_eq!(
            bin(&[0, 1, 255], None, &DataType::Binary).ok(),
            Some(ScalarValue::Binary(Some(vec![0, 1, 255])))
        );
        // Wrong length for the type: 22P03, no panic.
        let err = bin(&[0, 1], None, &DataType::Int32).expect_err("short");
        assert_eq!(err.code, "22P03");
        assert_eq!(
            err.message,
            "incorrect binary data format in bind parameter 1"
        );
    }

    /// Array parameters, as psycopg sends a Python list: the text form, or the binary
    /// form of the declared array type (its elements in their own binary form).
    #[test]
    fn array_params_in_text_and_binary() {
        let ints = DataType::new_list(DataType::Int32, true);
        let list = |values: &[ScalarValue], element: &DataType| {
            ScalarValue::List(ScalarValue::new_list_nullable(values, element))
        };
        assert_eq!(
            param("{1, NULL,3}", &ints).ok(),
            Some(list(
                &[
                    ScalarValue::Int32(Some(1)),
                    ScalarValue::Int32(None),
                    ScalarValue::Int32(Some(3))
                ],
                &DataType::Int32
            ))
        );
        assert_eq!(param("{1,x}", &ints).expect_err("x").code, "22P02");
        assert_eq!(param("1,2", &ints).expect_err("braces").code, "22P02");
        // One dimension, no NULLs, int2 elements (psycopg's choice for small ints),
        // read for an int4[] column: 2, then NULL, then 7.
        let mut raw = Vec::new();
        for v in [1i32, 1, 21, 3, 1] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        for element in [Some(2i16), None, Some(7)] {
            match element {
                Some(v) => {
                    raw.extend_from_slice(&2i32.to_be_bytes());
                    raw.extend_from_slice(&v.to_be_bytes());
                }
                None => raw.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        assert_eq!(
            bin(&raw, Some(&Type::INT2_ARRAY), &ints).ok(),
            Some(list(
                &[
                    ScalarValue::Int32(Some(2)),
                    ScalarValue::Int32(None),
                    ScalarValue::Int32(Some(7))
                ],
                &DataType::Int32
            ))
        );
        // An empty array has no dimensions.
        let empty: Vec<u8> = [0i32, 0, 25].iter().flat_map(|v| v.to_be_bytes()).collect();
        let texts = DataType::new_list(DataType::Utf8, true);
        assert_eq!(
            bin(&empty, Some(&Type::TEXT_ARRAY), &texts).ok(),
            Some(list(&[], &DataType::Utf8))
        );
        // Truncated, claiming more elements than it holds, two dimensions: refused.
        assert_eq!(
            bin(&raw[..raw.len() - 1], Some(&Type::INT2_ARRAY), &ints)
                .expect_err("truncated")
                .code,
            "22P03"
        );
        let mut lying = raw.clone();
        lying[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(
            bin(&lying, Some(&Type::INT2_ARRAY), &ints)
                .expect_err("count")
                .code,
            "22P03"
        );
        let mut two_d = raw.clone();
        two_d[..4].copy_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            bin(&two_d, Some(&Type::INT2_ARRAY), &ints)
                .expect_err("2-d")
                .code,
            "0A000"
        );
        // A declared array type plans as a list.
        assert_eq!(arrow_type_of(&Type::VARCHAR_ARRAY), Some(texts));
    }

    #[test]
    fn binary_params_use_declared_type_and_cast() {
        // The client declared int4 but the statement wants int8.
        assert_eq!(
            bin(&5i32.to_be_bytes(), Some(&Type::INT4), &DataType::Int64).ok(),
            Some(ScalarValue::Int64(Some(5)))
        );
        // A text-typed binary parameter for an integer target parses its text.
        assert_eq!(
            bin(b"42", Some(&Type::TEXT), &DataType::Int32).ok(),
            Some(ScalarValue::Int32(Some(42)))
        );
        assert_eq!(
            bin(b"x", Some(&Type::UNKNOWN), &DataType::Int32)
                .expect_err("bad")
                .code,
            "22P02"
        );
        assert_eq!(
            bin(&[0; 16], Some(&Type::UUID), &DataType::Utf8).ok(),
            Some(ScalarValue::Utf8(Some(
                "00000000-0000-0000-0000-000000000000".into()
            )))
        );
        assert_eq!(
            bin(&[0; 16], Some(&Type::POINT), &DataType::Utf8)
                .expect_err("unsupported")
                .code,
            "0A000"
        );
    }

    #[test]
    fn binary_params_dates_timestamps_numeric() {
        let date = NaiveDate::from_ymd_opt(2024, 1, 31).expect("date");
        assert_eq!(
            bin(
                &reference_binary(date, &Type::DATE),
                None,
                &DataType::Date32
            )
            .ok(),
            Some(ScalarValue::Date32(Some(19_753)))
        );
        let dt = ts("2024-01-31 12:00:00.25");
        let (secs, nanos) = secs_nanos(dt);
        let micros = secs * 1_000_000 + i64::from(nanos / 1_000);
        assert_eq!(
            bin(
                &reference_binary(dt, &Type::TIMESTAMP),
                None,
                &DataType::Timestamp(TimeUnit::Microsecond, None)
            )
            .ok(),
            Some(ScalarValue::TimestampMicrosecond(Some(micros), None))
        );
        assert_eq!(
            bin(
                &reference_binary(dt.and_utc(), &Type::TIMESTAMPTZ),
                None,
                &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
            )
            .ok(),
            Some(ScalarValue::TimestampNanosecond(
                Some(micros * 1_000),
                Some("UTC".into())
            ))
        );
        let d = DataType::Decimal128(10, 2);
        for (value, expected) in [
            (Decimal::new(1230, 2), 1230i128),
            (Decimal::new(-5, 3), -1),
            (Decimal::new(12345, 3), 1235),
            (Decimal::ZERO, 0),
            (Decimal::new(1, 0), 100),
            (Decimal::new(123_456_789, 4), 1_234_568),
        ] {
            assert_eq!(
                bin(&reference_binary(value, &Type::NUMERIC), None, &d).ok(),
                Some(ScalarValue::Decimal128(Some(expected), 10, 2)),
                "{value}"
            );
        }
        // Numeric sent for a float parameter converts.
        assert_eq!(
            bin(
                &reference_binary(Decimal::new(15, 1), &Type::NUMERIC),
                Some(&Type::NUMERIC),
                &DataType::Float64
            )
            .ok(),
            Some(ScalarValue::Float64(Some(1.5)))
        );
        // Malformed numeric.
        assert_eq!(bin(&[0, 1, 0], None, &d).expect_err("short").code, "22P03");
        let nan = [0u8, 0, 0, 0, 0xC0, 0, 0, 0];
        assert_eq!(bin(&nan, None, &d).expect_err("nan").code, "22P03");
    }

    #[test]
    fn numeric_binary_text_form() {
        let enc = |v: i128, s: i8| {
            let mut out = Vec::new();
            numeric_binary(v, s, &mut out);
            numeric_binary_to_text(&out).expect("valid")
        };
        assert_eq!(enc(1230, 2), "12.30");
        assert_eq!(enc(-1, 6), "-0.000001");
        assert_eq!(enc(0, 3), "0.000");
        assert_eq!(enc(100_000_000, 0), "100000000");
        assert_eq!(enc(42, -3), "42000");
    }
}
