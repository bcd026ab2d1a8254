//! The F1 scenario's view of an engine in this process: a node is an `Arc<SqlEngine>`,
//! a session one of its `Session`s.

use std::sync::Arc;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use flotilla_sql::{QueryResult, Session, SqlEngine};

use crate::f1::{Conn, Node};

impl Conn for Session {
    async fn run(&mut self, sql: &str) -> Result<Vec<String>, String> {
        let (mut results, error) = self.simple_query(sql).await;
        if let Some(e) = error {
            return Err(format!("{} ({})", e.message, e.code));
        }
        let Some(QueryResult::Rows { batches, .. }) = results.pop() else {
            return Ok(Vec::new());
        };
        let options = FormatOptions::default();
        let mut rows = Vec::new();
        for b in &batches {
            let formatters: Vec<_> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for r in 0..b.num_rows() {
                let cells: Vec<String> =
                    formatters.iter().map(|f| f.value(r).to_string()).collect();
                rows.push(cells.join("|"));
            }
        }
        Ok(rows)
    }
}

impl Node for Arc<SqlEngine> {
    type Conn = Session;

    async fn connect(&self) -> Session {
        self.session()
    }

    async fn schema_version(&self) -> u64 {
        self.catalog_snapshot().version
    }
}
