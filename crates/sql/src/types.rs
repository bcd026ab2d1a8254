//! Conversions between catalog types, Arrow types, storage datums and Arrow arrays.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BinaryViewBuilder, BooleanArray,
    BooleanBuilder, Date32Array, Date32Builder, Decimal128Array, Decimal128Builder,
    FixedSizeBinaryArray, FixedSizeBinaryBuilder, Float32Array, Float32Builder, Float64Array,
    Float64Builder, Int16Array, Int16Builder, Int32Array, Int32Builder, Int64Array, Int64Builder,
    IntervalMonthDayNanoArray, IntervalMonthDayNanoBuilder, LargeBinaryBuilder, ListArray,
    ListBuilder, NullBufferBuilder, StringArray, StringBuilder, Time64MicrosecondArray,
    Time64MicrosecondBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::arrow::util::display::FormatOptions;
use datafusion::scalar::ScalarValue;
use flotilla_catalog::SqlType;
use flotilla_codec::Datum;

use crate::error::SqlError;
use crate::pg_json::Kind;

/// Time zone label of TIMESTAMPTZ columns: values are stored in UTC.
pub(crate) const UTC: &str = "+00:00";

/// Plans the SQL types DataFusion lacks: `uuid`, `json` and `jsonb`.
#[derive(Debug)]
pub(crate) struct PgTypes;

impl datafusion::logical_expr::planner::TypePlanner for PgTypes {
    fn plan_type_field(
        &self,
        sql_type: &datafusion::sql::sqlparser::ast::DataType,
    ) -> datafusion::common::Result<Option<datafusion::arrow::datatypes::FieldRef>> {
        use datafusion::sql::sqlparser::ast::{DataType as Sql, TimezoneInfo};
        let data_type = match sql_type {
            Sql::Uuid => crate::pg_uuid::ARROW_TYPE,
            Sql::JSON => Kind::Json.arrow_type(),
            Sql::JSONB => Kind::Jsonb.arrow_type(),
            // Microseconds, as PostgreSQL and a `time` column keep (DataFusion's is ns).
            Sql::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                DataType::Time64(TimeUnit::Microsecond)
            }
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(datafusion::arrow::datatypes::Field::new(
            "", data_type, true,
        ))))
    }
}

/// Whether `data_type` is one of Arrow's string types (PostgreSQL's text, or its untyped
/// literal).
pub(crate) fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// A cast's operand, the type it casts to and the operand's type; `None` if `expr` is no
/// cast or its operand's type cannot be resolved here (outer references).
pub(crate) fn cast_parts<'e>(
    expr: &'e datafusion::logical_expr::Expr,
    schema: &datafusion::common::DFSchema,
) -> Option<(&'e datafusion::logical_expr::Expr, &'e DataType, DataType)> {
    use datafusion::logical_expr::expr::{Cast, TryCast};
    use datafusion::logical_expr::{Expr, ExprSchemable};
    let (inner, to) = match expr {
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
            (expr.as_ref(), field.data_type())
        }
        _ => return None,
    };
    let from = inner.get_type(schema).ok()?;
    Some((inner, to, from))
}

/// The Arrow type a column of `ty` is read and written as.
pub(crate) fn arrow_type(ty: &SqlType) -> DataType {
    match ty {
        SqlType::Bool => DataType::Boolean,
        SqlType::Int16 => DataType::Int16,
        SqlType::Int32 => DataType::Int32,
        SqlType::Int64 => DataType::Int64,
        SqlType::Float32 => DataType::Float32,
        SqlType::Float64 => DataType::Float64,
        SqlType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
        SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => DataType::Utf8,
        SqlType::Bytea => DataType::Binary,
        SqlType::Date => DataType::Date32,
        SqlType::Time => DataType::Time64(TimeUnit::Microsecond),
        SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        SqlType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        SqlType::Uuid => crate::pg_uuid::ARROW_TYPE,
        SqlType::Json => Kind::Json.arrow_type(),
        SqlType::Jsonb => Kind::Jsonb.arrow_type(),
        SqlType::Array(element) => list_type(arrow_type(element)),
    }
}

/// The Arrow type of an array of `element`s (nullable, as PostgreSQL's elements are).
pub(crate) fn list_type(element: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(element, true)))
}

/// True if PostgreSQL would assign a value of Arrow type `from` to a column of `to`
/// (implicitly or by assignment cast). Anything else is a 42804 datatype mismatch.
pub(crate) fn assignable(from: &DataType, to: &SqlType) -> bool {
    use DataType as D;
    let numeric = |t: &D| {
        matches!(
            t,
            D::Int8
                | D::Int16
                | D::Int32
                | D::Int64
                | D::UInt8
                | D::UInt16
                | D::UInt32
                | D::UInt64
                | D::Float16
                | D::Float32
                | D::Float64
                | D::Decimal128(_, _)
                | D::Decimal256(_, _)
        )
    };
    if matches!(from, D::Null) || is_string(from) {
        // NULL and string literals (PostgreSQL's "unknown") are assignable to anything.
        return true;
    }
    match to {
        SqlType::Bool => matches!(from, D::Boolean),
        SqlType::Int16
        | SqlType::Int32
        | SqlType::Int64
        | SqlType::Float32
        | SqlType::Float64
        | SqlType::Numeric { .. } => numeric(from),
        SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => true,
        SqlType::Bytea => matches!(from, D::Binary | D::LargeBinary | D::BinaryView),
        SqlType::Date => matches!(from, D::Date32 | D::Date64 | D::Timestamp(_, _)),
        SqlType::Time => matches!(from, D::Time32(_) | D::Time64(_) | D::Timestamp(_, None)),
        SqlType::Interval => matches!(from, D::Interval(_) | D::Duration(_)),
        SqlType::Timestamp | SqlType::TimestampTz => {
            matches!(from, D::Date32 | D::Date64 | D::Timestamp(_, _))
        }
        SqlType::Uuid => crate::pg_uuid::is_uuid(from),
        // json to jsonb and back are assignment casts in PostgreSQL.
        SqlType::Json | SqlType::Jsonb => Kind::of(from).is_some(),
        SqlType::Array(element) => match from {
            D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => {
                assignable(f.data_type(), element)
            }
            _ => false,
        },
    }
}

/// Casts `array` to the column type, failing (not nulling) on values that do not fit.
pub(crate) fn cast_to_column(
    array: &ArrayRef,
    ty: &SqlType,
    column: &str,
) -> Result<ArrayRef, SqlError> {
    if !assignable(array.data_type(), ty) {
        return Err(SqlError::new(
            "42804",
            format!(
                "column \"{column}\" is of type {} but expression is of type {}",
                ty.pg_name(),
                crate::error::pg_type_name(array.data_type())
            ),
        )
        .with_hint("You will need to rewrite or cast the expression."));
    }
    let target = arrow_type(ty);
    if array.data_type() == &target {
        return Ok(array.clone());
    }
    if let SqlType::Array(element) = ty {
        return list_to_column(array, element, column);
    }
    if *ty == SqlType::Bytea
        && let Some(strings) = array.as_any().downcast_ref::<StringArray>()
    {
        return bytea_from_text(strings);
    }
    if crate::pg_uuid::is_uuid(array.data_type())
        && matches!(ty, SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_))
    {
        // A uuid assigned to a string column is its text (Arrow has no such cast).
        let uuids = array
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .expect("a uuid array");
        return Ok(Arc::new(
            uuids
                .iter()
                .map(|v| v.map(crate::pg_uuid::text))
                .collect::<StringArray>(),
        ));
    }
    if let Some(kind) = json_kind(ty) {
        // Arrow would copy the bytes; PostgreSQL reads the text (a jsonb's canonical form).
        return json_from_text(array, kind);
    }
    if Kind::of(array.data_type()).is_some()
        && matches!(ty, SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_))
    {
        // A json or jsonb assigned to a string column is its text.
        let texts = crate::pg_json::texts(array).map_err(crate::error::datafusion_error)?;
        return Ok(Arc::new(texts.into_iter().collect::<StringArray>()));
    }
    if let Some(read) = crate::pg_datetime::from_text(array, &target)? {
        // Arrow reads ISO 8601 with seconds only; PostgreSQL also `2024-01-01 02:00`.
        return Ok(read);
    }
    if *ty == SqlType::Uuid {
        // Arrow would copy a string's bytes; PostgreSQL reads its text form.
        let strings = cast_with_options(array, &DataType::Utf8, &CastOptions::default())
            .map_err(|e| cast_error(e, ty))?;
        return uuid_from_text(strings.as_any().downcast_ref().expect("cast to Utf8"));
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let source = if matches!(ty, SqlType::Int16 | SqlType::Int32 | SqlType::Int64) {
        // PostgreSQL rounds a numeric or float assigned to an integer column (a numeric
        // half away from zero, a float half to even); Arrow truncates.
        crate::pg_builtins::round_for_integer(array).map_err(crate::error::datafusion_error)?
    } else {
        array.clone()
    };
    cast_with_options(&source, &target, &options).map_err(|e| cast_error(e, ty))
}

/// Casts `array` (lists, or PostgreSQL's text form of arrays: `'{1,2}'`) to a column of
/// arrays of `element`s, each element as it would be assigned to a column of `element`.
fn list_to_column(array: &ArrayRef, element: &SqlType, column: &str) -> Result<ArrayRef, SqlError> {
    let list = if is_string(array.data_type()) {
        let mut b = ListBuilder::new(StringBuilder::new());
        for text in crate::pg_json::texts(array).map_err(crate::error::datafusion_error)? {
            match text {
                Some(text) => {
                    for e in crate::pg_array::array_text(text)? {
                        b.values().append_option(e);
                    }
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        b.finish()
    } else if matches!(array.data_type(), DataType::List(_)) {
        array.as_list::<i32>().clone()
    } else {
        // A large or fixed-size list (or NULL): as a list of its own elements.
        let element_type = match array.data_type() {
            DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.data_type().clone(),
            _ => DataType::Null,
        };
        let options = CastOptions::default();
        cast_with_options(array, &list_type(element_type), &options)
            .map_err(|e| cast_error(e, &SqlType::Array(Box::new(element.clone()))))?
            .as_list::<i32>()
            .clone()
    };
    let (_, offsets, values, nulls) = list.into_parts();
    let values = cast_to_column(&values, element, column)?;
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
    Ok(Arc::new(
        ListArray::try_new(field, offsets, values, nulls)
            .map_err(|e| SqlError::internal(e.to_string()))?,
    ))
}

/// An array's elements in storage form: a row value of `(position, datum)` pairs, so
/// each element, NULL included, keeps its place.
pub(crate) fn encode_elements(elements: &[Datum]) -> Datum {
    let pairs: Vec<(u32, Datum)> = elements
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u32, d.clone()))
        .collect();
    Datum::Bytes(flotilla_codec::encode_row(&pairs))
}

/// The elements of an array stored by `encode_elements`; `None` if `stored` is not one.
pub(crate) fn decode_elements(stored: &Datum) -> Option<Vec<Datum>> {
    let Datum::Bytes(bytes) = stored else {
        return None;
    };
    let pairs = flotilla_codec::decode_row(bytes).ok()?;
    Some(pairs.into_iter().map(|(_, d)| d).collect())
}

/// Decodes PostgreSQL's text forms of bytea: hex (`\\x0a0b`) or escape (`a\\000b`).
pub(crate) fn bytea_from_text(strings: &StringArray) -> Result<ArrayRef, SqlError> {
    let invalid = |s: &str| {
        SqlError::new(
            "22P02",
            format!("invalid input syntax for type bytea: \"{s}\""),
        )
    };
    let mut b = BinaryBuilder::with_capacity(strings.len(), strings.len() * 8);
    for v in strings.iter() {
        let Some(s) = v else {
            b.append_null();
            continue;
        };
        let mut out = Vec::with_capacity(s.len());
        if let Some(hex) = s.strip_prefix("\\x") {
            let digits: Vec<u8> = hex.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
            if !digits.len().is_multiple_of(2) {
                return Err(invalid(s));
            }
            for pair in digits.chunks(2) {
                let text = std::str::from_utf8(pair).map_err(|_| invalid(s))?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| invalid(s))?);
            }
        } else {
            let bytes = s.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] != b'\\' {
                    out.push(bytes[i]);
                    i += 1;
                } else if bytes.get(i + 1) == Some(&b'\\') {
                    out.push(b'\\');
                    i += 2;
                } else {
                    let oct = s.get(i + 1..i + 4).ok_or_else(|| invalid(s))?;
                    out.push(u8::from_str_radix(oct, 8).map_err(|_| invalid(s))?);
                    i += 4;
                }
            }
        }
        b.append_value(&out);
    }
    Ok(Arc::new(b.finish()))
}

/// The kind of a json column type.
fn json_kind(ty: &SqlType) -> Option<Kind> {
    match ty {
        SqlType::Json => Some(Kind::Json),
        SqlType::Jsonb => Some(Kind::Jsonb),
        _ => None,
    }
}

/// Reads texts (or the other kind's values) as values of a json column. (Values of the
/// column's own type never get here: `cast_to_column` returns them as they are.)
fn json_from_text(array: &ArrayRef, kind: Kind) -> Result<ArrayRef, SqlError> {
    let mut b = ColumnBuilder::new(
        match kind {
            Kind::Json => &SqlType::Json,
            Kind::Jsonb => &SqlType::Jsonb,
        },
        array.len(),
    );
    for text in crate::pg_json::texts(array).map_err(crate::error::datafusion_error)? {
        match text {
            None => b.push(&Datum::Null),
            Some(t) => b.push(&Datum::String(kind.input(t)?)),
        }
    }
    Ok(b.finish())
}

/// Reads PostgreSQL's text forms of uuid.
fn uuid_from_text(strings: &StringArray) -> Result<ArrayRef, SqlError> {
    let width = crate::pg_uuid::UUID_BYTES as i32;
    let mut b = FixedSizeBinaryBuilder::with_capacity(strings.len(), width);
    for v in strings.iter() {
        match v {
            None => b.append_null(),
            Some(s) => {
                let bytes = crate::pg_uuid::parse(s).ok_or_else(|| crate::pg_uuid::invalid(s))?;
                b.append_value(bytes)
                    .map_err(|e| SqlError::internal(e.to_string()))?;
            }
        }
    }
    Ok(Arc::new(b.finish()))
}

fn cast_error(e: datafusion::arrow::error::ArrowError, ty: &SqlType) -> SqlError {
    let text = e.to_string();
    // Arrow says "Can't cast value 32768 to type Int16" for an integer out of range.
    let integer_out_of_range = matches!(ty, SqlType::Int16 | SqlType::Int32 | SqlType::Int64)
        && text.contains("Can't cast value");
    if integer_out_of_range
        || text.contains("overflow")
        || text.contains("Overflow")
        || text.contains("too large")
    {
        SqlError::new(
            "22003",
            format!("value out of range for type {}", ty.pg_name()),
        )
    } else {
        crate::error::invalid_input(&text).unwrap_or_else(|| {
            SqlError::new(
                "22P02",
                format!("invalid input syntax for type {}: {text}", ty.pg_name()),
            )
        })
    }
}

/// The storage datum of row `row` of `array` (already of the column's Arrow type).
pub(crate) fn datum_at(array: &ArrayRef, row: usize, ty: &SqlType) -> Datum {
    if array.is_null(row) {
        return Datum::Null;
    }
    let any = array.as_any();
    match ty {
        SqlType::Bool => Datum::Bool(downcast::<BooleanArray>(any).value(row)),
        SqlType::Int16 => Datum::Int(downcast::<Int16Array>(any).value(row) as i64),
        SqlType::Int32 => Datum::Int(downcast::<Int32Array>(any).value(row) as i64),
        SqlType::Int64 => Datum::Int(downcast::<Int64Array>(any).value(row)),
        SqlType::Float32 => Datum::Float(downcast::<Float32Array>(any).value(row) as f64),
        SqlType::Float64 => Datum::Float(downcast::<Float64Array>(any).value(row)),
        SqlType::Numeric { .. } => Datum::Decimal(downcast::<Decimal128Array>(any).value(row)),
        SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => {
            Datum::String(downcast::<StringArray>(any).value(row).to_string())
        }
        SqlType::Bytea => Datum::Bytes(downcast::<BinaryArray>(any).value(row).to_vec()),
        SqlType::Date => Datum::Date(downcast::<Date32Array>(any).value(row)),
        SqlType::Time => Datum::Int(downcast::<Time64MicrosecondArray>(any).value(row)),
        SqlType::Interval => interval_datum(downcast::<IntervalMonthDayNanoArray>(any).value(row)),
        SqlType::Timestamp | SqlType::TimestampTz => {
            Datum::Timestamp(downcast::<TimestampMicrosecondArray>(any).value(row))
        }
        SqlType::Uuid => Datum::Bytes(downcast::<FixedSizeBinaryArray>(any).value(row).to_vec()),
        // Values reach here from the json functions and casts, which write UTF-8 text.
        SqlType::Json => {
            Datum::String(String::from_utf8_lossy(array.as_binary_view().value(row)).into_owned())
        }
        SqlType::Jsonb => {
            Datum::String(String::from_utf8_lossy(array.as_binary::<i64>().value(row)).into_owned())
        }
        SqlType::Array(element) => {
            let values = array.as_list::<i32>().value(row);
            let elements: Vec<Datum> = (0..values.len())
                .map(|i| datum_at(&values, i, element))
                .collect();
            encode_elements(&elements)
        }
    }
}

/// Bytes of a stored interval: months and days (4 bytes each) and nanoseconds (8),
/// big-endian.
const INTERVAL_DATUM_BYTES: usize = 16;

/// An interval as stored.
pub(crate) fn interval_datum(i: IntervalMonthDayNano) -> Datum {
    let mut bytes = Vec::with_capacity(INTERVAL_DATUM_BYTES);
    bytes.extend_from_slice(&i.months.to_be_bytes());
    bytes.extend_from_slice(&i.days.to_be_bytes());
    bytes.extend_from_slice(&i.nanoseconds.to_be_bytes());
    Datum::Bytes(bytes)
}

/// A stored interval, `None` if `bytes` are not one.
pub(crate) fn interval_of_datum(bytes: &[u8]) -> Option<IntervalMonthDayNano> {
    let bytes: &[u8; INTERVAL_DATUM_BYTES] = bytes.try_into().ok()?;
    let (months, rest) = bytes.split_first_chunk::<4>()?;
    let (days, nanos) = rest.split_first_chunk::<4>()?;
    Some(IntervalMonthDayNano::new(
        i32::from_be_bytes(*months),
        i32::from_be_bytes(*days),
        i64::from_be_bytes(nanos.try_into().ok()?),
    ))
}

fn downcast<T: 'static>(any: &dyn std::any::Any) -> &T {
    any.downcast_ref::<T>()
        .expect("array was cast to the column's Arrow type")
}

/// Checks a datum against its column's length limit and pads CHAR(n), as PostgreSQL does
/// on assignment.
pub(crate) fn fit_to_column(datum: Datum, ty: &SqlType) -> Result<Datum, SqlError> {
    match (ty, datum) {
        (SqlType::Varchar(Some(n)), Datum::String(s)) => {
            let trimmed = s.trim_end_matches(' ');
            if s.chars().count() > *n as usize && trimmed.chars().count() > *n as usize {
                return Err(SqlError::new(
                    "22001",
                    format!("value too long for type character varying({n})"),
                ));
            }
            if s.chars().count() > *n as usize {
                Ok(Datum::String(s.chars().take(*n as usize).collect()))
            } else {
                Ok(Datum::String(s))
            }
        }
        (SqlType::Char(n), Datum::String(s)) => {
            let len = s.chars().count();
            let n = *n as usize;
            if len > n {
                if s.chars().skip(n).all(|c| c == ' ') {
                    return Ok(Datum::String(s.chars().take(n).collect()));
                }
                return Err(SqlError::new(
                    "22001",
                    format!("value too long for type character({n})"),
                ));
            }
            let mut padded = s;
            padded.extend(std::iter::repeat_n(' ', n - len));
            Ok(Datum::String(padded))
        }
        (SqlType::Array(element), stored @ Datum::Bytes(_)) => {
            let elements = decode_elements(&stored)
                .ok_or_else(|| SqlError::internal("an array value is not in storage form"))?;
            let fitted = elements
                .into_iter()
                .map(|e| fit_to_column(e, element))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(encode_elements(&fitted))
        }
        // An integer from another integer column (a foreign key's new key): in range, as
        // a cast would have checked.
        (SqlType::Int16, Datum::Int(v)) if i16::try_from(v).is_err() => {
            Err(SqlError::new("22003", "smallint out of range"))
        }
        (SqlType::Int32, Datum::Int(v)) if i32::try_from(v).is_err() => {
            Err(SqlError::new("22003", "integer out of range"))
        }
        (_, d) => Ok(d),
    }
}

/// Builds an Arrow array of the column's type from datums.
pub(crate) struct ColumnBuilder {
    inner: Builder,
}

enum Builder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    String(StringBuilder),
    Binary(BinaryBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Json(BinaryViewBuilder),
    Jsonb(LargeBinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Interval(IntervalMonthDayNanoBuilder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    /// Arrays: their elements, where each array ends in them, and which are NULL.
    Array {
        values: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl ColumnBuilder {
    /// A builder for a column of `ty` with room for `capacity` values.
    pub(crate) fn new(ty: &SqlType, capacity: usize) -> Self {
        let inner = match ty {
            SqlType::Bool => Builder::Bool(BooleanBuilder::with_capacity(capacity)),
            SqlType::Int16 => Builder::Int16(Int16Builder::with_capacity(capacity)),
            SqlType::Int32 => Builder::Int32(Int32Builder::with_capacity(capacity)),
            SqlType::Int64 => Builder::Int64(Int64Builder::with_capacity(capacity)),
            SqlType::Float32 => Builder::Float32(Float32Builder::with_capacity(capacity)),
            SqlType::Float64 => Builder::Float64(Float64Builder::with_capacity(capacity)),
            SqlType::Numeric { precision, scale } => Builder::Decimal(
                Decimal128Builder::with_capacity(capacity),
                *precision,
                *scale,
            ),
            SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => {
                Builder::String(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            SqlType::Bytea => {
                Builder::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            SqlType::Uuid => Builder::Uuid(FixedSizeBinaryBuilder::with_capacity(
                capacity,
                crate::pg_uuid::UUID_BYTES as i32,
            )),
            SqlType::Json => Builder::Json(BinaryViewBuilder::with_capacity(capacity)),
            SqlType::Jsonb => {
                Builder::Jsonb(LargeBinaryBuilder::with_capacity(capacity, capacity * 32))
            }
            SqlType::Date => Builder::Date(Date32Builder::with_capacity(capacity)),
            SqlType::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            SqlType::Interval => {
                Builder::Interval(IntervalMonthDayNanoBuilder::with_capacity(capacity))
            }
            SqlType::Timestamp => {
                Builder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), None)
            }
            SqlType::TimestampTz => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                Some(UTC.into()),
            ),
            SqlType::Array(element) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Builder::Array {
                    values: Box::new(ColumnBuilder::new(element, capacity * 4)),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                }
            }
        };
        Self { inner }
    }

    /// Appends one datum (NULL for a datum of the wrong kind, which cannot happen for rows
    /// written through the catalog's types).
    pub(crate) fn push(&mut self, datum: &Datum) {
        match (&mut self.inner, datum) {
            (Builder::Bool(b), Datum::Bool(v)) => b.append_value(*v),
            (Builder::Int16(b), Datum::Int(v)) => b.append_value(*v as i16),
            (Builder::Int32(b), Datum::Int(v)) => b.append_value(*v as i32),
            (Builder::Int64(b), Datum::Int(v)) => b.append_value(*v),
            (Builder::Float32(b), Datum::Float(v)) => b.append_value(*v as f32),
            (Builder::Float64(b), Datum::Float(v)) => b.append_value(*v),
            (Builder::Decimal(b, _, _), Datum::Decimal(v)) => b.append_value(*v),
            (Builder::String(b), Datum::String(v)) => b.append_value(v),
            (Builder::Binary(b), Datum::Bytes(v)) => b.append_value(v),
            // A stored uuid always has 16 bytes.
            (Builder::Uuid(b), Datum::Bytes(v)) if v.len() == crate::pg_uuid::UUID_BYTES => {
                b.append_value(v).expect("16 bytes")
            }
            (Builder::Json(b), Datum::String(v)) => b.append_value(v),
            (Builder::Jsonb(b), Datum::String(v)) => b.append_value(v),
            (Builder::Date(b), Datum::Date(v)) => b.append_value(*v),
            (Builder::Time(b), Datum::Int(v)) => b.append_value(*v),
            (Builder::Interval(b), Datum::Bytes(v)) => match interval_of_datum(v) {
                Some(i) => b.append_value(i),
                None => b.append_null(),
            },
            (Builder::Timestamp(b, _), Datum::Timestamp(v)) => b.append_value(*v),
            (
                Builder::Array {
                    values,
                    offsets,
                    nulls,
                },
                stored,
            ) => {
                let elements = decode_elements(stored);
                for e in elements.iter().flatten() {
                    values.push(e);
                }
                let len = elements.as_ref().map_or(0, Vec::len);
                let end = offsets.last().copied().unwrap_or(0) + len as i32;
                offsets.push(end);
                nulls.append(elements.is_some());
            }
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::Int16(b), _) => b.append_null(),
            (Builder::Int32(b), _) => b.append_null(),
            (Builder::Int64(b), _) => b.append_null(),
            (Builder::Float32(b), _) => b.append_null(),
            (Builder::Float64(b), _) => b.append_null(),
            (Builder::Decimal(b, _, _), _) => b.append_null(),
            (Builder::String(b), _) => b.append_null(),
            (Builder::Binary(b), _) => b.append_null(),
            (Builder::Uuid(b), _) => b.append_null(),
            (Builder::Json(b), _) => b.append_null(),
            (Builder::Jsonb(b), _) => b.append_null(),
            (Builder::Date(b), _) => b.append_null(),
            (Builder::Time(b), _) => b.append_null(),
            (Builder::Interval(b), _) => b.append_null(),
            (Builder::Timestamp(b, _), _) => b.append_null(),
        }
    }

    /// The finished array.
    pub(crate) fn finish(self) -> ArrayRef {
        match self.inner {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int16(mut b) => Arc::new(b.finish()),
            Builder::Int32(mut b) => Arc::new(b.finish()),
            Builder::Int64(mut b) => Arc::new(b.finish()),
            Builder::Float32(mut b) => Arc::new(b.finish()),
            Builder::Float64(mut b) => Arc::new(b.finish()),
            Builder::Decimal(mut b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(p, s)
                    .expect("catalog precision and scale are valid"),
            ),
            Builder::String(mut b) => Arc::new(b.finish()),
            Builder::Binary(mut b) => Arc::new(b.finish()),
            Builder::Uuid(mut b) => Arc::new(b.finish()),
            Builder::Json(mut b) => Arc::new(b.finish()),
            Builder::Jsonb(mut b) => Arc::new(b.finish()),
            Builder::Date(mut b) => Arc::new(b.finish()),
            Builder::Time(mut b) => Arc::new(b.finish()),
            Builder::Interval(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b, tz) => Arc::new(b.finish().with_timezone_opt(tz)),
            Builder::Array {
                values,
                offsets,
                mut nulls,
            } => {
                let values = values.finish();
                let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
                Arc::new(ListArray::new(
                    field,
                    OffsetBuffer::new(offsets.into()),
                    values,
                    nulls.finish(),
                ))
            }
        }
    }
}

/// The datum of a scalar (a literal in a predicate) as a value of column type `ty`, when
/// the conversion is exact; `None` otherwise (the predicate is then not used for access
/// paths, only evaluated).
pub(crate) fn scalar_to_datum(value: &ScalarValue, ty: &SqlType) -> Option<Datum> {
    if value.is_null() || matches!(ty, SqlType::Array(_) | SqlType::Interval) {
        // Array and interval columns are never keys, so no access path reads one.
        return None;
    }
    if *ty == SqlType::Uuid {
        // A string literal stands for the uuid it reads as (Arrow's cast would take its
        // bytes).
        return match value {
            ScalarValue::FixedSizeBinary(16, Some(b)) => Some(Datum::Bytes(b.clone())),
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => {
                crate::pg_uuid::parse(s).map(|b| Datum::Bytes(b.to_vec()))
            }
            _ => None,
        };
    }
    if let Some(kind) = json_kind(ty) {
        // The text a value of the column holds: a jsonb's canonical form.
        return match value {
            ScalarValue::LargeBinary(Some(b)) | ScalarValue::BinaryView(Some(b))
                if Kind::of(&value.data_type()) == Some(kind) =>
            {
                String::from_utf8(b.clone()).ok().map(Datum::String)
            }
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => kind.input(s).ok().map(Datum::String),
            _ => None,
        };
    }
    let array = value.to_array().ok()?;
    let target = arrow_type(ty);
    if array.data_type() != &target {
        // Only lossless conversions: cast there and back must give the same value.
        let options = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let there = cast_with_options(&array, &target, &options).ok()?;
        let back = cast_with_options(&there, array.data_type(), &options).ok()?;
        if ScalarValue::try_from_array(&back, 0).ok()? != *value {
            return None;
        }
        return Some(datum_at(&there, 0, ty));
    }
    Some(datum_at(&array, 0, ty))
}
