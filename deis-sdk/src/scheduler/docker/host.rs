//! One Docker host as the Docker scheduler sees it, and its one-line form for
//! `deisd --docker-host`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use deis_core::model::limits;
use deis_core::scheduler::placement::Planes;

/// How a unit's `PORT` is reached on its host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Networking {
    /// Host networking: the unit listens on its `PORT` on the host itself (as with the
    /// local scheduler). Needs no bridge on the engine.
    #[default]
    Host,
    /// The engine's default bridge, the unit's `PORT` published on the host under the
    /// same number.
    Bridge,
}

/// A Docker engine units run on. See [`DockerHost::from_str`] for the one-line form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHost {
    /// The engine's API: `unix:///path/to/docker.sock` or `tcp://host:port`.
    pub endpoint: String,
    /// The node's name (default: the engine's host name, made unique).
    pub name: Option<String>,
    /// The address units' ports are reached at (default: 127.0.0.1 for a unix socket,
    /// the host of a `tcp://` endpoint).
    pub address: Option<IpAddr>,
    /// CPU offered to units, millicores (default: the engine's cores).
    pub cpu_millis: Option<u64>,
    /// Memory offered to units, bytes (default: the engine's memory).
    pub memory_bytes: Option<u64>,
    /// Labels apps select with `deis tags:set`.
    pub labels: BTreeMap<String, String>,
    /// The planes the node serves (default: data).
    pub planes: Planes,
    /// How units' ports are reached.
    pub networking: Networking,
}

impl DockerHost {
    /// A data-plane host at `endpoint` with everything else by default.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            name: None,
            address: None,
            cpu_millis: None,
            memory_bytes: None,
            labels: BTreeMap::new(),
            planes: Planes::DATA,
            networking: Networking::Host,
        }
    }

    /// The address units are reached at when none is set: loopback for a local socket,
    /// the host of a `tcp://` endpoint when it is an IP address.
    pub fn default_address(&self) -> Option<IpAddr> {
        if let Some(rest) = self.endpoint.strip_prefix("tcp://").or_else(|| self.endpoint.strip_prefix("http://")) {
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            return host.trim_start_matches('[').trim_end_matches(']').parse().ok();
        }
        Some(IpAddr::from([127, 0, 0, 1]))
    }
}

/// A `--docker-host` value that can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--docker-host {given:?}: {reason}")]
pub struct DockerHostError {
    /// The value given.
    pub given: String,
    /// What is wrong, and what is accepted.
    pub reason: String,
}

/// Longest `--docker-host` value accepted.
const MAX_LEN: usize = 4096;

impl FromStr for DockerHost {
    type Err = DockerHostError;

    /// `ENDPOINT[;KEY=VALUE]...` with `ENDPOINT` `unix:///path` or `tcp://host:port`
    /// and keys `name`, `address` (IP units are reached at), `cpu` (`2`, `1500m`),
    /// `memory` (`4G`), `label` (`KEY=VALUE`, repeatable), `planes` (`data`,
    /// `control,data`, ...), `network` (`host` or `bridge`). Example:
    /// `tcp://10.0.0.2:2375;name=n2;label=disk=ssd;cpu=8;memory=32G`.
    fn from_str(s: &str) -> Result<Self, DockerHostError> {
        let err = |reason: String| DockerHostError { given: s.chars().take(200).collect(), reason };
        if s.len() > MAX_LEN {
            return Err(err(format!("longer than {MAX_LEN} bytes")));
        }
        let mut parts = s.split(';');
        let endpoint = parts.next().unwrap_or_default().trim();
        let known = ["unix:///", "tcp://", "http://"];
        if !known.iter().any(|p| endpoint.starts_with(p) && endpoint.len() > p.len()) {
            return Err(err("the endpoint must be unix:///PATH or tcp://HOST:PORT".into()));
        }
        let mut host = DockerHost::new(endpoint);
        for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| err(format!("{part:?} is not KEY=VALUE")))?;
            match key {
                "name" if !value.is_empty() && value.len() <= 253 => host.name = Some(value.into()),
                "address" => {
                    host.address = Some(value.parse().map_err(|_| err(format!("address {value:?} is not an IP")))?)
                }
                "cpu" => host.cpu_millis = Some(limits::parse_cpu(value).map_err(|e| err(e.message))?.0),
                "memory" => host.memory_bytes = Some(limits::parse_memory(value).map_err(|e| err(e.message))?.0),
                "label" => {
                    let (k, v) =
                        value.split_once('=').ok_or_else(|| err(format!("label {value:?} is not KEY=VALUE")))?;
                    if k.is_empty() || k.len() > 63 || v.len() > 63 {
                        return Err(err("label keys and values are 1 to 63 characters".into()));
                    }
                    host.labels.insert(k.into(), v.into());
                }
                "planes" => host.planes = value.parse().map_err(|e| err(format!("{e}")))?,
                "network" => {
                    host.networking = match value {
                        "host" => Networking::Host,
                        "bridge" => Networking::Bridge,
                        _ => return Err(err(format!("network {value:?}: use host or bridge"))),
                    }
                }
                _ => {
                    return Err(err(format!(
                        "unknown or empty setting {key:?}: use name, address, cpu, memory, label, planes, network"
                    )));
                }
            }
        }
        Ok(host)
    }
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.endpoint)?;
        if let Some(n) = &self.name {
            write!(f, ";name={n}")?;
        }
        if let Some(a) = self.address {
            write!(f, ";address={a}")?;
        }
        if let Some(c) = self.cpu_millis {
            write!(f, ";cpu={c}m")?;
        }
        if let Some(m) = self.memory_bytes {
            write!(f, ";memory={}", limits::format_memory(m))?;
        }
        for (k, v) in &self.labels {
            write!(f, ";label={k}={v}")?;
        }
        if self.planes != Planes::DATA {
            write!(f, ";planes={}", self.planes)?;
        }
        if self.networking == Networking::Bridge {
            f.write_str(";network=bridge")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deis_core::scheduler::placement::Plane;
    use proptest::prelude::*;

    #[test]
    fn the_one_line_form() {
        let h: DockerHost =
            "tcp://10.0.0.2:2375;name=n2;label=disk=ssd;label=zone=a;cpu=1500m;memory=4G;planes=control,data;network=bridge"
                .parse()
                .unwrap();
        assert_eq!(h.endpoint, "tcp://10.0.0.2:2375");
        assert_eq!(h.name.as_deref(), Some("n2"));
        assert_eq!(h.cpu_millis, Some(1500));
        assert_eq!(h.memory_bytes, Some(4 << 30));
        assert_eq!(h.labels["disk"], "ssd");
        assert!(h.planes.contains(Plane::Control) && h.planes.contains(Plane::Data));
        assert_eq!(h.networking, Networking::Bridge);
        assert_eq!(h.default_address(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(h.to_string().parse::<DockerHost>().unwrap(), h);

        let local: DockerHost = "unix:///run/docker.sock".parse().unwrap();
        assert_eq!(local, DockerHost::new("unix:///run/docker.sock"));
        assert_eq!(local.default_address(), Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn refusals_say_what_is_accepted() {
        let e = |s: &str| s.parse::<DockerHost>().unwrap_err().to_string();
        assert_eq!(
            e("/run/docker.sock"),
            r#"--docker-host "/run/docker.sock": the endpoint must be unix:///PATH or tcp://HOST:PORT"#
        );
        assert!(e("unix:///s;gpu=1").contains(r#"unknown or empty setting "gpu""#));
        assert!(e("unix:///s;network=overlay").contains("use host or bridge"));
        assert!(e("unix:///s;planes=edge").contains("unknown plane"));
        assert!(e("unix:///s;label=x").contains("is not KEY=VALUE"));
        assert!(e("unix:///s;address=host").contains("is not an IP"));
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(h) = s.parse::<DockerHost>() {
                prop_assert_eq!(h.to_string().parse::<DockerHost>().unwrap(), h);
            }
        }
    }
}
