//! `keys:*`, `perms:*`, `users:*`: SSH keys, collaborators, administrators, users.

use std::path::PathBuf;

use super::{CliError, Ctx, Result};
use crate::output;

/// The public keys `keys:add` looks for when given no path, in order.
const DEFAULT_KEYS: [&str; 3] = ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"];

/// `deis keys:list`.
pub async fn keys_list(ctx: &Ctx) -> Result {
    let (client, p) = ctx.client()?;
    let keys = client.keys_list().await?;
    if ctx.emit(&keys)? {
        return Ok(());
    }
    println!("=== {} Keys", p.username);
    if keys.is_empty() {
        println!("No keys: add one with `deis keys:add ~/.ssh/id_ed25519.pub`");
    }
    let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![k.id.clone(), k.fingerprint.clone()]).collect();
    print!("{}", output::table(&rows, "  "));
    Ok(())
}

/// `deis keys:add [PATH] [--id ID]`.
pub async fn keys_add(ctx: &Ctx, path: Option<PathBuf>, id: Option<String>) -> Result {
    let path = match path {
        Some(p) => p,
        None => {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            DEFAULT_KEYS.iter().map(|k| home.join(".ssh").join(k)).find(|p| p.is_file()).ok_or_else(|| {
                CliError::Usage(
                    "no public key found in ~/.ssh (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub): give its path, \
                     or make one with `ssh-keygen -t ed25519`"
                        .into(),
                )
            })?
        }
    };
    let meta = std::fs::metadata(&path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > deis_core::MAX_PUBLIC_KEY_BYTES as u64 {
        return Err(CliError::Usage(format!("{} is too large for a public key", path.display())));
    }
    let public =
        std::fs::read_to_string(&path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    let parsed = deis_core::PublicKey::parse(&public)
        .map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.message)))?;
    let id = id.or_else(|| Some(parsed.comment.clone()).filter(|c| !c.is_empty())).ok_or_else(|| {
        CliError::Usage(format!("{} has no comment to name the key by: pass --id NAME", path.display()))
    })?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Uploading {} to deis... ", path.display()));
    let key = client.keys_add(&id, &public).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&key)? {
        println!("done, {} ({})", key.id, key.fingerprint);
    }
    Ok(())
}

/// `deis keys:remove ID`.
pub async fn keys_remove(ctx: &Ctx, id: &str) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Removing {id} SSH Key... "));
    client.keys_remove(id).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "removed": id }))? {
        println!("done");
    }
    Ok(())
}

/// `deis perms:list [--admin]`.
pub async fn perms_list(ctx: &Ctx, admin: bool) -> Result {
    let (client, _) = ctx.client()?;
    let (title, users) = if admin {
        ("Administrators".to_string(), client.admins_list().await?)
    } else {
        let app = ctx.app()?;
        (format!("{app}'s Users"), client.perms_list(&app).await?)
    };
    if ctx.emit(&users)? {
        return Ok(());
    }
    println!("=== {title}");
    for u in &users {
        println!("{u}");
    }
    Ok(())
}

/// `deis perms:create USER [--admin]`.
pub async fn perms_create(ctx: &Ctx, username: &str, admin: bool) -> Result {
    let (client, _) = ctx.client()?;
    if admin {
        ctx.progress(format!("Adding {username} to system administrators... "));
        client.admins_create(username).await.inspect_err(|_| ctx.say(""))?;
    } else {
        let app = ctx.app()?;
        ctx.progress(format!("Adding {username} to {app} collaborators... "));
        client.perms_create(&app, username).await.inspect_err(|_| ctx.say(""))?;
    }
    if !ctx.emit(&serde_json::json!({ "added": username, "admin": admin }))? {
        println!("done");
    }
    Ok(())
}

/// `deis perms:delete USER [--admin]`.
pub async fn perms_delete(ctx: &Ctx, username: &str, admin: bool) -> Result {
    let (client, _) = ctx.client()?;
    if admin {
        ctx.progress(format!("Removing {username} from system administrators... "));
        client.admins_delete(username).await.inspect_err(|_| ctx.say(""))?;
    } else {
        let app = ctx.app()?;
        ctx.progress(format!("Removing {username} from {app} collaborators... "));
        client.perms_delete(&app, username).await.inspect_err(|_| ctx.say(""))?;
    }
    if !ctx.emit(&serde_json::json!({ "removed": username, "admin": admin }))? {
        println!("done");
    }
    Ok(())
}

/// `deis users:list`.
pub async fn users_list(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let users = client.users_list().await?;
    if ctx.emit(&users)? {
        return Ok(());
    }
    println!("=== Users (*=admin)");
    for u in &users {
        let star = if u.is_superuser { "*" } else { " " };
        let disabled = u.extra.get("is_active").and_then(|a| a.as_bool()) == Some(false);
        println!("{star}{}{}", u.username, if disabled { " (disabled)" } else { "" });
    }
    Ok(())
}

/// `deis users:enable USER` / `users:disable USER`.
pub async fn users_set_active(ctx: &Ctx, username: &str, active: bool) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("{} {username}... ", if active { "Enabling" } else { "Disabling" }));
    client.users_set_active(username, active).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "username": username, "active": active }))? {
        println!("done");
    }
    Ok(())
}
