//! The Omaha `<response>`: rendered by the server, parsed by clients (the update
//! agent); and the client's `<request>`.

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{MAX_APPS, MAX_DEPTH, OmahaError, attributes, malformed, non_empty};

/// Escapes an attribute value.
fn esc(s: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// The answer to one `<app>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppResponse {
    /// `appid` as the client sent it.
    pub appid: String,
    /// `status` of the app: `ok`, `error-unknownApplication`, `error-invalidAppId`.
    pub status: String,
    /// Answer a `<ping>` (`<ping status="ok"/>`).
    pub ping: bool,
    /// How many `<event status="ok"/>` to answer.
    pub events: usize,
    /// The answer to an `<updatecheck>`, if there was one.
    pub updatecheck: Option<UpdateCheck>,
}

/// The answer to an `<updatecheck>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateCheck {
    /// `status="ok"` with the manifest.
    Update(Manifest),
    /// `status="noupdate"`, or an error status (`error-unknownTrack`, `error-internal`).
    Status(&'static str),
}

/// What an update check offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The version.
    pub version: String,
    /// Base URL (`codebase`).
    pub url: String,
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Base64 SHA-1 (`hash`), if known.
    pub sha1: Option<String>,
    /// Hex SHA-256 (`hash_sha256` of the package).
    pub sha256_hex: String,
    /// Base64 SHA-256 (`sha256` of the postinstall action, as update_engine reads it).
    pub sha256_base64: String,
}

/// An Omaha `<response>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `server` attribute.
    pub server: String,
    /// Seconds since midnight (`<daystart elapsed_seconds>`), server time.
    pub daystart_elapsed: u64,
    /// One per `<app>` of the request, in order.
    pub apps: Vec<AppResponse>,
}

impl Response {
    /// Whether any app is `ok` (the HTTP status is 200 then, 400 otherwise).
    pub fn any_ok(&self) -> bool {
        self.apps.iter().any(|a| a.status == "ok")
    }

    /// The XML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(512 + 512 * self.apps.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = write!(
            out,
            "<response protocol=\"3.0\" server=\"{}\"><daystart elapsed_seconds=\"{}\"/>",
            esc(&self.server),
            self.daystart_elapsed
        );
        for app in &self.apps {
            let _ = write!(out, "<app appid=\"{}\" status=\"{}\">", esc(&app.appid), esc(&app.status));
            if app.ping {
                out.push_str("<ping status=\"ok\"/>");
            }
            for _ in 0..app.events {
                out.push_str("<event status=\"ok\"/>");
            }
            match &app.updatecheck {
                None => {}
                Some(UpdateCheck::Status(status)) => {
                    let _ = write!(out, "<updatecheck status=\"{status}\"/>");
                }
                Some(UpdateCheck::Update(m)) => render_manifest(&mut out, m),
            }
            out.push_str("</app>");
        }
        out.push_str("</response>\n");
        out
    }
}

fn render_manifest(out: &mut String, m: &Manifest) {
    let _ = write!(
        out,
        "<updatecheck status=\"ok\"><urls><url codebase=\"{}\"/></urls><manifest version=\"{}\"><packages><package name=\"{}\"",
        esc(&m.url),
        esc(&m.version),
        esc(&m.name)
    );
    if let Some(sha1) = &m.sha1 {
        let _ = write!(out, " hash=\"{}\"", esc(sha1));
    }
    let _ = write!(
        out,
        " hash_sha256=\"{}\" size=\"{}\" required=\"true\"/></packages><actions><action event=\"postinstall\" sha256=\"{}\" ChromeOSVersion=\"{}\" needsadmin=\"false\" IsDelta=\"false\" DisablePayloadBackoff=\"true\"/></actions></manifest></updatecheck>",
        esc(&m.sha256_hex),
        m.size,
        esc(&m.sha256_base64),
        esc(&m.version)
    );
}

/// One `<app>` a client sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientApp {
    /// `appid`.
    pub appid: String,
    /// `version` it runs.
    pub version: String,
    /// `track` (the group).
    pub track: String,
    /// `machineid` (the instance).
    pub machineid: String,
    /// Send `<updatecheck/>` (and `<ping active="1"/>`).
    pub updatecheck: bool,
    /// `<event>`s: (type, result, error code, previous version).
    pub events: Vec<(u32, u32, Option<i64>, Option<String>)>,
}

/// The XML of a client's `<request>` for `apps`, as update_engine sends it.
pub fn render_request(apps: &[ClientApp]) -> String {
    let mut out = String::with_capacity(256 + 256 * apps.len());
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<request protocol=\"3.0\" version=\"deis-updater-");
    out.push_str(env!("CARGO_PKG_VERSION"));
    out.push_str("\" ismachine=\"1\"><os platform=\"");
    out.push_str(std::env::consts::OS);
    out.push_str("\" arch=\"");
    out.push_str(std::env::consts::ARCH);
    out.push_str("\"/>");
    for app in apps {
        let _ = write!(
            out,
            "<app appid=\"{}\" version=\"{}\" track=\"{}\" machineid=\"{}\">",
            esc(&app.appid),
            esc(&app.version),
            esc(&app.track),
            esc(&app.machineid)
        );
        if app.updatecheck {
            out.push_str("<ping active=\"1\"/><updatecheck/>");
        }
        for (kind, result, code, previous) in &app.events {
            let _ = write!(out, "<event eventtype=\"{kind}\" eventresult=\"{result}\"");
            if let Some(code) = code {
                let _ = write!(out, " errorcode=\"{code}\"");
            }
            if let Some(previous) = previous {
                let _ = write!(out, " previousversion=\"{}\"", esc(previous));
            }
            out.push_str("/>");
        }
        out.push_str("</app>");
    }
    out.push_str("</request>\n");
    out
}

/// One `<app>` of a parsed response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseApp {
    /// `appid`.
    pub appid: String,
    /// `status` of the app.
    pub status: String,
    /// `status` of its `<updatecheck>`, if it has one.
    pub updatecheck: Option<String>,
    /// The manifest, when the update check says `ok`.
    pub manifest: Option<Manifest>,
}

/// Parses an Omaha `<response>` (for clients): each app's status and, for an update,
/// the manifest. Unknown elements and attributes are skipped.
pub fn parse_response(body: &[u8]) -> Result<Vec<ResponseApp>, OmahaError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut apps: Vec<ResponseApp> = Vec::new();
    let mut depth = 0usize;
    let mut root = false;
    loop {
        let event = reader.read_event().map_err(|e| malformed(&reader, e))?;
        let (e, empty) = match event {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Event::Eof if depth > 0 => return Err(malformed(&reader, "the document ends inside an element")),
            Event::Eof => break,
            _ => continue,
        };
        let local = e.local_name();
        let name: &str = local.as_ref();
        match (depth, name.as_bytes()) {
            (0, b"response") => root = true,
            (0, _) => return Err(OmahaError::NotOmaha("the root element is not <response>".into())),
            (1, b"app") => {
                if apps.len() == MAX_APPS {
                    return Err(OmahaError::TooLarge(format!("more than {MAX_APPS} <app> elements")));
                }
                let mut app = ResponseApp::default();
                attributes(&reader, &e, &[b"appid", b"status"], |k, v| match k {
                    b"appid" => app.appid = v,
                    b"status" => app.status = v,
                    _ => {}
                })?;
                apps.push(app);
            }
            (_, tag) if depth >= 2 => {
                if let Some(app) = apps.last_mut() {
                    let manifest = app.manifest.get_or_insert_with(Manifest::empty);
                    let wanted: [&[u8]; 8] =
                        [b"status", b"codebase", b"version", b"name", b"hash", b"hash_sha256", b"size", b"sha256"];
                    attributes(&reader, &e, &wanted, |k, v| match (tag, k) {
                        (b"updatecheck", b"status") => app.updatecheck = Some(v),
                        (b"url", b"codebase") if manifest.url.is_empty() => manifest.url = v,
                        (b"manifest", b"version") => manifest.version = v,
                        (b"package", b"name") => manifest.name = v,
                        (b"package", b"hash") => manifest.sha1 = non_empty(v),
                        (b"package", b"hash_sha256") => manifest.sha256_hex = v,
                        (b"package", b"size") => manifest.size = v.parse().unwrap_or(0),
                        (b"action", b"sha256") => manifest.sha256_base64 = v,
                        _ => {}
                    })?;
                }
            }
            _ => {}
        }
        if !empty {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(OmahaError::TooLarge(format!("elements nested deeper than {MAX_DEPTH}")));
            }
        }
    }
    if !root {
        return Err(OmahaError::NotOmaha("no <response> element".into()));
    }
    for app in &mut apps {
        if app.updatecheck.as_deref() != Some("ok") {
            app.manifest = None;
        }
    }
    Ok(apps)
}

impl Manifest {
    fn empty() -> Self {
        Self {
            version: String::new(),
            url: String::new(),
            name: String::new(),
            size: 0,
            sha1: None,
            sha256_hex: String::new(),
            sha256_base64: String::new(),
        }
    }

    /// The SHA-256 the file must have, as 32 bytes: from `hash_sha256` (hex) or the
    /// postinstall action's `sha256` (base64); `None` if neither is usable.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let from_hex = hex::decode(&self.sha256_hex).ok().and_then(|v| v.try_into().ok());
        let from_b64 = || base64::engine::general_purpose::STANDARD.decode(&self.sha256_base64).ok()?.try_into().ok();
        from_hex.or_else(from_b64)
    }
}
