//! Sorts the keys of a Deis v1 keyspace by what they become on this platform.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::report::{Outcome, Status};
use super::source::{Ttl, V1Key};
use crate::deis_core::model::{PublicKey, validate};
use crate::deis_core::store::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::deis_core::{AppName, ProcessType};

/// Settings the platform keeps (without a TTL); `/deis/<section>/…`.
const SETTING_SECTIONS: &[&str] = &["platform", "logs", "router"];

/// The v1 keyspace sorted by target. Each entry keeps the v1 key it came from.
#[derive(Debug, Default)]
pub struct V1Keyspace {
    /// Apps: those with config, domains or service registrations.
    pub apps: BTreeMap<AppName, V1App>,
    /// Domain → app.
    pub domains: BTreeMap<String, Sourced<AppName>>,
    /// Domain → certificate and key.
    pub certs: BTreeMap<String, V1Cert>,
    /// Username → fingerprint → public key.
    pub users: BTreeMap<String, BTreeMap<String, Sourced<String>>>,
    /// v1 path below `/deis/` → value.
    pub settings: BTreeMap<String, Sourced<String>>,
    /// Service registrations (`/deis/services/…`), as endpoints.
    pub endpoints: Vec<Leased<V1Endpoint>>,
    /// Component registrations (`/deis/<component>/…` with a TTL): path below `/deis/`
    /// → value.
    pub registrations: Vec<Leased<(String, String)>>,
    /// Keys decided already: skipped or failed while sorting.
    pub decided: Vec<Outcome>,
    /// How many v1 keys were read.
    pub total: usize,
}

/// A value with the v1 key it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The v1 key.
    pub source: String,
    /// The value.
    pub value: T,
}

/// A registration with its remaining TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased<T> {
    /// The v1 key.
    pub source: String,
    /// The registration.
    pub value: T,
    /// What was left of its TTL.
    pub ttl: Duration,
}

/// An app's config: upper-cased key → value.
#[derive(Debug, Default)]
pub struct V1App {
    /// Config values.
    pub config: BTreeMap<String, Sourced<String>>,
}

/// A certificate's two keys.
#[derive(Debug, Default)]
pub struct V1Cert {
    /// `/deis/certs/<domain>/cert`.
    pub cert: Option<Sourced<String>>,
    /// `/deis/certs/<domain>/key`.
    pub key: Option<Sourced<String>>,
}

/// A unit that the v1 publisher registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Endpoint {
    /// App.
    pub app: AppName,
    /// `<app>.<type>.<n>`.
    pub unit: String,
    /// Process type.
    pub proc_type: ProcessType,
    /// Release version.
    pub release: u64,
    /// Address.
    pub address: SocketAddr,
}

impl V1Keyspace {
    /// Sorts `keys`.
    pub fn classify(keys: Vec<V1Key>) -> Self {
        let mut ks = Self { total: keys.len(), ..Self::default() };
        for k in keys {
            if let Err((status, reason)) = ks.add(&k) {
                ks.decided.push(Outcome { key: k.key, status, detail: reason });
            }
        }
        ks
    }

    fn add(&mut self, k: &V1Key) -> Result<(), (Status, String)> {
        let skip = |r: &str| Err((Status::Skipped, r.to_string()));
        let fail = |r: String| Err((Status::Failed, r));
        let Some(path) = k.key.strip_prefix("/deis/") else {
            return skip("outside /deis: not part of a Deis v1 keyspace");
        };
        if k.value.len() > MAX_VALUE_BYTES || k.key.len() > MAX_KEY_BYTES {
            return fail(format!("larger than the store allows ({MAX_VALUE_BYTES} bytes of value)"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let ttl = match k.ttl {
            None => None,
            Some(Ttl::Expired) => return skip("its TTL had run out"),
            Some(Ttl::Remaining(d)) => Some(d),
        };
        match (parts.as_slice(), ttl) {
            (["config", app, var], None) => {
                let app = app_name(app)?;
                let var = var.to_ascii_uppercase();
                validate::config_key(&var).or_else(|e| fail(e.message))?;
                validate::config_value(&var, &k.value).or_else(|e| fail(e.message))?;
                let entry = Sourced { source: k.key.clone(), value: k.value.clone() };
                self.apps.entry(app).or_default().config.insert(var, entry);
            }
            (["domains", domain], None) => {
                let domain = domain.to_ascii_lowercase();
                validate::domain(&domain).or_else(|e| fail(e.message))?;
                let app = app_name(&k.value)?;
                self.apps.entry(app.clone()).or_default();
                self.domains.insert(domain, Sourced { source: k.key.clone(), value: app });
            }
            (["certs", domain, part @ ("cert" | "key")], None) => {
                let domain = domain.to_ascii_lowercase();
                validate::domain(&domain).or_else(|e| fail(e.message))?;
                let (marker, what) =
                    if *part == "cert" { ("CERTIFICATE", "certificate") } else { ("PRIVATE KEY", "key") };
                if !k.value.contains("-----BEGIN") || !k.value.contains(marker) {
                    return fail(format!("not a PEM {what}"));
                }
                let entry = Some(Sourced { source: k.key.clone(), value: k.value.clone() });
                let cert = self.certs.entry(domain).or_default();
                if *part == "cert" { cert.cert = entry } else { cert.key = entry }
            }
            (["builder", "users", user, fingerprint], None) => {
                validate::username(user).or_else(|e| fail(e.message))?;
                if fingerprint.is_empty() || fingerprint.len() > 128 {
                    return fail("the key's name (its fingerprint) is empty or longer than 128 bytes".into());
                }
                if let Err(e) = PublicKey::parse(&k.value) {
                    return fail(e.message);
                }
                let entry = Sourced { source: k.key.clone(), value: k.value.trim().to_string() };
                self.users.entry(user.to_string()).or_default().insert(fingerprint.to_string(), entry);
            }
            (["services", app, unit], Some(ttl)) => {
                let endpoint = v1_endpoint(app, unit, &k.value)?;
                self.apps.entry(endpoint.app.clone()).or_default();
                self.endpoints.push(Leased { source: k.key.clone(), value: endpoint, ttl });
            }
            ([section, ..], None) if SETTING_SECTIONS.contains(section) => {
                self.settings.insert(path.to_string(), Sourced { source: k.key.clone(), value: k.value.clone() });
            }
            ([_, ..], Some(ttl)) => {
                self.registrations.push(Leased {
                    source: k.key.clone(),
                    value: (path.to_string(), k.value.clone()),
                    ttl,
                });
            }
            _ => return skip("no counterpart in this platform's layout"),
        }
        Ok(())
    }
}

fn app_name(name: &str) -> Result<AppName, (Status, String)> {
    validate::app_name(name).map_err(|e| (Status::Failed, format!("app {name:?}: {}", e.message)))?;
    AppName::new(name).map_err(|e| (Status::Failed, format!("app {name:?}: {}", e.message)))
}

/// `/deis/services/<app>/<app>_v<N>.<type>.<num> = host:port`.
fn v1_endpoint(app: &str, unit: &str, value: &str) -> Result<V1Endpoint, (Status, String)> {
    let fail = |r: String| (Status::Failed, r);
    let app = app_name(app)?;
    let shape = || fail(format!("registration {unit:?} is not <app>_v<N>.<type>.<num>"));
    let rest = unit.strip_prefix(app.as_str()).and_then(|r| r.strip_prefix("_v")).ok_or_else(shape)?;
    let mut fields = rest.splitn(3, '.');
    let (release, proc_type, number) = (fields.next(), fields.next(), fields.next());
    let release = release.and_then(|r| r.parse::<u64>().ok()).ok_or_else(shape)?;
    let proc_type = proc_type.and_then(|t| ProcessType::new(t).ok()).ok_or_else(shape)?;
    let number = number.and_then(|n| n.parse::<u32>().ok()).ok_or_else(shape)?;
    let address = value.trim().parse::<SocketAddr>().map_err(|_| fail(format!("address {value:?} is not IP:PORT")))?;
    Ok(V1Endpoint { unit: format!("{app}.{proc_type}.{number}"), app, proc_type, release, address })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str, value: &str, ttl: Option<u64>) -> V1Key {
        let ttl = ttl.map(|s| if s == 0 { Ttl::Expired } else { Ttl::Remaining(Duration::from_secs(s)) });
        V1Key { key: key.into(), value: value.into(), ttl }
    }

    /// A real key line (ssh-keygen output).
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINW5R8RtYHiAX3r5dVVBw3NTlJwrlyHOujxFlgie4Yrw alice@laptop\n";

    #[test]
    fn sorts_a_v1_keyspace() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let ks = V1Keyspace::classify(vec![
            key("/deis/config/hello/database_url", "postgres://db", None),
            key("/deis/domains/www.example.com", "hello", None),
            key("/deis/certs/www.example.com/cert", pem, None),
            key("/deis/builder/users/alice/ab:cd", ED25519, None),
            key("/deis/builder/users/alice/ee:ff", "ssh-ed25519 AAAA alice@x", None),
            key("/deis/services/hello/hello_v3.web.1", "10.0.0.1:49153", Some(20)),
            key("/deis/services/hello/bogus", "10.0.0.1:1", Some(20)),
            key("/deis/builder/host", "10.0.0.2", Some(30)),
            key("/deis/platform/domain", "example.com", None),
            key("/deis/scheduler/foo", "x", None),
            key("/other", "x", None),
            key("/deis/config/Bad_App/x", "y", None),
            key("/deis/router/hosts/x", "y", Some(0)),
        ]);
        assert_eq!(ks.total, 13);
        let hello = AppName::new("hello").unwrap();
        assert_eq!(ks.apps[&hello].config["DATABASE_URL"].value, "postgres://db");
        assert_eq!(ks.domains["www.example.com"].value, hello);
        assert!(ks.certs["www.example.com"].cert.is_some() && ks.certs["www.example.com"].key.is_none());
        assert_eq!(ks.users["alice"]["ab:cd"].value, ED25519.trim());
        assert_eq!(ks.endpoints[0].value.unit, "hello.web.1");
        assert_eq!(ks.endpoints[0].value.release, 3);
        assert_eq!(ks.endpoints[0].ttl, Duration::from_secs(20));
        assert_eq!(ks.registrations[0].value, ("builder/host".to_string(), "10.0.0.2".to_string()));
        assert_eq!(ks.settings["platform/domain"].value, "example.com");
        let decided: Vec<(&str, Status)> = ks.decided.iter().map(|o| (o.key.as_str(), o.status)).collect();
        assert_eq!(
            decided,
            [
                ("/deis/builder/users/alice/ee:ff", Status::Failed),
                ("/deis/services/hello/bogus", Status::Failed),
                ("/deis/scheduler/foo", Status::Skipped),
                ("/other", Status::Skipped),
                ("/deis/config/Bad_App/x", Status::Failed),
                ("/deis/router/hosts/x", Status::Skipped),
            ]
        );
    }
}
