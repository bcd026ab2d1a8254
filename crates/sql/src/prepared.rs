//! SQL-level prepared statements: `PREPARE name [(types)] AS statement`, `EXECUTE name
//! [(values)]` and `DEALLOCATE [PREPARE] name | ALL`.
//!
//! A session keeps them by name, at most `SqlConfig::prepared_statements_max` (54000 past
//! it), apart from the extended protocol's named statements, which the front end keeps
//! (its DEALLOCATE removes from both). As in PostgreSQL they are not transactional: a
//! ROLLBACK keeps a statement prepared in its block. PREPARE parses and describes the
//! statement as the extended protocol's Parse does (`Session::prepare_inner`), so an
//! unknown table is an error then. EXECUTE evaluates its values once, each cast to its
//! parameter's type, binds them as Bind does (`params::bind`), and runs the bound
//! statement as if it had been sent itself: its rows and command tag are EXECUTE's.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    CastKind, DataType as AstType, Expr, Ident, ObjectName, SelectItem, SetExpr, Statement, Value,
};

use crate::api::{PreparedStatement, QueryResult};
use crate::dml::{ident_name, relation_name};
use crate::error::SqlError;
use crate::session::Session;
use crate::sql_ast::fixed_query;

/// A session's SQL-level prepared statements, by name.
#[derive(Default)]
pub(crate) struct NamedStatements(HashMap<String, PreparedStatement>);

impl NamedStatements {
    /// Removes every statement (DEALLOCATE ALL, DISCARD ALL).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// 26000 for a name no statement has.
fn no_statement(name: &str) -> SqlError {
    SqlError::new(
        "26000",
        format!("prepared statement \"{name}\" does not exist"),
    )
}

impl Session {
    /// `PREPARE name [(types)] AS statement`.
    pub(crate) async fn prepare_named(
        &mut self,
        name: &Ident,
        types: &[AstType],
        statement: &Statement,
    ) -> Result<QueryResult, SqlError> {
        let name = ident_name(name);
        if self.named.0.contains_key(&name) {
            return Err(SqlError::new(
                "42P05",
                format!("prepared statement \"{name}\" already exists"),
            ));
        }
        let max = self.engine.config.prepared_statements_max;
        if self.named.0.len() >= max {
            return Err(SqlError::new(
                "54000",
                format!(
                    "too many prepared statements: one session keeps at most {max} \
                     (prepared_statements_max)"
                ),
            )
            .with_hint("DEALLOCATE statements no longer needed."));
        }
        // PostgreSQL prepares only these (a syntax error otherwise).
        if !matches!(
            statement,
            Statement::Query(_)
                | Statement::Insert(_)
                | Statement::Update(_)
                | Statement::Delete(_)
        ) {
            let word = statement.to_string();
            let word = word.split_whitespace().next().unwrap_or_default();
            return Err(SqlError::new(
                "42601",
                format!("syntax error at or near \"{word}\""),
            ));
        }
        let mut declared = Vec::with_capacity(types.len());
        for t in types {
            let ty = crate::ddl::sql_type(t)?;
            declared.push(Some(crate::types::arrow_type(&ty)));
        }
        let prepared = self
            .prepare_inner(&statement.to_string(), &declared)
            .await?;
        self.named.0.insert(name, prepared);
        Ok(QueryResult::Command {
            tag: "PREPARE".into(),
        })
    }

    /// `DEALLOCATE name`, or every statement (`None`: DEALLOCATE ALL). Returns the tag.
    pub fn deallocate_named(&mut self, name: Option<&str>) -> Result<&'static str, SqlError> {
        match name {
            None => {
                self.named.clear();
                Ok("DEALLOCATE ALL")
            }
            Some(name) => match self.named.0.remove(name) {
                Some(_) => Ok("DEALLOCATE"),
                None => Err(no_statement(name)),
            },
        }
    }

    /// SQL-level prepared statement `name`.
    pub(crate) fn named_statement(&self, name: &ObjectName) -> Option<&PreparedStatement> {
        self.named.0.get(&relation_name(name))
    }

    /// `EXECUTE name [(values)]`: the named statement with the values bound.
    pub(crate) async fn bind_named(
        &mut self,
        name: Option<&ObjectName>,
        values: &[Expr],
    ) -> Result<Statement, SqlError> {
        let Some(name) = name else {
            return Err(SqlError::new(
                "42601",
                "syntax error at or near \"EXECUTE\"",
            ));
        };
        let Some(prepared) = self.named_statement(name).cloned() else {
            return Err(no_statement(&relation_name(name)));
        };
        if values.len() != prepared.param_types.len() {
            return Err(SqlError::new(
                "42601",
                format!(
                    "wrong number of parameters for prepared statement \"{}\"",
                    relation_name(name)
                ),
            )
            .with_detail(format!(
                "Expected {} parameters but got {}.",
                prepared.param_types.len(),
                values.len()
            )));
        }
        let Some(statement) = &prepared.statement else {
            return Err(SqlError::internal("a named statement without a statement"));
        };
        let mut bound = (**statement).clone();
        if !values.is_empty() {
            let values = self.evaluate(values, &prepared.param_types).await?;
            crate::params::bind(&mut bound, &values)?;
        }
        Ok(bound)
    }

    /// The values of `exprs`, each cast to its parameter's type, evaluated once (one
    /// SELECT of them all).
    async fn evaluate(
        &mut self,
        exprs: &[Expr],
        types: &[DataType],
    ) -> Result<Vec<ScalarValue>, SqlError> {
        let mut query = fixed_query("SELECT 1");
        let SetExpr::Select(select) = query.body.as_mut() else {
            return Err(SqlError::internal("SELECT 1 is not a select"));
        };
        select.projection = exprs
            .iter()
            .zip(types)
            .map(|(e, t)| {
                let value = Expr::Nested(Box::new(e.clone()));
                SelectItem::UnnamedExpr(match crate::params::sql_type(t) {
                    Some(data_type) => Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(value),
                        data_type,
                        array: false,
                        format: None,
                    },
                    None => value,
                })
            })
            .collect();
        let result = self.execute_in_transaction(Statement::Query(query)).await?;
        let QueryResult::Rows { batches, .. } = result else {
            return Err(SqlError::internal("a SELECT of values returned no rows"));
        };
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(SqlError::internal("a SELECT of values returned no rows"));
        };
        let mut values = Vec::with_capacity(types.len());
        for (column, ty) in batch.columns().iter().zip(types) {
            let value =
                ScalarValue::try_from_array(column, 0).map_err(crate::error::datafusion_error)?;
            // A NULL of no type (`EXECUTE p(NULL)` of an untyped parameter) binds as NULL.
            values.push(if value.is_null() {
                ScalarValue::try_from(ty).unwrap_or(ScalarValue::Null)
            } else {
                value
            });
        }
        Ok(values)
    }
}

/// The parameter types an `EXECUTE name (values)` sent with the extended protocol gives
/// its own `$n` among the values: those of the parameters they stand for.
pub(crate) fn execute_parameter_types(
    prepared: &PreparedStatement,
    values: &[Expr],
) -> HashMap<String, DataType> {
    values
        .iter()
        .zip(&prepared.param_types)
        .filter_map(|(e, t)| match e {
            Expr::Value(v) => match &v.value {
                Value::Placeholder(p) => Some((p.clone(), t.clone())),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
