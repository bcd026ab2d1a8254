//! The SQL layer: sessions, statement execution and transactions, with DataFusion planning
//! and executing queries over the `TxnKv` and `Catalog` seams.
//!
//! Architecture invariant: reaches storage only through `TxnKv`, time only through `Tso`,
//! and schema only through `Catalog`; knows nothing of the wire protocol (the `pgserver`
//! crate maps sessions to PostgreSQL's protocol) and nothing of fjall.

mod admin;
mod alter_sequence;
mod api;
mod bpchar;
mod cast_length;
mod cast_names;
mod check;
mod context;
mod cte;
mod ddl;
mod deferred;
mod dml;
mod engine;
mod error;
mod fast;
mod fetch;
mod foreign;
mod functions;
mod info_schema;
mod json_agg;
mod json_edit;
mod json_sets;
mod lateral;
mod locking;
mod numeric;
mod ordered_set;
mod orm;
mod overflow;
mod params;
mod partial;
pub mod pg_array;
mod pg_builtins;
mod pg_catalog;
mod pg_date_functions;
pub mod pg_datetime;
mod pg_functions;
mod pg_interval;
pub mod pg_json;
pub mod pg_text;
pub mod pg_uuid;
mod prepared;
mod psql;
mod rows;
mod sequence;
mod session;
mod split;
mod sql_ast;
mod subquery;
mod table;
mod to_char;
mod to_char_number;
mod types;
mod untyped;
mod upsert;
mod whole_row;

pub use api::{PreparedStatement, QueryResult, SqlConfig, SqlError, TransactionState};
pub use ddl::SqlReorg;
pub use engine::SqlEngine;
pub use pg_text::{date_text, float4_text, float8_text, timestamp_text};
pub use session::Session;
