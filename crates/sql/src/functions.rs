//! Functions PostgreSQL clients call that DataFusion lacks or answers differently.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

/// `version()`: drivers and tools parse it as PostgreSQL's, so it starts the same way.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Version {
    signature: Signature,
}

impl ScalarUDFImpl for Version {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
            "PostgreSQL 15.0 (Flotilla {}) on {}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH
        )))))
    }
}

/// The functions to register in every statement's context.
pub(crate) fn all() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(ScalarUDF::new_from_impl(Version {
        signature: Signature::exact(vec![], Volatility::Stable),
    }))]
}
