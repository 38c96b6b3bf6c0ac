//! Domains routed to apps; a domain belongs to at most one app.

use super::{Controller, ControllerError, ResourceKind, Result};
use crate::model::{AppName, Domain, User, validate};
use crate::store::Txn;
use crate::store::records::{self, app_key, cert_domain_key, domain_key};

impl Controller {
    /// The app's domains (its id first among them as the default), sorted by name.
    pub async fn domains(&self, user: &User, app: &AppName) -> Result<Vec<Domain>> {
        self.app_for(user, app).await?;
        let all: Vec<Domain> = records::list_json(&*self.store, "domains/").await?;
        Ok(all.into_iter().filter(|d| d.app == *app).collect())
    }

    /// Adds a domain; 400 if it is invalid or not the app's to take (see
    /// [`check_domain_claim`]), [`ControllerError::DomainTaken`] if another app holds it.
    pub async fn add_domain(&self, user: &User, app: &AppName, domain: &str) -> Result<Domain> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        validate::domain(&domain)?;
        let (_, _) = self.app_for(user, app).await?;
        check_domain_claim(&domain, app, user.is_superuser, &self.settings.domain)?;
        let _guard = self.lock_app(app).await;
        let (_, rev) = self.app_for(user, app).await?;
        let now = crate::time::Timestamp::now();
        let record = Domain {
            owner: user.username.clone(),
            created: now,
            updated: now,
            app: app.clone(),
            domain: domain.clone(),
        };
        let key = domain_key(&domain);
        let txn = Txn::new().when(&key, 0).when(app_key(app), rev).put(&key, records::encode(&record));
        if self.commit(txn).await? {
            tracing::info!(app = %app, domain, "domain added");
            self.log_event(app, format!("Domain {domain} added by {}", user.username)).await;
            return Ok(record);
        }
        match records::get_json::<Domain>(&*self.store, &key).await? {
            Some((existing, _)) if existing.app == *app => Err(ControllerError::validation(
                "domain",
                format!("Domain {domain} is already added to this application"),
            )),
            Some(_) => Err(ControllerError::DomainTaken { domain }),
            None => Err(ControllerError::Concurrent { kind: ResourceKind::App }),
        }
    }

    /// Removes a domain of the app; [`ControllerError::NotFound`] if the app does not have it.
    pub async fn remove_domain(&self, user: &User, app: &AppName, domain: &str) -> Result<()> {
        self.app_for(user, app).await?;
        let _guard = self.lock_app(app).await;
        let key = domain_key(&domain.to_ascii_lowercase());
        match records::get_json::<Domain>(&*self.store, &key).await? {
            Some((d, rev)) if d.app == *app => {
                // Its certificate attachment goes with it.
                let txn = Txn::new().when(&key, rev).delete(&key).delete(cert_domain_key(&d.domain));
                if self.commit(txn).await? {
                    tracing::info!(app = %app, domain = %d.domain, "domain removed");
                    self.log_event(app, format!("Domain {} removed by {}", d.domain, user.username)).await;
                    Ok(())
                } else {
                    Err(ControllerError::Concurrent { kind: ResourceKind::Domain })
                }
            }
            _ => Err(ControllerError::not_found(ResourceKind::Domain, domain)),
        }
    }
}

/// Whether `app` may claim `domain` (already valid and lower-case), beyond it being free:
///
/// - IP literals and bare single labels (`localhost`, `shop`) are no one's: the router
///   answers for them on every app's behalf, or they name hosts, not sites;
/// - a name under the platform domain (`shop.<domain>`, `x.shop.<domain>`) belongs to
///   the app of that name, even while it does not exist, so nobody waits for an app to
///   go and takes its traffic; the platform host (`deis.<domain>`) and the platform
///   domain itself are nobody's;
/// - wildcards (`*.example.com`) only for admins: one takes every name below it.
pub fn check_domain_claim(domain: &str, app: &AppName, admin: bool, platform: &str) -> Result<()> {
    let refuse = |why: String| Err(ControllerError::validation("domain", why));
    let bare = domain.strip_prefix("*.").unwrap_or(domain);
    if bare.parse::<std::net::IpAddr>().is_ok() || bare.split('.').all(|l| l.bytes().all(|c| c.is_ascii_digit())) {
        return refuse(format!("{domain} is an IP address; add a host name that points to the router instead"));
    }
    if !bare.contains('.') {
        return refuse(format!("{domain} is a single label; add a fully qualified name such as www.example.com"));
    }
    if domain.starts_with("*.") && !admin {
        return refuse(format!("{domain} is a wildcard; only an admin may add one"));
    }
    let platform = platform.trim_end_matches('.');
    if domain == platform || bare == platform {
        return refuse(format!("{domain} is the platform's own domain"));
    }
    if let Some(below) = domain.strip_suffix(platform).and_then(|d| d.strip_suffix('.')) {
        let owner = below.rsplit('.').next().unwrap_or(below);
        if owner != app.as_str() {
            return refuse(format!(
                "{domain} is under the platform domain {platform}: names there belong to the app named {owner}"
            ));
        }
    }
    // `*.test`-style names under no platform domain but above it: a wildcard over the
    // platform domain would take every app's name.
    if let Some(suffix) = domain.strip_prefix("*.")
        && (platform == suffix || platform.ends_with(&format!(".{suffix}")))
    {
        return refuse(format!("{domain} covers the platform domain {platform}"));
    }
    Ok(())
}
