//! `flotilla meta`, `flotilla store` and `flotilla sql`: one role per process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use flotilla_meta::{MetaConfig, MetaNode};
use flotilla_server::{SqlNode, SqlNodeConfig, StoreNode, StoreNodeConfig};

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

#[derive(clap::Args)]
pub struct MetaArgs {
    /// This member's id (1-based).
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Every member as ID=HOST:PORT, comma-separated [default: 1=127.0.0.1:2379].
    #[arg(long, value_name = "MEMBERS")]
    pub members: Option<String>,
    /// Listen address [default: this member's address in --members].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Data directory [default: ./flotilla-meta-ID].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Replicas per region.
    #[arg(long, default_value_t = 3)]
    pub replication: usize,
}

pub async fn run_meta(args: MetaArgs) -> anyhow::Result<()> {
    let members = parse_members(args.members.as_deref().unwrap_or("1=127.0.0.1:2379"))?;
    let own = members
        .iter()
        .find(|(id, _)| *id == args.id)
        .map(|(_, a)| a.clone())
        .with_context(|| format!("member {} is not in --members", args.id))?;
    let addr: SocketAddr = match args.addr {
        Some(a) => a,
        None => own
            .parse()
            .with_context(|| format!("member address {own:?}"))?,
    };
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(format!("flotilla-meta-{}", args.id)));
    let mut cfg = MetaConfig::new(args.id, members, data_dir);
    cfg.replication = args.replication;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let node = MetaNode::start(cfg, listener).await?;
    println!("flotilla meta {} serving on {}", args.id, node.addr());
    crate::wait_for_signal().await;
    node.stop().await;
    Ok(())
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Listen address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:20160")]
    pub addr: SocketAddr,
    /// Address others reach this store at [default: --addr].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,
    /// Meta endpoints, comma-separated.
    #[arg(long, value_name = "HOST:PORT,...", default_value = "127.0.0.1:2379")]
    pub meta: String,
    /// Data directory [default: ./flotilla-store].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A region with more keys than this splits.
    #[arg(long, default_value_t = 200_000)]
    pub region_split_keys: u64,
}

pub async fn run_store(args: StoreArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let advertise = args.advertise_addr.unwrap_or_else(|| {
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    });
    let mut cfg = StoreNodeConfig::new(
        args.data_dir
            .unwrap_or_else(|| PathBuf::from("flotilla-store")),
        advertise,
        parse_endpoints(&args.meta),
    );
    cfg.region_split_keys = args.region_split_keys;
    cfg.split_check_written_keys = (args.region_split_keys / 10).max(1);
    let node = StoreNode::start(cfg, listener).await?;
    println!(
        "flotilla store {} serving on {}",
        node.store_id(),
        node.addr()
    );
    crate::wait_for_signal().await;
    node.stop().await;
    Ok(())
}

#[derive(clap::Args)]
pub struct SqlArgs {
    /// PostgreSQL protocol listen address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5434")]
    pub addr: SocketAddr,
    /// Meta endpoints, comma-separated.
    #[arg(long, value_name = "HOST:PORT,...", default_value = "127.0.0.1:2379")]
    pub meta: String,
}

pub async fn run_sql(args: SqlArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let node = SqlNode::start(SqlNodeConfig::new(parse_endpoints(&args.meta)), listener).await?;
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
