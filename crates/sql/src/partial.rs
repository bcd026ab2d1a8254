//! Partial indexes (`CREATE [UNIQUE] INDEX ... WHERE predicate`): only the rows that
//! satisfy the predicate have entries, and a unique one constrains only them, as in
//! PostgreSQL. The common use is a soft delete, `UNIQUE (email) WHERE deleted_at IS NULL`.
//!
//! The predicate is planned through DataFusion over the table, exactly as a query's WHERE
//! would be, and the optimized expression is kept as a conjunction of single-column tests
//! (`IndexPredicate`): `IS [NOT] NULL`, a comparison with a constant, `IN` a list of
//! constants, and a boolean column or its negation. Those tests are evaluated on every
//! write without a planner. A predicate outside that shape is refused with 0A000 rather
//! than approximated.
//!
//! A query uses a partial index only when its own conditions include every test of the
//! predicate (each the same test of the same column): then every row it can return has
//! an entry.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::{split_binary, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast;
use flotilla_catalog::{
    CompareOp, IndexDef, IndexPredicate, PredicateTerm, PredicateTest, SqlType, TableDef,
};
use flotilla_codec::{Datum, decode_key_datum, encode_key_datum};
use flotilla_types::Timestamp;

use crate::dml::{datum_text, parse_one, quote, rows_to_batch};
use crate::error::{SqlError, datafusion_error};
use crate::session::Session;
use crate::types::scalar_to_datum;

/// The refusal of a predicate Flotilla cannot keep, with what it can.
fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::new(
        "0A000",
        format!("partial index predicate not supported: {what}"),
    )
    .with_hint(
        "A partial index's WHERE may AND together tests of one column each: IS [NOT] NULL, \
         a comparison (=, <>, <, <=, >, >=) or IN with constants, or a boolean column or \
         NOT one.",
    )
}

/// Refuses a function call, which planning would fold into a constant when it reads no
/// column (`now()` would become the moment of CREATE INDEX): 42P17 for one whose result
/// changes, as PostgreSQL refuses it, 0A000 for any other (a column test needs none).
fn refuse_functions(predicate: &ast::Expr) -> Result<(), SqlError> {
    const NOT_IMMUTABLE: &[&str] = &[
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "localtime",
        "localtimestamp",
        "transaction_timestamp",
        "statement_timestamp",
        "clock_timestamp",
        "timeofday",
        "random",
        "nextval",
        "currval",
        "lastval",
        "setval",
        "gen_random_uuid",
        "current_setting",
    ];
    let mut found: Option<String> = None;
    let _ = ast::visit_expressions(predicate, |e: &ast::Expr| {
        if let ast::Expr::Function(f) = e {
            found = Some(f.name.to_string().to_ascii_lowercase());
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    });
    match found {
        None => Ok(()),
        Some(name) if NOT_IMMUTABLE.contains(&name.as_str()) => Err(SqlError::new(
            "42P17",
            "functions in index predicate must be marked IMMUTABLE",
        )),
        Some(name) => Err(unsupported(format!("a call of {name}()"))),
    }
}

/// Plans the predicate of a partial index on `table`.
pub(crate) async fn plan(
    session: &Session,
    table: &TableDef,
    predicate: &ast::Expr,
) -> Result<IndexPredicate, SqlError> {
    crate::check::refuse_subquery(predicate, "index predicate")?;
    refuse_functions(predicate)?;
    // Planned over the table, empty, under its own name, as a CHECK is.
    let empty = rows_to_batch(table, &[])?;
    let mem = MemTable::try_new(empty.schema(), vec![vec![empty]]).map_err(datafusion_error)?;
    let mut overrides: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    overrides.insert(table.name.clone(), Arc::new(mem));
    let ctx = session.context(Timestamp::MAX, Vec::new(), overrides);
    let sql = format!("SELECT 1 FROM {} WHERE {predicate}", quote(&table.name));
    let plan = ctx.plan(parse_one(&sql)?).await?;
    let plan = ctx.optimize(&plan)?;
    let mut found: Option<Result<Vec<PredicateTerm>, SqlError>> = None;
    let mut nothing = false;
    let _ = plan.apply(|p| {
        match p {
            LogicalPlan::Filter(f) => {
                found = Some(terms_of(table, &f.predicate, predicate));
                return Ok(TreeNodeRecursion::Stop);
            }
            LogicalPlan::EmptyRelation(e) if !e.produce_one_row => nothing = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let terms = match found {
        Some(terms) => terms?,
        None if nothing => return Err(unsupported("it is false for every row")),
        // The predicate folded away: it holds for every row.
        None => Vec::new(),
    };
    Ok(IndexPredicate { terms })
}

/// The tests of `expr`, a conjunction of single-column tests over `table`'s columns
/// (planned from `written`, which errors quote).
fn terms_of(
    table: &TableDef,
    expr: &Expr,
    written: &ast::Expr,
) -> Result<Vec<PredicateTerm>, SqlError> {
    let mut out = Vec::new();
    for conjunct in split_conjunction(expr) {
        out.extend(term_of(table, conjunct).ok_or_else(|| unsupported(written))?);
    }
    Ok(out)
}

/// The column `expr` names, if it is a bare column of `table`.
fn column_of<'a>(table: &'a TableDef, expr: &Expr) -> Option<&'a flotilla_catalog::ColumnDef> {
    match expr {
        Expr::Column(c) => table.column(&c.name),
        _ => None,
    }
}

/// A constant as the key encoding of a value of type `ty`, when it is one exactly.
fn constant(value: &ScalarValue, ty: &SqlType) -> Option<Vec<u8>> {
    let datum = scalar_to_datum(value, ty)?;
    // Stored CHAR(n) values are blank-padded.
    let datum = match ty {
        SqlType::Char(_) => crate::types::fit_to_column(datum, ty).ok()?,
        _ => datum,
    };
    let mut out = Vec::new();
    encode_key_datum(&mut out, &datum);
    Some(out)
}

/// The tests one conjunct stands for (a `NOT IN` list is several), or `None` if it is
/// not of the kept shape.
fn term_of(table: &TableDef, expr: &Expr) -> Option<Vec<PredicateTerm>> {
    let term = |column: &flotilla_catalog::ColumnDef, test| PredicateTerm {
        column: column.id,
        test,
    };
    match expr {
        Expr::IsNull(e) => Some(vec![term(column_of(table, e)?, PredicateTest::IsNull)]),
        Expr::IsNotNull(e) => Some(vec![term(column_of(table, e)?, PredicateTest::IsNotNull)]),
        Expr::Column(_) | Expr::IsTrue(_) => {
            let inner = match expr {
                Expr::IsTrue(e) => e.as_ref(),
                _ => expr,
            };
            let c = column_of(table, inner).filter(|c| c.ty == SqlType::Bool)?;
            let value = constant(&ScalarValue::Boolean(Some(true)), &c.ty)?;
            Some(vec![term(
                c,
                PredicateTest::Compare {
                    op: CompareOp::Eq,
                    value,
                },
            )])
        }
        Expr::Not(e) | Expr::IsFalse(e) => {
            let c = column_of(table, e).filter(|c| c.ty == SqlType::Bool)?;
            let value = constant(&ScalarValue::Boolean(Some(false)), &c.ty)?;
            Some(vec![term(
                c,
                PredicateTest::Compare {
                    op: CompareOp::Eq,
                    value,
                },
            )])
        }
        // The optimizer writes a short IN list as ORs of equalities.
        Expr::BinaryExpr(BinaryExpr {
            op: Operator::Or, ..
        }) => {
            let mut column = None;
            let mut values = Vec::new();
            for operand in split_binary(expr, Operator::Or) {
                let [term] = <[PredicateTerm; 1]>::try_from(term_of(table, operand)?).ok()?;
                let PredicateTerm {
                    column: c,
                    test:
                        PredicateTest::Compare {
                            op: CompareOp::Eq,
                            value,
                        },
                } = term
                else {
                    return None;
                };
                if column.is_some_and(|seen| seen != c) {
                    return None;
                }
                column = Some(c);
                values.push(value);
            }
            Some(vec![PredicateTerm {
                column: column?,
                test: PredicateTest::In { values },
            }])
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op = compare_op(*op)?;
            let (c, value, op) = match (left.as_ref(), right.as_ref()) {
                (l, Expr::Literal(v, _)) => (column_of(table, l)?, v, op),
                (Expr::Literal(v, _), r) => (column_of(table, r)?, v, flipped(op)),
                _ => return None,
            };
            let value = constant(value, &c.ty)?;
            Some(vec![term(c, PredicateTest::Compare { op, value })])
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let c = column_of(table, expr)?;
            let values: Option<Vec<Vec<u8>>> = list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => constant(v, &c.ty),
                    _ => None,
                })
                .collect();
            let values = values?;
            if *negated {
                // `c NOT IN (a, b)` is `c <> a AND c <> b`, NULLs included.
                Some(
                    values
                        .into_iter()
                        .map(|value| {
                            term(
                                c,
                                PredicateTest::Compare {
                                    op: CompareOp::NotEq,
                                    value,
                                },
                            )
                        })
                        .collect(),
                )
            } else {
                Some(vec![term(c, PredicateTest::In { values })])
            }
        }
        _ => None,
    }
}

fn compare_op(op: Operator) -> Option<CompareOp> {
    Some(match op {
        Operator::Eq => CompareOp::Eq,
        Operator::NotEq => CompareOp::NotEq,
        Operator::Lt => CompareOp::Lt,
        Operator::LtEq => CompareOp::LtEq,
        Operator::Gt => CompareOp::Gt,
        Operator::GtEq => CompareOp::GtEq,
        _ => return None,
    })
}

/// `op` with its operands swapped (`5 < c` is `c > 5`).
fn flipped(op: CompareOp) -> CompareOp {
    match op {
        CompareOp::Lt => CompareOp::Gt,
        CompareOp::LtEq => CompareOp::GtEq,
        CompareOp::Gt => CompareOp::Lt,
        CompareOp::GtEq => CompareOp::LtEq,
        other => other,
    }
}

/// Whether `row` (in `table`'s column order) has an entry in `index`: it has no
/// predicate, or the row makes every test true.
pub(crate) fn covers(table: &TableDef, index: &IndexDef, row: &[Datum]) -> bool {
    let Some(predicate) = &index.predicate else {
        return true;
    };
    predicate.terms.iter().all(|t| {
        let Some(datum) = table.column_position(t.column).map(|pos| &row[pos]) else {
            // Dropping a column the predicate reads drops the index first.
            return false;
        };
        let key = || {
            let mut out = Vec::new();
            encode_key_datum(&mut out, datum);
            out
        };
        match &t.test {
            PredicateTest::IsNull => datum.is_null(),
            PredicateTest::IsNotNull => !datum.is_null(),
            PredicateTest::Compare { op, value } => {
                !datum.is_null() && op.holds(key().as_slice().cmp(value.as_slice()))
            }
            PredicateTest::In { values } => {
                !datum.is_null() && {
                    let key = key();
                    values.contains(&key)
                }
            }
        }
    })
}

/// Whether a query whose conditions are `filters` (ANDed) reads only rows the partial
/// `predicate` covers: every test of the predicate is one of the filters'.
pub(crate) fn implied_by(table: &TableDef, predicate: &IndexPredicate, filters: &[Expr]) -> bool {
    let given: Vec<PredicateTerm> = filters
        .iter()
        .flat_map(split_conjunction)
        .filter_map(|e| term_of(table, e))
        .flatten()
        .collect();
    predicate.terms.iter().all(|t| given.contains(t))
}

fn textual(ty: &SqlType) -> bool {
    matches!(ty, SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_))
}

/// A stored constant as SQL, for a column of type `ty` (`'a'::text`, `5`).
fn constant_sql(value: &[u8], ty: &SqlType) -> String {
    let mut input = value;
    let datum = match decode_key_datum(&mut input) {
        Ok(d) => d,
        Err(_) => return "NULL".into(),
    };
    // The key encoding keeps the kind of value only; the column's type names it.
    let datum = match (datum, ty) {
        (Datum::Int(v), SqlType::Bool) => Datum::Bool(v != 0),
        (Datum::Int(v), SqlType::Date) => Datum::Date(v as i32),
        (Datum::Int(v), SqlType::Timestamp | SqlType::TimestampTz) => Datum::Timestamp(v),
        (Datum::Bytes(b), t) if textual(t) || matches!(t, SqlType::Json | SqlType::Jsonb) => {
            Datum::String(String::from_utf8_lossy(&b).into_owned())
        }
        (d, _) => d,
    };
    let text = datum_text(&datum, ty);
    match ty {
        SqlType::Bool => if text == "t" { "true" } else { "false" }.into(),
        SqlType::Int16 | SqlType::Int32 | SqlType::Int64 | SqlType::Numeric { .. }
            if !text.starts_with('-') =>
        {
            text
        }
        t if textual(t) => format!("'{}'::text", text.replace('\'', "''")),
        t => format!("'{}'::{}", text.replace('\'', "''"), t.pg_name()),
    }
}

/// The predicate as `pg_get_indexdef` prints it after `WHERE`: each test in
/// parentheses, or, `pretty` (as psql shows it), none.
pub(crate) fn predicate_sql(table: &TableDef, predicate: &IndexPredicate, pretty: bool) -> String {
    let parts: Vec<String> = predicate
        .terms
        .iter()
        .map(|t| {
            let Some(column) = table.column_by_id(t.column) else {
                return "false".into();
            };
            let name = crate::dml::ident_sql(&column.name);
            let test = match &t.test {
                PredicateTest::IsNull => format!("{name} IS NULL"),
                PredicateTest::IsNotNull => format!("{name} IS NOT NULL"),
                PredicateTest::Compare { op, value } => {
                    let value = constant_sql(value, &column.ty);
                    match (column.ty == SqlType::Bool, op, value.as_str()) {
                        // A bare boolean column needs no parentheses.
                        (true, CompareOp::Eq, "true") => return name,
                        (true, CompareOp::Eq, "false") => format!("NOT {name}"),
                        _ => format!("{name} {} {value}", op.sql()),
                    }
                }
                PredicateTest::In { values } => format!(
                    "{name} = ANY (ARRAY[{}])",
                    values
                        .iter()
                        .map(|v| constant_sql(v, &column.ty))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            if pretty { test } else { format!("({test})") }
        })
        .collect();
    match parts.len() {
        0 => "true".into(),
        1 => parts.into_iter().next().expect("one part"),
        _ if pretty => parts.join(" AND "),
        _ => format!("({})", parts.join(" AND ")),
    }
}
