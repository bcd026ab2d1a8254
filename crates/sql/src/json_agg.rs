//! The JSON aggregates: `json_agg`, `jsonb_agg`, `json_object_agg` and `jsonb_object_agg`.
//!
//! Each is DataFusion's `array_agg` underneath, which already keeps `ORDER BY` within the
//! aggregate, `DISTINCT`, `FILTER` and window frames; only the final value differs, printed
//! as PostgreSQL prints these. The object aggregates pass their key and value to
//! `array_agg` as one struct. Like PostgreSQL's, each is NULL over no rows, and keeps NULL
//! values (a JSON `null`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ReversedUDAF, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

use crate::error::SqlError;
use crate::pg_json::{Kind, external, json_array, value_json, write_string};

/// One of the four aggregates.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonAgg {
    name: &'static str,
    kind: Kind,
    /// `json[b]_object_agg(key, value)` rather than `json[b]_agg(value)`.
    object: bool,
    /// The `array_agg` collecting the values, as DataFusion's planner last chose it (it
    /// is told whether its input arrives sorted).
    array_agg: Arc<AggregateUDF>,
    signature: Signature,
}

impl JsonAgg {
    fn udaf(name: &'static str, kind: Kind, object: bool) -> AggregateUDF {
        AggregateUDF::new_from_impl(JsonAgg {
            name,
            kind,
            object,
            array_agg: datafusion::functions_aggregate::array_agg::array_agg_udaf(),
            signature: Signature::any(if object { 2 } else { 1 }, Volatility::Immutable),
        })
    }

    /// The field `array_agg` collects: the value, or the key and value as one struct.
    fn collected(&self, input: &[FieldRef]) -> FieldRef {
        if self.object {
            Arc::new(Field::new(
                "pair",
                DataType::Struct(Fields::from(input[..2].to_vec())),
                true,
            ))
        } else {
            input[0].clone()
        }
    }
}

impl AggregateUDFImpl for JsonAgg {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.kind.arrow_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        let collected = [self.collected(args.input_fields)];
        self.array_agg.inner().state_fields(StateFieldsArgs {
            input_fields: &collected,
            return_field: list_field(&collected[0]),
            ..args
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        let collected = [self.collected(args.expr_fields)];
        let inner = self.array_agg.inner().accumulator(AccumulatorArgs {
            return_field: list_field(&collected[0]),
            expr_fields: &collected,
            ..args
        })?;
        Ok(Box::new(JsonAggAccumulator {
            inner,
            kind: self.kind,
            object: self.object,
        }))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.array_agg.inner().order_sensitivity()
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> DfResult<Option<Arc<dyn AggregateUDFImpl>>> {
        let Some(array_agg) = self
            .array_agg
            .inner()
            .clone()
            .with_beneficial_ordering(beneficial_ordering)?
        else {
            return Ok(None);
        };
        Ok(Some(Arc::new(JsonAgg {
            name: self.name,
            kind: self.kind,
            object: self.object,
            array_agg: Arc::new(AggregateUDF::new_from_shared_impl(array_agg)),
            signature: self.signature.clone(),
        })))
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        // Reversing would only save a sort, and the reversed `array_agg` would have to
        // be wrapped again; the planner sorts instead.
        ReversedUDAF::NotSupported
    }
}

fn list_field(item: &FieldRef) -> FieldRef {
    Arc::new(Field::new(
        "list",
        DataType::List(Arc::new(Field::new_list_field(
            item.data_type().clone(),
            true,
        ))),
        true,
    ))
}

/// `array_agg`'s accumulator, packing the object aggregates' arguments on the way in and
/// printing the collected list on the way out.
#[derive(Debug)]
struct JsonAggAccumulator {
    inner: Box<dyn Accumulator>,
    kind: Kind,
    object: bool,
}

impl JsonAggAccumulator {
    /// What `array_agg` takes for `values`: the collected value, then the `ORDER BY`
    /// values as they came.
    fn collected(&self, values: &[ArrayRef]) -> DfResult<Vec<ArrayRef>> {
        if !self.object {
            return Ok(values.to_vec());
        }
        let (key, value) = (&values[0], &values[1]);
        if key.null_count() > 0 {
            return Err(external(SqlError::new(
                "22023",
                "field name must not be null",
            )));
        }
        let fields = Fields::from(vec![
            Field::new("key", key.data_type().clone(), true),
            Field::new("value", value.data_type().clone(), true),
        ]);
        let pair = StructArray::try_new(fields, vec![key.clone(), value.clone()], None)?;
        let mut collected = vec![Arc::new(pair) as ArrayRef];
        collected.extend_from_slice(&values[2..]);
        Ok(collected)
    }

    /// The aggregate's text for the values `array_agg` collected.
    fn print(&self, items: &ArrayRef) -> DfResult<String> {
        let mut text = String::new();
        if self.object {
            // PostgreSQL's `json_object_agg` spacing; `jsonb` is made canonical below.
            let pairs = items.as_struct();
            text.push_str("{ ");
            for row in 0..pairs.len() {
                if row > 0 {
                    text.push_str(", ");
                }
                let key = value_json(pairs.column(0), row)?.unwrap_or_default();
                // A key is a string, whatever its type.
                let key = serde_json::from_str::<String>(&key).unwrap_or(key);
                write_string(&key, &mut text).map_err(external)?;
                text.push_str(" : ");
                text.push_str(&value_json(pairs.column(1), row)?.unwrap_or_else(|| "null".into()));
            }
            text.push_str(" }");
        } else {
            // PostgreSQL starts each array or row after the first on a line of its own.
            let separator = match items.data_type() {
                DataType::List(_) | DataType::LargeList(_) | DataType::Struct(_) => ", \n ",
                _ => ", ",
            };
            text.push('[');
            for row in 0..items.len() {
                if row > 0 {
                    text.push_str(separator);
                }
                text.push_str(&value_json(items, row)?.unwrap_or_else(|| "null".into()));
            }
            text.push(']');
        }
        Ok(text)
    }
}

impl Accumulator for JsonAggAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let collected = self.collected(values)?;
        self.inner.update_batch(&collected)
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let text = match self.inner.evaluate()? {
            ScalarValue::List(list) if !list.is_null(0) => {
                let items = list.value(0);
                let text = self.print(&items)?;
                Some(match self.kind {
                    Kind::Json => text,
                    Kind::Jsonb => self.kind.input(&text).map_err(external)?,
                })
            }
            _ => None,
        };
        ScalarValue::try_from_array(&json_array(self.kind, vec![text]), 0)
    }

    fn size(&self) -> usize {
        self.inner.size() + size_of::<Self>()
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        self.inner.merge_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let collected = self.collected(values)?;
        self.inner.retract_batch(&collected)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }
}

/// The aggregates of this module.
pub(crate) fn aggregates() -> Vec<AggregateUDF> {
    vec![
        JsonAgg::udaf("json_agg", Kind::Json, false),
        JsonAgg::udaf("jsonb_agg", Kind::Jsonb, false),
        JsonAgg::udaf("json_object_agg", Kind::Json, true),
        JsonAgg::udaf("jsonb_object_agg", Kind::Jsonb, true),
    ]
}
