//! How a table's rows and index entries are laid out in the key space.

use flotilla_catalog::{ColumnDef, Handle, IndexDef, TableDef};
use flotilla_codec::{
    Datum, decode_row, encode_key_tuple, encode_row, index_key, record_key, record_prefix,
};

use crate::error::SqlError;

/// The handle (record key suffix) of a row given in column order, for a table keyed by
/// its primary key. `None` for a table with hidden row ids.
pub(crate) fn primary_handle(table: &TableDef, row: &[Datum]) -> Option<Vec<u8>> {
    match &table.handle {
        Handle::RowId => None,
        Handle::PrimaryKey(columns) => {
            let datums: Vec<Datum> = columns
                .iter()
                .map(|id| row[table.column_position(*id).expect("pk column exists")].clone())
                .collect();
            Some(encode_key_tuple(&datums))
        }
    }
}

/// The handle of a hidden row id.
pub(crate) fn row_id_handle(row_id: i64) -> Vec<u8> {
    encode_key_tuple(&[Datum::Int(row_id)])
}

/// The record key of the row with `handle`.
pub(crate) fn row_key(table: &TableDef, handle: &[u8]) -> Vec<u8> {
    record_key(table.storage_id, handle)
}

/// The handle of a record key of `table`.
pub(crate) fn handle_of_key<'a>(table: &TableDef, key: &'a [u8]) -> Result<&'a [u8], SqlError> {
    let prefix_len = record_prefix(table.storage_id).len();
    if key.len() < prefix_len {
        return Err(SqlError::internal("record key shorter than its prefix"));
    }
    Ok(&key[prefix_len..])
}

/// The stored value of a row: every column keyed by its id, so adding a column rewrites
/// nothing and dropping one leaves bytes that are simply ignored. A NULL is left out,
/// except in a column with an origin default, where leaving it out would read back as
/// that default.
pub(crate) fn row_value(table: &TableDef, row: &[Datum]) -> Vec<u8> {
    let columns: Vec<(u32, Datum)> = table
        .columns
        .iter()
        .zip(row)
        .filter(|(c, d)| !d.is_null() || c.origin_default.is_some())
        .map(|(c, d)| (c.id, d.clone()))
        .collect();
    encode_row(&columns)
}

/// The value that rows stored before `column` was added read as.
pub(crate) fn origin_default(column: &ColumnDef) -> Result<Datum, SqlError> {
    let Some(bytes) = &column.origin_default else {
        return Ok(Datum::Null);
    };
    let mut stored = decode_row(bytes)
        .map_err(|e| SqlError::internal(format!("corrupt origin default: {e}")))?;
    match stored.pop() {
        Some((_, d)) if stored.is_empty() => Ok(d),
        _ => Err(SqlError::internal("origin default is not one value")),
    }
}

/// Decodes a stored row into column order; absent columns read as their origin default
/// (NULL unless the column was added with a default).
pub(crate) fn decode_row_value(table: &TableDef, bytes: &[u8]) -> Result<Vec<Datum>, SqlError> {
    let stored = decode_row(bytes).map_err(|e| SqlError::internal(format!("corrupt row: {e}")))?;
    let mut row = vec![Datum::Null; table.columns.len()];
    for (pos, c) in table.columns.iter().enumerate() {
        if c.origin_default.is_some() {
            row[pos] = origin_default(c)?;
        }
    }
    for (id, datum) in stored {
        if let Some(pos) = table.column_position(id) {
            row[pos] = datum;
        }
    }
    Ok(row)
}

/// The values of `index`'s columns in `row`.
pub(crate) fn index_values(table: &TableDef, index: &IndexDef, row: &[Datum]) -> Vec<Datum> {
    index
        .columns
        .iter()
        .map(|id| row[table.column_position(*id).expect("index column exists")].clone())
        .collect()
}

/// An index entry: key and value. A unique index without NULLs keys the entry by its
/// values alone (so a second row with the same values collides) and stores the handle as
/// the value; otherwise the handle is appended to the key and the value is empty.
pub(crate) fn index_entry(
    table: &TableDef,
    index: &IndexDef,
    row: &[Datum],
    handle: &[u8],
) -> (Vec<u8>, Vec<u8>, bool) {
    let values = index_values(table, index, row);
    let unique = index.unique && !values.iter().any(Datum::is_null);
    if unique {
        (
            index_key(table.storage_id, index.id, &values, None),
            handle.to_vec(),
            true,
        )
    } else {
        (
            index_key(table.storage_id, index.id, &values, Some(handle)),
            Vec::new(),
            false,
        )
    }
}

/// The handle an index entry points to.
pub(crate) fn handle_of_index_entry<'a>(
    index: &IndexDef,
    key: &'a [u8],
    value: &'a [u8],
) -> Result<&'a [u8], SqlError> {
    if !value.is_empty() {
        return Ok(value);
    }
    let (_, _, _, rest) = flotilla_codec::decode_index_key(key, index.columns.len())
        .map_err(|e| SqlError::internal(format!("corrupt index entry: {e}")))?;
    Ok(rest)
}
