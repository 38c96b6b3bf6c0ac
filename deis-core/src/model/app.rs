use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An application, as the controller API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Stable identity.
    pub uuid: String,
    /// The app's name (also its default domain label).
    pub id: String,
    /// Username of the owner.
    pub owner: String,
    /// The formation: process type to number of units.
    #[serde(default)]
    pub structure: BTreeMap<String, u32>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Last change, RFC 3339.
    pub updated: String,
}

impl App {
    /// A new app owned by `owner`, with an empty formation.
    pub fn new(id: &str, owner: &str) -> Self {
        let now = crate::time::now();
        Self {
            uuid: uuid::Uuid::new_v4().to_string(),
            id: id.into(),
            owner: owner.into(),
            structure: BTreeMap::new(),
            created: now.clone(),
            updated: now,
        }
    }
}

/// A domain routed to an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Username of whoever added it.
    pub owner: String,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Last change, RFC 3339.
    pub updated: String,
    /// App id.
    pub app: String,
    /// The host name (`www.example.com`), or the app id for its default domain.
    pub domain: String,
}
