//! The supervisor of a mount: a small process that mounts, keeps the /dev/fuse descriptor (so
//! the kernel keeps the connection whatever happens to the server), and runs one server at a time
//! (`bfcfs` itself, exec'd with the descriptor inherited). It does no file system work: it reads
//! the kernel's FUSE_INIT once and hands it to each server, and otherwise only waits for signals.
//!
//! - The server dies (crash, SIGKILL): a new one takes the connection over (`takeover`), and the
//!   kernel sends it again what the dead one had read but not answered.
//! - SIGUSR2 (`bfcfs restart`): the server is asked to hand over (it stops reading, answers what
//!   it read, exits 0), then a new server of the installed binary takes over.
//! - SIGTERM, SIGINT, SIGHUP: unmount (lazily if busy); the server then ends, and so does this.
//! - The mount is gone (unmounted, or the connection aborted): exit once the server has.
//!
//! If the supervisor itself is killed, the kernel closes the connection once the server (the
//! last holder of the descriptor) ends with it: the mount then fails as an unsupervised one does,
//! and `bfcfs umount` clears it.
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::pipe::{pipe_with, PipeFlags};

use super::daemon::{self, Readiness};
use super::options::MountOptions;
use super::registry::{self, Record};
use super::{kernel, takeover};

/// A server that fails to take over this many times in a row ends the mount.
const MAX_FAILED_STARTS: u32 = 5;

/// What a supervisor needs: what to mount where, and how to start a server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Supervised {
    /// Source, mount point and container (the pids and times are filled in here).
    pub record: Record,
    /// The mount's source as mountinfo shows it.
    pub fs_source: PathBuf,
    pub options: MountOptions,
    /// The program of the servers (the installed bfcfs: a restart after an upgrade runs the new
    /// one) and its arguments; the supervisor adds `--fuse-fd`, `--ready-fd`, `--init` and, for
    /// a takeover, `--granted`.
    pub exe: PathBuf,
    pub server_args: Vec<OsString>,
    /// A descriptor inherited from `bfcfs mount` that the supervisor keeps to itself (the
    /// container's lock: held as long as the mount, whichever server runs).
    pub keep_fd: Option<i32>,
}

/// Lower-case hex of `b` (INIT messages on the command line of a server).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of [`hex`] output.
pub fn unhex(s: &str) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("not hex: {s:.40}"));
    if s.len() % 2 != 0 {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Mounts, starts the first server, reports to `ready` once the mount answers, then supervises
/// until the mount is gone.
pub fn supervise(s: Supervised, ready: &mut Readiness) -> io::Result<()> {
    let set = daemon::block(&[
        libc::SIGCHLD,
        libc::SIGUSR2,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
    ])?;
    if let Some(fd) = s.keep_fd {
        // SAFETY: F_SETFD on a descriptor number only sets a flag; an unopened one is EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mnt = s.record.mountpoint.clone();
    let dev = kernel::fuse_mount(&s.fs_source, &mnt, &s.options)?;
    let started = (|| {
        let init = takeover::read_init(&dev)?;
        let (child, granted) = start(&s, &dev, &init, None)?;
        Ok::<_, io::Error>((init, child, granted))
    })();
    let (init, mut child, granted) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = kernel::umount(&mnt, true);
            return Err(e);
        }
    };
    let mut rec = s.record.clone();
    rec.supervisor_pid = std::process::id();
    rec.server_pid = child.id();
    rec.mounted_at = registry::now();
    rec.server_started_at = rec.mounted_at;
    if let Err(e) = rec.save() {
        log::warn!("recording the mount in {}: {e}", registry::dir().display());
    }
    ready.ready();
    let mut handing_over = false;
    loop {
        let sig = daemon::sigtimedwait(&set, Duration::from_secs(1))?;
        match sig {
            Some(libc::SIGUSR2) => {
                log::info!("{}: handing over to a new server", mnt.display());
                handing_over = true;
                signal(child.id(), libc::SIGUSR2);
            }
            Some(libc::SIGTERM | libc::SIGINT | libc::SIGHUP) => {
                log::info!("signal: unmounting {}", mnt.display());
                if kernel::umount(&mnt, false).is_err() {
                    let _ = kernel::umount(&mnt, true);
                }
            }
            _ => {}
        }
        let Some(status) = child.try_wait()? else {
            continue;
        };
        if connection_gone(&dev) {
            log::info!("{} is unmounted; server {status}", mnt.display());
            rec.remove();
            return Ok(());
        }
        if handing_over {
            handing_over = false;
        } else {
            log::warn!(
                "server {} of {} ended ({status}); starting a new one",
                child.id(),
                mnt.display()
            );
        }
        child = restart(&s, &dev, &init, &granted, &mnt)?;
        rec.server_pid = child.id();
        rec.restarts += 1;
        rec.server_started_at = registry::now();
        if let Err(e) = rec.save() {
            log::warn!("recording the mount: {e}");
        }
    }
}

/// Starts a server that takes over; after [`MAX_FAILED_STARTS`] failures the mount is ended
/// (lazily unmounted; returning drops the descriptor, which aborts the connection).
fn restart(
    s: &Supervised,
    dev: &OwnedFd,
    init: &[u8],
    granted: &[u8],
    mnt: &std::path::Path,
) -> io::Result<Child> {
    let mut pause = Duration::from_millis(50);
    for attempt in 1..=MAX_FAILED_STARTS {
        match start(s, dev, init, Some(granted)) {
            Ok((child, _)) => return Ok(child),
            Err(e) => {
                log::error!(
                    "starting a server for {} (attempt {attempt}): {e}",
                    mnt.display()
                );
                std::thread::sleep(pause);
                pause *= 4;
            }
        }
    }
    let _ = kernel::umount(mnt, true);
    Err(io::Error::other(format!(
        "no server could take over {} after {MAX_FAILED_STARTS} attempts; the mount is ended",
        mnt.display()
    )))
}

/// Starts a server on `dev` and waits until it answers; returns it and its INIT reply.
fn start(
    s: &Supervised,
    dev: &OwnedFd,
    init: &[u8],
    granted: Option<&[u8]>,
) -> io::Result<(Child, Vec<u8>)> {
    let (rd, wr) = pipe_with(PipeFlags::CLOEXEC)?;
    let mut cmd = Command::new(&s.exe);
    cmd.args(&s.server_args)
        .arg("--fuse-fd")
        .arg(dev.as_raw_fd().to_string())
        .arg("--ready-fd")
        .arg(wr.as_raw_fd().to_string())
        .arg("--init")
        .arg(hex(init));
    if let Some(g) = granted {
        cmd.arg("--granted").arg(hex(g));
    }
    let inherit = [dev.as_raw_fd(), wr.as_raw_fd()];
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/");
    // SAFETY: between fork and exec the closure makes only async-signal-safe calls (fcntl,
    // sigprocmask) on descriptors and a signal set that it owns or that are open.
    unsafe {
        cmd.pre_exec(move || {
            for fd in inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(wr);
    let t = Instant::now();
    match wait_server(File::from(rd)) {
        Ok(reply) => {
            log::info!(
                "server {} answers ({} ms)",
                child.id(),
                t.elapsed().as_millis()
            );
            Ok((child, reply))
        }
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::other(why))
        }
    }
}

/// A server's report: `s` and the hex of its INIT reply once it serves, `f` and why it failed.
fn wait_server(mut pipe: File) -> Result<Vec<u8>, String> {
    let mut msg = Vec::new();
    pipe.read_to_end(&mut msg)
        .map_err(|e| format!("waiting for the server: {e}"))?;
    match msg.split_first() {
        Some((b's', hex)) => {
            unhex(&String::from_utf8_lossy(hex)).map_err(|e| format!("server report: {e}"))
        }
        Some((b'f', why)) => Err(String::from_utf8_lossy(why).into_owned()),
        _ => Err("the server exited before it served".to_string()),
    }
}

/// Whether the kernel ended the connection (unmounted or aborted): /dev/fuse polls POLLERR.
fn connection_gone(dev: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: dev.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout does not block.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLERR != 0
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped.
        unsafe { libc::kill(pid, sig) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }
}
