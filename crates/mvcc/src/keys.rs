//! Physical keys of the three Percolator column families.
//!
//! A user key is stored memcomparable-encoded (self-delimiting, order-preserving), followed
//! in `default` and `write` by a descending timestamp so the newest version sorts first.

use flotilla_codec::{decode_bytes, decode_u64_desc, encode_bytes, encode_u64_desc};
use flotilla_types::Timestamp;

use crate::error::MvccError;

/// The encoded user key: the `lock` CF key, and the prefix of all versions of the key.
pub(crate) fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + key.len() / 8 + 9 + 8);
    encode_bytes(&mut out, key);
    out
}

/// The encoded bounds of the user-key range `[start, end)`; an empty end stays empty
/// (unbounded).
pub(crate) fn encode_range(start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ee = if end.is_empty() {
        Vec::new()
    } else {
        encode_user_key(end)
    };
    (encode_user_key(start), ee)
}

/// The key of one version: encoded user key then descending timestamp.
pub(crate) fn versioned_key(encoded_user_key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_user_key.len() + 8);
    out.extend_from_slice(encoded_user_key);
    encode_u64_desc(&mut out, ts.0);
    out
}

/// Splits a versioned key into (user key, timestamp).
pub(crate) fn decode_versioned_key(key: &[u8]) -> Result<(Vec<u8>, Timestamp), MvccError> {
    let mut input = key;
    let user = decode_bytes(&mut input).map_err(|e| MvccError::Corrupt(e.to_string()))?;
    let ts = decode_u64_desc(&mut input).map_err(|e| MvccError::Corrupt(e.to_string()))?;
    Ok((user, Timestamp(ts)))
}

/// Decodes an encoded user key (a `lock` CF key).
pub(crate) fn decode_user_key(key: &[u8]) -> Result<Vec<u8>, MvccError> {
    let mut input = key;
    decode_bytes(&mut input).map_err(|e| MvccError::Corrupt(e.to_string()))
}

/// The `lock` CF key of transaction `start_ts`'s shared lock on the key encoded as `ek`:
/// the key's own lock CF key followed by the timestamp, as a version's key is. An encoded
/// key is never a prefix of another, so every shared lock of a key sorts between that
/// key's own lock and the next key's (in the same region, whatever its bounds), and a
/// scan of a range of keys meets them as locks of their keys.
pub(crate) fn shared_lock_key(ek: &[u8], start_ts: Timestamp) -> Vec<u8> {
    versioned_key(ek, start_ts)
}

/// The `lock` CF keys `[start, end)` holding the shared locks of the key encoded as `ek`.
pub(crate) fn shared_lock_range(ek: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let start = shared_lock_key(ek, Timestamp::MAX);
    let mut end = shared_lock_key(ek, Timestamp(0));
    end.push(0);
    (start, end)
}
