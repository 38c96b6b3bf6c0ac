//! What a child does between fork and exec: the steps [`SpawnSpec`](super::SpawnSpec)
//! asks for, in a fixed order.
//!
//! 1. new session, controlling terminal;
//! 2. join the unit's cgroups (writing `0` to `cgroup.procs`, while still privileged);
//! 3. a mount namespace of its own (with a user namespace first when we are not root):
//!    every mount made private, a fresh `tmpfs` on `/tmp`, and the platform's data
//!    directory covered by an empty `tmpfs` in which only the app's build directory
//!    shows, read-only, at its usual path; then `chdir` into it again, since the
//!    working directory still points into the writable original;
//! 4. capabilities dropped from the bounding set (while we may);
//! 5. the app's identity: no supplementary groups, then gid, then uid;
//! 6. `no_new_privs`; every capability cleared;
//! 7. the parent-death signal, last: the kernel clears it whenever the credentials
//!    change.
//!
//! Each step is a few raw syscalls on data prepared before the fork (paths as
//! `CString`s, descriptors already open): async-signal-safe, no allocation, no locks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::process::{Pid, Signal};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

/// Bytes a `uid_map` / `gid_map` line may take (`4294967295 4294967295 1`).
pub(crate) const MAP_LINE: usize = 32;

/// A fixed-size line for `/proc/self/{uid,gid}_map`, built before the fork.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapLine {
    buf: [u8; MAP_LINE],
    len: usize,
}

impl MapLine {
    /// `<id> <id> 1`: the id maps to itself.
    pub(crate) fn identity(id: u32) -> Self {
        let text = format!("{id} {id} 1");
        let mut buf = [0u8; MAP_LINE];
        buf[..text.len()].copy_from_slice(text.as_bytes());
        Self { buf, len: text.len() }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// One thing the child does between fork and exec (see the module docs). Each must be
/// async-signal-safe and must not allocate.
#[derive(Debug)]
pub(crate) enum Step {
    /// `setsid`: leader of a new session and process group.
    NewSession,
    /// `TIOCSCTTY` on stdin (by now the terminal's slave): the session's controlling
    /// terminal, so it gets `SIGHUP`, `SIGWINCH` and job control.
    ControllingTerminal,
    /// `PR_SET_PDEATHSIG(SIGKILL)`, then fails if `parent` is gone already (it died
    /// before the request took effect: nobody would kill us).
    DieWithParent { parent: Pid },
    /// Writes `0` (this process) to a `cgroup.procs` opened before the fork.
    JoinCgroup { procs: OwnedFd },
    /// `unshare(CLONE_NEWNS)`: a mount namespace of our own (we are root).
    NewMountNamespace,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNS)` and our own uid and gid mapped to
    /// themselves: a mount namespace without privileges.
    NewUserNamespace { uid: MapLine, gid: MapLine },
    /// Opens `path` (`O_PATH`) and puts it on descriptor `slot` (one of ours, open
    /// since before the fork, that it replaces).
    Reopen { path: CString, slot: RawFd },
    /// Makes every mount private, so ours don't propagate back out.
    PrivateMounts,
    /// A fresh `tmpfs` (mode 1777) on `path`.
    Tmpfs { path: CString, options: CString },
    /// `mkdir path` (an existing one is fine).
    Mkdir { path: CString, mode: u32 },
    /// Bind-mounts the directory open as `source` (a `/proc/self/fd/N` path) on
    /// `target`; with `read_only`, remounts it read-only with those flags (the
    /// source's own, which a user namespace may not drop).
    Bind { source: CString, target: CString, read_only: Option<MountFlags> },
    /// `chdir`.
    Chdir { path: CString },
    /// Drops every capability from the bounding set; without the right to (an
    /// unprivileged daemon: nothing to drop), does nothing.
    DropBoundingSet,
    /// `setgroups(0, NULL)`, `setresgid`, `setresuid`.
    Identity { uid: u32, gid: u32 },
    /// `PR_SET_NO_NEW_PRIVS`: no setuid bit or file capability grants anything.
    NoNewPrivs,
    /// Empties the effective, permitted, inheritable and ambient capability sets.
    ClearCapabilities,
}

fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return Err(io::Error::from(rustix::io::Errno::IO)),
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn write_proc(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
    write_all(&fd, bytes)
}

impl Step {
    pub(crate) fn run(&self) -> io::Result<()> {
        match self {
            Step::NewSession => rustix::process::setsid().map(drop)?,
            Step::ControllingTerminal => rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?,
            Step::DieWithParent { parent } => {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                if rustix::process::getppid() != Some(*parent) {
                    return Err(io::Error::from(rustix::io::Errno::SRCH));
                }
            }
            Step::JoinCgroup { procs } => write_all(procs, b"0")?,
            // SAFETY (both unshares): the child of a fork has one thread and shares no
            // descriptor table; new mount and user namespaces change no descriptor.
            Step::NewMountNamespace => unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }?,
            Step::NewUserNamespace { uid, gid } => {
                unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }?;
                write_proc(c"/proc/self/setgroups", b"deny")?;
                write_proc(c"/proc/self/uid_map", uid.bytes())?;
                write_proc(c"/proc/self/gid_map", gid.bytes())?;
            }
            Step::PrivateMounts => {
                rustix::mount::mount_change(c"/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE)?
            }
            Step::Reopen { path, slot } => {
                let opened = rustix::fs::open(
                    path.as_c_str(),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                // SAFETY: `slot` is a descriptor the parent keeps open until after the
                // fork, so it is open in this child too; `ManuallyDrop` leaves it open
                // (dup3 replaces what it refers to).
                let mut target = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(*slot) });
                rustix::io::dup3(&opened, &mut target, rustix::io::DupFlags::CLOEXEC)?;
            }
            Step::Tmpfs { path, options } => rustix::mount::mount(
                c"tmpfs",
                path.as_c_str(),
                c"tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                Some(options.as_c_str()),
            )?,
            Step::Mkdir { path, mode } => match rustix::fs::mkdir(path.as_c_str(), Mode::from_raw_mode(*mode)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            },
            Step::Bind { source, target, read_only } => {
                rustix::mount::mount_bind(source.as_c_str(), target.as_c_str())?;
                if let Some(flags) = read_only {
                    rustix::mount::mount_remount(
                        target.as_c_str(),
                        MountFlags::BIND | MountFlags::RDONLY | *flags,
                        c"",
                    )?;
                }
            }
            Step::Chdir { path } => rustix::process::chdir(path.as_c_str())?,
            Step::DropBoundingSet => {
                for cap in 0..64u32 {
                    match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(1 << cap))
                    {
                        // Past the last capability this kernel knows.
                        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                        // Not ours to drop: we hold no CAP_SETPCAP, so none to pass on.
                        Err(rustix::io::Errno::PERM) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Step::Identity { uid, gid } => {
                let (uid, gid) = (rustix::process::Uid::from_raw(*uid), rustix::process::Gid::from_raw(*gid));
                rustix::thread::set_thread_groups(&[])?;
                rustix::thread::set_thread_res_gid(gid, gid, gid)?;
                rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            }
            Step::NoNewPrivs => rustix::thread::set_no_new_privs(true)?,
            Step::ClearCapabilities => {
                let none = CapabilitySet::empty();
                rustix::thread::set_capabilities(
                    None,
                    CapabilitySets { effective: none, permitted: none, inheritable: none },
                )?;
                rustix::thread::clear_ambient_capability_set()?;
            }
        }
        Ok(())
    }
}

/// The mount flags of the file system holding `fd` that a read-only bind remount must
/// keep (a user namespace may not clear them).
pub(crate) fn locked_flags(fd: impl AsFd) -> MountFlags {
    use rustix::fs::StatVfsMountFlags as S;
    let Ok(st) = rustix::fs::fstatvfs(fd) else { return MountFlags::NOSUID | MountFlags::NODEV };
    let f = st.f_flag;
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV;
    for (s, m) in [
        (S::NOEXEC, MountFlags::NOEXEC),
        (S::NOATIME, MountFlags::NOATIME),
        (S::NODIRATIME, MountFlags::NODIRATIME),
        (S::RELATIME, MountFlags::RELATIME),
    ] {
        if f.contains(s) {
            flags |= m;
        }
    }
    flags
}
