//! The Kubernetes remote-command channel protocol (`v5.channel.k8s.io`, and
//! `v4.channel.k8s.io`) that carries a TTY session over a WebSocket, so that existing
//! clients (kubectl-style) work.
//!
//! Every **binary** WebSocket message is one channel byte followed by its payload:
//!
//! | byte | channel | payload |
//! |---|---|---|
//! | 0 | stdin | bytes |
//! | 1 | stdout | bytes |
//! | 2 | stderr | bytes (batch sessions only: with a TTY there is no stderr) |
//! | 3 | error/status | JSON status, see [`status_success`] and [`status_exit`] |
//! | 4 | resize | JSON `{"Width":100,"Height":30}` |
//! | 255 | close (v5 only) | one byte: the channel being half-closed (`[255, 0]` ends stdin) |
//!
//! [`decode`] turns a message into a [`Frame`] (never panics on any input) and
//! [`encode`] turns a frame back into the message; [`negotiate`] picks the subprotocol
//! from what a client offers.
//!
//! ```
//! use deis_core::tty::channel::{Frame, Protocol, decode, encode};
//! let msg = encode(&Frame::Stdin(b"ls\n".to_vec()));
//! assert_eq!(msg, b"\x00ls\n");
//! assert_eq!(decode(&msg, Protocol::V5).unwrap(), Frame::Stdin(b"ls\n".to_vec()));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{ExitStatus, TermSize};

/// Channel byte of stdin (client to server).
pub const STDIN: u8 = 0;
/// Channel byte of stdout (server to client).
pub const STDOUT: u8 = 1;
/// Channel byte of stderr (server to client).
pub const STDERR: u8 = 2;
/// Channel byte of the error/status channel (server to client, once, at the end).
pub const STATUS: u8 = 3;
/// Channel byte of resize events (client to server).
pub const RESIZE: u8 = 4;
/// Channel byte of a half-close (v5 only): the payload is the closed channel's byte.
pub const CLOSE: u8 = 255;

/// Largest resize (or other JSON control) payload accepted by [`decode`].
pub const MAX_RESIZE_JSON: usize = 1024;
/// Largest status payload accepted by [`parse_status`].
pub const MAX_STATUS_JSON: usize = 64 * 1024;

/// Subprotocol name of version 5 (adds half-close).
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";
/// Subprotocol name of version 4.
pub const V4_PROTOCOL: &str = "v4.channel.k8s.io";

/// A negotiated version of the channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `v4.channel.k8s.io`: no close frames.
    V4,
    /// `v5.channel.k8s.io`: like v4, plus `[255, ch]` half-close frames.
    V5,
}

impl Protocol {
    /// The subprotocol name (`Sec-WebSocket-Protocol` value).
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => V4_PROTOCOL,
            Self::V5 => V5_PROTOCOL,
        }
    }

    /// The version named `name` (exact, case-sensitive, as WebSocket subprotocols are).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            V5_PROTOCOL => Some(Self::V5),
            V4_PROTOCOL => Some(Self::V4),
            _ => None,
        }
    }

    /// Whether this version has half-close frames.
    pub fn has_close(self) -> bool {
        self == Self::V5
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Picks the version to speak from what a client offers: each item is one
/// `Sec-WebSocket-Protocol` header value, itself a comma-separated list. v5 wins over
/// v4 whatever the order; `None` when neither is offered (answer the upgrade with an
/// error naming [`V5_PROTOCOL`]).
///
/// ```
/// use deis_core::tty::channel::{Protocol, negotiate};
/// assert_eq!(negotiate(["v4.channel.k8s.io, v5.channel.k8s.io"]), Some(Protocol::V5));
/// assert_eq!(negotiate(["base64.channel.k8s.io"]), None);
/// ```
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Protocol> {
    offered.into_iter().flat_map(|v| v.split(',')).filter_map(Protocol::from_name).max()
}

/// One message of the channel protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the command's stdin.
    Stdin(Vec<u8>),
    /// Bytes of the command's stdout (or terminal).
    Stdout(Vec<u8>),
    /// Bytes of the command's stderr.
    Stderr(Vec<u8>),
    /// The status JSON that ends a session (see [`status_success`], [`status_exit`],
    /// [`status_error`], [`parse_status`]).
    Status(Vec<u8>),
    /// The client's terminal was resized.
    Resize(TermSize),
    /// v5 half-close of the channel with this byte (the client closing stdin: `0`).
    Close(u8),
}

impl Frame {
    /// The channel byte this frame travels on.
    pub fn channel(&self) -> u8 {
        match self {
            Self::Stdin(_) => STDIN,
            Self::Stdout(_) => STDOUT,
            Self::Stderr(_) => STDERR,
            Self::Status(_) => STATUS,
            Self::Resize(_) => RESIZE,
            Self::Close(_) => CLOSE,
        }
    }
}

/// Why a message is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A binary message without even the channel byte.
    #[error("empty message: every binary message starts with a channel byte (0 stdin .. 4 resize, 255 close)")]
    Empty,
    /// A channel byte this protocol does not know.
    #[error("unknown channel {0}: expected 0 (stdin), 1 (stdout), 2 (stderr), 3 (status), 4 (resize) or 255 (close)")]
    UnknownChannel(u8),
    /// The resize payload is not `{"Width":<cols>,"Height":<rows>}`.
    #[error("bad resize message: {0}; expected JSON like {{\"Width\":100,\"Height\":30}}")]
    BadResize(String),
    /// A close frame on v4, which has none.
    #[error("close frames (channel 255) exist only in {V5_PROTOCOL}; this session speaks {V4_PROTOCOL}")]
    CloseOnV4,
    /// A close frame that is not exactly `[255, <known channel>]`.
    #[error("bad close message: {0}; expected two bytes [255, channel]")]
    BadClose(String),
    /// The status payload is not a status this protocol sends.
    #[error("bad status message: {0}")]
    BadStatus(String),
}

/// Decodes one binary WebSocket message spoken in `version`. Never panics.
pub fn decode(msg: &[u8], version: Protocol) -> Result<Frame, FrameError> {
    let (&channel, payload) = msg.split_first().ok_or(FrameError::Empty)?;
    match channel {
        STDIN => Ok(Frame::Stdin(payload.to_vec())),
        STDOUT => Ok(Frame::Stdout(payload.to_vec())),
        STDERR => Ok(Frame::Stderr(payload.to_vec())),
        STATUS => Ok(Frame::Status(payload.to_vec())),
        RESIZE => decode_resize(payload).map(Frame::Resize),
        CLOSE if !version.has_close() => Err(FrameError::CloseOnV4),
        CLOSE => match payload {
            [ch @ (STDIN | STDOUT | STDERR | STATUS | RESIZE)] => Ok(Frame::Close(*ch)),
            [ch] => Err(FrameError::BadClose(format!("unknown channel {ch}"))),
            _ => Err(FrameError::BadClose(format!("{} payload bytes", payload.len()))),
        },
        other => Err(FrameError::UnknownChannel(other)),
    }
}

fn decode_resize(payload: &[u8]) -> Result<TermSize, FrameError> {
    if payload.len() > MAX_RESIZE_JSON {
        return Err(FrameError::BadResize(format!("{} bytes (at most {MAX_RESIZE_JSON})", payload.len())));
    }
    serde_json::from_slice(payload).map_err(|e| FrameError::BadResize(e.to_string()))
}

/// Encodes a frame as one binary WebSocket message: the channel byte, then the payload.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let payload: &[u8] = match frame {
        Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) | Frame::Status(b) => b,
        Frame::Resize(size) => {
            let mut out = vec![RESIZE];
            serde_json::to_writer(&mut out, size).expect("serialising two integers can't fail");
            return out;
        }
        Frame::Close(ch) => return vec![CLOSE, *ch],
    };
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(frame.channel());
    out.extend_from_slice(payload);
    out
}

/// The Kubernetes `metav1.Status` subset the channel protocol uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Status {
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// `reason` of a failure status carrying an exit code.
pub const REASON_NON_ZERO_EXIT: &str = "NonZeroExitCode";
/// `reason` of the cause holding the exit code.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";
/// `reason` of the (deis) extra cause holding the signal that killed the command.
pub const CAUSE_SIGNAL: &str = "Signal";
/// `reason` of [`status_error`] statuses for broker failures.
pub const REASON_INTERNAL_ERROR: &str = "InternalError";

fn to_json(status: &Status) -> Vec<u8> {
    serde_json::to_vec(status).expect("serialising a status can't fail")
}

/// The success status: `{"metadata":{},"status":"Success"}`.
pub fn status_success() -> Vec<u8> {
    to_json(&Status { status: "Success".into(), ..Status::default() })
}

/// The status that ends a session whose command ended with `exit`: [`status_success`]
/// for code 0, otherwise the Kubernetes failure
/// `{"metadata":{},"status":"Failure","message":"...","reason":"NonZeroExitCode",
/// "details":{"causes":[{"reason":"ExitCode","message":"7"}]}}`. A command killed by a
/// signal reports the shell's code (128 + signal) as its `ExitCode` and, as a second
/// cause, `{"reason":"Signal","message":"9"}` (ignored by Kubernetes clients).
pub fn status_exit(exit: ExitStatus) -> Vec<u8> {
    if exit == ExitStatus::Code(0) {
        return status_success();
    }
    let mut causes = vec![Cause { reason: CAUSE_EXIT_CODE.into(), message: exit.code().to_string() }];
    if let ExitStatus::Signal(s) = exit {
        causes.push(Cause { reason: CAUSE_SIGNAL.into(), message: s.to_string() });
    }
    to_json(&Status {
        status: "Failure".into(),
        message: format!("command terminated with non-zero exit code: {exit}"),
        reason: REASON_NON_ZERO_EXIT.into(),
        details: Some(Details { causes }),
        ..Status::default()
    })
}

/// A failure status for a session that could not run or broke (`reason` e.g.
/// [`REASON_INTERNAL_ERROR`], `"Forbidden"`, `"BadRequest"`); clients show `message`.
pub fn status_error(reason: &str, message: &str) -> Vec<u8> {
    to_json(&Status { status: "Failure".into(), message: message.into(), reason: reason.into(), ..Status::default() })
}

/// What a status message says about the session's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteStatus {
    /// The command ran and ended like this.
    Exited(ExitStatus),
    /// The session failed without an exit code (the command could not run, the token
    /// was refused, the broker broke, ...).
    Failed {
        /// Kubernetes `reason` (may be empty).
        reason: String,
        /// Human-readable explanation.
        message: String,
    },
}

/// Parses a status payload (the channel-3 message without its channel byte) as
/// [`status_success`], [`status_exit`] and [`status_error`] make it, and as Kubernetes
/// sends it.
pub fn parse_status(json: &[u8]) -> Result<RemoteStatus, FrameError> {
    if json.len() > MAX_STATUS_JSON {
        return Err(FrameError::BadStatus(format!("{} bytes (at most {MAX_STATUS_JSON})", json.len())));
    }
    let st: Status = serde_json::from_slice(json).map_err(|e| FrameError::BadStatus(e.to_string()))?;
    match st.status.as_str() {
        "Success" => Ok(RemoteStatus::Exited(ExitStatus::Code(0))),
        "Failure" if st.reason == REASON_NON_ZERO_EXIT => {
            let causes = st.details.map(|d| d.causes).unwrap_or_default();
            let find = |reason: &str| causes.iter().find(|c| c.reason == reason).map(|c| c.message.trim());
            if let Some(sig) = find(CAUSE_SIGNAL).and_then(|s| s.parse::<i32>().ok()) {
                return Ok(RemoteStatus::Exited(ExitStatus::Signal(sig)));
            }
            match find(CAUSE_EXIT_CODE).map(str::parse::<i32>) {
                Some(Ok(code)) => Ok(RemoteStatus::Exited(ExitStatus::Code(code))),
                Some(Err(e)) => Err(FrameError::BadStatus(format!("exit code cause is not a number: {e}"))),
                None => Err(FrameError::BadStatus("NonZeroExitCode status without an ExitCode cause".into())),
            }
        }
        "Failure" => Ok(RemoteStatus::Failed { reason: st.reason, message: st.message }),
        other => Err(FrameError::BadStatus(format!("status {other:?} (expected \"Success\" or \"Failure\")"))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn negotiation_prefers_v5() {
        assert_eq!(negotiate(["v5.channel.k8s.io"]), Some(Protocol::V5));
        assert_eq!(negotiate(["v4.channel.k8s.io"]), Some(Protocol::V4));
        assert_eq!(negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"]), Some(Protocol::V5));
        assert_eq!(negotiate(["channel.k8s.io,  v4.channel.k8s.io ,base64.channel.k8s.io"]), Some(Protocol::V4));
        assert_eq!(negotiate(["V5.CHANNEL.K8S.IO"]), None);
        assert_eq!(negotiate([]), None);
        assert_eq!(Protocol::V5.to_string(), "v5.channel.k8s.io");
        assert_eq!(Protocol::from_name(Protocol::V4.name()), Some(Protocol::V4));
    }

    #[test]
    fn decodes_every_channel() {
        let v = Protocol::V5;
        assert_eq!(decode(b"\x00hi", v), Ok(Frame::Stdin(b"hi".to_vec())));
        assert_eq!(decode(b"\x00", v), Ok(Frame::Stdin(vec![])));
        assert_eq!(decode(b"\x01out", v), Ok(Frame::Stdout(b"out".to_vec())));
        assert_eq!(decode(b"\x02err", v), Ok(Frame::Stderr(b"err".to_vec())));
        assert_eq!(decode(b"\x03{}", v), Ok(Frame::Status(b"{}".to_vec())));
        assert_eq!(
            decode(b"\x04{\"Width\":100,\"Height\":30}", v),
            Ok(Frame::Resize(TermSize { cols: 100, rows: 30 }))
        );
        assert_eq!(decode(b"\xff\x00", v), Ok(Frame::Close(0)));
    }

    #[test]
    fn refuses_bad_messages_clearly() {
        let v = Protocol::V5;
        assert_eq!(decode(b"", v), Err(FrameError::Empty));
        assert_eq!(decode(b"\x05x", v), Err(FrameError::UnknownChannel(5)));
        assert_eq!(decode(b"\xff\x00", Protocol::V4), Err(FrameError::CloseOnV4));
        assert!(matches!(decode(b"\xff", v), Err(FrameError::BadClose(_))));
        assert!(matches!(decode(b"\xff\x00\x01", v), Err(FrameError::BadClose(_))));
        assert!(matches!(decode(b"\xff\x07", v), Err(FrameError::BadClose(m)) if m.contains("unknown channel 7")));
        for bad in [&b"\x04"[..], b"\x04{}", b"\x04{\"Width\":-1,\"Height\":3}", b"\x04{\"Width\":70000,\"Height\":3}"]
        {
            let err = decode(bad, v).unwrap_err();
            assert!(matches!(err, FrameError::BadResize(_)), "{bad:?}: {err:?}");
            assert!(err.to_string().contains("\"Width\":100"), "{err}");
        }
        let huge = [&[RESIZE][..], &vec![b' '; MAX_RESIZE_JSON + 1]].concat();
        assert!(matches!(decode(&huge, v), Err(FrameError::BadResize(m)) if m.contains("at most")));
        assert!(FrameError::UnknownChannel(9).to_string().contains("unknown channel 9"));
    }

    #[test]
    fn encodes_like_kubernetes() {
        assert_eq!(encode(&Frame::Stdout(b"x".to_vec())), b"\x01x");
        assert_eq!(encode(&Frame::Resize(TermSize { cols: 100, rows: 30 })), b"\x04{\"Width\":100,\"Height\":30}");
        assert_eq!(encode(&Frame::Close(STDIN)), vec![255, 0]);
    }

    #[test]
    fn status_json_has_the_kubernetes_shape() {
        assert_eq!(status_success(), br#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(status_exit(ExitStatus::Code(0)), status_success());
        let v: serde_json::Value = serde_json::from_slice(&status_exit(ExitStatus::Code(7))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": "command terminated with non-zero exit code: exit code 7",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}
            })
        );
        let v: serde_json::Value = serde_json::from_slice(&status_exit(ExitStatus::Signal(9))).unwrap();
        assert_eq!(v["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "137"}));
        assert_eq!(v["details"]["causes"][1], serde_json::json!({"reason": "Signal", "message": "9"}));
    }

    #[test]
    fn parses_statuses_back() {
        for exit in [ExitStatus::Code(0), ExitStatus::Code(7), ExitStatus::Code(255), ExitStatus::Signal(15)] {
            assert_eq!(parse_status(&status_exit(exit)), Ok(RemoteStatus::Exited(exit)));
        }
        // What a real kube-apiserver sends.
        let kube = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(parse_status(kube), Ok(RemoteStatus::Exited(ExitStatus::Code(3))));
        assert_eq!(
            parse_status(&status_error("Forbidden", "session token expired")),
            Ok(RemoteStatus::Failed { reason: "Forbidden".into(), message: "session token expired".into() })
        );
        assert!(matches!(parse_status(b"nope"), Err(FrameError::BadStatus(_))));
        assert!(matches!(parse_status(br#"{"metadata":{},"status":"Maybe"}"#), Err(FrameError::BadStatus(_))));
        let no_cause = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode"}"#;
        assert!(matches!(parse_status(no_cause), Err(FrameError::BadStatus(m)) if m.contains("ExitCode")));
        let nan = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}"#;
        assert!(matches!(parse_status(nan), Err(FrameError::BadStatus(_))));
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..64);
        prop_oneof![
            bytes().prop_map(Frame::Stdin),
            bytes().prop_map(Frame::Stdout),
            bytes().prop_map(Frame::Stderr),
            bytes().prop_map(Frame::Status),
            (any::<u16>(), any::<u16>()).prop_map(|(cols, rows)| Frame::Resize(TermSize { cols, rows })),
            (0u8..=4).prop_map(Frame::Close),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(f in frame()) {
            prop_assert_eq!(decode(&encode(&f), Protocol::V5), Ok(f.clone()));
            if !matches!(f, Frame::Close(_)) {
                prop_assert_eq!(decode(&encode(&f), Protocol::V4), Ok(f));
            }
        }

        #[test]
        fn decode_never_panics_and_reencodes(msg in proptest::collection::vec(any::<u8>(), 0..80), v5 in any::<bool>()) {
            let version = if v5 { Protocol::V5 } else { Protocol::V4 };
            if let Ok(f) = decode(&msg, version) {
                let again = encode(&f);
                if !matches!(f, Frame::Resize(_)) {
                    prop_assert_eq!(&again, &msg);
                }
                prop_assert_eq!(decode(&again, version), Ok(f));
            }
        }

        #[test]
        fn exit_statuses_roundtrip(code in any::<i32>(), sig in 1i32..64, signal in any::<bool>()) {
            let exit = if signal { ExitStatus::Signal(sig) } else { ExitStatus::Code(code) };
            prop_assert_eq!(parse_status(&status_exit(exit)), Ok(RemoteStatus::Exited(exit)));
        }
    }
}
