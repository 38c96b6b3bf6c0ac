//! Body types of the proxy: what is sent to backends and what is answered to clients.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::backend::{Backend, Conn};
use super::h1::{ChunkedDecoder, Decoded, Framing, ProtocolError};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// Errors carried by proxy bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body grew past [`RouterConfig::max_request_body`](super::RouterConfig).
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the router's limit of {limit} bytes")]
pub(crate) struct BodyTooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

/// The client's body of a request forwarded to a backend, streamed, optionally capped
/// at `limit` bytes.
#[derive(Debug)]
pub(crate) struct RequestBody {
    /// The client's body.
    pub body: Incoming,
    /// Largest number of bytes accepted.
    pub limit: Option<u64>,
    /// Bytes seen so far.
    pub seen: u64,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(limit), Some(data)) = (this.limit, frame.data_ref()) {
                    this.seen += data.len() as u64;
                    if this.seen > limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The backend connection a response body comes from: read while the body streams,
/// handed back to its backend's pool once the body is done (if it may be reused).
pub(crate) struct Release {
    pub conn: Conn,
    pub backend: Arc<Backend>,
    /// Whether the connection may take another request after this response.
    pub keep_alive: bool,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release").field("backend", &self.backend.addr).finish()
    }
}

impl Release {
    /// Pools the connection if the response left it clean: nothing unread after the body.
    fn finish(self) {
        finish(&self.backend, self.conn, self.keep_alive);
    }
}

/// Pools `conn` in `backend` if it may be reused and nothing unread is left on it.
fn finish(backend: &Backend, conn: Conn, keep_alive: bool) {
    if keep_alive && conn.buf.is_empty() {
        backend.checkin(conn);
    }
}

/// Where a backend body stands.
#[derive(Debug)]
pub(crate) enum Remaining {
    /// This many bytes to go.
    Length(u64),
    /// Chunked, in the middle.
    Chunked(ChunkedDecoder),
    /// Until the backend closes the connection.
    UntilClose,
}

/// The body of a response sent to a client.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    /// A backend's body, streamed from its connection, which goes back to the pool at
    /// the end. `None` once the body has ended.
    Backend(Option<(Remaining, Release)>),
    /// A body produced by the router itself (error pages), a backend body that had
    /// fully arrived with its head, or nothing.
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// The body of a backend response framed by `framing`, read from `conn` (whose
    /// buffer holds what already arrived), which goes back to `backend`'s pool at the
    /// end if `keep_alive`.
    pub(crate) fn backend(framing: Framing, mut conn: Conn, backend: &Arc<Backend>, keep_alive: bool) -> Self {
        let remaining = match framing {
            Framing::Empty | Framing::Length(0) => {
                finish(backend, conn, keep_alive);
                return Self::Full(None);
            }
            Framing::Length(n) if conn.buf.len() as u64 >= n => {
                // The whole body came with the head (the common case for small bodies):
                // the connection is free before the client is even answered.
                let data = conn.buf.split_to(n as usize).freeze();
                finish(backend, conn, keep_alive);
                return Self::Full(Some(data));
            }
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => {
                let release = Release { conn, backend: backend.clone(), keep_alive: false };
                return Self::Backend(Some((Remaining::UntilClose, release)));
            }
        };
        // Only a streamed body keeps a handle on its backend.
        Self::Backend(Some((remaining, Release { conn, backend: backend.clone(), keep_alive })))
    }

    /// A fixed body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// No body.
    pub(crate) fn empty() -> Self {
        Self::Full(None)
    }
}

/// A backend connection failed in the middle of a response body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendBodyError {
    #[error("backend {addr} closed the connection in the middle of the response body")]
    Truncated { addr: std::net::SocketAddr },
    #[error("reading the response body from backend {addr}: {source}")]
    Io {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {addr}: {source}")]
    Protocol {
        addr: std::net::SocketAddr,
        #[source]
        source: ProtocolError,
    },
}

/// Advances a backend body: the next data, the end, or a read of more bytes.
fn poll_backend(
    state: &mut Option<(Remaining, Release)>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    loop {
        let Some((remaining, release)) = state.as_mut() else { return Poll::Ready(None) };
        let conn = &mut release.conn;
        let addr = conn.addr;
        match remaining {
            Remaining::Length(left) if !conn.buf.is_empty() => {
                let n = conn.buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let data = conn.buf.split_to(n).freeze();
                *left -= n as u64;
                if *left == 0
                    && let Some((_, release)) = state.take()
                {
                    release.finish();
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Remaining::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::Done) => {
                    if let Some((_, release)) = state.take() {
                        release.finish();
                    }
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(source) => {
                    state.take();
                    return Poll::Ready(Some(Err(Box::new(BackendBodyError::Protocol { addr, source }))));
                }
            },
            Remaining::UntilClose if !conn.buf.is_empty() => {
                return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
            }
            Remaining::Length(_) | Remaining::UntilClose => {}
        }
        match std::task::ready!(conn.poll_fill(cx)) {
            Ok(0) => {
                let until_close = matches!(remaining, Remaining::UntilClose);
                // The connection ended: it is dropped, never pooled.
                state.take();
                if until_close {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Box::new(BackendBodyError::Truncated { addr }))));
            }
            Ok(_) => {}
            Err(source) => {
                state.take();
                return Poll::Ready(Some(Err(Box::new(BackendBodyError::Io { addr, source }))));
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Backend(state) => poll_backend(state, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Backend(state) => state.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) | Self::Backend(None) => SizeHint::with_exact(0),
            Self::Backend(Some((Remaining::Length(n), _))) => SizeHint::with_exact(*n),
            Self::Backend(Some(_)) => SizeHint::default(),
        }
    }
}
