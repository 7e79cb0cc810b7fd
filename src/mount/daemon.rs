//! The server process: forking it off the command, the readiness pipe between them, and
//! unmounting when SIGTERM, SIGINT or SIGHUP arrives.
//!
//! Lifecycle of `bfcfs mount` without `-f`: the command opens and checks the container (so key and
//! format errors print in the terminal), then forks. The child mounts (fuser's `Session::new` returns
//! only after the kernel's INIT handshake, so the mount answers from then on), writes `s` to the
//! readiness pipe and serves; the parent waits on the pipe and exits 0 on `s`, or prints the child's
//! `f<message>` (or "exited early" on EOF) and fails. No sleeping, no polling.
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use rustix::pipe::{pipe_with, PipeFlags};

use super::kernel;

/// The side of the readiness pipe held by the forked server (or of two pipes: the first server
/// of a supervised mount tells both `bfcfs mount` and its supervisor).
#[derive(Debug)]
pub struct Readiness(Vec<File>);

impl Readiness {
    /// The pipe a supervisor gave this process (see `supervisor`).
    pub fn from_file(f: File) -> Readiness {
        Readiness(vec![f])
    }

    /// Tells `f` too, from now on.
    pub fn also(&mut self, f: File) {
        self.0.push(f);
    }

    fn say(&mut self, msg: &[u8]) {
        for mut f in self.0.drain(..) {
            let _ = f.write_all(msg);
        }
    }

    /// Tells the waiting process that the mount answers, with `detail` after the `s`.
    pub fn ready_with(&mut self, detail: &str) {
        self.say(format!("s{detail}").as_bytes());
    }

    /// Tells the waiting command that the mount answers, and closes the pipe.
    pub fn ready(&mut self) {
        self.say(b"s");
    }

    /// Closes this end without a word (a forked process that must not hold it).
    pub fn close(&mut self) {
        self.0.clear();
    }

    /// Tells the waiting command why the mount failed (if it still waits).
    pub fn failed(&mut self, why: &str) {
        self.say(format!("f{why}").as_bytes());
    }
}

/// Which side of the fork this process is.
#[derive(Debug)]
pub enum Forked {
    /// The command: wait on the pipe with [`wait_ready`].
    Parent(File),
    /// The server: stdio is /dev/null, in its own session; report through the `Readiness`.
    Child(Readiness),
}

/// Forks the server process. Call this before any thread exists (the child gets only the calling
/// thread).
pub fn fork_server() -> io::Result<Forked> {
    let (rd, wr) = pipe_with(PipeFlags::CLOEXEC)?;
    // SAFETY: the process is single-threaded here (documented contract of this function), so the
    // child can run arbitrary Rust code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(rd);
            detach_stdio()?;
            Ok(Forked::Child(Readiness::from_file(File::from(wr))))
        }
        _ => {
            drop(wr);
            Ok(Forked::Parent(File::from(rd)))
        }
    }
}

fn detach_stdio() -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    // Fails harmlessly if already a session leader.
    let _ = rustix::process::setsid();
    Ok(())
}

/// Waits until the server reports: Ok once the mount answers (and every holder of the pipe has
/// closed it: a supervised mount's supervisor does at its exec), else the server's reason.
pub fn wait_ready(mut pipe: File) -> Result<(), String> {
    let mut first = [0u8; 1];
    match pipe.read(&mut first) {
        Ok(1) if first[0] == b's' => {
            let _ = pipe.read_to_end(&mut Vec::new());
            return Ok(());
        }
        Ok(_) => {}
        Err(e) => return Err(format!("waiting for the mount to become ready: {e}")),
    }
    let mut msg = first.to_vec();
    if let Err(e) = pipe.read_to_end(&mut msg) {
        return Err(format!("waiting for the mount to become ready: {e}"));
    }
    match msg.split_first() {
        Some((b's', _)) => Ok(()),
        Some((b'f', why)) => Err(String::from_utf8_lossy(why).into_owned()),
        _ => Err("the mount process exited before the mount was ready".to_string()),
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads it starts later), so
/// that only [`wait_and_unmount`] receives them.
pub fn block_signals() -> io::Result<libc::sigset_t> {
    block(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP])
}

/// Blocks `signals` in the calling thread (and the threads it starts later) and returns them as
/// a set for [`sigwait`] / [`sigtimedwait`].
pub fn block(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it, pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

/// Waits for one of the (blocked) signals in `set`.
pub fn sigwait(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

/// Waits at most `timeout` for one of the (blocked) signals in `set`; None when none came.
pub fn sigtimedwait(
    set: &libc::sigset_t,
    timeout: std::time::Duration,
) -> io::Result<Option<libc::c_int>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: an initialised signal set, a null siginfo pointer (allowed) and a valid timespec.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    if sig >= 0 {
        return Ok(Some(sig));
    }
    match io::Error::last_os_error() {
        e if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => Ok(None),
        e => Err(e),
    }
}

/// How the signal thread unmounts.
pub enum Unmount {
    /// umount2 of the path (bfcfs made the mount itself).
    Path,
    /// fuser's unmounter (the mount went through fusermount3).
    Fuser(fuser::SessionUnmounter),
}

/// Waits for one of the signals in `set`, then unmounts `mnt` (lazily if it is busy), which ends
/// the serving loop.
pub fn wait_and_unmount(set: libc::sigset_t, unmount: Unmount, mnt: &Path) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set blocked in this thread; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        log::error!("sigwait failed: {}", io::Error::from_raw_os_error(rc));
        return;
    }
    log::info!("signal {sig}: unmounting {}", mnt.display());
    let r = match unmount {
        Unmount::Path => kernel::umount(mnt, false),
        Unmount::Fuser(mut u) => u.unmount(),
    };
    if let Err(e) = r {
        log::warn!("unmount {}: {e}; detaching lazily", mnt.display());
        if let Err(e) = kernel::umount(mnt, true) {
            log::error!("lazy unmount {}: {e}", mnt.display());
        }
    }
}
