//! The whole platform embedded in your own program: store, local scheduler,
//! controller API and router from `deis_sdk::daemon`, driven by the typed client.
//!
//! `cargo run -p deis-examples --example embedded_platform`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use deis_sdk::Platform;
use deis_sdk::client::{Client, pack_source_dir};

/// GET / through the router with the app's Host header.
fn get_via_router(router: SocketAddr, host: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(router)?;
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = std::env::temp_dir().join(format!("deis-embedded-{}", std::process::id()));
    let daemon = Platform::builder(&data)
        .api("127.0.0.1:0".parse::<std::net::SocketAddr>()?)
        .router("127.0.0.1:0".parse::<std::net::SocketAddr>()?)
        .syslog("127.0.0.1:0".parse::<std::net::SocketAddr>()?)
        .domain("deis.example")
        .start()
        .await?;
    let (api, router) = (daemon.api_addr().unwrap(), daemon.router_addr().unwrap());
    println!("controller at http://{api}, router at http://{router}");

    let anon = Client::new(&format!("http://{api}"), None)?;
    anon.register("alice", "s3cret", "alice@example.com").await?;
    let token = anon.login("alice", "s3cret").await?;
    let client = Client::new(&format!("http://{api}"), Some(token))?;

    client.apps_create(Some("hello")).await?;
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/hello");
    let build = client.builds_upload_source("hello", pack_source_dir(&hello)?).await?;
    println!("deployed {build:?}");

    for _ in 0..200 {
        if client.pods_list("hello").await?.iter().any(|p| p.state == "up") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = tokio::task::spawn_blocking(move || get_via_router(router, "hello.deis.example")).await??;
    println!("the app answers: {}", body.trim());

    daemon.shutdown().await;
    std::fs::remove_dir_all(&data).ok();
    Ok(())
}
