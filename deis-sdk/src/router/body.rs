//! Body types of the proxy: what is sent to backends and what is answered to clients.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::backend::{Backend, Conn};
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

/// The body of a request forwarded to a backend.
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// The client's body, streamed, optionally capped at `limit` bytes.
    Incoming {
        /// The client's body.
        body: Incoming,
        /// Largest number of bytes accepted.
        limit: Option<u64>,
        /// Bytes seen so far.
        seen: u64,
    },
    /// No body (also used to rebuild a body-less request for a retry).
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Incoming { body, limit, seen } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(limit), Some(data)) = (*limit, frame.data_ref()) {
                        *seen += data.len() as u64;
                        if *seen > limit {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Incoming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Incoming { body, .. } => body.size_hint(),
        }
    }
}

/// The backend connection a response body comes from: polled while the body streams,
/// handed back to its backend's pool once the body is done.
pub(crate) struct Release {
    pub conn: Conn,
    pub backend: Arc<Backend>,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release").field("backend", &self.backend.addr).finish()
    }
}

impl Release {
    fn checkin(self) {
        self.backend.checkin(self.conn);
    }
}

/// The body of a response sent to a client.
#[derive(Debug)]
pub(crate) enum ResponseBody {
    /// A backend's body, streamed; its connection goes back to the pool at the end.
    Proxied {
        /// The backend's body.
        body: Incoming,
        /// The connection, returned to the pool once `body` is fully read.
        release: Option<Release>,
    },
    /// A body produced by the router itself (error pages), or nothing.
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// A backend body whose connection returns to the pool when the body ends.
    pub(crate) fn proxied(body: Incoming, release: Option<Release>) -> Self {
        // hyper may never poll a body that is already at its end, so hand the
        // connection back right away in that case.
        if body.is_end_stream() {
            if let Some(r) = release {
                r.checkin();
            }
            return Self::Proxied { body, release: None };
        }
        Self::Proxied { body, release }
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

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Proxied { body, release } => {
                let mut drove = false;
                loop {
                    match Pin::new(&mut *body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if body.is_end_stream()
                                && let Some(r) = release.take()
                            {
                                r.checkin();
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        Poll::Ready(Some(Err(e))) => {
                            // The connection is broken; drop it rather than pool it.
                            release.take();
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                        Poll::Ready(None) => {
                            if let Some(r) = release.take() {
                                r.checkin();
                            }
                            return Poll::Ready(None);
                        }
                        Poll::Pending => {}
                    }
                    // The body moves only when its connection's driver runs: run it,
                    // then look at the body once more.
                    match release.as_mut() {
                        Some(r) if !drove => {
                            drove = true;
                            // An ended driver has closed the body (end or error), which
                            // the second look sees.
                            let _ = r.conn.poll_driver(cx);
                        }
                        _ => return Poll::Pending,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Proxied { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Proxied { body, .. } => body.size_hint(),
        }
    }
}
