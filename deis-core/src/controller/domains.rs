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

    /// Adds a domain; 400 if it is invalid or already used by any app.
    pub async fn add_domain(&self, user: &User, app: &AppName, domain: &str) -> Result<Domain> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        validate::domain(&domain)?;
        let (_, _) = self.app_for(user, app).await?;
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
            Some(_) => Err(ControllerError::validation("domain", "Domain is already in use by another application")),
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
