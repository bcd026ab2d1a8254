//! Queries and DML: SELECT/EXPLAIN through DataFusion; INSERT, UPDATE and DELETE by
//! planning their reads through DataFusion and writing rows, index entries and
//! pessimistic locks through the session's transaction.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::scalar::ScalarValue;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, Assignment, AssignmentTarget, Delete, Expr, FromTable, Ident, Insert, ObjectName,
    OnConflictAction, OnInsert, Query, SelectItem, SetExpr, Statement, TableAlias,
    TableAliasColumnDef, TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind,
    Value, VisitMut, VisitorMut, With, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use flotilla_catalog::{CatalogSnapshot, ColumnDef, Handle, Identity, IndexDef, SqlType, TableDef};
use flotilla_codec::{Datum, record_prefix};
use flotilla_txn::{LockStrength, TxnError};
use flotilla_types::version::Feature;
use flotilla_types::{ColumnId, Timestamp};

use crate::api::QueryResult;
use crate::context::Collect;
use crate::error::{SqlError, datafusion_error};
use crate::rows::{
    index_entry, primary_handle, row_id_handle, row_key, row_value, row_value_keeping,
};
use crate::session::Session;
use crate::table::{HANDLE_COLUMN, table_schema};
use crate::types::{ColumnBuilder, cast_to_column, datum_at, fit_to_column};

/// Rows written per lock request and per buffered chunk.
const WRITE_CHUNK_ROWS: usize = 1024;

/// The relation name of an object name, folded as PostgreSQL folds identifiers.
pub(crate) fn relation_name(name: &ObjectName) -> String {
    match name.0.last().and_then(|p| p.as_ident()) {
        Some(ident) => ident_name(ident),
        None => name.to_string(),
    }
}

/// An identifier's name: unquoted identifiers fold to lower case.
pub(crate) fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether `name` is lower case letters, digits and underscores, not starting with a
/// digit: written unquoted, it reads back as itself (keywords apart).
pub(crate) fn reads_back_unquoted(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An identifier as PostgreSQL prints it in a definition: unquoted when that reads back
/// as the same name (lower case, not a keyword), quoted otherwise.
pub(crate) fn ident_sql(name: &str) -> String {
    let plain = reads_back_unquoted(name)
        && datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
            .binary_search(&name.to_ascii_uppercase().as_str())
            .is_err();
    if plain { name.to_string() } else { quote(name) }
}

fn no_such_table(name: &str) -> SqlError {
    SqlError::new("42P01", format!("relation \"{name}\" does not exist"))
}

pub(crate) fn parse_one(sql: &str) -> Result<Statement, SqlError> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::internal(format!("re-parse of {sql}: {e}")))?;
    statements
        .pop()
        .ok_or_else(|| SqlError::internal("empty internal statement"))
}

/// PostgreSQL names the single column of a function in FROM after its alias
/// (`generate_series(1, 3) AS x` has column `x`); DataFusion needs that said explicitly.
/// Everywhere in the query: CTEs, derived tables, and subqueries in expressions.
fn alias_function_columns(query: &mut Query) {
    struct Aliaser;
    impl VisitorMut for Aliaser {
        type Break = ();

        fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
            let (name, alias) = match f {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    alias: Some(alias),
                    ..
                }
                | TableFactor::Function {
                    name,
                    alias: Some(alias),
                    ..
                } => (name, alias),
                _ => return ControlFlow::Continue(()),
            };
            if crate::json_sets::names_its_columns(name) {
                return ControlFlow::Continue(());
            }
            if alias.columns.is_empty() {
                alias
                    .columns
                    .push(TableAliasColumnDef::from_name(alias.name.value.clone()));
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Aliaser);
}

/// DataFusion names every scalar subquery column "(<subquery>)" and refuses two columns
/// of one name; PostgreSQL allows duplicate names. Unnamed subquery columns get distinct
/// names when a projection has several.
fn name_subquery_columns(query: &mut Query) {
    fn has_subquery(e: &Expr) -> bool {
        let mut found = false;
        let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
            if matches!(x, Expr::Subquery(_)) {
                found = true;
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        found
    }
    fn set_expr(s: &mut SetExpr) {
        match s {
            SetExpr::Select(select) => {
                let count = select
                    .projection
                    .iter()
                    .filter(|i| matches!(i, SelectItem::UnnamedExpr(e) if has_subquery(e)))
                    .count();
                if count < 2 {
                    return;
                }
                for (n, item) in select.projection.iter_mut().enumerate() {
                    if let SelectItem::UnnamedExpr(e) = item
                        && has_subquery(e)
                    {
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: Ident::with_quote('"', format!("?column?{}", n + 1)),
                        };
                    }
                }
            }
            SetExpr::Query(q) => name_subquery_columns(q),
            SetExpr::SetOperation { left, right, .. } => {
                set_expr(left);
                set_expr(right);
            }
            _ => {}
        }
    }
    set_expr(&mut query.body);
}

/// How PostgreSQL names an output column that has no alias (its `FigureColname`): a column
/// reference by the column, a function call by the function, a cast by its operand or else
/// its type, CASE by its ELSE result or else as `case`, anything else `?column?`. Returns the name and whether it is
/// a strong one (a cast prefers its operand's name only if that is strong).
fn pg_column_name(expr: &Expr) -> (String, bool) {
    match expr {
        Expr::Identifier(i) => (ident_name(i), true),
        Expr::CompoundIdentifier(parts) => (parts.last().map(ident_name).unwrap_or_default(), true),
        Expr::Function(f) => (
            f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(ident_name)
                .unwrap_or_else(|| "?column?".into()),
            true,
        ),
        Expr::Nested(e) => pg_column_name(e),
        // `(row).f` by the field.
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(field))) => (ident_name(field), true),
            _ => ("?column?".into(), false),
        },
        Expr::Cast {
            expr, data_type, ..
        } => {
            let inner = pg_column_name(expr);
            if inner.1 {
                return inner;
            }
            (type_column_name(data_type).into(), false)
        }
        // By its ELSE result if that names it strongly (`CASE ... ELSE tags END` is `tags`).
        Expr::Case {
            else_result: Some(e),
            ..
        } if pg_column_name(e).1 => pg_column_name(e),
        Expr::Case { .. } => ("case".into(), false),
        Expr::TypedString(t) => (type_column_name(&t.data_type).into(), false),
        Expr::Interval(_) => ("interval".into(), false),
        // The functions PostgreSQL computes these by.
        Expr::Trim { trim_where, .. } => (
            match trim_where {
                Some(datafusion::sql::sqlparser::ast::TrimWhereField::Leading) => "ltrim",
                Some(datafusion::sql::sqlparser::ast::TrimWhereField::Trailing) => "rtrim",
                _ => "btrim",
            }
            .into(),
            true,
        ),
        Expr::Substring { .. } => ("substring".into(), true),
        Expr::Position { .. } => ("position".into(), true),
        Expr::Extract { .. } => ("extract".into(), true),
        Expr::Ceil { .. } => ("ceil".into(), true),
        Expr::Floor { .. } => ("floor".into(), true),
        Expr::Overlay { .. } => ("overlay".into(), true),
        Expr::AtTimeZone { .. } => ("timezone".into(), true),
        Expr::Array(_) => ("array".into(), false),
        Expr::Exists { .. } => ("exists".into(), false),
        Expr::Subquery(q) => match q.body.as_ref() {
            SetExpr::Select(select) => match select.projection.first() {
                Some(SelectItem::ExprWithAlias { alias, .. }) => (ident_name(alias), true),
                Some(SelectItem::UnnamedExpr(e)) => pg_column_name(e),
                _ => ("?column?".into(), false),
            },
            _ => ("?column?".into(), false),
        },
        _ => ("?column?".into(), false),
    }
}

/// The name PostgreSQL gives a column computed as a value of `data_type` (a cast of a
/// literal, `date '...'`): the type's.
fn type_column_name(data_type: &datafusion::sql::sqlparser::ast::DataType) -> &'static str {
    use datafusion::sql::sqlparser::ast::DataType as T;
    match data_type {
        T::Boolean | T::Bool => "bool",
        T::SmallInt(_) | T::Int2(_) => "int2",
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4",
        T::BigInt(_) | T::Int8(_) => "int8",
        T::Real | T::Float4 => "float4",
        T::DoublePrecision | T::Float8 | T::Double(_) => "float8",
        T::Numeric(_) | T::Decimal(_) | T::Dec(_) => "numeric",
        T::Text => "text",
        T::Varchar(_) | T::CharacterVarying(_) => "varchar",
        T::Char(_) | T::Character(_) => "bpchar",
        T::Bytea => "bytea",
        T::Uuid => "uuid",
        T::JSON => "json",
        T::JSONB => "jsonb",
        T::Date => "date",
        T::Timestamp(_, datafusion::sql::sqlparser::ast::TimezoneInfo::WithTimeZone) => {
            "timestamptz"
        }
        T::Timestamp(..) => "timestamp",
        T::Time(..) => "time",
        T::Interval { .. } => "interval",
        _ => "?column?",
    }
}

/// The names PostgreSQL gives a query's output columns, where they differ from what
/// DataFusion can plan: duplicates (`SELECT 1 AS a, 2 AS a`, which DataFusion refuses, so
/// later ones are planned under internal names) and unaliased expressions (which
/// DataFusion names by their text). Returns (projection item, name) pairs for
/// `restore_names`.
fn uniquify_output_names(query: &mut Query) -> OutputNames {
    let mut body = query.body.as_mut();
    // A set operation takes its column names from its leftmost query.
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_mut();
    }
    let SetExpr::Select(select) = body else {
        return OutputNames::default();
    };
    let mut seen = std::collections::HashSet::new();
    // The names shown for expressions: two expressions shown alike may plan under one
    // name though written apart (`btrim(s, 'x')` and `trim(both 'x' from s)`, or
    // `interval '90 minutes'` and `interval '1.5 hours'`), so the later is planned under
    // an internal name.
    let mut shown_expressions = std::collections::HashSet::new();
    let mut names = OutputNames {
        items: select.projection.len(),
        ..OutputNames::default()
    };
    for (pos, item) in select.projection.iter_mut().enumerate() {
        let (key, shown, expr, expression) = match &*item {
            SelectItem::ExprWithAlias { expr, alias } => {
                (ident_name(alias), ident_name(alias), expr.clone(), false)
            }
            SelectItem::UnnamedExpr(e) => {
                let shown = pg_column_name(e).0;
                // Approximates DataFusion's own name for the column, which must be unique.
                fn planned_name(e: &Expr) -> String {
                    match e {
                        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => pg_column_name(e).0,
                        Expr::Cast { expr, .. } | Expr::Nested(expr) => planned_name(expr),
                        other => {
                            // Casts written apart may plan as one (`c::text` and
                            // `CAST(c AS varchar)` are both `CAST(c AS Utf8)`), so compare
                            // without them: a false match only costs an internal name.
                            let mut bare = other.clone();
                            let _ = visit_expressions_mut(&mut bare, |e| {
                                if let Expr::Cast { expr, .. } = e {
                                    *e = std::mem::replace(
                                        expr.as_mut(),
                                        Expr::Value(Value::Null.into()),
                                    );
                                }
                                std::ops::ControlFlow::<()>::Continue(())
                            });
                            bare.to_string()
                        }
                    }
                }
                let key = planned_name(e);
                // Only a bare column is sure to be planned under the name shown: a cast
                // of one is named by the qualified column (`t.a`).
                let bare_column = matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
                if key != shown || !bare_column {
                    names.renamed.push((pos, shown.clone()));
                }
                (key, shown, e.clone(), !bare_column)
            }
            // `*` (and any item of several columns): its column count is known only
            // from the result.
            _ => {
                names.wildcards.push(pos);
                continue;
            }
        };
        // A column named after a `*` may repeat one the `*` expands to: plan it under an
        // internal name too.
        let after_wildcard = !names.wildcards.is_empty()
            && matches!(
                item,
                SelectItem::UnnamedExpr(Expr::Identifier(_) | Expr::CompoundIdentifier(_))
            );
        let shown_before = expression && !shown_expressions.insert(shown.clone());
        if !seen.insert(key) || after_wildcard || shown_before {
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: Ident::with_quote('"', format!("__flotilla_column_{pos}")),
            };
            names.renamed.retain(|(p, _)| *p != pos);
            names.renamed.push((pos, shown));
        }
    }
    names
}

/// Output columns to show under PostgreSQL's names; see `uniquify_output_names`.
#[derive(Debug, Default)]
pub(crate) struct OutputNames {
    /// (projection item, name) pairs.
    renamed: Vec<(usize, String)>,
    /// Number of projection items.
    items: usize,
    /// Positions of `*` items, whose column counts are known only from the result.
    wildcards: Vec<usize>,
}

impl OutputNames {
    /// The output column of projection item `pos` in a result of `columns` columns.
    fn column(&self, pos: usize, columns: usize) -> Option<usize> {
        match self.wildcards.as_slice() {
            [] => Some(pos),
            [w, ..] if pos < *w => Some(pos),
            // After one `*`, count from the end.
            [w] if pos > *w => (columns + pos).checked_sub(self.items),
            _ => None,
        }
    }
}

/// Shows renamed columns under the names the query gave them.
pub(crate) fn restore_names(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    names: &OutputNames,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    if names.renamed.is_empty() {
        return Ok((schema, batches));
    }
    let mut fields: Vec<datafusion::arrow::datatypes::Field> =
        schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let columns = fields.len();
    for (pos, name) in &names.renamed {
        if let Some(f) = names.column(*pos, columns).and_then(|c| fields.get_mut(c)) {
            *f = f.clone().with_name(name);
        }
    }
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    let batches = batches
        .into_iter()
        .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok((schema, batches))
}

pub(crate) fn prepare_query_statement(statement: &Statement) -> (Statement, OutputNames) {
    let mut statement = statement.clone();
    let mut renamed = OutputNames::default();
    match &mut statement {
        Statement::Query(q) => {
            alias_function_columns(q);
            name_subquery_columns(q);
            renamed = uniquify_output_names(q);
        }
        Statement::Explain {
            statement: inner, ..
        } => {
            if let Statement::Query(q) = inner.as_mut() {
                alias_function_columns(q);
                name_subquery_columns(q);
            }
        }
        _ => {}
    }
    (statement, renamed)
}

/// Most view expansions in one statement: bounds a view that (through OR REPLACE) came to
/// name itself.
const VIEW_EXPANSIONS_MAX: usize = 64;

/// Replaces every reference to a view by its defining query (as a derived table named
/// after the view, or after the reference's alias).
struct ViewExpander<'a, 'e> {
    snapshot: &'a CatalogSnapshot,
    /// Expansions so far in the whole statement, views within views included.
    expansions: &'e mut usize,
    /// The names of the common table expressions in scope, one entry per enclosing query.
    /// An unqualified name that one of them declares is that CTE, not a view (as in
    /// PostgreSQL, a CTE hides a relation of the same name).
    ctes: Vec<Vec<String>>,
    /// The WITH clauses of the enclosing queries, held out of the tree while their bodies are
    /// visited: their CTEs are expanded each in its own scope.
    withs: Vec<Option<With>>,
    error: Option<SqlError>,
}

impl ViewExpander<'_, '_> {
    fn names_a_cte(&self, name: &ObjectName) -> bool {
        name.0.len() == 1 && {
            let name = relation_name(name);
            self.ctes.iter().flatten().any(|cte| *cte == name)
        }
    }

    /// Expands the views in the CTEs of a WITH clause. A CTE sees the CTEs before it (all
    /// of them under RECURSIVE), so `WITH v AS (SELECT * FROM v)` reads the view `v`.
    fn expand_ctes(&mut self, with: &mut With) -> Result<Vec<String>, SqlError> {
        let names: Vec<String> = with
            .cte_tables
            .iter()
            .map(|cte| ident_name(&cte.alias.name))
            .collect();
        for (i, cte) in with.cte_tables.iter_mut().enumerate() {
            let visible = if with.recursive {
                &names[..]
            } else {
                &names[..i]
            };
            let mut scope = self.ctes.clone();
            scope.push(visible.to_vec());
            expand_in(cte.query.as_mut(), self.snapshot, self.expansions, scope)?;
        }
        Ok(names)
    }
}

impl VisitorMut for ViewExpander<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let mut with = query.with.take();
        let names = match with.as_mut().map(|w| self.expand_ctes(w)) {
            None => Vec::new(),
            Some(Ok(names)) => names,
            Some(Err(e)) => {
                self.error = Some(e);
                query.with = with;
                return ControlFlow::Break(());
            }
        };
        self.ctes.push(names);
        self.withs.push(with);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        self.ctes.pop();
        query.with = self.withs.pop().flatten();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if self.names_a_cte(name) {
            return ControlFlow::Continue(());
        }
        let Some(view) = self.snapshot.views.get(&relation_name(name)) else {
            return ControlFlow::Continue(());
        };
        *self.expansions += 1;
        if *self.expansions > VIEW_EXPANSIONS_MAX {
            self.error = Some(SqlError::new(
                "54001",
                format!(
                    "view \"{}\" expands more than {VIEW_EXPANSIONS_MAX} times",
                    view.name
                ),
            ));
            return ControlFlow::Break(());
        }
        let mut body = match parse_one(&view.query) {
            Ok(statement @ Statement::Query(_)) => statement,
            Ok(_) | Err(_) => {
                self.error = Some(SqlError::internal(format!(
                    "stored view {} is not a query",
                    view.name
                )));
                return ControlFlow::Break(());
            }
        };
        // The view's own names resolve where it was defined, not among the CTEs of the
        // query that names it: expand its body in a scope of its own first.
        if let Err(e) = expand_in(&mut body, self.snapshot, self.expansions, Vec::new()) {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        let Statement::Query(query) = body else {
            unreachable!("matched as a query above");
        };
        let mut alias = alias.clone().unwrap_or(TableAlias {
            explicit: true,
            name: Ident::with_quote('"', view.name.clone()),
            columns: vec![],
            at: None,
        });
        if alias.columns.is_empty() {
            alias.columns = view
                .columns
                .iter()
                .map(|c| TableAliasColumnDef::from_name(c.clone()))
                .collect();
        }
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: query,
            alias: Some(alias),
            sample: None,
        };
        ControlFlow::Continue(())
    }
}

/// Rejects what PostgreSQL's grammar rejects but DataFusion's planner would accept.
pub(crate) fn check_grammar(statement: &Statement) -> Result<(), SqlError> {
    use datafusion::sql::sqlparser::ast::{
        DuplicateTreatment, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions,
    };
    let mut error = None;
    let _ = visit_expressions(statement, |e: &Expr| {
        if let Expr::Function(f) = e
            && let FunctionArguments::List(list) = &f.args
            && list.duplicate_treatment == Some(DuplicateTreatment::Distinct)
            && list.args.iter().any(|a| {
                matches!(
                    a,
                    FunctionArg::Unnamed(
                        FunctionArgExpr::Wildcard | FunctionArgExpr::QualifiedWildcard(_)
                    )
                )
            })
        {
            error = Some(SqlError::new(
                "42601",
                "syntax error at or near \"*\": DISTINCT * is not allowed in an aggregate",
            ));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    error.map_or(Ok(()), Err)
}

/// Expands views in a statement.
pub(crate) fn expand_views(
    statement: &mut Statement,
    snapshot: &CatalogSnapshot,
) -> Result<(), SqlError> {
    if snapshot.views.is_empty() {
        return Ok(());
    }
    expand_in(statement, snapshot, &mut 0, Vec::new())
}

/// Expands the views in `node`, with the CTEs `ctes` in scope. On an error `node` is left half
/// expanded (a WITH clause may be missing): the caller discards it.
fn expand_in<T: VisitMut>(
    node: &mut T,
    snapshot: &CatalogSnapshot,
    expansions: &mut usize,
    ctes: Vec<Vec<String>>,
) -> Result<(), SqlError> {
    let mut expander = ViewExpander {
        snapshot,
        expansions,
        ctes,
        withs: Vec::new(),
        error: None,
    };
    let _ = node.visit(&mut expander);
    expander.error.map_or(Ok(()), Err)
}

/// Expands views in a query.
pub(crate) fn expand_views_in_query(
    query: &mut Box<Query>,
    snapshot: &CatalogSnapshot,
) -> Result<(), SqlError> {
    let mut statement = Statement::Query(query.clone());
    expand_views(&mut statement, snapshot)?;
    if let Statement::Query(q) = statement {
        *query = q;
    }
    Ok(())
}

fn rows_tag(verb: &str, n: usize) -> String {
    match verb {
        "INSERT" => format!("INSERT 0 {n}"),
        _ => format!("{verb} {n}"),
    }
}

/// What describing a statement gives: its parameters' types by name (`$1`) and its result
/// columns, if it answers with rows.
pub(crate) type Described = (HashMap<String, DataType>, Option<SchemaRef>);

/// Parameter types and result schema of a statement, for the extended protocol.
pub(crate) async fn describe(
    session: &mut Session,
    statement: &Statement,
) -> Result<Described, SqlError> {
    crate::cte::check_top_level(statement)?;
    let mut expanded = statement.clone();
    expand_views(&mut expanded, &session.catalog())?;
    describe_expanded(session, &expanded).await
}

/// The parameter types a plan settled.
fn collect_types(plan: &datafusion::logical_expr::LogicalPlan) -> HashMap<String, DataType> {
    plan.get_parameter_types()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.map(|t| (k, t)))
        .collect()
}

/// `describe` of an UPDATE or DELETE: the parameters of the SELECT of its target rows,
/// and its RETURNING columns.
async fn describe_target_select(
    session: &Session,
    table: &TableDef,
    alias: Option<&str>,
    select: Statement,
    returning: Option<&[SelectItem]>,
) -> Result<Described, SqlError> {
    let ctx = session.context(Timestamp::MAX, vec![table.name.clone()], HashMap::new());
    let plan = ctx.plan(select).await?;
    let schema = returning_schema(session, table, alias, returning).await?;
    Ok((collect_types(&plan), schema))
}

/// `describe` of a statement whose views are expanded.
pub(crate) async fn describe_expanded(
    session: &mut Session,
    statement: &Statement,
) -> Result<Described, SqlError> {
    if let Statement::Query(q) = statement
        && crate::cte::runs_in_parts(q)
    {
        return crate::cte::describe(session, q).await;
    }
    let session = &*session;
    let ts = Timestamp::MAX;
    match statement {
        Statement::Query(_) | Statement::Explain { .. } => {
            let ctx = session.context(ts, Vec::new(), HashMap::new());
            let (prepared, renamed) = prepare_query_statement(statement);
            let plan = ctx.plan(prepared).await?;
            let (schema, _) = restore_names(ctx.output_schema(&plan)?, vec![], &renamed)?;
            Ok((collect_types(&plan), Some(schema)))
        }
        Statement::Insert(insert) => {
            let table = target_table(session, &insert_table_name(insert)?)?;
            let targets = insert_targets(&table, insert)?;
            let mut types = HashMap::new();
            if let Some(source) = &insert.source {
                if let SetExpr::Values(values) = source.body.as_ref() {
                    for row in &values.rows {
                        for (expr, &col) in row.iter().zip(&targets) {
                            if let Expr::Value(v) = expr
                                && let datafusion::sql::sqlparser::ast::Value::Placeholder(p) =
                                    &v.value
                            {
                                types.insert(
                                    p.clone(),
                                    crate::types::arrow_type(&table.columns[col].ty),
                                );
                            }
                        }
                    }
                }
                let ctx = session.context(ts, Vec::new(), HashMap::new());
                if let Ok(plan) = ctx.plan(Statement::Query(source.clone())).await {
                    for (k, v) in collect_types(&plan) {
                        types.entry(k).or_insert(v);
                    }
                }
            }
            let schema =
                returning_schema(session, &table, None, insert.returning.as_deref()).await?;
            Ok((types, schema))
        }
        Statement::Update(update) => {
            let (table, alias) = update_target(session, &update.table)?;
            let select = update_select(&table, alias.as_deref(), update)?;
            let returning = update.returning.as_deref();
            describe_target_select(session, &table, alias.as_deref(), select, returning).await
        }
        Statement::Delete(delete) => {
            let (table, alias) = delete_target(session, delete)?;
            let select = delete_select(&table, alias.as_deref(), delete)?;
            let returning = delete.returning.as_deref();
            describe_target_select(session, &table, alias.as_deref(), select, returning).await
        }
        Statement::Execute {
            name: Some(name),
            parameters,
            ..
        } => Ok(match session.named_statement(name) {
            Some(prepared) => (
                crate::prepared::execute_parameter_types(prepared, parameters),
                prepared.result_schema.clone(),
            ),
            // EXECUTE says so when it runs.
            None => (HashMap::new(), None),
        }),
        _ => Ok((HashMap::new(), None)),
    }
}

/// Executes a query or DML statement at `read_ts` in the session's open transaction.
pub(crate) async fn execute(
    session: &mut Session,
    statement: &Statement,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    check_grammar(statement)?;
    crate::cte::check_top_level(statement)?;
    let mut expanded;
    let statement = if session.catalog().views.is_empty() {
        statement
    } else {
        expanded = statement.clone();
        expand_views(&mut expanded, &session.catalog())?;
        &expanded
    };
    execute_expanded(session, statement, read_ts).await
}

/// `execute` of a statement whose views are expanded (a part of a WITH statement: its
/// names are the WITH queries', which must not be taken for views).
pub(crate) async fn execute_expanded(
    session: &mut Session,
    statement: &Statement,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    if let Statement::Query(q) = statement
        && crate::cte::runs_in_parts(q)
    {
        return crate::cte::execute(session, q, read_ts).await;
    }
    let settled;
    let statement = match crate::locking::settle_nested_locks(session, statement, read_ts).await? {
        Some(s) => {
            settled = s;
            &settled
        }
        None => statement,
    };
    // The fast path reads tables by name from the catalog: a WITH query's rows are not there.
    if session.with_results.is_empty()
        && let Some(result) = crate::fast::try_execute(session, statement, read_ts).await?
    {
        return Ok(result);
    }
    match statement {
        Statement::Query(q) if !q.locks.is_empty() => {
            crate::locking::select_locking(session, q, read_ts).await
        }
        Statement::Query(_) | Statement::Explain { .. } => {
            let ctx = session.context(read_ts, Vec::new(), HashMap::new());
            let (prepared, renamed) = prepare_query_statement(statement);
            let plan = ctx.plan(prepared).await?;
            let limits = Collect::result(&session.engine.config, session.result_bytes_held());
            let (schema, batches) = ctx.run_with_schema(plan, limits).await?;
            let (schema, batches) = restore_names(schema, batches, &renamed)?;
            let n: usize = batches.iter().map(|b| b.num_rows()).sum();
            let tag = if matches!(statement, Statement::Explain { .. }) {
                "EXPLAIN".to_string()
            } else {
                format!("SELECT {n}")
            };
            Ok(QueryResult::Rows {
                schema,
                batches,
                tag,
            })
        }
        Statement::Insert(insert) => execute_insert(session, insert, read_ts).await,
        Statement::Update(update) => execute_update(session, update, read_ts).await,
        Statement::Delete(delete) => execute_delete(session, delete, read_ts).await,
        other => Err(SqlError::unsupported(format!(
            "statement \"{}\"",
            other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

/// Runs `statement` inside a READ COMMITTED transaction without a snapshot timestamp if it
/// is a point statement the fast path can run so (see
/// `fast::try_execute_without_snapshot`); `Ok(None)`: not handled, nothing done but locks
/// the statement would take anyway.
pub(crate) async fn execute_without_snapshot(
    session: &mut Session,
    statement: &Statement,
) -> Result<Option<QueryResult>, SqlError> {
    check_grammar(statement)?;
    if !session.catalog().views.is_empty() {
        // A view of the same name would have to be expanded first.
        return Ok(None);
    }
    crate::fast::try_execute_without_snapshot(session, statement).await
}

pub(crate) fn target_table(session: &Session, name: &str) -> Result<Arc<TableDef>, SqlError> {
    session
        .catalog()
        .table(name)
        .cloned()
        .ok_or_else(|| no_such_table(name))
}

fn insert_table_name(insert: &Insert) -> Result<String, SqlError> {
    match &insert.table {
        TableObject::TableName(name) => Ok(relation_name(name)),
        _ => Err(SqlError::unsupported("INSERT INTO a table function")),
    }
}

/// Positions (in table column order) of the INSERT's target columns.
fn insert_targets(table: &TableDef, insert: &Insert) -> Result<Vec<usize>, SqlError> {
    if insert.columns.is_empty() {
        return Ok((0..table.columns.len()).collect());
    }
    let mut targets = Vec::with_capacity(insert.columns.len());
    for column in &insert.columns {
        let name = relation_name(column);
        let pos = table
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| no_such_column(table, &name))?;
        if targets.contains(&pos) {
            return Err(SqlError::new(
                "42701",
                format!("column \"{name}\" specified more than once"),
            ));
        }
        targets.push(pos);
    }
    Ok(targets)
}

/// True for a column that takes no value but its sequence's (`GENERATED ALWAYS AS
/// IDENTITY`).
pub(crate) fn always_generated(column: &ColumnDef) -> bool {
    column
        .sequence
        .as_ref()
        .is_some_and(|s| s.identity == Some(Identity::Always))
}

fn identity_error(message: String, column: &ColumnDef) -> SqlError {
    SqlError::new("428C9", message).with_hint(format!(
        "Column \"{}\" is an identity column defined as GENERATED ALWAYS: leave it out or \
         write DEFAULT (GENERATED BY DEFAULT takes given values).",
        column.name
    ))
}

/// Refuses an INSERT that gives a `GENERATED ALWAYS` identity column a value: every
/// row of a VALUES list must say DEFAULT there, and a query may not fill it.
fn check_identity_insert(
    table: &TableDef,
    targets: &[usize],
    source: Option<&Query>,
) -> Result<(), SqlError> {
    for (j, &pos) in targets.iter().enumerate() {
        let column = &table.columns[pos];
        if !always_generated(column) {
            continue;
        }
        let given = match source.map(|q| q.body.as_ref()) {
            None => false,
            Some(SetExpr::Values(values)) => values
                .rows
                .iter()
                .any(|row| row.get(j).is_some_and(|e| !is_default_keyword(e))),
            Some(_) => true,
        };
        if given {
            return Err(identity_error(
                format!(
                    "cannot insert a non-DEFAULT value into column \"{}\"",
                    column.name
                ),
                column,
            ));
        }
    }
    Ok(())
}

/// 42703: `table` has no column `name`.
pub(crate) fn no_such_column(table: &TableDef, name: &str) -> SqlError {
    SqlError::new(
        "42703",
        format!(
            "column \"{name}\" of relation \"{}\" does not exist",
            table.name
        ),
    )
}

fn default_expr(table: &TableDef, pos: usize) -> Result<Expr, SqlError> {
    let sql = table.columns[pos].default.as_deref().unwrap_or("NULL");
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| SqlError::internal(format!("stored default {sql}: {e}")))
}

/// Casts a string literal for a column of an array type to that type, as PostgreSQL
/// types it by its column: a VALUES list may then mix `'{1,2}'` with `ARRAY[3]`, which
/// DataFusion would refuse to unify.
fn typed_array_literal(expr: &mut Expr, ty: &SqlType) {
    let is_string = matches!(
        expr,
        Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_))
    );
    if !is_string || ty.element().is_none() {
        return;
    }
    if let Some(data_type) = crate::params::sql_type(&crate::types::arrow_type(ty)) {
        *expr = Expr::Cast {
            kind: datafusion::sql::sqlparser::ast::CastKind::DoubleColon,
            expr: Box::new(expr.clone()),
            data_type,
            array: false,
            format: None,
        };
    }
}

pub(crate) fn is_default_keyword(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// Evaluates the default of column `pos` for `n` rows: once if it gives every row the
/// same value, else once per row (`nextval`, `random()`), as PostgreSQL does.
pub(crate) async fn default_array(
    session: &Session,
    table: &TableDef,
    pos: usize,
    n: usize,
    read_ts: Timestamp,
) -> Result<ArrayRef, SqlError> {
    let column = &table.columns[pos];
    let array = match &column.default {
        None => ScalarValue::Null
            .to_array_of_size(n)
            .map_err(datafusion_error)?,
        // Numbered by its own sequence: the n values in one allocation.
        Some(sql)
            if column
                .sequence
                .as_ref()
                .is_some_and(|s| *sql == crate::sequence::nextval_default(s)) =>
        {
            let sequence = column.sequence.as_ref().expect("matched");
            Arc::new(datafusion::arrow::array::Int64Array::from(
                session.sequences.next_of(sequence, n)?,
            ))
        }
        Some(sql) => {
            let ctx = session.context(read_ts, Vec::new(), HashMap::new());
            let plan = ctx.plan(parse_one(&format!("SELECT {sql}"))?).await?;
            if n > 0 && plan.expressions().iter().any(|e| e.is_volatile()) {
                let per_row = format!("SELECT {sql} FROM generate_series(1, {n})");
                let plan = ctx.plan(parse_one(&per_row)?).await?;
                let batches = ctx.run(plan, Collect::derived(n)).await?;
                let columns: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(0).as_ref()).collect();
                let array = datafusion::arrow::compute::concat(&columns)
                    .map_err(|e| datafusion_error(e.into()))?;
                assert_eq!(array.len(), n, "one default per row");
                array
            } else {
                let batches = ctx.run(plan, Collect::derived(1)).await?;
                let value = batches
                    .first()
                    .map(|b| ScalarValue::try_from_array(b.column(0), 0))
                    .transpose()
                    .map_err(datafusion_error)?
                    .unwrap_or(ScalarValue::Null);
                value.to_array_of_size(n).map_err(datafusion_error)?
            }
        }
    };
    cast_to_column(&array, &column.ty, &column.name)
}

/// Evaluates `column`'s default once (NULL without one), fitted to its type.
pub(crate) async fn evaluate_default(
    session: &Session,
    column: &ColumnDef,
) -> Result<Datum, SqlError> {
    let table = TableDef {
        id: 0,
        storage_id: 0,
        name: String::new(),
        columns: vec![column.clone()],
        handle: Handle::RowId,
        indexes: vec![],
        next_column_id: column.id + 1,
        next_index_id: 1,
        checks: Vec::new(),
        foreign_keys: Vec::new(),
    };
    let array = default_array(session, &table, 0, 1, Timestamp::MAX).await?;
    fit_to_column(datum_at(&array, 0, &column.ty), &column.ty)
}

/// Turns arrays in table column order into checked rows.
fn arrays_to_rows(
    table: &TableDef,
    columns: &[ArrayRef],
    n: usize,
) -> Result<Vec<Vec<Datum>>, SqlError> {
    let mut rows = Vec::with_capacity(n);
    for r in 0..n {
        let mut row = Vec::with_capacity(columns.len());
        for (c, array) in columns.iter().enumerate() {
            let def = &table.columns[c];
            let datum = fit_to_column(datum_at(array, r, &def.ty), &def.ty)?;
            if datum.is_null() && def.refuses_null() {
                return Err(crate::error::not_null_violation(&table.name, &def.name));
            }
            row.push(datum);
        }
        rows.push(row);
    }
    Ok(rows)
}

pub(crate) fn rows_to_batch(
    table: &TableDef,
    rows: &[Vec<Datum>],
) -> Result<RecordBatch, SqlError> {
    let schema = table_schema(table, false);
    let columns: Vec<ArrayRef> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut b = ColumnBuilder::new(&c.ty, rows.len());
            for row in rows {
                b.push(&row[i]);
            }
            b.finish()
        })
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| SqlError::internal(e.to_string()))
}

/// A stored value as PostgreSQL prints it in messages (a key in a DETAIL), for a column
/// of type `ty`.
pub(crate) fn datum_text(d: &Datum, ty: &SqlType) -> String {
    match d {
        Datum::Null => "null".into(),
        Datum::Bool(b) => if *b { "t" } else { "f" }.into(),
        Datum::Int(v) if *ty == SqlType::Time => {
            crate::pg_text::time_text(*v).unwrap_or_else(|| v.to_string())
        }
        Datum::Int(v) => v.to_string(),
        Datum::Float(v) if *ty == SqlType::Float32 => crate::pg_text::float4_text(*v as f32),
        Datum::Float(v) => crate::pg_text::float8_text(*v),
        Datum::Decimal(v) => match ty {
            SqlType::Numeric { scale, .. } if *scale > 0 => {
                let digits = format!("{:0>width$}", v.unsigned_abs(), width = *scale as usize + 1);
                let (int, frac) = digits.split_at(digits.len() - *scale as usize);
                format!("{}{int}.{frac}", if *v < 0 { "-" } else { "" })
            }
            _ => v.to_string(),
        },
        Datum::Bytes(b) if *ty == SqlType::Uuid => crate::pg_uuid::text(b),
        Datum::Bytes(b) if *ty == SqlType::Interval => match crate::types::interval_of_datum(b) {
            Some(i) => crate::pg_text::interval_text(i.months, i.days, i.nanoseconds / 1_000),
            None => "?".into(),
        },
        Datum::Bytes(_) if let Some(element) = ty.element() => {
            let Some(elements) = crate::types::decode_elements(d) else {
                return "?".into();
            };
            let texts: Vec<String> = elements
                .iter()
                .map(|e| match e {
                    Datum::Null => "NULL".into(),
                    e => crate::pg_array::element_text(&datum_text(e, element)),
                })
                .collect();
            format!("{{{}}}", texts.join(","))
        }
        Datum::Bytes(b) => format!(
            "\\x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
        Datum::String(s) => s.clone(),
        Datum::Date(v) => chrono::NaiveDate::default()
            .checked_add_signed(chrono::Duration::days(i64::from(*v)))
            .map_or_else(|| v.to_string(), crate::pg_text::date_text),
        Datum::Timestamp(v) => chrono::DateTime::from_timestamp_micros(*v).map_or_else(
            || v.to_string(),
            |at| crate::pg_text::timestamp_text(at.naive_utc(), *ty == SqlType::TimestampTz),
        ),
    }
}

/// The values of `columns` (ids of `table`'s columns) as a key DETAIL lists them.
pub(crate) fn key_text(table: &TableDef, columns: &[ColumnId], values: &[Datum]) -> String {
    values
        .iter()
        .zip(columns)
        .map(|(d, id)| match table.column_by_id(*id) {
            Some(c) => datum_text(d, &c.ty),
            None => datum_text(d, &SqlType::Text),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A unique violation for `key`, naming the constraint and the duplicate values.
pub(crate) fn unique_violation(table: &TableDef, key: &[u8], row: Option<&[Datum]>) -> SqlError {
    let index: Option<&IndexDef> = if key.starts_with(&record_prefix(table.storage_id)) {
        table.primary_key()
    } else {
        flotilla_codec::decode_index_key(key, 0)
            .ok()
            .and_then(|(_, id, _, _)| table.indexes.iter().find(|i| i.id == id))
    };
    let name = index
        .map(|i| i.name.clone())
        .unwrap_or_else(|| format!("{}_pkey", table.name));
    let mut err = SqlError::new(
        "23505",
        format!("duplicate key value violates unique constraint \"{name}\""),
    );
    if let (Some(index), Some(row)) = (index, row) {
        let vals = crate::rows::index_values(table, index, row);
        err = err.with_detail(format!(
            "Key ({})=({}) already exists.",
            table.column_list(&index.columns),
            key_text(table, &index.columns, &vals)
        ));
    }
    err
}

/// Keys an inserted row claims: (key, must not exist). Returns also whether the row
/// collides with a row this transaction already wrote.
pub(crate) fn claimed_keys(
    session: &Session,
    table: &TableDef,
    row: &[Datum],
    handle: &[u8],
    fresh_handle: bool,
) -> Result<Vec<(Vec<u8>, bool)>, Vec<u8>> {
    let txn = &session.open.as_ref().expect("open transaction").txn;
    let mut keys = Vec::new();
    let mut claim = |key: Vec<u8>| -> Result<(), Vec<u8>> {
        match txn.buffered(&key) {
            Some(Some(_)) => Err(key),
            Some(None) => {
                keys.push((key, false));
                Ok(())
            }
            None => {
                keys.push((key, true));
                Ok(())
            }
        }
    };
    if !fresh_handle {
        claim(row_key(table, handle))?;
    }
    for index in table.stored_indexes().filter(|i| i.state.takes_writes()) {
        if let Some((key, _, true)) = index_entry(table, index, row, handle) {
            claim(key)?;
        }
    }
    Ok(keys)
}

pub(crate) fn put_row(
    session: &mut Session,
    table: &TableDef,
    row: &[Datum],
    handle: &[u8],
) -> Result<(), SqlError> {
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    txn.put(row_key(table, handle), row_value(table, row))?;
    for index in table.stored_indexes().filter(|i| i.state.takes_writes()) {
        if let Some((key, value, _)) = index_entry(table, index, row, handle) {
            txn.put(key, value)?;
        }
    }
    Ok(())
}

/// Inserts checked rows; returns those inserted (ON CONFLICT DO NOTHING skips some).
pub(crate) async fn insert_rows(
    session: &mut Session,
    table: &TableDef,
    rows: Vec<Vec<Datum>>,
    do_nothing: bool,
) -> Result<Vec<Vec<Datum>>, SqlError> {
    crate::check::enforce(session, table, &rows).await?;
    let mut inserted = Vec::with_capacity(rows.len());
    // Their handles, for a foreign key check put off until commit.
    let mut handles_inserted: Vec<Vec<u8>> = Vec::new();
    let keep_handles = !table.foreign_keys.is_empty();
    for chunk in rows.chunks(WRITE_CHUNK_ROWS) {
        let handles: Vec<(Vec<u8>, bool)> = match table.handle {
            Handle::RowId => {
                let ids = session.engine.catalog.allocate(
                    flotilla_catalog::IdKind::RowId(table.id),
                    chunk.len() as u64,
                )?;
                ids.map(|id| (row_id_handle(id), true)).collect()
            }
            Handle::PrimaryKey(_) => chunk
                .iter()
                .map(|row| (primary_handle(table, row).expect("pk table"), false))
                .collect(),
        };
        let mut claims = Vec::new();
        let mut ok_rows = Vec::with_capacity(chunk.len());
        let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        for (row, (handle, fresh)) in chunk.iter().zip(&handles) {
            match claimed_keys(session, table, row, handle, *fresh) {
                Ok(keys) => {
                    // Two rows of this very statement claiming one key collide too.
                    if let Some((dup, _)) = keys.iter().find(|(k, _)| seen.contains(k)) {
                        if do_nothing {
                            continue;
                        }
                        return Err(unique_violation(table, dup, Some(row)));
                    }
                    seen.extend(keys.iter().map(|(k, _)| k.clone()));
                    claims.push(keys);
                    ok_rows.push((row, handle));
                }
                Err(key) if do_nothing => {
                    let _ = key;
                }
                Err(key) => return Err(unique_violation(table, &key, Some(row))),
            }
        }
        let all: Vec<(Vec<u8>, bool)> = claims.iter().flatten().cloned().collect();
        let txn = &mut session.open.as_mut().expect("open transaction").txn;
        match txn.lock_keys(all, false).await {
            Ok(_) => {
                for (row, handle) in ok_rows {
                    put_row(session, table, row, handle)?;
                    inserted.push(row.clone());
                    if keep_handles {
                        handles_inserted.push(handle.clone());
                    }
                }
            }
            Err(TxnError::AlreadyExists { key }) => {
                if !do_nothing {
                    let row = ok_rows
                        .iter()
                        .zip(&claims)
                        .find(|(_, keys)| keys.iter().any(|(k, _)| *k == key))
                        .map(|((row, _), _)| row.as_slice());
                    return Err(unique_violation(table, &key, row));
                }
                // Row by row, so only the conflicting rows are skipped.
                for ((row, handle), keys) in ok_rows.into_iter().zip(claims) {
                    let txn = &mut session.open.as_mut().expect("open transaction").txn;
                    match txn.lock_keys(keys, false).await {
                        Ok(_) => {
                            put_row(session, table, row, handle)?;
                            inserted.push(row.clone());
                            if keep_handles {
                                handles_inserted.push(handle.clone());
                            }
                        }
                        Err(TxnError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let written: Vec<(&[Datum], &[u8])> = inserted
        .iter()
        .zip(&handles_inserted)
        .map(|(row, handle)| (row.as_slice(), handle.as_slice()))
        .collect();
    crate::foreign::check_references(session, table, &written).await?;
    Ok(inserted)
}

async fn execute_insert(
    session: &mut Session,
    insert: &Insert,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    let table = target_table(session, &insert_table_name(insert)?)?;
    let targets = insert_targets(&table, insert)?;
    if !session.copying {
        check_identity_insert(&table, &targets, insert.source.as_deref())?;
    }
    let mut upsert = None;
    let do_nothing = match &insert.on {
        None => false,
        // Without a target, a conflict on any unique key skips the row.
        Some(OnInsert::OnConflict(c))
            if c.conflict_target.is_none() && c.action == OnConflictAction::DoNothing =>
        {
            true
        }
        Some(OnInsert::OnConflict(c)) => {
            let alias = insert.table_alias.as_ref().map(|a| ident_name(&a.alias));
            let update = match &c.action {
                OnConflictAction::DoNothing => None,
                OnConflictAction::DoUpdate(update) => Some(update),
            };
            upsert = Some(crate::upsert::resolve(
                &table,
                alias,
                c.conflict_target.as_ref(),
                update,
            )?);
            false
        }
        Some(_) => return Err(SqlError::unsupported("this ON clause of INSERT")),
    };
    let (batches, mut all_rows): (Vec<RecordBatch>, Vec<Vec<Datum>>) = match &insert.source {
        None => {
            // DEFAULT VALUES: one row of defaults.
            let mut columns = Vec::with_capacity(table.columns.len());
            for pos in 0..table.columns.len() {
                columns.push(default_array(session, &table, pos, 1, read_ts).await?);
            }
            (vec![], arrays_to_rows(&table, &columns, 1)?)
        }
        Some(source) => {
            let mut source = source.clone();
            if let SetExpr::Values(values) = source.body.as_mut() {
                for row in &mut values.rows {
                    if row.len() > targets.len() {
                        return Err(SqlError::new(
                            "42601",
                            "INSERT has more expressions than target columns",
                        ));
                    }
                    for (expr, &pos) in row.iter_mut().zip(&targets) {
                        if is_default_keyword(expr) {
                            *expr = default_expr(&table, pos)?;
                        }
                        typed_array_literal(expr, &table.columns[pos].ty);
                    }
                }
            }
            alias_function_columns(&mut source);
            name_subquery_columns(&mut source);
            // INSERT takes the source's columns by position: names may repeat, as in
            // PostgreSQL (`INSERT INTO t SELECT x, x FROM ...`).
            uniquify_output_names(&mut source);
            let ctx = session.context(read_ts, Vec::new(), HashMap::new());
            let plan = ctx.plan(Statement::Query(source)).await?;
            let batches = ctx
                .run(plan, Collect::rows_to_write(&session.engine.config))
                .await?;
            (batches, Vec::new())
        }
    };
    for batch in &batches {
        if batch.num_columns() > targets.len() {
            return Err(SqlError::new(
                "42601",
                "INSERT has more expressions than target columns",
            ));
        }
        let n = batch.num_rows();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; table.columns.len()];
        for (j, &pos) in targets.iter().enumerate().take(batch.num_columns()) {
            let def = &table.columns[pos];
            let source = crate::bpchar::assigned(batch.column(j), batch.schema().field(j), &def.ty);
            columns[pos] = Some(cast_to_column(&source, &def.ty, &def.name)?);
        }
        let mut full = Vec::with_capacity(table.columns.len());
        for (pos, c) in columns.into_iter().enumerate() {
            full.push(match c {
                Some(a) => a,
                None => default_array(session, &table, pos, n, read_ts).await?,
            });
        }
        all_rows.extend(arrays_to_rows(&table, &full, n)?);
    }
    let inserted = match &upsert {
        Some(upsert) => upsert.run(session, &table, all_rows, read_ts).await?,
        None => insert_rows(session, &table, all_rows, do_nothing).await?,
    };
    finish_dml(
        session,
        &table,
        None,
        "INSERT",
        inserted,
        insert.returning.as_deref(),
        read_ts,
    )
    .await
}

/// The query that evaluates RETURNING items over the changed rows (which stand in for the
/// table under its own name).
fn returning_query(table: &TableDef, alias: Option<&str>, items: &[SelectItem]) -> String {
    let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    let mut sql = format!("SELECT {} FROM {}", items.join(", "), quote(&table.name));
    // `UPDATE t AS a ... RETURNING a.x` names the rows by the statement's alias.
    if let Some(alias) = alias {
        sql.push_str(&format!(" AS {}", quote(alias)));
    }
    sql
}

/// The command result of a DML statement: its tag, or its RETURNING rows.
async fn finish_dml(
    session: &Session,
    table: &TableDef,
    alias: Option<&str>,
    verb: &str,
    rows: Vec<Vec<Datum>>,
    returning: Option<&[SelectItem]>,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    let tag = rows_tag(verb, rows.len());
    let Some(items) = returning else {
        return Ok(QueryResult::Command { tag });
    };
    let batch = rows_to_batch(table, &rows)?;
    let mem = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(datafusion_error)?;
    let mut overrides: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    overrides.insert(table.name.clone(), Arc::new(mem));
    let ctx = session.context(read_ts, Vec::new(), overrides);
    let sql = returning_query(table, alias, items);
    // Named as a SELECT list is (`length`, `?column?`, repeated names), not by the text
    // DataFusion plans an expression under.
    let (statement, names) = prepare_query_statement(&parse_one(&sql)?);
    let plan = ctx.plan(statement).await?;
    let limits = Collect::result(&session.engine.config, session.result_bytes_held());
    let (schema, batches) = ctx.run_with_schema(plan, limits).await?;
    let (schema, batches) = restore_names(schema, batches, &names)?;
    Ok(QueryResult::Rows {
        schema,
        batches,
        tag,
    })
}

async fn returning_schema(
    session: &Session,
    table: &TableDef,
    alias: Option<&str>,
    returning: Option<&[SelectItem]>,
) -> Result<Option<SchemaRef>, SqlError> {
    let Some(items) = returning else {
        return Ok(None);
    };
    let ctx = session.context(Timestamp::MAX, Vec::new(), HashMap::new());
    let sql = returning_query(table, alias, items);
    let (statement, names) = prepare_query_statement(&parse_one(&sql)?);
    let plan = ctx.plan(statement).await?;
    let (schema, _) = restore_names(ctx.output_schema(&plan)?, Vec::new(), &names)?;
    Ok(Some(schema))
}

fn update_target(
    session: &Session,
    target: &TableWithJoins,
) -> Result<(Arc<TableDef>, Option<String>), SqlError> {
    if !target.joins.is_empty() {
        return Err(SqlError::unsupported("UPDATE with joins"));
    }
    match &target.relation {
        TableFactor::Table { name, alias, .. } => Ok((
            target_table(session, &relation_name(name))?,
            alias.as_ref().map(|a| ident_name(&a.name)),
        )),
        _ => Err(SqlError::unsupported("UPDATE of this relation")),
    }
}

/// The internal SELECT of an UPDATE or DELETE: the target's columns and handle, then
/// `extra` expressions, from the target joined with `joined` (UPDATE's FROM, DELETE's
/// USING) where `selection` holds.
fn select_of_row(
    table: &TableDef,
    alias: Option<&str>,
    extra: &[String],
    joined: &[TableWithJoins],
    selection: Option<&dyn std::fmt::Display>,
) -> Result<Statement, SqlError> {
    let qualifier = quote(alias.unwrap_or(&table.name));
    let mut items: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{qualifier}.{}", quote(&c.name)))
        .collect();
    items.push(format!("{qualifier}.{}", quote(HANDLE_COLUMN)));
    // Named apart: `SET h = b` would otherwise repeat the name of the column `b` read above.
    items.extend(
        extra
            .iter()
            .enumerate()
            .map(|(i, e)| format!("({e}) AS \"__flotilla_new_{i}\"")),
    );
    let mut sql = format!("SELECT {} FROM {}", items.join(", "), quote(&table.name));
    if let Some(alias) = alias {
        sql.push_str(&format!(" AS {}", quote(alias)));
    }
    for t in joined {
        sql.push_str(&format!(", {t}"));
    }
    if let Some(selection) = selection {
        sql.push_str(&format!(" WHERE {selection}"));
    }
    parse_one(&sql)
}

/// The positions of the assigned columns, checked.
fn assignment_targets(table: &TableDef, update: &Update) -> Result<Vec<usize>, SqlError> {
    assignment_positions(table, &update.assignments)
}

/// The positions of the columns `assignments` assign (UPDATE's SET, ON CONFLICT's),
/// checked: each a column of `table`, none twice.
pub(crate) fn assignment_positions(
    table: &TableDef,
    assignments: &[Assignment],
) -> Result<Vec<usize>, SqlError> {
    let mut targets = Vec::new();
    for a in assignments {
        let AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(SqlError::unsupported("assignment to a tuple of columns"));
        };
        let col = relation_name(name);
        let pos = table
            .columns
            .iter()
            .position(|c| c.name == col)
            .ok_or_else(|| no_such_column(table, &col))?;
        if targets.contains(&pos) {
            return Err(SqlError::new(
                "42601",
                format!("multiple assignments to same column \"{col}\""),
            ));
        }
        targets.push(pos);
    }
    Ok(targets)
}

fn update_select(
    table: &TableDef,
    alias: Option<&str>,
    update: &Update,
) -> Result<Statement, SqlError> {
    assignment_targets(table, update)?;
    let extra: Vec<String> = update
        .assignments
        .iter()
        .map(|a| {
            if is_default_keyword(&a.value) {
                // A placeholder: the statement evaluates the default itself, per row.
                "NULL".to_string()
            } else {
                a.value.to_string()
            }
        })
        .collect();
    select_of_row(
        table,
        alias,
        &extra,
        update_from(update)?,
        update.selection.as_ref().map(|e| e as _),
    )
}

/// The tables of UPDATE's FROM (PostgreSQL's form, after SET).
fn update_from(update: &Update) -> Result<&[TableWithJoins], SqlError> {
    match &update.from {
        None => Ok(&[]),
        Some(UpdateTableFromKind::AfterSet(tables)) => Ok(tables),
        Some(UpdateTableFromKind::BeforeSet(_)) => Err(SqlError::new(
            "42601",
            "FROM goes after SET in an UPDATE: UPDATE t SET ... FROM ... WHERE ...",
        )),
    }
}

/// The rows of `batches` by position, each target row once: joined with FROM's or USING's
/// tables, a row may be read once per match, and PostgreSQL then changes it once (with
/// one of the matches).
fn first_per_handle(table: &TableDef, batches: &[RecordBatch]) -> Vec<(usize, u32)> {
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let handles = batch
            .column(table.columns.len())
            .as_any()
            .downcast_ref::<BinaryArray>()
            .expect("handle column is binary");
        for r in 0..batch.num_rows() {
            if seen.insert(handles.value(r).to_vec()) {
                rows.push((b, r as u32));
            }
        }
    }
    rows
}

/// The name `joined` (or a table joined to it) goes by, if it is `name`.
fn named_like(joined: &TableWithJoins, name: &str) -> Option<String> {
    std::iter::once(&joined.relation)
        .chain(joined.joins.iter().map(|j| &j.relation))
        .find_map(|f| {
            let called = match f {
                TableFactor::Table { alias: Some(a), .. } => ident_name(&a.name),
                TableFactor::Table { name, .. } => relation_name(name),
                _ => return None,
            };
            (called == name).then_some(called)
        })
}

/// Checks FROM's or USING's tables and RETURNING before anything is written: no joined
/// table may go by the target's name, and RETURNING can refer only to the target's
/// columns here.
async fn check_joined(
    session: &Session,
    table: &TableDef,
    alias: Option<&str>,
    joined: &[TableWithJoins],
    returning: Option<&[SelectItem]>,
) -> Result<(), SqlError> {
    if joined.is_empty() {
        return Ok(());
    }
    if let Some(t) = joined
        .iter()
        .find_map(|t| named_like(t, alias.unwrap_or(&table.name)))
    {
        return Err(SqlError::new(
            "42712",
            format!("table name \"{t}\" specified more than once"),
        )
        .with_hint("Give one of them an alias."));
    }
    returning_schema(session, table, alias, returning)
        .await
        .map(|_| ())
        .map_err(|e| {
            e.with_hint(
                "RETURNING of UPDATE ... FROM or DELETE ... USING can refer only to the \
                 columns of the table it changes.",
            )
        })
}

/// Old rows (with handles) read by a DML statement's internal SELECT.
async fn read_target_rows(
    session: &Session,
    table: &TableDef,
    select: Statement,
    read_ts: Timestamp,
) -> Result<Vec<RecordBatch>, SqlError> {
    let ctx = session.context(read_ts, vec![table.name.clone()], HashMap::new());
    let plan = ctx.plan(select).await?;
    ctx.run(plan, Collect::rows_to_write(&session.engine.config))
        .await
}

fn old_row(table: &TableDef, batch: &RecordBatch, r: usize) -> (Vec<Datum>, Vec<u8>) {
    let row: Vec<Datum> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| datum_at(batch.column(i), r, &c.ty))
        .collect();
    let handles = batch
        .column(table.columns.len())
        .as_any()
        .downcast_ref::<BinaryArray>()
        .expect("handle column is binary");
    (row, handles.value(r).to_vec())
}

/// One row an UPDATE changes: (old row, old handle, new row, new handle).
pub(crate) type RowChange = (Vec<Datum>, Vec<u8>, Vec<Datum>, Vec<u8>);

/// The lock an UPDATE assigning the columns at `positions` takes on a row before it
/// knows the row's new values: `FOR NO KEY UPDATE` unless one of them is a key column
/// (of the primary key or a unique index), as `update_strength` then finds.
pub(crate) fn update_strength_before(
    key_level: bool,
    table: &TableDef,
    positions: &[usize],
) -> LockStrength {
    let assigns_key = positions.iter().any(|p| {
        let id = table.columns[*p].id;
        table
            .indexes
            .iter()
            .any(|index| index.unique && index.columns.contains(&id))
    });
    if key_level && !assigns_key {
        LockStrength::NoKeyUpdate
    } else {
        LockStrength::Update
    }
}

/// The lock an UPDATE takes on the row `change` rewrites: PostgreSQL's `FOR NO KEY
/// UPDATE` where the row keeps its primary key and every unique key (its test: a key
/// set to the value it had is kept), which the key-only locks of foreign key checks
/// join, so neither waits for the other; `FOR UPDATE` otherwise, and wherever the
/// cluster cannot take key-level locks yet (`key_level` false).
pub(crate) fn update_strength(
    key_level: bool,
    table: &TableDef,
    change: &RowChange,
) -> LockStrength {
    let (old, handle, new, new_handle) = change;
    let keeps_keys = handle == new_handle
        && table
            .stored_indexes()
            .filter(|index| index.unique)
            .all(|index| {
                index_entry(table, index, old, handle).map(|e| e.0)
                    == index_entry(table, index, new, new_handle).map(|e| e.0)
            });
    if key_level && keeps_keys {
        LockStrength::NoKeyUpdate
    } else {
        LockStrength::Update
    }
}

/// Locks and writes the rows an UPDATE changes, maintaining every index, and carries out
/// the foreign keys involved; returns the new rows.
pub(crate) async fn apply_updates(
    session: &mut Session,
    table: &TableDef,
    changes: Vec<RowChange>,
    stored: Vec<Option<Vec<u8>>>,
) -> Result<Vec<Vec<Datum>>, SqlError> {
    let (returned, olds) = write_updates(session, table, changes, stored).await?;
    if let Some(olds) = olds {
        let removed: Vec<&[Datum]> = olds.iter().map(Vec::as_slice).collect();
        let kept: Vec<&[Datum]> = returned.iter().map(Vec::as_slice).collect();
        crate::foreign::check_unreferenced(session, table, &removed, &kept).await?;
    }
    Ok(returned)
}

/// `apply_updates` but for the constraints referencing `table`: returns the new rows and,
/// when a foreign key is involved, the old ones (in the same order), for the caller to
/// carry those out (`foreign::check_unreferenced`).
pub(crate) async fn write_updates(
    session: &mut Session,
    table: &TableDef,
    changes: Vec<RowChange>,
    mut stored: Vec<Option<Vec<u8>>>,
) -> Result<(Vec<Vec<Datum>>, Option<Vec<Vec<Datum>>>), SqlError> {
    assert_eq!(
        stored.len(),
        changes.len(),
        "a stored value slot per change"
    );
    crate::check::refuse_nulls(table, changes.iter().map(|c| &c.2))?;
    if !table.checks.is_empty() {
        let new_rows: Vec<Vec<Datum>> = changes.iter().map(|c| c.2.clone()).collect();
        crate::check::enforce(session, table, &new_rows).await?;
    }
    // Lock every changed row first (the statement re-runs if any changed after read_ts),
    // reading the stored versions not known yet (their columns of a newer schema must
    // survive), then the new keys and the unique keys the new versions claim.
    let unknown: Vec<usize> = (0..changes.len())
        .filter(|i| stored[*i].is_none())
        .collect();
    let key_level = session.engine.may_use(Feature::KeyShareLocks);
    let strengths: Vec<LockStrength> = changes
        .iter()
        .map(|change| update_strength(key_level, table, change))
        .collect();
    for strength in [LockStrength::NoKeyUpdate, LockStrength::Update] {
        let unknown: Vec<usize> = unknown
            .iter()
            .copied()
            .filter(|i| strengths[*i] == strength)
            .collect();
        for chunk in unknown.chunks(WRITE_CHUNK_ROWS) {
            let keys: Vec<(Vec<u8>, bool)> = chunk
                .iter()
                .map(|i| (row_key(table, &changes[*i].1), false))
                .collect();
            let txn = &mut session.open.as_mut().expect("open transaction").txn;
            let values = txn.lock_keys_as(keys, true, strength).await?;
            for (i, value) in chunk.iter().zip(values) {
                stored[*i] = value;
            }
        }
    }
    // Rows whose stored version the caller read are locked here, without a read.
    let mut kept_key_rows: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut locks: Vec<(Vec<u8>, bool)> = Vec::new();
    for (i, (old, handle, new, new_handle)) in changes.iter().enumerate() {
        if unknown.binary_search(&i).is_err() {
            match strengths[i] {
                LockStrength::NoKeyUpdate => kept_key_rows.push((row_key(table, handle), false)),
                _ => locks.push((row_key(table, handle), false)),
            }
        }
        if new_handle != handle {
            let key = row_key(table, new_handle);
            let exists = matches!(
                session.open.as_ref().expect("open").txn.buffered(&key),
                Some(Some(_))
            );
            if exists {
                return Err(unique_violation(table, &key, Some(new)));
            }
            locks.push((key, true));
        }
        for index in table.stored_indexes().filter(|i| i.state.takes_writes()) {
            let old_key = index_entry(table, index, old, handle).map(|e| e.0);
            if let Some((new_key, _, true)) = index_entry(table, index, new, new_handle)
                && Some(&new_key) != old_key.as_ref()
            {
                let fresh = !matches!(
                    session.open.as_ref().expect("open").txn.buffered(&new_key),
                    Some(None)
                );
                locks.push((new_key, fresh));
            }
        }
    }
    for chunk in kept_key_rows.chunks(WRITE_CHUNK_ROWS) {
        let txn = &mut session.open.as_mut().expect("open transaction").txn;
        txn.lock_keys_as(chunk.to_vec(), false, LockStrength::NoKeyUpdate)
            .await?;
    }
    for chunk in locks.chunks(WRITE_CHUNK_ROWS) {
        let txn = &mut session.open.as_mut().expect("open transaction").txn;
        if let Err(e) = txn.lock_keys(chunk.to_vec(), false).await {
            return Err(match e {
                TxnError::AlreadyExists { key } => unique_violation(table, &key, None),
                other => other.into(),
            });
        }
    }
    // The old rows, kept only where a foreign key may need them once the writes are in.
    let involved = crate::foreign::involved(session, table);
    let olds: Vec<Vec<Datum>> = if involved {
        changes.iter().map(|c| c.0.clone()).collect()
    } else {
        Vec::new()
    };
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    let mut returned = Vec::with_capacity(changes.len());
    let mut new_handles = Vec::with_capacity(if involved { changes.len() } else { 0 });
    for ((old, handle, new, new_handle), stored) in changes.into_iter().zip(stored) {
        if new_handle != handle {
            txn.delete(row_key(table, &handle))?;
        }
        txn.put(
            row_key(table, &new_handle),
            row_value_keeping(table, &new, stored.as_deref())?,
        )?;
        for index in table.stored_indexes() {
            let old_entry = index_entry(table, index, &old, &handle);
            let new_entry = index_entry(table, index, &new, &new_handle);
            let changed = old_entry.as_ref().map(|e| &e.0) != new_entry.as_ref().map(|e| &e.0);
            if changed && let Some((old_key, _, _)) = old_entry {
                txn.delete(old_key)?;
            }
            if (changed || new_handle != handle)
                && index.state.takes_writes()
                && let Some((new_key, new_value, _)) = new_entry
            {
                txn.put(new_key, new_value)?;
            }
        }
        returned.push(new);
        if involved {
            new_handles.push(new_handle);
        }
    }
    if involved {
        let referencing: Vec<(&[Datum], &[u8])> = olds
            .iter()
            .zip(&returned)
            .zip(&new_handles)
            .filter(|((old, new), _)| crate::foreign::references_changed(table, old, new))
            .map(|((_, new), handle)| (new.as_slice(), handle.as_slice()))
            .collect();
        crate::foreign::check_references(session, table, &referencing).await?;
        return Ok((returned, Some(olds)));
    }
    Ok((returned, None))
}

async fn execute_update(
    session: &mut Session,
    update: &Update,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    let (table, alias) = update_target(session, &update.table)?;
    let targets = assignment_targets(&table, update)?;
    for (j, &pos) in targets.iter().enumerate() {
        let column = &table.columns[pos];
        if always_generated(column) && !is_default_keyword(&update.assignments[j].value) {
            return Err(identity_error(
                format!("column \"{}\" can only be updated to DEFAULT", column.name),
                column,
            ));
        }
    }
    let select = update_select(&table, alias.as_deref(), update)?;
    let joined = update_from(update)?;
    check_joined(
        session,
        &table,
        alias.as_deref(),
        joined,
        update.returning.as_deref(),
    )
    .await?;
    let mut batches = read_target_rows(session, &table, select, read_ts).await?;
    if !joined.is_empty() {
        batches = crate::locking::pick(&batches, &first_per_handle(&table, &batches))?;
    }
    let ncols = table.columns.len();
    let mut changes: Vec<RowChange> = Vec::new();
    for batch in &batches {
        let n = batch.num_rows();
        let mut new_values: Vec<ArrayRef> = Vec::with_capacity(targets.len());
        for (j, &pos) in targets.iter().enumerate() {
            let def = &table.columns[pos];
            let source = if is_default_keyword(&update.assignments[j].value) {
                default_array(session, &table, pos, n, read_ts).await?
            } else {
                let k = ncols + 1 + j;
                crate::bpchar::assigned(batch.column(k), batch.schema().field(k), &def.ty)
            };
            new_values.push(cast_to_column(&source, &def.ty, &def.name)?);
        }
        for r in 0..n {
            let (old, handle) = old_row(&table, batch, r);
            let mut new = old.clone();
            for (j, &pos) in targets.iter().enumerate() {
                let def = &table.columns[pos];
                let d = fit_to_column(datum_at(&new_values[j], r, &def.ty), &def.ty)?;
                if d.is_null() && def.refuses_null() {
                    return Err(crate::error::not_null_violation(&table.name, &def.name));
                }
                new[pos] = d;
            }
            let new_handle = primary_handle(&table, &new).unwrap_or_else(|| handle.clone());
            changes.push((old, handle, new, new_handle));
        }
    }
    let stored = vec![None; changes.len()];
    let returned = apply_updates(session, &table, changes, stored).await?;
    finish_dml(
        session,
        &table,
        alias.as_deref(),
        "UPDATE",
        returned,
        update.returning.as_deref(),
        read_ts,
    )
    .await
}

fn delete_target(
    session: &Session,
    delete: &Delete,
) -> Result<(Arc<TableDef>, Option<String>), SqlError> {
    let from = match &delete.from {
        FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
    };
    match from.as_slice() {
        [t] => update_target(session, t),
        _ => Err(SqlError::unsupported("DELETE from several tables")),
    }
}

fn delete_select(
    table: &TableDef,
    alias: Option<&str>,
    delete: &Delete,
) -> Result<Statement, SqlError> {
    let using = delete.using.as_deref().unwrap_or(&[]);
    select_of_row(
        table,
        alias,
        &[],
        using,
        delete.selection.as_ref().map(|e| e as _),
    )
}

/// Locks and deletes `victims` (rows of `table` with their handles, read at the
/// statement's snapshot or later), with their index entries; returns the rows.
pub(crate) async fn delete_rows(
    session: &mut Session,
    table: &TableDef,
    victims: Vec<(Vec<Datum>, Vec<u8>)>,
) -> Result<Vec<Vec<Datum>>, SqlError> {
    let keys: Vec<(Vec<u8>, bool)> = victims
        .iter()
        .map(|(_, h)| (row_key(table, h), false))
        .collect();
    for chunk in keys.chunks(WRITE_CHUNK_ROWS) {
        let txn = &mut session.open.as_mut().expect("open transaction").txn;
        txn.lock_keys(chunk.to_vec(), false).await?;
    }
    let txn = &mut session.open.as_mut().expect("open transaction").txn;
    let mut returned = Vec::with_capacity(victims.len());
    for (row, handle) in victims {
        txn.delete(row_key(table, &handle))?;
        for index in table.stored_indexes() {
            if let Some((key, _, _)) = index_entry(table, index, &row, &handle) {
                txn.delete(key)?;
            }
        }
        returned.push(row);
    }
    Ok(returned)
}

/// The rows of `table` (each with its handle) where `condition` (SQL over its column
/// names) holds, read at `read_ts` with the transaction's own writes: the rows a
/// foreign key's action changes.
pub(crate) async fn rows_where(
    session: &mut Session,
    table: &TableDef,
    condition: &str,
    read_ts: Timestamp,
) -> Result<Vec<(Vec<Datum>, Vec<u8>)>, SqlError> {
    let select = select_of_row(table, None, &[], &[], Some(&condition))?;
    // The statement's WITH queries must not stand in for the table.
    let with = std::mem::take(&mut session.with_results);
    let batches = read_target_rows(session, table, select, read_ts).await;
    session.with_results = with;
    Ok(batches?
        .iter()
        .flat_map(|batch| (0..batch.num_rows()).map(move |r| old_row(table, batch, r)))
        .collect())
}

async fn execute_delete(
    session: &mut Session,
    delete: &Delete,
    read_ts: Timestamp,
) -> Result<QueryResult, SqlError> {
    let (table, alias) = delete_target(session, delete)?;
    let select = delete_select(&table, alias.as_deref(), delete)?;
    let using = delete.using.as_deref().unwrap_or(&[]);
    check_joined(
        session,
        &table,
        alias.as_deref(),
        using,
        delete.returning.as_deref(),
    )
    .await?;
    let batches = read_target_rows(session, &table, select, read_ts).await?;
    let victims: Vec<(Vec<Datum>, Vec<u8>)> = if using.is_empty() {
        batches
            .iter()
            .flat_map(|batch| {
                let table = &table;
                (0..batch.num_rows()).map(move |r| old_row(table, batch, r))
            })
            .collect()
    } else {
        first_per_handle(&table, &batches)
            .into_iter()
            .map(|(b, r)| old_row(&table, &batches[b], r as usize))
            .collect()
    };
    let returned = delete_rows(session, &table, victims).await?;
    let removed: Vec<&[Datum]> = returned.iter().map(Vec::as_slice).collect();
    crate::foreign::check_unreferenced(session, &table, &removed, &[]).await?;
    finish_dml(
        session,
        &table,
        alias.as_deref(),
        "DELETE",
        returned,
        delete.returning.as_deref(),
        read_ts,
    )
    .await
}
