//! Node ids: the inode numbers the kernel sees, derived from what a node is.
//!
//! The same file always gets the same id — after the kernel forgot it, after a remount, after a
//! server restart — so nothing has to remember ids for files the kernel does not hold:
//! - a lower entry: its layer and index entry (every name of a hardlink group: the group's entry);
//! - a directory no layer records: the layer and the first entry below it;
//! - an upper entry: the lower id recorded when it was copied up, else its upper inode number;
//! - the rare rest (an id out of range, or one the kernel still holds for a file that is gone):
//!   a dynamic id from a counter.

/// A node of the union, and its inode number.
pub type NodeId = u64;
/// The root directory (FUSE_ROOT_ID).
pub const ROOT: NodeId = 1;

/// Id layout: a 3-bit tag on top, then the layer (13 bits) and the entry index (48 bits).
const TAG_SHIFT: u32 = 61;
const LAYER_SHIFT: u32 = 48;
const TAG_LOWER: u64 = 1;
const TAG_IMPLICIT: u64 = 2;
const TAG_UPPER: u64 = 3;
const TAG_DYNAMIC: u64 = 4;
/// Layers and entries beyond these cannot get a deterministic id (they get a dynamic one).
const MAX_LAYER: usize = (1 << (TAG_SHIFT - LAYER_SHIFT)) - 1;
const MAX_INDEX: u64 = (1 << LAYER_SHIFT) - 1;

fn tagged(tag: u64, layer: usize, idx: u64) -> Option<NodeId> {
    (layer <= MAX_LAYER && idx <= MAX_INDEX)
        .then_some((tag << TAG_SHIFT) | ((layer as u64) << LAYER_SHIFT) | idx)
}

/// The id of index entry `idx` of layer `layer` (for a hardlink: of its group's entry).
pub(crate) fn lower_id(layer: usize, idx: usize) -> Option<NodeId> {
    tagged(TAG_LOWER, layer, idx as u64)
}

/// (layer, entry index) of a lower entry's id made by `lower_id`.
pub(crate) fn split_lower(id: NodeId) -> Option<(usize, usize)> {
    (id >> TAG_SHIFT == TAG_LOWER).then_some((
        ((id >> LAYER_SHIFT) & MAX_LAYER as u64) as usize,
        (id & MAX_INDEX) as usize,
    ))
}

/// The id of a directory that layer `layer` does not record, by the first entry below it and
/// its depth (directories that share their first entry are nested, so their depths differ).
pub(crate) fn implicit_id(layer: usize, first_below: usize, depth: usize) -> Option<NodeId> {
    const DEPTH_BITS: u32 = 8;
    let (first, depth) = (first_below as u64, depth as u64);
    if depth >= 1 << DEPTH_BITS || first >= 1 << (LAYER_SHIFT - DEPTH_BITS) {
        return None;
    }
    tagged(
        TAG_IMPLICIT,
        layer,
        (depth << (LAYER_SHIFT - DEPTH_BITS)) | first,
    )
}

/// The id of an upper entry with no lower origin: its inode number in the upper file system.
pub(crate) fn upper_id(st_ino: u64) -> Option<NodeId> {
    (st_ino < 1 << TAG_SHIFT).then_some((TAG_UPPER << TAG_SHIFT) | st_ino)
}

/// Dynamic id number `n` (ids that cannot be derived).
pub(crate) fn dynamic_id(n: u64) -> NodeId {
    (TAG_DYNAMIC << TAG_SHIFT) | (n & ((1 << TAG_SHIFT) - 1))
}

/// Whether `id` names a lower entry (an origin worth recording at copy-up).
pub(crate) fn is_lower_id(id: NodeId) -> bool {
    id >> TAG_SHIFT == TAG_LOWER || id >> TAG_SHIFT == TAG_IMPLICIT
}

/// What an id says about its node (the inverse of the constructors above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoded {
    Lower {
        layer: usize,
        idx: usize,
    },
    Implicit {
        layer: usize,
        first_below: usize,
        depth: usize,
    },
    Upper {
        st_ino: u64,
    },
    /// The root, a dynamic id, or no id at all: nothing to derive a node from.
    Other,
}

/// Decodes `id` (see [`Decoded`]).
pub(crate) fn decode(id: NodeId) -> Decoded {
    let layer = ((id >> LAYER_SHIFT) & MAX_LAYER as u64) as usize;
    let idx = id & MAX_INDEX;
    match id >> TAG_SHIFT {
        TAG_LOWER => Decoded::Lower {
            layer,
            idx: idx as usize,
        },
        TAG_IMPLICIT => {
            const DEPTH_BITS: u32 = 8;
            Decoded::Implicit {
                layer,
                first_below: (idx & ((1 << (LAYER_SHIFT - DEPTH_BITS)) - 1)) as usize,
                depth: (idx >> (LAYER_SHIFT - DEPTH_BITS)) as usize,
            }
        }
        TAG_UPPER => Decoded::Upper {
            st_ino: id & ((1 << TAG_SHIFT) - 1),
        },
        _ => Decoded::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_distinct_sources_never_collide() {
        let a = lower_id(0, 5).unwrap();
        let b = implicit_id(0, 5, 1).unwrap();
        assert_ne!(b, implicit_id(0, 5, 2).unwrap(), "nested implicit dirs");
        let c = upper_id(5).unwrap();
        assert!(a != b && b != c && a != c && a != ROOT);
        assert!(is_lower_id(a) && is_lower_id(b) && !is_lower_id(c));
        assert_eq!(lower_id(MAX_LAYER + 1, 0), None);
        assert_eq!(upper_id(u64::MAX), None);
        assert_eq!(split_lower(lower_id(3, 77).unwrap()), Some((3, 77)));
        assert_eq!(split_lower(b), None);
    }

    #[test]
    fn ids_decode_to_what_made_them() {
        assert_eq!(
            decode(lower_id(3, 77).unwrap()),
            Decoded::Lower { layer: 3, idx: 77 }
        );
        assert_eq!(
            decode(implicit_id(2, 9, 4).unwrap()),
            Decoded::Implicit {
                layer: 2,
                first_below: 9,
                depth: 4
            }
        );
        assert_eq!(
            decode(upper_id(12345).unwrap()),
            Decoded::Upper { st_ino: 12345 }
        );
        assert_eq!(decode(dynamic_id(5)), Decoded::Other);
        assert_eq!(decode(ROOT), Decoded::Other);
    }
}
