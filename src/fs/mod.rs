//! The FUSE adapter: `BfcFs` implements `fuser::Filesystem` over an `overlay::Union`.
//!
//! Each method calls an inner function returning `Result<_, Errno>` and replies; decisions live in
//! `overlay`. Inode numbers are the union's `NodeId`s (root = 1). Every reply that gives the kernel
//! a node (lookup, create, mkdir, mknod, symlink, link, each readdirplus entry but `.` and `..`)
//! counts one lookup in the union, and `forget` takes them back: the union holds only what the
//! kernel holds. A reply that fails after the count was taken gives it back. Without an upper directory every
//! write operation is EROFS (the mount is also `ro`, so the kernel usually refuses first); with
//! one, writes go to `overlay` (which copies up and keeps the overlayfs format) and open upper
//! files are served from their descriptors (`handles`).
pub mod attr;
pub mod errno;
pub mod handles;
pub mod notify;
pub mod plus;
pub mod pool;
mod write;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::overlay::{DirEntry, NodeId, Union};
use attr::{file_attr, file_type, ttl, Owner};
use errno::errno;
use handles::Handles;
use write::Caller;

/// One entry of a directory stream: cookie (index + 1: the kernel passes back the last cookie it
/// saw as the next offset) and the entry.
type Item<'a> = (u64, DirEntry<'a>);

/// The mounted file system: what the session's reader thread calls, with the state it shares
/// with the workers (`Core`) and the workers themselves (`pool`).
#[derive(Debug)]
pub struct BfcFs {
    core: Arc<Core>,
    workers: usize,
    /// Started by `init`, in the serving process.
    pool: Option<pool::Pool>,
}

/// Where the mount code hands parts of the session to the file system (see `mount::serve`).
pub struct Hooks {
    /// Started with the session's notifier (invalidations: see `notify`).
    pub notifier: notify::Slot,
    /// Given the session's /dev/fuse (`Handles::set_device`), and by a supervised server its
    /// handle journal (`Handles::keep_journal`).
    pub handles: Arc<Handles>,
}

/// The file system's state and the inner function of every request.
#[derive(Debug)]
pub struct Core {
    union: Union,
    owner: Owner,
    handles: Arc<Handles>,
    /// The kernel took FUSE_PASSTHROUGH: upper files are read and written by the kernel itself.
    passthrough: AtomicBool,
    invalidator: Arc<notify::Invalidator>,
    /// How long the first READDIRPLUS reply of a large directory is.
    first_reply: plus::FirstReply,
}

impl std::ops::Deref for BfcFs {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl BfcFs {
    /// A file system over `union`, with `workers` threads for requests that may block (`pool`).
    /// With an upper dir, copy-ups the kernel did not ask for are told to it (`notify`): the
    /// mount code hands the session to `hooks` once it exists.
    pub fn new(mut union: Union, owner: Owner, workers: usize) -> BfcFs {
        let inv = Arc::new(notify::Invalidator::new());
        if union.is_writable() {
            let tell = inv.clone();
            union.on_copy_up(Box::new(move |id| tell.attrs_changed(id)));
        }
        let core = Core {
            union,
            owner,
            handles: Arc::default(),
            passthrough: AtomicBool::new(false),
            invalidator: inv,
            first_reply: plus::FirstReply::default(),
        };
        BfcFs {
            core: Arc::new(core),
            workers,
            pool: None,
        }
    }

    /// What the mount code gives the session to, once it exists.
    pub fn hooks(&self) -> Hooks {
        Hooks {
            notifier: self.invalidator.slot(),
            handles: self.handles.clone(),
        }
    }

    /// Runs `job` with the core on a worker (here, before `init` started them).
    fn offload(&self, job: impl FnOnce(&Core) + Send + 'static) {
        let core = self.core.clone();
        match &self.pool {
            Some(p) => p.run(move || job(&core)),
            None => job(&core),
        }
    }
}

impl Core {
    fn passthrough(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    fn attr(&self, ino: NodeId) -> Result<fuser::FileAttr, Errno> {
        let a = self.union.attr(ino).map_err(|e| errno(&e))?;
        Ok(file_attr(&a, self.owner))
    }

    /// Attributes, from an open upper descriptor when there is one: the one the request names,
    /// else any of the inode's (right for an open file whose last name is gone, which the kernel
    /// asks about without a handle).
    fn attr_fh(&self, ino: NodeId, fh: Option<FileHandle>) -> Result<fuser::FileAttr, Errno> {
        let open = fh.and_then(|fh| self.handles.get(fh.0));
        match open.or_else(|| self.handles.any_of(ino)) {
            Some(f) => {
                let a = self.union.attr_of_file(ino, &f).map_err(|e| errno(&e))?;
                Ok(file_attr(&a, self.owner))
            }
            None => self.attr(ino),
        }
    }

    fn lookup_inner(&self, parent: INodeNo, name: &OsStr) -> Result<fuser::FileAttr, Errno> {
        let ino = self
            .union
            .lookup(parent.0, name.as_bytes())
            .map_err(|e| errno(&e))?;
        let a = self.counted_attr(ino)?;
        if a.kind != fuser::FileType::Directory {
            self.first_reply.file_looked_up(parent.0);
        }
        Ok(a)
    }

    /// Attributes of a node whose lookup was just counted; on failure the count goes back (the
    /// kernel gets an error, not the node).
    fn counted_attr(&self, ino: NodeId) -> Result<fuser::FileAttr, Errno> {
        self.attr(ino).inspect_err(|_| self.union.forget(ino, 1))
    }

    /// Calls `f` for each entry from `offset` on, with ".", ".." first, until it returns true
    /// (full). Starts at `offset` directly: the listing is indexed.
    /// With `plus`, the first reply of a large directory may be cut short (see `plus`). Returns
    /// the listing's length.
    fn dir_items(
        &self,
        ino: INodeNo,
        offset: u64,
        plus: bool,
        mut f: impl FnMut(Item<'_>) -> bool,
    ) -> Result<usize, Errno> {
        let listing = self.union.readdir(ino.0).map_err(|e| errno(&e))?;
        let parent = self.union.parent(ino.0).map_err(|e| errno(&e))?;
        let dot = |name: &'static [u8], ino| DirEntry {
            name,
            ino,
            kind: crate::bfc::Kind::Dir,
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut files = match plus {
            true => self.first_reply.files(ino.0, start, listing.len()),
            false => usize::MAX,
        };
        for i in start..listing.len().saturating_add(2) {
            let e = match i {
                0 => dot(b".", ino.0),
                1 => dot(b"..", parent),
                _ => match listing.get(i - 2) {
                    Some(e) => e,
                    None => break,
                },
            };
            if e.kind != crate::bfc::Kind::Dir {
                if files == 0 {
                    break;
                }
                files -= 1;
            }
            if f((i as u64 + 1, e)) {
                break;
            }
        }
        Ok(listing.len())
    }

    fn read_inner(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<crate::overlay::ReadData<'_>, Errno> {
        if let Some(f) = self.handles.get(fh.0) {
            return crate::overlay::read_full(&f, offset, size)
                .map(crate::overlay::ReadData::Owned)
                .map_err(|e| io_errno(&e));
        }
        self.union.read(ino.0, offset, size).map_err(|e| errno(&e))
    }

    /// The upper descriptor of handle `fh`; a handle this server never gave out (the kernel got
    /// it from a server before a restart) is opened again from its node, read-write.
    fn open_file(&self, ino: INodeNo, fh: FileHandle) -> Result<Arc<std::fs::File>, Errno> {
        if let Some(f) = self.handles.get(fh.0) {
            return Ok(f);
        }
        if !self.union.is_writable() || self.handles.is_lower(fh.0) {
            return Err(Errno::EBADF);
        }
        let f = self
            .union
            .open_upper(ino.0, rustix::fs::OFlags::RDWR)
            .map_err(|e| errno(&e))?;
        Ok(self.handles.adopt(ino.0, fh.0, f))
    }

    /// Lower files opened read-only get handle 0 and the layer's bytes; everything else (writes,
    /// O_TRUNC, files already in the upper dir) an upper descriptor, copied up first if needed.
    fn open_inner(&self, ino: INodeNo, flags: OpenFlags) -> Result<Option<std::fs::File>, Errno> {
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if !self.union.is_writable() {
            if writing {
                return Err(Errno::EROFS);
            }
            self.union.attr(ino.0).map_err(|e| errno(&e))?;
            return Ok(None);
        }
        if !writing && !self.union.is_upper(ino.0).map_err(|e| errno(&e))? {
            return Ok(None);
        }
        self.union
            .open_upper(ino.0, write::upper_flags(flags.0))
            .map(Some)
            .map_err(|e| errno(&e))
    }

    /// A handle for upper file `file` of `ino`: `Ok((fh, backing id))` passes through to the
    /// upper file opened read-write (the kernel does every later read, write and mmap of the
    /// open on it; O_APPEND comes from the FUSE file's own flags). `Err`: a plain handle,
    /// served with pread/pwrite.
    fn upper_handle(&self, ino: INodeNo, file: std::fs::File) -> Result<(u64, u32), u64> {
        let file = if self.passthrough() {
            let r = self.handles.insert_passthrough(ino.0, file, || {
                self.union
                    .open_upper(ino.0, rustix::fs::OFlags::RDWR)
                    .map_err(|e| io::Error::other(e.to_string()))
            });
            match r {
                Ok(pt) => return Ok(pt),
                Err(file) => file,
            }
        } else {
            file
        };
        Err(self.handles.insert(ino.0, file))
    }

    /// Without any xattr in the layers (and no upper dir), ENOSYS makes the kernel stop asking
    /// (`ls -l` asks for every file); it then answers EOPNOTSUPP itself.
    fn getxattr_inner(&self, ino: INodeNo, name: &OsStr, size: u32) -> Result<Xattr, Errno> {
        if !self.union.has_xattrs() {
            return Err(Errno::ENOSYS);
        }
        let open = self.handles.any_of(ino.0);
        let v = self
            .union
            .xattr(ino.0, name.as_bytes(), open.as_deref())
            .map_err(|e| errno(&e))?;
        sized(v, size)
    }

    fn fsync_inner(&self, ino: INodeNo, fh: FileHandle, datasync: bool) -> Result<(), Errno> {
        if self.handles.is_lower(fh.0) {
            return Ok(());
        }
        let f = self.open_file(ino, fh)?;
        if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        }
        .map_err(|e| io_errno(&e))
    }

    /// NUL-terminated names, as listxattr(2) returns them.
    fn listxattr_inner(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        if !self.union.has_xattrs() {
            return Err(Errno::ENOSYS);
        }
        let mut names = Vec::new();
        for (k, _) in self.union.xattrs(ino.0).map_err(|e| errno(&e))?.iter() {
            names.extend_from_slice(k);
            names.push(0);
        }
        Ok(names)
    }

    /// Whether a request on node `id` may copy a file up (then it goes to a worker): a writable
    /// mount and a node not in the upper dir yet.
    fn may_copy_up(&self, id: NodeId) -> bool {
        self.union.is_writable() && !self.union.is_upper(id).unwrap_or(true)
    }

    /// `may_copy_up` for the child `name` of `parent`.
    fn may_copy_up_child(&self, parent: NodeId, name: &OsStr) -> bool {
        self.union.is_writable() && !self.union.is_upper_child(parent, name.as_bytes())
    }

    /// OPEN of a writable mount (see `open`). A truncating open drops what the caller's
    /// truncate drops (`Caller::drop_privs`).
    fn open_reply(&self, ino: INodeNo, flags: OpenFlags, caller: Caller, reply: ReplyOpen) {
        let opened = self.open_inner(ino, flags).and_then(|f| match &f {
            Some(file) if flags.0 & libc::O_TRUNC != 0 => {
                caller.drop_privs(self, ino, Some(file)).map(|()| f)
            }
            _ => Ok(f),
        });
        match opened {
            Ok(None) => {
                let fh = match self.passthrough() {
                    true => self.handles.cached_open(ino.0),
                    false => 0,
                };
                reply.opened(FileHandle(fh), lower_open_flags());
            }
            Ok(Some(file)) => match self.upper_handle(ino, file) {
                Ok((fh, id)) => {
                    // SAFETY: `id` is registered with this connection (here or by an earlier
                    // server) and stays so while handle `fh` counts it (`handles` closes an id
                    // only after its last handle is released, which the kernel cannot do
                    // before this reply); `into_raw` keeps the wrapper from closing it.
                    let b = unsafe { reply.wrap_backing(id) };
                    reply.opened_passthrough(FileHandle(fh), upper_open_flags(), &b);
                    b.into_raw();
                }
                Err(fh) => reply.opened(FileHandle(fh), upper_open_flags()),
            },
            Err(e) => reply.error(e),
        }
    }

    /// READDIRPLUS (see `readdirplus`).
    fn readdirplus_reply(&self, ino: INodeNo, offset: u64, mut reply: ReplyDirectoryPlus) {
        // The kernel counts a lookup for every entry but "." and "..": count it here, and give
        // it back for the entry that did not fit.
        let r = self.dir_items(ino, offset, true, |(cookie, e)| {
            let dots = e.name == b"." || e.name == b"..";
            let node = match dots {
                true => self.attr(e.ino),
                false => match self.union.lookup_listed(ino.0, &e) {
                    Ok(a) => Ok(file_attr(&a, self.owner)),
                    Err(err) => Err(errno(&err)),
                },
            };
            match node {
                Ok(a) => {
                    let full = reply.add(
                        a.ino,
                        cookie,
                        OsStr::from_bytes(e.name),
                        &ttl(&a),
                        &a,
                        Generation(0),
                    );
                    if full && !dots {
                        self.union.forget(a.ino.0, 1);
                    }
                    full
                }
                // Gone since the listing was made (or unreadable): skip it.
                Err(_) => false,
            }
        });
        match r {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; a too-small buffer is ERANGE.
enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

fn sized(v: Vec<u8>, size: u32) -> Result<Xattr, Errno> {
    let len = u32::try_from(v.len()).map_err(|_| Errno::E2BIG)?;
    match size {
        0 => Ok(Xattr::Size(len)),
        s if s < len => Err(Errno::ERANGE),
        _ => Ok(Xattr::Data(v)),
    }
}

/// A lower file never changes while mounted: its page cache survives close and reopen
/// (FOPEN_KEEP_CACHE) and close needs no FLUSH round trip (FOPEN_NOFLUSH: nothing is dirty).
fn lower_open_flags() -> FopenFlags {
    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
}

/// An upper file can change, so its page cache is not kept across opens; but the server keeps
/// nothing to write back (writes go straight to the upper file), so close needs no FLUSH.
fn upper_open_flags() -> FopenFlags {
    FopenFlags::FOPEN_NOFLUSH
}

fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_i32)
}

fn reply_xattr(reply: ReplyXattr, r: Result<Xattr, Errno>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(e),
    }
}

/// A lookup's answer: a name that does not exist is a negative entry the kernel may keep (see
/// `attr::negative`); every other error is an error.
fn reply_lookup(reply: ReplyEntry, r: Result<fuser::FileAttr, Errno>) {
    match r {
        Err(Errno::ENOENT) => reply.entry(&attr::TTL, &attr::negative(), Generation(0)),
        r => reply_entry(reply, r),
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<fuser::FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&ttl(&a), &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for BfcFs {
    /// Ask for what makes a read-only tree fast: readdirplus (names and attributes in one
    /// round trip), cached symlink targets, parallel lookups, the largest readahead; with an
    /// upper dir, FUSE passthrough (upper files at native speed; backing files may sit on a
    /// stacked file system, hence depth 2 — such a mount cannot itself be an overlayfs layer).
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if self.union.is_writable()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        // With an upper dir xattrs can appear at any time, so getxattr can never be ENOSYS and
        // `ls -l` would ask for two ACLs of every entry on every walk. With FUSE_POSIX_ACL the
        // kernel asks once per inode and keeps the answer (and checks ACLs itself, as overlayfs
        // does with the upper file's); chmod and ACL changes reach us as setxattr.
        if self.union.is_writable() && config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            log::debug!("kernel lacks FUSE_POSIX_ACL");
        }
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_READ,
            // open(O_TRUNC) arrives as one request: a truncated copy-up copies no content.
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ] {
            if config.add_capabilities(cap).is_err() {
                log::debug!("kernel lacks {cap:?}");
            }
        }
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        self.pool = Some(pool::Pool::new(self.workers)?);
        Ok(())
    }

    /// Lets the workers finish what they hold before the session ends.
    fn destroy(&mut self) {
        self.pool = None;
    }

    /// A lookup may have to wait for a copy-up of the node it finds: while any runs, lookups go
    /// to a worker.
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.union.copying_now() {
            let name = name.to_owned();
            return self.offload(move |c| reply_lookup(reply, c.lookup_inner(parent, &name)));
        }
        reply_lookup(reply, self.lookup_inner(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.union.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr_fh(ino.0, fh) {
            Ok(a) => reply.attr(&ttl(&a), &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.union.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Upper files get no FOPEN_KEEP_CACHE: they can change (see `open_inner`).
    /// A read-only mount answers ENOSYS: the kernel then stops sending OPEN and RELEASE for
    /// files at all ("no_open"), keeps their page cache (FOPEN_KEEP_CACHE is its default then),
    /// and the mount's MS_RDONLY already refuses writable opens. That saves two round trips
    /// per open, which is most of the cost of a warm `tar` of the mount.
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !self.union.is_writable() {
            return reply.error(Errno::ENOSYS);
        }
        let caller = Caller::of(req);
        let writing = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if writing && self.may_copy_up(ino.0) {
            return self.offload(move |c| c.open_reply(ino, flags, caller, reply));
        }
        self.open_reply(ino, flags, caller, reply);
    }

    /// A read that costs only a copy (decoded chunks in the chunk cache, stored bytes in the
    /// page cache: `Union::read_cached`) is answered on this thread; the rest may wait for the
    /// disk or a decode and goes to a worker.
    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if let Some(data) = self.union.read_cached(ino.0, offset, size) {
            return reply.data(&data);
        }
        self.offload(move |c| match c.read_inner(ino, fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        });
    }

    /// Nothing is ever dirty in a read-only mount: ENOSYS makes the kernel stop sending FLUSH on
    /// every close (with "no_open" it no longer gets FOPEN_NOFLUSH from an open reply).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        if !self.union.is_writable() {
            return reply.error(Errno::ENOSYS);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.offload(move |c| reply_empty(reply, c.fsync_inner(ino, fh, datasync)));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if fh.0 != 0 || self.passthrough() {
            self.handles.remove(ino.0, fh.0);
        }
        reply.ok();
    }

    /// ENOSYS: the kernel then stops sending OPENDIR and RELEASEDIR at all ("no_opendir", two
    /// round trips per directory a walk enters) and opens every directory as if the answer had
    /// been FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR (fs/fuse/file.c `fuse_file_open`: the default
    /// for no-open), which is what this answered before: the kernel caches listings across
    /// opens. Read-only, they never change; with an upper dir they change only through this
    /// mount, and the kernel drops a directory's cached listing itself when it changes
    /// (`fuse_dir_changed` bumps its i_version, checked at the start of every listing).
    /// (Changing the upper dir behind the mount's back is unsupported, as with overlayfs.)
    /// Errors of a listing now reach the caller at its first READDIR instead.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut sent = false;
        let r = self.dir_items(ino, offset, false, |(cookie, e)| {
            sent = true;
            reply.add(
                INodeNo(e.ino),
                cookie,
                file_type(e.kind),
                OsStr::from_bytes(e.name),
            )
        });
        let len = match r {
            Ok(len) => len,
            Err(e) => return reply.error(e),
        };
        reply.ok();
        // The end of a large directory read without attributes: see `plus`.
        if offset > 0 && !sent && len > plus::LARGE_DIR {
            self.invalidator.drop_listing(ino.0);
        }
        // Names past the first reply: the walker is busy with them for a while (see
        // `overlay::ahead`; read-only unions only, so no worker is woken for nothing).
        if offset > 0 && sent && !self.union.is_writable() {
            self.offload(move |c| {
                if let Err(e) = c.union.list_next_ahead(ino.0) {
                    log::debug!("listing ahead after node {}: {e}", ino.0);
                }
            });
        }
    }

    /// Each entry is a lookup, which may wait for a copy-up: while any runs, listings go to a
    /// worker.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        if self.union.copying_now() {
            return self.offload(move |c| c.readdirplus_reply(ino, offset, reply));
        }
        self.readdirplus_reply(ino, offset, reply);
    }

    /// Read-only: blocks are the layer files' bytes, files their entries, nothing free. With an
    /// upper dir: the upper dir's file system (where writes land).
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if let Some(v) = self.union.upper_statvfs() {
            let bsize = u32::try_from(v.f_bsize).unwrap_or(4096);
            let namelen = u32::try_from(v.f_namemax).unwrap_or(255);
            let frsize = u32::try_from(v.f_frsize).unwrap_or(bsize);
            let (blocks, bfree, bavail) = (v.f_blocks, v.f_bfree, v.f_bavail);
            reply.statfs(
                blocks, bfree, bavail, v.f_files, v.f_ffree, bsize, namelen, frsize,
            );
            return;
        }
        let t = self.union.totals();
        reply.statfs(t.bytes.div_ceil(4096), 0, 0, t.entries, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.getxattr_inner(ino, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = self.listxattr_inner(ino);
        reply_xattr(reply, names.and_then(|n| sized(n, size)));
    }

    // The methods that change the tree are in `write.rs`.

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) && !self.union.is_writable() {
            reply.error(Errno::EROFS);
        } else {
            reply.ok();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let args = write::SetattrArgs {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
            caller: Caller::of(req),
        };
        let answer = move |c: &Core| match c.setattr_inner(ino, args) {
            Ok(a) => reply.attr(&ttl(&a), &a),
            Err(e) => reply.error(e),
        };
        if self.may_copy_up(ino.0) {
            return self.offload(answer);
        }
        answer(self);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.mknod_inner(req, parent, name, mode, rdev));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.mkdir_inner(req, parent, name, mode));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_inner(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove_inner(parent, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.symlink_inner(req, parent, name, target));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.may_copy_up_child(parent.0, name) {
            let (name, new_name) = (name.to_owned(), new_name.to_owned());
            return self.offload(move |c| {
                reply_empty(
                    reply,
                    c.rename_inner(parent, &name, new_parent, &new_name, flags),
                )
            });
        }
        reply_empty(
            reply,
            self.rename_inner(parent, name, new_parent, new_name, flags),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
        reply: ReplyEntry,
    ) {
        if self.may_copy_up(ino.0) {
            let new_name = new_name.to_owned();
            return self
                .offload(move |c| reply_entry(reply, c.link_inner(ino, new_parent, &new_name)));
        }
        reply_entry(reply, self.link_inner(ino, new_parent, new_name));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.offload(move |c| match c.write_inner(ino, fh, offset, &data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        });
    }

    /// Upper files get short TTLs and no FOPEN_KEEP_CACHE (they change).
    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_inner(req, parent, name, mode, flags) {
            Ok((a, file)) => match self.upper_handle(a.ino, file) {
                Ok((fh, id)) => {
                    // SAFETY: as in `open_reply`.
                    let b = unsafe { reply.wrap_backing(id) };
                    let (fh, f) = (FileHandle(fh), upper_open_flags());
                    reply.created_passthrough(&ttl(&a), &a, Generation(0), fh, f, &b);
                    b.into_raw();
                }
                Err(fh) => {
                    let fh = FileHandle(fh);
                    reply.created(&ttl(&a), &a, Generation(0), fh, upper_open_flags());
                }
            },
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if self.may_copy_up(ino.0) {
            let (name, value) = (name.to_owned(), value.to_vec());
            return self
                .offload(move |c| reply_empty(reply, c.setxattr_inner(ino, &name, &value, flags)));
        }
        reply_empty(reply, self.setxattr_inner(ino, name, value, flags));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.may_copy_up(ino.0) {
            let name = name.to_owned();
            return self.offload(move |c| reply_empty(reply, c.removexattr_inner(ino, &name)));
        }
        reply_empty(reply, self.removexattr_inner(ino, name));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.offload(move |c| reply_empty(reply, c.fallocate_inner(fh, offset, length, mode)));
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}
