//! Nodes of the union: what a `NodeId` stands for, and the table of the nodes the kernel knows.
//!
//! A `NodeId` is also the inode number the kernel sees (root = 1, as FUSE requires). Ids are
//! derived from what a node is, not handed out in order, so the same file always gets the same
//! id — after the kernel forgot it, after a remount, after a server restart:
//! - a lower entry: its layer and index entry (every name of a hardlink group: the group's entry);
//! - a directory no layer records: the layer and the first entry below it;
//! - an upper entry: the lower id recorded when it was copied up, else its upper inode number.
//!
//! The table holds only the nodes the kernel holds: each counts the kernel's lookups and goes
//! when FORGET brings the count to zero, so its size follows the kernel's inode cache, not the
//! image or the history of the mount. Children are indexed by parent, so a create, unlink or
//! rename touches its own directory (and, for a directory rename, its own known subtree).
//!
//! In a read-only union, a non-directory lower entry (not a hard link) is everything its id
//! says: its layer and index entry give its path, kind and metadata, and nothing asks for its
//! parent. Such a node is only a lookup count in a per-layer table indexed by entry (4 bytes,
//! in pages made on first use), not a `Node`; `get` builds the `Node` when asked. The kernel
//! holding every entry of a million-entry image then costs 4 MB, not hundreds.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::id::{dynamic_id, lower_id, split_lower, NodeId, ROOT};
use super::merge::{basename, join, DirIndex, Resolved, Source};
use super::Layer;
use crate::bfc::Kind;

/// One entry of a merged directory listing.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: NodeId,
    pub kind: Kind,
}

/// A merged directory listing, sorted by name: the names back to back in one buffer and 16
/// bytes per entry beside them (a million-entry image listed whole costs tens of MB, not a
/// heap object per name).
#[derive(Debug, Default)]
pub struct Listing {
    names: Box<[u8]>,
    /// (end of the name in `names`, inode, kind), in name order.
    entries: Box<[(u32, NodeId, Kind)]>,
}

impl Listing {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i` (in name order).
    pub fn get(&self, i: usize) -> Option<DirEntry<'_>> {
        let &(end, ino, kind) = self.entries.get(i)?;
        let start = match i {
            0 => 0,
            _ => self.entries[i - 1].0,
        };
        Some(DirEntry {
            name: self.names.get(start as usize..end as usize)?,
            ino,
            kind,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = DirEntry<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Whether `name` is listed (by bisection).
    pub fn contains(&self, name: &[u8]) -> bool {
        self.find(name).is_some()
    }

    /// The entry named `name` (by bisection).
    pub fn find(&self, name: &[u8]) -> Option<DirEntry<'_>> {
        self.get(self.position(name)?)
    }

    /// Where `name` is in the listing.
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.get(mid)?;
            match e.name.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
}

/// Builds a `Listing` from entries given in name order.
#[derive(Debug, Default)]
pub(crate) struct ListingBuilder {
    names: Vec<u8>,
    entries: Vec<(u32, NodeId, Kind)>,
}

impl ListingBuilder {
    /// A builder with room for `entries` names of `name_bytes` bytes in all.
    pub fn with_capacity(entries: usize, name_bytes: usize) -> ListingBuilder {
        ListingBuilder {
            names: Vec::with_capacity(name_bytes),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Adds an entry; false (and nothing added) once the names pass 4 GiB.
    pub fn push(&mut self, name: &[u8], ino: NodeId, kind: Kind) -> bool {
        let Ok(end) = u32::try_from(self.names.len() + name.len()) else {
            return false;
        };
        self.names.extend_from_slice(name);
        self.entries.push((end, ino, kind));
        true
    }

    pub fn finish(self) -> Listing {
        Listing {
            names: self.names.into_boxed_slice(),
            entries: self.entries.into_boxed_slice(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Union path: '/'-separated, relative, "" for the root. For hardlinks, one of its names.
    pub path: Box<[u8]>,
    /// The directory holding `path` (0 for a compact node: see the module doc).
    pub parent: NodeId,
    pub kind: Kind,
    pub source: Source,
    pub layers: Box<[usize]>,
    /// The node has no name left (unlinked, or replaced by a rename) but the kernel holds it.
    pub detached: bool,
    /// The merged listing, built on first use (directories only).
    pub listing: OnceLock<Arc<Listing>>,
    /// What the lower layers hold in this directory, built on the first lookup
    /// (see `merge::DirIndex`).
    pub index: OnceLock<Arc<DirIndex>>,
}

impl Node {
    /// A node that is not (or not yet) in the table: what a walk inside the union sees.
    pub fn new(path: Box<[u8]>, parent: NodeId, r: &Resolved) -> Node {
        Node {
            path,
            parent,
            kind: r.kind,
            source: r.source,
            layers: r.layers.clone().into(),
            detached: false,
            listing: OnceLock::new(),
            index: OnceLock::new(),
        }
    }
}

#[derive(Debug)]
struct Slot {
    node: Arc<Node>,
    /// The kernel's lookup count (FUSE `forget` contract); the root is never forgotten. Atomic,
    /// so a lookup of a known name counts under the table's read lock.
    lookups: AtomicU64,
}

/// A name in a directory: (parent, name).
type Name = (NodeId, Box<[u8]>);

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<NodeId, Slot>,
    /// parent → name → child, for every name of every known node.
    children: HashMap<NodeId, HashMap<Box<[u8]>, NodeId>>,
    /// Names of hardlinked nodes besides `Node::path`: (parent, name).
    aliases: HashMap<NodeId, Vec<Name>>,
    /// Ids whose copy-up is running: a lookup must not record them as lower nodes meanwhile.
    copying: HashMap<NodeId, usize>,
}

/// The id ↔ node table. Read-mostly: lookups of known names take the read lock only.
#[derive(Debug)]
pub(crate) struct NodeTable {
    inner: RwLock<Inner>,
    next_dynamic: AtomicU64,
    /// Compact nodes (read-only unions only; see the module doc).
    compact: Option<Compact>,
}

/// One layer's lookup counts: pages of `PAGE` entries, made on first use.
type Pages = Box<[OnceLock<Box<[AtomicU32]>>]>;

/// Lookup counts of compact nodes: per layer, per index entry, in pages made on first use.
struct Compact {
    layers: Vec<Layer>,
    counts: Vec<Pages>,
    /// Compact nodes with a count above zero.
    known: AtomicUsize,
}

impl std::fmt::Debug for Compact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compact")
            .field("known", &self.known)
            .finish()
    }
}

/// Entries per page of compact counts.
const PAGE: usize = 1024;

impl Compact {
    fn new(layers: Vec<Layer>) -> Compact {
        let counts = layers
            .iter()
            .map(|l| {
                (0..l.container.len().div_ceil(PAGE))
                    .map(|_| OnceLock::new())
                    .collect()
            })
            .collect();
        Compact {
            layers,
            counts,
            known: AtomicUsize::new(0),
        }
    }

    /// (layer, entry) of a resolved name that can be a compact node: a non-directory index
    /// entry whose id is its own (not a hard link).
    fn key(&self, r: &Resolved) -> Option<(usize, usize)> {
        let Source::Entry { layer, idx } = r.source else {
            return None;
        };
        let c = &self.layers.get(layer)?.container;
        (r.kind != Kind::Dir && r.id == lower_id(layer, idx) && c.link_group(idx).is_none())
            .then_some((layer, idx))
    }

    fn slot(&self, (layer, idx): (usize, usize), make: bool) -> Option<&AtomicU32> {
        let page = self.counts.get(layer)?.get(idx / PAGE)?;
        let p = match make {
            true => page.get_or_init(|| (0..PAGE).map(|_| AtomicU32::new(0)).collect()),
            false => page.get()?,
        };
        p.get(idx % PAGE)
    }

    /// Counts one more lookup of compact node `key`.
    fn add(&self, key: (usize, usize)) {
        if let Some(c) = self.slot(key, true) {
            if c.fetch_add(1, Ordering::AcqRel) == 0 {
                self.known.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn count(&self, id: NodeId) -> Option<&AtomicU32> {
        let key = split_lower(id)?;
        self.slot(key, false)
            .filter(|c| c.load(Ordering::Acquire) > 0)
    }

    /// Takes back `n` lookups of compact node `id`; false when it is not one.
    fn forget(&self, id: NodeId, n: u64) -> bool {
        let Some(c) = self.count(id) else {
            return false;
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let before = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(v.saturating_sub(n))
        });
        if before.is_ok_and(|v| v > 0 && v <= n) {
            self.known.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    /// The node compact node `id` stands for, if the kernel holds it.
    fn node(&self, id: NodeId) -> Option<Node> {
        self.count(id)?;
        let (layer, idx) = split_lower(id)?;
        let l = self.layers.get(layer)?;
        let full = l.container.path(idx);
        let path = match l.root.len() {
            0 => full,
            n => full.get(n + 1..)?,
        };
        Some(Node {
            path: path.into(),
            parent: 0,
            kind: l.container.kind(idx),
            source: Source::Entry { layer, idx },
            layers: Box::default(),
            detached: false,
            listing: OnceLock::new(),
            index: OnceLock::new(),
        })
    }
}

/// What `NodeTable::insert` did.
pub(crate) enum Inserted {
    Known(NodeId),
    /// The id is being copied up: resolve again once the copy-up is done.
    Busy(NodeId),
}

impl NodeTable {
    pub fn new(root: Resolved) -> NodeTable {
        let node = Node::new(Box::default(), ROOT, &root);
        let mut inner = Inner::default();
        inner.nodes.insert(
            ROOT,
            Slot {
                node: Arc::new(node),
                lookups: AtomicU64::new(1),
            },
        );
        NodeTable {
            inner: RwLock::new(inner),
            next_dynamic: AtomicU64::new(1),
            compact: None,
        }
    }

    /// Keeps non-directory lower entries of `layers` as compact nodes (read-only unions: a
    /// compact node can never be renamed, unlinked or copied up).
    pub fn with_compact_lower(mut self, layers: Vec<Layer>) -> NodeTable {
        self.compact = Some(Compact::new(layers));
        self
    }

    /// Stops making compact nodes (the union became writable; none exist yet).
    pub fn without_compact(&mut self) {
        self.compact = None;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Every update below replaces whole nodes, so a panic cannot leave one half-changed.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: NodeId) -> Option<Arc<Node>> {
        if let Some(n) = self.read().nodes.get(&id) {
            return Some(n.node.clone());
        }
        self.compact.as_ref()?.node(id).map(Arc::new)
    }

    /// The known child `name` of `parent`.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        self.read().children.get(&parent)?.get(name).copied()
    }

    /// Whether any child of `parent` is known (by name).
    pub fn has_children(&self, parent: NodeId) -> bool {
        self.read().children.contains_key(&parent)
    }

    /// (layer, entry) of `id` when it can be a compact node (see the module doc) of `kind`: a
    /// read-only union, a non-directory lower entry whose id is its own (no other names).
    pub fn compact_key(&self, id: NodeId, kind: Kind) -> Option<(usize, usize)> {
        let c = self.compact.as_ref()?;
        let (layer, idx) = split_lower(id)?;
        let l = &c.layers.get(layer)?.container;
        (kind != Kind::Dir && idx < l.len() && l.link_group(idx).is_none()).then_some((layer, idx))
    }

    /// Counts one more kernel lookup of compact node `key` (from `compact_key`).
    pub fn add_compact(&self, key: (usize, usize)) {
        if let Some(c) = &self.compact {
            c.add(key);
        }
    }

    /// (layer, entry) of compact node `id` if the kernel holds it: everything its id says,
    /// without building its `Node` (`get` does).
    pub fn held_compact(&self, id: NodeId) -> Option<(usize, usize)> {
        self.compact.as_ref()?.count(id)?;
        split_lower(id)
    }

    /// How many nodes the kernel holds (the root included).
    pub fn len(&self) -> usize {
        let compact = self
            .compact
            .as_ref()
            .map_or(0, |c| c.known.load(Ordering::Relaxed));
        self.read().nodes.len() + compact
    }

    /// An id never handed out before (for what has no id by what it is).
    pub fn fresh_id(&self) -> NodeId {
        dynamic_id(self.next_dynamic.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts one more kernel lookup of known node `id`.
    pub fn add_lookup(&self, id: NodeId) {
        if let Some(s) = self.read().nodes.get(&id) {
            s.lookups.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(c) = &self.compact {
            if let Some(n) = c.count(id) {
                n.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Counts one more kernel lookup of the known child `name` of `parent`.
    pub fn lookup_known(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let inner = self.read();
        let id = *inner.children.get(&parent)?.get(name)?;
        inner
            .nodes
            .get(&id)?
            .lookups
            .fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    /// Records the kernel's lookup of `name` in `parent` (resolved as `r`) and counts it. A name
    /// known already, or a node known under another name (a hard link), keeps its id.
    pub fn insert(&self, parent: NodeId, name: &[u8], path: Vec<u8>, r: Resolved) -> Inserted {
        if let Some(c) = &self.compact {
            if let (Some(key), Some(id)) = (c.key(&r), r.id) {
                c.add(key);
                return Inserted::Known(id);
            }
        }
        let mut inner = self.write();
        if let Some(&id) = inner.children.get(&parent).and_then(|c| c.get(name)) {
            if let Some(s) = inner.nodes.get(&id) {
                s.lookups.fetch_add(1, Ordering::Relaxed);
                return Inserted::Known(id);
            }
        }
        if let Some(id) = r.id.filter(|id| inner.copying.contains_key(id)) {
            if r.source != Source::Upper {
                return Inserted::Busy(id);
            }
        }
        let id = match r.id {
            // Another name of a known file (a hard link): one node, one more name.
            Some(id) if inner.nodes.get(&id).is_some_and(|s| !s.node.detached) => {
                inner.add_alias(id, parent, name);
                return Inserted::Known(id);
            }
            // Free, or held by the kernel for a file that is gone (an unlinked upper inode
            // whose number the file system gave again): a fresh id, never one in use.
            Some(id) if !inner.nodes.contains_key(&id) => id,
            _ => self.fresh_id(),
        };
        let node = Node::new(path.into(), parent, &r);
        inner.nodes.insert(
            id,
            Slot {
                node: Arc::new(node),
                lookups: AtomicU64::new(1),
            },
        );
        inner
            .children
            .entry(parent)
            .or_default()
            .insert(name.into(), id);
        Inserted::Known(id)
    }

    /// The kernel dropped `n` lookups of `id`; at zero the node and its names go.
    pub fn forget(&self, id: NodeId, n: u64) {
        if id == ROOT {
            return;
        }
        {
            let inner = self.read();
            let Some(s) = inner.nodes.get(&id) else {
                if let Some(c) = &self.compact {
                    c.forget(id, n);
                }
                return;
            };
            let sub = |v: u64| Some(v.saturating_sub(n));
            let before = s
                .lookups
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, sub);
            if before.map_or(0, |v| v.saturating_sub(n)) > 0 {
                return;
            }
        }
        let mut inner = self.write();
        // A lookup may have counted again between the two locks: then the node stays.
        if inner
            .nodes
            .get(&id)
            .is_none_or(|s| s.lookups.load(Ordering::Acquire) > 0)
        {
            return;
        }
        let node = inner.nodes.remove(&id).map(|s| s.node);
        let mut names = inner.aliases.remove(&id).unwrap_or_default();
        if let Some(n) = node.filter(|n| !n.detached) {
            names.push((n.parent, basename(&n.path).into()));
        }
        for (p, name) in names {
            unlink_name(&mut inner, p, &name, id);
        }
    }

    /// Replaces node `id` by `f` applied to a copy of it (no-op for an unknown id).
    pub fn update(&self, id: NodeId, f: impl FnOnce(&mut Node)) {
        let mut inner = self.write();
        if let Some(s) = inner.nodes.get_mut(&id) {
            let mut n = Node::clone(&s.node);
            f(&mut n);
            s.node = Arc::new(n);
        }
    }

    /// Drops the cached merged listing of directory `id` (its entries changed).
    pub fn invalidate_listing(&self, id: NodeId) {
        self.update(id, |n| {
            n.listing = OnceLock::new();
        });
    }

    /// Marks `id` as being copied up (see `Inserted::Busy`); `done` undoes it.
    pub fn copying(&self, id: NodeId, start: bool) {
        let mut inner = self.write();
        if start {
            *inner.copying.entry(id).or_default() += 1;
        } else if let Some(c) = inner.copying.get_mut(&id) {
            *c -= 1;
            if *c == 0 {
                inner.copying.remove(&id);
            }
        }
    }

    /// Another name `name` in `parent` for node `id` (a new hard link), counted as the
    /// kernel's lookup that the link reply is.
    pub fn add_name(&self, id: NodeId, parent: NodeId, name: &[u8]) {
        self.write().add_alias(id, parent, name);
    }

    /// Forgets name `name` of `parent` (unlinked, removed or replaced). When it was the node's
    /// own name and the node has another (a hard link), the node takes that one; with none
    /// left, the node is detached until the kernel forgets it.
    pub fn remove_name(&self, parent: NodeId, name: &[u8]) {
        let mut inner = self.write();
        let Some(id) = inner
            .children
            .get(&parent)
            .and_then(|c| c.get(name))
            .copied()
        else {
            return;
        };
        unlink_name(&mut inner, parent, name, id);
        let Some(s) = inner.nodes.get(&id) else {
            return;
        };
        let own = s.node.parent == parent && basename(&s.node.path) == name;
        if let Some(list) = inner.aliases.get_mut(&id) {
            list.retain(|(p, n)| !(*p == parent && &**n == name));
        }
        if !own {
            return;
        }
        let other = inner.aliases.get_mut(&id).and_then(|l| l.pop());
        let path = other.as_ref().and_then(|(p, n)| {
            let dir = &inner.nodes.get(p)?.node.path;
            Some(join(dir, n))
        });
        if let Some(s) = inner.nodes.get_mut(&id) {
            let mut n = Node::clone(&s.node);
            match (other, path) {
                (Some((p, _)), Some(path)) => {
                    n.parent = p;
                    n.path = path.into();
                }
                _ => n.detached = true,
            }
            s.node = Arc::new(n);
        }
    }

    /// Moves name `name` of `parent` (node `id`) to `new_name` in `new_parent`. The nodes keep
    /// their ids: the kernel keeps its inodes across a rename. Known nodes below a directory get
    /// their new paths; `all_upper` marks them as living in the upper dir with no lower layers
    /// (a directory whose whole subtree was copied up and made opaque).
    pub fn rename(
        &self,
        id: NodeId,
        (parent, name): (NodeId, &[u8]),
        (new_parent, new_name): (NodeId, &[u8]),
        all_upper: bool,
    ) {
        let mut inner = self.write();
        unlink_name(&mut inner, parent, name, id);
        if !inner.nodes.contains_key(&id) {
            return;
        }
        inner
            .children
            .entry(new_parent)
            .or_default()
            .insert(new_name.into(), id);
        let Some(dir_path) = inner.nodes.get(&new_parent).map(|s| s.node.path.clone()) else {
            return;
        };
        let new_path = join(&dir_path, new_name);
        let own = inner
            .nodes
            .get(&id)
            .is_some_and(|s| s.node.parent == parent && basename(&s.node.path) == name);
        if !own {
            // A hardlink's other name moved: only the alias changes.
            if let Some(list) = inner.aliases.get_mut(&id) {
                for (p, n) in list.iter_mut() {
                    if *p == parent && &**n == name {
                        *p = new_parent;
                        *n = new_name.into();
                    }
                }
            }
            return;
        }
        // The node and its known subtree, breadth first: each child's path from its parent's.
        let mut todo = vec![(id, new_parent, new_path)];
        while let Some((nid, p, path)) = todo.pop() {
            if let Some(kids) = inner.children.get(&nid) {
                for (n, &kid) in kids {
                    let own = inner
                        .nodes
                        .get(&kid)
                        .is_some_and(|s| s.node.parent == nid && basename(&s.node.path) == &**n);
                    if own {
                        todo.push((kid, nid, join(&path, n)));
                    }
                }
            }
            if let Some(s) = inner.nodes.get_mut(&nid) {
                let mut n = Node::clone(&s.node);
                n.path = path.into();
                n.parent = p;
                n.detached = false;
                if all_upper {
                    n.source = Source::Upper;
                    n.layers = Box::default();
                    n.listing = OnceLock::new();
                    n.index = OnceLock::new();
                }
                s.node = Arc::new(n);
            }
        }
    }
}

impl Inner {
    /// Records `name` in `parent` as one more name of known node `id`, counting the lookup.
    fn add_alias(&mut self, id: NodeId, parent: NodeId, name: &[u8]) {
        let Some(s) = self.nodes.get_mut(&id) else {
            return;
        };
        *s.lookups.get_mut() += 1;
        self.aliases
            .entry(id)
            .or_default()
            .push((parent, name.into()));
        self.children
            .entry(parent)
            .or_default()
            .insert(name.into(), id);
    }
}

/// Drops `parent`/`name` → `id` from the children index (only if it still names `id`).
fn unlink_name(inner: &mut Inner, parent: NodeId, name: &[u8], id: NodeId) {
    if let Some(c) = inner.children.get_mut(&parent) {
        if c.get(name) == Some(&id) {
            c.remove(name);
        }
        if c.is_empty() {
            inner.children.remove(&parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: NodeId) -> Resolved {
        Resolved {
            id: Some(id),
            kind: Kind::File,
            source: Source::Implicit,
            layers: Vec::new(),
        }
    }

    fn root() -> NodeTable {
        NodeTable::new(Resolved {
            id: Some(ROOT),
            kind: Kind::Dir,
            source: Source::Implicit,
            layers: Vec::new(),
        })
    }

    fn known(i: Inserted) -> NodeId {
        match i {
            Inserted::Known(id) | Inserted::Busy(id) => id,
        }
    }

    #[test]
    fn churn_leaves_the_table_as_it_started() {
        let t = root();
        for i in 0..10_000u64 {
            let name = format!("f{i}");
            let id = known(t.insert(ROOT, name.as_bytes(), name.clone().into(), file(100 + i)));
            t.remove_name(ROOT, name.as_bytes());
            t.forget(id, 1);
        }
        assert_eq!(t.len(), 1);
        let inner = t.read();
        assert!(inner.children.is_empty() && inner.aliases.is_empty());
    }

    #[test]
    fn hard_links_share_a_node_and_survive_losing_their_first_name() {
        let t = root();
        let a = known(t.insert(ROOT, b"a", b"a".to_vec(), file(7)));
        let b = known(t.insert(ROOT, b"b", b"b".to_vec(), file(7)));
        assert_eq!(a, b);
        t.remove_name(ROOT, b"a");
        assert_eq!(&*t.get(a).unwrap().path, b"b");
        assert_eq!(t.child(ROOT, b"b"), Some(a));
        t.remove_name(ROOT, b"b");
        assert!(t.get(a).unwrap().detached);
        // A new file that the upper fs gave the same inode number: not the detached node.
        let c = known(t.insert(ROOT, b"c", b"c".to_vec(), file(7)));
        assert_ne!(c, a);
        t.forget(a, 2);
        t.forget(c, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rename_moves_the_known_subtree() {
        let t = root();
        let dir = Resolved {
            kind: Kind::Dir,
            ..file(10)
        };
        let d = known(t.insert(ROOT, b"d", b"d".to_vec(), dir));
        let f = known(t.insert(d, b"f", b"d/f".to_vec(), file(11)));
        t.rename(d, (ROOT, b"d"), (ROOT, b"e"), true);
        assert_eq!(&*t.get(f).unwrap().path, b"e/f");
        assert_eq!(t.get(f).unwrap().source, Source::Upper);
        assert_eq!(t.child(ROOT, b"e"), Some(d));
        assert_eq!(t.child(ROOT, b"d"), None);
    }
}
