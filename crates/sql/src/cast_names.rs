//! Names for casts of a column in a select list.
//!
//! PostgreSQL names the column of `x::text` (or `CAST(x AS text)`) `x`, and DataFusion
//! does too, but it also gives the cast the schema name of `x` itself. A select list that
//! holds both (`SELECT x::text ... ORDER BY x` adds `x` for the sort; `SELECT x, x::int`)
//! then fails planning with "Projections require unique expression names"
//! (apache/datafusion#13558). Naming each such cast `x` explicitly, before planning,
//! gives it the same output name and a schema name of its own. `ORDER BY x` then sorts by
//! the cast, as in PostgreSQL, where an output column's name comes before an input
//! column's.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Ident, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut,
};

/// Names every unnamed cast of a column in `statement`'s select lists (subqueries, CTEs
/// and set operations included) after the column.
pub(crate) fn name_column_casts(statement: &mut Statement) {
    let _ = statement.visit(&mut CastNames);
}

struct CastNames;

impl VisitorMut for CastNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_in(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn name_in(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(cast @ Expr::Cast { .. }) = item
                    && let Some(alias) = cast_column(cast)
                {
                    *item = SelectItem::ExprWithAlias {
                        expr: cast.clone(),
                        alias,
                    };
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_in(left);
            name_in(right);
        }
        // A parenthesised query is visited as a query of its own.
        _ => {}
    }
}

/// The column a cast is of, if it is a cast of a column.
fn cast_column(cast: &Expr) -> Option<Ident> {
    let Expr::Cast { expr, .. } = cast else {
        return None;
    };
    match expr.as_ref() {
        Expr::Identifier(ident) => Some(ident.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().cloned(),
        _ => None,
    }
}
