//! Nodes the kernel holds that this server never gave out: after a server restart the kernel
//! goes on using the ids the previous server answered with. Ids are derived from what a node is
//! (`id`), so each turns back into a union path, which is looked up from the root like any
//! name; the id the lookup finds must be the one asked for, else the node is gone (ESTALE-like
//! `BadInode`).
//! - a lower entry or implicit directory: its path in the layer's index;
//! - an upper entry: a walk of the upper dir for the entry with that id (upper entries with a
//!   lower origin answer to the lower id, so a renamed copy-up is found this way too).
//!
//! A revived node counts one kernel lookup, and each directory on its path one more: the kernel's
//! own count is not known, so a FORGET of the node drops it, and directories stay (a node more
//! than the kernel holds, per restart, never one fewer).
use std::collections::VecDeque;
use std::sync::Arc;

use super::id::{decode, Decoded, NodeId, ROOT};
use super::merge::join;
use super::node::Node;
use super::{Error, Source, Union};

impl Union {
    /// The node of an id the table does not hold, looked up again from its path.
    pub(super) fn revive(&self, id: NodeId) -> Result<Arc<Node>, Error> {
        let Some(path) = self.path_of_id(id)? else {
            return Err(Error::BadInode(id));
        };
        let mut cur = ROOT;
        for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            cur = self.lookup(cur, name).map_err(|_| Error::BadInode(id))?;
        }
        if cur != id {
            self.forget(cur, 1);
            return Err(Error::BadInode(id));
        }
        log::debug!("revived node {id:#x} at {}", String::from_utf8_lossy(&path));
        self.nodes.get(id).ok_or(Error::BadInode(id))
    }

    /// The union path `id` stands for, if it can be derived.
    fn path_of_id(&self, id: NodeId) -> Result<Option<Vec<u8>>, Error> {
        let in_layer = |layer: usize, idx: usize, depth: Option<usize>| {
            let l = self.layers.get(layer)?;
            if idx >= l.container.len() {
                return None;
            }
            let mut p = l.container.path(idx);
            if let Some(d) = depth {
                let end = p
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'/')
                    .nth(d.checked_sub(1)?)
                    .map_or(p.len(), |(i, _)| i);
                p = &p[..end];
            }
            if l.root.is_empty() {
                return Some(p.to_vec());
            }
            let rest = p.strip_prefix(&l.root[..])?;
            match rest.split_first() {
                None => Some(Vec::new()),
                Some((b'/', r)) => Some(r.to_vec()),
                Some(_) => None,
            }
        };
        Ok(match decode(id) {
            Decoded::Lower { layer, idx } => in_layer(layer, idx, None),
            Decoded::Implicit {
                layer,
                first_below,
                depth,
            } => in_layer(layer, first_below, Some(depth)),
            Decoded::Upper { .. } => self.upper_path_of(id)?,
            Decoded::Other => None,
        })
    }

    /// Walks the upper dir (directories that are in it) for the entry whose id is `id`.
    fn upper_path_of(&self, id: NodeId) -> Result<Option<Vec<u8>>, Error> {
        let Some(up) = self.upper.as_ref() else {
            return Ok(None);
        };
        let root = self.nodes.get(ROOT).ok_or(Error::BadInode(ROOT))?;
        let mut queue = VecDeque::from([(ROOT, root)]);
        while let Some((dir_id, dir)) = queue.pop_front() {
            let listed = up
                .dir
                .list(&dir.path)
                .map_err(|e| super::upper_err("listing", &dir.path, e))?;
            for (name, _) in listed {
                let Some((child_id, node)) = self.child(dir_id, &dir, &name)? else {
                    continue;
                };
                if child_id == id {
                    return Ok(Some(join(&dir.path, &name)));
                }
                if node.kind == crate::bfc::Kind::Dir && node.source == Source::Upper {
                    queue.push_back((child_id, node));
                }
            }
        }
        Ok(None)
    }
}
