//! The HTTP endpoints: `/metrics` (Prometheus text format) and `/status` (JSON).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use flotilla_sql::SqlEngine;
use flotilla_storage::EngineRef;
use prometheus::{Encoder, IntGauge, Registry, TextEncoder};

/// What the endpoints report on.
pub(crate) struct HttpState {
    pub(crate) started: Instant,
    pub(crate) data_dir: PathBuf,
    pub(crate) sql: Arc<SqlEngine>,
    pub(crate) storage: EngineRef,
    registry: Registry,
    uptime: IntGauge,
    tables: IntGauge,
    disk: IntGauge,
    row_cache: [IntGauge; 5],
    gc: Option<(Arc<crate::gc::GcStats>, [IntGauge; 3])>,
}

impl HttpState {
    pub(crate) fn new(
        data_dir: PathBuf,
        sql: Arc<SqlEngine>,
        storage: EngineRef,
        gc: Option<Arc<crate::gc::GcStats>>,
    ) -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric name");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let uptime = gauge("flotilla_uptime_seconds", "Seconds since the node started.");
        let tables = gauge("flotilla_tables", "Number of user tables in the catalog.");
        let disk = gauge(
            "flotilla_storage_disk_bytes",
            "Bytes the storage engine uses on disk.",
        );
        let row_cache = [
            gauge(
                "flotilla_row_cache_hits",
                "Row cache lookups answered from memory since start.",
            ),
            gauge(
                "flotilla_row_cache_misses",
                "Row cache lookups that read the storage engine since start.",
            ),
            gauge("flotilla_row_cache_entries", "Rows held by the row cache."),
            gauge("flotilla_row_cache_bytes", "Bytes held by the row cache."),
            gauge(
                "flotilla_row_cache_capacity_bytes",
                "The row cache's bound (storage.row_cache_bytes).",
            ),
        ];
        let gc = gc.map(|stats| {
            let gauges = [
                gauge(
                    "flotilla_gc_safe_point_unix_ms",
                    "Physical time of the last GC run's safe point (versions only readers below it needed are removed).",
                ),
                gauge(
                    "flotilla_gc_records_deleted",
                    "Old version records GC removed since start.",
                ),
                gauge("flotilla_gc_runs", "GC runs finished since start."),
            ];
            (stats, gauges)
        });
        Self {
            started: Instant::now(),
            data_dir,
            sql,
            storage,
            registry,
            uptime,
            tables,
            disk,
            row_cache,
            gc,
        }
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    state.uptime.set(state.started.elapsed().as_secs() as i64);
    state.tables.set(state.sql.table_count() as i64);
    state.disk.set(state.storage.disk_space_bytes() as i64);
    let cache = state.storage.row_cache_stats();
    for (gauge, value) in state.row_cache.iter().zip([
        cache.hits,
        cache.misses,
        cache.entries,
        cache.bytes,
        cache.capacity_bytes,
    ]) {
        gauge.set(value as i64);
    }
    if let Some((stats, [safe_point, deleted, runs])) = &state.gc {
        let ts = flotilla_types::Timestamp(stats.safe_point.load(Ordering::Relaxed));
        safe_point.set(ts.physical_ms() as i64);
        deleted.set(stats.records_deleted.load(Ordering::Relaxed) as i64);
        runs.set(stats.runs.load(Ordering::Relaxed) as i64);
    }
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string().into_bytes(),
        ),
    }
}

async fn status(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "role": "standalone",
        "uptime_seconds": state.started.elapsed().as_secs(),
        "data_dir": state.data_dir.display().to_string(),
        "table_count": state.sql.table_count(),
    }))
}

/// The router of the HTTP endpoints.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}
