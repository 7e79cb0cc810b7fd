//! Building entries in the work dir and renaming them into place, so an entry appears in the
//! upper dir only complete, with its metadata (content, mode, owner, times, xattrs) — what
//! overlayfs calls copy-up, used for new entries too.
use super::{errno, os, UpperDir};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// Metadata given to a new upper entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid/setgid/sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn ts(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

impl Meta {
    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: ts(self.atime_ns),
            last_modification: ts(self.mtime_ns),
        }
    }
}

/// chown, then chmod (chown clears setuid bits the mode may set).
fn owner_and_mode(fd: impl AsFd, meta: &Meta) -> io::Result<()> {
    rfs::fchown(
        &fd,
        Some(rfs::Uid::from_raw(meta.uid)),
        Some(rfs::Gid::from_raw(meta.gid)),
    )
    .map_err(errno)?;
    rfs::fchmod(&fd, Mode::from_raw_mode(meta.perm as _)).map_err(errno)
}

impl UpperDir {
    /// Applies owner, mode, xattrs and times through an open descriptor (chown first: it clears
    /// setuid bits).
    fn apply_fd(&self, fd: impl AsFd, meta: &Meta) -> io::Result<()> {
        owner_and_mode(&fd, meta)?;
        for (n, v) in &meta.xattrs {
            rfs::fsetxattr(&fd, os(n), v, rfs::XattrFlags::empty()).map_err(errno)?;
        }
        rfs::futimens(&fd, &meta.times()).map_err(errno)
    }

    /// Applies metadata to a work-dir entry that cannot be opened for writing (symlinks,
    /// devices, fifos).
    fn apply_at(&self, tmp: &[u8], meta: &Meta, symlink: bool) -> io::Result<()> {
        rfs::chownat(
            &self.work,
            os(tmp),
            Some(rfs::Uid::from_raw(meta.uid)),
            Some(rfs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
        if !symlink {
            rfs::chmodat(
                &self.work,
                os(tmp),
                Mode::from_raw_mode(meta.perm as _),
                AtFlags::empty(),
            )
            .map_err(errno)?;
        }
        let path = self.work_path.join(os(tmp));
        for (n, v) in &meta.xattrs {
            rfs::lsetxattr(&path, os(n), v, rfs::XattrFlags::empty()).map_err(errno)?;
        }
        rfs::utimensat(
            &self.work,
            os(tmp),
            &meta.times(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// Creates directory `rel` with `meta` (opaque: hides everything below it in lower layers).
    pub fn make_dir(&self, rel: &[u8], meta: &Meta, opaque: bool, replace: bool) -> io::Result<()> {
        let tmp = self.tmp_name();
        rfs::mkdirat(&self.work, os(&tmp), Mode::from_raw_mode(0o700)).map_err(errno)?;
        let r = (|| {
            let fd: OwnedFd = rfs::openat(
                &self.work,
                os(&tmp),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            if opaque {
                rfs::fsetxattr(&fd, super::OPAQUE_XATTR, b"y", rfs::XattrFlags::empty())
                    .map_err(errno)?;
            }
            self.apply_fd(&fd, meta)
        })();
        if let Err(e) = r {
            let _ = rfs::unlinkat(&self.work, os(&tmp), AtFlags::REMOVEDIR);
            return Err(e);
        }
        if replace {
            // rename(2) cannot replace a whiteout device with a directory.
            if let Some(st) = self.stat(rel)? {
                if super::is_whiteout(&st) {
                    self.remove(rel, false)?;
                }
            }
        }
        self.publish(&tmp, rel, false)
    }

    /// Creates regular file `rel` with `content` (none: empty) and `meta`; returns its size.
    pub fn make_file(
        &self,
        rel: &[u8],
        meta: &Meta,
        content: Option<&mut dyn Read>,
        replace: bool,
    ) -> io::Result<u64> {
        let tmp = self.tmp_name();
        let fd = rfs::openat(
            &self.work,
            os(&tmp),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno)?;
        let mut f = std::fs::File::from(fd);
        let r = (|| {
            let mut n = 0;
            if let Some(src) = content {
                let mut w = io::BufWriter::with_capacity(256 << 10, &mut f);
                n = io::copy(src, &mut w)?;
                w.flush()?;
            }
            self.apply_fd(&f, meta)?;
            Ok::<u64, io::Error>(n)
        })();
        drop(f);
        match r {
            Ok(n) => self.publish(&tmp, rel, replace).map(|_| n),
            Err(e) => {
                let _ = rfs::unlinkat(&self.work, os(&tmp), AtFlags::empty());
                Err(e)
            }
        }
    }

    /// Creates the empty regular file `rel` in place (where nothing, not even a whiteout, is)
    /// and returns it opened with `flags`, and its lstat: the fast path of create(2), as
    /// overlayfs creates straight in the upper dir when no whiteout is in the way. The kernel
    /// holds the directory's lock meanwhile, so nobody sees the file before its owner and mode
    /// are set.
    pub fn create_file(
        &self,
        rel: &[u8],
        meta: &Meta,
        flags: OFlags,
    ) -> io::Result<(OwnedFd, rfs::Stat)> {
        let (dir, name) = self.parent(rel)?;
        let fd = rfs::openat(
            &dir,
            os(name),
            flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(errno)?;
        let r = owner_and_mode(&fd, meta).and_then(|()| rfs::fstat(&fd).map_err(errno));
        match r {
            Ok(st) => Ok((fd, st)),
            Err(e) => {
                let _ = rfs::unlinkat(&dir, os(name), AtFlags::empty());
                Err(e)
            }
        }
    }

    /// Creates symlink `rel` pointing at `target`.
    pub fn make_symlink(
        &self,
        rel: &[u8],
        target: &[u8],
        meta: &Meta,
        replace: bool,
    ) -> io::Result<()> {
        let tmp = self.tmp_name();
        rfs::symlinkat(os(target), &self.work, os(&tmp)).map_err(errno)?;
        if let Err(e) = self.apply_at(&tmp, meta, true) {
            let _ = rfs::unlinkat(&self.work, os(&tmp), AtFlags::empty());
            return Err(e);
        }
        self.publish(&tmp, rel, replace)
    }

    /// Creates a device node, fifo or socket `rel`.
    pub fn make_special(
        &self,
        rel: &[u8],
        ft: FileType,
        rdev: u64,
        meta: &Meta,
        replace: bool,
    ) -> io::Result<()> {
        let tmp = self.tmp_name();
        rfs::mknodat(
            &self.work,
            os(&tmp),
            ft,
            Mode::from_raw_mode(0o600),
            rdev as _,
        )
        .map_err(errno)?;
        if let Err(e) = self.apply_at(&tmp, meta, false) {
            let _ = rfs::unlinkat(&self.work, os(&tmp), AtFlags::empty());
            return Err(e);
        }
        self.publish(&tmp, rel, replace)
    }
}
