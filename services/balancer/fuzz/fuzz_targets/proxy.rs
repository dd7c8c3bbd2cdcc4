//! Fuzz target: client bytes through the whole proxy to a strict server.
//!
//! The input is what a client writes on one connection (then it closes its
//! sending side). It goes through the balancer's own request path, in
//! process: hyper's server (as in `server.rs`) over an in-memory pipe, then
//! `proxy::handle` on a real worker, whose pool talks over loopback TCP to
//! a scripted server. The harness tags each request the balancer accepts
//! with a sequence number in its path (`/f<n>/...`), before the proxy sees
//! it, and the scripted server parses what arrives strictly (RFC 9112).
//! Checked, for every input:
//!
//! * the server can parse everything the balancer sends it: no bytes that
//!   are not a well-framed request (request smuggling would show up here);
//! * every request the server gets carries a tag the harness issued, never
//!   one twice: the balancer never turns one request into two;
//! * each answer the client gets from the server is the one made for its
//!   own request (tag and body), never another's;
//! * a well-behaved server never costs the client a 502 or 504;
//! * nothing hangs (10 s per input).

#![no_main]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lab_balancer::proxy::{self, ClientAddr, ResponseBody};
use lab_balancer::worker::Worker;
use lab_balancer::{Balancer, Config};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

#[derive(Default)]
struct State {
    /// The next tag to issue.
    issued: u64,
    /// Tags the server has received (recent ones).
    seen: HashSet<u64>,
    /// What went wrong.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn violation(state: &Shared, what: String) {
    state.lock().unwrap().violations.push(what);
}

struct Harness {
    rt: Runtime,
    worker: Arc<Worker>,
    state: Shared,
    client: Arc<ClientAddr>,
    /// PROXY_FUZZ_VERBOSE set: print the counts after each input.
    verbose: bool,
}

thread_local! {
    static HARNESS: Harness = Harness::new();
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let state: Shared = Arc::default();
        let addr = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let (s, _) = listener.accept().await.unwrap();
                    tokio::spawn(serve_strictly(s, state.clone()));
                }
            });
            addr
        });
        let config = Config::parse(&format!(
            r#"
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            workers = 1
            [[upstream]]
            name = "s"
            address = "{addr}"
            [passive]
            max_fails = 0
            [timeouts]
            connect = "2s"
            response = "5s"
            "#
        ))
        .unwrap();
        let lb = Arc::new(Balancer::new(config).unwrap());
        let worker = Arc::new(Worker::new(lb, 0));
        Self {
            rt,
            worker,
            state,
            client: Arc::new(ClientAddr::new("127.0.0.1:40000".parse().unwrap())),
            verbose: std::env::var_os("PROXY_FUZZ_VERBOSE").is_some(),
        }
    }
}

/// Reads more into `buf`; false at the end of the stream.
async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Takes a CRLF-ended line off `buf`, reading as needed.
async fn line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l = buf[..i].to_vec();
            buf.drain(..i + 2);
            return Some(l);
        }
        if !more(s, buf).await {
            return None;
        }
    }
}

/// The scripted server: parses each request strictly and answers it with
/// its tag. Anything it cannot parse is a violation.
async fn serve_strictly(mut s: TcpStream, state: Shared) {
    let mut buf = Vec::new();
    loop {
        let (len, method, path, chunked, length) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 160];
            let mut req = httparse::Request::new(&mut fields);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut te = Vec::new();
                    let mut cl = Vec::new();
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            te.push(h.value.to_vec());
                        }
                        if h.name.eq_ignore_ascii_case("content-length") {
                            cl.push(h.value.to_vec());
                        }
                    }
                    if !te.is_empty() && !cl.is_empty() || te.len() > 1 || cl.len() > 1 {
                        violation(&state, format!("ambiguous framing: te {te:?} cl {cl:?}"));
                        return;
                    }
                    if te.first().is_some_and(|v| v != b"chunked") {
                        violation(&state, format!("transfer-encoding {te:?}"));
                        return;
                    }
                    let length = match cl.first() {
                        None => 0,
                        Some(v) => match std::str::from_utf8(v).ok().and_then(|v| {
                            v.bytes()
                                .all(|b| b.is_ascii_digit())
                                .then(|| v.parse().ok())?
                        }) {
                            Some(n) => n,
                            None => {
                                violation(&state, format!("content-length {v:?}"));
                                return;
                            }
                        },
                    };
                    break (
                        len,
                        req.method.unwrap_or("").to_owned(),
                        req.path.unwrap_or("").to_owned(),
                        !te.is_empty(),
                        length,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if !more(&mut s, &mut buf).await {
                        return; // the balancer closed: fine between requests
                    }
                }
                Err(e) => {
                    violation(
                        &state,
                        format!(
                            "unparsable request ({e}): {:?}",
                            String::from_utf8_lossy(&buf)
                        ),
                    );
                    return;
                }
            }
        };
        buf.drain(..len);
        // the body: a closed connection mid-body is a client that gave up
        if chunked {
            loop {
                let Some(size) = line(&mut s, &mut buf).await else {
                    return;
                };
                let Some(size) = std::str::from_utf8(&size)
                    .ok()
                    .and_then(|t| usize::from_str_radix(t, 16).ok())
                else {
                    violation(&state, format!("chunk size line {size:?}"));
                    return;
                };
                while buf.len() < size + 2 {
                    if !more(&mut s, &mut buf).await {
                        return;
                    }
                }
                if &buf[size..size + 2] != b"\r\n" {
                    violation(&state, "chunk not followed by CRLF".into());
                    return;
                }
                buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else {
            while buf.len() < length {
                if !more(&mut s, &mut buf).await {
                    return;
                }
            }
            buf.drain(..length);
        }
        let Some(tag) = path
            .strip_prefix("/f")
            .and_then(|p| p.split('/').next())
            .and_then(|t| t.parse::<u64>().ok())
        else {
            violation(
                &state,
                format!("a request the harness never tagged: {path}"),
            );
            return;
        };
        {
            let mut st = state.lock().unwrap();
            if tag >= st.issued {
                st.violations
                    .push(format!("tag {tag} not issued yet: {path}"));
                return;
            }
            if !st.seen.insert(tag) {
                st.violations.push(format!("tag {tag} forwarded twice"));
                return;
            }
        }
        let body = format!("resp-{tag}");
        let answer = if method == "HEAD" {
            format!(
                "HTTP/1.1 200 OK\r\nx-fuzz-seq: {tag}\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
        } else if tag % 3 == 1 {
            format!(
                "HTTP/1.1 200 OK\r\nx-fuzz-seq: {tag}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nx-fuzz-seq: {tag}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request as the balancer serves it, tagged first, its answer checked.
async fn tagged(
    worker: Arc<Worker>,
    client: Arc<ClientAddr>,
    state: Shared,
    req: Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    let tag = {
        let mut st = state.lock().unwrap();
        st.issued += 1;
        st.issued - 1
    };
    let (mut parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    parts.uri = format!("/f{tag}{rest}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let method = parts.method.clone();
    let resp = proxy::handle(&worker, Request::from_parts(parts, body), &client).await;
    let (rparts, rbody) = resp.into_parts();
    let bytes = match rbody.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            violation(&state, format!("tag {tag}: answer body failed: {e}"));
            Bytes::new()
        }
    };
    match rparts.headers.get("x-fuzz-seq") {
        Some(v) => {
            if v.as_bytes() != tag.to_string().as_bytes() {
                violation(&state, format!("tag {tag} got the answer for {v:?}"));
            }
            let want = if method == Method::HEAD {
                String::new()
            } else {
                format!("resp-{tag}")
            };
            if bytes != want.as_bytes() {
                violation(&state, format!("tag {tag} got body {bytes:?}"));
            }
        }
        None if rparts.status == 502 || rparts.status == 504 => {
            violation(
                &state,
                format!(
                    "tag {tag}: {} {:?}",
                    rparts.status,
                    String::from_utf8_lossy(&bytes)
                ),
            );
        }
        None => {}
    }
    if std::env::var_os("PROXY_FUZZ_VERBOSE").is_some() {
        eprintln!(
            "tag {tag}: {} {:?}",
            rparts.status,
            String::from_utf8_lossy(&bytes)
        );
    }
    Response::from_parts(rparts, ResponseBody::full(bytes))
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let input = data.to_vec();
        h.rt.block_on(async {
            let (mut client_side, server_side) = tokio::io::duplex(64 * 1024);
            let worker = h.worker.clone();
            let client = h.client.clone();
            let state = h.state.clone();
            let service = service_fn(move |req| {
                let (w, c, s) = (worker.clone(), client.clone(), state.clone());
                async move { Ok::<_, Infallible>(tagged(w, c, s, req).await) }
            });
            // As server.rs builds it, but with half-closes allowed: the
            // client ends its input by closing its sending side, and every
            // request before that must still be served (the real server
            // cancels a request whose client hangs up, as nginx does).
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(server_side), service);
            let talk = async {
                let _ = client_side.write_all(&input).await;
                let _ = client_side.shutdown().await;
                let mut answers = Vec::new();
                let _ = client_side.read_to_end(&mut answers).await;
                if h.verbose {
                    eprintln!("client got {:?}", String::from_utf8_lossy(&answers));
                }
            };
            let conn = async {
                let result = conn.await;
                if h.verbose {
                    eprintln!("connection ended: {result:?}");
                }
            };
            let both = async { tokio::join!(conn, talk) };
            if tokio::time::timeout(Duration::from_secs(10), both)
                .await
                .is_err()
            {
                panic!("no end within 10 s: {:?}", String::from_utf8_lossy(&input));
            }
            // let the server finish what reached it
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        });
        let mut st = h.state.lock().unwrap();
        if h.verbose {
            eprintln!(
                "tags issued {}, received by the server {}",
                st.issued,
                st.seen.len()
            );
        }
        if !st.violations.is_empty() {
            panic!(
                "{:#?}\ninput: {:?}",
                st.violations,
                String::from_utf8_lossy(data)
            );
        }
        if st.seen.len() > 100_000 {
            let keep = st.issued.saturating_sub(10_000);
            st.seen.retain(|t| *t >= keep);
        }
    });
});
