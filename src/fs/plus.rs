//! How many entries the first READDIRPLUS reply of a large directory carries.
//!
//! Every READDIRPLUS entry makes the kernel build an inode and a dentry (~1 KiB each, kept until
//! memory is short), which only a caller that then stats the entry uses. The kernel's
//! READDIRPLUS_AUTO asks for attributes after the first reply only if entries of that reply were
//! used (a stat of one advises the parent, FUSE_I_INIT_RDPLUS), but the first reply of every
//! directory is READDIRPLUS and carries ~200 entries. For the walkers there are:
//! - `find`, `ls` (names only): the ~200 inodes are waste. At 1,000,000 entries in 1,000
//!   directories they were half of `find`'s time.
//! - `ls -l`, rsync (stat as they read): the kernel's heuristic serves them whatever the first
//!   reply carries; a short one costs one more request.
//! - GNU tar, `du`, `cp -r` (read the whole directory, then stat): every entry past the first
//!   reply is a LOOKUP round trip (~50 µs here, against the ~2 µs an inode costs the kernel), so
//!   a short first reply costs them ~190 more round trips in a large directory.
//!
//! So the first reply of a directory of more than 512 entries stops after 8 files (a stat of one
//! is enough for the kernel to ask for the rest with attributes; directories are not counted:
//! every recursive walk looks them up), until a file of such a short-answered directory is
//! looked up: a list-then-stat walk is under way, and the next 64 large directories get full
//! first replies; each of its lookups in a short-answered directory renews that. Directories of
//! up to 512 entries, where one reply carries a large share, are always answered in full.
//!
//! The kernel keeps a listing it read to the end (FOPEN_CACHE_DIR, the default without OPENDIR)
//! and serves later walks from it, without attributes: after `find`, an `ls -lR` of a large
//! directory was a LOOKUP round trip per entry (1,000,000 entries: 50-70 s against 5 s native).
//! So when a large directory was read to its end without attributes (a READDIR ends it), its
//! cached listing is dropped (`notify`): the next walk reads it again, with attributes if it
//! stats (~6 requests per 1,000 entries instead of ~1,000); a second `find` pays ~3 requests per
//! large directory.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::overlay::NodeId;

/// Directories with more entries than this may get a short first READDIRPLUS reply.
pub const LARGE_DIR: usize = 512;
/// How many entries other than directories a short first reply carries.
pub const SHORT_FILES: usize = 8;
/// How many large directories get full first replies after a list-then-stat walk was seen.
const CREDIT: u32 = 64;
/// How many short-answered directories are remembered (a walk is in one or two at a time).
const RECENT: usize = 8;

/// The mount-wide state of that choice; every method is a few atomic operations.
#[derive(Debug, Default)]
pub struct FirstReply {
    credit: AtomicU32,
    /// Short-answered directories, most recent at `next - 1` (0: none; node ids start at 1).
    recent: [AtomicU64; RECENT],
    next: AtomicUsize,
}

impl FirstReply {
    /// How many entries other than directories a READDIRPLUS reply of directory `dir` from
    /// stream index `start` may carry, for a listing of `len` entries.
    pub fn files(&self, dir: NodeId, start: usize, len: usize) -> usize {
        if start != 0 || len <= LARGE_DIR {
            return usize::MAX;
        }
        let spent = self
            .credit
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        if spent.is_ok() {
            return usize::MAX;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % RECENT;
        self.recent[slot].store(dir, Ordering::Relaxed);
        SHORT_FILES
    }

    /// A LOOKUP in `parent` found an entry that is not a directory.
    pub fn file_looked_up(&self, parent: NodeId) {
        if self
            .recent
            .iter()
            .any(|d| d.load(Ordering::Relaxed) == parent)
        {
            self.credit.store(CREDIT, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_directories_and_later_replies_are_never_short() {
        let f = FirstReply::default();
        assert_eq!(f.files(2, 0, LARGE_DIR), usize::MAX);
        assert_eq!(f.files(2, 0, 3), usize::MAX);
        assert_eq!(f.files(2, 34, 1_000_000), usize::MAX);
        assert_eq!(f.files(2, 0, LARGE_DIR + 1), SHORT_FILES);
        assert_eq!(f.files(3, 0, 1_000_000), SHORT_FILES);
    }

    #[test]
    fn a_file_looked_up_in_a_short_answered_directory_gives_full_replies_for_a_while() {
        let f = FirstReply::default();
        assert_eq!(f.files(10, 0, 1000), SHORT_FILES);
        // Lookups elsewhere (a small directory, or one answered in full) change nothing.
        f.file_looked_up(11);
        assert_eq!(f.files(12, 0, 1000), SHORT_FILES);
        f.file_looked_up(10);
        for dir in 100..100 + u64::from(CREDIT) {
            assert_eq!(f.files(dir, 0, 1000), usize::MAX, "dir {dir}");
            // A small directory spends no credit.
            assert_eq!(f.files(7, 0, 10), usize::MAX);
        }
        assert_eq!(f.files(500, 0, 1000), SHORT_FILES);
        // The walk goes on: its lookups in the newly short-answered directory renew the credit.
        f.file_looked_up(500);
        assert_eq!(f.files(501, 0, 1000), usize::MAX);
    }

    #[test]
    fn only_the_last_few_short_answered_directories_are_remembered() {
        let f = FirstReply::default();
        for dir in 1..=RECENT as u64 + 1 {
            assert_eq!(f.files(dir, 0, 1000), SHORT_FILES);
        }
        f.file_looked_up(1);
        assert_eq!(
            f.credit.load(Ordering::Relaxed),
            0,
            "directory 1 is forgotten"
        );
        f.file_looked_up(2);
        assert_eq!(f.files(51, 0, 1000), usize::MAX);
    }
}
