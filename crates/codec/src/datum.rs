//! The storage form of a single SQL value.

/// One SQL value in storage form. Types are carried by the catalog, not by the datum, except
/// that each variant is distinct.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// BOOLEAN.
    Bool(bool),
    /// SMALLINT, INTEGER, BIGINT.
    Int(i64),
    /// REAL (widened) and DOUBLE PRECISION.
    Float(f64),
    /// NUMERIC: unscaled value at the column's fixed scale.
    Decimal(i128),
    /// BYTEA.
    Bytes(Vec<u8>),
    /// TEXT, VARCHAR, CHAR.
    String(String),
    /// DATE: days since 1970-01-01.
    Date(i32),
    /// TIMESTAMP and TIMESTAMPTZ: microseconds since 1970-01-01 00:00 UTC.
    Timestamp(i64),
}

impl Datum {
    /// Whether this datum is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }
}

/// Proptest strategies shared by the key and row tests.
#[cfg(test)]
pub(crate) mod strategies {
    use super::Datum;
    use proptest::prelude::*;

    /// Byte strings biased towards the values that stress the group encoding.
    pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![Just(0u8), Just(0xF7), Just(0xFF), Just(b'a'), any::<u8>()],
            0..30,
        )
    }

    /// Any f64 bit pattern except NaN (whose order is tested separately).
    pub fn non_nan_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            -10.0f64..10.0,
        ]
        .prop_filter("not NaN", |f| !f.is_nan())
    }

    /// Any datum, including NaN floats and arbitrary strings.
    pub fn any_datum() -> impl Strategy<Value = Datum> {
        prop_oneof![
            Just(Datum::Null),
            any::<bool>().prop_map(Datum::Bool),
            any::<i64>().prop_map(Datum::Int),
            any::<u64>().prop_map(|b| Datum::Float(f64::from_bits(b))),
            any::<i128>().prop_map(Datum::Decimal),
            bytes().prop_map(Datum::Bytes),
            any::<String>().prop_map(Datum::String),
            any::<i32>().prop_map(Datum::Date),
            any::<i64>().prop_map(Datum::Timestamp),
        ]
    }

    /// Equality that compares floats by bit pattern, so NaN and -0.0 round trips are exact.
    pub fn bit_eq(a: &Datum, b: &Datum) -> bool {
        match (a, b) {
            (Datum::Float(x), Datum::Float(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_null_is_null() {
        assert!(Datum::Null.is_null());
        assert!(!Datum::Int(0).is_null());
        assert!(!Datum::Bytes(Vec::new()).is_null());
        assert!(!Datum::String(String::new()).is_null());
    }
}
