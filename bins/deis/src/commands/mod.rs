//! The commands: shared context (profile, client, app, output) and dispatch.

mod access;
pub mod addons;
mod apps;
mod auth;
mod autoscale;
mod certs;
mod config;
mod deploy;
mod domains;
mod drains;
mod git;
pub mod healthchecks;
mod logs;
mod metrics;
mod nodes;
mod ps;
mod push;
mod registry;
mod releases;
mod run;
mod settings;
mod updates;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use deis_core::{AppName, Autoscale, ValidationError, validate};
use deis_sdk::client::{Client, ClientError, PackError};
use serde::Serialize;

use crate::cli::{Cli, Command};
use crate::profile::{self, Profile, ProfileError};
use crate::prompt;

/// Why a command failed; `Usage` exits 2, everything else 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line was wrong.
    #[error("{0}")]
    Usage(String),
    /// The command could not do its job.
    #[error("{0}")]
    Failed(String),
    /// The controller said no, or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The app directory could not be packed.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The profile could not be read or written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Result of a command.
pub type Result<T = ()> = std::result::Result<T, CliError>;

/// What every command may need: the global options and helpers around them.
#[derive(Debug)]
pub struct Ctx {
    app_flag: Option<String>,
    json: bool,
    profile_path: PathBuf,
}

/// Why the current directory can't stand in for `-a APP`.
#[derive(Debug, thiserror::Error)]
pub enum NoAppError {
    /// The directory has no name (`/`) or one that is not UTF-8.
    #[error("no app given and the current directory has no usable name: pass -a APP")]
    UnnamedDir,
    /// The directory's name is not an app name.
    #[error(
        "no app given, and the current directory's name {name:?} is not a valid app name ({}): pass -a APP \
         or set DEIS_APP",
        .source.message
    )]
    InvalidDirName {
        /// The directory's name.
        name: String,
        /// Why it is not an app name.
        #[source]
        source: ValidationError,
    },
}

/// `name` if a new app could take it (reserved names included in the check).
pub fn app_name(name: &str) -> std::result::Result<AppName, ValidationError> {
    validate::app_name(name)?;
    AppName::new(name)
}

/// The app named by the directory `dir`, if its name is a valid app name.
pub fn app_from_dir(dir: &Path) -> std::result::Result<AppName, NoAppError> {
    let name = dir.file_name().and_then(|n| n.to_str()).ok_or(NoAppError::UnnamedDir)?;
    app_name(name).map_err(|source| NoAppError::InvalidDirName { name: name.to_string(), source })
}

impl Ctx {
    /// The context of one invocation.
    pub fn new(cli: &Cli) -> Result<Self> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let profile_path = profile::resolve_path(cli.config.as_deref(), home.as_deref())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self { app_flag: cli.app.clone().filter(|a| !a.is_empty()), json: cli.json, profile_path })
    }

    /// The profile, or an error telling how to log in.
    fn profile(&self) -> Result<Profile> {
        profile::load(&self.profile_path)?.ok_or_else(|| {
            CliError::Failed(format!(
                "not logged in (no profile at {}): log in with `deis login URL` or create an account with \
                 `deis register URL`",
                self.profile_path.display()
            ))
        })
    }

    /// A client authenticated from the profile.
    fn client(&self) -> Result<(Client, Profile)> {
        let p = self.profile()?;
        let client = Client::new(&p.controller, Some(p.token.clone()))?.with_response_limit(p.response_limit);
        Ok((client, p))
    }

    /// The app: `-a`/`DEIS_APP`, else the current directory's name.
    fn app(&self) -> Result<AppName> {
        if let Some(a) = &self.app_flag {
            return app_name(a).map_err(|e| CliError::Usage(format!("invalid app name {a:?}: {}", e.message)));
        }
        // Inside a repository with this controller's builder remote: its app.
        if let Some(a) = self.profile().ok().and_then(|p| git::app_from_remotes(&p.controller)) {
            return app_name(&a).map_err(|e| CliError::Usage(format!("invalid app name {a:?}: {}", e.message)));
        }
        let cwd = std::env::current_dir()
            .map_err(|e| CliError::Failed(format!("cannot read the current directory ({e}): pass -a APP")))?;
        app_from_dir(&cwd).map_err(|e| CliError::Usage(e.to_string()))
    }

    /// Prints a line for people (not with `--json`).
    fn say(&self, line: impl std::fmt::Display) {
        if !self.json {
            println!("{line}");
        }
    }

    /// Prints the start of a progress line (`Scaling processes... `) for people.
    fn progress(&self, text: impl std::fmt::Display) {
        if !self.json {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }

    /// Prints `value` as JSON when `--json` was given; returns whether it did.
    fn emit<T: Serialize + ?Sized>(&self, value: &T) -> Result<bool> {
        if !self.json {
            return Ok(false);
        }
        let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Failed(e.to_string()))?;
        println!("{text}");
        Ok(true)
    }

    /// Prints a warning on stderr (also with `--json`).
    fn warn(&self, text: impl std::fmt::Display) {
        eprintln!("Warning: {text}");
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result {
    let ctx = Ctx::new(&cli)?;
    match cli.command {
        Command::Register { url, username, password, email, login } => {
            auth::register(&ctx, &url, username, password, email, login).await
        }
        Command::Login { url, username, password } => auth::login(&ctx, &url, username, password).await,
        Command::Logout => auth::logout(&ctx),
        Command::Whoami { all } => auth::whoami(&ctx, all).await,
        Command::AuthRegenerate { username, all } => auth::regenerate(&ctx, username, all).await,
        Command::Version { all } => auth::version(&ctx, all).await,

        Command::AppsList => apps::list(&ctx).await,
        Command::AppsCreate { name, no_remote, remote } => {
            apps::create(&ctx, name, (!no_remote).then_some(remote.as_str())).await
        }
        Command::GitRemote { remote } => git::remote(&ctx, &remote),
        Command::AppsInfo => apps::info(&ctx).await,
        Command::AppsDestroy { confirm } => apps::destroy(&ctx, confirm).await,

        Command::ConfigList { oneline } => config::list(&ctx, oneline).await,
        Command::ConfigSet { pairs, wait } => config::set(&ctx, pairs, &wait).await,
        Command::ConfigUnset { keys, wait } => config::unset(&ctx, keys, &wait).await,
        Command::LimitsList => config::limits_list(&ctx).await,
        Command::LimitsSet { cpu, limits, wait, .. } => config::limits_set(&ctx, cpu, limits, &wait).await,
        Command::LimitsUnset { cpu, types, wait, .. } => config::limits_unset(&ctx, cpu, types, &wait).await,

        Command::Deploy { dir, wait } => deploy::deploy(&ctx, &dir, &wait).await,
        Command::Pull { image, procfile } => deploy::pull(&ctx, &image, procfile).await,
        Command::Push { image, procfile } => push::push(&ctx, &image, procfile).await,
        Command::RegistryList => registry::registry_list(&ctx).await,
        Command::RegistrySet { pairs } => registry::registry_set(&ctx, pairs).await,
        Command::RegistryUnset { keys } => registry::registry_unset(&ctx, keys).await,
        Command::BuildsList => deploy::builds_list(&ctx).await,

        Command::ReleasesList => releases::list(&ctx).await,
        Command::ReleasesInfo { version } => releases::info(&ctx, version).await,
        Command::ReleasesRollback { version, wait } => releases::rollback(&ctx, version, &wait).await,

        Command::PsList => ps::list(&ctx).await,
        Command::PsScale { formation, wait } => ps::scale(&ctx, formation, &wait).await,
        Command::PsRestart { target } => ps::restart(&ctx, target).await,

        Command::NodesList => nodes::list(&ctx).await,
        Command::Metrics { minutes } => metrics::show(&ctx, minutes).await,
        Command::AutoscaleList => autoscale::list(&ctx).await,
        Command::AutoscaleSet { proc_type, min, max, cpu_percent } => {
            autoscale::set(&ctx, &proc_type, Autoscale { min, max, cpu_percent }).await
        }
        Command::AutoscaleUnset { proc_type } => autoscale::unset(&ctx, &proc_type).await,
        Command::UpdatesApps => updates::apps(&ctx).await,
        Command::UpdatesCreate { id, name } => updates::create(&ctx, &id, name.as_deref()).await,
        Command::UpdatesStatus { id } => updates::status(&ctx, &id).await,
        Command::UpdatesPublish { id, channel, file, version, url, name } => {
            updates::publish(&ctx, &id, &channel, &file, &version, &url, name.as_deref()).await
        }
        Command::UpdatesPromote { id, from, to } => updates::promote(&ctx, &id, &from, &to).await,
        Command::UpdatesGroup { id, group, settings } => updates::group(&ctx, &id, &group, &settings).await,
        Command::UpdatesPause { id, group } => updates::pause(&ctx, &id, &group, true).await,
        Command::UpdatesResume { id, group } => updates::pause(&ctx, &id, &group, false).await,
        Command::UpdatesInstances { id, group } => updates::instances(&ctx, &id, group.as_deref()).await,
        Command::DomainsList => domains::list(&ctx).await,
        Command::DomainsAdd { domain } => domains::add(&ctx, &domain).await,
        Command::DomainsRemove { domain } => domains::remove(&ctx, &domain).await,

        Command::Run { command, proc_type, no_tty } => run::run(&ctx, command, proc_type, no_tty).await,

        Command::Logs { lines, follow, proc_type, source, raw } => {
            logs::logs(&ctx, logs::LogsArgs { lines, follow, proc_type, source, raw }).await
        }
        Command::LogsToken { rotate } => drains::ingest_token(&ctx, rotate).await,
        Command::DrainsList => drains::list(&ctx).await,
        Command::DrainsAdd { url } => drains::add(&ctx, &url).await,
        Command::DrainsRemove { drain } => drains::remove(&ctx, &drain).await,

        Command::HealthchecksList { proc_type } => healthchecks::list(&ctx, proc_type).await,
        Command::HealthchecksSet(a) => healthchecks::set(&ctx, a).await,
        Command::HealthchecksUnset { kinds, proc_type } => healthchecks::unset(&ctx, kinds, proc_type).await,

        Command::Services => addons::services(&ctx).await,
        Command::BrokersAdd { name, url, username, password } => {
            addons::brokers_add(&ctx, &name, &url, &username, &password).await
        }
        Command::BrokersList => addons::brokers_list(&ctx).await,
        Command::BrokersRemove { name } => addons::brokers_remove(&ctx, &name).await,
        Command::AddonsCreate { service, alias, parameters, wait } => {
            addons::create(&ctx, &service, alias.as_deref(), parameters, wait).await
        }
        Command::AddonsList => addons::list(&ctx).await,
        Command::AddonsInfo { name } => addons::info(&ctx, &name).await,
        Command::AddonsAttach { name, alias } => addons::attach(&ctx, &name, alias.as_deref()).await,
        Command::AddonsDetach { name } => addons::detach(&ctx, &name).await,
        Command::AddonsDestroy { name, confirm } => addons::destroy(&ctx, &name, confirm).await,
        Command::AddonsWait { name, timeout } => addons::wait(&ctx, &name, timeout).await,

        Command::CertsList => certs::list(&ctx).await,
        Command::CertsAdd { name, cert, key } => certs::add(&ctx, &name, &cert, &key).await,
        Command::CertsInfo { name } => certs::info(&ctx, &name).await,
        Command::CertsRemove { name } => certs::remove(&ctx, &name).await,
        Command::CertsAttach { name, domain } => certs::attach(&ctx, &name, &domain).await,
        Command::CertsDetach { name, domain } => certs::detach(&ctx, &name, &domain).await,
        Command::KeysList => access::keys_list(&ctx).await,
        Command::KeysAdd { path, id } => access::keys_add(&ctx, path, id).await,
        Command::KeysRemove { id } => access::keys_remove(&ctx, &id).await,
        Command::PermsList { admin } => access::perms_list(&ctx, admin).await,
        Command::PermsCreate { username, admin } => access::perms_create(&ctx, &username, admin).await,
        Command::PermsDelete { username, admin } => access::perms_delete(&ctx, &username, admin).await,
        Command::UsersList => access::users_list(&ctx).await,
        Command::UsersEnable { username } => access::users_set_active(&ctx, &username, true).await,
        Command::UsersDisable { username } => access::users_set_active(&ctx, &username, false).await,

        Command::MaintenanceInfo => settings::show(&ctx, settings::Switch::Maintenance).await,
        Command::MaintenanceOn => settings::flip(&ctx, settings::Switch::Maintenance, true).await,
        Command::MaintenanceOff => settings::flip(&ctx, settings::Switch::Maintenance, false).await,
        Command::RoutingInfo => settings::show(&ctx, settings::Switch::Routing).await,
        Command::RoutingEnable => settings::flip(&ctx, settings::Switch::Routing, true).await,
        Command::RoutingDisable => settings::flip(&ctx, settings::Switch::Routing, false).await,
        Command::TlsInfo => settings::show(&ctx, settings::Switch::Https).await,
        Command::TlsEnable => settings::flip(&ctx, settings::Switch::Https, true).await,
        Command::TlsDisable => settings::flip(&ctx, settings::Switch::Https, false).await,
        Command::WhitelistList => settings::whitelist_list(&ctx).await,
        Command::WhitelistAdd { addresses } => settings::whitelist_add(&ctx, &addresses).await,
        Command::WhitelistRemove { addresses } => settings::whitelist_remove(&ctx, &addresses).await,
        Command::LabelsList => settings::labels_list(&ctx).await,
        Command::LabelsSet { labels } => settings::labels_set(&ctx, labels).await,
        Command::LabelsUnset { keys } => settings::labels_unset(&ctx, keys).await,
    }
}

/// The newest release's version, for `done, vN` lines (`None` if it can't be read).
async fn latest_release(client: &Client, app: &str) -> Option<u64> {
    client.releases_list(app).await.ok()?.iter().map(|r| r.version).max()
}

/// `done, vN` or `done`.
fn done_with(version: Option<u64>) -> String {
    version.map_or_else(|| "done".to_string(), |v| format!("done, v{v}"))
}

/// Asks before destroying `name` (a `noun`, `long` in the warning): `--confirm` must
/// name it; without it a terminal is asked, anything else is refused.
fn confirm_destroy(noun: &str, long: &str, name: &str, confirm: Option<String>) -> Result {
    match confirm {
        Some(c) if c == name => Ok(()),
        Some(c) => Err(CliError::Usage(format!(
            "--confirm={c} does not match the {noun} {name}: nothing was destroyed (use --confirm={name})"
        ))),
        None if prompt::interactive() => {
            eprintln!(" !    WARNING: Potentially Destructive Action");
            eprintln!(" !    This command will destroy {long}: {name}");
            eprintln!(" !    To proceed, type \"{name}\" or re-run this command with --confirm={name}");
            eprintln!();
            let answer = prompt::ask("> ").map_err(|e| CliError::Failed(format!("cannot read the answer: {e}")))?;
            if answer.trim() == name {
                Ok(())
            } else {
                Err(CliError::Failed(format!("{:?} does not match {name}: nothing was destroyed", answer.trim())))
            }
        }
        None => Err(CliError::Usage(format!(
            "refusing to destroy {name} without confirmation: re-run with --confirm={name}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_from_directory_name() {
        assert_eq!(app_from_dir(Path::new("/src/hello")).unwrap(), "hello");
        let e = app_from_dir(Path::new("/src/Hello_World")).unwrap_err();
        assert!(matches!(&e, NoAppError::InvalidDirName { name, .. } if name == "Hello_World"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("-a APP") && e.contains("Hello_World"), "{e}");
        assert!(matches!(app_from_dir(Path::new("/")), Err(NoAppError::UnnamedDir)));
        assert!(app_from_dir(Path::new("/src/deis")).unwrap_err().to_string().contains("reserved"));
    }

    #[test]
    fn usage_errors_exit_2_others_1() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Failed("x".into()).exit_code(), 1);
        let api = CliError::Client(ClientError::from_response(404, br#""No App matches the given query.""#));
        assert_eq!(api.exit_code(), 1);
        assert_eq!(api.to_string(), "No App matches the given query.");
    }
}
