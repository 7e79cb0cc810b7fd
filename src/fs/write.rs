//! The inner functions of the FUSE methods that change the tree: each turns the request into a
//! `Union` call (which copies up and keeps the overlayfs format) and returns what to reply.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::UNIX_EPOCH;

use fuser::{Errno, FileAttr, FileHandle, INodeNo, RenameFlags, Request, TimeOrNow};
use rustix::fs::OFlags;

use super::attr::file_attr;
use super::errno::errno;
use super::{io_errno, Core};
use crate::bfc::Kind;
use crate::overlay::{NewNode, SetAttr, Time, Truncater};

/// The flags of an upper open: access mode, O_TRUNC, O_SYNC/O_DSYNC. Never O_CREAT: `create`
/// made the file already. Never O_APPEND: the kernel gives every WRITE its offset (an O_APPEND
/// write's is its end of file) and the data lands there; pwrite on an O_APPEND descriptor would
/// append instead, so the page cache's writeback of a mapping would land at the end, and a
/// WRITE resent after a server restart would be appended twice (docs/restart.md).
pub fn upper_flags(flags: i32) -> OFlags {
    let keep = libc::O_ACCMODE | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC;
    OFlags::from_bits_retain((flags & keep) as _)
}

fn time(t: Option<TimeOrNow>) -> Option<Time> {
    t.map(|t| match t {
        TimeOrNow::Now => Time::Now,
        TimeOrNow::SpecificTime(st) => Time::At(match st.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        }),
    })
}

/// The kernel sends `rdev` in its 32-bit encoding (new_encode_dev).
fn decode_rdev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

/// The process a request comes from: what the kernel would check its credentials for.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    pub fn of(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }

    /// Whether the caller is in group `gid`: its own, or one of its supplementary groups
    /// (`/proc/PID/status`; unreadable, say a process gone: no).
    fn in_group(&self, gid: u32) -> bool {
        if gid == self.gid {
            return true;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid));
        status.ok().is_some_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .is_some_and(|g| g.split_whitespace().any(|g| g.parse() == Ok(gid)))
        })
    }

    /// The setuid/setgid bits its truncate of upper file `ino` (open as `f`) drops, dropped;
    /// and the kernel's cached attributes of the file with them (an open's reply carries none,
    /// and the kernel refreshes them only where it computed the same drop itself).
    pub(super) fn drop_privs(
        &self,
        core: &Core,
        ino: INodeNo,
        f: Option<&std::fs::File>,
    ) -> Result<(), Errno> {
        let in_group = |g| self.in_group(g);
        let who = Truncater {
            uid: self.uid,
            in_group: &in_group,
        };
        let dropped = core
            .union
            .drop_privs_after_truncate(ino.0, f, &who)
            .map_err(|e| errno(&e))?;
        if dropped {
            core.invalidator.attrs_changed(ino.0);
        }
        Ok(())
    }
}

/// The arguments of one setattr, as they come.
pub struct SetattrArgs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub fh: Option<FileHandle>,
    pub caller: Caller,
}

impl Core {
    fn owner_of(req: &Request) -> (u32, u32) {
        (req.uid(), req.gid())
    }

    fn new_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        what: NewNode<'_>,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let id = self
            .union
            .create(
                parent.0,
                name.as_bytes(),
                what,
                mode & 0o7777,
                Self::owner_of(req),
            )
            .map_err(|e| errno(&e))?;
        self.counted_attr(id)
    }

    pub(super) fn mknod_inner(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<FileAttr, Errno> {
        let what = match Kind::from_mode(mode).ok_or(Errno::EINVAL)? {
            Kind::File => NewNode::File,
            Kind::Dir | Kind::Symlink => return Err(Errno::EINVAL),
            kind => NewNode::Special {
                kind,
                rdev: decode_rdev(rdev),
            },
        };
        self.new_entry(req, parent, name, what, mode)
    }

    pub(super) fn mkdir_inner(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        self.new_entry(req, parent, name, NewNode::Dir, mode)
    }

    pub(super) fn symlink_inner(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
    ) -> Result<FileAttr, Errno> {
        let t = target.as_os_str().as_bytes();
        self.new_entry(req, parent, name, NewNode::Symlink(t), 0o777)
    }

    /// create(2): a new empty file, opened.
    pub(super) fn create_inner(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, std::fs::File), Errno> {
        if !self.union.is_writable() {
            return Err(Errno::EROFS);
        }
        let (_, f, a) = self
            .union
            .create_open(
                parent.0,
                name.as_bytes(),
                mode & 0o7777,
                Self::owner_of(req),
                upper_flags(flags),
            )
            .map_err(|e| errno(&e))?;
        Ok((file_attr(&a, self.owner), f))
    }

    pub(super) fn remove_inner(
        &self,
        parent: INodeNo,
        name: &OsStr,
        dir: bool,
    ) -> Result<(), Errno> {
        self.union
            .remove(parent.0, name.as_bytes(), dir)
            .map_err(|e| errno(&e))
    }

    pub(super) fn rename_inner(
        &self,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.union
            .rename(
                parent.0,
                name.as_bytes(),
                new_parent.0,
                new_name.as_bytes(),
                noreplace,
            )
            .map_err(|e| errno(&e))
    }

    pub(super) fn link_inner(
        &self,
        ino: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let id = self
            .union
            .link(ino.0, new_parent.0, new_name.as_bytes())
            .map_err(|e| errno(&e))?;
        self.counted_attr(id)
    }

    pub(super) fn setattr_inner(&self, ino: INodeNo, a: SetattrArgs) -> Result<FileAttr, Errno> {
        let s = SetAttr {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            atime: time(a.atime),
            mtime: time(a.mtime),
        };
        let f = a.fh.and_then(|fh| self.handles.get(fh.0));
        let any = self.handles.any_of(ino.0);
        let mut attr = self
            .union
            .set_attr(ino.0, &s, f.as_deref(), any.as_deref())
            .map_err(|e| errno(&e))?;
        // A setattr that changes nothing is what is left of the kernel's request to drop the
        // privileges of a file being written (file_remove_privs: `fuse_setattr` drops the mode it
        // computed and recomputes one that keeps setgid without group execute).
        let nothing = s.mode.is_none()
            && s.uid.is_none()
            && s.gid.is_none()
            && s.atime.is_none()
            && s.mtime.is_none();
        if (s.size.is_some() || nothing) && a.caller.uid != 0 {
            let open = f.as_deref().or(any.as_deref());
            a.caller.drop_privs(self, ino, open)?;
            attr = match open {
                Some(f) => self.union.attr_of_file(ino.0, f),
                None => self.union.attr(ino.0),
            }
            .map_err(|e| errno(&e))?;
        }
        Ok(file_attr(&attr, self.owner))
    }

    pub(super) fn write_inner(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let f = self.open_file(ino, fh)?;
        f.write_all_at(data, offset).map_err(|e| io_errno(&e))?;
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    pub(super) fn fallocate_inner(
        &self,
        fh: FileHandle,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let f = self.handles.get(fh.0).ok_or(Errno::EBADF)?;
        let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as _);
        rustix::fs::fallocate(&*f, mode, offset, len).map_err(|e| io_errno(&e.into()))
    }

    pub(super) fn setxattr_inner(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        self.union
            .set_xattr(ino.0, name.as_bytes(), value, flags as u32)
            .map_err(|e| errno(&e))
    }

    pub(super) fn removexattr_inner(&self, ino: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.union
            .remove_xattr(ino.0, name.as_bytes())
            .map_err(|e| errno(&e))
    }
}
