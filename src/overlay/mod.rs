//! The union view: a stack of read-only BFC layers (one for a `.bfc` file, N for an image) seen as
//! one tree, with an optional writable upper directory on top. Lookups, listings, attributes and
//! content by `NodeId`; no FUSE types here, so the FUSE adapter stays a thin translation.
//! - `id`: what a node's id is (derived from the file, so stable without a table);
//! - `merge`: the OCI rules that resolve a name across layers, and merged listings;
//! - `node`: the table of the nodes the kernel holds (lookup counts, children by parent);
//! - `write` (this module's `impl Union` for changes): copy-up and every change through the upper.
mod ahead;
mod id;
mod merge;
mod node;
mod reply_buf;
mod revive;
mod write;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::bfc::{self, Container, Kind};
use crate::upper::UpperDir;
pub use id::{NodeId, ROOT};
use merge::{Resolved, Source};
pub use node::{DirEntry, Listing};
use node::{Inserted, ListingBuilder, Node, NodeTable};
pub use reply_buf::ReplyBuf;
pub use write::{read_full, NewNode, SetAttr, Time, Truncater};

/// One layer of the stack: a container and the directory inside it that is the union's root
/// ("" for the whole container, `dir` for `--subdir dir`).
#[derive(Clone)]
pub struct Layer {
    pub container: Arc<Container>,
    pub root: Vec<u8>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("file", &self.container.file_name())
            .field("root", &String::from_utf8_lossy(&self.root))
            .finish()
    }
}

impl Layer {
    pub fn new(container: Arc<Container>) -> Layer {
        Layer {
            container,
            root: Vec::new(),
        }
    }

    /// The path inside this layer's container of the union path `p`.
    fn path_of(&self, p: &[u8]) -> Vec<u8> {
        if p.is_empty() {
            self.root.clone()
        } else {
            merge::join(&self.root, p)
        }
    }
}

/// Which whiteout markers the layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutSpec {
    /// Image layers: entries typed as whiteouts by the writer, and any entry named `.wh.*`.
    Oci,
    /// Plain archives: only entries the writer typed as whiteouts; a file named `.wh.x` is a file.
    Typed,
}

/// Metadata of a node, before the FUSE adapter adds defaults (owner) and TTLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: NodeId,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (no `S_IFMT`).
    pub perm: u32,
    pub size: u64,
    pub mtime_ns: i64,
    /// Access and change times; lower layers record only mtime, so these equal it there.
    pub atime_ns: i64,
    pub ctime_ns: i64,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub rdev: u64,
    pub nlink: u32,
}

/// Why a union operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("unknown inode {0}")]
    BadInode(NodeId),
    #[error("read-only file system")]
    ReadOnly,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file exists")]
    Exists,
    #[error("invalid argument")]
    Invalid,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("file name too long")]
    NameTooLong,
    /// A system call on the upper directory failed.
    #[error("{op} {path} in the upper dir")]
    Upper {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--subdir {path}: no such directory in {file}")]
    NoSubdir { path: String, file: String },
    /// The layer's error names the container file and offset.
    #[error("{op} {path}")]
    Layer {
        op: &'static str,
        path: String,
        #[source]
        source: Box<bfc::Error>,
    },
}

/// An extended attribute: (name, value).
pub type Xattr = (Vec<u8>, Vec<u8>);

fn upper_err(op: &'static str, path: &[u8], source: std::io::Error) -> Error {
    Error::Upper {
        op,
        path: String::from_utf8_lossy(path).into_owned(),
        source,
    }
}

fn show_path(p: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(p)
}

/// NAME_MAX of the upper dir's file systems (and of what the kernel's overlayfs accepts).
const NAME_MAX: usize = 255;

/// A name the kernel may look up: one component; over NAME_MAX is ENAMETOOLONG, as on ext4.
fn check_lookup_name(name: &[u8]) -> Result<(), Error> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') {
        return Err(Error::NotFound);
    }
    Ok(())
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Metadata of an upper entry (its link count is the upper file's, for hard links made here).
fn attr_of_stat(id: NodeId, st: &rustix::fs::Stat) -> Attr {
    let kind = Kind::from_mode(st.st_mode).unwrap_or(Kind::File);
    Attr {
        ino: id,
        kind,
        perm: st.st_mode & 0o7777,
        size: if kind == Kind::Dir {
            0
        } else {
            st.st_size as u64
        },
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec as i64),
        atime_ns: ns(st.st_atime, st.st_atime_nsec as i64),
        ctime_ns: ns(st.st_ctime, st.st_ctime_nsec as i64),
        uid: Some(st.st_uid),
        gid: Some(st.st_gid),
        rdev: st.st_rdev,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
    }
}

/// Totals for statfs.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    /// Bytes of all layer files.
    pub bytes: u64,
    /// Index entries in all layers.
    pub entries: u64,
}

/// The writable top of a union: where every change lands.
#[derive(Debug)]
struct Upper {
    dir: UpperDir,
    /// Owner given to copies of lower entries that record none (what the mount shows for them).
    owner: (u32, u32),
    /// One lock per node being copied up: a copy-up makes wait only those who need that node
    /// (as overlayfs copies up under the inode's own lock). Changes within one directory are
    /// already serialised by the kernel, which holds the directory's lock for them.
    copying: Mutex<HashMap<NodeId, Arc<Mutex<()>>>>,
}

/// The bytes of a read: borrowed from a layer's mapping (stored content), one decoded chunk
/// shared with the layer's chunk cache, a pooled buffer (reads across chunks) or a buffer of
/// their own (upper files).
#[derive(Debug)]
pub enum ReadData<'a> {
    Borrowed(&'a [u8]),
    Chunk(bfc::ChunkSlice),
    Pooled(ReplyBuf),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ReadData<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Borrowed(s) => s,
            ReadData::Chunk(c) => c,
            ReadData::Pooled(b) => b,
            ReadData::Owned(v) => v,
        }
    }
}

/// The union of a layer stack, with an optional writable upper directory on top.
pub struct Union {
    layers: Vec<Layer>,
    spec: WhiteoutSpec,
    nodes: NodeTable,
    /// mtime of directories no layer records (the time the union was made).
    implicit_mtime_ns: i64,
    /// Whether any entry of any layer has extended attributes (computed on first use).
    any_xattrs: OnceLock<bool>,
    upper: Option<Upper>,
    /// Told the id of every node copied up (the FUSE adapter drops the kernel's cached attributes).
    on_copy_up: Option<CopyUpHook>,
    /// A listing built before it was asked for (see `ahead`).
    ahead: ahead::Ahead,
}

/// See `Union::on_copy_up`.
pub type CopyUpHook = Box<dyn Fn(NodeId) + Send + Sync>;

impl std::fmt::Debug for Union {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Union")
            .field("layers", &self.layers)
            .field("upper", &self.upper)
            .finish()
    }
}

impl Union {
    /// Calls `hook` with the id of every node once it is copied up: its attributes (link count of
    /// a merged directory, ctime) may differ from what was shown before.
    pub fn on_copy_up(&mut self, hook: CopyUpHook) {
        self.on_copy_up = Some(hook);
    }

    /// A union of `layers`, top first. Fails when a layer root (`--subdir`) is missing everywhere
    /// or is not a directory.
    pub fn new(layers: Vec<Layer>, spec: WhiteoutSpec) -> Result<Union, Error> {
        let all: Vec<usize> = (0..layers.len()).collect();
        let root = match merge::resolve(&layers, spec, &all, b"") {
            Some(r) if r.kind == Kind::Dir => r,
            Some(_) | None if layers.iter().any(|l| !l.root.is_empty()) => {
                let l = layers.iter().find(|l| !l.root.is_empty());
                return Err(Error::NoSubdir {
                    path: l
                        .map(|l| String::from_utf8_lossy(&l.root).into_owned())
                        .unwrap_or_default(),
                    file: l
                        .map(|l| l.container.file_name().display().to_string())
                        .unwrap_or_default(),
                });
            }
            _ => Resolved {
                id: Some(ROOT),
                kind: Kind::Dir,
                source: Source::Implicit,
                layers: all,
            },
        };
        let implicit_mtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(Union {
            nodes: NodeTable::new(root).with_compact_lower(layers.clone()),
            layers,
            spec,
            implicit_mtime_ns,
            any_xattrs: OnceLock::new(),
            upper: None,
            on_copy_up: None,
            ahead: ahead::Ahead::default(),
        })
    }

    /// Puts a writable upper directory on top (kernel overlayfs format). Lower entries that
    /// record no owner are copied up as `owner` (uid, gid). The root is the upper root.
    pub fn with_upper(mut self, dir: UpperDir, owner: (u32, u32)) -> Union {
        self.nodes.without_compact();
        self.nodes.update(ROOT, |n| n.source = Source::Upper);
        self.upper = Some(Upper {
            dir,
            owner,
            copying: Mutex::default(),
        });
        self
    }

    /// Whether the union takes writes.
    pub fn is_writable(&self) -> bool {
        self.upper.is_some()
    }

    /// Resolves `path`, a child of directory `dir`, in the lower layers: through the directory's
    /// index when it merges many layers, else by probing each.
    fn resolve_lower(&self, dir: &Node, path: &[u8]) -> Option<Resolved> {
        if dir.layers.len() < merge::INDEX_MIN_LAYERS {
            return merge::resolve(&self.layers, self.spec, &dir.layers, path);
        }
        dir.index
            .get_or_init(|| {
                Arc::new(merge::DirIndex::build(
                    &self.layers,
                    self.spec,
                    &dir.layers,
                    &dir.path,
                ))
            })
            .resolve(&self.layers, self.spec, path)
    }

    /// Resolves `path`, a child of directory `dir`: the upper dir first (a whiteout hides it, an
    /// opaque directory hides the lower layers), then the lower layers the directory merges.
    /// Directories not in the upper dir cannot have children there, so a lookup in a lower-only
    /// directory costs no system call. An upper entry that a lower one was copied up from keeps
    /// the lower id (recorded at copy-up), so its inode number never changes.
    fn resolve_child(&self, dir: &Node, path: &[u8]) -> Result<Option<Resolved>, Error> {
        self.resolve_child_seen(dir, path, None)
    }

    /// `resolve_child` with the upper dir's lstat of `path` already at hand when `seen` is Some
    /// (a listing stats every entry once: no second look per name).
    fn resolve_child_seen(
        &self,
        dir: &Node,
        path: &[u8],
        seen: Option<Option<rustix::fs::Stat>>,
    ) -> Result<Option<Resolved>, Error> {
        let lower = || self.resolve_lower(dir, path);
        let Some(up) = self.upper.as_ref().filter(|_| dir.source == Source::Upper) else {
            return Ok(lower());
        };
        let st = match seen {
            Some(st) => st,
            None => up.dir.stat(path).map_err(|e| upper_err("stat", path, e))?,
        };
        let Some(st) = st else { return Ok(lower()) };
        if crate::upper::is_whiteout(&st) {
            return Ok(None);
        }
        let kind = Kind::from_mode(st.st_mode).ok_or(Error::NotFound)?;
        let low = lower();
        let origin = match low {
            Some(_) => up
                .dir
                .origin(path)
                .map_err(|e| upper_err("reading the origin of", path, e))?,
            None => None,
        };
        let id = origin.or_else(|| id::upper_id(st.st_ino));
        let mut layers = Vec::new();
        if kind == Kind::Dir {
            let opaque = up
                .dir
                .is_opaque(path)
                .map_err(|e| upper_err("reading the opaque mark of", path, e))?;
            if let Some(r) = low.filter(|r| r.kind == Kind::Dir && !opaque) {
                layers = r.layers;
            }
        }
        Ok(Some(Resolved {
            id,
            kind,
            source: Source::Upper,
            layers,
        }))
    }

    /// The node of `id`; one the table does not hold (the kernel got it from an earlier
    /// server) is looked up again from what its id says (`revive`).
    fn node(&self, id: NodeId) -> Result<Arc<Node>, Error> {
        match self.nodes.get(id) {
            Some(n) => Ok(n),
            None => self.revive(id),
        }
    }

    fn dir(&self, id: NodeId) -> Result<Arc<Node>, Error> {
        let n = self.node(id)?;
        if n.kind == Kind::Dir {
            Ok(n)
        } else {
            Err(Error::NotDir)
        }
    }

    /// The kernel's lookup of `name` in directory `parent`: the node, counted once more (FUSE's
    /// lookup count; see `forget`). O(1) for a known name, else O(log n) per contributing layer.
    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Result<NodeId, Error> {
        let dir = self.dir(parent)?;
        if name == b"." || name == b".." {
            let id = if name == b"." { parent } else { dir.parent };
            self.nodes.add_lookup(id);
            return Ok(id);
        }
        check_lookup_name(name)?;
        if let Some(id) = self.nodes.lookup_known(parent, name) {
            return Ok(id);
        }
        let listed = match dir.listing.get() {
            Some(listing) => match listing.find(name) {
                Some(e) => Some(e.ino),
                None => return Err(Error::NotFound),
            },
            None => None,
        };
        if !self.spec.name_visible(name) {
            return Err(Error::NotFound);
        }
        let path = merge::join(&dir.path, name);
        loop {
            let r = self.resolve_listed(&dir, &path, listed)?;
            let Some(r) = r else {
                return Err(self.not_found(&dir, &path));
            };
            match self.nodes.insert(parent, name, path.clone(), r) {
                Inserted::Known(id) => return Ok(id),
                // Being copied up right now: wait for it, then look again.
                Inserted::Busy(id) => drop(self.copy_lock(id)),
            }
        }
    }

    /// NotFound for `path` in `dir`, unless a layer the directory merges lost its index (its
    /// file shrank while mounted): then the name may be one that is gone, an I/O error.
    fn not_found(&self, dir: &Node, path: &[u8]) -> Error {
        let damaged = dir.layers.iter().find_map(|&li| {
            let l = self.layers.get(li)?;
            l.container.check_index().err()
        });
        match damaged {
            Some(e) => Error::Layer {
                op: "looking up",
                path: String::from_utf8_lossy(path).into_owned(),
                source: Box::new(e),
            },
            None => Error::NotFound,
        }
    }

    /// The kernel forgot `n` lookups of node `id`: at zero the node goes (its id comes back
    /// the same if the name is looked up again).
    pub fn forget(&self, id: NodeId, n: u64) {
        self.nodes.forget(id, n);
    }

    /// The node of `name` in directory `dir` (`dir_id`) without counting a kernel lookup: a
    /// known node, or one made for the caller alone (not recorded).
    fn child(
        &self,
        dir_id: NodeId,
        dir: &Node,
        name: &[u8],
    ) -> Result<Option<(NodeId, Arc<Node>)>, Error> {
        if let Some(id) = self.nodes.child(dir_id, name) {
            if let Some(n) = self.nodes.get(id) {
                return Ok(Some((id, n)));
            }
        }
        if name.is_empty() || name.contains(&b'/') || !self.spec.name_visible(name) {
            return Ok(None);
        }
        let path = merge::join(&dir.path, name);
        Ok(self.resolve_child(dir, &path)?.map(|r| {
            let id = r.id.unwrap_or(0);
            (id, Arc::new(Node::new(path.into(), dir_id, &r)))
        }))
    }

    /// The merged listing of a directory, sorted by name; built once, on first use.
    pub fn readdir(&self, id: NodeId) -> Result<Arc<Listing>, Error> {
        let dir = self.dir(id)?;
        self.listing(id, &dir)
    }

    fn listing(&self, id: NodeId, dir: &Node) -> Result<Arc<Listing>, Error> {
        if let Some(l) = dir.listing.get() {
            return Ok(l.clone());
        }
        let built = match self.take_ahead(id) {
            Some(l) => l,
            None => self.build_listing(id, dir)?,
        };
        Ok(dir.listing.get_or_init(|| built).clone())
    }

    /// Lower names ∪ upper names; each goes through the same resolver as a lookup, so upper
    /// whiteouts and opaque directories hide what they hide there too. Builds no nodes: the
    /// inode numbers are the ids the names resolve to.
    fn build_listing(&self, id: NodeId, dir: &Node) -> Result<Arc<Listing>, Error> {
        if let Some(li) = self.single_lower(dir) {
            return self.build_single_listing(id, dir, li);
        }
        let mut names = merge::child_names(&self.layers, self.spec, &dir.layers, &dir.path)
            .map_err(|e| self.layer_error("listing", dir, e))?;
        let mut upper = HashMap::new();
        if let Some(up) = self.upper.as_ref().filter(|_| dir.source == Source::Upper) {
            let listed = up
                .dir
                .list(&dir.path)
                .map_err(|e| upper_err("listing", &dir.path, e))?;
            for (n, st) in listed {
                names.insert(n.clone());
                upper.insert(n, st);
            }
        }
        let names = names.into_iter().map(|n| (n, ()));
        self.fill_listing(id, dir, names, |name, ()| {
            if !self.spec.name_visible(name) {
                return Ok(None);
            }
            let path = merge::join(&dir.path, name);
            let seen = dir.source == Source::Upper;
            let st = seen.then(|| upper.get(name).copied());
            Ok(self
                .resolve_child_seen(dir, &path, st)?
                .map(|r| (r.id, r.kind)))
        })
    }

    /// The listing of `names` (sorted) in `dir`: a name the node table knows shows as its node;
    /// another with the id and kind `resolve` gives it (`None`: it does not show; no id: a
    /// fresh one).
    fn fill_listing<N: AsRef<[u8]>, T>(
        &self,
        id: NodeId,
        dir: &Node,
        names: impl IntoIterator<Item = (N, T)>,
        mut resolve: impl FnMut(&[u8], T) -> Result<Option<(Option<NodeId>, Kind)>, Error>,
    ) -> Result<Arc<Listing>, Error> {
        let names = names.into_iter();
        let n = names.size_hint().0;
        let mut out = ListingBuilder::with_capacity(n, n.saturating_mul(16));
        // Most directories are listed before the kernel looked anything up in them.
        let any_known = self.nodes.has_children(id);
        for (name, found) in names {
            let name = name.as_ref();
            let known = match any_known {
                true => self
                    .nodes
                    .child(id, name)
                    .and_then(|i| Some((i, self.nodes.get(i)?))),
                false => None,
            };
            let (ino, kind) = match known {
                Some((i, n)) => (i, n.kind),
                None => match resolve(name, found)? {
                    Some((ino, kind)) => (ino.unwrap_or_else(|| self.nodes.fresh_id()), kind),
                    None => continue,
                },
            };
            if !out.push(name, ino, kind) {
                log::error!("{}: more names than a listing holds", show_path(&dir.path));
                break;
            }
        }
        Ok(Arc::new(out.finish()))
    }

    /// The one layer a directory merges when nothing else (the upper dir, other layers) can
    /// show in it.
    fn single_lower(&self, dir: &Node) -> Option<usize> {
        match *dir.layers {
            [li] if dir.source != Source::Upper => Some(li),
            _ => None,
        }
    }

    /// `build_listing` of a directory of one layer alone: each name resolved from the entry the
    /// layer's listing found for it (`merge::resolve_hit`), not searched for again.
    fn build_single_listing(
        &self,
        id: NodeId,
        dir: &Node,
        li: usize,
    ) -> Result<Arc<Listing>, Error> {
        let hits = merge::child_hits(&self.layers, self.spec, li, &dir.path)
            .map_err(|e| self.layer_error("listing", dir, e))?;
        self.fill_listing(id, dir, hits, |name, hit| {
            Ok(merge::hit_id(&self.layers, li, &dir.path, name, hit))
        })
    }

    /// `resolve_child`, from the entry the listing gave `path` (`ino`) when that is enough
    /// (`listed_hit`).
    fn resolve_listed(
        &self,
        dir: &Node,
        path: &[u8],
        ino: Option<NodeId>,
    ) -> Result<Option<Resolved>, Error> {
        match self.listed_hit(dir, path, ino) {
            Some(r) => Ok(Some(r)),
            None => self.resolve_child(dir, path),
        }
    }

    /// The resolution of `path` from the id its directory's listing gave it (`ino`), when the
    /// directory is one layer's alone and the id names this very entry of the layer (not the
    /// first name of a hardlink group): what `resolve_child` finds, without searching.
    fn listed_hit(&self, dir: &Node, path: &[u8], ino: Option<NodeId>) -> Option<Resolved> {
        let li = self.single_lower(dir)?;
        let (layer, idx) = id::split_lower(ino?)?;
        let l = self.layers.get(li)?;
        if layer != li || idx >= l.container.len() || l.container.path(idx) != l.path_of(path) {
            return None;
        }
        merge::resolve_hit(&self.layers, self.spec, li, path, merge::Hit::Entry(idx))
    }

    /// The parent directory (the root is its own parent).
    pub fn parent(&self, id: NodeId) -> Result<NodeId, Error> {
        Ok(self.node(id)?.parent)
    }

    /// Metadata. A directory's link count is 2 + its subdirectories, so this builds its listing.
    pub fn attr(&self, id: NodeId) -> Result<Attr, Error> {
        if let Some((layer, idx)) = self.nodes.held_compact(id) {
            return self.entry_attr(id, layer, idx, None);
        }
        self.attr_of_node(id, &*self.node(id)?)
    }

    /// The kernel's lookup of `e`, an entry of the listing of directory `parent` (`readdir`),
    /// and the node's attributes: `lookup` then `attr`, counted once. A compact node (a plain
    /// file of a read-only union) is neither searched for again nor built: its listing gave its
    /// id, which is all it is.
    pub fn lookup_listed(&self, parent: NodeId, e: &DirEntry<'_>) -> Result<Attr, Error> {
        if let Some((layer, idx)) = self.nodes.compact_key(e.ino, e.kind) {
            let a = self.entry_attr(e.ino, layer, idx, None)?;
            self.nodes.add_compact((layer, idx));
            return Ok(a);
        }
        let id = self.lookup(parent, e.name)?;
        self.attr(id).inspect_err(|_| self.forget(id, 1))
    }

    /// Metadata of index entry `idx` of `layer` (node `id`) as recorded; `n`, the node when
    /// there is one, names it in errors (else the entry's path does).
    fn entry_attr(
        &self,
        id: NodeId,
        layer: usize,
        idx: usize,
        n: Option<&Node>,
    ) -> Result<Attr, Error> {
        let l = self.layers.get(layer).ok_or(Error::BadInode(id))?;
        let e = l.container.entry_meta(idx).map_err(|e| Error::Layer {
            op: "reading the metadata of",
            path: match n {
                Some(n) => show_path(&n.path).into_owned(),
                None => show_path(l.container.path(idx)).into_owned(),
            },
            source: Box::new(e),
        })?;
        Ok(Attr {
            ino: id,
            kind: e.kind,
            perm: e.mode & 0o7777,
            size: if e.kind == Kind::Dir { 0 } else { e.size },
            mtime_ns: e.mtime_ns,
            atime_ns: e.mtime_ns,
            ctime_ns: e.mtime_ns,
            uid: e.uid,
            gid: e.gid,
            rdev: e.rdev,
            nlink: e.nlink.max(1),
        })
    }

    fn attr_of_node(&self, id: NodeId, n: &Node) -> Result<Attr, Error> {
        let mut a = match n.source {
            Source::Entry { layer, idx } => self.entry_attr(id, layer, idx, Some(n))?,
            Source::Implicit => Attr {
                ino: id,
                kind: Kind::Dir,
                perm: 0o755,
                size: 0,
                mtime_ns: self.implicit_mtime_ns,
                atime_ns: self.implicit_mtime_ns,
                ctime_ns: self.implicit_mtime_ns,
                uid: None,
                gid: None,
                rdev: 0,
                nlink: 2,
            },
            Source::Upper => {
                let up = self.upper.as_ref().ok_or(Error::NotFound)?;
                let st = up
                    .dir
                    .stat(&n.path)
                    .map_err(|e| upper_err("stat", &n.path, e))?
                    .ok_or(Error::NotFound)?;
                let mut a = attr_of_stat(id, &st);
                // A directory that merges lower layers cannot count its subdirectories without
                // listing them all: 1, as overlayfs says for merged directories ("unknown" to
                // find and fts). One only in the upper dir: its own count.
                if n.kind == Kind::Dir && !n.layers.is_empty() {
                    a.nlink = 1;
                }
                return Ok(a);
            }
        };
        if n.kind == Kind::Dir {
            a.nlink = self.dir_nlink(id, n)?;
        }
        Ok(a)
    }

    /// A lower directory's link count, 2 + its subdirectories, without listing it when its layer
    /// recorded the count (every file bfcfs writes). A directory that merges several layers
    /// gets 1, as kernel overlayfs gives merged directories ("unknown" to find and fts): the
    /// union of the layers' subdirectories is only known from the merged listing. Upstream files
    /// record no counts: their directories are listed (once, cached) and counted.
    fn dir_nlink(&self, id: NodeId, n: &Node) -> Result<u32, Error> {
        let plus2 = |k: usize| u32::try_from(k).unwrap_or(u32::MAX - 2).saturating_add(2);
        if let [li] = *n.layers {
            let l = &self.layers[li];
            let lp = l.path_of(&n.path);
            // Entries below the directory are searched from its own entry on.
            let from = match n.source {
                Source::Entry { layer, idx } if layer == li => idx + 1,
                _ => 0,
            };
            if let Some(k) = l.container.subdir_count_from(&lp, from) {
                // `.wh.*` directories never show under the OCI rules.
                let hidden = match self.spec {
                    WhiteoutSpec::Oci => {
                        l.container.subdirs_named_from(&lp, merge::WH_PREFIX, from)
                    }
                    WhiteoutSpec::Typed => 0,
                };
                return Ok(plus2((k as usize).saturating_sub(hidden)));
            }
        } else if n.layers.len() > 1 {
            return Ok(1);
        }
        let subdirs = self
            .listing(id, n)?
            .iter()
            .filter(|e| e.kind == Kind::Dir)
            .count();
        Ok(plus2(subdirs))
    }

    /// (layer, entry) of a node recorded in the index.
    fn entry_of(&self, n: &Node) -> Option<(&Layer, usize)> {
        match n.source {
            Source::Entry { layer, idx } => self.layers.get(layer).map(|l| (l, idx)),
            Source::Implicit | Source::Upper => None,
        }
    }

    fn layer_error(&self, op: &'static str, n: &Node, source: bfc::Error) -> Error {
        Error::Layer {
            op,
            path: String::from_utf8_lossy(&n.path).into_owned(),
            source: Box::new(source),
        }
    }

    /// Reads up to `size` bytes at `offset` of a regular file: fewer only at end of file. Content
    /// that fails its checksum or tag is an error, never returned. Stored content is borrowed
    /// from the mapping; compressed or encrypted content is decoded (through the chunk cache),
    /// and a read within one chunk is the cached chunk itself.
    pub fn read(&self, id: NodeId, offset: u64, size: u32) -> Result<ReadData<'_>, Error> {
        self.read_node(&*self.node(id)?, offset, size)
    }

    /// `read` when it needs no I/O and no decoding: the bytes are stored plain and in the page
    /// cache, or decoded chunks in a lower layer's chunk cache (see
    /// `bfc::Container::stored_resident` and `read_cached`). Read-only unions only (in a
    /// writable one a lower file can be copied up under the read). `None`: use `read`.
    pub fn read_cached(&self, id: NodeId, offset: u64, size: u32) -> Option<ReadData<'_>> {
        if self.is_writable() {
            return None;
        }
        let n = self.nodes.get(id)?;
        if n.kind != Kind::File {
            return None;
        }
        let (l, idx) = self.entry_of(&n)?;
        let len = usize::try_from(size).ok()?;
        if let Some(slice) = l.container.stored_resident(idx, offset, len) {
            return Some(ReadData::Borrowed(slice));
        }
        let mut parts = l.container.read_cached(idx, offset, len)?;
        if parts.len() == 1 {
            return parts.pop().map(ReadData::Chunk);
        }
        let mut buf = ReplyBuf::zeroed(parts.iter().map(|p| p.len()).sum());
        let mut at = 0;
        for p in &parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        Some(ReadData::Pooled(buf))
    }

    fn read_node(&self, n: &Node, offset: u64, size: u32) -> Result<ReadData<'_>, Error> {
        match n.kind {
            Kind::File => {}
            Kind::Dir => return Err(Error::IsDir),
            _ => return Err(Error::NotFound),
        }
        if n.source == Source::Upper {
            return self.read_upper(n, offset, size).map(ReadData::Owned);
        }
        let (l, idx) = self.entry_of(n).ok_or(Error::NotFound)?;
        let c = &l.container;
        // The cached entry's size, not the index record's: it survives the file shrinking.
        let full = c
            .content_size(idx)
            .map_err(|e| self.layer_error("reading", n, e))?;
        let len = full.saturating_sub(offset).min(u64::from(size));
        let len = usize::try_from(len).unwrap_or(0);
        match c.stored_slice(idx, offset, len) {
            Ok(Some(slice)) => return Ok(ReadData::Borrowed(slice)),
            Ok(None) => {}
            Err(e) => return Err(self.layer_error("reading", n, e)),
        }
        match c.read_in_chunk(idx, offset, len) {
            Ok(Some(chunk)) => return Ok(ReadData::Chunk(chunk)),
            Ok(None) => {}
            Err(e) => return Err(self.layer_error("reading", n, e)),
        }
        let mut buf = ReplyBuf::zeroed(len);
        let mut done = 0;
        while done < buf.len() {
            match c.read_at(idx, offset + done as u64, &mut buf[done..]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) => return Err(self.layer_error("reading", n, e)),
            }
        }
        buf.truncate(done);
        Ok(ReadData::Pooled(buf))
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, id: NodeId) -> Result<Cow<'_, [u8]>, Error> {
        self.node_readlink(&*self.node(id)?)
    }

    fn node_readlink(&self, n: &Node) -> Result<Cow<'_, [u8]>, Error> {
        if n.kind != Kind::Symlink {
            return Err(Error::NotSymlink);
        }
        if let (Source::Upper, Some(up)) = (n.source, &self.upper) {
            return up
                .dir
                .readlink(&n.path)
                .map(Cow::Owned)
                .map_err(|e| upper_err("readlink", &n.path, e));
        }
        let (l, idx) = self.entry_of(n).ok_or(Error::NotSymlink)?;
        l.container
            .symlink_target(idx)
            .map(Cow::Borrowed)
            .map_err(|e| self.layer_error("reading the link target of", n, e))
    }

    /// Extended attributes (name, value) of a node; none for implicit directories. The upper
    /// dir's own `trusted.overlay.*` marks never show (as in overlayfs).
    pub fn xattrs(&self, id: NodeId) -> Result<Cow<'_, [Xattr]>, Error> {
        self.node_xattrs(&*self.node(id)?)
    }

    fn node_xattrs(&self, n: &Node) -> Result<Cow<'_, [Xattr]>, Error> {
        if let (Source::Upper, Some(up)) = (n.source, &self.upper) {
            return up
                .dir
                .xattrs(&n.path)
                .map(Cow::Owned)
                .map_err(|e| upper_err("listing the xattrs of", &n.path, e));
        }
        match self.entry_of(n) {
            Some((l, idx)) => l
                .container
                .entry(idx)
                .map(|e| Cow::Owned(e.xattrs))
                .map_err(|e| self.layer_error("reading the xattrs of", n, e)),
            None => Ok(Cow::Borrowed(&[][..])),
        }
    }

    /// Whether any node can have extended attributes (one pass over the indexes, on first call).
    pub fn has_xattrs(&self) -> bool {
        // Upper entries can get xattrs at any time (and the kernel asks for security.capability
        // before writes): never let the kernel stop asking.
        self.upper.is_some()
            || *self
                .any_xattrs
                .get_or_init(|| self.layers.iter().any(|l| l.container.has_xattrs()))
    }

    /// One extended attribute's value.
    /// `open`: an open upper descriptor of the node, if the caller has one (no path walk then).
    pub fn xattr(
        &self,
        id: NodeId,
        name: &[u8],
        open: Option<&std::fs::File>,
    ) -> Result<Vec<u8>, Error> {
        let n = self.node(id)?;
        if let (Source::Upper, Some(up)) = (n.source, &self.upper) {
            // One getxattr: the kernel asks for security.capability before every write.
            let v = match open {
                Some(f) => crate::upper::get_xattr_fd(std::os::fd::AsFd::as_fd(f), name),
                None => up.dir.get_xattr(&n.path, name),
            };
            return v
                .map_err(|e| upper_err("getxattr", &n.path, e))?
                .ok_or(Error::NoXattr);
        }
        self.xattrs(id)?
            .iter()
            .find(|(k, _)| k.as_slice() == name)
            .map(|(_, v)| v.clone())
            .ok_or(Error::NoXattr)
    }

    /// Sizes for statfs.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            bytes: 0,
            entries: 0,
        };
        for l in &self.layers {
            t.entries += l.container.len() as u64;
            t.bytes += l.container.file_size();
        }
        t
    }

    /// How many nodes the kernel holds (the root included): what the table costs.
    pub fn known_nodes(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfc::writer::{Meta, Writer, WriterOptions};

    enum Op<'a> {
        Dir(&'a str),
        File(&'a str, &'a [u8]),
        Whiteout(&'a str),
        /// A hard link: path, target.
        Link(&'a str, &'a str),
    }

    fn layer(name: &str, ops: &[Op<'_>]) -> Layer {
        let meta = Meta {
            mode: 0o755,
            ..Meta::default()
        };
        let out = std::io::Cursor::new(Vec::new());
        let mut w = Writer::new(out, WriterOptions::default(), std::path::Path::new(name)).unwrap();
        for op in ops {
            match op {
                Op::Dir(p) => w.add_dir(p.as_bytes(), &meta).unwrap(),
                Op::File(p, c) => drop(w.add_file(p.as_bytes(), &meta, &mut &c[..]).unwrap()),
                Op::Whiteout(p) => w.add_whiteout(p.as_bytes(), &meta).unwrap(),
                Op::Link(p, t) => w.add_hardlink(p.as_bytes(), t.as_bytes()).unwrap(),
            }
        }
        let bytes = w.finish().unwrap().into_inner();
        Layer::new(Arc::new(Container::from_bytes(name, bytes).unwrap()))
    }

    fn names(u: &Union, dir: NodeId) -> Vec<String> {
        u.readdir(dir)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(e.name).into_owned())
            .collect()
    }

    fn walk(u: &Union, path: &str) -> Result<NodeId, Error> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(ROOT, |n, c| u.lookup(n, c.as_bytes()))
    }

    /// Three layers exercising every OCI rule; lookups and listings must agree.
    fn stack() -> Union {
        use Op::*;
        let bottom = layer(
            "bottom",
            &[
                File("a/x", b"x"),
                File("a/y", b"y"),
                File("b/z", b"z"),
                File("c", b"file c"),
                File("d/deep/f", b"f"),
                File("keep", b"k"),
                File("top-only-hides/x", b"x"),
            ],
        );
        let middle = layer(
            "middle",
            &[
                Whiteout("a/.wh.x"),
                Whiteout("b/.wh..wh..opq"),
                File("b/new", b"n"),
                Dir("c"),
                File("c/in", b"i"),
            ],
        );
        let top = layer(
            "top",
            &[
                File("d", b"file d"),
                Dir("e"),
                Whiteout("e/.wh.nothing"),
                Whiteout(".wh.top-only-hides"),
            ],
        );
        Union::new(vec![top, middle, bottom], WhiteoutSpec::Oci).unwrap()
    }

    #[test]
    fn oci_rules_apply_top_down() {
        let u = stack();
        assert_eq!(names(&u, ROOT), ["a", "b", "c", "d", "e", "keep"]);
        let a = walk(&u, "a").unwrap();
        assert_eq!(names(&u, a), ["y"], "whiteout hides a/x");
        assert_eq!(
            names(&u, walk(&u, "b").unwrap()),
            ["new"],
            "opaque dir hides b/z"
        );
        assert_eq!(
            names(&u, walk(&u, "c").unwrap()),
            ["in"],
            "dir above a file replaces it"
        );
        assert_eq!(
            u.attr(walk(&u, "d").unwrap()).unwrap().kind,
            Kind::File,
            "file above a dir hides it"
        );
        assert!(
            names(&u, walk(&u, "e").unwrap()).is_empty(),
            "markers never show"
        );
        assert_eq!(&*u.read(walk(&u, "keep").unwrap(), 0, 10).unwrap(), b"k");
        assert_eq!(&*u.read(walk(&u, "d").unwrap(), 0, 100).unwrap(), b"file d");
    }

    #[test]
    fn lookups_agree_with_listings_without_one() {
        let u = stack();
        for hidden in [
            "a/x",
            "b/z",
            "d/deep",
            "top-only-hides",
            "e/.wh.nothing",
            "a/.wh.x",
            "c/missing",
        ] {
            assert!(walk(&u, hidden).is_err(), "{hidden} must not resolve");
        }
        // Before any listing exists, and after: the same inode numbers.
        let before: Vec<NodeId> = ["a/y", "b/new", "c/in", "keep"]
            .iter()
            .map(|p| walk(&u, p).unwrap())
            .collect();
        names(&u, ROOT);
        let after: Vec<NodeId> = ["a/y", "b/new", "c/in", "keep"]
            .iter()
            .map(|p| walk(&u, p).unwrap())
            .collect();
        assert_eq!(before, after);
        assert_eq!(u.lookup(walk(&u, "a").unwrap(), b"..").unwrap(), ROOT);
    }

    #[test]
    fn directory_link_count_is_two_plus_subdirectories() {
        let u = stack();
        // Merged directories: 1, as kernel overlayfs says.
        assert_eq!(u.attr(ROOT).unwrap().nlink, 1);
        assert_eq!(u.attr(walk(&u, "a").unwrap()).unwrap().nlink, 1);
        // One layer: its recorded count, with `.wh.*` directories left out under the OCI
        // rules; the same as counting the listing.
        use Op::*;
        let one = || {
            layer(
                "one",
                &[
                    Dir("d"),
                    Dir("d/.wh.hidden"),
                    File("d/f", b""),
                    Dir("d/sub"),
                    File("d/implicit/x", b""),
                    File("e/deep/er/f", b""),
                    Dir("empty"),
                ],
            )
        };
        let u = Union::new(vec![one()], WhiteoutSpec::Oci).unwrap();
        let nlink = |u: &Union, p: &str| u.attr(walk(u, p).unwrap()).unwrap().nlink;
        let listed = |u: &Union, p: &str| {
            let id = walk(u, p).unwrap();
            let subdirs = u
                .readdir(id)
                .unwrap()
                .iter()
                .filter(|e| e.kind == Kind::Dir)
                .count();
            subdirs as u32 + 2
        };
        for (p, want) in [("", 5), ("d", 4), ("e", 3), ("e/deep", 3), ("empty", 2)] {
            assert_eq!(nlink(&u, p), want, "{p:?}");
            assert_eq!(listed(&u, p), want, "{p:?} listed");
        }
        let typed = Union::new(vec![one()], WhiteoutSpec::Typed).unwrap();
        assert_eq!(nlink(&typed, "d"), 5, ".wh.hidden shows as a plain name");
    }

    #[test]
    fn read_only_files_are_compact_nodes_that_forget() {
        let u = stack();
        let before = u.known_nodes();
        let keep = walk(&u, "keep").unwrap();
        assert_eq!(u.known_nodes(), before + 1);
        assert_eq!(&*u.read(keep, 0, 10).unwrap(), b"k");
        assert_eq!(u.attr(keep).unwrap().size, 1);
        assert_eq!(u.lookup(ROOT, b"keep").unwrap(), keep);
        assert_eq!(u.known_nodes(), before + 1, "one node, counted twice");
        u.forget(keep, 1);
        assert_eq!(&*u.read(keep, 0, 10).unwrap(), b"k");
        u.forget(keep, 1);
        assert_eq!(u.known_nodes(), before);
        // An id the table no longer holds is revived from the image (restarts: revive.rs).
        assert_eq!(&*u.read(keep, 0, 10).unwrap(), b"k");
        // Below a --subdir root, the path is the union's.
        let mut l = layer("sub", &[Op::File("top/dir/f", b"f")]);
        l.root = b"top".to_vec();
        let u = Union::new(vec![l], WhiteoutSpec::Oci).unwrap();
        let f = walk(&u, "dir/f").unwrap();
        assert_eq!(&*u.read(f, 0, 10).unwrap(), b"f");
        assert_eq!(&*u.node(f).unwrap().path, b"dir/f");
    }

    /// Every name of every directory of `u`, looked up through its listing (`lookup_listed`, as
    /// READDIRPLUS does) in `u` and searched for (`lookup`, then `attr`) in `v`, a union of the
    /// same layers: the same node, the same attributes, the same nodes held; and everything
    /// counted goes when forgotten.
    fn listed_lookups_agree(u: &Union, v: &Union) {
        let before = u.known_nodes();
        let mut dirs = vec![ROOT];
        let mut counted = Vec::new();
        while let Some(d) = dirs.pop() {
            for e in u.readdir(d).unwrap().iter() {
                let listed = u.lookup_listed(d, &e).unwrap();
                let id = v.lookup(d, e.name).unwrap();
                // Directories no layer records show the time their union was made.
                let times = |a: &Attr, w: &Union| match a.mtime_ns == w.implicit_mtime_ns {
                    true => (0, 0, 0),
                    false => (a.mtime_ns, a.atime_ns, a.ctime_ns),
                };
                let searched = v.attr(id).unwrap();
                assert_eq!(
                    (
                        Attr {
                            mtime_ns: 0,
                            atime_ns: 0,
                            ctime_ns: 0,
                            ..listed.clone()
                        },
                        times(&listed, u)
                    ),
                    (
                        Attr {
                            mtime_ns: 0,
                            atime_ns: 0,
                            ctime_ns: 0,
                            ..searched.clone()
                        },
                        times(&searched, v)
                    ),
                    "{}",
                    String::from_utf8_lossy(e.name)
                );
                assert_eq!((listed.ino, listed.kind), (e.ino, e.kind));
                assert_eq!(u.known_nodes(), v.known_nodes());
                counted.push(e.ino);
                if e.kind == Kind::Dir {
                    dirs.push(e.ino);
                }
            }
        }
        for id in counted.into_iter().rev() {
            u.forget(id, 1);
        }
        assert_eq!(u.known_nodes(), before);
    }

    #[test]
    fn names_looked_up_from_their_listing_are_the_names_searched_for() {
        use Op::*;
        let one = || {
            layer(
                "one",
                &[
                    Dir("d"),
                    File("d/a", b"a"),
                    Link("d/b", "d/a"),
                    File("d/c", b"cc"),
                    File("d/implicit/x", b"x"),
                    Dir("d/sub"),
                    File("d/sub/f", b"f"),
                    File("e", b"e"),
                ],
            )
        };
        let u = Union::new(vec![one()], WhiteoutSpec::Oci).unwrap();
        let v = Union::new(vec![one()], WhiteoutSpec::Oci).unwrap();
        listed_lookups_agree(&u, &v);
        // Several layers (whiteouts, opaque and merged directories): no compact shortcut for
        // what a listing cannot tell alone, the same answers.
        listed_lookups_agree(&stack(), &stack());
    }

    #[test]
    fn a_listing_gives_each_name_the_id_and_kind_a_lookup_resolves() {
        use Op::*;
        let l = layer(
            "one",
            &[
                Dir("d"),
                File("d/a", b"a"),
                Link("d/b", "d/a"),
                Dir("d/empty"),
                File("d/implicit/x", b"x"),
                File("d/.wh.gone", b""),
                File("f", b"f"),
            ],
        );
        let layers = vec![l];
        for dir in [&b""[..], b"d", b"d/implicit"] {
            for (name, hit) in merge::child_hits(&layers, WhiteoutSpec::Oci, 0, dir).unwrap() {
                let path = merge::join(dir, &name);
                let r = merge::resolve_hit(&layers, WhiteoutSpec::Oci, 0, &path, hit).unwrap();
                let searched = merge::resolve(&layers, WhiteoutSpec::Oci, &[0], &path).unwrap();
                assert_eq!(
                    merge::hit_id(&layers, 0, dir, &name, hit),
                    Some((r.id, r.kind)),
                    "{}",
                    String::from_utf8_lossy(&path)
                );
                assert_eq!((searched.id, searched.kind), (r.id, r.kind));
            }
        }
    }

    #[test]
    fn typed_spec_shows_plain_wh_files() {
        let l = layer("plain", &[Op::File(".wh.not-a-marker", b"data")]);
        let u = Union::new(vec![l], WhiteoutSpec::Typed).unwrap();
        assert_eq!(names(&u, ROOT), [".wh.not-a-marker"]);
    }

    fn upper_union() -> (Union, tempfile::TempDir) {
        let t = tempfile::tempdir().unwrap();
        let up = UpperDir::open(&t.path().join("upper"), &t.path().join("work")).unwrap();
        (stack().with_upper(up, (0, 0)), t)
    }

    #[test]
    fn writes_land_in_the_upper_dir_and_inodes_stay() {
        let (u, t) = upper_union();
        let upper = t.path().join("upper");
        let keep = walk(&u, "keep").unwrap();
        let a = walk(&u, "a").unwrap();
        // copy-up keeps the inode; content comes along
        let f = u.open_upper(keep, rustix::fs::OFlags::RDWR).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"K2", 0).unwrap();
        assert_eq!(walk(&u, "keep").unwrap(), keep);
        assert_eq!(&*u.read(keep, 0, 10).unwrap(), b"K2");
        assert_eq!(std::fs::read(upper.join("keep")).unwrap(), b"K2");
        // unlink of a lower file leaves a whiteout
        u.remove(a, b"y", false).unwrap();
        assert!(names(&u, a).is_empty());
        let st = std::fs::symlink_metadata(upper.join("a/y")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &st.file_type()
        ));
        // create over the whiteout
        let y = u.create(a, b"y", NewNode::File, 0o640, (1, 2)).unwrap();
        assert_eq!(names(&u, a), ["y"]);
        assert_eq!(u.attr(y).unwrap().perm, 0o640);
        // rmdir of a merged directory, mkdir again: opaque, empty
        let c = walk(&u, "c").unwrap();
        u.remove(c, b"in", false).unwrap();
        u.remove(ROOT, b"c", true).unwrap();
        assert!(walk(&u, "c").is_err());
        let c2 = u.create(ROOT, b"c", NewNode::Dir, 0o755, (0, 0)).unwrap();
        assert!(names(&u, c2).is_empty());
        // rename of a lower directory copies it up and keeps inode numbers below it
        let b = walk(&u, "b").unwrap();
        let bnew = walk(&u, "b/new").unwrap();
        u.rename(ROOT, b"b", ROOT, b"bb", false).unwrap();
        assert!(walk(&u, "b").is_err());
        assert_eq!(walk(&u, "bb").unwrap(), b);
        assert_eq!(walk(&u, "bb/new").unwrap(), bnew);
        assert_eq!(&*u.read(bnew, 0, 10).unwrap(), b"n");
        // a hard link shares the inode
        let l = u.link(keep, c2, b"k").unwrap();
        assert_eq!(l, keep);
        assert_eq!(walk(&u, "c/k").unwrap(), keep);
        assert_eq!(u.attr(keep).unwrap().nlink, 2);
        // a fresh union over the same upper dir shows the same tree
        let up = UpperDir::open(&upper, &t.path().join("work")).unwrap();
        let again = stack().with_upper(up, (0, 0));
        assert_eq!(names(&again, ROOT), names(&u, ROOT));
        assert_eq!(names(&again, walk(&again, "bb").unwrap()), ["new"]);
        assert!(names(&again, walk(&again, "c").unwrap()).contains(&"k".to_string()));
    }

    #[test]
    fn the_directory_index_resolves_like_probing_every_layer() {
        let u = stack();
        let all: Vec<usize> = (0..u.layers.len()).collect();
        let names = [
            "a",
            "b",
            "c",
            "d",
            "e",
            "keep",
            "top-only-hides",
            ".wh.top-only-hides",
            "zz",
        ];
        let idx = merge::DirIndex::build(&u.layers, u.spec, &all, b"");
        for n in names {
            let a = merge::resolve(&u.layers, u.spec, &all, n.as_bytes());
            let b = idx.resolve(&u.layers, u.spec, n.as_bytes());
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{n}");
        }
        for dir in ["a", "b", "c", "d"] {
            let Some(r) = merge::resolve(&u.layers, u.spec, &all, dir.as_bytes()) else {
                continue;
            };
            let idx = merge::DirIndex::build(&u.layers, u.spec, &r.layers, dir.as_bytes());
            for n in ["x", "y", "z", "new", "in", "deep", ".wh.x", "missing"] {
                let p = format!("{dir}/{n}");
                let a = merge::resolve(&u.layers, u.spec, &r.layers, p.as_bytes());
                let b = idx.resolve(&u.layers, u.spec, p.as_bytes());
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "{p}");
            }
        }
    }
}
