//! `certs:*`: TLS certificates served by the router for your apps' domains.

use std::path::Path;

use deis_core::CertificateView;

use super::{CliError, Ctx, Result};
use crate::output;

/// `deis certs:list`.
pub async fn list(ctx: &Ctx) -> Result {
    let (client, _) = ctx.client()?;
    let certs = client.certs_list().await?;
    if ctx.emit(&certs)? {
        return Ok(());
    }
    if certs.is_empty() {
        println!("No certs: add one with `deis certs:add NAME cert.pem key.pem`");
        return Ok(());
    }
    let mut rows =
        vec![["Name", "Common Name", "SubjectAltName", "Expires", "Fingerprint", "Domains"].map(String::from).to_vec()];
    for c in &certs {
        rows.push(vec![
            c.name.clone(),
            c.common_name.clone(),
            c.san.join(","),
            expiry(c),
            short_fingerprint(&c.fingerprint),
            if c.domains.is_empty() { "-".into() } else { c.domains.join(",") },
        ]);
    }
    print!("{}", output::table(&rows, "  "));
    Ok(())
}

/// `deis certs:add NAME CERT KEY`.
pub async fn add(ctx: &Ctx, name: &str, cert: &Path, key: &Path) -> Result {
    let certificate = read_pem(cert, deis_core::MAX_CERT_CHAIN_BYTES)?;
    let key_pem = read_pem(key, deis_core::MAX_CERT_KEY_BYTES)?;
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Adding SSL endpoint {name}... "));
    let added = client.certs_add(name, &certificate, &key_pem).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&added)? {
        println!("done");
        print!("{}", details(&added));
    }
    Ok(())
}

/// `deis certs:info NAME`.
pub async fn info(ctx: &Ctx, name: &str) -> Result {
    let (client, _) = ctx.client()?;
    let cert = client.certs_info(name).await?;
    if !ctx.emit(&cert)? {
        println!("=== {name} Certificate");
        print!("{}", details(&cert));
    }
    Ok(())
}

/// `deis certs:remove NAME`.
pub async fn remove(ctx: &Ctx, name: &str) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Removing {name}... "));
    client.certs_remove(name).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "removed": name }))? {
        println!("done");
    }
    Ok(())
}

/// `deis certs:attach NAME DOMAIN`.
pub async fn attach(ctx: &Ctx, name: &str, domain: &str) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Attaching certificate {name} to domain {domain}... "));
    client.certs_attach(name, domain).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "attached": name, "domain": domain }))? {
        println!("done");
    }
    Ok(())
}

/// `deis certs:detach NAME DOMAIN`.
pub async fn detach(ctx: &Ctx, name: &str, domain: &str) -> Result {
    let (client, _) = ctx.client()?;
    ctx.progress(format!("Detaching certificate {name} from domain {domain}... "));
    client.certs_detach(name, domain).await.inspect_err(|_| ctx.say(""))?;
    if !ctx.emit(&serde_json::json!({ "detached": name, "domain": domain }))? {
        println!("done");
    }
    Ok(())
}

fn read_pem(path: &Path, max: usize) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > max as u64 {
        return Err(CliError::Usage(format!("{} is larger than {max} bytes: is it a PEM file?", path.display())));
    }
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

fn expiry(c: &CertificateView) -> String {
    if c.expired { format!("{} (expired)", c.expires) } else { c.expires.to_string() }
}

fn short_fingerprint(f: &str) -> String {
    if f.len() > 23 { format!("{}...", &f[..23]) } else { f.to_string() }
}

fn details(c: &CertificateView) -> String {
    output::fields(&[
        ("Common Name(s)", c.common_name.clone()),
        ("SubjectAltName(s)", c.san.join(", ")),
        ("Expires", expiry(c)),
        ("Starts", c.starts.to_string()),
        ("Fingerprint", c.fingerprint.clone()),
        ("Subject", c.subject.clone()),
        ("Issuer", c.issuer.clone()),
        ("Domains", if c.domains.is_empty() { "No connected domains".into() } else { c.domains.join(", ") }),
        ("Owner", c.owner.clone()),
    ])
}
