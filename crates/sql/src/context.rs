//! The DataFusion context of one statement: the catalog snapshot's tables, each bound to
//! the statement's transaction view.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider,
    TableProvider,
};
use datafusion::error::Result as DfResult;
use datafusion::execution::SessionState;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use flotilla_catalog::CatalogSnapshot;
use flotilla_txn::TxnView;
use futures::StreamExt;

use crate::error::{SqlError, datafusion_error};
use crate::table::KvTable;

/// Builds the DataFusion state every statement starts from.
pub(crate) fn template_state(query_memory_bytes_max: usize) -> Result<SessionState, SqlError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false)
        .with_batch_size(8192);
    let options = config.options_mut();
    options.sql_parser.map_string_types_to_utf8view = false;
    options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    // `0.1` is `numeric`, as in PostgreSQL: read as a float it would be `0.1000…055`, and
    // a numeric column written from it would lose digits.
    options.sql_parser.parse_float_as_decimal = true;
    // `now()` is a `timestamptz` in UTC, as PostgreSQL's with TimeZone UTC (unset, it
    // would be a zone-less `timestamp`).
    options.execution.time_zone = Some("+00:00".into());
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(query_memory_bytes_max, 1.0)
        .build_arc()
        .map_err(datafusion_error)?;
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_type_planner(Arc::new(crate::types::PgTypes));
    // Before DataFusion's planners, which would take `||` of an array and a string for
    // appending an element.
    builder
        .expr_planners()
        .get_or_insert_with(Vec::new)
        .insert(0, Arc::new(crate::pg_array::ArrayOperators));
    // First, so the JSON operators are planned before DataFusion's array planner takes
    // `@>` and `||`.
    builder
        .expr_planners()
        .get_or_insert_with(Vec::new)
        .insert(0, Arc::new(crate::pg_json::JsonOperators::new()));
    builder
        .expr_planners()
        .get_or_insert_with(Vec::new)
        .insert(0, Arc::new(crate::pg_date_functions::ExtractPlanner));
    builder
        .expr_planners()
        .get_or_insert_with(Vec::new)
        .push(Arc::new(crate::pg_datetime::IntervalArithmetic));
    let built = builder.build();
    // Before DataFusion's rules: see `UnnestRepeatsRows`.
    let mut rules: Vec<Arc<dyn datafusion::optimizer::OptimizerRule + Send + Sync>> =
        vec![Arc::new(crate::lateral::UnnestRepeatsRows)];
    rules.extend(built.optimizers().iter().cloned());
    let mut state = SessionStateBuilder::new_from_existing(built)
        .with_optimizer_rules(rules)
        .build();
    for udf in crate::functions::all() {
        // A function of ours replacing one of DataFusion's replaces it under its aliases
        // too: a state rebuilt from this one re-registers every function it holds, and
        // one left under an alias would take its name back.
        datafusion::execution::FunctionRegistry::deregister_udf(&mut state, udf.name())
            .map_err(datafusion_error)?;
        datafusion::execution::FunctionRegistry::register_udf(&mut state, udf)
            .map_err(datafusion_error)?;
    }
    for udaf in crate::json_agg::aggregates()
        .into_iter()
        .chain(crate::ordered_set::aggregates())
    {
        datafusion::execution::FunctionRegistry::register_udaf(&mut state, Arc::new(udaf))
            .map_err(datafusion_error)?;
    }
    // After DataFusion's own rules (type coercion last), so operand types are final.
    state.add_analyzer_rule(Arc::new(crate::overflow::CheckedIntegerArithmetic::new()));
    state.add_analyzer_rule(Arc::new(crate::pg_text::PgText::new()));
    state.add_analyzer_rule(Arc::new(crate::pg_uuid::UuidCasts::new()));
    state.add_analyzer_rule(Arc::new(crate::pg_json::JsonCasts::new()));
    state.add_analyzer_rule(Arc::new(crate::pg_array::ArrayCasts::new()));
    state.add_analyzer_rule(Arc::new(crate::pg_datetime::DatetimeLiterals::new()));
    state.add_analyzer_rule(Arc::new(crate::pg_builtins::PgBuiltins::new()));
    state.add_analyzer_rule(Arc::new(crate::subquery::NullableScalarSubqueries::new()));
    Ok(state)
}

/// Resolves table names against one catalog snapshot and one transaction view.
#[derive(Debug)]
struct FlotillaSchema {
    snapshot: Arc<CatalogSnapshot>,
    view: TxnView,
    /// Tables whose scans also produce the row handle (the target of a DML statement,
    /// the tables a `SELECT ... FOR UPDATE` locks).
    with_handle: Vec<String>,
    /// Tables replaced for this statement (RETURNING reads the changed rows).
    overrides: HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for FlotillaSchema {
    fn table_names(&self) -> Vec<String> {
        self.snapshot.tables.keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.overrides.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.snapshot.table(name) {
            Some(def) => {
                let with_handle = self.with_handle.iter().any(|t| t == name);
                Ok(Some(Arc::new(KvTable::new(
                    def.clone(),
                    self.view.clone(),
                    with_handle,
                ))))
            }
            // `pg_type` unqualified, as psycopg asks for it: PostgreSQL searches
            // `pg_catalog` first.
            None if crate::pg_catalog::TABLES.contains(&name) => {
                crate::pg_catalog::PgCatalogSchema {
                    snapshot: self.snapshot.clone(),
                }
                .table(name)
                .await
            }
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.overrides.contains_key(name)
            || self.snapshot.tables.contains_key(name)
            || crate::pg_catalog::TABLES.contains(&name)
    }
}

/// What a statement takes from its session.
pub(crate) struct SessionScope<'a> {
    /// What `now()` is: the transaction's start time.
    pub(crate) now: chrono::DateTime<chrono::Utc>,
    /// The session's own functions (`currval`, `current_user`, ...).
    pub(crate) udfs: &'a [Arc<ScalarUDF>],
    /// The database the client connected to (`information_schema`'s catalog).
    pub(crate) database: &'a str,
}

impl SessionScope<'_> {
    /// No session: `now()` is the current time, no functions of a session's, database
    /// `postgres`.
    pub(crate) fn detached() -> SessionScope<'static> {
        SessionScope {
            now: chrono::Utc::now(),
            udfs: &[],
            database: "postgres",
        }
    }
}

/// A statement's DataFusion context.
pub(crate) struct StatementContext {
    ctx: SessionContext,
    /// What `now()` is in this statement: its transaction's start time.
    now: chrono::DateTime<chrono::Utc>,
}

impl StatementContext {
    /// A context over `snapshot` read through `view`.
    pub(crate) fn new(
        template: &SessionState,
        snapshot: Arc<CatalogSnapshot>,
        view: TxnView,
        with_handle: Vec<String>,
        overrides: HashMap<String, Arc<dyn TableProvider>>,
        scope: SessionScope<'_>,
    ) -> Self {
        let SessionScope {
            now,
            udfs: session_udfs,
            database,
        } = scope;
        // Each statement gets its own catalog list: a cloned SessionState shares the
        // template's, and registering into a shared list would let concurrent statements
        // resolve tables through each other's transaction views.
        let state = SessionStateBuilder::new_from_existing(template.clone())
            .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for udf in session_udfs {
            ctx.register_udf(udf.as_ref().clone());
        }
        let catalog = MemoryCatalogProvider::new();
        let pg_snapshot = snapshot.clone();
        let info_snapshot = snapshot.clone();
        let schema = FlotillaSchema {
            snapshot,
            view,
            with_handle,
            overrides,
        };
        catalog
            .register_schema("public", Arc::new(schema))
            .expect("memory catalog accepts schemas");
        catalog
            .register_schema(
                "pg_catalog",
                Arc::new(crate::pg_catalog::PgCatalogSchema {
                    snapshot: pg_snapshot,
                }),
            )
            .expect("memory catalog accepts schemas");
        catalog
            .register_schema(
                "information_schema",
                Arc::new(crate::info_schema::InformationSchema {
                    snapshot: info_snapshot,
                    database: database.to_string(),
                }),
            )
            .expect("memory catalog accepts schemas");
        ctx.register_catalog("datafusion", Arc::new(catalog));
        Self { ctx, now }
    }

    /// The context's state, with `now()` at the transaction's start (DataFusion's own
    /// `state()` stamps the current time: each statement would see a different `now()`).
    fn state(&self) -> datafusion::execution::SessionState {
        let mut state = self.ctx.state();
        state.execution_props_mut().query_execution_start_time = Some(self.now);
        state
    }

    /// Plans a statement.
    pub(crate) async fn plan(&self, mut statement: Statement) -> Result<LogicalPlan, SqlError> {
        crate::numeric::float_literals_past_decimal(&mut statement);
        crate::pg_builtins::rewrite_calls(&mut statement)?;
        crate::pg_interval::read_literals(&mut statement)?;
        crate::fetch::fetch_as_limit(&mut statement)?;
        crate::cast_names::name_column_casts(&mut statement);
        crate::cast_length::cut_to_length(&mut statement)?;
        crate::untyped::type_by_other_operands(&mut statement);
        crate::json_sets::expand_in_select_lists(&mut statement)?;
        crate::lateral::prepare(&mut statement);
        crate::whole_row::expand(&mut statement, &self.state()).await?;
        let plan = self
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(datafusion_error)?;
        // Once, on the plan as written: the analyzer may run again on analyzed plans, where
        // coercion has made int8 literals that must stay int8.
        let plan = crate::overflow::narrow_int_literals(plan).map_err(datafusion_error)?;
        let plan = crate::numeric::numeric_as_postgres(plan).map_err(datafusion_error)?;
        let plan =
            crate::lateral::plan_lateral_joins(plan, &self.state()).map_err(datafusion_error)?;
        let plan = crate::subquery::per_row_where_refused(plan, &self.state())
            .map_err(datafusion_error)?;
        let plan = crate::bpchar::pad_compared_literals(plan).map_err(datafusion_error)?;
        crate::untyped::read_compared_literals(plan).map_err(datafusion_error)
    }

    /// `plan` as the optimizer leaves it (constants folded, casts of literals settled).
    pub(crate) fn optimize(&self, plan: &LogicalPlan) -> Result<LogicalPlan, SqlError> {
        self.state().optimize(plan).map_err(datafusion_error)
    }

    /// The columns `plan` answers with: its schema once analyzed. Type coercion settles
    /// the type of an expression the plan as written types otherwise (a CASE of `1` and
    /// `2.5` is numeric; written, it is the int its first branch is).
    pub(crate) fn output_schema(
        &self,
        plan: &LogicalPlan,
    ) -> Result<datafusion::arrow::datatypes::SchemaRef, SqlError> {
        let state = self.state();
        let analyzed = state
            .analyzer()
            .execute_and_check(plan.clone(), state.config_options(), |_, _| {})
            .map_err(datafusion_error)?;
        Ok(analyzed.schema().inner().clone())
    }

    /// Plans and runs a query, collecting what `limits` allows.
    pub(crate) async fn run(
        &self,
        plan: LogicalPlan,
        limits: Collect,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        Ok(self.run_with_schema(plan, limits).await?.1)
    }

    /// `run`, with the columns the rows have: the schema `output_schema` gives, taken
    /// from the plan as optimized here rather than analyzed once more.
    pub(crate) async fn run_with_schema(
        &self,
        plan: LogicalPlan,
        limits: Collect,
    ) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>), SqlError> {
        let state = self.state();
        let optimized = state.optimize(&plan).map_err(datafusion_error)?;
        let schema = optimized.schema().inner().clone();
        let plan = crate::subquery::rewrite(optimized, &state).map_err(datafusion_error)?;
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(datafusion_error)?;
        let mut stream = df.execute_stream().await.map_err(datafusion_error)?;
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut bytes = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(datafusion_error)?;
            rows += batch.num_rows();
            if rows > limits.rows_max {
                return Err(SqlError::new(
                    "54000",
                    format!(
                        "query returns more than {} rows (rows_per_query_max)",
                        limits.rows_max
                    ),
                )
                .with_hint("Add a LIMIT or a narrower WHERE clause, or raise the limit in the configuration."));
            }
            bytes = bytes.saturating_add(batch_bytes(&batch));
            if bytes > limits.bytes_max {
                return Err(limits.too_many_bytes());
            }
            if batch.num_rows() > 0 {
                batches.push(batch);
            }
        }
        Ok((schema, batches))
    }
}

/// What one query may collect before it fails with 54000.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Collect {
    rows_max: usize,
    bytes_max: usize,
    /// The setting that gave `bytes_max`, for the error, and its value.
    bytes_setting: &'static str,
    setting_bytes: usize,
}

impl Collect {
    /// A result for the client: what is left of `result_bytes_max` after the results the
    /// query string already holds.
    pub(crate) fn result(config: &crate::SqlConfig, held_bytes: usize) -> Self {
        Self {
            rows_max: config.rows_per_query_max,
            bytes_max: config.result_bytes_max.saturating_sub(held_bytes),
            bytes_setting: "result_bytes_max",
            setting_bytes: config.result_bytes_max,
        }
    }

    /// Rows a writing statement reads before writing them.
    pub(crate) fn rows_to_write(config: &crate::SqlConfig) -> Self {
        Self {
            rows_max: config.rows_per_query_max,
            bytes_max: config.query_memory_bytes_max,
            bytes_setting: "query_memory_bytes_max",
            setting_bytes: config.query_memory_bytes_max,
        }
    }

    /// At most `rows_max` rows computed from rows the statement already holds (defaults per
    /// row, CHECK results, one ON CONFLICT row): bounded by those rows, not in bytes.
    pub(crate) fn derived(rows_max: usize) -> Self {
        Self {
            rows_max,
            bytes_max: usize::MAX,
            bytes_setting: "",
            setting_bytes: usize::MAX,
        }
    }

    fn too_many_bytes(&self) -> SqlError {
        let held = self.setting_bytes - self.bytes_max;
        let message = if held == 0 {
            format!(
                "query result exceeds {} ({} bytes)",
                self.bytes_setting, self.setting_bytes
            )
        } else {
            format!(
                "query result exceeds the {} bytes that {} ({} bytes) leaves: {held} bytes are \
                 held by results not yet sent (earlier statements of the query string, \
                 suspended portals)",
                self.bytes_max, self.bytes_setting, self.setting_bytes
            )
        };
        SqlError::new("54000", message)
        .with_hint(
            "Add a LIMIT, select fewer or narrower columns, or raise the limit in the configuration.",
        )
    }
}

/// The bytes a batch's rows take: the part of each buffer its slice covers, so a sorted
/// result cut into slices of one large batch is not counted once per slice.
pub(crate) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_catalog::{ColumnDef, Handle, SqlType, TableDef};
    use flotilla_storage::{FjallEngine, FjallOptions};
    use flotilla_types::Timestamp;

    #[test]
    fn a_slice_of_a_batch_counts_only_the_rows_it_covers() {
        use datafusion::arrow::array::StringArray;
        let column = StringArray::from_iter_values((0..10_000).map(|i| format!("{i:0>100}")));
        let batch = RecordBatch::try_from_iter([("v", Arc::new(column) as _)]).unwrap();
        let whole = batch_bytes(&batch);
        assert!(whole >= 10_000 * 100, "{whole}");
        // Ten slices add up to about the whole, not ten times it.
        let sliced: usize = (0..10)
            .map(|i| batch_bytes(&batch.slice(i * 1_000, 1_000)))
            .sum();
        assert!(sliced <= whole + 10 * 64, "{sliced} > {whole}");
        assert!(sliced >= 10_000 * 100, "{sliced}");
    }

    #[tokio::test]
    async fn statement_contexts_never_share_table_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(FjallEngine::open(dir.path(), &FjallOptions::default()).unwrap());
        let tso = Arc::new(flotilla_tso::LocalTso::open(engine.clone(), 1_000).unwrap());
        let kv: flotilla_txn::TxnKvRef = Arc::new(flotilla_txn::LocalTxnKv::new(
            Arc::new(flotilla_mvcc::Mvcc::new(engine).unwrap()),
            tso,
        ));
        let table = TableDef {
            id: 1,
            storage_id: 1,
            name: "t".into(),
            columns: vec![ColumnDef {
                id: 0,
                name: "x".into(),
                ty: SqlType::Int32,
                nullable: true,
                not_null_pending: false,
                default: None,
                origin_default: None,
                sequence: None,
            }],
            handle: Handle::RowId,
            indexes: vec![],
            next_column_id: 1,
            next_index_id: 1,
            checks: Vec::new(),
            foreign_keys: Vec::new(),
        };
        let mut snapshot = CatalogSnapshot::default();
        snapshot.tables.insert("t".into(), Arc::new(table));
        let snapshot = Arc::new(snapshot);
        let template = template_state(1 << 26).unwrap();
        let view = TxnView::detached(kv, Timestamp::MAX, 1_000);
        let with_handle = StatementContext::new(
            &template,
            snapshot.clone(),
            view.clone(),
            vec!["t".into()],
            HashMap::new(),
            SessionScope::detached(),
        );
        // A second context created in between must not change what the first resolves.
        let _without = StatementContext::new(
            &template,
            snapshot,
            view,
            Vec::new(),
            HashMap::new(),
            SessionScope::detached(),
        );
        let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            "SELECT __flotilla_handle FROM t",
        )
        .unwrap()
        .remove(0);
        with_handle.plan(statement).await.unwrap();
    }
}
