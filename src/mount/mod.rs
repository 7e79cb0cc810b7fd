//! Mounting: turning a FUSE file system into a kernel mount and serving it until it is unmounted.
//!
//! ```text
//! options    `-o` parsing and the fuser Config
//! kernel     mount(2) on /dev/fuse, umount2(2), fusermount3 -u
//! daemon     fork of the server, readiness pipe, signals that unmount
//! log        stderr (foreground) or syslog (daemon) logging
//! mountinfo  /proc/self/mountinfo: what is mounted where
//! ```
pub mod daemon;
pub mod kernel;
pub mod log;
pub mod mountinfo;
pub mod options;

use std::io;
use std::path::Path;

use fuser::{Filesystem, Session};

pub use daemon::{fork_server, wait_ready, Forked, Readiness};
pub use kernel::{unmount, UnmountError};
pub use options::{MountOptions, OptionError, DEFAULT_CACHE_SIZE};

use daemon::Unmount;

/// Mounts `fs` from `source` at `mountpoint` and serves until it is unmounted. `ready` runs once
/// the kernel has completed the INIT handshake, i.e. once requests to the mountpoint are answered.
/// SIGTERM, SIGINT and SIGHUP unmount (lazily if the mount is busy), which ends the serving loop.
/// `notifier` (from `BfcFs::notifier_slot`) gets the session's notifier to tell the kernel about
/// changes it did not ask for.
///
/// As root bfcfs mounts /dev/fuse itself and hands the fd to fuser (`Session::from_fd`), so the
/// server never unmounts by path when it ends: after an external `umount`, fuser 0.18's own
/// end-of-session unmount would hit whatever was mounted at the same path next. Other users go
/// through fusermount3 (fuser's `Session::new`).
pub fn serve<FS: Filesystem>(
    fs: FS,
    notifier: Option<crate::fs::notify::Slot>,
    source: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(),
) -> io::Result<()> {
    // Block the signals before any thread exists, so every fuser thread inherits the mask and only
    // the waiter below receives them.
    let signals = daemon::block_signals()?;
    let config = opts.fuser_config(source);
    let mnt = mountpoint.to_path_buf();
    let (session, unmount) = match kernel::fuse_mount(source, mountpoint, opts) {
        Ok(fd) => match Session::from_fd(fs, fd, config.acl, config.clone()) {
            Ok(s) => (s, Unmount::Path),
            Err(e) => {
                let _ = kernel::umount(mountpoint, true);
                return Err(e);
            }
        },
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mut s = Session::new(fs, mountpoint, &config)?;
            let u = s.unmount_callable();
            (s, Unmount::Fuser(u))
        }
        Err(e) => return Err(e),
    };
    if let Some(slot) = notifier {
        slot.start(session.notifier())?;
    }
    std::thread::Builder::new()
        .name("bfcfs-signals".into())
        .spawn(move || daemon::wait_and_unmount(signals, unmount, &mnt))?;
    ready();
    session.run()
}
