//! The supervisor of a mount: a small process that mounts, keeps the /dev/fuse descriptor (so
//! the kernel keeps the connection whatever happens to the server), and runs one server at a time.
//! It does no file system work: it reads the kernel's FUSE_INIT once and hands it to each server,
//! and otherwise only waits for signals.
//!
//! - Start (`launch`, in a child of `bfcfs mount`, which has opened the image and built the file
//!   system): mount, read FUSE_INIT, fork the first server (it serves what `bfcfs mount` built,
//!   no exec, no second open of the image), then exec `bfcfs __supervise`, which sheds all of
//!   that memory, waits until the first server answers and supervises it.
//! - Later servers are `bfcfs __serve` of the installed binary, exec'd with the descriptor
//!   inherited.
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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
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

/// A server process, a child of the supervisor (reaped with waitpid).
#[derive(Debug)]
struct Server(u32);

impl Server {
    fn id(&self) -> u32 {
        self.0
    }

    /// Its exit status once it has ended (reaping it), else None.
    fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child with a valid out pointer; WNOHANG never blocks.
        let rc = unsafe { libc::waitpid(self.0 as libc::pid_t, &mut status, libc::WNOHANG) };
        match rc {
            0 => Ok(None),
            r if r > 0 => Ok(Some(ExitStatus::from_raw(status))),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn kill_and_reap(&self) {
        signal(self.0, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: as in `try_wait`, blocking: the child was just killed.
        unsafe { libc::waitpid(self.0 as libc::pid_t, &mut status, 0) };
    }
}

/// The first server, forked by [`launch`] before the supervisor was exec'd.
#[derive(Debug)]
pub struct First {
    /// The mount's /dev/fuse (inherited).
    pub dev: OwnedFd,
    /// The kernel's FUSE_INIT, already read.
    pub init: Vec<u8>,
    pub pid: u32,
    /// The first server's readiness pipe (see [`wait_server`]).
    pub ready: File,
}

/// Clears FD_CLOEXEC on `fd`, so that it survives an exec.
fn inherit(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor number only sets a flag; an unopened one is EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The signals a supervisor waits for (blocked, taken with `sigtimedwait`).
const SIGNALS: [libc::c_int; 5] = [
    libc::SIGCHLD,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
];

/// Starts a supervised mount, in a child of `bfcfs mount` (single-threaded, in its own
/// session; `ready` is the pipe to `bfcfs mount`): mounts, reads FUSE_INIT, forks the first
/// server (which runs `serve_first` on the connection, tells `ready` and the supervisor once it
/// answers, and exits with what `serve_first` returns), records the mount and execs
/// `bfcfs __supervise` in this process meanwhile (the signal mask, blocked from the start,
/// carries over; the exec closes this process's end of `ready`, and `bfcfs mount` returns once
/// the server has answered and that end is closed). Returns only on failure before the first
/// server was forked (the mount is undone).
pub fn launch(
    mut s: Supervised,
    ready: &mut Readiness,
    serve_first: impl FnOnce(super::Attach, &mut Readiness) -> i32,
) -> io::Error {
    let set = match daemon::block(&SIGNALS) {
        Ok(set) => set,
        Err(e) => return e,
    };
    let mnt = s.record.mountpoint.clone();
    let dev = match kernel::fuse_mount(&s.fs_source, &mnt, &s.options) {
        Ok(d) => d,
        Err(e) => return e,
    };
    let forked = (|| {
        let init = takeover::read_init(&dev)?;
        let (srd, swr) = pipe_with(PipeFlags::CLOEXEC)?;
        // SAFETY: this process is single-threaded (the contract of `launch`), so the child may
        // run any code after fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            drop(srd);
            if let Some(fd) = s.keep_fd {
                // SAFETY: the container's lock, inherited from `bfcfs mount`: the supervisor
                // holds it, the server must not; nothing else in this process uses it.
                unsafe { libc::close(fd) };
            }
            // SAFETY: unblocks the signal set blocked above (a valid, initialised set).
            unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
            let Ok(dev) = dev.try_clone() else {
                std::process::exit(1);
            };
            let attach = super::Attach {
                dev,
                init,
                granted: None,
            };
            ready.also(File::from(swr));
            std::process::exit(serve_first(attach, ready));
        }
        drop(swr);
        Ok((init, pid as u32, File::from(srd)))
    })();
    let (init, pid, first_ready) = match forked {
        Ok(x) => x,
        Err(e) => {
            let _ = kernel::umount(&mnt, true);
            return e;
        }
    };
    let rec = &mut s.record;
    rec.supervisor_pid = std::process::id();
    rec.supervisor_start = registry::own_start();
    rec.server_pid = pid;
    rec.mounted_at = registry::now();
    rec.server_started_at = rec.mounted_at;
    if let Err(e) = rec.save() {
        log::warn!("recording the mount in {}: {e}", registry::dir().display());
    }
    let e = exec_supervisor(&s, &dev, &init, pid, &first_ready);
    // Still this process: supervise from here (with the memory of `bfcfs mount`).
    ready.close();
    super::log::init_daemon_log(0, None);
    log::error!("exec of {} __supervise: {e}", s.exe.display());
    let first = First {
        dev,
        init,
        pid,
        ready: first_ready,
    };
    let code = match supervise_with(s, first, set) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("supervisor: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// Replaces this process with `bfcfs __supervise` for the mount of `s` (its record filled in).
fn exec_supervisor(
    s: &Supervised,
    dev: &OwnedFd,
    init: &[u8],
    pid: u32,
    first_ready: &File,
) -> io::Error {
    let spec = match serde_json::to_string(s) {
        Ok(j) => j,
        Err(e) => return io::Error::other(e),
    };
    for fd in [dev.as_raw_fd(), first_ready.as_raw_fd()]
        .into_iter()
        .chain(s.keep_fd)
    {
        if let Err(e) = inherit(fd) {
            return e;
        }
    }
    Command::new(&s.exe)
        .arg("__supervise")
        .arg("--spec")
        .arg(spec)
        .arg("--fuse-fd")
        .arg(dev.as_raw_fd().to_string())
        .arg("--init")
        .arg(hex(init))
        .arg("--first-pid")
        .arg(pid.to_string())
        .arg("--first-ready-fd")
        .arg(first_ready.as_raw_fd().to_string())
        .exec()
}

/// `bfcfs __supervise`: supervises the mount [`launch`] made (its record is in `s`) until it is
/// gone.
pub fn supervise(s: Supervised, first: First) -> io::Result<()> {
    let set = daemon::block(&SIGNALS)?;
    supervise_with(s, first, set)
}

/// Restarts servers until the mount is gone; `set` is [`SIGNALS`], blocked.
fn supervise_with(s: Supervised, first: First, set: libc::sigset_t) -> io::Result<()> {
    if let Some(fd) = s.keep_fd {
        // SAFETY: F_SETFD on a descriptor number only sets a flag; an unopened one is EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mnt = s.record.mountpoint.clone();
    let First {
        dev,
        init,
        pid,
        ready,
    } = first;
    let mut child = Server(pid);
    let mut rec = s.record.clone();
    // The first server tells `bfcfs mount` itself; here its INIT reply is what matters.
    let granted = match wait_server(ready) {
        Ok(g) => g,
        Err(why) => {
            child.kill_and_reap();
            let _ = kernel::umount(&mnt, true);
            rec.remove();
            return Err(io::Error::other(format!("the first server: {why}")));
        }
    };
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
) -> io::Result<Server> {
    let mut pause = Duration::from_millis(50);
    for attempt in 1..=MAX_FAILED_STARTS {
        match start(s, dev, init, granted) {
            Ok(child) => return Ok(child),
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

/// Starts a server that takes `dev` over and waits until it answers.
fn start(s: &Supervised, dev: &OwnedFd, init: &[u8], granted: &[u8]) -> io::Result<Server> {
    let (rd, wr) = pipe_with(PipeFlags::CLOEXEC)?;
    let mut cmd = Command::new(&s.exe);
    cmd.args(&s.server_args)
        .arg("--fuse-fd")
        .arg(dev.as_raw_fd().to_string())
        .arg("--ready-fd")
        .arg(wr.as_raw_fd().to_string())
        .arg("--init")
        .arg(hex(init))
        .arg("--granted")
        .arg(hex(granted));
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
    let child = Server(cmd.spawn()?.id());
    drop(wr);
    let t = Instant::now();
    match wait_server(File::from(rd)) {
        Ok(_) => {
            log::info!(
                "server {} answers ({} ms)",
                child.id(),
                t.elapsed().as_millis()
            );
            Ok(child)
        }
        Err(why) => {
            child.kill_and_reap();
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
