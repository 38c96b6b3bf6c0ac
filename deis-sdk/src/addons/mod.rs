//! Add-ons: service instances from brokers, provisioned for apps, with their
//! credentials in the apps' config (`deis addons:create postgresql:shared`).
//!
//! [`Addons`] keeps a registry of brokers (embedded ones handed in by the platform,
//! the user-provided one always, and third-party ones an admin registers by URL), the
//! add-on records ([`records`]), and drives each broker with an [`OsbDriver`]:
//! provision (polling as long as the plan allows), bind for the app, then a new release
//! whose config has the URL under `DATABASE_URL`, `REDIS_URL`, `<SERVICE>_URL` or, with
//! an alias, `<ALIAS>_URL`. Detach removes the variable (a new release) and unbinds, so
//! the old credentials stop working; destroy deprovisions. Release summaries name the
//! variables only, never their values.
//!
//! Provisioning runs in the background (`addons:wait` waits for it) and resumes after a
//! controller restart ([`Addons::resume`]).

pub mod records;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deis_core::broker::{
    BindRequest, BindResource, BrokerError, Catalog, DeleteRequest, ManagedBroker, Object, OriginatingIdentity,
    ProvisionRequest, RequestContext, ServiceBroker, UserProvided,
};
use deis_core::controller::{Controller, ControllerError};
use deis_core::store::Store;
use deis_core::store::records::{encode, get_json, list_json, user_key};
use deis_core::time::Timestamp;
use deis_core::{AppName, ConfigPatch, User};
use serde::Serialize;

use crate::osb::{BasicAuth, OsbClient, OsbDriver, PollPolicy};
use records::{ADDONS_PREFIX, BROKERS_PREFIX, addon_key, broker_key};
pub use records::{Addon, AddonState, Attachment, BrokerRegistration, BrokerView};

/// The name of the embedded user-provided broker.
pub const USER_PROVIDED_BROKER: &str = "user-provided";
/// The longest add-on or broker name.
pub const MAX_NAME_CHARS: usize = 63;

/// Why an add-on request failed.
#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    /// The controller refused (no such app, not allowed, config refused, store).
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The broker refused or failed.
    #[error("broker {broker}: {source}")]
    Broker {
        /// Which broker.
        broker: String,
        /// What it said.
        #[source]
        source: BrokerError,
    },
    /// The request is invalid; the message says how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// No such add-on, broker, service or attachment.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is in use.
    #[error("{0}")]
    Conflict(String),
    /// Only an admin may do this.
    #[error("You do not have permission to perform this action.")]
    Forbidden,
}

impl From<deis_core::StoreError> for AddonError {
    fn from(e: deis_core::StoreError) -> Self {
        Self::Controller(e.into())
    }
}

/// Result of add-on operations.
pub type Result<T, E = AddonError> = std::result::Result<T, E>;

/// One service of the merged catalog (`deis services`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ServiceListing {
    /// The broker offering it.
    pub broker: String,
    /// The service name.
    pub service: String,
    /// What it is.
    pub description: String,
    /// Its plans: name and description.
    pub plans: Vec<(String, String)>,
}

/// What `addons:create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewAddon {
    /// `SERVICE:PLAN` (`postgresql:shared`); a service alone takes its first plan.
    pub service_plan: String,
    /// `--as NAME`: the add-on's name, and `<NAME>_URL` as the variable.
    pub alias: Option<String>,
    /// `-p key=value` provision parameters.
    pub parameters: Object,
}

/// The add-on logic over a [`Controller`].
#[derive(Debug)]
pub struct Addons {
    controller: Arc<Controller>,
    embedded: BTreeMap<String, Arc<dyn ServiceBroker>>,
    policy: PollPolicy,
}

/// The default variable of a service's URL.
pub fn default_var(service: &str) -> String {
    match service {
        "postgresql" | "postgres" => "DATABASE_URL".into(),
        "redis" => "REDIS_URL".into(),
        other => alias_var(other),
    }
}

/// `<ALIAS>_URL`, upper-cased, with `-` and `.` as `_`.
pub fn alias_var(alias: &str) -> String {
    format!("{}_URL", alias.to_ascii_uppercase().replace(['-', '.'], "_"))
}

/// Checks an add-on or broker name: lowercase letters, digits and dashes, starting
/// with a letter, at most [`MAX_NAME_CHARS`].
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AddonError::Invalid(format!(
            "{what} {name:?} is invalid: use lowercase letters, digits and dashes, starting with a letter, at most {MAX_NAME_CHARS} characters"
        )))
    }
}

/// The URL an app gets from a binding's credentials (`uri`, `url` or `database_url`).
fn credential_url(credentials: &Object) -> Option<String> {
    ["uri", "url", "database_url"].iter().find_map(|k| credentials.get(*k)?.as_str().map(str::to_string))
}

fn ctx(user: &str) -> RequestContext {
    RequestContext::on_behalf_of(OriginatingIdentity::deis_user(user))
}

impl Addons {
    /// Add-ons over `controller` (and its store), with the embedded `brokers` (by name)
    /// besides the user-provided one. Call [`resume`](Self::resume) once at start.
    pub async fn new(
        controller: Arc<Controller>,
        brokers: BTreeMap<String, Arc<dyn ServiceBroker>>,
    ) -> Result<Arc<Self>> {
        let mut embedded = brokers;
        if !embedded.contains_key(USER_PROVIDED_BROKER) {
            let store = controller.store().clone();
            let user_provided = ManagedBroker::start(store, "broker-state/user-provided/", Arc::new(UserProvided))
                .await
                .map_err(|source| AddonError::Broker { broker: USER_PROVIDED_BROKER.into(), source })?;
            embedded.insert(USER_PROVIDED_BROKER.into(), Arc::new(user_provided));
        }
        Ok(Arc::new(Self { controller, embedded, policy: PollPolicy::default() }))
    }

    /// Sets how brokers are polled.
    pub fn with_policy(self: Arc<Self>, policy: PollPolicy) -> Arc<Self> {
        Arc::new(Self { controller: self.controller.clone(), embedded: self.embedded.clone(), policy })
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.controller.store()
    }

    /// Continues the provisioning of add-ons a restart interrupted.
    pub async fn resume(self: &Arc<Self>) -> Result<()> {
        for addon in list_json::<Addon>(&**self.store(), ADDONS_PREFIX).await? {
            if addon.state == AddonState::Provisioning {
                let Some((owner, _)) = get_json::<User>(&**self.store(), &user_key(&addon.owner)).await? else {
                    continue;
                };
                tokio::spawn(self.clone().finish(addon.name.clone(), owner));
            }
        }
        Ok(())
    }

    // ---- brokers ----

    async fn broker(&self, name: &str) -> Result<Arc<dyn ServiceBroker>> {
        if let Some(b) = self.embedded.get(name) {
            return Ok(b.clone());
        }
        let (reg, _) = get_json::<BrokerRegistration>(&**self.store(), &broker_key(name))
            .await?
            .ok_or_else(|| AddonError::NotFound(format!("no broker {name:?}: see deis brokers")))?;
        let client = OsbClient::new(&reg.url, Some(BasicAuth::new(reg.username, reg.password)))
            .map_err(|source| AddonError::Broker { broker: name.into(), source })?;
        Ok(Arc::new(client))
    }

    async fn brokers(&self) -> Result<Vec<(String, Arc<dyn ServiceBroker>)>> {
        let mut all: Vec<(String, Arc<dyn ServiceBroker>)> =
            self.embedded.iter().map(|(n, b)| (n.clone(), b.clone())).collect();
        for reg in list_json::<BrokerRegistration>(&**self.store(), BROKERS_PREFIX).await? {
            all.push((reg.name.clone(), self.broker(&reg.name).await?));
        }
        Ok(all)
    }

    fn admin(user: &User) -> Result<()> {
        if user.is_superuser { Ok(()) } else { Err(AddonError::Forbidden) }
    }

    /// Registers a third-party broker (admin only); its catalog is fetched first, so a
    /// broker that can't be reached or refuses the credentials is not registered.
    pub async fn add_broker(
        &self,
        user: &User,
        name: &str,
        url: &str,
        username: &str,
        password: &str,
    ) -> Result<BrokerView> {
        Self::admin(user)?;
        check_name("broker name", name)?;
        if self.embedded.contains_key(name) {
            return Err(AddonError::Conflict(format!("broker {name} exists (embedded)")));
        }
        let client = OsbClient::new(url, Some(BasicAuth::new(username, password)))
            .map_err(|e| AddonError::Invalid(e.to_string()))?
            .with_timeout(Duration::from_secs(15));
        client
            .catalog(&ctx(&user.username))
            .await
            .map_err(|source| AddonError::Broker { broker: name.into(), source })?;
        let reg = BrokerRegistration {
            name: name.into(),
            url: client.url().into(),
            username: username.into(),
            password: password.into(),
            owner: user.username.clone(),
            created: Timestamp::now(),
        };
        if !self.store().create(&broker_key(name), encode(&reg)).await? {
            return Err(AddonError::Conflict(format!("broker {name} exists: remove it first")));
        }
        Ok(BrokerView { name: reg.name, url: reg.url, username: Some(reg.username) })
    }

    /// The brokers (admin only).
    pub async fn list_brokers(&self, user: &User) -> Result<Vec<BrokerView>> {
        Self::admin(user)?;
        let mut views: Vec<BrokerView> = self
            .embedded
            .keys()
            .map(|n| BrokerView { name: n.clone(), url: "embedded".into(), username: None })
            .collect();
        for reg in list_json::<BrokerRegistration>(&**self.store(), BROKERS_PREFIX).await? {
            views.push(BrokerView { name: reg.name, url: reg.url, username: Some(reg.username) });
        }
        Ok(views)
    }

    /// Removes a registered broker (admin only); refused while add-ons use it.
    pub async fn remove_broker(&self, user: &User, name: &str) -> Result<()> {
        Self::admin(user)?;
        if self.embedded.contains_key(name) {
            return Err(AddonError::Invalid(format!("broker {name} is embedded in the controller")));
        }
        let used: Vec<String> = list_json::<Addon>(&**self.store(), ADDONS_PREFIX)
            .await?
            .into_iter()
            .filter(|a| a.broker == name)
            .map(|a| a.name)
            .collect();
        if !used.is_empty() {
            return Err(AddonError::Conflict(format!(
                "add-ons use broker {name}: {}; destroy them first",
                used.join(", ")
            )));
        }
        if !self.store().delete(&broker_key(name)).await? {
            return Err(AddonError::NotFound(format!("no broker {name:?}")));
        }
        Ok(())
    }

    /// The merged catalog of every broker (a broker that can't be reached is left out,
    /// and logged).
    pub async fn services(&self, user: &User) -> Result<Vec<ServiceListing>> {
        let mut listings = Vec::new();
        for (name, broker) in self.brokers().await? {
            match broker.catalog(&ctx(&user.username)).await {
                Ok(catalog) => listings.extend(catalog.services.into_iter().map(|s| ServiceListing {
                    broker: name.clone(),
                    service: s.name,
                    description: s.description,
                    plans: s.plans.into_iter().map(|p| (p.name, p.description)).collect(),
                })),
                Err(e) => tracing::warn!(broker = %name, error = %e, "broker catalog unavailable"),
            }
        }
        Ok(listings)
    }

    /// The broker offering `service` and its catalog.
    async fn find_service(&self, user: &User, service: &str) -> Result<(String, Arc<dyn ServiceBroker>, Catalog)> {
        for (name, broker) in self.brokers().await? {
            if let Ok(catalog) = broker.catalog(&ctx(&user.username)).await
                && catalog.services.iter().any(|s| s.name == service)
            {
                return Ok((name, broker, catalog));
            }
        }
        Err(AddonError::NotFound(format!("no broker offers service {service:?}: see deis services")))
    }

    // ---- add-ons ----

    async fn load(&self, name: &str) -> Result<(Addon, u64)> {
        get_json::<Addon>(&**self.store(), &addon_key(name))
            .await?
            .ok_or_else(|| AddonError::NotFound(format!("no add-on {name:?}: see deis addons:list")))
    }

    /// Changes an add-on record (compare-and-swap, retried).
    async fn modify(&self, name: &str, change: impl Fn(&mut Addon)) -> Result<Addon> {
        for _ in 0..16 {
            let (mut addon, rev) = self.load(name).await?;
            change(&mut addon);
            addon.updated = Timestamp::now();
            if self.store().compare_and_swap(&addon_key(name), rev, encode(&addon)).await? {
                return Ok(addon);
            }
        }
        Err(AddonError::Conflict(format!("add-on {name} keeps changing; try again")))
    }

    /// An add-on `user` may see: they may use its app or an app it is attached to.
    async fn visible(&self, user: &User, name: &str) -> Result<Addon> {
        let (addon, _) = self.load(name).await?;
        let apps = std::iter::once(&addon.app).chain(addon.attachments.iter().map(|a| &a.app));
        for app in apps {
            if self.controller.app(user, app).await.is_ok() {
                return Ok(addon);
            }
        }
        Err(AddonError::Controller(ControllerError::Forbidden))
    }

    /// Creates an add-on for `app` (owner, collaborator or admin): the record now,
    /// provisioning and binding in the background (see [`wait`](Self::wait)).
    pub async fn create(self: &Arc<Self>, user: &User, app: &AppName, new: NewAddon) -> Result<Addon> {
        self.controller.app(user, app).await?;
        let (service, plan) = match new.service_plan.split_once(':') {
            Some((s, p)) => (s.to_string(), Some(p.to_string())),
            None => (new.service_plan.clone(), None),
        };
        if service.is_empty() {
            return Err(AddonError::Invalid("name a service as SERVICE:PLAN (see deis services)".into()));
        }
        if let Some(alias) = &new.alias {
            check_name("add-on name", alias)?;
        }
        let (broker, _, catalog) = self.find_service(user, &service).await?;
        let offering = catalog.services.iter().find(|s| s.name == service).expect("found above");
        let chosen = match &plan {
            Some(p) => offering.plans.iter().find(|x| &x.name == p),
            None => offering.plans.first(),
        };
        let Some(chosen) = chosen else {
            let names: Vec<&str> = offering.plans.iter().map(|p| p.name.as_str()).collect();
            return Err(AddonError::Invalid(format!(
                "service {service} has no plan {:?}: choose one of {}",
                plan.unwrap_or_default(),
                names.join(", ")
            )));
        };
        let var = new.alias.as_deref().map_or_else(|| default_var(&service), alias_var);
        let config = self.controller.config(user, app).await?;
        if config.values.contains_key(&var) {
            return Err(AddonError::Conflict(format!(
                "{app} has {var} set already: unset it, or create the add-on with --as NAME for NAME_URL"
            )));
        }
        let name = match &new.alias {
            Some(alias) => alias.clone(),
            None => format!("{service}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        check_name("add-on name", &name)?;
        let now = Timestamp::now();
        let addon = Addon {
            name: name.clone(),
            broker,
            service,
            plan: chosen.name.clone(),
            service_id: offering.id.clone(),
            plan_id: chosen.id.clone(),
            instance_id: uuid::Uuid::new_v4().to_string(),
            app: app.clone(),
            var,
            owner: user.username.clone(),
            state: AddonState::Provisioning,
            message: None,
            attachments: Vec::new(),
            max_polling_secs: chosen.maximum_polling_duration,
            parameters: (!new.parameters.is_empty()).then_some(new.parameters),
            created: now,
            updated: now,
        };
        if !self.store().create(&addon_key(&name), encode(&addon)).await? {
            return Err(AddonError::Conflict(format!("an add-on named {name} exists: choose another with --as")));
        }
        tokio::spawn(self.clone().finish(name, user.clone()));
        Ok(addon)
    }

    fn driver(&self, broker: Arc<dyn ServiceBroker>) -> OsbDriver {
        OsbDriver::new(broker).with_policy(self.policy)
    }

    /// Provisions, binds and configures; records the outcome.
    async fn finish(self: Arc<Self>, name: String, user: User) {
        let outcome = async {
            let (addon, _) = self.load(&name).await?;
            let broker = self.broker(&addon.broker).await?;
            let max = addon.max_polling_secs.map(Duration::from_secs);
            let request = ProvisionRequest {
                service_id: addon.service_id.clone(),
                plan_id: addon.plan_id.clone(),
                context: Some(serde_json::json!({ "platform": "deis", "app": addon.app, "addon": addon.name })),
                organization_guid: "deis".into(),
                space_guid: addon.app.to_string(),
                parameters: addon.parameters.clone(),
                maintenance_info: None,
            };
            self.driver(broker)
                .provision(&ctx(&user.username), &addon.instance_id, request, max)
                .await
                .map_err(|source| AddonError::Broker { broker: addon.broker.clone(), source })?;
            self.attach_binding(&user, &addon, &addon.app, &addon.var).await
        }
        .await;
        let result = self
            .modify(&name, |a| match &outcome {
                Ok(attachment) => {
                    a.state = AddonState::Ready;
                    a.attachments.push(attachment.clone());
                }
                Err(e) => {
                    a.state = AddonState::Failed;
                    a.message = Some(e.to_string());
                }
            })
            .await;
        if let Err(e) = outcome {
            tracing::warn!(addon = %name, error = %e, "add-on provisioning failed");
        }
        if let Err(e) = result {
            tracing::error!(addon = %name, error = %e, "recording the add-on's state failed");
        }
    }

    /// Binds the add-on for `app` and sets `var` in its config (a new release).
    async fn attach_binding(&self, user: &User, addon: &Addon, app: &AppName, var: &str) -> Result<Attachment> {
        let broker = self.broker(&addon.broker).await?;
        let driver = self.driver(broker);
        let binding_id = uuid::Uuid::new_v4().to_string();
        let request = BindRequest {
            service_id: addon.service_id.clone(),
            plan_id: addon.plan_id.clone(),
            context: Some(serde_json::json!({ "platform": "deis", "app": app })),
            bind_resource: Some(BindResource { app_guid: Some(app.to_string()), route: None }),
            ..BindRequest::default()
        };
        let max = addon.max_polling_secs.map(Duration::from_secs);
        let broker_error = |source| AddonError::Broker { broker: addon.broker.clone(), source };
        let binding = driver
            .bind(&ctx(&user.username), &addon.instance_id, &binding_id, request, max)
            .await
            .map_err(broker_error)?;
        let delete = DeleteRequest { service_id: addon.service_id.clone(), plan_id: addon.plan_id.clone() };
        let Some(url) = binding.credentials.as_ref().and_then(credential_url) else {
            let _ = driver.unbind(&ctx(&user.username), &addon.instance_id, &binding_id, delete, max).await;
            return Err(AddonError::Broker {
                broker: addon.broker.clone(),
                source: BrokerError::Backend("the binding's credentials have no uri or url".into()),
            });
        };
        let patch = ConfigPatch {
            values: Some(BTreeMap::from([(var.to_string(), Some(serde_json::Value::String(url)))])),
            ..ConfigPatch::default()
        };
        if let Err(e) = self.controller.set_config(user, app, &patch).await {
            let _ = driver.unbind(&ctx(&user.username), &addon.instance_id, &binding_id, delete, max).await;
            return Err(e.into());
        }
        Ok(Attachment { app: app.clone(), var: var.to_string(), binding_id })
    }

    /// Waits until the add-on is no longer provisioning (at most `timeout`).
    pub async fn wait(&self, user: &User, name: &str, timeout: Duration) -> Result<Addon> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let addon = self.visible(user, name).await?;
            if addon.state != AddonState::Provisioning || tokio::time::Instant::now() >= deadline {
                return Ok(addon);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The add-ons of `app`: created for it or attached to it.
    pub async fn list(&self, user: &User, app: &AppName) -> Result<Vec<Addon>> {
        self.controller.app(user, app).await?;
        Ok(list_json::<Addon>(&**self.store(), ADDONS_PREFIX)
            .await?
            .into_iter()
            .filter(|a| &a.app == app || a.attachment(app).is_some())
            .collect())
    }

    /// One add-on.
    pub async fn info(&self, user: &User, name: &str) -> Result<Addon> {
        self.visible(user, name).await
    }

    /// Attaches a ready add-on to another app (the user may use both apps): a binding of
    /// its own and the variable in its config.
    pub async fn attach(&self, user: &User, name: &str, app: &AppName, alias: Option<&str>) -> Result<Addon> {
        let (addon, _) = self.load(name).await?;
        self.controller.app(user, &addon.app).await?;
        self.controller.app(user, app).await?;
        if addon.state != AddonState::Ready {
            return Err(AddonError::Conflict(format!("add-on {name} is not ready: see deis addons:wait {name}")));
        }
        if addon.attachment(app).is_some() {
            return Err(AddonError::Conflict(format!("add-on {name} is attached to {app} already")));
        }
        if let Some(alias) = alias {
            check_name("attachment name", alias)?;
        }
        let var = alias.map_or_else(|| default_var(&addon.service), alias_var);
        if self.controller.config(user, app).await?.values.contains_key(&var) {
            return Err(AddonError::Conflict(format!(
                "{app} has {var} set already: attach with --as NAME for NAME_URL"
            )));
        }
        let attachment = self.attach_binding(user, &addon, app, &var).await?;
        self.modify(name, |a| a.attachments.push(attachment.clone())).await
    }

    /// Detaches an add-on from an app: the variable goes (a new release), then the
    /// binding, so the app's credentials stop working.
    pub async fn detach(&self, user: &User, name: &str, app: &AppName) -> Result<Addon> {
        let (addon, _) = self.load(name).await?;
        self.controller.app(user, app).await?;
        let attachment = addon
            .attachment(app)
            .cloned()
            .ok_or_else(|| AddonError::NotFound(format!("add-on {name} is not attached to {app}")))?;
        self.detach_attachment(user, &addon, &attachment).await?;
        self.modify(name, |a| a.attachments.retain(|x| x.app != attachment.app)).await
    }

    async fn detach_attachment(&self, user: &User, addon: &Addon, attachment: &Attachment) -> Result<()> {
        let patch =
            ConfigPatch { values: Some(BTreeMap::from([(attachment.var.clone(), None)])), ..ConfigPatch::default() };
        match self.controller.set_config(user, &attachment.app, &patch).await {
            Ok(_) | Err(ControllerError::NotSet { .. } | ControllerError::NothingChanged { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let delete = DeleteRequest { service_id: addon.service_id.clone(), plan_id: addon.plan_id.clone() };
        let max = addon.max_polling_secs.map(Duration::from_secs);
        self.driver(self.broker(&addon.broker).await?)
            .unbind(&ctx(&user.username), &addon.instance_id, &attachment.binding_id, delete, max)
            .await
            .map_err(|source| AddonError::Broker { broker: addon.broker.clone(), source })
    }

    /// Destroys an add-on (a user who may use its app): detaches it from its app,
    /// deprovisions it, forgets it. Refused while other apps are attached.
    pub async fn destroy(&self, user: &User, name: &str) -> Result<()> {
        let (addon, _) = self.load(name).await?;
        self.controller.app(user, &addon.app).await?;
        let others: Vec<String> =
            addon.attachments.iter().filter(|a| a.app != addon.app).map(|a| a.app.to_string()).collect();
        if !others.is_empty() {
            return Err(AddonError::Conflict(format!(
                "add-on {name} is attached to {}: detach it there first (deis addons:detach {name} -a APP)",
                others.join(", ")
            )));
        }
        if addon.state == AddonState::Provisioning {
            return Err(AddonError::Conflict(format!("add-on {name} is still provisioning: deis addons:wait {name}")));
        }
        for attachment in &addon.attachments {
            self.detach_attachment(user, &addon, attachment).await?;
        }
        let delete = DeleteRequest { service_id: addon.service_id.clone(), plan_id: addon.plan_id.clone() };
        let max = addon.max_polling_secs.map(Duration::from_secs);
        self.driver(self.broker(&addon.broker).await?)
            .deprovision(&ctx(&user.username), &addon.instance_id, delete, max)
            .await
            .map_err(|source| AddonError::Broker { broker: addon.broker.clone(), source })?;
        self.store().delete(&addon_key(name)).await?;
        Ok(())
    }
}
