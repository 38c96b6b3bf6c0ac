//! The whole platform embedded in your own program, on parts of your own: the
//! in-memory [`MemoryStore`], the [`TinyLogStore`] and the [`AuditingScheduler`] over
//! the embedded local scheduler. It deploys the hello app, reaches it through the
//! router, reads its log, and shuts down.
//!
//! `cargo run -p deis-examples --example embedded_platform`

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deis_examples::{AuditingScheduler, MemoryStore, TinyLogStore};
use deis_sdk::Platform;
use deis_sdk::client::{Client, LogOptions, pack_source_dir};
use deis_sdk::scheduler::{LocalScheduler, Scheduler};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let data = tempfile::tempdir()?; // builds and scheduler state
    let any_port: SocketAddr = "127.0.0.1:0".parse()?;
    let platform = Platform::builder(data.path())
        .store(MemoryStore::new())
        .log_store(Arc::new(TinyLogStore::new()))
        .scheduler_with(|ctx| async move {
            let local = LocalScheduler::new(ctx.local_config()).await?;
            Ok(Arc::new(AuditingScheduler::new(local)) as Arc<dyn Scheduler>)
        })
        .api(any_port)
        .router(any_port)
        .syslog(any_port)
        .domain("deis.example")
        .start()
        .await?;
    let (api, router) = (platform.api_addr().expect("API on"), platform.router_addr().expect("router on"));
    println!("controller at http://{api}, router at http://{router}");

    let result = deploy_and_visit(&format!("http://{api}"), router).await;
    platform.shutdown().await;
    result
}

/// What a user does: register, create the app, deploy it, visit it, read its log.
async fn deploy_and_visit(api: &str, router: SocketAddr) -> Result<(), Error> {
    let anon = Client::new(api, None)?;
    anon.register("alice", "s3cret", "alice@example.com").await?;
    let client = Client::new(api, Some(anon.login("alice", "s3cret").await?))?;
    client.apps_create(Some("hello")).await?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/hello");
    client.builds_upload_source("hello", pack_source_dir(&source)?).await?;

    let mut up = false;
    for _ in 0..600 {
        up = client.pods_list("hello").await?.iter().any(|p| p.state == "up");
        if up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        return Err("hello.web.1 did not come up within 30 s".into());
    }
    let body = get(router, "hello.deis.example").await?;
    println!("the app answers: {}", body.trim());

    let logs = client.logs("hello", &LogOptions::default()).await?;
    println!("its log:\n{logs}");
    Ok(())
}

/// `GET /` through the router with the app's `Host`; the body.
async fn get(router: SocketAddr, host: &str) -> Result<String, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(router).await?;
    conn.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(format!("the router answered {response:?}").into()),
    }
}
