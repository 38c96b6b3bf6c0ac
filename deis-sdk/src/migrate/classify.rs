//! Sorts the keys of a Deis v1 keyspace by what they become on this platform.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::report::{Outcome, Status};
use super::source::{Ttl, V1Key};
use crate::deis_core::controller::RegistrationMode;
use crate::deis_core::model::{AddressRange, PublicKey, validate};
use crate::deis_core::store::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::deis_core::{AppName, ProcessType};

/// Sections of v1 settings (keys without a TTL): `/deis/<section>/…`.
const SETTING_SECTIONS: &[&str] = &["platform", "controller", "logs", "router"];

/// The v1 config key the controller kept an app's allow-list in (`deis config:set
/// DEIS_WHITELIST=…`): it becomes the app's [`AppSettings::whitelist`].
///
/// [`AppSettings::whitelist`]: crate::deis_core::AppSettings::whitelist
pub const V1_WHITELIST_KEY: &str = "deis_whitelist";

/// A v1 setting `deisd` takes from its environment (or the matching flag): the v1
/// path below `/deis/` and the variable.
const DEISD_SETTINGS: &[(&str, &str)] =
    &[("platform/domain", "DEIS_DOMAIN"), ("controller/registrationMode", "DEIS_REGISTRATION")];

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
    /// Settings `deisd` takes from its environment: variable (`DEIS_DOMAIN`) → value.
    pub deisd_env: BTreeMap<&'static str, Sourced<String>>,
    /// `/deis/router/sslCert` and `/deis/router/sslKey`: the platform certificate
    /// (`deisd --tls-cert/--tls-key`).
    pub platform_cert: V1Cert,
    /// `/deis/router/enforceHTTPS`: the router redirected every app's HTTP to HTTPS.
    pub enforce_https: Option<Sourced<bool>>,
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

/// An app's config: upper-cased key → value, and its allow-list.
#[derive(Debug, Default)]
pub struct V1App {
    /// Config values.
    pub config: BTreeMap<String, Sourced<String>>,
    /// `/deis/config/<app>/deis_whitelist`, parsed.
    pub whitelist: Option<Sourced<Vec<AddressRange>>>,
}

/// A certificate's two keys.
#[derive(Debug, Default)]
pub struct V1Cert {
    /// `/deis/certs/<domain>/cert` (`/deis/router/sslCert`).
    pub cert: Option<Sourced<String>>,
    /// `/deis/certs/<domain>/key` (`/deis/router/sslKey`).
    pub key: Option<Sourced<String>>,
}

impl V1Cert {
    fn set(&mut self, part: &str, source: &str, value: &str) -> Result<(), (Status, String)> {
        let (marker, what) = if part == "cert" { ("CERTIFICATE", "certificate") } else { ("PRIVATE KEY", "key") };
        if !value.contains("-----BEGIN") || !value.contains(marker) {
            return Err((Status::Failed, format!("not a PEM {what}")));
        }
        let entry = Some(Sourced { source: source.to_string(), value: value.to_string() });
        if part == "cert" {
            self.cert = entry
        } else {
            self.key = entry
        }
        Ok(())
    }
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
            (["config", app, var], None) if var.eq_ignore_ascii_case(V1_WHITELIST_KEY) => {
                let ranges = whitelist(&k.value).map_err(|r| (Status::Failed, r))?;
                let entry = Sourced { source: k.key.clone(), value: ranges };
                self.apps.entry(app_name(app)?).or_default().whitelist = Some(entry);
            }
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
                self.certs.entry(domain).or_default().set(part, &k.key, &k.value)?;
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
            ([section, ..], None) if SETTING_SECTIONS.contains(section) => self.setting(path, k)?,
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

impl V1Keyspace {
    /// A v1 setting: what `deisd` or the apps read now, else skipped with the reason.
    fn setting(&mut self, path: &str, k: &V1Key) -> Result<(), (Status, String)> {
        let fail = |r: String| Err((Status::Failed, r));
        let value = k.value.trim();
        let sourced = |value: String| Sourced { source: k.key.clone(), value };
        if let Some((_, var)) = DEISD_SETTINGS.iter().find(|(p, _)| *p == path) {
            let checked = match *var {
                "DEIS_DOMAIN" => validate::domain(value).map_err(|e| e.message),
                _ => value.parse::<RegistrationMode>().map(|_| ()).map_err(|e| e.to_string()),
            };
            checked.or_else(fail)?;
            self.deisd_env.insert(var, sourced(value.to_string()));
            return Ok(());
        }
        match path {
            "router/sslCert" => self.platform_cert.set("cert", &k.key, &k.value),
            "router/sslKey" => self.platform_cert.set("key", &k.key, &k.value),
            "router/enforceHTTPS" => {
                let on = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" | "" => false,
                    _ => return fail(format!("{value:?} is not true or false")),
                };
                self.enforce_https = Some(Sourced { source: k.key.clone(), value: on });
                Ok(())
            }
            "logs/drain" => Err((
                Status::Skipped,
                "a platform-wide log drain; drains are per app now: deis drains:add URL -a APP".into(),
            )),
            _ => Err((
                Status::Skipped,
                format!("a Deis v1 {} tuning with no counterpart in this platform", section(path)),
            )),
        }
    }
}

/// What a settings section configured, for the reason it is skipped.
fn section(path: &str) -> &'static str {
    match path.split('/').next() {
        Some("router") => "router (nginx)",
        Some("controller") => "controller",
        Some("logs") => "logger",
        _ => "platform",
    }
}

/// A v1 allow-list: `IP_or_CIDR[:label],…` (the labels are dropped).
fn whitelist(value: &str) -> Result<Vec<AddressRange>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        // An IPv6 address has colons of its own: try the whole entry first.
        let parsed = entry.parse::<AddressRange>().or_else(|e| match entry.rsplit_once(':') {
            Some((addr, _label)) => addr.parse::<AddressRange>(),
            None => Err(e),
        });
        out.push(parsed.map_err(|e| format!("DEIS_WHITELIST entry {entry:?}: {}", e.message))?);
    }
    Ok(out)
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
            key("/deis/controller/registrationMode", "admin_only", None),
            key("/deis/controller/registrationMode2", "x", None),
            key("/deis/router/enforceHTTPS", "true", None),
            key("/deis/router/bodySize", "1m", None),
            key("/deis/config/hello/deis_whitelist", "10.0.1.0/24:office,192.0.2.7:home, 2001:db8::1", None),
            key("/deis/config/shop/deis_whitelist", "10.0.1.0/33", None),
            key("/deis/scheduler/foo", "x", None),
            key("/other", "x", None),
            key("/deis/config/Bad_App/x", "y", None),
            key("/deis/router/hosts/x", "y", Some(0)),
        ]);
        assert_eq!(ks.total, 19);
        let hello = AppName::new("hello").unwrap();
        assert_eq!(ks.apps[&hello].config["DATABASE_URL"].value, "postgres://db");
        assert_eq!(ks.domains["www.example.com"].value, hello);
        assert!(ks.certs["www.example.com"].cert.is_some() && ks.certs["www.example.com"].key.is_none());
        assert_eq!(ks.users["alice"]["ab:cd"].value, ED25519.trim());
        assert_eq!(ks.endpoints[0].value.unit, "hello.web.1");
        assert_eq!(ks.endpoints[0].value.release, 3);
        assert_eq!(ks.endpoints[0].ttl, Duration::from_secs(20));
        assert_eq!(ks.registrations[0].value, ("builder/host".to_string(), "10.0.0.2".to_string()));
        assert_eq!(ks.deisd_env["DEIS_DOMAIN"].value, "example.com");
        assert_eq!(ks.deisd_env["DEIS_REGISTRATION"].value, "admin_only");
        assert_eq!(ks.enforce_https.as_ref().map(|s| s.value), Some(true));
        let whitelist: Vec<String> =
            ks.apps[&hello].whitelist.as_ref().unwrap().value.iter().map(ToString::to_string).collect();
        assert_eq!(whitelist, ["10.0.1.0/24", "192.0.2.7", "2001:db8::1"]);
        assert!(!ks.apps[&hello].config.contains_key("DEIS_WHITELIST"), "an allow-list, not config");
        let decided: Vec<(&str, Status)> = ks.decided.iter().map(|o| (o.key.as_str(), o.status)).collect();
        assert_eq!(
            decided,
            [
                ("/deis/builder/users/alice/ee:ff", Status::Failed),
                ("/deis/services/hello/bogus", Status::Failed),
                ("/deis/controller/registrationMode2", Status::Skipped),
                ("/deis/router/bodySize", Status::Skipped),
                ("/deis/config/shop/deis_whitelist", Status::Failed),
                ("/deis/scheduler/foo", Status::Skipped),
                ("/other", Status::Skipped),
                ("/deis/config/Bad_App/x", Status::Failed),
                ("/deis/router/hosts/x", Status::Skipped),
            ]
        );
    }
}
