//! Subdirectory counts (extension section SUBDIRS): a directory's link count is 2 + its
//! subdirectories, which a reader could only learn by listing the directory. The writer counts
//! them once, in the same pass that writes the index; `verify` counts again and compares.
//!
//! A directory — recorded in the index or implicit (only a prefix of deeper paths) — is named by
//! the first index entry below it and its depth (number of path components; the root is depth
//! 0, first entry 0). Directories that share their first entry below are nested, so their depths
//! differ. Only directories with at least one subdirectory get a record: `(first u32, depth u32,
//! count u32)`, sorted by (first, depth). Every implicit directory counts as a directory.
use std::collections::HashSet;

/// One record: (first entry below, depth, subdirectories).
pub type Record = (u32, u32, u32);

/// Bytes of one record in the section.
pub const RECORD_SIZE: usize = 12;

/// A directory whose entries are being passed.
struct Level {
    /// Its path ("" for the root).
    path: Vec<u8>,
    first: u32,
    count: u32,
    /// Names of directory entries seen in it whose own entries may still follow (so the
    /// implicit opening of their range does not count them twice).
    explicit: HashSet<Box<[u8]>>,
}

/// Counts subdirectories from the index entries in path order. Its memory is the open
/// directories' chain (and the named subdirectories of each whose entries have not come yet),
/// plus one record per directory that has subdirectories.
pub struct Counter {
    stack: Vec<Level>,
    out: Vec<Record>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            stack: vec![Level {
                path: Vec::new(),
                first: 0,
                count: 0,
                explicit: HashSet::new(),
            }],
            out: Vec::new(),
        }
    }
}

impl Counter {
    /// Entry `i` at `path` (entries must come in index order: sorted by path).
    pub fn add(&mut self, i: u32, path: &[u8], is_dir: bool) {
        // Close the directories `path` is not below (the root never closes here).
        while self.stack.len() > 1 {
            let top = &self.stack[self.stack.len() - 1].path;
            if path.len() > top.len() && path.starts_with(top) && path[top.len()] == b'/' {
                break;
            }
            self.close();
        }
        // Open the directories between the innermost open one and `path`.
        loop {
            let base = &self.stack[self.stack.len() - 1].path;
            let start = if base.is_empty() { 0 } else { base.len() + 1 };
            let Some(slash) = path[start.min(path.len())..]
                .iter()
                .position(|&b| b == b'/')
            else {
                break;
            };
            let dir = &path[..start + slash];
            let name = &path[start..start + slash];
            let parent = self.stack.len() - 1;
            let p = &mut self.stack[parent];
            if !p.explicit.remove(name) {
                p.count = p.count.saturating_add(1);
            }
            self.stack.push(Level {
                path: dir.to_vec(),
                first: i,
                count: 0,
                explicit: HashSet::new(),
            });
        }
        if is_dir {
            let top = self.stack.len() - 1;
            let t = &mut self.stack[top];
            let start = if t.path.is_empty() {
                0
            } else {
                t.path.len() + 1
            };
            t.count = t.count.saturating_add(1);
            t.explicit.insert(path[start.min(path.len())..].into());
        }
    }

    fn close(&mut self) {
        if let Some(l) = self.stack.pop() {
            if l.count > 0 {
                let depth = self.stack.len() as u32;
                self.out.push((l.first, depth, l.count));
            }
        }
    }

    /// The records, sorted by (first entry below, depth).
    pub fn finish(mut self) -> Vec<Record> {
        while !self.stack.is_empty() {
            self.close();
        }
        self.out.sort_unstable();
        self.out
    }
}

/// Reads record `k` of a table of records at the start of `table`.
pub fn record_at(table: &[u8], k: usize) -> Option<Record> {
    let b = table.get(k * RECORD_SIZE..(k + 1) * RECORD_SIZE)?;
    let w = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    Some((w(0), w(4), w(8)))
}

/// The count stored for (first, depth) in `table` (`n` records, sorted): by bisection.
pub fn find(table: &[u8], n: usize, first: u32, depth: u32) -> Option<u32> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (f, d, c) = record_at(table, mid)?;
        match (f, d).cmp(&(first, depth)) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(entries: &[(&str, bool)]) -> Vec<Record> {
        let mut c = Counter::default();
        for (i, (p, d)) in entries.iter().enumerate() {
            c.add(i as u32, p.as_bytes(), *d);
        }
        c.finish()
    }

    #[test]
    fn explicit_and_implicit_directories_count_once() {
        // Index order: "a-b" sorts between "a" and "a/x".
        let r = count(&[
            ("a", true),
            ("a-b", true),
            ("a-b/f", false),
            ("a/x", true),
            ("a/y/z", false),
            ("a/y-f", false),
            ("b", false),
            ("c/d/e/f", false),
        ]);
        // root: a, a-b, c (implicit); a (first 3, depth 1): x, y (implicit);
        // c (first 7, depth 1): d; c/d (first 7, depth 2): e.
        assert_eq!(r, vec![(0, 0, 3), (3, 1, 2), (7, 1, 1), (7, 2, 1)]);
        let mut table = Vec::new();
        for (f, d, n) in &r {
            for v in [f, d, n] {
                table.extend_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(find(&table, r.len(), 7, 2), Some(1));
        assert_eq!(find(&table, r.len(), 0, 0), Some(3));
        assert_eq!(find(&table, r.len(), 4, 2), None);
    }

    #[test]
    fn a_tree_without_directories_has_no_records() {
        assert!(count(&[("f", false), ("g", false)]).is_empty());
        assert!(count(&[]).is_empty());
    }
}
