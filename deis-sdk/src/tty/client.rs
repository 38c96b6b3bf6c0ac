//! The client end of `deis run`: create a session through the controller API
//! ([`create_session`]) and attach to it over a WebSocket ([`attach`]).
//!
//! ```no_run
//! # async fn demo(client: deis_sdk::client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use deis_sdk::deis_core::tty::{SessionInput, SessionOutput};
//! use deis_sdk::tty::client::{AttachOptions, SessionRequest, attach, create_session};
//!
//! let req = SessionRequest { command: vec!["cat".into()], tty: false, proc_type: None };
//! let ticket = create_session(&client, "hello", &req).await?;
//! let mut remote = attach(client.controller_url(), &ticket, AttachOptions::default()).await?;
//! remote.input.send(SessionInput::Stdin(b"hi\n".to_vec())).await?;
//! remote.input.send(SessionInput::Eof).await?;
//! while let Some(event) = remote.output.recv().await {
//!     match event? {
//!         SessionOutput::Stdout(b) => print!("{}", String::from_utf8_lossy(&b)),
//!         SessionOutput::Stderr(b) => eprint!("{}", String::from_utf8_lossy(&b)),
//!         SessionOutput::Exit(status) => println!("{status}"),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use bytes::Bytes;
use deis_core::tty::channel::{self, Frame, Protocol, RemoteStatus};
use deis_core::tty::{CHANNEL_CAPACITY, SessionInput, SessionOutput, TermSize};
use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::SessionTicket;
use crate::client::{Client, ClientError};

/// Body of `POST /v2/apps/<app>/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRequest {
    /// argv; a single element is run with `sh -c`.
    pub command: Vec<String>,
    /// Allocate a terminal.
    #[serde(default)]
    pub tty: bool,
    /// Process type whose environment to use (default `web`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub proc_type: Option<String>,
}

/// Asks the controller for a session of `app` (`POST /v2/apps/<app>/sessions`).
pub async fn create_session(client: &Client, app: &str, req: &SessionRequest) -> Result<SessionTicket, ClientError> {
    let path = format!("/v2/apps/{}/sessions", crate::client::encode_segment(app));
    let body = serde_json::to_value(req).map_err(|e| ClientError::Request(e.to_string()))?;
    let value = client.post_json(&path, &body).await?;
    serde_json::from_value(value).map_err(|e| ClientError::Decode {
        method: "POST".into(),
        url: format!("{}{path}", client.controller_url()),
        reason: e.to_string(),
    })
}

/// Options of [`attach`].
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Terminal size to announce right after attaching (TTY sessions).
    pub size: Option<TermSize>,
    /// `Origin` header to send (browsers send one; CLIs don't).
    pub origin: Option<String>,
    /// Only offer this protocol version (default: offer v5 and v4).
    pub protocol: Option<Protocol>,
    /// Limit on connecting and the WebSocket handshake (default 30 s).
    pub connect_timeout: Option<Duration>,
}

/// Why attaching or a session failed. Messages say what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The URL can't be used.
    #[error("bad session URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Could not connect or complete the handshake.
    #[error("cannot connect to the session broker at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        reason: String,
    },
    /// The broker refused the session (bad token, origin, subprotocol, ...).
    #[error("the session broker refused the session ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The broker's explanation.
        message: String,
    },
    /// The broker reported a failure (the command could not run, a timeout, ...).
    #[error("the session failed: {0}")]
    Failed(String),
    /// The connection broke before the command's exit status arrived.
    #[error("lost the connection to the session broker before the command finished: {0}")]
    Lost(String),
    /// The broker sent something that is not the channel protocol.
    #[error("the session broker sent an invalid message: {0}")]
    Protocol(String),
}

/// An attached session: send input, receive output. `output` yields the command's
/// output, then `Ok(Exit)` or one `Err` explaining why the session ended without an
/// exit status, then `None`.
#[derive(Debug)]
pub struct RemoteSession {
    /// Input for the command (bounded; sending waits while the broker can't keep up).
    pub input: mpsc::Sender<SessionInput>,
    /// Output of the command, ending with its exit status or an error.
    pub output: mpsc::Receiver<Result<SessionOutput, AttachError>>,
    /// The protocol version spoken.
    pub protocol: Protocol,
}

/// The WebSocket URL of `ticket` on the controller (or router) at `base_url`.
pub fn attach_url(base_url: &str, ticket: &SessionTicket) -> Result<String, AttachError> {
    let base = base_url.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") {
        base.to_string()
    } else {
        return Err(AttachError::Url {
            url: base_url.into(),
            reason: "only http:// controller URLs are supported by `deis run` (no TLS yet)".into(),
        });
    };
    let path = ticket.url.split('?').next().unwrap_or_default();
    Ok(format!("{ws}{path}?token={}", ticket.token))
}

/// Where to attach `ticket` through the routing mesh: the WebSocket URL on the router
/// and the `Host` to send, or `None` when the ticket names no router.
///
/// The router address is the one the controller's host knows; when it is a loopback
/// address but the controller (`base_url`) is on another host, the controller's host
/// name is used with the router's port.
pub fn router_attach_url(base_url: &str, ticket: &SessionTicket) -> Option<(String, String)> {
    let (router, host) = (ticket.router.as_deref()?, ticket.host.as_deref()?);
    let mut authority = router.to_string();
    if let Ok(addr) = router.parse::<std::net::SocketAddr>()
        && addr.ip().is_loopback()
    {
        let controller = url_host(base_url);
        let controller_is_local = controller.is_empty()
            || controller.eq_ignore_ascii_case("localhost")
            || controller.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !controller_is_local {
            authority = format!("{controller}:{}", addr.port());
        }
    }
    let path = ticket.url.split('?').next().unwrap_or_default();
    Some((format!("ws://{authority}{path}?token={}", ticket.token), host.to_string()))
}

/// The host part of `http://host:port/...` (brackets kept for IPv6).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or_default()
}

/// Attaches to a session created by [`create_session`].
///
/// When the ticket names a router (deisd: the broker is behind the routing mesh, at
/// `deis.<domain>`), the WebSocket goes to the router with that `Host`
/// ([`router_attach_url`]); if the router can't be reached at all (the token is then
/// still unused) it falls back to the controller at `base_url`. Without a router in the
/// ticket it attaches on `base_url`.
pub async fn attach(base_url: &str, ticket: &SessionTicket, opts: AttachOptions) -> Result<RemoteSession, AttachError> {
    if let Some((url, host)) = router_attach_url(base_url, ticket) {
        match attach_with_host(&url, Some(&host), opts.clone()).await {
            Err(AttachError::Connect { .. }) => {}
            other => return other,
        }
    }
    let url = attach_url(base_url, ticket)?;
    attach_url_raw(&url, opts).await
}

/// Attaches to a full `ws://.../attach?token=...` URL.
pub async fn attach_url_raw(url: &str, opts: AttachOptions) -> Result<RemoteSession, AttachError> {
    attach_with_host(url, None, opts).await
}

/// Attaches to `url`, sending `host` as the `Host` header if given (to reach the broker
/// through a router).
pub async fn attach_with_host(
    url: &str,
    host: Option<&str>,
    opts: AttachOptions,
) -> Result<RemoteSession, AttachError> {
    let mut request =
        url.into_client_request().map_err(|e| AttachError::Url { url: url.to_string(), reason: e.to_string() })?;
    if let Some(host) = host {
        let v = HeaderValue::from_str(host)
            .map_err(|_| AttachError::Url { url: url.to_string(), reason: format!("invalid Host {host:?}") })?;
        request.headers_mut().insert(http::header::HOST, v);
    }
    let offer = match opts.protocol {
        Some(p) => p.name().to_string(),
        None => format!("{}, {}", channel::V5_PROTOCOL, channel::V4_PROTOCOL),
    };
    let headers = request.headers_mut();
    headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&offer).expect("protocol names are ASCII"));
    if let Some(origin) = &opts.origin {
        let v = HeaderValue::from_str(origin)
            .map_err(|_| AttachError::Url { url: url.to_string(), reason: "invalid Origin".into() })?;
        headers.insert("Origin", v);
    }
    let config = WebSocketConfig::default().max_message_size(Some(4 << 20)).max_frame_size(Some(4 << 20));
    let timeout = opts.connect_timeout.unwrap_or(Duration::from_secs(30));
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    let (ws, response) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => {
            return Err(AttachError::Connect { url: url.to_string(), reason: format!("no answer in {timeout:?}") });
        }
        Ok(Err(WsError::Http(resp))) => {
            let status = resp.status().as_u16();
            let message = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| resp.status().canonical_reason().unwrap_or("refused").to_string());
            return Err(AttachError::Refused { status, message });
        }
        Ok(Err(e)) => return Err(AttachError::Connect { url: url.to_string(), reason: e.to_string() }),
        Ok(Ok(pair)) => pair,
    };
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(Protocol::from_name)
        .ok_or_else(|| AttachError::Protocol("the broker did not pick a channel protocol".into()))?;

    let (in_tx, mut in_rx) = mpsc::channel::<SessionInput>(CHANNEL_CAPACITY);
    let (out_tx, out_rx) = mpsc::channel::<Result<SessionOutput, AttachError>>(CHANNEL_CAPACITY);
    let (mut sink, mut stream) = ws.split();
    if let Some(size) = opts.size {
        let _ = sink.send(Message::Binary(Bytes::from(channel::encode(&Frame::Resize(size))))).await;
    }
    let tty = opts.size.is_some();
    // Writer: input -> frames, plus keep-alive pings.
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(Duration::from_secs(5));
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                input = in_rx.recv() => match input {
                    Some(SessionInput::Stdin(b)) => Message::Binary(Bytes::from(channel::encode(&Frame::Stdin(b)))),
                    Some(SessionInput::Resize(size)) => Message::Binary(Bytes::from(channel::encode(&Frame::Resize(size)))),
                    Some(SessionInput::Eof) if protocol.has_close() => {
                        Message::Binary(Bytes::from(channel::encode(&Frame::Close(channel::STDIN))))
                    }
                    // v4 has no half-close: in a terminal, EOF is Ctrl-D.
                    Some(SessionInput::Eof) if tty => Message::Binary(Bytes::from(channel::encode(&Frame::Stdin(vec![4])))),
                    Some(SessionInput::Eof) => continue,
                    None => {
                        // The caller dropped its input: keep the connection for output.
                        std::future::pending::<()>().await;
                        continue;
                    }
                },
                _ = ping.tick() => Message::Ping(Bytes::new()),
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let result = read_loop(&mut stream, protocol, &out_tx).await;
        writer.abort();
        if let Err(e) = result {
            let _ = out_tx.send(Err(e)).await;
        }
    });
    Ok(RemoteSession { input: in_tx, output: out_rx, protocol })
}

/// Reads frames until the exit status; output is forwarded only as fast as the caller
/// takes it.
async fn read_loop<S>(
    stream: &mut S,
    protocol: Protocol,
    out: &mpsc::Sender<Result<SessionOutput, AttachError>>,
) -> Result<(), AttachError>
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|e| AttachError::Lost(e.to_string()))?;
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Close(frame) => {
                let why = frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty());
                return Err(AttachError::Lost(why.unwrap_or_else(|| "the broker closed the connection".into())));
            }
            Message::Text(_) => return Err(AttachError::Protocol("text message".into())),
            _ => continue,
        };
        let frame = channel::decode(&bytes, protocol).map_err(|e| AttachError::Protocol(e.to_string()))?;
        let item = match frame {
            Frame::Stdout(b) => SessionOutput::Stdout(b),
            Frame::Stderr(b) => SessionOutput::Stderr(b),
            Frame::Status(json) => match channel::parse_status(&json) {
                Ok(RemoteStatus::Exited(status)) => {
                    let _ = out.send(Ok(SessionOutput::Exit(status))).await;
                    return Ok(());
                }
                Ok(RemoteStatus::Failed { message, .. }) => return Err(AttachError::Failed(message)),
                Err(e) => return Err(AttachError::Protocol(e.to_string())),
            },
            Frame::Close(_) | Frame::Resize(_) | Frame::Stdin(_) => continue,
        };
        if out.send(Ok(item)).await.is_err() {
            return Ok(());
        }
    }
    Err(AttachError::Lost("the connection closed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = SessionTicket {
            id: "abc".into(),
            token: "p.s".into(),
            url: "/v2/sessions/abc/attach".into(),
            expires: deis_core::time::Timestamp::now(),
            router: None,
            host: None,
        };
        assert_eq!(
            attach_url("http://127.0.0.1:8000/", &t).unwrap(),
            "ws://127.0.0.1:8000/v2/sessions/abc/attach?token=p.s"
        );
        assert!(attach_url("https://x", &t).unwrap_err().to_string().contains("TLS"));
        assert_eq!(router_attach_url("http://127.0.0.1:8000", &t), None, "no router in the ticket");

        let t = SessionTicket { router: Some("127.0.0.1:8080".into()), host: Some("deis.example.com".into()), ..t };
        let via = |base: &str| router_attach_url(base, &t).unwrap();
        let expect = |authority: &str| {
            (format!("ws://{authority}/v2/sessions/abc/attach?token=p.s"), "deis.example.com".to_string())
        };
        assert_eq!(via("http://127.0.0.1:8000"), expect("127.0.0.1:8080"));
        assert_eq!(via("http://localhost:8000/"), expect("127.0.0.1:8080"));
        assert_eq!(via("http://[::1]:8000"), expect("127.0.0.1:8080"));
        // A loopback router address means "on the controller's host" for a remote CLI.
        assert_eq!(via("http://deis.example.com:8000/"), expect("deis.example.com:8080"));
        assert_eq!(via("http://user@10.1.2.3"), expect("10.1.2.3:8080"));
        let t = SessionTicket { router: Some("10.0.0.5:80".into()), ..t };
        assert_eq!(
            router_attach_url("http://deis.example.com", &t).unwrap().0,
            "ws://10.0.0.5:80/v2/sessions/abc/attach?token=p.s"
        );
        let body = serde_json::to_value(SessionRequest {
            command: vec!["bash".into()],
            tty: true,
            proc_type: Some("web".into()),
        })
        .unwrap();
        assert_eq!(body, serde_json::json!({"command":["bash"],"tty":true,"type":"web"}));
    }
}
