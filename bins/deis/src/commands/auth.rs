//! `register`, `login`, `logout`, `whoami`, `auth:regenerate`, `version`.

use deis_sdk::client::{Client, TokenTarget, normalize_controller_url};

use super::{CliError, Ctx, Result};
use crate::output;
use crate::profile::{self, Profile};
use crate::prompt;

/// `value`, or asked for on a terminal, or a usage error naming `--flag`.
fn need(value: Option<String>, flag: &str, question: &str, secret: bool) -> Result<String> {
    if let Some(v) = value {
        return Ok(v);
    }
    if !prompt::interactive() {
        return Err(CliError::Usage(format!(
            "--{flag} is required (stdin is not a terminal, so it can't be asked for)"
        )));
    }
    let answer = if secret { prompt::ask_password(question) } else { prompt::ask(question) }
        .map_err(|e| CliError::Failed(format!("cannot read the {flag}: {e}")))?;
    Ok(answer)
}

/// Logs in with the probe first, writes the profile, says so.
async fn login_and_save(ctx: &Ctx, controller: &str, username: &str, password: &str) -> Result {
    let anon = Client::new(controller, None)?;
    anon.check_connection().await?;
    let token = anon.login(username, password).await?;
    let old_limit = profile::load(&ctx.profile_path).ok().flatten().map(|p| p.response_limit);
    let p = Profile {
        username: username.to_string(),
        ssl_verify: true,
        controller: anon.controller_url().to_string(),
        token,
        response_limit: old_limit.unwrap_or(deis_sdk::client::DEFAULT_RESPONSE_LIMIT),
    };
    profile::save(&ctx.profile_path, &p)?;
    if !ctx.emit(&serde_json::json!({"username": p.username, "controller": p.controller}))? {
        println!("Logged in as {username}");
        println!("Configuration file written to {}", ctx.profile_path.display());
    }
    Ok(())
}

/// `deis register URL --username --password --email [--login=BOOL]`.
pub async fn register(
    ctx: &Ctx,
    url: &str,
    username: Option<String>,
    password: Option<String>,
    email: Option<String>,
    login: bool,
) -> Result {
    let controller = normalize_controller_url(url)?;
    let username = need(username, "username", "username: ", false)?;
    deis_core::validate::username(&username).map_err(|e| CliError::Usage(e.message))?;
    let password = need(password, "password", "password: ", true)?;
    deis_core::validate::password(&password).map_err(|e| CliError::Usage(format!("password: {}", e.message)))?;
    let email = match email {
        Some(e) => e,
        None if prompt::interactive() => need(None, "email", "email: ", false)?,
        None => String::new(),
    };
    deis_core::validate::email(&email).map_err(|e| CliError::Usage(e.message))?;

    // An admin already logged in to the same controller registers others with their token.
    let token = profile::load(&ctx.profile_path)
        .ok()
        .flatten()
        .filter(|p| normalize_controller_url(&p.controller).ok().as_deref() == Some(controller.as_str()))
        .map(|p| p.token);
    let client = Client::new(&controller, token)?;
    client.check_connection().await?;
    let user = client
        .register(&username, &password, &email)
        .await
        .map_err(|e| CliError::Failed(format!("registration failed: {e}")))?;
    if ctx.json && !login {
        ctx.emit(&user)?;
    }
    ctx.say(format!("Registered {username}"));
    if login {
        login_and_save(ctx, &controller, &username, &password).await?;
    }
    Ok(())
}

/// `deis login URL --username --password`.
pub async fn login(ctx: &Ctx, url: &str, username: Option<String>, password: Option<String>) -> Result {
    let controller = normalize_controller_url(url)?;
    let username = need(username, "username", "username: ", false)?;
    let password = need(password, "password", "password: ", true)?;
    login_and_save(ctx, &controller, &username, &password).await
}

/// `deis logout`: forgets the token.
pub fn logout(ctx: &Ctx) -> Result {
    let who = profile::load(&ctx.profile_path).ok().flatten().map(|p| p.username);
    let removed = profile::remove(&ctx.profile_path)?;
    match (removed, who) {
        (true, Some(u)) => ctx.say(format!("Logged out as {u}")),
        (true, None) => ctx.say("Logged out"),
        (false, _) => ctx.say("Not logged in"),
    }
    Ok(())
}

/// `deis whoami [--all]`.
pub async fn whoami(ctx: &Ctx, all: bool) -> Result {
    if !all {
        let p = ctx.profile()?;
        if !ctx.emit(&serde_json::json!({"username": p.username, "controller": p.controller}))? {
            println!("You are {} at {}", p.username, p.controller);
        }
        return Ok(());
    }
    let (client, _) = ctx.client()?;
    let user = client.whoami().await?;
    if ctx.emit(&user)? {
        return Ok(());
    }
    let mut pairs = vec![
        ("username", user.username.clone()),
        ("email", user.email.clone()),
        ("is_superuser", user.is_superuser.to_string()),
        ("date_joined", user.date_joined.map(|t| t.to_string()).unwrap_or_default()),
        ("last_login", user.last_login.map(|t| t.to_string()).unwrap_or_default()),
    ];
    for (k, v) in &user.extra {
        if let Some(s) = v.as_str() {
            if !s.is_empty() {
                pairs.push((k.as_str(), s.to_string()));
            }
        } else if v.is_boolean() {
            pairs.push((k.as_str(), v.to_string()));
        }
    }
    print!("{}", output::fields(&pairs));
    Ok(())
}

/// `deis auth:regenerate [-u USER | --all]`.
pub async fn regenerate(ctx: &Ctx, username: Option<String>, all: bool) -> Result {
    let (client, mut p) = ctx.client()?;
    let target = match (username, all) {
        (_, true) => TokenTarget::All,
        (Some(u), false) if u != p.username => TokenTarget::User(u),
        _ => TokenTarget::Own,
    };
    let token = client.regenerate_token(&target).await?;
    match target {
        TokenTarget::Own => {
            let token = token.ok_or_else(|| CliError::Failed("the controller sent no new token".into()))?;
            p.token = token;
            profile::save(&ctx.profile_path, &p)?;
            if !ctx.emit(&serde_json::json!({"username": p.username}))? {
                println!("Token regenerated");
            }
        }
        TokenTarget::User(u) => {
            if !ctx.emit(&serde_json::json!({"username": u, "token": token}))? {
                println!("Token regenerated for {u}");
                if let Some(t) = token {
                    println!("New token: {t}");
                }
            }
        }
        TokenTarget::All => {
            ctx.emit(&serde_json::json!({"all": true}))?;
            ctx.say("All tokens regenerated; your own changed too: log in again with `deis login`");
        }
    }
    Ok(())
}

/// `deis version [--all]`.
pub async fn version(ctx: &Ctx, all: bool) -> Result {
    let client_version = env!("CARGO_PKG_VERSION");
    if !all {
        if !ctx.emit(&serde_json::json!({"client": client_version}))? {
            println!("deis {client_version}");
        }
        return Ok(());
    }
    let p = ctx.profile()?;
    let server = Client::new(&p.controller, None)?.healthz().await?;
    if !ctx.emit(&serde_json::json!({"client": client_version, "controller": p.controller, "server": server}))? {
        println!("deis {client_version}");
        println!(
            "controller {}: API {}, platform {}",
            p.controller,
            server.api_version.as_deref().unwrap_or("unknown"),
            server.platform_version.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}
