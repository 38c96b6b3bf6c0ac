//! Syslog codecs: parsing RFC 5424 and RFC 3164 messages as real emitters send them,
//! mapping them to [`LogLine`]s, TCP framing (RFC 6587), and RFC 5424 output for drains.
//!
//! - [`parse`] never fails: what is neither RFC 5424 nor RFC 3164 is kept whole with
//!   [`SyslogMessage::raw`] set.
//! - [`to_log_line`] routes a message to an app and a source from its APP-NAME (5424)
//!   or TAG (3164); see [`route`] for the accepted forms and [`UNROUTED_APP`].
//! - [`FrameDecoder`] splits a TCP byte stream into messages.
//! - [`format_rfc5424`] and [`octet_frame`] produce what drains send.

mod framing;

use std::time::{Duration, SystemTime};

pub use framing::{FrameDecoder, FrameError, Framing};

use super::{LogLine, LogSource, LogStream, truncate};
use crate::model::validate;
use crate::time::civil;

/// The app of lines whose APP-NAME/tag names no valid app (and of raw messages). It is
/// not a valid app id, so no user app ever sees these lines; the ingest layer counts
/// them as unrouted.
pub const UNROUTED_APP: &str = "_unrouted";

/// Facility used by [`format_rfc5424`]: 1, user-level messages.
pub const DRAIN_FACILITY: u8 = 1;

/// SD-ID of the platform's structured-data element, `[deis@32473 ...]` (32473 is the
/// enterprise number RFC 5612 sets aside for examples; nobody else sends it). Drains
/// write `hop` (drains passed, counting this one) and `origin` (the sending
/// platform's id); senders may put the app's ingest `token` in it.
pub const DRAIN_SD_ID: &str = "deis@32473";

/// A line that went through this many drains is dropped by the syslog listener: a
/// drain loop through other platforms ends after this many copies.
pub const MAX_DRAIN_HOPS: u8 = 3;

/// Longest ingest token taken from a message.
const MAX_TOKEN_PARAM: usize = 128;

/// Which syntax a message was parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyslogFormat {
    /// RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`).
    Rfc5424,
    /// RFC 3164 / BSD (`<PRI>Mmm dd hh:mm:ss HOST TAG[pid]: MSG`, host optional).
    Rfc3164,
    /// Neither: the message is the whole input, [`SyslogMessage::raw`] is set.
    Unknown,
}

/// A parsed syslog message. Absent or NILVALUE (`-`) fields are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    /// Facility, 0..=23 (1, user, when the message had no valid PRI).
    pub facility: u8,
    /// Severity, 0 (emergency) ..= 7 (debug) (5, notice, when no valid PRI).
    pub severity: u8,
    /// When the emitter says it was emitted (RFC 3164 times are taken as UTC, with the
    /// year inferred from the receive time).
    pub timestamp: Option<SystemTime>,
    /// When it was received.
    pub received: SystemTime,
    /// HOSTNAME.
    pub hostname: Option<String>,
    /// APP-NAME (5424) or TAG (3164).
    pub app_name: Option<String>,
    /// PROCID (5424) or the `[pid]` of a 3164 tag.
    pub procid: Option<String>,
    /// MSGID (5424 only).
    pub msgid: Option<String>,
    /// STRUCTURED-DATA exactly as sent (escapes kept), 5424 only; `None` for `-`.
    pub structured_data: Option<String>,
    /// MSG, UTF-8 (invalid bytes replaced), without a leading BOM and without trailing
    /// `\n`, `\r` or NUL bytes.
    pub message: String,
    /// The input could not be parsed; `message` is all of it.
    pub raw: bool,
    /// The syntax recognised.
    pub format: SyslogFormat,
}

/// Largest header token (HOSTNAME, APP-NAME, PROCID, MSGID, TAG) accepted, in bytes.
/// Larger than RFC 5424's limits (48 for APP-NAME), because Docker's `{{.Name}}/{{.ID}}`
/// tags are longer.
const MAX_TOKEN: usize = 255;

/// Parses one syslog message; never fails (see [`SyslogFormat::Unknown`]).
pub fn parse(bytes: &[u8], received: SystemTime) -> SyslogMessage {
    let bytes = trim_end(bytes);
    let mut msg = SyslogMessage {
        facility: 1,
        severity: 5,
        timestamp: None,
        received,
        hostname: None,
        app_name: None,
        procid: None,
        msgid: None,
        structured_data: None,
        message: String::new(),
        raw: true,
        format: SyslogFormat::Unknown,
    };
    let Some((pri, rest)) = parse_pri(bytes) else {
        msg.message = String::from_utf8_lossy(bytes).into_owned();
        return msg;
    };
    msg.facility = pri / 8;
    msg.severity = pri % 8;
    if let Some(rest) = rest.strip_prefix(b"1 ")
        && parse_5424(rest, &mut msg)
    {
        return msg;
    }
    parse_3164(rest, &mut msg);
    msg
}

fn trim_end(mut b: &[u8]) -> &[u8] {
    while let [head @ .., b'\n' | b'\r' | 0] = b {
        b = head;
    }
    b
}

/// `<PRI>` with PRI 0..=191 (1 to 3 digits).
fn parse_pri(b: &[u8]) -> Option<(u8, &[u8])> {
    let b = b.strip_prefix(b"<")?;
    let digits = b.iter().take(4).take_while(|c| c.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || b.get(digits) != Some(&b'>') {
        return None;
    }
    let pri = b[..digits].iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0'));
    (pri <= 191).then(|| (pri as u8, &b[digits + 1..]))
}

/// Splits a header token (printable ASCII, up to [`MAX_TOKEN`]) and the following space.
fn token(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|c| *c == b' ')?;
    let tok = &b[..end];
    if tok.is_empty() || tok.len() > MAX_TOKEN || !tok.iter().all(|c| (33..=126).contains(c)) {
        return None;
    }
    Some((tok, &b[end + 1..]))
}

fn nil_or(tok: &[u8]) -> Option<String> {
    (tok != b"-").then(|| String::from_utf8_lossy(tok).into_owned())
}

/// The message part: a leading UTF-8 BOM removed, invalid UTF-8 replaced.
fn text(b: &[u8]) -> String {
    let b = b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b);
    String::from_utf8_lossy(b).into_owned()
}

/// The RFC 5424 header after `<PRI>1 `; false (and `msg` untouched) if it is not one.
fn parse_5424(b: &[u8], msg: &mut SyslogMessage) -> bool {
    let parsed = (|| {
        let (ts, b) = token(b)?;
        let (host, b) = token(b)?;
        let (app, b) = token(b)?;
        let (procid, b) = token(b)?;
        // SD is required, but a message ending after MSGID is accepted (as NILVALUE SD).
        let (msgid, b) = match token(b) {
            Some(x) => x,
            None if !b.is_empty() && b.len() <= MAX_TOKEN && b.iter().all(|c| (33..=126).contains(c)) => (b, &b""[..]),
            None => return None,
        };
        Some((ts, host, app, procid, msgid, b))
    })();
    let Some((ts, host, app, procid, msgid, rest)) = parsed else { return false };
    msg.timestamp = if ts == b"-" { None } else { civil::parse_rfc3339(ts) };
    msg.hostname = nil_or(host);
    msg.app_name = nil_or(app);
    msg.procid = nil_or(procid);
    msg.msgid = nil_or(msgid);
    match rest {
        [b'-'] => {}
        [b'-', b' ', m @ ..] => msg.message = text(m),
        [b'[', ..] => match sd_len(rest) {
            Some(n) if n == rest.len() => msg.structured_data = Some(String::from_utf8_lossy(rest).into_owned()),
            Some(n) if rest[n] == b' ' => {
                msg.structured_data = Some(String::from_utf8_lossy(&rest[..n]).into_owned());
                msg.message = text(&rest[n + 1..]);
            }
            // Malformed structured data: kept as (part of) the message.
            _ => msg.message = text(rest),
        },
        other => msg.message = text(other),
    }
    msg.raw = false;
    msg.format = SyslogFormat::Rfc5424;
    true
}

/// The platform's parameters of a message: what its `[deis@32473 ...]` element says,
/// and an ingest token given as the last `/` part of the APP-NAME/tag
/// (`hello.web.1/TOKEN`, which is how Docker's `tag` log option can carry it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeisParams {
    /// Drains the line went through (`hop`; 0 if absent or not a number).
    pub hop: u8,
    /// The platform a drain sent it from (`origin`).
    pub origin: Option<String>,
    /// The app's ingest token (`token`, else the tag suffix).
    pub token: Option<String>,
}

impl SyslogMessage {
    /// The platform's parameters of this message (see [`DeisParams`]).
    pub fn deis_params(&self) -> DeisParams {
        let sd = self.structured_data.as_deref().unwrap_or("");
        let param = |name| sd_param(sd, DRAIN_SD_ID, name).filter(|v| v.len() <= MAX_TOKEN_PARAM);
        let hop = param("hop").and_then(|h| h.parse::<u8>().ok()).unwrap_or(0);
        let tag_token = || {
            let tag = self.app_name.as_deref()?.trim_start_matches('/');
            let (_, token) = tag.rsplit_once('/')?;
            (!token.is_empty() && token.len() <= MAX_TOKEN_PARAM).then_some(token)
        };
        DeisParams {
            hop,
            origin: param("origin").map(str::to_string),
            token: param("token").or_else(tag_token).map(str::to_string),
        }
    }
}

/// The value (escapes kept) of parameter `name` of element `id` in well-formed
/// STRUCTURED-DATA `sd`; `None` if absent or `sd` is malformed.
pub fn sd_param<'a>(sd: &'a str, id: &str, name: &str) -> Option<&'a str> {
    let b = sd.as_bytes();
    if sd_len(b) != Some(b.len()) {
        return None;
    }
    let ident = |i: usize| b[i..].iter().take_while(|c| !matches!(c, b' ' | b']' | b'=')).count();
    let mut i = 0;
    // Well-formed (checked above): `[ID( NAME="VALUE")*]` repeated.
    while i < b.len() {
        i += 1;
        let n = ident(i);
        let this_element = &sd[i..i + n] == id;
        i += n;
        while b[i] == b' ' {
            let n = ident(i + 1);
            let param = &sd[i + 1..i + 1 + n];
            let start = i + n + 3;
            let mut j = start;
            while b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            if this_element && param == name {
                return Some(&sd[start..j]);
            }
            i = j + 1;
        }
        i += 1;
    }
    None
}

/// Length of the STRUCTURED-DATA elements at the start of `b` (which starts with `[`).
fn sd_len(b: &[u8]) -> Option<usize> {
    fn name_char(c: u8) -> bool {
        (33..=126).contains(&c) && !matches!(c, b'=' | b']' | b'"')
    }
    let mut i = 0;
    while b.get(i) == Some(&b'[') {
        i += 1;
        let id = b[i..].iter().take_while(|c| name_char(**c)).count();
        if id == 0 {
            return None;
        }
        i += id;
        loop {
            match b.get(i)? {
                b']' => {
                    i += 1;
                    break;
                }
                b' ' => {
                    i += 1;
                    let name = b[i..].iter().take_while(|c| name_char(**c)).count();
                    if name == 0 || b.get(i + name) != Some(&b'=') || b.get(i + name + 1) != Some(&b'"') {
                        return None;
                    }
                    i += name + 2;
                    loop {
                        match b.get(i)? {
                            b'\\' => i += 2,
                            b'"' => {
                                i += 1;
                                break;
                            }
                            _ => i += 1,
                        }
                    }
                }
                _ => return None,
            }
        }
    }
    (i <= b.len()).then_some(i)
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// `Mmm dd hh:mm:ss` (day space- or zero-padded) at the start of `b`, with the year
/// inferred from `received`: the latest such time not more than a week after it.
fn bsd_timestamp(b: &[u8], received: SystemTime) -> Option<(SystemTime, &[u8])> {
    if b.len() < 15 || b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
        return None;
    }
    let month = MONTHS.iter().position(|m| &b[..3] == *m)? as u32 + 1;
    let digit = |c: u8| c.is_ascii_digit().then(|| u32::from(c - b'0'));
    let two = |x: &[u8]| Some(digit(x[0])? * 10 + digit(x[1])?);
    let day = if b[4] == b' ' { digit(b[5])? } else { two(&b[4..6])? };
    let (h, m, s) = (two(&b[7..9])?, two(&b[10..12])?, two(&b[13..15])?);
    if h > 23 || m > 59 || s > 60 || day == 0 {
        return None;
    }
    let (rsecs, _) = civil::to_unix(received);
    let (ryear, _, _) = civil::civil_from_days(rsecs.div_euclid(86_400));
    let at = |y: i64| -> Option<SystemTime> {
        civil::valid_date(y, month, day).then(|| {
            civil::from_unix(civil::days_from_civil(y, month, day) * 86_400 + i64::from(h * 3600 + m * 60 + s), 0)
        })
    };
    let week = Duration::from_secs(7 * 86_400);
    let t = match at(ryear) {
        Some(t) if t > received + week => at(ryear - 1),
        Some(t) => Some(t),
        // Feb 29 in a non-leap receive year: the last leap year.
        None => (1..=8).find_map(|k| at(ryear - k)),
    }?;
    Some((t, &b[15..]))
}

/// A BSD tag, its pid, and the rest of the message.
type BsdTag<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// `TAG[pid]: ` or `TAG: ` at the start of `b`: (tag, pid, rest after `: `).
fn bsd_tag(b: &[u8]) -> Option<BsdTag<'_>> {
    let end = b.iter().take(MAX_TOKEN + 1).position(|c| matches!(c, b':' | b'[' | b' '))?;
    let tag = &b[..end];
    if tag.is_empty() || !tag.iter().all(|c| (33..=126).contains(c)) {
        return None;
    }
    let (pid, rest) = match b[end] {
        b'[' => {
            let close = b[end..].iter().take(130).position(|c| *c == b']')? + end;
            let pid = &b[end + 1..close];
            if pid.is_empty() || !pid.iter().all(|c| (33..=126).contains(c)) {
                return None;
            }
            (Some(pid), b[close + 1..].strip_prefix(b":")?)
        }
        b':' => (None, &b[end + 1..]),
        _ => return None,
    };
    Some((tag, pid, rest.strip_prefix(b" ").unwrap_or(rest)))
}

/// The RFC 3164 part after `<PRI>`. Without a recognisable timestamp the message is
/// still taken as BSD syslog (`TAG: MSG` or just `MSG`), as RFC 3164 §4.3.2 says.
fn parse_3164(b: &[u8], msg: &mut SyslogMessage) {
    msg.raw = false;
    msg.format = SyslogFormat::Rfc3164;
    let mut b = b;
    let mut has_ts = false;
    if let Some((t, rest)) = bsd_timestamp(b, msg.received) {
        msg.timestamp = Some(t);
        b = rest;
        has_ts = true;
    } else if let Some(sp) = b.iter().position(|c| *c == b' ')
        && let Some(t) = civil::parse_rfc3339(&b[..sp])
    {
        // rsyslog's RFC 3339 timestamps in BSD layout.
        msg.timestamp = Some(t);
        b = &b[sp..];
        has_ts = true;
    }
    if has_ts {
        let Some(rest) = b.strip_prefix(b" ") else {
            msg.message = text(b);
            return;
        };
        b = rest;
    }
    if let Some((tag, pid, rest)) = bsd_tag(b) {
        set_tag(msg, tag, pid);
        msg.message = text(rest);
        return;
    }
    if has_ts && let Some((host, rest)) = token(b) {
        msg.hostname = Some(String::from_utf8_lossy(host).into_owned());
        if let Some((tag, pid, rest)) = bsd_tag(rest) {
            set_tag(msg, tag, pid);
            msg.message = text(rest);
        } else {
            msg.message = text(rest);
        }
        return;
    }
    msg.message = text(b);
}

fn set_tag(msg: &mut SyslogMessage, tag: &[u8], pid: Option<&[u8]>) {
    msg.app_name = Some(String::from_utf8_lossy(tag).into_owned());
    msg.procid = pid.map(|p| String::from_utf8_lossy(p).into_owned());
}

impl SyslogMessage {
    /// This message in RFC 5424 syntax (timestamp in UTC with up to 9 fractional
    /// digits). Parsing the result gives back the same fields (with `format` Rfc5424,
    /// `raw` false).
    pub fn to_rfc5424(&self) -> Vec<u8> {
        let nil = |f: &Option<String>| f.clone().filter(|s| valid_token(s)).unwrap_or_else(|| "-".into());
        let ts = self.timestamp.map_or_else(|| "-".into(), |t| civil::format_rfc3339(t, 9, true));
        let sd = self
            .structured_data
            .clone()
            .filter(|s| s.starts_with('[') && sd_len(s.as_bytes()) == Some(s.len()))
            .unwrap_or_else(|| "-".into());
        let mut out = format!(
            "<{}>1 {ts} {} {} {} {} {sd}",
            u32::from(self.facility.min(23)) * 8 + u32::from(self.severity.min(7)),
            nil(&self.hostname),
            nil(&self.app_name),
            nil(&self.procid),
            nil(&self.msgid),
        )
        .into_bytes();
        push_msg(&mut out, &self.message);
        out
    }
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s != "-" && s.len() <= MAX_TOKEN && s.bytes().all(|c| (33..=126).contains(&c))
}

/// ` MSG` (with a BOM when the message itself starts with one, so parsing strips only
/// that), nothing for an empty message.
fn push_msg(out: &mut Vec<u8>, message: &str) {
    let m = trim_end(message.as_bytes());
    if !m.is_empty() {
        out.push(b' ');
        if m.starts_with(b"\xEF\xBB\xBF") {
            out.extend_from_slice(b"\xEF\xBB\xBF");
        }
        out.extend_from_slice(m);
    }
}

/// Routes an APP-NAME/tag to an app and source. Accepted forms (`/...` suffixes, as in
/// Docker's `{{.Name}}/{{.ID}}` tags, and a leading `/` are ignored first):
///
/// | tag | app | source |
/// |---|---|---|
/// | `hello` | `hello` | `Other { name: "syslog" }`, or `App` if PROCID is `web.1` |
/// | `hello.web.1` (our unit naming) | `hello` | `App { proc_type: "web", number: 1 }` |
/// | `hello_v2.web.1` (Deis v1 unit naming) | `hello` | `App { proc_type: "web", number: 1 }` |
///
/// The app must be a valid app id ([`validate::app_name`], so never a reserved name such
/// as `deis`): a line can't pass itself off as the platform's. Anything else returns `None`.
pub fn route(tag: &str, procid: Option<&str>) -> Option<(String, LogSource)> {
    let tag = tag.strip_prefix('/').unwrap_or(tag);
    let tag = tag.split('/').next().unwrap_or(tag);
    if let Some(unit) = parse_unit(tag) {
        return Some(unit);
    }
    validate::app_name(tag).ok()?;
    let source = procid
        .and_then(|p| p.split_once('.'))
        .and_then(|(t, n)| unit_source(t, n))
        .unwrap_or_else(|| LogSource::Other { name: "syslog".into() });
    Some((tag.to_string(), source))
}

fn unit_source(proc_type: &str, number: &str) -> Option<LogSource> {
    validate::proc_type(proc_type).ok()?;
    if number.is_empty() || number.len() > 9 || !number.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(LogSource::App { proc_type: proc_type.into(), number: number.parse().ok()? })
}

/// `app.type.n` or `app_vN.type.n`.
fn parse_unit(tag: &str) -> Option<(String, LogSource)> {
    let (rest, number) = tag.rsplit_once('.')?;
    let (app, proc_type) = rest.split_once('.')?;
    let source = unit_source(proc_type, number)?;
    let app = match app.rsplit_once("_v") {
        Some((a, v)) if !v.is_empty() && v.len() <= 9 && v.bytes().all(|c| c.is_ascii_digit()) => a,
        _ => app,
    };
    validate::app_name(app).ok()?;
    Some((app.to_string(), source))
}

/// The log line of a syslog message. The app and source come from [`route`] on the
/// APP-NAME/tag; a message that routes nowhere (no tag, an invalid or reserved app
/// name, or a raw message) goes to [`UNROUTED_APP`] with source `Other { name }` set
/// to the tag (cut to 64 bytes) or `syslog`. The stream is the severity from PRI
/// (Docker: stdout 6, stderr 3); the time is the message's timestamp or, if it has
/// none, the receive time. The message is cut to [`super::MAX_MESSAGE_BYTES`].
pub fn to_log_line(msg: &SyslogMessage) -> LogLine {
    let routed = if msg.raw { None } else { msg.app_name.as_deref().and_then(|t| route(t, msg.procid.as_deref())) };
    let (app, source) = routed.unwrap_or_else(|| {
        let name = msg.app_name.as_deref().map_or("syslog".to_string(), |t| {
            let mut end = t.len().min(64);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t[..end].to_string()
        });
        (UNROUTED_APP.to_string(), LogSource::Other { name })
    });
    let (message, truncated) = truncate(&msg.message);
    LogLine {
        time: msg.timestamp.unwrap_or(msg.received),
        app,
        source,
        stream: LogStream::Severity(msg.severity),
        message,
        raw: msg.raw,
        truncated,
        hops: if msg.raw { 0 } else { msg.deis_params().hop },
    }
}

/// Severity of a line for syslog output: stdout 6 (info), stderr 3 (error).
pub fn severity(stream: LogStream) -> u8 {
    match stream {
        LogStream::Stdout => 6,
        LogStream::Stderr => 3,
        LogStream::Severity(s) => s.min(7),
    }
}

/// A line as RFC 5424, as drains send it: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`
/// with facility user, microsecond UTC timestamp, APP-NAME the app id, PROCID the
/// unit (`web.1`), `deis` for platform lines or the source name, MSGID the platform
/// component or `-`. The structured data is the platform's element
/// `[deis@32473 hop="N" origin="ORIGIN"]`, N the line's [`LogLine::hops`] plus one, so
/// whoever receives it can tell a line that went around in a loop. No framing; see
/// [`octet_frame`].
pub fn format_rfc5424(line: &LogLine, hostname: &str, origin: &str) -> Vec<u8> {
    let tok = |s: &str| -> String {
        let t: String = s.chars().filter(|c| c.is_ascii_graphic()).take(MAX_TOKEN).collect();
        if t.is_empty() || t == "-" { "-".into() } else { t }
    };
    let (procid, msgid) = match &line.source {
        LogSource::App { proc_type, number } => (format!("{proc_type}.{number}"), "-".to_string()),
        LogSource::Deis { component } => ("deis".to_string(), tok(component)),
        LogSource::Other { name } => (tok(name), "-".to_string()),
    };
    // PARAM-VALUE escapes `"`, `\\` and `]`; an origin is an id, so just drop them.
    let origin: String = origin.chars().filter(|c| !matches!(c, '"' | '\\' | ']')).take(MAX_TOKEN_PARAM).collect();
    let mut out = format!(
        "<{}>1 {} {} {} {} {} [{DRAIN_SD_ID} hop=\"{}\" origin=\"{origin}\"]",
        u32::from(DRAIN_FACILITY) * 8 + u32::from(severity(line.stream)),
        civil::format_rfc3339(line.time, 6, false),
        tok(hostname),
        tok(&line.app),
        procid,
        msgid,
        line.hops.saturating_add(1),
    )
    .into_bytes();
    push_msg(&mut out, &line.message);
    out
}

/// RFC 6587 octet-counting framing: `LEN SP MSG`.
pub fn octet_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 8);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests;
