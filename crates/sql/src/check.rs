//! CHECK constraints: planned when a table is created, enforced on every row written.
//!
//! A constraint is kept as SQL text over the table's column names (`CheckDef`). Each
//! statement that writes rows to a table with constraints evaluates them all at once
//! through DataFusion, over the new rows as a table of the table's own name (as
//! RETURNING reads them), so the expression means exactly what it means in a query. As
//! in PostgreSQL, a row violates a constraint only when it makes it false (NULL passes),
//! and a row's constraints are tested in the order of their names.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{
    CheckConstraint, Expr, Ident, visit_expressions, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use flotilla_catalog::{CheckDef, TableDef};
use flotilla_codec::Datum;
use flotilla_ddl::CheckRewrite;
use flotilla_types::ColumnId;
use flotilla_types::Timestamp;

use crate::dml::{ident_name, parse_one, quote, rows_to_batch};
use crate::error::{SqlError, datafusion_error};
use crate::session::Session;

/// A CHECK constraint as written in CREATE TABLE (on a column or on the table) or added by
/// ALTER TABLE.
pub(crate) struct Written<'a> {
    /// `CONSTRAINT name` on the column option, which names it when the check does not.
    pub(crate) option_name: Option<&'a Ident>,
    pub(crate) check: &'a CheckConstraint,
}

/// The `SELECT` that evaluates `checks` over rows of `table` (each a boolean column).
fn select_checks<'a>(table: &str, checks: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = checks.map(|c| format!("({c})")).collect();
    format!("SELECT {} FROM {}", items.join(", "), quote(table))
}

/// 0A000 for a subquery, which a CHECK or an index predicate (`what`) may not contain
/// (PostgreSQL's words and code).
pub(crate) fn refuse_subquery(expr: &Expr, what: &str) -> Result<(), SqlError> {
    let found = visit_expressions(expr, |e: &Expr| {
        if matches!(
            e,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
        ) {
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    });
    match found {
        std::ops::ControlFlow::Break(()) => Err(SqlError::new(
            "0A000",
            format!("cannot use subquery in {what}"),
        )),
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// True if `plan` aggregates or windows (a CHECK reads one row).
fn has_node(plan: &LogicalPlan, pred: &dyn Fn(&LogicalPlan) -> bool) -> bool {
    pred(plan) || plan.inputs().into_iter().any(|p| has_node(p, pred))
}

/// The column names an expression reads (its identifiers' last parts).
fn referenced_names(expr: &Expr) -> Vec<String> {
    let mut names = Vec::new();
    let _ = visit_expressions(expr, |e: &Expr| {
        match e {
            Expr::Identifier(i) => names.push(ident_name(i)),
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    names.push(ident_name(last));
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    names
}

/// The CHECK constraints of `table` that read column `from`, each with its expression
/// rewritten to name the column `to` (RENAME COLUMN).
pub(crate) fn renamed_checks(
    table: &TableDef,
    from: &str,
    to: &str,
) -> Result<Vec<CheckRewrite>, SqlError> {
    let Some(id) = table.column(from).map(|c| c.id) else {
        return Ok(Vec::new());
    };
    let new_ident = || {
        if crate::dml::ident_sql(to) == to {
            Ident::new(to)
        } else {
            Ident::with_quote('"', to)
        }
    };
    let mut out = Vec::new();
    for check in table.checks.iter().filter(|c| c.columns.contains(&id)) {
        let mut expr = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&check.expr)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| {
                SqlError::internal(format!("stored check constraint {}: {e}", check.expr))
            })?;
        let _ = visit_expressions_mut(&mut expr, |e: &mut Expr| {
            let ident = match e {
                Expr::Identifier(i) => Some(i),
                Expr::CompoundIdentifier(parts) => parts.last_mut(),
                _ => None,
            };
            if let Some(i) = ident
                && ident_name(i) == from
            {
                *i = new_ident();
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        out.push(CheckRewrite {
            name: check.name.clone(),
            from: check.expr.clone(),
            to: expr.to_string(),
        });
    }
    Ok(out)
}

/// Plans the CHECK constraints of a table being created (its columns already in
/// `table`): names them as PostgreSQL does (`t_col_check`, `t_check`, numbered when
/// taken), and refuses one that is not a boolean expression over the row alone.
pub(crate) async fn plan_checks(
    session: &Session,
    table: &TableDef,
    written: &[Written<'_>],
) -> Result<Vec<CheckDef>, SqlError> {
    let mut checks: Vec<CheckDef> = Vec::new();
    if written.is_empty() {
        return Ok(checks);
    }
    // The expressions are planned over the table, empty, under its own name.
    let empty = rows_to_batch(table, &[])?;
    let mem = MemTable::try_new(empty.schema(), vec![vec![empty]]).map_err(datafusion_error)?;
    let mut overrides: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    overrides.insert(table.name.clone(), Arc::new(mem));
    let ctx = session.context(Timestamp::MAX, Vec::new(), overrides);
    for w in written {
        let expr = &w.check.expr;
        if w.check.enforced == Some(false) {
            return Err(SqlError::unsupported("a NOT ENFORCED check constraint"));
        }
        refuse_subquery(expr, "check constraint")?;
        let text = expr.to_string();
        let plan = ctx
            .plan(parse_one(&select_checks(
                &table.name,
                [text.as_str()].into_iter(),
            ))?)
            .await?;
        if has_node(&plan, &|p| matches!(p, LogicalPlan::Aggregate(_))) {
            return Err(SqlError::new(
                "42803",
                "aggregate functions are not allowed in check constraints",
            ));
        }
        if has_node(&plan, &|p| matches!(p, LogicalPlan::Window(_))) {
            return Err(SqlError::new(
                "42P20",
                "window functions are not allowed in check constraints",
            ));
        }
        let ty = plan.schema().field(0).data_type().clone();
        if !matches!(
            ty,
            datafusion::arrow::datatypes::DataType::Boolean
                | datafusion::arrow::datatypes::DataType::Null
        ) {
            return Err(SqlError::new(
                "42804",
                format!(
                    "argument of CHECK must be type boolean, not type {}",
                    crate::error::pg_type_name(&ty)
                ),
            ));
        }
        let mut columns: Vec<ColumnId> = referenced_names(expr)
            .iter()
            .filter_map(|n| table.column(n).map(|c| c.id))
            .collect();
        columns.sort_unstable();
        columns.dedup();
        let name = match w.check.name.as_ref().or(w.option_name) {
            Some(n) => {
                let n = ident_name(n);
                let index = table.indexes.iter().any(|i| i.name == n);
                if index || checks.iter().chain(&table.checks).any(|c| c.name == n) {
                    return Err(SqlError::new(
                        "42710",
                        format!(
                            "constraint \"{n}\" for relation \"{}\" already exists",
                            table.name
                        ),
                    ));
                }
                n
            }
            None => {
                // PostgreSQL's choice: after the column when the expression reads exactly
                // one, wherever the constraint was written.
                let base = match columns.as_slice() {
                    [id] => format!(
                        "{}_{}_check",
                        table.name,
                        table.columns[table.column_position(*id).expect("a column of the table")]
                            .name
                    ),
                    _ => format!("{}_check", table.name),
                };
                (0..)
                    .map(|k| {
                        if k == 0 {
                            base.clone()
                        } else {
                            format!("{base}{k}")
                        }
                    })
                    .find(|n| !checks.iter().chain(&table.checks).any(|c| c.name == *n))
                    .expect("an unused name")
            }
        };
        checks.push(CheckDef {
            name,
            expr: text,
            columns,
            validated: true,
        });
    }
    Ok(checks)
}

/// Plans a CHECK constraint added to an existing table (ALTER TABLE ... ADD CHECK): the
/// constraint, and the names of the columns it reads as they are now (the job makes sure
/// they still are when it adds the constraint).
pub(crate) async fn plan_added(
    session: &Session,
    table: &TableDef,
    check: &CheckConstraint,
) -> Result<(CheckDef, Vec<String>), SqlError> {
    let written = [Written {
        option_name: None,
        check,
    }];
    let check = plan_checks(session, table, &written)
        .await?
        .pop()
        .expect("one constraint planned for one written");
    let names = check
        .columns
        .iter()
        .map(|id| {
            table
                .column_by_id(*id)
                .map(|c| c.name.clone())
                .expect("a check reads the table's columns")
        })
        .collect();
    Ok((check, names))
}

/// The text of row `r` of `batch`, for "Failing row contains (...)" and a foreign
/// key's "Key (...)=(...)".
pub(crate) fn row_text(batch: &datafusion::arrow::record_batch::RecordBatch, r: usize) -> String {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("null");
    batch
        .columns()
        .iter()
        .map(|c| {
            ArrayFormatter::try_new(c.as_ref(), &options)
                .map(|f| f.value(r).to_string())
                .unwrap_or_else(|_| "?".into())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails with 23502 if any of `rows` (in table column order) has NULL in a column that
/// refuses it, else with 23514 if one makes a CHECK constraint of `table` false. Every
/// row a statement writes passes here.
pub(crate) async fn enforce(
    session: &Session,
    table: &TableDef,
    rows: &[Vec<Datum>],
) -> Result<(), SqlError> {
    refuse_nulls(table, rows)?;
    if table.checks.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let checks: Vec<&CheckDef> = table.checks.iter().collect();
    let found = first_violation(table, &checks, rows, |overrides| {
        session.context(Timestamp::MAX, Vec::new(), overrides)
    })
    .await?;
    match found {
        None => Ok(()),
        Some((check, row)) => Err(SqlError::new(
            "23514",
            format!(
                "new row for relation \"{}\" violates check constraint \"{}\"",
                table.name, check.name
            ),
        )
        .with_detail(format!("Failing row contains ({row})."))),
    }
}

/// Fails with 23502 if any of `rows` (in table column order) has NULL in a column that
/// refuses it (NOT NULL, or becoming so).
pub(crate) fn refuse_nulls<'a>(
    table: &TableDef,
    rows: impl IntoIterator<Item = &'a Vec<Datum>>,
) -> Result<(), SqlError> {
    for row in rows {
        for (def, datum) in table.columns.iter().zip(row) {
            if datum.is_null() && def.refuses_null() {
                return Err(crate::error::not_null_violation(&table.name, &def.name));
            }
        }
    }
    Ok(())
}

/// Checks rows already stored in `table` against `check` (ALTER TABLE ... ADD CHECK and
/// VALIDATE CONSTRAINT): 23514 in PostgreSQL's words if one makes it false.
pub(crate) async fn validate(
    template: &datafusion::execution::SessionState,
    view: flotilla_txn::TxnView,
    table: &TableDef,
    check: &CheckDef,
    rows: &[Vec<Datum>],
) -> Result<(), SqlError> {
    let found = first_violation(table, &[check], rows, |overrides| {
        crate::context::StatementContext::new(
            template,
            Arc::new(flotilla_catalog::CatalogSnapshot::default()),
            view.clone(),
            Vec::new(),
            overrides,
            crate::context::SessionScope::detached(),
        )
    })
    .await?;
    match found {
        None => Ok(()),
        Some((check, _)) => Err(SqlError::new(
            "23514",
            format!(
                "check constraint \"{}\" of relation \"{}\" is violated by some row",
                check.name, table.name
            ),
        )),
    }
}

/// The first of `rows` (in table column order) that makes one of `checks` false, tried
/// in the order of their names as PostgreSQL does: the check and the row's text. The
/// expressions run in a context `context` makes over the rows as a table of the table's
/// own name.
async fn first_violation<'c>(
    table: &TableDef,
    checks: &[&'c CheckDef],
    rows: &[Vec<Datum>],
    context: impl FnOnce(HashMap<String, Arc<dyn TableProvider>>) -> crate::context::StatementContext,
) -> Result<Option<(&'c CheckDef, String)>, SqlError> {
    if checks.is_empty() || rows.is_empty() {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..checks.len()).collect();
    order.sort_by(|a, b| checks[*a].name.cmp(&checks[*b].name));
    let written = rows_to_batch(table, rows)?;
    let mem = MemTable::try_new(written.schema(), vec![vec![written.clone()]])
        .map_err(datafusion_error)?;
    let mut overrides: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    overrides.insert(table.name.clone(), Arc::new(mem));
    let ctx = context(overrides);
    let sql = select_checks(&table.name, order.iter().map(|i| checks[*i].expr.as_str()));
    let plan = ctx.plan(parse_one(&sql)?).await?;
    let batches = ctx
        .run(plan, crate::context::Collect::derived(rows.len()))
        .await?;
    let mut offset = 0;
    for batch in &batches {
        let results: Vec<BooleanArray> = batch
            .columns()
            .iter()
            .map(|c| {
                datafusion::arrow::compute::cast(
                    c,
                    &datafusion::arrow::datatypes::DataType::Boolean,
                )
                .map_err(|e| SqlError::internal(e.to_string()))
                .and_then(|a| {
                    a.as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| SqlError::internal("a check gave no boolean"))
                })
            })
            .collect::<Result<_, _>>()?;
        for r in 0..batch.num_rows() {
            for (k, result) in results.iter().enumerate() {
                if result.is_valid(r) && !result.value(r) {
                    return Ok(Some((checks[order[k]], row_text(&written, offset + r))));
                }
            }
        }
        offset += batch.num_rows();
    }
    assert_eq!(offset, rows.len(), "one result per row checked");
    Ok(None)
}
