//! PostgreSQL's catalog information functions that introspection queries call beside the
//! `pg_catalog` tables (Django's and Rails' schema readers, psql, pg_dump): the
//! definitions of constraints, indexes and defaults as text, the type names of
//! `format_type`, comments (there are none), and the schema search path.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ListArray, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::scalar::ScalarValue;
use flotilla_catalog::{CatalogRef, CatalogSnapshot, SqlType};

use crate::pg_catalog::{constraint_by_oid, index_by_oid, index_def};

/// How a function computes one row's value from its arguments (None is SQL NULL, as is
/// any NULL argument's result): a text, or a list of them.
#[derive(Clone, Copy)]
enum Eval {
    Text(fn(&CatalogSnapshot, &[ScalarValue]) -> Option<String>),
    Texts(fn(&CatalogSnapshot, &[ScalarValue]) -> Option<Vec<String>>),
}

fn text_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// A text-valued function of the catalog, evaluated row by row (introspection reads a
/// handful of rows).
struct CatalogText {
    name: &'static str,
    eval: Eval,
    catalog: CatalogRef,
    signature: Signature,
}

impl std::fmt::Debug for CatalogText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogText")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for CatalogText {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.catalog, &other.catalog)
    }
}

impl Eq for CatalogText {}

impl std::hash::Hash for CatalogText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for CatalogText {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(match self.eval {
            Eval::Text(_) => DataType::Utf8,
            Eval::Texts(_) => text_list_type(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<DfResult<_>>()?;
        let snapshot = self.catalog.snapshot();
        let mut texts = Vec::new();
        let mut lists = ListBuilder::new(StringBuilder::new());
        let mut values = Vec::with_capacity(arrays.len());
        for row in 0..args.number_rows {
            values.clear();
            for a in &arrays {
                values.push(ScalarValue::try_from_array(a, row)?);
            }
            let null = values.iter().any(ScalarValue::is_null);
            match self.eval {
                Eval::Text(f) => texts.push(if null { None } else { f(&snapshot, &values) }),
                Eval::Texts(f) => match if null { None } else { f(&snapshot, &values) } {
                    Some(items) => {
                        for item in items {
                            lists.values().append_value(item);
                        }
                        lists.append(true);
                    }
                    None => lists.append(false),
                },
            }
        }
        Ok(ColumnarValue::Array(match self.eval {
            Eval::Text(_) => Arc::new(StringArray::from(texts)),
            Eval::Texts(_) => Arc::new(lists.finish()),
        }))
    }
}

/// An integer argument (an OID, a column number, a type modifier).
fn int(v: &ScalarValue) -> Option<i64> {
    match v.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(n) => n,
        _ => None,
    }
}

/// `pg_get_constraintdef(oid [, pretty])`: `FOREIGN KEY (a) REFERENCES p(id)`,
/// `CHECK (...)`, `PRIMARY KEY (id)`, `UNIQUE (a, b)`.
fn constraint_def(snapshot: &CatalogSnapshot, args: &[ScalarValue]) -> Option<String> {
    let c = constraint_by_oid(snapshot, int(&args[0])?)?;
    Some(c.definition(snapshot))
}

/// `pg_get_indexdef(oid [, column, pretty])`: the CREATE INDEX statement, or with a
/// column number from 1 that key column's name (0 is the whole statement).
fn index_definition(snapshot: &CatalogSnapshot, args: &[ScalarValue]) -> Option<String> {
    let (table, index) = index_by_oid(snapshot, int(&args[0])?)?;
    match args.get(1).map(int) {
        None | Some(Some(0)) => Some(index_def(
            table,
            index,
            matches!(args.get(2), Some(ScalarValue::Boolean(Some(true)))),
        )),
        Some(Some(n)) => {
            let id = index.columns.get(usize::try_from(n - 1).ok()?)?;
            Some(table.column_by_id(*id)?.name.clone())
        }
        Some(None) => None,
    }
}

/// `pg_get_expr(expr, relation [, pretty])`: `pg_attrdef.adbin` holds the expression's
/// text already.
fn expression(_snapshot: &CatalogSnapshot, args: &[ScalarValue]) -> Option<String> {
    match &args[0] {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.clone(),
        other => Some(other.to_string()),
    }
}

/// `flotilla_attnames(relation, attnums)`: the names of a table's columns by number, in
/// the order given (a number with no column is left out), for rewritten introspection
/// queries (see `orm.rs`).
fn column_names(snapshot: &CatalogSnapshot, args: &[ScalarValue]) -> Option<Vec<String>> {
    let table = snapshot.table_by_id(int(&args[0])?)?;
    let ScalarValue::List(numbers) = &args[1] else {
        return None;
    };
    let numbers = datafusion::arrow::compute::cast(&numbers.value(0), &DataType::Int64).ok()?;
    let numbers = numbers
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()?;
    Some(
        numbers
            .iter()
            .flatten()
            .filter_map(|n| {
                let position = usize::try_from(n).ok()?.checked_sub(1)?;
                Some(table.columns.get(position)?.name.clone())
            })
            .collect(),
    )
}

/// `obj_description`, `col_description`, `shobj_description`: Flotilla keeps no
/// comments.
fn no_comment(_snapshot: &CatalogSnapshot, _args: &[ScalarValue]) -> Option<String> {
    None
}

/// `format_type(type_oid, typmod)`: the type's SQL name with its length or precision.
fn format_type(_snapshot: &CatalogSnapshot, args: &[ScalarValue]) -> Option<String> {
    type_name(int(&args[0])?, args.get(1).and_then(int))
}

/// The SQL name of type `oid` with the length or precision of modifier `typmod`.
fn type_name(oid: i64, typmod: Option<i64>) -> Option<String> {
    // Without a modifier (NULL or -1), the bare name.
    let typmod = typmod.filter(|m| *m >= 4);
    let length = || typmod.and_then(|m| u32::try_from(m - 4).ok());
    let ty = match oid {
        16 => SqlType::Bool,
        21 => SqlType::Int16,
        23 => SqlType::Int32,
        20 => SqlType::Int64,
        700 => SqlType::Float32,
        701 => SqlType::Float64,
        1700 => match typmod {
            Some(m) => SqlType::Numeric {
                precision: u8::try_from((m - 4) >> 16).ok()?,
                scale: i8::try_from((m - 4) & 0xffff).ok()?,
            },
            None => return Some("numeric".into()),
        },
        25 => SqlType::Text,
        1043 => SqlType::Varchar(length()),
        1042 => match length() {
            Some(n) => SqlType::Char(n),
            None => return Some("bpchar".into()),
        },
        17 => SqlType::Bytea,
        1082 => SqlType::Date,
        1083 => SqlType::Time,
        1114 => SqlType::Timestamp,
        1186 => SqlType::Interval,
        1184 => SqlType::TimestampTz,
        2950 => SqlType::Uuid,
        114 => SqlType::Json,
        3802 => SqlType::Jsonb,
        _ => {
            // An array type: its element's name, with the modifier (which is the
            // element's), then `[]`.
            let Some(SqlType::Array(element)) = crate::pg_catalog::type_of_oid(oid) else {
                return Some("???".into());
            };
            let element_oid = crate::pg_catalog::pg_type_oid(&element);
            return type_name(element_oid, typmod).map(|name| name + "[]");
        }
    };
    Some(ty.pg_name())
}

/// The catalog functions of a session, over its catalog.
pub(crate) fn catalog_udfs(catalog: &CatalogRef) -> Vec<Arc<ScalarUDF>> {
    let arities = |counts: &[usize]| {
        Signature::one_of(
            counts.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Stable,
        )
    };
    let functions: [(&'static str, Eval, &[usize]); 8] = [
        ("pg_get_constraintdef", Eval::Text(constraint_def), &[1, 2]),
        ("pg_get_indexdef", Eval::Text(index_definition), &[1, 3]),
        ("pg_get_expr", Eval::Text(expression), &[2, 3]),
        ("obj_description", Eval::Text(no_comment), &[1, 2]),
        ("col_description", Eval::Text(no_comment), &[2]),
        ("shobj_description", Eval::Text(no_comment), &[2]),
        ("format_type", Eval::Text(format_type), &[2]),
        ("flotilla_attnames", Eval::Texts(column_names), &[2]),
    ];
    let mut udfs: Vec<Arc<ScalarUDF>> = functions
        .into_iter()
        .map(|(name, eval, counts)| {
            Arc::new(ScalarUDF::new_from_impl(CatalogText {
                name,
                eval,
                catalog: catalog.clone(),
                signature: arities(counts),
            }))
        })
        .collect();
    udfs.push(Arc::new(ScalarUDF::new_from_impl(CurrentSchemas {
        signature: Signature::any(1, Volatility::Stable),
    })));
    udfs
}

/// `current_schemas(include_implicit)`: the search path as a `name[]`, `{public}`, with
/// `pg_catalog` first when asked for the implicit schemas too.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSchemas {
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSchemas {
    fn name(&self) -> &str {
        "current_schemas"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(text_list_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let implicit = args.args[0].to_array(args.number_rows)?;
        let implicit = datafusion::arrow::compute::cast(&implicit, &DataType::Boolean)?;
        let implicit = implicit
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("current_schemas argument".into()))?;
        let lists: Vec<Option<Vec<Option<&str>>>> = (0..implicit.len())
            .map(|i| {
                (!implicit.is_null(i)).then(|| {
                    if implicit.value(i) {
                        vec![Some("pg_catalog"), Some("public")]
                    } else {
                        vec![Some("public")]
                    }
                })
            })
            .collect();
        let mut builder = ListBuilder::new(StringBuilder::new());
        for list in lists {
            match list {
                Some(items) => {
                    for item in items {
                        builder.values().append_option(item);
                    }
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        let out: ListArray = builder.finish();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
