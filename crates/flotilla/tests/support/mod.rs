//! Starting the real `flotilla` binary on loopback and talking to it with PostgreSQL's own
//! clients.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// A psql command (no .psqlrc) connected to the server on `port` as postgres.
pub fn psql_at(port: u16) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-p",
    ])
    .arg(port.to_string())
    .env("PGCONNECT_TIMEOUT", "10");
    c
}

/// A running `flotilla standalone`.
pub struct Server {
    child: Child,
    pub sql_port: u16,
    pub http_port: u16,
    _stdout: BufReader<ChildStdout>,
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().trim().parse().unwrap()
}

impl Server {
    /// Starts a server on free loopback ports, with `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["standalone", "--data-dir"])
            .arg(data_dir)
            .args(["--sql-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            // As a user runs it: cargo gives test processes a larger stack (.cargo/config.toml),
            // which would hide a server thread's stack too small for its statements.
            .env_remove("RUST_MIN_STACK")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flotilla");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // The first line names the bound addresses; it is printed once the node serves.
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.contains("serving PostgreSQL on"),
            "unexpected first line: {line:?}"
        );
        let words: Vec<&str> = line.split_whitespace().collect();
        let sql = words[words.iter().position(|w| *w == "on").unwrap() + 1];
        let http = words.last().unwrap();
        Server {
            child,
            sql_port: port_of(sql),
            http_port: port_of(http),
            _stdout: stdout,
        }
    }

    /// Kills the server with SIGKILL (no chance to flush or clean up).
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A psql command connected to this server.
    pub fn psql_command(&self) -> Command {
        psql_at(self.sql_port)
    }

    /// Runs an SQL script through psql (stopping at the first error), unaligned, tuples
    /// only, errors verbose (with their SQLSTATE).
    pub fn psql(&self, script: &str) -> Output {
        let mut child = self
            .psql_command()
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "VERBOSITY=verbose",
                "-A",
                "-t",
                "-q",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql is installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a script that must succeed; returns its standard output.
    pub fn psql_ok(&self, script: &str) -> String {
        let out = self.psql(script);
        assert!(
            out.status.success(),
            "psql failed on:\n{script}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a script that must fail; returns its standard error.
    pub fn psql_err(&self, script: &str) -> String {
        let out = self.psql(script);
        assert!(!out.status.success(), "psql succeeded on:\n{script}");
        String::from_utf8(out.stderr).unwrap()
    }

    /// GETs an HTTP path; returns (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
pub mod bank;
pub mod cluster;
