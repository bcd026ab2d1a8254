//! Deferred constraint checks: the DEFERRABLE foreign keys a transaction checks when it
//! commits (INITIALLY DEFERRED, or after SET CONSTRAINTS ... DEFERRED), and the
//! statement `SET CONSTRAINTS { ALL | name [, ...] } { DEFERRED | IMMEDIATE }`.
//!
//! What is put off is kept by key, not by value, so that what the transaction did after
//! the statement is what counts at commit, as in PostgreSQL:
//! - **a row written** to a referencing table: its record key. At commit the row is read
//!   back from the write buffer: one deleted since (or whose write a savepoint or a
//!   re-run statement undid) is not checked, one updated since is checked as it is now.
//! - **a referenced key removed** (a referenced row deleted or re-keyed): the key and its
//!   values. At commit, a key written again since (or whose removal was undone) is not
//!   checked; for the others, referencing rows are looked for as at a statement's end.
//!
//! Each transaction keeps at most `SqlConfig::deferred_checks_max` of them (54000 past
//! it, which fails the statement, not the data).

use std::collections::{BTreeMap, BTreeSet};

use datafusion::sql::sqlparser::ast::ObjectName;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;
use flotilla_catalog::{CatalogSnapshot, ForeignKeyDef, TableDef};
use flotilla_codec::Datum;
use flotilla_types::{TableId, Timestamp};

use crate::error::{SqlError, parser_error};
use crate::session::Session;

/// A constraint a transaction block named in SET CONSTRAINTS: its table and name.
type ConstraintId = (TableId, String);

/// What SET CONSTRAINTS has set in a transaction block.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConstraintModes {
    /// `SET CONSTRAINTS ALL ...`: deferred or not, for every deferrable constraint not
    /// named since.
    all: Option<bool>,
    /// Constraints named since: deferred or not.
    named: BTreeMap<ConstraintId, bool>,
}

impl ConstraintModes {
    /// Whether `fk` (of table `table`) is checked at commit rather than as each statement
    /// ends.
    pub(crate) fn deferred(&self, table: TableId, fk: &ForeignKeyDef) -> bool {
        if !fk.deferrable {
            return false;
        }
        self.named
            .get(&(table, fk.name.clone()))
            .or(self.all.as_ref())
            .copied()
            .unwrap_or(fk.initially_deferred)
    }
}

/// The checks a transaction has put off until it commits.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Rows written to a referencing table: (table, constraint) -> their record keys.
    references: BTreeMap<ConstraintId, BTreeSet<Vec<u8>>>,
    /// Referenced keys removed: (referenced table, (referencing table, constraint)) ->
    /// each key's entry (the row's or the unique index's) and its values.
    removals: BTreeMap<(TableId, ConstraintId), BTreeMap<Vec<u8>, Vec<Datum>>>,
    /// Entries in both.
    count: usize,
}

impl Pending {
    fn recount(&mut self) {
        self.count = self.references.values().map(BTreeSet::len).sum::<usize>()
            + self.removals.values().map(BTreeMap::len).sum::<usize>();
    }
}

fn too_many(max: usize) -> SqlError {
    SqlError::new(
        "54000",
        format!("more than {max} foreign key checks deferred in one transaction"),
    )
    .with_hint(
        "Check them as you go (SET CONSTRAINTS ALL IMMEDIATE), or write fewer rows per \
         transaction; the limit is the server's deferred_checks_max.",
    )
}

fn pending(session: &mut Session) -> &mut Pending {
    &mut session
        .open
        .as_mut()
        .expect("a deferred check is recorded in a transaction")
        .deferred
}

/// Puts off until commit the check of constraint `fk` (of table `table`) for the rows
/// at record keys `keys`, written by the running statement.
pub(crate) fn defer_references(
    session: &mut Session,
    table: TableId,
    fk: &str,
    keys: impl Iterator<Item = Vec<u8>>,
) -> Result<(), SqlError> {
    let max = session.engine.config.deferred_checks_max;
    let pending = pending(session);
    let set = pending
        .references
        .entry((table, fk.to_string()))
        .or_default();
    for key in keys {
        if set.insert(key) {
            pending.count += 1;
            if pending.count > max {
                return Err(too_many(max));
            }
        }
    }
    Ok(())
}

/// Puts off until commit the search for rows of `child` that reference (through
/// constraint `fk`) the keys of `table` in `gone`, removed by the running statement.
pub(crate) fn defer_removals(
    session: &mut Session,
    table: TableId,
    child: TableId,
    fk: &str,
    gone: BTreeMap<Vec<u8>, Vec<Datum>>,
) -> Result<(), SqlError> {
    let max = session.engine.config.deferred_checks_max;
    let pending = pending(session);
    let map = pending
        .removals
        .entry((table, (child, fk.to_string())))
        .or_default();
    for (key, values) in gone {
        if map.insert(key, values).is_none() {
            pending.count += 1;
            if pending.count > max {
                return Err(too_many(max));
            }
        }
    }
    Ok(())
}

/// Runs the checks put off so far whose constraints are no longer deferred (`all`: every
/// one, as at commit), as of the transaction's writes now. The checks that pass are
/// forgotten; on a failure, none are.
pub(crate) async fn check(session: &mut Session, all: bool) -> Result<(), SqlError> {
    let Some(open) = session.open.as_mut() else {
        return Ok(());
    };
    if open.deferred.count == 0 {
        return Ok(());
    }
    let mut taken = std::mem::take(&mut open.deferred);
    let result = run(session, &taken, all).await;
    if result.is_ok() {
        let snapshot = session.catalog();
        let still = |c: &ConstraintId| !all && still_deferred(session, &snapshot, c);
        taken.references.retain(|c, _| still(c));
        taken.removals.retain(|(_, c), _| still(c));
        taken.recount();
    }
    session
        .open
        .as_mut()
        .expect("checking leaves the transaction open")
        .deferred = taken;
    result
}

/// The constraint `c` names in `snapshot`: its table and its position among the table's
/// foreign keys; `None` once dropped (nothing is left to check for it).
fn constraint<'a>(
    snapshot: &'a CatalogSnapshot,
    c: &ConstraintId,
) -> Option<(&'a TableDef, usize)> {
    let table = snapshot.table_by_id(c.0)?;
    let f = table.foreign_keys.iter().position(|fk| fk.name == c.1)?;
    Some((table, f))
}

/// Whether the constraint `c` names is there and still deferred in this transaction.
fn still_deferred(session: &Session, snapshot: &CatalogSnapshot, c: &ConstraintId) -> bool {
    constraint(snapshot, c)
        .is_some_and(|(table, f)| session.constraint_deferred(table.id, &table.foreign_keys[f]))
}

async fn run(session: &mut Session, pending: &Pending, all: bool) -> Result<(), SqlError> {
    let snapshot = session.catalog();
    // Referenced keys first: their locks were taken as the statements ran.
    let mut read_ts: Option<Timestamp> = None;
    for ((table_id, c), gone) in &pending.removals {
        let (Some((child, f)), Some(table)) =
            (constraint(&snapshot, c), snapshot.table_by_id(*table_id))
        else {
            continue;
        };
        if !all && still_deferred(session, &snapshot, c) {
            continue;
        }
        let txn = &session.open.as_ref().expect("open transaction").txn;
        // Only keys still removed: one written again (or whose removal was undone) is
        // there for its references.
        let still_gone: BTreeMap<Vec<u8>, Vec<Datum>> = gone
            .iter()
            .filter(|(key, _)| matches!(txn.buffered(key), Some(None)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !still_gone.is_empty() {
            let fk = &child.foreign_keys[f];
            crate::foreign::find_referencing(session, table, child, fk, &still_gone, &mut read_ts)
                .await?;
        }
    }
    let newest = session.isolation() == crate::session::Isolation::ReadCommitted;
    for (c, keys) in &pending.references {
        let Some((table, f)) = constraint(&snapshot, c) else {
            continue;
        };
        if !all && still_deferred(session, &snapshot, c) {
            continue;
        }
        let txn = &session.open.as_ref().expect("open transaction").txn;
        let mut rows = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(Some(value)) = txn.buffered(key) {
                rows.push(crate::rows::decode_row_value(table, value)?);
            }
        }
        let rows: Vec<&[Datum]> = rows.iter().map(Vec::as_slice).collect();
        crate::foreign::check_rows(session, table, &[f], &rows, newest).await?;
    }
    Ok(())
}

/// `SET CONSTRAINTS { ALL | name [, ...] } { DEFERRED | IMMEDIATE }`.
#[derive(Debug, Clone)]
pub(crate) struct SetConstraints {
    /// The constraints named; `None` for ALL.
    pub(crate) names: Option<Vec<ObjectName>>,
    /// DEFERRED (true) or IMMEDIATE.
    pub(crate) deferred: bool,
}

/// The SET CONSTRAINTS statement `sql` is, if it is one (sqlparser reads SET as a
/// setting; its own parser reads the rest).
pub(crate) fn parse(sql: &str) -> Option<Result<SetConstraints, SqlError>> {
    let mut words = sql.split_whitespace();
    if !(words.next()?.eq_ignore_ascii_case("set")
        && words
            .next()?
            .trim_end_matches(';')
            .eq_ignore_ascii_case("constraints"))
    {
        return None;
    }
    Some(parse_set_constraints(sql).map_err(|e| parser_error(&e, sql)))
}

fn parse_set_constraints(sql: &str) -> Result<SetConstraints, ParserError> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql)?;
    p.expect_keyword_is(Keyword::SET)?;
    // CONSTRAINTS is no keyword of sqlparser's; `parse` saw it.
    p.parse_identifier()?;
    let names = if p.parse_keyword(Keyword::ALL) {
        None
    } else {
        Some(p.parse_comma_separated(|p| p.parse_object_name(false))?)
    };
    let deferred = match p.parse_one_of_keywords(&[Keyword::DEFERRED, Keyword::IMMEDIATE]) {
        Some(Keyword::DEFERRED) => true,
        Some(_) => false,
        None => return p.expected("DEFERRED or IMMEDIATE", p.peek_token()),
    };
    while p.consume_token(&Token::SemiColon) {}
    p.expect_token(&Token::EOF)?;
    Ok(SetConstraints { names, deferred })
}

/// The constraints `names` name, each one deferrable: every foreign key of that name, of
/// any table (42704 if none has a constraint of that name, 42809 if one that does is not
/// deferrable).
pub(crate) fn resolve(
    snapshot: &CatalogSnapshot,
    names: &[ObjectName],
) -> Result<Vec<(TableId, String)>, SqlError> {
    let mut out = Vec::new();
    for name in names {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(crate::dml::ident_name))
            .collect();
        let (schema, name) = match parts.as_slice() {
            [name] => (None, name.clone()),
            [schema, name] => (Some(schema.as_str()), name.clone()),
            _ => (Some(""), parts.join(".")),
        };
        let mut found = false;
        if schema.is_none_or(|s| s == crate::info_schema::SCHEMA) {
            for table in snapshot.tables.values() {
                if let Some(fk) = table.foreign_keys.iter().find(|fk| fk.name == name) {
                    if !fk.deferrable {
                        return Err(not_deferrable(&name));
                    }
                    out.push((table.id, name.clone()));
                    found = true;
                } else if table.checks.iter().any(|c| c.name == name)
                    || table
                        .indexes
                        .iter()
                        .any(|i| i.is_unique_constraint() && i.name == name)
                {
                    return Err(not_deferrable(&name));
                }
            }
        }
        if !found {
            return Err(SqlError::new(
                "42704",
                format!("constraint \"{name}\" does not exist"),
            ));
        }
    }
    Ok(out)
}

fn not_deferrable(name: &str) -> SqlError {
    SqlError::new("42809", format!("constraint \"{name}\" is not deferrable"))
        .with_hint("Only a constraint declared DEFERRABLE can be deferred.")
}

/// Applies SET CONSTRAINTS to `modes`.
pub(crate) fn apply(modes: &mut ConstraintModes, named: Option<Vec<ConstraintId>>, deferred: bool) {
    match named {
        None => {
            modes.all = Some(deferred);
            modes.named.clear();
        }
        Some(named) => {
            for c in named {
                modes.named.insert(c, deferred);
            }
        }
    }
}
