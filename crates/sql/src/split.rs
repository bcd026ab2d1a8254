//! A query string cut into its statements by sqlparser's tokenizer, so that a `;` inside a
//! string literal, a quoted name, a comment or a dollar-quoted body never cuts one.
//!
//! The statements recognised before parsing (`VACUUM`, `ADMIN ...`, `ALTER SEQUENCE`,
//! psql's catalog queries) are recognised one statement at a time: before, `VACUUM;
//! DELETE FROM t` answered VACUUM and never ran the DELETE.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::SqlError;

/// The statements of `sql`, each its own text without its `;`. A statement of nothing
/// but whitespace and comments is left out, so `SELECT 1; -- done` is one statement.
pub(crate) fn split_statements(sql: &str) -> Result<Vec<&str>, SqlError> {
    Ok(statement_spans(sql)?
        .into_iter()
        .map(|(from, to)| &sql[from..to])
        .collect())
}

/// The byte ranges of `split_statements`.
pub(crate) fn statement_spans(sql: &str) -> Result<Vec<(usize, usize)>, SqlError> {
    // Only a `;` before the end can separate two statements; most strings have none, and
    // they are not tokenized twice (the parser tokenizes them anyway).
    if !sql.trim_end().trim_end_matches(';').contains(';') {
        return Ok(if has_content(sql) {
            vec![(0, sql.len())]
        } else {
            vec![]
        });
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::new("42601", format!("syntax error: {e}")))?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut pieces = Vec::new();
    let mut from = 0;
    let mut content = false;
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                let Some(at) = byte_offset(sql, &line_starts, t.span.start) else {
                    // Not where the tokenizer said: leave the string whole to the parser
                    // rather than cut it anywhere else.
                    return Ok(vec![(0, sql.len())]);
                };
                if content {
                    pieces.push((from, at));
                }
                from = at + 1;
                content = false;
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => content = true,
        }
    }
    if content {
        pieces.push((from, sql.len()));
    }
    Ok(pieces)
}

/// Whether `sql` holds anything but whitespace and comments.
fn has_content(sql: &str) -> bool {
    if sql.trim().is_empty() {
        return false;
    }
    if !sql.contains("--") && !sql.contains("/*") {
        return true;
    }
    match Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .any(|t| !matches!(t, Token::Whitespace(_) | Token::EOF)),
        // Let the parser report it.
        Err(_) => true,
    }
}

/// The byte offset of the `;` the tokenizer found at `at` (1-based line and character
/// column), checked to be one.
fn byte_offset(sql: &str, line_starts: &[usize], at: Location) -> Option<usize> {
    let line_start = *line_starts.get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
    let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let (i, _) = sql[line_start..].char_indices().nth(column)?;
    let offset = line_start + i;
    sql[offset..].starts_with(';').then_some(offset)
}

/// Whether `sql` is a SELECT that names something in `pg_catalog` (a name, not text in a
/// string literal or a comment): the only statements psql's catalog shortcuts answer.
pub(crate) fn is_catalog_select(sql: &str) -> bool {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let mut words = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .peekable();
    let starts_with_select =
        matches!(words.peek(), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("select"));
    let tokens: Vec<&Token> = words.collect();
    starts_with_select
        && tokens.windows(2).any(|pair| {
            matches!(pair[0], Token::Word(w) if w.value.eq_ignore_ascii_case("pg_catalog"))
                && matches!(pair[1], Token::Period)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_cut_at_semicolons_outside_literals_names_and_comments() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1", &["SELECT 1"]),
            ("SELECT 1;", &["SELECT 1;"]),
            ("", &[]),
            ("  -- nothing\n", &[]),
            ("VACUUM; DELETE FROM t", &["VACUUM", " DELETE FROM t"]),
            ("SELECT ';'; SELECT 2", &["SELECT ';'", " SELECT 2"]),
            (
                "SELECT \"a;b\" FROM t;;SELECT 2;",
                &["SELECT \"a;b\" FROM t", "SELECT 2"],
            ),
            (
                "SELECT 1 -- a; b\n; SELECT 2",
                &["SELECT 1 -- a; b\n", " SELECT 2"],
            ),
            ("SELECT /* ; */ 1;\n-- end;", &["SELECT /* ; */ 1"]),
            (
                "SELECT $$;$$; SELECT 'é;'; SELECT 3",
                &["SELECT $$;$$", " SELECT 'é;'", " SELECT 3"],
            ),
            (
                "SELECT 'é'\n,'ü';\r\nSELECT 'ß'",
                &["SELECT 'é'\n,'ü'", "\r\nSELECT 'ß'"],
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(split_statements(sql).unwrap(), *want, "{sql:?}");
        }
        assert_eq!(
            split_statements("SELECT 'open; SELECT 2").unwrap_err().code,
            "42601"
        );
    }

    #[test]
    fn only_a_select_naming_pg_catalog_is_a_catalog_query() {
        assert!(is_catalog_select(
            "SELECT d.datname FROM pg_catalog.pg_database d"
        ));
        assert!(is_catalog_select(
            "  select c.oid FROM pg_catalog.pg_class c"
        ));
        for sql in [
            "INSERT INTO notes VALUES ('FROM pg_catalog.pg_database d')",
            "DELETE FROM t -- FROM pg_catalog.pg_policy pol",
            "SELECT 'FROM pg_catalog.pg_database d'",
            "SELECT 1 /* FROM pg_catalog.pg_database d */",
        ] {
            assert!(!is_catalog_select(sql), "{sql}");
        }
    }
}
