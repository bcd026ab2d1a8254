//! `to_char(number, template)` is `crate::to_char_number`'s.
//!
//! `to_char(timestamp | timestamptz | date, template)` with PostgreSQL's template patterns
//! (`YYYY-MM-DD HH24:MI:SS`, `FMMonth`, `Dy`, `"quoted text"`, ...), in place of
//! DataFusion's, which takes chrono's `%Y` patterns and would print a PostgreSQL
//! template back unchanged. Patterns PostgreSQL has and this does not (`SP`, `TM`
//! spelled-out forms) are refused, never printed as text.

use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::error::SqlError;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

/// The patterns, longest first where one begins another. Matched case-insensitively,
/// except that the case of a name pattern's letters is the case of its output.
const PATTERNS: [&str; 45] = [
    "HH24", "HH12", "HH", "MI", "SSSSS", "SSSS", "SS", "MS", "US", "FF1", "FF2", "FF3", "FF4",
    "FF5", "FF6", "A.M.", "P.M.", "AM", "PM", "Y,YYY", "YYYY", "YYY", "YY", "IYYY", "IYY", "IY",
    "B.C.", "A.D.", "BC", "AD", "MONTH", "MON", "MM", "DAY", "DY", "DDD", "DD", "IDDD", "ID", "IW",
    "WW", "CC", "RM", "TZH", "TZM",
];
/// Single-letter patterns, tried after every longer one.
const SHORT_PATTERNS: [&str; 8] = ["Y", "I", "D", "W", "J", "Q", "TZ", "OF"];

fn bad_template(message: String) -> SqlError {
    SqlError::new("0A000", message)
}

/// Upper, capitalised or lower, as the pattern's letters are written.
fn cased(name: &str, pattern: &str) -> String {
    let letters: Vec<char> = pattern.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.iter().all(|c| c.is_uppercase()) {
        name.to_uppercase()
    } else if letters.first().is_some_and(|c| c.is_uppercase()) {
        name.to_string()
    } else {
        name.to_lowercase()
    }
}

fn ordinal_suffix(n: i64, upper: bool) -> &'static str {
    let s = match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    };
    match (upper, s) {
        (false, s) => s,
        (true, "st") => "ST",
        (true, "nd") => "ND",
        (true, "rd") => "RD",
        (true, _) => "TH",
    }
}

/// Renders `at` by PostgreSQL's template `template`. `zone` is the time zone name of a
/// `timestamptz` (always UTC here), `None` for a `timestamp` or `date`.
pub(crate) fn render(
    at: NaiveDateTime,
    zone: Option<&str>,
    template: &str,
) -> Result<String, SqlError> {
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len() + 8);
    let mut i = 0;
    // ASCII only: the patterns are, and a full uppercase may be longer than the text it
    // came from ('ß' is "SS"), which would match a pattern past the template's end.
    let upper_at = |at: usize, len: usize| -> String {
        chars[at..(at + len).min(chars.len())]
            .iter()
            .map(char::to_ascii_uppercase)
            .collect::<String>()
    };
    while i < chars.len() {
        // Quoted text is printed as it is; a backslash escapes a quote inside it.
        if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                out.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        if chars[i] == '\\' && i + 1 < chars.len() {
            out.push(chars[i + 1]);
            i += 2;
            continue;
        }
        // Prefixes: FM (no padding), FX and TM (nothing to do in English, fixed format).
        let mut fill = false;
        loop {
            match upper_at(i, 2).as_str() {
                "FM" => fill = true,
                "FX" | "TM" => {}
                _ => break,
            }
            i += 2;
        }
        let found = PATTERNS
            .iter()
            .chain(SHORT_PATTERNS.iter())
            .find(|p| upper_at(i, p.len()) == **p);
        let Some(pattern) = found else {
            if i < chars.len() {
                out.push(chars[i]);
            }
            i += 1;
            continue;
        };
        let written: String = chars[i..i + pattern.len()].iter().collect();
        i += pattern.len();
        let pad = |n: i64, width: usize| {
            if fill {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        let padded_name = |name: String, width: usize| {
            if fill {
                name
            } else {
                format!("{name:<width$}")
            }
        };
        let year = i64::from(at.year());
        let iso = at.iso_week();
        let hour12 = match at.hour() % 12 {
            0 => 12,
            h => h,
        };
        let nanos = i64::from(at.nanosecond() % 1_000_000_000);
        let (number, text): (Option<i64>, String) = match *pattern {
            "HH24" => (Some(at.hour().into()), pad(at.hour().into(), 2)),
            "HH12" | "HH" => (Some(hour12.into()), pad(hour12.into(), 2)),
            "MI" => (Some(at.minute().into()), pad(at.minute().into(), 2)),
            "SS" => (Some(at.second().into()), pad(at.second().into(), 2)),
            "SSSS" | "SSSSS" => {
                let s = i64::from(at.num_seconds_from_midnight());
                (Some(s), s.to_string())
            }
            "MS" => (Some(nanos / 1_000_000), pad(nanos / 1_000_000, 3)),
            "US" => (Some(nanos / 1_000), pad(nanos / 1_000, 6)),
            p if p.starts_with("FF") => {
                let digits = usize::from(p.as_bytes()[2] - b'0');
                let all = format!("{nanos:09}");
                (None, all[..digits].to_string())
            }
            "AM" | "PM" => (
                None,
                cased(if at.hour() < 12 { "am" } else { "pm" }, &written),
            ),
            "A.M." | "P.M." => (
                None,
                cased(if at.hour() < 12 { "a.m." } else { "p.m." }, &written),
            ),
            "Y,YYY" => {
                let y = year.abs();
                (Some(y), format!("{},{:03}", y / 1000, y % 1000))
            }
            "YYYY" => (Some(year.abs()), pad(year.abs(), 4)),
            "YYY" => (Some(year.abs() % 1000), pad(year.abs() % 1000, 3)),
            "YY" => (Some(year.abs() % 100), pad(year.abs() % 100, 2)),
            "Y" => (Some(year.abs() % 10), (year.abs() % 10).to_string()),
            "IYYY" => (Some(iso.year().into()), pad(iso.year().into(), 4)),
            "IYY" => (None, pad(i64::from(iso.year()) % 1000, 3)),
            "IY" => (None, pad(i64::from(iso.year()) % 100, 2)),
            "I" => (None, (i64::from(iso.year()) % 10).to_string()),
            "BC" | "AD" => (None, cased(if year <= 0 { "bc" } else { "ad" }, &written)),
            "B.C." | "A.D." => (
                None,
                cased(if year <= 0 { "b.c." } else { "a.d." }, &written),
            ),
            "MONTH" => (
                None,
                padded_name(cased(MONTHS[at.month0() as usize], &written), 9),
            ),
            "MON" => (None, cased(&MONTHS[at.month0() as usize][..3], &written)),
            "MM" => (Some(at.month().into()), pad(at.month().into(), 2)),
            "DAY" => (
                None,
                padded_name(
                    cased(DAYS[at.weekday().num_days_from_sunday() as usize], &written),
                    9,
                ),
            ),
            "DY" => (
                None,
                cased(
                    &DAYS[at.weekday().num_days_from_sunday() as usize][..3],
                    &written,
                ),
            ),
            "DDD" => (Some(at.ordinal().into()), pad(at.ordinal().into(), 3)),
            "DD" => (Some(at.day().into()), pad(at.day().into(), 2)),
            "D" => {
                let d = i64::from(at.weekday().num_days_from_sunday()) + 1;
                (Some(d), d.to_string())
            }
            "IDDD" => {
                let d =
                    (i64::from(iso.week()) - 1) * 7 + i64::from(at.weekday().number_from_monday());
                (Some(d), pad(d, 3))
            }
            "ID" => {
                let d = i64::from(at.weekday().number_from_monday());
                (Some(d), d.to_string())
            }
            "IW" => (Some(iso.week().into()), pad(iso.week().into(), 2)),
            "WW" => {
                let w = (i64::from(at.ordinal()) - 1) / 7 + 1;
                (Some(w), pad(w, 2))
            }
            "W" => {
                let w = (i64::from(at.day()) - 1) / 7 + 1;
                (Some(w), w.to_string())
            }
            "CC" => {
                let c = if year > 0 {
                    (year + 99) / 100
                } else {
                    -((-year + 100) / 100)
                };
                (Some(c), pad(c, 2))
            }
            "J" => {
                let j = i64::from(at.date().num_days_from_ce()) + 1_721_425;
                (Some(j), j.to_string())
            }
            "Q" => {
                let q = i64::from(at.month0() / 3 + 1);
                (Some(q), q.to_string())
            }
            "RM" => (
                None,
                padded_name(cased(ROMAN[at.month0() as usize], &written), 4),
            ),
            "TZ" => (None, cased(zone.unwrap_or(""), &written)),
            "TZH" => (
                None,
                if zone.is_some() {
                    "+00".into()
                } else {
                    String::new()
                },
            ),
            "TZM" => (
                None,
                if zone.is_some() {
                    "00".into()
                } else {
                    String::new()
                },
            ),
            "OF" => (
                None,
                if zone.is_some() {
                    "+00".into()
                } else {
                    String::new()
                },
            ),
            other => return Err(bad_template(format!("to_char pattern {other}"))),
        };
        out.push_str(&text);
        // Suffixes: TH/th (ordinal) after a number; SP (spelled out) is not supported.
        match upper_at(i, 2).as_str() {
            "TH" if number.is_some() => {
                let upper = chars[i].is_uppercase();
                out.push_str(ordinal_suffix(number.expect("checked"), upper));
                i += 2;
            }
            "SP" => {
                return Err(bad_template(
                    "the SP (spell mode) suffix of to_char is not supported".into(),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The `to_char` function for dates and timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ToChar {
    signature: Signature,
}

impl ToChar {
    pub(crate) fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..))
}

/// `to_char` of each number by its template (`crate::to_char_number`).
fn numbers(values: &ArrayRef, templates: &ArrayRef) -> DfResult<ColumnarValue> {
    use crate::to_char_number::{Digits, fraction_places, render};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Decimal128Type, Float64Type, Int64Type};
    let templates = cast(templates, &DataType::Utf8)?;
    let templates = templates.as_string::<i32>();
    let (decimals, scale) = match values.data_type() {
        DataType::Decimal128(_, s) => (Some(values.as_primitive::<Decimal128Type>()), *s),
        _ => (None, 0),
    };
    let floats = values
        .data_type()
        .is_floating()
        .then(|| cast(values, &DataType::Float64))
        .transpose()?;
    let integers = values
        .data_type()
        .is_integer()
        .then(|| cast(values, &DataType::Int64))
        .transpose()?;
    let mut out = Vec::with_capacity(values.len());
    for r in 0..values.len() {
        if values.is_null(r) || templates.is_null(r) {
            out.push(None);
            continue;
        }
        let template = templates.value(r);
        let digits = if let Some(d) = decimals {
            Digits::of_decimal(d.value(r), scale)
        } else if let Some(f) = &floats {
            let v = f.as_primitive::<Float64Type>().value(r);
            if v.is_nan() {
                let fill = template.to_ascii_uppercase().contains("FM");
                out.push(Some(if fill { "NaN" } else { " NaN" }.to_string()));
                continue;
            }
            let places = fraction_places(template).map_err(external)?;
            match Digits::of_float(v, places) {
                Some(d) => d,
                // An infinity prints `#` in every place, as PostgreSQL's.
                None => Digits {
                    negative: false,
                    integer: "9".repeat(100),
                    fraction: String::new(),
                },
            }
        } else if let Some(i) = &integers {
            Digits::of_integer(i.as_primitive::<Int64Type>().value(r) as i128)
        } else {
            return Err(DataFusionError::Internal("to_char of a number".into()));
        };
        out.push(Some(render(digits, template).map_err(external)?));
    }
    Ok(ColumnarValue::Array(
        Arc::new(StringArray::from(out)) as ArrayRef
    ))
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match &args[0] {
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) | DataType::Null => {
                Ok(DataType::Utf8)
            }
            t if is_number(t) => Ok(DataType::Utf8),
            other => Err(external(SqlError::new(
                "0A000",
                format!(
                    "to_char of {} is not supported (only of numbers, dates and timestamps)",
                    crate::error::pg_type_name(other)
                ),
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let values = args.args[0].to_array(n)?;
        if is_number(values.data_type()) {
            return numbers(&values, &args.args[1].to_array(n)?);
        }
        let zone = match values.data_type() {
            DataType::Timestamp(_, Some(_)) => Some("UTC"),
            _ => None,
        };
        // Microseconds since the epoch, whatever the input's unit (dates at midnight).
        let micros = cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let micros = micros
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
            .ok_or_else(|| DataFusionError::Internal("to_char input".into()))?;
        let templates = cast(&args.args[1].to_array(n)?, &DataType::Utf8)?;
        let templates = templates
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("to_char template".into()))?;
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            if micros.is_null(r) || templates.is_null(r) {
                out.push(None);
                continue;
            }
            let at = chrono::DateTime::from_timestamp_micros(micros.value(r))
                .ok_or_else(|| external(SqlError::new("22008", "timestamp out of range")))?
                .naive_utc();
            out.push(Some(
                render(at, zone, templates.value(r)).map_err(external)?,
            ));
        }
        Ok(ColumnarValue::Array(
            Arc::new(StringArray::from(out)) as ArrayRef
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    /// A character whose uppercase is longer ('ß' is "SS") is printed as it is, as in
    /// PostgreSQL; it used to match the pattern SS past the template's end and panic.
    #[test]
    fn characters_whose_uppercase_is_longer_are_text() {
        let t = at("2024-03-05 07:08:09.123456");
        for (template, want) in [("ß", "ß"), ("ﬀ1", "ﬀ1"), ("Maße SS", "Maße 09")] {
            assert_eq!(render(t, None, template).unwrap(), want, "{template}");
        }
    }

    /// Each expectation is what PostgreSQL 15 prints for the same call.
    #[test]
    fn templates_render_as_postgres_renders_them() {
        let t = at("2024-03-05 07:08:09.123456");
        let cases = [
            ("YYYY-MM-DD HH24:MI:SS", "2024-03-05 07:08:09"),
            ("yyyy-mm-dd hh24:mi:ss.us", "2024-03-05 07:08:09.123456"),
            ("HH12:MI AM", "07:08 AM"),
            ("hh:mi p.m.", "07:08 a.m."),
            ("Month DD, YYYY", "March     05, 2024"),
            ("FMMonth FMDDth, YYYY", "March 5th, 2024"),
            (
                "DAY Day day DY Dy dy",
                "TUESDAY   Tuesday   tuesday   TUE Tue tue",
            ),
            ("MON Mon mon", "MAR Mar mar"),
            ("DDD D ID IW WW W Q CC", "065 3 2 10 10 1 1 21"),
            ("\"Quarter\" Q, \"week\" IW", "Quarter 1, week 10"),
            ("YYYY\"T\"HH24", "2024T07"),
            ("MS FF2 SSSS", "123 12 25689"),
            ("Y,YYY YYY YY Y", "2,024 024 24 4"),
            ("RM rm FMRM", "III  iii  III"),
            ("J", "2460375"),
            ("DDth ddTH", "05th 05TH"),
            ("100% YYYY", "100% 2024"),
        ];
        for (template, want) in cases {
            assert_eq!(render(t, None, template).unwrap(), want, "{template}");
        }
        assert_eq!(
            render(at("2024-01-01 00:00:00"), Some("UTC"), "HH12 AM TZ tz OF").unwrap(),
            "12 AM UTC utc +00"
        );
        assert_eq!(render(t, None, "TZ").unwrap(), "");
        assert_eq!(render(t, None, "DDSP").unwrap_err().code, "0A000");
        assert_eq!(
            render(at("2023-01-01 00:00:00"), None, "IYYY-IW-ID").unwrap(),
            "2022-52-7"
        );
    }
}
