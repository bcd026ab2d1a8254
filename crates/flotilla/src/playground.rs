//! `flotilla playground`: a whole local cluster in one command, as child processes on
//! loopback.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flotilla_client::{ClientConfig, MetaClient};
use serde::Serialize;

#[derive(clap::Args)]
pub struct PlaygroundArgs {
    /// Meta members.
    #[arg(long = "meta", default_value_t = 1)]
    pub metas: usize,
    /// Stores.
    #[arg(long, default_value_t = 3)]
    pub stores: usize,
    /// SQL nodes.
    #[arg(long = "sql", default_value_t = 1)]
    pub sqls: usize,
    /// Keep data here [default: a temporary directory removed at exit].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the first SQL node [default: a free loopback port].
    #[arg(long, value_name = "HOST:PORT")]
    pub sql_addr: Option<String>,
    /// Replicas per region [default: 3, or the number of stores if fewer].
    #[arg(long)]
    pub replication: Option<usize>,
    /// Keys at which a region splits (passed to every store).
    #[arg(long, default_value_t = 200_000)]
    pub region_split_keys: u64,
    /// Async runtime threads per child process [default: max(1, cores / children)]. The
    /// children share the machine's cores, and a runtime with more threads than its share
    /// spends its time waking and parking them (17 % fewer TPC-B TPS with one per core on
    /// 2 cores; BENCHMARKS.md).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub child_worker_threads: Option<u16>,
    /// Rows an index backfill writes per second at most (passed to every meta member).
    #[arg(long, value_name = "ROWS")]
    pub ddl_backfill_rows_per_s: Option<u64>,
    /// Seconds a replaced row version stays readable before GC may remove it; 0 turns GC
    /// off (passed to every meta member) [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub gc_life_time_s: Option<u64>,
    /// Seconds between moves of the GC safe point (passed to every meta member)
    /// [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub gc_run_interval_s: Option<u64>,
    /// Pretend the stores are in this many zones: store N gets the label
    /// `zone=zone-((N-1) mod ZONES + 1)` and the meta service spreads each region's
    /// replicas over the zones; 0 = no labels.
    #[arg(long, value_name = "ZONES", default_value_t = 0)]
    pub zones: usize,
    /// Testing only: every child emulates a build of this older cluster version
    /// (rolling-upgrade tests restart them without it).
    #[arg(long, value_name = "VERSION", hide = true)]
    pub emulate_binary_version: Option<u32>,
}

/// Runtime threads for each of `children` processes sharing `cores`.
fn worker_threads_per_child(cores: usize, children: usize) -> usize {
    (cores / children.max(1)).max(1)
}

/// One child process, as written to playground.json.
#[derive(Serialize, Clone)]
pub struct ProcessInfo {
    pub role: String,
    pub id: usize,
    pub pid: u32,
    pub addr: String,
    pub data_dir: String,
    pub log: String,
    /// The full command line, so a test or an operator can restart the process.
    pub command: Vec<String>,
}

#[derive(Serialize)]
struct PlaygroundFile<'a> {
    data_dir: String,
    meta_endpoints: String,
    sql_addrs: Vec<String>,
    psql: String,
    processes: &'a [ProcessInfo],
}

/// Loopback addresses for the children, each distinct. Every address stays bound until
/// `release`: a port the kernel handed out and got back at once could be handed out
/// again, and two children given one port leave one of them unable to listen (and a
/// readiness probe of that address answered by the other).
struct Ports {
    held: Vec<std::net::TcpListener>,
}

impl Ports {
    fn new() -> Ports {
        Ports { held: Vec::new() }
    }

    /// A free loopback port, distinct from every other this picker handed out.
    fn pick(&mut self) -> anyhow::Result<String> {
        self.hold("127.0.0.1:0")
            .context("finding a free loopback port")
    }

    /// Holds an address fixed by the operator, so no picked port takes it and an address
    /// already in use is reported before anything starts.
    fn reserve(&mut self, addr: &str) -> anyhow::Result<String> {
        self.hold(addr)
            .with_context(|| format!("{addr} cannot be listened on; choose another address"))
    }

    fn hold(&mut self, addr: &str) -> anyhow::Result<String> {
        let l = std::net::TcpListener::bind(addr)?;
        let bound = l.local_addr()?.to_string();
        self.held.push(l);
        Ok(bound)
    }

    /// Frees every address so the children can listen on them.
    fn release(self) {}
}

fn spawn(exe: &Path, args: &[String], log: &Path) -> anyhow::Result<tokio::process::Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send SIGTERM to the
    // child when the playground dies, so a killed playground leaves no orphans.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

pub async fn run(args: PlaygroundArgs) -> anyhow::Result<()> {
    if args.metas == 0 || args.stores == 0 || args.sqls == 0 {
        bail!("a playground needs at least one meta member, one store and one SQL node");
    }
    let replication = args.replication.unwrap_or(3.min(args.stores));
    if replication > args.stores {
        bail!(
            "replication {replication} needs at least {replication} stores, not {}",
            args.stores
        );
    }
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("flotilla-playground-")
                .tempdir()?,
        ),
    };
    let data_dir = match (&args.data_dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        _ => unreachable!(),
    };
    std::fs::create_dir_all(data_dir.join("logs"))?;
    let exe = std::env::current_exe().context("locating the flotilla binary")?;
    let worker_threads = match args.child_worker_threads {
        Some(n) => usize::from(n),
        None => worker_threads_per_child(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            args.metas + args.stores + args.sqls,
        ),
    };
    let mut children = Vec::new();
    let mut infos = Vec::new();

    let mut ports = Ports::new();
    let first_sql = match &args.sql_addr {
        Some(a) => Some(ports.reserve(a).map(|_| a.clone())?),
        None => None,
    };
    let meta_addrs: Vec<String> = (0..args.metas)
        .map(|_| ports.pick())
        .collect::<Result<_, _>>()?;
    let store_addrs: Vec<String> = (0..args.stores)
        .map(|_| ports.pick())
        .collect::<Result<_, _>>()?;
    let sql_addrs: Vec<String> = (0..args.sqls)
        .map(|i| match (&first_sql, i) {
            (Some(a), 0) => Ok(a.clone()),
            _ => ports.pick(),
        })
        .collect::<Result<_, _>>()?;
    ports.release();
    let members = meta_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let endpoints = meta_addrs.join(",");
    let mut launch = |role: &str,
                      id: usize,
                      addr: String,
                      dir: PathBuf,
                      mut command: Vec<String>|
     -> anyhow::Result<()> {
        command.extend(["--worker-threads".into(), worker_threads.to_string()]);
        if let Some(v) = args.emulate_binary_version {
            command.extend(["--emulate-binary-version".into(), v.to_string()]);
        }
        let log = data_dir.join("logs").join(format!("{role}-{id}.log"));
        let child = spawn(&exe, &command, &log)?;
        infos.push(ProcessInfo {
            role: role.into(),
            id,
            pid: child.id().unwrap_or(0),
            addr,
            data_dir: dir.display().to_string(),
            log: log.display().to_string(),
            command: std::iter::once(exe.display().to_string())
                .chain(command)
                .collect(),
        });
        children.push(child);
        Ok(())
    };
    for (i, addr) in meta_addrs.iter().enumerate() {
        let dir = data_dir.join(format!("meta-{}", i + 1));
        let mut cmd: Vec<String> = vec![
            "meta".into(),
            "--id".into(),
            (i + 1).to_string(),
            "--members".into(),
            members.clone(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--replication".into(),
            replication.to_string(),
        ];
        if let Some(rate) = args.ddl_backfill_rows_per_s {
            cmd.extend(["--ddl-backfill-rows-per-s".into(), rate.to_string()]);
        }
        if let Some(s) = args.gc_life_time_s {
            cmd.extend(["--gc-life-time-s".into(), s.to_string()]);
        }
        if let Some(s) = args.gc_run_interval_s {
            cmd.extend(["--gc-run-interval-s".into(), s.to_string()]);
        }
        if args.zones > 0 {
            cmd.extend(["--location-labels".into(), "zone".into()]);
        }
        launch("meta", i + 1, addr.clone(), dir, cmd)?;
    }
    for (i, addr) in store_addrs.into_iter().enumerate() {
        let dir = data_dir.join(format!("store-{}", i + 1));
        let mut cmd = vec![
            "store".into(),
            "--addr".into(),
            addr.clone(),
            "--meta".into(),
            endpoints.clone(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--region-split-keys".into(),
            args.region_split_keys.to_string(),
        ];
        if args.zones > 0 {
            cmd.extend([
                "--labels".into(),
                format!("zone=zone-{}", i % args.zones + 1),
            ]);
        }
        launch("store", i + 1, addr, dir, cmd)?;
    }
    for (i, addr) in sql_addrs.iter().enumerate() {
        let cmd = vec![
            "sql".into(),
            "--addr".into(),
            addr.clone(),
            "--meta".into(),
            endpoints.clone(),
        ];
        launch("sql", i + 1, addr.clone(), data_dir.clone(), cmd)?;
    }

    let outcome = tokio::select! {
        r = wait_ready(&endpoints, &sql_addrs, &mut children, &infos, Duration::from_secs(90)) => Some(r),
        _ = crate::wait_for_signal() => None,
    };
    match outcome {
        Some(Ok(store_ids)) => {
            // Stores are known by the id the meta service gave them.
            for p in infos.iter_mut().filter(|p| p.role == "store") {
                if let Some(id) = store_ids.get(&p.addr) {
                    p.id = *id as usize;
                }
            }
        }
        Some(Err(e)) => {
            stop_all(&mut children).await;
            // The logs explain the failure, so a temporary data directory is kept.
            if let Some(t) = temp {
                let _ = t.keep();
            }
            return Err(e.context(format!(
                "the playground did not come up; logs are in {}",
                data_dir.join("logs").display()
            )));
        }
        None => {
            stop_all(&mut children).await;
            return Ok(());
        }
    }
    let first = &sql_addrs[0];
    let (host, port) = first.rsplit_once(':').unwrap_or((first, "5434"));
    let psql = format!("psql -h {host} -p {port} -U postgres postgres");
    println!(
        "{:<6} {:>3} {:>8}  {:<22} data",
        "role", "id", "pid", "address"
    );
    for p in &infos {
        println!(
            "{:<6} {:>3} {:>8}  {:<22} {}",
            p.role, p.id, p.pid, p.addr, p.data_dir
        );
    }
    println!("connect with: {psql}");
    let file = PlaygroundFile {
        data_dir: data_dir.display().to_string(),
        meta_endpoints: endpoints.clone(),
        sql_addrs: sql_addrs.clone(),
        psql,
        processes: &infos,
    };
    std::fs::write(
        data_dir.join("playground.json"),
        serde_json::to_vec_pretty(&file)?,
    )?;
    println!(
        "playground description: {}",
        data_dir.join("playground.json").display()
    );
    crate::wait_for_signal().await;
    println!("stopping the playground");
    stop_all(&mut children).await;
    drop(temp);
    Ok(())
}

/// Waits until the first region has a leader and every SQL node accepts connections;
/// returns the store ids by address. A child that exits meanwhile fails the wait at once,
/// naming its log: a port probe alone could be answered by some other process.
async fn wait_ready(
    endpoints: &str,
    sql_addrs: &[String],
    children: &mut [tokio::process::Child],
    infos: &[ProcessInfo],
    limit: Duration,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let deadline = Instant::now() + limit;
    let meta = MetaClient::new(
        crate::roles::parse_endpoints(endpoints),
        ClientConfig {
            retry_budget: Duration::from_secs(2),
            ..ClientConfig::default()
        },
    )?;
    loop {
        for (child, info) in children.iter_mut().zip(infos) {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} {} exited while starting ({status}); see {}",
                    info.role,
                    info.id,
                    info.log
                );
            }
        }
        if Instant::now() > deadline {
            bail!("not ready within {limit:?}");
        }
        let led = matches!(meta.get_region(b"").await, Ok(info) if info.leader.is_some());
        let mut sql_up = true;
        for a in sql_addrs {
            if tokio::net::TcpStream::connect(a).await.is_err() {
                sql_up = false;
            }
        }
        if led && sql_up {
            let stores = meta.get_stores(0).await?;
            return Ok(stores
                .into_iter()
                .filter_map(|s| s.store)
                .map(|s| (s.address, s.id))
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stop_all(children: &mut [tokio::process::Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            // SIGINT, not SIGTERM: the whole cluster stops, so there is no store or meta
            // member to hand leadership to before stopping.
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(pid as i32, libc::SIGINT);
            }
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .is_err()
        {
            let _ = c.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Ports, worker_threads_per_child};

    #[test]
    fn picked_ports_are_distinct_and_a_taken_address_is_refused() {
        // 500 picks from the ~14,000 ports Linux hands out for port 0 would repeat one
        // with near certainty (birthday bound) if a picked port were handed back early.
        let mut ports = Ports::new();
        let picked: Vec<String> = (0..500).map(|_| ports.pick().unwrap()).collect();
        let distinct: std::collections::HashSet<&String> = picked.iter().collect();
        assert_eq!(distinct.len(), picked.len());
        let err = ports.reserve(&picked[0]).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot be listened on"),
            "{err:#}"
        );
        ports.release();
        assert!(std::net::TcpListener::bind(&picked[0]).is_ok());
    }

    #[test]
    fn children_share_the_cores_and_each_gets_at_least_one_thread() {
        assert_eq!(worker_threads_per_child(2, 5), 1);
        assert_eq!(worker_threads_per_child(16, 5), 3);
        assert_eq!(worker_threads_per_child(8, 2), 4);
        assert_eq!(worker_threads_per_child(1, 0), 1);
    }
}
