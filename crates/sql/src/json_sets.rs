//! The JSON set-returning functions in a select list: `json[b]_array_elements`,
//! `json[b]_array_elements_text` and `json[b]_object_keys`.
//!
//! DataFusion has no set-returning functions but `unnest`. Before planning, each call of
//! one of these in a select list becomes `unnest` of a function returning the whole set
//! as a list, named as PostgreSQL names the column (`jsonb_array_elements`). In a FROM
//! clause they are not available (DataFusion has no table functions taking a column).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, ListArray, StringArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
    visit_expressions_mut,
};

use crate::error::SqlError;
use crate::pg_json::{Item, Kind, Node, canonical, documents, external, json_array, parse};

/// What a set-returning function yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Yields {
    /// An array's elements, as values of the kind, or (`text`) as `->>` gives them.
    Elements { text: bool },
    /// An object's keys.
    Keys,
}

/// The set-returning functions: the name a query calls, the kind it reads, what it yields.
const SET_FUNCTIONS: [(&str, Kind, Yields); 6] = [
    (
        "jsonb_array_elements",
        Kind::Jsonb,
        Yields::Elements { text: false },
    ),
    (
        "json_array_elements",
        Kind::Json,
        Yields::Elements { text: false },
    ),
    (
        "jsonb_array_elements_text",
        Kind::Jsonb,
        Yields::Elements { text: true },
    ),
    (
        "json_array_elements_text",
        Kind::Json,
        Yields::Elements { text: true },
    ),
    ("jsonb_object_keys", Kind::Jsonb, Yields::Keys),
    ("json_object_keys", Kind::Json, Yields::Keys),
];

/// The name of the function returning the set of `name` as a list.
fn list_function(name: &str) -> String {
    format!("flotilla_{name}_list")
}

/// Rewrites every call of a set-returning JSON function in `statement`'s select lists as
/// `unnest` of its list; refuses one in a FROM clause with a hint.
pub(crate) fn expand_in_select_lists(statement: &mut Statement) -> Result<(), SqlError> {
    match statement.visit(&mut SelectLists) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct SelectLists;

impl VisitorMut for SelectLists {
    type Break = SqlError;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<SqlError> {
        expand_in(&mut query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, table: &mut TableFactor) -> ControlFlow<SqlError> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = table
            && let Some(name) = set_function(name)
        {
            return ControlFlow::Break(
                SqlError::new(
                    "0A000",
                    format!("{name}() in a FROM clause is not supported yet"),
                )
                .with_hint(format!(
                    "Call it in the select list instead: SELECT {name}(...) AS value FROM ..."
                )),
            );
        }
        ControlFlow::Continue(())
    }
}

fn expand_in(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in &mut select.projection {
                // PostgreSQL names the column of a bare call after the function.
                if let SelectItem::UnnamedExpr(Expr::Function(f)) = item
                    && let Some(name) = set_function(&f.name)
                {
                    let expr = Expr::Function(f.clone());
                    *item = SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident::new(name),
                    };
                }
                let expr = match item {
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                    _ => continue,
                };
                let _ = visit_expressions_mut(expr, |e| {
                    if let Expr::Function(f) = e
                        && let Some(name) = set_function(&f.name)
                    {
                        let mut list = f.clone();
                        list.name = object_name(&list_function(name));
                        let mut unnest = f.clone();
                        unnest.name = object_name("unnest");
                        unnest.args = FunctionArguments::List(FunctionArgumentList {
                            duplicate_treatment: None,
                            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(
                                Expr::Function(list),
                            ))],
                            clauses: Vec::new(),
                        });
                        *e = Expr::Function(unnest);
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            expand_in(left);
            expand_in(right);
        }
        // A parenthesised query is visited as a query of its own.
        _ => {}
    }
}

fn object_name(name: &str) -> ObjectName {
    ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))])
}

/// The set-returning function `name` calls, if it calls one (unqualified or in
/// `pg_catalog`).
fn set_function(name: &ObjectName) -> Option<&'static str> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
        .collect();
    let last = match parts.as_slice() {
        [last] => last,
        [schema, last] if schema == "pg_catalog" => last,
        _ => return None,
    };
    SET_FUNCTIONS.iter().map(|(n, ..)| *n).find(|n| n == last)
}

/// A set-returning function's whole set, as a list.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SetList {
    name: String,
    /// The function's name as PostgreSQL knows it, for errors.
    set_name: &'static str,
    kind: Kind,
    yields: Yields,
    signature: Signature,
}

impl SetList {
    fn item_type(&self) -> DataType {
        match self.yields {
            Yields::Elements { text: false } => self.kind.arrow_type(),
            Yields::Elements { text: true } | Yields::Keys => DataType::Utf8,
        }
    }

    /// The set of one document.
    fn set_of(&self, doc: &Item) -> Result<Vec<Option<String>>, SqlError> {
        let refused = |what: &str| {
            Err(SqlError::new(
                "22023",
                match self.yields {
                    Yields::Keys => format!("cannot call {} on {what}", self.set_name),
                    Yields::Elements { .. } => format!("cannot extract elements from {what}"),
                },
            ))
        };
        match (&doc.node, self.yields) {
            (Node::Array(items), Yields::Elements { text }) => Ok(items
                .iter()
                .map(|item| {
                    if text {
                        item.text()
                    } else {
                        Some(item.raw.to_string())
                    }
                })
                .collect()),
            (Node::Object(members), Yields::Keys) => {
                Ok(members.iter().map(|(k, _)| Some(k.clone())).collect())
            }
            (Node::Object(_), _) => refused("an object"),
            (Node::Array(_), _) => refused("an array"),
            _ => refused("a scalar"),
        }
    }
}

impl ScalarUDFImpl for SetList {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::new_list(self.item_type(), true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let mut lengths = Vec::with_capacity(args.number_rows);
        let mut valid = Vec::with_capacity(args.number_rows);
        let mut values: Vec<Option<String>> = Vec::new();
        // A jsonb read from a string (a literal) is made canonical first, so its keys
        // come sorted and unique and its elements print as jsonb's.
        let read_from_text = self.kind == Kind::Jsonb && Kind::of(array.data_type()).is_none();
        for doc in documents(&array)? {
            match doc {
                Some(doc) => {
                    let set = if read_from_text {
                        let stored = canonical(&doc.node).map_err(external)?;
                        self.set_of(&parse(&stored).map_err(external)?)
                    } else {
                        self.set_of(&doc)
                    }
                    .map_err(external)?;
                    lengths.push(set.len());
                    values.extend(set);
                    valid.push(true);
                }
                None => {
                    lengths.push(0);
                    valid.push(false);
                }
            }
        }
        let values: ArrayRef = match self.yields {
            Yields::Elements { text: false } => json_array(self.kind, values),
            _ => Arc::new(StringArray::from(values)),
        };
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(self.item_type(), true)),
            OffsetBuffer::from_lengths(lengths),
            values,
            Some(NullBuffer::from(valid)),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// The list functions the rewritten calls use.
pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    SET_FUNCTIONS
        .iter()
        .map(|&(set_name, kind, yields)| {
            Arc::new(ScalarUDF::new_from_impl(SetList {
                name: list_function(set_name),
                set_name,
                kind,
                yields,
                signature: Signature::any(1, Volatility::Immutable),
            }))
        })
        .collect()
}
