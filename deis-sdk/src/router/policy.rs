//! What the router does with an app's requests before forwarding them, from the app's
//! settings: the client allow-list (403), the HTTPS redirect (301) and maintenance
//! mode (503). Apps without settings carry no policy and pay nothing per request.

use std::net::IpAddr;

use bytes::Bytes;
use deis_core::{AddressRange, AppSettings};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Uri};

use super::body::ResponseBody;

/// An app's traffic policy; built only when one of its settings is not the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrafficPolicy {
    /// Answer every request with the maintenance page.
    pub maintenance: bool,
    /// Redirect plain HTTP requests to HTTPS.
    pub https_enforced: bool,
    /// Client ranges allowed in; empty allows everyone.
    pub allow: Box<[AddressRange]>,
}

impl TrafficPolicy {
    /// The policy of `settings`; `None` when they route every request as it is.
    pub fn of(settings: &AppSettings) -> Option<Self> {
        let policy = Self {
            maintenance: settings.maintenance,
            https_enforced: settings.https_enforced,
            allow: settings.whitelist.clone().into_boxed_slice(),
        };
        (policy != Self::default()).then_some(policy)
    }
}

/// How the router tells a client's address: the peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not one.
#[derive(Debug)]
pub(crate) struct ClientAddress<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: &'a [AddressRange],
}

impl ClientAddress<'_> {
    /// The client's address; `None` when a trusted proxy sent an entry that is not an
    /// address (nothing can be said about the client then).
    pub fn resolve(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let trusted = |ip: IpAddr| self.trusted.iter().any(|r| r.contains(ip));
        let mut addr = self.peer;
        if !trusted(addr) {
            return Some(addr);
        }
        // Later headers and later entries were added by proxies nearer to us.
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else { return None };
            for entry in value.rsplit(',') {
                addr = entry.trim().parse().ok()?;
                if !trusted(addr) {
                    return Some(addr);
                }
            }
        }
        Some(addr)
    }
}

/// What the policy says about one request.
pub(crate) enum Verdict {
    /// Forward it.
    Forward,
    /// Answer with this instead (boxed: `Forward`, the common case, stays small).
    Answer(Box<Response<ResponseBody>>),
}

impl Verdict {
    fn answer(response: Response<ResponseBody>) -> Self {
        Self::Answer(Box::new(response))
    }
}

/// A request as the policy sees it.
pub(crate) struct Request<'a> {
    /// The app.
    pub app: &'a str,
    /// The normalised host (no port).
    pub host: &'a str,
    /// The request target.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// Whether it came over TLS.
    pub secure: bool,
}

impl TrafficPolicy {
    /// Checks a request: allow-list first, then the HTTPS redirect, then maintenance.
    pub fn check(&self, req: &Request<'_>, client: &ClientAddress<'_>, https_port: u16) -> Verdict {
        if !self.allow.is_empty() {
            match client.resolve(req.headers) {
                Some(ip) if self.allow.iter().any(|r| r.contains(ip)) => {}
                Some(ip) => {
                    return Verdict::answer(page(
                        StatusCode::FORBIDDEN,
                        format!("Your address {ip} is not allowed to reach {}.\n", req.app),
                    ));
                }
                None => {
                    return Verdict::answer(page(
                        StatusCode::FORBIDDEN,
                        "The request's X-Forwarded-For is malformed, so its client can't be checked.\n",
                    ));
                }
            }
        }
        if self.https_enforced && !req.secure {
            return Verdict::answer(redirect(req, https_port));
        }
        if self.maintenance {
            return Verdict::answer(maintenance_page(req.app));
        }
        Verdict::Forward
    }
}

fn page(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// 301 to the same host, path and query over HTTPS.
fn redirect(req: &Request<'_>, https_port: u16) -> Response<ResponseBody> {
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{}{target}", req.host)
    } else {
        format!("https://{}:{https_port}{target}", req.host)
    };
    match HeaderValue::try_from(location.as_str()) {
        Ok(value) => {
            let mut resp = page(StatusCode::MOVED_PERMANENTLY, format!("Moved to {location}\n"));
            resp.headers_mut().insert(header::LOCATION, value);
            resp
        }
        Err(_) => page(StatusCode::BAD_REQUEST, "The request target can't be redirected to HTTPS.\n"),
    }
}

/// The HTML page apps in maintenance mode answer with (503, retry in a minute).
fn maintenance_page(app: &str) -> Response<ResponseBody> {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{app} is down for maintenance</title></head>\n\
         <body><h1>{app} is down for maintenance</h1><p>It will be back shortly. Please try again in a moment.</p></body></html>\n"
    );
    let mut resp = Response::new(ResponseBody::full(html));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<AddressRange> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = ranges(&["10.0.0.0/8"]);
        let from =
            |peer: &str, h: &HeaderMap| ClientAddress { peer: peer.parse().unwrap(), trusted: &trusted }.resolve(h);
        let h = xff(&["203.0.113.9"]);
        assert_eq!(from("198.51.100.1", &h), Some("198.51.100.1".parse().unwrap()), "untrusted peer: its own address");
        assert_eq!(from("10.0.0.1", &h), Some("203.0.113.9".parse().unwrap()));
        // A client can't forge its way in by prepending entries: the right-most
        // untrusted entry counts.
        let h = xff(&["192.0.2.66, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(from("10.0.0.1", &h), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(from("10.0.0.1", &xff(&["junk"])), None);
        assert_eq!(from("10.0.0.1", &HeaderMap::new()), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            from("10.0.0.1", &xff(&["10.0.0.3"])),
            Some("10.0.0.3".parse().unwrap()),
            "all trusted: the left-most"
        );
    }

    #[test]
    fn default_settings_carry_no_policy() {
        assert_eq!(TrafficPolicy::of(&AppSettings::default()), None);
        let s = AppSettings { maintenance: true, ..AppSettings::default() };
        assert!(TrafficPolicy::of(&s).unwrap().maintenance);
    }

    fn verdict(policy: &TrafficPolicy, peer: &str, secure: bool, uri: &str) -> Option<Response<ResponseBody>> {
        let uri: Uri = uri.parse().unwrap();
        let headers = HeaderMap::new();
        let req = Request { app: "hello", host: "hello.deis.test", uri: &uri, headers: &headers, secure };
        match policy.check(&req, &ClientAddress { peer: peer.parse().unwrap(), trusted: &[] }, 8443) {
            Verdict::Forward => None,
            Verdict::Answer(r) => Some(*r),
        }
    }

    #[test]
    fn checks_in_order_allow_list_redirect_maintenance() {
        let p = TrafficPolicy {
            maintenance: true,
            https_enforced: true,
            allow: ranges(&["127.0.0.0/8"]).into_boxed_slice(),
        };
        assert_eq!(verdict(&p, "192.0.2.1", false, "/").unwrap().status(), StatusCode::FORBIDDEN);
        let r = verdict(&p, "127.0.0.1", false, "/a/b?c=d&e").unwrap();
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.headers()[header::LOCATION], "https://hello.deis.test:8443/a/b?c=d&e");
        let r = verdict(&p, "127.0.0.1", true, "/").unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        let open = TrafficPolicy { maintenance: false, ..p };
        assert!(verdict(&open, "127.0.0.1", true, "/").is_none());
    }
}
