//! The PostgreSQL front end over real sockets, against an in-process engine, with a small
//! hand-written protocol client so every byte the server sends can be checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_catalog::LocalCatalog;
use flotilla_mvcc::Mvcc;
use flotilla_pgserver::{PgServerConfig, serve};
use flotilla_sql::{SqlConfig, SqlEngine};
use flotilla_storage::{FjallEngine, FjallOptions, SyncPolicy};
use flotilla_tso::LocalTso;
use flotilla_txn::LocalTxnKv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const STEP: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(config: PgServerConfig) -> Self {
        Self::start_with(config, SqlConfig::default()).await
    }

    async fn start_with(config: PgServerConfig, sql_config: SqlConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(
            FjallEngine::open(
                dir.path(),
                &FjallOptions {
                    sync_policy: SyncPolicy::Buffered,
                    ..FjallOptions::default()
                },
            )
            .expect("storage"),
        );
        let tso = Arc::new(LocalTso::open(storage.clone(), 3_000).expect("tso"));
        let storage_for_ddl: flotilla_storage::EngineRef = storage.clone();
        let catalog = Arc::new(LocalCatalog::open(storage.clone()).expect("catalog"));
        let kv = Arc::new(LocalTxnKv::new(
            Arc::new(Mvcc::new(storage).unwrap()),
            tso.clone(),
        ));
        let jobs = flotilla_ddl::JobQueue::open(
            storage_for_ddl,
            catalog.clone(),
            flotilla_ddl::DdlConfig::default(),
            Some(flotilla_sql::SqlReorg::new(kv.clone(), tso.clone())),
        )
        .unwrap();
        let engine = SqlEngine::new(
            kv,
            tso,
            catalog,
            flotilla_ddl::LocalDdl::start(jobs),
            sql_config,
        )
        .expect("engine");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, engine, config, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(STEP, task)
                .await
                .expect("serve stops")
                .expect("serve task")
                .expect("serve result");
        }
    }
}

#[derive(Debug, Clone)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// Null-terminated strings of the body from `offset`.
    fn cstrings(&self, offset: usize) -> Vec<String> {
        self.body[offset..]
            .split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    /// Fields of an ErrorResponse / NoticeResponse by code.
    fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0).expect("terminated");
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }

    fn tag_text(&self) -> String {
        self.cstrings(0).remove(0)
    }

    /// DataRow cells.
    fn cells(&self) -> Vec<Option<Vec<u8>>> {
        let n = i16::from_be_bytes([self.body[0], self.body[1]]);
        let mut at = 2;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(self.body[at..at + 4].try_into().expect("len"));
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                out.push(Some(self.body[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        out
    }

    fn text_cells(&self) -> Vec<Option<String>> {
        self.cells()
            .into_iter()
            .map(|c| c.map(|b| String::from_utf8(b).expect("utf8")))
            .collect()
    }

    /// RowDescription: (name, type oid, typmod, format) per column.
    fn columns(&self) -> Vec<(String, u32, i32, i16)> {
        let n = i16::from_be_bytes([self.body[0], self.body[1]]);
        let mut at = 2;
        let mut out = Vec::new();
        for _ in 0..n {
            let end = at + self.body[at..].iter().position(|b| *b == 0).expect("name");
            let name = String::from_utf8_lossy(&self.body[at..end]).into_owned();
            at = end + 1;
            let oid = u32::from_be_bytes(self.body[at + 6..at + 10].try_into().expect("oid"));
            let typmod = i32::from_be_bytes(self.body[at + 12..at + 16].try_into().expect("mod"));
            let format = i16::from_be_bytes(self.body[at + 16..at + 18].try_into().expect("fmt"));
            out.push((name, oid, typmod, format));
            at += 18;
        }
        out
    }
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and completes startup, returning the startup messages.
    async fn start(addr: SocketAddr) -> (Self, Vec<Msg>) {
        let mut client = Self::connect(addr).await;
        let msgs = client.startup("alice").await;
        (client, msgs)
    }

    async fn startup(&mut self, user: &str) -> Vec<Msg> {
        let mut body = Vec::new();
        body.extend_from_slice(&196_608i32.to_be_bytes());
        cstr(&mut body, "user");
        cstr(&mut body, user);
        cstr(&mut body, "database");
        cstr(&mut body, "postgres");
        cstr(&mut body, "application_name");
        cstr(&mut body, "wiretest");
        body.push(0);
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        self.stream.write_all(&packet).await.expect("write");
        self.until(|m| m.tag == b'Z' || m.tag == b'E').await
    }

    async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut packet = vec![tag];
        packet.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        packet.extend_from_slice(body);
        self.stream.write_all(&packet).await.expect("write");
    }

    /// The next message, or `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes(self.buf[1..5].try_into().expect("len")) as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    let body = self.buf[5..1 + len].to_vec();
                    self.buf.drain(..1 + len);
                    return Some(Msg { tag, body });
                }
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(STEP, self.stream.read(&mut chunk))
                .await
                .expect("server answers in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn until(&mut self, last: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            let done = last(&m);
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    async fn until_ready(&mut self) -> Vec<Msg> {
        self.until(|m| m.tag == b'Z').await
    }

    async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut body = Vec::new();
        cstr(&mut body, sql);
        self.send(b'Q', &body).await;
        self.until_ready().await
    }

    async fn parse(&mut self, name: &str, sql: &str, oids: &[u32]) {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, sql);
        body.extend_from_slice(&(oids.len() as i16).to_be_bytes());
        for oid in oids {
            body.extend_from_slice(&oid.to_be_bytes());
        }
        self.send(b'P', &body).await;
    }

    async fn bind(
        &mut self,
        portal: &str,
        statement: &str,
        param_formats: &[i16],
        params: &[Option<&[u8]>],
        result_formats: &[i16],
    ) {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        cstr(&mut body, statement);
        body.extend_from_slice(&(param_formats.len() as i16).to_be_bytes());
        for f in param_formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(bytes) => {
                    body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    body.extend_from_slice(bytes);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&(result_formats.len() as i16).to_be_bytes());
        for f in result_formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        self.send(b'B', &body).await;
    }

    async fn describe(&mut self, kind: u8, name: &str) {
        let mut body = vec![kind];
        cstr(&mut body, name);
        self.send(b'D', &body).await;
    }

    async fn execute(&mut self, portal: &str, max_rows: i32) {
        let mut body = Vec::new();
        cstr(&mut body, portal);
        body.extend_from_slice(&max_rows.to_be_bytes());
        self.send(b'E', &body).await;
    }

    async fn sync(&mut self) -> Vec<Msg> {
        self.send(b'S', &[]).await;
        self.until_ready().await
    }
}

fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| m.tag as char).collect()
}

fn ready_status(msgs: &[Msg]) -> u8 {
    let last = msgs.last().expect("messages");
    assert_eq!(last.tag, b'Z', "{msgs:?}");
    last.body[0]
}

fn config() -> PgServerConfig {
    PgServerConfig::default()
}

#[tokio::test]
async fn startup_reports_server_parameters() {
    let server = Server::start(config()).await;
    let (_client, msgs) = Client::start(server.addr).await;
    assert_eq!(msgs[0].tag, b'R', "AuthenticationOk first");
    let params: Vec<(String, String)> = msgs
        .iter()
        .filter(|m| m.tag == b'S')
        .map(|m| {
            let s = m.cstrings(0);
            (s[0].clone(), s[1].clone())
        })
        .collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("missing {k}: {params:?}"))
    };
    assert!(get("server_version").starts_with("15"));
    assert_eq!(get("server_encoding"), "UTF8");
    assert_eq!(get("client_encoding"), "UTF8");
    assert_eq!(get("DateStyle"), "ISO, MDY");
    assert_eq!(get("integer_datetimes"), "on");
    assert_eq!(get("standard_conforming_strings"), "on");
    assert_eq!(get("TimeZone"), "UTC");
    assert_eq!(get("application_name"), "wiretest");
    assert!(msgs.iter().any(|m| m.tag == b'K'), "BackendKeyData");
    assert_eq!(ready_status(&msgs), b'I');
    server.stop().await;
}

#[tokio::test]
async fn simple_query_results_errors_and_transaction_status() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;

    let msgs = c
        .query("CREATE TABLE t (id INT PRIMARY KEY, name TEXT, price DECIMAL(10,2), ok BOOLEAN, f DOUBLE PRECISION, d DATE, ts TIMESTAMP)")
        .await;
    assert_eq!(tags(&msgs), "CZ");
    assert_eq!(msgs[0].tag_text(), "CREATE TABLE");

    let msgs = c
        .query("INSERT INTO t VALUES (1, 'a', 12.3, true, 1.5, '2024-01-31', '2024-01-31 12:00:00'), (2, NULL, NULL, false, 0.1, NULL, '2024-01-31 12:00:00.25')")
        .await;
    assert_eq!(tags(&msgs), "CZ");
    assert_eq!(msgs[0].tag_text(), "INSERT 0 2");

    let msgs = c.query("SELECT * FROM t ORDER BY id").await;
    assert_eq!(tags(&msgs), "TDDCZ");
    let cols = msgs[0].columns();
    let oids: Vec<u32> = cols.iter().map(|c| c.1).collect();
    assert_eq!(oids, vec![23, 25, 1700, 16, 701, 1082, 1114]);
    assert_eq!(cols[2].2, (10 << 16 | 2) + 4, "numeric typmod");
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        msgs[1].text_cells(),
        vec![
            s("1"),
            s("a"),
            s("12.30"),
            s("t"),
            s("1.5"),
            s("2024-01-31"),
            s("2024-01-31 12:00:00")
        ]
    );
    assert_eq!(
        msgs[2].text_cells(),
        vec![
            s("2"),
            None,
            None,
            s("f"),
            s("0.1"),
            None,
            s("2024-01-31 12:00:00.25")
        ]
    );
    assert_eq!(msgs[3].tag_text(), "SELECT 2");
    assert_eq!(ready_status(&msgs), b'I');

    // Several statements, the second failing: results of the first, then the error.
    let msgs = c.query("SELECT 1; SELECT * FROM missing; SELECT 2").await;
    assert_eq!(tags(&msgs), "TDCEZ");
    let err = &msgs[3];
    assert_eq!(err.field(b'S').as_deref(), Some("ERROR"));
    assert_eq!(err.field(b'C').as_deref(), Some("42P01"));

    let msgs = c.query("SELEC 1").await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("42601"));

    let msgs = c.query("").await;
    assert_eq!(tags(&msgs), "IZ");
    let msgs = c.query(" ; ").await;
    assert_eq!(tags(&msgs), "IZ");

    // Transaction status follows the session.
    assert_eq!(ready_status(&c.query("BEGIN").await), b'T');
    assert_eq!(ready_status(&c.query("SELECT 1").await), b'T');
    let msgs = c.query("SELECT * FROM missing").await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(ready_status(&msgs), b'E');
    let msgs = c.query("SELECT 1").await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("25P02"));
    assert_eq!(ready_status(&msgs), b'E');
    assert_eq!(ready_status(&c.query("ROLLBACK").await), b'I');
    server.stop().await;
}

#[tokio::test]
async fn extended_protocol_with_text_and_binary_formats() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.query("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, price DECIMAL(10,2))")
        .await;
    c.query("INSERT INTO t VALUES (1, 'one', 1.50), (2, 'two', 2.25), (3, 'three', NULL)")
        .await;

    // Parse with an unspecified parameter type, describe the statement, bind text, execute.
    c.parse(
        "s1",
        "SELECT id, name, price FROM t WHERE id >= $1 ORDER BY id",
        &[0],
    )
    .await;
    c.describe(b'S', "s1").await;
    c.bind("", "s1", &[], &[Some(b"2")], &[]).await;
    c.describe(b'P', "").await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "1tT2TDDCZ", "{msgs:?}");
    let param_oid = u32::from_be_bytes(msgs[1].body[2..6].try_into().expect("oid"));
    assert_eq!(param_oid, 20, "int8 parameter");
    assert_eq!(msgs[5].text_cells()[1].as_deref(), Some("two"));
    assert_eq!(msgs[5].text_cells()[2].as_deref(), Some("2.25"));
    assert_eq!(msgs[6].text_cells()[2], None);
    assert_eq!(msgs[7].tag_text(), "SELECT 2");
    assert_eq!(ready_status(&msgs), b'I');

    // Binary parameter and binary results.
    c.bind("", "s1", &[1], &[Some(&3i64.to_be_bytes())], &[1])
        .await;
    c.describe(b'P', "").await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "2TDCZ", "{msgs:?}");
    assert!(msgs[1].columns().iter().all(|col| col.3 == 1));
    let cells = msgs[2].cells();
    assert_eq!(cells[0].as_deref(), Some(&3i64.to_be_bytes()[..]));
    assert_eq!(cells[1].as_deref(), Some(&b"three"[..]));
    assert_eq!(cells[2], None);

    // DML with a parameter: NoData on describe, the tag on execute.
    c.parse("", "INSERT INTO t VALUES ($1, $2, $3)", &[20, 25, 0])
        .await;
    c.describe(b'S', "").await;
    c.bind("", "", &[], &[Some(b"4"), Some(b"four"), Some(b"4.5")], &[])
        .await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "1tn2CZ", "{msgs:?}");
    assert_eq!(msgs[4].tag_text(), "INSERT 0 1");
    let msgs = c.query("SELECT price FROM t WHERE id = 4").await;
    assert_eq!(msgs[1].text_cells()[0].as_deref(), Some("4.50"));

    // A malformed parameter fails the Bind; nothing runs until Sync.
    c.parse("", "INSERT INTO t VALUES ($1, 'bad', NULL)", &[])
        .await;
    c.bind("", "", &[], &[Some(b"abc")], &[]).await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "1EZ", "{msgs:?}");
    assert_eq!(msgs[1].field(b'C').as_deref(), Some("22P02"));
    assert_eq!(
        msgs[1].field(b'M').as_deref(),
        Some("invalid input syntax for type bigint: \"abc\"")
    );
    let msgs = c.query("SELECT count(*) FROM t").await;
    assert_eq!(msgs[1].text_cells()[0].as_deref(), Some("4"));

    // Wrong parameter count.
    c.bind("", "s1", &[], &[], &[]).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("08P01"));

    // Errors from the session during Parse.
    c.parse("", "SELECT * FROM nope", &[]).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("42P01"));

    // Unknown statement and portal.
    c.bind("", "missing", &[], &[], &[]).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("26000"));
    c.execute("nope", 0).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("34000"));

    // Empty statement.
    c.parse("", "", &[]).await;
    c.bind("", "", &[], &[], &[]).await;
    c.describe(b'P', "").await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12nIZ", "{msgs:?}");
    server.stop().await;
}

#[tokio::test]
async fn named_statements_and_deallocate() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.parse("s", "SELECT 1", &[]).await;
    assert_eq!(tags(&c.sync().await), "1Z");
    // A named statement cannot be redefined until it is deallocated.
    c.parse("s", "SELECT 2", &[]).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("42P05"));
    let msgs = c.query("DEALLOCATE s").await;
    assert_eq!(msgs[0].tag_text(), "DEALLOCATE");
    c.parse("s", "SELECT 2", &[]).await;
    c.parse("t", "SELECT 3", &[]).await;
    assert_eq!(tags(&c.sync().await), "11Z");
    let msgs = c.query("deallocate all;").await;
    assert_eq!(msgs[0].tag_text(), "DEALLOCATE ALL");
    c.bind("", "t", &[], &[], &[]).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("26000"));
    let msgs = c.query("DEALLOCATE nope").await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("26000"));
    // Through the extended protocol too, and Close frees a name.
    c.parse("u", "SELECT 4", &[]).await;
    c.parse("", "DEALLOCATE u", &[]).await;
    c.bind("", "", &[], &[], &[]).await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "112CZ", "{msgs:?}");
    assert_eq!(msgs[3].tag_text(), "DEALLOCATE");
    c.parse("u", "SELECT 5", &[]).await;
    c.send(b'C', b"Su\0").await;
    c.parse("u", "SELECT 6", &[]).await;
    assert_eq!(tags(&c.sync().await), "131Z");
    server.stop().await;
}

/// SQL-level PREPARE / EXECUTE / DEALLOCATE through the front end, on runtime worker
/// threads as in the server (an EXECUTE's future once overflowed their stack), and
/// DEALLOCATE finding a statement of either kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_and_deallocate() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.query("CREATE TABLE pe (id INT PRIMARY KEY, name TEXT, score NUMERIC(5,2))")
        .await;
    let msgs = c
        .query("PREPARE ins (int, text, numeric) AS INSERT INTO pe VALUES ($1, $2, $3)")
        .await;
    assert_eq!(msgs[0].tag_text(), "PREPARE");
    let msgs = c.query("EXECUTE ins (1, 'a' || 'b', 1.5)").await;
    assert_eq!(msgs[0].tag_text(), "INSERT 0 1", "{msgs:?}");
    let msgs = c.query("EXECUTE ins (2, 'c', 2 * 3)").await;
    assert_eq!(msgs[0].tag_text(), "INSERT 0 1", "{msgs:?}");
    c.query("PREPARE sel AS SELECT name FROM pe WHERE id = $1")
        .await;
    let msgs = c.query("EXECUTE sel (1)").await;
    assert_eq!(tags(&msgs), "TDCZ");
    assert_eq!(msgs[1].text_cells(), vec![Some("ab".to_owned())]);
    assert_eq!(msgs[2].tag_text(), "SELECT 1");
    // The extended protocol describes an EXECUTE by its statement's columns.
    c.parse("", "EXECUTE sel ($1)", &[]).await;
    c.bind("", "", &[], &[Some(b"1".as_slice())], &[]).await;
    c.describe(b'P', "").await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12TDCZ", "{msgs:?}");
    let msgs = c.query("EXECUTE sel (1, 2)").await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("42601"));
    // DEALLOCATE finds a statement of SQL-level PREPARE; then it is gone.
    let msgs = c.query("DEALLOCATE sel").await;
    assert_eq!(msgs[0].tag_text(), "DEALLOCATE");
    let msgs = c.query("EXECUTE sel (1)").await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("26000"));
    let msgs = c.query("DEALLOCATE ALL").await;
    assert_eq!(msgs[0].tag_text(), "DEALLOCATE ALL");
    let msgs = c.query("EXECUTE ins (2, 'c')").await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("26000"));
    server.stop().await;
}

#[tokio::test]
async fn portal_row_limits_suspend_and_resume() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.query("CREATE TABLE t (id INT PRIMARY KEY)").await;
    c.query("INSERT INTO t VALUES (1), (2), (3)").await;
    c.query("BEGIN").await;
    c.parse("", "SELECT id FROM t ORDER BY id", &[]).await;
    c.bind("p", "", &[], &[], &[]).await;
    c.execute("p", 2).await;
    c.execute("p", 2).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12DDsDCZ", "{msgs:?}");
    assert_eq!(msgs[6].tag_text(), "SELECT 1");
    assert_eq!(ready_status(&msgs), b'T');
    assert_eq!(ready_status(&c.query("COMMIT").await), b'I');
    server.stop().await;
}

#[tokio::test]
async fn portals_close_with_their_transaction_and_are_capped() {
    let server = Server::start(PgServerConfig {
        portals_max: 2,
        ..config()
    })
    .await;
    let (mut c, _) = Client::start(server.addr).await;
    c.query("CREATE TABLE t (id INT PRIMARY KEY)").await;
    c.query("INSERT INTO t VALUES (1), (2), (3)").await;
    c.parse("s", "SELECT id FROM t ORDER BY id", &[]).await;
    // Outside a block, a suspended portal lives until Sync ends the implicit transaction.
    c.bind("p", "s", &[], &[], &[]).await;
    c.execute("p", 1).await;
    c.execute("p", 1).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12DsDsZ", "{msgs:?}");
    c.execute("p", 0).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("34000"), "{msgs:?}");
    // In a block, portals stay open across Syncs, at most `portals_max` of them named.
    c.query("BEGIN").await;
    c.bind("a", "s", &[], &[], &[]).await;
    c.bind("b", "s", &[], &[], &[]).await;
    c.bind("", "s", &[], &[], &[]).await;
    assert_eq!(tags(&c.sync().await), "222Z");
    c.bind("c", "s", &[], &[], &[]).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("54000"), "{msgs:?}");
    assert!(
        msgs[0].field(b'M').unwrap().contains("portals_max"),
        "{msgs:?}"
    );
    assert_eq!(ready_status(&msgs), b'E');
    assert_eq!(ready_status(&c.query("ROLLBACK").await), b'I');
    // ROLLBACK closed them all: the names are free again, and Close frees one too.
    c.query("BEGIN").await;
    c.bind("a", "s", &[], &[], &[]).await;
    c.bind("b", "s", &[], &[], &[]).await;
    c.send(b'C', b"Pa\0").await;
    c.bind("c", "s", &[], &[], &[]).await;
    c.execute("c", 1).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "2232DsZ", "{msgs:?}");
    assert_eq!(ready_status(&c.query("COMMIT").await), b'I');
    c.execute("c", 0).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("34000"), "{msgs:?}");
    server.stop().await;
}

#[tokio::test]
async fn named_statements_are_capped_per_connection() {
    let server = Server::start(PgServerConfig {
        prepared_statements_max: 2,
        ..config()
    })
    .await;
    let (mut c, _) = Client::start(server.addr).await;
    c.parse("s1", "SELECT 1", &[]).await;
    c.parse("s2", "SELECT 2", &[]).await;
    assert_eq!(tags(&c.sync().await), "11Z");
    c.parse("s3", "SELECT 3", &[]).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("54000"), "{msgs:?}");
    assert!(
        msgs[0]
            .field(b'M')
            .unwrap()
            .contains("prepared_statements_max"),
        "{msgs:?}"
    );
    // The unnamed statement is not counted; closing a named one makes room.
    c.parse("", "SELECT 4", &[]).await;
    c.send(b'C', b"Ss1\0").await;
    c.parse("s3", "SELECT 3", &[]).await;
    c.bind("", "s3", &[], &[], &[]).await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "1312DCZ", "{msgs:?}");
    // Another connection has its own.
    let (mut d, _) = Client::start(server.addr).await;
    d.parse("s1", "SELECT 1", &[]).await;
    d.parse("s2", "SELECT 2", &[]).await;
    assert_eq!(tags(&d.sync().await), "11Z");
    server.stop().await;
}

#[tokio::test]
async fn rows_suspended_portals_hold_count_against_the_result_bound() {
    let server = Server::start_with(
        config(),
        SqlConfig {
            result_bytes_max: 1024 * 1024,
            ..SqlConfig::default()
        },
    )
    .await;
    let (mut c, _) = Client::start(server.addr).await;
    // About 700 kB of rows each.
    c.parse(
        "big",
        "SELECT repeat('x', 1000) FROM generate_series(1, 700)",
        &[],
    )
    .await;
    c.bind("p1", "big", &[], &[], &[]).await;
    c.execute("p1", 1).await;
    c.bind("p2", "big", &[], &[], &[]).await;
    c.execute("p2", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12Ds2EZ", "{msgs:?}");
    assert_eq!(msgs[5].field(b'C').as_deref(), Some("54000"), "{msgs:?}");
    let message = msgs[5].field(b'M').unwrap();
    assert!(
        message.contains("result_bytes_max (1048576 bytes)") && message.contains("suspended"),
        "{message}"
    );
    // Once the first portal is drained, the second fits.
    c.bind("p1", "big", &[], &[], &[]).await;
    c.execute("p1", 1).await;
    c.execute("p1", 0).await;
    c.bind("p2", "big", &[], &[], &[]).await;
    c.execute("p2", 0).await;
    let msgs = c.sync().await;
    assert_eq!(msgs.iter().filter(|m| m.tag == b'D').count(), 1400);
    assert_eq!(msgs.iter().filter(|m| m.tag == b'C').count(), 2);
    assert_eq!(ready_status(&msgs), b'I');
    server.stop().await;
}

#[tokio::test]
async fn extended_transaction_status_follows_session() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.query("CREATE TABLE t (id INT PRIMARY KEY)").await;
    c.query("INSERT INTO t VALUES (1)").await;
    for (sql, status) in [("BEGIN", b'T'), ("SELECT 1", b'T')] {
        c.parse("", sql, &[]).await;
        c.bind("", "", &[], &[], &[]).await;
        c.execute("", 0).await;
        let msgs = c.sync().await;
        assert_eq!(ready_status(&msgs), status, "{sql}: {msgs:?}");
    }
    // An execution error fails the block; the rest of the pipeline is skipped until Sync.
    c.parse("", "INSERT INTO t VALUES ($1)", &[]).await;
    c.bind("", "", &[], &[Some(b"1")], &[]).await;
    c.execute("", 0).await;
    c.parse("", "SELECT 1", &[]).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12EZ", "{msgs:?}");
    assert_eq!(msgs[2].field(b'C').as_deref(), Some("23505"));
    assert_eq!(ready_status(&msgs), b'E');
    c.parse("", "ROLLBACK", &[]).await;
    c.bind("", "", &[], &[], &[]).await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(ready_status(&msgs), b'I', "{msgs:?}");
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let server = Server::start(PgServerConfig {
        max_connections: 1,
        ..config()
    })
    .await;
    let (mut first, _) = Client::start(server.addr).await;
    let mut second = Client::connect(server.addr).await;
    let msgs = second.startup("bob").await;
    assert_eq!(tags(&msgs), "E", "{msgs:?}");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("53300"));
    assert_eq!(
        msgs[0].field(b'M').as_deref(),
        Some("sorry, too many clients already")
    );
    assert!(second.recv().await.is_none(), "refused connection closes");
    // The admitted connection is unaffected.
    assert_eq!(tags(&first.query("SELECT 1").await), "TDCZ");
    // Closing it frees the slot.
    first.send(b'X', &[]).await;
    assert!(first.recv().await.is_none());
    let mut third = None;
    for _ in 0..100 {
        let mut c = Client::connect(server.addr).await;
        let msgs = c.startup("carol").await;
        if ready_status_opt(&msgs) == Some(b'I') {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = third.expect("slot freed after disconnect");
    assert_eq!(tags(&third.query("SELECT 1").await), "TDCZ");
    server.stop().await;
}

fn ready_status_opt(msgs: &[Msg]) -> Option<u8> {
    msgs.last().filter(|m| m.tag == b'Z').map(|m| m.body[0])
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    let server = Server::start(config()).await;
    let (mut good, _) = Client::start(server.addr).await;

    // Garbage instead of a startup packet.
    let mut bad = Client::connect(server.addr).await;
    bad.stream
        .write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    while bad.recv().await.is_some() {}

    // A started connection sending an unknown message type and a truncated Bind.
    let (mut bad2, _) = Client::start(server.addr).await;
    bad2.send(b'B', &[0, 0, 0xff, 0xff]).await;
    while bad2.recv().await.is_some() {}
    let (mut bad3, _) = Client::start(server.addr).await;
    bad3.send(b'@', b"nonsense").await;
    while bad3.recv().await.is_some() {}

    assert_eq!(tags(&good.query("SELECT 1").await), "TDCZ");
    server.stop().await;
}

#[tokio::test]
async fn slow_startup_is_dropped() {
    let server = Server::start(PgServerConfig {
        startup_timeout_ms: 200,
        ..config()
    })
    .await;
    let mut idle = Client::connect(server.addr).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.recv())
        .await
        .expect("closed before the test timeout");
    assert!(closed.is_none());
    // A started connection outlives the startup deadline.
    let (mut c, _) = Client::start(server.addr).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(tags(&c.query("SELECT 1").await), "TDCZ");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    let addr = server.addr;
    server.stop().await;
    assert!(c.recv().await.is_none(), "connection closed on shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

/// COPY FROM STDIN message by message: CopyInResponse, data in pieces that split rows,
/// CopyDone with its row count; a client's CopyFail rolls the COPY back (its own
/// transaction, or the block it ran in, which it aborts).
#[tokio::test]
async fn copy_from_stdin_and_copy_fail() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.query("CREATE TABLE t (id INT PRIMARY KEY, name TEXT)")
        .await;

    let mut body = Vec::new();
    cstr(&mut body, "COPY t FROM STDIN");
    c.send(b'Q', &body).await;
    let msgs = c.until(|m| m.tag == b'G' || m.tag == b'Z').await;
    assert_eq!(tags(&msgs), "G", "{msgs:?}");
    // Text format, 2 columns.
    assert_eq!(msgs[0].body, [0, 0, 2, 0, 0, 0, 0]);
    c.send(b'd', b"1\tone\n2\tt").await;
    c.send(b'd', b"wo\n3\t\\N\n").await;
    c.send(b'c', &[]).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "CZ", "{msgs:?}");
    assert_eq!(msgs[0].tag_text(), "COPY 3");
    assert_eq!(ready_status(&msgs), b'I');
    let msgs = c.query("SELECT name FROM t WHERE id = 2").await;
    assert_eq!(msgs[1].text_cells(), vec![Some("two".to_owned())]);

    // The client gives up: nothing of it stays.
    c.send(b'Q', &body).await;
    assert_eq!(tags(&c.until(|m| m.tag == b'G').await), "G");
    c.send(b'd', b"4\tfour\n").await;
    let mut fail = Vec::new();
    cstr(&mut fail, "client gave up");
    c.send(b'f', &fail).await;
    let msgs = c.until_ready().await;
    assert_eq!(tags(&msgs), "EZ", "{msgs:?}");
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("57014"));
    assert_eq!(ready_status(&msgs), b'I');

    // In a block, the failure aborts the block.
    c.query("BEGIN").await;
    c.send(b'Q', &body).await;
    assert_eq!(tags(&c.until(|m| m.tag == b'G').await), "G");
    c.send(b'd', b"5\tfive\n").await;
    c.send(b'f', &fail).await;
    let msgs = c.until_ready().await;
    assert_eq!(ready_status(&msgs), b'E', "{msgs:?}");
    assert_eq!(ready_status(&c.query("ROLLBACK").await), b'I');
    let msgs = c.query("SELECT count(*) FROM t").await;
    assert_eq!(msgs[1].text_cells(), vec![Some("3".to_owned())]);
    server.stop().await;
}

/// The fields of an ErrorResponse body, by their one-byte codes.
fn error_fields(body: &[u8]) -> std::collections::HashMap<u8, String> {
    body.split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
        .collect()
}

/// An inbound message longer than `message_bytes_max` ends its connection with FATAL 54000
/// as soon as its length word arrives, before its body is read or buffered; a message
/// within the bound, and every other connection, go on. Before, pgwire buffered up to
/// 1 GiB of one message before any check of ours.
#[tokio::test]
async fn an_inbound_message_past_the_bound_ends_only_its_connection() {
    let server = Server::start(PgServerConfig {
        message_bytes_max: 4096,
        ..config()
    })
    .await;
    let (mut other, _) = Client::start(server.addr).await;
    let (mut client, _) = Client::start(server.addr).await;
    // Within the bound, by a few bytes: served.
    let sql = format!("SELECT '{}'", "x".repeat(4000));
    assert_eq!(tags(&client.query(&sql).await), "TDCZ");
    // A Query announcing 1 GiB, of which only a few bytes follow.
    let mut header = vec![b'Q'];
    header.extend_from_slice(&0x3fff_ffffi32.to_be_bytes());
    header.extend_from_slice(b"SELECT ");
    client.stream.write_all(&header).await.expect("write");
    let error = client.recv().await.expect("an error before the close");
    assert_eq!(error.tag, b'E');
    let fields = error_fields(&error.body);
    assert_eq!(fields[&b'C'], "54000");
    assert_eq!(fields[&b'S'], "FATAL");
    assert!(fields[&b'M'].contains("message_bytes_max"), "{fields:?}");
    assert!(client.recv().await.is_none(), "the connection is closed");
    // A startup packet past the bound is refused the same way.
    let mut huge_startup = Client::connect(server.addr).await;
    let mut packet = (1i32 << 24).to_be_bytes().to_vec();
    packet.extend_from_slice(&196_608i32.to_be_bytes());
    huge_startup.stream.write_all(&packet).await.expect("write");
    while huge_startup.recv().await.is_some() {}
    // Everyone else is served.
    assert_eq!(tags(&other.query("SELECT 1").await), "TDCZ");
    server.stop().await;
}

/// `DISCARD ALL`, which connection poolers send when a client hands a connection back,
/// drops the connection's prepared statements and resets its settings; inside a
/// transaction block it is 25001 and changes nothing. Before, it was 0A000.
#[tokio::test]
async fn discard_all_resets_a_connection_for_its_next_user() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    c.parse("s", "SELECT 1", &[]).await;
    assert_eq!(tags(&c.sync().await), "1Z");
    assert_eq!(tags(&c.query("SET lock_timeout = 1234").await), "CZ");
    let msgs = c.query("BEGIN; DISCARD ALL").await;
    assert_eq!(msgs.last().map(|m| m.body[0]), Some(b'E'), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.field(b'C').as_deref() == Some("25001"))
    );
    c.query("ROLLBACK").await;
    let shown = c.query("SHOW lock_timeout").await;
    let has_1234 = |msgs: &[Msg]| {
        msgs.iter()
            .any(|m| m.tag == b'D' && m.body.windows(4).any(|w| w == b"1234"))
    };
    assert!(has_1234(&shown), "{shown:?}");
    let msgs = c.query("DISCARD ALL").await;
    assert_eq!(msgs[0].tag_text(), "DISCARD ALL");
    c.bind("", "s", &[], &[], &[]).await;
    let msgs = c.sync().await;
    assert_eq!(msgs[0].field(b'C').as_deref(), Some("26000"));
    let shown = c.query("SHOW lock_timeout").await;
    assert!(!has_1234(&shown), "{shown:?}");
    // The name is free again.
    c.parse("s", "SELECT 2", &[]).await;
    assert_eq!(tags(&c.sync().await), "1Z");
    server.stop().await;
}

/// A one-dimensional array is described with its array type's OID, and sent in
/// PostgreSQL's text form, or in its binary form when asked (drivers decode it to a
/// list either way); an array of arrays stays `text`.
#[tokio::test]
async fn arrays_are_typed_and_sent_in_text_or_binary() {
    let server = Server::start(config()).await;
    let (mut c, _) = Client::start(server.addr).await;
    let sql = "SELECT ARRAY[1, NULL, 3], ARRAY['a b', 'c'], ARRAY[[1, 2], [3, 4]]";
    let msgs = c.query(sql).await;
    let oids: Vec<u32> = msgs[0].columns().iter().map(|col| col.1).collect();
    assert_eq!(oids, vec![1007, 1009, 25]);
    let cells = msgs[1].text_cells();
    assert_eq!(cells[0].as_deref(), Some("{1,NULL,3}"));
    assert_eq!(cells[1].as_deref(), Some("{\"a b\",c}"));
    assert_eq!(cells[2].as_deref(), Some("{{1,2},{3,4}}"));

    c.parse("", sql, &[]).await;
    c.bind("", "", &[], &[], &[1]).await;
    c.execute("", 0).await;
    let msgs = c.sync().await;
    assert_eq!(tags(&msgs), "12DCZ", "{msgs:?}");
    let cells = msgs[2].cells();
    let int4s: Vec<u8> = [
        &1i32.to_be_bytes()[..], // dimensions
        &1i32.to_be_bytes(),     // has NULLs
        &23u32.to_be_bytes(),    // element type int4
        &3i32.to_be_bytes(),     // length
        &1i32.to_be_bytes(),     // lower bound
        &4i32.to_be_bytes(),
        &1i32.to_be_bytes(),
        &(-1i32).to_be_bytes(),
        &4i32.to_be_bytes(),
        &3i32.to_be_bytes(),
    ]
    .concat();
    assert_eq!(cells[0].as_deref(), Some(&int4s[..]));
    let texts: Vec<u8> = [
        &1i32.to_be_bytes()[..],
        &0i32.to_be_bytes(),
        &25u32.to_be_bytes(),
        &2i32.to_be_bytes(),
        &1i32.to_be_bytes(),
        &3i32.to_be_bytes(),
        b"a b",
        &1i32.to_be_bytes(),
        b"c",
    ]
    .concat();
    assert_eq!(cells[1].as_deref(), Some(&texts[..]));
    assert_eq!(cells[2].as_deref(), Some(&b"{{1,2},{3,4}}"[..]));
    server.stop().await;
}
