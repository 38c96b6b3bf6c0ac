//! What placement knows of a node: its planes, labels, capacity and health.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Capacity;
use crate::time::Timestamp;

/// A role a node plays in the cluster. App units go to the data plane only; the
/// control plane (controller, store, brokers) and the router plane never get them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Controller, store, brokers, update server.
    Control,
    /// App units, runtime agents, telemetry agent.
    Data,
    /// Routers and the TTY broker's edge.
    Router,
}

impl Plane {
    /// Every plane, in display order.
    pub const ALL: [Plane; 3] = [Plane::Control, Plane::Data, Plane::Router];

    /// The plane's name (`control`, `data`, `router`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Data => "data",
            Self::Router => "router",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plane name that is none of `control`, `data`, `router`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plane {0:?}: use control, data or router (several joined by commas)")]
pub struct UnknownPlane(pub String);

impl FromStr for Plane {
    type Err = UnknownPlane;

    fn from_str(s: &str) -> Result<Self, UnknownPlane> {
        Plane::ALL.into_iter().find(|p| p.as_str() == s.trim()).ok_or_else(|| UnknownPlane(s.to_string()))
    }
}

/// The set of planes a node serves; `control,data` for a node that does both.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Planes(u8);

impl Planes {
    /// The data plane alone: what a node serves unless told otherwise.
    pub const DATA: Planes = Planes(1 << Plane::Data as u8);

    /// [`Planes::DATA`] (for serde defaults).
    pub fn data() -> Self {
        Self::DATA
    }

    /// The set of `planes`.
    pub fn of(planes: impl IntoIterator<Item = Plane>) -> Self {
        Self(planes.into_iter().fold(0, |bits, p| bits | p.bit()))
    }

    /// Whether `plane` is in the set.
    pub fn contains(self, plane: Plane) -> bool {
        self.0 & plane.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The planes in the set, in [`Plane::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Plane> {
        Plane::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl fmt::Debug for Planes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Planes({self})")
    }
}

impl fmt::Display for Planes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Plane::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Planes {
    type Err = UnknownPlane;

    /// `data`, `control,data`, ...; empty means no plane (a node that takes nothing).
    fn from_str(s: &str) -> Result<Self, UnknownPlane> {
        s.split(',').filter(|p| !p.trim().is_empty()).map(str::parse).collect::<Result<Vec<Plane>, _>>().map(Self::of)
    }
}

impl Serialize for Planes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Planes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::of(Vec::<Plane>::deserialize(d)?))
    }
}

/// Whether a node answers: up, or down since a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Health {
    /// Answers; may receive units.
    Up,
    /// Stopped answering at `since`; receives nothing, and its units are placed
    /// elsewhere once a grace period has passed.
    Down {
        /// When it was first seen not answering.
        since: Timestamp,
    },
}

impl Health {
    /// [`Health::Up`] (for serde defaults).
    pub fn up() -> Self {
        Self::Up
    }

    /// Whether the node is up.
    pub fn is_up(self) -> bool {
        self == Self::Up
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Up => f.write_str("up"),
            Self::Down { since } => write!(f, "down since {since}"),
        }
    }
}

/// What a node is: its name, what it offers to units, its labels and its planes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique name.
    pub name: String,
    /// What it offers to units.
    pub capacity: Capacity,
    /// Labels an app's tags (`deis tags:set KEY=VALUE`) select on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The planes it serves ([`Planes::DATA`] unless told otherwise).
    #[serde(default = "data_plane")]
    pub planes: Planes,
}

fn data_plane() -> Planes {
    Planes::DATA
}

impl NodeInfo {
    /// A data-plane node without labels.
    pub fn new(name: impl Into<String>, capacity: Capacity) -> Self {
        Self { name: name.into(), capacity, labels: BTreeMap::new(), planes: Planes::DATA }
    }

    /// The same node with label `key=value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The same node serving `planes`.
    pub fn planes(mut self, planes: Planes) -> Self {
        self.planes = planes;
        self
    }

    /// Whether the node carries every label of `selector`.
    pub fn carries(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_parse_print_and_serialize() {
        let p: Planes = "control, data".parse().unwrap();
        assert!(p.contains(Plane::Control) && p.contains(Plane::Data) && !p.contains(Plane::Router));
        assert_eq!(p.to_string(), "control,data");
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"["control","data"]"#);
        assert_eq!(serde_json::from_str::<Planes>(r#"["router"]"#).unwrap(), Planes::of([Plane::Router]));
        assert!("".parse::<Planes>().unwrap().is_empty());
        let e = "data,compute".parse::<Planes>().unwrap_err();
        assert_eq!(e.to_string(), r#"unknown plane "compute": use control, data or router (several joined by commas)"#);
    }

    #[test]
    fn node_records_round_trip_and_default_to_the_data_plane() {
        let n = NodeInfo::new("a", Capacity { cpu_millis: 2000, memory_bytes: 1 << 30 }).label("zone", "b");
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), n);
        let bare: NodeInfo =
            serde_json::from_str(r#"{"name":"b","capacity":{"cpu_millis":1,"memory_bytes":2}}"#).unwrap();
        assert_eq!(bare.planes, Planes::DATA);
        assert!(n.carries(&BTreeMap::from([("zone".into(), "b".into())])));
        assert!(!n.carries(&BTreeMap::from([("zone".into(), "c".into())])));
        assert!(n.carries(&BTreeMap::new()));
        let down = Health::Down { since: Timestamp::from_unix_seconds(0) };
        assert_eq!(serde_json::from_str::<Health>(&serde_json::to_string(&down).unwrap()).unwrap(), down);
    }
}
