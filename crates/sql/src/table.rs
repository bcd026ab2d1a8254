//! Tables as DataFusion sees them: a `TableProvider` per table bound to one transaction
//! view, and the scan that reads rows through `TxnKv`, choosing an access path (point
//! get, primary-key range, secondary index, or full scan) from the pushed-down filters.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Constraint, Constraints};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use flotilla_catalog::{Handle, IndexDef, IndexState, SqlType, TableDef};
use flotilla_codec::{Datum, encode_key_datum, index_prefix, prefix_end, record_prefix};
use flotilla_txn::TxnView;

use crate::rows::{decode_row_value, handle_of_index_entry, handle_of_key, row_key};
use crate::types::{ColumnBuilder, arrow_type, scalar_to_datum};

/// Name of the extra column that DML-internal scans add: the row's handle.
pub(crate) const HANDLE_COLUMN: &str = "__flotilla_handle";

/// Most key ranges one scan may enumerate from IN lists before falling back to a scan.
const POINT_RANGES_MAX: usize = 1024;

/// The Arrow schema of a table (plus the handle column when asked).
pub(crate) fn table_schema(table: &TableDef, with_handle: bool) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .columns
        .iter()
        .map(|c| {
            let field = Field::new(&c.name, arrow_type(&c.ty), c.nullable);
            match c.ty {
                SqlType::Char(n) => field.with_metadata(crate::bpchar::field_metadata(n)),
                _ => field,
            }
        })
        .collect();
    if with_handle {
        fields.push(Field::new(HANDLE_COLUMN, DataType::Binary, false));
    }
    Arc::new(Schema::new(fields))
}

/// A table bound to the view of the statement that reads it.
#[derive(Debug)]
pub(crate) struct KvTable {
    table: Arc<TableDef>,
    view: TxnView,
    schema: SchemaRef,
    constraints: Constraints,
    batch_rows: usize,
}

impl KvTable {
    pub(crate) fn new(table: Arc<TableDef>, view: TxnView, with_handle: bool) -> Self {
        let schema = table_schema(&table, with_handle);
        let constraints = key_constraints(&table);
        Self {
            table,
            view,
            schema,
            constraints,
            batch_rows: 1024,
        }
    }
}

/// The table's primary key as a DataFusion constraint, so the planner knows what the key
/// determines: `SELECT name ... GROUP BY id` is valid when `id` is the primary key. Only
/// the primary key, as in PostgreSQL, which recognises no dependency on a unique
/// constraint (its columns may be NULL, any number of times).
fn key_constraints(table: &TableDef) -> Constraints {
    let key = table
        .indexes
        .iter()
        .filter(|i| i.primary && i.state == IndexState::Public)
        .filter_map(|i| {
            i.columns
                .iter()
                .map(|&c| table.column_position(c))
                .collect::<Option<Vec<_>>>()
        })
        .map(Constraint::PrimaryKey)
        .collect();
    Constraints::new_unverified(key)
}

#[async_trait]
impl TableProvider for KvTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Filters choose the access path but are always re-evaluated above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&projection)?);
        let access = choose_access(&self.table, filters);
        Ok(Arc::new(KvScanExec::new(
            self.table.clone(),
            self.view.clone(),
            access,
            projection,
            schema,
            limit,
            self.batch_rows,
        )))
    }
}

/// How a scan reaches its rows.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// Every row of the table.
    Full,
    /// Exact primary-key lookups.
    PointGets(Vec<Vec<u8>>),
    /// Key ranges of the records (primary key order).
    PrimaryRanges(Vec<(Vec<u8>, Vec<u8>)>),
    /// Key ranges of a secondary index, then a lookup of each row.
    IndexRanges(Arc<IndexDef>, Vec<(Vec<u8>, Vec<u8>)>),
}

impl Access {
    fn describe(&self) -> String {
        match self {
            Access::Full => "full scan".into(),
            Access::PointGets(k) => format!("primary key point get ({} keys)", k.len()),
            Access::PrimaryRanges(r) => format!("primary key range scan ({} ranges)", r.len()),
            Access::IndexRanges(i, r) => {
                format!("index {} range scan ({} ranges)", i.name, r.len())
            }
        }
    }
}

/// Constraints found on one column.
#[derive(Default, Debug)]
struct ColumnBounds {
    equal: Option<Vec<Datum>>,
    lower: Option<(Datum, bool)>,
    upper: Option<(Datum, bool)>,
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn add_bound(b: &mut ColumnBounds, op: Operator, value: &ScalarValue, ty: &SqlType) {
    let Some(d) = scalar_to_datum(value, ty) else {
        return;
    };
    match op {
        Operator::Eq => b.equal = Some(vec![d]),
        Operator::Gt => b.lower = Some((d, false)),
        Operator::GtEq => b.lower = Some((d, true)),
        Operator::Lt => b.upper = Some((d, false)),
        Operator::LtEq => b.upper = Some((d, true)),
        _ => {}
    }
}

/// Collects usable bounds for `column` (of type `ty`) from conjunctive `filters`.
fn bounds_for(filters: &[Expr], column: &str, ty: &SqlType) -> ColumnBounds {
    let mut b = ColumnBounds::default();
    for filter in filters {
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if column_name(left) == Some(column)
                    && let Some(v) = literal(right)
                {
                    add_bound(&mut b, *op, v, ty);
                } else if column_name(right) == Some(column)
                    && let Some(v) = literal(left)
                    && let Some(swapped) = op.swap()
                {
                    add_bound(&mut b, swapped, v, ty);
                } else if *op == Operator::And {
                    let inner = bounds_for(&[(**left).clone(), (**right).clone()], column, ty);
                    if inner.equal.is_some() {
                        b.equal = inner.equal;
                    }
                    if inner.lower.is_some() {
                        b.lower = inner.lower;
                    }
                    if inner.upper.is_some() {
                        b.upper = inner.upper;
                    }
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if column_name(expr) == Some(column) => {
                if let (Some(l), Some(h)) = (literal(low), literal(high)) {
                    add_bound(&mut b, Operator::GtEq, l, ty);
                    add_bound(&mut b, Operator::LtEq, h, ty);
                }
            }
            Expr::InList(InList {
                expr,
                list,
                negated: false,
            }) if column_name(expr) == Some(column) => {
                let values: Option<Vec<Datum>> = list
                    .iter()
                    .map(|e| literal(e).and_then(|v| scalar_to_datum(v, ty)))
                    .collect();
                if let Some(values) = values
                    && !values.is_empty()
                {
                    b.equal = Some(values);
                }
            }
            _ => {}
        }
    }
    b
}

fn with_datum(prefix: &[u8], d: &Datum) -> Vec<u8> {
    let mut k = prefix.to_vec();
    encode_key_datum(&mut k, d);
    k
}

/// Key ranges, whether every key column is fixed by equality, and how many leading key
/// columns the filters constrain.
type KeyRanges = (Vec<(Vec<u8>, Vec<u8>)>, bool, usize);

/// Key ranges under `prefix` for key columns `columns`, from the filters; `None` when the
/// leading column is unconstrained. Also says whether every column is fixed by equality.
fn key_ranges(prefix: &[u8], columns: &[(&str, &SqlType)], filters: &[Expr]) -> Option<KeyRanges> {
    let mut prefixes = vec![prefix.to_vec()];
    let mut equal_columns = 0;
    for (name, ty) in columns {
        let b = bounds_for(filters, name, ty);
        if let Some(values) = &b.equal {
            if prefixes.len() * values.len() > POINT_RANGES_MAX {
                break;
            }
            prefixes = prefixes
                .iter()
                .flat_map(|p| values.iter().map(move |v| with_datum(p, v)))
                .collect();
            equal_columns += 1;
            continue;
        }
        if b.lower.is_none() && b.upper.is_none() {
            break;
        }
        let ranges = prefixes
            .iter()
            .map(|p| {
                let start = match &b.lower {
                    Some((v, true)) => with_datum(p, v),
                    Some((v, false)) => prefix_end(&with_datum(p, v)),
                    // NULL sorts first; skipping past it is left to the filter above.
                    None => p.clone(),
                };
                let end = match &b.upper {
                    Some((v, true)) => prefix_end(&with_datum(p, v)),
                    Some((v, false)) => with_datum(p, v),
                    None => prefix_end(p),
                };
                (start, end)
            })
            .filter(|(s, e)| e.is_empty() || s < e)
            .collect();
        return Some((ranges, false, equal_columns + 1));
    }
    if equal_columns == 0 {
        return None;
    }
    let all_equal = equal_columns == columns.len();
    let ranges = prefixes
        .into_iter()
        .map(|p| {
            let end = prefix_end(&p);
            (p, end)
        })
        .collect();
    Some((ranges, all_equal, equal_columns))
}

/// Sorts ranges and merges overlapping ones, so no row is read twice (an IN list may name
/// a value twice).
fn merge_ranges(mut ranges: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    ranges.sort();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = out.last_mut() {
            // An empty end is unbounded.
            if last.1.is_empty() || start <= last.1 {
                if !last.1.is_empty() && (end.is_empty() || end > last.1) {
                    last.1 = end;
                }
                continue;
            }
        }
        out.push((start, end));
    }
    out
}

/// Picks the access path: the primary key if the filters constrain it, else the public
/// index whose leading columns they constrain most, else a full scan.
pub(crate) fn choose_access(table: &TableDef, filters: &[Expr]) -> Access {
    let columns_of = |ids: &[u32]| -> Vec<(&str, &SqlType)> {
        ids.iter()
            .filter_map(|id| table.column_by_id(*id))
            .map(|c| (c.name.as_str(), &c.ty))
            .collect()
    };
    if let Handle::PrimaryKey(pk) = &table.handle {
        let cols = columns_of(pk);
        if let Some((ranges, all_equal, _)) =
            key_ranges(&record_prefix(table.storage_id), &cols, filters)
        {
            if all_equal {
                // Each range is exactly one full handle: get each once (an IN list may
                // name a value twice). Not merged as ranges are: the ranges of adjacent
                // keys (`id IN (2, 3)`) touch, and a merged one would keep only its
                // first key.
                let mut keys: Vec<Vec<u8>> = ranges.into_iter().map(|(s, _)| s).collect();
                keys.sort();
                keys.dedup();
                return Access::PointGets(keys);
            }
            return Access::PrimaryRanges(merge_ranges(ranges));
        }
    }
    let mut best: Option<(usize, Access)> = None;
    for index in table.stored_indexes() {
        if index.state != IndexState::Public {
            continue;
        }
        // A partial index holds only the rows its predicate covers: it serves only a
        // query whose conditions include every test of the predicate.
        if let Some(predicate) = &index.predicate
            && !crate::partial::implied_by(table, predicate, filters)
        {
            continue;
        }
        let cols = columns_of(&index.columns);
        if let Some((ranges, _, used)) =
            key_ranges(&index_prefix(table.storage_id, index.id), &cols, filters)
            && best.as_ref().is_none_or(|(u, _)| used > *u)
        {
            best = Some((
                used,
                Access::IndexRanges(Arc::new(index.clone()), merge_ranges(ranges)),
            ));
        }
    }
    best.map(|(_, a)| a).unwrap_or(Access::Full)
}

/// Reads a table's rows through a transaction view.
#[derive(Debug)]
pub(crate) struct KvScanExec {
    table: Arc<TableDef>,
    view: TxnView,
    access: Access,
    projection: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

impl KvScanExec {
    fn new(
        table: Arc<TableDef>,
        view: TxnView,
        access: Access,
        projection: Vec<usize>,
        schema: SchemaRef,
        limit: Option<usize>,
        batch_rows: usize,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            table,
            view,
            access,
            projection,
            schema,
            limit,
            batch_rows,
            properties,
        }
    }
}

impl DisplayAs for KvScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "KvScanExec: table={}, access={}",
            self.table.name,
            self.access.describe()
        )?;
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for KvScanExec {
    fn name(&self) -> &str {
        "KvScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let reader = RowReader {
            table: self.table.clone(),
            view: self.view.clone(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            batch_rows: self.batch_rows,
            work: match &self.access {
                Access::Full => {
                    let p = record_prefix(self.table.storage_id);
                    let e = prefix_end(&p);
                    Work::Ranges(VecDeque::from([(p, e)]), None)
                }
                Access::PointGets(keys) => Work::Points(keys.iter().cloned().collect()),
                Access::PrimaryRanges(r) => Work::Ranges(r.iter().cloned().collect(), None),
                Access::IndexRanges(i, r) => {
                    Work::Ranges(r.iter().cloned().collect(), Some(i.clone()))
                }
            },
        };
        let stream = futures::stream::try_unfold(reader, |mut reader| async move {
            match reader.next_batch().await? {
                Some(batch) => Ok(Some((batch, reader))),
                None => Ok(None),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

enum Work {
    /// Record keys (primary key handles already encoded into keys) to get.
    Points(VecDeque<Vec<u8>>),
    /// Ranges of records, or of an index's entries.
    Ranges(VecDeque<(Vec<u8>, Vec<u8>)>, Option<Arc<IndexDef>>),
}

struct RowReader {
    table: Arc<TableDef>,
    view: TxnView,
    projection: Vec<usize>,
    schema: SchemaRef,
    remaining: usize,
    batch_rows: usize,
    work: Work,
}

fn df_err(e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(Box::new(std::io::Error::other(e.to_string())))
}

impl RowReader {
    /// Fetches the next rows as (record key, value) pairs.
    async fn fetch(&mut self, want: usize) -> DfResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        match &mut self.work {
            Work::Points(keys) => {
                while out.len() < want {
                    let Some(key) = keys.pop_front() else { break };
                    if let Some(v) = self.view.get(&key).await.map_err(df_err)? {
                        out.push((key, v));
                    }
                }
            }
            Work::Ranges(ranges, index) => {
                while out.len() < want {
                    let Some((start, end)) = ranges.front().cloned() else {
                        break;
                    };
                    let got = self
                        .view
                        .scan(&start, &end, want - out.len())
                        .await
                        .map_err(df_err)?;
                    let exhausted = got.len() < want - out.len();
                    if let Some((last, _)) = got.last() {
                        let mut next = last.clone();
                        next.push(0);
                        ranges.front_mut().expect("front exists").0 = next;
                    }
                    match index {
                        None => out.extend(got),
                        Some(index) => {
                            for (k, v) in got {
                                let handle = handle_of_index_entry(index, &k, &v)
                                    .map_err(df_err)?
                                    .to_vec();
                                let key = row_key(&self.table, &handle);
                                if let Some(row) = self.view.get(&key).await.map_err(df_err)? {
                                    out.push((key, row));
                                }
                            }
                        }
                    }
                    if exhausted {
                        ranges.pop_front();
                    }
                }
            }
        }
        Ok(out)
    }

    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let want = self.batch_rows.min(self.remaining);
        let rows = self.fetch(want).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        self.remaining -= rows.len().min(self.remaining);
        let ncols = self.table.columns.len();
        let mut builders: Vec<Option<ColumnBuilder>> = self
            .projection
            .iter()
            .map(|&i| {
                (i < ncols).then(|| ColumnBuilder::new(&self.table.columns[i].ty, rows.len()))
            })
            .collect();
        let mut handles = BinaryBuilder::new();
        for (key, value) in &rows {
            let row = decode_row_value(&self.table, value).map_err(df_err)?;
            for (b, &i) in builders.iter_mut().zip(&self.projection) {
                match b {
                    Some(b) => b.push(&row[i]),
                    None => handles.append_value(handle_of_key(&self.table, key).map_err(df_err)?),
                }
            }
        }
        let mut handle_array = Some(Arc::new(handles.finish()) as ArrayRef);
        let columns: Vec<ArrayRef> = builders
            .into_iter()
            .map(|b| match b {
                Some(b) => b.finish(),
                None => handle_array.take().expect("one handle column"),
            })
            .collect();
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(Some(batch))
    }
}
