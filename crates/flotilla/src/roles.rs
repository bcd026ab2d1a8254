//! `flotilla meta`, `flotilla store` and `flotilla sql`: one role per process. Each takes
//! flags and, with `--config FILE`, a TOML file with the same settings (flags win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flotilla_meta::{MetaConfig, MetaNode};
use flotilla_server::{SqlNode, SqlNodeConfig, StoreNode, StoreNodeConfig};
use serde::Deserialize;

/// Parses `1=host:port,2=host:port`.
pub fn parse_members(s: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("member {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.parse().with_context(|| format!("member id {id:?}"))?;
        if id == 0 {
            bail!("member ids start at 1");
        }
        out.push((id, addr.to_string()));
    }
    if out.is_empty() {
        bail!("no meta member given");
    }
    Ok(out)
}

/// Parses `host:port,host:port`.
pub fn parse_endpoints(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// A label key or value: letters, digits, `-`, `_` and `.`, as a zone or host name is.
fn check_label_word(what: &str, word: &str) -> anyhow::Result<()> {
    let ok = !word.is_empty()
        && word.len() <= 64
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    anyhow::ensure!(
        ok,
        "{what} {word:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
    );
    Ok(())
}

/// Parses a store's labels, `zone=eu-1,host=h7`.
pub fn parse_labels(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut labels: Vec<(String, String)> = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .with_context(|| format!("label {part:?} is not KEY=VALUE"))?;
        check_label_word("label key", key)?;
        check_label_word("label value", value)?;
        if labels.iter().any(|(k, _)| k == key) {
            bail!("label {key:?} is given twice");
        }
        labels.push((key.to_string(), value.to_string()));
    }
    Ok(labels)
}

/// Parses the meta service's location labels, outermost first: `zone,rack,host`.
pub fn parse_location_labels(s: &str) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    for key in s.split(',').filter(|p| !p.is_empty()) {
        check_label_word("location label", key)?;
        if keys.iter().any(|k| k == key) {
            bail!("location label {key:?} is given twice");
        }
        keys.push(key.to_string());
    }
    Ok(keys)
}

/// Reads a role's TOML file; unknown keys are errors, so a typo is not silently ignored.
/// The cluster version a node reports: its build's, or the one `--emulate-binary-version`
/// names (no newer than its build's, at least the base).
fn binary_version(emulate: Option<u32>) -> anyhow::Result<u32> {
    use flotilla_types::version::{BINARY_CLUSTER_VERSION, CLUSTER_VERSION_BASE};
    match emulate {
        None => Ok(BINARY_CLUSTER_VERSION),
        Some(v) if (CLUSTER_VERSION_BASE..=BINARY_CLUSTER_VERSION).contains(&v) => Ok(v),
        Some(v) => anyhow::bail!(
            "--emulate-binary-version {v}: this build emulates versions \
             {CLUSTER_VERSION_BASE} to {BINARY_CLUSTER_VERSION}"
        ),
    }
}

fn load<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[derive(clap::Args)]
pub struct MetaArgs {
    /// TOML file with these settings (id, members, addr, data_dir, replication,
    /// leader_balance_interval_ms, replica_repair_after_s, replica_repairs_max,
    /// replica_balance_interval_ms, replica_moves_max, location_labels, ddl_jobs_max,
    /// ddl_running_max, ddl_finished_ttl_s, ddl_backfill_rows_per_s,
    /// ddl_cleanup_records_per_s, ddl_schema_lease_ms, ddl_schema_wait_timeout_ms,
    /// ddl_relations_max, ddl_columns_per_table_max,
    /// raft_chunked_message_bytes_max, region_merge_after_s, region_merges_max,
    /// scan_regions_page_max); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This member's id (1-based) [default: 1].
    #[arg(long)]
    pub id: Option<u64>,
    /// Every member as ID=HOST:PORT, comma-separated [default: 1=127.0.0.1:2379].
    #[arg(long, value_name = "MEMBERS")]
    pub members: Option<String>,
    /// Listen address [default: this member's address in --members].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Data directory [default: ./flotilla-meta-ID].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replicas per region [default: 3].
    #[arg(long)]
    pub replication: Option<usize>,
    /// Leader balance: at most one leader transfer per this many milliseconds, asked of
    /// a store leading two or more regions more than another; 0 turns it off
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub leader_balance_interval_ms: Option<u64>,
    /// Replica repair: a region's replica on a store silent this many seconds is replaced
    /// by one on a live store without one; 0 turns it off [default: 1800].
    #[arg(long, value_name = "SECONDS")]
    pub replica_repair_after_s: Option<u64>,
    /// Replica repair steps in progress at once, cluster-wide [default: 4].
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    pub replica_repairs_max: Option<u64>,
    /// Replica balance: at most one replica move started per this many milliseconds,
    /// from the store holding the most replicas to a live one holding two or more fewer
    /// (a store added to the cluster fills up this way); 0 turns it off [default: 1000].
    #[arg(long, value_name = "MS")]
    pub replica_balance_interval_ms: Option<u64>,
    /// Replica moves in progress at once, cluster-wide (a store receives one at a time)
    /// [default: 4].
    #[arg(long, value_name = "MOVES", value_parser = clap::value_parser!(u64).range(1..))]
    pub replica_moves_max: Option<u64>,
    /// Region merge: a region whose range has held no live table's keys for this many
    /// seconds (a dropped or truncated table's, once its data is deleted) is folded into
    /// its left neighbour; 0 turns merge off [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub region_merge_after_s: Option<u64>,
    /// Region merges under way at once, cluster-wide [default: 4].
    #[arg(long, value_name = "MERGES", value_parser = clap::value_parser!(u64).range(1..))]
    pub region_merges_max: Option<u64>,
    /// Regions one answer to a region scan holds at most; clients (`flotilla ctl regions`)
    /// ask page after page [default: 4096].
    #[arg(long, value_name = "REGIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub scan_regions_page_max: Option<u64>,
    /// Store label keys each region's replicas are spread over, outermost first, e.g.
    /// `zone,host`: a region's replicas go to different zones as far as the stores
    /// allow, then to different hosts (each store says where it is with `flotilla store
    /// --labels`) [default: none: every store is a location of its own].
    #[arg(long, value_name = "KEY,...")]
    pub location_labels: Option<String>,
    /// Most DDL jobs queued or running; more are refused at once with SQLSTATE 53000
    /// [default: 128].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ddl_jobs_max: Option<u64>,
    /// DDL jobs whose steps run at once (on different tables) [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ddl_running_max: Option<u64>,
    /// Seconds a finished DDL job's record is kept for SHOW DDL JOBS [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub ddl_finished_ttl_s: Option<u64>,
    /// Rows an index backfill writes per second at most; 0 = no limit [default: 5000].
    #[arg(long, value_name = "ROWS")]
    pub ddl_backfill_rows_per_s: Option<u64>,
    /// Records per second at most that the deletion of dropped tables' and indexes' data
    /// removes; 0 = no limit [default: 20000].
    #[arg(long, value_name = "RECORDS")]
    pub ddl_cleanup_records_per_s: Option<u64>,
    /// Most tables, views, sequences and indexes the catalog holds; past it CREATE fails
    /// with SQLSTATE 54000 [default: 10000].
    #[arg(long, value_name = "N")]
    pub ddl_relations_max: Option<u64>,
    /// Most columns of one table; past it CREATE or ALTER fails with SQLSTATE 54011
    /// [default: 1600].
    #[arg(long, value_name = "N")]
    pub ddl_columns_per_table_max: Option<u64>,
    /// SQL nodes' schema lease, in milliseconds: a node that cannot renew it for this long
    /// refuses queries, and schema changes stop waiting for it [default: 10000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..))]
    pub ddl_schema_lease_ms: Option<u64>,
    /// How long one step of a schema change waits for every SQL node to use its new
    /// version before it fails retryably (and is retried), in milliseconds
    /// [default: 10000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ddl_schema_wait_timeout_ms: Option<u64>,
    /// Seconds a replaced row version stays readable before garbage collection may remove
    /// it (never one an open transaction reads); 0 turns GC off [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub gc_life_time_s: Option<u64>,
    /// Seconds between moves of the GC safe point [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_run_interval_s: Option<u64>,
    /// Largest single Raft message (a snapshot of the group's or a region's state) sent
    /// to or taken from a peer, in pieces; one larger is refused and the peer it was for
    /// stays behind. Set the same on every node [default: 2147483648].
    #[arg(long, value_name = "BYTES")]
    pub raft_chunked_message_bytes_max: Option<usize>,
    /// Testing only: report this older cluster version and behave on the wire as a build
    /// of it would (rolling-upgrade tests; 1 = a build from before versions).
    #[arg(long, value_name = "VERSION", hide = true)]
    pub emulate_binary_version: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    id: Option<u64>,
    members: Option<String>,
    addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    replication: Option<usize>,
    leader_balance_interval_ms: Option<u64>,
    replica_repair_after_s: Option<u64>,
    replica_repairs_max: Option<u64>,
    replica_balance_interval_ms: Option<u64>,
    replica_moves_max: Option<u64>,
    region_merge_after_s: Option<u64>,
    region_merges_max: Option<u64>,
    scan_regions_page_max: Option<u64>,
    location_labels: Option<String>,
    ddl_jobs_max: Option<u64>,
    ddl_running_max: Option<u64>,
    ddl_finished_ttl_s: Option<u64>,
    ddl_backfill_rows_per_s: Option<u64>,
    ddl_cleanup_records_per_s: Option<u64>,
    ddl_relations_max: Option<u64>,
    ddl_columns_per_table_max: Option<u64>,
    ddl_schema_lease_ms: Option<u64>,
    ddl_schema_wait_timeout_ms: Option<u64>,
    gc_life_time_s: Option<u64>,
    gc_run_interval_s: Option<u64>,
    raft_chunked_message_bytes_max: Option<usize>,
}

pub async fn run_meta(args: MetaArgs) -> anyhow::Result<()> {
    let file: MetaFile = load(args.config.as_deref())?;
    let id = args.id.or(file.id).unwrap_or(1);
    let members = parse_members(
        args.members
            .as_deref()
            .or(file.members.as_deref())
            .unwrap_or("1=127.0.0.1:2379"),
    )?;
    let own = members
        .iter()
        .find(|(m, _)| *m == id)
        .map(|(_, a)| a.clone())
        .with_context(|| format!("member {id} is not in the member list"))?;
    let addr: SocketAddr = match args.addr.or(file.addr) {
        Some(a) => a,
        None => own
            .parse()
            .with_context(|| format!("member address {own:?}"))?,
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(format!("flotilla-meta-{id}")));
    let mut cfg = MetaConfig::new(id, members, data_dir);
    cfg.binary_version = binary_version(args.emulate_binary_version)?;
    cfg.replication = args.replication.or(file.replication).unwrap_or(3);
    if let Some(ms) = args
        .leader_balance_interval_ms
        .or(file.leader_balance_interval_ms)
    {
        cfg.leader_balance_interval = std::time::Duration::from_millis(ms);
    }
    if let Some(s) = args.replica_repair_after_s.or(file.replica_repair_after_s) {
        cfg.replica_repair_after = std::time::Duration::from_secs(s);
    }
    if let Some(n) = args.replica_repairs_max.or(file.replica_repairs_max) {
        cfg.replica_repairs_max = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    if let Some(ms) = args
        .replica_balance_interval_ms
        .or(file.replica_balance_interval_ms)
    {
        cfg.replica_balance_interval = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = args.replica_moves_max.or(file.replica_moves_max) {
        cfg.replica_moves_max = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    if let Some(s) = args.region_merge_after_s.or(file.region_merge_after_s) {
        cfg.region_merge_after = std::time::Duration::from_secs(s);
    }
    if let Some(n) = args.region_merges_max.or(file.region_merges_max) {
        cfg.region_merges_max = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    if let Some(n) = args.scan_regions_page_max.or(file.scan_regions_page_max) {
        anyhow::ensure!(n >= 1, "scan_regions_page_max must be at least 1");
        cfg.scan_regions_page_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(keys) = args.location_labels.or(file.location_labels) {
        cfg.location_labels = parse_location_labels(&keys)?;
    }
    if let Some(n) = args.ddl_jobs_max.or(file.ddl_jobs_max) {
        cfg.ddl.jobs_max = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    if let Some(n) = args.ddl_running_max.or(file.ddl_running_max) {
        cfg.ddl.running_max = usize::try_from(n).unwrap_or(usize::MAX).max(1);
    }
    if let Some(ms) = args
        .ddl_schema_wait_timeout_ms
        .or(file.ddl_schema_wait_timeout_ms)
    {
        cfg.ddl.schema_wait_timeout = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(s) = args.ddl_finished_ttl_s.or(file.ddl_finished_ttl_s) {
        cfg.ddl.finished_ttl = std::time::Duration::from_secs(s);
    }
    if let Some(r) = args
        .ddl_backfill_rows_per_s
        .or(file.ddl_backfill_rows_per_s)
    {
        cfg.ddl.backfill_rows_per_s = r;
    }
    if let Some(r) = args
        .ddl_cleanup_records_per_s
        .or(file.ddl_cleanup_records_per_s)
    {
        cfg.ddl.cleanup_records_per_s = r;
    }
    if let Some(n) = args.ddl_relations_max.or(file.ddl_relations_max) {
        cfg.ddl.catalog.relations_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = args
        .ddl_columns_per_table_max
        .or(file.ddl_columns_per_table_max)
    {
        cfg.ddl.catalog.columns_per_table_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(s) = args.gc_life_time_s.or(file.gc_life_time_s) {
        cfg.gc_life_time = std::time::Duration::from_secs(s);
    }
    if let Some(s) = args.gc_run_interval_s.or(file.gc_run_interval_s) {
        anyhow::ensure!(s >= 1, "gc_run_interval_s must be at least 1");
        cfg.gc_run_interval = std::time::Duration::from_secs(s);
    }
    if let Some(ms) = args.ddl_schema_lease_ms.or(file.ddl_schema_lease_ms) {
        cfg.ddl.schema_lease = std::time::Duration::from_millis(ms);
    }
    if let Some(bytes) = args
        .raft_chunked_message_bytes_max
        .or(file.raft_chunked_message_bytes_max)
    {
        cfg.raft_limits.chunked_message_bytes_max = bytes;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // The index backfill of DDL jobs reaches the stores as a SQL node does, routed by the
    // meta group itself.
    let endpoints = cfg.members.iter().map(|(_, a)| a.clone()).collect();
    let reorg = flotilla_server::cluster_reorg(endpoints, flotilla_client::ClientConfig::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let node = MetaNode::start_with_reorg(cfg, listener, Some(reorg)).await?;
    println!("flotilla meta {id} serving on {}", node.addr());
    if crate::wait_for_signal().await == crate::StopSignal::Terminate {
        node.hand_over_leadership().await;
    }
    node.stop().await;
    Ok(())
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// TOML file with these settings (addr, advertise_addr, meta, data_dir, labels,
    /// region_split_keys, raft_entry_cache_bytes, raft_log_keep_for_lagging_entries,
    /// raft_snapshot_build_queue, raft_snapshot_apply_queue, raft_checksum_queue,
    /// merge_checks_max, raft_chunked_message_bytes_max, memory_locks_region_bytes_max,
    /// memory_locks_store_bytes_max, kv_in_flight_max, scans_in_flight_max); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:20160].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Address others reach this store at [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// Meta endpoints, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub meta: Option<String>,
    /// Data directory [default: ./flotilla-store].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where this store is, as KEY=VALUE pairs, e.g. `zone=eu-1,host=h7`: the meta
    /// service spreads each region's replicas over the keys it is given with `flotilla
    /// meta --location-labels` [default: none].
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub labels: Option<String>,
    /// A region with more keys than this splits [default: 200000].
    #[arg(long)]
    pub region_split_keys: Option<u64>,
    /// Bytes of each region's newest Raft log entries kept in memory, so applying them
    /// does not read the log back from disk; 0 turns the cache off [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub raft_entry_cache_bytes: Option<u64>,
    /// A region's leader keeps the Raft log entries a follower at most this many entries
    /// behind still needs (a store that is down or restarting included), so it catches
    /// up from the log; one further behind gets a snapshot of the whole region
    /// [default: 65536].
    #[arg(long, value_name = "ENTRIES")]
    pub raft_log_keep_for_lagging_entries: Option<u64>,
    /// Region snapshots (for followers too far behind the log) that may wait for the
    /// store's snapshot thread; past it a follower is served on a later try. 0 builds
    /// them on the store thread, which stalls every region of the store meanwhile
    /// [default: 16].
    #[arg(long, value_name = "SNAPSHOTS")]
    pub raft_snapshot_build_queue: Option<usize>,
    /// Received region snapshots whose data the store's snapshot writer thread holds at
    /// once (each whole in memory); past it a snapshot is dropped and its leader sends it
    /// again later. 0 writes them on the store thread, which stalls every region of the
    /// store meanwhile [default: 4].
    #[arg(long, value_name = "SNAPSHOTS")]
    pub raft_snapshot_apply_queue: Option<usize>,
    /// Region checksums (`flotilla ctl check-replicas`) that may wait for the store's
    /// checksum thread; past it a replica answers a retryable error for that checksum
    /// and `check-replicas` reports the region unchecked [default: 8].
    #[arg(long, value_name = "CHECKSUMS", value_parser = clap::value_parser!(u64).range(1..))]
    pub raft_checksum_queue: Option<u64>,
    /// Checks that a region frozen for a merge holds no data (each a scan of the region
    /// off the async threads) running at once on this store; past it a region is checked
    /// at a later heartbeat [default: 2].
    #[arg(long, value_name = "CHECKS", value_parser = clap::value_parser!(u64).range(1..))]
    pub merge_checks_max: Option<u64>,
    /// Old row versions garbage collection removes per second at most, on this store;
    /// 0 = no limit [default: 50000].
    #[arg(long, value_name = "RECORDS")]
    pub gc_records_per_s: Option<u64>,
    /// Records one garbage-collection step removes at most (one Raft write)
    /// [default: 4096].
    #[arg(long, value_name = "RECORDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_batch_records_max: Option<u64>,
    /// Seconds after which a prewrite lock whose TTL has lapsed is resolved by the store
    /// leading its region (its coordinator most likely died) [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub gc_resolve_locks_after_s: Option<u64>,
    /// Abandoned locks the store resolves per heartbeat at most; 0 = none [default: 256].
    #[arg(long, value_name = "LOCKS")]
    pub gc_resolve_locks_max: Option<usize>,
    /// Largest single Raft message (a snapshot of the group's or a region's state) sent
    /// to or taken from a peer, in pieces; one larger is refused and the peer it was for
    /// stays behind. Set the same on every node [default: 2147483648].
    #[arg(long, value_name = "BYTES")]
    pub raft_chunked_message_bytes_max: Option<usize>,
    /// Bytes of locks a region led here keeps only in memory (pessimistic locks, and
    /// prewrite locks of transactions that commit in one batch); past it, its new locks
    /// are written through Raft instead: slower, never refused [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub memory_locks_region_bytes_max: Option<usize>,
    /// The same bound for all the regions of this store together
    /// [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    pub memory_locks_store_bytes_max: Option<usize>,
    /// Transaction commands all clients together may have in progress on this store;
    /// past it, the store reads no more commands until one is answered. A command waiting
    /// for a lock holds its place for up to 5 s [default: 16384].
    #[arg(long, value_name = "COMMANDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub kv_in_flight_max: Option<u64>,
    /// Scans in progress on this store at once, each answer up to 16 MiB; past it, a scan
    /// waits for one to finish [default: 32].
    #[arg(long, value_name = "SCANS", value_parser = clap::value_parser!(u64).range(1..))]
    pub scans_in_flight_max: Option<u64>,
    /// Testing only: report this older cluster version and behave on the wire as a build
    /// of it would (rolling-upgrade tests; 1 = a build from before versions).
    #[arg(long, value_name = "VERSION", hide = true)]
    pub emulate_binary_version: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    addr: Option<SocketAddr>,
    advertise_addr: Option<String>,
    meta: Option<String>,
    data_dir: Option<PathBuf>,
    labels: Option<String>,
    region_split_keys: Option<u64>,
    raft_entry_cache_bytes: Option<u64>,
    raft_log_keep_for_lagging_entries: Option<u64>,
    raft_snapshot_build_queue: Option<usize>,
    raft_snapshot_apply_queue: Option<usize>,
    raft_checksum_queue: Option<u64>,
    merge_checks_max: Option<u64>,
    gc_records_per_s: Option<u64>,
    gc_batch_records_max: Option<u64>,
    gc_resolve_locks_after_s: Option<u64>,
    gc_resolve_locks_max: Option<usize>,
    raft_chunked_message_bytes_max: Option<usize>,
    memory_locks_region_bytes_max: Option<usize>,
    memory_locks_store_bytes_max: Option<usize>,
    kv_in_flight_max: Option<u64>,
    scans_in_flight_max: Option<u64>,
}

pub async fn run_store(args: StoreArgs) -> anyhow::Result<()> {
    let file: StoreFile = load(args.config.as_deref())?;
    let addr = args
        .addr
        .or(file.addr)
        .unwrap_or_else(|| "127.0.0.1:20160".parse().expect("valid address"));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let advertise = args
        .advertise_addr
        .or(file.advertise_addr)
        .unwrap_or_else(|| {
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        });
    let meta = args
        .meta
        .or(file.meta)
        .unwrap_or_else(|| "127.0.0.1:2379".into());
    let mut cfg = StoreNodeConfig::new(
        args.data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("flotilla-store")),
        advertise,
        parse_endpoints(&meta),
    );
    cfg.binary_version = binary_version(args.emulate_binary_version)?;
    if let Some(labels) = args.labels.or(file.labels) {
        cfg.labels = parse_labels(&labels)?;
    }
    if let Some(keys) = args.region_split_keys.or(file.region_split_keys) {
        cfg.region_split_keys = keys;
        cfg.split_check_written_keys = (keys / 10).max(1);
    }
    if let Some(bytes) = args.raft_entry_cache_bytes.or(file.raft_entry_cache_bytes) {
        cfg.raft_entry_cache_bytes = bytes;
    }
    if let Some(entries) = args
        .raft_log_keep_for_lagging_entries
        .or(file.raft_log_keep_for_lagging_entries)
    {
        cfg.raft_log_keep_for_lagging_entries = entries;
    }
    if let Some(queue) = args
        .raft_snapshot_build_queue
        .or(file.raft_snapshot_build_queue)
    {
        cfg.raft_snapshot_build_queue = queue;
    }
    if let Some(queue) = args
        .raft_snapshot_apply_queue
        .or(file.raft_snapshot_apply_queue)
    {
        cfg.raft_snapshot_apply_queue = queue;
    }
    if let Some(queue) = args.raft_checksum_queue.or(file.raft_checksum_queue) {
        anyhow::ensure!(queue >= 1, "raft_checksum_queue must be at least 1");
        cfg.raft_checksum_queue = usize::try_from(queue).unwrap_or(usize::MAX);
    }
    if let Some(n) = args.merge_checks_max.or(file.merge_checks_max) {
        anyhow::ensure!(n >= 1, "merge_checks_max must be at least 1");
        cfg.merge_checks_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(r) = args.gc_records_per_s.or(file.gc_records_per_s) {
        cfg.gc_records_per_s = r;
    }
    if let Some(n) = args.gc_batch_records_max.or(file.gc_batch_records_max) {
        anyhow::ensure!(n >= 1, "gc_batch_records_max must be at least 1");
        cfg.gc_batch_records_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(s) = args
        .gc_resolve_locks_after_s
        .or(file.gc_resolve_locks_after_s)
    {
        cfg.gc_resolve_locks_after = std::time::Duration::from_secs(s);
    }
    if let Some(n) = args.gc_resolve_locks_max.or(file.gc_resolve_locks_max) {
        cfg.gc_resolve_locks_max = n;
    }
    if let Some(bytes) = args
        .raft_chunked_message_bytes_max
        .or(file.raft_chunked_message_bytes_max)
    {
        cfg.raft_limits.chunked_message_bytes_max = bytes;
    }
    if let Some(bytes) = args
        .memory_locks_region_bytes_max
        .or(file.memory_locks_region_bytes_max)
    {
        cfg.memory_locks_region_bytes_max = bytes;
    }
    if let Some(bytes) = args
        .memory_locks_store_bytes_max
        .or(file.memory_locks_store_bytes_max)
    {
        cfg.memory_locks_store_bytes_max = bytes;
    }
    if let Some(n) = args.kv_in_flight_max.or(file.kv_in_flight_max) {
        anyhow::ensure!(n >= 1, "kv_in_flight_max must be at least 1");
        cfg.kv_in_flight_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = args.scans_in_flight_max.or(file.scans_in_flight_max) {
        anyhow::ensure!(n >= 1, "scans_in_flight_max must be at least 1");
        cfg.scans_in_flight_max = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let node = StoreNode::start(cfg, listener).await?;
    println!(
        "flotilla store {} serving on {}",
        node.store_id(),
        node.addr()
    );
    if crate::wait_for_signal().await == crate::StopSignal::Terminate {
        node.evict_leaders(LEADER_EVICTION_TIMEOUT).await;
    }
    node.stop().await;
    Ok(())
}

/// How long a store stopped by SIGTERM spends handing its regions' leadership to other
/// stores before it stops regardless.
const LEADER_EVICTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(clap::Args)]
pub struct SqlArgs {
    /// TOML file with these settings (addr, meta) and a `[sql]` section of limits as the
    /// standalone's; flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL protocol listen address [default: 127.0.0.1:5434].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Meta endpoints, comma-separated [default: 127.0.0.1:2379].
    #[arg(long, value_name = "HOST:PORT,...")]
    pub meta: Option<String>,
    /// Testing only: report this older cluster version and behave on the wire as a build
    /// of it would (rolling-upgrade tests; 1 = a build from before versions).
    #[arg(long, value_name = "VERSION", hide = true)]
    pub emulate_binary_version: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SqlFile {
    addr: Option<SocketAddr>,
    meta: Option<String>,
    /// The SQL limits, as the standalone's `[sql]` section (its defaults when absent).
    #[serde(default)]
    sql: flotilla_server::SqlSection,
}

impl SqlFile {
    /// The node's configuration: these limits, over the meta service at `meta`.
    fn node_config(&self, meta: &str) -> SqlNodeConfig {
        let mut config = SqlNodeConfig::new(parse_endpoints(meta));
        config.sql = self.sql.sql_config();
        config.pg = self.sql.pg_config();
        config
    }
}

pub async fn run_sql(args: SqlArgs) -> anyhow::Result<()> {
    let file: SqlFile = load(args.config.as_deref())?;
    let addr = args
        .addr
        .or(file.addr)
        .unwrap_or_else(|| "127.0.0.1:5434".parse().expect("valid address"));
    let meta = args
        .meta
        .or(file.meta.clone())
        .unwrap_or_else(|| "127.0.0.1:2379".into());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let mut config = file.node_config(&meta);
    config.sql.binary_version = binary_version(args.emulate_binary_version)?;
    let node = SqlNode::start(config, listener).await?;
    println!("flotilla sql serving PostgreSQL on {}", node.addr());
    println!(
        "connect with: psql -h {} -p {} -U postgres postgres",
        node.addr().ip(),
        node.addr().port()
    );
    crate::wait_for_signal().await;
    node.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sql_node_takes_the_sql_limits_of_its_config_file() {
        let file: SqlFile = toml::from_str(
            "meta = \"127.0.0.1:2379\"\n[sql]\nsavepoints_max = 3\nmax_connections = 7\nportals_max = 5\nresult_bytes_max = 9\nmessage_bytes_max = 11\n",
        )
        .unwrap();
        let config = file.node_config("127.0.0.1:2379");
        assert_eq!(config.sql.savepoints_max, 3);
        assert_eq!(config.pg.max_connections, 7);
        assert_eq!(config.pg.portals_max, 5);
        assert_eq!(config.pg.message_bytes_max, 11);
        assert_eq!(config.sql.result_bytes_max, 9);
        // Unset limits keep their defaults; an unknown one is refused.
        assert_eq!(
            config.sql.rows_per_query_max,
            flotilla_server::SqlSection::default().rows_per_query_max
        );
        let bad = toml::from_str::<SqlFile>("[sql]\nsavepoint_max = 3\n");
        assert!(bad.is_err());
    }

    #[test]
    fn labels_parse_and_bad_ones_are_refused_with_what_is_wrong() {
        assert_eq!(
            parse_labels("zone=eu-1,host=h7").unwrap(),
            vec![
                ("zone".to_string(), "eu-1".to_string()),
                ("host".to_string(), "h7".to_string())
            ]
        );
        assert!(parse_labels("").unwrap().is_empty());
        for (bad, says) in [
            ("zone", "not KEY=VALUE"),
            ("zone=", "label value"),
            ("=a", "label key"),
            ("zone=a b", "label value"),
            ("zone=a,zone=b", "given twice"),
        ] {
            let e = parse_labels(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_location_labels("zone,rack,host").unwrap(),
            vec!["zone", "rack", "host"]
        );
        let e = parse_location_labels("zone,zone").unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        let e = parse_location_labels("zo ne").unwrap_err().to_string();
        assert!(e.contains("location label"), "{e}");
    }
}
