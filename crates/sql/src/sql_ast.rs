//! Small builders and readers of sqlparser's AST, shared by the rewrites that run on a
//! statement before DataFusion plans it (`json_sets`, `whole_row`).

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The name `ident` resolves to: folded to lower case unless quoted, as DataFusion does.
pub(crate) fn folded(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// The built-in function `name` calls: unqualified or in `pg_catalog`, folded.
pub(crate) fn builtin_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(folded))
        .collect();
    match parts.as_slice() {
        [last] => Some(last.clone()),
        [schema, last] if schema == "pg_catalog" => Some(last.clone()),
        _ => None,
    }
}

/// An unqualified name.
pub(crate) fn object_name(name: &str) -> ObjectName {
    ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))])
}

/// `name(args…)`.
pub(crate) fn call(name: &str, args: impl IntoIterator<Item = FunctionArg>) -> Expr {
    Expr::Function(Function {
        name: object_name(name),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// `expr` as an unnamed argument.
pub(crate) fn arg(expr: Expr) -> FunctionArg {
    FunctionArg::Unnamed(FunctionArgExpr::Expr(expr))
}

/// A string literal.
pub(crate) fn string(text: impl Into<String>) -> Expr {
    Expr::value(Value::SingleQuotedString(text.into()))
}

/// A query written here, as a template to fill in: it always parses.
pub(crate) fn fixed_query(sql: &str) -> Box<Query> {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql).map(|mut s| s.pop()) {
        Ok(Some(Statement::Query(query))) => query,
        other => panic!("the fixed query {sql} does not parse as one: {other:?}"),
    }
}

/// The selects of `body`: itself, or each side of a set operation (a parenthesised
/// query is a query of its own).
pub(crate) fn selects(body: &mut SetExpr) -> Vec<&mut Select> {
    match body {
        SetExpr::Select(select) => vec![select.as_mut()],
        SetExpr::SetOperation { left, right, .. } => {
            let mut all = selects(left);
            all.extend(selects(right));
            all
        }
        _ => Vec::new(),
    }
}
