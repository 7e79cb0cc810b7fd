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
    /// Hardlinked files: (layer, link group).
    pub link: Option<(usize, u32)>,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// Union path: '/'-separated, relative, "" for the root. For hardlinks, the first name seen.
    pub path: Box<[u8]>,
    pub parent: NodeId,
    pub kind: Kind,
    pub source: Source,
    pub layers: Box<[usize]>,
    /// The merged listing, built on first use (directories only).
    pub listing: OnceLock<Arc<[DirEntry]>>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: Vec<Arc<Node>>,
    by_path: HashMap<Box<[u8]>, NodeId>,
    by_link: HashMap<(usize, u32), NodeId>,
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
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
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
        }));
        inner.by_path.insert(path, id);
        if let Some(l) = r.link {
            inner.by_link.insert(l, id);
        }
        id
    }
}
