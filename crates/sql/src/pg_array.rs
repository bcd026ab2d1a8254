//! Arrays written as PostgreSQL's text form: `'{1,2,NULL}'::int[]`, `'{a,"b c"}'::text[]`.
//!
//! Arrow's cast of a string to a list makes a list of one element, the whole string. An
//! analyzer rule, run after type coercion, replaces each cast of a string to a list with a
//! function reading the text form into a `text[]`, cast from there to the element type
//! (so `'{1,x}'::int[]` fails as `'x'::int` does).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{Cast, Placeholder, ScalarFunction};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::error::SqlError;

/// The elements of a one-dimensional array in its text form, `None` for `NULL`.
pub fn array_text(text: &str) -> Result<Vec<Option<String>>, SqlError> {
    let malformed = |detail: &str| {
        SqlError::new("22P02", format!("malformed array literal: \"{text}\"")).with_detail(detail)
    };
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or_else(|| malformed("Array value must start with \"{\" or dimension information."))?;
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek() == Some(&'{') {
            return Err(SqlError::new(
                "0A000",
                format!("multidimensional arrays are not supported: \"{text}\""),
            )
            .with_hint("Write a one-dimensional array, such as '{1,2,3}'."));
        }
        let element = if chars.next_if_eq(&'"').is_some() {
            let mut element = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => element.extend(chars.next()),
                    Some(c) => element.push(c),
                    None => return Err(malformed("Unexpected end of input.")),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            Some(element)
        } else {
            let mut element = String::new();
            let mut escaped = false;
            while let Some(c) = chars.next_if(|c| *c != ',') {
                match c {
                    '\\' => {
                        escaped = true;
                        element.extend(chars.next());
                    }
                    '"' | '{' | '}' => return Err(malformed("Unexpected array element.")),
                    c => element.push(c),
                }
            }
            element.truncate(element.trim_end().len());
            if element.is_empty() {
                return Err(malformed("Unexpected \",\" character."));
            }
            // An unquoted NULL is a null element; a quoted or escaped one is the word.
            (escaped || !element.eq_ignore_ascii_case("null")).then_some(element)
        };
        out.push(element);
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(_) => return Err(malformed("Unexpected array element.")),
        }
    }
}

/// An element's text as it stands in an array's text form: quoted (with `\` before
/// each `"` and `\`) if it is empty, is `NULL`, or holds a blank or one of `{},"\`.
pub fn element_text(text: &str) -> String {
    let quote = text.is_empty()
        || text.eq_ignore_ascii_case("null")
        || text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '{' | '}' | ',' | '"' | '\\'));
    if !quote {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `text_array(text)`: a string's array text form read as a `text[]`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextArray {
    signature: Signature,
}

impl ScalarUDFImpl for TextArray {
    fn name(&self) -> &str {
        "text_array"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(text_list_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(read_text_arrays(&array)?))
    }
}

/// Each string of `texts` read as an array's text form, into a `text[]`.
fn read_text_arrays(texts: &ArrayRef) -> DfResult<ArrayRef> {
    let mut out = ListBuilder::new(StringBuilder::new());
    for text in crate::pg_json::texts(texts)? {
        match text {
            Some(text) => {
                for element in array_text(text).map_err(crate::pg_json::external)? {
                    out.values().append_option(element);
                }
                out.append(true);
            }
            None => out.append(false),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// The name of [`UntypedArray`].
pub(crate) const UNTYPED_ARRAY: &str = "flotilla_untyped_array";

/// `flotilla_untyped_array(text, sample)`: an untyped literal or parameter quantified by
/// ANY or ALL (`x <> ALL('{1,2}')`, `x < ANY($1)`) as an array of `sample`'s type, as
/// PostgreSQL types an untyped operand by the other one. DataFusion plans the array
/// before it could see the other operand, so `untyped::type_by_other_operands` writes
/// this call in before planning, and `untyped::read_compared_literals` replaces it with a
/// cast (or a parameter of the array type) once the plan's types are known. Evaluated,
/// it reads the text as that cast would.
#[derive(Debug, PartialEq, Eq, Hash)]
struct UntypedArray {
    signature: Signature,
}

impl ScalarUDFImpl for UntypedArray {
    fn name(&self) -> &str {
        UNTYPED_ARRAY
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(quantified_array_type(args.get(1).cloned()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let texts = args.args[0].to_array(if scalar { 1 } else { args.number_rows })?;
        let texts = datafusion::arrow::compute::cast(&texts, &DataType::Utf8)?;
        let arrays = datafusion::arrow::compute::cast(
            &read_text_arrays(&texts)?,
            args.return_field.data_type(),
        )?;
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&arrays, 0)?)
        } else {
            ColumnarValue::Array(arrays)
        })
    }
}

/// The array type an untyped operand quantified against a value of `element` is read
/// as: an array of its type, `text[]` if it has none (`NULL = ANY('{a}')`).
fn quantified_array_type(element: Option<DataType>) -> DataType {
    match element {
        None | Some(DataType::Null) => text_list_type(),
        Some(element) => crate::types::list_type(element),
    }
}

/// A `flotilla_untyped_array(..)` call as the cast it stands for, once the type of
/// its sample is known: `None` for any other expression.
pub(crate) fn untyped_array_typed(expr: &Expr, schema: &DFSchema) -> Option<Expr> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    let [untyped, sample] = f.args.as_slice() else {
        return None;
    };
    if f.func.name() != UNTYPED_ARRAY {
        return None;
    }
    let element = sample.get_type(schema).ok()?;
    Some(typed(untyped.clone(), quantified_array_type(Some(element))))
}

fn text_list_type() -> DataType {
    DataType::new_list(DataType::Utf8, true)
}

/// The cast rewrite, registered after DataFusion's analyzer rules.
#[derive(Debug)]
pub(crate) struct ArrayCasts {
    text_array: Arc<ScalarUDF>,
}

impl ArrayCasts {
    pub(crate) fn new() -> Self {
        Self {
            text_array: Arc::new(ScalarUDF::new_from_impl(TextArray {
                signature: Signature::any(1, Volatility::Immutable),
            })),
        }
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
        let Some((inner, to, from)) = crate::types::cast_parts(&expr, schema) else {
            return Ok(Transformed::no(expr));
        };
        if !crate::types::is_string(&from)
            || !matches!(to, DataType::List(_) | DataType::LargeList(_))
        {
            return Ok(Transformed::no(expr));
        }
        let texts = Expr::ScalarFunction(ScalarFunction::new_udf(
            self.text_array.clone(),
            vec![inner.clone()],
        ));
        Ok(Transformed::yes(if *to == text_list_type() {
            texts
        } else {
            Expr::Cast(Cast::new(Box::new(texts), to.clone()))
        }))
    }
}

impl AnalyzerRule for ArrayCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::overflow::rewrite_expressions(plan, |e, schema| self.rewrite(e, schema))
    }

    fn name(&self) -> &str {
        "flotilla_array_casts"
    }
}

/// `array_length(a, dimension)`: DataFusion's, except that it is an `integer`, and NULL
/// for an empty array, as PostgreSQL's is (an empty array has no dimensions). Django's
/// `__len` lookup reads it through `coalesce(array_length(a, 1), 0)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayLength {
    inner: Arc<ScalarUDF>,
}

impl ScalarUDFImpl for ArrayLength {
    fn name(&self) -> &str {
        "array_length"
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        // PostgreSQL's is an integer (DataFusion's an unsigned 64-bit one, which the wire
        // would send as numeric).
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        // DataFusion's checks that it returns the type it promised.
        args.return_field = Arc::new(Field::new(self.name(), self.inner.return_type(&[])?, true));
        let zero_is_null = |lengths: &ArrayRef| -> DfResult<ArrayRef> {
            let zero = datafusion::scalar::ScalarValue::new_zero(lengths.data_type())?;
            let empty = datafusion::arrow::compute::kernels::cmp::eq(lengths, &zero.to_scalar()?)?;
            let lengths = datafusion::arrow::compute::nullif(lengths, &empty)?;
            Ok(datafusion::arrow::compute::cast(
                &lengths,
                &DataType::Int32,
            )?)
        };
        Ok(match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(lengths) => ColumnarValue::Array(zero_is_null(&lengths)?),
            ColumnarValue::Scalar(length) => {
                let lengths = zero_is_null(&length.to_array()?)?;
                ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(
                    &lengths, 0,
                )?)
            }
        })
    }
}

/// `array_lower(a, dimension)` and `array_upper(a, dimension)`: the bounds of a
/// one-dimensional array, which start at 1 (NULL for an empty array or another
/// dimension), as PostgreSQL's. DataFusion has neither.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayBound {
    upper: bool,
    signature: Signature,
}

impl ScalarUDFImpl for ArrayBound {
    fn name(&self) -> &str {
        if self.upper {
            "array_upper"
        } else {
            "array_lower"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [list, dimension] = arrays.as_slice() else {
            return datafusion::common::exec_err!("{} takes an array and a dimension", self.name());
        };
        let DataType::List(_) = list.data_type() else {
            return datafusion::common::exec_err!(
                "{} takes an array, not {}",
                self.name(),
                list.data_type()
            );
        };
        let list = list.as_list::<i32>();
        let dimension = datafusion::arrow::compute::cast(dimension, &DataType::Int64)?;
        let dimension = dimension.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let bounds: Int32Array = (0..rows)
            .map(|row| {
                if list.is_null(row) || dimension.is_null(row) || dimension.value(row) != 1 {
                    return None;
                }
                let len = list.value_length(row);
                (len > 0).then_some(if self.upper { len } else { 1 })
            })
            .collect();
        let bounds: ArrayRef = Arc::new(bounds);
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&bounds, 0)?)
        } else {
            ColumnarValue::Array(bounds)
        })
    }
}

/// The array functions that replace DataFusion's, or that it lacks.
pub(crate) fn functions() -> Vec<Arc<ScalarUDF>> {
    let bound = |upper| {
        Arc::new(ScalarUDF::new_from_impl(ArrayBound {
            upper,
            signature: Signature::any(2, Volatility::Immutable),
        }))
    };
    vec![
        Arc::new(ScalarUDF::new_from_impl(ArrayLength {
            inner: datafusion::functions_nested::length::array_length_udf(),
        })),
        bound(false),
        bound(true),
        Arc::new(ScalarUDF::new_from_impl(UntypedArray {
            signature: Signature::any(2, Volatility::Immutable),
        })),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_text_reads_what_postgresql_reads() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            array_text(r#"{a, "b c" ,"d\"e"}"#).expect("array"),
            [some("a"), some("b c"), some("d\"e")]
        );
        assert_eq!(
            array_text(r#"{NULL,null,"NULL",\NULL, x y }"#).expect("array"),
            [None, None, some("NULL"), some("NULL"), some("x y")]
        );
        assert_eq!(
            array_text(" { } ").expect("array"),
            Vec::<Option<String>>::new()
        );
        for bad in ["a,b", "{a,,b}", "{a", "{a}x", r#"{"a}"#, "{a\"b}"] {
            assert_eq!(array_text(bad).expect_err(bad).code, "22P02", "{bad}");
        }
        assert_eq!(array_text("{{1,2},{3,4}}").expect_err("2-d").code, "0A000");
    }
}

/// Plans PostgreSQL's array operators DataFusion's SQL planner lacks (`a && b`: the
/// arrays share an element), and reads an untyped operand of an array operator as an
/// array of the other operand's type, as PostgreSQL types an untyped literal or
/// parameter by the other operand: `a = '{1,2}'` compares arrays, `a || '{3}'` (and
/// `a || $1`) concatenates them. Registered before DataFusion's planners, which would
/// take `||` with a string for appending an element.
#[derive(Debug)]
pub(crate) struct ArrayOperators;

impl ExprPlanner for ArrayOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> DfResult<PlannerResult<RawBinaryExpr>> {
        let list_type = |e: &Expr| e.get_type(schema).ok().filter(is_list);
        let op = expr.op.clone();
        let typed_by_other = matches!(
            op,
            BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
                | BinaryOperator::StringConcat
        );
        if !typed_by_other
            && !matches!(
                op,
                BinaryOperator::PGOverlap | BinaryOperator::AtArrow | BinaryOperator::ArrowAt
            )
        {
            return Ok(PlannerResult::Original(expr));
        }
        // A string literal on the other side is an array of the list's type.
        let (left, right) = match (list_type(&expr.left), list_type(&expr.right)) {
            (Some(_), Some(_)) if !typed_by_other => (expr.left, expr.right),
            (Some(t), None) if is_untyped(&expr.right) => (expr.left, typed(expr.right, t)),
            (None, Some(t)) if is_untyped(&expr.left) => (typed(expr.left, t), expr.right),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        if typed_by_other {
            // Typed, the operator is planned as any other (DataFusion's array planner
            // takes `||` of two arrays for a concatenation).
            return Ok(PlannerResult::Original(RawBinaryExpr { op, left, right }));
        }
        use datafusion::functions_nested::expr_fn::{array_has_all, array_has_any};
        Ok(PlannerResult::Planned(match op {
            BinaryOperator::PGOverlap => array_has_any(left, right),
            BinaryOperator::AtArrow => array_has_all(left, right),
            _ => array_has_all(right, left),
        }))
    }
}

fn is_list(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
    )
}

fn is_string_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::Literal(v, _) if crate::types::is_string(&v.data_type()))
}

fn cast(expr: Expr, data_type: DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(expr), data_type))
}

/// A string literal, or a parameter of no declared type.
pub(crate) fn is_untyped(expr: &Expr) -> bool {
    is_string_literal(expr) || matches!(expr, Expr::Placeholder(p) if p.field.is_none())
}

/// An untyped operand as a value of `data_type`: a parameter of the type, a literal
/// cast to it.
pub(crate) fn typed(expr: Expr, data_type: DataType) -> Expr {
    match expr {
        Expr::Placeholder(p) => Expr::Placeholder(Placeholder::new_with_field(
            p.id,
            Some(Arc::new(Field::new("", data_type, true))),
        )),
        expr => cast(expr, data_type),
    }
}

/// `expr` read as an array of `data_type` (a list type) if it is a string literal,
/// as PostgreSQL reads `tags = '{a,b}'`.
pub(crate) fn list_literal(expr: &Expr, data_type: &DataType) -> Option<DfResult<Expr>> {
    (is_list(data_type) && is_string_literal(expr))
        .then(|| Ok(cast(expr.clone(), data_type.clone())))
}
