//! The FUSE adapter: `BfcFs` implements `fuser::Filesystem` over an `overlay::Union`.
//!
//! Each method calls an inner function returning `Result<_, Errno>` and replies; decisions live in
//! `overlay`. Inode numbers are the union's `NodeId`s (root = 1): the union never forgets a node,
//! so `forget` has nothing to do and no lookup counts are kept. Every write operation is EROFS
//! (the mount is also `ro`, so the kernel usually refuses first).
pub mod attr;
pub mod errno;
pub mod mount;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::overlay::{NodeId, Union};
use attr::{file_attr, file_type, Owner, TTL};
use errno::errno;

/// One entry of a directory stream: cookie (index + 1: the kernel passes back the last cookie it
/// saw as the next offset), inode, type, name.
type Item<'a> = (u64, NodeId, FileType, &'a [u8]);

/// The mounted file system.
#[derive(Debug)]
pub struct BfcFs {
    union: Union,
    owner: Owner,
}

impl BfcFs {
    pub fn new(union: Union, owner: Owner) -> BfcFs {
        BfcFs { union, owner }
    }

    fn attr(&self, ino: NodeId) -> Result<fuser::FileAttr, Errno> {
        let a = self.union.attr(ino).map_err(|e| errno(&e))?;
        Ok(file_attr(&a, self.owner))
    }

    fn lookup_inner(&self, parent: INodeNo, name: &OsStr) -> Result<fuser::FileAttr, Errno> {
        let ino = self
            .union
            .lookup(parent.0, name.as_bytes())
            .map_err(|e| errno(&e))?;
        self.attr(ino)
    }

    /// Calls `f` for each entry from `offset` on, with ".", ".." first, until it returns true (full).
    fn dir_items(
        &self,
        ino: INodeNo,
        offset: u64,
        mut f: impl FnMut(Item<'_>) -> bool,
    ) -> Result<(), Errno> {
        let listing = self.union.readdir(ino.0).map_err(|e| errno(&e))?;
        let parent = self.union.parent(ino.0).map_err(|e| errno(&e))?;
        let dots = [
            (ino.0, FileType::Directory, &b"."[..]),
            (parent, FileType::Directory, &b".."[..]),
        ];
        let rest = listing.iter().map(|e| (e.ino, file_type(e.kind), &*e.name));
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(rest)
            .enumerate()
            .skip(offset as usize)
        {
            if f((i as u64 + 1, child, kind, name)) {
                break;
            }
        }
        Ok(())
    }

    fn read_inner(
        &self,
        ino: INodeNo,
        offset: u64,
        size: u32,
    ) -> Result<std::borrow::Cow<'_, [u8]>, Errno> {
        self.union.read(ino.0, offset, size).map_err(|e| errno(&e))
    }

    fn open_inner(&self, ino: INodeNo, flags: OpenFlags) -> Result<(), Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        self.union.attr(ino.0).map(drop).map_err(|e| errno(&e))
    }

    fn getxattr_inner(&self, ino: INodeNo, name: &OsStr, size: u32) -> Result<Xattr<'_>, Errno> {
        let v = self
            .union
            .xattr(ino.0, name.as_bytes())
            .map_err(|e| errno(&e))?;
        sized(v, size)
    }

    /// NUL-terminated names, as listxattr(2) returns them.
    fn listxattr_inner(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let mut names = Vec::new();
        for (k, _) in self.union.xattrs(ino.0).map_err(|e| errno(&e))? {
            names.extend_from_slice(k);
            names.push(0);
        }
        Ok(names)
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; a too-small buffer is ERANGE.
enum Xattr<'a> {
    Size(u32),
    Data(&'a [u8]),
}

fn sized(v: &[u8], size: u32) -> Result<Xattr<'_>, Errno> {
    let len = u32::try_from(v.len()).map_err(|_| Errno::E2BIG)?;
    match size {
        0 => Ok(Xattr::Size(len)),
        s if s < len => Err(Errno::ERANGE),
        _ => Ok(Xattr::Data(v)),
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<Xattr<'_>, Errno>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(d)) => reply.data(d),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<fuser::FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for BfcFs {
    /// Ask for what makes a read-only tree fast: readdirplus (names and attributes in one
    /// round trip), cached symlink targets, parallel lookups, the largest readahead.
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_READ,
        ] {
            if config.add_capabilities(cap).is_err() {
                log::debug!("kernel lacks {cap:?}");
            }
        }
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.lookup_inner(parent, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.union.readlink(ino.0) {
            Ok(target) => reply.data(target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The page cache survives close and reopen (FOPEN_KEEP_CACHE: content never changes) and
    /// close needs no FLUSH round trip (FOPEN_NOFLUSH: nothing is ever dirty).
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_inner(ino, flags) {
            Ok(()) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            ),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_inner(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// Listings never change either: let the kernel cache them (FOPEN_CACHE_DIR).
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.union.readdir(ino.0) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.dir_items(ino, offset, |(cookie, child, kind, name)| {
            reply.add(INodeNo(child), cookie, kind, OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.dir_items(ino, offset, |(cookie, child, _, name)| {
            match self.attr(child) {
                Ok(a) => reply.add(
                    INodeNo(child),
                    cookie,
                    OsStr::from_bytes(name),
                    &TTL,
                    &a,
                    Generation(0),
                ),
                Err(_) => false,
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Blocks: the layer files' bytes; files: their entries; nothing free (read-only).
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let t = self.union.totals();
        reply.statfs(t.bytes.div_ceil(4096), 0, 0, t.entries, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.getxattr_inner(ino, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = self.listxattr_inner(ino);
        reply_xattr(
            reply,
            names
                .as_deref()
                .map_err(|e| *e)
                .and_then(|n| sized(n, size)),
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }

    // Everything below changes the tree: a BFC file is read-only.

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    #[allow(clippy::too_many_arguments)]
    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    #[allow(clippy::too_many_arguments)]
    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    #[allow(clippy::too_many_arguments)]
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    #[allow(clippy::too_many_arguments)]
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _l: u64,
        _m: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}
