//! Rollout policy: whether an instance is offered an update now, as a pure function
//! ([`decide`]) of the group, the instance and the time, so that every implementation
//! of [`UpdateChannel`](super::UpdateChannel) decides alike and the invariants are
//! checked once, by property tests.

use serde::{Deserialize, Serialize};

use super::{Group, Instance, UpdateError};

/// How updates roll out to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutPolicy {
    /// Most updates granted per period (at least 1).
    pub max_updates_per_period: u32,
    /// The period, in seconds (at least 1).
    pub period_secs: u64,
    /// How long an instance has to finish an update it was offered, in seconds; a
    /// new check after that counts as a new update.
    pub update_timeout_secs: u64,
    /// Hours (UTC) in which updates may start; none: any time.
    #[serde(default)]
    pub office_hours: Option<OfficeHours>,
    /// Halt the group on the first failure (until an operator resumes it).
    pub safe_mode: bool,
}

impl Default for RolloutPolicy {
    /// 5 updates per hour, 1 h to finish one, any time, safe mode on.
    fn default() -> Self {
        Self {
            max_updates_per_period: 5,
            period_secs: 3600,
            update_timeout_secs: 3600,
            office_hours: None,
            safe_mode: true,
        }
    }
}

impl RolloutPolicy {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), UpdateError> {
        let invalid = |message: &str| Err(UpdateError::Invalid { field: "policy", message: message.into() });
        if self.max_updates_per_period == 0 {
            return invalid("max_updates_per_period must be at least 1 (pause the group to stop updates)");
        }
        if self.period_secs == 0 || self.update_timeout_secs == 0 {
            return invalid("period_secs and update_timeout_secs must be at least 1");
        }
        if let Some(h) = self.office_hours
            && (h.start_hour > 23 || h.end_hour > 24 || h.start_hour == h.end_hour)
        {
            return invalid("office hours are start_hour 0-23 and end_hour 1-24 (UTC), different");
        }
        Ok(())
    }
}

/// Hours of the day (UTC) in which updates may start: `start_hour <= hour <
/// end_hour`, or across midnight when `end_hour < start_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfficeHours {
    /// First hour (0-23).
    pub start_hour: u8,
    /// Hour it ends at (1-24).
    pub end_hour: u8,
    /// Only Monday to Friday.
    #[serde(default)]
    pub weekdays_only: bool,
}

impl OfficeHours {
    /// Whether `now` (Unix seconds) is inside.
    pub fn contains(&self, now: u64) -> bool {
        let hour = ((now / 3600) % 24) as u8;
        // 1970-01-01 was a Thursday: day 0 is weekday 3 counting Monday as 0.
        let weekday = (now / 86_400 + 3) % 7;
        if self.weekdays_only && weekday >= 5 {
            return false;
        }
        if self.start_hour < self.end_hour {
            (self.start_hour..self.end_hour).contains(&hour)
        } else {
            hour >= self.start_hour || hour < self.end_hour
        }
    }
}

/// Why an instance is not offered an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoUpdate {
    /// It only pinged or reported.
    NotAsked,
    /// The group's channel offers no package yet.
    NoPackage,
    /// It runs the channel's version.
    UpToDate,
    /// The group is paused.
    Paused,
    /// The group is halted by safe mode.
    Halted,
    /// It failed to update to this version before.
    FailedBefore,
    /// Outside the group's office hours.
    OfficeHours,
    /// The group's updates for this period are used up.
    PeriodLimit,
}

/// What [`decide`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Offer `version`; `new_grant` when it counts against the period (a repeated
    /// check within the update timeout does not).
    Update {
        /// The version to offer.
        version: String,
        /// Whether this is a new grant.
        new_grant: bool,
    },
    /// No update.
    NoUpdate(NoUpdate),
}

/// Whether an instance running `version` (its record `instance`, if it has one) is
/// offered the channel's version `target` at `now` (Unix seconds) under `group`.
///
/// Invariants (property-tested): a paused or halted group offers nothing; an instance
/// is never offered the version it runs or one it failed on; new grants start only in
/// office hours and never exceed `max_updates_per_period` in one period; an instance
/// that was offered `target` gets it again within the update timeout without using the
/// budget.
pub fn decide(group: &Group, target: Option<&str>, instance: Option<&Instance>, version: &str, now: u64) -> Decision {
    let Some(target) = target else { return Decision::NoUpdate(NoUpdate::NoPackage) };
    if version == target {
        return Decision::NoUpdate(NoUpdate::UpToDate);
    }
    if group.paused {
        return Decision::NoUpdate(NoUpdate::Paused);
    }
    if group.halted.is_some() {
        return Decision::NoUpdate(NoUpdate::Halted);
    }
    if instance.and_then(|i| i.failed_version.as_deref()) == Some(target) {
        return Decision::NoUpdate(NoUpdate::FailedBefore);
    }
    let policy = &group.policy;
    let in_progress = instance
        .and_then(|i| i.grant.as_ref())
        .is_some_and(|g| g.version == target && now < g.at.saturating_add(policy.update_timeout_secs));
    if in_progress {
        return Decision::Update { version: target.to_string(), new_grant: false };
    }
    if policy.office_hours.is_some_and(|h| !h.contains(now)) {
        return Decision::NoUpdate(NoUpdate::OfficeHours);
    }
    if current_window(group, now).granted >= policy.max_updates_per_period {
        return Decision::NoUpdate(NoUpdate::PeriodLimit);
    }
    Decision::Update { version: target.to_string(), new_grant: true }
}

/// The group's window as of `now`: a fresh one once the period is over.
pub fn current_window(group: &Group, now: u64) -> super::RolloutWindow {
    let w = group.window;
    if now >= w.start.saturating_add(group.policy.period_secs) || now < w.start {
        super::RolloutWindow { start: now, granted: 0 }
    } else {
        w
    }
}

/// Counts a new grant at `now` in the group's window.
pub fn count_grant(group: &mut Group, now: u64) {
    let mut w = current_window(group, now);
    w.granted += 1;
    group.window = w;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::time::Timestamp;
    use crate::update::{Grant, InstanceStatus, RolloutWindow};

    fn group(policy: RolloutPolicy) -> Group {
        Group {
            name: "stable".into(),
            channel: "stable".into(),
            policy,
            paused: false,
            halted: None,
            window: RolloutWindow::default(),
        }
    }

    fn instance(version: &str, grant: Option<Grant>, failed: Option<&str>) -> Instance {
        Instance {
            id: "m1".into(),
            group: "stable".into(),
            version: version.into(),
            status: InstanceStatus::Idle,
            last_check: Timestamp::from_unix_seconds(0),
            grant,
            failed_version: failed.map(str::to_owned),
            events: Vec::new(),
        }
    }

    #[test]
    fn office_hours_wrap_midnight_and_skip_weekends() {
        let night = OfficeHours { start_hour: 22, end_hour: 6, weekdays_only: false };
        // 1970-01-01 (Thursday) 23:00 and 05:00 are in, 12:00 is out.
        assert!(night.contains(23 * 3600) && night.contains(5 * 3600) && !night.contains(12 * 3600));
        let work = OfficeHours { start_hour: 9, end_hour: 17, weekdays_only: true };
        assert!(work.contains(10 * 3600), "Thursday 10:00");
        assert!(!work.contains(2 * 86_400 + 10 * 3600), "Saturday 10:00");
        assert!(work.contains(4 * 86_400 + 10 * 3600), "Monday 10:00");
    }

    #[test]
    fn policies_out_of_range_are_refused() {
        let mut p = RolloutPolicy { max_updates_per_period: 0, ..RolloutPolicy::default() };
        assert!(p.validate().unwrap_err().to_string().contains("pause the group"));
        p.max_updates_per_period = 1;
        p.office_hours = Some(OfficeHours { start_hour: 9, end_hour: 9, weekdays_only: false });
        assert!(p.validate().is_err());
        p.office_hours = None;
        assert!(p.validate().is_ok());
    }

    fn policy() -> impl Strategy<Value = RolloutPolicy> {
        (1u32..5, 1u64..100, 1u64..100, prop::option::of((0u8..24, 1u8..25, any::<bool>())), any::<bool>()).prop_map(
            |(max, period, timeout, hours, safe_mode)| RolloutPolicy {
                max_updates_per_period: max,
                period_secs: period,
                update_timeout_secs: timeout,
                office_hours: hours
                    .filter(|(s, e, _)| s != e)
                    .map(|(start_hour, end_hour, weekdays_only)| OfficeHours { start_hour, end_hour, weekdays_only }),
                safe_mode,
            },
        )
    }

    proptest! {
        /// Simulates checks of many instances at increasing times, applying the
        /// decisions as an implementation does, and checks the invariants.
        #[test]
        fn rollouts_respect_the_policy(
            policy in policy(),
            paused in any::<bool>(),
            halted in any::<bool>(),
            steps in prop::collection::vec((0usize..6, 0u64..40, any::<bool>()), 1..80),
        ) {
            let mut g = group(policy);
            g.paused = paused;
            g.halted = halted.then(|| "failure".to_string());
            let target = "2.0.0";
            let mut instances: Vec<Instance> =
                (0..6).map(|i| instance(if i == 5 { target } else { "1.0.0" }, None, (i == 4).then_some(target))).collect();
            let mut now = 1_000_000u64;
            let mut grants: Vec<u64> = Vec::new();
            for (who, dt, _) in steps {
                now += dt;
                let inst = &mut instances[who];
                let decision = decide(&g, Some(target), Some(inst), &inst.version.clone(), now);
                match decision {
                    Decision::Update { version, new_grant } => {
                        prop_assert!(!g.paused && g.halted.is_none(), "paused or halted group granted");
                        prop_assert_eq!(&version, target);
                        prop_assert!(inst.version != target, "offered the version it runs");
                        prop_assert!(inst.failed_version.as_deref() != Some(target), "offered a failed version");
                        if new_grant {
                            if let Some(h) = policy.office_hours {
                                prop_assert!(h.contains(now), "new grant outside office hours");
                            }
                            count_grant(&mut g, now);
                            grants.push(now);
                            inst.grant = Some(Grant { version, at: now });
                        } else {
                            let at = inst.grant.as_ref().map(|g| g.at).unwrap();
                            prop_assert!(now < at + policy.update_timeout_secs, "a stale grant reused");
                        }
                    }
                    Decision::NoUpdate(_) => {}
                }
                // No window of `period` seconds (aligned as the group's) holds more than the max.
                let start = g.window.start;
                let in_window = grants.iter().filter(|t| **t >= start && **t < start + policy.period_secs).count();
                prop_assert!(in_window as u32 <= policy.max_updates_per_period, "{} grants in one period", in_window);
            }
        }

        /// Nothing but `UpToDate` for an instance on the target, nothing but
        /// `NoPackage` without one, whatever the group's state.
        #[test]
        fn no_target_or_up_to_date_never_updates(policy in policy(), paused in any::<bool>(), now in 0u64..1_000_000) {
            let mut g = group(policy);
            g.paused = paused;
            prop_assert_eq!(decide(&g, None, None, "1", now), Decision::NoUpdate(NoUpdate::NoPackage));
            prop_assert_eq!(decide(&g, Some("1"), None, "1", now), Decision::NoUpdate(NoUpdate::UpToDate));
        }
    }
}
