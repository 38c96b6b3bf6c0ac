use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AppName, AppSettings, ProcessType};
use crate::time::Timestamp;

/// An application, as the controller API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    /// Stable identity.
    pub uuid: Uuid,
    /// The app's name (also its default domain label).
    pub id: AppName,
    /// Username of the owner.
    pub owner: String,
    /// The formation: process type to number of units.
    #[serde(default)]
    pub structure: BTreeMap<ProcessType, u32>,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
    /// Users who may use the app besides its owner (`deis perms:create`): deploy,
    /// configure, scale and run, but not destroy, transfer or manage collaborators.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub collaborators: BTreeSet<String>,
    /// What the router does with the app's traffic, labels, autoscale bounds.
    #[serde(default, skip_serializing_if = "AppSettings::is_default")]
    pub settings: AppSettings,
}

impl App {
    /// Whether `username` owns the app or collaborates on it.
    pub fn is_member(&self, username: &str) -> bool {
        self.owner == username || self.collaborators.contains(username)
    }

    /// A new app owned by `owner`, with an empty formation.
    pub fn new(id: AppName, owner: &str) -> Self {
        let now = Timestamp::now();
        Self {
            uuid: Uuid::new_v4(),
            id,
            owner: owner.into(),
            structure: BTreeMap::new(),
            created: now,
            updated: now,
            collaborators: BTreeSet::new(),
            settings: AppSettings::default(),
        }
    }
}

/// A domain routed to an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Username of whoever added it.
    pub owner: String,
    /// Creation time.
    pub created: Timestamp,
    /// Last change.
    pub updated: Timestamp,
    /// App id.
    pub app: AppName,
    /// The host name (`www.example.com`), or the app id for its default domain.
    pub domain: String,
}
