//! The command line: Deis command names (colon forms are the real names, the short
//! forms are aliases), global options.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::args::{self, KeyValue, LimitArg, RestartArg, ScaleArg};

/// Default time `deploy` and `scale` wait for units to come up.
pub const DEFAULT_WAIT_SECS: u64 = 60;

/// The `deis` command line.
#[derive(Debug, Parser)]
#[command(
    name = "deis",
    version,
    about = "Deploy, configure and scale apps on a Deis controller",
    long_about = "Deploy, configure and scale apps on a Deis controller.\n\n\
        Start with `deis register http://127.0.0.1:8000 --username=alice --password=... --email=...`, \
        then `deis create hello` and `deis deploy` in the app's directory (it needs a Procfile).",
    after_help = "The app is taken from -a/--app, else $DEIS_APP, else the current directory's name.\n\
        The profile (controller URL and token) is ~/.deis/client.json unless -c/--config or $DEIS_PROFILE \
        names another one."
)]
pub struct Cli {
    /// The app to act on (default: $DEIS_APP, else the current directory's name).
    #[arg(short = 'a', long = "app", global = true, value_name = "APP", env = "DEIS_APP")]
    pub app: Option<String>,

    /// Print the API's JSON responses instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    /// Profile to use: a name for `~/.deis/<name>.json`, or a path (containing / or ending in .json).
    #[arg(short = 'c', long = "config", global = true, value_name = "PROFILE", env = "DEIS_PROFILE")]
    pub config: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How long to wait for units.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitOpts {
    /// Don't wait for the units to come up.
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for the units to come up.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WAIT_SECS)]
    pub timeout: u64,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a new user with a controller and log in.
    Register {
        /// Controller URL, e.g. http://127.0.0.1:8000.
        url: String,
        /// Username (asked for when missing and stdin is a terminal).
        #[arg(long)]
        username: Option<String>,
        /// Password (asked for when missing and stdin is a terminal).
        #[arg(long)]
        password: Option<String>,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        /// Log in after registering (--login=false to skip).
        #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        login: bool,
    },
    /// Log in to a controller (writes the profile).
    Login {
        /// Controller URL, e.g. http://127.0.0.1:8000.
        url: String,
        /// Username (asked for when missing and stdin is a terminal).
        #[arg(long)]
        username: Option<String>,
        /// Password (asked for when missing and stdin is a terminal).
        #[arg(long)]
        password: Option<String>,
    },
    /// Log out (removes the profile).
    Logout,
    /// Show who you are logged in as.
    Whoami {
        /// Ask the controller for the whole user record.
        #[arg(long)]
        all: bool,
    },
    /// Replace your API token (the old one stops working).
    #[command(name = "auth:regenerate")]
    AuthRegenerate {
        /// Regenerate this user's token instead (admins only).
        #[arg(short = 'u', long, conflicts_with = "all")]
        username: Option<String>,
        /// Regenerate every user's token (admins only).
        #[arg(long)]
        all: bool,
    },

    /// List apps.
    #[command(name = "apps:list", visible_alias = "apps")]
    AppsList,
    /// Create an app (a random name when NAME is not given).
    #[command(name = "apps:create", visible_alias = "create")]
    AppsCreate {
        /// The app's name: a-z, 0-9 and hyphens, starting with a letter.
        name: Option<String>,
        /// Don't add the git remote for `git push` (added when run inside a git repository).
        #[arg(long)]
        no_remote: bool,
        /// Name of the git remote to add.
        #[arg(long, default_value = "deis", value_name = "NAME")]
        remote: String,
    },
    /// Add the git remote of an existing app (`git push deis main` deploys).
    #[command(name = "git:remote")]
    GitRemote {
        /// Name of the git remote.
        #[arg(long, default_value = "deis", value_name = "NAME")]
        remote: String,
    },
    /// Show an app: its formation, processes and domains.
    #[command(name = "apps:info", visible_alias = "info")]
    AppsInfo,
    /// Destroy an app and stop its processes.
    #[command(name = "apps:destroy", visible_alias = "destroy")]
    AppsDestroy {
        /// The app's name, to confirm without being asked.
        #[arg(long, value_name = "APP")]
        confirm: Option<String>,
    },

    /// List the app's config vars.
    #[command(name = "config:list", visible_alias = "config")]
    ConfigList {
        /// Print KEY=value pairs on one line.
        #[arg(long)]
        oneline: bool,
    },
    /// Set config vars (makes a new release and restarts the units).
    #[command(name = "config:set")]
    ConfigSet {
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = args::key_value)]
        pairs: Vec<KeyValue>,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },
    /// Unset config vars (makes a new release and restarts the units).
    #[command(name = "config:unset")]
    ConfigUnset {
        /// Variable names.
        #[arg(required = true, value_name = "KEY", value_parser = args::config_key)]
        keys: Vec<String>,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },

    /// Deploy a directory (with a Procfile at its root) as a new build and release.
    Deploy {
        /// The app's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },
    /// Deploy a container image (needs a scheduler that can run images).
    #[command(name = "pull", visible_alias = "builds:create")]
    Pull {
        /// Image reference, e.g. nginx:1.25.
        image: String,
        /// Process types, Procfile style ("web: cmd"); default: ./Procfile if present.
        #[arg(long, value_name = "PROCFILE", value_parser = args::procfile)]
        procfile: Option<std::collections::BTreeMap<deis_core::ProcessType, String>>,
    },
    /// Push an image from this machine to the platform registry and deploy it: IMAGE is
    /// an image of the local Docker engine, a `docker save` tarball or an OCI image
    /// layout directory.
    Push {
        /// Image name (local engine), tarball path or OCI layout directory.
        image: String,
        /// Process types, Procfile style ("web: cmd"); default: the image's command.
        #[arg(long, value_name = "PROCFILE", value_parser = args::procfile)]
        procfile: Option<std::collections::BTreeMap<deis_core::ProcessType, String>>,
    },
    /// Show the app's private registry credentials (the password hidden).
    #[command(name = "registry:list", visible_alias = "registry")]
    RegistryList,
    /// Set the credentials `deis pull` pulls the app's image with: username=… password=….
    #[command(name = "registry:set")]
    RegistrySet {
        /// key=value pairs (username, password).
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = args::label)]
        pairs: Vec<(String, String)>,
    },
    /// Remove registry credentials.
    #[command(name = "registry:unset")]
    RegistryUnset {
        /// Keys (username, password).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// List the app's builds.
    #[command(name = "builds:list", visible_alias = "builds")]
    BuildsList,

    /// List the app's releases, newest first.
    #[command(name = "releases:list", visible_alias = "releases")]
    ReleasesList,
    /// Show one release.
    #[command(name = "releases:info")]
    ReleasesInfo {
        /// Release version, e.g. v3.
        #[arg(value_parser = args::release_version, value_name = "vN")]
        version: u64,
    },
    /// Roll back to an earlier release (default: the previous one) as a new release.
    #[command(name = "releases:rollback", visible_alias = "rollback")]
    ReleasesRollback {
        /// Release version to go back to, e.g. v2.
        #[arg(value_parser = args::release_version, value_name = "vN")]
        version: Option<u64>,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },

    /// List the app's processes.
    #[command(name = "ps:list", visible_alias = "ps")]
    PsList,
    /// Set how many processes of each type run.
    #[command(name = "ps:scale", visible_alias = "scale")]
    PsScale {
        /// TYPE=COUNT pairs, e.g. web=3 worker=1.
        #[arg(required = true, value_name = "TYPE=COUNT", value_parser = args::scale_arg)]
        formation: Vec<ScaleArg>,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },
    /// Restart all processes, those of one type, or one unit (e.g. hello.web.1).
    #[command(name = "ps:restart")]
    PsRestart {
        /// A process type (web) or a unit name (hello.web.1).
        #[arg(value_parser = args::restart_arg, value_name = "TYPE|UNIT")]
        target: Option<RestartArg>,
    },

    /// Request rate, error rate and p50/p99 latency of the app over the last minutes,
    /// and each unit's cpu and memory.
    #[command(name = "metrics")]
    Metrics {
        /// Minutes to look back (1 to 15).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=15))]
        minutes: u64,
    },

    /// List the app's autoscaling bounds.
    #[command(name = "autoscale:list", visible_alias = "autoscale")]
    AutoscaleList,
    /// Scale a process type between --min and --max units on its average cpu: more units
    /// when it stays above --cpu-percent (of one core per unit), fewer when below.
    #[command(name = "autoscale:set")]
    AutoscaleSet {
        /// The process type (web).
        #[arg(value_name = "TYPE")]
        proc_type: String,
        /// Fewest units (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        min: u32,
        /// Most units (at least --min, at most 1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max: u32,
        /// Target average cpu per unit, in percent (1 to 100).
        #[arg(long = "cpu-percent", value_parser = clap::value_parser!(u32).range(1..=100))]
        cpu_percent: u32,
    },
    /// Stop autoscaling a process type (its units stay as they are).
    #[command(name = "autoscale:unset")]
    AutoscaleUnset {
        /// The process type (web).
        #[arg(value_name = "TYPE")]
        proc_type: String,
    },

    /// List the nodes units run on: capacity, allocation, labels, planes, health (admins).
    #[command(name = "nodes:list", visible_alias = "nodes")]
    NodesList,

    /// List the applications the update service updates (administrators).
    #[command(name = "updates:apps")]
    UpdatesApps,
    /// Create an application to update by its Omaha app id, with alpha, beta and stable
    /// channels and groups (administrators).
    #[command(name = "updates:create")]
    UpdatesCreate {
        /// The Omaha app id (e.g. deisd's `{e96281a6-...}`).
        id: String,
        /// A name for people (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show an application's channels, groups and rollout (administrators).
    #[command(name = "updates:status")]
    UpdatesStatus {
        /// The Omaha app id.
        id: String,
    },
    /// Publish a package to a channel (from CI): its size and hashes are read from FILE,
    /// clients download it from URL/NAME (administrators).
    #[command(name = "updates:publish")]
    UpdatesPublish {
        /// The Omaha app id.
        id: String,
        /// The channel (alpha, beta, stable, or any other name).
        channel: String,
        /// The file as clients will download it.
        file: PathBuf,
        /// Its version (immutable once published).
        #[arg(long)]
        version: String,
        /// The base URL clients download it under.
        #[arg(long)]
        url: String,
        /// The file name under --url (default: FILE's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Point channel TO at the version channel FROM offers: alpha -> beta -> stable
    /// (administrators).
    #[command(name = "updates:promote")]
    UpdatesPromote {
        /// The Omaha app id.
        id: String,
        /// The channel whose version is promoted.
        from: String,
        /// The channel that gets it.
        to: String,
    },
    /// Create or change a group: the channel it follows and its rollout policy
    /// (administrators). Settings not given stay as they are.
    #[command(name = "updates:group")]
    UpdatesGroup {
        /// The Omaha app id.
        id: String,
        /// The group (the Omaha track its instances send).
        group: String,
        /// The rollout settings.
        #[command(flatten)]
        settings: args::GroupSettings,
    },
    /// Pause a group: no instance is offered an update (administrators).
    #[command(name = "updates:pause")]
    UpdatesPause {
        /// The Omaha app id.
        id: String,
        /// The group.
        group: String,
    },
    /// Resume a paused group, or one halted by safe mode (administrators).
    #[command(name = "updates:resume")]
    UpdatesResume {
        /// The Omaha app id.
        id: String,
        /// The group.
        group: String,
    },
    /// List the instances with their version, status and last event (administrators).
    #[command(name = "updates:instances")]
    UpdatesInstances {
        /// The Omaha app id.
        id: String,
        /// Only this group's.
        #[arg(long)]
        group: Option<String>,
    },

    /// List the app's domains.
    #[command(name = "domains:list", visible_alias = "domains")]
    DomainsList,
    /// Route a domain to the app.
    #[command(name = "domains:add")]
    DomainsAdd {
        /// Host name, e.g. www.example.com.
        domain: String,
    },
    /// Stop routing a domain to the app.
    #[command(name = "domains:remove")]
    DomainsRemove {
        /// Host name.
        domain: String,
    },

    /// Show the app's log: its processes' output and platform events.
    #[command(after_help = "Lines look like `2026-11-25T14:47:21.123Z hello[web.1]: message`.\n\
        With -f the log is followed until Ctrl-C; a lost connection is retried and resumes where it stopped.")]
    Logs {
        /// How many of the last lines to show (default: the controller's, 100).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// Keep following new lines (until Ctrl-C).
        #[arg(short = 'f', long = "follow")]
        follow: bool,
        /// Only lines of this process type, e.g. web.
        #[arg(long = "type", value_name = "TYPE", value_parser = args::proc_type)]
        proc_type: Option<deis_core::ProcessType>,
        /// Only `app` lines (the processes) or `deis` lines (platform events).
        #[arg(long, value_name = "app|deis", value_parser = ["app", "deis"])]
        source: Option<String>,
        /// Print lines as they are; by default control characters (terminal escapes)
        /// are shown escaped, so a log line can't drive your terminal.
        #[arg(long)]
        raw: bool,
    },
    /// Show the app's syslog ingest token: network syslog lines for the app are taken
    /// only with it.
    #[command(
        name = "logs:token",
        after_help = "Send it in the structured data, `[deis@32473 token=\"TOKEN\"]`, or as the tag's last part,\n\
        e.g. `logger --rfc5424 -n 127.0.0.1 -P 5514 -t hello.web.1/TOKEN hi`. Lines without it are dropped.\n\
        --rotate makes a new token; lines with the old one are refused from then on."
    )]
    LogsToken {
        /// Replace the token with a new one.
        #[arg(long)]
        rotate: bool,
    },
    /// List the app's log drains.
    #[command(name = "drains:list", visible_alias = "drains")]
    DrainsList,
    /// Forward the app's log to a syslog server (RFC 5424).
    #[command(name = "drains:add")]
    DrainsAdd {
        /// syslog://HOST:PORT (TCP), syslog+udp://HOST:PORT or syslog+tls://HOST:PORT.
        url: String,
    },
    /// Stop forwarding the app's log to a drain.
    #[command(name = "drains:remove")]
    DrainsRemove {
        /// The drain's URL or id.
        #[arg(value_name = "URL|ID")]
        drain: String,
    },

    /// List the app's resource limits.
    #[command(name = "limits:list", visible_alias = "limits")]
    LimitsList,
    /// Set memory (default) or cpu limits per process type.
    #[command(name = "limits:set")]
    LimitsSet {
        /// Set cpu limits (500m, 1, 250m/1) instead of memory.
        #[arg(long, conflicts_with = "memory")]
        cpu: bool,
        /// Set memory limits (512M, 1G/2G); the default.
        #[arg(long)]
        memory: bool,
        /// TYPE=LIMIT pairs, e.g. web=512M.
        #[arg(required = true, value_name = "TYPE=LIMIT", value_parser = args::limit_arg)]
        limits: Vec<LimitArg>,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },
    /// Remove memory (default) or cpu limits of process types.
    #[command(name = "limits:unset")]
    LimitsUnset {
        /// Remove cpu limits instead of memory.
        #[arg(long, conflicts_with = "memory")]
        cpu: bool,
        /// Remove memory limits; the default.
        #[arg(long)]
        memory: bool,
        /// Process types.
        #[arg(required = true, value_name = "TYPE", value_parser = args::proc_type)]
        types: Vec<deis_core::ProcessType>,
        /// Waiting for the units.
        #[command(flatten)]
        wait: WaitOpts,
    },

    /// Run a command in the app's environment: interactive when stdin is a terminal
    /// (`deis run bash`), batch otherwise (`echo hi | deis run cat`, `deis run -- cmd args`).
    /// Exits with the command's exit status.
    Run {
        /// Process type whose environment to use (default: web).
        #[arg(long = "type", value_name = "TYPE", value_parser = args::proc_type)]
        proc_type: Option<deis_core::ProcessType>,
        /// Don't allocate a terminal even when stdin is one (binary-safe pipes).
        #[arg(long)]
        no_tty: bool,
        /// The command and its arguments; one argument is run with `sh -c`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
        command: Vec<String>,
    },

    /// List the services the platform's brokers offer, with their plans.
    Services,
    /// Register a third-party service broker (administrators).
    #[command(name = "brokers:add")]
    BrokersAdd {
        /// Name for the broker on this platform.
        name: String,
        /// The broker's URL, e.g. http://127.0.0.1:9000.
        url: String,
        /// Basic-auth user.
        #[arg(long, default_value = "")]
        username: String,
        /// Basic-auth password.
        #[arg(long, default_value = "")]
        password: String,
    },
    /// List the service brokers (administrators).
    #[command(name = "brokers:list", visible_alias = "brokers")]
    BrokersList,
    /// Remove a registered service broker (administrators; no add-on may use it).
    #[command(name = "brokers:remove")]
    BrokersRemove {
        /// The broker's name.
        name: String,
    },
    /// Create an add-on for the app: provision SERVICE:PLAN, then put its URL in the
    /// app's config (DATABASE_URL, REDIS_URL, or {NAME}_URL with --as) as a new release.
    #[command(name = "addons:create")]
    AddonsCreate {
        /// SERVICE:PLAN, e.g. postgresql:shared (see `deis services`).
        service: String,
        /// Name the add-on; the app gets {NAME}_URL.
        #[arg(long = "as", value_name = "NAME")]
        alias: Option<String>,
        /// Provision parameters (user-provided services: the credentials, e.g. -p url=...).
        #[arg(short = 'p', long = "parameter", value_name = "KEY=VALUE", value_parser = crate::commands::addons::parameter)]
        parameters: Vec<(String, String)>,
        /// Wait until the add-on is ready.
        #[arg(long)]
        wait: bool,
    },
    /// List the app's add-ons.
    #[command(name = "addons:list", visible_alias = "addons")]
    AddonsList,
    /// Show an add-on: service, plan, state, attached apps.
    #[command(name = "addons:info")]
    AddonsInfo {
        /// The add-on's name.
        name: String,
    },
    /// Attach an add-on to the app (-a): credentials of its own in the app's config.
    #[command(name = "addons:attach")]
    AddonsAttach {
        /// The add-on's name.
        name: String,
        /// The app gets {NAME}_URL instead of the service's default variable.
        #[arg(long = "as", value_name = "NAME")]
        alias: Option<String>,
    },
    /// Detach an add-on from the app (-a): its variable goes, its credentials stop working.
    #[command(name = "addons:detach")]
    AddonsDetach {
        /// The add-on's name.
        name: String,
    },
    /// Destroy an add-on and its data.
    #[command(name = "addons:destroy")]
    AddonsDestroy {
        /// The add-on's name.
        name: String,
        /// The add-on's name again, to skip the prompt.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Wait until an add-on is provisioned.
    #[command(name = "addons:wait")]
    AddonsWait {
        /// The add-on's name.
        name: String,
        /// Seconds to wait.
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
    },

    /// List your TLS certificates (all of them for administrators).
    #[command(name = "certs:list", visible_alias = "certs")]
    CertsList,
    /// Add a TLS certificate: a PEM chain (leaf first) and its PEM private key.
    #[command(name = "certs:add")]
    CertsAdd {
        /// Name for the certificate (a-z, 0-9, hyphens).
        name: String,
        /// The PEM certificate chain.
        cert: PathBuf,
        /// The PEM private key.
        key: PathBuf,
    },
    /// Show a certificate: names, validity, fingerprint, attached domains.
    #[command(name = "certs:info")]
    CertsInfo {
        /// The certificate's name.
        name: String,
    },
    /// Remove a certificate (its domains fall back to the platform certificate).
    #[command(name = "certs:remove")]
    CertsRemove {
        /// The certificate's name.
        name: String,
    },
    /// Serve a domain of one of your apps with a certificate over HTTPS.
    #[command(name = "certs:attach")]
    CertsAttach {
        /// The certificate's name.
        name: String,
        /// The domain (`deis domains:add`); the certificate must be valid for it.
        domain: String,
    },
    /// Stop serving a domain with a certificate.
    #[command(name = "certs:detach")]
    CertsDetach {
        /// The certificate's name.
        name: String,
        /// The domain.
        domain: String,
    },

    /// List your SSH keys (for `git push`).
    #[command(name = "keys:list", visible_alias = "keys")]
    KeysList,
    /// Register an SSH public key (default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub).
    #[command(name = "keys:add")]
    KeysAdd {
        /// The public key file.
        path: Option<PathBuf>,
        /// Name for the key (default: the key's comment).
        #[arg(long, value_name = "ID")]
        id: Option<String>,
    },
    /// Remove one of your SSH keys.
    #[command(name = "keys:remove")]
    KeysRemove {
        /// The key's id, as `deis keys:list` shows it.
        id: String,
    },

    /// List the app's collaborators (or the platform's administrators with --admin).
    #[command(name = "perms:list", visible_alias = "perms")]
    PermsList {
        /// List administrators instead.
        #[arg(long)]
        admin: bool,
    },
    /// Let a user deploy, configure, scale and run the app (or make them an administrator with --admin).
    #[command(name = "perms:create")]
    PermsCreate {
        /// The user.
        username: String,
        /// Make the user an administrator instead.
        #[arg(long)]
        admin: bool,
    },
    /// Take a user's access to the app (or administrator rights with --admin).
    #[command(name = "perms:delete")]
    PermsDelete {
        /// The user.
        username: String,
        /// Take administrator rights instead.
        #[arg(long)]
        admin: bool,
    },
    /// List the platform's users (administrators only; * marks administrators).
    #[command(name = "users:list", visible_alias = "users")]
    UsersList,
    /// Let a disabled user log in again (administrators only).
    #[command(name = "users:enable")]
    UsersEnable {
        /// The user.
        username: String,
    },
    /// Stop a user from logging in or using their tokens (administrators only).
    #[command(name = "users:disable")]
    UsersDisable {
        /// The user.
        username: String,
    },

    /// Show whether the app is in maintenance mode.
    #[command(name = "maintenance:info", visible_alias = "maintenance")]
    MaintenanceInfo,
    /// Put the app in maintenance mode: the router answers 503 with a maintenance page.
    #[command(name = "maintenance:on")]
    MaintenanceOn,
    /// Take the app out of maintenance mode.
    #[command(name = "maintenance:off")]
    MaintenanceOff,
    /// Show whether the router routes the app.
    #[command(name = "routing:info", visible_alias = "routing")]
    RoutingInfo,
    /// Route the app again.
    #[command(name = "routing:enable")]
    RoutingEnable,
    /// Stop routing the app (its units keep running; `deis run` still works).
    #[command(name = "routing:disable")]
    RoutingDisable,
    /// List the client addresses allowed to reach the app (empty: everyone).
    #[command(name = "whitelist:list", visible_alias = "whitelist")]
    WhitelistList,
    /// Allow client addresses or CIDR ranges (comma-separated); everyone else gets 403.
    #[command(name = "whitelist:add")]
    WhitelistAdd {
        /// Addresses or ranges: 203.0.113.7,10.0.0.0/8.
        #[arg(value_delimiter = ',', required = true, value_parser = args::address_range)]
        addresses: Vec<deis_core::AddressRange>,
    },
    /// Remove addresses from the allow-list.
    #[command(name = "whitelist:remove")]
    WhitelistRemove {
        /// Addresses or ranges as listed.
        #[arg(value_delimiter = ',', required = true, value_parser = args::address_range)]
        addresses: Vec<deis_core::AddressRange>,
    },
    /// Show whether HTTPS is enforced for the app.
    #[command(name = "tls:info", visible_alias = "tls")]
    TlsInfo,
    /// Redirect the app's plain HTTP requests to HTTPS (301).
    #[command(name = "tls:enable")]
    TlsEnable,
    /// Stop redirecting HTTP to HTTPS.
    #[command(name = "tls:disable")]
    TlsDisable,
    /// List the app's labels.
    #[command(name = "labels:list", visible_alias = "labels")]
    LabelsList,
    /// Set labels.
    #[command(name = "labels:set")]
    LabelsSet {
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = args::label)]
        labels: Vec<(String, String)>,
    },
    /// Remove labels.
    #[command(name = "labels:unset")]
    LabelsUnset {
        /// Label keys.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },

    /// List the app's health checks.
    #[command(name = "healthchecks:list", visible_alias = "healthchecks")]
    HealthchecksList {
        /// Only this process type's (the default `web/cmd` covers web and cmd).
        #[arg(long = "type", value_name = "TYPE")]
        proc_type: Option<String>,
    },
    /// Set a health check: `liveness` restarts units that fail it, `readiness` gates
    /// traffic and rolling deploys. `deis healthchecks:set liveness httpGet 8080 --path=/healthz`,
    /// `... readiness tcpSocket 8080`, `... liveness exec -- /bin/check arg`.
    #[command(name = "healthchecks:set")]
    HealthchecksSet(crate::commands::healthchecks::SetArgs),
    /// Remove health checks (`liveness`, `readiness`).
    #[command(name = "healthchecks:unset")]
    HealthchecksUnset {
        /// liveness and/or readiness.
        #[arg(required = true, value_parser = ["liveness", "readiness"])]
        kinds: Vec<String>,
        /// Process type (default `web/cmd`).
        #[arg(long = "type", value_name = "TYPE", default_value = deis_core::DEFAULT_HEALTHCHECK_TYPE)]
        proc_type: String,
    },

    /// Show the client's version (and the controller's with --all).
    Version {
        /// Also ask the controller.
        #[arg(long)]
        all: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("deis").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn colon_names_and_short_aliases() {
        for (a, b) in [
            (&["apps"][..], &["apps:list"][..]),
            (&["create", "x"], &["apps:create", "x"]),
            (&["info"], &["apps:info"]),
            (&["destroy", "--confirm=x"], &["apps:destroy", "--confirm", "x"]),
            (&["config"], &["config:list"]),
            (&["releases"], &["releases:list"]),
            (&["rollback", "v2"], &["releases:rollback", "2"]),
            (&["ps"], &["ps:list"]),
            (&["scale", "web=2"], &["ps:scale", "web=2"]),
            (&["domains"], &["domains:list"]),
            (&["nodes"], &["nodes:list"]),
            (&["limits"], &["limits:list"]),
            (&["builds"], &["builds:list"]),
        ] {
            let x = format!("{:?}", parse(a).unwrap().command);
            let y = format!("{:?}", parse(b).unwrap().command);
            assert_eq!(x, y, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn global_options_anywhere() {
        let cli = parse(&["ps:scale", "web=3", "-a", "hello", "--json", "worker=0", "-c", "staging"]).unwrap();
        assert_eq!(cli.app.as_deref(), Some("hello"));
        assert!(cli.json);
        assert_eq!(cli.config.as_deref(), Some("staging"));
        match cli.command {
            Command::PsScale { formation, wait } => {
                assert_eq!(
                    formation,
                    vec![
                        ScaleArg { proc_type: "web".parse().unwrap(), count: 3 },
                        ScaleArg { proc_type: "worker".parse().unwrap(), count: 0 }
                    ]
                );
                assert!(!wait.no_wait);
                assert_eq!(wait.timeout, DEFAULT_WAIT_SECS);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for bad in [
            &["config:set", "FOO"][..],
            &["config:set"],
            &["config:unset", "FOO=1"],
            &["scale", "web=-1"],
            &["scale", "web"],
            &["ps:scale", "web=x"],
            &["releases:info", "vX"],
            &["limits:set", "web"],
            &["ps:restart", "a.b"],
            &["nosuchcommand"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        let msg = parse(&["scale", "web=-1"]).unwrap_err().to_string();
        assert!(msg.contains("0 or more"), "{msg}");
        let msg = parse(&["config:set", "FOO"]).unwrap_err().to_string();
        assert!(msg.contains("KEY=VALUE"), "{msg}");
    }

    #[test]
    fn register_login_flag_takes_a_bool() {
        let login = |args: &[&str]| match parse(args).unwrap().command {
            Command::Register { login, .. } => login,
            other => panic!("{other:?}"),
        };
        assert!(login(&["register", "http://x", "--username=u"]));
        assert!(!login(&["register", "http://x", "--login=false"]));
        assert!(login(&["register", "http://x", "--login"]));
        assert!(login(&["register", "http://x", "--login=true"]));
    }

    #[test]
    fn logs_options() {
        match parse(&["logs", "-n", "5", "-f", "--type", "web", "--source", "deis", "-a", "x"]).unwrap().command {
            Command::Logs { lines, follow, proc_type, source, raw } => {
                assert_eq!((lines, follow, raw), (Some(5), true, false));
                assert_eq!((proc_type.as_deref(), source.as_deref()), (Some("web"), Some("deis")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["logs", "--source", "other"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["logs", "-n", "-1"]).unwrap_err().exit_code(), 2);
        let x = format!("{:?}", parse(&["drains"]).unwrap().command);
        assert_eq!(x, format!("{:?}", parse(&["drains:list"]).unwrap().command));
    }

    #[test]
    fn deploy_defaults_to_the_current_directory() {
        match parse(&["deploy", "--no-wait"]).unwrap().command {
            Command::Deploy { dir, wait } => {
                assert_eq!(dir, PathBuf::from("."));
                assert!(wait.no_wait);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_lists_the_commands() {
        let help = Cli::command().render_long_help().to_string();
        for name in [
            "register",
            "login",
            "logout",
            "whoami",
            "auth:regenerate",
            "apps:list",
            "apps:create",
            "apps:info",
            "apps:destroy",
            "config:list",
            "config:set",
            "config:unset",
            "deploy",
            "pull",
            "push",
            "registry:set",
            "builds:list",
            "releases:list",
            "releases:info",
            "releases:rollback",
            "ps:list",
            "ps:scale",
            "ps:restart",
            "nodes:list",
            "updates:apps",
            "updates:create",
            "updates:status",
            "updates:publish",
            "updates:promote",
            "updates:group",
            "updates:pause",
            "updates:resume",
            "updates:instances",
            "domains:list",
            "domains:add",
            "domains:remove",
            "logs",
            "logs:token",
            "drains:list",
            "drains:add",
            "drains:remove",
            "limits:list",
            "limits:set",
            "limits:unset",
            "version",
        ] {
            assert!(help.contains(name), "{name} missing from help:\n{help}");
        }
    }
}
