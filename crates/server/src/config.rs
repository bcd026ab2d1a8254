use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its location.
        message: String,
    },
}

/// Limits and defaults of the SQL front end. Every field has a documented default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSection {
    /// Most concurrent client connections; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Most named prepared statements one connection keeps (54000 past it).
    pub prepared_statements_max: usize,
    /// Most named portals one connection keeps open (54000 past it); portals close with
    /// their transaction.
    pub portals_max: usize,
    /// Largest inbound protocol message in bytes; a longer one ends the connection with
    /// FATAL 54000 before it is buffered.
    pub message_bytes_max: usize,
    /// Largest statement text in bytes (54000 past it).
    pub statement_bytes_max: usize,
    /// Most rows one query may return or one statement change (54000 past it).
    pub rows_per_query_max: usize,
    /// Memory for query execution (sorts, joins, aggregates), in bytes (53200 past it); also
    /// the most bytes of rows a writing statement reads before writing them (54000).
    pub query_memory_bytes_max: usize,
    /// Most bytes of rows one query string's results hold (54000 past it).
    pub result_bytes_max: usize,
    /// Default and largest lock wait (`lock_timeout`), in milliseconds (55P03 past it).
    pub lock_wait_timeout_ms: u64,
    /// Most savepoints open at once in one transaction (54000 past it).
    pub savepoints_max: usize,
    /// Most foreign key checks one transaction defers until commit (54000 past it).
    pub deferred_checks_max: usize,
    /// Most steps of foreign key actions one statement runs (54001 past it).
    pub fk_action_steps_max: usize,
    /// Most bytes of one session's settings, names and values (54000 past it).
    pub settings_bytes_max: usize,
    /// Most bytes of writes one transaction buffers until its commit (54000 past it).
    pub txn_size_bytes_max: usize,
    /// Bytes of index entries `ADMIN CHECK TABLE` holds at once (one slice of an index).
    pub check_table_slice_bytes: usize,
}

impl Default for SqlSection {
    fn default() -> Self {
        let sql = flotilla_sql::SqlConfig::default();
        let pg = flotilla_pgserver::PgServerConfig::default();
        Self {
            max_connections: pg.max_connections,
            prepared_statements_max: pg.prepared_statements_max,
            portals_max: pg.portals_max,
            message_bytes_max: pg.message_bytes_max,
            statement_bytes_max: sql.statement_bytes_max,
            rows_per_query_max: sql.rows_per_query_max,
            query_memory_bytes_max: sql.query_memory_bytes_max,
            result_bytes_max: sql.result_bytes_max,
            lock_wait_timeout_ms: sql.lock_wait_timeout_ms,
            savepoints_max: sql.savepoints_max,
            deferred_checks_max: sql.deferred_checks_max,
            fk_action_steps_max: sql.fk_action_steps_max,
            settings_bytes_max: sql.settings_bytes_max,
            txn_size_bytes_max: sql.txn_size_bytes_max,
            check_table_slice_bytes: sql.check_table_slice_bytes,
        }
    }
}

impl SqlSection {
    /// The PostgreSQL front end's limits these settings give.
    pub fn pg_config(&self) -> flotilla_pgserver::PgServerConfig {
        flotilla_pgserver::PgServerConfig {
            max_connections: self.max_connections,
            prepared_statements_max: self.prepared_statements_max,
            portals_max: self.portals_max,
            message_bytes_max: self.message_bytes_max,
            ..flotilla_pgserver::PgServerConfig::default()
        }
    }

    /// The SQL engine's limits these settings give.
    pub fn sql_config(&self) -> flotilla_sql::SqlConfig {
        flotilla_sql::SqlConfig {
            statement_bytes_max: self.statement_bytes_max,
            rows_per_query_max: self.rows_per_query_max,
            query_memory_bytes_max: self.query_memory_bytes_max,
            result_bytes_max: self.result_bytes_max,
            lock_wait_timeout_ms: self.lock_wait_timeout_ms,
            savepoints_max: self.savepoints_max,
            prepared_statements_max: self.prepared_statements_max,
            deferred_checks_max: self.deferred_checks_max,
            fk_action_steps_max: self.fk_action_steps_max,
            settings_bytes_max: self.settings_bytes_max,
            txn_size_bytes_max: self.txn_size_bytes_max,
            check_table_slice_bytes: self.check_table_slice_bytes,
            ..flotilla_sql::SqlConfig::default()
        }
    }
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// "fsync" (default): a commit is acknowledged after its journal write is fsynced
    /// (shared by concurrent commits). "buffered": acknowledged after the write reaches the
    /// OS, which survives a process crash but not power loss.
    pub sync: String,
    /// Block cache size in bytes.
    pub cache_size_bytes: u64,
    /// Bytes of the cache of point reads of rows' newest versions (a row cache); 0 turns
    /// it off.
    pub row_cache_bytes: u64,
    /// Bytes of locks kept only in memory (pessimistic locks, and prewrite locks of
    /// transactions that commit in one batch); past it, new locks are written to the
    /// lock CF instead: slower, never refused. Default 256 MiB.
    pub memory_locks_bytes_max: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            sync: "fsync".into(),
            cache_size_bytes: 256 * 1024 * 1024,
            row_cache_bytes: 512 * 1024 * 1024,
            memory_locks_bytes_max: flotilla_mvcc::MemoryLockBudget::STORE_BYTES_MAX_DEFAULT,
        }
    }
}

/// Garbage collection of old row versions (`[gc]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcSection {
    /// Seconds a row version stays readable after a newer one replaced it; 0 turns GC off.
    /// The safe point never passes an open transaction's snapshot, however old. Default
    /// 600 (10 minutes).
    pub life_time_s: u64,
    /// Seconds between GC runs. Default 60.
    pub run_interval_s: u64,
    /// Records one GC step removes at most (one write batch). Default 4,096.
    pub batch_records_max: usize,
    /// Records per second GC removes at most; 0 = no limit. Default 50,000.
    pub records_per_s: u64,
}

impl Default for GcSection {
    fn default() -> Self {
        Self {
            life_time_s: 600,
            run_interval_s: 60,
            batch_records_max: 4_096,
            records_per_s: 50_000,
        }
    }
}

impl GcSection {
    /// The worker's settings, or why these are invalid.
    pub fn to_config(&self) -> Result<crate::gc::GcConfig, String> {
        if self.run_interval_s == 0 {
            return Err("gc.run_interval_s must be at least 1".into());
        }
        if self.batch_records_max == 0 {
            return Err("gc.batch_records_max must be at least 1".into());
        }
        Ok(crate::gc::GcConfig {
            life_time: std::time::Duration::from_secs(self.life_time_s),
            run_interval: std::time::Duration::from_secs(self.run_interval_s),
            batch_records_max: self.batch_records_max,
            records_per_s: self.records_per_s,
        })
    }
}

/// The DDL job queue's bounds (`[ddl]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdlSection {
    /// Most DDL jobs queued or running; past it a statement fails at once with SQLSTATE
    /// 53000 (retryable). Default 128.
    pub jobs_max: usize,
    /// Seconds a finished job's record is kept (SHOW DDL JOBS). Default 600.
    pub finished_ttl_s: u64,
    /// Most finished job records kept. Default 1,024.
    pub finished_max: usize,
    /// Retryable failures of one job before it fails. Default 100.
    pub retries_max: u32,
    /// Rows an index backfill writes per second at most; 0 = no limit. Default 5,000.
    pub backfill_rows_per_s: u64,
    /// Records per second at most that the deletion of dropped tables' and indexes' data
    /// removes; 0 = no limit. Default 20,000.
    pub cleanup_records_per_s: u64,
    /// Jobs whose steps run at once (on different tables). Default 8.
    pub running_max: usize,
    /// Milliseconds one step waits for every session to use a new schema version before
    /// it fails retryably (and is retried). Default 10,000.
    pub schema_wait_timeout_ms: u64,
    /// Most tables, views, sequences and indexes together; past it CREATE fails with
    /// SQLSTATE 54000. Default 10,000.
    pub relations_max: usize,
    /// Most columns of one table; past it CREATE or ALTER fails with SQLSTATE 54011.
    /// Default 1,600.
    pub columns_per_table_max: usize,
}

impl Default for DdlSection {
    fn default() -> Self {
        Self::from_config(&flotilla_ddl::DdlConfig::default())
    }
}

impl DdlSection {
    fn from_config(c: &flotilla_ddl::DdlConfig) -> Self {
        Self {
            jobs_max: c.jobs_max,
            finished_ttl_s: c.finished_ttl.as_secs(),
            finished_max: c.finished_max,
            retries_max: c.retries_max,
            backfill_rows_per_s: c.backfill_rows_per_s,
            cleanup_records_per_s: c.cleanup_records_per_s,
            running_max: c.running_max,
            schema_wait_timeout_ms: c.schema_wait_timeout.as_millis() as u64,
            relations_max: c.catalog.relations_max,
            columns_per_table_max: c.catalog.columns_per_table_max,
        }
    }

    /// The queue configuration these settings give.
    pub fn to_config(&self) -> flotilla_ddl::DdlConfig {
        flotilla_ddl::DdlConfig {
            jobs_max: self.jobs_max.max(1),
            finished_ttl: std::time::Duration::from_secs(self.finished_ttl_s),
            finished_max: self.finished_max,
            retries_max: self.retries_max,
            backfill_rows_per_s: self.backfill_rows_per_s,
            cleanup_records_per_s: self.cleanup_records_per_s,
            running_max: self.running_max.max(1),
            schema_wait_timeout: std::time::Duration::from_millis(self.schema_wait_timeout_ms),
            catalog: flotilla_catalog::CatalogLimits {
                relations_max: self.relations_max,
                columns_per_table_max: self.columns_per_table_max,
            },
            ..flotilla_ddl::DdlConfig::default()
        }
    }
}

/// Configuration of `flotilla standalone`: a TOML file, overridden by flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StandaloneConfig {
    /// Where data lives (default `./flotilla-data`).
    pub data_dir: PathBuf,
    /// PostgreSQL protocol listen address (default 127.0.0.1:5434, beside PostgreSQL's 5432).
    pub sql_addr: SocketAddr,
    /// HTTP listen address for /metrics and /status (default 127.0.0.1:8434).
    pub http_addr: SocketAddr,
    /// SQL limits.
    pub sql: SqlSection,
    /// Storage settings.
    pub storage: StorageSection,
    /// DDL job queue bounds.
    pub ddl: DdlSection,
    /// Garbage collection of old row versions.
    pub gc: GcSection,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("flotilla-data"),
            sql_addr: "127.0.0.1:5434".parse().expect("valid address"),
            http_addr: "127.0.0.1:8434".parse().expect("valid address"),
            sql: SqlSection::default(),
            storage: StorageSection::default(),
            ddl: DdlSection::default(),
            gc: GcSection::default(),
        }
    }
}

impl StandaloneConfig {
    /// Reads a TOML configuration file; absent keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "data_dir = \"/x\"\n[sql]\nmax_connections = 3\n").unwrap();
        let c = StandaloneConfig::from_file(&path).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.sql.max_connections, 3);
        assert_eq!(c.sql_addr, StandaloneConfig::default().sql_addr);
        std::fs::write(
            &path,
            "[ddl]\njobs_max = 9\nrunning_max = 2\nschema_wait_timeout_ms = 250\ncleanup_records_per_s = 7\n",
        )
        .unwrap();
        let ddl = StandaloneConfig::from_file(&path).unwrap().ddl.to_config();
        assert_eq!(
            (ddl.jobs_max, ddl.running_max, ddl.schema_wait_timeout),
            (9, 2, std::time::Duration::from_millis(250))
        );
        assert_eq!(ddl.cleanup_records_per_s, 7);
        assert_eq!(
            ddl.backfill_rows_per_s, 5_000,
            "an unset key keeps its default"
        );
        std::fs::write(&path, "no_such_key = 1\n").unwrap();
        assert!(matches!(
            StandaloneConfig::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn gc_settings_have_defaults_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        let gc = StandaloneConfig::default().gc.to_config().unwrap();
        assert_eq!(gc.life_time, std::time::Duration::from_secs(600));
        assert_eq!(gc.run_interval, std::time::Duration::from_secs(60));
        std::fs::write(&path, "[gc]\nlife_time_s = 0\nbatch_records_max = 10\n").unwrap();
        let gc = StandaloneConfig::from_file(&path)
            .unwrap()
            .gc
            .to_config()
            .unwrap();
        assert!(gc.life_time.is_zero(), "0 turns GC off");
        assert_eq!(gc.batch_records_max, 10);
        std::fs::write(&path, "[gc]\nbatch_records_max = 0\n").unwrap();
        let err = StandaloneConfig::from_file(&path)
            .unwrap()
            .gc
            .to_config()
            .unwrap_err();
        assert!(err.contains("gc.batch_records_max"), "{err}");
        std::fs::write(&path, "[gc]\nlifetime = 5\n").unwrap();
        assert!(matches!(
            StandaloneConfig::from_file(&path),
            Err(ConfigError::Parse { .. })
        ));
    }
}
