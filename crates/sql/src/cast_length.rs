//! Explicit casts to a string type of a length: `x::varchar(n)`, `CAST(x AS char(n))`,
//! `x::char` (of length 1).
//!
//! PostgreSQL's explicit cast to `character varying(n)` or `character(n)` cuts a longer
//! value to `n` characters, without an error (an assignment to a column of that type
//! refuses it with 22001 instead; see `types::fit_to_column`). DataFusion maps every string
//! type to `Utf8` and drops the length, so `'abcdef'::varchar(3)` stayed `abcdef`. Before
//! planning, each such cast becomes a cast of the value cut to `n` characters: `CAST(x AS
//! varchar(3))` is `CAST(left(CAST(x AS varchar), 3) AS varchar)`. The outer cast keeps
//! the output column named after the type, as PostgreSQL names it.
//!
//! A cast to `character(n)` is cut but not padded to `n`: PostgreSQL compares `bpchar`
//! values without their trailing blanks and drops them in a cast to `text`, which `Utf8`
//! cannot tell apart. A value read from a `character(n)` column is stored padded (see
//! `bpchar`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, Statement, Value, visit_expressions_mut,
};

use crate::ddl::char_length;
use crate::error::SqlError;
use crate::sql_ast::{arg, call};

/// Cuts the value of every explicit cast to a string type of a length in `statement` to
/// that length. A length out of range is 22023, as in a column's type.
pub(crate) fn cut_to_length(statement: &mut Statement) -> Result<(), SqlError> {
    let outcome = visit_expressions_mut(statement, |e: &mut Expr| {
        let Expr::Cast {
            kind,
            expr,
            data_type,
            array: false,
            format: None,
        } = e
        else {
            return ControlFlow::Continue(());
        };
        let (length, unsized_type) = match string_length(data_type) {
            Ok(Some(found)) => found,
            Ok(None) => return ControlFlow::Continue(()),
            Err(e) => return ControlFlow::Break(e),
        };
        // Post-order: what replaces the cast is not visited again.
        let value = Expr::Cast {
            kind: kind.clone(),
            expr: expr.clone(),
            data_type: DataType::Varchar(None),
            array: false,
            format: None,
        };
        let cut = call(
            "left",
            [
                arg(value),
                arg(Expr::value(Value::Number(length.to_string(), false))),
            ],
        );
        *e = Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(cut),
            data_type: unsized_type,
            array: false,
            format: None,
        };
        ControlFlow::Continue(())
    });
    match outcome {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The length of a string type of one (`varchar(n)`, `char(n)`; `char` alone is
/// `char(1)`), and the type without it.
fn string_length(ty: &DataType) -> Result<Option<(u32, DataType)>, SqlError> {
    Ok(match ty {
        DataType::Varchar(l) | DataType::CharacterVarying(l) | DataType::CharVarying(l) => {
            char_length(l, "varchar")?.map(|n| (n, DataType::Varchar(None)))
        }
        DataType::Char(l) | DataType::Character(l) => {
            Some((char_length(l, "char")?.unwrap_or(1), DataType::Char(None)))
        }
        _ => None,
    })
}

/// `text` cut to its first `length` characters.
pub(crate) fn cut(mut text: String, length: u32) -> String {
    if let Some((end, _)) = text.char_indices().nth(length as usize) {
        text.truncate(end);
    }
    text
}
