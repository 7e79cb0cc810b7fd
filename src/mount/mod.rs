//! Mounting: turning a FUSE file system into a kernel mount and serving it until it is unmounted.
//!
//! ```text
//! options    `-o` parsing and the fuser Config
//! kernel     mount(2) on /dev/fuse, umount2(2), fusermount3 -u
//! daemon     fork of the server, readiness pipe, signals that unmount
//! supervisor holds /dev/fuse, starts servers, restarts them (docs/restart.md)
//! takeover   a server on a connection it did not INIT; graceful handover
//! registry   /run/bfcfs/mounts: who serves which mount
//! log        stderr (foreground) or syslog (daemon) logging
//! malloc     glibc settings that return a server's freed buffers
//! mountinfo  /proc/self/mountinfo: what is mounted where
//! ```
pub mod daemon;
pub mod kernel;
pub mod log;
pub mod malloc;
pub mod mountinfo;
pub mod options;
pub mod registry;
pub mod supervisor;
pub mod takeover;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use fuser::{Filesystem, Session};

pub use daemon::{fork_server, wait_ready, Forked, Readiness};
pub use kernel::{unmount, UnmountError};
pub use options::{MountOptions, OptionError, DEFAULT_CACHE_SIZE};
pub use supervisor::Supervised;

use daemon::Unmount;

/// Mounts `fs` from `source` at `mountpoint` and serves until it is unmounted. `ready` runs once
/// the kernel has completed the INIT handshake, i.e. once requests to the mountpoint are answered.
/// SIGTERM, SIGINT and SIGHUP unmount (lazily if the mount is busy), which ends the serving loop.
/// `hooks` (from `BfcFs::hooks`) get the session's notifier (to tell the kernel about changes
/// it did not ask for) and its /dev/fuse (to register passthrough backing files).
///
/// As root bfcfs mounts /dev/fuse itself and hands the fd to fuser (`Session::from_fd`), so the
/// server never unmounts by path when it ends: after an external `umount`, fuser 0.18's own
/// end-of-session unmount would hit whatever was mounted at the same path next. Other users go
/// through fusermount3 (fuser's `Session::new`).
pub fn serve<FS: Filesystem>(
    fs: FS,
    hooks: crate::fs::Hooks,
    source: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(),
) -> io::Result<()> {
    malloc::tune_for_serving();
    // Block the signals before any thread exists, so every fuser thread inherits the mask and only
    // the waiter below receives them.
    let signals = daemon::block_signals()?;
    let config = opts.fuser_config(source);
    let mnt = mountpoint.to_path_buf();
    let (session, unmount) = match kernel::fuse_mount(source, mountpoint, opts) {
        Ok(fd) => match device_for(&hooks, &fd)
            .and_then(|()| Session::from_fd(fs, fd, config.acl, config.clone()))
        {
            Ok(s) => (s, Unmount::Path),
            Err(e) => {
                let _ = kernel::umount(mountpoint, true);
                return Err(e);
            }
        },
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mut s = Session::new(fs, mountpoint, &config)
                .map_err(|e| kernel::explain_user_mount(e, mountpoint, opts))?;
            let u = s.unmount_callable();
            (s, Unmount::Fuser(u))
        }
        Err(e) => return Err(e),
    };
    hooks.notifier.start(session.notifier())?;
    std::thread::Builder::new()
        .name("bfcfs-signals".into())
        .spawn(move || daemon::wait_and_unmount(signals, unmount, &mnt))?;
    ready();
    session.run()
}

/// Gives the file system a /dev/fuse descriptor of its own (passthrough backing ids are
/// registered and closed through it).
fn device_for(hooks: &crate::fs::Hooks, dev: &OwnedFd) -> io::Result<()> {
    hooks
        .handles
        .set_device(rustix::io::fcntl_dupfd_cloexec(dev, 0)?);
    Ok(())
}

/// The handle journal of the supervised mount whose supervisor is this process's parent (next
/// to its record in `registry::dir`; see `fs::handles`).
fn journal_path() -> std::path::PathBuf {
    let supervisor = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
    registry::journal_of(supervisor as u32)
}

/// What a supervisor hands a server (see `supervisor`): the connection, the kernel's FUSE_INIT,
/// and for a takeover the INIT reply the kernel got from the first server.
#[derive(Debug)]
pub struct Attach {
    pub dev: OwnedFd,
    pub init: Vec<u8>,
    pub granted: Option<Vec<u8>>,
}

/// Serves `fs` on a supervised connection until it is unmounted or handed over (SIGUSR2: stop
/// reading, answer what was read, return Ok). SIGTERM, SIGINT and SIGHUP unmount, as in [`serve`].
pub fn serve_attached<FS: Filesystem>(
    fs: FS,
    hooks: crate::fs::Hooks,
    source: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    a: Attach,
    ready: &mut Readiness,
) -> io::Result<()> {
    malloc::tune_for_serving();
    let Attach { dev, init, granted } = a;
    let signals = daemon::block(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR2])?;
    takeover::install_wake_handler()?;
    let (start, init) = match &granted {
        None => (takeover::Start::First, init),
        Some(g) => (
            takeover::Start::Takeover,
            takeover::takeover_init(&init, g)?,
        ),
    };
    device_for(&hooks, &dev)?;
    if opts.writable {
        let path = journal_path();
        let takeover = start == takeover::Start::Takeover;
        hooks
            .handles
            .keep_journal(&path, takeover)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    let config = opts.fuser_config(source);
    let (session, reply) = takeover::attach(fs, dev, &init, start, config)?;
    hooks.notifier.start(session.notifier())?;
    let handover = takeover::Handover::new(session.as_fd().as_raw_fd());
    let relay: Arc<Mutex<Option<takeover::Relay>>> = Arc::default();
    let r2 = relay.clone();
    let mnt = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("bfcfs-signals".into())
        .spawn(move || loop {
            match daemon::sigwait(&signals) {
                Ok(libc::SIGUSR2) => match handover.stop() {
                    Ok(r) => {
                        *r2.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                        ::log::info!("handing {} over: reading stopped", mnt.display());
                        return;
                    }
                    Err(e) => ::log::error!("handover of {}: {e}", mnt.display()),
                },
                Ok(sig) => {
                    ::log::info!("signal {sig}: unmounting {}", mnt.display());
                    if kernel::umount(&mnt, false).is_err() {
                        let _ = kernel::umount(&mnt, true);
                    }
                }
                Err(e) => {
                    ::log::error!("sigwait: {e}");
                    return;
                }
            }
        })?;
    ready.ready_with(&supervisor::hex(&reply));
    let r = session.run();
    let handed = relay.lock().unwrap_or_else(|e| e.into_inner()).take();
    match handed {
        Some(relay) => {
            relay.finish();
            Ok(())
        }
        None => r,
    }
}
