//! The mount and unmount system calls: mount(2) of a FUSE file system on an open /dev/fuse
//! (root), umount2(2), and `fusermount3 -u` for users who may not call umount2.
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, UnmountFlags};

use super::mountinfo;
use super::options::MountOptions;

/// mount(2) of a FUSE file system on an open /dev/fuse (root only: EPERM otherwise).
pub fn fuse_mount(source: &Path, mountpoint: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let dev = File::options().read(true).write(true).open("/dev/fuse")?;
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions,subtype=bfcfs",
        dev.as_raw_fd(),
        uid.as_raw(),
        gid.as_raw()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = if opts.writable {
        MountFlags::empty()
    } else {
        MountFlags::RDONLY
    };
    if !opts.suid {
        flags |= MountFlags::NOSUID;
    }
    if !opts.dev {
        flags |= MountFlags::NODEV;
    }
    if !opts.exec {
        flags |= MountFlags::NOEXEC;
    }
    let data = CString::new(data)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount data contains NUL"))?;
    let src = source.display().to_string().replace(',', "_");
    rustix::mount::mount(src.as_str(), mountpoint, "fuse", flags, data.as_c_str())?;
    Ok(OwnedFd::from(dev))
}

/// umount2(2); `lazy` detaches now and finishes once the mount is no longer busy.
pub fn umount(mnt: &Path, lazy: bool) -> io::Result<()> {
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    Ok(rustix::mount::unmount(mnt, flags)?)
}

/// Why `bfcfs umount` failed.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error("{0} is not a FUSE mount point")]
    NotMounted(PathBuf),
    #[error("{0} is busy (files or directories on it are in use); close them or use `bfcfs umount --lazy`")]
    Busy(PathBuf),
    #[error("{} is busy: its file system is also mounted on {}{} (a running container?); stop that first or use `bfcfs umount --lazy`", .path.display(), .elsewhere[0], if .elsewhere.len() > 1 { format!(" and {} more", .elsewhere.len() - 1) } else { String::new() })]
    InUseElsewhere {
        path: PathBuf,
        elsewhere: Vec<mountinfo::Foreign>,
    },
    #[error("unmounting {path}")]
    Failed { path: PathBuf, source: io::Error },
}

/// Unmounts a FUSE mount, also when its server is dead ("Transport endpoint is not connected"):
/// umount2 needs no answer from the server. Non-root users go through `fusermount3 -u`.
///
/// Without `lazy` a busy mount is refused, as umount(8) does: one with files or directories in
/// use (umount2 answers EBUSY), and one whose file system is still mounted in another mount
/// namespace, such as a runc container's root (umount2 would succeed there and leave the
/// container's root and its server running, with nothing mounted here to show for it).
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), UnmountError> {
    let mnt = mountinfo::absolute(mountpoint);
    let Some(here) = mountinfo::fuse_mount_at(&mnt) else {
        return Err(UnmountError::NotMounted(mnt));
    };
    // Both refusals are looked at again for up to a second before they are given: a reference
    // can be held for a moment by something that is not a user of the mount. runc starting any
    // container clones this mount namespace, and between its pivot_root and the detach of the
    // old root that copy shows this mount at another path; a path walk that is ending holds
    // the mount for its last microseconds. containerd's unmount retries EBUSY the same way; a
    // mount that stays busy is still refused.
    let mut tries = 0;
    loop {
        let pause = tries < BUSY_RETRIES;
        tries += 1;
        if !lazy {
            let elsewhere = mountinfo::kept_elsewhere(&here);
            if !elsewhere.is_empty() {
                if pause {
                    std::thread::sleep(BUSY_PAUSE);
                    continue;
                }
                return Err(UnmountError::InUseElsewhere {
                    path: mnt,
                    elsewhere,
                });
            }
        }
        return match umount(&mnt, lazy) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && pause => {
                std::thread::sleep(BUSY_PAUSE);
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(UnmountError::Busy(mnt)),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_u(&mnt, lazy),
            Err(source) => Err(UnmountError::Failed { path: mnt, source }),
        };
    }
}

/// How long a busy mount is looked at again before `unmount` refuses it (about a second).
const BUSY_RETRIES: u32 = 20;
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

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

/// Why a mount by a user other than root failed, said in terms of what they can change:
/// /dev/fuse's presence and access, fusermount3, `user_allow_other` in /etc/fuse.conf, the mount
/// point's owner. `err` is kept as the cause when none of these explains it.
pub fn explain_user_mount(err: io::Error, mountpoint: &Path, opts: &MountOptions) -> io::Error {
    use rustix::fs::Access;
    let uid = rustix::process::getuid().as_raw();
    let dev = Path::new("/dev/fuse");
    let why = if !dev.exists() {
        "/dev/fuse does not exist: load the fuse module (`modprobe fuse`), or, in a container, \
         pass the device in (`--device /dev/fuse`)"
            .to_string()
    } else if rustix::fs::access(dev, Access::READ_OK | Access::WRITE_OK).is_err() {
        let mode = std::fs::metadata(dev).map_or(0, |m| m.mode() & 0o777);
        format!(
            "/dev/fuse (mode {mode:04o}) is not readable and writable for uid {uid}: mounts by \
             users need it to be (Debian's default is 0666: `chmod 0666 /dev/fuse` as root), or \
             mount as root"
        )
    } else if let Some(why) = fusermount_problem() {
        why
    } else if opts.allow_other && !user_allow_other() {
        "-o allow_other needs `user_allow_other` in /etc/fuse.conf for users other than root \
         (or mount without allow_other: then only you can see the mount)"
            .to_string()
    } else if std::fs::metadata(mountpoint).is_ok_and(|m| m.uid() != uid)
        && rustix::fs::access(mountpoint, Access::WRITE_OK).is_err()
    {
        format!(
            "{} is not yours and not writable for you: fusermount3 mounts only on such \
             directories for users",
            mountpoint.display()
        )
    } else {
        return err;
    };
    io::Error::new(err.kind(), format!("{}: {why}", err.to_string().trim_end()))
}

/// What keeps fusermount3 (the setuid helper users mount through) from working, if anything.
fn fusermount_problem() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(found) = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("fusermount3"))
        .find(|p| p.is_file())
    else {
        return Some(
            "fusermount3 is not installed (Debian package fuse3): users mount through it".into(),
        );
    };
    let m = std::fs::metadata(&found).ok()?;
    (m.uid() != 0 || m.mode() & 0o4000 == 0).then(|| {
        format!(
            "{} is not setuid root (mode {:04o}, owner {}): users mount through it",
            found.display(),
            m.mode() & 0o7777,
            m.uid()
        )
    })
}

/// Whether /etc/fuse.conf has an active `user_allow_other` line.
fn user_allow_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "user_allow_other"))
}
