//! What is placed: slots (`<app>.<type>.<n>`) with their requests, and the policy
//! that ranks the nodes able to take them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Plane;
use crate::model::limits::Resources;
use crate::model::{AppName, ProcessType, Unit};

/// A place in an app's formation: unit `<app>.<type>.<n>` whatever instance runs it.
/// Placement assigns slots to nodes; a rolling replacement keeps the slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot {
    /// The app.
    pub app: AppName,
    /// The process type.
    #[serde(rename = "type")]
    pub proc_type: ProcessType,
    /// The `n`, from 1.
    pub number: u32,
}

impl Slot {
    /// Slot `number` of `app`'s `proc_type`.
    pub fn new(app: AppName, proc_type: ProcessType, number: u32) -> Self {
        Self { app, proc_type, number }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Unit::name_for(&self.app, &self.proc_type, self.number))
    }
}

/// What the unit of a slot needs from its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRequest {
    /// The slot.
    pub slot: Slot,
    /// What it reserves.
    pub resources: Resources,
    /// Labels its node must carry: the app's tags (`deis tags:set KEY=VALUE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The plane its node must serve ([`Plane::Data`] for app units).
    #[serde(default = "data")]
    pub plane: Plane,
}

fn data() -> Plane {
    Plane::Data
}

impl UnitRequest {
    /// An app unit: data plane, no selector.
    pub fn new(slot: Slot, resources: Resources) -> Self {
        Self { slot, resources, selector: BTreeMap::new(), plane: Plane::Data }
    }

    /// The same request, selecting nodes that carry `selector`.
    pub fn selector(mut self, selector: BTreeMap<String, String>) -> Self {
        self.selector = selector;
        self
    }
}

/// How nodes that can take a unit are ranked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Fill nodes before using more: the fullest node that fits wins (nodes are tried
    /// biggest first), so whole nodes stay free for big units or can be turned off.
    #[default]
    Binpack,
    /// Keep load even: the emptiest node that fits wins.
    Spread,
}

impl Policy {
    /// The policy's name (`binpack`, `spread`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binpack => "binpack",
            Self::Spread => "spread",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A policy name that is neither `binpack` nor `spread`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {0:?}: use binpack or spread")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownPolicy> {
        match s {
            "binpack" | "bin-pack" => Ok(Self::Binpack),
            "spread" => Ok(Self::Spread),
            _ => Err(UnknownPolicy(s.to_string())),
        }
    }
}
