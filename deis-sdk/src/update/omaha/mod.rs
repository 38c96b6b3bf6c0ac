//! The Omaha v3 wire format, as CoreOS' update_engine, Flatcar and go-omaha speak it:
//! [`parse_request`] reads a `<request>` (tolerating unknown elements and attributes,
//! and `<updatecheck>` and `<event>` in the same `<app>`, as real clients send them),
//! [`Response`] renders the answer; for clients, [`render_request`] and
//! [`parse_response`].
//!
//! The parser is bounded: the HTTP layer caps the body at [`MAX_BODY_BYTES`], and here
//! at most [`MAX_APPS`] apps, [`MAX_EVENTS`] events per app, [`MAX_DEPTH`] levels of
//! nesting and [`MAX_ATTR_BYTES`] per attribute value are accepted.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

mod response;

pub use response::{
    AppResponse, ClientApp, Manifest, Response, ResponseApp, UpdateCheck, parse_response, render_request,
};

/// Largest request body accepted (as the reference server: 1 MiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most `<app>` elements in one request.
pub const MAX_APPS: usize = 64;
/// Most `<event>` elements in one `<app>`.
pub const MAX_EVENTS: usize = 32;
/// Deepest nesting of elements.
pub const MAX_DEPTH: usize = 16;
/// Longest attribute value, in bytes.
pub const MAX_ATTR_BYTES: usize = 4096;

/// A request the server can't use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OmahaError {
    /// Not well-formed XML.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset where it went wrong.
        position: u64,
        /// What the XML parser said.
        message: String,
    },
    /// Well-formed, but not an Omaha v3 request.
    #[error("not an Omaha v3 request: {0}")]
    NotOmaha(String),
    /// Over one of the parser's limits.
    #[error("request too large: {0}")]
    TooLarge(String),
}

/// An Omaha `<request>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `protocol` (always `3.0` once parsed).
    pub protocol: String,
    /// `version` of the client (`ChromeOSUpdateEngine-0.1.0.0`).
    pub client_version: Option<String>,
    /// `userid` of the request, used as the instance id when an app has no `machineid`.
    pub userid: Option<String>,
    /// The apps, in order.
    pub apps: Vec<AppRequest>,
}

/// One `<app>` of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppRequest {
    /// `appid`, exactly as sent (the response echoes it).
    pub appid: String,
    /// `version` it runs.
    pub version: Option<String>,
    /// `track`: the group.
    pub track: Option<String>,
    /// `machineid`: the instance.
    pub machineid: Option<String>,
    /// `userid` (Google clients put it here).
    pub userid: Option<String>,
    /// `bootid`.
    pub bootid: Option<String>,
    /// Whether it has a `<ping>`.
    pub ping: bool,
    /// Whether it has an `<updatecheck>`.
    pub updatecheck: bool,
    /// Its `<event>`s, in order.
    pub events: Vec<EventRequest>,
}

/// One `<event>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRequest {
    /// `eventtype`.
    pub event_type: u32,
    /// `eventresult`.
    pub result: u32,
    /// `errorcode`.
    pub error_code: Option<i64>,
    /// `previousversion` (empty when the client says so).
    pub previous_version: Option<String>,
}

pub(crate) fn malformed(reader: &Reader<&[u8]>, e: impl std::fmt::Display) -> OmahaError {
    OmahaError::Malformed { position: reader.buffer_position(), message: e.to_string() }
}

/// The attributes of `e` named in `wanted` (by local name), normalised, in order;
/// others are only checked against [`MAX_ATTR_BYTES`].
pub(crate) fn attributes<'a>(
    reader: &Reader<&[u8]>,
    e: &'a BytesStart<'a>,
    wanted: &[&[u8]],
    mut keep: impl FnMut(&[u8], String),
) -> Result<(), OmahaError> {
    for attr in e.attributes() {
        let attr = attr.map_err(|err| malformed(reader, err))?;
        if attr.value.len() > MAX_ATTR_BYTES {
            let name = AsRef::<str>::as_ref(&attr.key).to_string();
            return Err(OmahaError::TooLarge(format!("attribute {name} is over {MAX_ATTR_BYTES} bytes")));
        }
        let local = attr.key.local_name();
        let local = AsRef::<str>::as_ref(&local).as_bytes();
        if !wanted.contains(&local) {
            continue;
        }
        let value = attr.normalized_value(XmlVersion::Implicit1_0).map_err(|err| malformed(reader, err))?;
        keep(local, value.into_owned());
    }
    Ok(())
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, OmahaError> {
    value.trim().parse().map_err(|_| OmahaError::NotOmaha(format!("{name}={value:?} is not a number")))
}

pub(crate) fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// Parses an Omaha v3 request. Unknown elements and attributes are skipped; the root
/// must be `<request protocol="3.0">`.
pub fn parse_request(body: &[u8]) -> Result<Request, OmahaError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut request = Request::default();
    let mut seen_root = false;
    // Names of the open elements, one after another in `names`, each ending at its
    // offset in `ends` (no allocation per element); only their count, whether the
    // second is an <app>, and the innermost (for errors) matter.
    let (mut names, mut ends): (Vec<u8>, Vec<usize>) = (Vec::with_capacity(64), Vec::with_capacity(MAX_DEPTH));
    let mut in_app = false;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                ends.pop();
                names.truncate(ends.last().copied().unwrap_or(0));
                continue;
            }
            Event::Eof if !ends.is_empty() => {
                let innermost = ends.len().checked_sub(2).map_or(0, |i| ends[i]);
                let open = String::from_utf8_lossy(&names[innermost..]).into_owned();
                return Err(malformed(&reader, format!("the document ends inside <{open}>")));
            }
            Event::Eof => break,
            Event::Text(t) if ends.is_empty() && !AsRef::<str>::as_ref(&*t).trim().is_empty() => {
                return Err(OmahaError::NotOmaha("text outside the <request> element".into()));
            }
            // Declarations, comments, processing instructions, text: nothing for us.
            _ => continue,
        };
        let local = e.local_name();
        let name = AsRef::<str>::as_ref(&local).as_bytes();
        let depth = ends.len();
        if depth == 1 {
            in_app = name == b"app";
        }
        match (depth, name) {
            (0, b"request") if !seen_root => {
                seen_root = true;
                attributes(&reader, &e, &[b"protocol", b"version", b"userid"], |k, v| match k {
                    b"protocol" => request.protocol = v,
                    b"version" => request.client_version = non_empty(v),
                    b"userid" => request.userid = non_empty(v),
                    _ => {}
                })?;
                if request.protocol != "3.0" {
                    return Err(OmahaError::NotOmaha(format!(
                        "protocol {:?}; this server speaks protocol=\"3.0\"",
                        request.protocol
                    )));
                }
            }
            (0, other) => {
                return Err(OmahaError::NotOmaha(format!(
                    "the root element is <{}>, not one <request>",
                    String::from_utf8_lossy(other)
                )));
            }
            (1, b"app") => {
                if request.apps.len() == MAX_APPS {
                    return Err(OmahaError::TooLarge(format!("more than {MAX_APPS} <app> elements")));
                }
                let mut app = AppRequest::default();
                let wanted: [&[u8]; 6] = [b"appid", b"version", b"track", b"machineid", b"userid", b"bootid"];
                attributes(&reader, &e, &wanted, |k, v| match k {
                    b"appid" => app.appid = v,
                    b"version" => app.version = non_empty(v),
                    b"track" => app.track = non_empty(v),
                    b"machineid" => app.machineid = non_empty(v),
                    b"userid" => app.userid = non_empty(v),
                    b"bootid" => app.bootid = non_empty(v),
                    _ => {}
                })?;
                if app.appid.is_empty() {
                    return Err(OmahaError::NotOmaha("an <app> has no appid".into()));
                }
                request.apps.push(app);
            }
            (2, child) if in_app => {
                let app = request.apps.last_mut().expect("an open <app> was pushed");
                match child {
                    b"ping" => app.ping = true,
                    b"updatecheck" => app.updatecheck = true,
                    b"event" => {
                        if app.events.len() == MAX_EVENTS {
                            return Err(OmahaError::TooLarge(format!("more than {MAX_EVENTS} events in an <app>")));
                        }
                        let mut event = EventRequest::default();
                        let mut failure = None;
                        let wanted: [&[u8]; 4] = [b"eventtype", b"eventresult", b"errorcode", b"previousversion"];
                        attributes(&reader, &e, &wanted, |k, v| {
                            let parsed = match k {
                                b"eventtype" => number("eventtype", &v).map(|n| event.event_type = n),
                                b"eventresult" => number("eventresult", &v).map(|n| event.result = n),
                                b"errorcode" => number("errorcode", &v).map(|n| event.error_code = Some(n)),
                                b"previousversion" => {
                                    event.previous_version = non_empty(v);
                                    Ok(())
                                }
                                _ => Ok(()),
                            };
                            if let Err(e) = parsed {
                                failure.get_or_insert(e);
                            }
                        })?;
                        if let Some(e) = failure {
                            return Err(e);
                        }
                        app.events.push(event);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        if !empty {
            if depth == MAX_DEPTH {
                return Err(OmahaError::TooLarge(format!("elements nested deeper than {MAX_DEPTH}")));
            }
            names.extend_from_slice(name);
            ends.push(names.len());
        }
    }
    if !seen_root {
        return Err(OmahaError::NotOmaha("no <request> element".into()));
    }
    Ok(request)
}

#[cfg(test)]
mod tests;
