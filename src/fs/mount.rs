//! Mounting: `-o` option parsing, the fuser `Config`, the readiness pipe between a daemonized server
//! and the command that started it, clean unmount on SIGTERM/SIGINT/SIGHUP, and `bfcfs umount`.
//!
//! Lifecycle of `bfcfs mount` without `-f`: the command opens and checks the container (so key and
//! format errors print in the terminal), then forks. The child mounts (fuser's `Session::new` returns
//! only after the kernel's INIT handshake, so the mount answers from then on), writes `s` to the
//! readiness pipe and serves; the parent waits on the pipe and exits 0 on `s`, or prints the child's
//! `f<message>` (or "exited early" on EOF) and fails. No sleeping, no polling.
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use fuser::{Config, Filesystem, MountOption, Session, SessionACL};

/// Default bound of the decoded-chunk cache of a mount. The kernel keeps decoded pages in its page
/// cache (FOPEN_KEEP_CACHE), so this only has to hold the chunks that partial reads and readahead
/// windows are still working through; small keeps the server's memory small.
pub const DEFAULT_CACHE_SIZE: u64 = 16 << 20;

/// Options given with `-o` (comma lists, repeatable). `ro`, `nosuid`, `nodev` and `default_permissions`
/// are the defaults; `ro` and `default_permissions` cannot be turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub allow_other: bool,
    pub suid: bool,
    pub dev: bool,
    pub exec: bool,
    /// Owner shown for entries that record none (default: the user who mounts).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Bound in bytes of the decoded-chunk cache (compressed and encrypted content).
    pub cache_size: u64,
    /// FUSE request threads.
    pub threads: Option<usize>,
    /// Mount read-write (a union with an upper dir; set by the command, not by `-o`).
    pub writable: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            suid: false,
            dev: false,
            exec: true,
            uid: None,
            gid: None,
            cache_size: DEFAULT_CACHE_SIZE,
            threads: None,
            writable: false,
        }
    }
}

/// A `-o` option that bfcfs does not accept, and why.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("mount option `{0}`: layers are read-only; for writes give --upper DIR or --container NAME (read-write unless --ro)")]
    ReadWrite(String),
    #[error("mount option `{option}`: {why}")]
    BadValue { option: String, why: String },
    #[error("unknown mount option `{0}` (known: ro, allow_other, suid, nosuid, dev, nodev, exec, noexec, uid=, gid=, cache_size=, threads=, default_permissions)")]
    Unknown(String),
}

impl MountOptions {
    /// Parses every `-o` argument (each a comma-separated list) into one set of options.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        let mut o = MountOptions::default();
        for opt in args.iter().flat_map(|a| a.as_ref().split(',')) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("", None) => {}
                ("ro" | "default_permissions" | "noatime" | "atime" | "nodiratime", None) => {}
                ("rw", None) => return Err(OptionError::ReadWrite(opt.to_string())),
                ("allow_other", None) => o.allow_other = true,
                ("suid", None) => o.suid = true,
                ("nosuid", None) => o.suid = false,
                ("dev", None) => o.dev = true,
                ("nodev", None) => o.dev = false,
                ("exec", None) => o.exec = true,
                ("noexec", None) => o.exec = false,
                ("uid", Some(v)) => o.uid = Some(parse_num(opt, v)?),
                ("gid", Some(v)) => o.gid = Some(parse_num(opt, v)?),
                ("cache_size", Some(v)) => o.cache_size = parse_size(opt, v)?,
                ("threads", Some(v)) => {
                    let n: usize = parse_num(opt, v)?;
                    if !(1..=64).contains(&n) {
                        return Err(bad(opt, "threads must be between 1 and 64"));
                    }
                    o.threads = Some(n);
                }
                _ => return Err(OptionError::Unknown(opt.to_string())),
            }
        }
        Ok(o)
    }

    /// Request threads: the `threads=` option, else one per CPU, at least 2 and at most 8 (reads of
    /// compressed chunks decode on these threads, lookups are short).
    pub fn n_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
        })
    }

    /// The fuser configuration: always `ro` and `default_permissions` (the kernel checks modes, so
    /// bfcfs never has to), `nosuid,nodev` unless asked, `allow_other` only when asked.
    pub fn fuser_config(&self, source: &Path) -> Config {
        let mut mount_options = vec![
            MountOption::FSName(source.display().to_string().replace(',', "_")),
            MountOption::CUSTOM("subtype=bfcfs".to_string()),
            if self.writable {
                MountOption::RW
            } else {
                MountOption::RO
            },
            MountOption::DefaultPermissions,
            if self.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
            if self.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
        ];
        if !self.exec {
            mount_options.push(MountOption::NoExec);
        }
        let mut config = Config::default();
        config.mount_options = mount_options;
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(self.n_threads());
        config
    }
}

fn bad(option: &str, why: &str) -> OptionError {
    OptionError::BadValue {
        option: option.to_string(),
        why: why.to_string(),
    }
}

fn parse_num<T: std::str::FromStr>(option: &str, v: &str) -> Result<T, OptionError> {
    v.parse()
        .map_err(|_| bad(option, "expected a decimal number"))
}

/// `123`, `64K`, `256M`, `1G` (powers of 1024).
fn parse_size(option: &str, v: &str) -> Result<u64, OptionError> {
    let (digits, mult) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    let n: u64 = parse_num(option, digits)?;
    n.checked_mul(mult)
        .ok_or_else(|| bad(option, "size too large"))
}

/// Mounts `fs` from `source` at `mountpoint` and serves until it is unmounted. `ready` runs once
/// the kernel has completed the INIT handshake, i.e. once requests to the mountpoint are answered.
/// SIGTERM, SIGINT and SIGHUP unmount (lazily if the mount is busy), which ends the serving loop.
///
/// As root bfcfs mounts /dev/fuse itself and hands the fd to fuser (`Session::from_fd`), so the
/// server never unmounts by path when it ends: after an external `umount`, fuser 0.18's own
/// end-of-session unmount would hit whatever was mounted at the same path next. Other users go
/// through fusermount3 (fuser's `Session::new`).
pub fn serve<FS: Filesystem>(
    fs: FS,
    source: &Path,
    mountpoint: &Path,
    opts: &MountOptions,
    ready: impl FnOnce(),
) -> io::Result<()> {
    // Block the signals before any thread exists, so every fuser thread inherits the mask and only
    // the waiter below receives them.
    let signals = block_signals()?;
    let config = opts.fuser_config(source);
    let mnt = mountpoint.to_path_buf();
    let (session, unmount) = match kernel_mount(source, mountpoint, opts) {
        Ok(fd) => match Session::from_fd(fs, fd, config.acl, config.clone()) {
            Ok(s) => (s, Unmount::Path),
            Err(e) => {
                let _ = umount2(mountpoint, libc::MNT_DETACH);
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
    std::thread::Builder::new()
        .name("bfcfs-signals".into())
        .spawn(move || wait_and_unmount(signals, unmount, &mnt))?;
    ready();
    session.run()
}

/// How the signal thread unmounts.
enum Unmount {
    Path,
    Fuser(fuser::SessionUnmounter),
}

/// mount(2) of a FUSE file system on an open /dev/fuse (root only: EPERM otherwise).
fn kernel_mount(source: &Path, mountpoint: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let dev = File::options().read(true).write(true).open("/dev/fuse")?;
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={uid},group_id={gid},default_permissions,subtype=bfcfs",
        dev.as_raw_fd()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = if opts.writable { 0 } else { libc::MS_RDONLY };
    if !opts.suid {
        flags |= libc::MS_NOSUID;
    }
    if !opts.dev {
        flags |= libc::MS_NODEV;
    }
    if !opts.exec {
        flags |= libc::MS_NOEXEC;
    }
    let cstr = |b: &[u8]| {
        CString::new(b)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let src = cstr(source.display().to_string().replace(',', "_").as_bytes())?;
    let target = cstr(mountpoint.as_os_str().as_bytes())?;
    let data = cstr(data.as_bytes())?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            c"fuse".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

fn block_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it, pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

fn wait_and_unmount(set: libc::sigset_t, unmount: Unmount, mnt: &Path) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set blocked in this thread; `sig` is a valid out pointer.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        log::error!("sigwait failed: {}", io::Error::from_raw_os_error(rc));
        return;
    }
    log::info!("signal {sig}: unmounting {}", mnt.display());
    let r = match unmount {
        Unmount::Path => umount2(mnt, 0),
        Unmount::Fuser(mut u) => u.unmount(),
    };
    if let Err(e) = r {
        log::warn!("unmount {}: {e}; detaching lazily", mnt.display());
        if let Err(e) = umount2(mnt, libc::MNT_DETACH) {
            log::error!("lazy unmount {}: {e}", mnt.display());
        }
    }
}

/// The side of the readiness pipe held by the forked server.
#[derive(Debug)]
pub struct Readiness(Option<File>);

impl Readiness {
    /// Tells the waiting command that the mount answers, and closes the pipe.
    pub fn ready(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"s");
        }
    }
    /// Tells the waiting command why the mount failed (if it still waits).
    pub fn failed(&mut self, why: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("f{why}").as_bytes());
        }
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
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process is single-threaded here (documented contract of this function), so the
    // child can run arbitrary Rust code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(rd);
            detach_stdio()?;
            Ok(Forked::Child(Readiness(Some(File::from(wr)))))
        }
        _ => {
            drop(wr);
            Ok(Forked::Parent(File::from(rd)))
        }
    }
}

fn detach_stdio() -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: both fds are open; dup2 atomically replaces the stdio descriptor.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: setsid has no memory-safety preconditions; it fails harmlessly if already a leader.
    unsafe { libc::setsid() };
    Ok(())
}

/// Waits until the server reports: Ok once the mount answers, else the server's reason.
pub fn wait_ready(mut pipe: File) -> Result<(), String> {
    let mut first = [0u8; 1];
    match pipe.read(&mut first) {
        Ok(1) if first[0] == b's' => return Ok(()),
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

/// Logs of a daemonized server go to syslog (its stderr is /dev/null): corrupt content is
/// reported there with the entry, file and offset.
pub fn init_syslog(verbose: u8) {
    static LOGGER: Syslog = Syslog;
    // SAFETY: the identifier is a static NUL-terminated string, as openlog keeps the pointer.
    unsafe { libc::openlog(c"bfcfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(match verbose {
            0 => log::LevelFilter::Warn,
            1 => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        });
    }
}

struct Syslog;

impl log::Log for Syslog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let prio = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        let msg = format!("{}", record.args()).replace('\0', "");
        if let Ok(c) = CString::new(msg) {
            // SAFETY: a constant "%s" format with one valid NUL-terminated string argument.
            unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
        }
    }
    fn flush(&self) {}
}

/// Why `bfcfs umount` failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error("{0} is not a FUSE mount point")]
    NotMounted(PathBuf),
    #[error("{0} is busy (files or directories on it are in use); close them or use `bfcfs umount --lazy`")]
    Busy(PathBuf),
    #[error("unmounting {path}")]
    Failed { path: PathBuf, source: io::Error },
}

/// Unmounts a FUSE mount, also when its server is dead ("Transport endpoint is not connected"):
/// umount2 needs no answer from the server. Non-root users go through `fusermount3 -u`.
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), UnmountError> {
    let mnt = absolute(mountpoint);
    if !is_fuse_mount(&mnt) {
        return Err(UnmountError::NotMounted(mnt));
    }
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    match umount2(&mnt, flags) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(UnmountError::Busy(mnt)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_u(&mnt, lazy),
        Err(source) => Err(UnmountError::Failed { path: mnt, source }),
    }
}

fn fusermount_u(mnt: &Path, lazy: bool) -> Result<(), UnmountError> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let failed = |source| UnmountError::Failed {
        path: mnt.to_path_buf(),
        source,
    };
    let status = cmd.arg("--").arg(mnt).status().map_err(failed)?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(io::Error::other(format!(
            "fusermount3 -u: {status}"
        ))))
    }
}

fn umount2(mnt: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = CString::new(mnt.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `p` absolute without touching the filesystem: a dead FUSE mount fails every stat, so
/// canonicalize cannot be used.
pub fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether /proc/self/mountinfo lists a FUSE file system mounted at `mnt`.
pub fn is_fuse_mount(mnt: &Path) -> bool {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    info.split(|&b| b == b'\n').any(|line| {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            return false;
        };
        let (Some(point), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            return false;
        };
        (fstype == b"fuse" || fstype.starts_with(b"fuse."))
            && OsStr::from_bytes(&unescape(point)) == mnt.as_os_str()
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() {
            if let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 4]), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ro_nosuid_nodev() {
        let o = MountOptions::parse::<&str>(&[]).unwrap();
        assert_eq!(o, MountOptions::default());
        let c = o.fuser_config(Path::new("/x.bfc"));
        for want in [
            MountOption::RO,
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::DefaultPermissions,
        ] {
            assert!(c.mount_options.contains(&want), "{want:?}");
        }
        assert_eq!(c.acl, SessionACL::Owner);
    }

    #[test]
    fn options_parse() {
        let o =
            MountOptions::parse(&["ro,allow_other", "suid,dev,uid=12,gid=34", "cache_size=64M"])
                .unwrap();
        assert!(o.allow_other && o.suid && o.dev);
        assert_eq!((o.uid, o.gid, o.cache_size), (Some(12), Some(34), 64 << 20));
        let c = o.fuser_config(Path::new("/x.bfc"));
        assert!(c.mount_options.contains(&MountOption::Suid));
        assert_eq!(c.acl, SessionACL::All);
    }

    #[test]
    fn bad_options_are_named() {
        assert!(matches!(
            MountOptions::parse(&["rw"]),
            Err(OptionError::ReadWrite(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["uid=x"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["cache_size=99999999999G"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["bogus"]),
            Err(OptionError::Unknown(_))
        ));
    }

    #[test]
    fn mountinfo_unescape_and_absolute() {
        assert_eq!(unescape(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(absolute(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }
}
