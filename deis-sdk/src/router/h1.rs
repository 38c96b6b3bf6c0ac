//! The router's HTTP/1.1 codec for backend connections (RFC 9112).
//!
//! The router speaks to backends itself instead of through a general-purpose client:
//! a request head is written straight from the client's parsed request in one buffer
//! ([`encode_request_head`]), a response head is parsed with `httparse` into
//! [`ResponseHead`], whose [`Framing`] says how the body ends, and a chunked body is
//! decoded by [`ChunkedDecoder`] without copying its data. Everything here is plain
//! functions over byte buffers, public so that it can be fuzzed (`fuzz/`, target
//! `router_h1`) and reused by integrators writing their own proxies.
//!
//! Limits: a response head is at most [`MAX_HEAD_BYTES`] with at most [`MAX_HEADERS`]
//! fields; a chunk-size line (with extensions) at most [`MAX_CHUNK_LINE`] bytes; the
//! trailer section at most [`MAX_TRAILERS`] bytes (trailers are read and dropped).

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Largest response head accepted from a backend.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size and extensions).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section of a chunked body.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// A backend broke HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The response head is larger than [`MAX_HEAD_BYTES`].
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    /// The response head is not HTTP/1.x (or has more than [`MAX_HEADERS`] fields).
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// A header field's name or value is not acceptable.
    #[error("malformed response header field")]
    HeaderField,
    /// `Content-Length` is not a number, or appears twice with different values.
    #[error("invalid Content-Length in the response")]
    ContentLength,
    /// The chunked body is malformed.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// How a message body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a response to HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields as received (hop-by-hop ones included).
    pub headers: HeaderMap,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`, for a request with method `method`.
///
/// `Ok(None)`: the head is not complete yet (read more and call again). On success the
/// head's bytes are removed from `buf`; header values share its memory (no copies).
pub fn parse_response_head(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, ProtocolError> {
    // Once to find the head's end, then again over the head split off the buffer, so
    // that values can share its memory (the parser's slices borrow what they parse).
    let len = match parse(buf, |_| Ok(())) {
        Ok(httparse::Status::Complete((len, ()))) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(ProtocolError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > MAX_HEAD_BYTES {
        return Err(ProtocolError::HeadTooLarge);
    }
    let head = buf.split_to(len).freeze();
    let parsed = parse(&head, |resp| {
        let version = if resp.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        let status =
            resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(ProtocolError::Head(httparse::Error::Status))?;
        let mut headers = HeaderMap::with_capacity(resp.headers.len());
        for h in resp.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ProtocolError::HeaderField)?;
            let value =
                HeaderValue::from_maybe_shared(head.slice_ref(h.value)).map_err(|_| ProtocolError::HeaderField)?;
            headers.append(name, value);
        }
        Ok((version, status, headers))
    })?;
    let httparse::Status::Complete((_, (version, status, mut headers))) = parsed else {
        unreachable!("the same bytes parsed complete a moment ago");
    };

    let mut length: Option<u64> = None;
    let (mut transfer_encoding, mut chunked) = (false, false);
    let (mut close, mut keep_alive_token) = (false, false);
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let n = parse_content_length(value.as_bytes()).ok_or(ProtocolError::ContentLength)?;
        if length.is_some_and(|l| l != n) {
            return Err(ProtocolError::ContentLength);
        }
        length = Some(n);
    }
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        transfer_encoding = true;
        // Only the final coding matters: is the body chunked at the outermost level?
        chunked = tokens(value.as_bytes()).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
    }
    for t in headers.get_all(header::CONNECTION).iter().flat_map(|v| tokens(v.as_bytes())) {
        close |= t.eq_ignore_ascii_case(b"close");
        keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
    }
    let mut keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    let bodyless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodyless {
        Framing::Empty
    } else if transfer_encoding {
        if length.is_some() {
            // Both: Transfer-Encoding wins, and the connection is not to be trusted after.
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some(ResponseHead { status, version, headers, framing, keep_alive }))
}

/// Parses a response head in `buf` and hands the parsed head to `with` if complete.
fn parse<T>(
    buf: &[u8],
    with: impl FnOnce(&httparse::Response<'_, '_>) -> Result<T, ProtocolError>,
) -> Result<httparse::Status<(usize, T)>, ProtocolError> {
    // Uninitialised field slots: nothing to zero for each response.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => Ok(httparse::Status::Complete((len, with(&resp)?))),
        Ok(httparse::Status::Partial) => Ok(httparse::Status::Partial),
        Err(e) => Err(ProtocolError::Head(e)),
    }
}

/// `Content-Length`: digits, or a list of identical values (RFC 9110 section 8.6).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in value.split(|&b| b == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data (never empty).
    Data(Bytes),
    /// The buffer is used up before the body ends: read more.
    NeedMore,
    /// The body ended (last chunk and trailers consumed).
    Done,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// In the chunk size's hex digits.
    #[default]
    Size,
    /// After the size: extensions or whitespace up to CR.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// In chunk data.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Expecting the LF ending a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body has ended.
    Done,
}

/// An incremental decoder of a chunked body (RFC 9112 section 7.1). Data is split off
/// the input buffer without copying; extensions and trailers are consumed and dropped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Size being parsed, then the data left in the current chunk.
    size: u64,
    /// Digits of the size seen so far.
    digits: u8,
    /// Bytes of the current size line, or of the trailer section.
    line: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Consumes framing from the front of `buf` up to the next data, which it splits
    /// off and returns, or up to the end of the body, or of the buffer.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ProtocolError> {
        use ChunkState::*;
        loop {
            if self.state == Done {
                return Ok(Decoded::Done);
            }
            if self.state == Data {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(self.size).unwrap_or(usize::MAX).min(buf.len());
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&b) = buf.first() else { return Ok(Decoded::NeedMore) };
            buf.advance(1);
            self.state = match (self.state, b) {
                (Size, _) if b.is_ascii_hexdigit() => {
                    if self.digits >= 16 {
                        return Err(ProtocolError::Chunked("chunk size too large"));
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    self.line += 1;
                    Size
                }
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => {
                    self.line += 1;
                    Extension
                }
                (Size, _) => return Err(ProtocolError::Chunked("invalid chunk size")),
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(ProtocolError::Chunked("bare LF in a chunk-size line")),
                (Extension, _) => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(ProtocolError::Chunked("chunk-size line too long"));
                    }
                    Extension
                }
                (SizeLf, b'\n') => {
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 { TrailerStart } else { Data }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => EndLf,
                (EndLf, b'\n') => Done,
                (TrailerStart | Trailer, _) => {
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return Err(ProtocolError::Chunked("trailer section too large"));
                    }
                    if b == b'\r' {
                        TrailerLf
                    } else if b == b'\n' {
                        return Err(ProtocolError::Chunked("bare LF in the trailer section"));
                    } else {
                        Trailer
                    }
                }
                (TrailerLf, b'\n') => TrailerStart,
                (SizeLf | DataCr | DataLf | EndLf | TrailerLf, _) => {
                    return Err(ProtocolError::Chunked("expected CRLF"));
                }
                (Data | Done, _) => unreachable!("handled above"),
            };
        }
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Headers that describe one hop and are never forwarded (RFC 9110 section 7.6.1),
/// plus `Expect`, which the router's server side already answered.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The extra header names a message's `Connection` header lists (other than `close`,
/// `keep-alive` and `upgrade`): hop-by-hop too, so never forwarded.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .filter(|t| {
            !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect()
}

/// How the request body is sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// The client's `Content-Length` (kept as sent) delimits it.
    Length,
    /// Chunked (the client sent it chunked).
    Chunked,
}

/// What the router adds to a forwarded request.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: &'a HeaderValue,
    /// Whether the client is a trusted proxy: its `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Real-IP` are kept (the address appended to the
    /// first); from anyone else they are replaced.
    pub trusted: bool,
    /// The protocol of an upgrade request (`Connection: upgrade` is re-added).
    pub upgrade: Option<&'a HeaderValue>,
    /// The body's framing.
    pub framing: RequestFraming,
    /// The client connection is TLS: `X-Forwarded-Proto: https` (else `http`).
    pub secure: bool,
}

/// Writes the head of `parts` as a request to a backend into `out`: origin-form target,
/// HTTP/1.1, hop-by-hop fields (and those `Connection` lists) removed, `X-Forwarded-Host`
/// set to the `Host` the client asked for (which is forwarded as sent). From a client
/// that is not a trusted proxy, `X-Forwarded-For` and `X-Real-IP` are its address and
/// `X-Forwarded-Proto` is the connection's (`http` or `https`), whatever it sent; from
/// a trusted proxy its `X-Forwarded-For` is extended with its address and its
/// `X-Forwarded-Proto` and `X-Real-IP` kept (set from the connection where missing).
pub fn encode_request_head(out: &mut Vec<u8>, parts: &http::request::Parts, fwd: &Forwarding<'_>) {
    let headers = &parts.headers;
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let listed = if headers.contains_key(header::CONNECTION) { connection_listed(headers) } else { Vec::new() };
    let mut forwarded_for: Option<Vec<u8>> = None;
    let connection_proto: &[u8] = if fwd.secure { b"https" } else { b"http" };
    let (mut proto, mut real_ip) = (connection_proto, fwd.client_ip.as_bytes());
    for (name, value) in headers {
        if HOP_BY_HOP.contains(name) || listed.contains(name) || *name == X_FORWARDED_HOST {
            continue;
        }
        if *name == X_FORWARDED_PROTO || *name == X_REAL_IP || *name == X_FORWARDED_FOR && !fwd.trusted {
            if fwd.trusted && *name == X_FORWARDED_PROTO {
                proto = value.as_bytes();
            } else if fwd.trusted && *name == X_REAL_IP {
                real_ip = value.as_bytes();
            }
            continue;
        }
        if *name == X_FORWARDED_FOR {
            let joined = forwarded_for.get_or_insert_with(Vec::new);
            joined.extend_from_slice(value.as_bytes());
            joined.extend_from_slice(b", ");
            continue;
        }
        if fwd.framing == RequestFraming::Chunked && *name == header::CONTENT_LENGTH {
            continue;
        }
        field(out, name.as_str(), value.as_bytes());
    }
    let host = match headers.get(header::HOST) {
        Some(h) => Some(h.as_bytes()),
        None => {
            // Absolute-form target (proxy-style): its authority is the host.
            let authority = parts.uri.authority().map(|a| a.as_str().as_bytes());
            if let Some(a) = authority {
                field(out, "host", a);
            }
            authority
        }
    };
    let mut xff = forwarded_for.unwrap_or_default();
    xff.extend_from_slice(fwd.client_ip.as_bytes());
    field(out, "x-forwarded-for", &xff);
    field(out, "x-forwarded-proto", proto);
    field(out, "x-real-ip", real_ip);
    if let Some(h) = host {
        field(out, "x-forwarded-host", h);
    }
    if let Some(u) = fwd.upgrade {
        field(out, "connection", b"upgrade");
        field(out, "upgrade", u.as_bytes());
    }
    if fwd.framing == RequestFraming::Chunked {
        field(out, "transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Removes hop-by-hop fields from a response head's headers, including those its
/// `Connection` header lists. With `keep_upgrade`, `Connection: upgrade` and `Upgrade`
/// stay (a 101 response).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) fields present; most heads have none to remove.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    let upgrade = if keep_upgrade { headers.get(header::UPGRADE).cloned() } else { None };
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

/// The chunk-size line of a chunk of `len` bytes (`"1a\r\n"`).
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(raw: &str, method: &Method) -> Result<Option<(ResponseHead, BytesMut)>, ProtocolError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        Ok(parse_response_head(&mut buf, method)?.map(|h| (h, buf)))
    }

    #[test]
    fn parses_heads_and_framing() {
        let (h, rest) =
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello", &Method::GET).unwrap().unwrap();
        assert_eq!(
            (h.status, h.version, h.framing, h.keep_alive),
            (StatusCode::OK, Version::HTTP_11, Framing::Length(5), true)
        );
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&rest[..], b"hello");

        let (h, _) =
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &Method::GET).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let (h, _) = parse("HTTP/1.1 200 OK\r\n\r\n", &Method::GET).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &Method::HEAD).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", &Method::GET).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let (h, _) = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &Method::GET).unwrap().unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked to keep alive");
        let (h, _) = parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n", &Method::GET)
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) =
            parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", &Method::GET).unwrap().unwrap();
        assert!(!h.keep_alive);
        // Both framings: chunked wins, Content-Length goes, the connection is not reused.
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        let (h, _) = parse("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n", &Method::GET).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(4));
    }

    #[test]
    fn partial_and_bad_heads() {
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET).unwrap().is_none());
        assert!(parse("", &Method::GET).unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
        ] {
            assert_eq!(parse(bad, &Method::GET).unwrap_err(), ProtocolError::ContentLength, "{bad:?}");
        }
        assert!(matches!(parse("SSH-2.0-OpenSSH\r\n\r\n", &Method::GET), Err(ProtocolError::Head(_))));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&huge, &Method::GET).unwrap_err(), ProtocolError::HeadTooLarge);
    }

    fn decode_all(dec: &mut ChunkedDecoder, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, ProtocolError> {
        loop {
            match dec.decode(buf)? {
                Decoded::Data(d) => {
                    assert!(!d.is_empty());
                    out.extend_from_slice(&d);
                }
                Decoded::NeedMore => return Ok(false),
                Decoded::Done => return Ok(true),
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let mut buf = BytesMut::from(&b"5;name=value\r\nhello\r\n6 \r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT"[..]);
        let (mut dec, mut out) = (ChunkedDecoder::new(), Vec::new());
        assert!(decode_all(&mut dec, &mut buf, &mut out).unwrap());
        assert_eq!(out, b"hello world");
        assert_eq!(&buf[..], b"NEXT", "bytes after the body stay in the buffer");
    }

    #[test]
    fn malformed_chunked_is_an_error() {
        for bad in [&b"x\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"5\nhello", b"11111111111111111\r\n", b"0\r\nX\n"] {
            let (mut dec, mut out) = (ChunkedDecoder::new(), Vec::new());
            let r = decode_all(&mut dec, &mut BytesMut::from(bad), &mut out);
            assert!(r.is_err(), "{bad:?} gave {r:?}");
        }
    }

    #[test]
    fn encodes_forwarded_requests() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://hello.deis.test/path?q=1")
            .header("connection", "keep-alive, X-Secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-proto", "https")
            .header("x-real-ip", "6.6.6.6")
            .header("content-length", "3")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let ip = HeaderValue::from_static("127.0.0.1");
        // Encodes the head as a client at `ip` (behind a trusted proxy or not) would have
        // it forwarded, parses it back, and returns a getter of each header's values.
        let forwarded = |trusted: bool| {
            let mut out = Vec::new();
            let fwd =
                Forwarding { client_ip: &ip, trusted, upgrade: None, framing: RequestFraming::Length, secure: false };
            encode_request_head(&mut out, &parts, &fwd);
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut fields);
            assert_eq!(req.parse(&out).unwrap(), httparse::Status::Complete(out.len()));
            assert_eq!((req.method, req.path, req.version), (Some("POST"), Some("/path?q=1"), Some(1)));
            let headers: Vec<(String, Vec<u8>)> =
                req.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
            move |n: &str| headers.iter().filter(|(name, _)| name == n).map(|(_, v)| v.clone()).collect::<Vec<_>>()
        };
        let get = forwarded(false);
        assert!(get("x-secret").is_empty() && get("keep-alive").is_empty() && get("connection").is_empty());
        assert_eq!(get("host"), [b"hello.deis.test".to_vec()]);
        // Fault "router headers": a client's own X-Real-IP reached the app unchanged.
        assert_eq!(get("x-forwarded-for"), [b"127.0.0.1".to_vec()], "a client's claims are replaced");
        assert_eq!(get("x-real-ip"), [b"127.0.0.1".to_vec()]);
        assert_eq!(get("x-forwarded-proto"), [b"http".to_vec()]);
        assert_eq!(get("x-forwarded-host"), [b"hello.deis.test".to_vec()]);
        assert_eq!(get("content-length"), [b"3".to_vec()]);
        assert_eq!(get("accept"), [b"*/*".to_vec()]);

        // A trusted proxy's view is kept, its own address appended.
        let get = forwarded(true);
        assert_eq!(get("x-forwarded-for"), [b"10.0.0.1, 127.0.0.1".to_vec()]);
        assert_eq!(get("x-forwarded-proto"), [b"https".to_vec()]);
        assert_eq!(get("x-real-ip"), [b"6.6.6.6".to_vec()]);

        let up = HeaderValue::from_static("websocket");
        let (parts, ()) = http::Request::builder().uri("/ws").header("host", "a").body(()).unwrap().into_parts();
        let mut out = Vec::new();
        let fwd = Forwarding {
            client_ip: &ip,
            trusted: false,
            upgrade: Some(&up),
            framing: RequestFraming::Chunked,
            secure: true,
        };
        encode_request_head(&mut out, &parts, &fwd);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\nhost: a\r\n"), "{text}");
        assert!(text.contains("connection: upgrade\r\nupgrade: websocket\r\n"), "{text}");
        assert!(text.contains("x-forwarded-proto: https\r\n"), "TLS clients are told apart: {text}");
        assert!(text.ends_with("transfer-encoding: chunked\r\n\r\n"), "{text}");
    }

    #[test]
    fn strips_hop_by_hop_response_fields() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Internal"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        let mut up = HeaderMap::new();
        up.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        up.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut up, true);
        assert_eq!(up[header::CONNECTION], "upgrade");
        assert_eq!(up[header::UPGRADE], "websocket");
    }

    proptest! {
        /// Any body, chunked in any sizes, split into reads anywhere, decodes to itself
        /// and leaves what follows in the buffer.
        #[test]
        fn chunked_round_trips(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..20),
            cuts in proptest::collection::vec(1usize..64, 1..40),
            ext in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            let (mut rest, mut i) = (&body[..], 0);
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:X}{}\r\n", if ext { ";a=b" } else { "" }).as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\nTrailer: x\r\n\r\nAFTER");
            let (mut dec, mut out, mut buf) = (ChunkedDecoder::new(), Vec::new(), BytesMut::new());
            let (mut pos, mut k, mut done) = (0, 0, false);
            while !done {
                let n = cuts[k % cuts.len()].min(wire.len() - pos);
                prop_assert!(n > 0, "decoder wants more than the whole body");
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                k += 1;
                done = decode_all(&mut dec, &mut buf, &mut out).unwrap();
            }
            prop_assert_eq!(&out, &body);
            buf.extend_from_slice(&wire[pos..]);
            prop_assert_eq!(&buf[..], b"AFTER");
        }

        /// Parsing never panics, and a head it accepts leaves exactly the rest.
        #[test]
        fn response_heads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&raw[..]);
            if let Ok(Some(_)) = parse_response_head(&mut buf, &Method::GET) {
                prop_assert!(buf.len() < raw.len());
            }
        }
    }
}
