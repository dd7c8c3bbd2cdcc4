//! Test fixture: real PostgreSQL (a primary and streaming replicas) and a
//! real Redis, started from the Debian packages' binaries, plus in-process
//! app servers to point at them.
//!
//! Every server binds 127.0.0.1 on a free port, keeps its files in its own
//! temporary directory, and is stopped by a `Drop` guard, so a failing test
//! cleans up too. Each process is also started through `setpriv --pdeathsig
//! KILL`: if the test process itself is killed (a CI timeout), the kernel
//! kills what it started, instead of leaving databases behind.
//!
//! PostgreSQL refuses to run as root, and CI runs tests as root: then data
//! directories are given to the `postgres` user and every PostgreSQL program
//! runs as that user.
//!
//! Without the binaries the tests fail with one line naming the Debian
//! package to install, unless `LAB_SKIP_SERVICES=1` (then they return early,
//! saying so).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lab_app::{AppState, Config};
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether the services are available. `false` (skip) only when
/// `LAB_SKIP_SERVICES=1`; a missing binary otherwise fails the test with one
/// line naming the package.
pub fn services_available() -> bool {
    if std::env::var("LAB_SKIP_SERVICES").as_deref() == Ok("1") {
        eprintln!("LAB_SKIP_SERVICES=1: skipping a test that needs PostgreSQL and Redis");
        return false;
    }
    for prog in ["initdb", "postgres", "pg_basebackup"] {
        if !Path::new(PG_BIN).join(prog).exists() {
            panic!(
                "{PG_BIN}/{prog} not found: install the Debian package postgresql-15 (apt-get install postgresql-15), or set LAB_SKIP_SERVICES=1"
            );
        }
    }
    if which("redis-server").is_none() {
        panic!(
            "redis-server not found: install the Debian package redis-server (apt-get install redis-server), or set LAB_SKIP_SERVICES=1"
        );
    }
    if which("setpriv").is_none() {
        panic!("setpriv not found: install the Debian package util-linux");
    }
    true
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(prog))
            .find(|p| p.is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command for `prog`, run as `postgres` when we are root, and killed
/// with us when `die_with_us`.
fn pg_command(prog: &str, die_with_us: bool) -> Command {
    let mut cmd = Command::new("setpriv");
    if die_with_us {
        cmd.args(["--pdeathsig", "KILL"]);
    }
    if is_root() {
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    }
    cmd.arg("--").arg(Path::new(PG_BIN).join(prog));
    cmd
}

fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A temporary directory the `postgres` user can enter.
fn shared_temp_dir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("lab-app-test-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A directory owned by `postgres` (when root) with mode 0700, as PostgreSQL demands.
fn pg_owned_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        run_ok(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(path);
                c
            },
            "chown",
        );
    }
}

/// One PostgreSQL 15 server.
pub struct Pg {
    /// Its port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: TempDir,
}

impl Pg {
    /// A fresh primary, ready for streaming replication. `extra_conf` lines
    /// are appended to postgresql.conf.
    pub async fn primary(extra_conf: &[&str]) -> Pg {
        let dir = shared_temp_dir();
        let data = dir.path().join("data");
        pg_owned_dir(&data);
        let mut initdb = pg_command("initdb", false);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        run_ok(initdb, "initdb");
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            // Speed over durability: these clusters live for one test.
            "fsync = off",
            "full_page_writes = off",
            "shared_buffers = 16MB",
            "max_connections = 60",
            "wal_level = replica",
            "max_wal_senders = 5",
            "hot_standby = on",
            "log_min_messages = warning",
        ];
        conf.extend_from_slice(extra_conf);
        append_conf(&data, &conf);
        Pg::launch(dir, data).await
    }

    /// A streaming replica of `primary`, made with pg_basebackup.
    pub async fn replica_of(primary: &Pg) -> Pg {
        let dir = shared_temp_dir();
        let data = dir.path().join("data");
        pg_owned_dir(&data);
        let mut backup = pg_command("pg_basebackup", false);
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            // -R writes standby.signal and primary_conninfo: a streaming standby.
            .args(["-R", "-X", "stream", "--no-sync"]);
        run_ok(backup, "pg_basebackup");
        Pg::launch(dir, data).await
    }

    /// Starts a server on the data directory `data` (inside `dir`) on a
    /// free port.
    async fn launch(dir: TempDir, data: PathBuf) -> Pg {
        let mut pg = Pg {
            port: free_port(),
            log: dir.path().join("postgres.log"),
            data,
            child: None,
            _dir: dir,
        };
        pg.start().await;
        pg
    }

    async fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&self.log);
                    c
                },
                "chown log",
            );
        }
        let mut cmd = pg_command("postgres", true);
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start postgres"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = PgConnection::connect(&self.url()).await {
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server's log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A URL to the `postgres` database as superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A URL to another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The name the app gives this server when all share 127.0.0.1.
    pub fn app_name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A direct connection, for test set-up and checks.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("connect to test postgres")
    }

    /// Runs one statement.
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

fn append_conf(data: &Path, lines: &[&str]) {
    let path = data.join("postgresql.conf");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(file, "\n# added by the lab-app tests").unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
}

/// One redis-server, without persistence. Can be killed and restarted on
/// the same port.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a Redis on a free port.
    pub fn start() -> RedisServer {
        let mut redis = RedisServer {
            port: free_port(),
            child: None,
            dir: shared_temp_dir(),
        };
        redis.restart();
        redis
    }

    /// The URL for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "redis-server"])
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pings() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// SIGKILL, the way a machine dies.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An app server running in this process on a loopback port.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state, to look inside (pools, metrics).
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    /// Starts an app with these environment variables (`SERVER_NAME`,
    /// `BIND` and `PORT` are filled in when absent).
    pub async fn start(vars: &[(&str, &str)]) -> TestApp {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.entry("SERVER_NAME".into())
            .or_insert_with(|| "server-test".into());
        let config = Config::from_lookup(|k| map.get(k).cloned()).expect("valid test config");
        let state = AppState::new(config).expect("app state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            lab_app::serve(listener, None, serve_state, shutdown)
                .await
                .unwrap();
        });
        TestApp {
            addr,
            state,
            stop: Some(stop),
            task,
        }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until this app has applied (or found) the migrations.
    pub async fn wait_migrated(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.state.db().is_migrated() {
            assert!(Instant::now() < deadline, "migrations were not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of a metric line that starts with `prefix` (0 if absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.state
            .metrics()
            .render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// An HTTP client that never follows redirects nor keeps cookies: tests
/// pass cookies by hand, the way a balancer would forward them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `X-Served-By`.
    pub served_by: String,
    /// `lab_session=...` from Set-Cookie, if set.
    pub cookie: Option<String>,
    /// The body as JSON (Null if not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

/// Sends `method path` with an optional JSON body and cookie.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&str>,
    cookie: Option<&str>,
) -> Reply {
    let mut req = client.request(method, url);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    if let Some(cookie) = cookie {
        req = req.header(COOKIE, cookie);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = res.status().as_u16();
    let served_by = res
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let cookie = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lab_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let text = res.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        served_by,
        cookie,
        json,
        text,
    }
}

/// GET.
pub async fn get(client: &reqwest::Client, url: &str, cookie: Option<&str>) -> Reply {
    send(client, reqwest::Method::GET, url, None, cookie).await
}

/// POST with a JSON body.
pub async fn post(client: &reqwest::Client, url: &str, body: &str, cookie: Option<&str>) -> Reply {
    send(client, reqwest::Method::POST, url, Some(body), cookie).await
}

/// Polls `check` every 100 ms until it returns true, or fails after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A secret long enough for every session mode.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
