//! The JSON set-returning functions in a select list: `json[b]_array_elements`,
//! `json[b]_array_elements_text` and `json[b]_object_keys`; and `generate_series` and
//! `regexp_matches` in a select list, which yield rows there as they do in PostgreSQL.
//!
//! DataFusion has no set-returning functions but `unnest`. Before planning, each call of
//! one of these in a select list becomes `unnest` of a function returning the whole set
//! as a list, named as PostgreSQL names the column (`jsonb_array_elements`). In a FROM
//! clause each call (and one of `regexp_matches`) becomes a derived table of those
//! `unnest`s (with `WITH ORDINALITY`, a zipped `generate_series` numbering its rows),
//! lateral when it reads the columns of the items before it, as `crate::lateral` runs
//! them.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, ListArray, StringArray, StructArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement,
    TableAlias, TableFactor, VisitMut, VisitorMut, visit_expressions_mut,
};

use crate::error::SqlError;
use crate::pg_json::{Item, Kind, Node, canonical, documents, external, json_array, parse};
use crate::sql_ast::{arg, builtin_name, call, fixed_query, folded, object_name, selects, string};

/// What a set-returning function yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Yields {
    /// An array's elements, as values of the kind, or (`text`) as `->>` gives them.
    Elements { text: bool },
    /// An object's keys.
    Keys,
    /// An object's members, as rows of `key` and `value` (of the kind, or as text).
    Members { text: bool },
}

/// The set-returning functions: the name a query calls, the kind it reads, what it yields.
const SET_FUNCTIONS: [(&str, Kind, Yields); 10] = [
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
    ("jsonb_each", Kind::Jsonb, Yields::Members { text: false }),
    ("json_each", Kind::Json, Yields::Members { text: false }),
    (
        "jsonb_each_text",
        Kind::Jsonb,
        Yields::Members { text: true },
    ),
    ("json_each_text", Kind::Json, Yields::Members { text: true }),
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
        from_clauses(query);
        expand_in(&mut query.body);
        ControlFlow::Continue(())
    }

    /// A call the FROM rewrite left: one inside a parenthesized join.
    fn pre_visit_table_factor(&mut self, table: &mut TableFactor) -> ControlFlow<SqlError> {
        let name = match table {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => set_function(name),
            _ => None,
        };
        if let Some(name) = name {
            return ControlFlow::Break(
                SqlError::new(
                    "0A000",
                    format!("{name}() in this position of a FROM clause is not supported yet"),
                )
                .with_hint(format!(
                    "Call it outside the parentheses of a join (FROM t JOIN u ON ..., \
                     {name}(u.doc) AS e), or in the select list: SELECT {name}(...) FROM ..."
                )),
            );
        }
        ControlFlow::Continue(())
    }
}

// ---------------------------------------------------------------------------------------------
// In a FROM clause
// ---------------------------------------------------------------------------------------------

/// A set-returning function a FROM clause calls.
struct FromCall {
    name: &'static str,
    yields: Yields,
    args: Vec<FunctionArg>,
    /// The name its columns are qualified with: its alias, else the function's name.
    qualifier: Ident,
    /// Its columns, named as PostgreSQL names them or as the alias renames them (the
    /// last one its ordinality, if asked for).
    columns: Vec<Ident>,
    /// WITH ORDINALITY: each row's number from 1 as a last column.
    ordinality: bool,
}

impl FromCall {
    fn of(factor: &TableFactor) -> Option<FromCall> {
        let (name, args, alias, ordinality) = match factor {
            TableFactor::Table {
                name,
                args: Some(args),
                alias,
                with_ordinality,
                ..
            } => (name, &args.args, alias, *with_ordinality),
            TableFactor::Function {
                name,
                args,
                alias,
                with_ordinality,
                ..
            } => (name, args, alias, *with_ordinality),
            _ => return None,
        };
        let (name, yields) = match set_function(name) {
            Some(name) => (name, SET_FUNCTIONS.iter().find(|f| f.0 == name)?.2),
            // One column of text arrays, named as a function of one column is.
            None if builtin_name(name).as_deref() == Some("regexp_matches") => {
                ("regexp_matches", Yields::Keys)
            }
            None => return None,
        };
        let qualifier = alias
            .as_ref()
            .map_or_else(|| Ident::new(name), |a| a.name.clone());
        let mut columns: Vec<Ident> = match yields {
            Yields::Elements { .. } => vec![Ident::new("value")],
            // A function of one unnamed column names it after its alias, as a table.
            Yields::Keys => vec![qualifier.clone()],
            Yields::Members { .. } => vec![Ident::new("key"), Ident::new("value")],
        };
        if ordinality {
            columns.push(Ident::new("ordinality"));
        }
        if let Some(alias) = alias {
            for (column, renamed) in columns.iter_mut().zip(&alias.columns) {
                *column = renamed.name.clone();
            }
        }
        Some(FromCall {
            name,
            yields,
            args: args.clone(),
            qualifier,
            columns,
            ordinality,
        })
    }

    /// Whether its arguments name columns (of the relations before it).
    fn is_lateral(&self) -> bool {
        let mut names_columns = false;
        for arg in &self.args {
            if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
            | FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            } = arg
            {
                let _ = datafusion::sql::sqlparser::ast::visit_expressions(e, |e| {
                    if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                        names_columns = true;
                    }
                    ControlFlow::<()>::Continue(())
                });
            }
        }
        names_columns
    }

    /// Its select items: `unnest` of its list, a member's fields taken apart, and the
    /// ordinality as `unnest(generate_series(1, cardinality(<list>)))` zipped beside.
    fn items(&self) -> Vec<SelectItem> {
        let list = call(&list_function(self.name), self.args.iter().cloned());
        let unnest = call("unnest", [arg(list.clone())]);
        let mut values: Vec<Expr> = match self.yields {
            Yields::Elements { .. } | Yields::Keys => vec![unnest],
            Yields::Members { .. } => ["key", "value"]
                .iter()
                .map(|field| call("get_field", [arg(unnest.clone()), arg(string(*field))]))
                .collect(),
        };
        if self.ordinality {
            values.push(call("unnest", [arg(crate::lateral::ordinals(&[list]))]));
        }
        values
            .into_iter()
            .zip(&self.columns)
            .map(|(expr, alias)| SelectItem::ExprWithAlias {
                expr,
                alias: alias.clone(),
            })
            .collect()
    }
}

/// `[LATERAL] (SELECT <call's items>) AS <its qualifier>`: lateral when it reads the
/// columns of the items before it (see `crate::lateral`, which runs it).
fn derived(call: &FromCall) -> TableFactor {
    let mut query = fixed_query("SELECT 1");
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.projection = call.items();
    }
    TableFactor::Derived {
        lateral: call.is_lateral(),
        subquery: query,
        alias: Some(TableAlias {
            explicit: true,
            name: call.qualifier.clone(),
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    }
}

/// Rewrites the set-returning calls in `query`'s FROM clauses into derived tables
/// DataFusion plans, `(SELECT unnest(<list>) AS value) AS e`, lateral where the call
/// reads columns of the items before it; a bare `e` elsewhere in the query, the whole
/// row of a one-column function, becomes its column `e.value`.
fn from_clauses(query: &mut Query) {
    let mut renamed: Vec<(String, Ident, Vec<Ident>)> = Vec::new();
    for select in selects(&mut query.body) {
        for table in select.from.iter_mut() {
            let joined = table.joins.iter_mut().map(|j| &mut j.relation);
            for relation in std::iter::once(&mut table.relation).chain(joined) {
                if let Some(call) = FromCall::of(relation) {
                    *relation = derived(&call);
                    renamed.push((folded(&call.qualifier), call.qualifier, call.columns));
                }
            }
        }
    }
    if renamed.is_empty() {
        return;
    }
    let find = |ident: &Ident| renamed.iter().find(|(name, ..)| *name == folded(ident));
    for select in selects(&mut query.body) {
        let mut items = Vec::with_capacity(select.projection.len());
        for item in select.projection.drain(..) {
            match &item {
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) if let [ObjectNamePart::Identifier(ident)] = n.0.as_slice()
                    && let Some((_, qualifier, columns)) = find(ident) =>
                {
                    items.extend(columns.iter().map(|c| {
                        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(vec![
                            qualifier.clone(),
                            c.clone(),
                        ]))
                    }));
                }
                // Named as written: `SELECT v FROM ..., f(...) v` has a column `v`.
                SelectItem::UnnamedExpr(Expr::Identifier(ident))
                    if let Some((name, _, columns)) = find(ident)
                        && let [column] = columns.as_slice()
                        && folded(column) != *name =>
                {
                    items.push(SelectItem::ExprWithAlias {
                        expr: Expr::Identifier(ident.clone()),
                        alias: ident.clone(),
                    });
                }
                _ => items.push(item),
            }
        }
        select.projection = items;
    }
    let _ = visit_expressions_mut(query, |e| {
        match e {
            Expr::CompoundIdentifier(parts) => {
                if let [first, _] = parts.as_mut_slice()
                    && let Some((_, qualifier, _)) = find(first)
                {
                    *first = qualifier.clone();
                }
            }
            // The alias of a one-column function used as a value is that column, as
            // PostgreSQL's whole row of a function returning one value is the value.
            Expr::Identifier(ident) => {
                if let Some((name, qualifier, columns)) = find(ident)
                    && let [column] = columns.as_slice()
                    && folded(column) != *name
                {
                    *e = Expr::CompoundIdentifier(vec![qualifier.clone(), column.clone()]);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

fn expand_in(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in &mut select.projection {
                // PostgreSQL names the column of a bare call after the function.
                if let SelectItem::UnnamedExpr(Expr::Function(f)) = item
                    && let Some(name) = set_function(&f.name).or_else(|| {
                        builtin_name(&f.name)
                            .and_then(|n| LIST_FUNCTIONS.iter().find(|(s, _)| *s == n))
                            .map(|(s, _)| *s)
                    })
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
                    // `generate_series` in a select list yields rows, as in PostgreSQL:
                    // `unnest` of DataFusion's function of the same name, which returns
                    // the whole series as a list. (Post-order: the call wrapped is not
                    // visited again.)
                    if let Expr::Function(f) = e
                        && let Some(list) = builtin_name(&f.name).and_then(|n| list_of(&n))
                    {
                        let mut whole = f.clone();
                        whole.name = object_name(list);
                        *e = call("unnest", [arg(Expr::Function(whole))]);
                        return ControlFlow::<()>::Continue(());
                    }
                    // A call written `unnest(generate_series(...))` (as the FROM rewrite
                    // numbers rows) was wrapped once more just now: unwrap it.
                    if let Expr::Function(f) = e
                        && builtin_name(&f.name).as_deref() == Some("unnest")
                        && let Some(inner) = only_argument(f)
                        && let Expr::Function(g) = inner
                        && builtin_name(&g.name).as_deref() == Some("unnest")
                        && let Some(Expr::Function(series)) = only_argument(g)
                        && builtin_name(&series.name).as_deref() == Some("generate_series")
                    {
                        *e = inner.clone();
                        return ControlFlow::<()>::Continue(());
                    }
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

/// Set-returning functions other than JSON's whose whole set a function of DataFusion's
/// or ours returns as a list: (PostgreSQL's name, the list's).
const LIST_FUNCTIONS: [(&str, &str); 2] = [
    ("generate_series", "generate_series"),
    ("regexp_matches", crate::pg_builtins::REGEXP_MATCHES_LIST),
];

/// The list function of a set-returning function of `LIST_FUNCTIONS`.
fn list_of(name: &str) -> Option<&'static str> {
    LIST_FUNCTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, list)| *list)
}

/// The one argument of a call of one argument.
fn only_argument(f: &datafusion::sql::sqlparser::ast::Function) -> Option<&Expr> {
    match &f.args {
        FunctionArguments::List(list) => match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e),
            _ => None,
        },
        _ => None,
    }
}

/// The set-returning function `name` calls, if it calls one (unqualified or in
/// `pg_catalog`).
fn set_function(name: &ObjectName) -> Option<&'static str> {
    let last = builtin_name(name)?;
    SET_FUNCTIONS.iter().map(|(n, ..)| *n).find(|n| *n == last)
}

/// Whether `name` is a set-returning function whose columns have names of their own
/// (`value`, `key`), which an alias without a column list does not rename.
pub(crate) fn names_its_columns(name: &ObjectName) -> bool {
    set_function(name).is_some_and(|name| {
        SET_FUNCTIONS
            .iter()
            .any(|(n, _, yields)| *n == name && *yields != Yields::Keys)
    })
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
    /// The type of a member's value, or an element's.
    fn value_type(&self, text: bool) -> DataType {
        if text {
            DataType::Utf8
        } else {
            self.kind.arrow_type()
        }
    }

    fn item_type(&self) -> DataType {
        match self.yields {
            Yields::Elements { text } => self.value_type(text),
            Yields::Keys => DataType::Utf8,
            Yields::Members { text } => DataType::Struct(self.member_fields(text)),
        }
    }

    /// A member's fields, named as PostgreSQL names the columns of `json[b]_each`.
    fn member_fields(&self, text: bool) -> Fields {
        Fields::from(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new("value", self.value_type(text), true),
        ])
    }

    /// The set of one document: its keys (for keys and members) and its values (for
    /// elements and members).
    fn set_of(&self, doc: &Item) -> Result<Set, SqlError> {
        let refused = |what: &str| {
            Err(SqlError::new(
                "22023",
                match self.yields {
                    Yields::Keys => format!("cannot call {} on {what}", self.set_name),
                    Yields::Members { .. } => {
                        format!("cannot call {} on a non-object", self.set_name)
                    }
                    Yields::Elements { .. } => format!("cannot extract elements from {what}"),
                },
            ))
        };
        let value = |item: &Item, text: bool| {
            if text {
                item.text()
            } else {
                Some(item.raw.to_string())
            }
        };
        let mut set = Set::default();
        match (&doc.node, self.yields) {
            (Node::Array(items), Yields::Elements { text }) => {
                set.values = items.iter().map(|item| value(item, text)).collect();
            }
            (Node::Object(members), Yields::Keys) => {
                set.keys = members.iter().map(|(k, _)| Some(k.clone())).collect();
            }
            (Node::Object(members), Yields::Members { text }) => {
                set.keys = members.iter().map(|(k, _)| Some(k.clone())).collect();
                set.values = members.iter().map(|(_, item)| value(item, text)).collect();
            }
            (Node::Object(_), _) => return refused("an object"),
            (Node::Array(_), _) => return refused("an array"),
            _ => return refused("a scalar"),
        }
        Ok(set)
    }
}

/// One document's set: keys, values, or both side by side.
#[derive(Default)]
struct Set {
    keys: Vec<Option<String>>,
    values: Vec<Option<String>>,
}

impl Set {
    fn len(&self) -> usize {
        self.keys.len().max(self.values.len())
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
        let mut all = Set::default();
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
                    all.keys.extend(set.keys);
                    all.values.extend(set.values);
                    valid.push(true);
                }
                None => {
                    lengths.push(0);
                    valid.push(false);
                }
            }
        }
        let values_of = |values: Vec<Option<String>>, text: bool| -> ArrayRef {
            if text {
                Arc::new(StringArray::from(values))
            } else {
                json_array(self.kind, values)
            }
        };
        let values: ArrayRef = match self.yields {
            Yields::Elements { text } => values_of(all.values, text),
            Yields::Keys => Arc::new(StringArray::from(all.keys)),
            Yields::Members { text } => Arc::new(StructArray::try_new(
                self.member_fields(text),
                vec![
                    Arc::new(StringArray::from(all.keys)),
                    values_of(all.values, text),
                ],
                None,
            )?),
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
