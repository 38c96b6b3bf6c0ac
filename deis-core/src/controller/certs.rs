//! TLS certificates (§3.8): owned by the user who added them (admins see and change
//! all), attached to domains of apps their owner may use.

use std::collections::BTreeMap;

use super::{Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result};
use crate::model::{CertAttachment, Certificate, CertificateInfo, CertificateView, Domain, User};
use crate::model::{cert_input_sizes, cert_name};
use crate::store::records::{self, CERT_DOMAINS_PREFIX, CERTS_PREFIX, cert_domain_key, cert_key, domain_key};
use crate::store::{KeyValue, Txn};
use crate::time::Timestamp;

/// Most certificates one user may add.
pub const MAX_CERTS_PER_USER: usize = 100;

/// A certificate to add: the PEM texts and what the caller extracted from them.
///
/// `info` must come from parsing `certificate` after checking that `key` is its key
/// (`deis_sdk::certs::inspect` does both); the controller checks names and sizes
/// only.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    /// Name to add it under.
    pub name: String,
    /// The PEM chain, leaf first.
    pub certificate: String,
    /// The PEM private key of the leaf.
    pub key: String,
    /// The leaf's fields.
    pub info: CertificateInfo,
}

impl Controller {
    /// The caller's certificates (every certificate for admins), sorted by name.
    pub async fn list_certs(&self, caller: &User) -> Result<Vec<CertificateView>> {
        let attached = self.attachments().await?;
        let mut out = Vec::new();
        for kv in self.store.list(CERTS_PREFIX).await?.kvs {
            let cert: Certificate = records::decode(&kv)?;
            if caller.is_superuser || cert.owner == caller.username {
                out.push(cert.view(kv.create_revision, domains_of(&attached, &cert.name)));
            }
        }
        Ok(out)
    }

    /// One certificate: not found if there is none, forbidden unless the caller owns
    /// it or is an admin.
    pub async fn cert(&self, caller: &User, name: &str) -> Result<CertificateView> {
        let (cert, kv) = self.cert_for(caller, name).await?;
        Ok(cert.view(kv.create_revision, domains_of(&self.attachments().await?, name)))
    }

    /// Adds a certificate for the caller. Expired certificates are accepted (shown as
    /// such): a renewal may be prepared ahead of time, and replacing one is how a
    /// lapsed certificate gets fixed.
    pub async fn add_cert(&self, caller: &User, new: NewCertificate) -> Result<CertificateView> {
        cert_name(&new.name)?;
        cert_input_sizes(&new.certificate, &new.key)?;
        let key = cert_key(&new.name);
        let owned = self
            .store
            .list(CERTS_PREFIX)
            .await?
            .kvs
            .iter()
            .filter(|kv| records::decode::<Certificate>(kv).is_ok_and(|c| c.owner == caller.username))
            .count();
        if owned >= MAX_CERTS_PER_USER {
            return Err(ControllerError::validation(
                "name",
                format!(
                    "a user may add at most {MAX_CERTS_PER_USER} certificates; remove one with `deis certs:remove`"
                ),
            ));
        }
        let now = Timestamp::now();
        let cert = Certificate {
            name: new.name.clone(),
            owner: caller.username.clone(),
            certificate: new.certificate,
            key: new.key,
            info: new.info,
            created: now,
            updated: now,
        };
        if !self.commit(Txn::new().when(&key, 0).put(&key, records::encode(&cert))).await? {
            return Err(ControllerError::validation("name", "Certificate with this name already exists."));
        }
        tracing::info!(user = %caller.username, cert = %cert.name, names = ?cert.info.san, "certificate added");
        let id = self.store.get(&key).await?.map_or(0, |kv| kv.create_revision);
        Ok(cert.view(id, Vec::new()))
    }

    /// Removes a certificate and its attachments (the domains fall back to the
    /// platform certificate).
    pub async fn remove_cert(&self, caller: &User, name: &str) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            let (_, kv) = self.cert_for(caller, name).await?;
            let mut txn = Txn::new().when(&kv.key, kv.mod_revision).delete(&kv.key);
            for (domain, (attachment, rev)) in self.attachments().await? {
                if attachment.cert == name {
                    let k = cert_domain_key(&domain);
                    txn = txn.when(&k, rev).delete(k);
                }
            }
            if self.commit(txn).await? {
                tracing::info!(user = %caller.username, cert = name, "certificate removed");
                return Ok(());
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::Certificate })
    }

    /// Attaches a certificate to a domain: the caller must own the certificate (or be
    /// an admin) and may use the domain's app; the certificate's names must cover the
    /// domain. A domain has at most one certificate.
    pub async fn attach_cert(&self, caller: &User, name: &str, domain: &str) -> Result<()> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        for _ in 0..MAX_ATTEMPTS {
            let (cert, cert_kv) = self.cert_for(caller, name).await?;
            let Some((record, domain_rev)) = records::get_json::<Domain>(&*self.store, &domain_key(&domain)).await?
            else {
                return Err(ControllerError::not_found(ResourceKind::Domain, &domain));
            };
            self.app_for(caller, &record.app).await?;
            if !cert.info.covers(&domain) {
                return Err(ControllerError::validation(
                    "domain",
                    format!(
                        "Certificate {name} is not valid for {domain} (it is for {}); add one whose names cover it",
                        cert.info.names().join(", ")
                    ),
                ));
            }
            let attach_key = cert_domain_key(&domain);
            let existing = records::get_json::<CertAttachment>(&*self.store, &attach_key).await?;
            let attach_rev = match existing {
                Some((a, _)) if a.cert == name && a.app == record.app.as_str() => {
                    return Err(ControllerError::validation(
                        "domain",
                        format!("Certificate {name} is already attached to {domain}"),
                    ));
                }
                // Attached by the domain's current app: the other certificate must go first.
                Some((a, _)) if a.app == record.app.as_str() => {
                    return Err(ControllerError::validation(
                        "domain",
                        format!(
                            "Domain {domain} already has certificate {} attached; detach it first with `deis certs:detach {} {domain}`",
                            a.cert, a.cert
                        ),
                    ));
                }
                // Left over from an app the domain no longer belongs to: replaced.
                Some((_, rev)) => rev,
                None => 0,
            };
            let attachment = CertAttachment { cert: name.to_string(), app: record.app.to_string() };
            let txn = Txn::new()
                .when(&cert_kv.key, cert_kv.mod_revision)
                .when(domain_key(&domain), domain_rev)
                .when(&attach_key, attach_rev)
                .put(&attach_key, records::encode(&attachment));
            if self.commit(txn).await? {
                tracing::info!(user = %caller.username, cert = name, domain, "certificate attached");
                return Ok(());
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::Certificate })
    }

    /// Detaches a certificate from a domain; not found unless it is attached there.
    pub async fn detach_cert(&self, caller: &User, name: &str, domain: &str) -> Result<()> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        self.cert_for(caller, name).await?;
        let attach_key = cert_domain_key(&domain);
        match records::get_json::<CertAttachment>(&*self.store, &attach_key).await? {
            Some((a, rev)) if a.cert == name => {
                if !self.commit(Txn::new().when(&attach_key, rev).delete(&attach_key)).await? {
                    return Err(ControllerError::Concurrent { kind: ResourceKind::Certificate });
                }
                tracing::info!(user = %caller.username, cert = name, domain, "certificate detached");
                Ok(())
            }
            _ => Err(ControllerError::not_found(ResourceKind::Domain, &domain)),
        }
    }

    /// A certificate the caller may see and change, with its stored entry.
    async fn cert_for(&self, caller: &User, name: &str) -> Result<(Certificate, KeyValue)> {
        let Some(kv) = self.store.get(&cert_key(name)).await? else {
            return Err(ControllerError::not_found(ResourceKind::Certificate, name));
        };
        let cert: Certificate = records::decode(&kv)?;
        if caller.is_superuser || cert.owner == caller.username {
            Ok((cert, kv))
        } else {
            Err(ControllerError::Forbidden)
        }
    }

    /// Every attachment by domain, with its revision.
    async fn attachments(&self) -> Result<BTreeMap<String, (CertAttachment, u64)>> {
        let mut out = BTreeMap::new();
        for kv in self.store.list(CERT_DOMAINS_PREFIX).await?.kvs {
            let domain = kv.key.strip_prefix(CERT_DOMAINS_PREFIX).unwrap_or(&kv.key).to_string();
            out.insert(domain, (records::decode(&kv)?, kv.mod_revision));
        }
        Ok(out)
    }
}

fn domains_of(attached: &BTreeMap<String, (CertAttachment, u64)>, cert: &str) -> Vec<String> {
    attached.iter().filter(|(_, (a, _))| a.cert == cert).map(|(d, _)| d.clone()).collect()
}
