//! The SSH side of the builder: host key, public-key authentication against the keys
//! users registered, and exec requests for git's push and fetch services only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deis_core::User;
use deis_core::controller::Controller;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, ssh_key};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};

use super::command::{self, GitCommand};
use super::push::{ClientIo, Pushes};

/// Most channels one connection may have open (a git client opens one).
const MAX_CHANNELS: usize = 4;

/// Loads the host key from `path`, or makes an Ed25519 one there (mode 0600) at
/// first start.
pub(crate) fn host_key(path: &Path) -> std::io::Result<PrivateKey> {
    if path.exists() {
        return PrivateKey::read_openssh_file(path)
            .map_err(|e| std::io::Error::other(format!("reading the builder host key {}: {e}", path.display())));
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(format!("random seed: {e}")))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key.to_openssh(ssh_key::LineEnding::LF).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    tracing::info!(path = %path.display(), "builder host key created");
    Ok(key)
}

/// One SSH connection.
pub(crate) struct Connection {
    pub(crate) controller: Arc<Controller>,
    pub(crate) pushes: Arc<Pushes>,
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// Set once the client authenticated (the handshake timeout checks it).
    pub(crate) authenticated: Arc<AtomicBool>,
    pub(crate) user: Option<User>,
    pub(crate) channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    async fn user_of(&self, key: &ssh_key::PublicKey) -> Option<User> {
        let blob = key.to_bytes().ok()?;
        match self.controller.user_by_key(&blob).await {
            Ok(user) => user,
            Err(e) => {
                tracing::warn!(error = %e, "builder: looking up a key failed");
                None
            }
        }
    }

    /// Ends a channel with one error line on stderr and exit status 1.
    fn refuse(&mut self, channel: ChannelId, message: &str, session: &mut Session) -> Result<(), russh::Error> {
        self.channels.remove(&channel);
        session.extended_data(channel, 1, format!("error: {message}\n").into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(&mut self, _user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        // Unknown keys are turned down before the client signs with them, so it tries
        // its next key.
        Ok(if self.user_of(offer.public_key).await.is_some() { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(&mut self, _user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        match self.user_of(key.public_key).await {
            Some(user) => {
                tracing::debug!(user = %user.username, peer = ?self.peer, "builder: authenticated");
                self.user = Some(user);
                self.authenticated.store(true, Ordering::Release);
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(peer = ?self.peer, "builder: unknown key refused");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let who = self.user.as_ref().map_or("you", |u| u.username.as_str());
        let message = format!("hi {who}: this is the Deis builder, no shells here; deploy with `git push deis main`");
        self.refuse(channel, &message, session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        self.refuse(channel, &command::CommandError::NotGit.to_string(), session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let (Some(user), true) = (self.user.clone(), self.channels.contains_key(&channel)) else {
            return self.refuse(channel, "not authenticated", session);
        };
        let command: GitCommand = match command::parse(data) {
            Ok(c) => c,
            Err(e) => return self.refuse(channel, &e.to_string(), session),
        };
        let Some(ch) = self.channels.remove(&channel) else {
            return Ok(());
        };
        let pushes = self.pushes.clone();
        tokio::spawn(async move {
            tracing::info!(user = %user.username, app = %command.app, service = command.service.subcommand(), "builder: serving");
            let (mut read, write) = ch.split();
            let io = ClientIo {
                input: read.make_reader(),
                output: write.make_writer(),
                errors: write.make_writer_ext(Some(1)),
            };
            let code = pushes.serve(&user, &command, io).await;
            let _ = write.exit_status(code).await;
            let _ = write.eof().await;
            let _ = write.close().await;
        });
        Ok(())
    }
}
