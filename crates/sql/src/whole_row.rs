//! Whole-row references: a relation's name used as a value, as in `row_to_json(t)`,
//! `json_agg(t ORDER BY t.id)`, `to_jsonb(t.*)` or `SELECT t FROM t`.
//!
//! DataFusion resolves a bare name only as a column, so before planning each such name
//! becomes `named_struct('a', t.a, 'b', t.b, …)` of the relation's columns, in order: a
//! row value whose JSON is PostgreSQL's (`{"a":1,"b":"x"}`) and whose text is its
//! record text (`(1,x)`). A relation's columns are what `SELECT * FROM <it>` answers,
//! planned under the same WITH clauses, so tables, views of CTEs and derived tables all
//! work. As in PostgreSQL a column of the same name wins over the relation.
//!
//! Anonymous rows get PostgreSQL's field names too: `ROW(1, 'a')`, and `(1, 'a')` as a
//! function's argument, become `named_struct('f1', 1, 'f2', 'a')` (DataFusion's `struct`
//! would name them `c0`, `c1`, and `row_to_json` would show it).
//!
//! The same scopes settle what `t.c` names inside a subquery when `t` is a relation of
//! an enclosing query and a relation of the subquery has a column `t`. PostgreSQL reads
//! the relation (a qualified name looks for relations, innermost first, before any
//! column); DataFusion reads field `c` of the column `t`, and fails. Such a relation is
//! given a name no column has (`"t@1"`, for `t` in the scope numbered 1), and every
//! reference to it is renamed to match.
//!
//! The rewrite is two passes over the statement with the same scopes: the first finds
//! the relations named as values and the relations inside a subquery that a reference to
//! an outer relation passes, their columns are then planned, and the second replaces the
//! names. A statement with neither is left as it was after the first pass.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, CaseWhen, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    JoinOperator, ObjectName, ObjectNamePart, Query, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, Statement, TableAlias, TableFactor, TableWithJoins, Value, VisitMut, VisitorMut, With,
};

use crate::error::SqlError;
use crate::sql_ast::{arg, call, fixed_query, folded, selects, string};

/// Rewrites every relation named as a value in `statement` into a row of its columns.
pub(crate) async fn expand(
    statement: &mut Statement,
    state: &SessionState,
) -> Result<(), SqlError> {
    let mut find = Scopes::new(Pass::Find(HashMap::new()));
    let _ = statement.visit(&mut find);
    let probes = match find.pass {
        Pass::Find(probes) if !probes.is_empty() => probes,
        _ => return Ok(()),
    };
    let mut columns = HashMap::with_capacity(probes.len());
    for (key, probe) in probes {
        if let Some(found) = Box::pin(columns_of(probe, state)).await {
            columns.insert(key, found);
        }
    }
    // An outer relation whose name is a column of a relation the reference passes is
    // renamed: DataFusion would read the reference as a field of that column.
    let renames = find
        .outer_references
        .into_iter()
        .filter(|(_, reference)| {
            reference.passes.iter().any(|key| {
                columns
                    .get(key)
                    .is_some_and(|c| c.iter().any(|(column, _)| *column == reference.name))
            })
        })
        .map(|((number, index), reference)| {
            let renamed = Ident::with_quote('"', format!("{}@{number}", reference.name));
            ((number, index), renamed)
        })
        .collect();
    let mut rewrite = Scopes::new(Pass::Rewrite(columns));
    rewrite.renames = renames;
    let _ = statement.visit(&mut rewrite);
    Ok(())
}

/// A relation referred to by a qualified name from inside a subquery of its query.
struct OuterReference {
    /// Its name, folded.
    name: String,
    /// The relations of the queries between it and the references, any of which may have
    /// a column of its name.
    passes: HashSet<Key>,
}

/// A relation's columns: name, and whether it may be NULL.
type Columns = Vec<(String, bool)>;

/// A relation of one query's FROM: (the query's number in visiting order, its index).
type Key = (usize, usize);

/// The columns `SELECT * FROM <relation>` answers, or `None` when it cannot be planned on
/// its own (a LATERAL subquery, say): such a relation is never rewritten.
async fn columns_of(mut probe: Statement, state: &SessionState) -> Option<Columns> {
    // A derived table may name its own relations as values.
    expand(&mut probe, state).await.ok()?;
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(probe)))
        .await
        .ok()?;
    let columns: Columns = plan
        .schema()
        .fields()
        .iter()
        // Not the row handle an UPDATE's or DELETE's own scan adds: no column of the row.
        .filter(|f| f.name() != crate::table::HANDLE_COLUMN)
        .map(|f| (f.name().clone(), f.is_nullable()))
        .collect();
    (!columns.is_empty()).then_some(columns)
}

/// A relation one query's FROM introduces.
struct Relation {
    /// The name it is referred to by, folded.
    name: String,
    /// That name as written, to qualify its columns with.
    qualifier: Ident,
    factor: TableFactor,
    /// Whether an outer join may extend it with NULLs.
    outer_nullable: bool,
}

/// The relations of one query, and the WITH clauses it sees.
struct Scope {
    number: usize,
    relations: Vec<Relation>,
    with: Vec<With>,
}

enum Pass {
    /// Finding relations named as values: the probe planning each one's columns.
    Find(HashMap<Key, Statement>),
    /// Replacing those names: the columns the probes found.
    Rewrite(HashMap<Key, Columns>),
}

struct Scopes {
    stack: Vec<Scope>,
    next_number: usize,
    pass: Pass,
    /// The addresses of names that are parts of a qualified name, not values: `c` and
    /// `k` in `c.k[1]`, which is a field access chain rather than a compound identifier.
    qualifying: HashSet<usize>,
    /// Found by the find pass: the outer relations subqueries name columns of.
    outer_references: HashMap<Key, OuterReference>,
    /// Given to the rewrite pass: the relations to rename, and their new names.
    renames: HashMap<Key, Ident>,
}

impl Scopes {
    fn new(pass: Pass) -> Self {
        Scopes {
            stack: Vec::new(),
            next_number: 0,
            pass,
            qualifying: HashSet::new(),
            outer_references: HashMap::new(),
            renames: HashMap::new(),
        }
    }

    /// Notes a qualified reference `qualifier.c`: if `qualifier` is a relation of an
    /// enclosing query, every relation between it and here is probed for a column of
    /// that name (find pass only).
    fn note_qualifier(&mut self, qualifier: &Ident) {
        let Some((depth, index)) = self.lookup(qualifier) else {
            return;
        };
        let Pass::Find(probes) = &mut self.pass else {
            return;
        };
        if depth + 1 == self.stack.len() {
            // A relation of this query's own FROM: DataFusion reads it first.
            return;
        }
        let reference = self
            .outer_references
            .entry((self.stack[depth].number, index))
            .or_insert_with(|| OuterReference {
                name: folded(qualifier),
                passes: HashSet::new(),
            });
        for level in depth + 1..self.stack.len() {
            let scope = &self.stack[level];
            let with = merged(&self.stack[..level], scope);
            for (i, relation) in scope.relations.iter().enumerate() {
                reference.passes.insert((scope.number, i));
                probes
                    .entry((scope.number, i))
                    .or_insert_with(|| probe(&relation.factor, with.clone()));
            }
        }
    }

    /// The new name of the relation `qualifier` names, if it is renamed.
    fn renamed(&self, qualifier: &Ident) -> Option<Ident> {
        if self.renames.is_empty() {
            return None;
        }
        let (depth, index) = self.lookup(qualifier)?;
        self.renames
            .get(&(self.stack[depth].number, index))
            .cloned()
    }

    /// The innermost relation called `ident`: (its scope's depth, its index).
    fn lookup(&self, ident: &Ident) -> Option<(usize, usize)> {
        let name = folded(ident);
        self.stack
            .iter()
            .enumerate()
            .rev()
            .find_map(|(depth, scope)| {
                let index = scope.relations.iter().position(|r| r.name == name)?;
                Some((depth, index))
            })
    }

    /// What a name used as a value becomes, if it names a relation and no column in scope
    /// (the find pass only notes the relations in scope, and gives `None`).
    fn row_of(&mut self, ident: &Ident) -> Option<Expr> {
        let (depth, index) = self.lookup(ident)?;
        match &mut self.pass {
            Pass::Find(probes) => {
                // Every relation between the named one and here may have a column of
                // that name, which would win.
                for scope in &self.stack[depth..] {
                    let with = merged(&self.stack[..=depth], scope);
                    for (i, relation) in scope.relations.iter().enumerate() {
                        probes
                            .entry((scope.number, i))
                            .or_insert_with(|| probe(&relation.factor, with.clone()));
                    }
                }
                None
            }
            Pass::Rewrite(columns) => {
                let name = folded(ident);
                let shadowed = self.stack[depth..].iter().any(|scope| {
                    (0..scope.relations.len()).any(|i| {
                        columns
                            .get(&(scope.number, i))
                            .is_some_and(|c| c.iter().any(|(column, _)| *column == name))
                    })
                });
                let scope = &self.stack[depth];
                let relation = &scope.relations[index];
                let found = columns.get(&(scope.number, index))?;
                (!shadowed).then(|| row_expr(relation, found))
            }
        }
    }
}

/// The WITH clauses a relation of `scope` sees: those of the queries enclosing it, the
/// inner one winning a name both define.
fn merged(outer: &[Scope], scope: &Scope) -> Option<With> {
    let mut all: Option<With> = None;
    for with in outer
        .iter()
        .chain(std::iter::once(scope))
        .flat_map(|s| &s.with)
    {
        match &mut all {
            None => all = Some(with.clone()),
            Some(all) => {
                all.recursive |= with.recursive;
                for cte in &with.cte_tables {
                    all.cte_tables.retain(|c| c.alias.name != cte.alias.name);
                    all.cte_tables.push(cte.clone());
                }
            }
        }
    }
    all
}

/// `SELECT * FROM <factor>` under `with`.
fn probe(factor: &TableFactor, with: Option<With>) -> Statement {
    let mut query = fixed_query("SELECT * FROM probe");
    query.with = with;
    if let SetExpr::Select(select) = query.body.as_mut() {
        select.from[0].relation = factor.clone();
    }
    Statement::Query(query)
}

/// `named_struct('a', t.a, …)`, or for a relation an outer join may extend with NULLs,
/// NULL when it does (seen in a column that is otherwise never NULL), as PostgreSQL's
/// whole-row value of such a row is NULL.
fn row_expr(relation: &Relation, columns: &Columns) -> Expr {
    let column = |name: &str| {
        Expr::CompoundIdentifier(vec![
            relation.qualifier.clone(),
            Ident::with_quote('"', name),
        ])
    };
    let row = named_struct(columns.iter().map(|(name, _)| (name.clone(), column(name))));
    let never_null = columns.iter().find(|(_, nullable)| !nullable);
    match (relation.outer_nullable, never_null) {
        (true, Some((name, _))) => Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition: Expr::IsNull(Box::new(column(name))),
                result: Expr::value(Value::Null),
            }],
            else_result: Some(Box::new(row)),
        },
        _ => row,
    }
}

/// `get_field(<row>, 'f')`: field `f` (folded) of a row.
fn get_field(row: Expr, field: &Ident) -> Expr {
    call("get_field", [arg(row), arg(string(folded(field)))])
}

/// `named_struct('a', <a>, …)` of `fields`: a row value with those field names.
fn named_struct(fields: impl Iterator<Item = (String, Expr)>) -> Expr {
    call(
        "named_struct",
        fields.flat_map(|(name, value)| [arg(string(name)), arg(value)]),
    )
}

/// `ROW(a, b)` or, as a function's argument, `(a, b)`, with PostgreSQL's field names
/// `f1`, `f2`, … (DataFusion's `struct` names them `c0`, `c1`).
fn anonymous_row(values: &[Expr]) -> Expr {
    named_struct(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("f{}", i + 1), v.clone())),
    )
}

/// The values of a `ROW(...)` call, if `function` is one.
fn row_constructor(function: &Function) -> Option<Vec<Expr>> {
    let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
        return None;
    };
    let FunctionArguments::List(list) = &function.args else {
        return None;
    };
    if !name.value.eq_ignore_ascii_case("row") || function.over.is_some() {
        return None;
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The relations `from` introduces, each marked if an outer join may extend it with
/// NULLs.
fn relations_of(from: &[TableWithJoins], out: &mut Vec<Relation>) {
    for table in from {
        let first = out.len();
        add_relation(&table.relation, false, out);
        for join in &table.joins {
            let (left, right) = match &join.join_operator {
                JoinOperator::Left(_) | JoinOperator::LeftOuter(_) | JoinOperator::OuterApply => {
                    (false, true)
                }
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => (true, false),
                JoinOperator::FullOuter(_) => (true, true),
                _ => (false, false),
            };
            if left {
                for relation in &mut out[first..] {
                    relation.outer_nullable = true;
                }
            }
            add_relation(&join.relation, right, out);
        }
    }
}

fn add_relation(factor: &TableFactor, outer_nullable: bool, out: &mut Vec<Relation>) {
    let (alias, name) = match factor {
        TableFactor::Table { alias, name, .. } => (alias, name.0.last().and_then(|p| p.as_ident())),
        TableFactor::NestedJoin {
            table_with_joins,
            alias: None,
        } => {
            let first = out.len();
            relations_of(std::slice::from_ref(table_with_joins), out);
            for relation in &mut out[first..] {
                relation.outer_nullable |= outer_nullable;
            }
            return;
        }
        TableFactor::Derived { alias, .. }
        | TableFactor::Function { alias, .. }
        | TableFactor::UNNEST { alias, .. }
        | TableFactor::NestedJoin { alias, .. } => (alias, None),
        _ => return,
    };
    let Some(qualifier) = alias.as_ref().map(|a| &a.name).or(name) else {
        return;
    };
    out.push(Relation {
        name: folded(qualifier),
        qualifier: qualifier.clone(),
        factor: factor.clone(),
        outer_nullable,
    });
}

/// Gives the relation of `from` called `name` (folded) the name `renamed`.
fn rename_relation(from: &mut [TableWithJoins], name: &str, renamed: &Ident) {
    for table in from {
        rename_factor(&mut table.relation, name, renamed);
        for join in &mut table.joins {
            rename_factor(&mut join.relation, name, renamed);
        }
    }
}

fn rename_factor(factor: &mut TableFactor, name: &str, renamed: &Ident) {
    match factor {
        TableFactor::NestedJoin {
            table_with_joins,
            alias: None,
        } => rename_relation(std::slice::from_mut(table_with_joins), name, renamed),
        TableFactor::Table {
            alias: alias @ None,
            name: table,
            ..
        } if table
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|t| folded(t) == name) =>
        {
            *alias = Some(TableAlias {
                explicit: true,
                name: renamed.clone(),
                columns: Vec::new(),
                at: None,
            });
        }
        TableFactor::Table {
            alias: Some(alias), ..
        }
        | TableFactor::Derived {
            alias: Some(alias), ..
        }
        | TableFactor::Function {
            alias: Some(alias), ..
        }
        | TableFactor::UNNEST {
            alias: Some(alias), ..
        }
        | TableFactor::NestedJoin {
            alias: Some(alias), ..
        } if folded(&alias.name) == name => {
            alias.name = renamed.clone();
        }
        _ => {}
    }
}

/// `t` of `t.*` renamed, if it is `name` (folded).
fn rename_qualifier(qualifier: &mut ObjectName, name: &str, renamed: &Ident) {
    if let [ObjectNamePart::Identifier(ident)] = qualifier.0.as_mut_slice()
        && folded(ident) == name
    {
        *ident = renamed.clone();
    }
}

/// Functions whose `t.*` argument is not a row: `count(t.*)` counts rows.
fn takes_star(function: &Function) -> bool {
    function
        .name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.value.eq_ignore_ascii_case("count"))
}

impl VisitorMut for Scopes {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let mut relations = Vec::new();
        for select in selects(&mut query.body) {
            relations_of(&select.from, &mut relations);
        }
        let number = self.next_number;
        for (index, relation) in relations.iter_mut().enumerate() {
            if let Some(renamed) = self.renames.get(&(number, index)) {
                relation.qualifier = renamed.clone();
                for select in selects(&mut query.body) {
                    rename_relation(&mut select.from, &relation.name, renamed);
                    for item in &mut select.projection {
                        if let SelectItem::QualifiedWildcard(
                            SelectItemQualifiedWildcardKind::ObjectName(name),
                            _,
                        ) = item
                        {
                            rename_qualifier(name, &relation.name, renamed);
                        }
                    }
                }
            }
        }
        self.stack.push(Scope {
            number,
            relations,
            with: query.with.iter().cloned().collect(),
        });
        self.next_number += 1;
        if matches!(self.pass, Pass::Rewrite(_)) {
            // PostgreSQL names the column of a bare `t` after the relation.
            for select in selects(&mut query.body) {
                for item in &mut select.projection {
                    if let SelectItem::UnnamedExpr(Expr::Identifier(ident)) = item
                        && self.lookup(ident).is_some()
                    {
                        *item = SelectItem::ExprWithAlias {
                            alias: ident.clone(),
                            expr: Expr::Identifier(ident.clone()),
                        };
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut Query) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let address = std::ptr::from_ref::<Expr>(expr) as usize;
        match expr {
            // `(row).f`: DataFusion takes a field by `get_field` only.
            Expr::CompoundFieldAccess { root, access_chain }
                if matches!(root.as_ref(), Expr::Nested(_)) =>
            {
                if let Some(AccessExpr::Dot(Expr::Identifier(field))) = access_chain.first() {
                    let field = field.clone();
                    access_chain.remove(0);
                    let row = std::mem::replace(root.as_mut(), Expr::value(Value::Null));
                    let field = get_field(row, &field);
                    *expr = if access_chain.is_empty() {
                        field
                    } else {
                        Expr::CompoundFieldAccess {
                            root: Box::new(field),
                            access_chain: std::mem::take(access_chain),
                        }
                    };
                }
            }
            Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                self.note_qualifier(&parts[0]);
                if let Some(renamed) = self.renamed(&parts[0]) {
                    parts[0] = renamed;
                }
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                if let Some(AccessExpr::Dot(_)) = access_chain.first() {
                    self.qualifying
                        .insert(std::ptr::from_ref::<Expr>(root) as usize);
                    if let Expr::Identifier(qualifier) = root.as_mut() {
                        self.note_qualifier(qualifier);
                        if let Some(renamed) = self.renamed(qualifier) {
                            *qualifier = renamed;
                        }
                    }
                }
                for access in access_chain.iter() {
                    if let AccessExpr::Dot(name) = access {
                        self.qualifying.insert(std::ptr::from_ref(name) as usize);
                    }
                }
            }
            Expr::Identifier(ident) => {
                if self.qualifying.contains(&address) {
                    return ControlFlow::Continue(());
                }
                let ident = ident.clone();
                if let Some(row) = self.row_of(&ident) {
                    *expr = row;
                }
            }
            Expr::Function(function) if !takes_star(function) => {
                if let Some(values) = row_constructor(function) {
                    *expr = anonymous_row(&values);
                    return ControlFlow::Continue(());
                }
                if let FunctionArguments::List(list) = &mut function.args {
                    for arg in &mut list.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Tuple(values))) =
                            arg
                        {
                            *arg =
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(anonymous_row(values)));
                            continue;
                        }
                        if let FunctionArg::Unnamed(a) = arg
                            && let FunctionArgExpr::QualifiedWildcard(name) = a
                            && let [ObjectNamePart::Identifier(ident)] = name.0.as_slice()
                        {
                            let ident = ident.clone();
                            if let Some(row) = self.row_of(&ident) {
                                *a = FunctionArgExpr::Expr(row);
                            } else if let Some(renamed) = self.renamed(&ident) {
                                rename_qualifier(name, &folded(&ident), &renamed);
                            }
                        }
                    }
                }
            }
            // `count(t.*)`.
            Expr::Function(function) => {
                if let FunctionArguments::List(list) = &mut function.args {
                    for arg in &mut list.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::QualifiedWildcard(name)) = arg
                            && let [ObjectNamePart::Identifier(ident)] = name.0.as_slice()
                            && let Some(renamed) = self.renamed(ident)
                        {
                            let name_folded = folded(ident);
                            rename_qualifier(name, &name_folded, &renamed);
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
