//! The `flotilla` binary: every role as a subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_server::{Standalone, StandaloneConfig};

mod ctl;
mod playground;
mod roles;

/// mimalloc rather than glibc malloc: the server allocates many small, short-lived buffers
/// across threads, where glibc's arenas cost about a tenth of the CPU (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flotilla: a highly available, horizontally scalable SQL database that speaks
/// PostgreSQL's wire protocol.
#[derive(Parser)]
#[command(name = "flotilla", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads of the async runtime that serves RPC and SQL [default: one per core].
    /// Processes that share a machine do better with fewer: `flotilla playground` gives
    /// each child `max(1, cores / children)`.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Run meta, one store and SQL in one process (replication factor 1).
    Standalone(StandaloneArgs),
    /// Run a meta service member (stores, regions, timestamps, catalog).
    Meta(roles::MetaArgs),
    /// Run a store: hosts region replicas and serves their transaction commands.
    Store(roles::StoreArgs),
    /// Run a SQL node: PostgreSQL clients in, transactions out to the stores.
    Sql(roles::SqlArgs),
    /// Start a whole local cluster (meta, stores, SQL) as child processes.
    Playground(playground::PlaygroundArgs),
    /// Inspect a running cluster.
    Ctl(ctl::CtlArgs),
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory [default: ./flotilla-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL protocol listen address [default: 127.0.0.1:5434].
    #[arg(long, value_name = "HOST:PORT")]
    sql_addr: Option<SocketAddr>,
    /// HTTP listen address for /metrics and /status [default: 127.0.0.1:8434].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<SocketAddr>,
    /// Seconds a replaced row version stays readable before GC removes it; 0 turns GC off
    /// [default: 600].
    #[arg(long, value_name = "SECONDS")]
    gc_life_time_s: Option<u64>,
    /// Seconds between GC runs [default: 60].
    #[arg(long, value_name = "SECONDS")]
    gc_run_interval_s: Option<u64>,
}

async fn run_standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => StandaloneConfig::from_file(path)?,
        None => StandaloneConfig::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(addr) = args.sql_addr {
        config.sql_addr = addr;
    }
    if let Some(addr) = args.http_addr {
        config.http_addr = addr;
    }
    if let Some(s) = args.gc_life_time_s {
        config.gc.life_time_s = s;
    }
    if let Some(s) = args.gc_run_interval_s {
        config.gc.run_interval_s = s;
    }
    let node = Standalone::start(config)
        .await
        .context("starting flotilla standalone")?;
    println!(
        "flotilla standalone serving PostgreSQL on {} and HTTP on {}",
        node.sql_addr(),
        node.http_addr()
    );
    println!(
        "connect with: psql -h {} -p {} -U postgres postgres",
        node.sql_addr().ip(),
        node.sql_addr().port()
    );
    wait_for_signal().await;
    println!("shutting down");
    node.stop().await;
    Ok(())
}

/// How a process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// SIGINT (Ctrl-C): stop now.
    Interrupt,
    /// SIGTERM: a planned stop (a rolling upgrade, a service manager), so a store first
    /// hands its regions' leadership to other stores and a meta leader its own.
    Terminate,
}

pub(crate) async fn wait_for_signal() -> StopSignal {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return StopSignal::Interrupt;
                }
            };
        tokio::select! {
            _ = ctrl_c => StopSignal::Interrupt,
            _ = term.recv() => StopSignal::Terminate,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        StopSignal::Interrupt
    }
}

/// The stack of each runtime thread (workers and blocking threads). Statements are
/// planned recursively (DataFusion, and the parser up to its recursion limit in
/// `flotilla_sql`), and debug-build futures are large: tokio's default of 2 MiB overflowed
/// on ordinary statements of a debug build, which aborts the whole process.
const RUNTIME_THREAD_STACK_BYTES: usize = 8 << 20;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs written to files (a playground's) stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_stack_size(RUNTIME_THREAD_STACK_BYTES);
    if let Some(n) = cli.worker_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Standalone(args) => run_standalone(args).await,
            Command::Meta(args) => roles::run_meta(args).await,
            Command::Store(args) => roles::run_store(args).await,
            Command::Sql(args) => roles::run_sql(args).await,
            Command::Playground(args) => playground::run(args).await,
            Command::Ctl(args) => ctl::run(args).await,
        }
    })
}
