//! Serving a FUSE connection that another process opened: the server of a supervised mount gets
//! the /dev/fuse fd from its supervisor, and either completes the kernel's FUSE_INIT (the first
//! server) or takes over a connection whose INIT an earlier server answered (a restart).
//!
//! fuser 0.18's `Session::from_fd` always reads a FUSE_INIT first. So the session is first given
//! one end of a socketpair into which we write that INIT (the kernel's own for the first server;
//! for a takeover the same request with the flags the kernel granted), its reply is read back
//! (and written to /dev/fuse by the first server only), and then `dup2` puts /dev/fuse in the
//! descriptor slot fuser's channel reads and writes: fuser keeps the raw descriptor number (one
//! `File` shared by every reader thread and reply sender, no dup, no clone_fd), so from then on
//! it talks to the kernel. A takeover then asks the kernel to send again the requests the dead
//! server had read but not answered (FUSE_NOTIFY_RESEND, Linux 6.9).
//!
//! A graceful handover (`Handover::stop`) runs the same trick backwards: the slot gets a socket
//! whose read side is shut (fuser's readers see end of file and return), blocked readers are
//! woken by a no-op signal and re-read the slot, and what is still answered (requests already
//! read) goes through the socket to a relay thread that writes it to /dev/fuse.
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding.
const IN_HEADER: usize = 40;
/// fuse_out_header: len, error, unique.
const OUT_HEADER: usize = 16;
const FUSE_INIT: u32 = 26;
/// `fuse_notify_code::FUSE_NOTIFY_RESEND`: a header-only notification.
const FUSE_NOTIFY_RESEND: i32 = 7;
/// fuse_init_in: major, minor, max_readahead, flags, flags2 (after the header).
const INIT_IN_FLAGS: usize = IN_HEADER + 12;
const INIT_IN_FLAGS2: usize = IN_HEADER + 16;
const INIT_IN_MIN: usize = IN_HEADER + 16;
/// fuse_init_out: major, minor, max_readahead, flags, max_background, congestion_threshold,
/// max_write, time_gran, max_pages, map_alignment, flags2 (after the header).
const INIT_OUT_READAHEAD: usize = OUT_HEADER + 8;
const INIT_OUT_FLAGS: usize = OUT_HEADER + 12;
const INIT_OUT_FLAGS2: usize = OUT_HEADER + 32;
const FUSE_INIT_EXT: u32 = 1 << 30;
/// The kernel refuses reads of /dev/fuse into smaller buffers (FUSE_MIN_READ_BUFFER is 8192).
const READ_BUFFER: usize = 1 << 16;
/// Replies relayed during a handover can be as large as a read reply (max_pages × 4 KiB).
const RELAY_BUFFER: usize = 1 << 23;

fn u32_at(b: &[u8], at: usize) -> io::Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| {
            bad(format!(
                "FUSE message of {} bytes has no field at {at}",
                b.len()
            ))
        })
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads the kernel's FUSE_INIT request from a freshly mounted /dev/fuse (the supervisor does
/// this once, before any server runs, and keeps the bytes).
pub fn read_init(dev: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; READ_BUFFER];
    let n = loop {
        match rustix::io::read(dev, &mut buf) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    buf.truncate(n);
    check_init(&buf)?;
    Ok(buf)
}

fn check_init(req: &[u8]) -> io::Result<()> {
    let (len, opcode) = (u32_at(req, 0)?, u32_at(req, 4)?);
    if opcode != FUSE_INIT || len as usize != req.len() || req.len() < INIT_IN_MIN + 4 {
        return Err(bad(format!(
            "expected FUSE_INIT from /dev/fuse, got opcode {opcode} of {len} bytes ({} read)",
            req.len()
        )));
    }
    Ok(())
}

/// The FUSE_INIT a takeover feeds to fuser: the kernel's request with only the capabilities the
/// kernel granted the first server (`reply` is that server's INIT reply), so the new server's
/// `init` turns on nothing the connection does not have.
pub fn takeover_init(init: &[u8], reply: &[u8]) -> io::Result<Vec<u8>> {
    check_init(init)?;
    let mut req = init.to_vec();
    let offered = u32_at(init, INIT_IN_FLAGS)?;
    let granted = u32_at(reply, INIT_OUT_FLAGS)?;
    put_u32(
        &mut req,
        INIT_IN_FLAGS,
        (offered & granted) | (offered & FUSE_INIT_EXT),
    );
    if offered & FUSE_INIT_EXT != 0 {
        let offered2 = u32_at(init, INIT_IN_FLAGS2)?;
        let granted2 = u32_at(reply, INIT_OUT_FLAGS2).unwrap_or(0);
        put_u32(&mut req, INIT_IN_FLAGS2, offered2 & granted2);
    }
    let readahead = u32_at(init, IN_HEADER + 8)?.min(u32_at(reply, INIT_OUT_READAHEAD)?);
    put_u32(&mut req, IN_HEADER + 8, readahead);
    Ok(req)
}

/// How a server starts on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The kernel waits for the INIT reply: send it.
    First,
    /// An earlier server answered INIT: send nothing of it, ask for a resend of what is in flight.
    Takeover,
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out array of two ints, as socketpair(2) requires.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// dup2(2) of `from` onto descriptor number `slot`, which fuser owns.
fn dup_onto(from: BorrowedFd<'_>, slot: RawFd) -> io::Result<()> {
    // SAFETY: `slot` is the descriptor of fuser's channel, alive as long as the session (which
    // the caller holds); dup2 atomically makes it refer to `from`'s open file, so fuser's
    // `File` stays a valid descriptor throughout and is still closed exactly once, by fuser.
    if unsafe { libc::dup2(from.as_raw_fd(), slot) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a fuser session on `dev` without the kernel's help for INIT (see the module doc).
/// Returns the session and the INIT reply fuser gave (the capabilities it asked for).
pub fn attach<FS: fuser::Filesystem>(
    fs: FS,
    dev: OwnedFd,
    init: &[u8],
    start: Start,
    config: fuser::Config,
) -> io::Result<(fuser::Session<FS>, Vec<u8>)> {
    let (ours, theirs) = socketpair()?;
    rustix::io::write(&ours, init)?;
    let session = fuser::Session::from_fd(fs, theirs, config.acl, config)?;
    let mut reply = vec![0u8; READ_BUFFER];
    let n = rustix::io::read(&ours, &mut reply)?;
    reply.truncate(n);
    let error = u32_at(&reply, 4)? as i32;
    if error != 0 {
        return Err(io::Error::from_raw_os_error(-error));
    }
    match start {
        Start::First => {
            rustix::io::write(&dev, &reply)?;
        }
        Start::Takeover => {
            let mut resend = [0u8; OUT_HEADER];
            put_u32(&mut resend, 0, OUT_HEADER as u32);
            put_u32(&mut resend, 4, FUSE_NOTIFY_RESEND as u32);
            rustix::io::write(&dev, &resend).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("FUSE_NOTIFY_RESEND (needs Linux 6.9 or later): {e}"),
                )
            })?;
        }
    }
    dup_onto(dev.as_fd(), session.as_fd().as_raw_fd())?;
    Ok((session, reply))
}

extern "C" fn wake(_: libc::c_int) {}

/// The signal that wakes fuser's readers during a handover: a no-op handler with SA_RESTART, so
/// a blocked read(2) of /dev/fuse restarts, looking its descriptor up again. Install before
/// the session's threads start.
pub const WAKE_SIGNAL: libc::c_int = libc::SIGUSR1;

pub fn install_wake_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler address, an empty mask and SA_RESTART is
    // a well-formed argument; the handler does nothing, so it is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wake as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(WAKE_SIGNAL, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Wakes every thread of this process but the caller with [`WAKE_SIGNAL`].
fn wake_threads() -> io::Result<()> {
    // SAFETY: gettid(2) has no arguments and cannot fail.
    let me = unsafe { libc::gettid() };
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    for e in std::fs::read_dir("/proc/self/task")? {
        let Ok(tid) = e?.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        if tid != me {
            // SAFETY: tgkill(2) takes plain integers; a thread that exited meanwhile is ESRCH.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, WAKE_SIGNAL) };
        }
    }
    Ok(())
}

/// Stops a session from reading requests while what it already read is answered.
#[derive(Debug)]
pub struct Handover {
    slot: RawFd,
}

/// The thread that carries replies to the kernel after [`Handover::stop`].
#[derive(Debug)]
pub struct Relay {
    done: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Handover {
    /// For the session whose channel descriptor is `slot` (`session.as_fd()`).
    pub fn new(slot: RawFd) -> Handover {
        Handover { slot }
    }

    /// Stops the session's readers (each returns at its next read, so the session's `run`
    /// returns once all requests it read are dispatched); replies still reach the kernel.
    pub fn stop(&self) -> io::Result<Relay> {
        // SAFETY: the slot is fuser's open channel descriptor while the session lives, and
        // the caller stops it only while the session runs.
        let slot = unsafe { BorrowedFd::borrow_raw(self.slot) };
        let dev = rustix::io::fcntl_dupfd_cloexec(slot, 0)?;
        let (theirs, ours) = socketpair()?;
        set_sndbuf(&theirs, RELAY_BUFFER)?;
        // Reads on fuser's side now see end of file; its writes still arrive here.
        // SAFETY: `ours` is an open socket; SHUT_WR is a valid `how`.
        if unsafe { libc::shutdown(ours.as_raw_fd(), libc::SHUT_WR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("bfcfs-relay".into())
            .spawn(move || relay(&ours, &dev, &d))?;
        dup_onto(theirs.as_fd(), self.slot)?;
        drop(theirs);
        wake_threads()?;
        Ok(Relay { done, thread })
    }
}

fn set_sndbuf(fd: &OwnedFd, bytes: usize) -> io::Result<()> {
    let v = bytes as libc::c_int;
    // SAFETY: a valid socket, and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies each message from `from` to /dev/fuse until `done` is set and nothing is left.
fn relay(from: &OwnedFd, dev: &OwnedFd, done: &AtomicBool) {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let last = done.load(Ordering::Acquire);
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, if last { 0 } else { 2 }) };
        if n == 0 {
            if last {
                return;
            }
            continue;
        }
        match rustix::io::read(from, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = rustix::io::write(dev, &buf[..n]) {
                    // ENOENT: the request was interrupted meanwhile; anything else is logged.
                    if e != rustix::io::Errno::NOENT {
                        log::warn!("handover: passing a reply to the kernel: {e}");
                    }
                }
            }
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
            Err(e) => {
                log::error!("handover: relay: {e}");
                return;
            }
        }
    }
}

impl Relay {
    /// Passes on what is left and ends the relay; call once the session and the file system
    /// are gone (nothing writes replies any more).
    pub fn finish(self) {
        self.done.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_req(flags: u32, flags2: u32) -> Vec<u8> {
        let mut r = vec![0u8; IN_HEADER + 64];
        let len = r.len() as u32;
        put_u32(&mut r, 0, len);
        put_u32(&mut r, 4, FUSE_INIT);
        put_u32(&mut r, IN_HEADER, 7);
        put_u32(&mut r, IN_HEADER + 4, 41);
        put_u32(&mut r, IN_HEADER + 8, 1 << 20);
        put_u32(&mut r, INIT_IN_FLAGS, flags);
        put_u32(&mut r, INIT_IN_FLAGS2, flags2);
        r
    }

    #[test]
    fn a_takeover_init_offers_only_what_was_granted() {
        let init = init_req(0b1111 | FUSE_INIT_EXT, 0b1100);
        let mut reply = vec![0u8; OUT_HEADER + 64];
        put_u32(&mut reply, INIT_OUT_READAHEAD, 4096);
        put_u32(&mut reply, INIT_OUT_FLAGS, 0b0101 | FUSE_INIT_EXT);
        put_u32(&mut reply, INIT_OUT_FLAGS2, 0b0100);
        let t = takeover_init(&init, &reply).unwrap();
        assert_eq!(u32_at(&t, INIT_IN_FLAGS).unwrap(), 0b0101 | FUSE_INIT_EXT);
        assert_eq!(u32_at(&t, INIT_IN_FLAGS2).unwrap(), 0b0100);
        assert_eq!(u32_at(&t, IN_HEADER + 8).unwrap(), 4096);
        assert_eq!(t.len(), init.len());
    }

    #[test]
    fn a_request_that_is_not_init_is_refused() {
        let mut r = init_req(0, 0);
        put_u32(&mut r, 4, 1);
        assert!(check_init(&r).is_err());
        assert!(check_init(&r[..10]).is_err());
    }
}
