//! `COPY ... TO STDOUT` (`parse_out`, `encode_row`): a table's or a query's rows in the
//! same formats, escaped and quoted as PostgreSQL writes them.
//!
//! `COPY table [(columns)] FROM STDIN`: the rows a client streams (psql's `\copy`, the
//! default `pgbench -i`) in PostgreSQL's text or CSV format, inserted through the session's
//! own INSERT path (types, defaults, constraints and indexes as for any INSERT) in batches,
//! all in one transaction: the COPY is one statement, wholly applied or not at all.
//!
//! The statement is parsed by sqlparser; only the data format is read here. Bounds: a
//! record (a line, or a quoted CSV value spanning lines) of at most `RECORD_BYTES_MAX`,
//! and rows buffered for at most `BATCH_ROWS_MAX` rows or `BATCH_BYTES_MAX` bytes before
//! they are inserted.

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget};
use datafusion::sql::sqlparser::ast::{Ident, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use flotilla_sql::SqlError;

/// Largest record (one row's text) accepted; a longer one fails the COPY with 54000.
pub(crate) const RECORD_BYTES_MAX: usize = 64 << 20;
/// Rows inserted by one INSERT at most.
pub(crate) const BATCH_ROWS_MAX: usize = 1_000;
/// Bytes of row text buffered before they are inserted, at most (one record may exceed it).
pub(crate) const BATCH_BYTES_MAX: usize = 4 << 20;

fn error(code: &'static str, message: impl Into<String>) -> SqlError {
    SqlError {
        code,
        message: message.into(),
        position: None,
        hint: None,
        detail: None,
    }
}

/// The data format of a COPY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    /// PostgreSQL's text format: backslash escapes, `\N` for NULL by default.
    Text,
    /// CSV: quoted values, an unquoted empty value is NULL by default.
    Csv { quote: u8, escape: u8 },
}

/// A parsed `COPY ... FROM STDIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopySpec {
    /// The table, as written (quoted where it was).
    pub(crate) table: String,
    /// The columns listed, as written; empty: every column of the table.
    pub(crate) columns: Vec<String>,
    pub(crate) format: Format,
    pub(crate) delimiter: u8,
    /// The text that stands for NULL.
    pub(crate) null: String,
    /// The first record is a header, skipped.
    pub(crate) header: bool,
}

/// The statement of a query string that begins with COPY, if it parses, and whether
/// another statement follows it.
fn parse_copy(sql: &str) -> Option<(Statement, bool)> {
    let head = sql.trim_start();
    if !head
        .get(..4)
        .is_some_and(|w| w.eq_ignore_ascii_case("copy"))
    {
        return None;
    }
    let (sql, trailing) = boolean_options_as_keywords(sql)?;
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    Some((statements.pop()?, trailing))
}

/// `Some` when `sql` is one `COPY ... FROM STDIN` statement (`Err` when its options are
/// not supported); `None` for anything else, which the session handles as usual.
pub(crate) fn parse(sql: &str) -> Option<Result<CopySpec, SqlError>> {
    let (statement, trailing) = parse_copy(sql)?;
    let Statement::Copy {
        source: CopySource::Table {
            table_name,
            columns,
        },
        to: false,
        target: CopyTarget::Stdin,
        options,
        legacy_options,
        values,
    } = statement
    else {
        return None;
    };
    if !values.is_empty() || trailing {
        // sqlparser reads what follows the statement as its data; a client sends the data
        // in CopyData messages, after the statement.
        return Some(Err(error(
            "0A000",
            "COPY FROM STDIN must be the last statement of its query string",
        )));
    }
    Some(spec(
        table_name.to_string(),
        &columns,
        &options,
        &legacy_options,
    ))
}

/// `Some` when `sql` is one `COPY table [(columns)] TO STDOUT` or `COPY (query) TO
/// STDOUT` statement: its format, and the query whose rows it writes (`Err` when its
/// options or target are not supported); `None` for anything else.
pub(crate) fn parse_out(sql: &str) -> Option<Result<(CopySpec, String), SqlError>> {
    let (statement, trailing) = parse_copy(sql)?;
    if trailing {
        return None;
    }
    let Statement::Copy {
        source,
        to: true,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    if target != CopyTarget::Stdout {
        return Some(Err(error(
            "0A000",
            "COPY TO a server file or program is not supported; use COPY ... TO STDOUT \
             (psql's \\copy ... TO 'file' writes the client's file)",
        )));
    }
    let (name, columns, query) = match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            let list = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let query = format!("SELECT {list} FROM {table_name}");
            (table_name.to_string(), columns, query)
        }
        CopySource::Query(query) => (String::new(), Vec::new(), query.to_string()),
    };
    Some(spec(name, &columns, &options, &legacy_options).map(|spec| (spec, query)))
}

/// Appends one row of a `COPY ... TO STDOUT` in `spec`'s format: fields are the values'
/// PostgreSQL text (NULL as `None`), escaped or quoted as PostgreSQL writes them.
pub(crate) fn encode_row(spec: &CopySpec, fields: &[Option<&[u8]>], out: &mut Vec<u8>) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(spec.delimiter);
        }
        let Some(value) = field else {
            out.extend_from_slice(spec.null.as_bytes());
            continue;
        };
        match spec.format {
            Format::Text => {
                for &b in *value {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        0x08 => out.extend_from_slice(b"\\b"),
                        0x0b => out.extend_from_slice(b"\\v"),
                        0x0c => out.extend_from_slice(b"\\f"),
                        b if b == spec.delimiter => out.extend_from_slice(&[b'\\', b]),
                        b => out.push(b),
                    }
                }
            }
            Format::Csv { quote, escape } => {
                // NULL's text (the empty string by default) and `\.` (the end marker
                // of old clients) are quoted to stay values.
                let needs_quotes = *value == spec.null.as_bytes()
                    || *value == b"\\.".as_slice()
                    || value
                        .iter()
                        .any(|&b| b == spec.delimiter || b == quote || b == b'\n' || b == b'\r');
                if !needs_quotes {
                    out.extend_from_slice(value);
                    continue;
                }
                out.push(quote);
                for &b in *value {
                    if b == quote || b == escape {
                        out.push(escape);
                    }
                    out.push(b);
                }
                out.push(quote);
            }
        }
    }
    out.push(b'\n');
}

/// PostgreSQL takes `on`, `off`, `1` and `0` for a boolean option (`pgbench -i` sends
/// `with (freeze on)`); sqlparser takes only TRUE and FALSE: the tokens after FREEZE and
/// HEADER are rewritten to those. Also says whether another statement follows the first
/// (sqlparser would take it for the COPY's inline data).
fn boolean_options_as_keywords(sql: &str) -> Option<(String, bool)> {
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let mut out = String::with_capacity(sql.len());
    let mut option = false;
    let (mut ended, mut trailing) = (false, false);
    for token in tokens {
        match &token {
            Token::SemiColon => ended = true,
            Token::Whitespace(_) | Token::EOF => {}
            _ if ended => trailing = true,
            _ => {}
        }
        let replaced = match &token {
            Token::Word(w) if option && w.quote_style.is_none() => {
                match w.value.to_ascii_lowercase().as_str() {
                    "on" => Some("TRUE"),
                    "off" => Some("FALSE"),
                    _ => None,
                }
            }
            Token::Number(n, _) if option => match n.as_str() {
                "1" => Some("TRUE"),
                "0" => Some("FALSE"),
                _ => None,
            },
            _ => None,
        };
        match replaced {
            Some(keyword) => out.push_str(keyword),
            None => out.push_str(&token.to_string()),
        }
        if !matches!(token, Token::Whitespace(_)) {
            option = matches!(&token, Token::Word(w)
                if w.value.eq_ignore_ascii_case("freeze") || w.value.eq_ignore_ascii_case("header"));
        }
    }
    Some((out, trailing))
}

fn single_byte(what: &str, c: char) -> Result<u8, SqlError> {
    u8::try_from(c)
        .ok()
        .filter(|b| b.is_ascii() && *b != b'\n' && *b != b'\r')
        .ok_or_else(|| {
            error(
                "0A000",
                format!("COPY {what} must be a single one-byte character"),
            )
        })
}

fn spec(
    table: String,
    columns: &[Ident],
    options: &[CopyOption],
    legacy: &[CopyLegacyOption],
) -> Result<CopySpec, SqlError> {
    let mut csv = false;
    let (mut delimiter, mut null, mut header) = (None, None, false);
    let (mut quote, mut escape) = (None, None);
    for option in options {
        match option {
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => csv = false,
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => csv = true,
            CopyOption::Format(f) => {
                return Err(error(
                    "0A000",
                    format!(
                        "COPY format \"{}\" is not supported (text and csv are)",
                        f.value
                    ),
                ));
            }
            // An optimisation hint only.
            CopyOption::Freeze(_) => {}
            CopyOption::Delimiter(c) => delimiter = Some(single_byte("delimiter", *c)?),
            CopyOption::Null(s) => null = Some(s.clone()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = Some(single_byte("quote", *c)?),
            CopyOption::Escape(c) => escape = Some(single_byte("escape", *c)?),
            CopyOption::Encoding(e)
                if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            other => {
                return Err(error(
                    "0A000",
                    format!("COPY option {other} is not supported"),
                ));
            }
        }
    }
    for option in legacy {
        match option {
            CopyLegacyOption::Csv(_) => csv = true,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(single_byte("delimiter", *c)?),
            CopyLegacyOption::Null(s) => null = Some(s.clone()),
            CopyLegacyOption::Header => header = true,
            other => {
                return Err(error(
                    "0A000",
                    format!("COPY option {other} is not supported"),
                ));
            }
        }
    }
    if !csv && (quote.is_some() || escape.is_some()) {
        return Err(error(
            "0A000",
            "COPY quote and escape are available only in CSV mode",
        ));
    }
    let format = if csv {
        let quote = quote.unwrap_or(b'"');
        Format::Csv {
            quote,
            escape: escape.unwrap_or(quote),
        }
    } else {
        Format::Text
    };
    Ok(CopySpec {
        table,
        columns: columns.iter().map(ToString::to_string).collect(),
        delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
        null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
        format,
        header,
    })
}

/// A row of a COPY: its line number and its fields (NULL as `None`).
pub(crate) type Row = (u64, Vec<Option<String>>);

/// Splits the data stream into records and records into fields.
#[derive(Debug)]
pub(crate) struct Decoder {
    spec: CopySpec,
    /// Bytes of a record not yet complete.
    partial: Vec<u8>,
    /// The header still to skip.
    header_pending: bool,
    /// `\.` was seen: everything after it is ignored.
    ended: bool,
    /// Records read so far (the header included), for error messages.
    pub(crate) line: u64,
}

impl Decoder {
    pub(crate) fn new(spec: CopySpec) -> Self {
        Self {
            header_pending: spec.header,
            spec,
            partial: Vec::new(),
            ended: false,
            line: 0,
        }
    }

    /// Adds `data` and returns the rows it completes, each with its line number: one
    /// `Option<String>` (NULL as `None`) per field.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Vec<Row>, SqlError> {
        if self.ended {
            return Ok(Vec::new());
        }
        self.partial.extend_from_slice(data);
        let mut rows = Vec::new();
        let mut start = 0;
        while let Some(end) = self.record_end(start) {
            let record = &self.partial[start..end];
            let next = end + 1;
            let record = record.strip_suffix(b"\r").unwrap_or(record).to_vec();
            start = next;
            if self.take_record(record, &mut rows)? {
                self.partial.clear();
                return Ok(rows);
            }
        }
        self.partial.drain(..start);
        if self.partial.len() > RECORD_BYTES_MAX {
            return Err(error(
                "54000",
                format!(
                    "a COPY record is longer than {RECORD_BYTES_MAX} bytes (line {})",
                    self.line + 1
                ),
            ));
        }
        Ok(rows)
    }

    /// The rows of a last record without a newline, at the end of the data.
    pub(crate) fn finish(&mut self) -> Result<Vec<Row>, SqlError> {
        let mut rows = Vec::new();
        if !self.ended && !self.partial.is_empty() {
            let record = std::mem::take(&mut self.partial);
            if let Format::Csv { quote, escape } = self.spec.format
                && in_quotes(&record, quote, escape)
            {
                return Err(error(
                    "22P04",
                    format!("unterminated CSV quoted field (line {})", self.line + 1),
                ));
            }
            self.take_record(record, &mut rows)?;
        }
        Ok(rows)
    }

    /// Where the record starting at `start` ends (its newline), if it is complete.
    fn record_end(&self, start: usize) -> Option<usize> {
        let rest = &self.partial[start..];
        match self.spec.format {
            Format::Text => rest.iter().position(|b| *b == b'\n').map(|i| start + i),
            Format::Csv { quote, escape } => {
                let mut quoted = false;
                let mut i = 0;
                while i < rest.len() {
                    let b = rest[i];
                    if quoted && b == escape && escape != quote && rest.get(i + 1) == Some(&quote) {
                        i += 2;
                        continue;
                    }
                    if b == quote {
                        quoted = !quoted;
                    } else if b == b'\n' && !quoted {
                        return Some(start + i);
                    }
                    i += 1;
                }
                None
            }
        }
    }

    /// Decodes one record; returns true at the end-of-data marker.
    fn take_record(&mut self, record: Vec<u8>, rows: &mut Vec<Row>) -> Result<bool, SqlError> {
        self.line += 1;
        if record == b"\\." {
            self.ended = true;
            return Ok(true);
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(false);
        }
        let row = match self.spec.format {
            Format::Text => text_fields(&record, self.spec.delimiter, &self.spec.null),
            Format::Csv { quote, escape } => {
                csv_fields(&record, self.spec.delimiter, quote, escape, &self.spec.null)
            }
        }
        .map_err(|message| error("22P04", format!("{message} (line {})", self.line)))?;
        rows.push((self.line, row));
        Ok(false)
    }
}

fn in_quotes(record: &[u8], quote: u8, escape: u8) -> bool {
    let mut quoted = false;
    let mut i = 0;
    while i < record.len() {
        if quoted && record[i] == escape && escape != quote && record.get(i + 1) == Some(&quote) {
            i += 2;
            continue;
        }
        if record[i] == quote {
            quoted = !quoted;
        }
        i += 1;
    }
    quoted
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "invalid byte sequence for encoding \"UTF8\"".into())
}

/// PostgreSQL's text format: fields split at the delimiter, the NULL string compared
/// before backslash escapes are undone.
fn text_fields(record: &[u8], delimiter: u8, null: &str) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    let mut raw: Vec<u8> = Vec::new();
    let mut i = 0;
    let finish = |raw: &mut Vec<u8>, fields: &mut Vec<Option<String>>| {
        let field = std::mem::take(raw);
        if field == null.as_bytes() {
            fields.push(None);
            return Ok(());
        }
        fields.push(Some(utf8(unescape(&field)?)?));
        Ok::<(), String>(())
    };
    while i < record.len() {
        let b = record[i];
        if b == b'\\' && i + 1 < record.len() {
            // An escaped byte never splits or ends a field.
            raw.extend_from_slice(&record[i..i + 2]);
            i += 2;
            continue;
        }
        if b == delimiter {
            finish(&mut raw, &mut fields)?;
        } else {
            raw.push(b);
        }
        i += 1;
    }
    finish(&mut raw, &mut fields)?;
    Ok(fields)
}

/// Undoes the text format's backslash escapes.
fn unescape(field: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] != b'\\' || i + 1 == field.len() {
            out.push(field[i]);
            i += 1;
            continue;
        }
        let c = field[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// CSV: an unquoted value equal to the NULL string is NULL; a quoted one never is.
fn csv_fields(
    record: &[u8],
    delimiter: u8,
    quote: u8,
    escape: u8,
    null: &str,
) -> Result<Vec<Option<String>>, String> {
    let mut fields = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    let mut was_quoted = false;
    let mut quoted = false;
    let mut i = 0;
    loop {
        let at_end = i >= record.len();
        if at_end || (!quoted && record[i] == delimiter) {
            let field = std::mem::take(&mut value);
            if !was_quoted && field == null.as_bytes() {
                fields.push(None);
            } else {
                fields.push(Some(utf8(field)?));
            }
            was_quoted = false;
            if at_end {
                break;
            }
            i += 1;
            continue;
        }
        let b = record[i];
        if quoted {
            if b == escape && record.get(i + 1) == Some(&quote) {
                value.push(quote);
                i += 2;
                continue;
            }
            if b == quote {
                quoted = false;
            } else {
                value.push(b);
            }
        } else if b == quote {
            quoted = true;
            was_quoted = true;
        } else {
            value.push(b);
        }
        i += 1;
    }
    if quoted {
        return Err("unterminated CSV quoted field".into());
    }
    Ok(fields)
}

/// `INSERT INTO table (columns) VALUES ($1, ..), ..` for `rows` rows of `columns`.
pub(crate) fn insert_sql(table: &str, columns: &[String], rows: usize) -> String {
    let n = columns.len();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..n {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * n + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// A typed value of `target` from a field's text (NULL as `None`).
pub(crate) fn decode_field(
    field: Option<&str>,
    target: &DataType,
    index: usize,
) -> Result<datafusion::scalar::ScalarValue, SqlError> {
    crate::values::decode_param(field.map(str::as_bytes), false, None, target, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(spec: CopySpec, chunks: &[&[u8]]) -> Vec<Vec<Option<String>>> {
        let mut d = Decoder::new(spec);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(d.feed(c).unwrap());
        }
        out.extend(d.finish().unwrap());
        out.into_iter().map(|(_, row)| row).collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn copy_from_stdin_statements_are_recognised_and_others_are_not() {
        let spec = parse("COPY t (a, \"B\") FROM STDIN").unwrap().unwrap();
        assert_eq!(spec.table, "t");
        assert_eq!(spec.columns, ["a", "\"B\""]);
        assert_eq!((spec.format.clone(), spec.delimiter), (Format::Text, b'\t'));
        assert_eq!(spec.null, "\\N");
        // pgbench -i's statement.
        let spec = parse("copy pgbench_accounts from stdin with (freeze on)")
            .unwrap()
            .unwrap();
        assert!(spec.columns.is_empty());
        let spec = parse("COPY t FROM STDIN WITH (FORMAT csv, HEADER on, DELIMITER ';')")
            .unwrap()
            .unwrap();
        assert_eq!(
            spec.format,
            Format::Csv {
                quote: b'"',
                escape: b'"'
            }
        );
        assert!(spec.header);
        assert_eq!((spec.delimiter, spec.null.as_str()), (b';', ""));
        assert!(parse("SELECT 1").is_none());
        assert!(parse("COPY t TO STDOUT").is_none());
        // Another statement after it is refused, not dropped.
        let e = parse("COPY t FROM STDIN; SELECT 1").unwrap().unwrap_err();
        assert_eq!(e.code, "0A000");
        assert!(parse("COPY t FROM STDIN;  ; ").unwrap().is_ok());
        let e = parse("COPY t FROM STDIN WITH (FORMAT binary)")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, "0A000");
    }

    #[test]
    fn the_text_format_splits_unescapes_and_knows_null() {
        let spec = parse("COPY t FROM STDIN").unwrap().unwrap();
        // Chunks split records, and even an escape, anywhere.
        let got = rows(
            spec,
            &[
                b"1\ta\\tb\t\\N\n2\t",
                b"x\\\\y\t\\",
                b"101\n3\t\t\\x41\r\n\\.\nignored\n",
            ],
        );
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("a\tb"), None],
                vec![s("2"), s("x\\y"), s("A")],
                vec![s("3"), s(""), s("A")],
            ]
        );
    }

    #[test]
    fn csv_quotes_span_lines_and_only_unquoted_empties_are_null() {
        let spec = parse("COPY t FROM STDIN (FORMAT csv, HEADER)")
            .unwrap()
            .unwrap();
        let got = rows(
            spec,
            &[
                b"a,b,c\n1,\"x,\"\"y\"\"\",\n2,\"line\n",
                b"two\",\"\"\n3,plain,last",
            ],
        );
        assert_eq!(
            got,
            vec![
                vec![s("1"), s("x,\"y\""), None],
                vec![s("2"), s("line\ntwo"), s("")],
                vec![s("3"), s("plain"), s("last")],
            ]
        );
        let spec = parse("COPY t FROM STDIN (FORMAT csv)").unwrap().unwrap();
        let mut d = Decoder::new(spec);
        d.feed(b"1,\"open").unwrap();
        assert_eq!(d.finish().unwrap_err().code, "22P04");
    }

    #[test]
    fn a_record_past_the_bound_is_refused() {
        let spec = parse("COPY t FROM STDIN").unwrap().unwrap();
        let mut d = Decoder::new(spec);
        let chunk = vec![b'x'; 1 << 20];
        let mut refused = None;
        for _ in 0..=(RECORD_BYTES_MAX >> 20) {
            if let Err(e) = d.feed(&chunk) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused.expect("bounded").code, "54000");
    }

    #[test]
    fn inserts_are_built_for_a_batch() {
        assert_eq!(
            insert_sql("t", &["a".into(), "b".into()], 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
