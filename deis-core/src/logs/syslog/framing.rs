//! RFC 6587 TCP framing: octet counting (`LEN SP MSG`) or non-transparent
//! (LF-terminated), detected once per connection from its first byte.

use std::fmt;

/// How a connection frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `LEN SP MSG` (RFC 6587 §3.4.1; what TLS emitters use, RFC 5425).
    OctetCounting,
    /// Messages terminated by LF (RFC 6587 §3.4.2); a trailing CR is left to the parser.
    NonTransparent,
}

/// Why bytes of a connection were not delivered as a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A frame longer than the limit was discarded; decoding continues with the next
    /// frame (after the next LF, or after the announced length).
    Oversized {
        /// The limit.
        max: usize,
    },
    /// An octet-counting length is malformed (not digits, a leading zero, more than 10
    /// digits, not followed by a space). Fatal: the connection can't be resynchronised.
    BadLength(String),
    /// The connection ended inside an octet-counted frame. Fatal (it is the end).
    Truncated {
        /// The announced length.
        expected: usize,
        /// Bytes received of it.
        got: usize,
    },
}

impl FrameError {
    /// Whether the connection must be closed (nothing more can be decoded from it).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Oversized { .. })
    }

    /// A short stable label for counters: `oversized`, `bad_length`, `truncated`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::BadLength(_) => "bad_length",
            Self::Truncated { .. } => "truncated",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversized { max } => {
                write!(f, "syslog frame longer than {max} bytes discarded (raise the message size limit to keep it)")
            }
            Self::BadLength(s) => {
                write!(f, "bad octet-counting length {s:?}: expected `LEN SP MSG` (RFC 6587); closing the connection")
            }
            Self::Truncated { expected, got } => {
                write!(f, "connection ended inside a {expected}-byte syslog frame after {got} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Incremental decoder of one TCP connection's syslog frames.
///
/// Feed bytes with [`push`](Self::push), take frames with
/// [`next_frame`](Self::next_frame) until it returns `None`, and at end of stream call
/// [`finish`](Self::finish) for an unterminated last frame. Results do not depend on
/// how the stream is cut into chunks. Memory: at most `max_frame` plus one pushed
/// chunk is buffered. Never panics.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame: usize,
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf`.
    pos: usize,
    /// LF framing: bytes before this offset hold no LF.
    scan: usize,
    framing: Option<Framing>,
    /// LF framing: dropping an oversized frame's bytes up to the next LF.
    discard_to_lf: bool,
    /// Octet counting: bytes of an oversized frame still to drop.
    skip: usize,
    /// A fatal error was returned, or `finish` was called.
    done: bool,
}

/// Longest octet-counting length accepted, in digits.
const MAX_LEN_DIGITS: usize = 10;

impl FrameDecoder {
    /// A decoder delivering frames of at most `max_frame` bytes (at least 1).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.max(1),
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            framing: None,
            discard_to_lf: false,
            skip: 0,
            done: false,
        }
    }

    /// The framing detected, once the first byte arrived.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// Whether decoding ended (fatal error or [`finish`](Self::finish)).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes buffered, waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Adds bytes received from the connection.
    pub fn push(&mut self, mut chunk: &[u8]) {
        if self.done {
            return;
        }
        if self.skip > 0 {
            let n = self.skip.min(chunk.len());
            self.skip -= n;
            chunk = &chunk[n..];
        }
        if self.discard_to_lf {
            match chunk.iter().position(|c| *c == b'\n') {
                Some(i) => {
                    self.discard_to_lf = false;
                    chunk = &chunk[i + 1..];
                }
                None => return,
            }
        }
        if chunk.is_empty() {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.scan = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.scan = self.scan.saturating_sub(self.pos);
        }
        self.pos = 0;
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame (without its LF or length prefix), an error, or `None`
    /// when more bytes are needed (or decoding is done).
    pub fn next_frame(&mut self) -> Option<Result<&[u8], FrameError>> {
        match self.step(false)? {
            Ok((a, b)) => Some(Ok(&self.buf[a..b])),
            Err(e) => Some(Err(e)),
        }
    }

    /// At end of stream: the unterminated last LF frame, or [`FrameError::Truncated`]
    /// if the stream stopped inside an octet-counted frame. Call after `next_frame`
    /// returned `None`; decoding is done afterwards.
    pub fn finish(&mut self) -> Option<Result<&[u8], FrameError>> {
        let r = self.step(true);
        self.done = true;
        match r? {
            Ok((a, b)) => Some(Ok(&self.buf[a..b])),
            Err(e) => Some(Err(e)),
        }
    }

    fn fail(&mut self, e: FrameError) -> Option<Result<(usize, usize), FrameError>> {
        self.done = true;
        self.pos = self.buf.len();
        Some(Err(e))
    }

    fn step(&mut self, eof: bool) -> Option<Result<(usize, usize), FrameError>> {
        if self.done {
            return None;
        }
        loop {
            let framing = match self.framing {
                Some(f) => f,
                None => {
                    while self.pos < self.buf.len() && matches!(self.buf[self.pos], b'\n' | b'\r') {
                        self.pos += 1;
                    }
                    let first = *self.buf.get(self.pos)?;
                    let f = if first.is_ascii_digit() { Framing::OctetCounting } else { Framing::NonTransparent };
                    self.framing = Some(f);
                    f
                }
            };
            match framing {
                Framing::NonTransparent => {
                    if self.discard_to_lf {
                        return None;
                    }
                    let from = self.scan.max(self.pos);
                    match self.buf[from..].iter().position(|c| *c == b'\n') {
                        Some(i) => {
                            let (a, b) = (self.pos, from + i);
                            self.pos = b + 1;
                            self.scan = self.pos;
                            if b - a > self.max_frame {
                                return Some(Err(FrameError::Oversized { max: self.max_frame }));
                            }
                            if self.buf[a..b].iter().all(|c| matches!(c, b'\r' | 0)) {
                                continue;
                            }
                            return Some(Ok((a, b)));
                        }
                        None => {
                            self.scan = self.buf.len();
                            let (a, b) = (self.pos, self.buf.len());
                            if b - a > self.max_frame {
                                self.pos = b;
                                self.discard_to_lf = true;
                                return Some(Err(FrameError::Oversized { max: self.max_frame }));
                            }
                            if eof {
                                self.pos = b;
                                if self.buf[a..b].iter().all(|c| matches!(c, b'\r' | 0)) {
                                    return None;
                                }
                                return Some(Ok((a, b)));
                            }
                            return None;
                        }
                    }
                }
                Framing::OctetCounting => {
                    if self.skip > 0 {
                        return None;
                    }
                    while self.pos < self.buf.len() && matches!(self.buf[self.pos], b'\n' | b'\r') {
                        self.pos += 1;
                    }
                    let rest = &self.buf[self.pos..];
                    if rest.is_empty() {
                        return None;
                    }
                    let digits = rest.iter().take(MAX_LEN_DIGITS + 1).take_while(|c| c.is_ascii_digit()).count();
                    // Only bytes every chunking has seen by now, so errors don't depend on it.
                    let n = if digits == 0 || rest[0] == b'0' { 1 } else { (digits + 1).min(MAX_LEN_DIGITS + 1) };
                    let shown = || String::from_utf8_lossy(&rest[..n.min(rest.len())]).into_owned();
                    if digits == 0 || digits > MAX_LEN_DIGITS || rest[0] == b'0' {
                        let s = shown();
                        return self.fail(FrameError::BadLength(s));
                    }
                    let Some(&sep) = rest.get(digits) else {
                        if eof {
                            let got = rest.len();
                            return self.fail(FrameError::Truncated { expected: 0, got });
                        }
                        return None;
                    };
                    if sep != b' ' {
                        let s = shown();
                        return self.fail(FrameError::BadLength(s));
                    }
                    let len = rest[..digits].iter().fold(0usize, |a, c| a * 10 + usize::from(c - b'0'));
                    let avail = rest.len() - digits - 1;
                    if len > self.max_frame {
                        let start = self.pos + digits + 1;
                        if avail >= len {
                            self.pos = start + len;
                        } else {
                            self.skip = len - avail;
                            self.pos = self.buf.len();
                        }
                        return Some(Err(FrameError::Oversized { max: self.max_frame }));
                    }
                    if avail < len {
                        if eof {
                            return self.fail(FrameError::Truncated { expected: len, got: avail });
                        }
                        return None;
                    }
                    let a = self.pos + digits + 1;
                    self.pos = a + len;
                    return Some(Ok((a, a + len)));
                }
            }
        }
    }
}
