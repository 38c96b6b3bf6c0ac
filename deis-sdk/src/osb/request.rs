//! Parsing what a platform sends a broker: the headers, the query and the JSON body,
//! each with a limit. Shared by the server and the fuzz target.

use deis_core::broker::{API_VERSION, BrokerError, OriginatingIdentity, RequestContext};
use serde::de::DeserializeOwned;

/// The largest request body the server reads by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// The longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Why a request's headers are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderRefusal {
    /// 412: the API version is missing or not one this server speaks.
    Version(String),
}

/// Checks `X-Broker-API-Version`: `2.17` or a later 2.x (minor versions only add).
pub fn check_version(header: Option<&str>) -> Result<(), HeaderRefusal> {
    let Some(version) = header else {
        return Err(HeaderRefusal::Version(format!(
            "the X-Broker-API-Version header is missing: send X-Broker-API-Version: {API_VERSION}"
        )));
    };
    let supported = version
        .trim()
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)))
        .is_some_and(|(major, minor)| major == 2 && minor >= 17);
    if supported {
        Ok(())
    } else {
        Err(HeaderRefusal::Version(format!(
            "X-Broker-API-Version {:?} is not supported: this broker speaks {API_VERSION} (2.17 or a later 2.x)",
            version.chars().take(32).collect::<String>()
        )))
    }
}

/// The request context from the identity headers. A malformed originating identity is
/// left out (and logged): the header is optional, and refusing the request for it would
/// answer statuses the spec does not give those routes.
pub fn context(originating: Option<&str>, request_identity: Option<&str>) -> RequestContext {
    let originating_identity = originating.and_then(|h| {
        OriginatingIdentity::parse(h)
            .inspect_err(|e| tracing::warn!(error = %e, "ignoring the originating identity"))
            .ok()
    });
    let request_identity = request_identity.map(|r| r.chars().take(256).collect());
    RequestContext { originating_identity, request_identity }
}

/// A JSON body as `T` (unknown fields ignored); a 400 naming what is wrong otherwise.
pub fn body<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, BrokerError> {
    if bytes.len() > max {
        return Err(BrokerError::BadRequest(format!("the body is larger than {max} bytes")));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BrokerError::BadRequest("the request needs a JSON body".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| BrokerError::BadRequest(format!("the body is not valid: {e}")))
}

/// The query parameters the spec defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `accepts_incomplete=true`.
    pub accepts_incomplete: bool,
    /// `service_id`.
    pub service_id: Option<String>,
    /// `plan_id`.
    pub plan_id: Option<String>,
    /// `operation`.
    pub operation: Option<String>,
}

/// Parses a query string (percent-decoded; unknown parameters ignored).
pub fn query(raw: Option<&str>) -> Result<Query, BrokerError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_BYTES {
        return Err(BrokerError::BadRequest(format!("the query is longer than {MAX_QUERY_BYTES} bytes")));
    }
    let mut q = Query::default();
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match &*key {
            "accepts_incomplete" => {
                q.accepts_incomplete = match &*value {
                    "true" => true,
                    "false" | "" => false,
                    other => {
                        return Err(BrokerError::BadRequest(format!(
                            "accepts_incomplete must be true or false, not {:?}",
                            other.chars().take(32).collect::<String>()
                        )));
                    }
                }
            }
            "service_id" => q.service_id = Some(value.into_owned()),
            "plan_id" => q.plan_id = Some(value.into_owned()),
            "operation" => {
                if value.chars().count() > deis_core::broker::MAX_OPERATION_CHARS {
                    return Err(BrokerError::BadRequest("operation is longer than 10,000 characters".into()));
                }
                q.operation = Some(value.into_owned());
            }
            _ => {}
        }
    }
    Ok(q)
}

impl Query {
    /// `service_id` and `plan_id`, both required (deletes).
    pub fn delete_request(&self) -> Result<deis_core::broker::DeleteRequest, BrokerError> {
        match (&self.service_id, &self.plan_id) {
            (Some(service_id), Some(plan_id)) => {
                Ok(deis_core::broker::DeleteRequest { service_id: service_id.clone(), plan_id: plan_id.clone() })
            }
            _ => Err(BrokerError::BadRequest("service_id and plan_id are required query parameters".into())),
        }
    }

    /// The poll request.
    pub fn poll_request(&self) -> deis_core::broker::PollRequest {
        deis_core::broker::PollRequest {
            service_id: self.service_id.clone(),
            plan_id: self.plan_id.clone(),
            operation: self.operation.clone(),
        }
    }
}

/// Feeds arbitrary bytes through every parser of this module (the fuzz target's body):
/// none may panic, and what parses re-serialises to JSON that parses again.
pub fn fuzz_one(data: &[u8]) {
    use deis_core::broker::{BindRequest, ProvisionRequest, UpdateRequest};
    fn round_trip<T: DeserializeOwned + serde::Serialize>(data: &[u8]) {
        if let Ok(v) = body::<T>(data, DEFAULT_MAX_BODY_BYTES) {
            serde_json::from_slice::<T>(&serde_json::to_vec(&v).expect("serialises")).expect("re-parses");
        }
    }
    round_trip::<ProvisionRequest>(data);
    round_trip::<UpdateRequest>(data);
    round_trip::<BindRequest>(data);
    round_trip::<deis_core::broker::Catalog>(data);
    round_trip::<deis_core::broker::LastOperation>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = query(Some(text));
        let _ = check_version(Some(text));
        if let Some(identity) = context(Some(text), Some(text)).originating_identity {
            assert_eq!(OriginatingIdentity::parse(&identity.to_header()).expect("re-parses"), identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// What the client's query builder writes, the server's parser reads back.
        #[test]
        fn queries_round_trip(accepts in any::<bool>(), service in "\\PC{1,40}", plan in "\\PC{1,40}", op in proptest::option::of("\\PC{1,40}")) {
            let raw = crate::osb::client::query(accepts, &[("service_id", Some(&service)), ("plan_id", Some(&plan)), ("operation", op.as_deref())]);
            let q = query(Some(raw.trim_start_matches('?'))).unwrap();
            prop_assert_eq!(q.accepts_incomplete, accepts);
            prop_assert_eq!(q.service_id.as_deref(), Some(service.as_str()));
            prop_assert_eq!(q.plan_id.as_deref(), Some(plan.as_str()));
            prop_assert_eq!(q.operation, op);
        }

        /// Any identity a platform sends parses back to itself.
        #[test]
        fn identities_round_trip(platform in "[a-z][a-z0-9-]{0,20}", user in "\\PC{0,40}", n in any::<i64>()) {
            let identity = OriginatingIdentity { platform, value: serde_json::json!({ "user_id": user, "n": n }) };
            prop_assert_eq!(OriginatingIdentity::parse(&identity.to_header()).unwrap(), identity);
        }

        /// Bytes never panic the parsers.
        #[test]
        fn arbitrary_bytes_are_refused_or_parsed(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_one(&data);
        }
    }

    #[test]
    fn versions_below_2_17_and_garbage_are_refused() {
        for ok in ["2.17", "2.18", " 2.99 "] {
            assert!(check_version(Some(ok)).is_ok(), "{ok}");
        }
        for bad in ["2.16", "1.17", "3.0", "2", "", "2.x", "2.17.1"] {
            assert!(matches!(check_version(Some(bad)), Err(HeaderRefusal::Version(_))), "{bad}");
        }
        assert!(matches!(check_version(None), Err(HeaderRefusal::Version(_))));
    }
}
