//! Test helpers: real backend servers on 127.0.0.1 that can be slowed,
//! broken and killed, a balancer started in-process, and a small client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lab_balancer::config::{Config, UpstreamConfig};
use lab_balancer::Running;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

/// What a backend does, changeable while it runs.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Delay before answering anything but /healthz.
    pub delay_ms: AtomicU64,
    /// Close the connection without answering (anything but /healthz).
    pub drop_requests: AtomicBool,
    /// /healthz answers 500 when set.
    pub unhealthy: AtomicBool,
    /// Requests other than /healthz, by method.
    pub gets: AtomicU64,
    pub posts: AtomicU64,
    /// Requests being handled now (not /healthz).
    pub active: AtomicUsize,
}

/// A small HTTP server that answers with `X-Served-By: <name>`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    accept: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState::default());
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let state = state.clone();
            let conns = conns.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    let name = name.clone();
                    let svc = service_fn(move |req| handle(state.clone(), name.clone(), req));
                    let task = tokio::spawn(async move {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                    let mut list = conns.lock().unwrap();
                    list.retain(|t| !t.is_finished());
                    list.push(task);
                }
            })
        };
        Backend {
            name: name.to_owned(),
            addr,
            state,
            accept: Mutex::new(Some(accept)),
            conns,
        }
    }

    /// Dies the way a crashed process does: the port stops listening and
    /// every open connection is closed, requests in flight included.
    pub async fn kill(&self) {
        let accept = self.accept.lock().unwrap().take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        let conns: Vec<_> = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in &conns {
            c.abort();
        }
        for c in conns {
            let _ = c.await;
        }
    }

    pub fn upstream(&self) -> UpstreamConfig {
        UpstreamConfig {
            name: self.name.clone(),
            address: self.addr.to_string(),
        }
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn gets(&self) -> u64 {
        self.state.gets.load(Ordering::SeqCst)
    }

    pub fn posts(&self) -> u64 {
        self.state.posts.load(Ordering::SeqCst)
    }

    pub fn active(&self) -> usize {
        self.state.active.load(Ordering::SeqCst)
    }
}

struct ActiveGuard(Arc<BackendState>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    state: Arc<BackendState>,
    name: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        let status = if state.unhealthy.load(Ordering::SeqCst) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        return Ok(Response::builder()
            .status(status)
            .header("x-served-by", &name)
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap());
    }
    match *req.method() {
        Method::POST => state.posts.fetch_add(1, Ordering::SeqCst),
        _ => state.gets.fetch_add(1, Ordering::SeqCst),
    };
    state.active.fetch_add(1, Ordering::SeqCst);
    let _active = ActiveGuard(state.clone());
    if state.drop_requests.load(Ordering::SeqCst) {
        return Err(std::io::Error::other("backend told to drop the connection"));
    }
    let mut delay = state.delay_ms.load(Ordering::SeqCst);
    if path == "/slow" {
        delay = query(req.uri().query(), "ms").unwrap_or(1000);
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let body = if path == "/echo" {
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::json!({
            "server": name,
            "method": parts.method.as_str(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        })
        .to_string()
    } else {
        name.clone()
    };
    Ok(Response::builder()
        .header("x-served-by", &name)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

fn query(q: Option<&str>, key: &str) -> Option<u64> {
    q?.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// A config for tests: loopback, ephemeral ports, the documented defaults
/// for everything else.
pub fn config(backends: &[&Backend]) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: backends.iter().map(|b| b.upstream()).collect(),
        ..Config::default()
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn served_by(&self) -> Option<&str> {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn set_cookie(&self) -> Option<String> {
        self.headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A keep-alive HTTP client, like a browser's.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp, String> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .map_err(|_| "client timeout".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&self, url: &str) -> Resp {
        self.send(Method::GET, url, &[], "").await.unwrap()
    }
}

/// Sends one GET from a chosen source address on the loopback network
/// (127.0.0.0/8 is all local on Linux), to look like distinct clients.
pub async fn get_from(src: IpAddr, to: SocketAddr, path: &str) -> Resp {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", to.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A balancer started in-process, with a client for it.
pub struct Lb {
    pub running: Running,
    pub client: TestClient,
}

impl Lb {
    pub async fn start(config: Config) -> Lb {
        let running = lab_balancer::start(config).await.unwrap();
        Lb {
            running,
            client: TestClient::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.proxy_addr())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr())
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.client.get(&self.url(path)).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: &str) -> Resp {
        self.client
            .send(
                method,
                &self.admin_url(path),
                &[("content-type", "application/json")],
                body,
            )
            .await
            .unwrap()
    }

    pub async fn servers(&self) -> serde_json::Value {
        self.admin(Method::GET, "/servers", "").await.json()
    }

    /// State of one server as the admin API reports it.
    pub async fn state_of(&self, name: &str) -> String {
        let v = self.servers().await;
        v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| "absent".into())
    }

    /// Polls until `name` has `state`, at most `limit`.
    pub async fn wait_state(&self, name: &str, state: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let now = self.state_of(name).await;
            if now == state {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{name} still {now}, not {state}, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.admin(Method::GET, "/metrics", "").await.body
    }
}

/// Counts responses by `X-Served-By`.
pub fn tally<'a>(resps: impl IntoIterator<Item = &'a Resp>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in resps {
        *m.entry(r.served_by().unwrap_or("-").to_owned())
            .or_insert(0) += 1;
    }
    m
}
