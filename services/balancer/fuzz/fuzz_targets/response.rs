//! Fuzz target: the balancer's reading of server answers (src/http1.rs).
//!
//! The input is `[method, split seed, answer bytes...]`. The answer is read
//! the way the pool reads a connection (head, interim answers skipped, then
//! the body through `BodyDecoder`, the connection closing after the last
//! byte), once in a single read and once in reads of sizes drawn from the
//! seed. Checked:
//!
//! * no panic, no hang;
//! * the split does not change anything: same answer, same body, same
//!   bytes left over, or both refused (a parser whose verdict depends on
//!   where TCP cut the stream can be steered by whoever controls the cuts);
//! * the body is exactly what its framing says: `Length(n)` gives the n
//!   bytes after the head, a body read until close gives all of them, the
//!   bytes left over are the end of the input, untouched;
//! * what would be passed on to the client cannot be framed two ways: never
//!   both `Content-Length` and `Transfer-Encoding`, a `Content-Length` is
//!   one plain number equal to the length used; a connection kept alive has
//!   a body with a definite end.

#![no_main]

use bytes::BytesMut;
use http::{header, Method};
use lab_balancer::http1::{parse_head, BodyDecoder, Decoded, Framing, Parsed};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused,
    Answer {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        framing: Framing,
        keep_alive: bool,
        head_len: usize,
        body: Vec<u8>,
        rest: Vec<u8>,
    },
}

/// Hands out `wire` in reads of the sizes in `pieces` (then the rest).
struct Reads<'a> {
    wire: &'a [u8],
    pieces: &'a [usize],
    fed: usize,
    next: usize,
}

impl Reads<'_> {
    /// One more read into `buf`: false when the server has closed.
    fn feed(&mut self, buf: &mut BytesMut) -> bool {
        if self.fed == self.wire.len() {
            return false;
        }
        let n = self
            .pieces
            .get(self.next)
            .copied()
            .unwrap_or(self.wire.len())
            .clamp(1, self.wire.len() - self.fed);
        self.next += 1;
        buf.extend_from_slice(&self.wire[self.fed..self.fed + n]);
        self.fed += n;
        true
    }
}

/// Reads `wire` arriving in `pieces` (sizes) as an answer to `method`.
fn read(wire: &[u8], pieces: &[usize], method: &Method) -> Outcome {
    let mut reads = Reads {
        wire,
        pieces,
        fed: 0,
        next: 0,
    };
    let mut buf = BytesMut::new();
    let head = loop {
        match parse_head(&mut buf, method) {
            Err(_) => return Outcome::Refused,
            Ok(Parsed::Final(head)) => break head,
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) => {
                if !reads.feed(&mut buf) {
                    return Outcome::Refused; // closed before a complete head
                }
            }
        }
    };
    let head_len = reads.fed - buf.len();
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Err(_) => return Outcome::Refused,
            Ok(Decoded::Data(d)) => {
                assert!(!d.is_empty(), "an empty piece of body");
                body.extend_from_slice(&d);
            }
            Ok(Decoded::End) => break,
            Ok(Decoded::NeedMore) => {
                if !reads.feed(&mut buf) {
                    if decoder.closed() {
                        break;
                    }
                    return Outcome::Refused; // cut short
                }
            }
        }
    }
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&wire[reads.fed..]);
    let mut headers: Vec<(String, Vec<u8>)> = head
        .response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    headers.sort();
    Outcome::Answer {
        status: head.response.status().as_u16(),
        headers,
        framing: head.framing,
        keep_alive: head.keep_alive,
        head_len,
        body,
        rest,
    }
}

fn check(wire: &[u8], outcome: &Outcome) {
    let Outcome::Answer {
        status,
        headers,
        framing,
        keep_alive,
        head_len,
        body,
        rest,
    } = outcome
    else {
        return;
    };
    assert!(
        wire.ends_with(rest),
        "left-over bytes must be the input's end"
    );
    assert!(*head_len + rest.len() <= wire.len());
    let after_head = &wire[*head_len..];
    match framing {
        Framing::Empty => assert!(body.is_empty()),
        Framing::Length(n) => {
            assert_eq!(body.len() as u64, *n);
            assert_eq!(&after_head[..body.len()], &body[..]);
        }
        Framing::UntilClose => {
            assert!(!keep_alive, "a body read until close ends the connection");
            assert_eq!(after_head, &body[..]);
            assert!(rest.is_empty());
        }
        Framing::Chunked => assert!(body.len() <= after_head.len()),
    }
    assert!(!(100..200).contains(status) || *status == 101);
    let has = |name: &header::HeaderName| headers.iter().any(|(n, _)| n == name.as_str());
    assert!(
        !(has(&header::CONTENT_LENGTH) && has(&header::TRANSFER_ENCODING)),
        "both framings passed on: {headers:?}"
    );
    let lengths: Vec<&Vec<u8>> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v)
        .collect();
    if let Some(v) = lengths.first() {
        assert_eq!(lengths.len(), 1, "one Content-Length line: {headers:?}");
        assert!(!v.is_empty() && v.iter().all(u8::is_ascii_digit), "{v:?}");
        if let Framing::Length(n) = framing {
            assert_eq!(std::str::from_utf8(v).unwrap().parse::<u64>().unwrap(), *n);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [m, seed, wire @ ..] = data else {
        return;
    };
    let method = match m % 4 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::PUT,
    };
    let whole = read(wire, &[], &method);
    check(wire, &whole);
    // read sizes from the seed: a small linear congruential sequence
    let mut x = u32::from(*seed) | 1;
    let mut pieces = Vec::new();
    let mut total = 0;
    while total < wire.len() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = 1 + (x >> 16) as usize % (1 + usize::from(*seed % 32));
        pieces.push(n);
        total += n;
    }
    let split = read(wire, &pieces, &method);
    check(wire, &split);
    assert_eq!(
        whole, split,
        "the verdict depends on how the bytes were split"
    );
});
