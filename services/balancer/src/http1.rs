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
    /// `Transfer-Encoding` in an HTTP/1.0 answer: HTTP/1.0 has no chunks,
    /// so the body's end cannot be trusted (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncoding,
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
        // The body's framing is written below from the body itself: a
        // length or coding copied from the client could disagree with the
        // bytes that follow, and the server would read the rest of the body
        // as another request.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match body {
        // an empty body says `content-length: 0` only if the client did
        Some(0) if !req.headers().contains_key(header::CONTENT_LENGTH) => BodyFraming::Empty,
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
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

/// Whether the body is chunked: `chunked` is the last coding of the last
/// `Transfer-Encoding` line (RFC 9112 §6.3; read as hyper's client reads it,
/// so that the two agree, see tests/differential.rs).
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
}

/// The largest length accepted: hyper's client refuses the two above it.
const MAX_LENGTH: u64 = u64::MAX - 2;

/// A decimal number made of digits only (`u64::from_str` would also take a
/// sign: `+5` is not a length, and two parsers reading it differently is
/// how smuggling starts).
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// The one length that every `Content-Length` line and list element says
/// (`5, 5` is one length; `5, 6` is none).
fn content_length(headers: &HeaderMap) -> Result<u64, ProtocolError> {
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let v = v.to_str().map_err(|_| ProtocolError::ContentLength)?;
        for part in v.split(',') {
            let n = digits(part.trim().as_bytes()).ok_or(ProtocolError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(ProtocolError::ContentLength);
            }
            length = Some(n);
        }
    }
    length
        .filter(|n| *n <= MAX_LENGTH)
        .ok_or(ProtocolError::ContentLength)
}

/// `5, 5` or two equal lines become one plain `5`: what is passed on is
/// what was understood, in the one form every parser reads alike.
fn normalise_length(headers: &mut HeaderMap, n: u64) {
    let mut lines = headers.get_all(header::CONTENT_LENGTH).iter();
    let plain = lines
        .next()
        .is_some_and(|v| v.as_bytes().iter().all(u8::is_ascii_digit))
        && lines.next().is_none();
    if !plain {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

/// Parses the answer head at the start of `buf` to a request made with
/// `method`. A complete head is removed from `buf`; its header values keep
/// pointing into the same memory (no copy).
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, ProtocolError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf).map_err(ProtocolError::Head)? {
        // (a head's size must not depend on how its bytes were split up
        // into reads)
        httparse::Status::Complete(len) if len > MAX_HEAD => {
            return Err(ProtocolError::HeadTooLarge)
        }
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
        // The length of the body a GET would have had: passed on when it is
        // one, dropped when it is garbage (never forwarded as it came) or
        // when a transfer coding says the length is not the framing (found
        // by fuzz/fuzz_targets/response.rs: a HEAD answer passed on both).
        if headers.contains_key(header::TRANSFER_ENCODING) {
            headers.remove(header::CONTENT_LENGTH);
        } else if headers.contains_key(header::CONTENT_LENGTH) {
            match content_length(&headers) {
                Ok(n) => normalise_length(&mut headers, n),
                Err(_) => {
                    headers.remove(header::CONTENT_LENGTH);
                }
            }
        }
        Framing::Empty
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(ProtocolError::TransferEncoding);
        }
        // RFC 9112 §6.3: a length next to a transfer coding is ignored, and
        // an intermediary must remove it before passing the answer on (the
        // client would otherwise frame the decoded body by the stale
        // length); such a message may be an attempt at smuggling, so the
        // connection is closed afterwards.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        if is_chunked(&headers) {
            Framing::Chunked
        } else {
            // another coding last: the body ends with the connection
            keep_alive = false;
            Framing::UntilClose
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        let n = content_length(&headers)?;
        normalise_length(&mut headers, n);
        match n {
            0 => Framing::Empty,
            n => Framing::Length(n),
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

/// Takes a chunked body apart as its bytes arrive. Trailer fields are
/// checked and dropped (no browser uses them).
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
    /// The trailer section read so far (only when there is one).
    trailers: Option<BytesMut>,
    /// Its lines so far.
    trailer_lines: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: ChunkState::Size,
            trailers: None,
            trailer_lines: 0,
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
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, ProtocolError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i > limit => Err(ProtocolError::Chunk("line too long")),
        Some(i) => {
            let line = buf.split_to(i).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > limit => Err(ProtocolError::Chunk("line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line: `1*HEXDIG [ BWS ";" extensions ]`
/// (RFC 9112 §7.1). Nothing else is let through: no sign, no leading
/// space, no bare CR or LF anywhere (a parser that ends lines at a bare LF
/// would see another chunk there), no size past 64 bits.
fn chunk_size(line: &[u8]) -> Option<u64> {
    if line.iter().any(|b| *b == b'\r' || *b == b'\n') {
        return None;
    }
    let end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if end == 0 {
        return None;
    }
    let size = line[..end].iter().try_fold(0u64, |n, b| {
        // a hex digit, checked above
        let d = (*b as char).to_digit(16).unwrap_or(0);
        n.checked_mul(16)?.checked_add(u64::from(d))
    })?;
    match skip_bws(&line[end..]) {
        [] | [b';', ..] => Some(size),
        _ => None,
    }
}

/// Spaces and tabs (HTTP's "bad whitespace") off the front of `s`.
fn skip_bws(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(s.len());
    &s[n..]
}

/// The most bytes a trailer section may take (as in hyper's client).
const TRAILER_LIMIT: usize = 16 * 1024;

/// Checks a whole trailer section (its lines, each with its CRLF, and the
/// final CRLF) as hyper's client does: header fields, one per line.
fn check_trailers(section: &[u8], lines: usize) -> Result<(), ProtocolError> {
    let bad = ProtocolError::Chunk("invalid trailer section");
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => {
            for f in fields.iter() {
                HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| ProtocolError::Header)?;
                HeaderValue::from_bytes(f.value).map_err(|_| ProtocolError::Header)?;
            }
            Ok(())
        }
        _ => Err(bad),
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
                    let Some(line) = take_line(buf, MAX_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size =
                        chunk_size(&line).ok_or(ProtocolError::Chunk("invalid chunk size"))?;
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
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(ProtocolError::Chunk("chunk data not followed by CRLF"));
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ProtocolError::Chunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(line) = take_line(buf, TRAILER_LIMIT)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.contains(&b'\r') {
                        return Err(ProtocolError::Chunk("bare CR in a trailer"));
                    }
                    if line.is_empty() {
                        if let Some(mut section) = self.trailers.take() {
                            section.extend_from_slice(b"\r\n");
                            if section.len() >= TRAILER_LIMIT {
                                return Err(ProtocolError::Chunk("trailers too large"));
                            }
                            check_trailers(&section, self.trailer_lines)?;
                        }
                        self.state = ChunkState::Done;
                        continue;
                    }
                    self.trailer_lines += 1;
                    let section = self.trailers.get_or_insert_with(BytesMut::new);
                    section.extend_from_slice(&line);
                    section.extend_from_slice(b"\r\n");
                    if self.trailer_lines > MAX_HEADERS || section.len() >= TRAILER_LIMIT {
                        return Err(ProtocolError::Chunk("trailers too large"));
                    }
                }
            }
        }
    }
}

/// Cuts an answer's body out of the bytes read, whatever its framing: the
/// pool reads its connections through it, and the tests and fuzz targets
/// feed it bytes alone.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// This many bytes to go.
    Length(u64),
    /// Chunks to go.
    Chunked(Chunked),
    /// Everything until the server closes.
    UntilClose,
    /// All read.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(Chunked::default()),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Done => Some(0),
            Self::Length(n) => Some(*n),
            Self::Chunked(_) | Self::UntilClose => None,
        }
    }

    /// Takes the next piece of body out of `buf`; never takes a byte past
    /// the body's end.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        match self {
            Self::Done => Ok(Decoded::End),
            Self::Length(_) | Self::UntilClose if buf.is_empty() => Ok(Decoded::NeedMore),
            Self::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                if *left == 0 {
                    *self = Self::Done;
                }
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Self::UntilClose => Ok(Decoded::Data(buf.split().freeze())),
            Self::Chunked(chunks) => {
                let decoded = chunks.decode(buf)?;
                if decoded == Decoded::End {
                    *self = Self::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The server closed the connection (after everything in the buffer was
    /// decoded): whether that is how this body ends. Otherwise it was cut
    /// short.
    pub fn closed(&mut self) -> bool {
        match self {
            Self::Done => true,
            Self::UntilClose => {
                *self = Self::Done;
                true
            }
            Self::Length(_) | Self::Chunked(_) => false,
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

        // the client's framing headers are never copied: the body's own
        // length (or chunks) is what the server is told
        let req = Request::post("/d")
            .header("content-length", "7")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(encode_head(&req, Some(5), &mut out), BodyFraming::Length(5));
        assert_eq!(out, b"POST /d HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        let mut out = Vec::new();
        assert_eq!(encode_head(&req, None, &mut out), BodyFraming::Chunked);
        assert_eq!(
            out,
            b"POST /d HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        assert_eq!(encode_head(&req, Some(0), &mut out), BodyFraming::Length(0));
        assert_eq!(out, b"POST /d HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
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

    fn refused(text: &[u8], method: Method) -> bool {
        parse_head(&mut BytesMut::from(text), &method).is_err()
    }

    #[test]
    fn lengths_are_digits_only() {
        for bad in [
            "+5",
            "-0",
            " ",
            "",
            "5 5",
            "0x5",
            "5,",
            "18446744073709551615",
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(refused(text.as_bytes(), Method::GET), "{bad:?}");
        }
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Length(5));
        let lines: Vec<_> = h
            .response
            .headers()
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(lines, ["5"], "one plain value is passed on");
    }

    #[test]
    fn a_transfer_coding_overrides_and_removes_a_length() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (h, _) = head(text, Method::GET);
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        assert!(!h.response.headers().contains_key("content-length"));
        // fuzz/regressions/response/head-with-length-and-chunked
        let (h, _) = head(text, Method::HEAD);
        assert_eq!(h.framing, Framing::Empty);
        assert!(!h.response.headers().contains_key("content-length"));
        // only a last `chunked` is chunked (an empty last element too is not)
        for te in ["chunked, gzip", "chunked, ", "gzip"] {
            let text = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            let (h, _) = head(&text, Method::GET);
            assert_eq!(h.framing, Framing::UntilClose, "{te}");
            assert!(!h.keep_alive);
        }
        // HTTP/1.0 has no chunks: its end cannot be trusted
        assert!(refused(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET
        ));
        // a garbage length on an answer without a body is not passed on
        let (h, _) = head(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: +3\r\n\r\n",
            Method::GET,
        );
        assert!(!h.response.headers().contains_key("content-length"));
    }

    #[test]
    fn a_head_too_large_is_refused_however_it_arrives() {
        let mut text = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        text.extend_from_slice(&vec![b'a'; MAX_HEAD]);
        text.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(
            parse_head(&mut BytesMut::from(&text[..]), &Method::GET),
            Err(ProtocolError::HeadTooLarge)
        ));
    }

    /// Decodes a whole chunked body; `None` if refused or incomplete.
    fn dechunk(wire: &[u8]) -> Option<Vec<u8>> {
        let mut buf = BytesMut::from(wire);
        let mut c = Chunked::default();
        let mut body = Vec::new();
        loop {
            match c.decode(&mut buf).ok()? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Some(body),
                Decoded::NeedMore => return None,
            }
        }
    }

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        assert_eq!(dechunk(b"0005\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(
            dechunk(b"5 \t;a=b\r\nhello\r\n0\r\n\r\n").unwrap(),
            b"hello"
        );
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b"-1\r\nx\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\nx\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\n\r\nhello\r\n0\r\n\r\n",
            b"5\rx\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nNo colon\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ] {
            assert_eq!(dechunk(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
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
