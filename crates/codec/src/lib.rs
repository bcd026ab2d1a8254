//! Memcomparable keys and the TiDB-style table codec.
//!
//! Architecture invariant: pure functions over bytes; knows nothing of storage, transactions
//! or SQL.

#![warn(missing_docs)]

mod datum;
mod key;
mod memcomparable;
mod row;

pub use datum::Datum;
pub use key::{
    decode_index_key, decode_key_datum, decode_key_tuple, decode_record_key, encode_key_datum,
    encode_key_tuple, index_key, index_prefix, prefix_end, record_key, record_prefix, table_prefix,
};
pub use memcomparable::{
    decode_bytes, decode_f64, decode_i64, decode_i128, decode_u64, decode_u64_desc, encode_bytes,
    encode_f64, encode_i64, encode_i128, encode_u64, encode_u64_desc,
};
pub use row::{decode_row, encode_row};

/// Why a byte string could not be decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CodecError {
    /// The input ended before the named item was complete.
    #[error("truncated input: {0}")]
    Truncated(&'static str),
    /// A tag, flag or marker byte had a value the format does not define.
    #[error("bad tag {tag:#x} in {what}")]
    BadTag {
        /// The offending byte.
        tag: u8,
        /// What was being decoded when the byte was read.
        what: &'static str,
    },
    /// A string datum's bytes were not valid UTF-8.
    #[error("invalid utf-8 in string datum")]
    InvalidUtf8,
    /// A key did not have the expected layout.
    #[error("bad key: {0}")]
    BadKey(&'static str),
}

/// Result of a decoding operation.
pub type Result<T> = std::result::Result<T, CodecError>;
