//! Wiring of Flotilla's roles: configuration, the standalone node (meta + store + SQL in
//! one process), and the HTTP endpoints every role serves (`/metrics`, `/status`).
//!
//! Architecture invariant: this crate only assembles layers through their seams; it holds
//! no SQL, transaction or storage logic of its own.

mod config;
mod gc;
mod http;
mod sql_node;
mod standalone;
mod store_node;

pub use config::{
    ConfigError, DdlSection, GcSection, SqlSection, StandaloneConfig, StorageSection,
};
pub use gc::{GcConfig, GcStats};
pub use sql_node::{SqlNode, SqlNodeConfig, cluster_reorg, cluster_sql_engine};
pub use standalone::{Standalone, StartError};
pub use store_node::{StoreNode, StoreNodeConfig};
