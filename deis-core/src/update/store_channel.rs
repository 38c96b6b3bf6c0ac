//! [`StoreUpdateChannel`]: the update service's records in any [`Store`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::checkins::{Buffered, CheckIn, CheckIns};
use super::config_cache::{ConfigCache, Decoded};
use super::policy::{self, Decision, NoUpdate, RolloutPolicy};
use super::{
    Channel, CheckOutcome, DEFAULT_GROUPS, Grant, Group, GroupSpec, Instance, InstanceEvent, InstanceRef,
    InstanceStatus, Package, Result, RolloutWindow, UpdateApp, UpdateChannel, UpdateError, canonical_app_id,
    check_name, check_token,
};
use crate::store::records::{decode, encode, get_json, list_json};
use crate::store::{Store, Txn};
use crate::time::Timestamp;

/// Times a check or event retries after losing a race with another writer.
const MAX_ATTEMPTS: usize = 32;

fn app_key(app: &str) -> String {
    format!("updates/apps/{app}")
}
fn package_key(app: &str, version: &str) -> String {
    format!("updates/packages/{app}/{version}")
}
fn channel_key(app: &str, name: &str) -> String {
    format!("updates/channels/{app}/{name}")
}
fn group_key(app: &str, name: &str) -> String {
    format!("updates/groups/{app}/{name}")
}
fn instance_key(app: &str, id: &str) -> String {
    format!("updates/instances/{app}/{id}")
}

/// The [`UpdateChannel`] on a [`Store`].
///
/// | key | value |
/// |---|---|
/// | `updates/apps/<app id>` | [`UpdateApp`] |
/// | `updates/packages/<app id>/<version>` | [`Package`] |
/// | `updates/channels/<app id>/<name>` | [`Channel`] |
/// | `updates/groups/<app id>/<name>` | [`Group`] (with its rollout window) |
/// | `updates/instances/<app id>/<instance id>` | [`Instance`] (with its last events) |
///
/// A check that grants an update writes the group's window and the instance in one
/// transaction conditioned on both records' revisions, so concurrent servers never
/// grant more than the policy allows; on a conflict it reads again and decides again.
///
/// Checks that change no grant are cheap: configuration is cached in memory and
/// forgotten as soon as a watch of the store reports a change of it (on any server:
/// [`CONFIG_PREFIXES`](super::CONFIG_PREFIXES)), and check-ins and events that are no
/// grant or failure are buffered in memory for up to
/// [`FLUSH_INTERVAL`](super::FLUSH_INTERVAL), then written in as few transactions as the
/// store takes; call [`UpdateChannel::flush`] before shutting down.
#[derive(Debug, Clone)]
pub struct StoreUpdateChannel {
    store: Arc<dyn Store>,
    config: Arc<ConfigCache>,
    checkins: Arc<CheckIns>,
}

impl StoreUpdateChannel {
    /// Update records in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, config: Arc::default(), checkins: Arc::default() }
    }

    /// The canonical id of an application that exists.
    async fn known_app(&self, id: &str) -> Result<String> {
        let id = canonical_app_id(id)?;
        match self.config.get::<UpdateApp>(&self.store, &app_key(&id)).await? {
            Some(_) => Ok(id),
            None => Err(UpdateError::unknown_app(&id)),
        }
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        Ok(get_json(&*self.store, key).await?)
    }

    /// A configuration record (shared with the cache) and its revision.
    async fn cached<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        key: &str,
        kind: &'static str,
        name: &str,
    ) -> Result<Arc<Decoded<T>>> {
        self.config.get::<T>(&self.store, key).await?.ok_or_else(|| UpdateError::NotFound {
            kind,
            name: name.into(),
            hint: "",
        })
    }

    /// The instance record at `key` as this server knows it (with its buffered
    /// check-in), the store revision it is built on, and that check-in. From the
    /// check-in alone when it is up to date with this server's writes, unless `fresh`
    /// (then the store is read: another server may have changed the record).
    /// `quiet`: the caller holds off flushes ([`CheckIns::quiet`]).
    async fn instance(&self, key: &str, fresh: bool, quiet: bool) -> Result<Option<Found>> {
        loop {
            if !fresh
                && let Some(pending) = self.checkins.get(key)
                && let Some(base) = pending.base()
            {
                let record = Instance::clone(pending.record());
                return Ok(Some(Found { record, rev: base, pending: Some(pending), read: false }));
            }
            let stored = self.get::<Instance>(key).await?;
            let rev = stored.as_ref().map_or(0, |(_, rev)| *rev);
            let Some(pending) = self.checkins.get_for_read(key) else {
                return Ok(stored.map(|(record, rev)| Found { record, rev, pending: None, read: true }));
            };
            match pending.merged(stored, quiet) {
                Some(record) => return Ok(Some(Found { record, rev, pending: Some(pending), read: true })),
                // A flush may have written the check-in already: read once it is over.
                None => drop(self.checkins.quiet().await),
            }
        }
    }

    async fn must<T: DeserializeOwned>(&self, key: &str, kind: &'static str, name: &str) -> Result<(T, u64)> {
        self.get(key).await?.ok_or_else(|| UpdateError::NotFound { kind, name: name.into(), hint: "" })
    }

    /// Writes `value` at `key` if its revision is still `rev`; whether it was.
    async fn swap<T: Serialize>(&self, key: &str, rev: u64, value: &T) -> Result<bool> {
        Ok(self.store.compare_and_swap(key, rev, encode(value)).await?)
    }

    /// Reads, changes with `f` and writes back one record until no other writer got
    /// in between.
    async fn update<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        kind: &'static str,
        name: &str,
        mut f: impl FnMut(&mut T) -> Result<()>,
    ) -> Result<T> {
        for _ in 0..MAX_ATTEMPTS {
            let (mut value, rev) = self.must::<T>(key, kind, name).await?;
            f(&mut value)?;
            if self.swap(key, rev, &value).await? {
                return Ok(value);
            }
        }
        Err(contended(key))
    }
}

/// An instance record as [`StoreUpdateChannel::instance`] finds it.
struct Found {
    record: Instance,
    /// The store revision it is built on (0: none stored).
    rev: u64,
    /// The buffered check-in it includes.
    pending: Option<CheckIn>,
    /// Whether the store was read (else it is the buffered record).
    read: bool,
}

fn contended(key: &str) -> UpdateError {
    UpdateError::Conflict(format!("{key} keeps changing under concurrent writers; try again"))
}

fn fresh_instance(who: &InstanceRef, group: &str, now: u64) -> Instance {
    Instance {
        id: who.instance.clone(),
        group: group.to_string(),
        version: who.version.clone(),
        status: InstanceStatus::Idle,
        last_check: Timestamp::from_unix_seconds(now),
        grant: None,
        failed_version: None,
        events: Vec::new(),
    }
}

/// Checks an instance reference, giving the app's canonical id and the group name.
fn check_ref(who: &InstanceRef) -> Result<(String, String)> {
    check_token("instance id", &who.instance)?;
    check_token("version", &who.version)?;
    let group = who.group_or_default().to_string();
    check_name("group", &group)?;
    Ok((canonical_app_id(&who.app)?, group))
}

#[async_trait]
impl UpdateChannel for StoreUpdateChannel {
    async fn create_app(&self, id: &str, name: &str) -> Result<UpdateApp> {
        let id = canonical_app_id(id)?;
        if name.is_empty() || name.len() > 128 {
            return Err(UpdateError::Invalid { field: "name", message: "give 1 to 128 characters".into() });
        }
        if let Some((app, _)) = self.get::<UpdateApp>(&app_key(&id)).await? {
            return Ok(app);
        }
        let now = Timestamp::now();
        let app = UpdateApp { id: id.clone(), name: name.into(), created: now };
        let mut txn = Txn::new().when(app_key(&id), 0).put(app_key(&id), encode(&app));
        for name in DEFAULT_GROUPS {
            let channel = Channel { name: name.into(), version: None, updated: now };
            let group = Group {
                name: name.into(),
                channel: name.into(),
                policy: RolloutPolicy::default(),
                paused: false,
                halted: None,
                window: RolloutWindow::default(),
            };
            txn = txn.put(channel_key(&id, name), encode(&channel)).put(group_key(&id, name), encode(&group));
        }
        let created = self.store.txn(txn).await?.succeeded;
        self.config.invalidate();
        if !created {
            // Created meanwhile by someone else: theirs stands.
            return Ok(self.must::<UpdateApp>(&app_key(&id), "application", &id).await?.0);
        }
        Ok(app)
    }

    async fn app(&self, id: &str) -> Result<Option<UpdateApp>> {
        let id = canonical_app_id(id)?;
        Ok(self.get(&app_key(&id)).await?.map(|(a, _)| a))
    }

    async fn apps(&self) -> Result<Vec<UpdateApp>> {
        Ok(list_json(&*self.store, "updates/apps/").await?)
    }

    async fn publish(&self, app: &str, channel: &str, package: Package) -> Result<Channel> {
        let app = self.known_app(app).await?;
        check_name("channel", channel)?;
        let package = package.validate()?;
        let key = package_key(&app, &package.version);
        match self.get::<Package>(&key).await? {
            Some((existing, _)) if !existing.same_file(&package) => {
                return Err(UpdateError::Conflict(format!(
                    "version {} is already published with another file (sha256 {}); versions are immutable, publish a new version",
                    package.version, existing.sha256
                )));
            }
            Some(_) => {}
            None => {
                // Two publishers of the same version: the first file wins.
                if !self.store.create(&key, encode(&package)).await? {
                    let (existing, _) = self.must::<Package>(&key, "package", &package.version).await?;
                    if !existing.same_file(&package) {
                        return Err(UpdateError::Conflict(format!(
                            "version {} was just published with another file",
                            package.version
                        )));
                    }
                }
            }
        }
        let channel = Channel { name: channel.into(), version: Some(package.version), updated: Timestamp::now() };
        self.store.put(&channel_key(&app, &channel.name), encode(&channel)).await?;
        self.config.invalidate();
        Ok(channel)
    }

    async fn promote(&self, app: &str, from: &str, to: &str) -> Result<Channel> {
        let app = self.known_app(app).await?;
        check_name("channel", to)?;
        let (source, _) = self.must::<Channel>(&channel_key(&app, from), "channel", from).await?;
        let Some(version) = source.version else {
            return Err(UpdateError::Conflict(format!(
                "channel {from} offers no package yet; publish one to it first"
            )));
        };
        let channel = Channel { name: to.into(), version: Some(version), updated: Timestamp::now() };
        self.store.put(&channel_key(&app, to), encode(&channel)).await?;
        self.config.invalidate();
        Ok(channel)
    }

    async fn channels(&self, app: &str) -> Result<Vec<Channel>> {
        let app = self.known_app(app).await?;
        Ok(list_json(&*self.store, &format!("updates/channels/{app}/")).await?)
    }

    async fn package(&self, app: &str, version: &str) -> Result<Option<Package>> {
        let app = canonical_app_id(app)?;
        check_token("version", version)?;
        Ok(self.get(&package_key(&app, version)).await?.map(|(p, _)| p))
    }

    async fn put_group(&self, app: &str, spec: GroupSpec) -> Result<Group> {
        let app = self.known_app(app).await?;
        check_name("group", &spec.name)?;
        check_name("channel", &spec.channel)?;
        spec.policy.validate()?;
        self.must::<Channel>(&channel_key(&app, &spec.channel), "channel", &spec.channel).await?;
        let key = group_key(&app, &spec.name);
        for _ in 0..MAX_ATTEMPTS {
            let (group, rev) = match self.get::<Group>(&key).await? {
                Some((mut g, rev)) => {
                    g.channel = spec.channel.clone();
                    g.policy = spec.policy;
                    (g, rev)
                }
                None => {
                    let g = Group {
                        name: spec.name.clone(),
                        channel: spec.channel.clone(),
                        policy: spec.policy,
                        paused: false,
                        halted: None,
                        window: RolloutWindow::default(),
                    };
                    (g, 0)
                }
            };
            if self.swap(&key, rev, &group).await? {
                self.config.invalidate();
                return Ok(group);
            }
        }
        Err(contended(&key))
    }

    async fn group(&self, app: &str, name: &str) -> Result<Option<Group>> {
        let app = canonical_app_id(app)?;
        check_name("group", name)?;
        Ok(self.get(&group_key(&app, name)).await?.map(|(g, _)| g))
    }

    async fn groups(&self, app: &str) -> Result<Vec<Group>> {
        let app = self.known_app(app).await?;
        Ok(list_json(&*self.store, &format!("updates/groups/{app}/")).await?)
    }

    async fn set_paused(&self, app: &str, group: &str, paused: bool) -> Result<Group> {
        let app = self.known_app(app).await?;
        check_name("group", group)?;
        let group = self
            .update(&group_key(&app, group), "group", group, |g: &mut Group| {
                g.paused = paused;
                if !paused {
                    g.halted = None;
                }
                Ok(())
            })
            .await;
        self.config.invalidate();
        group
    }

    async fn check(&self, who: &InstanceRef, wants_update: bool, now: u64) -> Result<CheckOutcome> {
        let (app, group_name) = check_ref(who)?;
        self.known_app(&app).await?;
        let (gkey, ikey) = (group_key(&app, &group_name), instance_key(&app, &who.instance));
        let mut fresh = false;
        // Held (no flush runs) while this check writes the record at once.
        let mut quiet = None;
        for _ in 0..MAX_ATTEMPTS {
            let group = self.cached::<Group>(&gkey, "group", &group_name).await?;
            let (grev, group) = (group.revision, &group.value);
            let channel = self.cached::<Channel>(&channel_key(&app, &group.channel), "channel", &group.channel).await?;
            let Found { record: mut instance, rev: irev, pending, read } =
                match self.instance(&ikey, fresh, quiet.is_some()).await? {
                    Some(found) => found,
                    None => Found { record: fresh_instance(who, &group_name, now), rev: 0, pending: None, read: true },
                };
            let grant_before = instance.grant.clone();
            instance.group.clone_from(&group_name);
            instance.last_check = Timestamp::from_unix_seconds(now);
            if instance.version != who.version {
                // It runs another version now: what it was offered is done (or undone).
                instance.version.clone_from(&who.version);
                if instance.grant.as_ref().is_some_and(|g| g.version == who.version) {
                    instance.status = InstanceStatus::Complete;
                }
                instance.grant = None;
            }
            let decision = if wants_update {
                policy::decide(group, channel.value.version.as_deref(), Some(&instance), &who.version, now)
            } else {
                Decision::NoUpdate(NoUpdate::NotAsked)
            };
            if matches!(decision, Decision::Update { .. }) && !read {
                // An offer is decided on the stored record (another server may have
                // recorded a failure of this instance since).
                fresh = true;
                continue;
            }
            // The group's new window, when this check uses a grant of it.
            let mut group_write = None;
            let outcome = match decision {
                Decision::Update { version, new_grant } => {
                    // Packages are immutable: a cached one is right.
                    let package = self.config.get::<Package>(&self.store, &package_key(&app, &version)).await?;
                    let Some(package) = package.map(|p| p.value.clone()) else {
                        return Err(UpdateError::NotFound {
                            kind: "package",
                            name: version,
                            hint: "; the channel points at a package that is gone: publish it again",
                        });
                    };
                    if new_grant {
                        let mut group = group.clone();
                        policy::count_grant(&mut group, now);
                        instance.grant = Some(Grant { version, at: now });
                        instance.status = InstanceStatus::Granted;
                        group_write = Some(encode(&group));
                    }
                    CheckOutcome::Update(package)
                }
                Decision::NoUpdate(why) => {
                    if why == NoUpdate::UpToDate && instance.status != InstanceStatus::Error {
                        instance.status = InstanceStatus::Complete;
                    }
                    CheckOutcome::NoUpdate(why)
                }
            };
            // Only grants (and error events) drive the rollout: a check-in that
            // changes none waits in memory for the next batch.
            if instance.grant == grant_before && CheckIns::can_buffer() {
                match self.checkins.buffer(&self.store, &ikey, instance, irev, pending.as_ref(), None) {
                    Buffered::Yes => return Ok(outcome),
                    Buffered::Raced => continue,
                }
            }
            if quiet.is_none() {
                // A write made at once takes the buffered check-in along: no flush may
                // write it meanwhile (it would be written twice). Decide again, held.
                quiet = Some(self.checkins.quiet().await);
                fresh = true;
                continue;
            }
            let mut txn = Txn::new().when(&ikey, irev);
            if let Some(group) = group_write {
                txn = txn.when(&gkey, grev).put(&gkey, group);
            }
            let written = self.store.txn(txn.put(&ikey, encode(&instance))).await?.succeeded;
            // The group's window changed, or the cached group was out of date.
            self.config.invalidate();
            if written {
                self.checkins.settled(&ikey, pending.as_ref());
                return Ok(outcome);
            }
            fresh = true;
        }
        Err(contended(&ikey))
    }

    async fn record_event(&self, who: &InstanceRef, event: InstanceEvent) -> Result<Instance> {
        let (app, group_name) = check_ref(who)?;
        self.known_app(&app).await?;
        let (gkey, ikey) = (group_key(&app, &group_name), instance_key(&app, &who.instance));
        let now = event.at.unix_seconds();
        // A failure is recorded on the stored record (it marks the offered version).
        let mut fresh = event.is_error();
        let mut quiet = None;
        for _ in 0..MAX_ATTEMPTS {
            let Found { record: mut instance, rev: irev, pending, .. } =
                match self.instance(&ikey, fresh, quiet.is_some()).await? {
                    Some(found) => found,
                    None => Found { record: fresh_instance(who, &group_name, now), rev: 0, pending: None, read: true },
                };
            if let Some(status) = event.status() {
                instance.status = status;
            }
            // The instance says what it runs; an offer of that version is done.
            instance.version.clone_from(&who.version);
            let offer_done = instance.grant.as_ref().is_some_and(|g| g.version == who.version);
            if offer_done {
                instance.grant = None;
            }
            // Only grants and failures drive the rollout: any other event waits in
            // memory for the next batch.
            if !event.is_error() && !offer_done && CheckIns::can_buffer() {
                instance.push_event(event.clone());
                let buffered = instance.clone();
                match self.checkins.buffer(&self.store, &ikey, buffered, irev, pending.as_ref(), Some(event.clone())) {
                    Buffered::Yes => return Ok(instance),
                    Buffered::Raced => continue,
                }
            }
            if quiet.is_none() {
                // Written at once with the buffered check-in: no flush meanwhile.
                quiet = Some(self.checkins.quiet().await);
                fresh = true;
                continue;
            }
            let mut txn = Txn::new().when(&ikey, irev);
            if event.is_error() {
                // The version it was offered failed: not offered to it again.
                if let Some(grant) = instance.grant.take() {
                    instance.failed_version = Some(grant.version);
                }
                if let Some(kv) = self.store.get(&gkey).await? {
                    let mut group: Group = decode(&kv)?;
                    if group.policy.safe_mode && group.halted.is_none() {
                        group.halted = Some(format!(
                            "instance {} reported error {} (event {}) at {}",
                            who.instance,
                            event.error_code.unwrap_or_default(),
                            event.event_type,
                            event.at
                        ));
                        txn = txn.when(&gkey, kv.mod_revision).put(&gkey, encode(&group));
                    }
                }
            }
            instance.push_event(event.clone());
            let written = self.store.txn(txn.put(&ikey, encode(&instance))).await?.succeeded;
            if event.is_error() {
                self.config.invalidate(); // the group may be halted now
            }
            if written {
                self.checkins.settled(&ikey, pending.as_ref());
                return Ok(instance);
            }
            fresh = true;
        }
        Err(contended(&ikey))
    }

    async fn instances(&self, app: &str, group: Option<&str>) -> Result<Vec<Instance>> {
        let app = self.known_app(app).await?;
        let prefix = format!("updates/instances/{app}/");
        // No flush between the listing and the buffered check-ins (or it could list
        // records that hold them already).
        let _quiet = self.checkins.quiet().await;
        let mut all: std::collections::BTreeMap<String, Instance> =
            list_json::<Instance>(&*self.store, &prefix).await?.into_iter().map(|i| (i.id.clone(), i)).collect();
        for (_, checkin) in self.checkins.under(&prefix) {
            match all.get_mut(&checkin.record().id) {
                Some(instance) => checkin.apply(instance),
                None => {
                    all.insert(checkin.record().id.clone(), Instance::clone(checkin.record()));
                }
            }
        }
        Ok(all.into_values().filter(|i| group.is_none_or(|g| i.group == g)).collect())
    }

    async fn flush(&self) -> Result<()> {
        self.checkins.flush(&*self.store).await
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests;
