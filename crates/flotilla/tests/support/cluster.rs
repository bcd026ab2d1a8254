//! A `flotilla playground` started by a test, with its processes under the test's control
//! (kill -9, SIGSTOP/SIGCONT, restart from the command line in playground.json).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One process of the playground.
#[derive(Debug, Clone)]
pub struct Proc {
    pub role: String,
    pub id: u64,
    pub pid: u32,
    pub addr: String,
    pub command: Vec<String>,
    pub log: String,
}

pub struct Playground {
    child: Child,
    pub dir: PathBuf,
    pub procs: Vec<Proc>,
    pub sql_addrs: Vec<String>,
    pub meta_endpoints: String,
    /// Processes this test restarted (killed at drop).
    restarted: HashMap<(String, u64), Child>,
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

impl Playground {
    /// Starts `flotilla playground` with `args` in `dir` and waits (bounded) for its
    /// description file, which it writes once SQL is served.
    pub fn start(dir: &Path, args: &[&str]) -> Playground {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("playground")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            // `RUST_LOG` of the test's environment, to look closer at a failure.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // As a user runs it (see `Server::start`).
            .env_remove("RUST_MIN_STACK")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the playground");
        let file = dir.join("playground.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        let json: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the playground exited before it came up ({status})");
            }
            assert!(Instant::now() < deadline, "the playground did not come up");
            std::thread::sleep(Duration::from_millis(100));
        };
        let procs = json["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Proc {
                role: p["role"].as_str().unwrap().into(),
                id: p["id"].as_u64().unwrap(),
                pid: p["pid"].as_u64().unwrap() as u32,
                addr: p["addr"].as_str().unwrap().into(),
                command: p["command"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
                log: p["log"].as_str().unwrap().into(),
            })
            .collect();
        Playground {
            child,
            dir: dir.to_path_buf(),
            procs,
            sql_addrs: json["sql_addrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect(),
            meta_endpoints: json["meta_endpoints"].as_str().unwrap().into(),
            restarted: HashMap::new(),
        }
    }

    pub fn proc(&self, role: &str, id: u64) -> &Proc {
        self.procs
            .iter()
            .find(|p| p.role == role && p.id == id)
            .unwrap_or_else(|| panic!("no {role} {id}"))
    }

    pub fn ids(&self, role: &str) -> Vec<u64> {
        self.procs
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.id)
            .collect()
    }

    /// The process's pid now (after a restart, the new one).
    pub fn pid(&self, role: &str, id: u64) -> u32 {
        match self.restarted.get(&(role.to_string(), id)) {
            Some(c) => c.id(),
            None => self.proc(role, id).pid,
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self, role: &str, id: u64) {
        let pid = self.pid(role, id);
        signal(pid, "-KILL");
        if let Some(mut c) = self.restarted.remove(&(role.to_string(), id)) {
            let _ = c.wait();
        }
    }

    pub fn pause(&self, role: &str, id: u64) {
        signal(self.pid(role, id), "-STOP");
    }

    pub fn resume(&self, role: &str, id: u64) {
        signal(self.pid(role, id), "-CONT");
    }

    /// Starts the process again with its original command line and data.
    pub fn restart(&mut self, role: &str, id: u64) {
        let p = self.proc(role, id).clone();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&p.log)
            .unwrap();
        let child = Command::new(&p.command[0])
            .args(&p.command[1..])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("restart");
        self.restarted.insert((role.to_string(), id), child);
    }

    /// SIGTERM (a planned stop: a store hands its leaderships over first, a meta leader
    /// its own), then waits (bounded) until the process is gone.
    pub fn terminate(&mut self, role: &str, id: u64) {
        let pid = self.pid(role, id);
        signal(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Some(mut c) = self.restarted.remove(&(role.to_string(), id)) {
            let _ = c.wait();
            return;
        }
        // A child of the playground: gone, or a zombie it has not reaped.
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|s| s.trim_start().starts_with('Z')) =>
                {
                    return;
                }
                Ok(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{role} {id} did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the process again on its data with the command line it was started with,
    /// less `--emulate-binary-version` and its value: the upgraded build.
    pub fn restart_upgraded(&mut self, role: &str, id: u64) {
        let p = self.proc(role, id).clone();
        let mut command = Vec::new();
        let mut args = p.command.iter();
        while let Some(a) = args.next() {
            if a == "--emulate-binary-version" {
                args.next();
            } else {
                command.push(a.clone());
            }
        }
        assert!(
            command.len() < p.command.len(),
            "{role} {id} emulated no older build"
        );
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&p.log)
            .unwrap();
        let child = Command::new(&command[0])
            .args(&command[1..])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("restart");
        self.restarted.insert((role.to_string(), id), child);
    }

    /// Runs `flotilla ctl --meta ... ARGS`.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["ctl", "--meta", &self.meta_endpoints])
            .args(args)
            .output()
            .expect("run ctl")
    }

    /// The id of the meta member that leads (asked of the meta service), once there is
    /// one.
    pub fn meta_leader(&self) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let meta = flotilla_client::MetaClient::new(
                self.meta_endpoints.split(',').map(String::from).collect(),
                flotilla_client::ClientConfig::default(),
            )
            .unwrap();
            // Between a kill and the next election there is none: wait (bounded).
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(members) = meta.members().await
                    && let Some(leader) = members.iter().find(|m| m.is_leader)
                {
                    return leader.id;
                }
                assert!(Instant::now() < deadline, "no meta leader for 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    pub fn sql_url(&self, i: usize) -> String {
        let (host, port) = self.sql_addrs[i].rsplit_once(':').unwrap();
        format!("host={host} port={port} user=postgres dbname=postgres connect_timeout=5")
    }
}

impl Drop for Playground {
    fn drop(&mut self) {
        for (_, mut c) in self.restarted.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // SIGTERM: the playground stops every child it started.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.keep_logs();
        }
    }
}

impl Playground {
    /// Copies every process's log out of the test's temporary directory (removed as the
    /// test unwinds), so a failure that does not recur under a re-run can still be read.
    fn keep_logs(&self) {
        let kept = std::env::temp_dir().join(format!(
            "flotilla-failed-{}-{}",
            std::process::id(),
            std::thread::current()
                .name()
                .unwrap_or("test")
                .replace("::", "-")
        ));
        if std::fs::create_dir_all(&kept).is_err() {
            return;
        }
        for p in &self.procs {
            let _ = std::fs::copy(&p.log, kept.join(format!("{}-{}.log", p.role, p.id)));
        }
        eprintln!("the playground's logs are kept in {}", kept.display());
    }
}
