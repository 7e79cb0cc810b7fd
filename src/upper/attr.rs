//! Attribute and xattr changes of entries already in the upper dir (chmod, chown, utimens,
//! truncate, setxattr, removexattr), and reading their xattrs.
//!
//! Each goes through an `O_PATH | O_NOFOLLOW` descriptor opened beneath the upper root and then
//! through its `/proc/self/fd/N` name: the call acts on exactly the entry that was resolved
//! (a symlink itself, never its target), with no path walk a container could redirect.
use super::{errno, os, UpperDir, OPAQUE_XATTR};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// A time to set: now, or nanoseconds since the epoch; None keeps it.
pub type SetTime = Option<Option<i64>>;

/// The prefix of the xattrs overlayfs keeps for itself (never shown, never settable).
pub const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";

fn timespec(t: SetTime) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT as _,
        },
        Some(None) => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_NOW as _,
        },
        Some(Some(ns)) => Timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000) as _,
        },
    }
}

impl UpperDir {
    /// An O_PATH descriptor of `rel` (not following a final symlink) and its /proc name.
    fn handle(&self, rel: &[u8]) -> io::Result<(OwnedFd, PathBuf)> {
        let fd = if rel.is_empty() {
            rfs::openat(
                &self.root,
                ".",
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
            )
        } else {
            let (dir, name) = self.parent(rel)?;
            rfs::openat(
                &dir,
                os(name),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        }
        .map_err(errno)?;
        let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok((fd, p))
    }

    /// chown, chmod and utimens of `rel` in one go (one path resolution), or straight on `open`,
    /// an open descriptor of it, when the caller has one (no path walk at all).
    pub fn set_attrs(
        &self,
        rel: &[u8],
        open: Option<BorrowedFd<'_>>,
        owner: Option<(Option<u32>, Option<u32>)>,
        perm: Option<u32>,
        times: Option<(SetTime, SetTime)>,
    ) -> io::Result<()> {
        let held;
        let (fd, proc_path) = match open {
            Some(fd) => (fd, None),
            None => {
                held = self.handle(rel)?;
                (held.0.as_fd(), Some(&held.1))
            }
        };
        if let Some((uid, gid)) = owner {
            rfs::chownat(
                fd,
                "",
                uid.map(rfs::Uid::from_raw),
                gid.map(rfs::Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if let Some(perm) = perm {
            let mode = Mode::from_raw_mode(perm as _);
            match proc_path {
                Some(p) => rfs::chmod(p, mode),
                None => rfs::fchmod(fd, mode),
            }
            .map_err(errno)?;
        }
        if let Some((atime, mtime)) = times {
            let t = Timestamps {
                last_access: timespec(atime),
                last_modification: timespec(mtime),
            };
            match proc_path {
                Some(p) => rfs::utimensat(rfs::CWD, p, &t, AtFlags::empty()),
                None => rfs::futimens(fd, &t),
            }
            .map_err(errno)?;
        }
        Ok(())
    }

    pub fn truncate(&self, rel: &[u8], size: u64) -> io::Result<()> {
        let fd = self.open_file(rel, OFlags::WRONLY, 0)?;
        rfs::ftruncate(&fd, size).map_err(errno)
    }

    /// Extended attributes of `rel`, without overlayfs's own `trusted.overlay.*`.
    pub fn xattrs(&self, rel: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (_fd, p) = self.handle(rel)?;
        let mut names = vec![0u8; 4096];
        let n = loop {
            match rfs::listxattr(&p, &mut names) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
                Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(errno(e)),
            }
        };
        let mut out = Vec::new();
        for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if name.starts_with(OVERLAY_XATTR_PREFIX) {
                continue;
            }
            let mut v = vec![0u8; 256];
            let len = loop {
                match rfs::getxattr(&p, os(name), &mut v) {
                    Ok(len) => break Some(len),
                    Err(rustix::io::Errno::RANGE) => v.resize(v.len() * 16, 0),
                    Err(rustix::io::Errno::NODATA) => break None,
                    Err(e) => return Err(errno(e)),
                }
            };
            if let Some(len) = len {
                v.truncate(len);
                out.push((name.to_vec(), v));
            }
        }
        out.sort();
        Ok(out)
    }

    /// One extended attribute of `rel` (None: not set). overlayfs's own are never returned.
    pub fn get_xattr(&self, rel: &[u8], name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if is_overlay_xattr(name) {
            return Ok(None);
        }
        let (_fd, p) = self.handle(rel)?;
        read_xattr(|v| rfs::getxattr(&p, os(name), v))
    }

    /// setxattr(2) flags: XATTR_CREATE / XATTR_REPLACE as given.
    pub fn set_xattr(&self, rel: &[u8], name: &[u8], value: &[u8], flags: u32) -> io::Result<()> {
        let (_fd, p) = self.handle(rel)?;
        rfs::setxattr(
            &p,
            os(name),
            value,
            rfs::XattrFlags::from_bits_retain(flags as _),
        )
        .map_err(errno)
    }

    pub fn remove_xattr(&self, rel: &[u8], name: &[u8]) -> io::Result<()> {
        let (_fd, p) = self.handle(rel)?;
        rfs::removexattr(&p, os(name)).map_err(errno)
    }
}

/// True for an xattr name overlayfs reserves.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(OVERLAY_XATTR_PREFIX) || name == OPAQUE_XATTR.as_bytes()
}

/// Where bfcfs records the union inode number of a copied-up lower entry, so the copy keeps it
/// after the kernel forgets the node and across remounts (overlayfs keeps `trusted.overlay.origin`
/// for the same purpose; this name is in its private namespace too, so the kernel's overlayfs
/// hides it and ignores it).
pub const ORIGIN_XATTR: &str = "trusted.overlay.bfcfs.origin";

impl UpperDir {
    /// The origin recorded on `rel` at copy-up, if any.
    pub fn origin(&self, rel: &[u8]) -> io::Result<Option<u64>> {
        let (_fd, p) = self.handle(rel)?;
        let mut v = [0u8; 8];
        match rfs::getxattr(&p, ORIGIN_XATTR, &mut v) {
            Ok(8) => Ok(Some(u64::from_le_bytes(v))),
            Ok(_)
            | Err(rustix::io::Errno::NODATA)
            | Err(rustix::io::Errno::NOTSUP)
            | Err(rustix::io::Errno::RANGE) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// Records `origin` on upper entry `rel` (just copied up).
    pub fn set_origin(&self, rel: &[u8], origin: u64) -> io::Result<()> {
        let (_fd, p) = self.handle(rel)?;
        rfs::setxattr(
            &p,
            ORIGIN_XATTR,
            &origin.to_le_bytes(),
            rfs::XattrFlags::empty(),
        )
        .map_err(errno)
    }
}

/// One extended attribute through an open descriptor of an upper entry (None: not set).
/// overlayfs's own are never returned.
pub fn get_xattr_fd(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    if is_overlay_xattr(name) {
        return Ok(None);
    }
    read_xattr(|v| rfs::fgetxattr(fd, os(name), v))
}

/// getxattr with a growing buffer; NODATA/NOTSUP are "not set".
fn read_xattr(
    mut get: impl FnMut(&mut [u8]) -> Result<usize, rustix::io::Errno>,
) -> io::Result<Option<Vec<u8>>> {
    let mut v = vec![0u8; 256];
    loop {
        match get(&mut v) {
            Ok(len) => {
                v.truncate(len);
                return Ok(Some(v));
            }
            Err(rustix::io::Errno::RANGE) if v.len() < 1 << 20 => v.resize(v.len() * 16, 0),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(errno(e)),
        }
    }
}
