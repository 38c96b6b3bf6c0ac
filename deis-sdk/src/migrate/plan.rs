//! Plans a migration against a snapshot of the target: the writes that make the
//! target hold the v1 keyspace, and nothing for what it holds already (so a second run
//! plans nothing).

mod certs;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::Duration;

use uuid::Uuid;

use super::TtlMode;
use super::classify::{Leased, Sourced, V1App, V1Keyspace};
use super::deisd_env::{self, FileChange};
use super::layout;
use super::report::{Outcome, Status};
use crate::deis_core::model::{
    App, AppName, AppSettings, Config, ConfigPatch, Domain, PublicKey, Release, SshKey, User, key_id,
};
use crate::deis_core::store::records::{
    self, KeyRef, app_key, config_key, domain_key, endpoint_key, keyprint_key, release_key, ssh_key_key, user_key,
};
use crate::deis_core::store::{KeyValue, Revision, Store, StoreError};
use crate::deis_core::time::Timestamp;

/// The prefixes of the target a plan looks at.
const PREFIXES: &[&str] = &[
    "apps/",
    "releases/",
    "configs/",
    "domains/",
    "users/",
    "keys/",
    "keyprints/",
    "certs/",
    "certdomains/",
    "registrations/",
    "endpoints/",
];

/// Node name of the endpoints of v1 units.
pub const V1_NODE: &str = "deis-v1";

/// The target's records under the prefixes a plan looks at, read once.
#[derive(Debug, Default)]
pub struct Snapshot(BTreeMap<String, KeyValue>);

impl Snapshot {
    /// Reads the target.
    pub async fn read(store: &dyn Store) -> Result<Self, StoreError> {
        let mut map = BTreeMap::new();
        for prefix in PREFIXES {
            map.extend(store.list(prefix).await?.kvs.into_iter().map(|kv| (kv.key.clone(), kv)));
        }
        Ok(Self(map))
    }

    fn get(&self, key: &str) -> Option<&KeyValue> {
        self.0.get(key)
    }

    fn rev(&self, key: &str) -> Revision {
        self.get(key).map_or(0, |kv| kv.mod_revision)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get(key).map(records::decode).transpose()
    }

    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KeyValue> {
        self.0
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv)
    }
}

/// A put of a plan.
#[derive(Debug, Clone)]
pub struct Put {
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// Written under a lease of this TTL.
    pub ttl: Option<Duration>,
}

/// One change: puts that go together, on conditions, for some v1 keys.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// The v1 keys it migrates.
    pub sources: Vec<String>,
    /// The target records, for the report.
    pub target: String,
    /// `(key, mod revision)` that must still hold (0: absent).
    pub compares: Vec<(String, Revision)>,
    /// The writes.
    pub puts: Vec<Put>,
}

impl Change {
    fn put(&mut self, key: String, value: Vec<u8>, expected: Revision) {
        self.compares.push((key.clone(), expected));
        self.puts.push(Put { key, value, ttl: None });
    }
}

/// What a migration will do: changes to write, and keys decided without writing.
#[derive(Debug, Default)]
pub struct Plan {
    /// Writes.
    pub changes: Vec<Change>,
    /// Files for `deisd` (its environment and the platform certificate).
    pub files: Option<FileChange>,
    /// Unchanged, skipped and failed keys.
    pub decided: Vec<Outcome>,
}

struct Planner<'a> {
    snap: &'a Snapshot,
    owner: &'a str,
    now: Timestamp,
    plan: Plan,
    /// Apps that could not be created: their domains and endpoints fail too.
    failed_apps: BTreeSet<AppName>,
    /// Default domains of the apps this plan creates.
    new_default_domains: BTreeSet<String>,
    /// The v1 domains the target will hold, with their apps (certificates are
    /// attached to them).
    domain_apps: BTreeMap<String, AppName>,
    /// `/deis/router/enforceHTTPS` was on: every migrated app redirects to HTTPS.
    enforce_https: bool,
    /// Apps whose redirect to HTTPS this plan turns on.
    https_apps: Vec<AppName>,
}

impl Planner<'_> {
    fn decide(&mut self, key: &str, status: Status, detail: impl Into<String>) {
        self.plan.decided.push(Outcome { key: key.to_string(), status, detail: detail.into() });
    }

    fn app_owner(&self, app: &AppName) -> Result<String, StoreError> {
        Ok(self.snap.decode::<App>(&app_key(app))?.map_or_else(|| self.owner.to_string(), |a| a.owner))
    }

    fn app(&mut self, name: &AppName, v1: &V1App) -> Result<(), StoreError> {
        let values = |c: &Config| -> Vec<(&String, &Sourced<String>)> {
            v1.config.iter().filter(|(k, v)| c.values.get(*k) != Some(&v.value)).collect()
        };
        let describe =
            |keys: &[(&String, &Sourced<String>)]| keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
        let mut change = Change::default();
        let (base, version, mut app_record) = match self.snap.decode::<App>(&app_key(name))? {
            Some(app) => {
                let Some((config, latest)) = self.current_config(name)? else {
                    return self.fail_app(
                        name,
                        v1,
                        "it exists on the target without a release; fix or delete it there",
                    );
                };
                change.compares.push((app_key(name), self.snap.rev(&app_key(name))));
                (config, latest + 1, app)
            }
            None => {
                if let Some(d) = self.snap.decode::<Domain>(&domain_key(name))? {
                    let why = format!("its default domain {name} belongs to app {} on the target", d.app);
                    return self.fail_app(name, v1, &why);
                }
                let app = App::new(name.clone(), self.owner);
                let config = Config::initial(name, self.owner);
                let release = self.release(name, 1, config.uuid, format!("{} created initial release", self.owner));
                let domain = Domain {
                    owner: self.owner.to_string(),
                    created: self.now,
                    updated: self.now,
                    app: name.clone(),
                    domain: name.to_string(),
                };
                change.compares.push((app_key(name), 0));
                change.put(config_key(name, &config.uuid), records::encode(&config), 0);
                change.put(release_key(name, 1), records::encode(&release), 0);
                change.put(domain_key(name), records::encode(&domain), 0);
                change.target = format!("{} (new app, release v1)", app_key(name));
                self.new_default_domains.insert(name.to_string());
                (config, 2, app)
            }
        };
        let changed = values(&base);
        for (k, v) in &v1.config {
            if !changed.iter().any(|(c, _)| c == &k) {
                self.decide(&v.source, Status::Unchanged, format!("configs/{name} ({k})"));
            }
        }
        if !changed.is_empty() {
            let patch = ConfigPatch {
                values: Some(changed.iter().map(|(k, v)| ((*k).clone(), Some(v.value.clone().into()))).collect()),
                ..ConfigPatch::default()
            };
            let (config, summary) = match base.apply(&patch, self.owner) {
                Ok(applied) => applied,
                Err(e) => return self.fail_app(name, v1, &e.to_string()),
            };
            let summary = format!("{} (migrated from Deis v1)", summary.describe(self.owner));
            let release = self.release(name, version, config.uuid, summary);
            change.put(config_key(name, &config.uuid), records::encode(&config), 0);
            change.put(release_key(name, version), records::encode(&release), 0);
            change.sources = changed.iter().map(|(_, v)| v.source.clone()).collect();
            let target = format!("configs/{name} ({}), release v{version}", describe(&changed));
            change.target = if change.target.is_empty() { target } else { format!("{}, {target}", change.target) };
        }
        let settings_changed = self.app_settings(name, v1, &mut app_record.settings, &mut change);
        if !change.puts.is_empty() || settings_changed {
            app_record.updated = self.now;
            let key = app_key(name);
            change.puts.insert(0, Put { key, value: records::encode(&app_record), ttl: None });
            self.plan.changes.push(change);
        }
        Ok(())
    }

    /// Carries the app's v1 allow-list (`deis_whitelist`) and the platform's HTTPS
    /// redirect into `settings`; says whether they changed.
    fn app_settings(&mut self, name: &AppName, v1: &V1App, settings: &mut AppSettings, change: &mut Change) -> bool {
        let mut what = vec![];
        if let Some(w) = &v1.whitelist {
            let mut wanted = AppSettings::default();
            match wanted.allow(&w.value) {
                Err(e) => self.decide(&w.source, Status::Failed, format!("app {name}: {e}")),
                Ok(_) if wanted.whitelist == settings.whitelist => {
                    self.decide(&w.source, Status::Unchanged, format!("{} (settings.whitelist)", app_key(name)))
                }
                Ok(_) => {
                    settings.whitelist = wanted.whitelist;
                    change.sources.push(w.source.clone());
                    what.push(format!("settings.whitelist ({} entries)", settings.whitelist.len()));
                }
            }
        }
        if self.enforce_https && !settings.https_enforced {
            settings.https_enforced = true;
            self.https_apps.push(name.clone());
            what.push("settings.https_enforced".to_string());
        }
        if what.is_empty() {
            return false;
        }
        let target = format!("{} ({})", app_key(name), what.join(", "));
        change.target = if change.target.is_empty() { target } else { format!("{}, {target}", change.target) };
        true
    }

    fn fail_app(&mut self, name: &AppName, v1: &V1App, why: &str) -> Result<(), StoreError> {
        self.failed_apps.insert(name.clone());
        for source in v1.config.values().map(|v| &v.source).chain(v1.whitelist.as_ref().map(|w| &w.source)) {
            self.decide(source, Status::Failed, format!("app {name}: {why}"));
        }
        Ok(())
    }

    fn release(&self, app: &AppName, version: u64, config: Uuid, summary: String) -> Release {
        Release {
            uuid: Uuid::new_v4(),
            app: app.clone(),
            owner: self.owner.to_string(),
            version,
            summary,
            failed: false,
            config,
            build: None,
            created: self.now,
            updated: self.now,
        }
    }

    /// The config of the app's latest good release, and the latest version.
    fn current_config(&self, app: &AppName) -> Result<Option<(Config, u64)>, StoreError> {
        let releases: Vec<Release> =
            self.snap.under(&records::releases_prefix(app)).map(records::decode).collect::<Result<_, _>>()?;
        let Some(latest) = releases.last().map(|r| r.version) else { return Ok(None) };
        let Some(good) = releases.iter().rev().find(|r| !r.failed) else { return Ok(None) };
        Ok(self.snap.decode::<Config>(&config_key(app, &good.config))?.map(|c| (c, latest)))
    }

    fn domain(&mut self, domain: &str, app: &Sourced<AppName>) -> Result<(), StoreError> {
        let key = domain_key(domain);
        if self.failed_apps.contains(&app.value) {
            self.decide(&app.source, Status::Failed, format!("its app {} could not be migrated", app.value));
            return Ok(());
        }
        // A new app's default domain is its name: a v1 domain of that name is the same
        // record when it names the same app, and taken otherwise.
        let existing = match self.snap.decode::<Domain>(&key)?.map(|d| d.app) {
            None if self.new_default_domains.contains(domain) => Some(AppName::new(domain).expect("an app name")),
            existing => existing,
        };
        let planned = self.new_default_domains.contains(domain);
        match existing {
            Some(owner_app) if owner_app == app.value && planned => {
                self.domain_apps.insert(domain.to_string(), owner_app);
                self.decide(&app.source, Status::Migrated, format!("{key} (the app's default domain)"))
            }
            Some(owner_app) if owner_app == app.value => {
                self.domain_apps.insert(domain.to_string(), owner_app);
                self.decide(&app.source, Status::Unchanged, key)
            }
            Some(other) => self.decide(
                &app.source,
                Status::Failed,
                format!("{key} belongs to app {other} on the target; remove it there, or leave this domain out"),
            ),
            None => {
                let owner = self.app_owner(&app.value)?;
                let record = Domain {
                    owner,
                    created: self.now,
                    updated: self.now,
                    app: app.value.clone(),
                    domain: domain.to_string(),
                };
                let mut change = Change { sources: vec![app.source.clone()], target: key.clone(), ..Change::default() };
                change.put(key, records::encode(&record), 0);
                self.plan.changes.push(change);
                self.domain_apps.insert(domain.to_string(), app.value.clone());
            }
        }
        Ok(())
    }

    fn user(&mut self, username: &str, keys: &BTreeMap<String, Sourced<String>>) -> Result<(), StoreError> {
        let mut change = Change::default();
        let mut targets = vec![];
        match self.snap.get(&user_key(username)) {
            Some(kv) => change.compares.push((kv.key.clone(), kv.mod_revision)),
            None => {
                let user = User {
                    username: username.to_string(),
                    email: String::new(),
                    is_superuser: false,
                    password_hash: layout::NO_PASSWORD.to_string(),
                    date_joined: self.now,
                    last_login: None,
                    is_active: true,
                };
                change.put(user_key(username), records::encode(&user), 0);
                targets.push(format!("{} (new user, no password)", user_key(username)));
            }
        }
        let mut ids = BTreeSet::new();
        for (v1_name, public) in keys {
            let parsed = match PublicKey::parse(&public.value) {
                Ok(p) => p,
                Err(e) => {
                    self.decide(&public.source, Status::Failed, e.message);
                    continue;
                }
            };
            // The index entry names who holds a key: the same key under any id is there.
            let print = keyprint_key(&parsed.blob);
            match self.snap.decode::<KeyRef>(&print)? {
                Some(held) if held.owner == username => {
                    self.decide(&public.source, Status::Unchanged, ssh_key_key(username, &held.id));
                    continue;
                }
                Some(held) => {
                    let why = format!("the same public key is registered to user {} on the target", held.owner);
                    self.decide(&public.source, Status::Failed, why);
                    continue;
                }
                None => {}
            }
            // Its id: the key's comment as `deis keys:add` takes it, else the v1 name.
            let free = |id: &str| {
                key_id(id).is_ok() && !ids.contains(id) && self.snap.get(&ssh_key_key(username, id)).is_none()
            };
            let Some(id) = [parsed.comment.as_str(), v1_name.as_str()].into_iter().find(|id| free(id)) else {
                let why = format!("user {username} has keys named {:?} and {v1_name:?} already", parsed.comment);
                self.decide(&public.source, Status::Failed, why);
                continue;
            };
            let id = id.to_string();
            ids.insert(id.clone());
            let record = SshKey {
                uuid: Uuid::new_v4(),
                id: id.clone(),
                owner: username.to_string(),
                public: public.value.clone(),
                fingerprint: parsed.fingerprint(),
                created: self.now,
                updated: self.now,
            };
            let key = ssh_key_key(username, &id);
            change.put(key.clone(), records::encode(&record), 0);
            change.put(print, records::encode(&KeyRef { owner: username.to_string(), id }), 0);
            change.sources.push(public.source.clone());
            targets.push(key);
        }
        if !change.sources.is_empty() {
            change.target = targets.join(", ");
            self.plan.changes.push(change);
        }
        Ok(())
    }

    /// A plain value (settings, registrations): unchanged if equal, else written.
    fn value(&mut self, source: &str, key: String, value: &str, ttl: Option<Duration>) {
        match self.snap.get(&key) {
            Some(kv) if kv.value == value.as_bytes() => self.decide(source, Status::Unchanged, key),
            existing => {
                let expected = existing.map_or(0, |kv| kv.mod_revision);
                let mut change = Change { sources: vec![source.to_string()], ..Change::default() };
                change.compares.push((key.clone(), expected));
                change.puts.push(Put { key: key.clone(), value: value.as_bytes().to_vec(), ttl });
                change.target = match ttl {
                    Some(t) => format!("{key} (lease of {} s)", t.as_secs()),
                    None => key,
                };
                self.plan.changes.push(change);
            }
        }
    }

    /// What became of `/deis/router/enforceHTTPS`: carried by the first app change
    /// that turns an app's redirect on, unchanged when every app has it already.
    fn enforce_https_outcome(&mut self, setting: &Sourced<bool>) {
        if !setting.value {
            let why = "off in Deis v1: apps redirect to HTTPS once their owners run deis tls:enable";
            return self.decide(&setting.source, Status::Skipped, why);
        }
        let Some(first) = self.https_apps.first().cloned() else {
            let detail = "settings.https_enforced of every migrated app";
            return self.decide(&setting.source, Status::Unchanged, detail);
        };
        let apps: Vec<String> = self.https_apps.iter().map(ToString::to_string).collect();
        let first_key = app_key(&first);
        if let Some(change) = self.plan.changes.iter_mut().find(|c| c.puts.first().is_some_and(|p| p.key == first_key))
        {
            change.sources.push(setting.source.clone());
            change.target = format!("{} (HTTPS enforced for {})", change.target, apps.join(", "));
        }
    }

    fn leased<T>(&mut self, mode: TtlMode, r: &Leased<T>, write: impl FnOnce(&mut Self)) {
        match mode {
            TtlMode::Skip => {
                let secs = r.ttl.as_secs();
                self.decide(
                    &r.source,
                    Status::Skipped,
                    format!(
                        "a registration with a TTL ({secs} s left), not made permanent; --ttl lease keeps it that long"
                    ),
                );
            }
            TtlMode::Lease => write(self),
        }
    }
}

/// Plans the migration of `ks` onto the target in `snap`; apps, domains and
/// certificates the v1 keyspace does not say who owns go to `owner`. Settings for
/// `deisd` go to files in `deisd_env_dir` (see [`deisd_env`]).
pub fn plan(
    ks: &V1Keyspace,
    snap: &Snapshot,
    owner: &str,
    ttl: TtlMode,
    deisd_env_dir: Option<&std::path::Path>,
) -> Result<Plan, StoreError> {
    let enforce_https = ks.enforce_https.as_ref().is_some_and(|s| s.value);
    let mut p = Planner {
        snap,
        owner,
        now: Timestamp::now(),
        plan: Plan::default(),
        failed_apps: BTreeSet::new(),
        new_default_domains: BTreeSet::new(),
        domain_apps: BTreeMap::new(),
        enforce_https,
        https_apps: Vec::new(),
    };
    p.plan.decided.extend(ks.decided.iter().cloned());
    for (name, app) in &ks.apps {
        p.app(name, app)?;
    }
    if let Some(s) = &ks.enforce_https {
        p.enforce_https_outcome(s);
    }
    for (domain, app) in &ks.domains {
        p.domain(domain, app)?;
    }
    for (domain, cert) in &ks.certs {
        p.cert(domain, cert, &ks.certs)?;
    }
    for (username, keys) in &ks.users {
        p.user(username, keys)?;
    }
    p.plan.files = deisd_env::plan(ks, deisd_env_dir, &mut p.plan.decided);
    for r in &ks.endpoints {
        let e = &r.value;
        if p.failed_apps.contains(&e.app) {
            p.decide(&r.source, Status::Failed, format!("its app {} could not be migrated", e.app));
            continue;
        }
        let endpoint = records::Endpoint {
            app: e.app.clone(),
            unit: e.unit.clone(),
            proc_type: e.proc_type.clone(),
            release: e.release,
            address: e.address,
            node: V1_NODE.to_string(),
        };
        let json = String::from_utf8(records::encode(&endpoint)).expect("JSON is UTF-8");
        let key = endpoint_key(&e.app, &e.unit, 0);
        p.leased(ttl, r, |p| p.value(&r.source, key, &json, Some(r.ttl)));
    }
    for r in &ks.registrations {
        let (path, value) = &r.value;
        p.leased(ttl, r, |p| p.value(&r.source, layout::registration_key(path), value, Some(r.ttl)));
    }
    Ok(p.plan)
}
