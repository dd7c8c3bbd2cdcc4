//! # HTTP/1.1 on the wire, towards the servers
//!
//! The balancer talks to its servers in plain HTTP/1.1, and does it itself
//! rather than through a general-purpose client: a request's head is written
//! straight into the connection's buffer, the answer's head is parsed where
//! it was read (with `httparse`, the parser hyper uses), and the body is cut
//! out of the same buffer as the client asks for it. No task, channel or
//! extra copy sits in between, as in nginx's upstream module. (The client
//! side of the balancer still uses hyper's server.)
//!
//! This module is the protocol without the network, so it can be tested on
//! bytes alone:
//!
//! * [`encode_head`]: the request line and headers, plus the framing header
//!   the body needs (`Content-Length`, or `Transfer-Encoding: chunked` for a
//!   streamed body of unknown length);
//! * [`parse_head`]: status, version and headers of an answer, and how its
//!   body is framed ([`Framing`], RFC 9112 §6.3): no body (HEAD, 1xx, 204,
//!   304), a length, chunks, or everything until the server closes;
//! * [`Chunked`]: takes a chunked body apart.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

/// The largest response head accepted (nginx's default buffers are smaller).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted in a response head.
pub const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Why bytes from a server are not a valid HTTP/1.1 answer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The head is not HTTP/1.x.
    #[error("invalid response head: {0}")]
    Head(httparse::Error),
    /// The head is larger than [`MAX_HEAD`].
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A header name or value that HTTP does not allow.
    #[error("invalid header in the response")]
    Header,
    /// `Content-Length` is not one number.
    #[error("invalid Content-Length in the response")]
    ContentLength,
    /// A chunked body that does not follow the format.
    #[error("invalid chunked body: {0}")]
    Chunk(&'static str),
}

impl From<ProtocolError> for std::io::Error {
    fn from(e: ProtocolError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes (a `Content-Length` is added if missing).
    Length(u64),
    /// Chunks, length unknown in advance.
    Chunked,
}

/// Appends the head of `req` (its method, path, headers) to `out`, with the
/// framing header that `body` needs. Returns how the body must be written.
pub fn encode_head<B>(req: &Request<B>, body: Option<u64>, out: &mut Vec<u8>) -> BodyFraming {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_length = req.headers().contains_key(header::CONTENT_LENGTH);
    let framing = match body {
        Some(0) if !has_length => BodyFraming::Empty,
        Some(n) => {
            if !has_length {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            BodyFraming::Length(n)
        }
        None if has_length => {
            // the client said how long its streamed body is: pass it on
            let n = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            BodyFraming::Length(n)
        }
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            BodyFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// There is none.
    Empty,
    /// After this many bytes.
    Length(u64),
    /// After the last (empty) chunk.
    Chunked,
    /// When the server closes the connection.
    UntilClose,
}

/// A parsed answer head.
#[derive(Debug)]
pub struct Head {
    /// The answer, body still to come.
    pub response: Response<()>,
    /// How its body is framed.
    pub framing: Framing,
    /// Whether the connection can carry another request afterwards.
    pub keep_alive: bool,
}

/// What [`parse_head`] found in the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A final answer (its head was taken out of the buffer).
    Final(Head),
    /// An interim `1xx` answer, already taken out of the buffer: read on.
    Interim,
    /// The head is not complete yet: read more.
    Partial,
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses the answer head at the start of `buf` to a request made with
/// `method`. A complete head is removed from `buf`; its header values keep
/// pointing into the same memory (no copy).
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, ProtocolError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf).map_err(ProtocolError::Head)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            return Err(ProtocolError::HeadTooLarge)
        }
        httparse::Status::Partial => return Ok(Parsed::Partial),
    };
    let code = parsed.code.unwrap_or(0);
    if (100..200).contains(&code) && code != 101 {
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code).map_err(|_| ProtocolError::Header)?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each name and value sits in the buffer, so that the values can
    // share the buffer's memory once the head is split off.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let spans: Vec<((usize, usize), (usize, usize))> = parsed
        .headers
        .iter()
        .map(|h| (at(h.name.as_bytes()), at(h.value)))
        .collect();
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for ((n_at, n_len), (v_at, v_len)) in spans {
        let name =
            HeaderName::from_bytes(&head[n_at..n_at + n_len]).map_err(|_| ProtocolError::Header)?;
        let value = HeaderValue::from_maybe_shared(head.slice(v_at..v_at + v_len))
            .map_err(|_| ProtocolError::Header)?;
        headers.append(name, value);
    }

    let mut keep_alive = match version {
        Version::HTTP_10 => has_token(&headers, header::CONNECTION, "keep-alive"),
        _ => !has_token(&headers, header::CONNECTION, "close"),
    };
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 §6.3: chunked must be the last coding; a length next to
        // it is ignored and the connection closed afterwards.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .unwrap_or("");
        if headers.contains_key(header::CONTENT_LENGTH) {
            keep_alive = false;
        }
        if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        let mut length = None;
        for v in headers.get_all(header::CONTENT_LENGTH) {
            for part in v
                .to_str()
                .map_err(|_| ProtocolError::ContentLength)?
                .split(',')
            {
                let n: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| ProtocolError::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(ProtocolError::ContentLength);
                }
                length = Some(n);
            }
        }
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => return Err(ProtocolError::ContentLength),
        }
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        keep_alive = false;
    }

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Parsed::Final(Head {
        response,
        framing,
        keep_alive,
    }))
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a size line.
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// All read.
    Done,
}

/// Takes a chunked body apart as its bytes arrive. Trailer fields are read
/// and dropped (no browser uses them).
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }
}

/// What [`Chunked::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some body bytes.
    Data(Bytes),
    /// More bytes are needed.
    NeedMore,
    /// The body has ended.
    End,
}

/// Takes a line (without its CRLF) off the front of `buf`, if complete.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(ProtocolError::Chunk("line too long")),
        None => Ok(None),
    }
}

impl Chunked {
    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let digits = line
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.len() <= 16)
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or(ProtocolError::Chunk("invalid chunk size"))?;
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::Chunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// Writes one chunk's size line into `out` (the data follows, then CRLF).
pub fn chunk_size_line(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// The end of a chunked body: the last chunk and no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: Method) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(text);
        match parse_head(&mut buf, &method).unwrap() {
            Parsed::Final(h) => (h, buf),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_head_gets_the_framing_its_body_needs() {
        let req = Request::get("http://x/a?b=1")
            .header("host", "s:80")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(encode_head(&req, Some(0), &mut out), BodyFraming::Empty);
        assert_eq!(out, b"GET /a?b=1 HTTP/1.1\r\nhost: s:80\r\n\r\n");

        let req = Request::post("/d").body(()).unwrap();
        let mut out = Vec::new();
        assert_eq!(encode_head(&req, Some(5), &mut out), BodyFraming::Length(5));
        assert_eq!(out, b"POST /d HTTP/1.1\r\ncontent-length: 5\r\n\r\n");

        let mut out = Vec::new();
        assert_eq!(encode_head(&req, None, &mut out), BodyFraming::Chunked);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));

        let req = Request::post("/d")
            .header("content-length", "7")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(encode_head(&req, None, &mut out), BodyFraming::Length(7));
        assert_eq!(out, b"POST /d HTTP/1.1\r\ncontent-length: 7\r\n\r\n");
    }

    #[test]
    fn a_head_with_a_length() {
        let (h, rest) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Served-By: s1\r\n\r\nok\nNEXT",
            Method::GET,
        );
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.response.headers()["x-served-by"], "s1");
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert_eq!(&rest[..], b"ok\nNEXT");
    }

    #[test]
    fn bodies_that_are_not_there() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n";
        assert_eq!(head(text, Method::HEAD).0.framing, Framing::Empty);
        let text = "HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(head(text, Method::GET).0.framing, Framing::Empty);
        let text = "HTTP/1.1 304 Not Modified\r\nContent-Length: 30\r\n\r\n";
        assert_eq!(head(text, Method::GET).0.framing, Framing::Empty);
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(head(text, Method::GET).0.framing, Framing::Empty);
    }

    #[test]
    fn connections_that_cannot_be_reused() {
        let (h, _) = head("HTTP/1.1 200 OK\r\n\r\nall of it", Method::GET);
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            Method::GET,
        );
        assert!(!h.keep_alive);
        let (h, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", Method::GET);
        assert!(!h.keep_alive);
        assert_eq!(h.response.version(), Version::HTTP_10);
        let (h, _) = head(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx",
            Method::GET,
        );
        assert!(h.keep_alive);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive, "length and chunked together: close after");
    }

    #[test]
    fn interim_answers_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n");
        assert!(matches!(
            parse_head(&mut buf, &Method::POST).unwrap(),
            Parsed::Interim
        ));
        assert!(matches!(
            parse_head(&mut buf, &Method::POST).unwrap(),
            Parsed::Partial
        ));
        buf.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        match parse_head(&mut buf, &Method::POST).unwrap() {
            Parsed::Final(h) => assert_eq!(h.response.status(), 201),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_heads_are_refused() {
        for text in [
            "NOT HTTP\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(text);
            assert!(parse_head(&mut buf, &Method::GET).is_err(), "{text}");
        }
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        buf.extend_from_slice(&vec![b'a'; MAX_HEAD + 1]);
        assert!(matches!(
            parse_head(&mut buf, &Method::GET),
            Err(ProtocolError::HeadTooLarge)
        ));
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n");
        assert!(
            parse_head(&mut buf, &Method::GET).is_ok(),
            "equal repeats are fine"
        );
    }

    #[test]
    fn chunks_come_apart_whatever_the_reads() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        // feed one byte at a time: every split must work
        let mut c = Chunked::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Decoded::Data(d) = c.decode(&mut buf).unwrap() {
                body.extend_from_slice(&d);
            }
            if c.is_done() {
                break;
            }
        }
        assert_eq!(body, b"hello world");
        assert!(c.is_done());
        assert!(buf.is_empty(), "nothing after the body was taken");

        let mut whole = BytesMut::from(&wire[..]);
        let mut c = Chunked::default();
        assert_eq!(c.decode(&mut whole).unwrap(), Decoded::Data("hello".into()));
        assert_eq!(
            c.decode(&mut whole).unwrap(),
            Decoded::Data(" world".into())
        );
        assert_eq!(c.decode(&mut whole).unwrap(), Decoded::End);
        assert_eq!(&whole[..], b"NEXT");
    }

    #[test]
    fn bad_chunks_are_refused() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", b"\r\n"] {
            let mut buf = BytesMut::from(wire);
            let mut c = Chunked::default();
            let mut result = Ok(Decoded::NeedMore);
            for _ in 0..4 {
                result = c.decode(&mut buf);
                if result.is_err() {
                    break;
                }
            }
            assert!(result.is_err(), "{wire:?}");
        }
        let mut chunk = Vec::new();
        chunk_size_line(255, &mut chunk);
        assert_eq!(chunk, b"ff\r\n");
    }
}
