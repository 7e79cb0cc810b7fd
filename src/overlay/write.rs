//! Changes through the upper directory: copy-up, create, remove, rename, link, attributes and
//! xattrs. Every change takes the upper's lock; lookups, reads and listings never do.
//!
//! What bfcfs does where overlayfs offers choices:
//! - **Copy-up** happens on the first write open, truncate, or metadata change of a lower entry,
//!   and takes its content, mode, owner, times and xattrs; parents are copied up first (empty,
//!   with their metadata). The node keeps its inode number: the kernel keeps its inode.
//! - **Hard links of a lower layer stay linked**: copying up one name copies the file once and
//!   links every other name of its link group that still shows it into the upper dir (what
//!   overlayfs does with `index=on`). The names share one `st_ino` before and after.
//! - **Renaming a directory that merges lower layers** copies its whole subtree up, marks it
//!   opaque and renames it in the upper dir (overlayfs without `redirect_dir` refuses with EXDEV
//!   and makes `mv` copy; bfcfs does the copy itself, once). A renamed directory that lands on a
//!   name lower layers hold is marked opaque too. `RENAME_EXCHANGE` is refused (EINVAL).
//! - **Removing** a name the lower layers hold leaves a whiteout (char device 0:0); `rmdir` of a
//!   merged directory that looks empty removes its upper part (whiteouts inside) and whites it out.
//!   `mkdir` over a whiteout makes an opaque directory.
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{FileType as RFileType, OFlags, RenameFlags};

use super::id::is_lower_id;
use super::merge::{self, Resolved, Source};
use super::node::{Inserted, Node};
use super::{attr_of_stat, check_lookup_name, upper_err, Attr, Error, NodeId, Union, Upper, ROOT};
use crate::bfc::Kind;
use crate::upper::{is_overlay_xattr, is_whiteout, Meta};

/// What `Union::create` makes.
#[derive(Debug, Clone, Copy)]
pub enum NewNode<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    /// A device node, fifo or socket.
    Special {
        kind: Kind,
        rdev: u64,
    },
}

/// A time to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    Now,
    /// Nanoseconds since the epoch.
    At(i64),
}

/// The changes of one setattr; None keeps a field.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
}

/// Who truncates a file. The kernel drops a file's setuid/setgid bits when a caller without
/// CAP_FSETID truncates it; the server sees the caller's ids only, so root is taken to hold it.
pub struct Truncater<'a> {
    pub uid: u32,
    /// Whether the caller is in group `gid` (its own or a supplementary group).
    pub in_group: &'a dyn Fn(u32) -> bool,
}

/// The setuid/setgid bits of a regular file (permission bits `perm`, group `gid`) that a
/// truncate by `who` drops, as the kernel's `setattr_should_drop_suidgid` (fs/attr.c) decides
/// it: setuid always, setgid when the group may execute or the caller is not in the group.
fn dropped_by_truncate(perm: u32, gid: u32, who: &Truncater<'_>) -> u32 {
    const SUID: u32 = libc::S_ISUID;
    const SGID: u32 = libc::S_ISGID;
    if who.uid == 0 || perm & (SUID | SGID) == 0 {
        return 0;
    }
    let mut drop = perm & SUID;
    if perm & SGID != 0 && (perm & libc::S_IXGRP != 0 || !(who.in_group)(gid)) {
        drop |= SGID;
    }
    drop
}

fn set_time(t: Option<Time>) -> crate::upper::SetTime {
    t.map(|t| match t {
        Time::Now => None,
        Time::At(ns) => Some(ns),
    })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A name a create, link or rename may give: one component, and one the union can show.
fn check_name(u: &Union, name: &[u8]) -> Result<(), Error> {
    if name.len() > super::NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Error::Invalid);
    }
    if !u.spec.name_visible(name) {
        // `.wh.*` names are whiteout markers in image layers: such a file could never show.
        return Err(Error::Invalid);
    }
    Ok(())
}

/// Reads a lower file's content from the start, for copy-up.
struct LowerReader<'a> {
    union: &'a Union,
    node: &'a Node,
    offset: u64,
}

impl Read for LowerReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = u32::try_from(buf.len().min(1 << 20)).unwrap_or(1 << 20);
        let data = self
            .union
            .read_node(self.node, self.offset, want)
            .map_err(|e| io::Error::other(e.to_string()))?;
        buf[..data.len()].copy_from_slice(&data);
        self.offset += data.len() as u64;
        Ok(data.len())
    }
}

/// Holds the copy-up lock of one node; the lock's entry goes with the last holder.
pub(super) struct CopyGuard<'a> {
    up: &'a Upper,
    id: NodeId,
    lock: Arc<Mutex<()>>,
}

impl CopyGuard<'_> {
    fn hold(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CopyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.up.copying.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits for this node.
        if Arc::strong_count(&self.lock) <= 2 {
            map.remove(&self.id);
        }
    }
}

impl Union {
    fn upper(&self) -> Result<&Upper, Error> {
        self.upper.as_ref().ok_or(Error::ReadOnly)
    }

    /// The copy-up lock of node `id` (taken with `hold`); a lookup that meets a node being
    /// copied up waits for it by taking it too.
    pub(super) fn copy_lock(&self, id: NodeId) -> Option<CopyGuard<'_>> {
        let up = self.upper.as_ref()?;
        let lock = up
            .copying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone();
        let g = CopyGuard { up, id, lock };
        drop(g.hold());
        Some(g)
    }

    /// Whether the lower layers under directory `dir` hold `path` (removing it from the upper
    /// dir then needs a whiteout).
    fn lower_has(&self, dir: &Node, path: &[u8]) -> bool {
        self.resolve_lower(dir, path).is_some()
    }

    /// The node at union path `path`, walking from the root without recording anything.
    fn walk(&self, path: &[u8]) -> Result<(NodeId, Arc<Node>), Error> {
        let mut cur = (ROOT, self.node(ROOT)?);
        for c in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            cur = self.child(cur.0, &cur.1, c)?.ok_or(Error::NotFound)?;
        }
        Ok(cur)
    }

    /// The parent directory of node `n`: the known one, or found by walking.
    fn parent_of(&self, n: &Node) -> Result<(NodeId, Arc<Node>), Error> {
        let (dir, _) = crate::upper::split(&n.path);
        match self.nodes.get(n.parent) {
            Some(p) if &*p.path == dir && !p.detached => Ok((n.parent, p)),
            _ => self.walk(dir),
        }
    }

    /// Copies known node `id` (with its parents) into the upper dir unless it is there already.
    pub fn copy_up(&self, id: NodeId) -> Result<(), Error> {
        self.copy_up_node(id, self.node(id)?, true).map(drop)
    }

    /// Copies node `n` (id `id`, known or not) up, its parents first. Only copy-ups of the same
    /// node wait for each other; nothing else does.
    fn copy_up_node(&self, id: NodeId, n: Arc<Node>, content: bool) -> Result<Arc<Node>, Error> {
        if n.source == Source::Upper {
            return Ok(n);
        }
        let up = self.upper()?;
        if !n.path.is_empty() {
            let (pid, p) = self.parent_of(&n)?;
            self.copy_up_node(pid, p, true)?;
        }
        let Some(lock) = self.copy_lock(id) else {
            return Err(Error::ReadOnly);
        };
        let _held = lock.hold();
        self.nodes.copying(id, true);
        let r = self.copy_up_held(up, id, &n, content);
        self.nodes.copying(id, false);
        r
    }

    fn copy_up_held(
        &self,
        up: &Upper,
        id: NodeId,
        n: &Node,
        content: bool,
    ) -> Result<Arc<Node>, Error> {
        let upper_node = |n: &Node| {
            let mut c = n.clone();
            c.source = Source::Upper;
            Arc::new(c)
        };
        // Copied while we waited (by a copy-up that held this node under another name)?
        if let Some(k) = self.nodes.get(id).filter(|k| k.source == Source::Upper) {
            return Ok(k);
        }
        let p = &n.path;
        if up
            .dir
            .stat(p)
            .map_err(|e| upper_err("stat", p, e))?
            .is_some_and(|st| !is_whiteout(&st))
        {
            self.nodes.update(id, |k| k.source = Source::Upper);
            return Ok(self.nodes.get(id).unwrap_or_else(|| upper_node(n)));
        }
        let a = self.attr_of_node(id, n)?;
        let meta = Meta {
            perm: a.perm,
            uid: a.uid.unwrap_or(up.owner.0),
            gid: a.gid.unwrap_or(up.owner.1),
            atime_ns: a.atime_ns,
            mtime_ns: a.mtime_ns,
            xattrs: self.node_xattrs(n)?.into_owned(),
        };
        let r = match n.kind {
            Kind::Dir => up.dir.make_dir(p, &meta, false, false),
            Kind::File => {
                let mut rd = LowerReader {
                    union: self,
                    node: n,
                    offset: 0,
                };
                let src = content.then_some(&mut rd as &mut dyn Read);
                up.dir.make_file(p, &meta, src, false).map(drop)
            }
            Kind::Symlink => {
                let target = self.node_readlink(n)?.into_owned();
                up.dir.make_symlink(p, &target, &meta, false)
            }
            k => up
                .dir
                .make_special(p, RFileType::from_raw_mode(k.ifmt()), a.rdev, &meta, false),
        };
        r.map_err(|e| upper_err("copying up", p, e))?;
        if is_lower_id(id) {
            up.dir
                .set_origin(p, id)
                .map_err(|e| upper_err("recording the origin of", p, e))?;
        }
        self.nodes.update(id, |k| k.source = Source::Upper);
        if let Some(hook) = &self.on_copy_up {
            hook(id);
        }
        if let Source::Entry { layer, idx } = n.source {
            if let Some(group) = self.layers[layer].container.link_group(idx) {
                self.copy_up_links(up, id, n, layer, group)?;
            }
        }
        Ok(self.nodes.get(id).unwrap_or_else(|| upper_node(n)))
    }

    /// Links every other name of lower link group `group` that still shows node `id` to its
    /// fresh upper copy, so the names stay one file.
    fn copy_up_links(
        &self,
        up: &Upper,
        id: NodeId,
        n: &Node,
        layer: usize,
        group: u32,
    ) -> Result<(), Error> {
        let l = &self.layers[layer];
        let mut root = l.root.clone();
        if !root.is_empty() {
            root.push(b'/');
        }
        let others: Vec<Vec<u8>> = l
            .container
            .link_names(group)
            .into_iter()
            .filter_map(|i| {
                l.container
                    .path(i)
                    .strip_prefix(root.as_slice())
                    .map(<[u8]>::to_vec)
            })
            .filter(|p| p.as_slice() != &*n.path)
            .collect();
        for p in others {
            if self.walk(&p).ok().map(|(i, _)| i) != Some(id) {
                continue;
            }
            let (parent, _) = crate::upper::split(&p);
            let (pid, pn) = self.walk(parent)?;
            self.copy_up_node(pid, pn, true)?;
            up.dir
                .link(&n.path, &p)
                .map_err(|e| upper_err("linking", &p, e))?;
        }
        Ok(())
    }

    /// Copies directory `id` and everything below it up (before a rename of a merged directory).
    fn copy_up_tree(&self, id: NodeId, n: Arc<Node>) -> Result<(), Error> {
        let n = self.copy_up_node(id, n, true)?;
        if n.kind == Kind::Dir {
            for e in self.listing(id, &n)?.iter() {
                if let Some((cid, c)) = self.child(id, &n, e.name)? {
                    self.copy_up_tree(cid, c)?;
                }
            }
        }
        Ok(())
    }

    /// What every create does first: checks the name is free, copies the directory up, and
    /// works out the new entry's path, metadata and whether a whiteout is in the way.
    fn prepare_create(
        &self,
        parent: NodeId,
        name: &[u8],
        dir_kind: bool,
        perm: u32,
        owner: (u32, u32),
    ) -> Result<(&Upper, Vec<u8>, Meta, bool), Error> {
        check_name(self, name)?;
        let up = self.upper()?;
        if self.nodes.child(parent, name).is_some() {
            return Err(Error::Exists);
        }
        let dir = self.copy_up_node(parent, self.dir(parent)?, true)?;
        let path = merge::join(&dir.path, name);
        let (dst, st) = up
            .dir
            .stat_in_dir(&path)
            .map_err(|e| upper_err("stat", &path, e))?;
        let whiteout = match st {
            Some(st) if is_whiteout(&st) => true,
            Some(_) => return Err(Error::Exists),
            None if self.lower_has(&dir, &path) => return Err(Error::Exists),
            None => false,
        };
        // A setgid directory gives its group to what is made in it, and its setgid bit to
        // directories (as every Linux file system does).
        let (mut perm, mut gid) = (perm & 0o7777, owner.1);
        if dst.st_mode & libc::S_ISGID != 0 {
            gid = dst.st_gid;
            if dir_kind {
                perm |= libc::S_ISGID;
            }
        }
        let now = now_ns();
        let meta = Meta {
            perm,
            uid: owner.0,
            gid,
            atime_ns: now,
            mtime_ns: now,
            xattrs: Vec::new(),
        };
        Ok((up, path, meta, whiteout))
    }

    /// Creates `name` in `parent` with permission bits `perm` and owner `uid:gid`, and counts
    /// the kernel's lookup of it (the reply to a create is one).
    pub fn create(
        &self,
        parent: NodeId,
        name: &[u8],
        what: NewNode<'_>,
        perm: u32,
        owner: (u32, u32),
    ) -> Result<NodeId, Error> {
        let is_dir = matches!(what, NewNode::Dir);
        let (up, path, meta, whiteout) = self.prepare_create(parent, name, is_dir, perm, owner)?;
        let r = match what {
            NewNode::Dir => up.dir.make_dir(&path, &meta, whiteout, whiteout),
            NewNode::File => up.dir.make_file(&path, &meta, None, whiteout).map(drop),
            NewNode::Symlink(t) => up.dir.make_symlink(&path, t, &meta, whiteout),
            NewNode::Special { kind, rdev } => up.dir.make_special(
                &path,
                RFileType::from_raw_mode(kind.ifmt()),
                rdev,
                &meta,
                whiteout,
            ),
        };
        r.map_err(|e| upper_err("creating", &path, e))?;
        self.nodes.invalidate_listing(parent);
        self.lookup(parent, name)
    }

    /// create(2) of regular file `name` in `parent`, opened with `flags`: the node (its lookup
    /// counted), the open upper file, and its attributes. Where no whiteout is in the way the
    /// file is made in place and opened at once (a handful of system calls per file).
    pub fn create_open(
        &self,
        parent: NodeId,
        name: &[u8],
        perm: u32,
        owner: (u32, u32),
        flags: OFlags,
    ) -> Result<(NodeId, File, Attr), Error> {
        let (up, path, meta, whiteout) = self.prepare_create(parent, name, false, perm, owner)?;
        if whiteout {
            up.dir
                .make_file(&path, &meta, None, true)
                .map_err(|e| upper_err("creating", &path, e))?;
            self.nodes.invalidate_listing(parent);
            let id = self.lookup(parent, name)?;
            let opened = self
                .open_upper(id, flags)
                .and_then(|f| Ok((self.attr_of_file(id, &f)?, f)));
            return match opened {
                Ok((a, f)) => Ok((id, f, a)),
                Err(e) => {
                    self.forget(id, 1);
                    Err(e)
                }
            };
        }
        let (fd, st) = up
            .dir
            .create_file(&path, &meta, flags)
            .map_err(|e| upper_err("creating", &path, e))?;
        self.nodes.invalidate_listing(parent);
        let r = Resolved {
            id: super::id::upper_id(st.st_ino),
            kind: Kind::File,
            source: Source::Upper,
            layers: Vec::new(),
        };
        let id = match self.nodes.insert(parent, name, path, r) {
            Inserted::Known(id) | Inserted::Busy(id) => id,
        };
        Ok((id, File::from(fd), attr_of_stat(id, &st)))
    }

    /// unlink (`dir` false) or rmdir (`dir` true) of `name` in `parent`.
    pub fn remove(&self, parent: NodeId, name: &[u8], dir: bool) -> Result<(), Error> {
        check_lookup_name(name)?;
        let up = self.upper()?;
        let pdir = self.dir(parent)?;
        let (id, n) = self.child(parent, &pdir, name)?.ok_or(Error::NotFound)?;
        match (dir, n.kind == Kind::Dir) {
            (true, false) => return Err(Error::NotDir),
            (false, true) => return Err(Error::IsDir),
            _ => {}
        }
        if dir && !self.listing(id, &n)?.is_empty() {
            return Err(Error::NotEmpty);
        }
        let pdir = self.copy_up_node(parent, pdir, true)?;
        let path = merge::join(&pdir.path, name);
        if n.source == Source::Upper {
            let r = if dir {
                up.dir.remove_tree(&path)
            } else {
                up.dir.remove(&path, false)
            };
            r.map_err(|e| upper_err("removing", &path, e))?;
        }
        if self.lower_has(&pdir, &path) {
            up.dir
                .whiteout(&path)
                .map_err(|e| upper_err("whiting out", &path, e))?;
        }
        self.nodes.remove_name(parent, name);
        self.nodes.invalidate_listing(parent);
        Ok(())
    }

    /// rename(2) of `name` in `parent` to `new_name` in `new_parent`.
    pub fn rename(
        &self,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
        noreplace: bool,
    ) -> Result<(), Error> {
        check_lookup_name(name)?;
        check_name(self, new_name)?;
        let up = self.upper()?;
        let (pdir, ndir) = (self.dir(parent)?, self.dir(new_parent)?);
        let (id, n) = self.child(parent, &pdir, name)?.ok_or(Error::NotFound)?;
        let is_dir = n.kind == Kind::Dir;
        let target = self.child(new_parent, &ndir, new_name)?;
        if let Some((t, tn)) = &target {
            if noreplace {
                return Err(Error::Exists);
            }
            if *t == id {
                // Two names of one file (or the same name): rename(2) does nothing.
                return Ok(());
            }
            match (is_dir, tn.kind == Kind::Dir) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.listing(*t, tn)?.is_empty() => return Err(Error::NotEmpty),
                _ => {}
            }
        }
        let from_dir = self.copy_up_node(parent, pdir, true)?;
        let to_dir = self.copy_up_node(new_parent, ndir, true)?;
        let from = merge::join(&from_dir.path, name);
        let to = merge::join(&to_dir.path, new_name);
        let fp = from.as_slice();
        let e = |op| move |e| upper_err(op, fp, e);
        if is_dir && !n.layers.is_empty() {
            self.copy_up_tree(id, n)?;
            // Nothing below hides anything now: the kernel would list leftover whiteouts.
            purge_whiteouts(up, &from).map_err(e("removing whiteouts below"))?;
            up.dir.set_opaque(&from).map_err(e("marking opaque"))?;
        } else {
            self.copy_up_node(id, n, true)?;
        }
        if let Some(st) = up.dir.stat(&to).map_err(e("stat"))? {
            let upper_dir = RFileType::from_raw_mode(st.st_mode) == RFileType::Directory;
            if is_whiteout(&st) || upper_dir {
                // A whiteout, or the upper part of an empty-looking directory (whiteouts inside).
                up.dir
                    .remove_tree(&to)
                    .map_err(e("clearing the target of"))?;
            }
        }
        up.dir
            .rename(&from, &to, RenameFlags::empty())
            .map_err(e("renaming"))?;
        if is_dir && self.lower_has(&to_dir, &to) {
            up.dir.set_opaque(&to).map_err(e("marking opaque"))?;
        }
        if self.lower_has(&from_dir, &from) {
            up.dir.whiteout(&from).map_err(e("whiting out"))?;
        }
        if target.is_some() {
            self.nodes.remove_name(new_parent, new_name);
        }
        self.nodes
            .rename(id, (parent, name), (new_parent, new_name), true);
        self.nodes.invalidate_listing(parent);
        self.nodes.invalidate_listing(new_parent);
        Ok(())
    }

    /// A new name `new_name` in `new_parent` for file `id`, counted as a kernel lookup.
    pub fn link(&self, id: NodeId, new_parent: NodeId, new_name: &[u8]) -> Result<NodeId, Error> {
        check_name(self, new_name)?;
        let up = self.upper()?;
        let n = self.node(id)?;
        if n.kind == Kind::Dir {
            return Err(Error::NotPermitted);
        }
        let ndir = self.dir(new_parent)?;
        if self.child(new_parent, &ndir, new_name)?.is_some() {
            return Err(Error::Exists);
        }
        let n = self.copy_up_node(id, n, true)?;
        let to_dir = self.copy_up_node(new_parent, ndir, true)?;
        let to = merge::join(&to_dir.path, new_name);
        let tp = to.as_slice();
        let e = |op| move |e| upper_err(op, tp, e);
        if up
            .dir
            .stat(&to)
            .map_err(e("stat"))?
            .is_some_and(|st| is_whiteout(&st))
        {
            up.dir
                .remove(&to, false)
                .map_err(e("removing the whiteout"))?;
        }
        up.dir.link(&n.path, &to).map_err(e("linking"))?;
        self.nodes.add_name(id, new_parent, new_name);
        self.nodes.invalidate_listing(new_parent);
        Ok(id)
    }

    /// chmod, chown, truncate, utimens (copying up first). `file` is the open upper descriptor
    /// the request names, for ftruncate; `open` any open upper descriptor of the node, used
    /// for the rest instead of a path walk.
    pub fn set_attr(
        &self,
        id: NodeId,
        s: &SetAttr,
        file: Option<&File>,
        open: Option<&File>,
    ) -> Result<Attr, Error> {
        let open = file.or(open);
        let up = self.upper()?;
        let n = self.copy_up_node(id, self.node(id)?, s.size != Some(0))?;
        let p = &n.path;
        let e = |op| move |e| upper_err(op, p, e);
        let owner = (s.uid.is_some() || s.gid.is_some()).then_some((s.uid, s.gid));
        let times = (s.atime.is_some() || s.mtime.is_some())
            .then(|| (set_time(s.atime), set_time(s.mtime)));
        // chown first: it clears setuid bits that a chmod in the same request sets.
        up.dir
            .set_attrs(
                p,
                open.map(|f| f.as_fd()),
                owner,
                s.mode.map(|m| m & 0o7777),
                None,
            )
            .map_err(e("chown/chmod"))?;
        if let Some(size) = s.size {
            match file {
                Some(f) => f.set_len(size),
                None => up.dir.truncate(p, size),
            }
            .map_err(e("truncate"))?;
        }
        // Times last: a truncate changes mtime.
        if times.is_some() {
            up.dir
                .set_attrs(p, open.map(|f| f.as_fd()), None, None, times)
                .map_err(e("utimens"))?;
        }
        match open {
            Some(f) => self.attr_of_file(id, f),
            None => self.attr(id),
        }
    }

    /// setxattr (copying up first); `flags` are setxattr(2)'s.
    pub fn set_xattr(
        &self,
        id: NodeId,
        name: &[u8],
        value: &[u8],
        flags: u32,
    ) -> Result<(), Error> {
        if is_overlay_xattr(name) {
            return Err(Error::NotPermitted);
        }
        let up = self.upper()?;
        let n = self.copy_up_node(id, self.node(id)?, true)?;
        up.dir
            .set_xattr(&n.path, name, value, flags)
            .map_err(|e| upper_err("setxattr", &n.path, e))
    }

    pub fn remove_xattr(&self, id: NodeId, name: &[u8]) -> Result<(), Error> {
        if is_overlay_xattr(name) {
            return Err(Error::NoXattr);
        }
        if self.xattr(id, name, None).is_err() {
            return Err(Error::NoXattr);
        }
        let up = self.upper()?;
        let n = self.copy_up_node(id, self.node(id)?, true)?;
        up.dir
            .remove_xattr(&n.path, name)
            .map_err(|e| upper_err("removexattr", &n.path, e))
    }

    /// Opens the upper file of node `id` with `flags` (access mode, O_TRUNC, O_APPEND…), copying
    /// it up first unless it is there already (with O_TRUNC, without its content).
    pub fn open_upper(&self, id: NodeId, flags: OFlags) -> Result<File, Error> {
        let up = self.upper()?;
        let n = self.copy_up_node(id, self.node(id)?, !flags.contains(OFlags::TRUNC))?;
        if n.kind != Kind::File {
            return Err(Error::IsDir);
        }
        up.dir
            .open_file(&n.path, flags, 0)
            .map(File::from)
            .map_err(|e| upper_err("opening", &n.path, e))
    }

    /// Drops the setuid/setgid bits of upper file `id` (open as `f`, if it is) that a truncate
    /// by `who` drops. The server truncates as itself (root: CAP_FSETID), so the upper dir's file
    /// system keeps them; and the kernel leaves this to the server where it does not send the
    /// mode: an open with O_TRUNC (FUSE_ATOMIC_O_TRUNC: fs/fuse/dir.c `fuse_do_setattr` skips
    /// the setattr of `ATTR_OPEN`, mode included) and setgid without group execute (the mode
    /// `fuse_setattr` computes keeps it). True: bits were dropped.
    pub fn drop_privs_after_truncate(
        &self,
        id: NodeId,
        f: Option<&File>,
        who: &Truncater<'_>,
    ) -> Result<bool, Error> {
        if who.uid == 0 {
            return Ok(false);
        }
        let a = match f {
            Some(f) => self.attr_of_file(id, f)?,
            None => self.attr(id)?,
        };
        let drop = dropped_by_truncate(a.perm, a.gid.unwrap_or(0), who);
        if a.kind != Kind::File || drop == 0 {
            return Ok(false);
        }
        let up = self.upper()?;
        let n = self.node(id)?;
        up.dir
            .set_attrs(
                &n.path,
                f.map(|f| f.as_fd()),
                None,
                Some(a.perm & !drop),
                None,
            )
            .map_err(|e| upper_err("chmod", &n.path, e))?;
        Ok(true)
    }

    /// Whether node `id` lives in the upper dir.
    pub fn is_upper(&self, id: NodeId) -> Result<bool, Error> {
        Ok(self.node(id)?.source == Source::Upper)
    }

    /// Whether child `name` of directory `parent` lives in the upper dir (true when there is no
    /// such child: nothing to copy up).
    pub fn is_upper_child(&self, parent: NodeId, name: &[u8]) -> bool {
        let Ok(dir) = self.node(parent) else {
            return true;
        };
        match self.child(parent, &dir, name) {
            Ok(Some((_, n))) => n.source == Source::Upper,
            _ => true,
        }
    }

    /// Whether a copy-up is running (a lookup could meet its node and have to wait).
    pub fn copying_now(&self) -> bool {
        self.upper.as_ref().is_some_and(|up| {
            !up.copying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        })
    }

    /// Metadata from an open upper descriptor (right even after the last name is gone).
    pub fn attr_of_file(&self, id: NodeId, f: &File) -> Result<Attr, Error> {
        let st = rustix::fs::fstat(f).map_err(|e| upper_err("fstat", b"", e.into()))?;
        Ok(attr_of_stat(id, &st))
    }

    pub(super) fn read_upper(&self, n: &Node, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        let up = self.upper.as_ref().ok_or(Error::NotFound)?;
        let f = up
            .dir
            .open_file(&n.path, OFlags::RDONLY, 0)
            .map(File::from)
            .map_err(|e| upper_err("opening", &n.path, e))?;
        read_full(&f, offset, size).map_err(|e| upper_err("reading", &n.path, e))
    }

    /// statfs of the upper dir's file system (free space for writes).
    pub fn upper_statvfs(&self) -> Option<rustix::fs::StatVfs> {
        let up = self.upper.as_ref()?;
        rustix::fs::statvfs(up.dir.root_path()).ok()
    }
}

/// Removes every whiteout below upper directory `dir` (a subtree that merges no lower layer).
fn purge_whiteouts(up: &Upper, dir: &[u8]) -> io::Result<()> {
    for (name, st) in up.dir.list(dir)? {
        let p = merge::join(dir, &name);
        if is_whiteout(&st) {
            up.dir.remove(&p, false)?;
        } else if RFileType::from_raw_mode(st.st_mode) == RFileType::Directory {
            purge_whiteouts(up, &p)?;
        }
    }
    Ok(())
}

/// pread until `size` bytes or end of file.
pub fn read_full(f: &File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_drops_what_the_kernel_drops() {
        fn member(_: u32) -> bool {
            true
        }
        fn stranger(_: u32) -> bool {
            false
        }
        let root = Truncater {
            uid: 0,
            in_group: &stranger,
        };
        // (perm, caller in the file's group?, bits dropped)
        for (perm, in_group, drop) in [
            (0o4777, true, 0o4000),
            (0o2777, true, 0o2000),
            (0o6777, true, 0o6000),
            (0o2767, true, 0),
            (0o2767, false, 0o2000),
            (0o0777, false, 0),
        ] {
            let who = Truncater {
                uid: 1000,
                in_group: if in_group { &member } else { &stranger },
            };
            assert_eq!(dropped_by_truncate(perm, 5, &who), drop, "{perm:o}");
            assert_eq!(dropped_by_truncate(perm, 5, &root), 0, "{perm:o} by root");
        }
    }
}
