//! The SQL-standard row-limiting clause, `OFFSET n ROWS FETCH { FIRST | NEXT } [m] { ROW |
//! ROWS } ONLY`, which PostgreSQL accepts beside `LIMIT`. DataFusion's planner refuses it,
//! so before planning each query's `FETCH` becomes the `LIMIT` it means: `m` rows, one if
//! `m` is left out, all of them if `m` is NULL (as `LIMIT NULL`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, LimitClause, Query, Statement, Value, VisitMut, VisitorMut,
};

use crate::error::SqlError;

/// Rewrites every `FETCH FIRST` in `statement` (subqueries, CTEs and view bodies included)
/// as a `LIMIT`. Refuses what PostgreSQL refuses (`LIMIT` and `FETCH` together, `WITH
/// TIES` without `ORDER BY`) with its SQLSTATE, and `WITH TIES`, which is not supported
/// here, with 0A000.
pub(crate) fn fetch_as_limit(statement: &mut Statement) -> Result<(), SqlError> {
    let mut rewriter = FetchAsLimit { error: None };
    let _ = statement.visit(&mut rewriter);
    rewriter.error.map_or(Ok(()), Err)
}

struct FetchAsLimit {
    error: Option<SqlError>,
}

impl VisitorMut for FetchAsLimit {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        match rewrite(query) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                self.error = Some(e);
                ControlFlow::Break(())
            }
        }
    }
}

fn rewrite(query: &mut Query) -> Result<(), SqlError> {
    let Some(fetch) = query.fetch.take() else {
        return Ok(());
    };
    if fetch.percent {
        return Err(SqlError::new(
            "42601",
            "syntax error at or near \"PERCENT\": FETCH FIRST takes a row count",
        ));
    }
    if fetch.with_ties {
        if query.order_by.is_none() {
            return Err(SqlError::new(
                "42601",
                "WITH TIES cannot be specified without ORDER BY clause",
            ));
        }
        return Err(
            SqlError::unsupported("FETCH FIRST ... WITH TIES").with_hint(
                "Filter on rank() OVER (ORDER BY ...) <= n in a subquery to keep the rows tied \
             with the last one.",
            ),
        );
    }
    let quantity = fetch
        .quantity
        .unwrap_or_else(|| Expr::value(Value::Number("1".to_string(), false)));
    let offset = match query.limit_clause.take() {
        None => None,
        Some(LimitClause::LimitOffset {
            limit: None,
            offset,
            limit_by,
        }) if limit_by.is_empty() => offset,
        Some(_) => {
            return Err(SqlError::new(
                "42601",
                "syntax error at or near \"FETCH\": LIMIT and FETCH FIRST cannot both be given",
            ));
        }
    };
    query.limit_clause = Some(LimitClause::LimitOffset {
        limit: Some(quantity),
        offset,
        limit_by: Vec::new(),
    });
    Ok(())
}
