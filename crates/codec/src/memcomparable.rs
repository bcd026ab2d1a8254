//! Memcomparable encodings: the byte order of an encoding equals the logical order of the
//! values, so storage can compare keys with `memcmp` and never decode them.

use crate::{CodecError, Result};

/// Real bytes per group in the bytes encoding.
const GROUP: usize = 8;
/// Encoded size of one group: the bytes plus the marker.
const GROUP_ENCODED: usize = GROUP + 1;
/// Marker of a group holding eight real bytes (more groups follow).
const FULL_MARKER: u8 = 0xFF;
/// Sign bit of an f64 / i64 seen as a u64.
const SIGN_64: u64 = 1 << 63;
/// The single NaN we store; positive, so after the sign flip it sorts above +inf.
const CANONICAL_NAN: u64 = 0x7FF8_0000_0000_0000;

/// Splits off the first `N` bytes of `input` as an array.
pub(crate) fn take_array<const N: usize>(input: &mut &[u8], what: &'static str) -> Result<[u8; N]> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or(CodecError::Truncated(what))?;
    let head = *head;
    *input = rest;
    Ok(head)
}

/// Splits off the first `n` bytes of `input`.
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8]> {
    let (head, rest) = input
        .split_at_checked(n)
        .ok_or(CodecError::Truncated(what))?;
    *input = rest;
    Ok(head)
}

/// Appends the TiDB/TiKV group encoding of `data`: 8-byte groups padded with zeros, each
/// followed by a marker `0xFF - pad_count`.
pub fn encode_bytes(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(encoded_bytes_len(data.len()));
    let mut chunks = data.chunks_exact(GROUP);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(FULL_MARKER);
    }
    // The final group always exists (even for empty or 8-aligned input) and carries a marker
    // below 0xFF, which is what makes the encoding self-delimiting and prefix-safe.
    let rem = chunks.remainder();
    let pad = GROUP - rem.len();
    out.extend_from_slice(rem);
    out.extend_from_slice(&[0u8; GROUP][..pad]);
    out.push(FULL_MARKER - pad as u8);
}

/// Encoded length of a byte string of `len` bytes.
pub(crate) fn encoded_bytes_len(len: usize) -> usize {
    (len / GROUP + 1) * GROUP_ENCODED
}

/// Decodes one group-encoded byte string, advancing `input` past exactly its encoding.
pub fn decode_bytes(input: &mut &[u8]) -> Result<Vec<u8>> {
    // First pass finds and validates the final group so the output is allocated once.
    let mut full_groups = 0;
    let (real, end) = loop {
        let start = full_groups * GROUP_ENCODED;
        let group = input
            .get(start..start + GROUP_ENCODED)
            .ok_or(CodecError::Truncated("bytes group"))?;
        let marker = group[GROUP];
        if marker == FULL_MARKER {
            full_groups += 1;
            continue;
        }
        let pad = usize::from(FULL_MARKER - marker);
        if pad > GROUP {
            return Err(CodecError::BadTag {
                tag: marker,
                what: "bytes group marker",
            });
        }
        let real = GROUP - pad;
        // Non-zero padding would give one value two encodings and break ordering.
        if group[real..GROUP].iter().any(|&b| b != 0) {
            return Err(CodecError::BadKey("non-zero padding in bytes group"));
        }
        break (real, start + GROUP_ENCODED);
    };
    let mut out = Vec::with_capacity(full_groups * GROUP + real);
    for group in input[..end].chunks_exact(GROUP_ENCODED) {
        out.extend_from_slice(&group[..GROUP]);
    }
    out.truncate(full_groups * GROUP + real);
    *input = &input[end..];
    Ok(out)
}

/// Appends `v` so that signed order equals byte order (sign bit flipped, big-endian).
pub fn encode_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ SIGN_64).to_be_bytes());
}

/// Decodes an [`encode_i64`] value, advancing `input`.
pub fn decode_i64(input: &mut &[u8]) -> Result<i64> {
    let b = take_array::<8>(input, "i64")?;
    Ok((u64::from_be_bytes(b) ^ SIGN_64) as i64)
}

/// Appends `v` big-endian.
pub fn encode_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Decodes an [`encode_u64`] value, advancing `input`.
pub fn decode_u64(input: &mut &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(take_array::<8>(input, "u64")?))
}

/// Appends `v` so that byte order is the reverse of numeric order (big-endian of `!v`).
pub fn encode_u64_desc(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&(!v).to_be_bytes());
}

/// Decodes an [`encode_u64_desc`] value, advancing `input`.
pub fn decode_u64_desc(input: &mut &[u8]) -> Result<u64> {
    Ok(!u64::from_be_bytes(take_array::<8>(input, "u64 desc")?))
}

/// Appends `v` so that numeric order equals byte order; -0.0 encodes as 0.0 and every NaN
/// encodes as one value above +inf (PostgreSQL orders NaN greatest).
pub fn encode_f64(out: &mut Vec<u8>, v: f64) {
    let bits = if v.is_nan() {
        CANONICAL_NAN
    } else if v == 0.0 {
        // Equal values must have equal keys, and -0.0 == 0.0.
        0
    } else {
        v.to_bits()
    };
    // Positive floats order like their bits, so setting the sign bit lifts them above all
    // negatives; negative floats order reversed, so flipping every bit fixes both.
    let u = if bits & SIGN_64 == 0 {
        bits | SIGN_64
    } else {
        !bits
    };
    out.extend_from_slice(&u.to_be_bytes());
}

/// Decodes an [`encode_f64`] value, advancing `input`.
pub fn decode_f64(input: &mut &[u8]) -> Result<f64> {
    let u = u64::from_be_bytes(take_array::<8>(input, "f64")?);
    let bits = if u & SIGN_64 != 0 { u ^ SIGN_64 } else { !u };
    Ok(f64::from_bits(bits))
}

/// Appends `v` so that signed order equals byte order (sign bit flipped, big-endian).
pub fn encode_i128(out: &mut Vec<u8>, v: i128) {
    out.extend_from_slice(&((v as u128) ^ (1 << 127)).to_be_bytes());
}

/// Decodes an [`encode_i128`] value, advancing `input`.
pub fn decode_i128(input: &mut &[u8]) -> Result<i128> {
    let b = take_array::<16>(input, "i128")?;
    Ok((u128::from_be_bytes(b) ^ (1 << 127)) as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::strategies::{bytes, non_nan_f64};
    use proptest::prelude::*;

    fn enc<T: Copy>(f: fn(&mut Vec<u8>, T), v: T) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out, v);
        out
    }

    fn enc_bytes(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bytes(&mut out, data);
        out
    }

    /// Decodes `bytes` fully, also checking that exactly the encoding was consumed.
    fn dec<T>(f: fn(&mut &[u8]) -> Result<T>, bytes: &[u8]) -> T {
        let mut with_tail = bytes.to_vec();
        with_tail.push(0xAB);
        let mut input = &with_tail[..];
        let v = f(&mut input).expect("decodes");
        assert_eq!(input, &[0xAB], "decoder must consume exactly its encoding");
        v
    }

    #[test]
    fn bytes_layout_matches_tidb() {
        assert_eq!(enc_bytes(b""), [0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(enc_bytes(b"abc"), [b'a', b'b', b'c', 0, 0, 0, 0, 0, 0xFA]);
        assert_eq!(
            enc_bytes(b"12345678"),
            [
                b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0xF7
            ]
        );
        assert_eq!(
            enc_bytes(b"123456789"),
            [
                b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 0xFF, b'9', 0, 0, 0, 0, 0, 0, 0,
                0xF8
            ]
        );
    }

    #[test]
    fn decode_bytes_rejects_malformed_input() {
        let truncated = &enc_bytes(b"123456789")[..12];
        assert_eq!(
            decode_bytes(&mut &truncated[..]),
            Err(CodecError::Truncated("bytes group"))
        );
        let bad_marker = [0, 0, 0, 0, 0, 0, 0, 0, 0xF0];
        assert_eq!(
            decode_bytes(&mut &bad_marker[..]),
            Err(CodecError::BadTag {
                tag: 0xF0,
                what: "bytes group marker"
            })
        );
        let bad_pad = [b'a', 0, 0, 1, 0, 0, 0, 0, 0xF8];
        assert!(matches!(
            decode_bytes(&mut &bad_pad[..]),
            Err(CodecError::BadKey(_))
        ));
        assert!(decode_bytes(&mut &[][..]).is_err());
    }

    #[test]
    fn fixed_width_decoders_report_truncation() {
        assert_eq!(
            decode_i64(&mut &[0u8; 7][..]),
            Err(CodecError::Truncated("i64"))
        );
        assert!(decode_u64(&mut &[0u8; 7][..]).is_err());
        assert!(decode_u64_desc(&mut &[0u8; 7][..]).is_err());
        assert!(decode_f64(&mut &[0u8; 7][..]).is_err());
        assert!(decode_i128(&mut &[0u8; 15][..]).is_err());
    }

    #[test]
    fn f64_special_values() {
        assert_eq!(enc(encode_f64, -0.0), enc(encode_f64, 0.0));
        assert!(enc(encode_f64, f64::NAN) > enc(encode_f64, f64::INFINITY));
        assert!(enc(encode_f64, -f64::NAN) > enc(encode_f64, f64::INFINITY));
        assert_eq!(enc(encode_f64, -f64::NAN), enc(encode_f64, f64::NAN));
        assert!(dec(decode_f64, &enc(encode_f64, f64::NAN)).is_nan());
        assert!(enc(encode_f64, f64::NEG_INFINITY) < enc(encode_f64, f64::MIN));
        assert!(enc(encode_f64, -f64::MIN_POSITIVE) < enc(encode_f64, 0.0));
        assert!(enc(encode_f64, 0.0) < enc(encode_f64, f64::from_bits(1)));
    }

    #[test]
    fn extremes_order() {
        assert!(enc(encode_i64, i64::MIN) < enc(encode_i64, -1));
        assert!(enc(encode_i64, -1) < enc(encode_i64, 0));
        assert!(enc(encode_i64, 0) < enc(encode_i64, i64::MAX));
        assert!(enc(encode_i128, i128::MIN) < enc(encode_i128, 0));
        assert!(enc(encode_i128, -1) < enc(encode_i128, i128::MAX));
    }

    proptest! {
        #[test]
        fn bytes_order_and_round_trip(a in bytes(), b in bytes()) {
            let (ea, eb) = (enc_bytes(&a), enc_bytes(&b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert_eq!(ea.len(), encoded_bytes_len(a.len()));
            prop_assert_eq!(dec(decode_bytes, &ea), a);
        }

        #[test]
        fn i64_order_and_round_trip(a in any::<i64>(), b in any::<i64>()) {
            let (ea, eb) = (enc(encode_i64, a), enc(encode_i64, b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert_eq!(dec(decode_i64, &ea), a);
        }

        #[test]
        fn u64_order_and_round_trip(a in any::<u64>(), b in any::<u64>()) {
            let (ea, eb) = (enc(encode_u64, a), enc(encode_u64, b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert_eq!(dec(decode_u64, &ea), a);
        }

        #[test]
        fn u64_desc_order_and_round_trip(a in any::<u64>(), b in any::<u64>()) {
            let (ea, eb) = (enc(encode_u64_desc, a), enc(encode_u64_desc, b));
            prop_assert_eq!(ea.cmp(&eb), b.cmp(&a));
            prop_assert_eq!(dec(decode_u64_desc, &ea), a);
        }

        #[test]
        fn f64_order_and_round_trip(a in non_nan_f64(), b in non_nan_f64()) {
            let (ea, eb) = (enc(encode_f64, a), enc(encode_f64, b));
            prop_assert_eq!(Some(ea.cmp(&eb)), a.partial_cmp(&b));
            prop_assert!(enc(encode_f64, f64::NAN) > ea);
            let back = dec(decode_f64, &ea);
            // -0.0 is normalised, so only the value (not the sign of zero) must survive.
            prop_assert_eq!(back, a);
            if a != 0.0 {
                prop_assert_eq!(back.to_bits(), a.to_bits());
            }
        }

        #[test]
        fn i128_order_and_round_trip(a in any::<i128>(), b in any::<i128>()) {
            let (ea, eb) = (enc(encode_i128, a), enc(encode_i128, b));
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
            prop_assert_eq!(dec(decode_i128, &ea), a);
        }

        #[test]
        fn decode_bytes_never_panics(input in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut rest = &input[..];
            if let Ok(v) = decode_bytes(&mut rest) {
                // Anything accepted must be the canonical encoding of what it decoded to.
                let consumed = &input[..input.len() - rest.len()];
                prop_assert_eq!(enc_bytes(&v), consumed);
            }
        }
    }
}
