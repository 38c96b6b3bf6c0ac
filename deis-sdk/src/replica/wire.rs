//! What replicas write to each other through the store: requests and answers.

use deis_core::scheduler::{AppSpec, NodeStatus, RestartFilter, SchedulerError};
use deis_core::{AppName, Unit};
use serde::{Deserialize, Serialize};

/// A follower's request to the leader.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Request {
    Apply { spec: AppSpec },
    Remove { app: AppName },
    Restart { app: AppName, filter: RestartFilter },
    Nodes,
}

/// What a request gave.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Reply {
    Done,
    Units(Vec<Unit>),
    Nodes(Vec<NodeStatus>),
}

/// A scheduler error as it travels: its kind and message.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireError {
    kind: ErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ErrorKind {
    Capacity,
    Unsupported,
    Invalid,
    NotFound,
    Backend,
}

/// The leader's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Answer {
    pub result: Result<Reply, WireError>,
}

impl From<Result<Reply, SchedulerError>> for Answer {
    fn from(r: Result<Reply, SchedulerError>) -> Self {
        let result = r.map_err(|e| {
            let (kind, message) = match e {
                SchedulerError::Capacity(m) => (ErrorKind::Capacity, m),
                SchedulerError::Unsupported(m) => (ErrorKind::Unsupported, m),
                SchedulerError::Invalid(m) => (ErrorKind::Invalid, m),
                SchedulerError::NotFound(m) => (ErrorKind::NotFound, m),
                SchedulerError::Backend(e) => (ErrorKind::Backend, e.to_string()),
            };
            WireError { kind, message }
        });
        Self { result }
    }
}

impl From<WireError> for SchedulerError {
    fn from(e: WireError) -> Self {
        match e.kind {
            ErrorKind::Capacity => Self::Capacity(e.message),
            ErrorKind::Unsupported => Self::Unsupported(e.message),
            ErrorKind::Invalid => Self::Invalid(e.message),
            ErrorKind::NotFound => Self::NotFound(e.message),
            ErrorKind::Backend => Self::Backend(format!("on the leading replica: {}", e.message).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_and_message_across_replicas() {
        for e in [
            SchedulerError::Capacity("memory: 2G requested, 1G of 4G free".into()),
            SchedulerError::Invalid("no command".into()),
            SchedulerError::NotFound("app x".into()),
            SchedulerError::Unsupported("images".into()),
        ] {
            let text = e.to_string();
            let json = serde_json::to_vec(&Answer::from(Err(e))).unwrap();
            let back: Answer = serde_json::from_slice(&json).unwrap();
            let back = SchedulerError::from(back.result.unwrap_err());
            assert_eq!(back.to_string(), text);
        }
        let json = serde_json::to_vec(&Answer::from(Err(SchedulerError::Backend("disk full".into())))).unwrap();
        let back: Answer = serde_json::from_slice(&json).unwrap();
        assert!(
            matches!(SchedulerError::from(back.result.unwrap_err()), SchedulerError::Backend(b) if b.to_string().contains("disk full"))
        );
    }
}
