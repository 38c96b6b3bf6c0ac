//! Certificates: `/deis/certs/<domain>/{cert,key}` become the `certs/<name>` record
//! `deis certs:add` makes, attached (`certdomains/<domain>`) as `deis certs:attach`
//! attaches: to the domain it was filed under and, for a wildcard, to the migrated
//! domains it covers that have no certificate of their own. Those two records are
//! what the controller's certificates API and the router's SNI read.

use std::collections::BTreeMap;

use super::{Change, Planner};
use crate::deis_core::model::{CertAttachment, Certificate, CertificateInfo};
use crate::deis_core::store::StoreError;
use crate::deis_core::store::records::{self, cert_domain_key, cert_key};
use crate::migrate::classify::V1Cert;
use crate::migrate::layout;
use crate::migrate::report::Status;

impl Planner<'_> {
    /// Plans the certificate filed under `domain`; `all` are every v1 certificate, by
    /// domain.
    pub(super) fn cert(&mut self, domain: &str, v1: &V1Cert, all: &BTreeMap<String, V1Cert>) -> Result<(), StoreError> {
        let (cert, key) = match (&v1.cert, &v1.key) {
            (Some(c), Some(k)) => (c, k),
            (Some(only), None) | (None, Some(only)) => {
                let why = "a certificate needs both cert and key; the other is missing";
                self.decide(&only.source, Status::Failed, why);
                return Ok(());
            }
            (None, None) => return Ok(()),
        };
        let sources = [cert.source.clone(), key.source.clone()];
        let fail = |p: &mut Self, why: String| sources.iter().for_each(|s| p.decide(s, Status::Failed, why.clone()));
        let inspected = match crate::certs::inspect(&cert.value, &key.value) {
            Ok(i) => i,
            Err(e) => {
                fail(self, format!("{}: {}", e.field, e.message));
                return Ok(());
            }
        };
        let snap = self.snap;
        let name = layout::cert_name(domain);
        let record_key = cert_key(&name);
        let mut change = Change { sources: sources.to_vec(), ..Change::default() };
        let mut targets = vec![];
        let record = || Certificate {
            name: name.clone(),
            owner: self.owner.to_string(),
            certificate: cert.value.clone(),
            key: key.value.clone(),
            info: inspected.info.clone(),
            created: self.now,
            updated: self.now,
        };
        match snap.get(&record_key).map(|kv| (records::decode::<Certificate>(kv), kv.mod_revision)) {
            None => {
                change.put(record_key.clone(), records::encode(&record()), 0);
                targets.push(record_key.clone());
            }
            Some((Ok(c), _)) if c.certificate == cert.value && c.key == key.value => {}
            Some((Ok(_), _)) => {
                let why = format!("{record_key} exists with another certificate; remove it there to migrate this one");
                fail(self, why);
                return Ok(());
            }
            // Written by an earlier deis-migrate in a layout of its own: replaced.
            Some((Err(_), rev)) => {
                change.put(record_key.clone(), records::encode(&record()), rev);
                targets.push(format!("{record_key} (replacing a record of an earlier layout)"));
            }
        }
        for attach_to in self.covered_domains(domain, &inspected.info, all) {
            let app = self.domain_apps[&attach_to].to_string();
            let attach_key = cert_domain_key(&attach_to);
            let wanted = CertAttachment { cert: name.clone(), app: app.clone() };
            match snap.decode::<CertAttachment>(&attach_key)? {
                Some(a) if a == wanted => {}
                Some(a) if a.app == app => {
                    let why = format!(
                        "{attach_to} has certificate {} attached on the target; detach it there (deis certs:detach {} {attach_to}) to attach this one",
                        a.cert, a.cert
                    );
                    fail(self, why);
                    return Ok(());
                }
                // Absent, or left over from an app the domain no longer belongs to.
                _ => {
                    let rev = snap.rev(&attach_key);
                    change.put(attach_key.clone(), records::encode(&wanted), rev);
                    targets.push(attach_key);
                }
            }
        }
        if change.puts.is_empty() {
            sources.iter().for_each(|s| self.decide(s, Status::Unchanged, record_key.clone()));
        } else {
            change.target = targets.join(", ");
            self.plan.changes.push(change);
        }
        Ok(())
    }

    /// The domains the target will hold that a certificate filed under `domain`
    /// serves: that one, and for a wildcard those it covers without a v1 certificate
    /// of their own.
    fn covered_domains(&self, domain: &str, info: &CertificateInfo, all: &BTreeMap<String, V1Cert>) -> Vec<String> {
        let wildcard = domain.starts_with("*.");
        self.domain_apps
            .keys()
            .filter(|d| *d == domain || (wildcard && !all.contains_key(*d)))
            .filter(|d| info.covers(d))
            .cloned()
            .collect()
    }
}
