//! `ps:list`, `ps:scale`, `ps:restart`, and waiting for units to come up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deis_core::ProcessType;
use deis_sdk::client::{Client, Pod, RestartTarget};

use super::{CliError, Ctx, Result};
use crate::args::{RestartArg, ScaleArg};
use crate::cli::WaitOpts;
use crate::output;

/// How often the unit list is polled while waiting.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What "the units are up" means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// At least `want[type]` units of each type run release `version` and are up.
    Release {
        /// The release.
        version: u64,
        /// Units wanted per type.
        want: BTreeMap<ProcessType, u32>,
    },
    /// Exactly `n` units of each listed type are up, and no other live ones of that type.
    Formation(BTreeMap<ProcessType, u32>),
}

/// A unit of the release waited for can't be started: waiting longer won't help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit {unit} of v{version} cannot be started (state error)")]
pub struct UnitFailed {
    /// The unit's name.
    pub unit: String,
    /// The release it runs.
    pub version: u64,
}

/// Whether `pods` satisfy `goal`; `Err` when waiting longer can't help.
pub fn reached(goal: &Goal, pods: &[Pod]) -> std::result::Result<bool, UnitFailed> {
    match goal {
        Goal::Release { version, want } => {
            let of_release = |p: &&Pod| p.release_version() == Some(*version);
            if let Some(bad) = pods.iter().filter(of_release).find(|p| p.state == "error") {
                return Err(UnitFailed { unit: bad.name.clone(), version: *version });
            }
            Ok(want.iter().all(|(t, n)| {
                pods.iter().filter(of_release).filter(|p| &p.proc_type == t && p.state == "up").count() >= *n as usize
            }))
        }
        Goal::Formation(want) => Ok(want.iter().all(|(t, n)| {
            let of_type = || pods.iter().filter(|p| &p.proc_type == t);
            let up = of_type().filter(|p| p.state == "up").count();
            let live = of_type().filter(|p| p.state != "down" && p.state != "destroyed").count();
            up == *n as usize && live == *n as usize
        })),
    }
}

/// How waiting ended.
#[derive(Debug)]
pub enum Waited {
    /// The goal holds; the units as last seen.
    Up(Vec<Pod>),
    /// It does not and won't (timeout, or a unit that can't start): the units as last
    /// seen and what to tell the user.
    NotUp(Vec<Pod>, String),
}

/// Polls the app's units until `goal` holds, can't hold, or `timeout` passes.
pub async fn wait_for(client: &Client, app: &str, goal: &Goal, timeout: Duration) -> Result<Waited> {
    let deadline = Instant::now() + timeout;
    loop {
        let pods = client.pods_list(app).await?;
        match reached(goal, &pods) {
            Ok(true) => return Ok(Waited::Up(pods)),
            Err(e) => {
                return Ok(Waited::NotUp(pods, format!("{e}; run `deis ps -a {app}` and check the app's logs")));
            }
            Ok(false) if Instant::now() >= deadline => {
                let msg = format!(
                    "the processes did not come up within {}s; run `deis ps -a {app}` to see their state",
                    timeout.as_secs()
                );
                return Ok(Waited::NotUp(pods, msg));
            }
            Ok(false) => tokio::time::sleep(POLL_EVERY).await,
        }
    }
}

/// After a change that made release `version`, waits (unless `--no-wait`) until the
/// app's formation runs it. Prints the `ps` view when `show`, or when it fails; the error
/// says the release exists but its units are not up.
pub async fn wait_release(ctx: &Ctx, client: &Client, app: &str, version: u64, wait: &WaitOpts, show: bool) -> Result {
    if wait.no_wait {
        return Ok(());
    }
    let want: BTreeMap<ProcessType, u32> =
        client.app_info(app).await?.structure.into_iter().filter(|(_, n)| *n > 0).collect();
    if want.is_empty() {
        if show {
            ctx.say(format!("No processes are scaled up: start some with `deis scale web=1 -a {app}`"));
        }
        return Ok(());
    }
    let goal = Goal::Release { version, want };
    let (pods, failure) = match wait_for(client, app, &goal, Duration::from_secs(wait.timeout)).await? {
        Waited::Up(pods) => (pods, None),
        Waited::NotUp(pods, why) => (pods, Some(why)),
    };
    if !ctx.json && (show || failure.is_some()) {
        println!();
        print!("{}", output::processes(app, &pods));
    }
    failure.map_or(Ok(()), |why| Err(CliError::Failed(format!("v{version} was released, but {why}"))))
}

/// `deis ps:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let app = ctx.app()?;
    let (client, _) = ctx.client()?;
    let pods = client.pods_list(&app).await?;
    if !ctx.emit(&pods)? {
        print!("{}", output::processes(&app, &pods));
    }
    Ok(())
}

/// `deis ps:scale TYPE=N...`: sets the formation, waits for it, prints the units.
pub async fn scale(ctx: &Ctx, formation: Vec<ScaleArg>, wait: &WaitOpts) -> Result {
    let app = ctx.app()?;
    let want: BTreeMap<ProcessType, u32> = formation.into_iter().map(|s| (s.proc_type, s.count)).collect();
    let (client, _) = ctx.client()?;
    let start = Instant::now();
    ctx.say("Scaling processes... but first, coffee!");
    client.scale(&app, &want).await?;
    let (pods, failure) = if wait.no_wait {
        (client.pods_list(&app).await?, None)
    } else {
        match wait_for(&client, &app, &Goal::Formation(want), Duration::from_secs(wait.timeout)).await? {
            Waited::Up(pods) => (pods, None),
            Waited::NotUp(pods, why) => (pods, Some(why)),
        }
    };
    if failure.is_none() {
        ctx.say(format!("done in {}s", start.elapsed().as_secs()));
    }
    if !ctx.json {
        println!();
        print!("{}", output::processes(&app, &pods));
    }
    if let Some(why) = failure {
        return Err(CliError::Failed(why));
    }
    ctx.emit(&pods)?;
    Ok(())
}

/// `deis ps:restart [TYPE|UNIT]`.
pub async fn restart(ctx: &Ctx, target: Option<RestartArg>) -> Result {
    let app = ctx.app()?;
    let target = match target {
        None => RestartTarget::All,
        Some(RestartArg::Type(t)) => RestartTarget::Type(t),
        Some(RestartArg::Unit { proc_type, name }) => {
            if !name.starts_with(&format!("{app}.")) {
                return Err(CliError::Usage(format!("unit {name} does not belong to the app {app}")));
            }
            RestartTarget::Unit { proc_type, name }
        }
    };
    let (client, _) = ctx.client()?;
    let start = Instant::now();
    ctx.say("Restarting processes... but first, coffee!");
    let restarted = client.restart(&app, &target).await?;
    if ctx.emit(&restarted)? {
        return Ok(());
    }
    if restarted.is_empty() {
        println!("Could not find any processes to restart");
        return Ok(());
    }
    println!("done in {}s", start.elapsed().as_secs());
    println!();
    print!("{}", output::processes(&app, &restarted));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str) -> ProcessType {
        ProcessType::new(name).unwrap()
    }

    fn pod(name: &str, state: &str, release: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "name": name, "state": state, "release": release, "type": name.split('.').nth(1).unwrap(),
        }))
        .unwrap()
    }

    #[test]
    fn release_goal_counts_up_units_of_that_release() {
        let goal = Goal::Release { version: 3, want: BTreeMap::from([(ty("web"), 2)]) };
        let mut pods = vec![pod("h.web.1", "up", "v3"), pod("h.web.2", "up", "v2"), pod("h.worker.1", "up", "v3")];
        assert_eq!(reached(&goal, &pods), Ok(false));
        pods.push(pod("h.web.2", "created", "v3"));
        assert_eq!(reached(&goal, &pods), Ok(false));
        pods.push(pod("h.web.3", "up", "v3"));
        assert_eq!(reached(&goal, &pods), Ok(true));
        pods.push(pod("h.web.4", "error", "v3"));
        assert_eq!(reached(&goal, &pods), Err(UnitFailed { unit: "h.web.4".into(), version: 3 }));
        assert!(reached(&goal, &pods).unwrap_err().to_string().contains("h.web.4"));
        // An old release's broken unit does not matter.
        let old = vec![pod("h.web.1", "up", "v3"), pod("h.web.2", "up", "v3"), pod("h.web.3", "error", "v2")];
        assert_eq!(reached(&goal, &old), Ok(true));
    }

    #[test]
    fn formation_goal_wants_exact_live_counts() {
        let goal = Goal::Formation(BTreeMap::from([(ty("web"), 2), (ty("worker"), 0)]));
        let mut pods = vec![pod("h.web.1", "up", "v3"), pod("h.web.2", "up", "v3"), pod("h.web.3", "up", "v3")];
        assert_eq!(reached(&goal, &pods), Ok(false), "one too many");
        pods[2].state = "down".into();
        assert_eq!(reached(&goal, &pods), Ok(true));
        pods.push(pod("h.worker.1", "crashed", "v3"));
        assert_eq!(reached(&goal, &pods), Ok(false), "a crashed worker is still live");
        pods.pop();
        pods[1].state = "crashed".into();
        assert_eq!(reached(&goal, &pods), Ok(false));
    }
}
