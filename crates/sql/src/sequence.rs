//! Sequences owned by columns: the `serial` types and `GENERATED ... AS IDENTITY`, and the
//! functions that use them (`nextval`, `currval`, `lastval`, `setval`,
//! `pg_get_serial_sequence`).
//!
//! A sequence's counter is an id space of the catalog (`IdKind::Sequence`): each SQL
//! node reserves `SEQUENCE_BATCH` values at a time and hands them out from memory, so
//! `nextval` rarely leaves the node. Values are unique; within one node they increase;
//! across nodes, and across a restart (which skips the rest of a batch), they need not
//! be consecutive, as PostgreSQL's cached sequences are not. Like PostgreSQL's,
//! `nextval` is not transactional: a rolled-back INSERT does not give its value back.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, DataType as AstType, Expr,
    SequenceOptions, Statement, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};
use flotilla_catalog::{
    CatalogError, CatalogRef, CatalogSnapshot, IdKind, Identity, SequenceDef, SqlType,
};
use parking_lot::Mutex;

use crate::dml::{ident_name, relation_name};
use crate::error::SqlError;

/// The integer type of a `serial` type name, if it is one.
pub(crate) fn serial_type(t: &AstType) -> Option<SqlType> {
    let AstType::Custom(name, modifiers) = t else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    match relation_name(name).as_str() {
        "smallserial" | "serial2" => Some(SqlType::Int16),
        "serial" | "serial4" => Some(SqlType::Int32),
        "bigserial" | "serial8" => Some(SqlType::Int64),
        _ => None,
    }
}

/// The values a column of `ty` holds, if it is an integer type.
fn type_range(ty: &SqlType) -> Option<(i64, i64)> {
    match ty {
        SqlType::Int16 => Some((i16::MIN.into(), i16::MAX.into())),
        SqlType::Int32 => Some((i32::MIN.into(), i32::MAX.into())),
        SqlType::Int64 => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// A sequence option's value: an integer literal, possibly negative.
fn option_value(what: &str, expr: &Expr) -> Result<i64, SqlError> {
    let bad = || SqlError::new("22023", format!("{what} must be an integer, not {expr}"));
    match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().map_err(|_| bad()),
            _ => Err(bad()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => option_value(what, expr)?.checked_neg().ok_or_else(bad),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => option_value(what, expr),
        _ => Err(bad()),
    }
}

/// The sequence of a `serial` or identity column `column` of `table`, with PostgreSQL's
/// defaults and checks. Its name is `<table>_<column>_seq`, or with a number appended if
/// `taken` says that name is used; its `id` is left 0 for the caller to allocate.
pub(crate) fn column_sequence(
    table: &str,
    column: &str,
    ty: &SqlType,
    identity: Option<Identity>,
    options: &[SequenceOptions],
    taken: impl Fn(&str) -> bool,
) -> Result<SequenceDef, SqlError> {
    let base = format!("{table}_{column}_seq");
    let name = std::iter::once(base.clone())
        .chain((1..).map(|i| format!("{base}{i}")))
        .find(|n| !taken(n))
        .expect("an unused name");
    sequence_def(name, "identity column", ty, identity, options)
}

/// The sequence `name` of integer type `ty` with `options`, PostgreSQL's defaults and
/// checks; its `id` is left 0 for the caller to allocate. `what` names the thing whose
/// type must be an integer (an identity column, a sequence).
pub(crate) fn sequence_def(
    name: String,
    what: &str,
    ty: &SqlType,
    identity: Option<Identity>,
    options: &[SequenceOptions],
) -> Result<SequenceDef, SqlError> {
    let Some((type_min, type_max)) = type_range(ty) else {
        return Err(SqlError::new(
            "22023",
            format!(
                "{what} type must be smallint, integer, or bigint, not {}",
                ty.pg_name()
            ),
        ));
    };
    let (mut increment, mut min, mut max, mut start) = (1, None, None, None);
    for option in options {
        match option {
            SequenceOptions::IncrementBy(e, _) => increment = option_value("INCREMENT", e)?,
            SequenceOptions::MinValue(e) => {
                min = e
                    .as_ref()
                    .map(|e| option_value("MINVALUE", e))
                    .transpose()?
            }
            SequenceOptions::MaxValue(e) => {
                max = e
                    .as_ref()
                    .map(|e| option_value("MAXVALUE", e))
                    .transpose()?
            }
            SequenceOptions::StartWith(e, _) => start = Some(option_value("START", e)?),
            // A hint of how many values a session keeps; a node here keeps a batch.
            SequenceOptions::Cache(e) => {
                if option_value("CACHE", e)? < 1 {
                    return Err(SqlError::new(
                        "22023",
                        format!("CACHE ({e}) must be greater than zero"),
                    ));
                }
            }
            // sqlparser's flag is "NO": `Cycle(true)` is NO CYCLE, the default.
            SequenceOptions::Cycle(true) => {}
            SequenceOptions::Cycle(false) => {
                return Err(SqlError::unsupported("CYCLE for a sequence"));
            }
        }
    }
    if increment == 0 {
        return Err(SqlError::new("22023", "INCREMENT must not be zero"));
    }
    let type_name = ty.pg_name();
    let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
    let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
    for (what, v) in [("MINVALUE", min), ("MAXVALUE", max)] {
        if !(type_min..=type_max).contains(&v) {
            return Err(SqlError::new(
                "22023",
                format!("{what} ({v}) is out of range for sequence data type {type_name}"),
            ));
        }
    }
    if min >= max {
        return Err(SqlError::new(
            "22023",
            format!("MINVALUE ({min}) must be less than MAXVALUE ({max})"),
        ));
    }
    let start = start.unwrap_or(if increment > 0 { min } else { max });
    if start < min {
        return Err(SqlError::new(
            "22023",
            format!("START value ({start}) cannot be less than MINVALUE ({min})"),
        ));
    }
    if start > max {
        return Err(SqlError::new(
            "22023",
            format!("START value ({start}) cannot be greater than MAXVALUE ({max})"),
        ));
    }
    Ok(SequenceDef {
        id: 0,
        name,
        start,
        increment,
        min,
        max,
        identity,
    })
}

/// Rank of a sequence option clause starting with `word`, in the one order sqlparser
/// reads them (INCREMENT, MINVALUE, MAXVALUE, START, CACHE, CYCLE, then OWNED BY);
/// `None` if no clause starts with it.
fn option_rank(word: &Word, next: Option<&Word>) -> Option<u8> {
    if word.quote_style.is_some() {
        return None;
    }
    Some(match word.keyword {
        Keyword::INCREMENT => 0,
        Keyword::MINVALUE => 1,
        Keyword::MAXVALUE => 2,
        Keyword::START => 3,
        Keyword::CACHE => 4,
        Keyword::CYCLE => 5,
        Keyword::OWNED => 6,
        // `SEQUENCE NAME n` in `AS IDENTITY (...)`, which sqlparser lacks: taken out.
        Keyword::SEQUENCE if next.is_some_and(|w| w.keyword == Keyword::NAME) => SEQUENCE_NAME_RANK,
        Keyword::NO => match next.map(|w| w.keyword) {
            Some(Keyword::MINVALUE) => 1,
            Some(Keyword::MAXVALUE) => 2,
            Some(Keyword::CYCLE) => 5,
            _ => return None,
        },
        _ => return None,
    })
}

/// The rank of an option clause that is taken out rather than moved.
const SEQUENCE_NAME_RANK: u8 = u8::MAX;

/// `sql` with the options of each CREATE SEQUENCE, and of each `AS IDENTITY (...)`, put
/// in the order sqlparser reads them; `None` when nothing moved. PostgreSQL takes them in
/// any order (Hibernate writes `START WITH 1 INCREMENT BY 50`). Only the clauses move,
/// whole, by sqlparser's own tokens; sqlparser still parses the result. An identity's
/// `SEQUENCE NAME n` (pg_dump writes one for each identity column), which sqlparser does
/// not read, is taken out, and `n` added to `sequence_names` for the caller to check.
pub(crate) fn canonical_option_order(
    sql: &str,
    sequence_names: &mut Vec<String>,
) -> Option<String> {
    if !sql
        .as_bytes()
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"sequence") || w.eq_ignore_ascii_case(b"identity"))
    {
        return None;
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    // Indexes of the tokens that are not whitespace.
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i], Token::Whitespace(_)))
        .collect();
    let word = |k: usize| match solid.get(k).map(|&i| &tokens[i]) {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    };
    let is =
        |k: usize, kw: Keyword| word(k).is_some_and(|w| w.keyword == kw && w.quote_style.is_none());
    // Option regions, as ranges of `solid` positions: (first option, end).
    let mut regions = Vec::new();
    let mut k = 0;
    while k < solid.len() {
        if is(k, Keyword::SEQUENCE)
            && (k >= 1 && is(k - 1, Keyword::CREATE) || k >= 2 && is(k - 2, Keyword::CREATE))
        {
            // The options start at the first clause word after the name; the statement
            // ends at a semicolon.
            let end = (k..solid.len())
                .find(|&j| matches!(tokens[solid[j]], Token::SemiColon))
                .unwrap_or(solid.len());
            if let Some(first) = (k + 2..end)
                .find(|&j| word(j).is_some_and(|w| option_rank(w, word(j + 1)).is_some()))
            {
                regions.push((first, end));
            }
            k = end;
        } else if is(k, Keyword::IDENTITY)
            && matches!(solid.get(k + 1).map(|&i| &tokens[i]), Some(Token::LParen))
        {
            let end = (k + 2..solid.len())
                .find(|&j| matches!(tokens[solid[j]], Token::RParen))
                .unwrap_or(solid.len());
            regions.push((k + 2, end));
            k = end;
        } else {
            k += 1;
        }
    }
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    let mut moved = false;
    for (first, end) in regions {
        // Clauses: runs of tokens from one clause word to the next.
        let mut clauses: Vec<(u8, usize, usize)> = Vec::new();
        for (j, &token) in solid.iter().enumerate().take(end).skip(first) {
            let rank = word(j).and_then(|w| {
                let after_no = j > first && is(j - 1, Keyword::NO);
                if after_no {
                    None
                } else {
                    option_rank(w, word(j + 1))
                }
            });
            match (rank, clauses.last_mut()) {
                (Some(rank), _) => clauses.push((rank, token, token)),
                (None, Some(last)) => last.2 = token,
                (None, None) => return None,
            }
        }
        let mut sorted = clauses.clone();
        sorted.sort_by_key(|c| c.0);
        if sorted == clauses && clauses.iter().all(|c| c.0 != SEQUENCE_NAME_RANK) {
            continue;
        }
        moved = true;
        let span = clauses.first().map(|c| c.1)?..=clauses.last().map(|c| c.2)?;
        let mut replacement = Vec::new();
        for &(_, from, to) in sorted.iter().filter(|c| c.0 == SEQUENCE_NAME_RANK) {
            // The clause's tokens after SEQUENCE NAME.
            let name: String = tokens[from..=to]
                .iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .skip(2)
                .map(|t| t.to_string())
                .collect();
            sequence_names.push(name);
        }
        sorted.retain(|c| c.0 != SEQUENCE_NAME_RANK);
        for (n, (_, from, to)) in sorted.iter().enumerate() {
            if n > 0 {
                replacement.push(usize::MAX);
            }
            replacement.extend(*from..=*to);
        }
        let at = order.iter().position(|&i| i == *span.start())?;
        let len = span.end() - span.start() + 1;
        order.splice(at..at + len, replacement);
    }
    moved.then(|| {
        order
            .iter()
            .map(|&i| {
                if i == usize::MAX {
                    " ".to_string()
                } else {
                    tokens[i].to_string()
                }
            })
            .collect()
    })
}

/// Accepts the `SEQUENCE NAME n` clauses `canonical_option_order` took out of identity
/// specifications when each names the sequence Flotilla gives that column anyway
/// (`<table>_<column>_seq`, as PostgreSQL does and so as pg_dump writes back); another
/// name is 0A000, since sequences are named by their column here.
pub(crate) fn check_identity_sequence_names(
    statements: &[Statement],
    names: &[String],
) -> Result<(), SqlError> {
    if names.is_empty() {
        return Ok(());
    }
    let mut defaults = Vec::new();
    for statement in statements {
        match statement {
            Statement::CreateTable(ct) => {
                let table = relation_name(&ct.name);
                for column in &ct.columns {
                    if column
                        .options
                        .iter()
                        .any(|o| matches!(o.option, ColumnOption::Generated { .. }))
                    {
                        defaults.push(format!("{table}_{}_seq", ident_name(&column.name)));
                    }
                }
            }
            Statement::AlterTable(at) => {
                let table = relation_name(&at.name);
                for op in &at.operations {
                    if let AlterTableOperation::AlterColumn {
                        column_name,
                        op: AlterColumnOperation::AddGenerated { .. },
                    } = op
                    {
                        defaults.push(format!("{table}_{}_seq", ident_name(column_name)));
                    }
                }
            }
            _ => {}
        }
    }
    for name in names {
        let name = parse_sequence_name(name);
        if !defaults.contains(&name) {
            return Err(SqlError::unsupported(format!(
                "SEQUENCE NAME {name} for an identity column: its sequence is named \
                 <table>_<column>_seq"
            )));
        }
    }
    Ok(())
}

/// The default of a column numbered by `sequence`.
pub(crate) fn nextval_default(sequence: &SequenceDef) -> String {
    sequence.nextval_default()
}

/// A sequence name as `nextval` takes it (PostgreSQL's `regclass` text): optionally
/// schema-qualified, folded to lower case unless double-quoted.
fn parse_sequence_name(text: &str) -> String {
    let text = text.trim();
    let text = text
        .strip_prefix("public.")
        .or_else(|| text.strip_prefix("\"public\"."))
        .unwrap_or(text);
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => text.to_lowercase(),
    }
}

/// What `currval` and `lastval` remember: per session, as in PostgreSQL.
#[derive(Debug, Default)]
pub(crate) struct SessionSequences {
    /// The last value `nextval` returned per sequence id.
    current: Mutex<HashMap<i64, i64>>,
    /// The sequence id and value of the session's last `nextval`.
    last: Mutex<Option<(i64, i64)>>,
}

/// The sequence functions of one session, over the node's catalog.
#[derive(Clone)]
pub(crate) struct Sequences {
    catalog: CatalogRef,
    session: Arc<SessionSequences>,
}

impl std::fmt::Debug for Sequences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequences").finish_non_exhaustive()
    }
}

impl PartialEq for Sequences {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.session, &other.session)
    }
}

impl Eq for Sequences {}

impl std::hash::Hash for Sequences {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.session).hash(state)
    }
}

fn no_sequence(name: &str) -> SqlError {
    SqlError::new("42P01", format!("relation \"{name}\" does not exist"))
}

/// 42809: `name` is a relation of another kind.
pub(crate) fn not_a_sequence(name: &str) -> SqlError {
    SqlError::new("42809", format!("\"{name}\" is not a sequence"))
}

/// The sequence named `name` in `snapshot`; a table or view of that name is the wrong
/// kind of relation (42809), as in PostgreSQL.
fn sequence_named<'a>(
    snapshot: &'a CatalogSnapshot,
    name: &str,
) -> Result<&'a SequenceDef, SqlError> {
    match snapshot.sequence(name) {
        Some(sequence) => Ok(sequence),
        None if snapshot.relation_exists(name) => Err(not_a_sequence(name)),
        None => Err(no_sequence(name)),
    }
}

impl Sequences {
    /// Forgets this session's `currval` and `lastval` state (`DISCARD SEQUENCES`).
    pub(crate) fn discard(&self) {
        self.session.current.lock().clear();
        *self.session.last.lock() = None;
    }

    pub(crate) fn new(catalog: CatalogRef) -> Self {
        Self {
            catalog,
            session: Arc::default(),
        }
    }

    /// The next `n` values of the sequence named `name` (as `nextval` takes it).
    pub(crate) fn next(&self, name: &str, n: usize) -> Result<Vec<i64>, SqlError> {
        let name = parse_sequence_name(name);
        let snapshot = self.catalog.snapshot();
        let sequence = sequence_named(&snapshot, &name)?;
        self.next_of(sequence, n)
    }

    /// The next `n` values of `sequence`.
    pub(crate) fn next_of(&self, sequence: &SequenceDef, n: usize) -> Result<Vec<i64>, SqlError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let reached = || {
            let (verb, bound) = if sequence.increment > 0 {
                ("maximum", sequence.max)
            } else {
                ("minimum", sequence.min)
            };
            SqlError::new(
                "2200H",
                format!(
                    "nextval: reached {verb} value of sequence \"{}\" ({bound})",
                    sequence.name
                ),
            )
        };
        let ordinals = match self
            .catalog
            .allocate(IdKind::Sequence(sequence.id), n as u64)
        {
            // The counter of ordinals itself is used up (near 2^63).
            Err(CatalogError::Exhausted(_)) => return Err(reached()),
            other => other?,
        };
        let values = ordinals
            .map(|k| sequence.value(k).ok_or_else(reached))
            .collect::<Result<Vec<i64>, SqlError>>()?;
        let last = *values.last().expect("n > 0");
        self.session.current.lock().insert(sequence.id, last);
        *self.session.last.lock() = Some((sequence.id, last));
        Ok(values)
    }

    /// `setval(name, value, is_called)`: the next `nextval` returns the value after `value`
    /// (`is_called`) or `value` itself, on whichever node asks first. Values a node had
    /// reserved before are handed out first there, as a PostgreSQL session's cached
    /// values are; this node drops its own.
    fn set(&self, name: &str, value: i64, is_called: bool) -> Result<i64, SqlError> {
        let name = parse_sequence_name(name);
        let snapshot = self.catalog.snapshot();
        let sequence = sequence_named(&snapshot, &name)?;
        self.set_of(sequence, value, is_called)
    }

    /// `ALTER SEQUENCE ... RESTART WITH value`: the next `nextval` returns `value`.
    pub(crate) fn restart(&self, sequence: &SequenceDef, value: i64) -> Result<(), SqlError> {
        let (word, bound) = if value < sequence.min {
            ("less than MINVALUE", sequence.min)
        } else if value > sequence.max {
            ("greater than MAXVALUE", sequence.max)
        } else {
            return self.set_of(sequence, value, false).map(|_| ());
        };
        Err(SqlError::new(
            "22023",
            format!("RESTART value ({value}) cannot be {word} ({bound})"),
        ))
    }

    fn set_of(&self, sequence: &SequenceDef, value: i64, is_called: bool) -> Result<i64, SqlError> {
        let name = &sequence.name;
        if !(sequence.min..=sequence.max).contains(&value) {
            return Err(SqlError::new(
                "22003",
                format!(
                    "setval: value {value} is out of bounds for sequence \"{name}\" ({}..{})",
                    sequence.min, sequence.max
                ),
            ));
        }
        let increment = i128::from(sequence.increment);
        let next = i128::from(value) + if is_called { increment } else { 0 };
        let offset = next - i128::from(sequence.start);
        // The counter numbers the values START + k × INCREMENT (k ≥ 0), so it can be set to
        // those only: every value of a sequence with the default START and INCREMENT 1.
        if offset % increment != 0 || offset / increment < 0 {
            return Err(SqlError::unsupported(format!(
                "setval of sequence \"{name}\" to a value it never reaches from START {} by \
                 INCREMENT {} (the next value would be {next})",
                sequence.start, sequence.increment
            )));
        }
        // Past i64 the sequence is exhausted either way: `value` says so.
        let ordinal = i64::try_from(offset / increment + 1).unwrap_or(i64::MAX);
        self.catalog.restart_sequence(sequence.id, ordinal)?;
        if is_called {
            // As in PostgreSQL: currval reports the value set; lastval is unchanged.
            self.session.current.lock().insert(sequence.id, value);
        }
        Ok(value)
    }

    fn current(&self, name: &str) -> Result<i64, SqlError> {
        let name = parse_sequence_name(name);
        let snapshot = self.catalog.snapshot();
        let sequence = sequence_named(&snapshot, &name)?;
        self.session
            .current
            .lock()
            .get(&sequence.id)
            .copied()
            .ok_or_else(|| {
                SqlError::new(
                    "55000",
                    format!("currval of sequence \"{name}\" is not yet defined in this session"),
                )
            })
    }

    fn last(&self) -> Result<i64, SqlError> {
        let (id, value) = (*self.session.last.lock())
            .ok_or_else(|| SqlError::new("55000", "lastval is not yet defined in this session"))?;
        if !self.catalog.snapshot().sequence_id_exists(id) {
            return Err(SqlError::new("55000", "lastval: sequence no longer exists"));
        }
        Ok(value)
    }

    /// `pg_get_serial_sequence(table, column)`: the qualified name of the sequence that
    /// numbers the column, NULL if none does.
    fn serial_sequence(&self, table: &str, column: &str) -> Result<Option<String>, SqlError> {
        let table_name = parse_sequence_name(table);
        let snapshot = self.catalog.snapshot();
        let table = snapshot
            .table(&table_name)
            .ok_or_else(|| no_sequence(&table_name))?;
        let column_name = column.to_string();
        let column = table.column(&column_name).ok_or_else(|| {
            SqlError::new(
                "42703",
                format!(
                    "column \"{column_name}\" of relation \"{}\" does not exist",
                    table.name
                ),
            )
        })?;
        Ok(column
            .sequence
            .as_ref()
            .map(|s| format!("public.{}", s.name)))
    }

    /// The session's sequence functions, to register in each statement's context.
    pub(crate) fn udfs(&self) -> Vec<Arc<ScalarUDF>> {
        let text = || vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View];
        // A sequence's name, or its OID (`'s'::regclass`).
        let sequence = || {
            Signature::one_of(
                vec![
                    TypeSignature::Uniform(1, text()),
                    TypeSignature::Exact(vec![DataType::Int64]),
                ],
                Volatility::Volatile,
            )
        };
        [
            (SequenceFn::NextVal, sequence()),
            (SequenceFn::CurrVal, sequence()),
            (
                SequenceFn::LastVal,
                Signature::exact(vec![], Volatility::Volatile),
            ),
            (
                SequenceFn::SerialSequence,
                Signature::uniform(2, text(), Volatility::Stable),
            ),
            (
                SequenceFn::SetVal,
                Signature::one_of(
                    vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                    Volatility::Volatile,
                ),
            ),
        ]
        .into_iter()
        .map(|(function, signature)| {
            Arc::new(ScalarUDF::new_from_impl(SequenceUdf {
                function,
                signature,
                sequences: self.clone(),
            }))
        })
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SequenceFn {
    NextVal,
    CurrVal,
    LastVal,
    SerialSequence,
    SetVal,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SequenceUdf {
    function: SequenceFn,
    signature: Signature,
    sequences: Sequences,
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Argument `i` of every row as text (NULL as `None`).
fn text_arg(args: &ScalarFunctionArgs, i: usize) -> DfResult<Vec<Option<String>>> {
    let array = args.args[i].to_array(args.number_rows)?;
    let array = cast(&array, &DataType::Utf8)?;
    let strings = array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("text argument".into()))?;
    Ok((0..strings.len())
        .map(|r| (!strings.is_null(r)).then(|| strings.value(r).to_string()))
        .collect())
}

impl SequenceUdf {
    /// Argument `i` of every row as a sequence name: text as written (`'public.s'`), or
    /// an OID, which `'s'::regclass` gives (PostgreSQL shows serial defaults as
    /// `nextval('s'::regclass)`, and pg_dump and ORMs write them so), as the exact name of
    /// the sequence it identifies.
    fn sequence_names(&self, args: &ScalarFunctionArgs, i: usize) -> DfResult<Vec<Option<String>>> {
        if !args.args[i].data_type().is_integer() {
            return text_arg(args, i);
        }
        let oids = cast(&args.args[i].to_array(args.number_rows)?, &DataType::Int64)?;
        let oids = oids
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("oid argument".into()))?;
        let snapshot = self.sequences.catalog.snapshot();
        oids.iter()
            .map(|oid| {
                let Some(oid) = oid else { return Ok(None) };
                match snapshot.sequence_by_id(oid) {
                    Some(s) => Ok(Some(format!("\"{}\"", s.name.replace('"', "\"\"")))),
                    None => Err(external(match relation_of_oid(&snapshot, oid) {
                        Some(name) => not_a_sequence(&name),
                        None => no_sequence(&format!("with OID {oid}")),
                    })),
                }
            })
            .collect()
    }
}

/// The name of the table or view whose OID is `oid`.
fn relation_of_oid(snapshot: &CatalogSnapshot, oid: i64) -> Option<String> {
    snapshot
        .tables
        .values()
        .find(|t| t.id == oid)
        .map(|t| t.name.clone())
        .or_else(|| {
            snapshot
                .views
                .values()
                .find(|v| v.id == oid)
                .map(|v| v.name.clone())
        })
}

impl ScalarUDFImpl for SequenceUdf {
    fn name(&self) -> &str {
        match self.function {
            SequenceFn::NextVal => "nextval",
            SequenceFn::CurrVal => "currval",
            SequenceFn::LastVal => "lastval",
            SequenceFn::SerialSequence => "pg_get_serial_sequence",
            SequenceFn::SetVal => "setval",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.function {
            SequenceFn::SerialSequence => DataType::Utf8,
            _ => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let s = &self.sequences;
        let array: ArrayRef = match self.function {
            SequenceFn::NextVal => match &args.args[0] {
                // One name for every row: one allocation for all of them.
                ColumnarValue::Scalar(v) => {
                    let one = ScalarFunctionArgs {
                        args: vec![ColumnarValue::Scalar(v.clone())],
                        number_rows: 1,
                        ..args.clone()
                    };
                    match self.sequence_names(&one, 0)?.pop().flatten() {
                        Some(name) => {
                            Arc::new(Int64Array::from(s.next(&name, n).map_err(external)?))
                        }
                        None => ScalarValue::Int64(None).to_array_of_size(n)?,
                    }
                }
                ColumnarValue::Array(_) => {
                    let mut values = Vec::with_capacity(n);
                    for name in self.sequence_names(&args, 0)? {
                        values.push(match name {
                            Some(name) => Some(s.next(&name, 1).map_err(external)?[0]),
                            None => None,
                        });
                    }
                    Arc::new(Int64Array::from(values))
                }
            },
            SequenceFn::CurrVal => {
                let mut values = Vec::with_capacity(n);
                for name in self.sequence_names(&args, 0)? {
                    values.push(
                        name.map(|name| s.current(&name))
                            .transpose()
                            .map_err(external)?,
                    );
                }
                Arc::new(Int64Array::from(values))
            }
            SequenceFn::LastVal => {
                ScalarValue::Int64(Some(s.last().map_err(external)?)).to_array_of_size(n)?
            }
            SequenceFn::SetVal => {
                let names = self.sequence_names(&args, 0)?;
                let values = cast(&args.args[1].to_array(n)?, &DataType::Int64)?;
                let values = values
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| DataFusionError::Internal("bigint argument".into()))?;
                let called = match args.args.get(2) {
                    Some(c) => Some(cast(&c.to_array(n)?, &DataType::Boolean)?),
                    None => None,
                };
                let called = called
                    .as_ref()
                    .map(|c| {
                        c.as_any()
                            .downcast_ref::<BooleanArray>()
                            .ok_or_else(|| DataFusionError::Internal("boolean argument".into()))
                    })
                    .transpose()?;
                let mut out = Vec::with_capacity(n);
                for (row, name) in names.into_iter().enumerate() {
                    let is_called = match called {
                        None => Some(true),
                        Some(c) => (!c.is_null(row)).then(|| c.value(row)),
                    };
                    // Strict, as in PostgreSQL: a NULL argument gives NULL and sets nothing.
                    out.push(match (name, values.is_valid(row), is_called) {
                        (Some(name), true, Some(is_called)) => Some(
                            s.set(&name, values.value(row), is_called)
                                .map_err(external)?,
                        ),
                        _ => None,
                    });
                }
                Arc::new(Int64Array::from(out))
            }
            SequenceFn::SerialSequence => {
                let (tables, columns) = (text_arg(&args, 0)?, text_arg(&args, 1)?);
                let mut values = Vec::with_capacity(n);
                for (table, column) in tables.into_iter().zip(columns) {
                    values.push(match (table, column) {
                        (Some(t), Some(c)) => s.serial_sequence(&t, &c).map_err(external)?,
                        _ => None,
                    });
                }
                Arc::new(StringArray::from(values))
            }
        };
        Ok(ColumnarValue::Array(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_names_fold_like_regclass_text() {
        assert_eq!(parse_sequence_name("T_id_seq"), "t_id_seq");
        assert_eq!(parse_sequence_name("public.t_id_seq"), "t_id_seq");
        assert_eq!(parse_sequence_name("\"Odd\"\"Seq\""), "Odd\"Seq");
    }

    #[test]
    fn options_are_checked_as_postgres_checks_them() {
        let seq = |opts: &[SequenceOptions]| {
            column_sequence("t", "id", &SqlType::Int32, None, opts, |_| false)
        };
        let lit = |n: i64| Expr::value(Value::Number(n.abs().to_string(), false));
        let neg = |n: i64| Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: Box::new(lit(n)),
        };
        let s = seq(&[]).unwrap();
        assert_eq!(
            (s.start, s.increment, s.min, s.max),
            (1, 1, 1, i32::MAX as i64)
        );
        let down = seq(&[SequenceOptions::IncrementBy(neg(2), true)]).unwrap();
        assert_eq!((down.start, down.min, down.max), (-1, i32::MIN as i64, -1));
        assert_eq!(down.value(2), Some(-3));
        let e = seq(&[SequenceOptions::IncrementBy(lit(0), true)]).unwrap_err();
        assert_eq!(e.code, "22023");
        let e = seq(&[SequenceOptions::MaxValue(Some(lit(1 << 40)))]).unwrap_err();
        assert!(
            e.message
                .contains("out of range for sequence data type integer"),
            "{e}"
        );
        let e = seq(&[SequenceOptions::StartWith(lit(0), true)]).unwrap_err();
        assert!(
            e.message.contains("cannot be less than MINVALUE (1)"),
            "{e}"
        );
        // sqlparser's `Cycle(no)`: CYCLE is refused, NO CYCLE is the default.
        assert_eq!(
            seq(&[SequenceOptions::Cycle(false)]).unwrap_err().code,
            "0A000"
        );
        assert!(seq(&[SequenceOptions::Cycle(true)]).is_ok());
        let taken = column_sequence("t", "id", &SqlType::Int64, None, &[], |n| n == "t_id_seq");
        assert_eq!(taken.unwrap().name, "t_id_seq1");
        let text = column_sequence("t", "id", &SqlType::Text, None, &[], |_| false);
        assert_eq!(text.unwrap_err().code, "22023");
    }

    #[test]
    fn sequence_options_are_put_in_the_order_the_parser_reads() {
        let reorder = |sql: &str| canonical_option_order(sql, &mut Vec::new());
        assert_eq!(
            reorder("CREATE SEQUENCE s START WITH 1 INCREMENT BY 50").as_deref(),
            Some("CREATE SEQUENCE s INCREMENT BY 50 START WITH 1")
        );
        assert_eq!(
            reorder("create sequence if not exists hib start 1 increment 1;SELECT 1").as_deref(),
            Some("create sequence if not exists hib increment 1 start 1;SELECT 1")
        );
        assert_eq!(
            reorder("CREATE SEQUENCE s AS integer NO CYCLE START -3 NO MINVALUE CACHE 5")
                .as_deref(),
            Some("CREATE SEQUENCE s AS integer NO MINVALUE START -3 CACHE 5 NO CYCLE")
        );
        assert_eq!(
            reorder(
                "CREATE TABLE z (id INT GENERATED ALWAYS AS IDENTITY (START WITH 5 INCREMENT BY 2), \
                 v INT GENERATED BY DEFAULT AS IDENTITY (MAXVALUE 9 MINVALUE 2))"
            )
            .as_deref(),
            Some(
                "CREATE TABLE z (id INT GENERATED ALWAYS AS IDENTITY (INCREMENT BY 2 START WITH 5), \
                 v INT GENERATED BY DEFAULT AS IDENTITY (MINVALUE 2 MAXVALUE 9))"
            )
        );
        // In order already, or no options, or only the word: nothing to do.
        for sql in [
            "CREATE SEQUENCE s INCREMENT BY 2 START WITH 5",
            "CREATE SEQUENCE s",
            "SELECT 'start sequence increment', nextval('sequence')",
            "CREATE TABLE t (id INT GENERATED ALWAYS AS IDENTITY)",
        ] {
            assert_eq!(reorder(sql), None, "{sql}");
        }
    }

    #[test]
    fn values_stop_at_the_bound() {
        let s = SequenceDef {
            id: 1,
            name: "s".into(),
            start: 5,
            increment: 5,
            min: 1,
            max: 12,
            identity: None,
        };
        assert_eq!(
            (s.value(1), s.value(2), s.value(3)),
            (Some(5), Some(10), None)
        );
        assert_eq!(s.value(i64::MAX), None);
    }
}
