//! One-off commands (`deis run`): what a [`SessionSpec`] for an app's current release is.
//!
//! The environment and the artifact come from the same code that builds the
//! scheduler's [`AppSpec`](crate::scheduler::AppSpec), so a `deis run` sees exactly what
//! the app's units see (minus the per-unit `PORT` and `DEIS_UNIT`).

use super::reconcile::{image_cmd_type, process_types};
use super::{CommandError, Controller, ControllerError, Result};
use crate::model::{AppName, User};
use crate::tty::SessionSpec;

/// Most arguments a command may have.
pub const MAX_COMMAND_ARGS: usize = 1024;
/// Largest command, all arguments together, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Checks a command line: not empty, within [`MAX_COMMAND_ARGS`] and
/// [`MAX_COMMAND_BYTES`], no NUL bytes. Errors are the Workflow texts where one exists.
pub fn validate_command(command: &[String]) -> std::result::Result<(), CommandError> {
    if command.is_empty() || command.iter().all(|a| a.trim().is_empty()) {
        return Err(CommandError::Missing);
    }
    if command.len() > MAX_COMMAND_ARGS {
        return Err(CommandError::TooManyArgs { max: MAX_COMMAND_ARGS });
    }
    if command.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLong { max: MAX_COMMAND_BYTES });
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(CommandError::NulByte);
    }
    Ok(())
}

impl Controller {
    /// The session that runs `command` in the environment of `app`'s current release,
    /// for `user` (owner or admin, else 403).
    ///
    /// `proc_type` picks the process type whose environment is used; `None` means
    /// `web`, or the only/first type the build has when it has no `web`. The environment
    /// is the release's config plus `DEIS_APP` and `DEIS_RELEASE`; the artifact is the
    /// release's build (unpacked source directory or image).
    ///
    /// Errors: [`ControllerError::Command`] for an empty or oversized command;
    /// [`ControllerError::NoBuildToRun`] before the first build;
    /// [`ControllerError::UnknownProcessType`] for a type the build does not have.
    pub async fn session_spec(
        &self,
        user: &User,
        app: &AppName,
        command: Vec<String>,
        tty: bool,
        proc_type: Option<&str>,
    ) -> Result<SessionSpec> {
        validate_command(&command)?;
        let (app_record, rev) = self.app_for(user, app).await?;
        let ctx = self.context(app_record, rev).await?;
        let Some(build) = ctx.build.as_ref() else {
            return Err(ControllerError::NoBuildToRun);
        };
        let types = process_types(build);
        let proc_type = match proc_type {
            Some(t) => match types.keys().find(|known| **known == *t) {
                Some(known) => known.clone(),
                None => return Err(ControllerError::UnknownProcessType { proc_type: t.to_string() }),
            },
            None => match types.keys().find(|known| **known == "web") {
                Some(web) => web.clone(),
                None => types.keys().next().cloned().unwrap_or_else(image_cmd_type),
            },
        };
        let spec = self.spec_with(&ctx.app, &ctx.current, &ctx.config, build).await?;
        // The session runs as a unit of its process type would: same limits.
        let limits = spec.processes.get(&proc_type).map(|p| p.limits).unwrap_or_default();
        let mut env = spec.env;
        env.insert("DEIS_APP".into(), ctx.app.id.to_string());
        env.insert("DEIS_RELEASE".into(), format!("v{}", ctx.current.version));
        Ok(SessionSpec {
            app: ctx.app.id,
            proc_type,
            artifact: spec.artifact,
            release: ctx.current.version,
            env,
            command,
            tty,
            size: None,
            user: user.username.clone(),
            identity: spec.identity,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_are_checked() {
        let msg = |c: &[&str]| validate_command(&cmd(c)).unwrap_err().to_string();
        assert_eq!(validate_command(&[]), Err(CommandError::Missing));
        assert_eq!(msg(&[]), "command is a required field");
        assert_eq!(msg(&["  "]), "command is a required field");
        assert!(msg(&["a\0b"]).contains("NUL"));
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        assert!(msg(&[&long]).contains("longer than"));
        assert!(validate_command(&cmd(&["sh", "-c", "exit 7"])).is_ok());
    }
}
