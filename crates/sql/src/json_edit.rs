//! Functions and operators that make a changed copy of a JSON value: `jsonb - key`,
//! `jsonb - keys`, `jsonb - index`, `jsonb #- path`, `jsonb_set`, `jsonb_insert`,
//! `json[b]_strip_nulls` and `jsonb_pretty`, with PostgreSQL's results and errors (each
//! checked against PostgreSQL 15).
//!
//! Each reads the document into [`Item`]s, changes the tree, and prints it again:
//! canonical for `jsonb`, without blanks for `json` (as PostgreSQL's `json_strip_nulls`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use crate::error::SqlError;
use crate::pg_json::{
    Item, Kind, Node, Step, canonical, documents, external, json_array, parse, path_lists, steps,
    text_lists, write_string,
};

/// What a function of this module does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Edit {
    /// `jsonb - text`, `jsonb - text[]` and `jsonb - integer`, told apart by the type of
    /// the second argument.
    Delete,
    /// `jsonb #- text[]`.
    DeletePath,
    /// `jsonb_set(target, path, value [, create_if_missing])`.
    Set,
    /// `jsonb_insert(target, path, value [, insert_after])`.
    Insert,
    /// `json[b]_strip_nulls`.
    StripNulls(Kind),
    /// `jsonb_pretty`.
    Pretty,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonEdit {
    name: &'static str,
    edit: Edit,
    signature: Signature,
}

impl JsonEdit {
    fn udf(name: &'static str, edit: Edit, signature: Signature) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(JsonEdit {
            name,
            edit,
            signature,
        }))
    }
}

/// The functions of this module callable by name.
pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let three_or_four = || {
        Signature::one_of(
            vec![TypeSignature::Any(3), TypeSignature::Any(4)],
            Volatility::Immutable,
        )
    };
    let one = || Signature::any(1, Volatility::Immutable);
    vec![
        JsonEdit::udf("jsonb_set", Edit::Set, three_or_four()),
        JsonEdit::udf("jsonb_insert", Edit::Insert, three_or_four()),
        JsonEdit::udf("jsonb_strip_nulls", Edit::StripNulls(Kind::Jsonb), one()),
        JsonEdit::udf("json_strip_nulls", Edit::StripNulls(Kind::Json), one()),
        JsonEdit::udf("jsonb_pretty", Edit::Pretty, one()),
    ]
}

/// The functions the operators `-` and `#-` on a `jsonb` are planned as.
pub(crate) fn operators() -> (Arc<ScalarUDF>, Arc<ScalarUDF>) {
    let two = || Signature::any(2, Volatility::Immutable);
    (
        JsonEdit::udf("jsonb_delete", Edit::Delete, two()),
        JsonEdit::udf("jsonb_delete_path", Edit::DeletePath, two()),
    )
}

impl ScalarUDFImpl for JsonEdit {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.edit {
            Edit::Pretty => DataType::Utf8,
            Edit::StripNulls(kind) => kind.arrow_type(),
            Edit::Delete | Edit::DeletePath | Edit::Set | Edit::Insert => Kind::Jsonb.arrow_type(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let docs = documents(&arrays[0])?;
        let out: ArrayRef = match self.edit {
            Edit::Delete => {
                let values = delete(docs, &arrays[1])?;
                json_array(Kind::Jsonb, values)
            }
            Edit::DeletePath => {
                let paths = path_lists(&arrays[1])?;
                let values = docs
                    .into_iter()
                    .zip(paths)
                    .map(|(doc, path)| match (doc, path) {
                        (Some(mut doc), Some(path)) => {
                            if is_scalar(&doc) {
                                return Err(SqlError::new("22023", "cannot delete path in scalar"));
                            }
                            delete_path(&mut doc, &path, 0)?;
                            canonical(&doc.node).map(Some)
                        }
                        _ => Ok(None),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(external)?;
                json_array(Kind::Jsonb, values)
            }
            Edit::Set | Edit::Insert => {
                let paths = path_lists(&arrays[1])?;
                let news = documents(&arrays[2])?;
                let flags: Vec<Option<bool>> = match arrays.get(3) {
                    Some(flags) => flags.as_boolean_opt().map_or_else(
                        || Err(wrong_flag_type(self.name, flags.data_type())),
                        |b| Ok(b.iter().collect()),
                    )?,
                    // create_if_missing defaults to true, insert_after to false.
                    None => vec![Some(self.edit == Edit::Set); rows],
                };
                let values = docs
                    .into_iter()
                    .zip(paths)
                    .zip(news)
                    .zip(flags)
                    .map(|(((doc, path), new), flag)| {
                        let (Some(mut doc), Some(path), Some(new), Some(flag)) =
                            (doc, path, new, flag)
                        else {
                            return Ok(None);
                        };
                        if is_scalar(&doc) {
                            return Err(SqlError::new("22023", "cannot set path in scalar"));
                        }
                        let mode = match self.edit {
                            Edit::Set => Mode::Set { create: flag },
                            _ => Mode::Insert { after: flag },
                        };
                        set_path(&mut doc, &path, 0, new, mode)?;
                        canonical(&doc.node).map(Some)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(external)?;
                json_array(Kind::Jsonb, values)
            }
            Edit::StripNulls(kind) => {
                let values = docs
                    .into_iter()
                    .map(|doc| {
                        doc.map(|mut doc| {
                            strip_nulls(&mut doc.node);
                            match kind {
                                Kind::Jsonb => canonical(&doc.node),
                                Kind::Json => {
                                    let mut out = String::new();
                                    write_laid_out(&doc, Layout::Compact, &mut out).map(|()| out)
                                }
                            }
                        })
                        .transpose()
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(external)?;
                json_array(kind, values)
            }
            Edit::Pretty => {
                let mut out = StringBuilder::with_capacity(rows, rows * 32);
                for doc in docs {
                    match doc {
                        Some(doc) => {
                            // Canonical first: keys unique and sorted, scalars as jsonb
                            // prints them.
                            let stored = canonical(&doc.node).map_err(external)?;
                            let doc = parse(&stored).map_err(external)?;
                            let mut text = String::new();
                            write_laid_out(&doc, Layout::Pretty { level: 0 }, &mut text)
                                .map_err(external)?;
                            out.append_value(text);
                        }
                        None => out.append_null(),
                    }
                }
                Arc::new(out.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn wrong_flag_type(name: &str, data_type: &DataType) -> datafusion::error::DataFusionError {
    external(SqlError::new(
        "42883",
        format!(
            "function {name}(jsonb, text[], jsonb, {}) does not exist",
            crate::error::pg_type_name(data_type)
        ),
    ))
}

fn is_scalar(item: &Item) -> bool {
    !matches!(item.node, Node::Object(_) | Node::Array(_))
}

/// What `jsonb - x` removes in one row.
enum Removal {
    /// `- text` and `- text[]`: these keys (or string elements).
    Keys(Vec<String>),
    /// `- integer`: the element at this index.
    Index(i64),
}

/// `jsonb - text`, `jsonb - text[]` or `jsonb - integer`, row by row. The operand is
/// read as `->` reads its own, or as a list of keys.
fn delete(docs: Vec<Option<Item<'_>>>, what: &ArrayRef) -> DfResult<Vec<Option<String>>> {
    let removals: Vec<Option<Removal>> = match what.data_type() {
        // A NULL among the keys matches nothing.
        DataType::List(_) | DataType::LargeList(_) => text_lists(what)?
            .into_iter()
            .map(|keys| keys.map(Removal::Keys))
            .collect(),
        _ => steps(what)?
            .into_iter()
            .map(|step| {
                step.map(|step| match step {
                    Step::Key(key) => Removal::Keys(vec![key]),
                    Step::Index(index) => Removal::Index(index),
                })
            })
            .collect(),
    };
    docs.into_iter()
        .zip(removals)
        .map(|(doc, removal)| {
            let (Some(mut doc), Some(removal)) = (doc, removal) else {
                return Ok(None);
            };
            match (&mut doc.node, removal) {
                (Node::Object(members), Removal::Keys(keys)) => {
                    members.retain(|(k, _)| !keys.contains(k))
                }
                (Node::Array(items), Removal::Keys(keys)) => {
                    items.retain(|item| !matches!(&item.node, Node::String(s) if keys.contains(s)))
                }
                (Node::Array(items), Removal::Index(index)) => {
                    if let Some(at) = array_position(index, items.len()) {
                        items.remove(at);
                    }
                }
                (Node::Object(_), Removal::Index(_)) => {
                    return Err(SqlError::new(
                        "22023",
                        "cannot delete from object using integer index",
                    ));
                }
                _ => return Err(SqlError::new("22023", "cannot delete from scalar")),
            }
            canonical(&doc.node).map(Some)
        })
        .collect::<Result<_, _>>()
        .map_err(external)
}

/// The element `index` names in an array of `len`, counted from the end if negative;
/// `None` outside it.
fn array_position(index: i64, len: usize) -> Option<usize> {
    let at = if index < 0 { len as i64 + index } else { index };
    usize::try_from(at).ok().filter(|at| *at < len)
}

/// The path step at `level` (0-based), refused if NULL.
fn path_step(path: &[Option<String>], level: usize) -> Result<&str, SqlError> {
    path[level].as_deref().ok_or_else(|| {
        SqlError::new(
            "22004",
            format!("path element at position {} is null", level + 1),
        )
    })
}

/// A path step taken into an array: its number.
fn array_step(step: &str, level: usize) -> Result<i64, SqlError> {
    step.trim().parse().map_err(|_| {
        SqlError::new(
            "22P02",
            format!(
                "path element at position {} is not an integer: \"{step}\"",
                level + 1
            ),
        )
    })
}

/// `#-`: removes what `path` leads to, if anything.
fn delete_path(item: &mut Item, path: &[Option<String>], level: usize) -> Result<(), SqlError> {
    if level == path.len() {
        return Ok(());
    }
    let step = path_step(path, level)?;
    let last = level + 1 == path.len();
    match &mut item.node {
        Node::Object(members) => {
            if last {
                members.retain(|(k, _)| k != step);
            } else if let Some((_, value)) = members.iter_mut().rev().find(|(k, _)| k == step) {
                delete_path(value, path, level + 1)?;
            }
        }
        Node::Array(items) => {
            if let Some(at) = array_position(array_step(step, level)?, items.len()) {
                if last {
                    items.remove(at);
                } else {
                    delete_path(&mut items[at], path, level + 1)?;
                }
            }
        }
        // A path through a scalar leads nowhere.
        _ => {}
    }
    Ok(())
}

/// How [`set_path`] puts the new value in.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `jsonb_set`: replaces what the path leads to, or adds it if `create`.
    Set { create: bool },
    /// `jsonb_insert`: inserts before (or `after`) the element the path leads to; adds a
    /// missing key but refuses an existing one.
    Insert { after: bool },
}

/// `jsonb_set` and `jsonb_insert`: puts `new` where `path` leads; changes nothing if the
/// path leads through something missing or a scalar.
fn set_path<'a>(
    item: &mut Item<'a>,
    path: &[Option<String>],
    level: usize,
    new: Item<'a>,
    mode: Mode,
) -> Result<(), SqlError> {
    if level == path.len() {
        return Ok(());
    }
    let step = path_step(path, level)?;
    let last = level + 1 == path.len();
    let adds = match mode {
        Mode::Set { create } => create,
        Mode::Insert { .. } => true,
    };
    match &mut item.node {
        Node::Object(members) => match members.iter().rposition(|(k, _)| k == step) {
            Some(at) if last => match mode {
                Mode::Set { .. } => members[at].1 = new,
                Mode::Insert { .. } => {
                    return Err(SqlError::new("22023", "cannot replace existing key")
                        .with_hint("Try using the function jsonb_set to replace key value."));
                }
            },
            Some(at) => set_path(&mut members[at].1, path, level + 1, new, mode)?,
            None if last && adds => members.push((step.to_string(), new)),
            None => {}
        },
        Node::Array(items) => {
            let index = array_step(step, level)?;
            match array_position(index, items.len()) {
                Some(at) if last => match mode {
                    Mode::Set { .. } => items[at] = new,
                    Mode::Insert { after } => items.insert(at + usize::from(after), new),
                },
                Some(at) => set_path(&mut items[at], path, level + 1, new, mode)?,
                // Past either end: added at that end.
                None if last && adds => {
                    if index < 0 {
                        items.insert(0, new);
                    } else {
                        items.push(new);
                    }
                }
                None => {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// Removes the object members whose value is null, at any depth (array elements stay).
fn strip_nulls(node: &mut Node) {
    match node {
        Node::Object(members) => {
            members.retain(|(_, value)| !matches!(value.node, Node::Null));
            for (_, value) in members {
                strip_nulls(&mut value.node);
            }
        }
        Node::Array(items) => {
            for item in items {
                strip_nulls(&mut item.node);
            }
        }
        _ => {}
    }
}

/// How [`write_laid_out`] lays a value out.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Without blanks, as PostgreSQL's `json_strip_nulls` prints.
    Compact,
    /// `jsonb_pretty`'s: one item a line, indented four spaces a level.
    Pretty { level: usize },
}

/// Writes `item` laid out as `layout` says, each scalar as written.
fn write_laid_out(item: &Item, layout: Layout, out: &mut String) -> Result<(), SqlError> {
    let (open, close, entries): (char, char, Vec<(Option<&str>, &Item)>) = match &item.node {
        Node::Array(items) => ('[', ']', items.iter().map(|i| (None, i)).collect()),
        Node::Object(members) => (
            '{',
            '}',
            members.iter().map(|(k, v)| (Some(k.as_str()), v)).collect(),
        ),
        _ => {
            out.push_str(item.raw);
            return Ok(());
        }
    };
    let new_line = |out: &mut String, layout: Layout| {
        if let Layout::Pretty { level } = layout {
            out.push('\n');
            out.extend(std::iter::repeat_n("    ", level));
        }
    };
    let inner = match layout {
        Layout::Pretty { level } => Layout::Pretty { level: level + 1 },
        Layout::Compact => Layout::Compact,
    };
    out.push(open);
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        new_line(out, inner);
        if let Some(key) = key {
            write_string(key, out)?;
            out.push_str(match layout {
                Layout::Compact => ":",
                Layout::Pretty { .. } => ": ",
            });
        }
        write_laid_out(value, inner, out)?;
    }
    new_line(out, layout);
    out.push(close);
    Ok(())
}
