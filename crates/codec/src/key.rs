//! Memcomparable key form of datums and the TiDB-style table key layout:
//! `t{table_id}_r{handle}` for records and `t{table_id}_i{index_id}{values}{handle}` for
//! index entries.

use crate::memcomparable::{
    decode_bytes, decode_f64, decode_i64, decode_i128, encode_bytes, encode_f64, encode_i64,
    encode_i128, encoded_bytes_len, take_array,
};
use crate::{CodecError, Datum, Result};

/// Flag of a NULL key datum; lowest, so NULL sorts before every value.
const FLAG_NULL: u8 = 0x00;
/// Flag of a Bytes or String key datum (group-encoded payload).
const FLAG_BYTES: u8 = 0x01;
/// Flag of an Int, Bool, Date or Timestamp key datum (sign-flipped i64 payload).
const FLAG_INT: u8 = 0x03;
/// Flag of a Float key datum.
const FLAG_FLOAT: u8 = 0x05;
/// Flag of a Decimal key datum (sign-flipped i128 payload).
const FLAG_DECIMAL: u8 = 0x06;

/// Leading byte of every table key.
const TABLE_PREFIX: u8 = b't';
/// Separator before a record handle.
const RECORD_SEP: &[u8; 2] = b"_r";
/// Separator before an index id.
const INDEX_SEP: &[u8; 2] = b"_i";
/// Length of `t{table_id}`.
const TABLE_PREFIX_LEN: usize = 1 + 8;
/// Length of `t{table_id}_i{index_id}`.
const INDEX_PREFIX_LEN: usize = TABLE_PREFIX_LEN + 2 + 8;

/// Exact encoded size of one key datum, so callers can allocate once.
fn key_datum_len(d: &Datum) -> usize {
    1 + match d {
        Datum::Null => 0,
        Datum::Bool(_) | Datum::Int(_) | Datum::Date(_) | Datum::Timestamp(_) => 8,
        Datum::Float(_) => 8,
        Datum::Decimal(_) => 16,
        Datum::Bytes(b) => encoded_bytes_len(b.len()),
        Datum::String(s) => encoded_bytes_len(s.len()),
    }
}

/// Appends the memcomparable key form of `d` (flag byte + payload).
pub fn encode_key_datum(out: &mut Vec<u8>, d: &Datum) {
    match d {
        Datum::Null => out.push(FLAG_NULL),
        Datum::Bool(b) => int_datum(out, i64::from(*b)),
        Datum::Int(v) | Datum::Timestamp(v) => int_datum(out, *v),
        Datum::Date(v) => int_datum(out, i64::from(*v)),
        Datum::Float(v) => {
            out.push(FLAG_FLOAT);
            encode_f64(out, *v);
        }
        Datum::Decimal(v) => {
            out.push(FLAG_DECIMAL);
            encode_i128(out, *v);
        }
        Datum::Bytes(b) => bytes_datum(out, b),
        Datum::String(s) => bytes_datum(out, s.as_bytes()),
    }
}

/// Appends an Int-flagged key datum.
fn int_datum(out: &mut Vec<u8>, v: i64) {
    out.push(FLAG_INT);
    encode_i64(out, v);
}

/// Appends a Bytes-flagged key datum.
fn bytes_datum(out: &mut Vec<u8>, b: &[u8]) {
    out.push(FLAG_BYTES);
    encode_bytes(out, b);
}

/// Decodes one key datum, advancing `input`. Returns the key kind (Null, Int, Float, Decimal
/// or Bytes); the caller maps it back to the column's SQL type.
pub fn decode_key_datum(input: &mut &[u8]) -> Result<Datum> {
    let [flag] = take_array::<1>(input, "key datum flag")?;
    match flag {
        FLAG_NULL => Ok(Datum::Null),
        FLAG_BYTES => decode_bytes(input).map(Datum::Bytes),
        FLAG_INT => decode_i64(input).map(Datum::Int),
        FLAG_FLOAT => decode_f64(input).map(Datum::Float),
        FLAG_DECIMAL => decode_i128(input).map(Datum::Decimal),
        tag => Err(CodecError::BadTag {
            tag,
            what: "key datum flag",
        }),
    }
}

/// Encodes `datums` as one memcomparable key whose byte order is the tuple order.
pub fn encode_key_tuple(datums: &[Datum]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datums.iter().map(key_datum_len).sum());
    for d in datums {
        encode_key_datum(&mut out, d);
    }
    out
}

/// Decodes key datums until `input` is exhausted.
pub fn decode_key_tuple(mut input: &[u8]) -> Result<Vec<Datum>> {
    let mut datums = Vec::new();
    while !input.is_empty() {
        datums.push(decode_key_datum(&mut input)?);
    }
    Ok(datums)
}

/// Writes `t{table_id}` into a buffer with room for `extra` more bytes.
fn table_prefix_with_capacity(table_id: i64, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(TABLE_PREFIX_LEN + extra);
    out.push(TABLE_PREFIX);
    encode_i64(&mut out, table_id);
    out
}

/// Prefix of every key of a table: `t` + i64(table_id).
pub fn table_prefix(table_id: i64) -> Vec<u8> {
    table_prefix_with_capacity(table_id, 0)
}

/// Prefix of every record key of a table: `t` + i64(table_id) + `_r`.
pub fn record_prefix(table_id: i64) -> Vec<u8> {
    let mut out = table_prefix_with_capacity(table_id, RECORD_SEP.len());
    out.extend_from_slice(RECORD_SEP);
    out
}

/// Key of a row: record prefix + handle (an encoded key tuple of the primary key).
pub fn record_key(table_id: i64, handle: &[u8]) -> Vec<u8> {
    let mut out = table_prefix_with_capacity(table_id, RECORD_SEP.len() + handle.len());
    out.extend_from_slice(RECORD_SEP);
    out.extend_from_slice(handle);
    out
}

/// Splits a record key into its table id and handle bytes.
pub fn decode_record_key(key: &[u8]) -> Result<(i64, &[u8])> {
    let (table_id, mut rest) = decode_table_prefix(key)?;
    let sep = take_array::<2>(&mut rest, "record key separator")
        .map_err(|_| CodecError::BadKey("too short for a record key"))?;
    if &sep != RECORD_SEP {
        return Err(CodecError::BadKey("not a record key"));
    }
    Ok((table_id, rest))
}

/// Prefix of every entry of an index: `t` + i64(table_id) + `_i` + i64(index_id).
pub fn index_prefix(table_id: i64, index_id: i64) -> Vec<u8> {
    let mut out = table_prefix_with_capacity(table_id, INDEX_PREFIX_LEN - TABLE_PREFIX_LEN);
    push_index_prefix_tail(&mut out, index_id);
    out
}

/// Appends `_i` + i64(index_id).
fn push_index_prefix_tail(out: &mut Vec<u8>, index_id: i64) {
    out.extend_from_slice(INDEX_SEP);
    encode_i64(out, index_id);
}

/// Key of an index entry: index prefix + each value's key form + the handle, if any (unique
/// indexes keep the handle in the value instead).
pub fn index_key(table_id: i64, index_id: i64, values: &[Datum], handle: Option<&[u8]>) -> Vec<u8> {
    let extra = INDEX_PREFIX_LEN - TABLE_PREFIX_LEN
        + values.iter().map(key_datum_len).sum::<usize>()
        + handle.map_or(0, <[u8]>::len);
    let mut out = table_prefix_with_capacity(table_id, extra);
    push_index_prefix_tail(&mut out, index_id);
    for v in values {
        encode_key_datum(&mut out, v);
    }
    if let Some(h) = handle {
        out.extend_from_slice(h);
    }
    out
}

/// Splits an index key into table id, index id, the first `value_count` values (as key
/// kinds) and the remaining bytes (the handle, or empty).
pub fn decode_index_key(key: &[u8], value_count: usize) -> Result<(i64, i64, Vec<Datum>, &[u8])> {
    let (table_id, mut rest) = decode_table_prefix(key)?;
    let sep = take_array::<2>(&mut rest, "index key separator")
        .map_err(|_| CodecError::BadKey("too short for an index key"))?;
    if &sep != INDEX_SEP {
        return Err(CodecError::BadKey("not an index key"));
    }
    let index_id =
        decode_i64(&mut rest).map_err(|_| CodecError::BadKey("too short for an index key"))?;
    // Cap the preallocation: value_count comes from the caller but the key may be garbage.
    let mut values = Vec::with_capacity(value_count.min(rest.len()));
    for _ in 0..value_count {
        values.push(decode_key_datum(&mut rest)?);
    }
    Ok((table_id, index_id, values, rest))
}

/// Reads `t{table_id}`, returning the id and the rest of the key.
fn decode_table_prefix(key: &[u8]) -> Result<(i64, &[u8])> {
    let mut rest = key;
    match take_array::<1>(&mut rest, "table prefix") {
        Ok([TABLE_PREFIX]) => {}
        Ok(_) => return Err(CodecError::BadKey("not a table key")),
        Err(_) => return Err(CodecError::BadKey("empty key")),
    }
    let table_id = decode_i64(&mut rest).map_err(|_| CodecError::BadKey("truncated table id"))?;
    Ok((table_id, rest))
}

/// Smallest key greater than every key starting with `prefix`; empty means unbounded (the
/// prefix was empty or all 0xFF, so no finite key is greater).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b != 0xFF) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::strategies::{any_datum, bit_eq, bytes, non_nan_f64};
    use proptest::prelude::*;
    use std::cmp::Ordering;

    /// What decoding returns for `d`: the key kind, since the SQL type is not stored.
    fn key_kind(d: &Datum) -> Datum {
        match d {
            Datum::Bool(b) => Datum::Int(i64::from(*b)),
            Datum::Date(v) => Datum::Int(i64::from(*v)),
            Datum::Timestamp(v) => Datum::Int(*v),
            Datum::String(s) => Datum::Bytes(s.as_bytes().to_vec()),
            // The key form keeps one NaN and one zero.
            Datum::Float(f) if f.is_nan() => Datum::Float(f64::from_bits(0x7FF8 << 48)),
            Datum::Float(f) if *f == 0.0 => Datum::Float(0.0),
            other => other.clone(),
        }
    }

    /// SQL order of two datums of the same column type, NULL first.
    fn cmp_datum(a: &Datum, b: &Datum) -> Ordering {
        match (a, b) {
            (Datum::Null, Datum::Null) => Ordering::Equal,
            (Datum::Null, _) => Ordering::Less,
            (_, Datum::Null) => Ordering::Greater,
            (Datum::Bool(x), Datum::Bool(y)) => x.cmp(y),
            (Datum::Int(x), Datum::Int(y)) | (Datum::Timestamp(x), Datum::Timestamp(y)) => x.cmp(y),
            (Datum::Float(x), Datum::Float(y)) => x.partial_cmp(y).expect("no NaN in tests"),
            (Datum::Decimal(x), Datum::Decimal(y)) => x.cmp(y),
            (Datum::Bytes(x), Datum::Bytes(y)) => x.cmp(y),
            (Datum::String(x), Datum::String(y)) => x.cmp(y),
            (Datum::Date(x), Datum::Date(y)) => x.cmp(y),
            _ => panic!("datums of different types: {a:?} vs {b:?}"),
        }
    }

    fn cmp_tuple(a: &[Datum], b: &[Datum]) -> Ordering {
        a.iter()
            .zip(b)
            .map(|(x, y)| cmp_datum(x, y))
            .find(|o| o.is_ne())
            .unwrap_or(a.len().cmp(&b.len()))
    }

    fn nullable(s: impl Strategy<Value = Datum> + 'static) -> BoxedStrategy<Datum> {
        prop_oneof![1 => Just(Datum::Null), 6 => s].boxed()
    }

    fn int() -> BoxedStrategy<Datum> {
        // Small range as well as full range, so ties (which exercise later columns) happen.
        nullable(prop_oneof![-3i64..3, any::<i64>()].prop_map(Datum::Int))
    }

    fn byt() -> BoxedStrategy<Datum> {
        nullable(bytes().prop_map(Datum::Bytes))
    }

    fn flt() -> BoxedStrategy<Datum> {
        nullable(non_nan_f64().prop_map(Datum::Float))
    }

    /// Shape (Int, Bytes).
    fn shape_a() -> impl Strategy<Value = Vec<Datum>> {
        (int(), byt()).prop_map(|(a, b)| vec![a, b])
    }

    /// Shape (Bytes, Int, Float).
    fn shape_b() -> impl Strategy<Value = Vec<Datum>> {
        (byt(), int(), flt()).prop_map(|(a, b, c)| vec![a, b, c])
    }

    /// Shape (String, Bool, Date, Timestamp, Decimal): the types that share key kinds.
    fn shape_c() -> impl Strategy<Value = Vec<Datum>> {
        (
            nullable("[ab]{0,10}".prop_map(Datum::String)),
            nullable(any::<bool>().prop_map(Datum::Bool)),
            nullable(prop_oneof![-2i32..2, any::<i32>()].prop_map(Datum::Date)),
            nullable(any::<i64>().prop_map(Datum::Timestamp)),
            nullable(prop_oneof![-2i128..2, any::<i128>()].prop_map(Datum::Decimal)),
        )
            .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e])
    }

    fn check_order_and_round_trip(
        a: &[Datum],
        b: &[Datum],
    ) -> std::result::Result<(), TestCaseError> {
        let (ea, eb) = (encode_key_tuple(a), encode_key_tuple(b));
        prop_assert_eq!(ea.cmp(&eb), cmp_tuple(a, b), "{:?} vs {:?}", a, b);
        for (t, e) in [(a, &ea), (b, &eb)] {
            prop_assert_eq!(e.len(), t.iter().map(key_datum_len).sum::<usize>());
            let kinds: Vec<Datum> = t.iter().map(key_kind).collect();
            prop_assert_eq!(decode_key_tuple(e)?, kinds);
        }
        Ok(())
    }

    #[test]
    fn shorter_string_sorts_first_despite_later_columns() {
        let a = encode_key_tuple(&[Datum::String("a".into()), Datum::Int(2)]);
        let b = encode_key_tuple(&[Datum::String("ab".into()), Datum::Int(1)]);
        assert!(a < b);
    }

    #[test]
    fn decode_key_datum_rejects_bad_input() {
        assert_eq!(
            decode_key_datum(&mut &[0x02][..]),
            Err(CodecError::BadTag {
                tag: 0x02,
                what: "key datum flag"
            })
        );
        assert!(decode_key_datum(&mut &[][..]).is_err());
        assert!(decode_key_tuple(&[FLAG_INT, 0, 0]).is_err());
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(&[1, 2, 0xFF]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), Vec::<u8>::new());
        assert_eq!(prefix_end(&[]), Vec::<u8>::new());
    }

    #[test]
    fn key_layout() {
        assert_eq!(table_prefix(1), [b't', 0x80, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(record_prefix(1)[TABLE_PREFIX_LEN..], *b"_r");
        assert_eq!(index_prefix(1, 2).len(), INDEX_PREFIX_LEN);
        assert!(index_prefix(5, i64::MAX) < record_prefix(5));
        assert!(prefix_end(&table_prefix(5)) <= table_prefix(6));
    }

    #[test]
    fn decode_record_key_rejects_other_keys() {
        let bad = |k: &[u8]| matches!(decode_record_key(k), Err(CodecError::BadKey(_)));
        assert!(bad(&index_key(5, 1, &[Datum::Int(1)], None)));
        assert!(bad(&table_prefix(5)));
        assert!(bad(b""));
        assert!(bad(b"x0000000_r"));
        assert!(bad(&record_prefix(5)[..5]));
        assert_eq!(decode_record_key(&record_prefix(5)), Ok((5, &[][..])));
    }

    #[test]
    fn decode_index_key_rejects_other_keys() {
        let bad = |k: &[u8]| decode_index_key(k, 1).is_err();
        assert!(bad(&record_key(5, &encode_key_tuple(&[Datum::Int(1)]))));
        assert!(bad(&index_prefix(5, 1)));
        assert!(bad(&index_prefix(5, 1)[..12]));
        assert!(bad(b""));
    }

    proptest! {
        #[test]
        fn tuple_order_int_bytes(a in shape_a(), b in shape_a()) {
            check_order_and_round_trip(&a, &b)?;
        }

        #[test]
        fn tuple_order_bytes_int_float(a in shape_b(), b in shape_b()) {
            check_order_and_round_trip(&a, &b)?;
        }

        #[test]
        fn tuple_order_shared_kinds(a in shape_c(), b in shape_c()) {
            check_order_and_round_trip(&a, &b)?;
        }

        #[test]
        fn null_sorts_first(d in any_datum(), rest in any_datum()) {
            prop_assume!(!d.is_null());
            prop_assert!(encode_key_tuple(&[Datum::Null]) < encode_key_tuple(std::slice::from_ref(&d)));
            let with_null = encode_key_tuple(&[Datum::Null, rest.clone()]);
            prop_assert!(with_null < encode_key_tuple(&[d, rest]));
        }

        #[test]
        fn any_datum_round_trips_as_key_kind(d in any_datum()) {
            let mut out = Vec::new();
            encode_key_datum(&mut out, &d);
            prop_assert_eq!(out.len(), key_datum_len(&d));
            let back = decode_key_datum(&mut &out[..])?;
            prop_assert!(bit_eq(&back, &key_kind(&d)), "{:?} -> {:?}", d, back);
        }

        #[test]
        fn record_key_round_trip(table in any::<i64>(), pk in prop::collection::vec(any_datum(), 0..4)) {
            let handle = encode_key_tuple(&pk);
            let key = record_key(table, &handle);
            prop_assert!(key.starts_with(&record_prefix(table)));
            prop_assert_eq!(decode_record_key(&key)?, (table, &handle[..]));
        }

        #[test]
        fn index_key_round_trip(
            table in any::<i64>(),
            index in any::<i64>(),
            values in prop::collection::vec(any_datum(), 0..4),
            row_id in proptest::option::of(any::<i64>()),
        ) {
            let handle = row_id.map(|id| encode_key_tuple(&[Datum::Int(id)]));
            let key = index_key(table, index, &values, handle.as_deref());
            prop_assert!(key.starts_with(&index_prefix(table, index)));
            let (t, i, vals, rest) = decode_index_key(&key, values.len())?;
            prop_assert_eq!((t, i), (table, index));
            let kinds: Vec<Datum> = values.iter().map(key_kind).collect();
            prop_assert_eq!(vals.len(), kinds.len());
            for (v, k) in vals.iter().zip(&kinds) {
                prop_assert!(bit_eq(v, k));
            }
            prop_assert_eq!(rest, handle.as_deref().unwrap_or(&[]));
        }

        #[test]
        fn table_keys_stay_in_their_ranges(
            pk in prop::collection::vec(any_datum(), 0..3),
            values in prop::collection::vec(any_datum(), 0..3),
        ) {
            let handle = encode_key_tuple(&pk);
            let rec5 = record_key(5, &handle);
            prop_assert!(record_prefix(5) <= rec5);
            prop_assert!(rec5 < prefix_end(&record_prefix(5)));
            let idx5 = index_key(5, i64::MAX, &values, Some(&handle));
            prop_assert!(idx5 < prefix_end(&index_prefix(5, i64::MAX)));
            prop_assert!(idx5 < record_prefix(5));
            for k in [&rec5, &idx5] {
                prop_assert!(*k < table_prefix(6));
                prop_assert!(*k < index_key(6, i64::MIN, &[], None));
                prop_assert!(*k < record_key(6, &[]));
            }
        }

        #[test]
        fn table_id_order(a in any::<i64>(), b in any::<i64>(), ha in bytes(), hb in bytes()) {
            prop_assert_eq!(table_prefix(a).cmp(&table_prefix(b)), a.cmp(&b));
            if a < b {
                // Holds for negative ids too: -1 sorts before 0 and 1.
                prop_assert!(record_key(a, &ha) < record_key(b, &hb));
                prop_assert!(record_key(a, &ha) < index_key(b, 0, &[], None));
            }
        }

        #[test]
        fn prefix_end_bounds_all_extensions(p in bytes(), suffix in bytes()) {
            let end = prefix_end(&p);
            let mut key = p.clone();
            key.extend_from_slice(&suffix);
            if end.is_empty() {
                prop_assert!(p.iter().all(|&b| b == 0xFF));
            } else {
                prop_assert!(key < end);
                prop_assert!(p < end);
            }
        }

        #[test]
        fn key_decoders_never_panic(input in prop::collection::vec(any::<u8>(), 0..64), n in 0usize..4) {
            let _ = decode_key_tuple(&input);
            let _ = decode_record_key(&input);
            let _ = decode_index_key(&input, n);
            let mut with_prefix = index_prefix(1, 2);
            with_prefix.extend_from_slice(&input);
            let _ = decode_index_key(&with_prefix, n);
        }
    }
}
