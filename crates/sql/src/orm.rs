//! Introspection queries of ORMs that use what DataFusion does not plan (a correlated
//! `unnest(...) WITH ORDINALITY` in FROM, `array(SELECT ...)`), rewritten before parsing
//! into equivalents it does. Each rewrite replaces one fragment, matched with any
//! whitespace between its words, and leaves the rest of the query (its parameters and
//! literals) as sent.
//!
//! Django's `get_constraints` (4.x and 5.x) is the one so far: its migrations call it to
//! find a constraint or index by its columns before altering or dropping a field.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// (fragment as sent, what replaces it).
const REWRITES: [(&str, &str); 2] = [
    // A constraint's column names, in the constraint's order.
    (
        "array( SELECT attname FROM unnest(c.conkey) WITH ORDINALITY cols(colid, arridx) \
         JOIN pg_attribute AS ca ON cols.colid = ca.attnum WHERE ca.attrelid = c.conrelid \
         ORDER BY cols.arridx )",
        "flotilla_attnames(c.conrelid, c.conkey)",
    ),
    // Each key column of each index, numbered from 1 (unnest in the select list zips
    // the arrays as PostgreSQL's multi-argument unnest does).
    (
        "SELECT * FROM pg_index i, unnest(i.indkey, i.indoption) WITH ORDINALITY \
         koi(key, option, arridx)",
        "SELECT i.*, unnest(i.indkey) AS key, unnest(i.indoption) AS option, \
         unnest(range(1, CAST(array_length(i.indkey) AS BIGINT) + 1)) AS arridx \
         FROM pg_index i",
    ),
];

/// The fragments as patterns: each word as itself, any whitespace between words (and
/// around parentheses) allowed.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    REWRITES
        .iter()
        .map(|(fragment, replacement)| {
            let mut pattern = String::new();
            for token in fragment.split_whitespace() {
                if !pattern.is_empty() {
                    pattern.push_str(r"\s*");
                }
                let mut pieces = token.split_inclusive('(').peekable();
                while let Some(piece) = pieces.next() {
                    pattern.push_str(&regex::escape(piece));
                    if pieces.peek().is_some() {
                        pattern.push_str(r"\s*");
                    }
                }
            }
            let regex = Regex::new(&pattern).expect("a rewrite's fragment is a valid pattern");
            (regex, *replacement)
        })
        .collect()
});

/// `sql` with every known fragment replaced, or as it was.
pub(crate) fn rewrite(sql: &str) -> Cow<'_, str> {
    // Cheap test first: every fragment names a catalog table.
    if !sql.contains("pg_") {
        return Cow::Borrowed(sql);
    }
    let mut out = Cow::Borrowed(sql);
    for (pattern, replacement) in PATTERNS.iter() {
        if pattern.is_match(&out) {
            out = Cow::Owned(pattern.replace_all(&out, *replacement).into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_match_across_line_breaks_and_leave_the_rest() {
        let sql = "SELECT c.conname,\n  array(\n    SELECT attname\n    FROM unnest(c.conkey) WITH ORDINALITY cols(colid, arridx)\n    JOIN pg_attribute AS ca ON cols.colid = ca.attnum\n    WHERE ca.attrelid = c.conrelid\n    ORDER BY cols.arridx\n  ) FROM pg_constraint AS c WHERE x = 'a  b'";
        assert_eq!(
            rewrite(sql),
            "SELECT c.conname,\n  flotilla_attnames(c.conrelid, c.conkey) FROM pg_constraint AS c WHERE x = 'a  b'"
        );
        let other = "SELECT attname FROM pg_attribute";
        assert!(matches!(rewrite(other), Cow::Borrowed(_)));
    }
}
