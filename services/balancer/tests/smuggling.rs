//! Request smuggling and response splitting, tried on a running balancer
//! with raw TCP sockets on 127.0.0.1.
//!
//! A proxy desynchronises when it and the program on the other side of a
//! connection disagree about where a message ends: the leftover bytes then
//! become the next request (smuggling) or the next client's answer
//! (splitting). Each case sends the bytes an attacker or a broken program
//! would, and checks what nginx or HAProxy do:
//!
//! * a bad client request gets 400 (431 for an oversized head, 405 for
//!   CONNECT) and its connection is closed; nothing of it reaches a server;
//! * a bad server answer gets 502, or, once the answer's head has gone to
//!   the client, the client's connection is cut: the stream can no longer be
//!   trusted;
//! * the next request, on another connection, is served normally, and never
//!   answered with the leftover of a previous one.
//!
//! The servers behind the balancer are scripted: they read each request
//! strictly, log it, and answer with the bytes a test chose.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_balancer::config::{Config, UpstreamConfig};
use lab_balancer::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as a scripted server read it.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    path: String,
    body: Vec<u8>,
}

/// What a scripted server does for one request.
#[derive(Debug, Clone)]
enum Step {
    Write(Vec<u8>),
    Pause(u64),
    Close,
}

type Script = fn(&str, &str) -> Vec<Step>;

/// A normal answer naming the path it answers.
fn ok(path: &str) -> Vec<Step> {
    let body = format!("answer for {path}");
    vec![Step::Write(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )]
}

struct Server {
    addr: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// A server that answers each request as `script` says (health checks
    /// and unknown paths get [`ok`]).
    async fn start(script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(s, conn, seen.clone(), script));
            }
        });
        Server { addr, log }
    }

    /// Requests other than health checks.
    fn seen(&self) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path != "/healthz")
            .cloned()
            .collect()
    }
}

async fn serve(mut s: TcpStream, conn: usize, log: Arc<Mutex<Vec<Seen>>>, script: Script) {
    let mut buf = Vec::new();
    loop {
        let (len, method, path, chunked, length) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut fields);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let value = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    let chunked = value("transfer-encoding").is_some();
                    let length: usize = value("content-length")
                        .map(|v| v.parse().expect("the balancer sent a bad length"))
                        .unwrap_or(0);
                    break (
                        len,
                        req.method.unwrap().to_owned(),
                        req.path.unwrap().to_owned(),
                        chunked,
                        length,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    if !more(&mut s, &mut buf).await {
                        return;
                    }
                }
                Err(e) => panic!("the balancer sent an unparsable request ({e}): {buf:?}"),
            }
        };
        buf.drain(..len);
        let mut body = Vec::new();
        if chunked {
            loop {
                let Some(i) = find_crlf(&mut s, &mut buf).await else {
                    return;
                };
                let size = usize::from_str_radix(std::str::from_utf8(&buf[..i]).unwrap(), 16)
                    .expect("the balancer sent a bad chunk size");
                buf.drain(..i + 2);
                while buf.len() < size + 2 {
                    if !more(&mut s, &mut buf).await {
                        return;
                    }
                }
                body.extend_from_slice(&buf[..size]);
                assert_eq!(&buf[size..size + 2], b"\r\n");
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
            body = buf.drain(..length).collect();
        }
        log.lock().unwrap().push(Seen {
            conn,
            path: path.clone(),
            body,
        });
        let steps = if path == "/healthz" {
            ok(&path)
        } else {
            script(&method, &path)
        };
        for step in steps {
            match step {
                Step::Write(bytes) => {
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                Step::Close => return,
            }
        }
    }
}

async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn find_crlf(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            return Some(i);
        }
        if !more(s, buf).await {
            return None;
        }
    }
}

/// A balancer with one worker in front of `server`. Passive checks are off
/// so that a case's 502 does not take the server down for the next one.
async fn balancer(server: &Server) -> Running {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: vec![UpstreamConfig {
            name: "s".into(),
            address: server.addr.clone(),
        }],
        workers: 1,
        ..Config::default()
    };
    config.passive.max_fails = 0;
    lab_balancer::start(config).await.unwrap()
}

/// An answer as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body arrived whole (its framing said where it ends).
    complete: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client speaking raw bytes.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(lb: &Running) -> Client {
        Client {
            s: TcpStream::connect(lb.proxy_addr()).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn more(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(10), more(&mut self.s, &mut self.buf))
            .await
            .expect("no answer within 10 s")
    }

    /// The next answer (to a HEAD request if `head`); `None` if the
    /// connection closed before a complete head.
    async fn answer(&mut self, head: bool) -> Option<Answer> {
        let (len, status, headers) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            match resp
                .parse(&self.buf)
                .expect("the balancer sent a bad answer head")
            {
                httparse::Status::Complete(len) => {
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (len, resp.code.unwrap(), headers);
                }
                httparse::Status::Partial => {
                    if !self.more().await {
                        return None;
                    }
                }
            }
        };
        self.buf.drain(..len);
        if status == 100 {
            return Box::pin(self.answer(head)).await;
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
            complete: true,
        };
        if head || status == 204 || status == 304 {
            return Some(answer);
        }
        if answer.header("transfer-encoding").is_some() {
            assert!(
                answer.header("content-length").is_none(),
                "two framings: {:?}",
                answer.headers
            );
            loop {
                while !self.buf.windows(2).any(|w| w == b"\r\n") {
                    if !self.more().await {
                        answer.complete = false;
                        return Some(answer);
                    }
                }
                let i = self.buf.windows(2).position(|w| w == b"\r\n").unwrap();
                let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..i]).unwrap(), 16)
                    .unwrap();
                self.buf.drain(..i + 2);
                while self.buf.len() < size + 2 {
                    if !self.more().await {
                        answer.complete = false;
                        return Some(answer);
                    }
                }
                answer.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    return Some(answer);
                }
            }
        }
        let length: usize = answer
            .header("content-length")
            .expect("the balancer's answers say where they end")
            .parse()
            .unwrap();
        while self.buf.len() < length {
            if !self.more().await {
                answer.body = std::mem::take(&mut self.buf);
                answer.complete = false;
                return Some(answer);
            }
        }
        answer.body = self.buf.drain(..length).collect();
        Some(answer)
    }

    /// Whether the balancer has closed the connection; any byte waiting
    /// there instead is a leftover no request asked for.
    async fn closed(&mut self) -> bool {
        assert!(
            self.buf.is_empty(),
            "unasked bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), self.s.read(&mut byte)).await {
            Err(_) => false,
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("unasked bytes after the answer: {byte:?}"),
        }
    }
}

/// Sends `request` on a new connection: the answer, and whether the
/// balancer closed the connection after it.
async fn one(lb: &Running, request: &[u8]) -> (Option<Answer>, bool) {
    let mut c = Client::connect(lb).await;
    c.send(request).await;
    let head = request.starts_with(b"HEAD");
    let answer = c.answer(head).await;
    let closed = answer.as_ref().is_some_and(|a| !a.complete) || c.closed().await;
    (answer, closed)
}

/// The next request, on a new connection, is served with its own answer.
async fn next_is_clean(lb: &Running, server: &Server) {
    let before = server.seen().len();
    let (answer, _) = one(lb, b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = answer.expect("an answer to the next request");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "answer for /next");
    let seen = server.seen();
    assert_eq!(seen.len(), before + 1, "{seen:?}");
    assert_eq!(seen.last().unwrap().path, "/next");
}

fn normal(_method: &str, path: &str) -> Vec<Step> {
    ok(path)
}

/// Asserts a client request was refused with `status` and its connection
/// closed, that no request reached the server, and that the next one is
/// served.
async fn refused(request: &[u8], status: u16) {
    refused_then(request, status, true).await;
}

/// As [`refused`]; `must_close`: the connection is closed after it.
async fn refused_then(request: &[u8], status: u16, must_close: bool) {
    let server = Server::start(normal).await;
    let lb = balancer(&server).await;
    let (answer, closed) = one(&lb, request).await;
    let answer =
        answer.unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(request)));
    assert_eq!(
        answer.status,
        status,
        "{:?}: {}",
        String::from_utf8_lossy(request),
        answer.text()
    );
    assert!(
        closed || !must_close,
        "connection left open after {:?}",
        String::from_utf8_lossy(request)
    );
    assert!(
        server.seen().iter().all(|s| s.path != "/smuggled"),
        "{:?}",
        server.seen()
    );
    next_is_clean(&lb, &server).await;
}

#[tokio::test]
async fn content_length_and_transfer_encoding_together_read_as_chunked_then_close() {
    // HAProxy's way (RFC 9112 §6.3): the coding wins, the length is dropped,
    // and the connection is closed after the answer, so what follows the
    // chunked body is never read as a request.
    let server = Server::start(normal).await;
    let lb = balancer(&server).await;
    for request in [
        &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (answer, closed) = one(&lb, request).await;
        let answer = answer.unwrap();
        assert_eq!((answer.status, answer.text().as_str()), (200, "answer for /a"));
        assert!(closed);
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.path == "/a" && s.body == b"abc"),
        "{seen:?}"
    );
    next_is_clean(&lb, &server).await;
}

#[tokio::test]
async fn conflicting_lengths_are_refused() {
    for length in [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: +5",
        "Content-Length: -5",
        "Content-Length: 5x",
        "Content-Length: 0x5",
    ] {
        let request = format!(
            "POST /a HTTP/1.1\r\nHost: x\r\n{length}\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n"
        );
        refused(request.as_bytes(), 400).await;
    }
}

#[tokio::test]
async fn equal_repeated_lengths_are_one_length() {
    let server = Server::start(normal).await;
    let lb = balancer(&server).await;
    let mut c = Client::connect(&lb).await;
    c.send(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.unwrap().text(), "answer for /a");
    assert_eq!(c.answer(false).await.unwrap().text(), "answer for /b");
    let seen = server.seen();
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn bad_chunk_sizes_are_refused() {
    for chunks in [
        "-5\r\nhello\r\n0\r\n\r\n",
        "10000000000000000\r\nhello\r\n0\r\n\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5;a\nb\r\nhello\r\n0\r\n\r\n",
    ] {
        for method in ["POST", "PUT"] {
            // POST bodies stream through, PUT bodies are read first (kept
            // for a retry): both paths
            let request = format!(
                "{method} /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}GET /smuggled HTTP/1.1\r\n\r\n"
            );
            refused(request.as_bytes(), 400).await;
        }
    }
}

#[tokio::test]
async fn malformed_heads_are_refused() {
    for request in [
        // obs-fold
        &b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n"[..],
        // whitespace before the colon
        b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        // a bare CR
        b"GET /a HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
        // transfer codings other than chunked, or chunked not last
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        // chunks in HTTP/1.0
        b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // not HTTP
        b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    ] {
        refused(request, 400).await;
    }
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let mut big = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(b"\r\n\r\n");
    refused(&big, 431).await;
    let mut many = b"GET /a HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    refused(&many, 431).await;
}

#[tokio::test]
async fn connect_is_refused() {
    // (a CONNECT has no body: the connection is still in step and stays)
    refused_then(b"CONNECT s:443 HTTP/1.1\r\nHost: s:443\r\n\r\n", 405, false).await;
}

#[tokio::test]
async fn bare_line_feeds_are_read_as_line_ends_and_sent_on_as_crlf() {
    // RFC 9112 §2.2 lets a recipient take a bare LF as a line end (nginx
    // and hyper do); what matters is that the server behind gets clean CRLF.
    let server = Server::start(normal).await;
    let lb = balancer(&server).await;
    let (answer, _) = one(&lb, b"GET /lf HTTP/1.1\nHost: x\nX-A: 1\n\n").await;
    assert_eq!(answer.unwrap().text(), "answer for /lf");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(normal).await;
    let lb = balancer(&server).await;
    let mut c = Client::connect(&lb).await;
    c.send(
        concat!(
        "GET /one HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
        "PUT /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        "HEAD /four HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /five HTTP/1.1\r\nHost: x\r\n\r\n",
    )
        .as_bytes(),
    )
    .await;
    for (path, head) in [
        ("/one", false),
        ("/two", false),
        ("/three", false),
        ("/four", true),
        ("/five", false),
    ] {
        let a = c.answer(head).await.unwrap();
        assert_eq!(a.status, 200, "{path}");
        if !head {
            assert_eq!(a.text(), format!("answer for {path}"));
        }
    }
    assert!(!c.closed().await, "a clean pipeline keeps the connection");
    let seen: Vec<(String, Vec<u8>)> = server
        .seen()
        .into_iter()
        .map(|s| (s.path, s.body))
        .collect();
    assert_eq!(
        seen,
        [
            ("/one".into(), vec![]),
            ("/two".into(), b"body".to_vec()),
            ("/three".into(), b"ab".to_vec()),
            ("/four".into(), vec![]),
            ("/five".into(), vec![]),
        ]
    );
}

/// The scripted answers of a broken server, by path.
fn broken(method: &str, path: &str) -> Vec<Step> {
    let w = |s: &str| Step::Write(s.as_bytes().to_vec());
    match path {
        "/garbage" => vec![w("NOT HTTP AT ALL\r\n\r\n"), Step::Close],
        "/truncated-head" => vec![w("HTTP/1.1 200 OK\r\nContent-Le"), Step::Close],
        "/huge-head" => {
            let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 100 * 1024));
            head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
            vec![Step::Write(head)]
        }
        "/plus-length" => vec![w("HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok")],
        "/two-lengths" => vec![w("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!")],
        "/chunked-http10" => vec![w("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")],
        "/switch" => vec![w("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nraw tunnel bytes")],
        "/cut-body" => vec![w("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), Step::Close],
        "/cut-chunks" => vec![w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"), Step::Close],
        "/bad-chunk" => vec![w("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n+5\r\nhello\r\n0\r\n\r\n")],
        "/two-answers" => vec![w(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        )],
        "/second-later" => vec![
            w("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"),
            Step::Pause(50),
            w("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"),
        ],
        "/over-long" => vec![w("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst and then some")],
        "/lying-length" => vec![w(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )],
        "/head-body" if method == "HEAD" => {
            vec![w("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")]
        }
        _ => ok(path),
    }
}

/// Sends `GET path` (or HEAD) to a balancer in front of the broken server.
async fn against_broken(path: &str, method: &str) -> (Server, Running, Option<Answer>, bool) {
    let server = Server::start(broken).await;
    let lb = balancer(&server).await;
    let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (answer, closed) = one(&lb, request.as_bytes()).await;
    (server, lb, answer, closed)
}

#[tokio::test]
async fn broken_answer_heads_become_502() {
    for path in [
        "/garbage",
        "/truncated-head",
        "/huge-head",
        "/plus-length",
        "/two-lengths",
        "/chunked-http10",
        "/switch",
    ] {
        let (server, lb, answer, _) = against_broken(path, "GET").await;
        let answer = answer.unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(answer.status, 502, "{path}: {}", answer.text());
        assert!(
            answer.text().contains("server failed"),
            "{path}: {}",
            answer.text()
        );
        next_is_clean(&lb, &server).await;
    }
}

#[tokio::test]
async fn an_answer_cut_short_cuts_the_client_connection() {
    // once the head has gone to the client, it can only learn of the
    // failure by its connection ending before the body does
    for path in ["/cut-body", "/cut-chunks", "/bad-chunk"] {
        let (server, lb, answer, closed) = against_broken(path, "GET").await;
        // (when the body fails before hyper has flushed the head, the
        // client sees its connection close with no answer at all: as good
        // a signal, and no desynchronisation either)
        if let Some(answer) = answer {
            assert_eq!(answer.status, 200, "{path}");
            assert!(!answer.complete, "{path}: {answer:?}");
        }
        assert!(closed, "{path}");
        next_is_clean(&lb, &server).await;
    }
}

#[tokio::test]
async fn a_second_answer_is_never_given_to_another_request() {
    for path in ["/two-answers", "/second-later", "/over-long"] {
        let server = Server::start(broken).await;
        let lb = balancer(&server).await;
        let mut c = Client::connect(&lb).await;
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await;
        assert_eq!(c.answer(false).await.unwrap().text(), "first", "{path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // the same client connection, then others: each gets its own answer
        for i in 0..3 {
            c.send(format!("GET /after-{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await;
            let a = c.answer(false).await.unwrap();
            assert_eq!(a.text(), format!("answer for /after-{i}"), "{path}");
            next_is_clean(&lb, &server).await;
        }
        let seen = server.seen();
        let first = seen.iter().find(|s| s.path == path).unwrap().conn;
        assert!(
            seen.iter()
                .filter(|s| s.path != path)
                .all(|s| s.conn != first),
            "{path}: the connection with a leftover answer was used again: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_body_after_a_head_answer_is_not_the_next_answer() {
    let server = Server::start(broken).await;
    let lb = balancer(&server).await;
    let mut c = Client::connect(&lb).await;
    c.send(b"HEAD /head-body HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let a = c.answer(true).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-length"), Some("8"));
    c.send(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(c.answer(false).await.unwrap().text(), "answer for /after");
    next_is_clean(&lb, &server).await;
}

#[tokio::test]
async fn a_length_next_to_chunks_is_not_passed_on() {
    let (server, lb, answer, _) = against_broken("/lying-length", "GET").await;
    let answer = answer.unwrap();
    assert!(answer.complete);
    assert_eq!(answer.text(), "hello world");
    assert_ne!(answer.header("content-length"), Some("3"));
    next_is_clean(&lb, &server).await;
    let seen = server.seen();
    assert_ne!(
        seen[0].conn, seen[1].conn,
        "a connection whose answer carried both framings is not reused"
    );
}
