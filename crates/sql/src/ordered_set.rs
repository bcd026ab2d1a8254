//! PostgreSQL's ordered-set aggregates DataFusion lacks: `mode() WITHIN GROUP (ORDER BY
//! x)`, the most frequent value (the first in the order among equally frequent ones),
//! and `percentile_disc(f) WITHIN GROUP (ORDER BY x)`, the first value in the order whose
//! position reaches the fraction `f` of the rows. (`percentile_cont` is DataFusion's.)
//!
//! DataFusion's planner passes the WITHIN GROUP expression as the first argument and its
//! order as the aggregate's ordering. Each group keeps its non-NULL values and orders them
//! at the end, as PostgreSQL sorts them; the memory they hold is reported to the query's
//! memory pool (`query_memory_bytes_max`), which refuses a group past it.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::scalar::ScalarValue;

use crate::error::SqlError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Mode,
    PercentileDisc,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OrderedSet {
    kind: Kind,
    signature: Signature,
}

/// The aggregates of this module, to register in every statement's context.
pub(crate) fn aggregates() -> Vec<AggregateUDF> {
    [(Kind::Mode, 1), (Kind::PercentileDisc, 2)]
        .into_iter()
        .map(|(kind, args)| {
            AggregateUDF::new_from_impl(OrderedSet {
                kind,
                signature: Signature::new(TypeSignature::Any(args), Volatility::Immutable),
            })
        })
        .collect()
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// `percentile_disc`'s fraction: a constant, NULL or between 0 and 1.
fn fraction_of(args: &AccumulatorArgs) -> DfResult<Option<f64>> {
    let literal = args
        .exprs
        .get(1)
        .and_then(|e| e.downcast_ref::<Literal>())
        .ok_or_else(|| {
            external(
                SqlError::new("0A000", "percentile_disc's fraction must be a constant")
                    .with_hint("Write the fraction as a number, such as 0.5."),
            )
        })?;
    let value = literal.value().cast_to(&DataType::Float64)?;
    let ScalarValue::Float64(fraction) = value else {
        return Ok(None);
    };
    if let Some(f) = fraction
        && !(0.0..=1.0).contains(&f)
    {
        return Err(external(SqlError::new(
            "22003",
            format!("percentile value {f} is not between 0 and 1"),
        )));
    }
    Ok(fraction)
}

impl AggregateUDFImpl for OrderedSet {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Mode => "mode",
            Kind::PercentileDisc => "percentile_disc",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[0].clone())
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let descending = args.order_bys.first().is_some_and(|o| o.options.descending);
        let fraction = match self.kind {
            Kind::Mode => None,
            Kind::PercentileDisc => Some(fraction_of(&args)?),
        };
        Ok(Box::new(Values {
            kind: self.kind,
            descending,
            fraction,
            data_type: args.return_field.data_type().clone(),
            values: Vec::new(),
            bytes: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        let item = args.input_fields[0].data_type().clone();
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "values"),
            DataType::List(Arc::new(Field::new_list_field(item, true))),
            true,
        ))])
    }
}

/// A group's non-NULL values, ordered when the group ends.
#[derive(Debug)]
struct Values {
    kind: Kind,
    descending: bool,
    /// `percentile_disc`'s fraction; `Some(None)` for a NULL one.
    fraction: Option<Option<f64>>,
    data_type: DataType,
    values: Vec<ScalarValue>,
    /// Memory the values hold.
    bytes: usize,
}

impl Values {
    fn push_all(&mut self, array: &ArrayRef) -> DfResult<()> {
        for row in 0..array.len() {
            if array.is_null(row) {
                continue;
            }
            let value = ScalarValue::try_from_array(array, row)?;
            self.bytes += value.size();
            self.values.push(value);
        }
        Ok(())
    }

    fn ordered(&mut self) -> &[ScalarValue] {
        let descending = self.descending;
        self.values.sort_by(|a, b| {
            let order = a.partial_cmp(b).unwrap_or(Ordering::Equal);
            if descending { order.reverse() } else { order }
        });
        &self.values
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        self.push_all(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let lists = states[0].as_list::<i32>();
        for row in 0..lists.len() {
            if !lists.is_null(row) {
                self.push_all(&lists.value(row))?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let list = ScalarValue::new_list_nullable(&self.values, &self.data_type);
        Ok(vec![ScalarValue::List(list)])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let kind = self.kind;
        let fraction = self.fraction;
        let null = ScalarValue::try_from(&self.data_type)?;
        let ordered = self.ordered();
        if ordered.is_empty() {
            return Ok(null);
        }
        Ok(match kind {
            // The first value of the longest run; a later run must be longer to win.
            Kind::Mode => {
                let (mut best, mut best_run) = (0, 0);
                let mut start = 0;
                while start < ordered.len() {
                    let mut end = start + 1;
                    while end < ordered.len() && ordered[end] == ordered[start] {
                        end += 1;
                    }
                    if end - start > best_run {
                        (best, best_run) = (start, end - start);
                    }
                    start = end;
                }
                ordered[best].clone()
            }
            // PostgreSQL's position: the ceiling of fraction × rows, at least the first.
            Kind::PercentileDisc => match fraction.flatten() {
                None => null,
                Some(f) => {
                    let position = (f * ordered.len() as f64).ceil() as usize;
                    ordered[position.clamp(1, ordered.len()) - 1].clone()
                }
            },
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.bytes
            + self.values.capacity() * std::mem::size_of::<ScalarValue>()
    }
}
