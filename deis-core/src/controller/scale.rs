//! Formation and processes: scale, list units, restart units.

use std::collections::BTreeMap;

use super::reconcile::process_types;
use super::{Controller, ControllerError, MAX_ATTEMPTS, ResourceKind, Result, UnknownRestartTarget};
use crate::model::{AppName, ProcessType, Unit, UnitState, User};
use crate::scheduler::{RestartFilter, SchedulerError};
use crate::store::Txn;
use crate::store::records::{self, app_key};

/// Most units of one process type a scale request may ask for.
pub const MAX_UNITS_PER_TYPE: u32 = 1000;

impl Controller {
    /// Sets the number of units per process type. The new formation is handed to the
    /// scheduler before it is committed, so a capacity refusal
    /// ([`ControllerError::Capacity`]) changes nothing. [`ControllerError::NoBuild`] without
    /// a build; [`ControllerError::UnknownProcessType`] for a type the build does not have.
    pub async fn scale(&self, user: &User, app: &AppName, counts: &BTreeMap<ProcessType, u32>) -> Result<()> {
        self.app_for(user, app).await?;
        let _guard = self.lock_app(app).await;
        for _ in 0..MAX_ATTEMPTS {
            let (app_record, rev) = self.app_for(user, app).await?;
            let ctx = self.context(app_record, rev).await?;
            let Some(build) = &ctx.build else {
                return Err(ControllerError::NoBuild);
            };
            let types = process_types(build);
            for (ty, count) in counts {
                if !types.contains_key(ty) {
                    return Err(ControllerError::UnknownProcessType { proc_type: ty.to_string() });
                }
                if *count > MAX_UNITS_PER_TYPE {
                    return Err(ControllerError::TooManyUnits { proc_type: ty.to_string(), max: MAX_UNITS_PER_TYPE });
                }
            }
            let mut new_app = ctx.app.clone();
            new_app.structure.extend(counts.iter().map(|(t, c)| (t.clone(), *c)));
            if new_app.structure == ctx.app.structure {
                return Ok(());
            }
            self.check_unit_quota(user, &new_app).await?;
            new_app.updated = crate::time::Timestamp::now();
            let old_spec = self.current_spec(&ctx).await;
            let new_spec = self.spec_for(&new_app, &ctx.current, &ctx.config, Some(build)).await?;
            let applied = self.deploy(old_spec.as_ref(), new_spec.as_ref()).await?;
            let key = app_key(app);
            let txn = Txn::new().when(&key, rev).put(&key, records::encode(&new_app));
            match self.commit(txn).await {
                Ok(true) => {
                    tracing::info!(app = %app, structure = ?new_app.structure, "scaled");
                    self.log_scaled(app, &new_app.structure, &user.username).await;
                    return Ok(());
                }
                result => {
                    if applied {
                        self.restore(app, old_spec.as_ref()).await;
                    }
                    result?;
                }
            }
        }
        Err(ControllerError::Concurrent { kind: ResourceKind::App })
    }

    /// Refuses a formation of `app` that would give its owner's apps more units than
    /// [`ControllerPolicy::max_units_per_user`](super::ControllerPolicy) (admins
    /// scaling are not held to it).
    async fn check_unit_quota(&self, user: &User, app: &crate::model::App) -> Result<()> {
        let Some(max) = self.policy.max_units_per_user else { return Ok(()) };
        if user.is_superuser {
            return Ok(());
        }
        let total = |a: &crate::model::App| a.structure.values().map(|c| u64::from(*c)).sum::<u64>();
        let apps: Vec<crate::model::App> = records::list_json(&*self.store, "apps/").await?;
        let others: u64 = apps.iter().filter(|a| a.owner == app.owner && a.id != app.id).map(total).sum();
        let asked = others + total(app);
        if asked > u64::from(max) {
            return Err(ControllerError::UnitQuota { owner: app.owner.clone(), max, asked });
        }
        Ok(())
    }

    /// The app's units as the scheduler reports them (all but destroyed ones).
    pub async fn units(&self, user: &User, app: &AppName) -> Result<Vec<Unit>> {
        self.app_for(user, app).await?;
        let units = self.scheduler.units(app).await?;
        Ok(units.into_iter().filter(|u| u.state != UnitState::Destroyed).collect())
    }

    /// Restarts the app's units (all, one process type, or one unit by name) and
    /// returns them; unknown types or units are [`ControllerError::UnknownRestartTarget`].
    pub async fn restart(&self, user: &User, app: &AppName, filter: RestartFilter) -> Result<Vec<Unit>> {
        let (app_record, rev) = self.app_for(user, app).await?;
        let _guard = self.lock_app(app).await;
        if let Some(ty) = &filter.proc_type {
            let ctx = self.context(app_record, rev).await?;
            let known = ctx.build.as_ref().is_some_and(|b| process_types(b).contains_key(ty.as_str()));
            if !known {
                return Err(ControllerError::UnknownRestartTarget(UnknownRestartTarget::ProcessType(ty.to_string())));
            }
        }
        if let Some(name) = &filter.unit {
            let units = self.scheduler.units(app).await?;
            let matches = |u: &Unit| &u.name == name && filter.proc_type.as_ref().is_none_or(|t| &u.proc_type == t);
            if !units.iter().any(matches) {
                return Err(ControllerError::UnknownRestartTarget(UnknownRestartTarget::Unit(name.clone())));
            }
        }
        let what = match (&filter.unit, &filter.proc_type) {
            (Some(unit), _) => unit.clone(),
            (None, Some(ty)) => format!("{ty} units"),
            (None, None) => "all units".into(),
        };
        self.log_event(app, format!("Restarting {what} by {}", user.username)).await;
        match self.scheduler.restart(app, filter).await {
            Ok(units) => Ok(units),
            Err(SchedulerError::NotFound(_)) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }
}
