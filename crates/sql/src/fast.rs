//! The fast path: statements that touch at most one row through a unique key (point
//! SELECT, UPDATE and single-row INSERT with literal values, the shape of OLTP traffic such
//! as pgbench's) are executed directly, without planning them through DataFusion. Anything
//! else, or anything this module is unsure of, falls back to the general path by
//! returning `None`; results are the same either way.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    AssignmentTarget, BinaryOperator, Expr, FunctionArguments, GroupByExpr, Insert, Query,
    SelectItem, SetExpr, Statement, TableFactor, TableObject, UnaryOperator, Update, Value,
};
use flotilla_catalog::{Handle, IndexState, SqlType, TableDef};
use flotilla_codec::{Datum, encode_key_tuple, index_key};
use flotilla_txn::LockStrength;
use flotilla_types::Timestamp;
use flotilla_types::version::Feature;

use crate::api::QueryResult;
use crate::dml::{
    RowChange, apply_updates, ident_name, insert_rows, is_default_keyword, relation_name,
};
use crate::error::SqlError;
use crate::rows::{decode_row_value, row_key};
use crate::session::{Isolation, Session};
use crate::types::{
    ColumnBuilder, arrow_type, cast_to_column, datum_at, fit_to_column, scalar_to_datum,
};

/// The scalar a literal expression denotes, or `None` if it is not a plain literal.
fn literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => number(n),
            Value::SingleQuotedString(s) => Some(ScalarValue::Utf8(Some(s.clone()))),
            Value::Boolean(b) => Some(ScalarValue::Boolean(Some(*b))),
            Value::Null => Some(ScalarValue::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            ScalarValue::Int64(Some(v)) => Some(ScalarValue::Int64(Some(v.checked_neg()?))),
            ScalarValue::Decimal128(Some(v), p, s) => Some(ScalarValue::Decimal128(Some(-v), p, s)),
            _ => None,
        },
        Expr::Cast {
            expr, data_type, ..
        } => {
            let inner = literal(expr)?;
            let ty = crate::ddl::sql_type(data_type).ok()?;
            if ty.element().is_some() {
                // An array's text form is read by the general path (Arrow's cast would
                // make the whole text one element).
                return None;
            }
            let target = arrow_type(&ty);
            if inner.is_null() {
                return ScalarValue::try_from(&target).ok();
            }
            // Bound integer parameters arrive as casts of their text; convert those without
            // building Arrow arrays, since this runs on every execution.
            if let ScalarValue::Utf8(Some(text)) = &inner {
                match target {
                    DataType::Int16 => {
                        return text.parse().ok().map(|v| ScalarValue::Int16(Some(v)));
                    }
                    DataType::Int32 => {
                        return text.parse().ok().map(|v| ScalarValue::Int32(Some(v)));
                    }
                    DataType::Int64 => {
                        return text.parse().ok().map(|v| ScalarValue::Int64(Some(v)));
                    }
                    // Arrow's cast would take the text's bytes.
                    ref t if crate::pg_uuid::is_uuid(t) => {
                        return crate::pg_uuid::parse(text)
                            .map(|b| ScalarValue::FixedSizeBinary(16, Some(b.to_vec())));
                    }
                    // Text that is not JSON takes the general path, which says why.
                    DataType::LargeBinary => {
                        return crate::pg_json::Kind::Jsonb
                            .input(text)
                            .ok()
                            .map(|t| ScalarValue::LargeBinary(Some(t.into_bytes())));
                    }
                    DataType::BinaryView => {
                        return crate::pg_json::Kind::Json
                            .input(text)
                            .ok()
                            .map(|t| ScalarValue::BinaryView(Some(t.into_bytes())));
                    }
                    _ => {}
                }
            }
            match (inner.cast_to(&target).ok()?, &ty) {
                // An explicit cast cuts to the type's length (see `cast_length`).
                (ScalarValue::Utf8(Some(text)), SqlType::Varchar(Some(n)) | SqlType::Char(n)) => {
                    Some(ScalarValue::Utf8(Some(crate::cast_length::cut(text, *n))))
                }
                (value, _) => Some(value),
            }
        }
        Expr::Nested(e) => literal(e),
        _ => None,
    }
}

fn number(text: &str) -> Option<ScalarValue> {
    if let Ok(v) = text.parse::<i64>() {
        return Some(ScalarValue::Int64(Some(v)));
    }
    // An exact decimal, as PostgreSQL types 1.5 as numeric.
    let (int, frac) = text.split_once('.')?;
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let scale = frac.len();
    let digits = format!("{int}{frac}");
    let value: i128 = digits.parse().ok()?;
    let precision = digits.trim_start_matches('0').len().max(scale).max(1);
    if precision > 38 {
        return None;
    }
    Some(ScalarValue::Decimal128(
        Some(value),
        precision as u8,
        scale as i8,
    ))
}

/// The column a (possibly qualified) identifier names, if it belongs to `table` under
/// `qualifier`.
fn column(expr: &Expr, table: &TableDef, qualifier: &str) -> Option<usize> {
    let name = match expr {
        Expr::Identifier(i) => ident_name(i),
        Expr::CompoundIdentifier(parts)
            if parts.len() == 2 && ident_name(&parts[0]) == qualifier =>
        {
            ident_name(&parts[1])
        }
        _ => return None,
    };
    table.columns.iter().position(|c| c.name == name)
}

/// `col = literal AND ...`: the literal for each column, or `None` if the predicate has
/// any other shape.
fn equalities(
    expr: &Expr,
    table: &TableDef,
    qualifier: &str,
    out: &mut Vec<(usize, ScalarValue)>,
) -> Option<()> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            equalities(left, table, qualifier, out)?;
            equalities(right, table, qualifier, out)
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => {
            let (col, lit) = match (
                column(left, table, qualifier),
                column(right, table, qualifier),
            ) {
                (Some(c), None) => (c, literal(right)?),
                (None, Some(c)) => (c, literal(left)?),
                _ => return None,
            };
            out.push((col, lit));
            Some(())
        }
        Expr::Nested(e) => equalities(e, table, qualifier, out),
        _ => None,
    }
}

/// How to find the single row a set of equalities names.
pub(crate) enum Lookup {
    /// The predicate can match no row (a comparison with NULL, or a value the column's
    /// type cannot hold).
    Nothing,
    /// The row's record key.
    Record(Vec<u8>),
    /// The key of a unique index entry whose value is the row's handle.
    Index(Vec<u8>),
}

/// The key datum of a literal for column `ty`, when the conversion is exact.
fn key_datum(value: &ScalarValue, ty: &SqlType) -> Option<Option<Datum>> {
    if value.is_null() {
        return Some(None);
    }
    let d = scalar_to_datum(value, ty)?;
    // Stored CHAR(n) values are blank-padded.
    Some(fit_to_column(d, ty).ok())
}

/// The unique key the equalities cover, and the remaining (column, datum) filters.
fn lookup(table: &TableDef, eqs: &[(usize, ScalarValue)]) -> Option<(Lookup, Vec<(usize, Datum)>)> {
    let mut datums: Vec<(usize, Datum)> = Vec::with_capacity(eqs.len());
    for (col, value) in eqs {
        match key_datum(value, &table.columns[*col].ty)? {
            Some(d) => datums.push((*col, d)),
            None => return Some((Lookup::Nothing, vec![])),
        }
    }
    let value_of = |id: u32| -> Option<Datum> {
        let pos = table.column_position(id)?;
        datums
            .iter()
            .find(|(c, _)| *c == pos)
            .map(|(_, d)| d.clone())
    };
    if let Handle::PrimaryKey(pk) = &table.handle {
        let key: Option<Vec<Datum>> = pk.iter().map(|id| value_of(*id)).collect();
        if let Some(key) = key {
            return Some((
                Lookup::Record(row_key(table, &encode_key_tuple(&key))),
                datums,
            ));
        }
    }
    for index in table.stored_indexes() {
        // A partial index holds only some rows: the general path checks its predicate.
        if !index.unique || index.state != IndexState::Public || index.predicate.is_some() {
            continue;
        }
        let key: Option<Vec<Datum>> = index.columns.iter().map(|id| value_of(*id)).collect();
        if let Some(key) = key {
            return Some((
                Lookup::Index(index_key(table.storage_id, index.id, &key, None)),
                datums,
            ));
        }
    }
    None
}

/// Fetches the row a lookup names at `read_ts`, applying the remaining filters.
pub(crate) async fn fetch(
    session: &Session,
    table: &TableDef,
    lookup: &Lookup,
    filters: &[(usize, Datum)],
    read_ts: Timestamp,
) -> Result<Option<(Vec<Datum>, Vec<u8>, Vec<u8>)>, SqlError> {
    let view = session.view(read_ts);
    let (key, handle) = match lookup {
        Lookup::Nothing => return Ok(None),
        Lookup::Record(key) => (
            key.clone(),
            crate::rows::handle_of_key(table, key)?.to_vec(),
        ),
        Lookup::Index(ikey) => match view.get(ikey).await? {
            Some(handle) => (row_key(table, &handle), handle),
            None => return Ok(None),
        },
    };
    let Some(value) = view.get(&key).await? else {
        return Ok(None);
    };
    let row = decode_row_value(table, &value)?;
    // Every equality (key columns included) must hold; the key lookup already implies
    // the key's, the rest are checked here.
    if filters.iter().all(|(c, d)| &row[*c] == d) {
        Ok(Some((row, handle, value)))
    } else {
        Ok(None)
    }
}

/// Looks a row up through unique index entry `ikey` at the newest versions (see
/// `read_latest`). `None` when the row changed between the two reads: the caller reads at a
/// snapshot instead.
async fn fetch_newest_by_index(
    session: &Session,
    table: &TableDef,
    ikey: &[u8],
    filters: &[(usize, Datum)],
) -> Result<Option<Option<(Vec<Datum>, Vec<u8>, Vec<u8>)>>, SqlError> {
    let view = session.view(Timestamp::MAX);
    let Some(handle) = view.get(ikey).await? else {
        return Ok(Some(None));
    };
    let Some(value) = view.get(&row_key(table, &handle)).await? else {
        return Ok(None);
    };
    let row = decode_row_value(table, &value)?;
    // The filters include the indexed columns: a row that no longer holds them may not be
    // the only row that does now.
    if filters.iter().all(|(c, d)| &row[*c] == d) {
        Ok(Some(Some((row, handle, value))))
    } else {
        Ok(None)
    }
}

pub(crate) fn buffered(session: &Session, key: &[u8]) -> bool {
    session
        .open
        .as_ref()
        .is_some_and(|o| o.txn.buffered(key).is_some())
}

/// Locks the row at record key `key` and reads it in the same request (the row an UPDATE
/// changes must be locked anyway). Under REPEATABLE READ the lock succeeds only if nothing
/// committed to the key after the transaction's `for_update_ts`, so the newest committed
/// version it returns is the one the snapshot sees. Under READ COMMITTED it locks the
/// newest version whatever its age (`Transaction::lock_keys_newest`), as PostgreSQL
/// updates the newest version of a row it waited for once the row still matches; the
/// caller computes the new row from the returned one. A row that does not match is
/// unlocked again.
async fn lock_and_fetch(
    session: &mut Session,
    table: &TableDef,
    key: &[u8],
    filters: &[(usize, Datum)],
    strength: LockStrength,
) -> Result<Option<(Vec<Datum>, Vec<u8>, Vec<u8>)>, SqlError> {
    let handle = crate::rows::handle_of_key(table, key)?.to_vec();
    let newest = session.isolation() == Isolation::ReadCommitted;
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    // Any lock the transaction held before stays: a shared one (FOR SHARE) that this
    // lock made exclusive is kept so rather than given back with it.
    let held = txn.holds(key);
    let keys = vec![(key.to_vec(), false)];
    let locked = if newest {
        txn.lock_keys_newest_as(keys, strength).await?
    } else {
        txn.lock_keys_as(keys, true, strength).await?
    };
    let value = locked.into_iter().next().flatten();
    let row = match value {
        Some(v) => Some((decode_row_value(table, &v)?, v)),
        None => None,
    };
    match row {
        Some((row, raw)) if filters.iter().all(|(c, d)| &row[*c] == d) => {
            Ok(Some((row, handle, raw)))
        }
        _ => {
            if !held {
                txn.unlock_key(key).await;
            }
            Ok(None)
        }
    }
}

/// The single table a statement reads, with the name its columns are qualified by.
fn single_table(session: &Session, factor: &TableFactor) -> Option<(Arc<TableDef>, String)> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = factor
    else {
        return None;
    };
    let table = session.catalog().table(&relation_name(name))?.clone();
    let qualifier = alias
        .as_ref()
        .map(|a| ident_name(&a.name))
        .unwrap_or_else(|| table.name.clone());
    Some((table, qualifier))
}

/// Tries the fast path; `Ok(None)` means "not handled here".
pub(crate) async fn try_execute(
    session: &mut Session,
    statement: &Statement,
    read_ts: Timestamp,
) -> Result<Option<QueryResult>, SqlError> {
    match statement {
        Statement::Query(q) => select(session, q, read_ts, false).await,
        Statement::Update(u) => update(session, u, Some(read_ts)).await,
        Statement::Insert(i) => insert(session, i).await,
        _ => Ok(None),
    }
}

/// Tries the fast path for a READ COMMITTED statement inside a transaction before it has
/// a snapshot timestamp; `Ok(None)` means "take a snapshot and run it the usual way". A
/// point SELECT reads the newest versions as `read_latest` does (seeing the transaction's
/// own writes), a point UPDATE locks the newest version of its row
/// (`lock_and_fetch`), and an INSERT of literal values reads nothing: none of them needs a
/// snapshot, so the statement asks the timestamp oracle for none. (Each such statement
/// behaves as if it had started when it reached its row, which no one can tell apart from
/// a snapshot taken then.)
pub(crate) async fn try_execute_without_snapshot(
    session: &mut Session,
    statement: &Statement,
) -> Result<Option<QueryResult>, SqlError> {
    debug_assert_eq!(session.isolation(), Isolation::ReadCommitted);
    match statement {
        Statement::Query(q) => select(session, q, Timestamp::MAX, true).await,
        Statement::Update(u) => update(session, u, None).await,
        Statement::Insert(i) => insert(session, i).await,
        _ => Ok(None),
    }
}

/// Runs an autocommit query outside any transaction if it reads at most one row by a
/// unique key, without asking the oracle for a timestamp. One key needs no snapshot to be
/// consistent with others: it is read at its newest committed version (`Timestamp::MAX`;
/// a lock on it is resolved or waited for as at any timestamp), which is what a snapshot
/// taken as the read reached the store would see, so the answer is as linearizable as one
/// at a fresh timestamp. Through a unique index that is two keys, read one after the
/// other: an entry that is missing means no such row when it was read; a row that still
/// holds the looked-up values is the one row holding them when it was read; anything else
/// (the row changed in between) is left to a snapshot read. `Ok(None)`: not handled here.
pub(crate) async fn read_latest(
    session: &Session,
    statement: &Statement,
) -> Result<Option<QueryResult>, SqlError> {
    let Statement::Query(q) = statement else {
        return Ok(None);
    };
    if !session.catalog().views.is_empty() {
        // A view of the same name would have to be expanded first.
        return Ok(None);
    }
    crate::dml::check_grammar(statement)?;
    select(session, q, Timestamp::MAX, true).await
}

/// `latest`: reading at the newest versions (see `read_latest`), outside a transaction or
/// in one under READ COMMITTED (`try_execute_without_snapshot`).
async fn select(
    session: &Session,
    q: &Query,
    read_ts: Timestamp,
    latest: bool,
) -> Result<Option<QueryResult>, SqlError> {
    if q.with.is_some()
        || q.order_by.is_some()
        || q.limit_clause.is_some()
        || q.fetch.is_some()
        || !q.locks.is_empty()
    {
        return Ok(None);
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return Ok(None);
    };
    let plain_group_by =
        matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if s.distinct.is_some()
        || s.from.len() != 1
        || !s.from[0].joins.is_empty()
        || !plain_group_by
        || s.having.is_some()
        || s.top.is_some()
        || s.into.is_some()
        || !s.lateral_views.is_empty()
        || s.qualify.is_some()
        || !s.named_window.is_empty()
    {
        return Ok(None);
    }
    let Some((table, qualifier)) = single_table(session, &s.from[0].relation) else {
        return Ok(None);
    };
    let mut columns = Vec::new();
    for item in &s.projection {
        match item {
            SelectItem::UnnamedExpr(e) => match column(e, &table, &qualifier) {
                Some(c) => columns.push((c, table.columns[c].name.clone())),
                None => return Ok(None),
            },
            SelectItem::ExprWithAlias { expr, alias } => match column(expr, &table, &qualifier) {
                Some(c) => columns.push((c, ident_name(alias))),
                None => return Ok(None),
            },
            SelectItem::Wildcard(opts)
                if opts.opt_exclude.is_none() && opts.opt_except.is_none() =>
            {
                columns.extend(
                    table
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i, c.name.clone())),
                );
            }
            _ => return Ok(None),
        }
    }
    let Some(selection) = &s.selection else {
        return Ok(None);
    };
    let mut eqs = Vec::new();
    if equalities(selection, &table, &qualifier, &mut eqs).is_none() {
        return Ok(None);
    }
    let Some((lookup, filters)) = lookup(&table, &eqs) else {
        return Ok(None);
    };
    let found = match &lookup {
        Lookup::Index(ikey) if latest => {
            match fetch_newest_by_index(session, &table, ikey, &filters).await? {
                Some(found) => found,
                None => return Ok(None),
            }
        }
        _ => fetch(session, &table, &lookup, &filters, read_ts).await?,
    };
    let fields: Vec<Field> = columns
        .iter()
        .map(|(c, name)| {
            Field::new(
                name,
                arrow_type(&table.columns[*c].ty),
                table.columns[*c].nullable,
            )
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let rows: Vec<Vec<Datum>> = found.into_iter().map(|(row, _, _)| row).collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(c, _)| {
            let mut b = ColumnBuilder::new(&table.columns[*c].ty, rows.len());
            for row in &rows {
                b.push(&row[*c]);
            }
            b.finish()
        })
        .collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(Some(QueryResult::Rows {
        schema,
        batches: if rows.is_empty() { vec![] } else { vec![batch] },
        tag: format!("SELECT {}", rows.len()),
    }))
}

/// The value a literal assigns to a column, with PostgreSQL's assignment rules.
fn assigned(value: ScalarValue, table: &TableDef, col: usize) -> Result<Datum, SqlError> {
    let def = &table.columns[col];
    let array = value.to_array().map_err(crate::error::datafusion_error)?;
    let cast = cast_to_column(&array, &def.ty, &def.name)?;
    let d = fit_to_column(datum_at(&cast, 0, &def.ty), &def.ty)?;
    if d.is_null() && def.refuses_null() {
        return Err(crate::error::not_null_violation(&table.name, &def.name));
    }
    Ok(d)
}

/// Bounds of an integer column's type.
fn int_range(ty: &SqlType) -> Option<(i64, i64)> {
    match ty {
        SqlType::Int16 => Some((i16::MIN as i64, i16::MAX as i64)),
        SqlType::Int32 => Some((i32::MIN as i64, i32::MAX as i64)),
        SqlType::Int64 => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// `col`, `literal`, or `intcol +/- intliteral`, evaluated against the old row.
fn new_value(
    expr: &Expr,
    table: &TableDef,
    qualifier: &str,
    old: &[Datum],
    target: usize,
) -> Option<Result<Datum, SqlError>> {
    if let Some(v) = literal(expr) {
        return Some(assigned(v, table, target));
    }
    if let Some(c) = column(expr, table, qualifier) {
        if table.columns[c].ty != table.columns[target].ty {
            return None;
        }
        return Some(Ok(old[c].clone()));
    }
    let Expr::BinaryOp { left, op, right } = expr else {
        return None;
    };
    let negate = match op {
        BinaryOperator::Plus => false,
        BinaryOperator::Minus => true,
        _ => return None,
    };
    let (c, lit, lit_expr) = match (
        column(left, table, qualifier),
        column(right, table, qualifier),
    ) {
        (Some(c), None) => (c, literal(right)?, right),
        (None, Some(c)) if !negate => (c, literal(left)?, left),
        _ => return None,
    };
    let (lo, hi) = int_range(&table.columns[c].ty)?;
    int_range(&table.columns[target].ty)?;
    let delta = match lit {
        ScalarValue::Int64(Some(v)) => v,
        ScalarValue::Int32(Some(v)) => v as i64,
        ScalarValue::Int16(Some(v)) => v as i64,
        ScalarValue::Null
        | ScalarValue::Int64(None)
        | ScalarValue::Int32(None)
        | ScalarValue::Int16(None) => {
            return Some(assigned(ScalarValue::Null, table, target));
        }
        _ => return None,
    };
    let base = match &old[c] {
        Datum::Int(v) => *v,
        Datum::Null => return Some(assigned(ScalarValue::Null, table, target)),
        _ => return None,
    };
    let result = if negate {
        base.checked_sub(delta)
    } else {
        base.checked_add(delta)
    };
    // The arithmetic happens in the wider of the two operand types, then is assigned. A
    // bare integer literal is an int4 when it fits and an int8 otherwise (never an int2,
    // so `int2_col + 1` adds in int4); a cast or a bound parameter has its own type.
    let (lit_lo, lit_hi) = match (lit_expr.as_ref(), &lit) {
        (Expr::Cast { .. }, ScalarValue::Int16(_)) => int_range(&SqlType::Int16)?,
        (Expr::Cast { .. }, ScalarValue::Int32(_)) => int_range(&SqlType::Int32)?,
        (Expr::Cast { .. }, _) => int_range(&SqlType::Int64)?,
        _ if i32::try_from(delta).is_ok() => int_range(&SqlType::Int32)?,
        _ => int_range(&SqlType::Int64)?,
    };
    match result {
        Some(v) if v >= lit_lo.min(lo) && v <= lit_hi.max(hi) => {
            Some(assigned(ScalarValue::Int64(Some(v)), table, target))
        }
        _ => Some(Err(SqlError::new("22003", "integer out of range"))),
    }
}

/// `read_ts`: the statement's snapshot, or `None` under READ COMMITTED before it has
/// taken one (see `try_execute_without_snapshot`).
async fn update(
    session: &mut Session,
    u: &Update,
    read_ts: Option<Timestamp>,
) -> Result<Option<QueryResult>, SqlError> {
    if u.from.is_some()
        || u.returning.is_some()
        || u.or.is_some()
        || u.limit.is_some()
        || !u.order_by.is_empty()
        || !u.table.joins.is_empty()
    {
        return Ok(None);
    }
    let Some((table, qualifier)) = single_table(session, &u.table.relation) else {
        return Ok(None);
    };
    let Some(selection) = &u.selection else {
        return Ok(None);
    };
    let mut eqs = Vec::new();
    if equalities(selection, &table, &qualifier, &mut eqs).is_none() {
        return Ok(None);
    }
    let mut targets = Vec::new();
    for a in &u.assignments {
        let AssignmentTarget::ColumnName(name) = &a.target else {
            return Ok(None);
        };
        let Some(c) = table
            .columns
            .iter()
            .position(|c| c.name == relation_name(name))
        else {
            return Ok(None);
        };
        if targets.iter().any(|(t, _)| *t == c)
            || is_default_keyword(&a.value)
            || crate::dml::always_generated(&table.columns[c])
        {
            return Ok(None);
        }
        targets.push((c, &a.value));
    }
    let Some((lookup, filters)) = lookup(&table, &eqs) else {
        return Ok(None);
    };
    let assigned: Vec<usize> = targets.iter().map(|(c, _)| *c).collect();
    let key_level = session.engine.may_use(Feature::KeyShareLocks);
    let strength = crate::dml::update_strength_before(key_level, &table, &assigned);
    if key_level && strength == LockStrength::Update {
        // A key column is assigned, maybe the value it holds (an ORM saving every
        // column): the general path locks the row knowing its new values, so an update
        // that keeps every key still lets foreign key checks through.
        return Ok(None);
    }
    let fetched = match &lookup {
        Lookup::Record(key) if !buffered(session, key) => {
            lock_and_fetch(session, &table, key, &filters, strength).await?
        }
        Lookup::Index(ikey) => {
            // The entry names the row; locking the row then reads it (one request, not a
            // read and a lock). Without a snapshot the entry is read at its newest version.
            let view = session.view(read_ts.unwrap_or(Timestamp::MAX));
            let Some(handle) = view.get(ikey).await? else {
                return Ok(Some(QueryResult::Command {
                    tag: "UPDATE 0".into(),
                }));
            };
            let key = row_key(&table, &handle);
            if buffered(session, &key) {
                fetch(
                    session,
                    &table,
                    &Lookup::Record(key),
                    &filters,
                    view.read_ts(),
                )
                .await?
            } else {
                match lock_and_fetch(session, &table, &key, &filters, strength).await? {
                    Some(found) => Some(found),
                    // The row no longer holds the looked-up values (its key changed after
                    // the entry was read): another row may hold them now; the general path
                    // reads them at a snapshot.
                    None => return Ok(None),
                }
            }
        }
        // A buffered row (this transaction wrote it, so holds its lock) is read from the
        // buffer, whatever the timestamp.
        Lookup::Record(_) | Lookup::Nothing => {
            let ts = read_ts.unwrap_or(Timestamp::MAX);
            fetch(session, &table, &lookup, &filters, ts).await?
        }
    };
    let Some((old, handle, stored)) = fetched else {
        return Ok(Some(QueryResult::Command {
            tag: "UPDATE 0".into(),
        }));
    };
    let mut new = old.clone();
    for (c, expr) in &targets {
        match new_value(expr, &table, &qualifier, &old, *c) {
            Some(v) => new[*c] = v?,
            None => return Ok(None),
        }
    }
    let new_handle = crate::rows::primary_handle(&table, &new).unwrap_or_else(|| handle.clone());
    let change: RowChange = (old, handle, new, new_handle);
    let updated = apply_updates(session, &table, vec![change], vec![Some(stored)]).await?;
    Ok(Some(QueryResult::Command {
        tag: format!("UPDATE {}", updated.len()),
    }))
}

async fn insert(session: &mut Session, i: &Insert) -> Result<Option<QueryResult>, SqlError> {
    if i.on.is_some() || i.returning.is_some() || i.or.is_some() || !i.assignments.is_empty() {
        return Ok(None);
    }
    let TableObject::TableName(name) = &i.table else {
        return Ok(None);
    };
    let Some(table) = session.catalog().table(&relation_name(name)).cloned() else {
        return Ok(None);
    };
    let Some(source) = &i.source else {
        return Ok(None);
    };
    if source.with.is_some() || source.order_by.is_some() || source.limit_clause.is_some() {
        return Ok(None);
    }
    let SetExpr::Values(values) = source.body.as_ref() else {
        return Ok(None);
    };
    let targets: Vec<usize> = if i.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        let mut t = Vec::new();
        for c in &i.columns {
            match table
                .columns
                .iter()
                .position(|d| d.name == relation_name(c))
            {
                Some(p) if !t.contains(&p) => t.push(p),
                _ => return Ok(None),
            }
        }
        t
    };
    // Columns not named must have no default (NULL), and no column named may refuse
    // values (`GENERATED ALWAYS`); others go the general way.
    for (pos, c) in table.columns.iter().enumerate() {
        if (!targets.contains(&pos) && c.default.is_some())
            || (targets.contains(&pos) && crate::dml::always_generated(c))
        {
            return Ok(None);
        }
    }
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        if row.len() != targets.len() {
            return Ok(None);
        }
        let mut datums = vec![Datum::Null; table.columns.len()];
        for (expr, &pos) in row.iter().zip(&targets) {
            let value = match literal(expr) {
                Some(v) => v,
                None if is_now(expr) => {
                    // PostgreSQL's `now()`: the transaction's start, in every statement.
                    let now = session.transaction_time().timestamp_micros();
                    ScalarValue::TimestampMicrosecond(Some(now), Some("+00:00".into()))
                }
                None => return Ok(None),
            };
            datums[pos] = assigned(value, &table, pos)?;
        }
        for (pos, c) in table.columns.iter().enumerate() {
            if c.refuses_null() && datums[pos].is_null() {
                return Err(crate::error::not_null_violation(&table.name, &c.name));
            }
        }
        rows.push(datums);
    }
    let inserted = insert_rows(session, &table, rows, false).await?;
    Ok(Some(QueryResult::Command {
        tag: format!("INSERT 0 {}", inserted.len()),
    }))
}

fn is_now(expr: &Expr) -> bool {
    match expr {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            matches!(
                name.as_str(),
                "current_timestamp" | "now" | "localtimestamp"
            ) && matches!(&f.args, FunctionArguments::None)
                || (name == "now"
                    && matches!(&f.args, FunctionArguments::List(l) if l.args.is_empty()))
        }
        _ => false,
    }
}
