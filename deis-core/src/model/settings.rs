//! App settings (`/v2/apps/<app>/settings/`, `/tls/`, `/whitelist/`): what the router
//! does with an app's traffic (maintenance, routing, allow-list, HTTPS redirect), its
//! labels and its autoscale bounds. Changing them makes no release: they act at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AddressRange, ProcessType, ValidationError};

/// Largest number of allow-list entries per app (each one is checked per request).
pub const MAX_WHITELIST: usize = 256;
/// Largest number of labels per app.
pub const MAX_LABELS: usize = 64;

/// The settings of one app, kept in its [`App`](super::App) record so the router sees
/// them with the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    /// The router answers 503 with a maintenance page (`deis maintenance:on`).
    pub maintenance: bool,
    /// The router routes the app at all (`deis routing:disable` turns it off).
    pub routable: bool,
    /// Client addresses allowed to reach the app; empty allows everyone.
    pub whitelist: Vec<AddressRange>,
    /// Autoscale bounds per process type.
    pub autoscale: BTreeMap<ProcessType, Autoscale>,
    /// Free-form labels (`deis labels:set team=web`).
    pub label: BTreeMap<String, String>,
    /// Plain HTTP requests are redirected to HTTPS (`deis tls:enable`).
    pub https_enforced: bool,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            maintenance: false,
            routable: true,
            whitelist: Vec::new(),
            autoscale: BTreeMap::new(),
            label: BTreeMap::new(),
            https_enforced: false,
        }
    }
}

/// Autoscale bounds of one process type (Workflow `deis autoscale:set web --min=1 --max=3 --cpu-percent=50`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest units.
    pub min: u32,
    /// Most units.
    pub max: u32,
    /// Target cpu use per unit, in percent of its cpu request (else its limit, else one
    /// core), as Kubernetes' HPA counts utilisation.
    pub cpu_percent: u32,
}

/// A partial settings change, as `POST /v2/apps/<app>/settings/` sends it: absent
/// fields stay, `null` map entries are deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SettingsPatch {
    /// New maintenance mode.
    #[serde(default)]
    pub maintenance: Option<bool>,
    /// New routability.
    #[serde(default)]
    pub routable: Option<bool>,
    /// Autoscale bounds to set (`null` removes a process type's bounds).
    #[serde(default)]
    pub autoscale: Option<BTreeMap<String, Option<Autoscale>>>,
    /// Labels to set (`null` removes one).
    #[serde(default)]
    pub label: Option<BTreeMap<String, Option<String>>>,
}

/// Why a settings change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A value is malformed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A `null` named something that is not there.
    #[error("{key} does not exist under {section}")]
    Missing {
        /// The key that was to be deleted.
        key: String,
        /// `label`, `autoscale` or `addresses`.
        section: &'static str,
    },
}

impl AppSettings {
    /// Whether these are the settings of a new app (records then leave them out).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Applies `patch`, returning the new settings and what changed (empty: nothing did).
    pub fn apply(&self, patch: &SettingsPatch) -> Result<(AppSettings, Vec<String>), SettingsError> {
        let mut next = self.clone();
        let mut changed = Vec::new();
        if let Some(m) = patch.maintenance.filter(|m| *m != self.maintenance) {
            next.maintenance = m;
            changed.push(format!("maintenance {}", if m { "on" } else { "off" }));
        }
        if let Some(r) = patch.routable.filter(|r| *r != self.routable) {
            next.routable = r;
            changed.push(format!("routing {}", if r { "enabled" } else { "disabled" }));
        }
        if let Some(entries) = &patch.autoscale {
            for (t, bounds) in entries {
                let t = ProcessType::new(t.as_str())
                    .map_err(|e| ValidationError::new("autoscale", format!("{t:?}: {}", e.message)))?;
                match bounds {
                    None if next.autoscale.remove(&t).is_none() => {
                        return Err(SettingsError::Missing { key: t.into_string(), section: "autoscale" });
                    }
                    None => changed.push(format!("autoscale for {t} removed")),
                    Some(b) => {
                        check_autoscale(&t, b)?;
                        if next.autoscale.insert(t.clone(), *b) != Some(*b) {
                            changed.push(format!("autoscale for {t}"));
                        }
                    }
                }
            }
        }
        if let Some(labels) = &patch.label {
            for (k, v) in labels {
                match v {
                    None if next.label.remove(k).is_none() => {
                        return Err(SettingsError::Missing { key: k.clone(), section: "label" });
                    }
                    None => changed.push(format!("label {k} removed")),
                    Some(v) => {
                        check_label(k, v)?;
                        if next.label.insert(k.clone(), v.clone()).as_ref() != Some(v) {
                            changed.push(format!("label {k}"));
                        }
                    }
                }
            }
            if next.label.len() > MAX_LABELS {
                return Err(ValidationError::new("label", format!("at most {MAX_LABELS} labels per app")).into());
            }
        }
        Ok((next, changed))
    }

    /// Adds `addresses` to the allow-list; returns how many were new.
    pub fn allow(&mut self, addresses: &[AddressRange]) -> Result<usize, SettingsError> {
        let mut next = self.whitelist.clone();
        next.extend(addresses.iter().copied());
        next.sort();
        next.dedup();
        if next.len() > MAX_WHITELIST {
            return Err(ValidationError::new("addresses", format!("at most {MAX_WHITELIST} addresses per app")).into());
        }
        let added = next.len() - self.whitelist.len();
        self.whitelist = next;
        Ok(added)
    }

    /// Removes `addresses` from the allow-list; all of them must be on it.
    pub fn disallow(&mut self, addresses: &[AddressRange]) -> Result<(), SettingsError> {
        if let Some(missing) = addresses.iter().find(|a| !self.whitelist.contains(a)) {
            return Err(SettingsError::Missing { key: missing.to_string(), section: "addresses" });
        }
        self.whitelist.retain(|a| !addresses.contains(a));
        Ok(())
    }
}

fn check_autoscale(t: &ProcessType, b: &Autoscale) -> Result<(), ValidationError> {
    if b.min < 1 || b.min > b.max {
        return Err(ValidationError::new(
            "autoscale",
            format!("{t}: need 1 <= min <= max, got min {} max {}", b.min, b.max),
        ));
    }
    if b.max > 1000 {
        return Err(ValidationError::new("autoscale", format!("{t}: max must be at most 1000")));
    }
    if b.cpu_percent == 0 || b.cpu_percent > 100 {
        return Err(ValidationError::new("autoscale", format!("{t}: cpu_percent must be 1 to 100")));
    }
    Ok(())
}

/// Label keys and values as Kubernetes takes them: up to 63 of `[A-Za-z0-9._-]`,
/// starting and ending alphanumeric (values may be empty).
fn check_label(key: &str, value: &str) -> Result<(), ValidationError> {
    let ok = |s: &str| {
        s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    };
    if key.is_empty() || !ok(key) {
        return Err(ValidationError::new(
            "label",
            format!(
                "{key:?} is not a valid label key: up to 63 of a-z, A-Z, 0-9, '.', '_', '-', starting and ending with a letter or digit"
            ),
        ));
    }
    if !ok(value) {
        return Err(ValidationError::new(
            "label",
            format!(
                "the value of {key} is not valid: up to 63 of a-z, A-Z, 0-9, '.', '_', '-', starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: serde_json::Value) -> SettingsPatch {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn defaults_route_everyone() {
        let s: AppSettings = serde_json::from_str("{}").unwrap();
        assert!(s.routable && !s.maintenance && s.whitelist.is_empty() && !s.https_enforced);
    }

    #[test]
    fn patches_change_what_they_name_and_say_so() {
        let s = AppSettings::default();
        let (s, changed) = s.apply(&patch(serde_json::json!({"maintenance": true, "label": {"team": "web"}}))).unwrap();
        assert!(s.maintenance);
        assert_eq!(s.label["team"], "web");
        assert_eq!(changed, ["maintenance on", "label team"]);
        let (_, none) = s.apply(&patch(serde_json::json!({"maintenance": true, "label": {"team": "web"}}))).unwrap();
        assert!(none.is_empty(), "same values change nothing");
        let (s, changed) = s.apply(&patch(serde_json::json!({"label": {"team": null}, "routable": false}))).unwrap();
        assert!(s.label.is_empty() && !s.routable);
        assert_eq!(changed, ["routing disabled", "label team removed"]);
        let e = s.apply(&patch(serde_json::json!({"label": {"team": null}}))).unwrap_err();
        assert_eq!(e.to_string(), "team does not exist under label");
    }

    #[test]
    fn bad_values_are_refused() {
        let s = AppSettings::default();
        for bad in [
            serde_json::json!({"label": {"-x": "1"}}),
            serde_json::json!({"label": {"k": "a b"}}),
            serde_json::json!({"autoscale": {"web": {"min": 3, "max": 2, "cpu_percent": 50}}}),
            serde_json::json!({"autoscale": {"web": {"min": 1, "max": 2, "cpu_percent": 0}}}),
            serde_json::json!({"autoscale": {"Web": {"min": 1, "max": 2, "cpu_percent": 50}}}),
        ] {
            assert!(matches!(s.apply(&patch(bad.clone())), Err(SettingsError::Invalid(_))), "{bad}");
        }
        let (s, _) = s
            .apply(&patch(serde_json::json!({"autoscale": {"web": {"min": 1, "max": 3, "cpu_percent": 50}}})))
            .unwrap();
        assert_eq!(s.autoscale["web"], Autoscale { min: 1, max: 3, cpu_percent: 50 });
    }

    #[test]
    fn allow_list_adds_sorted_once_and_removes_only_what_is_there() {
        let mut s = AppSettings::default();
        let a: Vec<AddressRange> =
            ["10.0.0.0/8", "192.0.2.1", "10.1.0.0/8"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(s.allow(&a).unwrap(), 2, "10.1.0.0/8 is 10.0.0.0/8");
        assert_eq!(s.whitelist.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "192.0.2.1"]);
        let missing: AddressRange = "198.51.100.0/24".parse().unwrap();
        assert_eq!(
            s.disallow(&[a[0], missing]).unwrap_err().to_string(),
            "198.51.100.0/24 does not exist under addresses"
        );
        assert_eq!(s.whitelist.len(), 2, "a refused removal removes nothing");
        s.disallow(&[a[0]]).unwrap();
        assert_eq!(s.whitelist, [a[1]]);
        let many: Vec<AddressRange> = (0..=MAX_WHITELIST as u32)
            .map(|i| AddressRange::new(std::net::Ipv4Addr::from(i).into(), 32).unwrap())
            .collect();
        assert!(s.allow(&many).is_err());
        assert_eq!(s.whitelist, [a[1]], "a refused addition adds nothing");
    }
}
