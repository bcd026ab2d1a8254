//! `ALTER SEQUENCE`, which sqlparser does not parse: recognised before parsing from
//! sqlparser's own tokens, for the forms pg_dump and applications write.
//!
//! - `OWNED BY table.column`: the column owns the sequence, as a serial column owns its
//!   own (pg_get_serial_sequence names it; dropping the column or table drops it).
//! - `OWNED BY NONE`: a column's (non-identity) sequence stands alone again.
//! - `RESTART [[WITH] n]`: the next `nextval` returns `n` (START by default).
//! - `OWNER TO role`: accepted, and records nothing (Flotilla has no roles yet).
//!
//! Any other form is 0A000.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use flotilla_catalog::{SchemaChange, TableDef};

use crate::api::QueryResult;
use crate::error::SqlError;
use crate::session::Session;

/// What an ALTER SEQUENCE does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// OWNED BY table.column (`Some`) or NONE.
    OwnedBy(Option<(String, String)>),
    /// RESTART [WITH n].
    Restart(Option<i64>),
    /// OWNER TO role.
    OwnerTo,
}

/// One ALTER SEQUENCE statement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AlterSequence {
    pub(crate) name: String,
    pub(crate) if_exists: bool,
    pub(crate) action: Action,
}

/// An identifier as PostgreSQL folds it: quoted as written, else lower case.
fn ident(token: &Token) -> Option<String> {
    match token {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    }
}

fn syntax(sql: &str) -> SqlError {
    SqlError::new("42601", format!("syntax error in \"{}\"", sql.trim()))
}

/// The ALTER SEQUENCE statement `sql` is, if it is one.
pub(crate) fn parse(sql: &str) -> Option<Result<AlterSequence, SqlError>> {
    let mut words = sql.split_whitespace();
    if !(words.next()?.eq_ignore_ascii_case("alter")
        && words.next()?.eq_ignore_ascii_case("sequence"))
    {
        return None;
    }
    let tokens: Vec<Token> = match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(t) => t
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon))
            .collect(),
        Err(e) => return Some(Err(SqlError::new("42601", e.to_string()))),
    };
    Some(
        parse_tokens(&tokens)
            .ok_or_else(|| syntax(sql))
            .and_then(|r| r),
    )
}

/// `None` for a syntax error; `Some(Err)` for a form that is not supported.
fn parse_tokens(tokens: &[Token]) -> Option<Result<AlterSequence, SqlError>> {
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    // A possibly qualified name from `i`: its last part, and the index after it.
    let name_at = |mut i: usize| -> Option<(Vec<String>, usize)> {
        let mut parts = vec![ident(tokens.get(i)?)?];
        i += 1;
        while matches!(tokens.get(i), Some(Token::Period)) {
            parts.push(ident(tokens.get(i + 1)?)?);
            i += 2;
        }
        Some((parts, i))
    };
    let mut i = 2;
    let if_exists = word(i).as_deref() == Some("if") && word(i + 1).as_deref() == Some("exists");
    if if_exists {
        i += 2;
    }
    let (parts, next) = name_at(i)?;
    let name = relation_part(&parts)?;
    i = next;
    let action = match (word(i).as_deref(), word(i + 1).as_deref()) {
        (Some("owned"), Some("by")) if word(i + 2).as_deref() == Some("none") => {
            i += 3;
            Action::OwnedBy(None)
        }
        (Some("owned"), Some("by")) => {
            let (parts, next) = name_at(i + 2)?;
            i = next;
            let (column, table) = parts.split_last()?;
            Action::OwnedBy(Some((relation_part(table)?, column.clone())))
        }
        (Some("owner"), Some("to")) => {
            i += 3;
            Action::OwnerTo
        }
        (Some("restart"), _) => {
            i += 1;
            if word(i).as_deref() == Some("with") {
                i += 1;
            }
            let negative = matches!(tokens.get(i), Some(Token::Minus));
            if negative {
                i += 1;
            }
            match tokens.get(i) {
                Some(Token::Number(n, _)) => {
                    i += 1;
                    let n: i64 = n.parse().ok()?;
                    Action::Restart(Some(if negative { -n } else { n }))
                }
                _ if !negative => Action::Restart(None),
                _ => return None,
            }
        }
        _ => {
            return Some(Err(SqlError::unsupported(
                "this form of ALTER SEQUENCE (Flotilla has OWNED BY, RESTART and OWNER TO)",
            )));
        }
    };
    if i != tokens.len() {
        return Some(Err(SqlError::unsupported(
            "ALTER SEQUENCE with more than one clause; write one statement per clause",
        )));
    }
    Some(Ok(AlterSequence {
        name,
        if_exists,
        action,
    }))
}

/// The relation name of a possibly schema-qualified name (only `public` exists).
fn relation_part(parts: &[String]) -> Option<String> {
    match parts {
        [name] => Some(name.clone()),
        [schema, name] if schema == "public" => Some(name.clone()),
        _ => None,
    }
}

/// Runs an ALTER SEQUENCE.
pub(crate) async fn execute(
    session: &mut Session,
    alter: AlterSequence,
) -> Result<QueryResult, SqlError> {
    let done = Ok(QueryResult::Command {
        tag: "ALTER SEQUENCE".into(),
    });
    let catalog = session.engine.catalog.clone();
    let snapshot = catalog.snapshot();
    let name = alter.name;
    let Some(sequence) = snapshot.sequence(&name).cloned() else {
        if snapshot.relation_exists(&name) {
            return Err(crate::sequence::not_a_sequence(&name));
        }
        if alter.if_exists {
            return done;
        }
        return Err(SqlError::new(
            "42P01",
            format!("relation \"{name}\" does not exist"),
        ));
    };
    let owner = snapshot
        .owned_sequence(&name)
        .map(|(t, c, _)| ((**t).clone(), c.name.clone()));
    let change = match alter.action {
        Action::OwnerTo => return done,
        Action::Restart(value) => {
            session
                .sequences
                .restart(&sequence, value.unwrap_or(sequence.start))?;
            return done;
        }
        Action::OwnedBy(None) => match owner {
            None => return done,
            Some(_) if sequence.identity.is_some() => {
                return Err(SqlError::new(
                    "0A000",
                    format!("cannot change ownership of identity sequence \"{name}\""),
                ));
            }
            Some((mut table, column)) => {
                set_owned(&mut table, &column, None);
                SchemaChange {
                    base_version: snapshot.version,
                    upserts: vec![table],
                    sequence_upserts: vec![sequence],
                    ..SchemaChange::default()
                }
            }
        },
        Action::OwnedBy(Some((table_name, column))) => {
            let Some(table) = snapshot.table(&table_name) else {
                return Err(SqlError::new(
                    "42P01",
                    format!("relation \"{table_name}\" does not exist"),
                ));
            };
            let Some(def) = table.column(&column) else {
                return Err(crate::dml::no_such_column(table, &column));
            };
            match (&owner, &def.sequence) {
                (Some((t, c)), _) if t.id == table.id && *c == column => return done,
                (Some(_), _) => {
                    return Err(SqlError::unsupported(
                        "moving a sequence from the column that owns it to another",
                    ));
                }
                (None, Some(own)) => {
                    return Err(SqlError::unsupported(format!(
                        "a second sequence owned by column \"{column}\" (it owns \"{}\")",
                        own.name
                    )));
                }
                (None, None) => {}
            }
            let mut table = (**table).clone();
            let id = sequence.id;
            set_owned(&mut table, &column, Some(sequence));
            SchemaChange {
                base_version: snapshot.version,
                upserts: vec![table],
                sequence_drops: vec![id],
                ..SchemaChange::default()
            }
        }
    };
    // The sequence keeps its id, so its counter, and every node finds it by name in
    // either version of the catalog: one step is safe.
    catalog.commit(change)?;
    done
}

fn set_owned(table: &mut TableDef, column: &str, sequence: Option<flotilla_catalog::SequenceDef>) {
    if let Some(c) = table.columns.iter_mut().find(|c| c.name == column) {
        c.sequence = sequence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_pg_dump_and_applications_write_are_read() {
        let ok = |sql: &str| parse(sql).unwrap().unwrap();
        assert_eq!(
            ok("ALTER SEQUENCE public.t_id_seq OWNED BY public.t.id;"),
            AlterSequence {
                name: "t_id_seq".into(),
                if_exists: false,
                action: Action::OwnedBy(Some(("t".into(), "id".into()))),
            }
        );
        assert_eq!(
            ok("alter sequence if exists \"S\" owned by none").action,
            Action::OwnedBy(None)
        );
        assert_eq!(ok("alter sequence \"S\" owned by none").name, "S");
        assert_eq!(
            ok("ALTER SEQUENCE s RESTART WITH -5").action,
            Action::Restart(Some(-5))
        );
        assert_eq!(
            ok("ALTER SEQUENCE s RESTART 7").action,
            Action::Restart(Some(7))
        );
        assert_eq!(ok("ALTER SEQUENCE s RESTART").action, Action::Restart(None));
        assert_eq!(ok("ALTER SEQUENCE s OWNER TO app").action, Action::OwnerTo);
        assert!(parse("SELECT 1").is_none());
        let err = |sql: &str| parse(sql).unwrap().unwrap_err().code;
        assert_eq!(err("ALTER SEQUENCE s INCREMENT BY 2"), "0A000");
        assert_eq!(
            err("ALTER SEQUENCE s RESTART WITH 1 OWNED BY NONE"),
            "0A000"
        );
        assert_eq!(err("ALTER SEQUENCE other.s RESTART"), "42601");
        assert_eq!(err("ALTER SEQUENCE s OWNED BY"), "42601");
    }
}
