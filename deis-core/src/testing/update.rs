//! Conformance suite of the `UpdateChannel` trait.

use std::sync::Arc;

use super::run_cases;
use crate::time::Timestamp;
use crate::update::{
    CheckOutcome, GroupSpec, InstanceEvent, InstanceRef, InstanceStatus, NoUpdate, Package, RolloutPolicy,
    UpdateChannel, UpdateError, event_result, event_type,
};

/// The app id the cases use, as a client sends it (braces, upper case).
const APP: &str = "{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}";
/// A fixed time (a Thursday, 12:00 UTC) so office hours are deterministic.
const NOON: u64 = 1_790_000_000 - 1_790_000_000 % 86_400 + 12 * 3600;

/// Runs every conformance case of [`UpdateChannel`] against fresh channels from
/// `make` (see the [module docs](super) for the shape).
///
/// Panics (failing the calling test) with the case's name and what went wrong.
pub async fn update_channel_suite(make: impl AsyncFn() -> Arc<dyn UpdateChannel>) {
    run_cases!(
        "update",
        [
            apps_start_with_the_default_channels_and_groups,
            publish_points_the_channel_and_versions_are_immutable,
            promote_moves_a_version_between_channels,
            checks_grant_once_then_report_up_to_date,
            pings_record_without_granting,
            the_period_limit_caps_grants,
            concurrent_checks_never_exceed_the_budget,
            pause_and_resume,
            office_hours_gate_new_updates,
            safe_mode_halts_on_the_first_error,
            events_are_recorded_per_instance,
            unknown_and_invalid_names_are_refused,
        ],
        |case| case(make().await).await
    );
}

/// A package of version `v` (hash derived from the version).
pub fn sample_package(v: &str) -> Package {
    use sha2::Digest;
    Package {
        version: v.into(),
        url: "http://updates.example.com/deisd".into(),
        name: "deisd".into(),
        size: 1234,
        sha256: hex::encode(sha2::Sha256::digest(v.as_bytes())),
        sha1: None,
        published: Timestamp::now(),
    }
}

fn who(instance: &str, group: &str, version: &str) -> InstanceRef {
    InstanceRef { app: APP.into(), group: group.into(), instance: instance.into(), version: version.into() }
}

async fn with_app(c: &Arc<dyn UpdateChannel>) {
    c.create_app(APP, "deisd").await.expect("creating the app");
}

async fn set_policy(c: &Arc<dyn UpdateChannel>, group: &str, policy: RolloutPolicy) {
    let spec = GroupSpec { name: group.into(), channel: group.into(), policy };
    c.put_group(APP, spec).await.expect("setting the policy");
}

async fn check(c: &Arc<dyn UpdateChannel>, instance: &str, version: &str, now: u64) -> CheckOutcome {
    c.check(&who(instance, "stable", version), true, now).await.unwrap_or_else(|e| panic!("check of {instance}: {e}"))
}

fn updated_to(outcome: &CheckOutcome) -> Option<&str> {
    match outcome {
        CheckOutcome::Update(p) => Some(&p.version),
        CheckOutcome::NoUpdate(_) => None,
    }
}

fn event(kind: u32, result: u32) -> InstanceEvent {
    InstanceEvent {
        event_type: kind,
        result,
        error_code: (result == event_result::ERROR).then_some(42),
        previous_version: None,
        at: Timestamp::from_unix_seconds(NOON),
        repeats: 0,
    }
}

async fn apps_start_with_the_default_channels_and_groups(c: Arc<dyn UpdateChannel>) {
    let app = c.create_app(APP, "deisd").await.expect("create");
    assert_eq!(app.id, "e96281a6-d1af-4bde-9a0a-97b76e56dc57", "ids are kept without braces, lowercase");
    let again = c.create_app("e96281a6-d1af-4bde-9a0a-97b76e56dc57", "other").await.expect("create again");
    assert_eq!(again, app, "creating an existing app changes nothing");
    assert_eq!(c.apps().await.unwrap(), vec![app.clone()]);
    assert_eq!(c.app(APP).await.unwrap(), Some(app));
    let channels: Vec<_> = c.channels(APP).await.unwrap().into_iter().map(|ch| (ch.name, ch.version)).collect();
    assert_eq!(channels, [("alpha".into(), None), ("beta".into(), None), ("stable".into(), None)]);
    let groups = c.groups(APP).await.unwrap();
    let names: Vec<_> = groups.iter().map(|g| (g.name.as_str(), g.channel.as_str(), g.paused)).collect();
    assert_eq!(names, [("alpha", "alpha", false), ("beta", "beta", false), ("stable", "stable", false)]);
    assert_eq!(groups[0].policy, RolloutPolicy::default());
}

async fn publish_points_the_channel_and_versions_are_immutable(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    let ch = c.publish(APP, "alpha", sample_package("1.1.0")).await.expect("publish");
    assert_eq!(ch.version.as_deref(), Some("1.1.0"));
    let stored = c.package(APP, "1.1.0").await.unwrap().expect("the package is kept");
    assert_eq!(stored.url, "http://updates.example.com/deisd/", "the base URL ends in /");
    // The same file again is fine (a CI job retried); another file is not.
    c.publish(APP, "alpha", sample_package("1.1.0")).await.expect("republishing the same file");
    let mut other = sample_package("1.1.0");
    other.sha256 = "ab".repeat(32);
    let e = c.publish(APP, "alpha", other).await.unwrap_err();
    assert!(matches!(e, UpdateError::Conflict(_)) && e.to_string().contains("immutable"), "{e}");
    let mut bad = sample_package("1.2.0");
    bad.sha256 = "xyz".into();
    assert!(matches!(c.publish(APP, "alpha", bad).await, Err(UpdateError::Invalid { field: "sha256", .. })));
    // A new channel springs into being when published to.
    let custom = c.publish(APP, "canary", sample_package("1.2.0")).await.expect("publish to a new channel");
    assert_eq!(custom.version.as_deref(), Some("1.2.0"));
    assert!(c.channels(APP).await.unwrap().iter().any(|ch| ch.name == "canary"));
}

async fn promote_moves_a_version_between_channels(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    let e = c.promote(APP, "alpha", "beta").await.unwrap_err();
    assert!(e.to_string().contains("offers no package"), "{e}");
    c.publish(APP, "alpha", sample_package("2.0.0")).await.unwrap();
    assert_eq!(c.promote(APP, "alpha", "beta").await.unwrap().version.as_deref(), Some("2.0.0"));
    assert_eq!(c.promote(APP, "beta", "stable").await.unwrap().version.as_deref(), Some("2.0.0"));
    let versions: Vec<_> = c.channels(APP).await.unwrap().into_iter().map(|ch| ch.version).collect();
    assert_eq!(versions, [Some("2.0.0".into()), Some("2.0.0".into()), Some("2.0.0".into())]);
    assert!(matches!(c.promote(APP, "nightly", "beta").await, Err(UpdateError::NotFound { .. })));
}

async fn checks_grant_once_then_report_up_to_date(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    assert_eq!(check(&c, "m1", "1.0.0", NOON).await, CheckOutcome::NoUpdate(NoUpdate::NoPackage));
    c.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    set_policy(&c, "stable", RolloutPolicy { max_updates_per_period: 1, ..RolloutPolicy::default() }).await;
    assert_eq!(updated_to(&check(&c, "m1", "1.0.0", NOON).await), Some("2.0.0"));
    // Asking again while updating gets the same answer without using the budget.
    assert_eq!(updated_to(&check(&c, "m1", "1.0.0", NOON + 60).await), Some("2.0.0"));
    let i = &c.instances(APP, None).await.unwrap()[0];
    assert_eq!((i.id.as_str(), i.version.as_str(), i.status), ("m1", "1.0.0", InstanceStatus::Granted));
    // The budget of one is used: another instance waits.
    assert_eq!(check(&c, "m2", "1.0.0", NOON + 60).await, CheckOutcome::NoUpdate(NoUpdate::PeriodLimit));
    // Once m1 runs 2.0.0 it is up to date and complete.
    assert_eq!(check(&c, "m1", "2.0.0", NOON + 120).await, CheckOutcome::NoUpdate(NoUpdate::UpToDate));
    let i = c.instances(APP, Some("stable")).await.unwrap().into_iter().find(|i| i.id == "m1").unwrap();
    assert_eq!((i.version.as_str(), i.status, i.grant.clone()), ("2.0.0", InstanceStatus::Complete, None));
    // A grant not finished within the update timeout is a new grant (a new period here).
    let later = NOON + RolloutPolicy::default().period_secs + 1;
    assert_eq!(updated_to(&check(&c, "m2", "1.0.0", later).await), Some("2.0.0"));
}

async fn pings_record_without_granting(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    c.publish(APP, "beta", sample_package("2.0.0")).await.unwrap();
    let out = c.check(&who("m1", "beta", "1.0.0"), false, NOON).await.unwrap();
    assert_eq!(out, CheckOutcome::NoUpdate(NoUpdate::NotAsked));
    let i = &c.instances(APP, Some("beta")).await.unwrap()[0];
    assert_eq!((i.version.as_str(), i.status, i.last_check.unix_seconds()), ("1.0.0", InstanceStatus::Idle, NOON));
    assert!(c.instances(APP, Some("stable")).await.unwrap().is_empty(), "listed by group");
    // No track: the stable group.
    c.check(&who("m2", "", "1.0.0"), false, NOON).await.unwrap();
    assert_eq!(c.instances(APP, Some("stable")).await.unwrap()[0].id, "m2");
}

async fn the_period_limit_caps_grants(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    c.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    let policy = RolloutPolicy { max_updates_per_period: 2, period_secs: 600, ..RolloutPolicy::default() };
    set_policy(&c, "stable", policy).await;
    let mut granted = Vec::new();
    for n in 0..4 {
        let id = format!("m{n}");
        if updated_to(&check(&c, &id, "1.0.0", NOON + n).await).is_some() {
            granted.push(id);
        }
    }
    assert_eq!(granted, ["m0", "m1"]);
    let g = c.group(APP, "stable").await.unwrap().unwrap();
    assert_eq!((g.window.start, g.window.granted), (NOON, 2));
    // The next period has a fresh budget.
    assert_eq!(updated_to(&check(&c, "m2", "1.0.0", NOON + 600).await), Some("2.0.0"));
}

async fn concurrent_checks_never_exceed_the_budget(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    c.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    set_policy(&c, "stable", RolloutPolicy { max_updates_per_period: 3, ..RolloutPolicy::default() }).await;
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move { check(&c, &format!("m{n}"), "1.0.0", NOON).await })
        })
        .collect();
    let mut updates = 0;
    for t in tasks {
        if updated_to(&t.await.expect("check task")).is_some() {
            updates += 1;
        }
    }
    assert_eq!(updates, 3, "a budget of 3 grants exactly 3 of 12 simultaneous checks");
    assert_eq!(c.instances(APP, None).await.unwrap().len(), 12, "every instance is recorded");
}

async fn pause_and_resume(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    c.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    assert!(c.set_paused(APP, "stable", true).await.unwrap().paused);
    assert_eq!(check(&c, "m1", "1.0.0", NOON).await, CheckOutcome::NoUpdate(NoUpdate::Paused));
    assert!(!c.set_paused(APP, "stable", false).await.unwrap().paused);
    assert_eq!(updated_to(&check(&c, "m1", "1.0.0", NOON).await), Some("2.0.0"));
    assert!(matches!(c.set_paused(APP, "nightly", true).await, Err(UpdateError::NotFound { .. })));
}

async fn office_hours_gate_new_updates(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    c.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    let hours = crate::update::policy::OfficeHours { start_hour: 9, end_hour: 17, weekdays_only: true };
    set_policy(&c, "stable", RolloutPolicy { office_hours: Some(hours), ..RolloutPolicy::default() }).await;
    let evening = NOON + 8 * 3600;
    assert_eq!(check(&c, "m1", "1.0.0", evening).await, CheckOutcome::NoUpdate(NoUpdate::OfficeHours));
    assert_eq!(updated_to(&check(&c, "m1", "1.0.0", NOON).await), Some("2.0.0"));
}

async fn safe_mode_halts_on_the_first_error(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    c.publish(APP, "stable", sample_package("2.0.0")).await.unwrap();
    assert_eq!(updated_to(&check(&c, "m1", "1.0.0", NOON).await), Some("2.0.0"));
    let failed = event(event_type::UPDATE_COMPLETE, event_result::ERROR);
    let i = c.record_event(&who("m1", "stable", "1.0.0"), failed).await.expect("recording the error");
    assert_eq!((i.status, i.failed_version.as_deref()), (InstanceStatus::Error, Some("2.0.0")));
    let g = c.group(APP, "stable").await.unwrap().unwrap();
    let why = g.halted.expect("safe mode halts the group");
    assert!(why.contains("m1") && why.contains("42"), "{why}");
    assert_eq!(check(&c, "m2", "1.0.0", NOON).await, CheckOutcome::NoUpdate(NoUpdate::Halted));
    // Resuming lifts the halt, but the instance that failed is not offered the version again.
    let g = c.set_paused(APP, "stable", false).await.unwrap();
    assert_eq!(g.halted, None);
    assert_eq!(check(&c, "m1", "1.0.0", NOON).await, CheckOutcome::NoUpdate(NoUpdate::FailedBefore));
    assert_eq!(updated_to(&check(&c, "m2", "1.0.0", NOON).await), Some("2.0.0"));
    // Without safe mode, an error does not halt the group.
    c.publish(APP, "beta", sample_package("2.0.0")).await.unwrap();
    set_policy(&c, "beta", RolloutPolicy { safe_mode: false, ..RolloutPolicy::default() }).await;
    c.record_event(&who("b1", "beta", "1.0.0"), event(event_type::UPDATE_COMPLETE, event_result::ERROR)).await.unwrap();
    assert_eq!(c.group(APP, "beta").await.unwrap().unwrap().halted, None);
}

async fn events_are_recorded_per_instance(c: Arc<dyn UpdateChannel>) {
    with_app(&c).await;
    let me = who("m1", "stable", "1.0.0");
    let steps = [
        (event_type::DOWNLOAD_STARTED, InstanceStatus::Downloading),
        (event_type::DOWNLOAD_FINISHED, InstanceStatus::Downloaded),
        (event_type::INSTALLED, InstanceStatus::Installed),
        (event_type::UPDATE_COMPLETE, InstanceStatus::Complete),
    ];
    for (kind, status) in steps {
        let i = c.record_event(&me, event(kind, event_result::SUCCESS)).await.expect("recording");
        assert_eq!(i.status, status, "after event {kind}");
    }
    // An event the server does not know is kept, and changes nothing.
    let i = c.record_event(&me, event(1234, event_result::SUCCESS)).await.unwrap();
    assert_eq!((i.status, i.last_event().unwrap().event_type), (InstanceStatus::Complete, 1234));
    // The same event again is folded into the last one.
    for _ in 0..3 {
        c.record_event(&me, event(1234, event_result::SUCCESS)).await.unwrap();
    }
    let i = c.instances(APP, None).await.unwrap().into_iter().find(|i| i.id == "m1").unwrap();
    assert_eq!(i.events.len(), 5, "repeats fold: {:?}", i.events);
    assert_eq!((i.events[4].event_type, i.events[4].repeats), (1234, 3));
    for n in 0..30 {
        let kind = [event_type::DOWNLOAD_STARTED, event_type::DOWNLOAD_FINISHED][n % 2];
        c.record_event(&me, event(kind, event_result::SUCCESS)).await.unwrap();
    }
    let other = c.record_event(&who("m2", "stable", "1.0.0"), event(13, 1)).await.unwrap();
    assert_eq!(other.events.len(), 1, "events are per instance");
    let i = c.instances(APP, None).await.unwrap().into_iter().find(|i| i.id == "m1").unwrap();
    assert_eq!(i.events.len(), crate::update::EVENTS_PER_INSTANCE, "the oldest events are dropped");
    assert!(i.events.iter().all(|e| e.repeats == 0), "different events stay apart");
}

async fn unknown_and_invalid_names_are_refused(c: Arc<dyn UpdateChannel>) {
    let e = c.check(&who("m1", "stable", "1.0.0"), true, NOON).await.unwrap_err();
    assert!(matches!(e, UpdateError::NotFound { kind: "application", .. }), "{e}");
    assert!(c.publish(APP, "stable", sample_package("1")).await.is_err(), "publishing to an unknown app");
    with_app(&c).await;
    assert!(matches!(c.check(&who("m1", "nightly", "1"), true, NOON).await, Err(UpdateError::NotFound { .. })));
    for bad in ["", "{}", "a/b", "a b"] {
        assert!(matches!(c.create_app(bad, "x").await, Err(UpdateError::Invalid { .. })), "app id {bad:?}");
    }
    assert!(matches!(c.check(&who("a/b", "stable", "1"), true, NOON).await, Err(UpdateError::Invalid { .. })));
    assert!(matches!(c.publish(APP, "Stable", sample_package("1")).await, Err(UpdateError::Invalid { .. })));
    let spec = GroupSpec { name: "canary".into(), channel: "nightly".into(), policy: RolloutPolicy::default() };
    assert!(matches!(c.put_group(APP, spec).await, Err(UpdateError::NotFound { kind: "channel", .. })));
    let spec = GroupSpec { name: "canary".into(), channel: "alpha".into(), policy: RolloutPolicy::default() };
    assert_eq!(c.put_group(APP, spec).await.unwrap().channel, "alpha", "a custom group on a channel");
}
