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
    encode_row(&stored_columns(table, row))
}

/// The `(column id, value)` pairs a row stores (see `row_value`).
fn stored_columns(table: &TableDef, row: &[Datum]) -> Vec<(u32, Datum)> {
    table
        .columns
        .iter()
        .zip(row)
        .filter(|(c, d)| !d.is_null() || c.origin_default.is_some())
        .map(|(c, d)| (c.id, d.clone()))
        .collect()
}

/// Like `row_value`, keeping the columns of the `stored` version that this definition of
/// the table does not know yet (ids at or past its `next_column_id`): a column added by a
/// newer schema, written by a node that already has it, survives an UPDATE from a node
/// that has not loaded it yet. Columns this definition dropped are not kept.
pub(crate) fn row_value_keeping(
    table: &TableDef,
    row: &[Datum],
    stored: Option<&[u8]>,
) -> Result<Vec<u8>, SqlError> {
    let Some(stored) = stored else {
        return Ok(row_value(table, row));
    };
    let newer: Vec<(u32, Datum)> = decode_row(stored)
        .map_err(|e| SqlError::internal(format!("corrupt row: {e}")))?
        .into_iter()
        .filter(|(id, _)| *id >= table.next_column_id)
        .collect();
    if newer.is_empty() {
        return Ok(row_value(table, row));
    }
    let mut columns = stored_columns(table, row);
    columns.extend(newer);
    Ok(encode_row(&columns))
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

/// A row's index entry: key, value, and whether the key is unique. A unique index
/// without NULLs keys the entry by its values alone (so a second row with the same values
/// collides) and stores the handle as the value; otherwise the handle is appended to the
/// key and the value is empty. `None` when the row has no entry: a partial index whose
/// predicate the row does not satisfy.
pub(crate) fn index_entry(
    table: &TableDef,
    index: &IndexDef,
    row: &[Datum],
    handle: &[u8],
) -> Option<(Vec<u8>, Vec<u8>, bool)> {
    if !crate::partial::covers(table, index, row) {
        return None;
    }
    let values = index_values(table, index, row);
    let unique = index.unique && !values.iter().any(Datum::is_null);
    Some(if unique {
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
    })
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

#[cfg(test)]
mod tests {
    use flotilla_catalog::{ColumnDef, Handle, SqlType, TableDef};
    use flotilla_codec::Datum;

    use super::{decode_row_value, row_value, row_value_keeping};

    fn table(columns: &[&str], next_column_id: u32) -> TableDef {
        TableDef {
            id: 1,
            storage_id: 1,
            name: "t".into(),
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, n)| ColumnDef {
                    id: i as u32,
                    name: n.to_string(),
                    ty: SqlType::Int64,
                    nullable: true,
                    not_null_pending: false,
                    default: None,
                    origin_default: None,
                    sequence: None,
                })
                .collect(),
            handle: Handle::RowId,
            indexes: vec![],
            next_column_id,
            next_index_id: 1,
            checks: Vec::new(),
            foreign_keys: Vec::new(),
        }
    }

    #[test]
    fn an_update_on_an_older_schema_keeps_the_columns_it_does_not_know() {
        let older = table(&["a", "b"], 2);
        let newer = table(&["a", "b", "c"], 3);
        let stored = row_value(&newer, &[Datum::Int(1), Datum::Int(2), Datum::Int(3)]);
        let updated =
            row_value_keeping(&older, &[Datum::Int(1), Datum::Int(20)], Some(&stored)).unwrap();
        assert_eq!(
            decode_row_value(&newer, &updated).unwrap(),
            [Datum::Int(1), Datum::Int(20), Datum::Int(3)]
        );
        // A column the older definition dropped (id below its next_column_id) is not kept.
        let dropped = table(&["a"], 3);
        let updated = row_value_keeping(&dropped, &[Datum::Int(5)], Some(&stored)).unwrap();
        assert_eq!(
            decode_row_value(&newer, &updated).unwrap(),
            [Datum::Int(5), Datum::Null, Datum::Null]
        );
    }
}
