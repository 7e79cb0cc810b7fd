//! Listing the next directory of a walk before it is asked for (read-only unions).
//!
//! A walk (`find`, `tar`, `du`) lists a directory, then its subdirectories in listing order,
//! then the directory after it. While the walker works through the names of one directory the
//! server is idle, and the next directory's listing (~0.1 ms for 1,000 entries) would otherwise
//! be built while the walker waits for its first READDIRPLUS. So when a directory's listing is
//! read past its first reply, the directory a depth-first walk lists next (its first
//! subdirectory, else the next directory beside it) is listed on a worker and kept in one slot
//! until the kernel lists it. A read-only union never changes, so a listing built ahead is the
//! one a READDIR would build; the kernel usually holds no node of that directory yet, so the
//! slot is keyed by the id the listing gives it. Cost: one listing kept beside the nodes, and
//! one built for nothing when the walk goes elsewhere.

use std::sync::{Arc, Mutex};

use super::merge;
use super::node::{Listing, Node};
use super::{Error, NodeId, Union};
use crate::bfc::Kind;

/// How many entries of a listing are searched for the next directory.
const NEXT_WITHIN: usize = 4096;

/// The listing built ahead, with the id of its directory.
#[derive(Debug, Default)]
pub(super) struct Ahead(Mutex<Option<(NodeId, Arc<Listing>)>>);

impl Union {
    /// Builds the listing of the directory a depth-first walk lists after `id`, unless it is
    /// built already or this union has an upper dir (whose listings change).
    pub fn list_next_ahead(&self, id: NodeId) -> Result<(), Error> {
        if self.upper.is_some() {
            return Ok(());
        }
        let dir = self.dir(id)?;
        let first_child = dir.listing.get().and_then(|l| next_dir(l, 0));
        let (holder, listing, at) = match first_child {
            Some(i) => (dir.clone(), dir.listing.get().cloned(), i),
            None if dir.parent == id => return Ok(()),
            None => {
                let parent = self.dir(dir.parent)?;
                let listing = parent.listing.get().cloned();
                let at = listing.as_ref().and_then(|l| {
                    let pos = l.position(merge::basename(&dir.path))?;
                    next_dir(l, pos + 1)
                });
                let Some(at) = at else { return Ok(()) };
                (parent, listing, at)
            }
        };
        let Some(next) = listing.as_ref().and_then(|l| l.get(at)) else {
            return Ok(());
        };
        if let Some(n) = self.nodes.get(next.ino) {
            // The kernel holds it already (a READDIRPLUS entry): list it in place.
            if n.kind == Kind::Dir && n.listing.get().is_none() {
                self.listing(next.ino, &n)?;
            }
            return Ok(());
        }
        if self.ahead_holds(next.ino) {
            return Ok(());
        }
        let path = merge::join(&holder.path, next.name);
        let Some(r) = self.resolve_listed(&holder, &path, Some(next.ino))? else {
            return Ok(());
        };
        let parent = match first_child {
            Some(_) => id,
            None => dir.parent,
        };
        let node = Node::new(path.into(), parent, &r);
        let built = self.build_listing(next.ino, &node)?;
        if let Ok(mut slot) = self.ahead.0.lock() {
            *slot = Some((next.ino, built));
        }
        Ok(())
    }

    fn ahead_holds(&self, id: NodeId) -> bool {
        self.ahead
            .0
            .lock()
            .is_ok_and(|s| s.as_ref().is_some_and(|(i, _)| *i == id))
    }

    /// The listing built ahead for directory `id`, if it is that one's. Not when the kernel
    /// looked up a name inside the directory since: a listing gives a known child the id the
    /// kernel has for it, and one built before may have given it another.
    pub(super) fn take_ahead(&self, id: NodeId) -> Option<Arc<Listing>> {
        let mut slot = self.ahead.0.lock().ok()?;
        if slot.as_ref().is_none_or(|(i, _)| *i != id) {
            return None;
        }
        let (_, l) = slot.take()?;
        (!self.nodes.has_children(id)).then_some(l)
    }
}

/// The first directory of `l` at or after entry `from`, within `NEXT_WITHIN` entries.
fn next_dir(l: &Listing, from: usize) -> Option<usize> {
    (from..l.len().min(from.saturating_add(NEXT_WITHIN)))
        .find(|&i| l.get(i).is_some_and(|e| e.kind == Kind::Dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfc::writer::{Meta, Writer, WriterOptions};
    use crate::bfc::Container;
    use crate::overlay::{Layer, WhiteoutSpec, ROOT};

    /// A read-only union of one layer holding `files`.
    fn union(files: &[&str]) -> Union {
        let meta = Meta {
            mode: 0o755,
            ..Meta::default()
        };
        let out = std::io::Cursor::new(Vec::new());
        let mut w = Writer::new(out, WriterOptions::default(), std::path::Path::new("t")).unwrap();
        for f in files {
            w.add_file(f.as_bytes(), &meta, &mut &b"x"[..]).unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        let c = Container::from_bytes("t", bytes).unwrap();
        Union::new(vec![Layer::new(Arc::new(c))], WhiteoutSpec::Oci).unwrap()
    }

    fn entries(l: &Listing) -> Vec<(Vec<u8>, NodeId, Kind)> {
        l.iter().map(|e| (e.name.to_vec(), e.ino, e.kind)).collect()
    }

    fn ahead_id(u: &Union) -> Option<NodeId> {
        u.ahead.0.lock().unwrap().as_ref().map(|(i, _)| *i)
    }

    const TREE: &[&str] = &["a/f1", "a/f2", "b/f3", "b/sub/f4", "c/f5", "z"];

    /// What a walk does first: list the root, look up `a`, list it (past its first reply).
    fn walk_through_a(u: &Union) -> NodeId {
        u.readdir(ROOT).unwrap();
        let a = u.lookup(ROOT, b"a").unwrap();
        u.readdir(a).unwrap();
        u.list_next_ahead(a).unwrap();
        a
    }

    #[test]
    fn the_next_directory_of_a_depth_first_walk_is_listed_ahead_and_used() {
        let u = union(TREE);
        let fresh = union(TREE);
        // `a` has no subdirectory: the next is `b`, beside it.
        walk_through_a(&u);
        let b_id = u.readdir(ROOT).unwrap().find(b"b").unwrap().ino;
        assert_eq!(ahead_id(&u), Some(b_id));
        let b = u.lookup(ROOT, b"b").unwrap();
        let listed = u.readdir(b).unwrap();
        assert_eq!(ahead_id(&u), None, "taken by the listing");
        fresh.readdir(ROOT).unwrap();
        let fb = fresh.lookup(ROOT, b"b").unwrap();
        assert_eq!(entries(&listed), entries(&fresh.readdir(fb).unwrap()));
        // `b` has one: `b/sub` is next.
        u.list_next_ahead(b).unwrap();
        assert_eq!(ahead_id(&u), Some(listed.find(b"sub").unwrap().ino));
        // The last directory of the root has none after it.
        let c = u.lookup(ROOT, b"c").unwrap();
        u.readdir(c).unwrap();
        *u.ahead.0.lock().unwrap() = None;
        u.list_next_ahead(c).unwrap();
        assert_eq!(ahead_id(&u), None);
    }

    #[test]
    fn a_listing_built_ahead_is_dropped_once_a_name_inside_was_looked_up() {
        let u = union(TREE);
        walk_through_a(&u);
        assert!(ahead_id(&u).is_some());
        let b = u.lookup(ROOT, b"b").unwrap();
        let f3 = u.lookup(b, b"f3").unwrap();
        let listed = u.readdir(b).unwrap();
        assert_eq!(listed.find(b"f3").unwrap().ino, f3);
        assert_eq!(ahead_id(&u), None);
    }

    #[test]
    fn a_directory_the_kernel_holds_is_listed_in_place_and_an_upper_dir_stops_it() {
        let u = union(TREE);
        u.readdir(ROOT).unwrap();
        let a = u.lookup(ROOT, b"a").unwrap();
        assert!(u.dir(a).unwrap().listing.get().is_none());
        u.list_next_ahead(ROOT).unwrap();
        assert!(u.dir(a).unwrap().listing.get().is_some());
        assert_eq!(ahead_id(&u), None);

        let t = tempfile::tempdir().unwrap();
        let (up, work) = (t.path().join("up"), t.path().join("work"));
        std::fs::create_dir_all(&up).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let dir = crate::upper::UpperDir::open(&up, &work).unwrap();
        let u = union(TREE).with_upper(dir, (0, 0));
        walk_through_a(&u);
        u.list_next_ahead(ROOT).unwrap();
        assert_eq!(ahead_id(&u), None);
    }
}
