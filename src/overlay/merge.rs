//! Merging layers: resolving one name in a directory, and the merged listing of a directory.
//!
//! OCI image layer changeset rules (image-spec `layer.md`, "Whiteouts"), applied top-down:
//! - `DIR/.wh.NAME` hides `DIR/NAME` in every layer below its own;
//! - `DIR/.wh..wh..opq` (opaque whiteout) hides every entry of `DIR` in the layers below;
//! - whiteout entries themselves never show;
//! - the topmost entry for a path wins; a non-directory hides everything below it; a directory
//!   merges with the directories below it until a non-directory, an opaque marker or a whiteout.
//!
//! Names are compared as bytes (a non-UTF-8 `.wh.` name is still a whiteout).
//! Resolving a name costs a few binary searches per contributing layer; the listing calls the same
//! resolver for every name, so lookups and listings always agree.
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::id::{implicit_id, lower_id, NodeId};
use super::{Layer, WhiteoutSpec};
use crate::bfc::{self, Child, Container, Kind, Whiteout};
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

/// What resolving a name in a directory found.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The id this node has by what it is (None: none can be derived; a dynamic one is used).
    pub id: Option<NodeId>,
    pub kind: Kind,
    pub source: Source,
    /// Directories: the layers (top first) whose directory at this path merges into this one.
    pub layers: Vec<usize>,
}

pub(crate) const WH_PREFIX: &[u8] = b".wh.";
pub(crate) const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// `a/b` from `a` and `b` (`b` alone when `a` is the root "").
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The last component of a path.
pub(crate) fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

impl WhiteoutSpec {
    /// Whether the entry at `idx` is a whiteout marker of the given type (typed by the writer, or,
    /// under the OCI spec, recognised by its name).
    fn is_marker(self, c: &Container, idx: usize, want: Whiteout) -> bool {
        let whiteout = c.whiteout(idx);
        if whiteout == want {
            return true;
        }
        self == WhiteoutSpec::Oci
            && whiteout == Whiteout::None
            && match want {
                Whiteout::Opaque => basename(c.path(idx)) == WH_OPAQUE,
                Whiteout::Whiteout => basename(c.path(idx)).starts_with(WH_PREFIX),
                Whiteout::None => false,
            }
    }

    /// Whether a listed entry is a whiteout marker (never shown).
    fn hides_entry(self, c: &Container, idx: usize) -> bool {
        self.hides_named(c, idx, basename(c.path(idx)))
    }

    /// `hides_entry` for an entry whose last path component, `name`, is at hand.
    fn hides_named(self, c: &Container, idx: usize, name: &[u8]) -> bool {
        c.whiteout(idx) != Whiteout::None
            || (self == WhiteoutSpec::Oci && name.starts_with(WH_PREFIX))
    }

    /// Whether a name may show at all.
    pub(crate) fn name_visible(self, name: &[u8]) -> bool {
        !(self == WhiteoutSpec::Oci && name.starts_with(WH_PREFIX))
    }
}

fn has_marker(l: &Layer, spec: WhiteoutSpec, path: &[u8], want: Whiteout) -> bool {
    has_marker_from(l, spec, path, want, 0)
}

/// `has_marker` for a `path` that sorts after every entry before `from` (see
/// `Container::lower_bound_from`): a directory's own marker is searched from its entry on.
fn has_marker_from(
    l: &Layer,
    spec: WhiteoutSpec,
    path: &[u8],
    want: Whiteout,
    from: usize,
) -> bool {
    l.container
        .find_from(from, path)
        .is_some_and(|i| spec.is_marker(&l.container, i, want))
}

/// What one layer holds for one name of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    Entry(usize),
    /// A directory the index does not record but that has entries below it.
    Implicit,
    /// A `.wh.NAME` marker: hides NAME in the layers below.
    Whiteout,
}

/// What each of `candidates` (top first) holds for `path`, by probing each layer: a few binary
/// searches per layer. Within a layer, an entry counts before that layer's whiteout of the name.
fn probe_hits(
    layers: &[Layer],
    spec: WhiteoutSpec,
    candidates: &[usize],
    path: &[u8],
) -> Vec<(usize, Hit)> {
    let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    };
    let mut hits = Vec::new();
    for &li in candidates {
        let Some(l) = layers.get(li) else { continue };
        let c = &l.container;
        let lp = l.path_of(path);
        match c.find(&lp) {
            Some(i) if c.whiteout(i) == Whiteout::None => hits.push((li, Hit::Entry(i))),
            Some(_) => {}
            None if has_below(c, &lp) => hits.push((li, Hit::Implicit)),
            None => {}
        }
        if !path.is_empty() {
            let mut wh = WH_PREFIX.to_vec();
            wh.extend_from_slice(name);
            if has_marker(l, spec, &l.path_of(&join(dir, &wh)), Whiteout::Whiteout) {
                hits.push((li, Hit::Whiteout));
            }
        }
    }
    hits
}

/// Whether layer container `c` has entries below `path` ("" = the whole container).
fn has_below(c: &Container, path: &[u8]) -> bool {
    if path.is_empty() {
        return !c.is_empty();
    }
    let mut prefix = path.to_vec();
    prefix.push(b'/');
    let i = c.lower_bound(&prefix);
    i < c.len() && c.path(i).starts_with(&prefix)
}

/// The id of an implicit directory at layer path `lp` of layer `li`: by its first entry.
fn implicit_dir_id(l: &Layer, li: usize, lp: &[u8]) -> Option<NodeId> {
    let mut prefix = lp.to_vec();
    if !prefix.is_empty() {
        prefix.push(b'/');
    }
    let depth = lp.iter().filter(|&&b| b == b'/').count() + usize::from(!lp.is_empty());
    implicit_id(li, l.container.lower_bound(&prefix), depth)
}

/// The OCI rules over what each layer holds for `path`, top first: the topmost entry wins; a
/// non-directory decides alone (nothing below shows through); a directory merges with the
/// directories below until a non-directory, a whiteout, or its own opaque marker.
fn fold(
    layers: &[Layer],
    spec: WhiteoutSpec,
    path: &[u8],
    hits: impl IntoIterator<Item = (usize, Hit)>,
) -> Option<Resolved> {
    let mut found: Option<Resolved> = None;
    for (li, hit) in hits {
        let l = layers.get(li)?;
        let (kind, source) = match hit {
            Hit::Whiteout => break,
            Hit::Implicit => (Kind::Dir, Source::Implicit),
            Hit::Entry(i) => (l.container.kind(i), Source::Entry { layer: li, idx: i }),
        };
        match (&mut found, kind) {
            (None, Kind::Dir) => {
                found = Some(Resolved {
                    id: None,
                    kind,
                    source,
                    layers: vec![li],
                });
            }
            (Some(r), Kind::Dir) => {
                if r.layers.last() != Some(&li) {
                    r.layers.push(li);
                }
                // An implicit directory above takes the metadata of a recorded one below.
                if r.source == Source::Implicit {
                    r.source = source;
                }
            }
            (None, _) => {
                // A hardlinked file is its group's entry: every name, one id.
                let id = match source {
                    Source::Entry { idx, .. } => {
                        let group = l.container.link_group(idx);
                        lower_id(li, group.map_or(idx, |g| g as usize))
                    }
                    Source::Implicit | Source::Upper => None,
                };
                return Some(Resolved {
                    id,
                    kind,
                    source,
                    layers: Vec::new(),
                });
            }
            // A non-directory below a directory: the directory replaces it and hides the rest.
            (Some(_), _) => break,
        }
        // "dir/.wh..wh..opq" sorts after "dir" itself.
        let from = match source {
            Source::Entry { idx, .. } => idx + 1,
            _ => 0,
        };
        if has_marker_from(
            l,
            spec,
            &join(&l.path_of(path), WH_OPAQUE),
            Whiteout::Opaque,
            from,
        ) {
            break;
        }
    }
    let mut r = found?;
    r.id = match r.source {
        Source::Entry { layer, idx } => lower_id(layer, idx),
        _ => {
            let li = *r.layers.first()?;
            implicit_dir_id(layers.get(li)?, li, &layers.get(li)?.path_of(path))
        }
    };
    Some(r)
}

/// Resolves the union path `path` given the layers (top first) that may hold it: the layers of
/// its parent directory, or every layer for the root. Without a `DirIndex`, this probes each.
pub(crate) fn resolve(
    layers: &[Layer],
    spec: WhiteoutSpec,
    candidates: &[usize],
    path: &[u8],
) -> Option<Resolved> {
    fold(
        layers,
        spec,
        path,
        probe_hits(layers, spec, candidates, path),
    )
}

/// What layer `li` alone holds for a name it lists (`child_hits`): the resolution `resolve`
/// gives when `li` is the only layer the parent directory merges, without searching the name
/// again (a `.wh.NAME` in the same layer hides only layers below it, and there are none).
pub(crate) fn resolve_hit(
    layers: &[Layer],
    spec: WhiteoutSpec,
    li: usize,
    path: &[u8],
    hit: Hit,
) -> Option<Resolved> {
    fold(layers, spec, path, [(li, hit)])
}

/// What `resolve_hit` gives for a name of a listing — its id and kind — without building the
/// resolution: no path (but for an implicit directory), no layer list. `dir` is the union path
/// of the directory the name is listed in.
pub(crate) fn hit_id(
    layers: &[Layer],
    li: usize,
    dir: &[u8],
    name: &[u8],
    hit: Hit,
) -> Option<(Option<NodeId>, Kind)> {
    let l = layers.get(li)?;
    match hit {
        Hit::Whiteout => None,
        Hit::Implicit => {
            let lp = l.path_of(&join(dir, name));
            Some((implicit_dir_id(l, li, &lp), Kind::Dir))
        }
        Hit::Entry(i) => {
            let c = &l.container;
            let kind = c.kind(i);
            // A directory is its own entry; a hardlinked file is its group's entry (see `fold`).
            let id = match kind {
                Kind::Dir => lower_id(li, i),
                _ => lower_id(li, c.link_group(i).map_or(i, |g| g as usize)),
            };
            Some((id, kind))
        }
    }
}

/// A name of a directory and what one layer holds for it.
pub(crate) type NameHit<'a> = (Cow<'a, [u8]>, Hit);

/// The names directory `dir` shows when layer `li` is the only layer it merges, sorted, each
/// with what the layer holds for it: `child_names` for one layer, keeping the entries found.
/// Names of entries are borrowed from the layer's index.
pub(crate) fn child_hits<'a>(
    layers: &'a [Layer],
    spec: WhiteoutSpec,
    li: usize,
    dir: &[u8],
) -> Result<Vec<NameHit<'a>>, bfc::Error> {
    let Some(l) = layers.get(li) else {
        return Ok(Vec::new());
    };
    let children = l.container.children(&l.path_of(dir))?;
    let mut out = Vec::with_capacity(children.len());
    for child in children {
        let (name, hit) = match child {
            Child::Entry(i) => {
                let name = basename(l.container.path(i));
                if spec.hides_named(&l.container, i, name) {
                    continue;
                }
                (Cow::Borrowed(name), Hit::Entry(i))
            }
            Child::Implicit(n) => (Cow::Owned(n), Hit::Implicit),
        };
        if spec.name_visible(&name) {
            out.push((name, hit));
        }
    }
    Ok(out)
}

/// Every name that shows in the directory at union path `dir` with contributing `layers`, sorted.
pub(crate) fn child_names(
    layers: &[Layer],
    spec: WhiteoutSpec,
    dir_layers: &[usize],
    dir: &[u8],
) -> Result<BTreeSet<Vec<u8>>, bfc::Error> {
    let mut names = BTreeSet::new();
    for &li in dir_layers {
        let Some(l) = layers.get(li) else { continue };
        for child in l.container.children(&l.path_of(dir))? {
            let name = match child {
                Child::Entry(i) if spec.hides_entry(&l.container, i) => continue,
                Child::Entry(i) => basename(l.container.path(i)).to_vec(),
                Child::Implicit(n) => n,
            };
            if spec.name_visible(&name) {
                names.insert(name);
            }
        }
    }
    Ok(names)
}

/// Every name of one directory with what each contributing layer holds for it, built once per
/// directory from the layers' child lists (one pass over them). Resolving a name then visits
/// only the layers that hold something for it, so a lookup costs the same across 50 layers as
/// across one; without it, each lookup probes every layer (three binary searches each).
#[derive(Debug, Default)]
pub(crate) struct DirIndex {
    /// name → (layer, hit), layers top first.
    names: HashMap<Box<[u8]>, Vec<(usize, Hit)>>,
}

/// Directories merging at least this many layers get a `DirIndex`; below, probing each layer
/// is as cheap as building one.
pub(crate) const INDEX_MIN_LAYERS: usize = 3;

impl DirIndex {
    pub(crate) fn build(
        layers: &[Layer],
        spec: WhiteoutSpec,
        dir_layers: &[usize],
        dir: &[u8],
    ) -> DirIndex {
        let mut names: HashMap<Box<[u8]>, Vec<(usize, Hit)>> = HashMap::new();
        for &li in dir_layers {
            let Some(l) = layers.get(li) else { continue };
            let c = &l.container;
            // A damaged index shows when the directory is listed (`child_names`); here its
            // names are left out.
            let children = c.children(&l.path_of(dir)).unwrap_or_else(|e| {
                log::error!("{e}");
                Vec::new()
            });
            for child in children {
                let (name, hit): (Vec<u8>, Hit) = match child {
                    Child::Implicit(n) => (n, Hit::Implicit),
                    Child::Entry(i) => {
                        let name = basename(c.path(i));
                        if spec.is_marker(c, i, Whiteout::Opaque) && name == WH_OPAQUE {
                            continue; // the directory's own opaque mark: already in `dir_layers`
                        }
                        match name.strip_prefix(WH_PREFIX) {
                            Some(target) if spec.is_marker(c, i, Whiteout::Whiteout) => {
                                (target.to_vec(), Hit::Whiteout)
                            }
                            _ if c.whiteout(i) != Whiteout::None => continue,
                            _ => (name.to_vec(), Hit::Entry(i)),
                        }
                    }
                };
                names.entry(name.into()).or_default().push((li, hit));
            }
        }
        // Within a layer, an entry counts before that layer's whiteout of the same name.
        for hits in names.values_mut() {
            hits.sort_by_key(|(li, h)| {
                let pos = dir_layers
                    .iter()
                    .position(|x| x == li)
                    .unwrap_or(usize::MAX);
                (pos, matches!(h, Hit::Whiteout))
            });
        }
        DirIndex { names }
    }

    /// `resolve` for a child `path` of the indexed directory, visiting only layers with hits.
    pub(crate) fn resolve(
        &self,
        layers: &[Layer],
        spec: WhiteoutSpec,
        path: &[u8],
    ) -> Option<Resolved> {
        let hits = self.names.get(basename(path))?;
        fold(layers, spec, path, hits.iter().copied())
    }
}
