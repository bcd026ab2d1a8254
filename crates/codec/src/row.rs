//! Row values: `(column_id, datum)` pairs, so ADD COLUMN rewrites nothing and DROP COLUMN
//! only makes old values unreachable.
//!
//! Format: version byte, varint column count, then per column a varint column id, a tag byte
//! and the payload (little-endian fixed widths; Bytes/String are a varint length + bytes;
//! Null has no payload).

use crate::memcomparable::{take, take_array};
use crate::{CodecError, Datum, Result};

/// Current row format version; bumped if the layout ever changes.
const ROW_VERSION: u8 = 1;

/// Row tag of NULL.
const TAG_NULL: u8 = 0;
/// Row tag of a Bool (1-byte payload, 0 or 1).
const TAG_BOOL: u8 = 1;
/// Row tag of an Int (8 bytes).
const TAG_INT: u8 = 2;
/// Row tag of a Float (8 bytes of IEEE bits).
const TAG_FLOAT: u8 = 3;
/// Row tag of a Decimal (16 bytes).
const TAG_DECIMAL: u8 = 4;
/// Row tag of Bytes (varint length + bytes).
const TAG_BYTES: u8 = 5;
/// Row tag of a String (varint length + UTF-8 bytes).
const TAG_STRING: u8 = 6;
/// Row tag of a Date (4 bytes).
const TAG_DATE: u8 = 7;
/// Row tag of a Timestamp (8 bytes).
const TAG_TIMESTAMP: u8 = 8;

/// Smallest encoded column (1-byte id + tag), used to bound preallocation on garbage input.
const MIN_COLUMN_LEN: usize = 2;

/// Appends `v` as an unsigned LEB128 varint.
fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint of at most 64 bits, advancing `input`.
fn read_varint(input: &mut &[u8], what: &'static str) -> Result<u64> {
    let mut v = 0u64;
    for (i, &b) in input.iter().take(10).enumerate() {
        // The tenth byte may only contribute bit 63; anything more overflows u64.
        if i == 9 && b > 1 {
            return Err(CodecError::BadTag { tag: b, what });
        }
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(v);
        }
    }
    Err(CodecError::Truncated(what))
}

/// Upper bound of a varint's encoded size.
const MAX_VARINT_LEN: usize = 10;

/// Upper bound of one column's encoded size, so the row is allocated once.
fn column_len_bound(d: &Datum) -> usize {
    MAX_VARINT_LEN
        + 1
        + match d {
            Datum::Null => 0,
            Datum::Bool(_) => 1,
            Datum::Date(_) => 4,
            Datum::Int(_) | Datum::Float(_) | Datum::Timestamp(_) => 8,
            Datum::Decimal(_) => 16,
            Datum::Bytes(b) => MAX_VARINT_LEN + b.len(),
            Datum::String(s) => MAX_VARINT_LEN + s.len(),
        }
}

/// Encodes a row value from `(column_id, datum)` pairs, in the given order.
pub fn encode_row(columns: &[(u32, Datum)]) -> Vec<u8> {
    let bound = 1
        + MAX_VARINT_LEN
        + columns
            .iter()
            .map(|(_, d)| column_len_bound(d))
            .sum::<usize>();
    let mut out = Vec::with_capacity(bound);
    out.push(ROW_VERSION);
    write_varint(&mut out, columns.len() as u64);
    for (id, d) in columns {
        write_varint(&mut out, u64::from(*id));
        match d {
            Datum::Null => out.push(TAG_NULL),
            Datum::Bool(b) => out.extend_from_slice(&[TAG_BOOL, u8::from(*b)]),
            Datum::Int(v) => {
                out.push(TAG_INT);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::Float(v) => {
                out.push(TAG_FLOAT);
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Datum::Decimal(v) => {
                out.push(TAG_DECIMAL);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::Bytes(b) => {
                out.push(TAG_BYTES);
                write_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            Datum::String(s) => {
                out.push(TAG_STRING);
                write_varint(&mut out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Datum::Date(v) => {
                out.push(TAG_DATE);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::Timestamp(v) => {
                out.push(TAG_TIMESTAMP);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// Decodes a row value into `(column_id, datum)` pairs; the whole input must be consumed.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<(u32, Datum)>> {
    let mut input = bytes;
    let [version] = take_array::<1>(&mut input, "row version")?;
    if version != ROW_VERSION {
        return Err(CodecError::BadTag {
            tag: version,
            what: "row version",
        });
    }
    let count = read_varint(&mut input, "row column count")?;
    // A garbage count must not trigger a huge allocation: no row holds more columns than
    // its remaining bytes allow.
    let cap = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(input.len() / MIN_COLUMN_LEN);
    let mut columns = Vec::with_capacity(cap);
    for _ in 0..count {
        let id_start = input;
        let id = read_varint(&mut input, "row column id")?;
        let id = u32::try_from(id).map_err(|_| CodecError::BadTag {
            tag: id_start[0],
            what: "row column id (exceeds u32)",
        })?;
        columns.push((id, decode_value(&mut input)?));
    }
    if let Some(&b) = input.first() {
        return Err(CodecError::BadTag {
            tag: b,
            what: "row (trailing bytes)",
        });
    }
    Ok(columns)
}

/// Decodes one tagged row value, advancing `input`.
fn decode_value(input: &mut &[u8]) -> Result<Datum> {
    let [tag] = take_array::<1>(input, "row value tag")?;
    Ok(match tag {
        TAG_NULL => Datum::Null,
        TAG_BOOL => match take_array::<1>(input, "bool")? {
            [0] => Datum::Bool(false),
            [1] => Datum::Bool(true),
            [b] => {
                return Err(CodecError::BadTag {
                    tag: b,
                    what: "bool",
                });
            }
        },
        TAG_INT => Datum::Int(i64::from_le_bytes(take_array(input, "int")?)),
        TAG_FLOAT => Datum::Float(f64::from_bits(u64::from_le_bytes(take_array(
            input, "float",
        )?))),
        TAG_DECIMAL => Datum::Decimal(i128::from_le_bytes(take_array(input, "decimal")?)),
        TAG_BYTES => Datum::Bytes(take_len_prefixed(input, "bytes")?.to_vec()),
        TAG_STRING => {
            let raw = take_len_prefixed(input, "string")?;
            let s = std::str::from_utf8(raw).map_err(|_| CodecError::InvalidUtf8)?;
            Datum::String(s.to_owned())
        }
        TAG_DATE => Datum::Date(i32::from_le_bytes(take_array(input, "date")?)),
        TAG_TIMESTAMP => Datum::Timestamp(i64::from_le_bytes(take_array(input, "timestamp")?)),
        tag => {
            return Err(CodecError::BadTag {
                tag,
                what: "row value tag",
            });
        }
    })
}

/// Reads a varint length and that many bytes.
fn take_len_prefixed<'a>(input: &mut &'a [u8], what: &'static str) -> Result<&'a [u8]> {
    let len = read_varint(input, what)?;
    // A length beyond usize is necessarily beyond the input, hence truncated.
    let len = usize::try_from(len).map_err(|_| CodecError::Truncated(what))?;
    take(input, len, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::strategies::{any_datum, bit_eq};
    use proptest::prelude::*;

    fn every_variant() -> Vec<(u32, Datum)> {
        vec![
            (1, Datum::Null),
            (2, Datum::Bool(true)),
            (3, Datum::Int(-7)),
            (4, Datum::Float(-0.0)),
            (5, Datum::Decimal(-12345)),
            (6, Datum::Bytes(vec![0, 0xFF])),
            (7, Datum::String("héllo".into())),
            (8, Datum::Date(-1)),
            (u32::MAX, Datum::Timestamp(i64::MIN)),
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let row = every_variant();
        assert_eq!(decode_row(&encode_row(&row)), Ok(row));
        assert_eq!(decode_row(&encode_row(&[])), Ok(vec![]));
    }

    #[test]
    fn null_stores_only_its_tag() {
        assert_eq!(
            encode_row(&[(3, Datum::Null)]),
            [ROW_VERSION, 1, 3, TAG_NULL]
        );
    }

    #[test]
    fn varint_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            let mut input = &out[..];
            assert_eq!(read_varint(&mut input, "t"), Ok(v));
            assert!(input.is_empty());
        }
        let overflow = [0xFF; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>();
        assert!(read_varint(&mut &overflow[..], "t").is_err());
        assert_eq!(
            read_varint(&mut &[0x80][..], "t"),
            Err(CodecError::Truncated("t"))
        );
    }

    #[test]
    fn malformed_rows_are_rejected() {
        assert_eq!(decode_row(&[]), Err(CodecError::Truncated("row version")));
        assert!(matches!(
            decode_row(&[2, 0]),
            Err(CodecError::BadTag { tag: 2, .. })
        ));
        assert!(decode_row(&[1, 1, 1, 99]).is_err());
        assert!(decode_row(&[1, 1, 1, TAG_BOOL, 2]).is_err());
        assert_eq!(
            decode_row(&[1, 1, 1, TAG_STRING, 1, 0xFF]),
            Err(CodecError::InvalidUtf8)
        );
        assert!(decode_row(&[1, 0, 0]).is_err());
        // Column id above u32::MAX.
        assert!(decode_row(&[1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, TAG_NULL]).is_err());
        // Huge count and huge length must fail fast rather than allocate.
        assert!(decode_row(&[1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).is_err());
        let mut huge_len = vec![1, 1, 1, TAG_BYTES];
        huge_len.extend_from_slice(&[0xFF; 9]);
        huge_len.push(0x01);
        assert!(decode_row(&huge_len).is_err());
    }

    proptest! {
        #[test]
        fn rows_round_trip(row in prop::collection::vec((any::<u32>(), any_datum()), 0..12)) {
            let encoded = encode_row(&row);
            let back = decode_row(&encoded)?;
            prop_assert_eq!(back.len(), row.len());
            for ((id_a, a), (id_b, b)) in row.iter().zip(&back) {
                prop_assert_eq!(id_a, id_b);
                prop_assert!(bit_eq(a, b), "{:?} != {:?}", a, b);
            }
        }

        #[test]
        fn truncated_or_extended_rows_fail(
            row in prop::collection::vec((any::<u32>(), any_datum()), 0..6),
            cut in any::<prop::sample::Index>(),
            extra in prop::collection::vec(any::<u8>(), 1..4),
        ) {
            let encoded = encode_row(&row);
            let cut = cut.index(encoded.len());
            prop_assert!(decode_row(&encoded[..cut]).is_err());
            let mut longer = encoded.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(decode_row(&longer).is_err());
        }

        #[test]
        fn decode_row_never_panics(input in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_row(&input);
            let mut versioned = vec![ROW_VERSION];
            versioned.extend_from_slice(&input);
            let _ = decode_row(&versioned);
        }
    }
}
