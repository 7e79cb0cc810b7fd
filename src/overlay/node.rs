//! Nodes of the union: what a `NodeId` stands for, and the table that hands them out.
//!
//! A `NodeId` is also the inode number the kernel sees (root = 1, as FUSE requires). Ids are given
//! on first lookup and never taken back, so `st_ino` is stable for the life of the mount; the table
//! grows only with what was looked at, so mounting costs nothing per entry. Every union path of a
//! hardlinked file maps to one node (keyed by layer and link group), so the names share `st_ino`.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::bfc::Kind;

/// A node of the union, and its inode number.
pub type NodeId = u64;
/// The root directory (FUSE_ROOT_ID).
pub const ROOT: NodeId = 1;

/// Where a node's metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// An index entry: `layer` counts from the top of the stack.
    Entry { layer: usize, idx: usize },
    /// A directory that no layer records but some path runs through (or the whole-container root).
    Implicit,
    /// The upper directory holds this node at the node's path (its metadata and content live there).
    Upper,
}

/// What makes several names one file: a link group of one lower layer, or one upper inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum LinkKey {
    Lower(usize, u32),
    Upper { dev: u64, ino: u64 },
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Box<[u8]>,
    pub ino: NodeId,
    pub kind: Kind,
}

/// What resolving a name in a directory found.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub kind: Kind,
    pub source: Source,
    /// Directories: the layers (top first) whose directory at this path merges into this one.
    pub layers: Vec<usize>,
    /// Hardlinked files: the link group, or the upper inode.
    pub link: Option<LinkKey>,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Union path: '/'-separated, relative, "" for the root. For hardlinks, the first name seen.
    pub path: Box<[u8]>,
    pub parent: NodeId,
    pub kind: Kind,
    pub source: Source,
    pub layers: Box<[usize]>,
    /// The merged listing, built on first use (directories only).
    pub listing: OnceLock<Arc<[DirEntry]>>,
    /// What the lower layers hold in this directory, built on the first lookup when it merges
    /// many layers (see `merge::DirIndex`).
    pub index: OnceLock<Arc<super::merge::DirIndex>>,
    /// Hardlinked files: the key every name of this file resolves to.
    pub link: Option<LinkKey>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: Vec<Arc<Node>>,
    by_path: HashMap<Box<[u8]>, NodeId>,
    by_link: HashMap<LinkKey, NodeId>,
}

/// The id ↔ node table. Read-mostly: lookups of known paths take the read lock only.
#[derive(Debug)]
pub(crate) struct NodeTable {
    inner: RwLock<Inner>,
}

impl NodeTable {
    pub fn new(root: Resolved) -> NodeTable {
        let node = Node {
            path: Box::default(),
            parent: ROOT,
            kind: root.kind,
            source: root.source,
            layers: root.layers.into(),
            listing: OnceLock::new(),
            index: OnceLock::new(),
            link: None,
        };
        let mut inner = Inner::default();
        inner.nodes.push(Arc::new(node));
        inner.by_path.insert(Box::default(), ROOT);
        NodeTable {
            inner: RwLock::new(inner),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the table half-updated (insert pushes last).
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        // Every update below replaces whole nodes, so a panic cannot leave one half-changed.
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: NodeId) -> Option<Arc<Node>> {
        let idx = usize::try_from(id.checked_sub(1)?).ok()?;
        self.read().nodes.get(idx).cloned()
    }

    pub fn find_path(&self, path: &[u8]) -> Option<NodeId> {
        self.read().by_path.get(path).copied()
    }

    pub fn len(&self) -> usize {
        self.read().nodes.len()
    }

    /// The node for `path` (created from `r` unless the path or its link group is known).
    pub fn insert(&self, path: Vec<u8>, parent: NodeId, r: Resolved) -> NodeId {
        let mut inner = self.write();
        if let Some(&id) = inner.by_path.get(path.as_slice()) {
            return id;
        }
        if let Some(id) = r.link.and_then(|l| inner.by_link.get(&l).copied()) {
            inner.by_path.insert(path.into(), id);
            return id;
        }
        let id = inner.nodes.len() as NodeId + 1;
        let path: Box<[u8]> = path.into();
        inner.nodes.push(Arc::new(Node {
            path: path.clone(),
            parent,
            kind: r.kind,
            source: r.source,
            layers: r.layers.into(),
            listing: OnceLock::new(),
            index: OnceLock::new(),
            link: r.link,
        }));
        inner.by_path.insert(path, id);
        if let Some(l) = r.link {
            inner.by_link.insert(l, id);
        }
        id
    }
}

/// Changes made by writes through an upper directory. Nodes are immutable snapshots: a change
/// replaces the node, so readers holding the old `Arc` finish with a consistent view.
impl NodeTable {
    /// Replaces node `id` by `f` applied to a copy of it.
    pub fn update(&self, id: NodeId, f: impl FnOnce(&mut Node)) {
        let mut inner = self.write();
        let Some(idx) = id.checked_sub(1).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(slot) = inner.nodes.get_mut(idx) {
            let mut n = Node::clone(slot);
            f(&mut n);
            *slot = Arc::new(n);
        }
    }

    /// Drops the cached merged listing of directory `id` (its entries changed).
    pub fn invalidate_listing(&self, id: NodeId) {
        self.update(id, |n| n.listing = OnceLock::new());
    }

    /// Points the key of a hardlinked file at `id` (after copy-up: its upper inode).
    pub fn set_link(&self, id: NodeId, key: LinkKey) {
        let mut inner = self.write();
        if let Some(old) = inner
            .nodes
            .get(id as usize - 1)
            .and_then(|n| n.link)
            .filter(|k| *k != key)
        {
            inner.by_link.remove(&old);
        }
        inner.by_link.insert(key, id);
        drop(inner);
        self.update(id, |n| n.link = Some(key));
    }

    /// Another name `path` for node `id` (a new hard link).
    pub fn add_path(&self, path: Vec<u8>, id: NodeId) {
        self.write().by_path.insert(path.into(), id);
    }

    /// Forgets name `path` and every name below it (unlinked or removed). When the node's own
    /// path was that name and it has another known name (a hard link), the node moves there.
    pub fn forget_path(&self, path: &[u8]) {
        let mut inner = self.write();
        let Some(id) = inner.by_path.remove(path) else {
            return;
        };
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        inner.by_path.retain(|k, _| !k.starts_with(&prefix));
        let other = inner
            .by_path
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.clone());
        let idx = id as usize - 1;
        if let (Some(other), Some(slot)) = (other, inner.nodes.get_mut(idx)) {
            if &*slot.path == path {
                let mut n = Node::clone(slot);
                n.path = other;
                *slot = Arc::new(n);
            }
        }
    }

    /// Moves name `from` (node `id`, and for a directory every known name below it) to `to` in
    /// directory `new_parent`. The nodes keep their ids: the kernel keeps its inodes across a
    /// rename. `all_upper` marks the moved nodes as living in the upper dir with no lower layers
    /// (a directory whose whole subtree was copied up and made opaque).
    pub fn rename(&self, id: NodeId, from: &[u8], to: &[u8], new_parent: NodeId, all_upper: bool) {
        let mut inner = self.write();
        let mut prefix = from.to_vec();
        prefix.push(b'/');
        let moved: Vec<(Box<[u8]>, NodeId)> = inner
            .by_path
            .iter()
            .filter(|(k, _)| &***k == from || k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, _) in &moved {
            inner.by_path.remove(k);
        }
        let renamed = |p: &[u8]| -> Box<[u8]> {
            let mut n = to.to_vec();
            n.extend_from_slice(&p[from.len()..]);
            n.into()
        };
        for (k, v) in moved {
            let nk = renamed(&k);
            let idx = v as usize - 1;
            if let Some(slot) = inner.nodes.get_mut(idx) {
                if slot.path == k || v == id {
                    let mut n = Node::clone(slot);
                    if n.path == k {
                        n.path = nk.clone();
                    }
                    if v == id {
                        n.parent = new_parent;
                    }
                    if all_upper {
                        n.source = Source::Upper;
                        n.layers = Box::default();
                        n.listing = OnceLock::new();
                        n.index = OnceLock::new();
                    }
                    *slot = Arc::new(n);
                }
            }
            inner.by_path.insert(nk, v);
        }
        if !inner.by_path.contains_key(to) {
            inner.by_path.insert(to.into(), id);
        }
    }
}
