//! The client's error type and the conversion of the controller's JSON error bodies into
//! one readable message.

use std::fmt::Write as _;

/// Everything that can go wrong talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller URL could not be understood.
    #[error("invalid controller URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing answered at the controller's address (refused, unreachable, DNS failure).
    #[error(
        "cannot connect to the controller at {url}: {reason}. Check that `deisd` is running and listening there \
         (its --api-addr), or log in to the right URL with `deis login URL`"
    )]
    Connect {
        /// The controller URL.
        url: String,
        /// The cause in words (`connection refused`, ...).
        reason: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection broke while sending the request or reading the response.
    #[error("request {method} {url} failed: {reason}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Full request URL.
        url: String,
        /// The cause in words.
        reason: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No complete response within the client's timeout.
    #[error("request {method} {url} got no response within {secs} s; the controller may be overloaded or stuck")]
    Timeout {
        /// HTTP method.
        method: String,
        /// Full request URL.
        url: String,
        /// The timeout in seconds.
        secs: u64,
    },
    /// The response body exceeded the client's cap.
    #[error("the response to {method} {url} is larger than the client's limit of {limit} bytes")]
    BodyTooLarge {
        /// HTTP method.
        method: String,
        /// Full request URL.
        url: String,
        /// The cap in bytes.
        limit: usize,
    },
    /// The server answered with an error status; `message` is the readable text of its body.
    #[error("{message}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// One readable line built from the error body (see [`ClientError::from_response`]).
        message: String,
        /// The raw body (possibly truncated), for `--json` and debugging.
        body: String,
    },
    /// A success response whose body is not the JSON the API promises.
    #[error("unexpected response to {method} {url}: {reason}")]
    Decode {
        /// HTTP method.
        method: String,
        /// Full request URL.
        url: String,
        /// What did not fit.
        reason: String,
    },
    /// `GET /v2/` did not answer 401: the URL is not a Deis controller.
    #[error(
        "{url} does not appear to be a valid Deis controller (GET /v2/ answered {status}, expected 401). \
         Make sure the controller URL is right and `deisd` serves its API there"
    )]
    NotAController {
        /// The controller URL.
        url: String,
        /// What `GET /v2/` answered.
        status: u16,
    },
    /// The request could not be built or encoded (e.g. a value that can't be serialised).
    #[error("cannot build the request: {0}")]
    Request(String),
}

/// The largest part of an error body quoted in a message.
const MAX_QUOTED_BODY: usize = 1000;

impl ClientError {
    /// The HTTP status of an [`Api`](ClientError::Api) error (`None` for every other kind).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// An [`Api`](ClientError::Api) error from an error `status` and its `body`, with a
    /// message a person can read:
    ///
    /// * `{"detail": "msg"}` -> `msg`
    /// * `{"non_field_errors": ["a", "b"]}` -> `a b`
    /// * `{"field": ["msg"]}` -> `field: msg` (several fields joined with `; `)
    /// * a bare JSON string (`"No App matches the given query."`) -> its text
    /// * an empty body -> the status's reason phrase (`Not Found`)
    /// * anything else -> the body text, truncated
    ///
    /// 401 messages say how to get a new token; 403 messages keep the server's words.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let mut message = readable_body(status, &text);
        if status == 401 {
            message = format!("Unauthorized: {}. Log in again with `deis login URL`", message.trim_end_matches('.'));
        } else if status == 503 {
            message = format!("the platform is unavailable (503): {message}");
        } else if status >= 500 {
            message = format!("server error ({status}): {message}");
        }
        Self::Api { status, message, body: truncate(&text, 64 * 1024) }
    }
}

fn reason_phrase(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or_else(|| format!("HTTP status {status}"), str::to_string)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// One JSON value as words: strings as they are, arrays joined by spaces, anything else
/// compact JSON.
fn words(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(words).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

fn readable_body(status: u16, text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return reason_phrase(status);
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(trimmed) else {
        return truncate(trimmed, MAX_QUOTED_BODY);
    };
    let message = match &json {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) if map.is_empty() => reason_phrase(status),
        serde_json::Value::Object(map) => {
            let mut out = String::new();
            // `detail` and `non_field_errors` are not about one field: show them bare, first.
            for key in ["detail", "non_field_errors"] {
                if let Some(v) = map.get(key) {
                    push_part(&mut out, &words(v));
                }
            }
            for (field, v) in map {
                if field == "detail" || field == "non_field_errors" {
                    continue;
                }
                let mut part = String::new();
                let _ = write!(part, "{field}: {}", words(v));
                push_part(&mut out, &part);
            }
            out
        }
        serde_json::Value::Array(_) => words(&json),
        other => other.to_string(),
    };
    if message.trim().is_empty() { reason_phrase(status) } else { truncate(&message, MAX_QUOTED_BODY) }
}

fn push_part(out: &mut String, part: &str) {
    if part.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push_str("; ");
    }
    out.push_str(part);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(status: u16, body: &str) -> String {
        ClientError::from_response(status, body.as_bytes()).to_string()
    }

    #[test]
    fn detail_bodies_become_their_text() {
        assert_eq!(
            msg(400, r#"{"detail":"No build associated with this release"}"#),
            "No build associated with this release"
        );
        assert_eq!(
            msg(422, r#"{"detail": "not enough capacity: web needs 512M"}"#),
            "not enough capacity: web needs 512M"
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        assert_eq!(
            msg(400, r#"{"id":["Application with this id already exists."]}"#),
            "id: Application with this id already exists."
        );
        assert_eq!(
            msg(400, r#"{"username":["This field may not be blank."],"password":["This field may not be blank."]}"#),
            "password: This field may not be blank.; username: This field may not be blank."
        );
    }

    #[test]
    fn non_field_errors_are_bare_and_come_first() {
        assert_eq!(
            msg(400, r#"{"non_field_errors":["Unable to log in with provided credentials."]}"#),
            "Unable to log in with provided credentials."
        );
        assert_eq!(msg(400, r#"{"zeta":["z"],"non_field_errors":["first"]}"#), "first; zeta: z");
    }

    #[test]
    fn bare_strings_and_empty_bodies() {
        assert_eq!(msg(404, r#""No App matches the given query.""#), "No App matches the given query.");
        assert_eq!(msg(404, ""), "Not Found");
        assert_eq!(msg(404, "{}"), "Not Found");
        assert_eq!(msg(405, "   "), "Method Not Allowed");
    }

    #[test]
    fn non_json_bodies_are_quoted_truncated() {
        assert_eq!(msg(400, "plain words\n"), "plain words");
        let long = "x".repeat(5000);
        let m = msg(400, &long);
        assert!(m.len() < 1100 && m.ends_with("..."), "{m}");
    }

    #[test]
    fn auth_and_server_errors_say_what_to_do() {
        let e = ClientError::from_response(401, br#"{"detail":"Invalid token."}"#);
        assert_eq!(e.status(), Some(401));
        assert_eq!(e.to_string(), "Unauthorized: Invalid token. Log in again with `deis login URL`");
        assert_eq!(msg(500, r#"{"detail":"Server Error"}"#), "server error (500): Server Error");
        assert_eq!(
            msg(503, r#"{"detail":"the store is unavailable: etcd down; retry when it is back"}"#),
            "the platform is unavailable (503): the store is unavailable: etcd down; retry when it is back"
        );
        assert_eq!(
            msg(403, r#"{"detail":"You do not have permission to perform this action."}"#),
            "You do not have permission to perform this action."
        );
    }

    #[test]
    fn status_is_kept_and_body_too() {
        let e = ClientError::from_response(409, br#"{"detail":"alice changed nothing - release stopped"}"#);
        match e {
            ClientError::Api { status, message, body } => {
                assert_eq!(status, 409);
                assert_eq!(message, "alice changed nothing - release stopped");
                assert!(body.contains("release stopped"));
            }
            other => panic!("{other:?}"),
        }
    }
}
