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
    if !lazy {
        let elsewhere = mountinfo::kept_elsewhere(&here);
        if !elsewhere.is_empty() {
            return Err(UnmountError::InUseElsewhere {
                path: mnt,
                elsewhere,
            });
        }
    }
    match umount(&mnt, lazy) {
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
