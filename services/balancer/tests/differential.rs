//! Two parsers, one answer: the balancer's codec (src/http1.rs) against
//! hyper's HTTP/1.1 client.
//!
//! Request smuggling and response splitting live in the gaps between two
//! parsers that read the same bytes differently: one sees the body end
//! where the other sees a second message begin. So the same answer bytes
//! are read by our codec (as the pool reads them: head, interim answers
//! skipped, body until its framing ends or the server closes) and by
//! hyper's client (over an in-memory pipe), and both must agree on the
//! status, the headers and the body, or both must refuse the answer.
//!
//! The one difference allowed is deliberate and checked: our codec passes
//! on `Content-Length` in a single plain form (`5, 5` becomes `5`), drops it
//! where a transfer coding overrides it, and drops a garbage one on an
//! answer that has no body (RFC 9112 §6.3), so that the client behind the
//! balancer never gets two framings to choose from.
//!
//! Cases: hand-written edge cases, then a corpus generated from a fixed
//! seed (the same every run, so a failure is reproducible; set
//! `DIFFERENTIAL_CASES` for more).

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lab_balancer::http1::{parse_head, BodyDecoder, Decoded, Parsed, MAX_HEADERS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a parser made of an answer.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    Refused,
    Answer {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    },
}

/// Our codec, fed the whole answer, the server closing after it.
fn ours(wire: &[u8], method: &Method) -> Reading {
    let mut buf = BytesMut::from(wire);
    let head = loop {
        match parse_head(&mut buf, method) {
            Ok(Parsed::Final(head)) => break head,
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) | Err(_) => return Reading::Refused,
        }
    };
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => body.extend_from_slice(&d),
            Ok(Decoded::End) => break,
            Ok(Decoded::NeedMore) if decoder.closed() => break,
            Ok(Decoded::NeedMore) | Err(_) => return Reading::Refused,
        }
    }
    Reading::Answer {
        status: head.response.status().as_u16(),
        headers: head.response.headers().clone(),
        body,
    }
}

/// hyper's client, reading the answer from a server that writes it and
/// closes.
async fn hypers(wire: &[u8], method: &Method) -> Reading {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let wire = wire.to_vec();
    let serve = tokio::spawn(async move {
        // the request first (so the answer does not race it), then the answer
        let mut seen = Vec::new();
        let mut chunk = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match server.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = server.write_all(&wire).await;
        let _ = server.shutdown().await;
        // keep reading so the client's writes never block
        while let Ok(n) = server.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    });
    let Ok((mut sender, conn)) = hyper::client::conn::http1::Builder::new()
        .max_headers(MAX_HEADERS)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(client))
        .await
    else {
        return Reading::Refused;
    };
    let driver = tokio::spawn(conn);
    let req = Request::builder()
        .method(method.clone())
        .uri("/")
        .header("host", "s")
        .body(Empty::new())
        .unwrap();
    let reading = match sender.send_request(req).await {
        Err(_) => Reading::Refused,
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            match body.collect().await {
                Err(_) => Reading::Refused,
                Ok(collected) => Reading::Answer {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body: collected.to_bytes().to_vec(),
                },
            }
        }
    };
    driver.abort();
    serve.abort();
    reading
}

/// The length hyper reads from `Content-Length` lines (all equal digits).
fn plain_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().ok()?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u64 = part.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    // hyper's client takes no body longer than this
    length.filter(|n| *n <= u64::MAX - 2)
}

/// Compares the two readings; `Err` says how they differ.
fn agree(wire: &[u8], method: &Method, ours: &Reading, theirs: &Reading) -> Result<(), String> {
    let show = || format!("{method} answered with {:?}", String::from_utf8_lossy(wire));
    match (ours, theirs) {
        (Reading::Refused, Reading::Refused) => Ok(()),
        (
            Reading::Answer {
                status: s1,
                headers: h1,
                body: b1,
            },
            Reading::Answer {
                status: s2,
                headers: h2,
                body: b2,
            },
        ) => {
            if s1 != s2 {
                return Err(format!("status {s1} vs hyper's {s2}: {}", show()));
            }
            if b1 != b2 {
                return Err(format!(
                    "body {:?} vs hyper's {:?}: {}",
                    String::from_utf8_lossy(b1),
                    String::from_utf8_lossy(b2),
                    show()
                ));
            }
            // every header but the length as hyper read it
            let mut theirs = h2.clone();
            theirs.remove(header::CONTENT_LENGTH);
            let mut mine = h1.clone();
            let my_length = mine.remove(header::CONTENT_LENGTH);
            if mine != theirs {
                return Err(format!(
                    "headers {mine:?} vs hyper's {theirs:?}: {}",
                    show()
                ));
            }
            // the length: one plain value, the one hyper understood, and
            // none next to a transfer coding
            let expected = if h2.contains_key(header::TRANSFER_ENCODING) {
                None
            } else {
                plain_length(h2)
            };
            let mine = my_length.map(|v| v.to_str().unwrap_or("?").to_owned());
            if mine != expected.map(|n| n.to_string()) {
                // a plain value keeps its digits (`05` stays `05`)
                let same = mine
                    .as_deref()
                    .and_then(|m| m.parse::<u64>().ok())
                    .is_some_and(|m| Some(m) == expected);
                if !same {
                    return Err(format!(
                        "Content-Length {mine:?}, hyper read {expected:?}: {}",
                        show()
                    ));
                }
            }
            Ok(())
        }
        (Reading::Refused, _) => Err(format!("we refuse what hyper accepts: {}", show())),
        (_, Reading::Refused) => Err(format!("we accept what hyper refuses: {}", show())),
    }
}

async fn check(wire: &[u8], method: &Method) -> Result<(), String> {
    let mine = ours(wire, method);
    let theirs = hypers(wire, method).await;
    agree(wire, method, &mine, &theirs)
}

const METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

#[tokio::test]
async fn edge_cases_read_alike() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloNEXT",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 05\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nall of it",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext=\"v\"\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000000002\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nbad trailer\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\nX: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nX: a\x7fb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: \xff\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: +5\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 999 High\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\nuntil close",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        b"NOT HTTP\r\n\r\n",
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
    ];
    let mut failures = Vec::new();
    for wire in cases {
        for method in &METHODS {
            if let Err(e) = check(wire, method).await {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A small deterministic generator (xorshift64*): no dependency, and the
/// same corpus every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// One answer: a status line, headers drawn from tricky ones, a body framed
/// well or badly, and now and then a byte changed.
fn generate(g: &mut Gen) -> Vec<u8> {
    let mut w = Vec::new();
    if g.chance(10) {
        w.extend_from_slice(
            g.pick(&[
                "HTTP/1.1 100 Continue\r\n\r\n",
                "HTTP/1.1 103 Hints\r\nLink: x\r\n\r\n",
            ])
            .as_bytes(),
        );
    }
    let version = g.pick(&[
        "HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.x", "http/1.1",
    ]);
    let status = g.pick(&[
        "200 OK",
        "200 OK",
        "201 Created",
        "204 No Content",
        "304 Not Modified",
        "404 Not Found",
        "101 Switching",
        "500 X",
        "99 Bad",
        "200",
        "2000 OK",
    ]);
    w.extend_from_slice(format!("{version} {status}\r\n").as_bytes());
    let body: Vec<u8> = (0..g.below(24))
        .map(|_| b"abcdefgh\r\n0;XYZ"[g.below(15)])
        .collect();
    let mut chunked = false;
    for _ in 0..g.below(5) {
        let line = match g.below(9) {
            0 | 1 => {
                let n = if g.chance(70) {
                    body.len().to_string()
                } else {
                    g.below(40).to_string()
                };
                let v = match g.below(8) {
                    0 => format!("{n}, {n}"),
                    1 => format!("+{n}"),
                    2 => format!("{n}, {}", g.below(40)),
                    3 => format!("0{n}"),
                    4 => format!(" {n}\t"),
                    5 => String::new(),
                    _ => n,
                };
                format!(
                    "{}: {v}\r\n",
                    g.pick(&["Content-Length", "content-length", "CONTENT-LENGTH"])
                )
            }
            2 | 3 => {
                chunked = true;
                format!(
                    "Transfer-Encoding: {}\r\n",
                    g.pick(&[
                        "chunked",
                        "chunked",
                        "Chunked",
                        "gzip, chunked",
                        "chunked, gzip",
                        "chunked, ",
                        "identity",
                        " chunked",
                        "chunked\t",
                        "x"
                    ])
                )
            }
            4 => format!(
                "Connection: {}\r\n",
                g.pick(&["close", "keep-alive", "Keep-Alive, x", "upgrade"])
            ),
            5 => g
                .pick(&[
                    "X: a\r\n b\r\n",
                    "X : a\r\n",
                    " X: a\r\n",
                    "X: a\nY: b\r\n",
                    "X:\r\n",
                    ": v\r\n",
                    "X\x01: a\r\n",
                    "X: \x7f\r\n",
                    "X: é\r\n",
                ])
                .to_owned(),
            _ => format!("X-{}: {}\r\n", g.below(1000), g.below(1000)),
        };
        w.extend_from_slice(line.as_bytes());
    }
    w.extend_from_slice(b"\r\n");
    if chunked && g.chance(80) {
        for piece in body.chunks(1 + g.below(8)) {
            let size = match g.below(20) {
                0 => format!("{:X}", piece.len()),
                1 => format!("0{:x}", piece.len()),
                2 => format!("{:x};e=1", piece.len()),
                3 => format!("{:x} ", piece.len()),
                4 => format!("+{:x}", piece.len()),
                5 => format!("{:x}", piece.len() + 1),
                _ => format!("{:x}", piece.len()),
            };
            w.extend_from_slice(size.as_bytes());
            w.extend_from_slice(g.pick(&["\r\n", "\r\n", "\r\n", "\r\n", "\n"]).as_bytes());
            w.extend_from_slice(piece);
            w.extend_from_slice(
                g.pick(&["\r\n", "\r\n", "\r\n", "\r\n", "\n", ""])
                    .as_bytes(),
            );
        }
        if g.chance(90) {
            w.extend_from_slice(
                g.pick(&[
                    "0\r\n\r\n",
                    "0\r\n\r\n",
                    "0\r\nT: 1\r\n\r\n",
                    "0\r\nbad\r\n\r\n",
                    "0\r\n",
                    "00\r\n\r\n",
                ])
                .as_bytes(),
            );
        }
    } else {
        w.extend_from_slice(&body);
    }
    if g.chance(20) {
        w.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra");
    }
    if g.chance(15) && !w.is_empty() {
        let at = g.below(w.len());
        match g.below(3) {
            0 => w[at] = b"\r\n :;0aZ\x00\x7f"[g.below(10)],
            1 => {
                w.remove(at);
            }
            _ => w.insert(at, b"\r\n :;0aZ\t"[g.below(9)]),
        }
    }
    w
}

#[tokio::test]
async fn a_generated_corpus_reads_alike() {
    let cases: usize = std::env::var("DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let mut g = Gen(0x5eed_ba1a_9ce5_0001);
    let mut failures = Vec::new();
    let mut answered = 0;
    for _ in 0..cases {
        let wire = generate(&mut g);
        let method = &METHODS[g.below(METHODS.len())];
        let mine = ours(&wire, method);
        if matches!(mine, Reading::Answer { .. }) {
            answered += 1;
        }
        let theirs = hypers(&wire, method).await;
        if let Err(e) = agree(&wire, method, &mine, &theirs) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // the corpus must exercise both verdicts, or it proves little
    assert!(
        answered > cases / 5 && answered < cases * 4 / 5,
        "{answered} of {cases} accepted"
    );
}
