//! The builder's connection limits and host key, on a real listener (the pushes
//! themselves are tested end to end with real `git` and OpenSSH in `tests/`).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use deis_core::artifact::ArtifactStore;
use deis_core::controller::{Controller, ControllerConfig, RegistrationMode};
use deis_core::scheduler::{LocalScheduler, LocalSchedulerConfig};
use deis_core::store::RedbStore;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Builder, BuilderConfig};

async fn start(dir: &std::path::Path, config: BuilderConfig) -> Builder {
    let scheduler = LocalScheduler::new(LocalSchedulerConfig::new(dir.join("scheduler"))).await.unwrap();
    let controller = Controller::new(ControllerConfig {
        store: RedbStore::in_memory(),
        scheduler,
        artifacts: ArtifactStore::new(dir.join("builds")),
        domain: "example.test".into(),
        registration: RegistrationMode::Enabled,
        logs: None,
        policy: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Builder::start(listener, controller, dir, config).unwrap()
}

/// Everything the server sends until it closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await.expect("closed");
    got
}

#[tokio::test]
async fn a_client_that_does_not_authenticate_in_time_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = BuilderConfig { handshake_timeout: Duration::from_millis(300), ..BuilderConfig::default() };
    let builder = start(dir.path(), config).await;
    let mut silent = TcpStream::connect(builder.addr()).await.unwrap();
    let got = read_to_close(&mut silent).await;
    assert!(got.starts_with(b"SSH-2.0-deis-builder"), "{:?}", String::from_utf8_lossy(&got));
    builder.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = BuilderConfig { max_connections: 1, ..BuilderConfig::default() };
    let builder = start(dir.path(), config).await;
    let mut first = TcpStream::connect(builder.addr()).await.unwrap();
    let mut banner = [0u8; 8];
    first.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    let mut second = TcpStream::connect(builder.addr()).await.unwrap();
    assert!(read_to_close(&mut second).await.is_empty(), "no greeting past the cap");
    drop(first);
    // The slot is freed: a new connection is greeted again.
    deis_test_support::eventually(Duration::from_secs(10), "a greeting after the first closed", || async {
        let mut c = TcpStream::connect(builder.addr()).await.ok()?;
        let mut b = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut b)).await.ok()?.ok()?;
        (&b == b"SSH-2.0-").then_some(())
    })
    .await;
    builder.shutdown().await;
}

#[tokio::test]
async fn the_host_key_is_made_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), BuilderConfig::default()).await;
    first.shutdown().await;
    let path = dir.path().join("builder/ssh_host_ed25519_key");
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let second = start(dir.path(), BuilderConfig::default()).await;
    second.shutdown().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), key, "the same key after a restart");
}
