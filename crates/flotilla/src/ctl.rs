//! `flotilla ctl`: look at a running cluster through its meta service.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_client::{ClientConfig, MetaClient, channel_to};
use flotilla_proto::kvpb::ReplicaChecksumRequest;
use flotilla_proto::kvpb::store_client::StoreClient;
use flotilla_proto::metapb::{PeerRole, Region, StoreState};

use crate::roles::parse_endpoints;

#[derive(clap::Args)]
pub struct CtlArgs {
    /// Meta endpoints, comma-separated.
    #[arg(long, value_name = "HOST:PORT,...", default_value = "127.0.0.1:2379")]
    pub meta: String,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(clap::Subcommand)]
pub enum CtlCommand {
    /// Stores: state, capacity, region and leader counts.
    Stores,
    /// Regions: range, epoch, peers, leader.
    Regions,
    /// The cluster version (the newest behaviour every node understands; it rises by
    /// itself once every node runs a newer build, and never goes back) and the nodes that
    /// hold it where it is.
    Version,
    /// Compares a checksum of every region's replicas, taken at one Raft log index;
    /// exits non-zero if any differ.
    CheckReplicas,
    /// Removes a store from the cluster (scale-in): its replicas move to the other stores,
    /// after which `stores` shows it as removed and it may be shut down. Refused when
    /// fewer stores than the replication factor would stay.
    RemoveStore {
        /// The store's id (see `stores`).
        store_id: u64,
    },
    /// Puts a store being removed back in service: no more of its replicas move away
    /// (moves already under way finish). Refused for a store removed already.
    CancelRemoveStore {
        /// The store's id (see `stores`).
        store_id: u64,
    },
}

/// How far behind now the GC safe point a store has installed is, as "42s ago" ("-":
/// none yet).
fn gc_safe_point_age(ts: u64) -> String {
    if ts == 0 {
        return "-".into();
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let age_s = now_ms.saturating_sub(flotilla_types::Timestamp(ts).physical_ms()) / 1000;
    format!("{age_s}s ago")
}

fn gib(bytes: u64) -> String {
    format!("{:.1}GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn peers(r: &Region) -> String {
    r.peers
        .iter()
        .map(|p| {
            // Voters plain; a replica being added or moved away says what it is.
            let role = match p.role() {
                PeerRole::Voter => "",
                PeerRole::Learner => "(learner)",
                PeerRole::IncomingVoter => "(incoming)",
                PeerRole::DemotingVoter => "(demoting)",
            };
            format!("{}@{}{role}", p.id, p.store_id)
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let cfg = ClientConfig {
        retry_budget: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let meta = MetaClient::new(parse_endpoints(&args.meta), cfg.clone())?;
    match args.command {
        CtlCommand::Stores => {
            println!(
                "{:>6}  {:<22} {:<7} {:>10} {:>10} {:>8} {:>8} {:>14} {:>12} {:>7}  labels",
                "store",
                "address",
                "state",
                "capacity",
                "available",
                "regions",
                "leaders",
                "heartbeat_ago",
                "gc_safe_point",
                "version"
            );
            for s in meta.get_stores(0).await? {
                let store = s.store.unwrap_or_default();
                let stats = s.stats.unwrap_or_default();
                let up = s.last_heartbeat_ago_ms < 10_000;
                let state = match (store.state(), up) {
                    (StoreState::Tombstone, _) => "removed",
                    (StoreState::Offline, _) => "offline",
                    (StoreState::Up, true) => "up",
                    (StoreState::Up, false) => "down",
                };
                let labels: Vec<String> = store
                    .labels
                    .iter()
                    .map(|l| format!("{}={}", l.key, l.value))
                    .collect();
                println!(
                    "{:>6}  {:<22} {:<7} {:>10} {:>10} {:>8} {:>8} {:>12}ms {:>12} {:>7}  {}",
                    store.id,
                    store.address,
                    state,
                    gib(stats.capacity_bytes),
                    gib(stats.available_bytes),
                    stats.region_count,
                    stats.leader_count,
                    if s.last_heartbeat_ago_ms == u64::MAX {
                        0
                    } else {
                        s.last_heartbeat_ago_ms
                    },
                    gc_safe_point_age(stats.gc.map_or(0, |gc| gc.safe_point_installed)),
                    // The cluster version its build understands ("-": not heard from).
                    s.binary_version.map_or("-".to_string(), |v| v.to_string()),
                    labels.join(","),
                );
            }
        }
        CtlCommand::Version => {
            let (version, held_by) = meta.cluster_version().await?;
            let version = flotilla_types::version::reported(version);
            println!("cluster version: {version}");
            if held_by.is_empty() {
                println!("every node runs a build of the newest version the meta leader knows");
            }
            for node in held_by {
                println!("held by: {node}");
            }
        }
        CtlCommand::Regions => {
            println!(
                "{:>7}  {:<24} {:<24} {:>5} {:>7}  {:<24} {:>7}",
                "region", "start", "end", "conf", "version", "peers(id@store)", "leader"
            );
            for info in meta.scan_regions(b"", b"", 0).await? {
                let r = info.region.unwrap_or_default();
                let e = r.epoch.unwrap_or_default();
                println!(
                    "{:>7}  {:<24} {:<24} {:>5} {:>7}  {:<24} {:>7}",
                    r.id,
                    hex(&r.start_key),
                    hex(&r.end_key),
                    e.conf_ver,
                    e.version,
                    peers(&r),
                    info.leader
                        .map(|p| p.store_id.to_string())
                        .unwrap_or("-".into())
                );
            }
        }
        CtlCommand::RemoveStore { store_id } => {
            let info = meta
                .remove_store(store_id)
                .await
                .with_context(|| format!("removing store {store_id}"))?;
            let store = info.store.unwrap_or_default();
            match store.state() {
                StoreState::Tombstone => println!("store {store_id} is removed"),
                _ => println!(
                    "store {store_id} is being removed: its replicas move to the other stores; \
                     `ctl stores` shows it as removed once they have"
                ),
            }
        }
        CtlCommand::CancelRemoveStore { store_id } => {
            meta.cancel_store_removal(store_id)
                .await
                .with_context(|| format!("cancelling the removal of store {store_id}"))?;
            println!("store {store_id} is in service");
        }
        CtlCommand::CheckReplicas => {
            let stores: std::collections::HashMap<u64, String> = meta
                .get_stores(0)
                .await?
                .into_iter()
                .filter_map(|s| s.store)
                .map(|s| (s.id, s.address))
                .collect();
            let mut bad = 0;
            let regions = meta.scan_regions(b"", b"", 0).await?;
            for info in &regions {
                let r = info.region.clone().unwrap_or_default();
                match check_region(&r, info.leader.map(|p| p.store_id), &stores, &cfg).await {
                    Ok(line) => println!("region {:>5}: {line}", r.id),
                    Err(e) => {
                        bad += 1;
                        println!("region {:>5}: MISMATCH OR UNCHECKED: {e:#}", r.id);
                    }
                }
            }
            if bad > 0 {
                bail!(
                    "{bad} of {} regions have replicas that differ or could not be checked",
                    regions.len()
                );
            }
            println!("all {} regions: replicas identical", regions.len());
        }
    }
    Ok(())
}

async fn checksum(
    addr: &str,
    region_id: u64,
    at_index: u64,
    cfg: &ClientConfig,
) -> anyhow::Result<(u64, u64, u64)> {
    let mut client = StoreClient::new(channel_to(addr, cfg)?);
    let r = client
        .replica_checksum(ReplicaChecksumRequest {
            region_id,
            at_index,
        })
        .await?
        .into_inner();
    if !r.error.is_empty() {
        bail!("{}", r.error);
    }
    Ok((r.applied_index, r.checksum, r.key_count))
}

async fn check_region(
    r: &Region,
    leader_store: Option<u64>,
    stores: &std::collections::HashMap<u64, String>,
    cfg: &ClientConfig,
) -> anyhow::Result<String> {
    // The leader proposes the checksum through the log; try each peer until one leads.
    let mut order: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
    if let Some(l) = leader_store {
        order.sort_by_key(|s| *s != l);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (index, sum, keys) = loop {
        let mut last = String::new();
        let mut got = None;
        for s in &order {
            let addr = stores.get(s).context("unknown store")?;
            match checksum(addr, r.id, 0, cfg).await {
                Ok(v) => {
                    got = Some(v);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        if let Some(v) = got {
            break v;
        }
        if Instant::now() > deadline {
            bail!("no leader took the checksum: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for p in &r.peers {
        let addr = stores.get(&p.store_id).context("unknown store")?;
        let theirs = loop {
            match checksum(addr, r.id, index, cfg).await {
                Ok(v) => break v,
                Err(e) if Instant::now() > deadline => {
                    bail!("store {} has no checksum at index {index}: {e}", p.store_id)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if theirs.1 != sum {
            bail!(
                "store {} differs at index {index}: checksum {:016x} ({} keys) vs {:016x} ({} keys)",
                p.store_id,
                theirs.1,
                theirs.2,
                sum,
                keys
            );
        }
    }
    Ok(format!(
        "{} replicas identical at index {index} (checksum {sum:016x}, {keys} keys)",
        r.peers.len()
    ))
}
